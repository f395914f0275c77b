//! Goods and stock files from the spool, taken to NextEngine and followed to the upload
//! queue's verdict.
//!
//! `spool/nextengine/goods/*.csv` (NextEngine's goods columns) and
//! `spool/nextengine/stock/*.csv` (`syohin_code`, `stock` = the level to reach, optional
//! `kyoten_mei`, `nyusyukko_riyu`) are claimed into `state/work/nextengine/`, checked (bad
//! rows go to `state/rejected/` beside a report), turned into the upload CSV, and sent.
//!
//! A job's steps are recorded so a restart neither loses a file nor uploads it twice:
//! `uploading` (CSV fixed, send time noted) → `queued` (NextEngine's queue id) → `done` |
//! `failed` | `unknown`. A job found in `uploading` after a crash may or may not have reached
//! NextEngine: the upload queue is searched for an entry created since the send, and its id is
//! adopted if there is one; only otherwise is the CSV sent again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use tracing::{error, info, warn};

use super::client::NoAccount;
use super::client::{Client, NeError, UploadKind};
use super::upload::{self, QueueState, RowProblem};
use crate::config::Config;
use crate::durable;
use crate::einvoice::archive::hex;
use crate::events::NextengineUploadCompleted;
use crate::health;
use crate::spool::{self, Report, ReportEntry, Settler};
use crate::store::ne_jobs::{self, NeJob, NeJobState};
use crate::store::{self, Store, StoreError};

/// The two spool kinds (each a folder under `spool/nextengine/`).
pub use crate::store::ne_jobs::NeJobKind as Kind;

/// The folder a kind's files are dropped in.
fn folder(kind: Kind) -> &'static str {
    kind.as_str()
}

/// The upload API a kind's CSV goes to.
fn upload_kind(kind: Kind) -> UploadKind {
    match kind {
        Kind::Goods => UploadKind::Goods,
        Kind::Stock => UploadKind::WarehouseStock,
    }
}

/// After how many failed reads (no permission, an I/O error) a claimed file is set aside.
const READ_ATTEMPTS: u32 = 3;

/// Runs NextEngine spool jobs; one per daemon.
pub struct Jobs {
    config: Config,
    client: Arc<Client>,
    db: store::Shared,
    settlers: [Settler; 2],
    /// Claimed files whose reading failed in this run, by job id, and how often.
    read_failures: std::collections::HashMap<String, u32>,
}

impl Jobs {
    pub fn new(config: Config, client: Arc<Client>, store: Store) -> Jobs {
        Jobs {
            config,
            client,
            db: store::Shared::new(store),
            settlers: [Settler::default(), Settler::default()],
            read_failures: Default::default(),
        }
    }

    /// Takes a reloaded configuration: the next pass uses its folders, limits and
    /// `nextengine.account`.
    pub fn reload(&mut self, config: Config) {
        self.config = config;
    }

    fn spool_dir(&self, kind: Kind) -> PathBuf {
        self.config
            .paths
            .spool
            .join("nextengine")
            .join(folder(kind))
    }

    fn work_dir(&self) -> PathBuf {
        self.config.paths.state.join("work/nextengine")
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db.run(f).await
    }

    /// The account uploads go to (see [`super::client::chosen_account`]); when an operator
    /// must act before there is one, that is a health problem.
    async fn account(&self) -> Result<Option<String>, StoreError> {
        let configured = self.config.nextengine.account.clone();
        let chosen = self
            .db(move |db| super::client::chosen_account(db, &configured))
            .await?;
        match chosen {
            Ok(id) => Ok(Some(id)),
            Err(NoAccount::NoneConnected) => Ok(None),
            Err(why @ NoAccount::Unusable(_)) => {
                health::set("nextengine", why.to_string());
                Ok(None)
            }
        }
    }

