//! Configs: list, create from the default template, the rule editor, explain, rendered-file
//! preview, proxy assignment, submit → approve (a confirmation page as the second, conscious
//! step) / reject with a reason, version history, diff, restore.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Api, ApiFailure, q};
use crate::ctx::{Chrome, Ctx, Posted, UiError, page, require_admin, see_other};
use crate::editor::{
    EditorForm, ErrorMap, FAILOVER_POLICIES, FieldError, MATCH_KINDS, field_id, place_errors,
};
use crate::model::{Config, ConfigDetail, Diff, Me, Proxy, User, Version, approval_block};
use crate::views::{DiffLine, diff_lines, short_hash, when};

/// User id → name (ids when the list is not readable).
async fn user_names(api: &Api) -> HashMap<String, String> {
    api.get::<Vec<User>>("/api/v1/users")
        .await
        .map(|us| us.into_iter().map(|u| (u.id, u.username)).collect())
        .unwrap_or_default()
}

fn name_of(names: &HashMap<String, String>, id: Option<&str>) -> String {
    match id {
        Some(id) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
        None => "—".into(),
    }
}

fn status_label(s: &str) -> &'static str {
    match s {
        "draft" => "Draft",
        "pending_approval" => "Pending approval",
        "active" => "Active",
        "superseded" => "Superseded",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------- list

#[derive(Template)]
#[template(path = "configs.html")]
struct ListPage {
    c: Chrome,
    configs: Vec<Config>,
}

/// `GET /configs`.
pub async fn list(ctx: Ctx) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let configs: Vec<Config> = ctx.api.get("/api/v1/configs").await?;
    page(&ListPage {
        c: ctx.chrome(&me, "configs"),
        configs,
    })
}

// ---------------------------------------------------------------- create

#[derive(Template)]
#[template(path = "config_new.html")]
struct NewPage {
    c: Chrome,
    name: String,
    description: String,
    error: String,
    template_rules: Vec<(String, String, String)>,
}

fn template_rules() -> Vec<(String, String, String)> {
    let p = serde_json::to_value(apm_policy::template::default_policy()).unwrap_or(Value::Null);
    let mut rows: Vec<(String, String, String)> = p["rules"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    (
                        r["match"].as_str().unwrap_or_default().replace('_', " "),
                        r["value"].as_str().unwrap_or_default().to_string(),
                        r["action"].as_str().unwrap_or_default().to_uppercase(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let parents: Vec<String> = p["parents"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|x| format!("{}:{}", x["host"].as_str().unwrap_or(""), x["port"]))
                .collect()
        })
        .unwrap_or_default();
    rows.push((
        "anything else".into(),
        parents.join(", then "),
        p["default_action"]
            .as_str()
            .unwrap_or_default()
            .to_uppercase(),
    ));
    rows
}

/// `GET /configs/new`.
pub async fn new_form(ctx: Ctx) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    require_admin(&me)?;
    page(&NewPage {
        c: ctx.chrome(&me, "configs"),
        name: String::new(),
        description: String::new(),
        error: String::new(),
        template_rules: template_rules(),
    })
}

/// `POST /configs/new`.
pub async fn create(form: Posted) -> Result<Response, UiError> {
    let name = form.get("name");
    let description = form.get("description");
    let template: Value = form.ctx.api.get("/api/v1/policy/template").await?;
    let reply = form
        .ctx
        .api
        .call(
            Method::POST,
            "/api/v1/configs",
            Some(&json!({"name": name, "description": description, "policy": template})),
        )
        .await;
    match reply.json::<ConfigDetail>() {
        Ok(created) => Ok(see_other(&format!(
            "/configs/{}/edit?msg=created",
            created.config.id
        ))),
        Err(f)
            if f.status == StatusCode::UNPROCESSABLE_ENTITY || f.status == StatusCode::CONFLICT =>
        {
            let me = form.ctx.me().await?;
            let mut response = page(&NewPage {
                c: form.ctx.chrome(&me, "configs"),
                name,
                description,
                error: f.message(),
                template_rules: template_rules(),
            })?;
            *response.status_mut() = f.status;
            Ok(response)
        }
        Err(f) => Err(f.into()),
    }
}

