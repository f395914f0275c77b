//! ZIP batches: CSV/JSON members plus an optional `manifest.json`.
//!
//! The manifest lists each member with its MD5 and legacy metadata:
//!
//! ```json
//! {"members": [{"name": "jan.csv", "md5": "9e107d9d372bb6826bd81d3542a419d6",
//!               "message_type": "C0401", "tenant": "TEN-001", "encoding": "big5"}]}
//! ```
//!
//! A hostile archive (absolute or `..` paths, symbolic links, two entries with one name,
//! nested archives, a member larger than the limit, too many members) is refused whole. A member whose MD5 does not match, or that the
//! manifest does not list, is refused alone; the others go on.

use std::io::{Cursor, Read};

use md5::{Digest, Md5};
use serde::Deserialize;

use super::printable;
use super::read::{Defaults, ReadError, TextEncoding};

/// Size limits that keep a hostile archive from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    pub max_members: usize,
    pub max_member_bytes: u64,
    pub max_total_bytes: u64,
}

/// A member to be read as a batch of its own.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub bytes: Vec<u8>,
    pub defaults: Defaults,
    pub encoding: Option<TextEncoding>,
}

/// A member refused as a whole, kept byte for byte for the rejected folder.
#[derive(Debug)]
pub struct RefusedMember {
    pub name: String,
    pub bytes: Vec<u8>,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(alias = "files")]
    members: Vec<ManifestEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEntry {
    name: String,
    md5: Option<String>,
    message_type: Option<String>,
    tenant: Option<String>,
    encoding: Option<TextEncoding>,
}

const MANIFEST: &str = "manifest.json";

/// Opens a ZIP batch and hands its readable members to `each`, one at a time (a member's
/// bytes are dropped once `each` returns); returns the members refused alone. Entries are
/// checked from the central directory before any is decompressed.
pub fn read_zip(
    bytes: &[u8],
    limits: ZipLimits,
    each: &mut dyn FnMut(Member) -> Result<(), ReadError>,
) -> Result<Vec<RefusedMember>, ReadError> {
    let bad = |m: String| ReadError::Archive(m);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable ZIP archive: {e}")))?;
    if zip.len() > limits.max_members {
        return Err(bad(format!(
            "the archive has {} entries, at most {} are allowed",
            zip.len(),
            limits.max_members
        )));
    }
    // The zip crate keeps one entry per name, silently; other tools may read the other one.
    if let Some(listed) = declared_entries(bytes).filter(|&n| n != zip.len()) {
        return Err(bad(format!(
            "the archive lists {listed} entries but only {} names; entries with the same name are not accepted",
            zip.len()
        )));
    }
    // 1. Every entry's name, kind and declared size, before anything is expanded.
    let mut files: Vec<(usize, String)> = Vec::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| bad(format!("entry {i} cannot be read: {e}")))?;
        let name = entry.name().to_string();
        let shown = printable(&name, 80);
        check_name(&name).map_err(|e| bad(format!("entry `{shown}`: {e}")))?;
        if entry.is_symlink() {
            return Err(bad(format!(
                "entry `{shown}` is a symbolic link; links are not accepted"
            )));
        }
        if entry.is_dir() || skipped(&name) {
            continue;
        }
        if entry.size() > limits.max_member_bytes {
            return Err(bad(format!(
                "entry `{shown}` is {} bytes, at most {} are allowed",
                entry.size(),
                limits.max_member_bytes
            )));
        }
        files.push((i, name));
    }

    // 2. The manifest, then each member in turn.
    let mut total = 0u64;
    let mut expand = |zip: &mut zip::ZipArchive<Cursor<&[u8]>>, i: usize, name: &str| {
        let shown = printable(name, 80);
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("entry `{shown}` cannot be read: {e}")))?;
        // Do not trust the declared size: read at most one byte past the limit.
        let mut data = Vec::new();
        (&mut entry)
            .take(limits.max_member_bytes + 1)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("entry `{shown}` cannot be read: {e}")))?;
        if data.len() as u64 > limits.max_member_bytes {
            return Err(bad(format!(
                "entry `{shown}` expands past {} bytes",
                limits.max_member_bytes
            )));
        }
        total += data.len() as u64;
        if total > limits.max_total_bytes {
            return Err(bad(format!(
                "the archive expands past {} bytes in all",
                limits.max_total_bytes
            )));
        }
        if is_archive(name, &data) {
            return Err(bad(format!(
                "entry `{shown}` is an archive itself; nested archives are not accepted"
            )));
        }
        Ok(data)
    };
    let manifest = match files.iter().position(|(_, n)| n == MANIFEST) {
        Some(at) => {
            let (i, name) = files.remove(at);
            let data = expand(&mut zip, i, &name)?;
            if data.len() > MAX_MANIFEST_BYTES {
                return Err(bad(format!(
                    "{MANIFEST} is {} bytes; a manifest holds at most {MAX_MANIFEST_BYTES}",
                    data.len()
                )));
            }
            let m: Manifest = serde_json::from_slice(&data).map_err(|e| {
                bad(format!(
                    "{MANIFEST} is not valid: {}",
                    printable(&e.to_string(), 200)
                ))
            })?;
            check_manifest(&m, limits).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
            Some(m)
        }
        None => None,
    };

    let names: std::collections::BTreeSet<String> = files.iter().map(|(_, n)| n.clone()).collect();
    let mut refused = Vec::new();
    for (i, name) in files {
        let data = expand(&mut zip, i, &name)?;
        let lower = name.to_ascii_lowercase();
        if !(lower.ends_with(".csv") || lower.ends_with(".json")) {
            refused.push(RefusedMember {
                name,
                bytes: data,
                reason: "only .csv and .json members are read".into(),
            });
            continue;
        }
        let entry = manifest
            .as_ref()
            .map(|m| m.members.iter().find(|e| e.name == name));
        // (A linear search: a manifest lists at most max_members entries.)
        let entry = match entry {
            None => None,
            Some(Some(e)) => Some(e),
            Some(None) => {
                refused.push(RefusedMember {
                    name,
                    bytes: data,
                    reason: format!("is not listed in {MANIFEST}"),
                });
                continue;
            }
        };
        if let Some(expected) = entry.and_then(|e| e.md5.as_deref()) {
            let actual = hex(&Md5::digest(&data));
            if !actual.eq_ignore_ascii_case(expected.trim()) {
                refused.push(RefusedMember {
                    name,
                    bytes: data,
                    reason: format!("MD5 is {actual}, the manifest says {expected}"),
                });
                continue;
            }
        }
        each(Member {
            name,
            bytes: data,
            defaults: Defaults {
                message_type: entry.and_then(|e| e.message_type.clone()),
                tenant: entry.and_then(|e| e.tenant.clone()),
            },
            encoding: entry.and_then(|e| e.encoding),
        })?;
    }
    if let Some(m) = &manifest {
        for e in &m.members {
            if !names.contains(&e.name) {
                refused.push(RefusedMember {
                    name: e.name.clone(),
                    bytes: Vec::new(),
                    reason: format!("is listed in {MANIFEST} but missing from the archive"),
                });
            }
        }
    }
    Ok(refused)
}

