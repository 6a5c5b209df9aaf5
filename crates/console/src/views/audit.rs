//! The audit trail: filterable by actor, action, entity and time, newest first, with old and
//! new values side by side.

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use serde::Deserialize;

use crate::api::q;
use crate::ctx::{Chrome, Ctx, UiError, page};
use crate::model::AuditPage;
use crate::views::{pretty, when};

/// Filters (passed through to `GET /api/v1/audit`).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub struct Filters {
    /// Actor name.
    pub actor: String,
    /// Action, e.g. `config.approve`.
    pub action: String,
    /// Entity id.
    pub entity_id: String,
    /// From (RFC 3339 or `YYYY-MM-DDTHH:MM` from a datetime input, taken as UTC).
    pub since: String,
    /// Until.
    pub until: String,
    /// Page cursor.
    pub before: String,
}

/// A `datetime-local` value (`2026-11-21T10:00`) as RFC 3339 UTC; anything else unchanged.
pub fn as_rfc3339(v: &str) -> String {
    let v = v.trim();
    if v.len() == 16 && v.as_bytes().get(10) == Some(&b'T') {
        format!("{v}:00Z")
    } else if v.len() == 19 && v.as_bytes().get(10) == Some(&b'T') {
        format!("{v}Z")
    } else {
        v.to_string()
    }
}

impl Filters {
    /// The API query string.
    pub fn api_query(&self) -> String {
        let mut parts = vec!["limit=50".to_string()];
        for (k, v) in [
            ("actor", self.actor.trim().to_string()),
            ("action", self.action.trim().to_string()),
            ("entity_id", self.entity_id.trim().to_string()),
            ("since", as_rfc3339(&self.since)),
            ("until", as_rfc3339(&self.until)),
            ("before", self.before.trim().to_string()),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", q(&v)));
            }
        }
        parts.join("&")
    }

    /// This page's query with another cursor.
    pub fn with_before(&self, before: i64) -> String {
        format!(
            "actor={}&action={}&entity_id={}&since={}&until={}&before={before}",
            q(&self.actor),
            q(&self.action),
            q(&self.entity_id),
            q(&self.since),
            q(&self.until)
        )
    }

    /// Whether any filter is set.
    pub fn any(&self) -> bool {
        !(self.actor.is_empty()
            && self.action.is_empty()
            && self.entity_id.is_empty()
            && self.since.is_empty()
            && self.until.is_empty())
    }
}

struct Row {
    id: i64,
    at: String,
    actor: String,
    action: String,
    entity: String,
    entity_id: String,
    old: String,
    new: String,
    request_id: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct ListPage {
    c: Chrome,
    f: Filters,
    rows: Vec<Row>,
    older: String,
    error: String,
}

/// `GET /audit`.
pub async fn list(ctx: Ctx, Query(f): Query<Filters>) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let (rows, older, error) = match ctx
        .api
        .get::<AuditPage>(&format!("/api/v1/audit?{}", f.api_query()))
        .await
    {
        Ok(p) => (
            p.items
                .iter()
                .map(|e| Row {
                    id: e.id,
                    at: when(&e.at),
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    entity: e.entity_type.clone(),
                    entity_id: e.entity_id.clone().unwrap_or_default(),
                    old: e.old_value.as_ref().map(pretty).unwrap_or_default(),
                    new: e.new_value.as_ref().map(pretty).unwrap_or_default(),
                    request_id: e.request_id.clone().unwrap_or_default(),
                })
                .collect(),
            p.next_before.map(|b| f.with_before(b)).unwrap_or_default(),
            String::new(),
        ),
        // A bad filter (e.g. an unparsable time) is shown on the page, not as an error page.
        Err(failure) if failure.status.is_client_error() && failure.status.as_u16() != 401 => {
            (Vec::new(), String::new(), failure.message())
        }
        Err(failure) => return Err(failure.into()),
    };
    page(&ListPage {
        c: ctx.chrome(&me, "audit"),
        f,
        rows,
        older,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_the_api_query() {
        let f = Filters {
            actor: " admin1 ".into(),
            action: "config.approve".into(),
            since: "2026-11-21T10:00".into(),
            ..Filters::default()
        };
        assert_eq!(
            f.api_query(),
            "limit=50&actor=admin1&action=config.approve&since=2026-11-21T10%3A00%3A00Z"
        );
        assert!(f.any());
        assert!(!Filters::default().any());
        assert_eq!(as_rfc3339("2026-11-21T10:00:05"), "2026-11-21T10:00:05Z");
        assert_eq!(as_rfc3339("1700000000"), "1700000000");
    }
}
