//! Group commit for the agents' writes: metric pushes, apply reports (ACKs) and contact times.
//! A large fleet pushes thousands of samples per second, and after an approval every agent acks
//! within a second or two; one transaction per request makes the database's commit rate the
//! ceiling, and on SQLite every commit takes the single write lock. Instead each request is
//! handed to one writer task, which takes every job queued at that moment and stores them in one
//! transaction with multi-row statements ([`apm_store::telemetry::insert_pushes`],
//! [`apm_store::proxies::record_acks`], [`apm_store::proxies::record_contacts`]). A request is
//! answered only after its batch committed, so "200" still means "stored"; under light load a
//! batch holds one job and nothing waits for company. One task writes all of them, so these
//! writes never lock proxy rows against each other.

use std::sync::OnceLock;

use apm_store::Db;
use apm_store::proxies::{Ack, Report};
use apm_store::telemetry::NewPush;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// What one request asks the writer to store.
enum Work {
    /// A metric push (its contact time goes through [`ContactBuffer`]).
    Stats(NewPush),
    /// An apply report.
    Ack(Ack),
    /// A sync that reported something new (first contact, another ATS version, OS or
    /// architecture).
    Report(Report),
    /// Contact times of syncs (see [`ContactBuffer`]): proxy ids and the earliest time.
    Contacts { ids: Vec<String>, earliest: i64 },
}

struct Job {
    work: Work,
    done: oneshot::Sender<Result<(), Failure>>,
}

#[derive(Clone, Debug)]
enum Failure {
    Unavailable,
    Internal(String),
}

/// Most urgent jobs written in one transaction (plus up to [`MAX_BULK`] pushes).
const MAX_BATCH: usize = 2000;

/// Queue capacity: jobs beyond it wait in their handlers (back-pressure, no unbounded memory).
const QUEUE: usize = 20_000;

/// Times a batch is retried when PostgreSQL picks it as a deadlock or serialization victim
/// (an admin transaction touching many proxy rows in another order, e.g. an assignment).
const RETRIES: usize = 3;

/// The writer; its task starts on first use, inside the server's runtime.
#[derive(Default)]
pub struct StatsWriter {
    tx: OnceLock<Lanes>,
}

/// Two queues into the one writer: apply reports and sync reports are small and something
/// waits on them (an ACK after an approval, a first sync); metric pushes are bulk. When the
/// database falls behind the fleet's metrics, the urgent lane still goes first.
struct Lanes {
    urgent: mpsc::Sender<Job>,
    bulk: mpsc::Sender<Job>,
}

impl StatsWriter {
    /// A writer that has not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lanes(&self, db: &Db) -> &Lanes {
        self.tx.get_or_init(|| {
            let (urgent, urgent_rx) = mpsc::channel(QUEUE);
            let (bulk, bulk_rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(db.clone(), urgent_rx, bulk_rx));
            Lanes { urgent, bulk }
        })
    }

    async fn submit(&self, db: &Db, work: Work) -> Result<(), ApiError> {
        let (done, wait) = oneshot::channel();
        let lanes = self.lanes(db);
        let lane = match work {
            Work::Ack(_) | Work::Report(_) => &lanes.urgent,
            Work::Stats(_) | Work::Contacts { .. } => &lanes.bulk,
        };
        lane.send(Job { work, done })
            .await
            .map_err(|_| ApiError::unavailable("the database writer stopped; retry later"))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Failure::Unavailable)) => Err(ApiError::unavailable(
                "the database is not reachable; retry later",
            )),
            Ok(Err(Failure::Internal(e))) => Err(ApiError::internal(e)),
            Err(_) => Err(ApiError::unavailable(
                "the database writer stopped; retry later",
            )),
        }
    }

    /// Stores one push (pending roll-up); returns once committed.
    pub async fn write(&self, db: &Db, push: NewPush) -> Result<(), ApiError> {
        self.submit(db, Work::Stats(push)).await
    }

    /// Records an apply report; returns once committed. After an approval every agent of the
    /// config acks within a second or two: one transaction each would queue 100,000 commits
    /// behind SQLite's single writer.
    pub async fn ack(&self, db: &Db, ack: Ack) -> Result<(), ApiError> {
        self.submit(db, Work::Ack(ack)).await
    }

    /// Records what a sync reported; returns once committed. A fleet's first syncs (100,000
    /// at once when the control plane starts) would otherwise each take the write lock.
    pub async fn report(&self, db: &Db, report: Report) -> Result<(), ApiError> {
        self.submit(db, Work::Report(report)).await
    }

    /// Records that `ids` (sorted, unique) were seen at `earliest`; returns once committed.
    pub async fn contacts(&self, db: &Db, ids: Vec<String>, earliest: i64) -> Result<(), ApiError> {
        self.submit(db, Work::Contacts { ids, earliest }).await
    }
}

