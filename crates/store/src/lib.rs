//! Persistence for the ATS Proxy Manager control plane.
//!
//! One [`Db`] wraps an `sqlx` `AnyPool` over SQLite (the embedded default) or PostgreSQL, with
//! versioned migrations for both ([`migrate`]) and repository functions per area. Every
//! repository function takes a `&mut AnyConnection`, so callers compose several of them in one
//! transaction (a mutation and its audit row commit together).
//!
//! Portability rules, because the `Any` driver only carries bool/ints/floats/text/blob:
//! times are epoch **milliseconds** (`BIGINT`), ids are UUID text, JSON documents are text, and
//! every SQL statement is written once with `$N` placeholders (both backends accept them).

pub mod audit;
pub mod auth;
pub mod configs;
pub mod migrate;
pub mod proxies;
pub mod telemetry;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Transaction};

pub use sqlx::Any;
pub use sqlx::AnyConnection;
pub use sqlx::Error as SqlxError;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A unique constraint was violated (e.g. a username or config name already taken).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A stored value could not be read back (e.g. invalid JSON in a text column).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A value cannot be stored as given (e.g. a metric value JSON cannot hold).
    #[error("invalid value: {0}")]
    Invalid(String),
    /// The database URL is not one we support.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Migration version number.
        version: i64,
        /// Migration name.
        name: &'static str,
        /// Underlying error.
        source: sqlx::Error,
    },
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maps a unique-constraint violation to [`StoreError::Conflict`] with `what` as the message.
pub fn unique_as_conflict(error: sqlx::Error, what: impl Into<String>) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        return StoreError::Conflict(what.into());
    }
    StoreError::Db(error)
}

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The connection pool and the backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    /// Where writes go. SQLite has one writer at a time, and a writer that finds the lock taken
    /// sleeps in its busy handler (1, 2, 5 … 100 ms steps) instead of queueing: with several
    /// connections writing at once, throughput collapses into those sleeps. So on SQLite every
    /// write goes through this pool of exactly one connection, where writers wait in order in
    /// the pool queue, while reads keep the whole `pool` (WAL readers never block). On
    /// PostgreSQL it is the same pool.
    writer: AnyPool,
    backend: Backend,
    /// Connection requests that waited longer than [`SLOW_ACQUIRE`] (shared by clones).
    slow_acquires: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_core_box::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.execute("PRAGMA journal_mode=WAL").await?;
        conn.execute("PRAGMA synchronous=NORMAL").await?;
        conn.execute("PRAGMA foreign_keys=ON").await?;
        conn.execute("PRAGMA busy_timeout=15000").await?;
        Ok(())
    })
}

/// The writer connection also gets a 128 MiB page cache (SQLite's default is 2 MiB): the
/// roll-up adds to rollup rows spread over a table of 100 MB and more at fleet scale, and a
/// small cache turns each of those writes into reads through the OS. And it checkpoints the
/// WAL every 10,000 pages (40 MiB) instead of 1,000: a batch of 500 metric pushes writes about
/// 1,000 pages, so the default checkpointed at almost every commit, copying the same hot index
/// pages into the database file again and again.
fn sqlite_writer_pragmas(
    conn: &mut sqlx::AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_core_box::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        sqlite_pragmas(conn, meta).await?;
        conn.execute("PRAGMA cache_size=-131072").await?;
        conn.execute("PRAGMA wal_autocheckpoint=10000").await?;
        Ok(())
    })
}

mod futures_core_box {
    /// The boxed future `after_connect` wants.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Current time as epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh random UUID as text, the id format of every entity.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A wait for a pooled connection longer than this counts as slow ([`Db::slow_acquires`]).
pub const SLOW_ACQUIRE: Duration = Duration::from_secs(2);

impl Db {
    /// Connects to `url` (`sqlite://PATH[?mode=rwc]` or `postgres://...`). SQLite files are created
    /// when missing; WAL, foreign keys and a busy timeout are set on every connection.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let url = if backend == Backend::Sqlite && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let options = AnyConnectOptions::from_str(&url)?;
        // sqlx warns once per slow acquire: a 100,000-agent fleet starting at once wrote 130,000
        // such lines. They are counted instead ([`Db::slow_acquires`]) and the server reports the
        // count once a minute.
        let mut pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .acquire_slow_level(log::LevelFilter::Debug);
        if backend == Backend::Sqlite {
            // An embedded file cannot drop a connection; the ping before every acquire is one
            // more hand-off to the connection's worker thread per query.
            pool = pool
                .after_connect(sqlite_pragmas)
                .test_before_acquire(false);
        }
        let pool = pool.connect_with(options.clone()).await?;
        let writer = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .acquire_slow_level(log::LevelFilter::Debug)
                    .test_before_acquire(false)
                    .after_connect(sqlite_writer_pragmas)
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => pool.clone(),
        };
        Ok(Db {
            pool,
            writer,
            backend,
            slow_acquires: Default::default(),
        })
    }

    /// How many connection requests so far waited longer than [`SLOW_ACQUIRE`] (reads, writes
    /// and write transactions through this handle and its clones): a sign the pool or the
    /// database is saturated.
    pub fn slow_acquires(&self) -> u64 {
        self.slow_acquires
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `acquire`, counting it if it waited longer than [`SLOW_ACQUIRE`].
    async fn timed<T>(&self, acquire: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = acquire.await;
        if started.elapsed() > SLOW_ACQUIRE {
            self.slow_acquires
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// A pooled connection for reads outside a transaction.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Any>> {
        Ok(self.timed(self.pool.acquire()).await?)
    }

    /// A connection for writes outside [`Db::begin_write`] (single statements that commit on
    /// their own). On SQLite it is the one writer connection: do not hold it while waiting for
    /// another write.
    pub async fn write_conn(&self) -> Result<sqlx::pool::PoolConnection<Any>> {
        Ok(self.timed(self.writer.acquire()).await?)
    }

    /// The pool, for reads outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that later upgrades can fail with
    /// SQLITE_BUSY without waiting, which would turn two concurrent approvals into an error
    /// instead of one winner and one clean 409.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => {
                self.timed(self.writer.begin_with("BEGIN IMMEDIATE"))
                    .await?
            }
            Backend::Postgres => self.timed(self.pool.begin()).await?,
        })
    }

    /// Checks the database answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs the pending migrations.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        migrate::run(self).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// Hides the password of a database URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Reads a JSON text column.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://apm:s3cret@db:5432/apm"),
            "postgres://apm:***@db:5432/apm"
        );
        assert_eq!(redact_url("postgres://apm@db/apm"), "postgres://apm@db/apm");
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }

    mod props {
        use super::super::redact_url;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn passwords_never_survive_redaction(
                user in "[a-z]{1,10}",
                password in "[A-Za-z0-9!#%&*+=?^_~-]{6,30}",
                host in "[a-z]{1,10}(\\.[a-z]{2,5})?",
                db in "[a-z]{1,10}",
            ) {
                let url = format!("postgres://{user}:{password}@{host}:5432/{db}");
                let shown = redact_url(&url);
                prop_assert!(!shown.contains(&format!(":{password}@")), "{}", shown);
                prop_assert!(shown.contains(&user) && shown.contains(&host) && shown.ends_with(&db));
            }
        }
    }
}
