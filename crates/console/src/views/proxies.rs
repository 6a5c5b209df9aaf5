//! Proxies: the fleet list with filters, and one proxy's page (identity, desired vs applied,
//! metric charts, log capture with a live view of the lines as they arrive).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api::q;
use crate::ctx::{Chrome, Ctx, Posted, UiError, page, see_other};
use crate::model::{Config, EnrollmentToken, Logs, MetricKind, Proxy, SeriesReply};
use crate::views::dashboard::{ChartView, chart_view};
use crate::views::{ago, metric_label, short_hash, when};

/// Filters of the list.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    /// Hostname substring.
    pub q: String,
    /// online | offline | "".
    pub status: String,
    /// drift | in_sync | "".
    pub sync: String,
    /// Config id, `none`, or "".
    pub config: String,
}

struct Row {
    id: String,
    hostname: String,
    online: bool,
    revoked: bool,
    config: String,
    config_id: String,
    desired: String,
    applied: String,
    in_sync: bool,
    has_config: bool,
    last_seen: String,
    last_error: String,
    ats: String,
}

#[derive(Template)]
#[template(path = "proxies.html")]
struct ListPage {
    c: Chrome,
    f: ListQuery,
    rows: Vec<Row>,
    total: usize,
    configs: Vec<Config>,
    new_token: String,
    token_error: String,
    enroll_tokens: Vec<EnrollRow>,
}

struct EnrollRow {
    id: String,
    note: String,
    expires: String,
    uses: String,
}

fn row(p: &Proxy, names: &HashMap<String, String>) -> Row {
    let config = p
        .config_id
        .as_ref()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .unwrap_or_default();
    Row {
        id: p.id.clone(),
        hostname: p.hostname.clone(),
        online: p.online,
        revoked: p.revoked,
        config,
        config_id: p.config_id.clone().unwrap_or_default(),
        desired: short_hash(p.desired_hash.as_deref()),
        applied: short_hash(p.applied_hash.as_deref()),
        in_sync: p.in_sync,
        has_config: p.desired_hash.is_some(),
        last_seen: ago(p.last_seen_at.as_deref()),
        last_error: p.last_error.clone().unwrap_or_default(),
        ats: p.ats_version.clone().unwrap_or_else(|| "—".into()),
    }
}

/// Whether a proxy passes the list's filters.
pub fn matches(p: &Proxy, f: &ListQuery) -> bool {
    let q = f.q.trim().to_lowercase();
    (q.is_empty() || p.hostname.to_lowercase().contains(&q))
        && match f.status.as_str() {
            "online" => p.online && !p.revoked,
            "offline" => !p.online && !p.revoked,
            "revoked" => p.revoked,
            _ => true,
        }
        && match f.sync.as_str() {
            "drift" => p.desired_hash.is_some() && !p.in_sync,
            "in_sync" => p.in_sync,
            _ => true,
        }
        && match f.config.as_str() {
            "" => true,
            "none" => p.config_id.is_none(),
            id => p.config_id.as_deref() == Some(id),
        }
}

/// `GET /proxies`.
pub async fn list(ctx: Ctx, Query(f): Query<ListQuery>) -> Result<Response, UiError> {
    list_page(&ctx, f, String::new(), String::new()).await
}

async fn list_page(
    ctx: &Ctx,
    f: ListQuery,
    new_token: String,
    token_error: String,
) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let proxies: Vec<Proxy> = ctx.api.get("/api/v1/proxies").await?;
    let configs: Vec<Config> = ctx.api.get("/api/v1/configs").await?;
    let names: HashMap<String, String> = configs
        .iter()
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    let total = proxies.len();
    let rows = proxies
        .iter()
        .filter(|p| matches(p, &f))
        .map(|p| row(p, &names))
        .collect();
    let enroll_tokens = ctx
        .api
        .get::<Vec<EnrollmentToken>>("/api/v1/enrollment-tokens")
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.usable)
        .map(|t| EnrollRow {
            id: t.id,
            note: t.note,
            expires: when(&t.expires_at),
            uses: match t.max_uses {
                Some(m) => format!("{} of {m}", t.uses),
                None => format!("{} (unlimited)", t.uses),
            },
        })
        .collect();
    page(&ListPage {
        c: ctx.chrome(&me, "proxies"),
        f,
        rows,
        total,
        configs,
        new_token,
        token_error,
        enroll_tokens,
    })
}

