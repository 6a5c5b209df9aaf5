//! The dashboard: fleet counts, pending approvals, drift with last errors, and fleet metric
//! charts (the sum over online proxies of each metric, per minute, over the last hour).

use std::collections::BTreeMap;

use askama::Template;
use axum::response::Response;

use crate::api::{Api, q};
use crate::chart::{Series, line_chart};
use crate::ctx::{Chrome, Ctx, UiError, page};
use crate::model::{Config, Dashboard, Proxy, SeriesReply};
use crate::views::{metric_label, short_hash, when};

/// Most proxies whose series are summed into the fleet charts.
const CHART_PROXIES: usize = 25;
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

/// Per-minute sums of one metric over several proxies.
pub fn fleet_series(per_proxy: &[Vec<(i64, f64)>]) -> Vec<(i64, f64)> {
    let mut buckets: BTreeMap<i64, f64> = BTreeMap::new();
    for points in per_proxy {
        // Last value of this proxy in each minute, then summed across proxies.
        let mut mine: BTreeMap<i64, f64> = BTreeMap::new();
        for (t, v) in points {
            mine.insert(t.div_euclid(60_000) * 60_000, *v);
        }
        for (t, v) in mine {
            *buckets.entry(t).or_insert(0.0) += v;
        }
    }
    buckets.into_iter().collect()
}

/// Charts of `metrics` summed over `proxies`.
pub async fn fleet_charts(api: &Api, proxies: &[Proxy], metrics: &[String]) -> Vec<ChartView> {
    let mut charts = Vec::new();
    for metric in metrics.iter().take(CHARTS) {
        let mut per_proxy = Vec::new();
        for p in proxies.iter().take(CHART_PROXIES) {
            if let Ok(s) = api
                .get::<SeriesReply>(&format!(
                    "/api/v1/proxies/{}/stats?metric={}",
                    p.id,
                    q(metric)
                ))
                .await
            {
                per_proxy.push(
                    s.points
                        .iter()
                        .map(|pt| (pt.t_ms, pt.last))
                        .collect::<Vec<_>>(),
                );
            }
        }
        let points = fleet_series(&per_proxy);
        let latest = points
            .last()
            .map(|(_, v)| crate::chart::compact(*v))
            .unwrap_or_else(|| "—".into());
        let title = metric_label(metric);
        let svg = line_chart(
            &title,
            &[Series {
                label: title.clone(),
                points,
            }],
        );
        charts.push(ChartView { title, latest, svg });
    }
    charts
}

/// `GET /`.
pub async fn show(ctx: Ctx) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let d: Dashboard = ctx.api.get("/api/v1/dashboard").await?;
    let configs: Vec<Config> = ctx.api.get("/api/v1/configs").await?;
    let proxies: Vec<Proxy> = ctx.api.get("/api/v1/proxies").await?;
    let online: Vec<Proxy> = proxies
        .into_iter()
        .filter(|p| p.online && !p.revoked)
        .collect();
    // Well-known metrics first, then the rest alphabetically.
    let mut metrics: Vec<String> = d.stats.keys().cloned().collect();
    metrics.sort_by_key(|m| (metric_label(m) == *m, m.clone()));
    let charts = fleet_charts(&ctx.api, &online, &metrics).await;
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
    fn fleet_series_sums_the_last_value_per_proxy_and_minute() {
        let a = vec![(0, 1.0), (30_000, 2.0), (60_000, 5.0)];
        let b = vec![(10_000, 10.0), (70_000, 20.0)];
        assert_eq!(fleet_series(&[a, b]), vec![(0, 12.0), (60_000, 25.0)]);
        assert!(fleet_series(&[]).is_empty());
    }
}
