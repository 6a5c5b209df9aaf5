//! The ATS Proxy Manager control plane (`apm server`): HTTP API with sessions and RBAC, configs
//! with versions and approval, audit trail, proxies and the agent sync protocol, metrics.
//!
//! Entry points: [`serve`] (the binary: logging, signals) and [`spawn`] (tests: an in-process
//! server on a chosen address). [`app`] builds the router from an [`AppState`].

pub mod api;

pub mod audit;
pub mod auth;
pub mod bundle;
pub mod credentials;
pub mod error;
pub mod ingest;
pub mod settings;
pub mod state;
pub mod sync;
pub mod system;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apm_store::Db;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, header};
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use settings::{ApprovalMode, LogFormat, ServerArgs, Settings};
pub use state::AppState;

/// Builds the full router (API, OpenAPI document, health, metrics) with its layers.
pub fn app(state: AppState) -> Router {
    let (api, openapi) = api::router().split_for_parts();
    let openapi_json = Arc::new(openapi.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let max_body = state.settings.max_body_bytes;
    api.route(
        "/api/openapi.json",
        axum::routing::get(move || {
            let body = openapi_json.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    body.as_str().to_owned(),
                )
                    .into_response()
            }
        }),
    )
    .fallback(error::fallback)
    .method_not_allowed_fallback(error::method_fallback)
    .layer(axum::middleware::from_fn(system::track))
    .layer(DefaultBodyLimit::max(max_body))
    .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
        error::ApiError::internal("handler panicked").into_response()
    }))
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The query string is left out on purpose: it is the agent's business, and
                // paths never carry secrets (tokens travel in headers or bodies).
                tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
            })
            .on_request(())
            .on_response(
                |res: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_millis() as u64, "response");
                },
            ),
    )
    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    .with_state(state)
}

/// Connects, migrates and makes sure the root account exists. Returns the state and, when root
/// was created or reset without `APM_ROOT_PASSWORD`, the generated password (to print once).
pub async fn prepare(settings: Settings) -> anyhow::Result<(AppState, Option<String>)> {
    settings.validate()?;
    if settings.database_url.is_none() && !settings.data_dir.exists() {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        // The database holds password hashes and the audit trail: owner-only from the start.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting data dir {}", settings.data_dir.display()))?;
        }
    }
    let url = settings.effective_database_url();
    let db = Db::connect(&url, settings.database_max_connections)
        .await
        .with_context(|| format!("connecting to {}", apm_store::redact_url(&url)))?;
    db.migrate().await.context("migrating the database")?;
    bundle::refresh_hashes(&db)
        .await
        .context("checking stored bundle hashes")?;
    let generated = ensure_root(&db, &settings).await?;
    let state = AppState::new(db, settings, system::prometheus_handle());
    Ok((state, generated))
}

