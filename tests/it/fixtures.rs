//! Every fixture gives its expected verdict; every accepted message renders to XML that
//! Turnkey's official checks accept (the official XSD and its program validator, from
//! `../shared/turnkey`) and the repository's own schemas too; one message per type is pinned
//! byte for byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;
use turnbridge::config::{Config, DEFAULT_TOML};
use turnbridge::einvoice::{self, check_batch, render::render, ReadOptions};

fn options() -> ReadOptions {
    Config::parse(DEFAULT_TOML, Path::new("/"))
        .unwrap()
        .read_options()
}

fn outcomes() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(fixture("outcomes.json")).unwrap();
    let mut map: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    map.remove("_comment");
    map
}

fn check(rel: &str) -> Result<einvoice::Verdict, einvoice::BatchError> {
    let path = fixture(rel);
    let bytes = std::fs::read(&path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    check_batch(&name, &bytes, &options())
}

#[test]
fn every_fixture_has_an_outcome_and_meets_it() {
    let outcomes = outcomes();
    let mut on_disk = Vec::new();
    for sub in ["valid", "invalid"] {
        for p in files_in(&fixture(sub)) {
            on_disk.push(format!(
                "{sub}/{}",
                p.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    on_disk.sort();
    let listed: Vec<_> = outcomes.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "fixtures and fixtures/outcomes.json must list the same files"
    );

    for (rel, expected) in &outcomes {
        let result = check(rel);
        if let Some(word) = expected.get("unusable") {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{rel} should be unusable"));
            assert!(
                err.to_string().contains(word.as_str().unwrap()),
                "{rel}: {err}"
            );
            continue;
        }
        let verdict = result.unwrap_or_else(|e| panic!("{rel}: {e}"));
        let accepted: Vec<String> = verdict
            .accepted
            .iter()
            .map(|a| format!("{} {}", a.message.message_type(), a.message.number()))
            .collect();
        let want: Vec<String> = expected["accepted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(accepted, want, "{rel}: accepted messages");

        let problems: Vec<_> = verdict
            .rejected
            .iter()
            .flat_map(|r| r.problems.clone())
            .collect();
        let want = expected
            .get("problems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert_eq!(problems.len(), want.len(), "{rel}: problems {problems:#?}");
        for w in want {
            let found = problems.iter().any(|p| {
                p.row as u64 == w["row"].as_u64().unwrap()
                    && p.field == w["field"].as_str().unwrap()
                    && p.reason.contains(w["reason"].as_str().unwrap())
            });
            assert!(found, "{rel}: expected {w} among {problems:#?}");
        }
    }
}

/// Every message the fixtures yield, rendered, plus the golden files: what the daemon would
/// write for the fixtures.
fn rendered_fixtures(out: &Path) -> Vec<(String, String, std::path::PathBuf)> {
    let mut files = Vec::new();
    for rel in outcomes().keys() {
        let Ok(verdict) = check(rel) else { continue };
        for a in verdict.accepted {
            let ty = a.message.message_type().to_string();
            let path = out.join(format!("{}_{ty}.xml", files.len()));
            std::fs::write(&path, &a.xml).unwrap();
            assert_eq!(
                a.xml,
                render(&a.message),
                "the verdict carries the rendering"
            );
            files.push((format!("{rel} {ty} {}", a.message.number()), ty, path));
        }
    }
    for (ty, _) in GOLDEN {
        files.push((
            format!("golden/{ty}.xml"),
            ty.to_string(),
            fixture(&format!("golden/{ty}.xml")),
        ));
    }
    files
}

#[test]
fn every_accepted_message_passes_turnkeys_official_checks() {
    let out = tempfile::tempdir().unwrap();
    let files = rendered_fixtures(out.path());
    let mut seen = BTreeMap::new();
    for (what, ty, path) in &files {
        if let Err(e) = xmllint(path, ty) {
            panic!("{what}: the official XSD refuses it:\n{e}");
        }
        if let Err(e) = xmllint_in(&repo_xsd_dir(), path, ty) {
            panic!("{what}: the repository's schema refuses it:\n{e}");
        }
        *seen.entry(ty.clone()).or_insert(0) += 1;
    }
    let paths: Vec<_> = files.iter().map(|(_, _, p)| p.clone()).collect();
    for ((what, _, _), v) in files.iter().zip(official_check(&paths)) {
        assert!(v.ok(), "{what}: Turnkey would move it to ERR: {}", v.line);
    }
    for ty in ["F0401", "F0501", "F0701", "G0401", "G0501"] {
        assert!(
            seen.get(ty).copied().unwrap_or(0) >= 3,
            "{ty}: fewer than two fixtures besides the golden file ({seen:?})"
        );
    }
}

#[test]
fn the_official_checks_refuse_what_turnkey_would_refuse() {
    // A check that cannot fail proves nothing: break a valid message four ways, and the
    // official check (XSD or program) and both schema sets must refuse each.
    let verdict = check("valid/F0401_b2c_print.csv").unwrap();
    let good = String::from_utf8(verdict.accepted[0].xml.clone()).unwrap();
    let broken = [
        (
            "RandomNumber of five digits",
            good.replacen(
                "<RandomNumber>1234</RandomNumber>",
                "<RandomNumber>10000</RandomNumber>",
                1,
            ),
            true,
        ),
        (
            "TaxAmount with decimals",
            good.replacen("<TaxAmount>0</TaxAmount>", "<TaxAmount>0.5</TaxAmount>", 1),
            true,
        ),
        (
            "an unknown element",
            good.replacen(
                "<PrintMark>Y</PrintMark>",
                "<PrintMark>Y</PrintMark><Extra>1</Extra>",
                1,
            ),
            true,
        ),
        (
            "no Seller Address (Turnkey's program check)",
            good.replacen("<Address>台北市信義區松高路1號</Address>", "", 1),
            false,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, (what, xml, xsd_refuses)) in broken.iter().enumerate() {
        assert_ne!(xml, &good, "{what}: did not change the document");
        let p = dir.path().join(format!("{i}.xml"));
        std::fs::write(&p, xml).unwrap();
        assert_eq!(
            xmllint(&p, "F0401").is_err(),
            *xsd_refuses,
            "{what}: official XSD"
        );
        assert_eq!(
            xmllint_in(&repo_xsd_dir(), &p, "F0401").is_err(),
            *xsd_refuses,
            "{what}: the repository's schema"
        );
        paths.push(p);
    }
    for ((what, _, _), v) in broken.iter().zip(official_check(&paths)) {
        assert!(
            !v.ok(),
            "{what}: the official check should refuse it: {}",
            v.line
        );
    }
}

/// The fixture each type's golden file is rendered from.
const GOLDEN: [(&str, &str); 5] = [
    ("F0401", "valid/F0401_b2c_print.csv"),
    ("F0501", "valid/F0501_cancel.json"),
    ("F0701", "valid/F0701_void.csv"),
    ("G0401", "valid/G0401_allowance.csv"),
    ("G0501", "valid/G0501_cancel_allowance.json"),
];

#[test]
fn golden_files_pin_the_exact_bytes_of_one_message_per_type() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (ty, rel) in GOLDEN {
        let verdict = check(rel).unwrap();
        let m = verdict
            .accepted
            .iter()
            .find(|a| a.message.message_type().as_str() == ty)
            .unwrap();
        let xml = render(&m.message);
        let golden = fixture(&format!("golden/{ty}.xml"));
        if update {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &xml).unwrap();
        }
        let want =
            std::fs::read(&golden).unwrap_or_else(|_| panic!("{} missing", golden.display()));
        assert_eq!(
            String::from_utf8_lossy(&xml),
            String::from_utf8_lossy(&want),
            "{ty} from {rel}"
        );
    }
}

#[test]
fn golden_files_meet_the_research_facts() {
    let read = |ty: &str| std::fs::read_to_string(fixture(&format!("golden/{ty}.xml"))).unwrap();
    let f0401 = read("F0401");
    assert!(f0401.contains(r#"<Invoice xmlns="urn:GEINV:eInvoiceMessage:F0401:4.1">"#));
    assert!(f0401.contains("<Identifier>0000000000</Identifier>"));
    assert!(
        f0401.contains("Cake &amp; &lt;cream&gt;"),
        "text is escaped"
    );
    let order = [
        "<SalesAmount>",
        "<FreeTaxSalesAmount>",
        "<ZeroTaxSalesAmount>",
        "<TaxType>1</TaxType>\n    <TaxRate>",
        "<TaxAmount>",
        "<TotalAmount>",
    ];
    let pos: Vec<_> = order.iter().map(|t| f0401.find(t).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "F0401 Amount order");
    for (ty, first) in [
        ("F0501", "CancelInvoiceNumber"),
        ("F0701", "VoidInvoiceNumber"),
        ("G0501", "CancelAllowanceNumber"),
    ] {
        let x = read(ty);
        assert!(!x.contains("<Main>"), "{ty} is flat");
        let root_end = x.find(">\n  <").unwrap();
        assert!(
            x[root_end..].starts_with(&format!(">\n  <{first}>")),
            "{ty} starts with {first}"
        );
    }
    let g = read("G0401");
    let amount = &g[g.find("<Amount>\n").unwrap()..];
    assert!(
        amount.contains("<TaxAmount>")
            && amount.contains("<TotalAmount>")
            && !amount.contains("<SalesAmount>")
    );
    assert!(g.contains("<AllowanceSequenceNumber>") && !g.contains("<SequenceNumber>"));
}

#[test]
fn big5_and_utf8_bom_give_the_same_xml_as_utf8() {
    let utf8 = std::fs::read_to_string(fixture("valid/F0401_b2c_print.csv")).unwrap();
    let (big5, _, unmappable) = encoding_rs::BIG5.encode(&utf8);
    assert!(!unmappable, "fixture text must be representable in Big5");
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(utf8.as_bytes());
    let render_all = |bytes: &[u8]| -> Vec<Vec<u8>> {
        check_batch("b.csv", bytes, &options())
            .unwrap()
            .accepted
            .iter()
            .map(|a| render(&a.message))
            .collect()
    };
    let want = render_all(utf8.as_bytes());
    assert_eq!(want.len(), 1);
    assert_ne!(big5.as_ref(), utf8.as_bytes());
    assert_eq!(render_all(&big5), want, "Big5");
    assert_eq!(render_all(&bom), want, "UTF-8 with BOM");
}

fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in members {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn zip_batches_check_md5_and_refuse_escaping_paths() {
    let csv = std::fs::read(fixture("valid/F0401_b2c_print.csv")).unwrap();
    let json = std::fs::read(fixture("valid/F0401_b2b.json")).unwrap();
    let md5 = |b: &[u8]| {
        use md5::Digest;
        einvoice::archive::hex(&md5::Md5::digest(b))
    };
    let manifest = format!(
        r#"{{"members":[{{"name":"a.csv","md5":"{}"}},{{"name":"b.json","md5":"{}"}}]}}"#,
        md5(&csv),
        "0".repeat(32)
    );
    let zip = zip_of(&[
        ("a.csv", &csv),
        ("b.json", &json),
        ("manifest.json", manifest.as_bytes()),
    ]);
    let v = check_batch("batch.zip", &zip, &options()).unwrap();
    assert_eq!(v.accepted.len(), 1, "a.csv matches its MD5");
    assert_eq!(v.accepted[0].file, "batch.zip:a.csv");
    assert_eq!(v.refused_members.len(), 1);
    assert_eq!(v.refused_members[0].name, "b.json");
    assert!(v.refused_members[0].reason.contains("MD5"));

    let evil = zip_of(&[("../x.csv", &csv)]);
    let err = check_batch("evil.zip", &evil, &options()).unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    let nested = zip_of(&[("inner.zip", &zip)]);
    assert!(check_batch("n.zip", &nested, &options())
        .unwrap_err()
        .to_string()
        .contains("nested"));
    let mut small = options();
    small.zip.max_member_bytes = 100;
    assert!(check_batch("big.zip", &zip_of(&[("a.csv", &csv)]), &small).is_err());
}

#[test]
fn zip_manifest_carries_legacy_metadata() {
    let csv = std::fs::read_to_string(fixture("valid/legacy_C0401.csv")).unwrap();
    // Drop the MessageType column: the manifest says it instead.
    let stripped: String = csv
        .lines()
        .map(|l| l.split_once(',').unwrap().1.to_string() + "\n")
        .collect();
    let manifest = r#"{"members":[{"name":"old.csv","message_type":"C0401","tenant":"TEN-9"}]}"#;
    let zip = zip_of(&[
        ("old.csv", stripped.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
    ]);
    let v = check_batch("legacy.zip", &zip, &options()).unwrap();
    assert_eq!(v.accepted.len(), 1, "{:?}", v.rejected);
    assert_eq!(v.accepted[0].legacy, Some("C0401"));
    assert_eq!(v.accepted[0].message.message_type().as_str(), "F0401");
}

fn turnbridge(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnbridge"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn validate_command_exit_codes() {
    let path = |rel: &str| fixture(rel).to_string_lossy().into_owned();
    let (code, out) = turnbridge(&["validate", &path("valid/F0401_b2b.json")]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = turnbridge(&["validate", &path("invalid/mixed_batch.csv")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 3") && out.contains("PrintMark"), "{out}");
    let (code, out) = turnbridge(&["validate", &path("invalid/not_json.json")]);
    assert_eq!(code, 2, "{out}");
    let (code, _) = turnbridge(&["validate", "/nonexistent/file.csv"]);
    assert_eq!(code, 2);
    let (code, out) = turnbridge(&["validate", "--json", &path("invalid/F0401_bad_ban.csv")]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"][0]["field"], "Buyer.Identifier");
    assert_eq!(v["problems"][0]["row"], 2);

    // Names from outside are shown escaped: a member name cannot forge a line.
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("a.zip");
    let bytes = zip_of(&[(
        "x\u{1b}[2J\nFORGED.csv",
        std::fs::read(fixture("valid/F0501_cancel.csv"))
            .unwrap()
            .as_slice(),
    )]);
    std::fs::write(&zip_path, bytes).unwrap();
    let (_, out) = turnbridge(&["validate", zip_path.to_str().unwrap()]);
    assert!(out.contains("x\\u{1b}[2J\\nFORGED.csv"), "{out}");
    assert!(
        !out.contains('\x1b') && !out.lines().any(|l| l.starts_with("FORGED")),
        "{out}"
    );

    // The daemon's reading rules: a FIFO is refused at once (it would block a plain read),
    // and a file over einvoice.max_file_bytes is refused without being read whole.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("batch.csv");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (code, out) = turnbridge(&["validate", fifo.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    let big = dir.path().join("big.csv");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len((16 << 20) + 1).unwrap();
    let (code, out) = turnbridge(&["validate", big.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("at most 16777216"), "{out}");
}

#[test]
fn check_config_warns_of_limits_raised_past_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let raised = dir.path().join("raised.toml");
    std::fs::write(&raised, "[einvoice]\nmax_file_bytes = 67108864\n").unwrap();
    let (code, out) = turnbridge(&["check-config", raised.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning   einvoice.max_file_bytes above the default"),
        "{out}"
    );
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "[einvoice]\nmax_file_bytes = 1048576\n").unwrap();
    let (_, out) = turnbridge(&["check-config", plain.to_str().unwrap()]);
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn check_config_lists_every_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[einvoice]\nsettle_ms = -1\nmax_invoices_per_batch = 5000\n[turnkey]\ninbox = \"/x/{nope}\"\nlayuot = \"flat\"\n").unwrap();
    let (code, out) = turnbridge(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for key in ["einvoice.settle_ms", "turnkey.inbox", "turnkey.layuot"] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, DEFAULT_TOML).unwrap();
    let (code, out) = turnbridge(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_config_refuses_guessable_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.toml");
    std::fs::write(
        &short,
        "[http]\nadmin_token = \"qzv-tok\"\n[company_webhook]\nsecret = \"qzv-sec\"\n",
    )
    .unwrap();
    let (code, out) = turnbridge(&["check-config", short.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for key in ["http.admin_token", "company_webhook.secret"] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }
    assert!(
        !out.contains("admin\"") && !out.contains("secret\""),
        "values never shown: {out}"
    );
    let long = dir.path().join("long.toml");
    std::fs::write(
        &long,
        "[http]\nadmin_token = \"0123456789abcdef\"\n[company_webhook]\nsecret = \"jyt-gas-webhook-2024\"\n",
    )
    .unwrap();
    let (code, out) = turnbridge(&["check-config", long.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_batch_over_999_messages_is_refused_whole() {
    let text = batch_csv("ZZ", 1, 1000);
    let err = check_batch("big.csv", text.as_bytes(), &options()).unwrap_err();
    assert!(err.to_string().contains("at most 999"), "{err}");
    assert_eq!(
        check_batch("ok.csv", batch_csv("ZZ", 1, 999).as_bytes(), &options())
            .unwrap()
            .accepted
            .len(),
        999
    );
}