    /// One pass: resume jobs in flight, take settled spool files, poll queued uploads.
    pub async fn step(&mut self) {
        for kind in [Kind::Goods, Kind::Stock] {
            let _ = durable::create_dir_all(&self.spool_dir(kind));
        }
        let _ = durable::create_dir_all(&self.work_dir());
        let Ok(Some(account)) = self.account().await else {
            return; // Nothing to do until an account is connected.
        };
        // The NextEngine problem is over after a pass in which nothing failed.
        let mut failed = false;
        // Files claimed earlier (crash or error) first.
        if let Ok(files) = spool::in_flight(&self.work_dir()) {
            for f in files {
                if let Err(e) = self.process(&account, &f).await {
                    self.left_for_retry(&f, &e);
                    failed = true;
                }
            }
        }
        let settle = Duration::from_millis(self.config.einvoice.settle_ms);
        for (i, kind) in [Kind::Goods, Kind::Stock].into_iter().enumerate() {
            let dir = self.spool_dir(kind);
            let Ok((ready, _)) = self.settlers[i].ready(&dir, settle) else {
                continue;
            };
            for path in ready {
                self.settlers[i].forget(&path);
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let job_id = spool::new_job_id();
                let work = match spool::claim(&path, &self.work_dir(), &job_id) {
                    Ok(w) => w,
                    Err(e) => {
                        error!(file = %name, "cannot claim: {e}");
                        continue;
                    }
                };
                let job = job_id.clone();
                let _ = self
                    .db(move |db| db.write(|tx| ne_jobs::claim(tx, &job, kind, &name)))
                    .await;
                if let Err(e) = self.process(&account, &work).await {
                    self.left_for_retry(&work, &e);
                    failed = true;
                }
            }
        }
        match self.poll(&account).await {
            Ok(()) if !failed => health::clear("nextengine"),
            Ok(()) => {}
            Err(e) => {
                warn!("NextEngine queue poll: {e}");
                health::set("nextengine", format!("following the upload queue: {e}"));
            }
        }
    }

    fn left_for_retry(&self, work: &Path, e: &NeError) {
        error!(file = %work.display(), "NextEngine job left for a retry: {e}");
        let name = work.file_name().unwrap_or_default().to_string_lossy();
        health::set("nextengine", format!("{name} is left for a retry: {e}"));
    }

    async fn process(&mut self, account: &str, work: &Path) -> Result<(), NeError> {
        let work_name = work
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some((job_id, name)) =
            spool::parse_work_name(&work_name).map(|(a, b)| (a.to_string(), b.to_string()))
        else {
            return Ok(());
        };
        let id = job_id.clone();
        let job: Option<NeJob> = self.db(move |db| ne_jobs::get(db, &id)).await?;
        let Some(NeJob {
            kind,
            state,
            que_id,
            csv,
            upload_started_at: started,
            account: uploaded_to,
            ..
        }) = job
        else {
            return Ok(());
        };
        // A job already sent stays with the account it was sent to.
        let account = uploaded_to.as_deref().unwrap_or(account);
        match state {
            NeJobState::Claimed => {
                // One descriptor, no link followed, no further than the limit.
                let limit = self.config.einvoice.max_file_bytes;
                let text = match crate::limited::read(work, limit) {
                    Ok(t) => {
                        self.read_failures.remove(&job_id);
                        t
                    }
                    Err(e) if e.is_refusal() => {
                        let why = match e {
                            crate::limited::LimitedError::TooLarge { .. }
                            | crate::limited::LimitedError::Grew { .. } => {
                                format!("{e} (einvoice.max_file_bytes)")
                            }
                            e => format!("the file cannot be taken: {e}"),
                        };
                        return self.reject(&job_id, &name, work, &why, &[]).await;
                    }
                    Err(e) => {
                        // Tried again at the next passes; a file that keeps failing is set
                        // aside rather than tried forever.
                        let tries = self.read_failures.entry(job_id.clone()).or_insert(0);
                        *tries += 1;
                        if *tries >= READ_ATTEMPTS {
                            let why = format!(
                                "turnbridge could not read this file in {tries} attempts ({e}) and set it aside; once it can be read, drop it into the spool again"
                            );
                            self.read_failures.remove(&job_id);
                            return self.reject(&job_id, &name, work, &why, &[]).await;
                        }
                        return Err(NeError::Http(format!("read {}: {e}", work.display())));
                    }
                };
                let text =
                    match crate::einvoice::read::decode(&text, crate::einvoice::TextEncoding::Auto)
                    {
                        Ok(t) => t,
                        Err(e) => {
                            return self.reject(&job_id, &name, work, &e.to_string(), &[]).await
                        }
                    };
                // JSON files (an array of objects with the same keys) read like CSV.
                let text = if name.to_ascii_lowercase().ends_with(".json") {
                    match upload::json_to_csv(&text) {
                        Ok(t) => t,
                        Err(e) => return self.reject(&job_id, &name, work, &e, &[]).await,
                    }
                } else {
                    text.into_owned()
                };
                let built = match kind {
                    Kind::Goods => upload::goods_csv(&text),
                    Kind::Stock => {
                        match upload::stock_levels(&text, &self.config.nextengine.default_warehouse)
                        {
                            Err(e) => Err(e),
                            Ok((levels, problems)) => {
                                let mut current = std::collections::BTreeMap::new();
                                let mut by_wh: std::collections::BTreeMap<String, Vec<String>> =
                                    Default::default();
                                for l in &levels {
                                    by_wh
                                        .entry(l.warehouse.clone())
                                        .or_default()
                                        .push(l.code.clone());
                                }
                                for (wh, codes) in by_wh {
                                    current.extend(
                                        self.client.warehouse_levels(account, &wh, &codes).await?,
                                    );
                                }
                                Ok((upload::stock_csv(&levels, &current), problems))
                            }
                        }
                    }
                };
                let (csv, problems) = match built {
                    Ok(b) => b,
                    Err(reason) => return self.reject(&job_id, &name, work, &reason, &[]).await,
                };
                if !problems.is_empty() {
                    self.write_report(&job_id, &name, &problems).await?;
                }
                let Some(csv) = csv else {
                    return self
                        .finish(
                            &job_id,
                            &name,
                            work,
                            NeJobState::Done,
                            None,
                            "nothing to change",
                            problems.len(),
                        )
                        .await;
                };
                let (id, csv2, md5) = (job_id.clone(), csv.clone(), hex(&Md5::digest(&csv)));
                let n = problems.len() as i64;
                let to = account.to_string();
                self.db(move |db| {
                    db.write(|tx| ne_jobs::start_upload(tx, &id, &csv2, &md5, n, &to))
                })
                .await?;
                self.send(account, kind, &job_id, &csv).await
            }
            NeJobState::Uploading => {
                // Did the upload reach NextEngine before the crash? Look for it in the queue.
                if let Some(q) = self.find_in_queue(account, started).await? {
                    info!(job_id = %job_id, que_id = %q, "the upload before the restart reached NextEngine; following it");
                    return self.queued(&job_id, &q).await;
                }
                self.send(account, kind, &job_id, &csv.unwrap_or_default())
                    .await
            }
            NeJobState::Queued => Ok(()), // poll() follows it
            other => {
                let q = que_id.clone();
                self.finish(&job_id, &name, work, other, q.as_deref(), "", 0)
                    .await
            }
        }
    }

