//! A stand-in for Turnkey and the platform, for the sandbox: it lets a newcomer watch a file
//! become XML, get picked up and acknowledged (or rejected) within seconds, with no Turnkey
//! installed. It is enabled by `[simulator] enabled = true`, which only the sandbox config
//! sets.
//!
//! What it does with each message file that has waited `delay_ms` in a pickup folder:
//! - checks it against the MIG 4.1 schemas with `xmllint` (when installed); a file that fails,
//!   or whose number is in `[simulator] err`, goes to `ERROR/` (flat) or
//!   `<MSG>/ERR/YYYYMMDD/HH-HH/` (turnkey layout), as Turnkey's local check does;
//! - otherwise "sends" it: flat, the file moves to `SENT/` beside the pickup folder and an
//!   `ACK` (or, for a number in `[simulator] reject`, an `ERROR`) is written to the outbox,
//!   followed by a `DailySummary`; turnkey layout, the file moves to
//!   `<MSG>/BAK/YYYYMMDD/HH/` and a `SummaryResult` listing Good and Failed invoices is written
//!   to `outbox/YYYYMMDD/HH/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{Config, Layout};
use crate::durable;
use crate::turnkey::feedback::settled_files;
use crate::turnkey::InboxTemplate;

/// The repo's MIG 4.1 schemas, built in so the simulator can check files anywhere.
pub const SCHEMAS: [(&str, &str); 5] = [
    ("F0401", include_str!("../../schemas/mig41/F0401.xsd")),
    ("F0501", include_str!("../../schemas/mig41/F0501.xsd")),
    ("F0701", include_str!("../../schemas/mig41/F0701.xsd")),
    ("G0401", include_str!("../../schemas/mig41/G0401.xsd")),
    ("G0501", include_str!("../../schemas/mig41/G0501.xsd")),
];

struct Sent {
    message_type: String,
    file_name: String,
    number: String,
    date: String,
    rejected: bool,
}

pub struct Simulator {
    config: Config,
    template: InboxTemplate,
    schemas: Option<PathBuf>,
    sent_today: BTreeMap<String, (u64, u64)>,
}

impl Simulator {
    pub fn new(config: Config) -> Simulator {
        let template = InboxTemplate::parse(&config.turnkey.inbox).expect("checked config");
        let schemas = write_schemas(&config.paths.state.join("simulator/schemas"));
        if schemas.is_none() {
            warn!("simulator: xmllint is not installed; files are not checked against the schemas");
        }
        Simulator {
            config,
            template,
            schemas,
            sent_today: BTreeMap::new(),
        }
    }

    /// Pickup folders holding files: `SRC` folders (turnkey layout) or the flat inbox.
    fn pickup_dirs(&self) -> Vec<PathBuf> {
        let root = self.template.fixed_root();
        match self.config.turnkey.layout {
            Layout::Flat => vec![root],
            Layout::Turnkey => {
                let mut out = Vec::new();
                find_src(&root, &mut out, 0);
                out
            }
        }
    }

    /// One pass over the pickup folders.
    pub fn step(&mut self) {
        let delay = Duration::from_millis(self.config.simulator.delay_ms);
        let mut sent = Vec::new();
        for dir in self.pickup_dirs() {
            for file in settled_files(&dir, delay) {
                if file.parent() != Some(dir.as_path())
                    || file.extension().and_then(|e| e.to_str()) != Some("xml")
                {
                    continue;
                }
                match self.take(&dir, &file) {
                    Ok(Some(s)) => sent.push(s),
                    Ok(None) => {}
                    Err(e) => warn!(file = %file.display(), "simulator: {e}"),
                }
            }
        }
        if !sent.is_empty() {
            if let Err(e) = self.answer(&sent) {
                warn!("simulator: cannot write results: {e}");
            }
        }
    }

    fn take(&mut self, dir: &Path, file: &Path) -> std::io::Result<Option<Sent>> {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ty = name.split('_').next().unwrap_or_default().to_string();
        let xml = fs::read_to_string(file)?;
        let now = chrono::Local::now();
        let number = first_text(
            &xml,
            &[
                "InvoiceNumber",
                "CancelInvoiceNumber",
                "VoidInvoiceNumber",
                "AllowanceNumber",
                "CancelAllowanceNumber",
            ],
        )
        .unwrap_or_default();
        let local = if self.config.simulator.err.contains(&number) {
            Err(format!("{number} is listed in [simulator] err"))
        } else {
            self.schema_check(file, &ty)
        };
        if let Err(why) = local {
            let dest = match self.config.turnkey.layout {
                Layout::Flat => self.config.turnkey.error.clone(),
                Layout::Turnkey => {
                    let hour: u32 = now.format("%H").to_string().parse().unwrap_or(0);
                    dir.parent()
                        .unwrap_or(dir)
                        .join("ERR")
                        .join(now.format("%Y%m%d").to_string())
                        .join(format!("{hour:02}-{:02}", (hour + 1) % 24))
                }
            };
            durable::move_into(file, &dest, &name)?;
            info!(file = %name, "simulator: failed the schema check, moved to {}: {why}", dest.display());
            return Ok(None);
        }
        let date = first_text(&xml, &["InvoiceDate", "AllowanceDate"]).unwrap_or_default();
        let dest = match self.config.turnkey.layout {
            Layout::Flat => dir.parent().unwrap_or(dir).join("SENT"),
            Layout::Turnkey => dir
                .parent()
                .unwrap_or(dir)
                .join("BAK")
                .join(now.format("%Y%m%d").to_string())
                .join(now.format("%H").to_string()),
        };
        durable::move_into(file, &dest, &name)?;
        let rejected = self.config.simulator.reject.contains(&number);
        info!(file = %name, "simulator: sent {ty} {number}{}", if rejected { " (the platform will reject it)" } else { "" });
        Ok(Some(Sent {
            message_type: ty,
            file_name: name,
            number,
            date,
            rejected,
        }))
    }

