//! File operations that survive a crash or power loss at any point.
//!
//! The rules: write to a temporary name on the same filesystem, fsync the file, rename it into
//! place, fsync the folder. A reader of the destination folder sees a file complete or not at
//! all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Flushes a folder's entries (new, renamed or removed names) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` durably: temp file beside it, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    via_temp(path, |tmp| write_synced(tmp, bytes))
}

/// Copies `src` to `dest` durably and in pieces, so a large file is never held in memory:
/// temp file beside `dest`, fsync, rename, fsync the folder. The source is opened through
/// [`crate::limited::open`] (no link followed, a regular file only) and copied only when it
/// holds at most `limit` bytes, checked on the descriptor and enforced while copying.
pub fn copy_atomic(src: &Path, dest: &Path, limit: u64) -> io::Result<()> {
    let (from, meta) = crate::limited::open(src).map_err(io::Error::other)?;
    if meta.len() > limit {
        return Err(io::Error::other(format!(
            "{} bytes; at most {limit} are copied",
            meta.len()
        )));
    }
    via_temp(dest, |tmp| {
        let mut to = create_fresh(tmp)?;
        let copied = io::copy(&mut io::Read::take(&from, limit + 1), &mut to)?;
        if copied > limit {
            return Err(io::Error::other(format!(
                "grew past {limit} bytes while copied"
            )));
        }
        to.sync_all()
    })
}

/// Fills a temp name beside `dest` with `fill`, renames it into place and fsyncs the folder.
/// When anything fails (a full disk, say) the temp file is removed, not left behind.
fn via_temp(dest: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let placed = fill(&tmp).and_then(|()| fs::rename(&tmp, dest));
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    fsync_dir(dir)
}

/// Writes `bytes` as a new file at `path`, replacing whatever name was there, and fsyncs it
/// (not the folder). See [`create_fresh`].
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create_fresh(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a new file at `path` for writing (mode as the umask gives: Turnkey, often another
/// user, reads what is staged), never through a link and never into
/// an existing file: whatever is at the name (an earlier attempt, or a link someone planted
/// there to make the daemon overwrite another file) is unlinked first, and the file is then
/// created with `O_EXCL | O_NOFOLLOW`. If the name is taken again in between, the create
/// fails and the caller retries later.
pub fn create_fresh(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates a folder and its parents, syncing each parent that gained an entry.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    // The parent of a one-part relative path (`backups`) is the empty path: the current folder.
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves a file into `dest_dir` under `name` (or `name` with `-1`, `-2`… if taken) and
/// syncs both folders. Falls back to copy + fsync + remove across filesystems.
pub fn move_into(src: &Path, dest_dir: &Path, name: &str) -> io::Result<PathBuf> {
    create_dir_all(dest_dir)?;
    let dest = free_name(dest_dir, name);
    match fs::rename(src, &dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = dest_dir.join(format!(".{name}.{}.tmp", std::process::id()));
            fs::copy(src, &tmp)?;
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &dest)?;
            fsync_dir(dest_dir)?;
            fs::remove_file(src)?;
        }
        Err(e) => return Err(e),
    }
    fsync_dir(dest_dir)?;
    if let Some(parent) = src.parent() {
        fsync_dir(parent)?;
    }
    Ok(dest)
}

/// `name` in `dir` if free, else `stem-N.ext` for the first free N.
pub fn free_name(dir: &Path, name: &str) -> PathBuf {
    let candidate = dir.join(name);
    if !candidate.exists() {
        return candidate;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1..)
        .map(|n| dir.join(format!("{stem}-{n}{ext}")))
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

/// The device of the nearest existing ancestor of `path` (the filesystem it will live on).
pub fn device_of(path: &Path) -> io::Result<u64> {
    let mut p = path;
    loop {
        match fs::metadata(p) {
            Ok(m) => return Ok(m.dev()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match p.parent() {
                Some(parent) => p = parent,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged_link_to(target: &Path, dir: &Path) -> PathBuf {
        let link = dir.join("a-link");
        std::os::unix::fs::symlink(target, &link).unwrap();
        link
    }

    #[test]
    fn writes_never_follow_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let staged = dir.path().join("staged.xml");
        std::os::unix::fs::symlink(&victim, &staged).unwrap();
        write_synced(&staged, b"<xml/>").unwrap();
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious",
            "the link's target is untouched"
        );
        let meta = fs::symlink_metadata(&staged).unwrap();
        assert!(meta.is_file(), "a regular file replaced the link");
        assert_eq!(fs::read(&staged).unwrap(), b"<xml/>");
        // The temp name of an atomic write too.
        let dest = dir.path().join("report.txt");
        let tmp = dir
            .path()
            .join(format!(".report.txt.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&dest, b"report").unwrap();
        copy_atomic(&dest, &dir.path().join("copy.txt"), 1 << 20).unwrap();
        assert!(copy_atomic(&dest, &dir.path().join("big.txt"), 3).is_err());
        assert!(
            copy_atomic(
                &staged_link_to(&victim, dir.path()),
                &dir.path().join("l.txt"),
                1 << 20
            )
            .is_err(),
            "a link is not followed"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&dest).unwrap(), b"report");
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temp_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The destination is a folder with something in it: the rename must fail.
        let dest = dir.path().join("taken");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("x"), b"x").unwrap();
        assert!(write_atomic(&dest, b"hello").is_err());
        assert!(copy_atomic(&dest.join("x"), &dest, 1 << 20).is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("taken")]);
        write_atomic(&dir.path().join("ok"), b"hello").unwrap();
        assert_eq!(fs::read(dir.path().join("ok")).unwrap(), b"hello");
    }
}