// ---------------------------------------------------------------- show

struct VersionRow {
    version: i64,
    status: String,
    status_label: &'static str,
    created_at: String,
    created_by: String,
    approved: String,
    hash9: String,
    restored_from: String,
    reject_reason: String,
}

struct ProxyPick {
    id: String,
    hostname: String,
    elsewhere: String,
}

struct FileView {
    name: String,
    id: String,
    text: String,
}

#[derive(Template)]
#[template(path = "config.html")]
struct ShowPage {
    c: Chrome,
    d: ConfigDetail,
    status_label: &'static str,
    working: Option<VersionRow>,
    active: Option<VersionRow>,
    assigned: Vec<(String, String, String)>,
    available: Vec<ProxyPick>,
    files9: Vec<FileView>,
    files10: Vec<FileView>,
    preview_of: String,
    rules: Vec<(usize, String, String, String, String)>,
    parents: String,
    failover: String,
    /// Why the caller may not approve the pending version (empty: they may).
    approve_block: String,
}

/// [`approval_block`] for the caller and a config's pending version, if any.
fn approve_block_of(me: &Me, d: &ConfigDetail, names: &HashMap<String, String>) -> String {
    d.working
        .as_ref()
        .filter(|w| w.status == "pending_approval")
        .and_then(|w| {
            approval_block(
                &me.approval_mode,
                &me.user.id,
                w,
                &name_of(names, w.submitted_by.as_deref()),
            )
        })
        .unwrap_or_default()
}

fn version_row(v: &Version, names: &HashMap<String, String>) -> VersionRow {
    VersionRow {
        version: v.version,
        status: v.status.clone(),
        status_label: status_label(&v.status),
        created_at: when(&v.created_at),
        created_by: name_of(names, Some(&v.created_by)),
        approved: match (&v.approved_by, &v.approved_at) {
            (Some(by), Some(at)) => format!("{} by {}", when(at), name_of(names, Some(by))),
            _ => String::new(),
        },
        hash9: short_hash(v.hashes.get("9").map(String::as_str)),
        restored_from: v.restored_from.map(|r| format!("v{r}")).unwrap_or_default(),
        reject_reason: v.reject_reason.clone().unwrap_or_default(),
    }
}

/// Rendered ATS files of a policy document (pure; the same renderer the server uses).
pub fn rendered(
    policy: &Value,
    ats: apm_policy::AtsMajor,
) -> Result<Vec<(String, String)>, String> {
    let p: apm_policy::Policy =
        serde_json::from_value(policy.clone()).map_err(|e| e.to_string())?;
    let valid = p.validate().map_err(|e| e.to_string())?;
    let bundle = apm_policy::render(&valid, ats);
    Ok(bundle.files.into_iter().collect())
}

fn files(policy: &Value, ats: apm_policy::AtsMajor, tag: &str) -> Vec<FileView> {
    match rendered(policy, ats) {
        Ok(files) => files
            .into_iter()
            .map(|(name, text)| FileView {
                id: format!("file-{tag}-{}", name.replace('.', "-")),
                name,
                text,
            })
            .collect(),
        Err(e) => vec![FileView {
            name: "error".into(),
            id: format!("file-{tag}-error"),
            text: e,
        }],
    }
}

/// Query of the config page.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct MsgQuery {
    msg: String,
}

fn flash(msg: &str) -> &'static str {
    match msg {
        "saved" => "Draft saved.",
        "created" => {
            "Config created from the default template. Adjust it, save, then submit it for approval."
        }
        "submitted" => {
            "Submitted for approval. Approve it (a second, explicit confirmation) or reject it with a reason."
        }
        "approved" => {
            "Approved: this version is now active and is being distributed to the assigned proxies."
        }
        "rejected" => "Rejected: the version is back to draft with your reason attached.",
        "assigned" => "Proxy assignment updated.",
        "restored" => "Old version restored as a new draft.",
        _ => "",
    }
}