/// Bytes a manifest may hold: a thousand entries take about 200 KB.
const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Bytes a member's name may hold: the name is shown beside every problem of its rows.
const MAX_NAME_BYTES: usize = 255;

/// A manifest lists each member once, no more members than an archive may hold, and
/// defaults no longer than a tenant id.
fn check_manifest(m: &Manifest, limits: ZipLimits) -> Result<(), String> {
    if m.members.len() > limits.max_members {
        return Err(format!(
            "lists {} members, at most {} are allowed",
            m.members.len(),
            limits.max_members
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &m.members {
        let shown = printable(&e.name, 80);
        if !seen.insert(e.name.as_str()) {
            return Err(format!("`{shown}` is listed twice"));
        }
        if e.name.len() > MAX_NAME_BYTES {
            return Err(format!("a name is longer than {MAX_NAME_BYTES} bytes"));
        }
        for (key, v) in [("message_type", &e.message_type), ("tenant", &e.tenant)] {
            if v.as_ref().is_some_and(|v| v.len() > 64) {
                return Err(format!("`{shown}`: {key} is longer than 64 bytes"));
            }
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME_BYTES {
        return Err("names longer than 255 bytes are not accepted");
    }
    let absolute =
        name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':');
    if absolute {
        return Err("absolute paths are not accepted");
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err("paths with `..` are not accepted");
    }
    Ok(())
}

/// The entry count the end-of-central-directory record declares; `None` when there is no
/// plain record to read (ZIP64 counts, a damaged tail: the zip crate has the last word).
fn declared_entries(bytes: &[u8]) -> Option<usize> {
    const EOCD: &[u8] = b"PK\x05\x06";
    // The record is 22 bytes plus a comment of at most 65535. The signature may also appear
    // inside the comment: the real record is the one whose comment runs to the end.
    let tail = &bytes[bytes.len().saturating_sub(22 + 65_535)..];
    let mut end = tail.len();
    while let Some(at) = tail[..end].windows(4).rposition(|w| w == EOCD) {
        let comment = tail
            .get(at + 20..at + 22)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        if comment.is_some_and(|len| at + 22 + len == tail.len()) {
            let total = u16::from_le_bytes(tail.get(at + 10..at + 12)?.try_into().ok()?);
            return (total != u16::MAX).then_some(total as usize);
        }
        end = at + 3;
    }
    None
}

fn skipped(name: &str) -> bool {
    name.starts_with("__MACOSX/")
        || name
            .rsplit('/')
            .next()
            .is_some_and(|base| base.starts_with('.'))
}

fn is_archive(name: &str, data: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    let by_name = [
        ".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst",
    ]
    .iter()
    .any(|ext| lower.ends_with(ext));
    let by_magic = data.starts_with(b"PK\x03\x04")
        || data.starts_with(b"\x1f\x8b")
        || data.starts_with(b"7z\xBC\xAF")
        || data.starts_with(b"Rar!");
    by_name || by_magic
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_refused() {
        assert!(check_name("../x.csv").is_err());
        assert!(check_name("a/../../x.csv").is_err());
        assert!(check_name("/etc/passwd").is_err());
        assert!(check_name("C:\\x.csv").is_err());
        assert!(check_name("jan/a.csv").is_ok());
    }

    /// Every member the archive hands out, and the refused ones.
    fn read_all(
        bytes: &[u8],
        limits: ZipLimits,
    ) -> Result<(Vec<Member>, Vec<RefusedMember>), ReadError> {
        let mut members = Vec::new();
        let refused = read_zip(bytes, limits, &mut |m| {
            members.push(m);
            Ok(())
        })?;
        Ok((members, refused))
    }

    fn zip_of(members: &[(&str, &[u8], Option<u32>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in members {
            let mut o = zip::write::SimpleFileOptions::default();
            if let Some(m) = mode {
                o = o.unix_permissions(*m);
            }
            w.start_file(*name, o).unwrap();
            std::io::Write::write_all(&mut w, data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const LIMITS: ZipLimits = ZipLimits {
        max_members: 10,
        max_member_bytes: 1 << 20,
        max_total_bytes: 1 << 20,
    };

    #[test]
    fn symbolic_links_are_refused() {
        let plain = zip_of(&[("a.csv", b"MessageType\n", Some(0o644))]);
        assert!(read_all(&plain, LIMITS).is_ok());
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink(
            "a.csv",
            "/etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        let link = w.finish().unwrap().into_inner();
        let err = read_all(&link, LIMITS).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn an_end_record_signature_inside_the_comment_is_not_taken_for_the_record() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for name in ["a.csv", "b.csv", "c.csv"] {
            w.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut w, b"MessageType\n").unwrap();
        }
        w.set_raw_comment(
            b"exported PK\x05\x06\x00\x00\x00\x00\x09\x00\x09\x00 by ERP"
                .to_vec()
                .into(),
        );
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(declared_entries(&bytes), Some(3));
        assert_eq!(read_all(&bytes, LIMITS).unwrap().0.len(), 3);
    }

    #[test]
    fn two_entries_with_one_name_are_refused() {
        let one = zip_of(&[("a.csv", b"x", None), ("b.csv", b"y", None)]);
        assert_eq!(declared_entries(&one), Some(2));
        assert!(read_all(&one, LIMITS).is_ok());
        // Rename b.csv to a.csv in both headers (the writer refuses duplicates itself).
        let mut twice = one.clone();
        for i in 0..twice.len() - 5 {
            if &twice[i..i + 5] == b"b.csv" {
                twice[i] = b'a';
            }
        }
        let err = read_all(&twice, LIMITS).unwrap_err();
        assert!(err.to_string().contains("same name"), "{err}");
    }

    #[test]
    fn a_manifest_beyond_the_archive_is_refused() {
        let many: Vec<String> = (0..LIMITS.max_members + 1)
            .map(|i| format!("{{\"name\":\"m{i}.csv\"}}"))
            .collect();
        let manifest = format!("{{\"members\":[{}]}}", many.join(","));
        let z = zip_of(&[("manifest.json", manifest.as_bytes(), None)]);
        let err = read_all(&z, LIMITS).unwrap_err().to_string();
        assert!(err.contains("at most 10 are allowed"), "{err}");
        let twice = r#"{"members":[{"name":"a.csv"},{"name":"a.csv"}]}"#;
        let z = zip_of(&[("manifest.json", twice.as_bytes(), None)]);
        let err = read_all(&z, LIMITS).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let long = format!(
            r#"{{"members":[{{"name":"a.csv","tenant":"{}"}}]}}"#,
            "t".repeat(65)
        );
        let z = zip_of(&[("manifest.json", long.as_bytes(), None)]);
        let err = read_all(&z, LIMITS).unwrap_err().to_string();
        assert!(err.contains("tenant is longer than 64"), "{err}");
        let name = format!("{}.csv", "n".repeat(300));
        let z = zip_of(&[(name.as_str(), b"x", None)]);
        let err = read_all(&z, LIMITS).unwrap_err().to_string();
        assert!(err.contains("longer than 255"), "{err}");
    }

    #[test]
    fn names_in_messages_are_printable() {
        let evil = zip_of(&[("../\x1b[2J\nFORGED.csv", b"x", None)]);
        let err = read_all(&evil, LIMITS).unwrap_err().to_string();
        assert!(err.contains("\\u{1b}[2J\\nFORGED"), "{err}");
        assert!(!err.contains('\x1b') && !err.contains('\n'), "{err:?}");
    }
}
