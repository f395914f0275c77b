//! A stand-in for Turnkey and the platform, for the sandbox: it lets a newcomer watch a file
//! become XML, get picked up and acknowledged (or rejected) within seconds, with no Turnkey
//! installed. It is enabled by `[simulator] enabled = true`, which only the sandbox config
//! sets.
//!
//! What it does with each message file that has waited `delay_ms` in a pickup folder:
//! - **flat**: checks it against the MIG 4.1 schemas with `xmllint` (when installed); a file
//!   that fails, or whose number is in `[simulator] err`, goes to `ERROR/`; otherwise it moves
//!   to `SENT/` beside the pickup folder and an `ACK` (or, for a number in
//!   `[simulator] reject`, an `ERROR`) is written to the outbox, followed by a `DailySummary`.
//! - **turnkey**: moves and answers as the real Turnkey 3.2.0 does (see
//!   [`crate::turnkey::layout`]): every file of `<MSG>/SRC` (subfolders included), in
//!   modification-time order; a refused file (3 bytes or less, not well-formed, failing the
//!   schemas, or listed in `err`) to `<MSG>/ERR/<yyyyMMdd>/<HH>/<name>` (replacing a same
//!   name), with UpCast's lines in `log/Turnkey.log` (the real ones: an empty file's
//!   `prepareSourceFile` without a move line, a parse failure's three-line `parseSourceFile`); the accepted files of one type and seller merged into
//!   `Pack/B2SSTORAGE/SRC/<first name>_<fromBan>_00000000_v41-<MSG>-<yyyyMMdd>-<HHmmssSSS>-<uuid>_<count>`
//!   (the documents without XML declarations, concatenated), then moved to
//!   `<MSG>/BAK/<yyyyMMdd>/<HH>/<name>` (`.001`, `.002`… when the name is taken). As the
//!   platform and Unpack, it then leaves for each pack an unsigned
//!   `Unpack/BAK/ProcessResult/<yyyyMMdd>/<HH>/v41-<MSG>-…-<uuid>_ProcessResult` (Code `00000`,
//!   or one `No. N` Info per invoice listed in `reject`) and a `SummaryResult` beside it under
//!   `Unpack/BAK/SummaryResult/`.

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
    file_name: String,
    number: String,
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

    /// Takes a reloaded configuration (what to refuse, the delay, the folders); the day's
    /// counts for the summaries stay.
    pub fn reload(&mut self, config: Config) {
        self.template = InboxTemplate::parse(&config.turnkey.inbox).expect("checked config");
        self.config = config;
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
        if self.config.turnkey.layout == Layout::Turnkey {
            let delay = Duration::from_millis(self.config.simulator.delay_ms);
            for src in self.pickup_dirs() {
                if let Err(e) = self.upcast(&src, delay) {
                    warn!(folder = %src.display(), "simulator: {e}");
                }
            }
            return;
        }
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

    /// One UpCast run over `<def>/UpCast/B2SSTORAGE/<MSG>/SRC`, then the platform's answer.
    fn upcast(&mut self, src: &Path, delay: Duration) -> std::io::Result<()> {
        let mut files = Vec::new();
        all_files(src, &mut files, 0);
        let now = std::time::SystemTime::now();
        files.retain(|(_, m)| now.duration_since(*m).is_ok_and(|age| age >= delay));
        if files.is_empty() {
            return Ok(());
        }
        files.sort_by_key(|(p, m)| (*m, p.clone()));
        let msg_dir = src.parent().unwrap_or(src).to_path_buf();
        let ty = msg_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // <def>/UpCast/B2SSTORAGE/<MSG>/SRC
        let def = src.ancestors().nth(4).unwrap_or(src).to_path_buf();
        let local = chrono::Local::now();
        let (day, hour) = (
            local.format("%Y%m%d").to_string(),
            local.format("%H").to_string(),
        );
        let mut log = String::new();
        let stamp = |l: &mut String, line: String| {
            l.push_str(&format!(
                "{} {line}\n",
                chrono::Local::now().format("%Y/%m/%d %H:%M:%S")
            ));
        };
        stamp(
            &mut log,
            format!("UpCast [INFO] beginMark [處理 {ty} 開始]"),
        );
        // Accepted files by seller, in the order taken.
        let mut packs: Vec<(String, Vec<Packed>)> = Vec::new();
        for (file, _) in &files {
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(fs::File::open(file)?, (20 << 20) + 1),
                &mut bytes,
            )?;
            let xml = String::from_utf8_lossy(&bytes).into_owned();
            let number = document_number(&xml);
            // As the real UpCast logs them (an empty file gets no move line).
            let refused = if bytes.len() <= 3 {
                Some((
                    "prepareSourceFile",
                    format!("This file {} is empty.", file.display()),
                ))
            } else if bytes.len() > 20 << 20 {
                Some(("validateFile", format!("{name} is larger than 20 MiB")))
            } else if !well_formed(&bytes) {
                // Turnkey's JAXB reads a stream its parser already consumed: whatever the
                // fault, the linked exception is the same.
                Some((
                    "parseSourceFile",
                    format!("{name} 解析XML錯誤. jakarta.xml.bind.UnmarshalException\n - with linked exception:\n[org.xml.sax.SAXParseException; lineNumber: 1; columnNumber: 1; Premature end of file.]"),
                ))
            } else if self.config.simulator.err.contains(&number) {
                Some((
                    "validateSourceFileByProg",
                    format!("Validate message by program v41{ty}-{name} fail: [7001] {number} is listed in [simulator] err"),
                ))
            } else {
                self.schema_check(file, &ty).err().map(|why| {
                    (
                        "validateSourceFileByXsd",
                        format!("Validate message by xsd v41{ty}-{name} fail: [7013] Validator invalid{why}"),
                    )
                })
            };
            if let Some((method, why)) = refused {
                let dir = msg_dir.join("ERR").join(&day).join(&hour);
                durable::create_dir_all(&dir)?;
                let dest = dir.join(&name);
                fs::rename(file, &dest)?;
                stamp(
                    &mut log,
                    format!(
                        "UpCast [ERROR] {method} [{why}] sourceFile={}",
                        file.display()
                    ),
                );
                if method != "prepareSourceFile" {
                    stamp(
                        &mut log,
                        format!(
                            "UpCast [INFO] moveSourceToError sourceFile={} errorFile={}",
                            file.display(),
                            dest.display()
                        ),
                    );
                }
                info!(file = %name, "simulator: refused like Turnkey's UpCast, moved to {}: {why}", dest.display());
                continue;
            }
            let seller = first_text(&xml, &["SellerId"])
                .or_else(|| {
                    let at = xml.find("<Seller>")?;
                    first_text(&xml[at..], &["Identifier"])
                })
                .unwrap_or_else(|| "00000000".into());
            let packed = Packed {
                file: file.clone(),
                name,
                document: without_declaration(&xml).trim_end().to_string(),
                number,
                date: first_text(&xml, &["InvoiceDate", "AllowanceDate"]).unwrap_or_default(),
            };
            match packs
                .iter_mut()
                .find(|(s, list)| *s == seller && list.len() < 1000)
            {
                Some((_, list)) => list.push(packed),
                None => packs.push((seller, vec![packed])),
            }
        }
        let pack_dir = def.join("Pack/B2SSTORAGE/SRC");
        for (seller, list) in &packs {
            let at = chrono::Local::now();
            let uuid = uuid::Uuid::new_v4().to_string();
            let upload = format!(
                "v41-{ty}-{}-{}-{uuid}",
                at.format("%Y%m%d"),
                at.format("%H%M%S%3f")
            );
            let pack_name = format!("{}_{seller}_00000000_{upload}_{}", list[0].name, list.len());
            let body: String = list.iter().map(|p| p.document.as_str()).collect();
            durable::create_dir_all(&pack_dir)?;
            durable::write_atomic(&pack_dir.join(&pack_name), body.as_bytes())?;
            let bak = msg_dir.join("BAK").join(&day).join(&hour);
            durable::create_dir_all(&bak)?;
            for p in list {
                let mut dest = bak.join(&p.name);
                let mut k = 0;
                while dest.exists() {
                    k += 1;
                    dest = bak.join(format!("{}.{k:03}", p.name));
                }
                fs::rename(&p.file, &dest)?;
                stamp(&mut log, format!("UpCast [INFO] mergeDone [Message file (multiple) process done] sourceFile={} targetFile={}", p.file.display(), pack_dir.join(&pack_name).display()));
            }
            info!(pack = %pack_name, "simulator: {} {ty} file(s) taken like Turnkey's UpCast", list.len());
            self.platform_answer(&def, &ty, seller, &upload, &uuid, list)?;
        }
        let log_file = def.join("log/Turnkey.log");
        durable::create_dir_all(&def.join("log"))?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)?;
        std::io::Write::write_all(&mut f, log.as_bytes())?;
        Ok(())
    }

    /// The platform's verdict on one upload, as Unpack leaves it (unsigned, in BAK).
    fn platform_answer(
        &self,
        def: &Path,
        ty: &str,
        seller: &str,
        upload: &str,
        uuid: &str,
        list: &[Packed],
    ) -> std::io::Result<()> {
        let now = chrono::Local::now();
        let sub = |kind: &str| {
            def.join("Unpack/BAK")
                .join(kind)
                .join(now.format("%Y%m%d").to_string())
                .join(now.format("%H").to_string())
        };
        let rejected: Vec<(usize, &Packed)> = list
            .iter()
            .enumerate()
            .filter(|(_, p)| self.config.simulator.reject.contains(&p.number))
            .map(|(i, p)| (i + 1, p))
            .collect();
        let infos = if rejected.is_empty() {
            "    <Info>\n      <Code>00000</Code>\n      <Description>Success</Description>\n    </Info>\n".to_string()
        } else {
            rejected
                .iter()
                .map(|(n, p)| format!("    <Info>\n      <Code>5001</Code>\n      <Description>No. {n} rejected by the simulated platform</Description>\n      <Parameter0>{}</Parameter0>\n      <Parameter1>{}</Parameter1>\n    </Info>\n", p.number, p.date))
                .collect()
        };
        let routing = format!("  <RoutingInfo>\n    <From><PartyId>{seller}</PartyId></From>\n    <FromVAC><RoutingId>{seller}</RoutingId></FromVAC>\n    <To><PartyId>00000000</PartyId></To>\n    <ToVAC><RoutingId>00000000</RoutingId></ToVAC>\n  </RoutingInfo>\n");
        let process = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ProcessResult xmlns=\"urn:GEINV:ProcessResult:4.1\">\n{routing}  <MessageInfo>\n    <Id>{uuid}</Id>\n    <Size>{}</Size>\n    <MessageType>{ty}</MessageType>\n    <Service>S</Service>\n    <Action>B2S</Action>\n  </MessageInfo>\n  <Result>\n{infos}  </Result>\n</ProcessResult>\n", list.len());
        let dir = sub("ProcessResult");
        durable::create_dir_all(&dir)?;
        durable::write_atomic(
            &dir.join(format!("{upload}_ProcessResult")),
            process.as_bytes(),
        )?;
        let refs = |bad: bool| -> (usize, String) {
            let v: Vec<&Packed> = list
                .iter()
                .filter(|p| self.config.simulator.reject.contains(&p.number) == bad)
                .collect();
            let xml = v
                .iter()
                .map(|p| format!("<Invoices><Invocie><ReferenceNumber>{}</ReferenceNumber><InvoiceDate>{}</InvoiceDate></Invocie></Invoices>", p.number, iso_date(&p.date)))
                .collect();
            (v.len(), xml)
        };
        let ((good, good_refs), (bad, bad_refs)) = (refs(false), refs(true));
        let summary = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SummaryResult xmlns=\"urn:GEINV:SummaryResult:4.1\">\n{routing}  <DetailList>\n    <Message>\n      <Info><Id>{upload}</Id><Size>{}</Size><MessageType>{ty}</MessageType><Service>S</Service><Action>B2S</Action></Info>\n      <Result>\n        <Total><Count>{}</Count></Total>\n        <Good><Count>{good}</Count>{good_refs}</Good>\n        <Failed><Count>{bad}</Count>{bad_refs}</Failed>\n      </Result>\n    </Message>\n  </DetailList>\n</SummaryResult>\n", list.len(), list.len());
        let dir = sub("SummaryResult");
        durable::create_dir_all(&dir)?;
        let name = format!(
            "v41-SummaryResult-{}-{}-{uuid}_SummaryResult",
            now.format("%Y%m%d"),
            now.format("%H%M%S%3f")
        );
        durable::write_atomic(&dir.join(name), summary.as_bytes())?;
        Ok(())
    }

    fn take(&mut self, dir: &Path, file: &Path) -> std::io::Result<Option<Sent>> {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ty = name.split('_').next().unwrap_or_default().to_string();
        let xml = fs::read_to_string(file)?;
        let number = document_number(&xml);
        let local = if self.config.simulator.err.contains(&number) {
            Err(format!("{number} is listed in [simulator] err"))
        } else {
            self.schema_check(file, &ty)
        };
        if let Err(why) = local {
            let dest = self.config.turnkey.error.clone();
            durable::move_into(file, &dest, &name)?;
            info!(file = %name, "simulator: failed the schema check, moved to {}: {why}", dest.display());
            return Ok(None);
        }
        let dest = dir.parent().unwrap_or(dir).join("SENT");
        durable::move_into(file, &dest, &name)?;
        let rejected = self.config.simulator.reject.contains(&number);
        info!(file = %name, "simulator: sent {ty} {number}{}", if rejected { " (the platform will reject it)" } else { "" });
        Ok(Some(Sent {
            file_name: name,
            number,
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
        for (i, s) in sent.iter().enumerate() {
            let (number, stem) = (&s.number, s.file_name.trim_end_matches(".xml"));
            let body = if s.rejected {
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ERROR>\n  <OriginalMessageID>{stem}</OriginalMessageID>\n  <ErrorCode>E0001</ErrorCode>\n  <ErrorMessage>rejected by the simulated platform ({number})</ErrorMessage>\n</ERROR>\n")
            } else {
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ACK>\n  <MessageID>{stem}</MessageID>\n  <ReceiptNo>SIM{stamp}{i:04}</ReceiptNo>\n  <TimeStamp>{}</TimeStamp>\n</ACK>\n", now.to_rfc3339())
            };
            let kind = if s.rejected { "ERROR" } else { "ACK" };
            durable::create_dir_all(outbox)?;
            durable::write_atomic(&outbox.join(format!("{kind}_{stem}.xml")), body.as_bytes())?;
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

/// An accepted file on its way into a pack.
struct Packed {
    file: PathBuf,
    name: String,
    document: String,
    number: String,
    date: String,
}

/// Every file below `dir` with its modification time, as UpCast takes them (any name,
/// subfolders included).
fn all_files(dir: &Path, out: &mut Vec<(PathBuf, std::time::SystemTime)>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            all_files(&p, out, depth + 1);
        } else if meta.is_file() {
            if let Ok(m) = meta.modified() {
                out.push((p, m));
            }
        }
    }
}

/// Whether a file is well-formed XML with one root element.
fn well_formed(bytes: &[u8]) -> bool {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        match reader.read_event_into(&mut buf) {
            Err(_) => return false,
            Ok(Event::Eof) => return depth == 0 && roots == 1,
            Ok(Event::Start(_)) => {
                roots += (depth == 0) as usize;
                depth += 1;
            }
            Ok(Event::Empty(_)) => roots += (depth == 0) as usize,
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(Event::Text(t)) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return false
            }
            Ok(_) => {}
        }
        buf.clear();
    }
}

fn document_number(xml: &str) -> String {
    first_text(
        xml,
        &[
            "InvoiceNumber",
            "CancelInvoiceNumber",
            "VoidInvoiceNumber",
            "AllowanceNumber",
            "CancelAllowanceNumber",
        ],
    )
    .unwrap_or_default()
}

/// The document without its `<?xml …?>` declaration, as Turnkey's packs hold it.
fn without_declaration(xml: &str) -> &str {
    let t = xml.trim_start_matches('\u{feff}').trim_start();
    match t
        .strip_prefix("<?xml")
        .and_then(|r| r.find("?>").map(|i| &r[i + 2..]))
    {
        Some(rest) => rest.trim_start(),
        None => t,
    }
}

/// `YYYYMMDD` as the XSD's `xs:date`.
fn iso_date(d: &str) -> String {
    if d.len() == 8 {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        d.to_string()
    }
}
