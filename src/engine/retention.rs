//! Retention: purging the versions and verdicts that reruns superseded, a few hundred documents
//! per transaction so the executor and the API keep their turns, then giving the space back.
//! What a reader can show never changes: only rows no liveness rule can reach again go, and
//! never a person's version or the decision log (DESIGN §3: the one exception to append-only).

use crate::domain::ids::{format_ms, now_ms};
use crate::store::{self, Db, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Documents per purge transaction.
const CHUNK: i64 = 500;
/// Free pages given back per vacuum transaction (8 MiB at 4 KiB pages).
const VACUUM_PAGES: i64 = 2048;

/// What a purge did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PurgeReport {
    /// Restarted documents looked at.
    pub documents: u64,
    pub versions: u64,
    pub verdicts: u64,
    /// The database file and its WAL before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Whether the file itself can shrink (databases created before this version keep freed
    /// pages for later writes instead).
    pub file_shrinks: bool,
}

fn file_bytes(db: &Db) -> u64 {
    db.stored_bytes().unwrap_or(0)
}

/// Purges what reruns requested more than `older_than` ago superseded, in `org` or in every
/// organization. `stop` ends it between two chunks (what is left waits for the next purge).
pub fn purge(
    db: &Db,
    org: Option<&str>,
    older_than: Duration,
    stop: &AtomicBool,
) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport {
        bytes_before: file_bytes(db),
        bytes_after: file_bytes(db),
        ..Default::default()
    };
    let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    if age >= now_ms() {
        // Older than anything this clock has seen: nothing can be.
        return Ok(report);
    }
    let cutoff = format_ms(now_ms() - age);
    let mut after = 0;
    while !stop.load(Ordering::SeqCst) {
        let seqs = db.read(|c| store::retention::next_documents(c, org, after, CHUNK))?;
        let Some(last) = seqs.last() else { break };
        after = *last;
        report.documents += seqs.len() as u64;
        // Most passes find nothing new: a read says so without taking the writers' turn.
        if !db.read(|c| store::retention::has_superseded(c, &seqs, &cutoff))? {
            continue;
        }
        let p = db.write(false, |tx| {
            store::retention::purge_documents(tx, &seqs, &cutoff)
        })?;
        report.versions += p.versions;
        report.verdicts += p.verdicts;
    }
    report.file_shrinks = db.read(store::retention::shrinks)?;
    if report.file_shrinks && report.versions + report.verdicts > 0 {
        while !stop.load(Ordering::SeqCst) {
            let left = db.write(false, |tx| store::retention::vacuum_step(tx, VACUUM_PAGES))?;
            if left == 0 {
                break;
            }
        }
        // The WAL holds the moved pages until a checkpoint copies them, and the file shrinks
        // then. A passive pass in the writers' turn waits for no reader; the checkpointer
        // thread finishes the job when writes stop.
        let _turn = db.write_gate();
        if let Err(e) = db.conn().and_then(|c| store::checkpoint_passive(&c)) {
            tracing::info!("checkpoint after a purge deferred: {e}");
        }
    }
    report.bytes_after = file_bytes(db);
    Ok(report)
}

/// Copies the whole WAL into the database and truncates it, waiting for readers (up to the busy
/// timeout): what an operator's purge ends with, so the file's size is its real size. Returns
/// the file's bytes after.
pub fn truncate_wal(db: &Db) -> Result<u64, StoreError> {
    let c = db.conn()?;
    store::checkpoint_truncate(&c)?;
    Ok(file_bytes(db))
}

/// Applies every organization's retention setting.
pub fn apply_settings(
    db: &Db,
    stop: &AtomicBool,
) -> Result<Vec<(String, PurgeReport)>, StoreError> {
    let mut out = Vec::new();
    for (org, days) in db.read(store::retention::settings)? {
        let age = Duration::from_secs(days.max(0) as u64 * 86_400);
        // One organization's failure does not keep the others' settings from applying.
        match purge(db, Some(&org), age, stop) {
            Ok(r) => out.push((org, r)),
            Err(e) => tracing::warn!("retention for organization {org} failed: {e}"),
        }
    }
    Ok(out)
}
