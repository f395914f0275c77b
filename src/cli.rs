//! The command line: `run`, `sandbox`, `validate`, `check-config`.
//!
//! This is the only place that turns errors into exit codes (with `anyhow`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_PATH};
use crate::daemon;
use crate::einvoice;
use crate::spool::ReportEntry;

#[derive(Debug, Parser)]
#[command(
    name = "turnbridge",
    version,
    about = "Moves e-invoice batches from a spool folder into the MOF Turnkey gateway"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (what the systemd unit starts).
    Run,
    /// Create a local sandbox folder (config, spool, state, a Turnkey INBOX/OUTBOX/ERROR) and
    /// run the daemon on it. Its config is DIR/turnbridge.toml; --config is not used.
    Sandbox {
        #[arg(default_value = "turnbridge-sandbox")]
        dir: PathBuf,
    },
    /// Check a batch file (.csv, .json, .zip) without touching any folder or the store.
    /// Exit 0: valid; 1: some messages are invalid; 2: the file cannot be used at all.
    Validate {
        file: PathBuf,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One document's story: every message about it, its source row, XML file and each state
    /// change with its time and evidence.
    History {
        number: String,
        #[arg(long)]
        json: bool,
    },
    /// Messages per state and type, the oldest still waiting, files waiting for a person, and
    /// the last Turnkey summary.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and list every problem with its key path.
    CheckConfig {
        /// The file to check (default: --config).
        path: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run => run_daemon(&cli.config),
        Command::Sandbox { dir } => sandbox(&dir),
        Command::Validate { file, json } => validate(&cli.config, &file, json),
        Command::CheckConfig { path } => check_config(path.as_deref().unwrap_or(&cli.config)),
        Command::History { number, json } => history(&cli.config, &number, json),
        Command::Status { json } => status(&cli.config, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("turnbridge: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_daemon(config: &Path) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match rt.block_on(daemon::run(config)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("turnbridge: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn sandbox(dir: &Path) -> anyhow::Result<ExitCode> {
    let config = daemon::prepare_sandbox(dir)?;
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    eprintln!(
        "turnbridge sandbox in {0}\n  drop batches into   {0}/spool/einvoice/   (try: cp {0}/examples/* {0}/spool/einvoice/)\n  XML for Turnkey in  {0}/turnkey/INBOX/\n  processed sources   {0}/state/archive/, rejected ones with reports in {0}/state/rejected/\n  config              {1}\nCtrl-C stops it.\n",
        abs.display(),
        config.display()
    );
    run_daemon(&config)
}

fn validate(config: &Path, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // The packaged config may not exist on a workstation; fall back to the defaults then.
    let config = if config == Path::new(DEFAULT_PATH) && !config.exists() {
        Config::parse(crate::config::DEFAULT_TOML, Path::new("/")).expect("default config")
    } else {
        Config::load(config)?
    };
    let name = file
        .file_name()
        .context("the path names no file")?
        .to_string_lossy()
        .into_owned();
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: cannot be read: {e}", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let verdict = match einvoice::check_batch(&name, &bytes, &config.read_options()) {
        Ok(v) => v,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"file": name, "usable": false, "reason": e.to_string()})
                );
            } else {
                println!("{name}: cannot be used: {e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let mut problems = Vec::new();
    for m in &verdict.refused_members {
        problems.push(ReportEntry {
            file: format!("{name}:{}", m.name),
            row: 0,
            message_type: None,
            number: None,
            field: String::new(),
            value: String::new(),
            reason: m.reason.clone(),
        });
    }
    for r in &verdict.rejected {
        for p in &r.problems {
            problems.push(ReportEntry {
                file: r.file.clone(),
                row: p.row,
                message_type: r.message_type.clone(),
                number: r.number.clone(),
                field: p.field.clone(),
                value: p.value.clone(),
                reason: p.reason.clone(),
            });
        }
    }
    if json {
        let accepted: Vec<_> = verdict
            .accepted
            .iter()
            .map(|a| {
                serde_json::json!({
                    "file": a.file, "row": a.row, "message_type": a.message.message_type().as_str(),
                    "number": a.message.number(), "legacy_type": a.legacy, "tenant_id": a.tenant,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "file": name, "usable": true, "valid": verdict.is_clean(),
                "accepted": accepted, "problems": problems,
            }))?
        );
    } else {
        for a in &verdict.accepted {
            let legacy = a.legacy.map(|l| format!(" (from {l})")).unwrap_or_default();
            println!(
                "ok   {} row {}: {} {}{legacy}",
                a.file,
                a.row,
                a.message.message_type(),
                a.message.number()
            );
        }
        let report = crate::spool::Report {
            job_id: "-".into(),
            file: name.clone(),
            outcome: String::new(),
            summary: String::new(),
            accepted: 0,
            rejected: 0,
            rejected_files: vec![],
            problems,
        };
        for line in report.to_text().lines().skip(3) {
            println!("bad  {line}");
        }
        println!(
            "{name}: {} valid, {} invalid{}",
            verdict.accepted.len(),
            verdict.rejected.len(),
            if verdict.refused_members.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} archive member(s) refused",
                    verdict.refused_members.len()
                )
            }
        );
    }
    Ok(if verdict.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(c) => {
            println!("{}: ok", path.display());
            println!("  spool     {}", c.einvoice_spool().display());
            println!("  state     {}", c.paths.state.display());
            println!("  inbox     {}", c.turnkey.inbox);
            println!("  staging   {}", c.turnkey.staging.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn open_db(config: &Path) -> anyhow::Result<(Config, rusqlite::Connection)> {
    let config = Config::load(config)?;
    let db = config.database();
    anyhow::ensure!(
        db.exists(),
        "no database at {} yet: has the daemon run?",
        db.display()
    );
    let conn = crate::report::open_read_only(&db)?;
    Ok((config, conn))
}

fn history(config: &Path, number: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (_, conn) = open_db(config)?;
    let stories = crate::report::history(&conn, number)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stories)?);
    } else if stories.is_empty() {
        println!("{number}: no message about it in the store");
    } else {
        print!("{}", crate::report::history_text(&stories));
    }
    Ok(if stories.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (config, conn) = open_db(config)?;
    let s = crate::report::status(&conn, &config.paths.state)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", crate::report::status_text(&s));
    }
    Ok(ExitCode::SUCCESS)
}
