//! What turnbridge writes is never open to other users, whatever umask it was started with.
//!
//! At start the process umask is made to deny "other" entirely. An umask that already does so
//! is a deliberate choice and is kept: the packaged unit's `UMask=0007` shares files with the
//! `turnbridge` group (Turnkey's user joins it to read the staged XML and move it), `0027`
//! lets the group read, `0077` keeps everything to the owner. Any other umask (`0022`, `0002`,
//! `0000`) becomes `0077`: owner only. Every file and folder turnbridge creates (staged XML,
//! reports, archived sources, result files, the sandbox config) follows it.
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

/// The umask turnbridge uses when it inherited `inherited`: kept when it denies "other"
/// everything, else [`OWNER_ONLY`].
pub fn effective_umask(inherited: u32) -> u32 {
    if inherited & 0o007 == 0o007 {
        inherited & 0o777
    } else {
        OWNER_ONLY
    }
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
    fn an_umask_that_lets_others_in_becomes_owner_only_and_a_deliberate_one_is_kept() {
        for open in [0o000, 0o002, 0o022, 0o020, 0o006] {
            assert_eq!(effective_umask(open), 0o077, "{open:04o}");
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