/// A batch smaller than this waits [`LINGER`] for company before it is written.
const LINGER_BELOW: usize = 200;

/// How long a small batch waits. A fleet's metric pushes arrive spread over the interval (100,000
/// agents every 30 s: one every 0.3 ms), so without it nearly every push is its own transaction,
/// and each transaction is a handful of hand-offs to SQLite's worker thread and a page-cache
/// sweep at commit (perf: `pcache1TruncateUnsafe` under `pager_end_transaction`). The cost is
/// this much latency on a push or ACK answer; agents do not wait for either.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Most metric pushes in one batch: bounds how long an urgent job waits behind a batch.
const MAX_BULK: usize = 500;

fn top_up(jobs: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>, limit: usize) {
    while jobs.len() < limit {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

async fn run(db: Db, mut urgent: mpsc::Receiver<Job>, mut bulk: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            job = urgent.recv() => job,
            job = bulk.recv() => job,
        };
        let Some(first) = first else { return };
        jobs.push(first);
        if jobs.len() < LINGER_BELOW {
            tokio::time::sleep(LINGER).await;
        }
        top_up(&mut jobs, &mut urgent, MAX_BATCH);
        let bulk_jobs = jobs
            .iter()
            .filter(|j| matches!(j.work, Work::Stats(_) | Work::Contacts { .. }))
            .count();
        // Every batch takes up to MAX_BULK pushes whatever the urgent lane holds: an ACK storm
        // after an approval (100,000 at fleet scale) must not starve metric pushes until they
        // time out.
        let limit = jobs.len() + MAX_BULK.saturating_sub(bulk_jobs);
        top_up(&mut jobs, &mut bulk, limit);
        // Each handler turns a failure into its own problem answer (and log line, with its
        // request id), as it did when it wrote alone.
        let mut attempt = 0;
        let started = std::time::Instant::now();
        let outcome = loop {
            match write_batch(&db, &jobs).await {
                Err(e) if attempt < RETRIES && retryable(&e) => attempt += 1,
                other => break other,
            }
        };
        let took = started.elapsed();
        let waited_ms = outcome.as_ref().map_or(0, |w| w.as_millis() as u64);
        metrics::histogram!("apm_ingest_batch_seconds").record(took.as_secs_f64());
        metrics::counter!("apm_ingest_jobs_total").increment(jobs.len() as u64);
        if took > std::time::Duration::from_secs(5) {
            tracing::warn!(
                jobs = jobs.len(),
                took_ms = took.as_millis() as u64,
                waited_ms,
                "a batch of agent writes took long (database saturated?)"
            );
        } else {
            tracing::debug!(
                jobs = jobs.len(),
                pushes = jobs
                    .iter()
                    .filter(|j| matches!(j.work, Work::Stats(_)))
                    .count(),
                took_ms = took.as_millis() as u64,
                waited_ms,
                "agent writes stored"
            );
        }
        let outcome = outcome.map(|_| ()).map_err(|e| match e {
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

/// PostgreSQL's deadlock (40P01) and serialization failure (40001): the batch did nothing and
/// can run again.
fn retryable(e: &apm_store::StoreError) -> bool {
    match e {
        apm_store::StoreError::Db(apm_store::SqlxError::Database(d)) => {
            matches!(d.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// What one transaction writes for a batch of jobs.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    pushes: Vec<NewPush>,
    acks: Vec<Ack>,
    reports: Vec<Report>,
    /// Proxies whose contact time moves (sorted, unique), and the earliest time among them.
    contacts: Vec<String>,
    earliest: Option<i64>,
}

fn plan(jobs: &[Job]) -> Plan {
    let mut p = Plan::default();
    let note = |id: &str, t: i64, p: &mut Plan| {
        p.contacts.push(id.to_string());
        p.earliest = Some(p.earliest.map_or(t, |e: i64| e.min(t)));
    };
    for job in jobs {
        match &job.work {
            Work::Stats(push) => p.pushes.push(push.clone()),
            // Acks and reports write their own contact time.
            Work::Ack(a) => p.acks.push(a.clone()),
            Work::Report(r) => p.reports.push(r.clone()),
            Work::Contacts { ids, earliest } => {
                for id in ids {
                    note(id, *earliest, &mut p);
                }
            }
        }
    }
    // One statement for every proxy of the batch, in id order: on PostgreSQL, updating the
    // same rows in different orders from two transactions deadlocks (measured: `apm bench
    // fleet` at 10k agents hit it with per-row updates in hash order).
    p.contacts.sort_unstable();
    p.contacts.dedup();
    p
}

/// Writes a batch in one transaction; returns how long it waited for the (SQLite) write lock,
/// which the roll-up and admin writes also take.
async fn write_batch(db: &Db, jobs: &[Job]) -> Result<std::time::Duration, apm_store::StoreError> {
    let p = plan(jobs);
    let asked = std::time::Instant::now();
    let mut tx = db.begin_write().await?;
    let waited = asked.elapsed();
    if !p.pushes.is_empty() {
        apm_store::telemetry::insert_pushes(&mut tx, &p.pushes).await?;
    }
    if !p.reports.is_empty() {
        apm_store::proxies::record_reports(&mut tx, &p.reports).await?;
    }
    if !p.acks.is_empty() {
        apm_store::proxies::record_acks(&mut tx, &p.acks).await?;
    }
    if let Some(earliest) = p.earliest {
        apm_store::proxies::record_contacts(&mut tx, &p.contacts, earliest).await?;
    }
    tx.commit().await?;
    Ok(waited)
}

/// Contact times of syncs and metric pushes, written together every [`CONTACT_FLUSH`]: a
/// fleet's syncs and pushes would otherwise be one write each. A proxy's contact is written at
/// most once per [`CONTACT_RESOLUTION_MS`]: an agent long-polls and pushes every 30 s, and at
/// fleet scale rewriting its row for each was as costly as storing the pushes themselves. What
/// this replica saw more recently is kept in memory and shown by its views ([`Self::latest`]).
#[derive(Default)]
pub struct ContactBuffer {
    pending: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>,
    seen: std::sync::Mutex<ContactLog>,
    started: OnceLock<()>,
}

/// How often buffered contact times are written.
pub const CONTACT_FLUSH: std::time::Duration = std::time::Duration::from_millis(250);

/// A proxy's stored contact time is rewritten only when it is at least this much older than
/// the new contact (the online window is 90 s by default).
pub const CONTACT_RESOLUTION_MS: i64 = 15_000;

/// Proxies remembered before those not heard from within the resolution are forgotten.
const CONTACT_LOG_CAP: usize = 1 << 20;

/// Per proxy: the latest contact this replica saw and the last one it queued for writing.
#[derive(Default)]
struct ContactLog {
    proxies: std::collections::HashMap<String, (i64, i64)>,
}

impl ContactLog {
    /// Notes a contact; true when it must be written.
    fn note(&mut self, proxy_id: &str, now: i64) -> bool {
        if let Some((latest, written)) = self.proxies.get_mut(proxy_id) {
            *latest = (*latest).max(now);
            // A clock that went back is written too: the stored time must not stay ahead.
            if now - *written >= CONTACT_RESOLUTION_MS || now < *written {
                *written = now;
                return true;
            }
            return false;
        }
        if self.proxies.len() >= CONTACT_LOG_CAP {
            self.proxies
                .retain(|_, (latest, _)| now - *latest < CONTACT_RESOLUTION_MS);
        }
        self.proxies.insert(proxy_id.to_string(), (now, now));
        true
    }

    fn latest(&self, proxy_id: &str) -> Option<i64> {
        self.proxies.get(proxy_id).map(|(latest, _)| *latest)
    }
}

impl ContactBuffer {
    /// An empty buffer; its flush task starts on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `proxy_id` was seen at `now`; stored within [`CONTACT_FLUSH`] unless a contact
    /// less than [`CONTACT_RESOLUTION_MS`] older was (a batch is stored with its earliest time,
    /// so no proxy is ever shown as seen later than it was).
    pub fn touch(&self, writer: &std::sync::Arc<StatsWriter>, db: &Db, proxy_id: &str, now: i64) {
        self.started.get_or_init(|| {
            tokio::spawn(flush_contacts(
                writer.clone(),
                db.clone(),
                self.pending.clone(),
            ));
        });
        let write = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(proxy_id, now);
        if write {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((proxy_id.to_string(), now));
        }
    }

    /// The latest contact of `proxy_id` this replica saw (up to [`CONTACT_RESOLUTION_MS`] newer
    /// than the stored one), if it saw one since it started.
    pub fn latest(&self, proxy_id: &str) -> Option<i64> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latest(proxy_id)
    }

    /// The later of a stored contact time and what this replica saw.
    pub fn last_seen(&self, proxy_id: &str, stored: Option<i64>) -> Option<i64> {
        match (stored, self.latest(proxy_id)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

async fn flush_contacts(
    writer: std::sync::Arc<StatsWriter>,
    db: Db,
    pending: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>,
) {
    loop {
        tokio::time::sleep(CONTACT_FLUSH).await;
        let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
        let Some(earliest) = batch.iter().map(|(_, t)| *t).min() else {
            continue;
        };
        let mut ids: Vec<String> = batch.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        let n = ids.len();
        // Through the writer, so contact times share its transactions and never lock proxy
        // rows against it.
        if let Err(e) = writer.contacts(&db, ids, earliest).await {
            // Last-seen times are advisory; the next sync of each agent writes again.
            tracing::warn!(error = ?e, proxies = n, "recording contact times failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(work: Work) -> Job {
        Job {
            work,
            done: oneshot::channel().0,
        }
    }

    fn ack(id: &str, hash: &str, at: i64) -> Ack {
        Ack {
            proxy_id: id.into(),
            applied_hash: Some(hash.into()),
            error: None,
            at,
        }
    }

    #[test]
    fn a_batch_keeps_acks_in_arrival_order_and_merges_contacts() {
        let jobs = vec![
            job(Work::Ack(ack("b", "h1", 10))),
            job(Work::Stats(NewPush {
                proxy_id: "c".into(),
                ts: 5,
                metrics: vec![("m".into(), 1.0)],
            })),
            job(Work::Contacts {
                ids: vec!["a".into(), "c".into()],
                earliest: 3,
            }),
            job(Work::Ack(ack("b", "h2", 11))),
        ];
        let p = plan(&jobs);
        assert_eq!(p.acks, vec![ack("b", "h1", 10), ack("b", "h2", 11)]);
        assert_eq!(p.contacts, vec!["a".to_string(), "c".to_string()]);
        assert_eq!(
            p.earliest,
            Some(3),
            "never shows a proxy as seen later than it was"
        );
        assert_eq!(p.pushes.len(), 1);
    }

    #[test]
    fn a_contact_is_written_once_per_resolution_and_the_latest_is_kept() {
        let mut log = ContactLog::default();
        assert!(log.note("p", 1_000), "the first contact is written");
        assert!(!log.note("p", 1_000 + CONTACT_RESOLUTION_MS - 1));
        assert_eq!(
            log.latest("p"),
            Some(1_000 + CONTACT_RESOLUTION_MS - 1),
            "what was not written is still seen"
        );
        assert!(log.note("p", 1_000 + CONTACT_RESOLUTION_MS));
        assert!(!log.note("p", 2_000 + CONTACT_RESOLUTION_MS));
        assert!(log.note("p", 500), "a clock that went back is written");
        assert!(log.note("q", 600), "proxies are independent");
        assert_eq!(log.latest("p"), Some(2_000 + CONTACT_RESOLUTION_MS));
        assert_eq!(log.latest("r"), None);
    }

    #[test]
    fn acks_alone_move_no_contact_time() {
        let p = plan(&[job(Work::Ack(ack("a", "h", 1)))]);
        assert!(p.contacts.is_empty() && p.earliest.is_none());
    }
}
