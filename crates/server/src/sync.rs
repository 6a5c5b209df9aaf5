//! The agent sync protocol: long-poll for the desired bundle, acks, metric samples and captured
//! log lines.
//!
//! Waking: every change that can alter what an agent should run (approval, assignment, log
//! capture) calls [`SyncHub::notify`] after its transaction commits, and bumps a generation
//! counter in the database inside that transaction. Waiting requests subscribe to a
//! `tokio::sync::watch` channel, so a local change wakes them at once; with several replicas on
//! PostgreSQL each replica also polls the generation counter every `replica_poll_ms` (1 s by
//! default) and notifies its own waiters when it moved — a change made on another replica
//! reaches agents within about a second, with one tiny query per replica per interval and no
//! extra infrastructure. A woken request re-reads its proxy and answers only if its answer
//! changed; otherwise it keeps waiting until its deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use apm_store::configs::{ConfigRow, VersionRow};
use apm_store::proxies::ProxyRow;
use apm_store::{AnyConnection, Db, now_ms};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::util::{check_name, fmt_ms, parse_time};
use crate::auth::Agent;
use crate::bundle::{self, hash_for, major_of};
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::state::AppState;

/// Wakes long-polling agents.
pub struct SyncHub {
    tx: watch::Sender<Wake>,
    waiting: AtomicI64,
    desired: DesiredCache,
    /// Database generations this replica produced (see [`replica_poller`]).
    local: std::sync::Mutex<LocalGenerations>,
    /// When waiters were last woken (see [`SyncHub::last_wake`]).
    last_wake: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Generation counters carried by the hub's channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    /// Bumped by every notification: cached config state from before it is stale.
    pub any: u64,
    /// Bumped when proxy rows may have changed (assignment, capture, another replica): waiters
    /// re-read their proxy. Approvals only change configs, so waiters skip that read.
    pub proxies: u64,
}

impl Default for SyncHub {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncHub {
    /// New hub.
    pub fn new() -> Self {
        SyncHub {
            tx: watch::channel(Wake::default()).0,
            waiting: AtomicI64::new(0),
            desired: DesiredCache::default(),
            local: std::sync::Mutex::new(LocalGenerations::default()),
            last_wake: std::sync::Mutex::new(None),
        }
    }

    fn woke_now(&self) {
        *self.last_wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// When waiting agents were last woken (a change to deliver), if ever: background work
    /// that competes for the CPU and the database (the metric roll-up) holds back for a while
    /// after it, so a new version reaches a large fleet first.
    pub fn last_wake(&self) -> Option<std::time::Instant> {
        *self.last_wake.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something changed: every waiting request re-evaluates from the database.
    pub fn notify(&self) {
        self.woke_now();
        self.tx.send_modify(|w| {
            w.any = w.any.wrapping_add(1);
            w.proxies = w.proxies.wrapping_add(1);
        });
    }

    /// Only configs changed (an approval): waiting requests re-resolve their config's desired
    /// version — one database read per config, shared by all its waiters — and keep their
    /// proxy row.
    pub fn notify_configs(&self) {
        self.woke_now();
        self.tx.send_modify(|w| w.any = w.any.wrapping_add(1));
    }

    /// A transaction of this replica bumped the database generation to `generation` and has
    /// not committed yet. Call [`PendingGeneration::committed`] after the commit; dropping the
    /// guard without it (the transaction rolled back, so the value may be reused by someone
    /// else) forgets it. Until then the replica poller does not decide about that value: a
    /// handler's task can resume long after its commit when 100,000 requests are runnable, and
    /// a poll in between used to count the approval as another replica's and wake every waiter
    /// again.
    pub fn pending(&self, generation: i64) -> PendingGeneration<'_> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .insert(generation);
        PendingGeneration {
            hub: self,
            generation,
            done: false,
        }
    }

    /// Of the database generations after `from` up to `to`: whether one was made by another
    /// replica, and up to which the answer is final (values of this replica's transactions
    /// still in flight are decided at a later poll). Forgets this replica's values up to it.
    pub fn foreign_change(&self, from: i64, to: i64) -> (bool, i64) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if to < from {
            return (true, to);
        }
        let mut foreign = false;
        let mut decided = to;
        for g in from + 1..=to {
            if local.pending.contains(&g) {
                decided = decided.min(g - 1);
            } else if !local.committed.contains(&g) {
                foreign = true;
            }
        }
        local.committed.retain(|g| *g > decided);
        (foreign, decided)
    }

