//! Fleet-wide metric series (what the dashboard charts) and the counter/gauge distinction
//! every series answer carries.
//!
//! ATS exposes two kinds of numbers: levels such as `current_client_connections`, which are
//! summed across proxies as they are, and counters such as `incoming_requests`, which only
//! grow until the process restarts — a chart of their raw value is a ramp that says nothing,
//! so they are charted as per-second rates.

use apm_store::now_ms;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::util::{fmt_ms, series_window};
use crate::auth::Caller;
use crate::error::{ApiResult, Json, Query};
use crate::state::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(fleet_stats))
}

/// Whether a metric is a level or a count of events since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Grows until the process restarts; charted as a per-second rate.
    Counter,
    /// A level at the time of the sample; charted as it is.
    Gauge,
}

impl MetricKind {
    /// The kind of an ATS metric from its name: under `proxy.process.`, names with a
    /// `current_` part and the cache's size/usage levels are gauges, everything else counts
    /// events (ATS's own naming convention); metrics outside `proxy.process.` are treated as
    /// gauges, so an unknown metric is never differentiated into nonsense.
    pub fn of(metric: &str) -> MetricKind {
        const LEVELS: [&str; 4] = [
            "proxy.process.cache.bytes_used",
            "proxy.process.cache.bytes_total",
            "proxy.process.cache.percent_full",
            "proxy.process.cache.ram_cache.bytes_used",
        ];
        let Some(rest) = metric.strip_prefix("proxy.process.") else {
            return MetricKind::Gauge;
        };
        if rest.split('.').any(|part| part.starts_with("current_")) || LEVELS.contains(&metric) {
            MetricKind::Gauge
        } else {
            MetricKind::Counter
        }
    }
}

/// Per-second rates of a counter's samples `(epoch ms, value)`, oldest first: the increase
/// since the previous sample over the time between them. A value below the previous one is a
/// reset (the process restarted and counts from zero), so the increase is the value itself.
/// The first sample, and a sample no later than its predecessor, have no rate.
pub fn counter_rates(samples: &[(i64, f64)]) -> Vec<Option<f64>> {
    let mut rates = Vec::with_capacity(samples.len());
    let mut previous: Option<(i64, f64)> = None;
    for &(t, v) in samples {
        rates.push(previous.and_then(|(pt, pv)| {
            (t > pt).then(|| {
                let increase = if v < pv { v } else { v - pv };
                increase * 1000.0 / (t - pt) as f64
            })
        }));
        previous = Some((t, v));
    }
    rates
}

/// Fleet series query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FleetStatsQuery {
    /// Metric name (the answer to a request without it lists the names reported in the window).
    pub metric: Option<String>,
    /// From (RFC 3339 or epoch seconds); default: 6 hours ago.
    pub since: Option<String>,
    /// Until (RFC 3339 or epoch seconds); default: now.
    pub until: Option<String>,
}

/// One 5-minute step of a fleet series.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetPointView {
    /// Bucket start (RFC 3339).
    pub t: String,
    /// Epoch ms of `t`.
    pub t_ms: i64,
    /// Gauge: sum over the proxies of their last value in the step. Counter: sum of their
    /// per-second rates (events per second across the fleet).
    pub value: f64,
    /// Proxies that reported in the step (for counters: that also reported in an earlier step).
    pub proxies: i64,
}

/// A metric summed over every proxy that reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSeriesView {
    /// Metric (absent when listing names).
    pub metric: Option<String>,
    /// Counter (values are per-second rates) or gauge (values are levels).
    pub kind: Option<MetricKind>,
    /// Step width in seconds (the 5-minute rollups).
    pub step_seconds: i64,
    /// Steps, oldest first.
    pub points: Vec<FleetPointView>,
    /// Metric names reported by any proxy in the window.
    pub available_metrics: Vec<String>,
}

/// One metric over the whole fleet in 5-minute steps: gauges summed, counters as the fleet's
/// per-second rate (counter resets handled per proxy).
#[utoipa::path(get, path = "/api/v1/stats/fleet", tag = "stats",
    params(FleetStatsQuery),
    responses((status = 200, body = FleetSeriesView), (status = 400, body = crate::error::Problem),
              (status = 401, body = crate::error::Problem)))]
async fn fleet_stats(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<FleetStatsQuery>,
) -> ApiResult<Json<FleetSeriesView>> {
    let (since, until) = series_window(
        q.since.as_deref(),
        q.until.as_deref(),
        now_ms(),
        6 * 3_600_000,
    )?;
    let mut conn = state.db.acquire().await?;
    let available_metrics = apm_store::telemetry::fleet_metric_names(&mut conn, since).await?;
    let kind = q.metric.as_deref().map(MetricKind::of);
    let points = match (&q.metric, kind) {
        (Some(m), Some(MetricKind::Counter)) => {
            apm_store::telemetry::fleet_counter_rates(&mut conn, m, since, until).await?
        }
        (Some(m), _) => {
            apm_store::telemetry::fleet_gauge_series(&mut conn, m, since, until).await?
        }
        (None, _) => Vec::new(),
    };
    Ok(Json(FleetSeriesView {
        metric: q.metric,
        kind,
        step_seconds: apm_store::telemetry::ROLLUP_MS / 1000,
        points: points
            .into_iter()
            .map(|p| FleetPointView {
                t: fmt_ms(p.t),
                t_ms: p.t,
                value: p.value,
                proxies: p.proxies,
            })
            .collect(),
        available_metrics,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ats_levels_are_gauges_and_event_counts_are_counters() {
        for gauge in [
            "proxy.process.http.current_client_connections",
            "proxy.process.http.current_active_client_connections",
            "proxy.process.http.current_parent_proxy_connections",
            "proxy.process.cache.percent_full",
            "proxy.node.config.restart_required.proxy",
            "custom.thing",
        ] {
            assert_eq!(MetricKind::of(gauge), MetricKind::Gauge, "{gauge}");
        }
        for counter in [
            "proxy.process.http.total_client_connections",
            "proxy.process.http.incoming_requests",
            "proxy.process.cache.ram_cache.hits",
            "proxy.process.http.err_connect_fail_count_stat",
            "proxy.process.http.5xx_responses",
        ] {
            assert_eq!(MetricKind::of(counter), MetricKind::Counter, "{counter}");
        }
    }

    #[test]
    fn rates_are_per_second_and_survive_a_restart() {
        let r = counter_rates(&[
            (0, 100.0),
            (30_000, 160.0),
            (60_000, 160.0),
            (90_000, 15.0),
            (90_000, 20.0),
        ]);
        assert_eq!(r, vec![None, Some(2.0), Some(0.0), Some(0.5), None]);
    }

    proptest! {
        /// Without resets, the rates integrate back to the counter's total increase.
        #[test]
        fn rates_integrate_to_the_increase(
            steps in proptest::collection::vec((1i64..120_000, 0u32..10_000), 1..50)
        ) {
            let mut samples = vec![(0i64, 0.0f64)];
            for (dt, inc) in steps {
                let (t, v) = *samples.last().unwrap();
                samples.push((t + dt, v + f64::from(inc)));
            }
            let rates = counter_rates(&samples);
            prop_assert_eq!(rates[0], None);
            let integral: f64 = samples
                .windows(2)
                .zip(&rates[1..])
                .map(|(w, r)| r.unwrap() * (w[1].0 - w[0].0) as f64 / 1000.0)
                .sum();
            let total = samples.last().unwrap().1;
            prop_assert!((integral - total).abs() <= 1e-6 * total.max(1.0));
        }
    }
}
