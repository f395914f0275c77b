//! Result files that do not parse yet. A writer that pauses longer than `settle_ms` leaves a
//! half-written file that looks complete; rejecting it then would lose the result (its message
//! would wait forever). So a result that does not parse is read again at later scans, and set
//! aside only once its size, modification time and content have stayed the same for
//! `turnkey.result_unchanged_ms`. While it waits and its size and modification time are
//! unchanged it is not read again.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tracing::info;

use crate::turnkey::feedback::{FeedbackError, Tracker};
use crate::turnkey::files;

/// One result file that did not parse, as it was last read.
#[derive(Debug, Clone)]
pub(super) struct Unparsed {
    stamp: (u64, Option<SystemTime>),
    md5: String,
    /// Since when it has been the same.
    since: Instant,
}

/// What to do with a result that did not parse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Read it again later: it may still be being written.
    Wait,
    /// It has stayed the same long enough: set it aside.
    SetAside,
}

/// The files waiting, by path.
pub(super) type Waiting = std::collections::HashMap<PathBuf, Unparsed>;

impl Tracker {
    /// Whether a result that did not parse before is unchanged since and not due yet, so there
    /// is no need to read it again.
    pub(super) fn unparsed_waits(&self, path: &Path) -> Result<bool, FeedbackError> {
        let Some(u) = self.unparsed.get(path) else {
            return Ok(false);
        };
        Ok(files::stamp(path)? == u.stamp && u.since.elapsed() < self.result_unchanged)
    }

    /// After `path` (whose bytes have MD5 `md5`) did not parse: wait for it, or set it aside
    /// when it has stayed the same for `result_unchanged`.
    pub(super) fn unparsed_verdict(
        &mut self,
        path: &Path,
        md5: &str,
        error: &str,
    ) -> Result<Verdict, FeedbackError> {
        let stamp = files::stamp(path)?;
        let wait = self.result_unchanged;
        if let Some(u) = self.unparsed.get(path) {
            if u.stamp == stamp && u.md5 == md5 {
                return Ok(if u.since.elapsed() >= wait {
                    self.unparsed.remove(path);
                    Verdict::SetAside
                } else {
                    Verdict::Wait
                });
            }
        } else if wait.is_zero() {
            return Ok(Verdict::SetAside);
        }
        if !self.unparsed.contains_key(path) {
            info!(
                file = %path.display(),
                "result file does not parse ({error}); read again until it has stayed the same for {} ms",
                wait.as_millis()
            );
        }
        self.unparsed.insert(
            path.to_path_buf(),
            Unparsed {
                stamp,
                md5: md5.to_string(),
                since: Instant::now(),
            },
        );
        Ok(Verdict::Wait)
    }

    /// When the earliest result waiting to be set aside is due, so a scan can be made then.
    pub fn next_due(&self) -> Option<Instant> {
        self.unparsed
            .values()
            .map(|u| u.since + self.result_unchanged)
            .min()
    }

    /// How many result files wait because they do not parse yet.
    pub fn unparsed_len(&self) -> usize {
        self.unparsed.len()
    }

    /// Forgets waiting files that are gone.
    pub(super) fn prune_unparsed(&mut self) {
        self.unparsed.retain(|p, _| p.exists());
    }
}
