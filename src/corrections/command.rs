//! `turnbridge invoice resend|cancel|void|reissue`: places an operator's request
//! ([`super::manual::place`]) and waits (bounded) for the daemon to take it.
//!
//! Exit 0: the message is queued (or, with `--wait 0` or no daemon running, its file is in the
//! spool); 1: refused, with the reason; 3: not taken within `--wait` seconds.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;

use super::manual::{self, ManualError, Order, Outcome};
use crate::config::Config;
use crate::einvoice::MessageType;
use crate::report::shown;
use crate::store::manual::ManualAction;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum InvoiceCmd {
    /// Send a message the platform refused (state error) again, the same document as its next
    /// generation (after a fix on Turnkey's side). For a corrected document, drop the corrected
    /// file into the spool instead: it becomes the next generation the same way.
    Resend {
        number: String,
        /// The message type (F0401, F0501, F0701, G0401, G0501; the number is the
        /// allowance's for G0401 and G0501).
        #[arg(long = "type", default_value = "F0401")]
        message_type: String,
        #[command(flatten)]
        common: Common,
    },
    /// Cancel (作廢) an invoice: an F0501 written from what the store knows (its seller, buyer
    /// and date), dated now. Refused after the period's filing deadline: use an allowance.
    Cancel {
        number: String,
        /// The reason written into the F0501 (CancelReason, 1 to 20 characters).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
    /// Void (註銷) an invoice: an F0701 written from what the store knows, dated now; the same
    /// number may then be issued again (`turnbridge invoice reissue`, or a corrected F0401).
    Void {
        number: String,
        /// The reason written into the F0701 (VoidReason, 1 to 20 characters).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
    /// Issue a voided invoice again: its last issue (F0401, the same number and content) as
    /// its next generation.
    Reissue {
        number: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// The seller (統一編號), when several sellers have sent this number.
    #[arg(long)]
    seller: Option<String>,
    /// Seconds to wait for the daemon to queue the message; 0 does not wait.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Print the request and its outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs one `turnbridge invoice …` command.
pub fn run(config: &Path, cmd: InvoiceCmd) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let (action, number, message_type, reason, common) = match cmd {
        InvoiceCmd::Resend {
            number,
            message_type,
            common,
        } => {
            let ty: MessageType = message_type
                .parse()
                .map_err(|e| anyhow::anyhow!("--type {}: {e}", shown(&message_type)))?;
            (ManualAction::Resend, number, Some(ty), None, common)
        }
        InvoiceCmd::Cancel {
            number,
            reason,
            common,
        } => (ManualAction::Cancel, number, None, Some(reason), common),
        InvoiceCmd::Void {
            number,
            reason,
            common,
        } => (ManualAction::Void, number, None, Some(reason), common),
        InvoiceCmd::Reissue { number, common } => {
            (ManualAction::Reissue, number, None, None, common)
        }
    };
    let order = Order {
        action,
        number,
        message_type,
        seller: common.seller,
        reason,
        requested_by: manual::current_user(),
    };
    let mut store = Store::open(&config.database())?;
    let placed = match manual::place(&mut store, &config, &order) {
        Ok(p) => p,
        Err(ManualError::Refused(why)) => {
            if common.json {
                println!("{}", json!({"outcome": "refused", "reason": why}));
            } else {
                eprintln!("turnbridge: refused: {}", shown(&why));
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let r = &placed.request;
    if !common.json {
        println!(
            "request {}: {} {} of seller {} (generation {}) written to {}",
            r.id,
            r.message_type,
            shown(&r.number),
            r.seller_ban,
            placed.generation,
            placed.path.display()
        );
        match placed.same_xml {
            Some(true) => println!("the XML is the same, byte for byte, as the one sent before"),
            Some(false) => println!(
                "note: the XML differs from the one sent before (turnbridge renders this message differently since)"
            ),
            None => {}
        }
    }
    let running = crate::health::read(&config.paths.state)
        .as_ref()
        .is_some_and(crate::health::writer_alive);
    let (outcome, code, text) = if common.wait == 0 {
        (
            "written",
            0,
            "not waiting: follow it with `turnbridge history`".to_string(),
        )
    } else if !running {
        (
            "written",
            0,
            "the daemon is not running: the file waits in the spool until it starts".to_string(),
        )
    } else {
        wait(&store, r.id, Duration::from_secs(common.wait))?
    };
    if common.json {
        let message = match manual::outcome(store.conn(), r.id)? {
            Outcome::Recorded(m) => json!({
                "message_type": m.message_type, "number": m.number, "generation": m.generation,
                "state": m.state, "xml_name": m.xml_name, "job_id": m.job_id,
            }),
            _ => serde_json::Value::Null,
        };
        println!(
            "{}",
            json!({
                "request": r, "generation": placed.generation, "same_xml": placed.same_xml,
                "file": placed.path, "outcome": outcome, "detail": text, "message": message,
            })
        );
    } else if code == 1 {
        eprintln!("turnbridge: refused by the daemon: {}", shown(&text));
    } else {
        println!("{}", shown(&text));
    }
    Ok(ExitCode::from(code))
}

/// Waits for the daemon to queue request `id`'s message or refuse it.
fn wait(store: &Store, id: i64, limit: Duration) -> anyhow::Result<(&'static str, u8, String)> {
    let deadline = Instant::now() + limit;
    loop {
        match manual::outcome(store.conn(), id)? {
            Outcome::Recorded(m) if manual::is_on_its_way(&m) => {
                return Ok((
                    "queued",
                    0,
                    format!(
                        "{} {} generation {} is {} as {} (job {}); follow it with `turnbridge history {}`",
                        m.message_type, m.number, m.generation, m.state, m.xml_name, m.job_id, m.number
                    ),
                ))
            }
            Outcome::Refused(why) => return Ok(("refused", 1, why)),
            Outcome::Recorded(_) | Outcome::Waiting => {}
        }
        if Instant::now() >= deadline {
            return Ok((
                "waiting",
                3,
                format!(
                    "not queued within {}s: the file is still in the spool or being processed; see `turnbridge status`",
                    limit.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