    async fn send(
        &self,
        account: &str,
        kind: Kind,
        job_id: &str,
        csv: &[u8],
    ) -> Result<(), NeError> {
        match self.client.upload(account, upload_kind(kind), csv).await {
            Ok(q) => {
                info!(job_id, que_id = %q, kind = %kind, "uploaded to NextEngine");
                self.queued(job_id, &q).await
            }
            // NextEngine refused the upload itself: record its code and message; sending the
            // same CSV again would be refused again. Network trouble and busy answers are
            // retried on the next pass instead.
            Err(NeError::Api { code, message }) => {
                let name = self.source_name(job_id).await?;
                let work = self.work_dir().join(spool::work_name(job_id, &name));
                let result = format!("NextEngine refused the upload: {code} {message}");
                warn!(job_id, "{result}");
                self.finish(job_id, &name, &work, NeJobState::Failed, None, &result, 0)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    async fn source_name(&self, job_id: &str) -> Result<String, NeError> {
        let id = job_id.to_string();
        let job = self.db(move |db| ne_jobs::get(db, &id)).await?;
        Ok(job
            .ok_or_else(|| StoreError::Task(format!("no NextEngine job {job_id}")))?
            .source_name)
    }

    async fn queued(&self, job_id: &str, que_id: &str) -> Result<(), NeError> {
        let (id, q) = (job_id.to_string(), que_id.to_string());
        self.db(move |db| db.write(|tx| ne_jobs::queued(tx, &id, &q)))
            .await?;
        Ok(())
    }

    /// A queue entry created since `since` (the send time of an upload in doubt).
    async fn find_in_queue(
        &self,
        account: &str,
        since: Option<store::Timestamp>,
    ) -> Result<Option<String>, NeError> {
        let Some(since) = since else { return Ok(None) };
        let since_jst = since
            .utc()
            .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).expect("JST"))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let answer = self
            .client
            .call(
                account,
                "/api_v1_system_que/search",
                &[
                    ("fields", "que_id,que_creation_date"),
                    ("que_creation_date-gte", &since_jst),
                ],
                false,
            )
            .await?;
        // Entries another job already follows are not this one's: take the earliest of the
        // rest (another job's upload after a failed one must not be adopted by it).
        let owned: HashSet<String> = self.db(|db| ne_jobs::followed_queue_ids(db)).await?;
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
        };
        let mut candidates: Vec<(String, u64, String)> = answer
            .get("data")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let id = text(r.get("que_id"))?;
                let at = text(r.get("que_creation_date")).unwrap_or_default();
                let n = id.parse().unwrap_or(u64::MAX);
                (!owned.contains(&id)).then_some((at, n, id))
            })
            .collect();
        candidates.sort();
        Ok(candidates.into_iter().next().map(|(_, _, id)| id))
    }

    /// Follows queued uploads to NextEngine's verdict.
    async fn poll(&self, account: &str) -> Result<(), NeError> {
        let queued = self.db(|db| ne_jobs::in_queue(db)).await?;
        for job in queued {
            let (job_id, name) = (job.id, job.source_name);
            // A queued job always has its queue id.
            let que_id = job.que_id.unwrap_or_default();
            let account = job.account.as_deref().unwrap_or(account);
            let verdict = self.client.queue(account, &que_id).await?;
            let (state, result) = match &verdict {
                QueueState::Pending => continue,
                QueueState::Done => (NeJobState::Done, "processed by NextEngine".to_string()),
                QueueState::Failed(m) => (NeJobState::Failed, m.clone()),
                QueueState::Unknown(s) => {
                    warn!(job_id = %job_id, que_id = %que_id, "NextEngine queue status {s} is not documented; no longer polled");
                    (NeJobState::Unknown, format!("queue status {s}"))
                }
            };
            let work = self.work_dir().join(spool::work_name(&job_id, &name));
            self.finish(&job_id, &name, &work, state, Some(&que_id), &result, 0)
                .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        job_id: &str,
        name: &str,
        work: &Path,
        state: NeJobState,
        que_id: Option<&str>,
        result: &str,
        rejected_rows: usize,
    ) -> Result<(), NeError> {
        // The report first, so a finished job always has it.
        if matches!(state, NeJobState::Failed | NeJobState::Unknown) && !result.is_empty() {
            // NextEngine's own word on the upload, for the person who reads the report.
            let line = RowProblem {
                row: 0,
                field: "que_id".into(),
                value: que_id.unwrap_or_default().into(),
                reason: result.into(),
            };
            self.write_report(job_id, name, &[line]).await?;
        }
        let (id, res, q) = (
            job_id.to_string(),
            result.to_string(),
            que_id.map(str::to_string),
        );
        let file = name.to_string();
        self.db(move |db| {
            db.write(|tx| {
                let finished = ne_jobs::finish(tx, &id, state, &res, rejected_rows as i64)?;
                if let Some(f) = finished {
                    store::events::add(
                        tx,
                        &NextengineUploadCompleted {
                            import_id: id,
                            file: Some(file),
                            kind: Some(f.kind),
                            status: state,
                            que_id: q,
                            result: res,
                            rejected_rows: Some(f.rejected_rows),
                        },
                    )?;
                }
                Ok(())
            })
        })
        .await?;
        if work.exists() {
            let day = chrono::Local::now().format("%Y-%m-%d").to_string();
            let dest = self.config.paths.state.join("archive").join(day);
            durable::move_into(work, &dest, &spool::work_name(job_id, name))
                .map_err(|e| NeError::Http(format!("archive {}: {e}", work.display())))?;
        }
        info!(job_id, file = name, state = %state, "NextEngine job finished");
        Ok(())
    }

    async fn write_report(
        &self,
        job_id: &str,
        name: &str,
        problems: &[RowProblem],
    ) -> Result<(), NeError> {
        let report = Report {
            job_id: job_id.into(),
            file: name.into(),
            outcome: "partial".into(),
            summary: format!("{} row(s) were not sent to NextEngine.", problems.len()),
            accepted: 0,
            rejected: problems.len(),
            rejected_files: vec![],
            problems: problems
                .iter()
                .map(|p| ReportEntry {
                    rule: None,
                    file: name.into(),
                    row: p.row,
                    message_type: None,
                    number: None,
                    field: p.field.clone(),
                    value: p.value.clone(),
                    reason: p.reason.clone(),
                })
                .collect(),
        };
        let base = self
            .config
            .paths
            .state
            .join("rejected")
            .join(spool::work_name(job_id, name));
        report
            .write(&base)
            .map_err(|e| NeError::Http(format!("write report: {e}")))
    }

    async fn reject(
        &self,
        job_id: &str,
        name: &str,
        work: &Path,
        reason: &str,
        rows: &[RowProblem],
    ) -> Result<(), NeError> {
        warn!(job_id, file = name, "NextEngine file refused: {reason}");
        let mut problems = rows.to_vec();
        problems.push(RowProblem {
            row: 0,
            field: String::new(),
            value: String::new(),
            reason: reason.into(),
        });
        self.write_report(job_id, name, &problems).await?;
        let dest = self.config.paths.state.join("rejected");
        durable::move_into(work, &dest, &spool::work_name(job_id, name))
            .map_err(|e| NeError::Http(format!("move to rejected: {e}")))?;
        let (id, res) = (job_id.to_string(), reason.to_string());
        self.db(move |db| {
            db.write(|tx| {
                ne_jobs::finish(tx, &id, NeJobState::Rejected, &res, 0)?;
                store::events::add(
                    tx,
                    &NextengineUploadCompleted {
                        import_id: id,
                        file: None,
                        kind: None,
                        status: NeJobState::Rejected,
                        que_id: None,
                        result: res,
                        rejected_rows: None,
                    },
                )
            })
        })
        .await?;
        Ok(())
    }
}