    fn schema_check(&self, file: &Path, ty: &str) -> Result<(), String> {
        let Some(dir) = &self.schemas else {
            return Ok(());
        };
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(dir.join(format!("{ty}.xsd")))
            .arg(file)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string())
        }
    }

    fn answer(&mut self, sent: &[Sent]) -> std::io::Result<()> {
        let outbox = &self.config.turnkey.outbox;
        let now = chrono::Local::now();
        let stamp = now.format("%Y%m%d%H%M%S%3f").to_string();
        match self.config.turnkey.layout {
            Layout::Flat => {
                for (i, s) in sent.iter().enumerate() {
                    let (number, stem) = (&s.number, s.file_name.trim_end_matches(".xml"));
                    let body = if s.rejected {
                        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ERROR>\n  <OriginalMessageID>{stem}</OriginalMessageID>\n  <ErrorCode>E0001</ErrorCode>\n  <ErrorMessage>rejected by the simulated platform ({number})</ErrorMessage>\n</ERROR>\n")
                    } else {
                        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ACK>\n  <MessageID>{stem}</MessageID>\n  <ReceiptNo>SIM{stamp}{i:04}</ReceiptNo>\n  <TimeStamp>{}</TimeStamp>\n</ACK>\n", now.to_rfc3339())
                    };
                    let kind = if s.rejected { "ERROR" } else { "ACK" };
                    durable::create_dir_all(outbox)?;
                    durable::write_atomic(
                        &outbox.join(format!("{kind}_{stem}.xml")),
                        body.as_bytes(),
                    )?;
                }
                let day = now.format("%Y%m%d").to_string();
                let entry = self.sent_today.entry(day.clone()).or_default();
                for s in sent {
                    if s.rejected {
                        entry.1 += 1
                    } else {
                        entry.0 += 1
                    }
                }
                let (good, bad) = *entry;
                let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DailySummary>\n  <Date>{day}</Date>\n  <Total>{}</Total>\n  <Success>{good}</Success>\n  <Failed>{bad}</Failed>\n</DailySummary>\n", good + bad);
                durable::write_atomic(
                    &outbox.join(format!("SUMMARY_{day}_{stamp}.xml")),
                    body.as_bytes(),
                )?;
            }
            Layout::Turnkey => {
                let dir = outbox
                    .join(now.format("%Y%m%d").to_string())
                    .join(now.format("%H").to_string());
                durable::create_dir_all(&dir)?;
                let mut by_type: BTreeMap<&str, Vec<&Sent>> = BTreeMap::new();
                for s in sent {
                    by_type.entry(&s.message_type).or_default().push(s);
                }
                let mut messages = String::new();
                for (ty, list) in &by_type {
                    let invoices = |rej: bool| {
                        let v: Vec<_> = list.iter().filter(|s| s.rejected == rej).collect();
                        let refs: String = v
                            .iter()
                            .map(|s| {
                                format!("<Invoice><ReferenceNumber>{}</ReferenceNumber><InvoiceDate>{}</InvoiceDate></Invoice>", s.number, s.date)
                            })
                            .collect();
                        (v.len(), refs)
                    };
                    let (good, good_refs) = invoices(false);
                    let (bad, bad_refs) = invoices(true);
                    let id = format!(
                        "4.1-{ty}-{}-{}-{:08x}-0000-4000-8000-000000000000",
                        now.format("%Y%m%d"),
                        now.format("%H%M%S%3f"),
                        rand::random::<u32>()
                    );
                    messages.push_str(&format!(
                        "    <Message>\n      <Info><Id>{id}</Id><Size>0</Size><MessageType>{ty}</MessageType><Service>S</Service><Action>C</Action></Info>\n      <ResultType>\n        <Total><ResultDetailType><Count>{}</Count></ResultDetailType></Total>\n        <Good><ResultDetailType><Count>{good}</Count><Invoices>{good_refs}</Invoices></ResultDetailType></Good>\n        <Failed><ResultDetailType><Count>{bad}</Count><Invoices>{bad_refs}</Invoices></ResultDetailType></Failed>\n      </ResultType>\n    </Message>\n",
                        good + bad
                    ));
                }
                let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SummaryResult xmlns=\"urn:GEINV:SummaryResult:4.1\">\n  <RoutingInfo><From><PartyId>SIMULATOR</PartyId></From><To><PartyId>SANDBOX</PartyId></To></RoutingInfo>\n  <DetailList>\n{messages}  </DetailList>\n</SummaryResult>\n");
                durable::write_atomic(
                    &dir.join(format!("SummaryResult_{stamp}.xml")),
                    body.as_bytes(),
                )?;
            }
        }
        Ok(())
    }
}

fn find_src(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 6 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "SRC") {
                out.push(p);
            } else if !p.file_name().is_some_and(|n| n == "BAK" || n == "ERR") {
                find_src(&p, out, depth + 1);
            }
        }
    }
}

fn first_text(xml: &str, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let open = format!("<{n}>");
        let start = xml.find(&open)? + open.len();
        let end = xml[start..].find('<')? + start;
        Some(xml[start..end].to_string())
    })
}

fn write_schemas(dir: &Path) -> Option<PathBuf> {
    let has_xmllint = Command::new("xmllint").arg("--version").output().is_ok();
    if !has_xmllint {
        return None;
    }
    durable::create_dir_all(dir).ok()?;
    for (ty, xsd) in SCHEMAS {
        durable::write_atomic(&dir.join(format!("{ty}.xsd")), xsd.as_bytes()).ok()?;
    }
    Some(dir.to_path_buf())
}
