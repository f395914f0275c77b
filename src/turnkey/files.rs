//! Reading the files Turnkey and the platform leave: which are complete, and their bytes
//! through one bounded descriptor (see [`crate::limited`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};

use crate::einvoice::archive::hex;
use crate::spool;
use crate::turnkey::feedback::{io_err, FeedbackError};

/// Files below `dir` (recursively) that are complete: not hidden or temporary, and unchanged
/// for `settle`. A missing folder has none.
pub fn settled_files(dir: &Path, settle: Duration) -> Vec<PathBuf> {
    let mut young = false;
    settled_files_noting_young(dir, settle, &mut young)
}

/// [`settled_files`], also telling whether some file was too young to take yet.
pub fn settled_files_noting_young(dir: &Path, settle: Duration, young: &mut bool) -> Vec<PathBuf> {
    settled_files_outside(dir, settle, young, &|_| false)
}

/// [`settled_files_noting_young`], not entering the folders whose name `skip` says.
pub fn settled_files_outside(
    dir: &Path,
    settle: Duration,
    young: &mut bool,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !spool::is_candidate(&name) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !skip(&name) {
                out.extend(settled_files_outside(&path, settle, young, skip));
            }
        } else if meta.is_file() {
            if is_settled(&meta, settle) {
                out.push(path);
            } else {
                *young = true;
            }
        }
    }
    out.sort();
    out
}

/// Whether a file has not been modified for `settle`.
pub(super) fn is_settled(meta: &fs::Metadata, settle: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= settle)
}

/// Opens one of Turnkey's files for reading through one descriptor: no link followed, a
/// regular file only (see [`crate::limited`]).
pub(super) fn open_read(path: &Path) -> Result<fs::File, FeedbackError> {
    match crate::limited::open(path) {
        Ok((file, _)) => Ok(file),
        Err(crate::limited::LimitedError::Io(e)) => Err(io_err("read", path)(e)),
        Err(e) => Err(io_err("read", path)(io::Error::new(
            io::ErrorKind::InvalidData,
            e.to_string(),
        ))),
    }
}

/// A file's bytes, `None` when it holds more than `max` (it is read no further).
pub(super) fn read_limited(path: &Path, max: u64) -> Result<Option<Vec<u8>>, FeedbackError> {
    use io::Read;
    let mut bytes = Vec::new();
    open_read(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// The MD5 of a file, read in pieces (a message file may be megabytes).
pub(super) fn md5_of(path: &Path) -> Result<String, FeedbackError> {
    let mut md5 = Md5::new();
    let mut f = open_read(path)?;
    io::copy(&mut f, &mut md5).map_err(io_err("read", path))?;
    Ok(hex(&md5.finalize()))
}

/// A file's size and modification time, which change when it is written to.
pub(super) fn stamp(path: &Path) -> Result<(u64, Option<SystemTime>), FeedbackError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    Ok((meta.len(), meta.modified().ok()))
}
