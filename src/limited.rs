//! Reading a file that someone else may control (a spool drop, a file in Turnkey's folders):
//! through one descriptor, opened without following a link and without blocking, checked with
//! `fstat` to be a regular file within a size limit, and read no further than that limit.
//!
//! What this rules out: a file swapped for a symbolic link between listing and reading (to
//! `/dev/zero`, a FIFO, another user's file), a device or FIFO that never ends or never
//! answers, and a file that grows after its size was checked (it is read to the limit and
//! refused, never read whole).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LimitedError {
    #[error("it is a symbolic link, which is never followed")]
    Link,
    #[error("it is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("the file is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: u64, limit: u64 },
    #[error("the file grew past {limit} bytes while it was read")]
    Grew { limit: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl LimitedError {
    /// Whether the file itself is unusable (refuse it), rather than the read having failed
    /// (retry it).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, LimitedError::Io(_))
    }
}

/// Opens `path` for reading without following a final symbolic link and without blocking
/// (a FIFO opens at once), and checks on the descriptor that it is a regular file.
pub fn open(path: &Path) -> Result<(File, Metadata), LimitedError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                LimitedError::Link
            } else {
                LimitedError::Io(e)
            }
        })?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "device"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_dir() {
            "folder"
        } else {
            "special file"
        };
        return Err(LimitedError::NotRegular(kind));
    }
    Ok((file, meta))
}

/// Reads a whole regular file of at most `limit` bytes through one descriptor.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, LimitedError> {
    let (file, meta) = open(path)?;
    read_open(&file, &meta, limit)
}

/// Reads an opened file of at most `limit` bytes (checked on `meta`, then enforced while
/// reading: one byte more than the limit is never kept).
pub fn read_open(mut file: &File, meta: &Metadata, limit: u64) -> Result<Vec<u8>, LimitedError> {
    if meta.size() > limit {
        return Err(LimitedError::TooLarge {
            size: meta.size(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.size() as usize);
    (&mut file).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(LimitedError::Grew { limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read(&p, 5).unwrap(), b"hello");
        assert!(matches!(
            read(&p, 4),
            Err(LimitedError::TooLarge { size: 5, limit: 4 })
        ));
    }

    #[test]
    fn links_fifos_and_devices_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero.csv");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read(&link, 1 << 20).unwrap_err();
        assert!(matches!(e, LimitedError::Link) && e.is_refusal(), "{e}");
        let fifo = dir.path().join("fifo.csv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opening a FIFO with no writer would block forever without O_NONBLOCK.
        assert!(matches!(
            read(&fifo, 1 << 20),
            Err(LimitedError::NotRegular("FIFO"))
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), 1 << 20),
            Err(LimitedError::NotRegular("device"))
        ));
    }

    #[test]
    fn a_file_that_grows_after_its_size_was_checked_is_read_only_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grow.csv");
        std::fs::write(&p, b"12345").unwrap();
        let (file, meta) = open(&p).unwrap();
        // Another writer appends after the check, through its own descriptor.
        let mut w = OpenOptions::new().append(true).open(&p).unwrap();
        w.write_all(&[b'x'; 100]).unwrap();
        assert!(matches!(
            read_open(&file, &meta, 10),
            Err(LimitedError::Grew { limit: 10 })
        ));
    }
}
