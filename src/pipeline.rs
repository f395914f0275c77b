//! One claimed e-invoice file, top to bottom: read, check, record, stage, publish, announce,
//! archive.
//!
//! Every step can be repeated after a crash without repeating its effect:
//!
//! 1. **Record** — each accepted message gets a row (state `validated`, its rendered XML, and
//!    its XML name fixed) in one transaction. A row that already exists for this job is reused;
//!    one from another job is replaced only by a new generation where [`corrections::admit`]
//!    allows it (after an error, a void), else the row is refused with the reason.
//! 2. **Reject** — rejected rows and their reports are written to `state/rejected/`.
//! 3. **Stage** — each message's XML is written and fsynced in the staging folder; one
//!    transaction then marks them all `staged`.
//! 4. **Publish** — each staged file is moved (link, then unlink; never replacing a file) into
//!    the pickup folder and the folders are
//!    synced; one transaction marks the messages `queued`, raises their
//!    `invoice.status.updated` events, finishes the job and raises `upload.completed`. A staged
//!    message whose staging file is gone was already renamed: it is never written again.
//! 5. **Archive** — the source moves from `work/` to `archive/YYYY-MM-DD/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::corrections;
use crate::durable;
use crate::einvoice::archive::hex;
use crate::einvoice::{self, Message, Rejected, Source, Verdict};
use crate::events::{UploadCompleted, UploadStatus};
use crate::limited::{self, LimitedError};
use crate::spool::{self, Report, ReportEntry};
use crate::store::messages::{self, Change, MessageRow};
use crate::store::{self, jobs, JobState, MessageState, NewMessage, Store, StoreError};
use crate::turnkey::{self, Pickup, PickupError};

