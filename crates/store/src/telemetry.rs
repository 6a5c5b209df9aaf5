//! What proxies send back: metric pushes (one row each, kept raw for a while) and the 5-minute
//! rollups they are folded into, captured log lines, and the sync generation counter replicas
//! use to notice changes made by other replicas.
//!
//! A push is stored and answered; [`roll_up_step`], run periodically by the server, folds
//! pushes into the rollups in bulk. Rollup-based series (long windows, fleet charts) therefore
//! trail the pushes by up to that period; raw series never do.
//!
//! The roll-up has two paths. Most pushes are folded by a *walk*: a frontier (a bucket and a
//! proxy id, one row in `stats_fold_frontier`) moves through each bucket proxy by proxy, and
//! the pushes of the proxies it passes are read by primary key and folded, a proxy's pushes of
//! a bucket into one rollup row per metric; no push row is written. A push stored behind the
//! frontier (sent late, or in a bucket the walk has already passed) is stored *pending* and
//! claimed by a queue instead. Which path a push takes is decided when it is stored, against
//! the frontier, so each push is folded exactly once.

use sqlx::{AnyConnection, FromRow};

use crate::{Result, StoreError};

/// Width of a rollup bucket: 5 minutes.
pub const ROLLUP_MS: i64 = 5 * 60 * 1000;

/// Pushes folded by one [`roll_up_step`] when the caller has no opinion: a fraction of a
/// second of SQLite's one writer, so agents' writes get their turn between steps.
pub const ROLLUP_CHUNK: usize = 500;

/// `stats_push.rolled` of a push the walk folds once its frontier passes it.
const AWAITING_WALK: i64 = 2;

/// Pushes a proxy sends per bucket at the default 30-second interval: the walk takes
/// `limit / PUSHES_PER_PROXY_BUCKET` proxies per step to fold about `limit` pushes.
const PUSHES_PER_PROXY_BUCKET: usize = 10;

/// One metric push: every metric an agent sampled at one time. Stored as one row (the metrics
/// as a JSON object): a fleet of 100,000 agents pushing 15 metrics every 30 s is 3,333 rows per
/// second this way, against 50,000 sample rows plus 50,000 rollup upserts one row per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPush {
    /// Proxy.
    pub proxy_id: String,
    /// Sample time, epoch ms.
    pub ts: i64,
    /// Metric name → value; names unique, values finite.
    pub metrics: Vec<(String, f64)>,
}

/// The stored form of a push's metrics: a JSON object. A value JSON cannot hold (NaN, ±∞) is
/// refused rather than stored as `null`.
pub fn encode_metrics(metrics: &[(String, f64)]) -> Result<String> {
    let mut map = serde_json::Map::with_capacity(metrics.len());
    for (name, value) in metrics {
        let number = serde_json::Number::from_f64(*value).ok_or_else(|| {
            StoreError::Invalid(format!("metric {name:?}: {value} is not a finite number"))
        })?;
        map.insert(name.clone(), serde_json::Value::Number(number));
    }
    Ok(serde_json::Value::Object(map).to_string())
}

/// Reads a push's metrics back (name order); members that are not numbers are skipped, so a
/// row written by hand or by another version never breaks a chart.
pub fn decode_metrics(text: &str) -> Result<Vec<(String, f64)>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored metrics are not a JSON object: {e}")))?;
    Ok(map
        .into_iter()
        .filter_map(|(name, v)| v.as_f64().map(|v| (name, v)))
        .collect())
}

/// A rollup row folded from pushes (before it is added to the stored row).
#[derive(Debug, Clone, PartialEq)]
pub struct RollupDelta {
    /// Proxy.
    pub proxy_id: String,
    /// Metric name.
    pub metric: String,
    /// Bucket start, epoch ms.
    pub bucket: i64,
    /// Samples folded.
    pub count: i64,
    /// Their sum.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Value of the newest sample (the later one on a tie, as sequential inserts would).
    pub last: f64,
    /// Its time.
    pub last_ts: i64,
}

