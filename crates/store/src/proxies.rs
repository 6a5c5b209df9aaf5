//! Enrollment tokens, proxies (agent identities and their reported state) and log-capture windows.

use sqlx::{AnyConnection, FromRow};

use crate::{Result, unique_as_conflict};

/// A token an admin hands to a new agent; exchanged once (or `max_uses` times) for a credential.
#[derive(Debug, Clone, FromRow)]
pub struct EnrollmentTokenRow {
    /// UUID.
    pub id: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// User id.
    pub created_by: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub expires_at: i64,
    /// None = unlimited until expiry.
    pub max_uses: Option<i64>,
    /// Times used.
    pub uses: i64,
    /// Epoch ms.
    pub revoked_at: Option<i64>,
    /// Free text.
    pub note: String,
}

/// Inserts an enrollment token.
pub async fn insert_enrollment_token(
    conn: &mut AnyConnection,
    t: &EnrollmentTokenRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, token_hash, created_by, created_at, expires_at, max_uses, uses, revoked_at, note)
         VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, $7)",
    )
    .bind(&t.id)
    .bind(&t.token_hash)
    .bind(&t.created_by)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.max_uses)
    .bind(&t.note)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every enrollment token, newest first.
pub async fn list_enrollment_tokens(conn: &mut AnyConnection) -> Result<Vec<EnrollmentTokenRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM enrollment_tokens ORDER BY created_at DESC, id")
            .fetch_all(conn)
            .await?,
    )
}

/// An enrollment token by id.
pub async fn get_enrollment_token(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<EnrollmentTokenRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM enrollment_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// An enrollment token by hash.
pub async fn find_enrollment_token(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<Option<EnrollmentTokenRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(conn)
            .await?,
    )
}