/// `POST /proxies/enroll`: a one-time enrollment token for new agents (shown once).
pub async fn enroll(form: Posted) -> Result<Response, UiError> {
    let mut body = json!({"note": form.get("note")});
    let hours = form.get("hours");
    if !hours.trim().is_empty() {
        match hours.trim().parse::<u64>() {
            Ok(h) => body["expires_in_seconds"] = json!(h * 3600),
            Err(_) => {
                return list_page(
                    &form.ctx,
                    ListQuery::default(),
                    String::new(),
                    format!("valid for: {hours:?} is not a whole number of hours"),
                )
                .await;
            }
        }
    }
    let uses = form.get("max_uses");
    if !uses.trim().is_empty() {
        match uses.trim().parse::<u64>() {
            Ok(u) => body["max_uses"] = json!(u),
            Err(_) => {
                return list_page(
                    &form.ctx,
                    ListQuery::default(),
                    String::new(),
                    format!("agents: {uses:?} is not a whole number"),
                )
                .await;
            }
        }
    }
    let reply = form
        .ctx
        .api
        .call(
            axum::http::Method::POST,
            "/api/v1/enrollment-tokens",
            Some(&body),
        )
        .await;
    match reply.json::<serde_json::Value>() {
        Ok(v) => {
            let token = v["token"].as_str().unwrap_or_default().to_string();
            list_page(&form.ctx, ListQuery::default(), token, String::new()).await
        }
        Err(f) if matches!(f.status.as_u16(), 400 | 409 | 422) => {
            list_page(&form.ctx, ListQuery::default(), String::new(), f.message()).await
        }
        Err(f) => Err(f.into()),
    }
}

struct LineView {
    ts: String,
    line: String,
}

#[derive(Template)]
#[template(path = "proxy.html")]
struct DetailPage {
    c: Chrome,
    p: Proxy,
    r: Row,
    enrolled: String,
    last_seen_at: String,
    charts: Vec<ChartView>,
    capture_open: bool,
    capture_text: String,
    lines: Vec<LineView>,
    next_after: i64,
}

#[derive(Template)]
#[template(path = "log_lines.html")]
struct LinesFragment {
    id: String,
    lines: Vec<LineView>,
    next_after: i64,
    capture_open: bool,
    capture_text: String,
}

/// Query of the detail page.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ShowQuery {
    msg: String,
}

fn capture_text(logs: &Logs) -> (bool, String) {
    match &logs.capture {
        Some(c) if c.open => (true, format!("Capturing until {}", when(&c.until))),
        Some(c) => (false, format!("Last capture ended {}", when(&c.until))),
        None => (false, "No capture yet".into()),
    }
}

fn lines_of(logs: &Logs) -> Vec<LineView> {
    logs.lines
        .iter()
        .map(|l| LineView {
            ts: when(&l.ts),
            line: l.line.clone(),
        })
        .collect()
}