    /// The current generations.
    pub fn current(&self) -> Wake {
        *self.tx.borrow()
    }

    /// A receiver that sees later notifications.
    pub fn subscribe(&self) -> watch::Receiver<Wake> {
        self.tx.subscribe()
    }

    /// Requests currently held.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Generations this replica bumped: in flight, and committed but not yet seen by the poller.
#[derive(Default)]
struct LocalGenerations {
    pending: std::collections::BTreeSet<i64>,
    committed: std::collections::BTreeSet<i64>,
}

/// A generation bumped by a transaction of this replica (see [`SyncHub::pending`]).
pub struct PendingGeneration<'a> {
    hub: &'a SyncHub,
    generation: i64,
    done: bool,
}

impl PendingGeneration<'_> {
    /// The transaction committed: the poller will not notify for this value.
    pub fn committed(mut self) {
        let mut local = self.hub.local.lock().unwrap_or_else(|p| p.into_inner());
        local.pending.remove(&self.generation);
        local.committed.insert(self.generation);
        self.done = true;
    }
}

impl Drop for PendingGeneration<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.hub
                .local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending
                .remove(&self.generation);
        }
    }
}

/// Polls the database generation and notifies local waiters when another replica changed it.
/// Generations this replica committed itself were notified when they committed; notifying again
/// would make every waiter of a large fleet re-read its proxy a second after each approval.
/// `start` is the generation read before the server began serving.
pub async fn replica_poller(db: Db, hub: std::sync::Arc<SyncHub>, every: Duration, start: i64) {
    let mut last: Option<i64> = Some(start);
    loop {
        tokio::time::sleep(every).await;
        let current = match db.acquire().await {
            Ok(mut conn) => apm_store::telemetry::generation(&mut conn).await.ok(),
            Err(_) => None,
        };
        if let Some(g) = current {
            match last {
                Some(l) if l != g => {
                    let (foreign, decided) = hub.foreign_change(l, g);
                    if foreign {
                        hub.notify();
                    }
                    last = Some(decided);
                }
                _ => last = Some(g),
            }
        }
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync))
        .routes(routes!(ack))
        .routes(routes!(stats))
        .routes(routes!(logs))
}

/// What a proxy should run, or why it has nothing.
pub enum Desired {
    /// The active version of the assigned config.
    Version(Box<(ConfigRow, VersionRow)>),
    /// Nothing to run, and why.
    Nothing(String),
}

/// Resolves a proxy's desired version.
pub async fn desired(conn: &mut AnyConnection, proxy: &ProxyRow) -> ApiResult<Desired> {
    let Some(config_id) = &proxy.config_id else {
        return Ok(Desired::Nothing(format!(
            "no config assigned to proxy {}; an admin assigns it with POST /api/v1/configs/{{id}}/proxies",
            proxy.hostname
        )));
    };
    let Some(config) = apm_store::configs::get_config(&mut *conn, config_id).await? else {
        return Ok(Desired::Nothing(format!(
            "the config of proxy {} no longer exists",
            proxy.hostname
        )));
    };
    let Some(active) = config.active_version else {
        return Ok(Desired::Nothing(format!(
            "config {:?} assigned to proxy {} has no approved version yet",
            config.name, proxy.hostname
        )));
    };
    match apm_store::configs::get_version(&mut *conn, &config.id, active).await? {
        Some(v) => Ok(Desired::Version(Box::new((config, v)))),
        None => Err(ApiError::internal(format!(
            "config {} points at missing version {active}",
            config.id
        ))),
    }
}

/// A config and its active version as read at one hub generation.
struct ConfigState {
    config: Option<ConfigRow>,
    active: Option<VersionRow>,
}

type StateCell = std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<ConfigState>>>;