/// `GET /configs/{id}`.
pub async fn show(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(mq): Query<MsgQuery>,
) -> Result<Response, UiError> {
    let who = ctx.whoami().await?;
    let me = who.user.clone();
    let d: ConfigDetail = ctx.api.get(&format!("/api/v1/configs/{}", q(&id))).await?;
    let proxies: Vec<Proxy> = ctx.api.get("/api/v1/proxies").await?;
    let configs: Vec<Config> = ctx.api.get("/api/v1/configs").await?;
    let config_names: HashMap<String, String> =
        configs.into_iter().map(|c| (c.id, c.name)).collect();
    let names = user_names(&ctx.api).await;
    let shown = d.working.as_ref().or(d.active.as_ref());
    let policy = shown.map(|v| v.policy.clone()).unwrap_or(Value::Null);
    let preview_of = shown
        .map(|v| {
            format!(
                "version {} ({})",
                v.version,
                status_label(&v.status).to_lowercase()
            )
        })
        .unwrap_or_default();
    let by_id: HashMap<&str, &Proxy> = proxies.iter().map(|p| (p.id.as_str(), p)).collect();
    let assigned = d
        .proxies
        .iter()
        .map(|r| {
            let sync = match by_id.get(r.id.as_str()) {
                Some(p) if p.in_sync => "in sync".to_string(),
                Some(p) if p.desired_hash.is_some() && p.last_error.is_some() => format!(
                    "apply failed (runs {}): {}",
                    short_hash(p.applied_hash.as_deref()),
                    p.last_error.as_deref().unwrap_or_default()
                ),
                Some(p) if p.desired_hash.is_some() => {
                    format!("applying (runs {})", short_hash(p.applied_hash.as_deref()))
                }
                _ => "no active version yet".to_string(),
            };
            (r.id.clone(), r.hostname.clone(), sync)
        })
        .collect();
    let available = proxies
        .iter()
        .filter(|p| !p.revoked && p.config_id.as_deref() != Some(id.as_str()))
        .map(|p| ProxyPick {
            id: p.id.clone(),
            hostname: p.hostname.clone(),
            elsewhere: p
                .config_id
                .as_ref()
                .map(|c| config_names.get(c).cloned().unwrap_or_else(|| c.clone()))
                .unwrap_or_default(),
        })
        .collect();
    let form = EditorForm::from_policy(&policy);
    let rules = form
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                i,
                r.kind.replace('_', " "),
                r.value.clone(),
                r.action.to_uppercase(),
                r.comment.clone(),
            )
        })
        .collect();
    let parents = form
        .parents
        .iter()
        .map(|p| format!("{}:{}", p.host, p.port))
        .collect::<Vec<_>>()
        .join(" → ");
    let failover = format!(
        "{}; fail threshold {}, retry after {} s, {} connect attempts in total, {} per parent, {} s connect timeout",
        FAILOVER_POLICIES
            .iter()
            .find(|(k, _)| *k == form.failover.policy)
            .map(|(_, l)| *l)
            .unwrap_or(form.failover.policy.as_str()),
        form.failover.fail_threshold,
        form.failover.retry_time_s,
        form.failover.total_connect_attempts,
        form.failover.per_parent_connect_attempts,
        form.failover.connect_timeout_s
    );
    let approve_block = approve_block_of(&who, &d, &names);
    // The generic "approve it" hint would be wrong for someone who may not approve.
    let notice = match (mq.msg.as_str(), approve_block.is_empty()) {
        ("submitted", false) => {
            "Submitted for approval. On this server another admin approves it (four-eyes rule)."
        }
        (msg, _) => flash(msg),
    };
    page(&ShowPage {
        c: ctx.chrome(&me, "configs").with_flash(notice),
        status_label: status_label(&d.config.status),
        working: d.working.as_ref().map(|v| version_row(v, &names)),
        active: d.active.as_ref().map(|v| version_row(v, &names)),
        assigned,
        available,
        files9: files(&policy, apm_policy::AtsMajor::V9, "9"),
        files10: files(&policy, apm_policy::AtsMajor::V10, "10"),
        preview_of,
        rules,
        parents,
        failover,
        approve_block,
        d,
    })
}

// ---------------------------------------------------------------- editor

#[derive(Template)]
#[template(path = "config_edit.html")]
struct EditPage {
    c: Chrome,
    id: String,
    name: String,
    description: String,
    editing: String,
    f: EditorForm,
    errors: ErrorMap,
    error_summary: String,
    focus: String,
}

