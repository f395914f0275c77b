//! Where the real Turnkey (3.2.0) keeps things, in the `turnkey` layout, and the names it
//! gives them. Everything is relative to Turnkey's `<def>` folder (`EINVTurnkey`), which is
//! derived from the pickup template `<def>/UpCast/B2SSTORAGE/{message_type}/SRC`:
//!
//! - `<def>/UpCast/B2SSTORAGE/<MSG>/BAK/<yyyyMMdd>/<HH>/<name>[.001…]`: accepted by UpCast;
//! - `<def>/UpCast/B2SSTORAGE/<MSG>/ERR/<yyyyMMdd>/<HH>/<name>`: refused by UpCast, the reason
//!   in `<def>/log/Turnkey.log`;
//! - `<def>/Pack/B2SSTORAGE/{SRC,BAK}/**/<first name>_<fromBan>_<toBan>_v41-<MSG>-<yyyyMMdd>-<HHmmssSSS>-<uuid>_<count>`:
//!   the accepted files merged into one upload;
//! - `<def>/Unpack/BAK/{ProcessResult,SummaryResult}/**`: the platform's results, unsigned.
//!
//! The daemon only reads these folders; it never creates, moves or deletes anything in them.

use std::path::{Path, PathBuf};

use crate::einvoice::MessageType;
use crate::turnkey::InboxTemplate;

/// The pickup template's required ending in the `turnkey` layout.
pub const PICKUP_SUFFIX: &str = "/UpCast/B2SSTORAGE/{message_type}/SRC";

/// Turnkey's `<def>` folder, possibly per tenant (`{tenant}` may appear in it).
#[derive(Debug, Clone, PartialEq)]
pub struct DefTemplate(String);

impl DefTemplate {
    /// Derives `<def>` from the pickup template; refuses a template of another shape.
    pub fn from_pickup(inbox: &str) -> Result<DefTemplate, String> {
        InboxTemplate::parse(inbox)?;
        let trimmed = inbox.trim_end_matches('/');
        let Some(def) = trimmed.strip_suffix(PICKUP_SUFFIX) else {
            return Err(format!(
                "in the turnkey layout must be Turnkey's `<EINVTurnkey>{PICKUP_SUFFIX}` (the results are read from that EINVTurnkey folder)"
            ));
        };
        if def.is_empty() || def.contains("{message_type}") {
            return Err(format!(
                "must be `<EINVTurnkey>{PICKUP_SUFFIX}` with a fixed EINVTurnkey folder (only {{tenant}} may appear in it)"
            ));
        }
        Ok(DefTemplate(def.to_string()))
    }

    /// `<def>` for one tenant.
    pub fn resolve(&self, tenant: &str) -> Def {
        Def(PathBuf::from(self.0.replace("{tenant}", tenant)))
    }

    /// Whether each tenant has its own `<def>`.
    pub fn per_tenant(&self) -> bool {
        self.0.contains("{tenant}")
    }

    /// The part of `<def>` before any placeholder.
    pub fn fixed_root(&self) -> PathBuf {
        InboxTemplate::parse(&self.0)
            .map(|t| t.fixed_root())
            .unwrap_or_else(|_| PathBuf::from(&self.0))
    }
}

/// One Turnkey `<def>` folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Def(pub PathBuf);

impl Def {
    /// `<def>/UpCast/B2SSTORAGE/<MSG>`, the parent of SRC, BAK and ERR.
    pub fn message_dir(&self, ty: MessageType) -> PathBuf {
        self.0.join("UpCast/B2SSTORAGE").join(ty.as_str())
    }

    /// Where UpCast leaves merged packs (Pack's SRC), and where Pack moves them (BAK).
    pub fn pack_dirs(&self) -> [PathBuf; 2] {
        [
            self.0.join("Pack/B2SSTORAGE/SRC"),
            self.0.join("Pack/B2SSTORAGE/BAK"),
        ]
    }

    /// Unpack's backups of verified ProcessResult and SummaryResult files.
    pub fn result_dirs(&self) -> [PathBuf; 2] {
        [
            self.0.join("Unpack/BAK/ProcessResult"),
            self.0.join("Unpack/BAK/SummaryResult"),
        ]
    }

    /// Turnkey's job log, which holds the reason for each file moved to ERR.
    pub fn log_file(&self) -> PathBuf {
        self.0.join("log/Turnkey.log")
    }
}

/// The name turnbridge wrote, from a BAK name: UpCast appends `.001`, `.002`… when the hour
/// folder already holds the name.
pub fn original_name(bak_name: &str) -> &str {
    match bak_name.rsplit_once('.') {
        Some((stem, n))
            if n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) && stem.contains('.') =>
        {
            stem
        }
        _ => bak_name,
    }
}