/// The desired state of each config, read once per hub generation and shared by every request
/// of that config: when an approval wakes 100,000 waiting agents, the database answers one
/// query, not 100,000. An entry is used only at the generation it was read at (every
/// notification bumps it) and for at most a second (renames do not notify).
#[derive(Default)]
struct DesiredCache {
    entries:
        std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant, StateCell)>>,
}

const DESIRED_TTL: Duration = Duration::from_secs(1);

impl DesiredCache {
    async fn get(
        &self,
        db: &Db,
        config_id: &str,
        generation: u64,
    ) -> ApiResult<std::sync::Arc<ConfigState>> {
        let cell = {
            let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 10_000 {
                map.retain(|_, (_, at, _)| at.elapsed() < DESIRED_TTL);
            }
            match map.get(config_id) {
                Some((g, at, cell)) if *g == generation && at.elapsed() < DESIRED_TTL => {
                    cell.clone()
                }
                _ => {
                    let cell = StateCell::default();
                    map.insert(
                        config_id.to_string(),
                        (generation, std::time::Instant::now(), cell.clone()),
                    );
                    cell
                }
            }
        };
        let state = cell
            .get_or_try_init(|| async {
                let mut conn = db.acquire().await?;
                let config = apm_store::configs::get_config(&mut conn, config_id).await?;
                let active = match config.as_ref().and_then(|c| c.active_version) {
                    Some(n) => Some(
                        apm_store::configs::get_version(&mut conn, config_id, n)
                            .await?
                            .ok_or_else(|| {
                                ApiError::internal(format!(
                                    "config {config_id} points at missing version {n}"
                                ))
                            })?,
                    ),
                    None => None,
                };
                Ok::<_, ApiError>(std::sync::Arc::new(ConfigState { config, active }))
            })
            .await?;
        Ok(state.clone())
    }
}

/// What a proxy should run, as shared by every request of its config at one generation.
enum DesiredShared {
    /// The config and its active version (both present).
    Version(std::sync::Arc<ConfigState>),
    /// Nothing to run, and why.
    Nothing(String),
}

/// [`desired`] through the hub's per-generation cache; the config and version rows are shared,
/// not copied per waiting request.
async fn desired_cached(
    state: &AppState,
    proxy: &ProxyRow,
    generation: u64,
) -> ApiResult<DesiredShared> {
    let Some(config_id) = &proxy.config_id else {
        return Ok(DesiredShared::Nothing(format!(
            "no config assigned to proxy {}; an admin assigns it with POST /api/v1/configs/{{id}}/proxies",
            proxy.hostname
        )));
    };
    let cs = state
        .hub
        .desired
        .get(&state.db, config_id, generation)
        .await?;
    let Some(config) = &cs.config else {
        return Ok(DesiredShared::Nothing(format!(
            "the config of proxy {} no longer exists",
            proxy.hostname
        )));
    };
    if cs.active.is_none() {
        return Ok(DesiredShared::Nothing(format!(
            "config {:?} assigned to proxy {} has no approved version yet",
            config.name, proxy.hostname
        )));
    }
    Ok(DesiredShared::Version(cs))
}

/// The desired hash of a proxy (for its reported ATS major), if it has one.
pub async fn desired_hash(conn: &mut AnyConnection, proxy: &ProxyRow) -> ApiResult<Option<String>> {
    Ok(match desired(conn, proxy).await? {
        Desired::Version(cv) => {
            Some(hash_for(&cv.1, major_of(proxy.ats_version.as_deref())).to_string())
        }
        Desired::Nothing(_) => None,
    })
}

/// Sync parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    /// The agent's hostname (must match its credential).
    pub hostname: String,
    /// Hash of the bundle the agent runs (empty or absent: none).
    pub hash: Option<String>,
    /// Seconds to hold the request when nothing changed (0 = plain poll; capped by the server).
    pub wait: Option<u64>,
    /// ATS version, e.g. 9.2.5 or 10.1.0 (picks the rendering).
    pub ats_version: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU architecture.
    pub arch: Option<String>,
}