impl EditPage {
    fn label_of(&self, name: impl AsRef<str>) -> String {
        crate::editor::field_label(name.as_ref())
    }
    fn id_of(&self, name: impl AsRef<str>) -> String {
        field_id(name.as_ref())
    }
    fn errs(&self, name: impl AsRef<str>) -> Vec<String> {
        self.errors.get(name.as_ref())
    }
    fn bad(&self, name: impl AsRef<str>) -> bool {
        self.errors.has(name.as_ref())
    }
    fn focus_on(&self, name: impl AsRef<str>) -> bool {
        self.focus == name.as_ref()
    }
    fn selected(&self, value: &str, option: &str) -> &'static str {
        if value == option { "selected" } else { "" }
    }
    fn match_kinds(&self) -> &'static [(&'static str, &'static str)] {
        &MATCH_KINDS
    }
    fn failover_policies(&self) -> &'static [(&'static str, &'static str)] {
        &FAILOVER_POLICIES
    }
    fn rule_name(&self, i: impl std::fmt::Display, field: &str) -> String {
        format!("rules[{i}].{field}")
    }
    fn parent_name(&self, i: impl std::fmt::Display, field: &str) -> String {
        format!("parents[{i}].{field}")
    }
}

fn editing_label(d: &ConfigDetail) -> String {
    match (&d.working, &d.active) {
        (Some(w), _) => format!("Editing draft version {}", w.version),
        (None, Some(a)) => format!(
            "Version {} is active. Saving creates draft version {} (the active one keeps running until the new one is approved).",
            a.version,
            a.version + 1
        ),
        (None, None) => "New draft".into(),
    }
}

/// `GET /configs/{id}/edit`.
pub async fn edit_form(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(mq): Query<MsgQuery>,
) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    require_admin(&me)?;
    let d: ConfigDetail = ctx.api.get(&format!("/api/v1/configs/{}", q(&id))).await?;
    if let Some(w) = &d.working
        && w.status == "pending_approval"
    {
        return Err(UiError::Api(ApiFailure {
            status: StatusCode::CONFLICT,
            problem: crate::api::Problem {
                title: "Version is pending approval".into(),
                detail: format!(
                    "Version {} of {:?} is waiting for approval and cannot be edited. Reject it (with a reason) to edit it again.",
                    w.version, d.config.name
                ),
                current_state: Some("pending_approval".into()),
                ..Default::default()
            },
        }));
    }
    let policy = d
        .working
        .as_ref()
        .or(d.active.as_ref())
        .map(|v| v.policy.clone())
        .unwrap_or(Value::Null);
    page(&EditPage {
        c: ctx.chrome(&me, "configs").with_flash(flash(&mq.msg)),
        id: d.config.id.clone(),
        name: d.config.name.clone(),
        description: d.config.description.clone(),
        editing: editing_label(&d),
        f: EditorForm::from_policy(&policy),
        errors: ErrorMap::default(),
        error_summary: String::new(),
        focus: String::new(),
    })
}

