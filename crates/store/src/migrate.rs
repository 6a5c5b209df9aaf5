//! Versioned migrations, one SQL text per backend per version, applied in order inside one
//! transaction each and recorded in `schema_migrations`. On PostgreSQL an advisory lock makes
//! several replicas starting at once apply each migration exactly once.
//!
//! Migrations are append-only: never edit a released one, add a new version.

use sqlx::Row;

use crate::{Backend, Db, Result, StoreError, now_ms};

/// One schema change, written for both engines.
pub struct Migration {
    /// Strictly increasing version number.
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// Statements for SQLite.
    pub sqlite: &'static [&'static str],
    /// Statements for PostgreSQL.
    pub postgres: &'static [&'static str],
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial schema",
    sqlite: &[
        "CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
            role TEXT NOT NULL, disabled BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL REFERENCES users(id),
            created_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, revoked_at BIGINT)",
        "CREATE TABLE api_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL REFERENCES users(id),
            name TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, last_used_at BIGINT, revoked_at BIGINT)",
        "CREATE TABLE configs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
            created_by TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, active_version BIGINT)",
        "CREATE TABLE config_versions (id TEXT PRIMARY KEY, config_id TEXT NOT NULL REFERENCES configs(id), version BIGINT NOT NULL,
            status TEXT NOT NULL, policy TEXT NOT NULL, hash_v9 TEXT NOT NULL, hash_v10 TEXT NOT NULL,
            created_by TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, editors TEXT NOT NULL,
            submitted_by TEXT, submitted_at BIGINT, approved_by TEXT, approved_at BIGINT,
            rejected_by TEXT, rejected_at BIGINT, reject_reason TEXT, restored_from BIGINT,
            UNIQUE (config_id, version))",
        "CREATE TABLE enrollment_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, max_uses BIGINT, uses BIGINT NOT NULL DEFAULT 0,
            revoked_at BIGINT, note TEXT NOT NULL)",
        "CREATE TABLE proxies (id TEXT PRIMARY KEY, hostname TEXT NOT NULL UNIQUE, credential_hash TEXT NOT NULL UNIQUE,
            enrolled_at BIGINT NOT NULL, enrollment_token_id TEXT, revoked_at BIGINT, config_id TEXT REFERENCES configs(id),
            ats_version TEXT, os TEXT, arch TEXT, applied_hash TEXT, last_error TEXT, last_error_hash TEXT,
            last_ack_at BIGINT, last_seen_at BIGINT, capture_until BIGINT)",
        "CREATE TABLE log_captures (id TEXT PRIMARY KEY, proxy_id TEXT NOT NULL REFERENCES proxies(id), opened_by TEXT NOT NULL,
            opened_at BIGINT NOT NULL, until_at BIGINT NOT NULL)",
        "CREATE TABLE proxy_log_lines (id INTEGER PRIMARY KEY AUTOINCREMENT, proxy_id TEXT NOT NULL REFERENCES proxies(id),
            capture_id TEXT, ts BIGINT NOT NULL, received_at BIGINT NOT NULL, line TEXT NOT NULL)",
        "CREATE INDEX proxy_log_lines_proxy ON proxy_log_lines (proxy_id, id)",
        "CREATE TABLE stats_raw (proxy_id TEXT NOT NULL REFERENCES proxies(id), metric TEXT NOT NULL, ts BIGINT NOT NULL,
            value DOUBLE PRECISION NOT NULL, PRIMARY KEY (proxy_id, metric, ts))",
        "CREATE TABLE stats_rollup (proxy_id TEXT NOT NULL REFERENCES proxies(id), metric TEXT NOT NULL, bucket BIGINT NOT NULL,
            count BIGINT NOT NULL, sum DOUBLE PRECISION NOT NULL, min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL,
            last DOUBLE PRECISION NOT NULL, last_ts BIGINT NOT NULL, PRIMARY KEY (proxy_id, metric, bucket))",
        "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at BIGINT NOT NULL, actor_id TEXT, actor TEXT NOT NULL,
            action TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id TEXT, old_value TEXT, new_value TEXT, request_id TEXT)",
        "CREATE INDEX audit_log_entity ON audit_log (entity_id, id)",
        "CREATE INDEX audit_log_at ON audit_log (at)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('sync_generation', 0)",
    ],
    postgres: &[
        "CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
            role TEXT NOT NULL, disabled BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL REFERENCES users(id),
            created_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, revoked_at BIGINT)",
        "CREATE TABLE api_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL REFERENCES users(id),
            name TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, last_used_at BIGINT, revoked_at BIGINT)",
        "CREATE TABLE configs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
            created_by TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, active_version BIGINT)",
        "CREATE TABLE config_versions (id TEXT PRIMARY KEY, config_id TEXT NOT NULL REFERENCES configs(id), version BIGINT NOT NULL,
            status TEXT NOT NULL, policy TEXT NOT NULL, hash_v9 TEXT NOT NULL, hash_v10 TEXT NOT NULL,
            created_by TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, editors TEXT NOT NULL,
            submitted_by TEXT, submitted_at BIGINT, approved_by TEXT, approved_at BIGINT,
            rejected_by TEXT, rejected_at BIGINT, reject_reason TEXT, restored_from BIGINT,
            UNIQUE (config_id, version))",
        "CREATE TABLE enrollment_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, max_uses BIGINT, uses BIGINT NOT NULL DEFAULT 0,
            revoked_at BIGINT, note TEXT NOT NULL)",
        "CREATE TABLE proxies (id TEXT PRIMARY KEY, hostname TEXT NOT NULL UNIQUE, credential_hash TEXT NOT NULL UNIQUE,
            enrolled_at BIGINT NOT NULL, enrollment_token_id TEXT, revoked_at BIGINT, config_id TEXT REFERENCES configs(id),
            ats_version TEXT, os TEXT, arch TEXT, applied_hash TEXT, last_error TEXT, last_error_hash TEXT,
            last_ack_at BIGINT, last_seen_at BIGINT, capture_until BIGINT)",
        "CREATE TABLE log_captures (id TEXT PRIMARY KEY, proxy_id TEXT NOT NULL REFERENCES proxies(id), opened_by TEXT NOT NULL,
            opened_at BIGINT NOT NULL, until_at BIGINT NOT NULL)",
        "CREATE TABLE proxy_log_lines (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, proxy_id TEXT NOT NULL REFERENCES proxies(id),
            capture_id TEXT, ts BIGINT NOT NULL, received_at BIGINT NOT NULL, line TEXT NOT NULL)",
        "CREATE INDEX proxy_log_lines_proxy ON proxy_log_lines (proxy_id, id)",
        "CREATE TABLE stats_raw (proxy_id TEXT NOT NULL REFERENCES proxies(id), metric TEXT NOT NULL, ts BIGINT NOT NULL,
            value DOUBLE PRECISION NOT NULL, PRIMARY KEY (proxy_id, metric, ts))",
        "CREATE TABLE stats_rollup (proxy_id TEXT NOT NULL REFERENCES proxies(id), metric TEXT NOT NULL, bucket BIGINT NOT NULL,
            count BIGINT NOT NULL, sum DOUBLE PRECISION NOT NULL, min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL,
            last DOUBLE PRECISION NOT NULL, last_ts BIGINT NOT NULL, PRIMARY KEY (proxy_id, metric, bucket))",
        "CREATE TABLE audit_log (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at BIGINT NOT NULL, actor_id TEXT, actor TEXT NOT NULL,
            action TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id TEXT, old_value TEXT, new_value TEXT, request_id TEXT)",
        "CREATE INDEX audit_log_entity ON audit_log (entity_id, id)",
        "CREATE INDEX audit_log_at ON audit_log (at)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('sync_generation', 0)",
    ],
},
Migration {
    version: 2,
    name: "index proxies by config",
    // An approval's answer and a config's page list the config's proxies; without an index
    // that scans every proxy of the fleet.
    sqlite: &["CREATE INDEX proxies_config ON proxies (config_id, hostname)"],
    postgres: &["CREATE INDEX proxies_config ON proxies (config_id, hostname)"],
},
Migration {
    version: 3,
    name: "index rollups by metric",
    // Fleet charts sum one metric over every proxy; the primary key starts with the proxy.
    // Rollup rows are updated in place on every push, but their (metric, bucket) never
    // changes, so the index costs one entry per proxy, metric and 5 minutes.
    sqlite: &["CREATE INDEX stats_rollup_metric ON stats_rollup (metric, bucket)"],
    postgres: &["CREATE INDEX stats_rollup_metric ON stats_rollup (metric, bucket)"],
},
Migration {
    version: 4,
    name: "metric pushes as one row, rolled up later",
    // One row per sample plus a rollup upsert per sample was 100,000 row writes a second for
    // 100,000 agents; a push is now one row, and the pending ones are folded into the rollups
    // in bulk (`telemetry::roll_up_pending`). Existing samples are already in their rollups,
    // so they move over as rolled up. The partial index finds the pending rows; the `ts`
    // index serves retention.
    sqlite: &[
        "CREATE TABLE stats_push (proxy_id TEXT NOT NULL REFERENCES proxies(id), ts BIGINT NOT NULL,
            metrics TEXT NOT NULL, rolled BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (proxy_id, ts))",
        "CREATE INDEX stats_push_pending ON stats_push (proxy_id, ts) WHERE rolled = 0",
        "CREATE INDEX stats_push_ts ON stats_push (ts)",
        "INSERT INTO stats_push (proxy_id, ts, metrics, rolled)
            SELECT proxy_id, ts, json_group_object(metric, value), 1 FROM stats_raw GROUP BY proxy_id, ts",
        "DROP TABLE stats_raw",
    ],
    postgres: &[
        "CREATE TABLE stats_push (proxy_id TEXT NOT NULL REFERENCES proxies(id), ts BIGINT NOT NULL,
            metrics TEXT NOT NULL, rolled BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (proxy_id, ts))",
        "CREATE INDEX stats_push_pending ON stats_push (proxy_id, ts) WHERE rolled = 0",
        "CREATE INDEX stats_push_ts ON stats_push (ts)",
        "INSERT INTO stats_push (proxy_id, ts, metrics, rolled)
            SELECT proxy_id, ts, json_object_agg(metric, value)::text, 1 FROM stats_raw GROUP BY proxy_id, ts",
        "DROP TABLE stats_raw",
    ],
},
Migration {
    version: 5,
    name: "roll up closed buckets by walking proxies behind a frontier",
    // Claiming pending pushes rewrote every push row once more (to mark it) and kept a second
    // index of them: most of the roll-up's cost at 100,000 agents. A push is now stored as
    // `rolled = 2` when the roll-up's frontier has not reached it; the roll-up walks closed
    // buckets proxy by proxy (primary-key seeks) and moves the frontier, writing no push row.
    // A push that arrives behind the frontier is stored pending (`rolled = 0`) and claimed as
    // before. The frontier starts at the bucket after the newest stored push, so pushes stored
    // before this migration are claimed as before.
    sqlite: &[
        "CREATE TABLE stats_fold_frontier (id INTEGER PRIMARY KEY CHECK (id = 1),
            bucket BIGINT NOT NULL, after_proxy TEXT NOT NULL)",
        "INSERT INTO stats_fold_frontier (id, bucket, after_proxy)
            SELECT 1, COALESCE(MAX(ts), 0) / 300000 * 300000 + 300000, '' FROM stats_push",
    ],
    postgres: &[
        "CREATE TABLE stats_fold_frontier (id INTEGER PRIMARY KEY CHECK (id = 1),
            bucket BIGINT NOT NULL, after_proxy TEXT NOT NULL)",
        "INSERT INTO stats_fold_frontier (id, bucket, after_proxy)
            SELECT 1, COALESCE(MAX(ts), 0) / 300000 * 300000 + 300000, '' FROM stats_push",
    ],
}];

/// Applies every migration not yet recorded; returns the versions applied now.
pub async fn run(db: &Db) -> Result<Vec<i64>> {
    let mut applied_now = Vec::new();
    {
        let mut tx = db.begin_write().await?;
        if db.backend() == Backend::Postgres {
            // Serialises concurrent starters; released at commit.
            sqlx::query("SELECT pg_advisory_xact_lock(4242001)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let done: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for m in MIGRATIONS {
            if done.contains(&m.version) {
                continue;
            }
            let statements = match db.backend() {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(*statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(|source| StoreError::Migration {
                        version: m.version,
                        name: m.name,
                        source,
                    })?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            applied_now.push(m.version);
        }
        tx.commit().await?;
    }
    if !applied_now.is_empty() {
        tracing::info!(versions = ?applied_now, "applied database migrations");
    }
    Ok(applied_now)
}

/// The highest migration version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}