/// An open log-capture window.
#[derive(Debug, Serialize, ToSchema, PartialEq, Clone)]
pub struct CaptureWindow {
    /// End of the window (RFC 3339).
    pub until: String,
    /// End of the window, epoch milliseconds.
    pub until_ms: i64,
}

/// Sync answer: `status` is `bundle` (files follow), `unchanged` or `no_config`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncResponse {
    /// bundle | unchanged | no_config.
    pub status: String,
    /// True when the agent's hash is current.
    pub unchanged: bool,
    /// Desired hash.
    pub hash: Option<String>,
    /// Config version number.
    pub version: Option<i64>,
    /// Config id.
    pub config_id: Option<String>,
    /// Config name.
    pub config_name: Option<String>,
    /// ATS major the files are rendered for.
    pub ats_major: Option<String>,
    /// File name → content (only with status `bundle`).
    pub files: Option<BTreeMap<String, String>>,
    /// Open log-capture window, if any.
    pub log_capture: Option<CaptureWindow>,
    /// Why there is no config (status `no_config`).
    pub detail: Option<String>,
    /// Server clock (RFC 3339).
    pub server_time: String,
}

fn capture_of(p: &ProxyRow, now: i64) -> Option<CaptureWindow> {
    p.capture_until.filter(|u| *u > now).map(|u| CaptureWindow {
        until: fmt_ms(u),
        until_ms: u,
    })
}

fn check_hostname(agent: &Agent, hostname: &str) -> ApiResult<()> {
    if agent.proxy.hostname != hostname {
        return Err(ApiError::forbidden(format!(
            "hostname {hostname:?} does not match this credential, which belongs to {:?}",
            agent.proxy.hostname
        )));
    }
    Ok(())
}

fn check_hash(field: &str, h: &str) -> ApiResult<()> {
    if h.len() != 64
        || !h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::invalid(format!(
            "{field}: {h:?} is not a 64-character lowercase hex content hash"
        )));
    }
    Ok(())
}

/// Long-poll sync. Answers at once with the bundle when the desired hash differs from `hash`;
/// otherwise holds up to `wait` seconds (capped, minus jitter) and answers `unchanged`.
#[utoipa::path(get, path = "/api/v1/sync", tag = "sync", params(SyncQuery), security(("agent" = [])),
    responses((status = 200, body = SyncResponse), (status = 401, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem)))]
