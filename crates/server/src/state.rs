//! Shared application state handed to every handler.

use std::sync::Arc;
use std::time::Duration;

use apm_store::Db;

use crate::auth::LoginLimiter;
use crate::settings::Settings;
use crate::sync::SyncHub;

/// Everything a handler needs; fields are reached through [`std::ops::Deref`]. Cloned for every
/// request (axum's `State`), so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    /// Database.
    pub db: Db,
    /// Resolved settings.
    pub settings: Arc<Settings>,
    /// Wakes long-polling agents.
    pub hub: Arc<SyncHub>,
    /// Failed-login limiter.
    pub limiter: Arc<LoginLimiter>,
    /// Rendered bundles by (version id, ATS major).
    pub bundles: moka::sync::Cache<(String, String), Arc<crate::bundle::RenderedBundle>>,
    /// Prometheus exposition.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Group commit of metric pushes.
    pub stats_writer: Arc<crate::ingest::StatsWriter>,
    /// Batched contact times of syncs and pushes (and the latest seen by this replica).
    pub contacts: Arc<crate::ingest::ContactBuffer>,
    /// Agent credentials already looked up (by hash).
    pub credentials: Arc<crate::credentials::CredentialCache>,
}

impl AppState {
    /// Builds the state.
    pub fn new(
        db: Db,
        settings: Settings,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        let limiter = LoginLimiter::new(
            settings.login_max_failures,
            Duration::from_secs(settings.login_window_secs),
        );
        AppState(Arc::new(Shared {
            db,
            settings: Arc::new(settings),
            hub: Arc::new(SyncHub::new()),
            limiter: Arc::new(limiter),
            bundles: moka::sync::Cache::new(1024),
            metrics,
            stats_writer: Arc::new(crate::ingest::StatsWriter::new()),
            contacts: Arc::new(crate::ingest::ContactBuffer::new()),
            credentials: Arc::new(crate::credentials::CredentialCache::new()),
        }))
    }
}
