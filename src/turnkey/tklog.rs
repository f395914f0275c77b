//! Turnkey's reason for refusing a file, from its job log `<def>/log/Turnkey.log`. UpCast
//! writes, for each file it moves to ERR:
//!
//! ```text
//! 2026/12/02 12:36:33 UpCast [ERROR] validateSourceFileByProg [<reason>] sourceFile=<SRC path>
//! 2026/12/02 12:36:33 UpCast [INFO] moveSourceToError sourceFile=<SRC path> errorFile=<ERR path>
//! ```
//!
//! A parse failure's `[ERROR]` entry runs over several lines (`… UnmarshalException` /
//! ` - with linked exception:` / `[org.xml.sax.SAXParseException; …]] sourceFile=…`); a file of
//! 3 bytes or less gets `prepareSourceFile [This file <SRC path> is empty.] sourceFile=<SRC path>`
//! and no move line, though it is moved to ERR too.
//!
//! Only the last [`MAX_LOG_TAIL`] bytes of the log are read: the log grows without bound, and
//! the lines wanted are the ones written just before the ERR file appeared.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::einvoice::printable;

/// How much of the end of Turnkey.log is read.
pub const MAX_LOG_TAIL: u64 = 1 << 20;

/// The end of a log file, at most `max` bytes, starting at a line boundary. A missing file
/// reads as empty.
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        match text.find('\n') {
            Some(i) => text[i + 1..].to_string(),
            None => String::new(),
        }
    } else {
        text
    }
}