async fn sync(
    State(state): State<AppState>,
    agent: Agent,
    Query(q): Query<SyncQuery>,
) -> ApiResult<Response> {
    check_hostname(&agent, &q.hostname)?;
    for (field, value) in [
        ("ats_version", &q.ats_version),
        ("os", &q.os),
        ("arch", &q.arch),
    ] {
        if let Some(v) = value {
            check_name(field, v, 64, "._-+~")?;
        }
    }
    if let Some(v) = &q.ats_version
        && apm_policy::AtsMajor::from_version(v).is_none()
    {
        return Err(ApiError::invalid(format!(
            "ats_version: {v:?} is not a supported Apache Traffic Server version (9.x or 10.x)"
        )));
    }
    let have = q.hash.clone().filter(|h| !h.is_empty());
    let now = now_ms();
    let reported_changed = [
        (&q.ats_version, &agent.proxy.ats_version),
        (&q.os, &agent.proxy.os),
        (&q.arch, &agent.proxy.arch),
    ]
    .iter()
    .any(|(new, old)| new.is_some() && new != old);
    if reported_changed || agent.proxy.last_seen_at.is_none() {
        state
            .stats_writer
            .report(
                &state.db,
                apm_store::proxies::Report {
                    proxy_id: agent.proxy.id.clone(),
                    ats_version: q.ats_version.clone(),
                    os: q.os.clone(),
                    arch: q.arch.clone(),
                    at: now,
                },
            )
            .await?;
        // The cached row must show what was just written, or every later sync of this agent
        // would look like a change and write again.
        state
            .credentials
            .update(&agent.credential, |p| apply_reported(p, &q, now));
    } else {
        // Only the time moves: written with others' within a quarter second (one statement
        // for many agents), not one write per sync.
        state
            .contacts
            .touch(&state.stats_writer, &state.db, &agent.proxy.id, now);
    }
    let wait_ms = q.wait.unwrap_or(0).min(state.settings.sync_max_wait_secs) as i64 * 1000;
    let jitter = wait_ms * state.settings.sync_jitter_percent as i64 / 100;
    let wait_ms = wait_ms
        - if jitter > 0 {
            rand::random_range(0..=jitter)
        } else {
            0
        };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms.max(0) as u64);
    // Subscribe before the first read so a change between the read and the wait is not lost.
    let mut rx = state.hub.subscribe();
    let mut seen = *rx.borrow_and_update();
    let initial_capture = capture_of(&agent.proxy, now);
    state.hub.waiting.fetch_add(1, Ordering::Relaxed);
    let _guard = WaitGuard(&state.hub);
    // The credential lookup read this proxy moments ago; unless a proxy change was notified
    // since, that row (with what this request reported) is current.
    let mut current: Option<ProxyRow> = (seen.proxies == agent.read_at.proxies).then(|| {
        let mut p = (*agent.proxy).clone();
        apply_reported(&mut p, &q, now);
        p
    });
    loop {
        let now = now_ms();
        let proxy = match current.take() {
            Some(p) => p,
            None => {
                let mut conn = state.db.acquire().await?;
                apm_store::proxies::get_proxy(&mut conn, &agent.proxy.id)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("this proxy was deleted"))?
            }
        };
        let capture = capture_of(&proxy, now);
        let desired = desired_cached(&state, &proxy, seen.any).await?;
        let expired = tokio::time::Instant::now() >= deadline;
        match desired {
            DesiredShared::Version(cs) => {
                let (Some(config), Some(v)) = (&cs.config, &cs.active) else {
                    return Err(ApiError::internal("desired state without a version"));
                };
                let major = major_of(proxy.ats_version.as_deref());
                let want = hash_for(v, major);
                if have.as_deref() != Some(want) {
                    let b = bundle::rendered(&state, v, major)?;
                    return bundle_answer(&b, v.version, config, capture.as_ref(), now);
                }
                if expired || capture != initial_capture {
                    return Ok(Json(SyncResponse {
                        status: "unchanged".into(),
                        unchanged: true,
                        hash: Some(want.to_string()),
                        version: Some(v.version),
                        config_id: Some(config.id.clone()),
                        config_name: Some(config.name.clone()),
                        ats_major: Some(major.to_string()),
                        files: None,
                        log_capture: capture,
                        detail: None,
                        server_time: fmt_ms(now),
                    })
                    .into_response());
                }
            }
            DesiredShared::Nothing(reason) => {
                if expired || capture != initial_capture {
                    return Ok(Json(SyncResponse {
                        status: "no_config".into(),
                        unchanged: false,
                        hash: None,
                        version: None,
                        config_id: None,
                        config_name: None,
                        ats_major: None,
                        files: None,
                        log_capture: capture,
                        detail: Some(reason),
                        server_time: fmt_ms(now),
                    })
                    .into_response());
                }
            }
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(deadline).await;
                }
                let woke = *rx.borrow_and_update();
                if woke.proxies == seen.proxies {
                    // Only configs changed: this proxy's row is as read.
                    current = Some(proxy);
                }
                seen = woke;
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// What a sync reported, applied to the proxy's row as `record_contact` writes it.
fn apply_reported(p: &mut ProxyRow, q: &SyncQuery, now: i64) {
    p.last_seen_at = Some(now);
    for (field, value) in [
        (&mut p.ats_version, &q.ats_version),
        (&mut p.os, &q.os),
        (&mut p.arch, &q.arch),
    ] {
        if value.is_some() {
            field.clone_from(value);
        }
    }
}

/// The head of a `bundle` answer; the files follow as JSON serialized once per bundle.
#[derive(Serialize)]
struct BundleHead<'a> {
    status: &'static str,
    unchanged: bool,
    hash: &'a str,
    version: i64,
    config_id: &'a str,
    config_name: &'a str,
    ats_major: &'a str,
    log_capture: Option<&'a CaptureWindow>,
    detail: Option<&'a str>,
    server_time: String,
}