/// The kind of job this pipeline handles, as stored in `jobs.kind`.
pub const KIND: &str = "einvoice";

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pickup(#[from] PickupError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> PipelineError + 'a {
    move |source| PipelineError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Folders under the state root.
#[derive(Debug, Clone)]
pub struct StateDirs {
    pub work: PathBuf,
    pub archive: PathBuf,
    pub rejected: PathBuf,
}

impl StateDirs {
    pub fn new(state: &Path) -> StateDirs {
        StateDirs {
            work: state.join("work"),
            archive: state.join("archive"),
            rejected: state.join("rejected"),
        }
    }

    /// Creates the folders, the state folder and these three the service user's alone.
    pub fn create(&self) -> io::Result<()> {
        for d in [&self.work, &self.archive, &self.rejected] {
            durable::create_dir_all(d)?;
            crate::filemode::private_dir(d)?;
        }
        if let Some(state) = self.work.parent() {
            crate::filemode::private_dir(state)?;
        }
        Ok(())
    }
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub job_id: String,
    /// `done`, `rejected` or `duplicate`.
    pub state: JobState,
    pub queued: usize,
    pub rejected: usize,
    pub final_path: PathBuf,
}

/// How many starts on a file may end without its messages recorded (the process died)
/// before it is set aside (`jobs.attempts`).
const MAX_ATTEMPTS: i64 = 3;

/// After how many failed reads in a row (no permission, an I/O error) a claimed file is set
/// aside (`jobs.read_failures`, counted apart from the starts that died).
const READ_ATTEMPTS: i64 = 3;

/// Everything the pipeline needs, owned by the one worker that runs jobs.
pub struct Pipeline {
    pub config: Config,
    pub store: Store,
    pub pickup: Pickup,
    pub dirs: StateDirs,
    /// Called as work progresses (per message), so a watchdog sees a long batch is alive.
    pub progress: Option<Box<dyn Fn() + Send>>,
}

impl Pipeline {
    fn tick(&self) {
        if let Some(p) = &self.progress {
            p();
        }
    }

    pub fn open(config: Config) -> Result<Pipeline, PipelineError> {
        let dirs = StateDirs::new(&config.paths.state);
        dirs.create()
            .map_err(io_err("create state folders under", &config.paths.state))?;
        let store = Store::open(&config.database())?;
        let pickup = Pickup::open(&config.turnkey.inbox, &config.turnkey.staging)?;
        Ok(Pipeline {
            config,
            store,
            pickup,
            dirs,
            progress: None,
        })
    }

    /// Claims a spool file and processes it.
    pub fn take(&mut self, spool_path: &Path) -> Result<Outcome, PipelineError> {
        let job_id = spool::new_job_id();
        let work = spool::claim(spool_path, &self.dirs.work, &job_id)
            .map_err(io_err("claim", spool_path))?;
        self.process(&work)
    }

    /// Processes (or resumes) a file in `work/`.
    pub fn process(&mut self, work: &Path) -> Result<Outcome, PipelineError> {
        let work_name = work
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some((job_id, name)) = spool::parse_work_name(&work_name) else {
            return Err(PipelineError::Io {
                action: "recognise",
                path: work.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a claimed file name"),
            });
        };
        let (job_id, name) = (job_id.to_string(), name.to_string());
        let span = tracing::info_span!("job", job_id = %job_id, file = %name);
        let _enter = span.enter();

        if let Some(job) = self.store.job(&job_id)? {
            if job.state.is_finished() {
                // Finished before a crash; only the move out of work/ was left.
                return self.finish_move(work, &job_id, &name, job.state);
            }
        }
        // One descriptor, no link followed, a regular file, read no further than the limit.
        let limit = self.config.einvoice.max_file_bytes;
        let settle = Duration::from_millis(self.config.einvoice.settle_ms);
        let read = limited::open(work).and_then(|(file, meta)| {
            let bytes = read_settled(&file, &meta, limit, settle)?;
            Ok((bytes, meta.len()))
        });
        let (bytes, size) = match read {
            Ok(r) => r,
            Err(e) if e.is_refusal() => {
                let reason = match e {
                    LimitedError::TooLarge { .. } | LimitedError::Grew { .. } => {
                        format!("{e} (einvoice.max_file_bytes)")
                    }
                    e => format!("the file cannot be taken: {e}"),
                };
                // Invoices recorded from it before a restart (under a higher limit, or before
                // it was replaced) were accepted: they are still sent.
                return self.quarantine(work, reason);
            }
            Err(e) => return self.read_failed(work, &job_id, &name, e),
        };
        let md5 = hex(&Md5::digest(&bytes));
        self.ensure_job(&job_id, &name, &md5, size)?;
        self.store.reset_read_failures(&job_id)?;
        // A job first recorded by a read that failed learns its content now.
        self.store.learn_job_content(&job_id, &md5, size)?;
        // An operator's request (`turnbridge invoice resend` twice, say) may repeat the bytes
        // of an earlier one on purpose: the file it registered is never a duplicate.
        let requested = store::manual::for_job(self.store.conn(), &name, &md5, &job_id)?.is_some();
        let first = match requested {
            true => None,
            false => self.store.job_with_md5(KIND, &md5, &job_id)?,
        };
        if let Some(first) = first {
            let reason = format!(
                "the same bytes (MD5 {md5}) were already processed as job {} from {}",
                first.id, first.source_name
            );
            return self.refuse(
                work,
                &job_id,
                &name,
                JobState::Duplicate,
                reason,
                Some(&first.id),
            );
        }
        let recorded = !messages::of_job(self.store.conn(), &job_id)?.is_empty();
        if !recorded {
            // Reading and checking is where a hostile file can kill the process; one that
            // did so MAX_ATTEMPTS times is set aside rather than resumed at every start.
            let attempts = self.store.count_attempt(&job_id)?;
            if attempts > MAX_ATTEMPTS {
                let reason = format!(
                    "turnbridge stopped {} times while reading this file (out of memory or a crash) and set it aside; please report it",
                    attempts - 1
                );
                return self.refuse(work, &job_id, &name, JobState::Rejected, reason, None);
            }
        }
        let checked = einvoice::check_batch(&name, &bytes, &self.config.read_options());
        // What is left to do works from the verdict; the file's bytes are not needed again.
        drop(bytes);
        if !recorded {
            // It was read and checked without dying: a later failure (a locked database, a
            // full disk) is retried as before, not counted as a crash.
            self.store.reset_attempts(&job_id)?;
        }
        let verdict = match checked {
            Ok(v) => v,
            Err(e) if recorded => {
                // Recorded before a restart under another config: finish what was recorded.
                warn!("the file no longer reads under the current configuration ({e}); finishing the messages recorded before");
                Verdict::default()
            }
            Err(e) => {
                return self.refuse(
                    work,
                    &job_id,
                    &name,
                    JobState::Rejected,
                    e.to_string(),
                    None,
                )
            }
        };
        self.run(work, &job_id, &name, verdict, UploadStatus::Completed)
    }

    /// A read of a claimed file that failed (not a refusal of the file itself): tried again at
    /// later scans, counted as a failed read (apart from starts that died, which count
    /// crashes); a file that keeps failing is set aside rather than tried forever. A file
    /// still being written is only waited for: it ends, or grows past the limit.
    fn read_failed(
        &mut self,
        work: &Path,
        job_id: &str,
        name: &str,
        e: LimitedError,
    ) -> Result<Outcome, PipelineError> {
        let still_written =
            matches!(&e, LimitedError::Io(io) if io.kind() == io::ErrorKind::WouldBlock);
        if !still_written {
            self.ensure_job(job_id, name, "", 0)?;
            let tries = self.store.count_read_failure(job_id)?;
            if tries >= READ_ATTEMPTS {
                let reason = format!(
                    "turnbridge could not read this file in {tries} attempts ({e}) and set it aside; once it can be read, drop it into the spool again"
                );
                // Invoices recorded from it before a restart are still sent.
                return self.quarantine(work, reason);
            }
        }
        Err(PipelineError::Io {
            action: "read",
            path: work.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })
    }

    /// Sets a claimed file aside in `rejected/` with `reason`; the invoices its job recorded
    /// are still sent (`partial`), and a job already finished keeps its state (its file is
    /// only moved where that state puts it).
    pub fn quarantine(&mut self, work: &Path, reason: String) -> Result<Outcome, PipelineError> {
        let work_name = work
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (job_id, name) = spool::parse_work_name(&work_name)
            .map(|(j, n)| (j.to_string(), n.to_string()))
            .unwrap_or_else(|| (spool::new_job_id(), work_name.clone()));
        let size = fs::symlink_metadata(work).map(|m| m.len()).unwrap_or(0);
        let job = self.ensure_job(&job_id, &name, "", size)?;
        if job.state.is_finished() {
            // Its final state and event are committed; only the move out of work/ was left.
            warn!(reason = %reason, "the job had finished ({}): only its file is moved", job.state);
            return self.finish_move(work, &job_id, &name, job.state);
        }
        let recorded = messages::of_job(self.store.conn(), &job_id)?.len();
        if job.state == JobState::Claimed && recorded > 0 {
            // Invoices recorded before the error were accepted: send them rather than leave
            // them stranded (they would also refuse a corrected file as a duplicate). The
            // report comes first, so it exists whatever happens next.
            let base = self.dirs.rejected.join(spool::work_name(&job_id, &name));
            let summary = format!(
                "{reason} The {recorded} invoice(s) recorded before the error are sent to Turnkey; the rest of the file was not processed. The file is kept in the archive: correct it and drop the missing rows again."
            );
            let report = file_report(
                &job_id,
                &name,
                UploadStatus::Partial.as_str(),
                summary,
                recorded,
                vec![],
                &reason,
            );
            report.write(&base).map_err(io_err("write report", &base))?;
            let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run(
                    work,
                    &job_id,
                    &name,
                    Verdict::default(),
                    UploadStatus::Partial,
                )
            }));
            match sent {
                Ok(result) => return result,
                Err(_) => error!(
                    job_id,
                    "the {recorded} invoice(s) recorded from this file could not be sent either; they stay recorded (see `turnbridge status`)"
                ),
            }
        }
        self.refuse(work, &job_id, &name, JobState::Rejected, reason, None)
    }

    fn ensure_job(
        &self,
        id: &str,
        name: &str,
        md5: &str,
        size: u64,
    ) -> Result<store::Job, PipelineError> {
        if let Some(job) = self.store.job(id)? {
            return Ok(job);
        }
        self.store.insert_job(id, KIND, name, md5, size)?;
        Ok(self.store.job(id)?.expect("job just inserted"))
    }

    /// Refuses the whole file (`state` rejected or duplicate): moves it to `rejected/` beside
    /// its report.
    fn refuse(
        &mut self,
        work: &Path,
        job_id: &str,
        name: &str,
        state: JobState,
        reason: String,
        duplicate_of: Option<&str>,
    ) -> Result<Outcome, PipelineError> {
        let base = self.dirs.rejected.join(spool::work_name(job_id, name));
        let report = file_report(
            job_id,
            name,
            state.as_str(),
            format!("The whole file was not processed: {reason}"),
            0,
            vec![spool::work_name(job_id, name)],
            &reason,
        );
        report.write(&base).map_err(io_err("write report", &base))?;
        let status = match state {
            JobState::Duplicate => UploadStatus::Duplicate,
            JobState::Rejected | JobState::Claimed | JobState::Done => UploadStatus::Rejected,
        };
        let tx = self.store.transaction()?;
        jobs::refuse(
            &tx,
            job_id,
            state,
            &reason,
            duplicate_of,
            &base.to_string_lossy(),
        )?;
        store::events::add(
            &tx,
            &UploadCompleted {
                import_id: job_id.to_string(),
                file: name.to_string(),
                status,
                tenant_id: self.config.einvoice.default_tenant.clone(),
                success_count: 0,
                error_count: 0,
                reason: Some(reason.clone()),
                duplicate_of: duplicate_of.map(str::to_string),
            },
        )?;
        tx.commit().map_err(StoreError::from)?;
        warn!(reason = %reason, "file {state}");
        self.finish_move(work, job_id, name, state)
    }

    /// Moves the source out of `work/` once its job is finished.
    fn finish_move(
        &mut self,
        work: &Path,
        job_id: &str,
        name: &str,
        state: JobState,
    ) -> Result<Outcome, PipelineError> {
        let final_name = spool::work_name(job_id, name);
        let final_path = if state == JobState::Done {
            let day = chrono::Local::now().format("%Y-%m-%d").to_string();
            let dir = self.dirs.archive.join(day);
            durable::move_into(work, &dir, &final_name).map_err(io_err("archive", work))?
        } else {
            durable::move_into(work, &self.dirs.rejected, &final_name)
                .map_err(io_err("move to rejected", work))?
        };
        self.store
            .set_job_final_path(job_id, &final_path.to_string_lossy())?;
        let job = self.store.job(job_id)?.ok_or_else(|| PipelineError::Io {
            action: "find the job of",
            path: work.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such job"),
        })?;
        Ok(Outcome {
            job_id: job_id.to_string(),
            state,
            queued: job.success_count as usize,
            rejected: job.error_count as usize,
            final_path,
        })
    }

    /// Records, rejects, stages, publishes and archives; `status` is what `upload.completed`
    /// says (`completed`, or `partial` when only what was recorded is finished).
    fn run(
        &mut self,
        work: &Path,
        job_id: &str,
        name: &str,
        mut verdict: Verdict,
        status: UploadStatus,
    ) -> Result<Outcome, PipelineError> {
        // 1. Record.
        self.record(job_id, &mut verdict)?;

        // 2. Reject.
        let rejected_count = verdict.rejected.len() + verdict.refused_members.len();
        if rejected_count > 0 {
            self.write_rejected(job_id, name, &verdict)?;
        }

        // 3. Stage, from the XML recorded with each message.
        let rows = messages::of_job(self.store.conn(), job_id)?;
        let mut staged_now = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.state == MessageState::Validated && !r.staged)
        {
            let xml = messages::xml(self.store.conn(), row.id)?.unwrap_or_default();
            self.pickup.stage(&row.xml_name, &xml)?;
            staged_now.push((row.id, self.pickup.staging_path(&row.xml_name)));
            self.tick();
        }
        if !staged_now.is_empty() {
            self.pickup.sync_staging()?;
            let tx = self.store.transaction()?;
            for (id, path) in &staged_now {
                messages::mark_staged(&tx, *id, &path.to_string_lossy())?;
            }
            tx.commit().map_err(StoreError::from)?;
        }

        // 4. Publish.
        let rows = messages::of_job(self.store.conn(), job_id)?;
        let ready: Vec<&MessageRow> = rows
            .iter()
            .filter(|r| r.state == MessageState::Validated && r.staged)
            .collect();
        let mut dirs = BTreeSet::new();
        let mut published = Vec::new();
        for row in &ready {
            let ty: einvoice::MessageType = row.message_type.parse().expect("stored type is valid");
            let staged = row
                .staged_path
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| self.pickup.staging_path(&row.xml_name));
            let (path, moved) = self
                .pickup
                .publish(&staged, &row.xml_name, ty, &row.tenant)?;
            if !moved && !path.exists() {
                info!(
                    invoice_no = %row.number,
                    "{} was moved into the pickup folder before a restart and has since left it",
                    row.xml_name
                );
            }
            dirs.insert(path.parent().unwrap_or(Path::new("/")).to_path_buf());
            published.push((*row, path));
            self.tick();
        }
        self.pickup.sync_dirs(&dirs)?;
        let queued_total = rows
            .iter()
            .filter(|r| r.state != MessageState::Validated)
            .count()
            + published.len();
        let tx = self.store.transaction()?;
        for (row, path) in &published {
            let p = path.to_string_lossy();
            messages::mark_published(&tx, row.id, &p)?;
            // A result applied after a restart, before this step, may already have moved the
            // message on (a file published before the stop): never move it back.
            let now = messages::by_id(&tx, row.id)?.map(|m| m.state);
            if now != Some(MessageState::Validated) {
                continue;
            }
            messages::transition(
                &tx,
                row.id,
                MessageState::Validated,
                &Change::to(MessageState::Queued, &p),
            )?;
        }
        jobs::done(&tx, job_id, queued_total, rejected_count)?;
        let tenants: BTreeSet<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
        let tenant = if tenants.len() == 1 {
            tenants.into_iter().next().unwrap().to_string()
        } else {
            self.config.einvoice.default_tenant.clone()
        };
        store::events::add(
            &tx,
            &UploadCompleted {
                import_id: job_id.to_string(),
                file: name.to_string(),
                status,
                tenant_id: tenant,
                success_count: queued_total,
                error_count: rejected_count,
                reason: None,
                duplicate_of: None,
            },
        )?;
        tx.commit().map_err(StoreError::from)?;
        for (row, path) in &published {
            let md5 = row.xml_md5.as_deref().unwrap_or("");
            info!(
                tenant_id = %row.tenant,
                message_type = %row.message_type,
                invoice_no = %row.number,
                xml_path = %path.display(),
                md5 = %md5,
                "queued for Turnkey"
            );
        }
        info!(
            job_id,
            file = name,
            queued = queued_total,
            rejected = rejected_count,
            "batch done"
        );

        // 5. Archive.
        self.finish_move(work, job_id, name, JobState::Done)
    }

    /// Step 1: one transaction records every accepted message not yet recorded, each as the
    /// generation [`corrections::admit`] says; messages it refuses (sent before and accepted
    /// or still on its way, out of order, an allowance above its invoice) move from
    /// `accepted` to `rejected`. A job that took an operator's request file
    /// ([`store::manual::for_job`]) notes what became of it and raises its manual event here.
    fn record(&mut self, job_id: &str, verdict: &mut Verdict) -> Result<(), PipelineError> {
        let accepted = std::mem::take(&mut verdict.accepted);
        let sources = std::mem::take(&mut verdict.accepted_sources);
        let tx = self.store.transaction()?;
        let request = match jobs::job(&tx, job_id)? {
            Some(job) => store::manual::for_job(&tx, &job.source_name, &job.md5, job_id)?,
            None => None,
        };
        if let Some(r) = &request {
            store::manual::take(&tx, r.id, job_id)?;
            if let Some(p) = verdict.rejected.iter().flat_map(|r| &r.problems).next() {
                store::manual::refuse(&tx, r.id, &format!("{}: {}", p.field, p.reason))?;
            }
        }
        for (a, source) in accepted.into_iter().zip(sources) {
            let m = &a.message;
            let ty = m.message_type();
            let (seller, number) = (m.seller().as_str(), m.number());
            let admission = match corrections::admit(&tx, job_id, &a)? {
                corrections::Admit::Recorded => {
                    verdict.accepted.push(a);
                    verdict.accepted_sources.push(source);
                    continue;
                }
                corrections::Admit::Refused(problem) => {
                    if let Some(r) = &request {
                        let reason = format!("{}: {}", problem.field, problem.reason);
                        store::manual::refuse(&tx, r.id, &reason)?;
                    }
                    verdict
                        .rejected
                        .push(Rejected::from_accepted(&a, source, problem));
                    continue;
                }
                corrections::Admit::Record(admission) => admission,
            };
            let xml = &a.xml;
            let xml_md5 = hex(&Md5::digest(xml));
            let new = NewMessage {
                job_id,
                message_type: ty.as_str(),
                legacy_type: a.legacy,
                seller_ban: seller,
                number,
                generation: admission.generation(),
                buyer_id: m.buyer_id(),
                document_date: m.document_date().0,
                tenant: &a.tenant,
                source_file: &a.file,
                source_row: a.row,
                amount: m.untaxed_amount().map(|d| d.normalize().to_string()),
                xml,
                xml_md5: &xml_md5,
            };
            let date = chrono::Local::now().date_naive();
            let id = messages::insert(&tx, &new, |id| turnkey::file_name(ty, date, id))?;
            if admission.generation() > 1 {
                info!(
                    invoice_no = %number,
                    message_type = %ty,
                    generation = admission.generation(),
                    "recorded again as generation {} ({:?})",
                    admission.generation(),
                    admission
                );
            }
            if let Some(p) = &self.progress {
                p();
            }
            if let Message::Allowance(al) = m {
                for it in &al.items {
                    messages::add_allowance_line(
                        &tx,
                        id,
                        seller,
                        it.original_invoice_number.as_str(),
                        &it.amount.normalize().to_string(),
                    )?;
                }
            }
            if let Some(r) = &request {
                store::manual::fulfil(&tx, r.id, id)?;
                let row = messages::by_id(&tx, id)?.ok_or(StoreError::NoMessage(id))?;
                corrections::announce(&tx, r, &row)?;
            }
            verdict.accepted.push(a);
            verdict.accepted_sources.push(source);
        }
        tx.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// Step 2: rejected rows go back out in their own format, beside the report.
    fn write_rejected(
        &self,
        job_id: &str,
        name: &str,
        verdict: &Verdict,
    ) -> Result<(), PipelineError> {
        let dir = &self.dirs.rejected;
        let mut files: Vec<String> = Vec::new();
        let mut by_file: BTreeMap<&str, Vec<&Rejected>> = BTreeMap::new();
        for r in &verdict.rejected {
            by_file.entry(r.file.as_str()).or_default().push(r);
        }
        for (file, rows) in &by_file {
            let out_name = rejected_name(job_id, name, file);
            let bytes = match &rows[0].source {
                Source::Csv(_) => {
                    // The header as read, then each rejected record as it was written (a
                    // row refused for its number of fields goes back as it came).
                    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
                    if let Some(h) = verdict.csv_headers.get(*file) {
                        w.write_record(h).expect("write to memory");
                    }
                    let mut out = w.into_inner().expect("flush to memory");
                    for r in rows {
                        if let Source::Csv(records) = &r.source {
                            for rec in records {
                                out.extend_from_slice(rec.as_bytes());
                                out.push(b'\n');
                            }
                        }
                    }
                    out
                }
                Source::Json(_) => {
                    // `{"Messages": [...]}` around each rejected message as it was written.
                    let mut out = b"{\"Messages\": [\n".to_vec();
                    let texts = rows.iter().filter_map(|r| match &r.source {
                        Source::Json(text) => Some(text),
                        _ => None,
                    });
                    for (i, text) in texts.enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b",\n");
                        }
                        out.extend_from_slice(text.as_bytes());
                    }
                    out.extend_from_slice(b"\n]}\n");
                    out
                }
            };
            let path = dir.join(&out_name);
            durable::write_atomic(&path, &bytes).map_err(io_err("write", &path))?;
            files.push(out_name);
        }
        for m in &verdict.refused_members {
            let out_name = rejected_name(job_id, name, &format!("{name}:{}", m.name));
            let path = dir.join(&out_name);
            durable::write_atomic(&path, &m.bytes).map_err(io_err("write", &path))?;
            files.push(out_name);
        }
        let problems = report_entries(name, verdict);
        let rejected = verdict.rejected.len();
        let summary = format!(
            "{} message(s) were sent to Turnkey; {} message(s){} were rejected.",
            verdict.accepted.len(),
            rejected,
            if verdict.refused_members.is_empty() {
                String::new()
            } else {
                format!(" and {} archive member(s)", verdict.refused_members.len())
            }
        );
        let report = Report {
            job_id: job_id.into(),
            file: name.into(),
            outcome: "partial".into(),
            summary,
            accepted: verdict.accepted.len(),
            rejected,
            rejected_files: files,
            problems,
        };
        let base = dir.join(spool::work_name(job_id, name));
        report.write(&base).map_err(io_err("write report", &base))?;
        warn!(
            job_id,
            file = name,
            rejected,
            "rows rejected; report in {}",
            base.display()
        );
        Ok(())
    }
}