/// `POST /configs/{id}/edit`: a structural edit (re-render, nothing saved) or `op=save`.
pub async fn edit(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    let me = form.ctx.me().await?;
    let mut f = EditorForm::from_pairs(&form.fields);
    let op = form.get("op");
    let name = form.get("name");
    let description = form.get("description");
    let d: ConfigDetail = form
        .ctx
        .api
        .get(&format!("/api/v1/configs/{}", q(&id)))
        .await?;
    let render = |f: EditorForm, errors: ErrorMap, summary: String, focus: String| EditPage {
        c: form.ctx.chrome(&me, "configs"),
        id: id.clone(),
        name: name.clone(),
        description: description.clone(),
        editing: editing_label(&d),
        f,
        errors,
        error_summary: summary,
        focus,
    };
    if op != "save" {
        let focus = f.apply(&op).unwrap_or_default();
        return page(&render(f, ErrorMap::default(), String::new(), focus));
    }
    let mut body = json!({"policy": f.to_policy()});
    if name != d.config.name {
        body["name"] = json!(name);
    }
    if description != d.config.description {
        body["description"] = json!(description);
    }
    let reply = form
        .ctx
        .api
        .call(
            Method::PUT,
            &format!("/api/v1/configs/{}", q(&id)),
            Some(&body),
        )
        .await;
    if reply.status.is_success() {
        return Ok(see_other(&format!("/configs/{id}?msg=saved")));
    }
    let failure = reply.failure();
    match failure.status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT | StatusCode::BAD_REQUEST => {
            let located: Vec<FieldError> = failure
                .problem
                .errors
                .iter()
                .map(|e| FieldError {
                    path: e.path.clone(),
                    message: e.message.clone(),
                })
                .collect();
            let errors = place_errors(&f, &located);
            let focus = errors.by_field.keys().next().cloned().unwrap_or_default();
            let summary = if located.is_empty() {
                failure.message()
            } else {
                format!(
                    "Not saved: {} problem{} to fix, marked next to the fields below.",
                    located.len(),
                    if located.len() == 1 { "" } else { "s" }
                )
            };
            let mut response = page(&render(f, errors, summary, focus))?;
            *response.status_mut() = failure.status;
            Ok(response)
        }
        _ => Err(failure.into()),
    }
}

// ---------------------------------------------------------------- explain

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainFragment {
    error: String,
    url: String,
    action: String,
    parents: String,
    rule: String,
    notes: Vec<String>,
    of: String,
}

/// Explains a URL against a policy document.
pub fn explain_policy(policy: &Value, url: &str) -> Result<apm_policy::Explanation, String> {
    let p: apm_policy::Policy = serde_json::from_value(policy.clone())
        .map_err(|e| format!("the policy cannot be read: {e}"))?;
    let valid = p
        .validate()
        .map_err(|e| format!("the saved policy is not valid: {e}"))?;
    let target = apm_policy::Target::parse(url.trim()).map_err(|e| e.to_string())?;
    Ok(apm_policy::explain(&valid, &target, &[]))
}

/// `POST /configs/{id}/explain` (htmx fragment; also works as a plain form post).
pub async fn explain(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    form.ctx.me().await?;
    let url = form.get("url");
    let d: ConfigDetail = form
        .ctx
        .api
        .get(&format!("/api/v1/configs/{}", q(&id)))
        .await?;
    let shown = d.working.as_ref().or(d.active.as_ref());
    let of = shown
        .map(|v| format!("version {}", v.version))
        .unwrap_or_default();
    let policy = shown.map(|v| v.policy.clone()).unwrap_or(Value::Null);
    let fragment = match explain_policy(&policy, &url) {
        Ok(x) => ExplainFragment {
            error: String::new(),
            url: x.target.clone(),
            action: format!("{:?}", x.action).to_uppercase(),
            parents: x.parents.join(" → "),
            rule: match x.rule {
                Some(i) => format!("rule {} — {}", i + 1, x.rule_text),
                None => x.rule_text.clone(),
            },
            notes: x.notes.clone(),
            of,
        },
        Err(e) => ExplainFragment {
            error: e,
            url,
            action: String::new(),
            parents: String::new(),
            rule: String::new(),
            notes: Vec::new(),
            of,
        },
    };
    Ok(Html(fragment.render()?).into_response())
}

// ---------------------------------------------------------------- assign

/// `POST /configs/{id}/proxies`: `proxy_id` checkboxes to add, or `remove=<proxy id>`.
pub async fn assign(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    let remove = form.get("remove");
    if !remove.is_empty() {
        form.ctx
            .api
            .call(
                Method::DELETE,
                &format!("/api/v1/configs/{}/proxies/{}", q(&id), q(&remove)),
                None,
            )
            .await
            .ok()?;
    } else {
        let ids = form.all("proxy_id");
        form.ctx
            .api
            .call(
                Method::POST,
                &format!("/api/v1/configs/{}/proxies", q(&id)),
                Some(&json!({"proxy_ids": ids})),
            )
            .await
            .ok()?;
    }
    Ok(see_other(&format!("/configs/{id}?msg=assigned#proxies")))
}

// ---------------------------------------------------------------- lifecycle

