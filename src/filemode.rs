//! What turnbridge writes is never open to other users, whatever umask it was started with.
//!
//! At start the process umask is made to deny "other" entirely, and to keep what it gave the
//! group: the packaged unit's `UMask=0007` (and a login shell's `0002`) share files with the
//! group (Turnkey's user joins it to read the staged XML and move it), `0022` becomes `0027`
//! (the group reads), `0077` keeps everything to the owner. Every file and folder turnbridge
//! creates in shared places (staged XML, the pickup folders) follows it.
//!
//! Its own state is not shared at all: the state folder and its `work/`, `archive/` and
//! `rejected/` are made `0700` whatever the umask ([`private_dir`]), so archived batches,
//! reports and files being processed are the service user's alone.
//!
//! The database and its `-wal` and `-shm` files hold secrets (NextEngine tokens, webhook
//! secrets) and are owner-only (`0600`) whatever the umask, group included: see
//! [`crate::store::Store::open`].

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

/// The umask that keeps everything to the owner.
pub const OWNER_ONLY: u32 = 0o077;

/// The mode of the database files.
pub const DATABASE_MODE: u32 = 0o600;

/// The mode of turnbridge's own folders.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The umask turnbridge uses when it inherited `inherited`: the same for owner and group,
/// and nothing for others.
pub fn effective_umask(inherited: u32) -> u32 {
    (inherited | 0o007) & 0o777
}

/// Makes the folder at `path` the owner's alone ([`PRIVATE_DIR_MODE`]) unless it already is.
pub fn private_dir(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o777 == PRIVATE_DIR_MODE {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// The umask inherited at the first [`restrict_umask`], and the one used since.
static UMASK: OnceLock<(u32, u32)> = OnceLock::new();

/// Sets this process's umask to [`effective_umask`] of the inherited one; returns (inherited,
/// effective). Calling it again changes nothing and returns the same pair.
pub fn restrict_umask() -> (u32, u32) {
    *UMASK.get_or_init(|| {
        // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
        let inherited = unsafe { libc::umask(0o077) } as u32;
        let effective = effective_umask(inherited);
        unsafe { libc::umask(effective as libc::mode_t) };
        (inherited, effective)
    })
}

/// Makes the file at `path` owner-only ([`DATABASE_MODE`]) unless it already is. A missing
/// file is not an error.
pub fn owner_only(path: &Path) -> io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.permissions().mode() & 0o777 == DATABASE_MODE {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DATABASE_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_get_nothing_and_the_group_keeps_what_it_was_given() {
        for (inherited, used) in [
            (0o000, 0o007),
            (0o002, 0o007),
            (0o022, 0o027),
            (0o020, 0o027),
            (0o006, 0o007),
        ] {
            assert_eq!(effective_umask(inherited), used, "{inherited:04o}");
        }
        // The packaged unit's UMask=0007 keeps the group; 0027 and 0077 are kept too.
        for deliberate in [0o007, 0o027, 0o077, 0o037] {
            assert_eq!(effective_umask(deliberate), deliberate, "{deliberate:04o}");
        }
    }

    #[test]
    fn owner_only_narrows_a_readable_file_and_ignores_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        owner_only(&f).unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        owner_only(&dir.path().join("missing")).unwrap();
    }
}
