//! The command line: `run`, `sandbox`, `validate`, `check-config`, and the operator's
//! commands (`history`, `status`, `invoice`, `webhooks`, …).
//!
//! This is the only place that turns errors into exit codes (with `anyhow`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_PATH};
use crate::daemon;
use crate::einvoice;
use crate::report::shown;
use crate::store::deliveries::DeliveryState;
use crate::store::Timestamp;
use crate::webhook::filter::{self, Filter};

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
    /// Ask the running daemon (process PID) to re-read its config: checks the config first
    /// and refuses, exit 1, naming the problem, when it is broken; otherwise sends SIGHUP.
    /// The systemd unit's ExecReload (no /bin/kill needed on minimal systems).
    Reload {
        #[arg(long)]
        pid: i32,
    },
    /// One document's story: every message about it, its source row, XML file and each state
    /// change with its time and evidence.
    History {
        number: String,
        #[arg(long)]
        json: bool,
    },
    /// Corrections an operator makes to an invoice: resend one the platform refused, cancel,
    /// void, or issue a voided one again. Each writes its message into the spool, where the
    /// daemon takes it like any dropped file.
    #[command(subcommand)]
    Invoice(crate::corrections::command::InvoiceCmd),
    /// Messages per state and type, the oldest still waiting, files waiting for a person, and
    /// the last Turnkey summary.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Outbound webhook endpoints (the same as /api/v1/webhooks).
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// The dead-letter queue of webhook deliveries that failed for good.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// NextEngine accounts.
    #[command(subcommand)]
    Nextengine(NextengineCmd),
    /// Write the man page or shell completions (used by packaging/build).
    #[command(hide = true)]
    Generate {
        #[arg(value_parser = ["man", "completions"])]
        what: String,
        dir: PathBuf,
    },
    /// Write a consistent copy of the database into DIR (while the daemon runs):
    /// DIR/turnbridge-<UTC time>.db, owner-only. Prints its path.
    Backup { dir: PathBuf },
    /// Put a backup made by `turnbridge backup` in place of the database. The daemon must be
    /// stopped; the database it replaces is kept beside it (turnbridge.db.before-restore-…).
    Restore { file: PathBuf },
    /// Check a configuration file and list every problem with its key path.
    CheckConfig {
        /// The file to check (default: --config).
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksCmd {
    /// Register an endpoint; prints its id and its secret (shown this once).
    Add {
        url: String,
        /// Event names, comma-separated (`upload.completed,invoice.status.updated`), `invoice.*`
        /// for a family, or `*` for all.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// At least 24 characters; a random `whsec_` secret when left out.
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List endpoints (never their secrets).
    List,
    /// Change an endpoint.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        /// New random secret; the old one keeps signing for webhooks.secret_overlap_hours.
        #[arg(long)]
        rotate_secret: bool,
    },
    /// Remove an endpoint; its pending deliveries are cancelled.
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
enum NextengineCmd {
    /// Print the sign-in URL that connects an account (NextEngine then calls the listener's
    /// /auth/callback, which stores the account's tokens).
    Login,
    /// Accounts: token expiry times, last call, last error (never the tokens).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Search shops, goods, stock or orders of the connected account.
    Shops(SearchArgs),
    Goods(SearchArgs),
    Stock(SearchArgs),
    /// Order lines, with a stock-allocation summary per order.
    Orders(SearchArgs),
}

#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// One goods code (goods, stock) or order id (orders).
    #[arg(long)]
    code: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DlqCmd {
    /// List dead deliveries.
    List {
        #[arg(long)]
        endpoint: Option<String>,
        /// RFC 3339 bounds on when the delivery was created, in any UTC offset.
        #[arg(long)]
        since: Option<Timestamp>,
        #[arg(long)]
        until: Option<Timestamp>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Resend dead deliveries (same delivery id, fresh schedule): the ones named, or all of an
    /// endpoint or a time range.
    Resend {
        ids: Vec<String>,
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        since: Option<Timestamp>,
        #[arg(long)]
        until: Option<Timestamp>,
        /// Resend every dead delivery.
        #[arg(long)]
        all: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Man pages and completions are for everyone; everything else keeps to its owner.
    if !matches!(cli.command, Command::Generate { .. }) {
        crate::filemode::restrict_umask();
    }
    let result = match cli.command {
        Command::Run => run_daemon(&cli.config),
        Command::Sandbox { dir } => sandbox(&dir),
        Command::Validate { file, json } => validate(&cli.config, &file, json),
        Command::CheckConfig { path } => check_config(path.as_deref().unwrap_or(&cli.config)),
        Command::History { number, json } => history(&cli.config, &number, json),
        Command::Status { json } => status(&cli.config, json),
        Command::Invoice(cmd) => crate::corrections::command::run(&cli.config, cmd),
        Command::Reload { pid } => reload(&cli.config, pid),
        Command::Webhooks(cmd) => webhooks(&cli.config, cmd),
        Command::Generate { what, dir } => generate(&what, &dir),
        Command::Dlq(cmd) => dlq(&cli.config, cmd),
        Command::Nextengine(cmd) => nextengine(&cli.config, cmd),
        Command::Backup { dir } => backup(&cli.config, &dir),
        Command::Restore { file } => restore(&cli.config, &file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("turnbridge: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn backup(config: &Path, dir: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let (path, copy) = crate::backup::backup(&config, dir)?;
    println!("{}", path.display());
    eprintln!(
        "a consistent copy: schema version {}, {} messages",
        copy.schema, copy.messages
    );
    Ok(ExitCode::SUCCESS)
}

fn restore(config: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let done = crate::backup::restore(&config, file)?;
    println!(
        "restored {} ({} messages, schema version {}) as {}",
        file.display(),
        done.from.messages,
        done.from.schema,
        config.database().display()
    );
    if let Some(kept) = done.kept {
        println!("the database it replaced is kept as {}", kept.display());
    }
    for warning in &done.warnings {
        eprintln!("turnbridge: warning: {warning}");
    }
    println!(
        "ids continue above every id used before (highest XML number in Turnkey's folders: {}); messages recorded after the backup are not in it: see the restore runbook",
        done.highest_xml_seq
    );
    Ok(ExitCode::SUCCESS)
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
    // The daemon's rules, but a link named on the command line is followed.
    let limit = config.einvoice.max_file_bytes;
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .map_err(crate::limited::LimitedError::from)
        .and_then(|f| {
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Err(crate::limited::LimitedError::NotRegular("special file"));
            }
            crate::limited::read_open(&f, &meta, limit)
        });
    let bytes = match read {
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
                println!("{}: cannot be used: {e}", shown(&name));
            }
            return Ok(ExitCode::from(2));
        }
    };
    let problems = crate::pipeline::report_entries(&name, &verdict);
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
                shown(&a.file),
                a.row,
                a.message.message_type(),
                shown(a.message.number())
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
            "{}: {} valid, {} invalid{}",
            shown(&name),
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
            if let Some(why) = c.beyond_memory_budget() {
                println!("  warning   {why}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn reload(config: &Path, pid: i32) -> anyhow::Result<ExitCode> {
    if let Err(e) = Config::load(config) {
        eprintln!("configuration not reloaded, the running one stays: {e}");
        return Ok(ExitCode::from(1));
    }
    anyhow::ensure!(pid > 0, "--pid must name the daemon's process");
    // SAFETY: kill(2) with a positive pid and a valid signal has no memory effects.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        anyhow::bail!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    println!(
        "asked turnbridge (pid {pid}) to re-read {}",
        config.display()
    );
    Ok(ExitCode::SUCCESS)
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

fn open_store(config: &Path) -> anyhow::Result<(Config, crate::store::Store)> {
    let config = Config::load(config)?;
    std::fs::create_dir_all(&config.paths.state)
        .with_context(|| format!("create {}", config.paths.state.display()))?;
    let store = crate::store::Store::open(&config.database())?;
    Ok((config, store))
}

fn webhooks(config: &Path, cmd: WebhooksCmd) -> anyhow::Result<ExitCode> {
    use crate::webhook::outbound as ob;
    let (config, mut store) = open_store(config)?;
    // The daemon's listener, as configured (a port chosen at start is not known here).
    let own: Vec<std::net::SocketAddr> = [&config.http.listen, &config.http.monitor_listen]
        .into_iter()
        .filter_map(|a| a.parse().ok())
        .filter(|a: &std::net::SocketAddr| a.port() != 0)
        .collect();
    crate::webhook::policy::set_own_listeners(&own);
    match cmd {
        WebhooksCmd::Add {
            url,
            events,
            secret,
            description,
        } => {
            match ob::add_endpoint(
                &mut store,
                &url,
                &events,
                secret.as_deref(),
                description.as_deref(),
                config.webhooks.allow_private_networks,
            )? {
                Ok((ep, secret)) => {
                    println!("id      {}\nurl     {}\nevents  {}\nsecret  {secret}\n(the secret is shown only now)", ep.id, ep.url, ep.events.join(","));
                    Ok(ExitCode::SUCCESS)
                }
                Err(inv) => {
                    eprintln!("{}: {}", inv.field, inv.reason);
                    Ok(ExitCode::from(1))
                }
            }
        }
        WebhooksCmd::List => {
            for ep in crate::store::endpoints::list(&store)? {
                let state = if ep.enabled {
                    "enabled".to_string()
                } else {
                    format!("disabled ({})", ep.disabled_reason.unwrap_or_default())
                };
                println!(
                    "{}  {}  [{}]  {}  {}",
                    ep.id,
                    ep.url,
                    ep.events.join(","),
                    state,
                    ep.description.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        WebhooksCmd::Update {
            id,
            url,
            events,
            description,
            enable,
            disable,
            rotate_secret,
        } => {
            let u = ob::Update {
                url,
                events,
                description,
                enabled: if enable {
                    Some(true)
                } else if disable {
                    Some(false)
                } else {
                    None
                },
                rotate_secret,
            };
            match ob::update_endpoint(
                &mut store,
                &id,
                &u,
                config.webhooks.secret_overlap_hours,
                config.webhooks.allow_private_networks,
            )? {
                Ok(Some((ep, secret))) => {
                    println!(
                        "{} updated: {} [{}] {}",
                        ep.id,
                        ep.url,
                        ep.events.join(","),
                        if ep.enabled { "enabled" } else { "disabled" }
                    );
                    if let Some(s) = secret {
                        println!(
                            "new secret  {s}\n(the old one keeps signing for {} hours)",
                            config.webhooks.secret_overlap_hours
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Ok(None) => {
                    eprintln!("no webhook {id}");
                    Ok(ExitCode::from(1))
                }
                Err(inv) => {
                    eprintln!("{}: {}", inv.field, inv.reason);
                    Ok(ExitCode::from(1))
                }
            }
        }
        WebhooksCmd::Remove { id } => {
            if ob::remove_endpoint(&mut store, &id)? {
                println!("{id} removed");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no webhook {id}");
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn dlq(config: &Path, cmd: DlqCmd) -> anyhow::Result<ExitCode> {
    use crate::webhook::outbound as ob;
    let (_, mut store) = open_store(config)?;
    match cmd {
        DlqCmd::List {
            endpoint,
            since,
            until,
            limit,
            json,
        } => {
            let f = Filter {
                endpoint,
                since,
                until,
                state: Some(DeliveryState::Dead),
                ..Default::default()
            };
            let rows = crate::store::deliveries::list(&store, &f, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for d in &rows {
                    println!(
                        "{}  {}  endpoint {}  attempts {}  last {}  created {}",
                        d.delivery_id,
                        d.event,
                        d.endpoint_id,
                        d.attempts,
                        shown(d.last_error.as_deref().unwrap_or("-")),
                        d.created_at
                    );
                }
                println!("{} dead deliveries", rows.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::Resend {
            ids,
            endpoint,
            since,
            until,
            all,
        } => {
            let f = Filter {
                ids,
                endpoint,
                since,
                until,
                state: None,
            };
            let f = filter::for_resend(f, all).map_err(|_| {
                anyhow::anyhow!("name deliveries, or use --endpoint, --since/--until, or --all")
            })?;
            let resent = ob::resend(&mut store, &f)?;
            for id in &resent {
                println!("{id} queued again");
            }
            println!(
                "{} deliveries queued again; the running daemon sends them now",
                resent.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn generate(what: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    if what == "man" {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        std::fs::write(dir.join("turnbridge.1"), page)?;
    } else {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut cmd, "turnbridge", dir)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn nextengine(config: &Path, cmd: NextengineCmd) -> anyhow::Result<ExitCode> {
    use crate::nextengine::client;
    let search = |what: &str, a: SearchArgs| -> anyhow::Result<ExitCode> {
        let (cfg, store) = open_store(config)?;
        let account = client::chosen_account(&store, &cfg.nextengine.account)?
            .map_err(|why| anyhow::anyhow!(why))?;
        let (path, fields, key) = match what {
            "shops" => ("/api_v1_master_shop/search", "shop_id,shop_name,shop_abbreviated_name,shop_note", None),
            "goods" => ("/api_v1_master_goods/search", "goods_id,goods_name,stock_quantity,goods_selling_price", Some("goods_id-eq")),
            "stock" => (
                "/api_v1_master_stock/search",
                "stock_goods_id,stock_quantity,stock_allocation_quantity,stock_free_quantity,stock_advance_order_quantity",
                Some("stock_goods_id-eq"),
            ),
            _ => (
                "/api_v1_receiveorder_row/search",
                "receive_order_row_receive_order_id,receive_order_row_no,receive_order_row_goods_id,receive_order_row_quantity,receive_order_row_cancel_flag,receive_order_row_stock_allocation_quantity",
                Some("receive_order_row_receive_order_id-eq"),
            ),
        };
        let limit = a.limit.to_string();
        let mut params: Vec<(&str, &str)> = vec![("fields", fields), ("limit", &limit)];
        if let (Some(k), Some(code)) = (key, a.code.as_deref()) {
            params.push((k, code));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let c = client::Client::new(cfg.nextengine.clone(), store);
        let answer = rt.block_on(c.call(&account, path, &params, false))?;
        let rows = answer
            .get("data")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        let out = if what == "orders" {
            serde_json::json!({"rows": rows, "orders": client::allocation_summary(&rows)})
        } else {
            serde_json::json!({"rows": rows})
        };
        if a.json {
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            for r in &rows {
                let line: Vec<String> = r
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| {
                                format!(
                                    "{k}={}",
                                    v.as_str()
                                        .map(str::to_string)
                                        .unwrap_or_else(|| v.to_string())
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!("{}", shown(&line.join("  ")));
            }
            if let Some(orders) = out.get("orders").and_then(|o| o.as_array()) {
                println!();
                for o in orders {
                    println!(
                        "order {}  lines {}  quantity {}  allocated {}  {}",
                        shown(o["receive_order_id"].as_str().unwrap_or("")),
                        o["lines"],
                        o["quantity"],
                        o["allocated"],
                        o["status"].as_str().unwrap_or("")
                    );
                }
            }
            println!("{} row(s)", rows.len());
        }
        Ok(ExitCode::SUCCESS)
    };
    match cmd {
        NextengineCmd::Shops(a) => search("shops", a),
        NextengineCmd::Goods(a) => search("goods", a),
        NextengineCmd::Stock(a) => search("stock", a),
        NextengineCmd::Orders(a) => search("orders", a),
        NextengineCmd::Login => {
            let (config, mut store) = open_store(config)?;
            // Refuses an unconfigured NextEngine before anything is recorded.
            client::login_url(&config.nextengine)?;
            // The callback connects an account only for the browser that opens this one-time
            // URL (or that started at /auth/ne with the admin token), once, within
            // LOGIN_WINDOW_MINUTES.
            let ticket = store.start_ne_login_ticket()?;
            let url = client::ticket_url(&config.nextengine, &config.http.listen, ticket.expose())?;
            println!("{url}");
            eprintln!(
                "Open this URL within {} minutes in the browser you sign in with (it works once): it takes you to NextEngine's sign-in, and NextEngine sends that browser back to {} to finish.",
                client::LOGIN_WINDOW_MINUTES,
                if config.nextengine.redirect_uri.is_empty() {
                    "the app's registered Redirect URI"
                } else {
                    &config.nextengine.redirect_uri
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        NextengineCmd::Status { json } => {
            let (_, store) = open_store(config)?;
            let list = crate::store::ne_accounts::statuses(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no NextEngine account connected; run `turnbridge nextengine login`");
            } else {
                for a in &list {
                    println!(
                        "{}  {}  access until {}  refresh until {}{}  last call {} {}{}",
                        a.id,
                        a.company_name.as_deref().unwrap_or("-"),
                        a.access_expires_at,
                        a.refresh_expires_at,
                        if a.needs_login {
                            "  NEEDS A NEW LOGIN"
                        } else {
                            ""
                        },
                        a.last_call_at
                            .map_or_else(|| "-".to_string(), |t| t.to_string()),
                        a.last_call.as_deref().unwrap_or(""),
                        a.last_error
                            .as_deref()
                            .map(|e| format!("  last error: {e}"))
                            .unwrap_or_default(),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