/// Folds pushes into one rollup delta per (proxy, metric, bucket), sorted by that key (so two
/// replicas adding deltas at once lock rows in the same order). Adding deltas is associative
/// and commutative except for `last`, which the newest sample wins wherever it was folded.
pub fn fold_rollups(pushes: &[NewPush]) -> Vec<RollupDelta> {
    use std::collections::BTreeMap;
    let mut out: BTreeMap<(&str, &str, i64), RollupDelta> = BTreeMap::new();
    for p in pushes {
        let bucket = p.ts - p.ts.rem_euclid(ROLLUP_MS);
        for (metric, value) in &p.metrics {
            let value = *value;
            out.entry((&p.proxy_id, metric, bucket))
                .and_modify(|r| {
                    r.count += 1;
                    r.sum += value;
                    r.min = r.min.min(value);
                    r.max = r.max.max(value);
                    if p.ts >= r.last_ts {
                        r.last = value;
                        r.last_ts = p.ts;
                    }
                })
                .or_insert_with(|| RollupDelta {
                    proxy_id: p.proxy_id.clone(),
                    metric: metric.clone(),
                    bucket,
                    count: 1,
                    sum: value,
                    min: value,
                    max: value,
                    last: value,
                    last_ts: p.ts,
                });
        }
    }
    out.into_values().collect()
}

/// `($1, $2, ...), ($n, ...)` for `rows` rows of `cols` placeholders; with `numbered` false,
/// anonymous `?` placeholders instead. SQLite gets `?`: binding looks every numbered
/// parameter's name up in a list, which is quadratic in a statement's parameter count (it was
/// an eighth of the server's CPU with `$N`), while anonymous ones bind in order.
pub(crate) fn values_list(rows: usize, cols: usize, numbered: bool) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            if numbered {
                s.push('$');
                s.push_str(&(r * cols + c + 1).to_string());
            } else {
                s.push('?');
            }
        }
        s.push(')');
    }
    s
}

/// Rows per multi-row statement: far below SQLite's and PostgreSQL's bind-parameter limits.
const BATCH_ROWS: usize = 500;

fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("sqlite")
}

