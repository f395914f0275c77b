//! Turnkey's reason for refusing a file, from its job log `<def>/log/Turnkey.log`. UpCast
//! writes, for each file it moves to ERR:
//!
//! ```text
//! 2026/12/02 12:36:33 UpCast [ERROR] validateSourceFileByProg [<reason>] sourceFile=<SRC path>
//! 2026/12/02 12:36:33 UpCast [INFO] moveSourceToError sourceFile=<SRC path> errorFile=<ERR path>
//! ```
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

/// Turnkey's reason for moving `err_path` to ERR, found in `log` (a tail of Turnkey.log):
/// the `[ERROR]` line about the same source file before the `moveSourceToError` line naming
/// `err_path`. The reason is cut to 360 characters, as Turnkey's own sysevent is.
pub fn reason(log: &str, err_path: &Path) -> Option<String> {
    let err = err_path.to_string_lossy();
    let lines: Vec<&str> = log.lines().collect();
    let moved = lines.iter().rposition(|l| {
        l.contains(" moveSourceToError ")
            && l.split(" errorFile=").nth(1).map(str::trim_end) == Some(err.as_ref())
    })?;
    let source = lines[moved]
        .split(" sourceFile=")
        .nth(1)?
        .split(" errorFile=")
        .next()?;
    let marker = format!("] sourceFile={source}");
    lines[..moved].iter().rev().find_map(|l| {
        let body = l.split(" [ERROR] ").nth(1)?;
        let body = body.strip_suffix(&marker)?;
        let open = body.find('[')?;
        Some(printable(&body[open + 1..], 360))
    })
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

    const LOG: &str = "2026/12/02 12:36:33 UpCast [INFO] mergeConcat [file want to merage] sourceFile=/d/SRC/a.xml
2026/12/02 12:36:33 UpCast [ERROR] validateSourceFileByProg [Validate message by program v41F0401-b.xml fail: [7001] \"Seller.Address\" is invalid!] sourceFile=/d/SRC/b.xml
2026/12/02 12:36:33 UpCast [INFO] moveSourceToError sourceFile=/d/SRC/b.xml errorFile=/d/ERR/20261202/12/b.xml
";

    #[test]
    fn the_reason_before_the_move() {
        let r = reason(LOG, Path::new("/d/ERR/20261202/12/b.xml")).unwrap();
        assert_eq!(
            r,
            "Validate message by program v41F0401-b.xml fail: [7001] \"Seller.Address\" is invalid!"
        );
        assert_eq!(code(&r).as_deref(), Some("7001"));
        assert_eq!(reason(LOG, Path::new("/d/ERR/20261202/12/a.xml")), None);
    }

    #[test]
    fn the_tail_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Turnkey.log");
        std::fs::write(&p, LOG).unwrap();
        assert_eq!(tail(&p, 1 << 20), LOG);
        let t = tail(&p, 120);
        assert!(t.len() <= 120 && t.starts_with("2026/12/02"), "{t}");
        assert_eq!(tail(&dir.path().join("none"), 10), "");
    }
}