/// A `bundle` answer (the [`SyncResponse`] shape). An approval sends the same files to every
/// agent of the config, so the files' JSON is made once per (version, ATS major)
/// ([`bundle::RenderedBundle::files_json`]) and only the small head is serialized per request.
fn bundle_answer(
    b: &bundle::RenderedBundle,
    version: i64,
    config: &ConfigRow,
    capture: Option<&CaptureWindow>,
    now: i64,
) -> ApiResult<Response> {
    let head = BundleHead {
        status: "bundle",
        unchanged: false,
        hash: &b.hash,
        version,
        config_id: &config.id,
        config_name: &config.name,
        ats_major: &b.ats_major,
        log_capture: capture,
        detail: None,
        server_time: fmt_ms(now),
    };
    let mut body = serde_json::to_vec(&head).map_err(ApiError::internal)?;
    // `head` is a non-empty object: replace its closing brace with the files member.
    body.pop();
    body.reserve(b.files_json.len() + 12);
    body.extend_from_slice(b",\"files\":");
    body.extend_from_slice(b.files_json.as_bytes());
    body.push(b'}');
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

struct WaitGuard<'a>(&'a SyncHub);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Apply outcome.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Applied and confirmed.
    Ok,
    /// Apply failed; the agent kept `running_hash`.
    Error,
}

/// Apply report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The agent's hostname.
    pub hostname: String,
    /// The hash the agent tried to apply.
    pub hash: String,
    /// ok | error.
    pub status: AckStatus,
    /// What failed (required with status error).
    pub error: Option<String>,
    /// With status error: the hash the agent kept running (absent if none).
    pub running_hash: Option<String>,
}

/// Simple acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Always "ok".
    pub status: String,
}

fn accepted() -> Json<Accepted> {
    Json(Accepted {
        status: "ok".into(),
    })
}

/// Reports the outcome of applying a bundle.
#[utoipa::path(post, path = "/api/v1/sync/ack", tag = "sync", request_body = AckRequest, security(("agent" = [])),
    responses((status = 200, body = Accepted), (status = 401, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn ack(
    State(state): State<AppState>,
    agent: Agent,
    Json(body): Json<AckRequest>,
) -> ApiResult<Json<Accepted>> {
    check_hostname(&agent, &body.hostname)?;
    check_hash("hash", &body.hash)?;
    if let Some(r) = &body.running_hash {
        check_hash("running_hash", r)?;
    }
    let (applied_hash, error) = match body.status {
        AckStatus::Ok => (Some(body.hash), None),
        AckStatus::Error => {
            let error = body
                .error
                .as_deref()
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| ApiError::invalid("error: required when status is \"error\""))?;
            let error: String = error.chars().take(4000).collect();
            (body.running_hash, Some((error, body.hash)))
        }
    };
    // Group commit with other agents' writes; answered once committed.
    state
        .stats_writer
        .ack(
            &state.db,
            apm_store::proxies::Ack {
                proxy_id: agent.proxy.id.clone(),
                applied_hash,
                error,
                at: now_ms(),
            },
        )
        .await?;
    Ok(accepted())
}

/// A metrics sample.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsRequest {
    /// The agent's hostname.
    pub hostname: String,
    /// When the sample was taken (RFC 3339 or epoch seconds); default: now.
    pub timestamp: Option<String>,
    /// Metric name → value, e.g. `proxy.process.http.current_client_connections`.
    pub metrics: BTreeMap<String, f64>,
}