/// Every problem of a verdict as report lines: refused archive members, then rejected rows.
pub fn report_entries(batch: &str, verdict: &Verdict) -> Vec<ReportEntry> {
    let members = verdict
        .refused_members
        .iter()
        .map(|m| ReportEntry::whole_file(format!("{batch}:{}", m.name), m.reason.clone()));
    let rows = verdict.rejected.iter().flat_map(|r| {
        r.problems.iter().map(move |p| ReportEntry {
            rule: p.rule,
            file: r.file.clone(),
            row: p.row,
            message_type: r.message_type.clone(),
            number: r.number.clone(),
            field: p.field.clone(),
            value: p.value.clone(),
            reason: p.reason.clone(),
        })
    });
    members.chain(rows).collect()
}

/// A report about a file as a whole (not about its rows).
fn file_report(
    job_id: &str,
    name: &str,
    outcome: &str,
    summary: String,
    accepted: usize,
    rejected_files: Vec<String>,
    reason: &str,
) -> Report {
    Report {
        job_id: job_id.to_string(),
        file: name.to_string(),
        outcome: outcome.to_string(),
        summary,
        accepted,
        rejected: 0,
        rejected_files,
        problems: vec![ReportEntry::whole_file(name, reason)],
    }
}

/// The name of a file of rejected rows: `<job>_<batch name>`, or for a ZIP member
/// `<job>_<zip stem>.<member name>` with folders flattened.
fn rejected_name(job_id: &str, batch: &str, file: &str) -> String {
    match file.strip_prefix(batch).and_then(|r| r.strip_prefix(':')) {
        Some(member) => {
            let stem = batch
                .strip_suffix(".zip")
                .or(batch.strip_suffix(".ZIP"))
                .unwrap_or(batch);
            spool::work_name(
                job_id,
                &format!("{stem}.{}", member.replace(['/', '\\'], "_")),
            )
        }
        None => spool::work_name(job_id, batch),
    }
}