/// The common name of one upload: `v41-<MSG>-<yyyyMMdd>-<HHmmssSSS>-<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId {
    pub version: String,
    pub message_type: String,
    pub date: String,
    pub time: String,
    pub uuid: String,
}

impl UploadId {
    pub fn parse(s: &str) -> Option<UploadId> {
        let mut parts = s.splitn(5, '-');
        let version = parts.next()?;
        let message_type = parts.next()?;
        let date = parts.next()?;
        let time = parts.next()?;
        let uuid = parts.next()?;
        let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
        if !version.starts_with('v')
            || message_type.len() != 5
            || !digits(date, 8)
            || !digits(time, 9)
            || uuid.len() != 36
        {
            return None;
        }
        Some(UploadId {
            version: version.into(),
            message_type: message_type.into(),
            date: date.into(),
            time: time.into(),
            uuid: uuid.into(),
        })
    }

    pub fn to_name(&self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.version, self.message_type, self.date, self.time, self.uuid
        )
    }
}

/// A merged pack's file name:
/// `<first source name>_<fromBan>_<toBan>_v41-<MSG>-<yyyyMMdd>-<HHmmssSSS>-<uuid>_<count>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackName {
    pub first: String,
    pub from_ban: String,
    pub to_ban: String,
    pub upload: UploadId,
    pub count: usize,
}

impl PackName {
    pub fn parse(name: &str) -> Option<PackName> {
        let mut parts = name.rsplitn(5, '_');
        let count = parts.next()?.parse().ok()?;
        let upload = UploadId::parse(parts.next()?)?;
        let to_ban = parts.next()?.to_string();
        let from_ban = parts.next()?.to_string();
        let first = parts.next()?.to_string();
        Some(PackName {
            first,
            from_ban,
            to_ban,
            upload,
            count,
        })
    }

    pub fn to_name(&self) -> String {
        format!(
            "{}_{}_{}_{}_{}",
            self.first,
            self.from_ban,
            self.to_ban,
            self.upload.to_name(),
            self.count
        )
    }
}

/// The upload a result file name is about: `v41-<MSG>-<yyyyMMdd>-<HHmmssSSS>-<uuid><sep>ProcessResult`
/// (Turnkey reads only the part before the separator).
pub fn result_upload(name: &str) -> Option<UploadId> {
    // `v41-F0401-20261202-123633689-` is 29 characters, the uuid 36.
    UploadId::parse(name.get(..65)?)
}

/// The `<yyyyMMdd>` folder a path under `base` sits in, if it has one.
pub fn day_folder(base: &Path, path: &Path) -> Option<chrono::NaiveDate> {
    let rel = path.strip_prefix(base).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    chrono::NaiveDate::parse_from_str(first, "%Y%m%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn def_from_the_pickup_template() {
        let d = DefTemplate::from_pickup("/tk/EINVTurnkey/UpCast/B2SSTORAGE/{message_type}/SRC")
            .unwrap();
        assert_eq!(d.resolve("t").0, PathBuf::from("/tk/EINVTurnkey"));
        assert!(DefTemplate::from_pickup("/tk/{message_type}/SRC").is_err());
        assert!(DefTemplate::from_pickup("/UpCast/B2SSTORAGE/{message_type}/SRC").is_err());
        let t =
            DefTemplate::from_pickup("/tk/{tenant}/UpCast/B2SSTORAGE/{message_type}/SRC").unwrap();
        assert_eq!(t.resolve("a").0, PathBuf::from("/tk/a"));
        assert_eq!(t.fixed_root(), PathBuf::from("/tk"));
    }

    #[test]
    fn bak_suffixes() {
        assert_eq!(
            original_name("F0401_20261126_00000001.xml.001"),
            "F0401_20261126_00000001.xml"
        );
        assert_eq!(
            original_name("F0401_20261126_00000001.xml"),
            "F0401_20261126_00000001.xml"
        );
        assert_eq!(original_name("a.001"), "a.001");
    }

    #[test]
    fn pack_and_result_names() {
        let n = "F0401_20261202_00000001.xml_90000011_00000000_v41-F0401-20261202-123633689-a72cf668-ca86-446c-8c67-5ff8d73159fd_3";
        let p = PackName::parse(n).unwrap();
        assert_eq!(p.first, "F0401_20261202_00000001.xml");
        assert_eq!(p.from_ban, "90000011");
        assert_eq!(p.upload.uuid, "a72cf668-ca86-446c-8c67-5ff8d73159fd");
        assert_eq!(p.upload.message_type, "F0401");
        assert_eq!(p.count, 3);
        assert_eq!(p.to_name(), n);
        let r = result_upload(
            "v41-F0401-20261202-123633689-a72cf668-ca86-446c-8c67-5ff8d73159fd_ProcessResult",
        )
        .unwrap();
        assert_eq!(r, p.upload);
        assert!(result_upload("SummaryResult_1.xml").is_none());
    }
}