/// Stores a metrics sample.
#[utoipa::path(post, path = "/api/v1/sync/stats", tag = "sync", request_body = StatsRequest, security(("agent" = [])),
    responses((status = 200, body = Accepted), (status = 401, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn stats(
    State(state): State<AppState>,
    agent: Agent,
    Json(body): Json<StatsRequest>,
) -> ApiResult<Json<Accepted>> {
    check_hostname(&agent, &body.hostname)?;
    if body.metrics.is_empty() {
        return Err(ApiError::invalid(
            "metrics: must contain at least one metric",
        ));
    }
    if body.metrics.len() > 500 {
        return Err(ApiError::invalid(format!(
            "metrics: {} metrics is more than the maximum of 500",
            body.metrics.len()
        )));
    }
    for name in body.metrics.keys() {
        check_name(&format!("metrics.{name}"), name, 200, "._-")?;
    }
    let now = now_ms();
    let ts = match &body.timestamp {
        Some(t) => parse_time("timestamp", t)?,
        None => now,
    };
    if ts < 946_684_800_000 {
        return Err(ApiError::invalid(
            "timestamp: before 2000-01-01; check the agent's clock",
        ));
    }
    if ts > now + 300_000 {
        return Err(ApiError::invalid(
            "timestamp: more than 5 minutes in the future; check the agent's clock",
        ));
    }
    let push = apm_store::telemetry::NewPush {
        proxy_id: agent.proxy.id.clone(),
        ts,
        metrics: body.metrics.into_iter().collect(),
    };
    state.stats_writer.write(&state.db, push).await?;
    state
        .contacts
        .touch(&state.stats_writer, &state.db, &agent.proxy.id, now);
    Ok(accepted())
}

/// Captured log lines.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// The agent's hostname.
    pub hostname: String,
    /// Lines, oldest first (at most 5000, each at most 16 KiB).
    pub lines: Vec<String>,
}

/// Ships captured log lines; accepted only while a capture window is open (plus one minute).
#[utoipa::path(post, path = "/api/v1/sync/logs", tag = "sync", request_body = LogsRequest, security(("agent" = [])),
    responses((status = 200, body = Accepted), (status = 401, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn logs(
    State(state): State<AppState>,
    agent: Agent,
    Json(body): Json<LogsRequest>,
) -> ApiResult<Json<Accepted>> {
    check_hostname(&agent, &body.hostname)?;
    if body.lines.len() > 5000 {
        return Err(ApiError::invalid(format!(
            "lines: {} lines is more than the maximum of 5000 per request",
            body.lines.len()
        )));
    }
    if let Some(i) = body.lines.iter().position(|l| l.len() > 16 * 1024) {
        return Err(ApiError::invalid(format!("lines[{i}]: longer than 16 KiB")));
    }
    let now = now_ms();
    let open = agent.proxy.capture_until.is_some_and(|u| now <= u + 60_000);
    if !open {
        return Err(ApiError::conflict(format!(
            "no log capture window is open for proxy {}",
            agent.proxy.hostname
        )));
    }
    let mut tx = state.db.begin_write().await?;
    let capture = apm_store::proxies::latest_capture(&mut tx, &agent.proxy.id).await?;
    let lines: Vec<(i64, String)> = body.lines.into_iter().map(|l| (now, l)).collect();
    apm_store::telemetry::insert_log_lines(
        &mut tx,
        &agent.proxy.id,
        capture.as_ref().map(|c| c.id.as_str()),
        &lines,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(accepted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poller_notifies_only_for_other_replicas_changes() {
        let hub = SyncHub::new();
        assert_eq!(hub.foreign_change(4, 5), (true, 5), "nothing was made here");
        hub.pending(6).committed();
        hub.pending(7).committed();
        assert_eq!(hub.foreign_change(5, 7), (false, 7), "both were ours");
        hub.pending(9).committed();
        assert_eq!(
            hub.foreign_change(7, 9),
            (true, 9),
            "8 came from another replica"
        );
        assert!(
            hub.foreign_change(9, 3).0,
            "a generation that went back is not ours"
        );
        // Forgotten once passed: a later poll over the same values treats them as foreign.
        assert!(hub.foreign_change(5, 7).0);
    }

    #[test]
    fn a_transaction_in_flight_is_decided_later() {
        let hub = SyncHub::new();
        let ours = hub.pending(11);
        // The poller saw 11 committed before the handler resumed: no decision about it yet.
        assert_eq!(hub.foreign_change(10, 11), (false, 10));
        ours.committed();
        assert_eq!(hub.foreign_change(10, 11), (false, 11));
        // A rolled-back value is forgotten: whoever commits it later is another replica.
        drop(hub.pending(12));
        assert_eq!(hub.foreign_change(11, 12), (true, 12));
    }
}