/// One log entry: its first line and the continuation lines after it (those that do not
/// start with a `yyyy/MM/dd HH:mm:ss` timestamp), joined with spaces.
fn entries(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in log.lines() {
        if starts_with_timestamp(line) || out.is_empty() {
            out.push(line.to_string());
        } else if let Some(last) = out.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    out
}

fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 19
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'/',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// The part of a path from `UpCast/` on, so paths under different mounts of one `<def>` compare
/// equal.
fn from_upcast(path: &str) -> Option<&str> {
    path.rfind("/UpCast/").map(|i| &path[i + 1..])
}

/// Whether a logged SRC path is the source of an ERR path: `…/<MSG>/SRC/[…/]<name>` and
/// `…/<MSG>/ERR/<yyyyMMdd>/<HH>/<name>` (compared from `UpCast/` on).
fn is_source_of(src: &str, err: &str) -> bool {
    let (Some(src), Some(err)) = (from_upcast(src), from_upcast(err)) else {
        return false;
    };
    let (Some((src_dir, _)), Some((err_dir, _))) =
        (src.split_once("/SRC/"), err.split_once("/ERR/"))
    else {
        return false;
    };
    src_dir == err_dir && src.rsplit('/').next() == err.rsplit('/').next()
}

/// What an entry says about a source file: `(source, Some(reason))` for an `[ERROR] <check>
/// [<reason>] sourceFile=<source>` entry, `(source, None)` for any other entry naming a
/// source (a move or merge: the file's fate was decided).
fn about(entry: &str) -> Option<(&str, Option<&str>)> {
    if let Some(body) = entry.split_once(" [ERROR] ").map(|(_, b)| b) {
        let (head, source) = body.rsplit_once("] sourceFile=")?;
        let open = head.find('[')?;
        return Some((source.trim_end(), Some(&head[open + 1..])));
    }
    let source = entry.split_once(" sourceFile=")?.1;
    let source = source.split(" errorFile=").next()?;
    let source = source.split(" targetFile=").next()?;
    Some((source.trim_end(), None))
}

/// Turnkey's reason for moving `err_path` to ERR, found in `log` (a tail of Turnkey.log). It is
/// the `[ERROR]` entry about the same source file before the `moveSourceToError` line naming
/// `err_path`, no earlier than the previous move or merge of that source. A file of 3 bytes or
/// less gets `prepareSourceFile [This file … is empty.]` and no move line: then the last
/// `[ERROR]` entry about the matching SRC path with no move or merge after it. Paths compare
/// from `UpCast/` on. The reason is cut to 360 characters, as Turnkey's own sysevent is.
pub fn reason(log: &str, err_path: &Path) -> Option<String> {
    let err = err_path.to_string_lossy();
    let want = from_upcast(&err)?;
    let entries = entries(log);
    let moved = entries.iter().rposition(|l| {
        l.contains(" moveSourceToError ")
            && l.split(" errorFile=")
                .nth(1)
                .and_then(|e| from_upcast(e.trim_end()))
                == Some(want)
    });
    let found = match moved {
        Some(m) => {
            let (source, _) = about(&entries[m])?;
            entries[..m].iter().rev().find_map(|l| match about(l) {
                Some((s, r)) if s == source => Some(r),
                _ => None,
            })?
        }
        None => {
            // The newest rejection of that source that no move line follows.
            let mut next_moved = false;
            entries.iter().rev().find_map(|l| {
                let (s, r) = about(l)?;
                if !is_source_of(s, &err) {
                    return None;
                }
                let hit = r.filter(|_| !next_moved);
                next_moved = l.contains(" moveSourceToError ");
                hit.map(Some)
            })?
        }
    }?;
    Some(printable(found, 360))
}

/// The Turnkey check code in a reason (`… fail: [7001] …` → `7001`).
pub fn code(reason: &str) -> Option<String> {
    let i = reason.find(" fail: [")? + " fail: [".len();
    let rest = &reason[i..];
    let end = rest.find(']')?;
    let c = &rest[..end];
    (!c.is_empty() && c.bytes().all(|b| b.is_ascii_digit())).then(|| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026/12/02 12:36:33 UpCast [INFO] mergeConcat [file want to merage] sourceFile=/d/UpCast/B2SSTORAGE/F0401/SRC/a.xml
2026/12/02 12:36:33 UpCast [ERROR] validateSourceFileByProg [Validate message by program v41F0401-b.xml fail: [7001] \"Seller.Address\" is invalid!] sourceFile=/d/UpCast/B2SSTORAGE/F0401/SRC/b.xml
2026/12/02 12:36:33 UpCast [INFO] moveSourceToError sourceFile=/d/UpCast/B2SSTORAGE/F0401/SRC/b.xml errorFile=/d/UpCast/B2SSTORAGE/F0401/ERR/20261202/12/b.xml
";

    #[test]
    fn the_reason_before_the_move() {
        let r = reason(
            LOG,
            Path::new("/d/UpCast/B2SSTORAGE/F0401/ERR/20261202/12/b.xml"),
        )
        .unwrap();
        assert_eq!(
            r,
            "Validate message by program v41F0401-b.xml fail: [7001] \"Seller.Address\" is invalid!"
        );
        assert_eq!(code(&r).as_deref(), Some("7001"));
        assert_eq!(
            reason(
                LOG,
                Path::new("/d/UpCast/B2SSTORAGE/F0401/ERR/20261202/12/a.xml")
            ),
            None
        );
    }

    /// The shapes the real runner writes (Turnkey 3.2.0, `tkrun upcast` on an empty file and a
    /// truncated one): a parse failure over three lines, an empty file with no move line.
    const REAL: &str = "2026/12/02 13:21:44 UpCast [ERROR] prepareSourceFile [This file /h/EINVTurnkey/UpCast/B2SSTORAGE/F0401/SRC/e.xml is empty.] sourceFile=/h/EINVTurnkey/UpCast/B2SSTORAGE/F0401/SRC/e.xml
2026/12/02 13:21:44 UpCast [INFO] mergeConcat [file want to merage] sourceFile=/h/EINVTurnkey/UpCast/B2SSTORAGE/F0401/SRC/k.xml
2026/12/02 13:21:44 UpCast [ERROR] parseSourceFile [t.xml 解析XML錯誤. jakarta.xml.bind.UnmarshalException
 - with linked exception:
[org.xml.sax.SAXParseException; lineNumber: 1; columnNumber: 1; Premature end of file.]] sourceFile=/h/EINVTurnkey/UpCast/B2SSTORAGE/F0501/SRC/t.xml
2026/12/02 13:21:44 UpCast [INFO] moveSourceToError sourceFile=/h/EINVTurnkey/UpCast/B2SSTORAGE/F0501/SRC/t.xml errorFile=/h/EINVTurnkey/UpCast/B2SSTORAGE/F0501/ERR/20261202/13/t.xml
";

    #[test]
    fn a_parse_failure_over_several_lines_is_one_reason() {
        let r = reason(
            REAL,
            Path::new("/h/EINVTurnkey/UpCast/B2SSTORAGE/F0501/ERR/20261202/13/t.xml"),
        );
        assert_eq!(
            r.as_deref(),
            Some("t.xml 解析XML錯誤. jakarta.xml.bind.UnmarshalException - with linked exception: [org.xml.sax.SAXParseException; lineNumber: 1; columnNumber: 1; Premature end of file.]")
        );
    }

    #[test]
    fn an_empty_file_has_its_reason_without_a_move_line() {
        let r = reason(
            REAL,
            Path::new("/h/EINVTurnkey/UpCast/B2SSTORAGE/F0401/ERR/20261202/13/e.xml"),
        );
        assert_eq!(
            r.as_deref(),
            Some("This file /h/EINVTurnkey/UpCast/B2SSTORAGE/F0401/SRC/e.xml is empty.")
        );
        // Another type's folder, or another name, is not that file.
        assert_eq!(
            reason(
                REAL,
                Path::new("/h/EINVTurnkey/UpCast/B2SSTORAGE/F0501/ERR/20261202/13/e.xml")
            ),
            None
        );
        assert_eq!(
            reason(
                REAL,
                Path::new("/h/EINVTurnkey/UpCast/B2SSTORAGE/F0401/ERR/20261202/13/k.xml")
            ),
            None
        );
    }

    #[test]
    fn an_older_rejection_of_the_same_source_is_not_the_reason() {
        // Round 1 refused b.xml with a reason, round 2 accepted a b.xml, round 3 moved one to
        // ERR with no [ERROR] line in the tail: no reason, not round 1's.
        let log = format!(
            "{LOG}2026/12/02 12:40:00 UpCast [INFO] mergeDone [done] sourceFile=/d/UpCast/B2SSTORAGE/F0401/SRC/b.xml targetFile=/p/x\n\
             2026/12/02 12:41:00 UpCast [INFO] moveSourceToError sourceFile=/d/UpCast/B2SSTORAGE/F0401/SRC/b.xml errorFile=/d/UpCast/B2SSTORAGE/F0401/ERR/20261202/12/b.xml\n"
        );
        assert_eq!(
            reason(
                &log,
                Path::new("/d/UpCast/B2SSTORAGE/F0401/ERR/20261202/12/b.xml")
            ),
            None
        );
        // Without the later move, round 1's move names the file and its reason is found.
        assert!(reason(
            LOG,
            Path::new("/d/UpCast/B2SSTORAGE/F0401/ERR/20261202/12/b.xml")
        )
        .is_some());
    }

    #[test]
    fn another_mount_of_the_same_def_matches() {
        let log = REAL.replace("/h/EINVTurnkey", "/srv/turnkey/EINVTurnkey");
        let r = reason(
            &log,
            Path::new("/mnt/tk/EINVTurnkey/UpCast/B2SSTORAGE/F0501/ERR/20261202/13/t.xml"),
        );
        assert!(r.is_some_and(|r| r.contains("Premature end of file")));
    }

    #[test]
    fn the_tail_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Turnkey.log");
        std::fs::write(&p, LOG).unwrap();
        assert_eq!(tail(&p, 1 << 20), LOG);
        let t = tail(&p, 200);
        assert!(t.len() <= 200 && t.starts_with("2026/12/02"), "{t}");
        assert_eq!(tail(&dir.path().join("none"), 10), "");
    }
}