async fn ensure_root(db: &Db, settings: &Settings) -> anyhow::Result<Option<String>> {
    let mut tx = db.begin_write().await?;
    let users = apm_store::auth::list_users(&mut tx).await?;
    let existing = users.into_iter().find(|u| u.role == "root");
    if existing.is_some() && !settings.reset_root_password {
        return Ok(None);
    }
    let (password, generated) = match &settings.root_password {
        Some(p) if p.chars().count() >= 8 => (p.clone(), false),
        Some(_) => anyhow::bail!("APM_ROOT_PASSWORD must have at least 8 characters"),
        None => (auth::generate_password(), true),
    };
    let hash = auth::hash_password_blocking(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the root password: {e:?}"))?;
    let now = apm_store::now_ms();
    let actor = audit::Actor {
        id: None,
        name: "system".into(),
        request_id: None,
    };
    match existing {
        Some(mut root) => {
            root.password_hash = hash;
            root.disabled = 0;
            root.updated_at = now;
            apm_store::auth::update_user(&mut tx, &root).await?;
            apm_store::auth::revoke_user_credentials(&mut tx, &root.id, now).await?;
            audit::record(
                &mut tx,
                &actor,
                "user.reset_root_password",
                "user",
                Some(&root.id),
                audit::NONE,
                Some(&serde_json::json!({"username": root.username, "password_changed": true})),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        None => {
            let root = apm_store::auth::UserRow {
                id: apm_store::new_id(),
                username: "root".into(),
                password_hash: hash,
                role: "root".into(),
                disabled: 0,
                created_at: now,
                updated_at: now,
            };
            apm_store::auth::insert_user(&mut tx, &root).await?;
            audit::record(
                &mut tx,
                &actor,
                "user.create",
                "user",
                Some(&root.id),
                audit::NONE,
                Some(&api::users::UserView::of(&root)),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    tx.commit().await?;
    Ok(generated.then_some(password))
}

/// How often slow connection waits are summed up in the log.
const SLOW_ACQUIRE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// The line [`report_slow_acquires`] logs for `slow` waits in the last `every`, if any.
fn slow_acquire_summary(slow: u64, every: Duration, max_connections: u32) -> Option<String> {
    (slow > 0).then(|| {
        format!(
            "{slow} database connection requests waited more than {} s in the last {} s: \
             the pool ({max_connections} connections, APM_DATABASE_MAX_CONNECTIONS) or the \
             database is saturated",
            apm_store::SLOW_ACQUIRE.as_secs(),
            every.as_secs()
        )
    })
}

/// One warning per interval for connection requests that waited too long, instead of sqlx's
/// one per request (130,000 lines when 100,000 agents start at once); the total is also the
/// `apm_db_slow_acquires_total` counter.
async fn report_slow_acquires(db: apm_store::Db, max_connections: u32, every: Duration) {
    let mut reported = db.slow_acquires();
    metrics::counter!("apm_db_slow_acquires_total").increment(0);
    loop {
        tokio::time::sleep(every).await;
        let now = db.slow_acquires();
        metrics::counter!("apm_db_slow_acquires_total").increment(now - reported);
        if let Some(line) = slow_acquire_summary(now - reported, every, max_connections) {
            tracing::warn!(slow_acquires = now - reported, "{line}");
        }
        reported = now;
    }
}

/// Periodic housekeeping: metric/log retention and dead sessions.
async fn housekeeping(state: AppState) {
    loop {
        let now = apm_store::now_ms();
        let s = &state.settings;
        if let Ok(mut tx) = state.db.begin_write().await {
            let deleted = apm_store::telemetry::apply_retention(
                &mut tx,
                now - s.stats_raw_retention_hours as i64 * 3_600_000,
                now - s.stats_rollup_retention_days as i64 * 86_400_000,
                now - s.log_retention_days as i64 * 86_400_000,
            )
            .await;
            let purged = apm_store::auth::purge_sessions(&mut tx, now - 7 * 86_400_000).await;
            match (deleted, purged, tx.commit().await) {
                (Ok(d), Ok(p), Ok(())) if d + p > 0 => {
                    tracing::info!(deleted_rows = d, purged_sessions = p, "housekeeping")
                }
                (Err(e), _, _) | (_, Err(e), _) => {
                    tracing::warn!(error = %e, "housekeeping failed")
                }
                (_, _, Err(e)) => tracing::warn!(error = %e, "housekeeping commit failed"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

/// Fleets up to this many proxies have the open (current) bucket folded at every run, so their
/// charts trail the pushes by at most the roll-up interval. Folded while its bucket is open, a
/// proxy's pushes are folded a few at a time and each rollup row is rewritten at every run;
/// folded once the bucket has closed, each row is written once for all of them (about ten
/// times fewer writes for agents pushing every 30 s). So a larger fleet has its open bucket
/// folded when it closes, and its rollup-based charts trail by up to one bucket (5 minutes)
/// plus the interval.
pub const ROLLUP_OPEN_BUCKET_PROXIES: i64 = 10_000;

/// Folds metric pushes into the 5-minute rollups now: every push of a closed bucket, and those
/// of the open bucket when the fleet has at most [`ROLLUP_OPEN_BUCKET_PROXIES`] proxies. Works
/// in steps of about [`apm_store::telemetry::ROLLUP_CHUNK`] pushes, one transaction each,
/// pausing after each for half as long as it took, so the agents' writes get the (SQLite) write
/// lock at least a third of the time while a large backlog is folded; returns the pushes
/// folded. Each push is folded exactly once, so replicas (and tests) may run it at the same
/// time.
pub async fn roll_up_stats_now(db: &apm_store::Db) -> Result<usize, apm_store::StoreError> {
    roll_up_stats_yielding(db, None).await
}

/// How long the roll-up holds back after agents were woken to fetch a change: delivering a new
/// version to 100,000 agents takes a few seconds of both cores and a burst of ACK writes, and
/// folding statistics meanwhile only delays it.
pub const ROLLUP_HOLD_AFTER_WAKE: Duration = Duration::from_secs(15);

/// Longest a roll-up run holds back in all, however often agents are woken.
pub const ROLLUP_MAX_HOLD: Duration = Duration::from_secs(60);

/// How long to wait before the next roll-up chunk, given when agents were last woken.
fn rollup_hold(last_wake: Option<std::time::Instant>, now: std::time::Instant) -> Option<Duration> {
    let since = now.checked_duration_since(last_wake?)?;
    ROLLUP_HOLD_AFTER_WAKE
        .checked_sub(since)
        .filter(|d| !d.is_zero())
}

/// [`roll_up_stats_now`], holding back before each step while agents fetch a change the hub
/// woke them for.
async fn roll_up_stats_yielding(
    db: &apm_store::Db,
    hub: Option<&sync::SyncHub>,
) -> Result<usize, apm_store::StoreError> {
    let now = apm_store::now_ms();
    let open_bucket = now - now.rem_euclid(apm_store::telemetry::ROLLUP_MS);
    let include_open = {
        let mut conn = db.acquire().await?;
        apm_store::proxies::count_proxies(&mut conn).await? <= ROLLUP_OPEN_BUCKET_PROXIES
    };
    let mut total = 0;
    // Changes made one after another (or another replica's, which its poller passes on) must
    // not hold the roll-up off for good.
    let mut held = Duration::ZERO;
    loop {
        while held < ROLLUP_MAX_HOLD {
            let Some(wait) =
                hub.and_then(|h| rollup_hold(h.last_wake(), std::time::Instant::now()))
            else {
                break;
            };
            let wait = wait.min(ROLLUP_MAX_HOLD - held);
            tokio::time::sleep(wait).await;
            held += wait;
        }
        let started = std::time::Instant::now();
        let mut tx = db.begin_write().await?;
        let step = apm_store::telemetry::roll_up_step(
            &mut tx,
            apm_store::telemetry::ROLLUP_CHUNK,
            open_bucket,
            include_open,
        )
        .await?;
        tx.commit().await?;
        total += step.pushes;
        metrics::counter!("apm_stats_pushes_rolled_up_total").increment(step.pushes as u64);
        // Time spent folding (pauses excluded): pushes rolled up per second of it is the
        // roll-up's capacity, to compare with the fleet's push rate.
        metrics::counter!("apm_stats_rollup_busy_microseconds_total")
            .increment(started.elapsed().as_micros() as u64);
        if step.done {
            return Ok(total);
        }
        tokio::time::sleep(started.elapsed() / 2).await;
    }
}

/// Runs [`roll_up_stats_now`] `stats_rollup_interval_ms` after the previous run ended. A run
/// folds everything pending, so when the fleet outgrows a run per interval, runs get longer
/// and each folds more pushes per rollup row (the cost per push falls as the backlog grows);
/// `apm_stats_rollup_last_run_seconds` above the interval says the roll-up is the bottleneck.
/// Every replica runs it; a push left pending by a crash or a failed run is taken by the next
/// run.
async fn roll_up_stats(state: AppState) {
    let period = Duration::from_millis(state.settings.stats_rollup_interval_ms);
    loop {
        tokio::time::sleep(period).await;
        let started = std::time::Instant::now();
        match roll_up_stats_yielding(&state.db, Some(&state.hub)).await {
            Ok(n) => {
                let took = started.elapsed();
                metrics::gauge!("apm_stats_rollup_last_run_seconds").set(took.as_secs_f64());
                if n > 0 {
                    tracing::debug!(
                        target: "apm_server::rollup",
                        pushes = n,
                        took_ms = took.as_millis() as u64,
                        "rolled up metric pushes"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "rolling up metric pushes failed"),
        }
    }
}

/// An in-process server (tests, embedding). Stops when dropped.
pub struct RunningServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// The state (database handle, settings).
    pub state: AppState,
    /// Generated root password, when root was created without `APM_ROOT_PASSWORD`.
    pub generated_root_password: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.state.db.close().await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Prepares and starts serving on `settings.listen` in the background.
pub async fn spawn(settings: Settings) -> anyhow::Result<RunningServer> {
    spawn_with(settings, std::convert::identity).await
}

/// Wraps the served router: the binary passes the web console's `apm_console::router`, which
/// puts its pages in front of the API (the console calls the API in-process).
pub type RouterWrap = fn(Router) -> Router;

/// [`spawn`], serving `wrap(app(state))` instead of the bare API.
pub async fn spawn_with(settings: Settings, wrap: RouterWrap) -> anyhow::Result<RunningServer> {
    let listen = settings.listen;
    let (state, generated) = prepare(settings).await?;
    // Read before serving: a change another replica makes after this point must be noticed
    // even if it lands before the poller's first tick.
    let generation = {
        let mut conn = state.db.acquire().await?;
        apm_store::telemetry::generation(&mut conn).await?
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = wrap(app(state.clone()));
    let server = tokio::spawn(async move {
        let result = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "server stopped with an error");
        }
    });
    let poller = tokio::spawn(sync::replica_poller(
        state.db.clone(),
        state.hub.clone(),
        Duration::from_millis(state.settings.replica_poll_ms),
        generation,
    ));
    let keeper = tokio::spawn(housekeeping(state.clone()));
    let roller = tokio::spawn(roll_up_stats(state.clone()));
    let pool_watch = tokio::spawn(report_slow_acquires(
        state.db.clone(),
        state.settings.database_max_connections,
        SLOW_ACQUIRE_REPORT_EVERY,
    ));
    Ok(RunningServer {
        addr,
        state,
        generated_root_password: generated,
        shutdown: Some(tx),
        tasks: vec![server, poller, keeper, roller, pool_watch],
    })
}

/// Sets up logging as configured (JSON by default). Call once per process.
pub fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs the server until SIGINT/SIGTERM (the `apm server` command).
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    serve_with(settings, std::convert::identity).await
}

/// [`serve`], serving `wrap(app(state))` (see [`spawn_with`]).
pub async fn serve_with(settings: Settings, wrap: RouterWrap) -> anyhow::Result<()> {
    init_logging(&settings);
    let listen = settings.listen;
    let url = settings.effective_database_url();
    let running = spawn_with(settings, wrap).await?;
    if let Some(password) = &running.generated_root_password {
        // Printed, never logged: this is the only time the password exists in clear.
        eprintln!(
            "\n  root password (shown once, store it now): {password}\n  log in: curl -s -X POST http://{}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"username\":\"root\",\"password\":\"{password}\"}}'\n",
            running.addr
        );
    }
    tracing::info!(
        listen = %listen,
        addr = %running.addr,
        database = %apm_store::redact_url(&url),
        approval_mode = running.state.settings.approval_mode.as_str(),
        "apm server started"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_waits_are_summed_in_one_line_naming_the_pool() {
        let every = Duration::from_secs(60);
        assert_eq!(
            slow_acquire_summary(0, every, 10),
            None,
            "nothing slow, nothing logged"
        );
        let line = slow_acquire_summary(130_000, every, 10).expect("a line");
        for part in [
            "130000 database connection requests",
            "more than 2 s",
            "last 60 s",
        ] {
            assert!(line.contains(part), "{part:?} in {line:?}");
        }
        assert!(
            line.contains("10 connections, APM_DATABASE_MAX_CONNECTIONS"),
            "{line}"
        );
    }

    #[test]
    fn the_roll_up_holds_back_only_right_after_a_wake() {
        let now = std::time::Instant::now();
        assert_eq!(rollup_hold(None, now), None, "never woken");
        let woke = now - Duration::from_secs(5);
        assert_eq!(rollup_hold(Some(woke), now), Some(Duration::from_secs(10)));
        let long_ago = now - ROLLUP_HOLD_AFTER_WAKE;
        assert_eq!(rollup_hold(Some(long_ago), now), None, "the hold is over");
        let later = now + Duration::from_secs(1);
        assert_eq!(
            rollup_hold(Some(later), now),
            None,
            "a wake after `now` (another thread) does not hold forever"
        );
    }
}