/// Stores pushes (in the caller's transaction) with multi-row statements, to be rolled up: a
/// push the roll-up's frontier has not reached waits for the walk, one behind it is pending
/// (claimed by the queue). A repeated (proxy, time) replaces the stored push and is rolled up
/// again if the first copy was already folded (its metrics then count twice in that bucket's
/// rollup: a resent push skews an average, it never loses data).
///
/// On PostgreSQL the statement holds a share lock on the frontier until the caller commits, so
/// the walk cannot pass a push that is being stored: the walk waits for the commit, or the
/// push sees the frontier it moved to. SQLite has one writer at a time.
pub async fn insert_pushes(conn: &mut AnyConnection, pushes: &[NewPush]) -> Result<()> {
    // One statement may not touch a row twice on PostgreSQL: the later push of a repeated key
    // wins, as two statements in order would.
    let mut at: std::collections::HashMap<(&str, i64), usize> =
        std::collections::HashMap::with_capacity(pushes.len());
    let mut rows: Vec<(&str, i64, String)> = Vec::with_capacity(pushes.len());
    for p in pushes {
        let text = encode_metrics(&p.metrics)?;
        match at.get(&(p.proxy_id.as_str(), p.ts)) {
            Some(&i) => rows[i].2 = text,
            None => {
                at.insert((&p.proxy_id, p.ts), rows.len());
                rows.push((&p.proxy_id, p.ts, text));
            }
        }
    }
    let numbered = !is_sqlite(conn);
    // Without a frontier row (never written by hand, but not worth losing pushes over) every
    // push is pending, and the queue folds it.
    let frontier = if numbered {
        "(SELECT bucket, after_proxy FROM stats_fold_frontier WHERE id = 1 FOR SHARE)"
    } else {
        "stats_fold_frontier"
    };
    for chunk in rows.chunks(BATCH_ROWS) {
        // `WHERE true`: SQLite cannot tell an upsert's ON CONFLICT from a join's ON without it.
        let sql = format!(
            "INSERT INTO stats_push (proxy_id, ts, metrics, rolled)
             SELECT v.column1, v.column2, v.column3,
                    CASE WHEN f.bucket IS NULL OR v.column2 < f.bucket
                              OR (v.column2 < f.bucket + {ROLLUP_MS} AND v.column1 <= f.after_proxy)
                         THEN 0 ELSE {AWAITING_WALK} END
             FROM (VALUES {}) v LEFT JOIN {frontier} f ON true
             WHERE true
             ON CONFLICT (proxy_id, ts) DO UPDATE SET metrics = excluded.metrics, rolled = excluded.rolled",
            values_list(chunk.len(), 3, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (proxy_id, ts, text) in chunk {
            q = q.bind(*proxy_id).bind(*ts).bind(text.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What one [`roll_up_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupProgress {
    /// Pushes folded.
    pub pushes: usize,
    /// Nothing is left to fold within the step's bounds: the caller's run is over.
    pub done: bool,
}

/// One bounded step of the roll-up, in the caller's transaction: claims up to `limit` pending
/// pushes, or when none is pending, walks about `limit` pushes' worth of proxies in the
/// frontier's bucket (or moves the frontier to the next bucket holding pushes). The walk stays
/// out of `open_bucket` (the bucket now falls in) unless `include_open`; pending pushes of the
/// open bucket are claimed only with `include_open` too. Call it until it reports `done`,
/// committing after each step.
///
/// Walking the open bucket folds what its pushes hold so far; the rest of the bucket's pushes
/// of the proxies already passed are then pending and claimed a few at a time (each claim
/// rewrites their rollup rows). A large fleet leaves the open bucket to the walk once it has
/// closed, so each rollup row is written once for all of a proxy's pushes of the bucket.
///
/// Several callers (replicas) may step at once: the queue's claims skip each other's rows on
/// PostgreSQL, and the walk locks the frontier.
pub async fn roll_up_step(
    conn: &mut AnyConnection,
    limit: usize,
    open_bucket: i64,
    include_open: bool,
) -> Result<RollupProgress> {
    let before = (!include_open).then_some(open_bucket);
    let claimed = roll_up_pending(conn, limit, before).await?;
    if claimed > 0 {
        return Ok(RollupProgress {
            pushes: claimed,
            done: false,
        });
    }
    let last_bucket = if include_open {
        open_bucket
    } else {
        open_bucket - ROLLUP_MS
    };
    walk_step(conn, limit.max(1), open_bucket, last_bucket).await
}

/// Most proxies one walk step passes: a bucket most proxies sent nothing in (a quiet spell, a
/// fleet mostly offline) is crossed in a few steps, not one per `limit / 10` proxies.
const WALK_MAX_PROXIES: usize = 2_000;

/// Moves the frontier past proxies of its bucket until about `wanted` pushes are folded (or
/// [`WALK_MAX_PROXIES`] proxies are passed), if the bucket is not after `last_bucket`; past the
/// last proxy, or at once if the bucket holds no push, moves it to the next bucket holding
/// pushes (never past `open_bucket`, which may still receive pushes).
async fn walk_step(
    conn: &mut AnyConnection,
    wanted: usize,
    open_bucket: i64,
    last_bucket: i64,
) -> Result<RollupProgress> {
    let sqlite = is_sqlite(conn);
    let lock = if sqlite { "" } else { " FOR UPDATE" };
    let frontier: Option<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT bucket, after_proxy FROM stats_fold_frontier WHERE id = 1{lock}"
    )))
    .fetch_optional(&mut *conn)
    .await?;
    let Some((bucket, mut after_proxy)) = frontier else {
        return Err(StoreError::Corrupt(
            "the roll-up frontier (the row of stats_fold_frontier) is missing; pushes are \
             claimed one by one until it is restored"
                .into(),
        ));
    };
    let done = RollupProgress {
        pushes: 0,
        done: true,
    };
    if bucket > last_bucket {
        return Ok(done);
    }
    if after_proxy.is_empty() {
        let any: Option<i64> =
            sqlx::query_scalar("SELECT ts FROM stats_push WHERE ts >= $1 AND ts < $2 LIMIT 1")
                .bind(bucket)
                .bind(bucket + ROLLUP_MS)
                .fetch_optional(&mut *conn)
                .await?;
        if any.is_none() {
            return next_bucket(conn, bucket, open_bucket).await;
        }
    }
    let per_query = (wanted / PUSHES_PER_PROXY_BUCKET).clamp(1, WALK_MAX_PROXIES);
    let mut rows: Vec<(String, i64, String)> = Vec::new();
    let mut passed = 0;
    while rows.len() < wanted && passed < WALK_MAX_PROXIES {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM proxies WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(&after_proxy)
                .bind(per_query as i64)
                .fetch_all(&mut *conn)
                .await?;
        let Some(last_id) = ids.last().cloned() else {
            break;
        };
        rows.extend(pushes_of(conn, sqlite, bucket, &ids).await?);
        passed += ids.len();
        after_proxy = last_id;
    }
    if passed == 0 {
        // Every proxy of the bucket is passed.
        return next_bucket(conn, bucket, open_bucket).await;
    }
    let pushes = decode_rows(rows);
    add_rollups(conn, &fold_rollups(&pushes)).await?;
    sqlx::query("UPDATE stats_fold_frontier SET after_proxy = $1 WHERE id = 1")
        .bind(&after_proxy)
        .execute(&mut *conn)
        .await?;
    Ok(RollupProgress {
        pushes: pushes.len(),
        done: false,
    })
}

/// The frontier's bucket is walked: moves the frontier to the next bucket holding pushes, never
/// past the open bucket. The open bucket itself stays where it is: its later pushes are pending
/// for the proxies passed, and awaiting the walk for the others.
async fn next_bucket(
    conn: &mut AnyConnection,
    bucket: i64,
    open_bucket: i64,
) -> Result<RollupProgress> {
    if bucket >= open_bucket {
        return Ok(RollupProgress {
            pushes: 0,
            done: true,
        });
    }
    let next: Option<i64> = sqlx::query_scalar("SELECT MIN(ts) FROM stats_push WHERE ts >= $1")
        .bind(bucket + ROLLUP_MS)
        .fetch_one(&mut *conn)
        .await?;
    let upper = open_bucket.max(bucket + ROLLUP_MS);
    let next_bucket = next
        .map(|ts| ts - ts.rem_euclid(ROLLUP_MS))
        .unwrap_or(upper)
        .clamp(bucket + ROLLUP_MS, upper);
    sqlx::query("UPDATE stats_fold_frontier SET bucket = $1, after_proxy = '' WHERE id = 1")
        .bind(next_bucket)
        .execute(&mut *conn)
        .await?;
    Ok(RollupProgress {
        pushes: 0,
        done: false,
    })
}

/// The pushes of `ids` in `bucket` that await the walk, by primary key.
async fn pushes_of(
    conn: &mut AnyConnection,
    sqlite: bool,
    bucket: i64,
    ids: &[String],
) -> Result<Vec<(String, i64, String)>> {
    // SQLite gets anonymous placeholders only (see `values_list`).
    let (range, placeholders) = if sqlite {
        (
            "ts >= ? AND ts < ?",
            vec!["?".to_owned(); ids.len()].join(", "),
        )
    } else {
        (
            "ts >= $1 AND ts < $2",
            (0..ids.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let mut q = sqlx::query_as::<_, (String, i64, String)>(sqlx::AssertSqlSafe(format!(
        "SELECT proxy_id, ts, metrics FROM stats_push
         WHERE {range} AND rolled = {AWAITING_WALK} AND proxy_id IN ({placeholders})"
    )))
    .bind(bucket)
    .bind(bucket + ROLLUP_MS);
    for id in ids {
        q = q.bind(id);
    }
    Ok(q.fetch_all(&mut *conn).await?)
}

/// Stored pushes as [`NewPush`]es. A row that does not decode is reported and left out: its
/// samples are lost to the rollups, not silently, and it blocks nothing.
fn decode_rows(rows: Vec<(String, i64, String)>) -> Vec<NewPush> {
    let mut pushes = Vec::with_capacity(rows.len());
    for (proxy_id, ts, text) in rows {
        match decode_metrics(&text) {
            Ok(metrics) => pushes.push(NewPush {
                proxy_id,
                ts,
                metrics,
            }),
            Err(e) => tracing::warn!(proxy_id, ts, error = %e, "a stored push was not rolled up"),
        }
    }
    pushes
}

/// Folds up to `limit` pending pushes (those stored behind the walk's frontier) taken before
/// `before` (epoch ms; `None`: all of them) into the 5-minute rollups, in the caller's
/// transaction, and marks them rolled up; returns how many it took. Claiming and marking is one statement, so a push is counted exactly once
/// however many replicas roll up at the same time (on PostgreSQL each skips the rows another
/// has claimed), and a crash before the commit leaves the pushes pending for the next run.
/// Deltas are added to the stored rows, so a bucket can be rolled up in any number of steps.
///
/// Pushes are claimed in (proxy, time) order, so the pushes of one proxy's bucket are folded
/// together: a closed bucket of a proxy pushing every 30 s is 10 pushes and one rollup row per
/// metric, written once, where pushes folded one by one write every row ten times.
async fn roll_up_pending(
    conn: &mut AnyConnection,
    limit: usize,
    before: Option<i64>,
) -> Result<usize> {
    let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let before = before.unwrap_or(i64::MAX);
    // `+ts` / `ts + 0`: the time bound must not steer the planner to the `ts` index, which
    // covers every stored push (days of them), rolled or not; the partial index holds only the
    // pending ones, already in claim order.
    let sql = if is_sqlite(conn) {
        "UPDATE stats_push SET rolled = 1 WHERE rowid IN
           (SELECT rowid FROM stats_push WHERE rolled = 0 AND +ts < ? ORDER BY proxy_id, ts LIMIT ?)
         RETURNING proxy_id, ts, metrics"
    } else {
        // The rows are locked and chosen once, in a materialized CTE, then joined back by key:
        // the usual way to claim a queue's rows, whatever plan the outer UPDATE gets.
        "WITH claimed AS MATERIALIZED
           (SELECT proxy_id, ts FROM stats_push WHERE rolled = 0 AND ts + 0 < $1
            ORDER BY proxy_id, ts LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE stats_push s SET rolled = 1 FROM claimed c
         WHERE s.proxy_id = c.proxy_id AND s.ts = c.ts
         RETURNING s.proxy_id, s.ts, s.metrics"
    };
    let rows: Vec<(String, i64, String)> = sqlx::query_as(sql)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    // A claimed row that does not decode is still marked: it would be claimed again forever.
    let claimed = rows.len();
    add_rollups(conn, &fold_rollups(&decode_rows(rows))).await?;
    Ok(claimed)
}

/// Pushes taken before `before` and not rolled up yet (the roll-up's backlog): pending ones, and
/// those the walk's frontier has not passed.
pub async fn unfolded_pushes(conn: &mut AnyConnection, before: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM stats_push s LEFT JOIN stats_fold_frontier f ON f.id = 1
         WHERE s.ts < $1 AND (s.rolled = 0 OR (s.rolled = {AWAITING_WALK} AND (f.bucket IS NULL
               OR s.ts >= f.bucket + {ROLLUP_MS}
               OR (s.ts >= f.bucket AND s.proxy_id > f.after_proxy))))"
    )))
    .bind(before)
    .fetch_one(conn)
    .await?)
}

/// Adds folded deltas to the stored rollup rows.
async fn add_rollups(conn: &mut AnyConnection, deltas: &[RollupDelta]) -> Result<()> {
    let numbered = !is_sqlite(conn);
    for chunk in deltas.chunks(BATCH_ROWS) {
        let sql = format!(
            "INSERT INTO stats_rollup (proxy_id, metric, bucket, count, sum, min, max, last, last_ts) VALUES {}
             ON CONFLICT (proxy_id, metric, bucket) DO UPDATE SET
                count = stats_rollup.count + excluded.count,
                sum = stats_rollup.sum + excluded.sum,
                min = CASE WHEN excluded.min < stats_rollup.min THEN excluded.min ELSE stats_rollup.min END,
                max = CASE WHEN excluded.max > stats_rollup.max THEN excluded.max ELSE stats_rollup.max END,
                last = CASE WHEN excluded.last_ts >= stats_rollup.last_ts THEN excluded.last ELSE stats_rollup.last END,
                last_ts = CASE WHEN excluded.last_ts >= stats_rollup.last_ts THEN excluded.last_ts ELSE stats_rollup.last_ts END",
            values_list(chunk.len(), 9, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(&r.proxy_id)
                .bind(&r.metric)
                .bind(r.bucket)
                .bind(r.count)
                .bind(r.sum)
                .bind(r.min)
                .bind(r.max)
                .bind(r.last)
                .bind(r.last_ts);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One point of a series.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct Point {
    /// Start of the bucket (or the sample time for raw points), epoch ms.
    pub t: i64,
    /// Samples in the bucket.
    pub count: i64,
    /// Average.
    pub avg: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Latest value.
    pub last: f64,
}

/// Raw samples of one metric in [since, until): read from the pushes (at most 10,000 of them),
/// skipping pushes that did not carry the metric.
pub async fn raw_series(
    conn: &mut AnyConnection,
    proxy_id: &str,
    metric: &str,
    since: i64,
    until: i64,
) -> Result<Vec<Point>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT ts, metrics FROM stats_push
         WHERE proxy_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT 10000",
    )
    .bind(proxy_id)
    .bind(since)
    .bind(until)
    .fetch_all(conn)
    .await?;
    let mut points = Vec::with_capacity(rows.len());
    for (t, text) in rows {
        if let Some((_, v)) = decode_metrics(&text)?
            .into_iter()
            .find(|(m, _)| m == metric)
        {
            points.push(Point {
                t,
                count: 1,
                avg: v,
                min: v,
                max: v,
                last: v,
            });
        }
    }
    Ok(points)
}

/// 5-minute rollups of one metric whose bucket starts in [since, until).
pub async fn rollup_series(
    conn: &mut AnyConnection,
    proxy_id: &str,
    metric: &str,
    since: i64,
    until: i64,
) -> Result<Vec<Point>> {
    Ok(sqlx::query_as(
        "SELECT bucket AS t, count, sum / count AS avg, min, max, last FROM stats_rollup
         WHERE proxy_id = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4 ORDER BY bucket LIMIT 10000",
    )
    .bind(proxy_id)
    .bind(metric)
    .bind(since - since.rem_euclid(ROLLUP_MS))
    .bind(until)
    .fetch_all(conn)
    .await?)
}

/// Metric names a proxy has reported: those in its rollups and in its latest push (which may not
/// be rolled up yet).
pub async fn metric_names(conn: &mut AnyConnection, proxy_id: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT metric FROM stats_rollup WHERE proxy_id = $1 ORDER BY metric",
    )
    .bind(proxy_id)
    .fetch_all(&mut *conn)
    .await?;
    let latest: Option<String> = sqlx::query_scalar(
        "SELECT metrics FROM stats_push WHERE proxy_id = $1 ORDER BY ts DESC LIMIT 1",
    )
    .bind(proxy_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(text) = latest {
        names.extend(decode_metrics(&text)?.into_iter().map(|(m, _)| m));
        names.sort_unstable();
        names.dedup();
    }
    Ok(names)
}

/// Latest value of each metric of each proxy seen since `since` (for dashboard aggregation).
#[derive(Debug, Clone, FromRow)]
pub struct LatestValue {
    /// Proxy.
    pub proxy_id: String,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub last: f64,
}

/// Latest value per (proxy, metric) from rollups newer than `since`.
pub async fn latest_values(conn: &mut AnyConnection, since: i64) -> Result<Vec<LatestValue>> {
    Ok(sqlx::query_as(
        "SELECT r.proxy_id, r.metric, r.last FROM stats_rollup r
         JOIN (SELECT proxy_id, metric, MAX(bucket) AS bucket FROM stats_rollup WHERE bucket >= $1 GROUP BY proxy_id, metric) m
           ON r.proxy_id = m.proxy_id AND r.metric = m.metric AND r.bucket = m.bucket",
    )
    .bind(since - since.rem_euclid(ROLLUP_MS))
    .fetch_all(conn)
    .await?)
}

/// One step of a fleet-wide series: a 5-minute bucket and the proxies that reported in it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct FleetPoint {
    /// Bucket start, epoch ms.
    pub t: i64,
    /// Sum over the proxies of the bucket's value (gauge) or per-second rate (counter).
    pub value: f64,
    /// Proxies that contributed.
    pub proxies: i64,
}

/// Sum over every proxy of a gauge's last value in each 5-minute bucket in [since, until).
pub async fn fleet_gauge_series(
    conn: &mut AnyConnection,
    metric: &str,
    since: i64,
    until: i64,
) -> Result<Vec<FleetPoint>> {
    Ok(sqlx::query_as(
        "SELECT bucket AS t, SUM(last) AS value, COUNT(*) AS proxies FROM stats_rollup
         WHERE metric = $1 AND bucket >= $2 AND bucket < $3 GROUP BY bucket ORDER BY bucket",
    )
    .bind(metric)
    .bind(since - since.rem_euclid(ROLLUP_MS))
    .bind(until)
    .fetch_all(conn)
    .await?)
}

/// Sum over every proxy of a counter's per-second rate in each 5-minute bucket in
/// [since, until): each proxy's rate is the increase of its last value since its previous
/// bucket divided by the time between the two samples. A value below the previous one is a
/// counter reset (ATS restarted), so the increase is the value itself. A proxy's first bucket
/// has no rate; the bucket before `since` is read so the first step in range has one.
pub async fn fleet_counter_rates(
    conn: &mut AnyConnection,
    metric: &str,
    since: i64,
    until: i64,
) -> Result<Vec<FleetPoint>> {
    let from = since - since.rem_euclid(ROLLUP_MS);
    Ok(sqlx::query_as(
        "SELECT bucket AS t,
                SUM(CASE WHEN d < 0 THEN last ELSE d END * 1000.0 / dt) AS value,
                COUNT(*) AS proxies
         FROM (SELECT bucket, last,
                      last - LAG(last) OVER w AS d,
                      last_ts - LAG(last_ts) OVER w AS dt
               FROM stats_rollup
               WHERE metric = $1 AND bucket >= $2 AND bucket < $3
               WINDOW w AS (PARTITION BY proxy_id ORDER BY bucket)) steps
         WHERE dt > 0 AND bucket >= $4
         GROUP BY bucket ORDER BY bucket",
    )
    .bind(metric)
    .bind(from - ROLLUP_MS)
    .bind(until)
    .bind(from)
    .fetch_all(conn)
    .await?)
}

/// Metric names any proxy reported in a bucket at or after `since`.
pub async fn fleet_metric_names(conn: &mut AnyConnection, since: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT metric FROM stats_rollup WHERE bucket >= $1 ORDER BY metric",
    )
    .bind(since - since.rem_euclid(ROLLUP_MS))
    .fetch_all(conn)
    .await?)
}

/// Applies retention: raw pushes older than `raw_before` (rolled up or not: a roll-up that has
/// not run for the whole raw retention has lost nothing a chart still shows), rollups older than `rollup_before`,
/// log lines older than `logs_before`. Returns the number of rows deleted.
pub async fn apply_retention(
    conn: &mut AnyConnection,
    raw_before: i64,
    rollup_before: i64,
    logs_before: i64,
) -> Result<u64> {
    let mut n = sqlx::query("DELETE FROM stats_push WHERE ts < $1")
        .bind(raw_before)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    n += sqlx::query("DELETE FROM stats_rollup WHERE bucket < $1")
        .bind(rollup_before)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    n += sqlx::query("DELETE FROM proxy_log_lines WHERE received_at < $1")
        .bind(logs_before)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n)
}

/// One captured log line.
#[derive(Debug, Clone, FromRow)]
pub struct LogLine {
    /// Sequence number (for `after` pagination).
    pub id: i64,
    /// Capture window it belongs to.
    pub capture_id: Option<String>,
    /// Time the agent saw it, epoch ms.
    pub ts: i64,
    /// The line.
    pub line: String,
}

/// Appends captured lines.
pub async fn insert_log_lines(
    conn: &mut AnyConnection,
    proxy_id: &str,
    capture_id: Option<&str>,
    lines: &[(i64, String)],
    now: i64,
) -> Result<()> {
    for (ts, line) in lines {
        sqlx::query(
            "INSERT INTO proxy_log_lines (proxy_id, capture_id, ts, received_at, line) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(proxy_id)
        .bind(capture_id)
        .bind(*ts)
        .bind(now)
        .bind(line)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Lines of a proxy with id > `after`, oldest first.
pub async fn log_lines(
    conn: &mut AnyConnection,
    proxy_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<LogLine>> {
    Ok(sqlx::query_as(
        "SELECT id, capture_id, ts, line FROM proxy_log_lines WHERE proxy_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(proxy_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Bumps the sync generation (in the caller's transaction) so other replicas wake their waiters;
/// returns the new value, which only this transaction can have produced (so a replica can tell
/// its own changes from others' once it committed).
pub async fn bump_generation(conn: &mut AnyConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "UPDATE meta SET value = value + 1 WHERE key = 'sync_generation' RETURNING value",
    )
    .fetch_one(conn)
    .await?)
}

/// Current sync generation.
pub async fn generation(conn: &mut AnyConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'sync_generation'")
            .fetch_one(conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(p: &str, ts: i64, metrics: &[(&str, f64)]) -> NewPush {
        NewPush {
            proxy_id: p.into(),
            ts,
            metrics: metrics.iter().map(|(m, v)| (m.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn fold_adds_up_each_bucket_and_the_newest_sample_is_last() {
        let b = ROLLUP_MS;
        let rollup = fold_rollups(&[
            push("p", b, &[("m", 5.0), ("n", 1.0)]),
            push("p", b + 2000, &[("m", 9.0)]),
            push("p", b + 1000, &[("m", 1.0)]),
            push("q", b, &[("m", 2.0)]),
            push("p", 2 * b, &[("m", 3.0)]),
        ]);
        let keys: Vec<(&str, &str, i64)> = rollup
            .iter()
            .map(|r| (r.proxy_id.as_str(), r.metric.as_str(), r.bucket))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("p", "m", b),
                ("p", "m", 2 * b),
                ("p", "n", b),
                ("q", "m", b)
            ],
            "sorted by key, so concurrent roll-ups lock rows in one order"
        );
        let r = &rollup[0];
        assert_eq!((r.count, r.sum, r.min, r.max), (3, 15.0, 1.0, 9.0));
        assert_eq!(
            (r.last, r.last_ts),
            (9.0, b + 2000),
            "an older sample never becomes last"
        );
    }

    #[test]
    fn metrics_round_trip_and_non_finite_values_are_refused() {
        let m = vec![("a.b".to_string(), 1.5), ("c".to_string(), -0.0)];
        assert_eq!(
            decode_metrics(&encode_metrics(&m).expect("encode")).expect("decode"),
            m
        );
        let err = encode_metrics(&[("x".to_string(), f64::NAN)]).expect_err("NaN");
        assert!(err.to_string().contains("\"x\""), "{err}");
        assert!(encode_metrics(&[("y".to_string(), f64::INFINITY)]).is_err());
        assert!(decode_metrics("[1]").is_err());
        assert_eq!(
            decode_metrics(r#"{"a": 1, "b": null, "c": "x"}"#).expect("decode"),
            vec![("a".to_string(), 1.0)]
        );
    }

    #[test]
    fn values_lists_number_placeholders_row_major() {
        assert_eq!(values_list(2, 3, true), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_list(1, 1, true), "($1)");
        assert_eq!(values_list(2, 2, false), "(?, ?), (?, ?)");
    }
}
