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
    #[error("staging folder {staging} is on another filesystem than the Turnkey pickup folder {inbox}; set turnkey.staging to a folder on the pickup folder's filesystem")]
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
        let device = durable::device_of(staging).map_err(io_err("stat", staging))?;
        let pickup = Pickup {
            template,
            staging: staging.to_path_buf(),
            device,
        };
        pickup.check_device(&root)?;
        Ok(pickup)
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

    /// Writes the file in the staging folder and fsyncs it. Safe to repeat.
    pub fn stage(&self, name: &str, xml: &[u8]) -> Result<(), PickupError> {
        let path = self.staging_path(name);
        durable::write_synced(&path, xml).map_err(io_err("write", &path))
    }

    /// Syncs the staging folder once after a run of [`Pickup::stage`].
    pub fn sync_staging(&self) -> Result<(), PickupError> {
        durable::fsync_dir(&self.staging).map_err(io_err("sync", &self.staging))
    }

    /// Renames a staged file into its pickup folder. Returns the final path, or `None` when the
    /// staged file is gone because an earlier run already moved it (Turnkey may since have
    /// taken it, so it must not be written again). Call [`Pickup::sync_dirs`] afterwards.
    pub fn publish(
        &self,
        name: &str,
        ty: MessageType,
        tenant: &str,
    ) -> Result<Option<PathBuf>, PickupError> {
        let dir = self.inbox_dir(ty, tenant);
        let src = self.staging_path(name);
        let dest = dir.join(name);
        if !src.exists() {
            return Ok(None);
        }
        durable::create_dir_all(&dir).map_err(io_err("create pickup folder", &dir))?;
        self.check_device(&dir)?;
        std::fs::rename(&src, &dest).map_err(io_err("rename into pickup folder", &dest))?;
        Ok(Some(dest))
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
    fn names_carry_type_date_and_sequence() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(
            file_name(MessageType::F0401, d, 42),
            "F0401_20261126_00000042.xml"
        );
    }
}
