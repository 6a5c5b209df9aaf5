//! Group commit for metric pushes. A large fleet pushes thousands of samples per second; one
//! transaction per push (two upserts per metric plus a contact update) makes the database's
//! commit rate the ceiling, and on SQLite every commit takes the single write lock. Instead each
//! push is handed to one writer task, which takes every push queued at that moment and stores
//! them in one transaction with multi-row statements ([`apm_store::telemetry::insert_samples`]).
//! The push is answered only after its batch committed, so "200" still means "stored"; under
//! light load a batch holds one push and nothing waits for company.

use std::sync::OnceLock;

use apm_store::Db;
use apm_store::telemetry::NewSample;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// One push: its samples and the contact time to record.
struct Job {
    proxy_id: String,
    samples: Vec<NewSample>,
    now: i64,
    done: oneshot::Sender<Result<(), Failure>>,
}

#[derive(Clone, Debug)]
enum Failure {
    Unavailable,
    Internal(String),
}

/// Most pushes written in one transaction.
const MAX_BATCH: usize = 2000;

/// Queue capacity: pushes beyond it wait in their handlers (back-pressure, no unbounded memory).
const QUEUE: usize = 20_000;

/// The writer; its task starts on first use, inside the server's runtime.
#[derive(Default)]
pub struct StatsWriter {
    tx: OnceLock<mpsc::Sender<Job>>,
}

impl StatsWriter {
    /// A writer that has not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn sender(&self, db: &Db) -> &mpsc::Sender<Job> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(db.clone(), rx));
            tx
        })
    }

    /// Stores the samples of one push and records the proxy's contact; returns once committed.
    pub async fn write(
        &self,
        db: &Db,
        proxy_id: &str,
        samples: Vec<NewSample>,
        now: i64,
    ) -> Result<(), ApiError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            proxy_id: proxy_id.to_string(),
            samples,
            now,
            done,
        };
        self.sender(db)
            .send(job)
            .await
            .map_err(|_| ApiError::unavailable("the metrics writer stopped; retry later"))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Failure::Unavailable)) => Err(ApiError::unavailable(
                "the database is not reachable; retry later",
            )),
            Ok(Err(Failure::Internal(e))) => Err(ApiError::internal(e)),
            Err(_) => Err(ApiError::unavailable(
                "the metrics writer stopped; retry later",
            )),
        }
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Each handler turns a failure into its own problem answer (and log line, with its
        // request id), as it did when it wrote alone.
        let outcome = write_batch(&db, &jobs).await.map_err(|e| match e {
            apm_store::StoreError::Db(
                apm_store::SqlxError::PoolTimedOut
                | apm_store::SqlxError::PoolClosed
                | apm_store::SqlxError::Io(_),
            ) => Failure::Unavailable,
            other => Failure::Internal(other.to_string()),
        });
        for job in jobs.drain(..) {
            let _ = job.done.send(outcome.clone());
        }
    }
}

async fn write_batch(db: &Db, jobs: &[Job]) -> Result<(), apm_store::StoreError> {
    let samples: Vec<NewSample> = jobs
        .iter()
        .flat_map(|j| j.samples.iter().cloned())
        .collect();
    let mut tx = db.begin_write().await?;
    apm_store::telemetry::insert_samples(&mut tx, &samples).await?;
    // One statement for every proxy of the batch, in id order like the contact flush: on
    // PostgreSQL, updating the same rows in different orders from two transactions deadlocks
    // (measured: `apm bench fleet` at 10k agents hit it with per-row updates in hash order).
    let mut ids: Vec<String> = jobs.iter().map(|j| j.proxy_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let earliest = jobs.iter().map(|j| j.now).min().unwrap_or(0);
    apm_store::proxies::record_contacts(&mut tx, &ids, earliest).await?;
    tx.commit().await?;
    Ok(())
}

/// Contact times of syncs that reported nothing new, written together every
/// [`CONTACT_FLUSH`]: a fleet's syncs would otherwise be one write each.
#[derive(Default)]
pub struct ContactBuffer {
    pending: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>,
    started: OnceLock<()>,
}

/// How often buffered contact times are written.
pub const CONTACT_FLUSH: std::time::Duration = std::time::Duration::from_millis(250);

impl ContactBuffer {
    /// An empty buffer; its flush task starts on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `proxy_id` was seen at `now`; stored within [`CONTACT_FLUSH`] (a batch is
    /// stored with its earliest time, so no proxy is ever shown as seen later than it was).
    pub fn touch(&self, db: &Db, proxy_id: &str, now: i64) {
        self.started.get_or_init(|| {
            tokio::spawn(flush_contacts(db.clone(), self.pending.clone()));
        });
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((proxy_id.to_string(), now));
    }
}

async fn flush_contacts(db: Db, pending: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>) {
    loop {
        tokio::time::sleep(CONTACT_FLUSH).await;
        let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        let Some(earliest) = batch.iter().map(|(_, t)| *t).min() else {
            continue;
        };
        let mut ids: Vec<String> = batch.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        let result = async {
            let mut conn = db.write_conn().await?;
            apm_store::proxies::record_contacts(&mut conn, &ids, earliest).await
        }
        .await;
        if let Err(e) = result {
            // Last-seen times are advisory; the next sync of each agent writes again.
            tracing::warn!(error = %e, proxies = ids.len(), "recording contact times failed");
        }
    }
}