/// `POST /configs/{id}/submit`.
pub async fn submit(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    form.ctx
        .api
        .call(
            Method::POST,
            &format!("/api/v1/configs/{}/submit", q(&id)),
            None,
        )
        .await
        .ok()?;
    Ok(see_other(&format!("/configs/{id}?msg=submitted")))
}

#[derive(Template)]
#[template(path = "config_approve.html")]
struct ApprovePage {
    c: Chrome,
    d: ConfigDetail,
    pending: VersionRow,
    submitted: String,
    hash9: String,
    hash10: String,
    diff: Vec<DiffLine>,
    against: String,
    error: String,
    rules: Vec<(usize, String, String, String)>,
    parents: String,
    /// Why the caller may not approve (empty: they may); the form is then not offered.
    blocked: String,
}

async fn approve_page(ctx: &Ctx, who: &Me, id: &str, error: String) -> Result<Response, UiError> {
    let d: ConfigDetail = ctx.api.get(&format!("/api/v1/configs/{}", q(id))).await?;
    let Some(pending) = d.working.clone().filter(|w| w.status == "pending_approval") else {
        return Err(UiError::Api(ApiFailure {
            status: StatusCode::CONFLICT,
            problem: crate::api::Problem {
                title: "Nothing to approve".into(),
                detail: format!(
                    "{:?} has no version waiting for approval (status: {}).",
                    d.config.name, d.config.status
                ),
                current_state: Some(d.config.status.clone()),
                ..Default::default()
            },
        }));
    };
    let names = user_names(&ctx.api).await;
    let (diff, against) = match &d.active {
        Some(a) => {
            let diff: Diff = ctx
                .api
                .get(&format!(
                    "/api/v1/configs/{}/diff?from={}&to={}",
                    q(id),
                    a.version,
                    pending.version
                ))
                .await?;
            (
                diff_lines(&diff.policy_diff),
                format!("active version {}", a.version),
            )
        }
        None => (Vec::new(), String::new()),
    };
    let form = EditorForm::from_policy(&pending.policy);
    let rules = form
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                i + 1,
                r.kind.replace('_', " "),
                r.value.clone(),
                r.action.to_uppercase(),
            )
        })
        .collect();
    let parents = form
        .parents
        .iter()
        .map(|p| format!("{}:{}", p.host, p.port))
        .collect::<Vec<_>>()
        .join(" → ");
    let blocked = approve_block_of(who, &d, &names);
    let mut response = page(&ApprovePage {
        c: ctx.chrome(&who.user, "configs"),
        blocked,
        rules,
        parents,
        submitted: match (&pending.submitted_by, &pending.submitted_at) {
            (Some(by), Some(at)) => format!("{} by {}", when(at), name_of(&names, Some(by))),
            _ => "—".into(),
        },
        hash9: pending.hashes.get("9").cloned().unwrap_or_default(),
        hash10: pending.hashes.get("10").cloned().unwrap_or_default(),
        pending: version_row(&pending, &names),
        diff,
        against,
        error: error.clone(),
        d,
    })?;
    if !error.is_empty() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

/// `GET /configs/{id}/approve`: the confirmation page (step two of two).
pub async fn approve_form(ctx: Ctx, Path(id): Path<String>) -> Result<Response, UiError> {
    let who = ctx.whoami().await?;
    require_admin(&who.user)?;
    approve_page(&ctx, &who, &id, String::new()).await
}

/// `POST /configs/{id}/approve`: only with the explicit confirmation ticked.
pub async fn approve(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    if form.get("confirm") != "yes" {
        let who = form.ctx.whoami().await?;
        return approve_page(
            &form.ctx,
            &who,
            &id,
            "Tick the confirmation box to approve: approval starts distributing this version to every assigned proxy.".into(),
        )
        .await;
    }
    form.ctx
        .api
        .call(
            Method::POST,
            &format!("/api/v1/configs/{}/approve", q(&id)),
            None,
        )
        .await
        .ok()?;
    Ok(see_other(&format!("/configs/{id}?msg=approved")))
}

/// `POST /configs/{id}/reject`.
pub async fn reject(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    form.ctx
        .api
        .call(
            Method::POST,
            &format!("/api/v1/configs/{}/reject", q(&id)),
            Some(&json!({"reason": form.get("reason")})),
        )
        .await
        .ok()?;
    Ok(see_other(&format!("/configs/{id}?msg=rejected")))
}

