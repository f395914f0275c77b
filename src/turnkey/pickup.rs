//! Handing XML to Turnkey: the pickup folder (flat `INBOX` or the per-type
//! `UpCast/B2SSTORAGE/{message_type}/SRC`), file naming, and the two-step write that keeps a
//! half-written file out of Turnkey's sight.
//!
//! A message file is first written and fsynced in the staging folder ([`Pickup::stage`]),
//! and only after the store has recorded that, renamed into the pickup folder
//! ([`Pickup::publish`]). Staging and pickup must share a filesystem so the rename is atomic;
//! [`Pickup::open`] refuses to start otherwise.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::durable;
use crate::einvoice::MessageType;

#[derive(Debug, Error)]
pub enum PickupError {
    #[error("{0} already exists in the pickup folder and is not ours; refusing to replace it (was the database reset?)")]
    NameTaken(PathBuf),
    #[error("staging folder {staging} is inside the pickup tree {inbox}; Turnkey could see half-written files")]
    StagingInsideInbox { staging: PathBuf, inbox: PathBuf },
    #[error("staging folder {staging} cannot be linked into the Turnkey pickup folder {inbox} (another filesystem or mount); set turnkey.staging to a folder on the pickup folder's mount, under the same ReadWritePaths= entry when run by systemd")]
    CrossDevice { staging: PathBuf, inbox: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PickupError + 'a {
    move |source| PickupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The pickup folder path with its `{message_type}` and `{tenant}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxTemplate(String);

impl InboxTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| "has a `{` without a closing `}`".to_string())?;
            let name = &after[..end];
            if name != "message_type" && name != "tenant" {
                return Err(format!(
                    "placeholder {{{name}}} is unknown; use {{message_type}} or {{tenant}}"
                ));
            }
            rest = &after[end + 1..];
        }
        if rest.contains('}') {
            return Err("has a `}` without an opening `{`".into());
        }
        Ok(InboxTemplate(s.to_string()))
    }

    pub fn resolve(&self, ty: MessageType, tenant: &str) -> PathBuf {
        PathBuf::from(
            self.0
                .replace("{message_type}", ty.as_str())
                .replace("{tenant}", tenant),
        )
    }

    /// The part of the path before the first placeholder: it exists for every message.
    pub fn fixed_root(&self) -> PathBuf {
        let mut root = PathBuf::new();
        for part in Path::new(&self.0).components() {
            if part.as_os_str().to_string_lossy().contains('{') {
                break;
            }
            root.push(part);
        }
        root
    }
}

/// The file name of a message in the pickup folder: `F0401_20261126_00000042.xml`.
///
/// `seq` is the store's message id, which is never reused, so a name is never reused either.
pub fn file_name(ty: MessageType, date: chrono::NaiveDate, seq: i64) -> String {
    format!("{}_{}_{:08}.xml", ty.as_str(), date.format("%Y%m%d"), seq)
}

/// Writes message files for Turnkey to pick up.
#[derive(Debug, Clone)]
pub struct Pickup {
    template: InboxTemplate,
    staging: PathBuf,
    device: u64,
}

impl Pickup {
    /// Creates the staging folder and the fixed part of the pickup path, and checks they are on
    /// one filesystem.
    pub fn open(inbox: &str, staging: &Path) -> Result<Pickup, PickupError> {
        let template = InboxTemplate::parse(inbox).map_err(|m| PickupError::Io {
            action: "parse turnkey.inbox",
            path: inbox.into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, m),
        })?;
        durable::create_dir_all(staging).map_err(io_err("create staging folder", staging))?;
        let root = template.fixed_root();
        durable::create_dir_all(&root).map_err(io_err("create pickup folder", &root))?;
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canon(staging).starts_with(canon(&root)) {
            return Err(PickupError::StagingInsideInbox {
                staging: staging.to_path_buf(),
                inbox: root,
            });
        }
        let device = durable::device_of(staging).map_err(io_err("stat", staging))?;
        let pickup = Pickup {
            template,
            staging: staging.to_path_buf(),
            device,
        };
        pickup.check_device(&root)?;
        pickup.probe_link(&root)?;
        Ok(pickup)
    }

    /// Links a probe file from staging into `dir`: the only sure test that the final move
    /// will work. Two bind mounts of one filesystem (what systemd's `ReadWritePaths=` and
    /// `StateDirectory=` make) share a device number but refuse links across them.
    ///
    /// The probe is a hidden, empty, non-XML file (`.turnbridge-probe-<pid>`) that exists in
    /// the pickup folder for an instant at start-up; Turnkey only takes `*.xml`. Probes left by
    /// a process killed right then are removed first.
    fn probe_link(&self, dir: &Path) -> Result<(), PickupError> {
        for d in [&self.staging, &dir.to_path_buf()] {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with(".turnbridge-probe-")
                    {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let name = format!(".turnbridge-probe-{}", std::process::id());
        let (src, dest) = (self.staging.join(&name), dir.join(&name));
        let _ = std::fs::remove_file(&dest);
        durable::write_synced(&src, b"probe").map_err(io_err("write", &src))?;
        let linked = std::fs::hard_link(&src, &dest);
        let _ = std::fs::remove_file(&src);
        let _ = std::fs::remove_file(&dest);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(PickupError::CrossDevice {
                staging: self.staging.clone(),
                inbox: dir.to_path_buf(),
            }),
            // Filesystems without hard links fall back to rename at publish time.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EOPNOTSUPP)) => {
                Ok(())
            }
            Err(e) => Err(io_err("link a probe into", dir)(e)),
        }
    }

    fn check_device(&self, dir: &Path) -> Result<(), PickupError> {
        let dev = durable::device_of(dir).map_err(io_err("stat", dir))?;
        if dev != self.device {
            return Err(PickupError::CrossDevice {
                staging: self.staging.clone(),
                inbox: dir.to_path_buf(),
            });
        }
        Ok(())
    }

    pub fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    pub fn inbox_dir(&self, ty: MessageType, tenant: &str) -> PathBuf {
        self.template.resolve(ty, tenant)
    }

    /// Writes the file in the staging folder and fsyncs it, as a new file that follows no
    /// link ([`durable::create_fresh`]). Safe to repeat.
    pub fn stage(&self, name: &str, xml: &[u8]) -> Result<(), PickupError> {
        let path = self.staging_path(name);
        durable::write_synced(&path, xml).map_err(io_err("write", &path))
    }

    /// Syncs the staging folder once after a run of [`Pickup::stage`].
    pub fn sync_staging(&self) -> Result<(), PickupError> {
        durable::fsync_dir(&self.staging).map_err(io_err("sync", &self.staging))
    }

    /// Moves a staged file into its pickup folder without ever replacing a file there: it is
    /// linked under its final name (which fails if the name is taken) and then unlinked from
    /// staging. Returns the final path, and whether this call moved it; `false` means an
    /// earlier run already did (Turnkey may since have taken it, so it must not be written
    /// again). Call [`Pickup::sync_dirs`] afterwards.
    pub fn publish(
        &self,
        staged: &Path,
        name: &str,
        ty: MessageType,
        tenant: &str,
    ) -> Result<(PathBuf, bool), PickupError> {
        let dir = self.inbox_dir(ty, tenant);
        let dest = dir.join(name);
        let Ok(src_meta) = std::fs::metadata(staged) else {
            return Ok((dest, false));
        };
        durable::create_dir_all(&dir).map_err(io_err("create pickup folder", &dir))?;
        self.check_device(&dir)?;
        match std::fs::hard_link(staged, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                use std::os::unix::fs::MetadataExt;
                let same = std::fs::metadata(&dest)
                    .is_ok_and(|d| d.ino() == src_meta.ino() && d.dev() == src_meta.dev());
                if !same {
                    return Err(PickupError::NameTaken(dest));
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EOPNOTSUPP)) => {
                // A filesystem without hard links: rename, after checking the name is free.
                if dest.exists() {
                    return Err(PickupError::NameTaken(dest));
                }
                std::fs::rename(staged, &dest)
                    .map_err(io_err("rename into pickup folder", &dest))?;
                return Ok((dest, true));
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                return Err(PickupError::CrossDevice {
                    staging: self.staging.clone(),
                    inbox: dir.clone(),
                })
            }
            Err(e) => return Err(io_err("link into pickup folder", &dest)(e)),
        }
        std::fs::remove_file(staged).map_err(io_err("remove staged file", staged))?;
        Ok((dest, true))
    }

    /// Makes the renames of a run of [`Pickup::publish`] durable.
    pub fn sync_dirs(&self, dirs: &BTreeSet<PathBuf>) -> Result<(), PickupError> {
        for dir in dirs.iter().chain(std::iter::once(&self.staging)) {
            durable::fsync_dir(dir).map_err(io_err("sync", dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_placeholders() {
        let t = InboxTemplate::parse("/tk/UpCast/B2SSTORAGE/{message_type}/SRC").unwrap();
        assert_eq!(
            t.resolve(MessageType::G0401, "t1"),
            PathBuf::from("/tk/UpCast/B2SSTORAGE/G0401/SRC")
        );
        assert_eq!(t.fixed_root(), PathBuf::from("/tk/UpCast/B2SSTORAGE"));
        assert!(InboxTemplate::parse("/tk/{msg}").is_err());
        assert!(InboxTemplate::parse("/tk/{tenant").is_err());
    }

    #[test]
    fn staging_inside_the_pickup_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("INBOX");
        let err = Pickup::open(inbox.to_str().unwrap(), &inbox.join(".staging")).unwrap_err();
        assert!(
            matches!(err, PickupError::StagingInsideInbox { .. }),
            "{err}"
        );
    }

    #[test]
    fn publishing_never_replaces_a_file_and_is_safe_to_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("INBOX");
        let p = Pickup::open(inbox.to_str().unwrap(), &dir.path().join("staging")).unwrap();
        let ty = MessageType::F0401;
        p.stage("a.xml", b"<ours/>").unwrap();
        let staged = p.staging_path("a.xml");
        // A crash between link and unlink leaves both names: publishing again finishes it.
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::hard_link(&staged, inbox.join("a.xml")).unwrap();
        assert_eq!(
            p.publish(&staged, "a.xml", ty, "t").unwrap(),
            (inbox.join("a.xml"), true)
        );
        assert!(!staged.exists());
        assert_eq!(
            p.publish(&staged, "a.xml", ty, "t").unwrap(),
            (inbox.join("a.xml"), false)
        );
        // Someone else's file under the same name is never replaced.
        p.stage("b.xml", b"<ours/>").unwrap();
        std::fs::write(inbox.join("b.xml"), b"<theirs/>").unwrap();
        let err = p
            .publish(&p.staging_path("b.xml"), "b.xml", ty, "t")
            .unwrap_err();
        assert!(matches!(err, PickupError::NameTaken(_)));
        assert_eq!(std::fs::read(inbox.join("b.xml")).unwrap(), b"<theirs/>");
    }

    #[test]
    fn names_carry_type_date_and_sequence() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(
            file_name(MessageType::F0401, d, 42),
            "F0401_20261126_00000042.xml"
        );
    }
}
