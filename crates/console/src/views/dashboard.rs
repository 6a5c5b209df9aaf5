//! The dashboard: fleet counts, pending approvals, drift with last errors, and fleet metric
//! charts (each metric over the whole fleet in 5-minute steps for the last 6 hours: levels
//! summed, counters as per-second rates).

use askama::Template;
use axum::response::Response;

use crate::api::{Api, q};
use crate::chart::{Series, line_chart};
use crate::ctx::{Chrome, Ctx, UiError, page};
use crate::model::{Config, Dashboard, FleetSeriesReply, MetricKind};
use crate::views::{metric_label, short_hash, when};

/// Most charts on the dashboard.
const CHARTS: usize = 4;

/// A chart ready for a template.
pub struct ChartView {
    /// Metric label.
    pub title: String,
    /// Latest aggregated value.
    pub latest: String,
    /// SVG markup.
    pub svg: String,
}

struct DriftRow {
    proxy_id: String,
    hostname: String,
    desired: String,
    applied: String,
    last_error: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    c: Chrome,
    d: Dashboard,
    generated: String,
    pending: Vec<Config>,
    drift: Vec<DriftRow>,
    charts: Vec<ChartView>,
}

/// One chart per metric (at most [`CHARTS`]) of the whole fleet over the last 6 hours:
/// gauges summed, counters as the fleet's rate per second — the server aggregates, so the
/// page costs one request per chart whatever the fleet's size.
pub async fn fleet_charts(api: &Api, metrics: &[String]) -> Vec<ChartView> {
    let mut charts = Vec::new();
    for metric in metrics.iter().take(CHARTS) {
        let series = api
            .get::<FleetSeriesReply>(&format!("/api/v1/stats/fleet?metric={}", q(metric)))
            .await
            .unwrap_or_default();
        let points: Vec<(i64, f64)> = series.points.iter().map(|p| (p.t_ms, p.value)).collect();
        charts.push(chart_view(metric, series.kind, points));
    }
    charts
}

/// A chart of one metric; counters get a "/s" title because their points are rates.
pub fn chart_view(metric: &str, kind: Option<MetricKind>, points: Vec<(i64, f64)>) -> ChartView {
    let title = match kind {
        Some(MetricKind::Counter) => format!("{} /s", metric_label(metric)),
        _ => metric_label(metric),
    };
    let latest = points
        .last()
        .map(|(_, v)| crate::chart::compact(*v))
        .unwrap_or_else(|| "—".into());
    let svg = line_chart(
        &title,
        &[Series {
            label: title.clone(),
            points,
        }],
    );
    ChartView { title, latest, svg }
}

/// `GET /`.
pub async fn show(ctx: Ctx) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let d: Dashboard = ctx.api.get("/api/v1/dashboard").await?;
    let configs: Vec<Config> = ctx.api.get("/api/v1/configs").await?;
    // Well-known metrics first, then the rest alphabetically.
    let mut metrics: Vec<String> = d.stats.keys().cloned().collect();
    metrics.sort_by_key(|m| (metric_label(m) == *m, m.clone()));
    let charts = fleet_charts(&ctx.api, &metrics).await;
    let drift = d
        .drift
        .iter()
        .map(|x| DriftRow {
            proxy_id: x.proxy_id.clone(),
            hostname: x.hostname.clone(),
            desired: short_hash(Some(&x.desired_hash)),
            applied: short_hash(x.applied_hash.as_deref()),
            last_error: x.last_error.clone().unwrap_or_default(),
        })
        .collect();
    let pending = configs
        .into_iter()
        .filter(|c| c.status == "pending_approval")
        .collect();
    page(&DashboardPage {
        c: ctx.chrome(&me, "dashboard"),
        generated: when(&d.generated_at),
        d,
        pending,
        drift,
        charts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_titled_as_rates_and_gauges_as_levels() {
        let c = chart_view(
            "proxy.process.cache.ram_cache.hits",
            Some(MetricKind::Counter),
            vec![(0, 1.5), (300_000, 2.25)],
        );
        assert_eq!(c.title, "RAM cache hits /s");
        assert_eq!(c.latest, "2.25");
        assert!(c.svg.contains("<polyline"), "{}", c.svg);
        let g = chart_view(
            "proxy.process.http.current_client_connections",
            Some(MetricKind::Gauge),
            Vec::new(),
        );
        assert_eq!(g.title, "Client connections (current)");
        assert_eq!(g.latest, "—");
    }
}