// ---------------------------------------------------------------- history

#[derive(Template)]
#[template(path = "config_versions.html")]
struct VersionsPage {
    c: Chrome,
    d: ConfigDetail,
    versions: Vec<VersionRow>,
    from: i64,
    to: i64,
}

/// `GET /configs/{id}/versions`.
pub async fn versions(ctx: Ctx, Path(id): Path<String>) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let d: ConfigDetail = ctx.api.get(&format!("/api/v1/configs/{}", q(&id))).await?;
    let vs: Vec<Version> = ctx
        .api
        .get(&format!("/api/v1/configs/{}/versions", q(&id)))
        .await?;
    let names = user_names(&ctx.api).await;
    let to = vs.first().map(|v| v.version).unwrap_or(1);
    let from = vs.get(1).map(|v| v.version).unwrap_or(to);
    page(&VersionsPage {
        c: ctx.chrome(&me, "configs"),
        versions: vs.iter().map(|v| version_row(v, &names)).collect(),
        d,
        from,
        to,
    })
}

/// Diff query.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: i64,
    #[serde(default)]
    ats: Option<String>,
}

struct FileDiffView {
    name: String,
    status: String,
    lines: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "config_diff.html")]
struct DiffPage {
    c: Chrome,
    d: ConfigDetail,
    diff: Diff,
    policy: Vec<DiffLine>,
    files: Vec<FileDiffView>,
    ats: String,
}

/// `GET /configs/{id}/diff?from=&to=&ats=`.
pub async fn diff(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(dq): Query<DiffQuery>,
) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let d: ConfigDetail = ctx.api.get(&format!("/api/v1/configs/{}", q(&id))).await?;
    let ats = match dq.ats.as_deref() {
        Some("10") => "10",
        _ => "9",
    };
    let diff: Diff = ctx
        .api
        .get(&format!(
            "/api/v1/configs/{}/diff?from={}&to={}&ats={ats}",
            q(&id),
            dq.from,
            dq.to
        ))
        .await?;
    page(&DiffPage {
        c: ctx.chrome(&me, "configs"),
        policy: diff_lines(&diff.policy_diff),
        files: diff
            .files
            .iter()
            .map(|f| FileDiffView {
                name: f.name.clone(),
                status: f.status.clone(),
                lines: diff_lines(&f.diff),
            })
            .collect(),
        ats: ats.into(),
        diff,
        d,
    })
}

/// `POST /configs/{id}/versions/{version}/restore`.
pub async fn restore(
    Path((id, version)): Path<(String, i64)>,
    form: Posted,
) -> Result<Response, UiError> {
    form.ctx
        .api
        .call(
            Method::POST,
            &format!("/api/v1/configs/{}/versions/{version}/restore", q(&id)),
            None,
        )
        .await
        .ok()?;
    Ok(see_other(&format!("/configs/{id}?msg=restored")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_and_preview_use_the_policy_crate() {
        let policy = serde_json::to_value(apm_policy::template::default_policy()).expect("json");
        let x = explain_policy(&policy, "http://10.1.2.3/").expect("explain");
        assert_eq!(format!("{:?}", x.action), "Direct");
        let x = explain_policy(&policy, "https://example.com/").expect("explain");
        assert_eq!(format!("{:?}", x.action), "Parent");
        assert!(explain_policy(&policy, "").is_err());
        let files = rendered(&policy, apm_policy::AtsMajor::V9).expect("render");
        assert!(
            files
                .iter()
                .any(|(n, t)| n == "parent.config" && t.contains("dest_domain=."))
        );
        assert!(rendered(&json!({"nope": 1}), apm_policy::AtsMajor::V9).is_err());
    }

    #[test]
    fn template_summary_lists_rules_and_the_default() {
        let rows = template_rules();
        assert!(
            rows.iter()
                .any(|(_, v, a)| v == "10.0.0.0/8" && a == "DIRECT")
        );
        let last = rows.last().expect("default row");
        assert_eq!(last.0, "anything else");
        assert!(last.1.contains("10.96.215.26:3128"));
    }
}