/// Consumes one use if the token is still usable at `now`; false otherwise. Conditional so that
/// concurrent enrollments cannot exceed `max_uses`.
pub async fn use_enrollment_token(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE enrollment_tokens SET uses = uses + 1
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2 AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Revokes an enrollment token; false when already revoked.
pub async fn revoke_enrollment_token(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE enrollment_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// A proxy: one enrolled agent identity and what it last reported.
#[derive(Debug, Clone, FromRow)]
pub struct ProxyRow {
    /// UUID.
    pub id: String,
    /// Unique hostname.
    pub hostname: String,
    /// SHA-256 hex of the agent credential.
    pub credential_hash: String,
    /// Epoch ms.
    pub enrolled_at: i64,
    /// Token used for the last enrollment.
    pub enrollment_token_id: Option<String>,
    /// Set when the credential is revoked.
    pub revoked_at: Option<i64>,
    /// Assigned config.
    pub config_id: Option<String>,
    /// ATS version as reported, e.g. "9.2.5".
    pub ats_version: Option<String>,
    /// OS as reported.
    pub os: Option<String>,
    /// CPU architecture as reported.
    pub arch: Option<String>,
    /// Hash the agent runs (confirmed by an ack).
    pub applied_hash: Option<String>,
    /// Last apply error.
    pub last_error: Option<String>,
    /// Hash whose apply failed.
    pub last_error_hash: Option<String>,
    /// Epoch ms.
    pub last_ack_at: Option<i64>,
    /// Last contact of any kind, epoch ms.
    pub last_seen_at: Option<i64>,
    /// Open log-capture window end, epoch ms.
    pub capture_until: Option<i64>,
}

impl ProxyRow {
    /// A freshly enrolled proxy: its identity and credential, nothing reported or assigned yet.
    pub fn enrolled(
        id: String,
        hostname: String,
        credential_hash: String,
        enrolled_at: i64,
        enrollment_token_id: Option<String>,
    ) -> ProxyRow {
        ProxyRow {
            id,
            hostname,
            credential_hash,
            enrolled_at,
            enrollment_token_id,
            revoked_at: None,
            config_id: None,
            ats_version: None,
            os: None,
            arch: None,
            applied_hash: None,
            last_error: None,
            last_error_hash: None,
            last_ack_at: None,
            last_seen_at: None,
            capture_until: None,
        }
    }
}

/// Inserts a proxy (first enrollment of a hostname).
pub async fn insert_proxy(conn: &mut AnyConnection, p: &ProxyRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO proxies (id, hostname, credential_hash, enrolled_at, enrollment_token_id, revoked_at, config_id)
         VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
    )
    .bind(&p.id)
    .bind(&p.hostname)
    .bind(&p.credential_hash)
    .bind(p.enrolled_at)
    .bind(&p.enrollment_token_id)
    .execute(conn)
    .await
    .map_err(|e| unique_as_conflict(e, format!("hostname {:?} was enrolled concurrently", p.hostname)))?;
    Ok(())
}

/// Replaces a proxy's credential (re-enrollment of a known hostname) and clears a revocation.
pub async fn rotate_credential(
    conn: &mut AnyConnection,
    id: &str,
    credential_hash: &str,
    token_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE proxies SET credential_hash = $2, enrollment_token_id = $3, enrolled_at = $4, revoked_at = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(credential_hash)
    .bind(token_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes a proxy's credential; false when already revoked.
pub async fn revoke_proxy(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool> {
    Ok(
        sqlx::query("UPDATE proxies SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// A proxy by id.
pub async fn get_proxy(conn: &mut AnyConnection, id: &str) -> Result<Option<ProxyRow>> {
    Ok(sqlx::query_as("SELECT * FROM proxies WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// A proxy by hostname.
pub async fn get_proxy_by_hostname(
    conn: &mut AnyConnection,
    hostname: &str,
) -> Result<Option<ProxyRow>> {
    Ok(sqlx::query_as("SELECT * FROM proxies WHERE hostname = $1")
        .bind(hostname)
        .fetch_optional(conn)
        .await?)
}

/// A proxy by credential hash.
pub async fn find_proxy_by_credential(
    conn: &mut AnyConnection,
    credential_hash: &str,
) -> Result<Option<ProxyRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM proxies WHERE credential_hash = $1")
            .bind(credential_hash)
            .fetch_optional(conn)
            .await?,
    )
}

/// Every proxy by hostname.
pub async fn list_proxies(conn: &mut AnyConnection) -> Result<Vec<ProxyRow>> {
    Ok(sqlx::query_as("SELECT * FROM proxies ORDER BY hostname")
        .fetch_all(conn)
        .await?)
}

/// The proxies assigned to a config.
pub async fn list_proxies_of_config(
    conn: &mut AnyConnection,
    config_id: &str,
) -> Result<Vec<ProxyRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM proxies WHERE config_id = $1 ORDER BY hostname")
            .bind(config_id)
            .fetch_all(conn)
            .await?,
    )
}

/// How many proxies are enrolled, revoked ones included (an index count, no rows read).
pub async fn count_proxies(conn: &mut AnyConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM proxies")
        .fetch_one(conn)
        .await?)
}

/// How many proxies are assigned to a config (an index count, no rows read).
pub async fn count_proxies_of_config(conn: &mut AnyConnection, config_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM proxies WHERE config_id = $1")
            .bind(config_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Id and hostname of the first `limit` proxies assigned to a config, by hostname (the two
/// columns a config's page lists; a fleet's full rows are far larger).
pub async fn list_proxy_refs_of_config(
    conn: &mut AnyConnection,
    config_id: &str,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, hostname FROM proxies WHERE config_id = $1 ORDER BY hostname LIMIT $2",
    )
    .bind(config_id)
    .bind(limit.max(0))
    .fetch_all(conn)
    .await?)
}

/// Sets (or clears) the config of a proxy.
pub async fn set_proxy_config(
    conn: &mut AnyConnection,
    id: &str,
    config_id: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE proxies SET config_id = $2 WHERE id = $1")
        .bind(id)
        .bind(config_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records what a proxy reported on sync (versions are only overwritten when reported).
pub async fn record_contact(
    conn: &mut AnyConnection,
    id: &str,
    ats_version: Option<&str>,
    os: Option<&str>,
    arch: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE proxies SET last_seen_at = $2, ats_version = COALESCE($3, ats_version),
            os = COALESCE($4, os), arch = COALESCE($5, arch) WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(ats_version)
    .bind(os)
    .bind(arch)
    .execute(conn)
    .await?;
    Ok(())
}

/// What one sync reported, for [`record_reports`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Proxy id.
    pub proxy_id: String,
    /// ATS version, if reported.
    pub ats_version: Option<String>,
    /// OS, if reported.
    pub os: Option<String>,
    /// CPU architecture, if reported.
    pub arch: Option<String>,
    /// Epoch ms.
    pub at: i64,
}

/// [`record_contact`] for many syncs in few statements: one per distinct reported
/// (version, OS, architecture, time) — a fleet reports the same few — in id order. A proxy that
/// appears twice keeps its last report.
pub async fn record_reports(conn: &mut AnyConnection, reports: &[Report]) -> Result<()> {
    type Key<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, i64);
    // Folded per proxy as sequential `record_contact`s would leave it: a field reported later
    // replaces an earlier one, a field left out keeps it; the last time wins.
    let mut last: std::collections::BTreeMap<&str, Report> = std::collections::BTreeMap::new();
    for r in reports {
        match last.get_mut(r.proxy_id.as_str()) {
            Some(seen) => {
                for (field, value) in [
                    (&mut seen.ats_version, &r.ats_version),
                    (&mut seen.os, &r.os),
                    (&mut seen.arch, &r.arch),
                ] {
                    if value.is_some() {
                        field.clone_from(value);
                    }
                }
                seen.at = r.at;
            }
            None => {
                last.insert(r.proxy_id.as_str(), r.clone());
            }
        }
    }
    let mut groups: std::collections::BTreeMap<Key<'_>, Vec<&str>> =
        std::collections::BTreeMap::new();
    for (id, r) in &last {
        groups
            .entry((
                r.ats_version.as_deref(),
                r.os.as_deref(),
                r.arch.as_deref(),
                r.at,
            ))
            .or_default()
            .push(*id);
    }
    let numbered = !conn.backend_name().eq_ignore_ascii_case("sqlite");
    for ((ats_version, os, arch, at), ids) in groups {
        for chunk in ids.chunks(500) {
            let mut list = String::with_capacity(chunk.len() * 6);
            for i in 0..chunk.len() {
                if i > 0 {
                    list.push_str(", ");
                }
                if numbered {
                    list.push_str(&format!("${}", i + 5));
                } else {
                    list.push('?');
                }
            }
            let p: [&str; 4] = if numbered {
                ["$1", "$2", "$3", "$4"]
            } else {
                ["?"; 4]
            };
            let sql = format!(
                "UPDATE proxies SET last_seen_at = {}, ats_version = COALESCE({}, ats_version),
                    os = COALESCE({}, os), arch = COALESCE({}, arch) WHERE id IN ({list})",
                p[0], p[1], p[2], p[3]
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(at)
                .bind(ats_version)
                .bind(os)
                .bind(arch);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Records that many proxies were seen at `now` (never moving a later time back), a few
/// statements for any number of proxies.
pub async fn record_contacts(conn: &mut AnyConnection, ids: &[String], now: i64) -> Result<()> {
    // SQLite gets anonymous `?` (numbered parameters bind in quadratic time there).
    let numbered = !conn.backend_name().eq_ignore_ascii_case("sqlite");
    for chunk in ids.chunks(500) {
        let mut list = String::with_capacity(chunk.len() * 6);
        for i in 0..chunk.len() {
            if i > 0 {
                list.push_str(", ");
            }
            if numbered {
                list.push_str(&format!("${}", i + 2));
            } else {
                list.push('?');
            }
        }
        let (t1, t2) = if numbered { ("$1", "$1") } else { ("?", "?") };
        let sql = format!(
            "UPDATE proxies SET last_seen_at = {t1} WHERE id IN ({list}) AND (last_seen_at IS NULL OR last_seen_at < {t2})"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for id in chunk {
            q = q.bind(id);
        }
        if !numbered {
            q = q.bind(now);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records an ack: the hash the agent now runs, and the error if the apply failed.
pub async fn record_ack(
    conn: &mut AnyConnection,
    id: &str,
    applied_hash: Option<&str>,
    error: Option<(&str, &str)>,
    now: i64,
) -> Result<()> {
    let (last_error, last_error_hash) = match error {
        Some((message, hash)) => (Some(message), Some(hash)),
        None => (None, None),
    };
    sqlx::query(
        "UPDATE proxies SET applied_hash = $2, last_error = $3, last_error_hash = $4, last_ack_at = $5, last_seen_at = $5
         WHERE id = $1",
    )
    .bind(id)
    .bind(applied_hash)
    .bind(last_error)
    .bind(last_error_hash)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// One agent's apply report, for [`record_acks`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// Proxy id.
    pub proxy_id: String,
    /// The hash it now runs (None: none).
    pub applied_hash: Option<String>,
    /// With a failed apply: the error and the hash that failed.
    pub error: Option<(String, String)>,
    /// Epoch ms.
    pub at: i64,
}

/// Records many acks in a few statements ([`record_ack`] for each, in order: when a proxy
/// appears twice, its last ack wins). Rows are written in id order.
pub async fn record_acks(conn: &mut AnyConnection, acks: &[Ack]) -> Result<()> {
    let mut last: std::collections::BTreeMap<&str, &Ack> = std::collections::BTreeMap::new();
    for a in acks {
        last.insert(a.proxy_id.as_str(), a);
    }
    let rows: Vec<&Ack> = last.into_values().collect();
    let numbered = !conn.backend_name().eq_ignore_ascii_case("sqlite");
    for chunk in rows.chunks(500) {
        let sql = format!(
            "WITH v (id, applied_hash, last_error, last_error_hash, at) AS (VALUES {})
             UPDATE proxies SET applied_hash = v.applied_hash, last_error = v.last_error,
                last_error_hash = v.last_error_hash, last_ack_at = v.at, last_seen_at = v.at
             FROM v WHERE proxies.id = v.id",
            crate::telemetry::values_list(chunk.len(), 5, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in chunk {
            let (message, hash) = match &a.error {
                Some((m, h)) => (Some(m.as_str()), Some(h.as_str())),
                None => (None, None),
            };
            q = q
                .bind(&a.proxy_id)
                .bind(a.applied_hash.as_deref())
                .bind(message)
                .bind(hash)
                .bind(a.at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A log-capture window.
#[derive(Debug, Clone, FromRow)]
pub struct LogCaptureRow {
    /// UUID.
    pub id: String,
    /// Proxy.
    pub proxy_id: String,
    /// User id.
    pub opened_by: String,
    /// Epoch ms.
    pub opened_at: i64,
    /// Epoch ms.
    pub until_at: i64,
}

/// Opens a capture window and records it on the proxy.
pub async fn open_capture(conn: &mut AnyConnection, c: &LogCaptureRow) -> Result<()> {
    sqlx::query("INSERT INTO log_captures (id, proxy_id, opened_by, opened_at, until_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&c.id)
        .bind(&c.proxy_id)
        .bind(&c.opened_by)
        .bind(c.opened_at)
        .bind(c.until_at)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE proxies SET capture_until = $2 WHERE id = $1")
        .bind(&c.proxy_id)
        .bind(c.until_at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The latest capture window of a proxy.
pub async fn latest_capture(
    conn: &mut AnyConnection,
    proxy_id: &str,
) -> Result<Option<LogCaptureRow>> {
    Ok(sqlx::query_as(
        "SELECT * FROM log_captures WHERE proxy_id = $1 ORDER BY opened_at DESC, id DESC LIMIT 1",
    )
    .bind(proxy_id)
    .fetch_optional(conn)
    .await?)
}
