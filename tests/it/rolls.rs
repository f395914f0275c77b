//! Number rolls and blank-number reports against the official schemas and the real Turnkey:
//! the hand-written E0501 and E0401 fixtures meet the official XSDs, and the E0402 reports
//! turnbridge renders from them pass Turnkey's official check and are taken by the real
//! UpCast (`../shared/turnkey/bin/tkrun`) into BAK, while a broken one goes to ERR.

use std::path::{Path, PathBuf};
use std::process::Command;

use turnbridge::einvoice::blank::{blank_reports, BlankReport};
use turnbridge::einvoice::period::Period;
use turnbridge::einvoice::rolls::{parse_allocations, Roll, UsedNumbers};

use crate::common::*;

fn xsd_common() -> PathBuf {
    shared().join("mig41/official/xsd/common")
}

/// Validates with xmllint against the official v41 `InvoiceEnvelope.xsd` and the official
/// E0501 schema (`common/v40/E0501.xsd`, the only E0501 schema in the official tree), joined
/// by a wrapper schema in `dir`.
fn xmllint_envelope(dir: &Path, xml: &Path) -> Result<(), String> {
    let c = xsd_common()
        .canonicalize()
        .expect("../shared is beside the repository");
    let wrapper = dir.join("envelope-and-e0501.xsd");
    std::fs::write(
        &wrapper,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <xsd:import namespace="urn:GEINV:InvoiceEnvelope:4.1" schemaLocation="file://{0}/v41/InvoiceEnvelope.xsd"/>
  <xsd:import namespace="urn:GEINV:E0501:4.0" schemaLocation="file://{0}/v40/E0501.xsd"/>
</xsd:schema>
"#,
            c.display()
        ),
    )
    .unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&wrapper)
        .arg(xml)
        .output()
        .expect("xmllint is installed (run scripts/install-test-deps)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_e0501_fixture_meets_the_official_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("rolls/E0501-envelope.xml")).unwrap();
    // Turnkey 3.2.0's v41 model reads InvoiceAssignNo in `urn:GEINV:E0501:4.1`; the official
    // XSD tree declares it only in 4.0 (and its v41 envelope admits only 4.0). The entries are
    // checked against that declaration, everything else as written.
    assert!(text.contains(r#"<InvoiceAssignNo xmlns="urn:GEINV:E0501:4.1">"#));
    let as_xsd = text.replace("urn:GEINV:E0501:4.1", "urn:GEINV:E0501:4.0");
    let file = dir.path().join("E0501.xml");
    std::fs::write(&file, &as_xsd).unwrap();
    xmllint_envelope(dir.path(), &file).unwrap();

    // The check does look inside the entries: an odd period and a missing booklet count fail.
    for (from, to) in [
        ("<YearMonth>11508<", "<YearMonth>11507<"),
        ("<InvoiceBooklet>10</InvoiceBooklet>", ""),
    ] {
        let bad = dir.path().join("bad.xml");
        std::fs::write(&bad, as_xsd.replacen(from, to, 1)).unwrap();
        assert!(
            xmllint_envelope(dir.path(), &bad).is_err(),
            "{from} → {to} should fail the official XSD"
        );
    }

    // And turnbridge reads every entry of it.
    let f = parse_allocations(text.as_bytes()).unwrap();
    assert_eq!((f.rolls.len(), f.problems.len()), (4, 0));
}

#[test]
fn the_e0401_fixture_passes_the_official_check() {
    let v = official_check(&[fixture("rolls/E0401-branch.xml")]);
    assert!(v[0].ok(), "{}", v[0].line);
    let f = parse_allocations(&std::fs::read(fixture("rolls/E0401-branch.xml")).unwrap()).unwrap();
    assert_eq!((f.rolls.len(), f.problems.len()), (2, 0));
}

/// The period 11508 reports of the E0501 fixture after some numbers were issued: a gap, the
/// first and last numbers, a fully used booklet.
fn reports() -> Vec<BlankReport> {
    let rolls: Vec<Roll> =
        parse_allocations(&std::fs::read(fixture("rolls/E0501-envelope.xml")).unwrap())
            .unwrap()
            .rolls;
    let mut used = UsedNumbers::new();
    // AB 0..=499: 0..=9 and 11..=20 issued, and the last number.
    used.extend((0..=20).filter(|&i| i != 10).map(|i| rolls[0].number(i)));
    used.insert(rolls[0].number(499));
    // AC 1000..=1049: all issued (no report); AD 50..=149: none issued.
    used.extend((1000..=1049).map(|i| rolls[1].number(i)));
    let reports = blank_reports(&rolls, &used, Period::parse("11508").unwrap());
    let names: Vec<String> = reports.iter().map(BlankReport::file_name).collect();
    assert_eq!(
        names,
        [
            "E0402_28080623_11508_07_AB.xml",
            "E0402_28080623_11508_08_AD.xml"
        ]
    );
    reports
}

fn write_reports(dir: &Path, reports: &[BlankReport]) -> Vec<PathBuf> {
    reports
        .iter()
        .map(|r| {
            let p = dir.join(r.file_name());
            std::fs::write(&p, r.render()).unwrap();
            p
        })
        .collect()
}

/// A report the official XSD refuses: an item without its end number.
fn broken_report(dir: &Path, r: &BlankReport) -> PathBuf {
    let xml = String::from_utf8(r.render()).unwrap();
    let cut = xml.replacen("<InvoiceEndNo>00000010</InvoiceEndNo>", "", 1);
    assert_ne!(cut, xml);
    let p = dir.join("E0402_broken.xml");
    std::fs::write(&p, cut).unwrap();
    p
}

#[test]
fn rendered_blank_reports_pass_the_official_check() {
    let dir = tempfile::tempdir().unwrap();
    let reports = reports();
    let mut files = write_reports(dir.path(), &reports);
    files.push(broken_report(dir.path(), &reports[0]));
    let v = official_check(&files);
    for ok in &v[..2] {
        assert!(ok.ok(), "{}", ok.line);
    }
    assert!(!v[2].xsd_ok, "the broken report must fail: {}", v[2].line);
    let ab = std::fs::read_to_string(&files[0]).unwrap();
    assert!(ab.contains(
        "<InvoiceBeginNo>00000010</InvoiceBeginNo>\n      <InvoiceEndNo>00000010</InvoiceEndNo>"
    ));
    assert!(ab.contains(
        "<InvoiceBeginNo>00000021</InvoiceBeginNo>\n      <InvoiceEndNo>00000498</InvoiceEndNo>"
    ));
}

#[test]
fn a_head_office_and_its_branch_report_their_own_blank_numbers() {
    let read = |name: &str| {
        parse_allocations(&std::fs::read(fixture(name)).unwrap())
            .unwrap()
            .rolls
    };
    // The head office's AB 0–499 (E0501) and the 200–299 and 400–449 it gave its branch (E0401).
    let mut rolls: Vec<Roll> = read("rolls/E0501-envelope.xml")
        .into_iter()
        .take(1)
        .collect();
    rolls.extend(read("rolls/E0401-branch.xml"));
    let reports = blank_reports(&rolls, &UsedNumbers::new(), Period::parse("11508").unwrap());
    let names: Vec<String> = reports.iter().map(BlankReport::file_name).collect();
    assert_eq!(
        names,
        [
            "E0402_24634102_11508_07_AB.xml",
            "E0402_28080623_11508_07_AB.xml"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let files = write_reports(dir.path(), &reports);
    for v in official_check(&files) {
        assert!(v.ok(), "{}", v.line);
    }
    let branch = std::fs::read_to_string(&files[0]).unwrap();
    assert!(branch.contains("<HeadBan>28080623</HeadBan>\n    <BranchBan>24634102</BranchBan>"));
    let head = std::fs::read_to_string(&files[1]).unwrap();
    assert!(!head.contains("<InvoiceBeginNo>00000200<"), "{head}");
    assert!(head.contains(
        "<InvoiceBeginNo>00000300</InvoiceBeginNo>\n      <InvoiceEndNo>00000399</InvoiceEndNo>"
    ));
}

fn tkrun(home: &Path, args: &[&str]) -> String {
    let bin = shared().join("turnkey/bin/tkrun");
    assert!(
        bin.is_file(),
        "the official Turnkey runner is missing at {}: run scripts/install-test-deps",
        bin.display()
    );
    let out = Command::new(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("TKRUN_BUILD", root().join("target/turnkey-runner"))
        .output()
        .expect("run tkrun (scripts/install-test-deps builds it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tkrun {args:?} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn the_real_upcast_takes_the_blank_reports() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("tk");
    tkrun(&home, &["init"]);
    let def = home.join("EINVTurnkey");
    let src = def.join("UpCast/B2PMESSAGE/E0402/SRC");
    assert!(src.is_dir(), "tkrun init makes the E0402 pickup folder");
    let stage = dir.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let reports = reports();
    let mut staged = write_reports(&stage, &reports);
    staged.push(broken_report(&stage, &reports[0]));
    // Written elsewhere, then moved in, as Turnkey wants.
    for f in &staged {
        std::fs::rename(f, src.join(f.file_name().unwrap())).unwrap();
    }
    let report_file = dir.path().join("upcast.json");
    tkrun(
        &home,
        &["upcast", "--report", report_file.to_str().unwrap()],
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{report:#}");
    for f in files {
        let name = f["name"].as_str().unwrap();
        let path = f["path"].as_str().unwrap_or_default();
        if name == "E0402_broken.xml" {
            assert_eq!(f["result"], "rejected", "{f:#}");
            assert!(path.contains("/E0402/ERR/"), "{f:#}");
        } else {
            assert_eq!(f["result"], "accepted", "{f:#}");
            assert!(path.contains("/E0402/BAK/"), "{f:#}");
            assert_eq!(f["messageType"], "E0402");
        }
    }
    // Turnkey's own identifier of each accepted report: BranchBan-TrackInvoiceType.
    let ids: std::collections::BTreeSet<&str> = files
        .iter()
        .filter(|f| f["result"] == "accepted")
        .map(|f| f["invoiceIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["28080623-AB07", "28080623-AD08"].into_iter().collect()
    );
    // Nothing left in SRC, only the broken one in ERR, one Pack file per accepted report.
    assert!(files_below(&src).is_empty());
    let err = files_below(&def.join("UpCast/B2PMESSAGE/E0402/ERR"));
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(report["packFilesCreated"].as_array().unwrap().len(), 2);
    assert_eq!(report["networkAttemptsBlocked"], 0);
}