/// `GET /proxies/{id}`.
pub async fn show(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(sq): Query<ShowQuery>,
) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let p: Proxy = ctx.api.get(&format!("/api/v1/proxies/{}", q(&id))).await?;
    let configs: Vec<Config> = ctx.api.get("/api/v1/configs").await?;
    let names: HashMap<String, String> = configs
        .iter()
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    let available: SeriesReply = ctx
        .api
        .get(&format!("/api/v1/proxies/{}/stats", q(&id)))
        .await
        .unwrap_or_default();
    let mut metrics = available.available_metrics.clone();
    metrics.sort_by_key(|m| (metric_label(m) == *m, m.clone()));
    let mut charts = Vec::new();
    for m in metrics.iter().take(6) {
        let s: SeriesReply = ctx
            .api
            .get(&format!("/api/v1/proxies/{}/stats?metric={}", q(&id), q(m)))
            .await
            .unwrap_or_default();
        let points: Vec<(i64, f64)> = match s.kind {
            Some(MetricKind::Counter) => s
                .points
                .iter()
                .filter_map(|p| p.rate_per_s.map(|r| (p.t_ms, r)))
                .collect(),
            _ => s.points.iter().map(|p| (p.t_ms, p.last)).collect(),
        };
        charts.push(chart_view(m, s.kind, points));
    }
    let logs: Logs = ctx
        .api
        .get(&format!("/api/v1/proxies/{}/logs", q(&id)))
        .await
        .unwrap_or_default();
    let (capture_open, capture_text) = capture_text(&logs);
    let flash = match sq.msg.as_str() {
        "capture" => {
            "Log capture started. Lines appear below as the agent ships them (it picks the request up on its next sync)."
        }
        "revoked" => "Credential revoked: this agent is refused until it enrolls again.",
        _ => "",
    };
    page(&DetailPage {
        c: ctx.chrome(&me, "proxies").with_flash(flash),
        r: row(&p, &names),
        enrolled: when(&p.enrolled_at),
        last_seen_at: p
            .last_seen_at
            .as_deref()
            .map(when)
            .unwrap_or_else(|| "never".into()),
        p,
        charts,
        capture_open,
        capture_text,
        lines: lines_of(&logs),
        next_after: logs.next_after,
    })
}

/// Cursor of the live view.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct AfterQuery {
    after: i64,
}

/// `GET /proxies/{id}/logs?after=N`: the new lines and the next poller (htmx fragment).
pub async fn log_lines(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(a): Query<AfterQuery>,
) -> Result<Response, UiError> {
    ctx.me().await?;
    let logs: Logs = ctx
        .api
        .get(&format!(
            "/api/v1/proxies/{}/logs?after={}",
            q(&id),
            a.after
        ))
        .await?;
    let (capture_open, capture_text) = capture_text(&logs);
    let fragment = LinesFragment {
        id,
        lines: lines_of(&logs),
        next_after: logs.next_after.max(a.after),
        capture_open,
        capture_text,
    };
    Ok(Html(fragment.render()?).into_response())
}

/// `POST /proxies/{id}/capture`.
pub async fn capture(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    let minutes: u32 = form.get("minutes").trim().parse().map_err(|_| {
        UiError::Bad(format!(
            "minutes: {:?} is not a whole number of minutes",
            form.get("minutes")
        ))
    })?;
    form.ctx
        .api
        .call(
            axum::http::Method::POST,
            &format!("/api/v1/proxies/{}/logs", q(&id)),
            Some(&json!({"duration_minutes": minutes})),
        )
        .await
        .ok()?;
    Ok(see_other(&format!("/proxies/{id}?msg=capture#logs")))
}

/// `POST /proxies/enroll/{id}/revoke`: an unused enrollment token stops working.
pub async fn revoke_enrollment(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    form.ctx
        .api
        .call(
            axum::http::Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{}", q(&id)),
            None,
        )
        .await
        .ok()?;
    Ok(see_other("/proxies#enroll"))
}

/// `POST /proxies/{id}/revoke`: the proxy's agent credential stops working (decommissioning).
pub async fn revoke(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    form.ctx
        .api
        .call(
            axum::http::Method::POST,
            &format!("/api/v1/proxies/{}/revoke", q(&id)),
            None,
        )
        .await
        .ok()?;
    Ok(see_other(&format!("/proxies/{id}?msg=revoked")))
}