/// Reads a claimed file through its open descriptor, making sure no writer is still appending
/// to it: the size and modification time must be the same before and after the read.
fn read_settled(
    file: &fs::File,
    meta: &fs::Metadata,
    limit: u64,
    settle: Duration,
) -> Result<Vec<u8>, LimitedError> {
    use std::io::{Seek, SeekFrom};
    let stamp = |m: &fs::Metadata| (m.len(), m.modified().ok());
    let mut before = stamp(meta);
    for _ in 0..5 {
        let mut f = file;
        f.seek(SeekFrom::Start(0))?;
        let bytes = limited::read_open(file, &file.metadata()?, limit)?;
        let after = stamp(&file.metadata()?);
        if before == after && after.0 == bytes.len() as u64 {
            return Ok(bytes);
        }
        before = after;
        std::thread::sleep(settle.max(Duration::from_millis(50)));
    }
    Err(LimitedError::Io(io::Error::new(
        io::ErrorKind::WouldBlock,
        "the file is still being written; retrying later",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_written_back_and_the_rest_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[paths]\nspool = \"spool\"\nstate = \"state\"\n[einvoice]\nsettle_ms = 0\n\
                    [turnkey]\ninbox = \"turnkey/INBOX\"\noutbox = \"turnkey/OUTBOX\"\nerror = \"turnkey/ERROR\"\n\
                    [http]\nlisten = \"\"\n";
        let config = Config::parse(text, dir.path()).unwrap();
        fs::create_dir_all(config.einvoice_spool()).unwrap();
        let mut pipeline = Pipeline::open(config.clone()).unwrap();
        let good = include_str!("../fixtures/valid/F0401_b2c_print.csv");
        let batch = config.einvoice_spool().join("b.csv");
        fs::write(&batch, format!("{good}F0401,TEN-001,AB1234\n")).unwrap();
        let o = pipeline.take(&batch).unwrap();
        assert_eq!((o.state, o.queued, o.rejected), (JobState::Done, 1, 1));
        let rows = pipeline.dirs.rejected.join(format!("{}_b.csv", o.job_id));
        let rows = fs::read_to_string(rows).unwrap();
        assert!(rows.ends_with("\nF0401,TEN-001,AB1234\n"), "{rows}");
    }

    fn pipeline_in(dir: &Path) -> (Config, Pipeline) {
        let text = "[paths]\nspool = \"spool\"\nstate = \"state\"\n[einvoice]\nsettle_ms = 0\nmax_file_bytes = 4096\n\
                    [turnkey]\ninbox = \"turnkey/INBOX\"\noutbox = \"turnkey/OUTBOX\"\nerror = \"turnkey/ERROR\"\n\
                    [http]\nlisten = \"\"\n";
        let config = Config::parse(text, dir).unwrap();
        fs::create_dir_all(config.einvoice_spool()).unwrap();
        let pipeline = Pipeline::open(config.clone()).unwrap();
        fs::create_dir_all(&pipeline.dirs.work).unwrap();
        (config, pipeline)
    }

    /// A file whose reading killed the daemon three times (simulated: three starts that never
    /// recorded its messages) is set aside on the fourth, with a report.
    #[test]
    fn a_file_that_keeps_killing_the_daemon_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, mut pipeline) = pipeline_in(dir.path());
        let job = spool::new_job_id();
        let work = pipeline.dirs.work.join(spool::work_name(&job, "a.csv"));
        let good = include_str!("../fixtures/valid/F0401_b2c_print.csv");
        fs::write(&work, good).unwrap();
        let md5 = hex(&Md5::digest(good.as_bytes()));
        pipeline
            .store
            .insert_job(&job, KIND, "a.csv", &md5, good.len() as u64)
            .unwrap();
        for _ in 0..MAX_ATTEMPTS {
            pipeline.store.count_attempt(&job).unwrap();
        }
        let o = pipeline.process(&work).unwrap();
        assert_eq!((o.state, o.queued), (JobState::Rejected, 0));
        let report = fs::read_to_string(format!("{}.error.txt", o.final_path.display())).unwrap();
        assert!(report.contains("stopped 3 times"), "{report}");
        // Fewer attempts go through as usual.
        let job = spool::new_job_id();
        let work = pipeline.dirs.work.join(spool::work_name(&job, "b.csv"));
        let other = good.replace("AB12345678", "AB12345600");
        fs::write(&work, &other).unwrap();
        assert_eq!(pipeline.process(&work).unwrap().queued, 1);
    }

    /// Failed reads and starts that died are counted apart: neither sets a file aside on the
    /// other's count, and the report names the one that did.
    #[test]
    fn failed_reads_and_crashes_are_counted_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, mut pipeline) = pipeline_in(dir.path());
        let good = include_str!("../fixtures/valid/F0401_b2c_print.csv");
        let mut n = 0;
        let mut claimed = |pipeline: &Pipeline| {
            n += 1;
            let job = spool::new_job_id();
            let name = format!("{n}.csv");
            let work = pipeline.dirs.work.join(spool::work_name(&job, &name));
            let bytes = good.replace("AB12345678", &format!("AB123456{n:02}"));
            fs::write(&work, &bytes).unwrap();
            let md5 = hex(&Md5::digest(bytes.as_bytes()));
            pipeline
                .store
                .insert_job(&job, KIND, &name, &md5, bytes.len() as u64)
                .unwrap();
            (job, name, work)
        };
        // Root reads anything: the error is given to the function that takes it.
        let eio = || LimitedError::Io(io::Error::from_raw_os_error(libc::EIO));

        // Two starts that died, then one failed read: left for a retry, not set aside.
        let (job, name, work) = claimed(&pipeline);
        for _ in 0..MAX_ATTEMPTS - 1 {
            pipeline.store.count_attempt(&job).unwrap();
        }
        let r = pipeline.read_failed(&work, &job, &name, eio());
        assert!(
            matches!(r, Err(PipelineError::Io { action: "read", .. })),
            "{r:?}"
        );
        assert!(work.exists(), "left for a retry");
        assert_eq!(
            pipeline.store.job(&job).unwrap().unwrap().state,
            JobState::Claimed
        );

        // Two failed reads, then a start that died: the next start goes through.
        let (job, name, work) = claimed(&pipeline);
        for _ in 0..READ_ATTEMPTS - 1 {
            pipeline.read_failed(&work, &job, &name, eio()).unwrap_err();
        }
        pipeline.store.count_attempt(&job).unwrap();
        let o = pipeline.process(&work).unwrap();
        assert_eq!((o.state, o.queued), (JobState::Done, 1));

        // Three failed reads in a row set it aside, the report naming failed reads.
        let (job, name, work) = claimed(&pipeline);
        for _ in 0..READ_ATTEMPTS - 1 {
            pipeline.read_failed(&work, &job, &name, eio()).unwrap_err();
        }
        let o = pipeline.read_failed(&work, &job, &name, eio()).unwrap();
        assert_eq!(o.state, JobState::Rejected);
        let report = fs::read_to_string(format!("{}.error.txt", o.final_path.display())).unwrap();
        assert!(
            report.contains("could not read this file in 3 attempts"),
            "{report}"
        );
        assert!(!report.contains("stopped"), "{report}");
    }

    /// A claimed file that is a link to a device, a FIFO, or a file grown past the limit is
    /// refused with a report, never read without end or waited on.
    #[test]
    fn claimed_files_are_read_through_one_bounded_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, mut pipeline) = pipeline_in(dir.path());
        let work = pipeline.dirs.work.clone();
        let link = work.join(spool::work_name(&spool::new_job_id(), "zero.csv"));
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let fifo = work.join(spool::work_name(&spool::new_job_id(), "fifo.csv"));
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = work.join(spool::work_name(&spool::new_job_id(), "big.csv"));
        fs::write(&big, vec![b'x'; 5000]).unwrap();
        for (path, why) in [
            (&link, "symbolic link"),
            (&fifo, "FIFO"),
            (&big, "at most 4096"),
        ] {
            let o = pipeline.process(path).unwrap();
            assert_eq!(o.state, JobState::Rejected, "{}", path.display());
            assert!(!path.exists(), "moved out of work/");
            let report = fs::read_to_string(format!("{}.error.txt", o.final_path.display()))
                .unwrap_or_else(|e| panic!("{}: {e}", o.final_path.display()));
            assert!(report.contains(why), "{report}");
        }
    }

    #[test]
    fn a_platform_refusal_names_its_rule_in_both_reports() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut pipeline) = pipeline_in(dir.path());
        let bad = include_str!("../fixtures/invalid/F0401_bad_ban.csv");
        let batch = config.einvoice_spool().join("b.csv");
        fs::write(&batch, bad).unwrap();
        let o = pipeline.take(&batch).unwrap();
        assert_eq!((o.queued, o.rejected), (0, 1));
        let base = pipeline.dirs.rejected.join(format!("{}_b.csv", o.job_id));
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(format!("{}.error.json", base.display())).unwrap())
                .unwrap();
        assert_eq!(json["problems"][0]["field"], "Buyer.Identifier");
        assert_eq!(json["problems"][0]["rule"], "ban");
        let txt = fs::read_to_string(format!("{}.error.txt", base.display())).unwrap();
        assert!(txt.contains("[platform rule ban: MOF"), "{txt}");
    }

    /// A file set aside after an internal error (a panic, caught by the daemon) once its
    /// invoices were recorded: they are sent, not stranded, and the report says so.
    #[test]
    fn a_file_set_aside_after_its_invoices_were_recorded_still_sends_them() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[paths]\nspool = \"spool\"\nstate = \"state\"\n[einvoice]\nsettle_ms = 0\n\
                    [turnkey]\ninbox = \"turnkey/INBOX\"\n[http]\nlisten = \"\"\n";
        let config = Config::parse(text, dir.path()).unwrap();
        fs::create_dir_all(config.einvoice_spool()).unwrap();
        let mut pipeline = Pipeline::open(config.clone()).unwrap();
        let batch = config.einvoice_spool().join("b.csv");
        fs::copy("fixtures/valid/F0401_b2c_print.csv", &batch).unwrap();
        let job_id = spool::new_job_id();
        let work = spool::claim(&batch, &pipeline.dirs.work, &job_id).unwrap();
        let bytes = fs::read(&work).unwrap();
        let mut verdict = einvoice::check_batch("b.csv", &bytes, &config.read_options()).unwrap();
        let accepted = verdict.accepted.len();
        assert!(accepted > 0);
        pipeline
            .ensure_job(&job_id, "b.csv", "", bytes.len() as u64)
            .unwrap();
        pipeline.record(&job_id, &mut verdict).unwrap();

        let o = pipeline
            .quarantine(
                &work,
                "turnbridge hit an internal error on this file.".into(),
            )
            .unwrap();
        assert_eq!((o.state, o.queued), (JobState::Done, accepted));
        let inbox = dir.path().join("turnkey/INBOX");
        assert_eq!(fs::read_dir(&inbox).unwrap().count(), accepted);
        assert!(o.final_path.exists(), "the source is kept");
        let report = pipeline
            .dirs
            .rejected
            .join(format!("{job_id}_b.csv.error.json"));
        let report: serde_json::Value = serde_json::from_slice(&fs::read(report).unwrap()).unwrap();
        assert_eq!(report["outcome"], "partial");
        assert!(report["summary"]
            .as_str()
            .unwrap()
            .contains("are sent to Turnkey"));
        let events = store::events::payloads(
            pipeline.store.conn(),
            crate::events::EventName::UploadCompleted,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["status"], "partial", "{}", events[0]);
        let queued = messages::of_job(pipeline.store.conn(), &job_id)
            .unwrap()
            .into_iter()
            .filter(|m| m.state == MessageState::Queued)
            .count();
        assert_eq!(queued, accepted);
    }

    /// A claimed file whose invoices were recorded before a stop, refused when it is read
    /// again (`einvoice.max_file_bytes` lowered meanwhile, or the file replaced): the recorded
    /// invoices were accepted and still go to Turnkey, as after a failed read; the job is not
    /// left `rejected` with them stranded (they would refuse a corrected file as already sent).
    #[test]
    fn a_resumed_file_refused_when_read_again_still_sends_what_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut pipeline) = pipeline_in(dir.path());
        let batch = config.einvoice_spool().join("b.csv");
        fs::copy("fixtures/valid/F0401_b2c_print.csv", &batch).unwrap();
        let job_id = spool::new_job_id();
        let work = spool::claim(&batch, &pipeline.dirs.work, &job_id).unwrap();
        let bytes = fs::read(&work).unwrap();
        let mut verdict = einvoice::check_batch("b.csv", &bytes, &config.read_options()).unwrap();
        let accepted = verdict.accepted.len();
        assert!(accepted > 0);
        let md5 = hex(&Md5::digest(&bytes));
        pipeline
            .ensure_job(&job_id, "b.csv", &md5, bytes.len() as u64)
            .unwrap();
        pipeline.record(&job_id, &mut verdict).unwrap();

        // Restarted with a lower limit: the file is now too large to be read.
        pipeline.config.einvoice.max_file_bytes = 100;
        let o = pipeline.process(&work).unwrap();
        assert_eq!((o.state, o.queued), (JobState::Done, accepted));
        let inbox = dir.path().join("turnkey/INBOX");
        assert_eq!(fs::read_dir(&inbox).unwrap().count(), accepted);
        let report = pipeline
            .dirs
            .rejected
            .join(format!("{job_id}_b.csv.error.txt"));
        let report = fs::read_to_string(report).unwrap();
        assert!(
            report.contains("max_file_bytes") && report.contains("are sent to Turnkey"),
            "{report}"
        );
        let states: Vec<MessageState> = messages::of_job(pipeline.store.conn(), &job_id)
            .unwrap()
            .into_iter()
            .map(|m| m.state)
            .collect();
        assert_eq!(states, vec![MessageState::Queued; accepted]);
    }

    /// A file whose job already finished (only its move out of `work/` was left) set aside
    /// after an internal error keeps the job's final state and raises no second, contrary
    /// `upload.completed`: it only finishes the move.
    #[test]
    fn setting_aside_the_file_of_a_finished_job_keeps_its_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut pipeline) = pipeline_in(dir.path());
        let batch = config.einvoice_spool().join("b.csv");
        fs::copy("fixtures/valid/F0401_b2c_print.csv", &batch).unwrap();
        let o = pipeline.take(&batch).unwrap();
        assert_eq!(o.state, JobState::Done);
        // As if the process stopped before the move: the file is back in work/.
        let work = pipeline.dirs.work.join(o.final_path.file_name().unwrap());
        fs::rename(&o.final_path, &work).unwrap();

        let again = pipeline
            .quarantine(
                &work,
                "turnbridge hit an internal error on this file.".into(),
            )
            .unwrap();
        assert_eq!((again.state, again.queued), (JobState::Done, o.queued));
        assert!(!work.exists());
        assert!(again.final_path.exists(), "archived, not rejected");
        let job = pipeline.store.job(&o.job_id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Done);
        let events = store::events::payloads(
            pipeline.store.conn(),
            crate::events::EventName::UploadCompleted,
        )
        .unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["status"], "completed");
    }
}
