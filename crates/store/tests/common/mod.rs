//! Setup shared by the store's test binaries: a database on either engine and proxy rows.

use apm_store::proxies::ProxyRow;
use apm_store::{Db, new_id};

/// Turns each `async fn name(postgres: bool)` into a `name::sqlite` and a `name::postgres`
/// test.
macro_rules! both {
    ($($name:ident),*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name(false).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name(true).await }
        }
    )*};
}

/// A fresh, not yet migrated database: SQLite file `name` in `dir`, or a fresh database on the
/// test PostgreSQL.
pub async fn connect(postgres: bool, dir: &std::path::Path, name: &str) -> Db {
    let url = if postgres {
        tokio::task::spawn_blocking(|| {
            apm_testkit::postgres::Postgres::shared()
                .and_then(|pg| pg.fresh_database())
                .expect("test PostgreSQL")
        })
        .await
        .expect("join")
    } else {
        format!("sqlite://{}", dir.join(name).display())
    };
    Db::connect(&url, 4).await.expect("connect")
}

/// A proxy row with a credential of its own and nothing else set.
pub fn proxy_row(hostname: &str) -> ProxyRow {
    ProxyRow::enrolled(
        new_id(),
        hostname.into(),
        format!("cred-{hostname}"),
        0,
        None,
    )
}
