//! What proxies send back: metric samples (raw + rolled-up time series), captured log lines, and
//! the sync generation counter replicas use to notice changes made by other replicas.

use sqlx::{AnyConnection, FromRow};

use crate::Result;

/// Width of a rollup bucket: 5 minutes.
pub const ROLLUP_MS: i64 = 5 * 60 * 1000;

/// Stores one sample and folds it into its 5-minute rollup bucket. A repeated (proxy, metric,
/// ts) sample replaces the raw value; the rollup then counts it twice, which only skews
/// averages of duplicated pushes, never loses data.
pub async fn insert_sample(
    conn: &mut AnyConnection,
    proxy_id: &str,
    metric: &str,
    ts: i64,
    value: f64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO stats_raw (proxy_id, metric, ts, value) VALUES ($1, $2, $3, $4)
         ON CONFLICT (proxy_id, metric, ts) DO UPDATE SET value = excluded.value",
    )
    .bind(proxy_id)
    .bind(metric)
    .bind(ts)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    let bucket = ts - ts.rem_euclid(ROLLUP_MS);
    sqlx::query(
        "INSERT INTO stats_rollup (proxy_id, metric, bucket, count, sum, min, max, last, last_ts)
         VALUES ($1, $2, $3, 1, $4, $4, $4, $4, $5)
         ON CONFLICT (proxy_id, metric, bucket) DO UPDATE SET
            count = stats_rollup.count + 1,
            sum = stats_rollup.sum + excluded.sum,
            min = CASE WHEN excluded.min < stats_rollup.min THEN excluded.min ELSE stats_rollup.min END,
            max = CASE WHEN excluded.max > stats_rollup.max THEN excluded.max ELSE stats_rollup.max END,
            last = CASE WHEN excluded.last_ts >= stats_rollup.last_ts THEN excluded.last ELSE stats_rollup.last END,
            last_ts = CASE WHEN excluded.last_ts >= stats_rollup.last_ts THEN excluded.last_ts ELSE stats_rollup.last_ts END",
    )
    .bind(proxy_id)
    .bind(metric)
    .bind(bucket)
    .bind(value)
    .bind(ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One sample of a batch for [`insert_samples`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewSample {
    /// Proxy.
    pub proxy_id: String,
    /// Metric name.
    pub metric: String,
    /// Sample time, epoch ms.
    pub ts: i64,
    /// Value.
    pub value: f64,
}

/// A rollup row folded from a batch (before it is merged into the stored row).
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

/// Folds a batch into the raw rows to upsert (a repeated (proxy, metric, ts) keeps the later
/// value) and one rollup delta per (proxy, metric, bucket) — the same end state as calling
/// [`insert_sample`] for each sample in order. One statement may not touch a row twice on
/// PostgreSQL, so the fold is also what makes multi-row upserts legal.
pub fn fold_batch(samples: &[NewSample]) -> (Vec<NewSample>, Vec<RollupDelta>) {
    use std::collections::HashMap;
    let mut raw: Vec<NewSample> = Vec::with_capacity(samples.len());
    let mut raw_at: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(samples.len());
    let mut rollup: Vec<RollupDelta> = Vec::new();
    let mut rollup_at: HashMap<(&str, &str, i64), usize> = HashMap::new();
    for s in samples {
        match raw_at.get(&(s.proxy_id.as_str(), s.metric.as_str(), s.ts)) {
            Some(&i) => raw[i].value = s.value,
            None => {
                raw_at.insert((&s.proxy_id, &s.metric, s.ts), raw.len());
                raw.push(s.clone());
            }
        }
        let bucket = s.ts - s.ts.rem_euclid(ROLLUP_MS);
        match rollup_at.get(&(s.proxy_id.as_str(), s.metric.as_str(), bucket)) {
            Some(&i) => {
                let r = &mut rollup[i];
                r.count += 1;
                r.sum += s.value;
                if s.value < r.min {
                    r.min = s.value;
                }
                if s.value > r.max {
                    r.max = s.value;
                }
                if s.ts >= r.last_ts {
                    r.last = s.value;
                    r.last_ts = s.ts;
                }
            }
            None => {
                rollup_at.insert((&s.proxy_id, &s.metric, bucket), rollup.len());
                rollup.push(RollupDelta {
                    proxy_id: s.proxy_id.clone(),
                    metric: s.metric.clone(),
                    bucket,
                    count: 1,
                    sum: s.value,
                    min: s.value,
                    max: s.value,
                    last: s.value,
                    last_ts: s.ts,
                });
            }
        }
    }
    (raw, rollup)
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

/// Stores a batch of samples with a few multi-row statements (in the caller's transaction);
/// the end state equals [`insert_sample`] called for each sample in order, at a fraction of the
/// statements — what lets one server ingest a large fleet's metric pushes.
pub async fn insert_samples(conn: &mut AnyConnection, samples: &[NewSample]) -> Result<()> {
    let (raw, rollup) = fold_batch(samples);
    let numbered = !conn.backend_name().eq_ignore_ascii_case("sqlite");
    for chunk in raw.chunks(BATCH_ROWS) {
        let sql = format!(
            "INSERT INTO stats_raw (proxy_id, metric, ts, value) VALUES {}
             ON CONFLICT (proxy_id, metric, ts) DO UPDATE SET value = excluded.value",
            values_list(chunk.len(), 4, numbered)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in chunk {
            q = q.bind(&s.proxy_id).bind(&s.metric).bind(s.ts).bind(s.value);
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in rollup.chunks(BATCH_ROWS) {
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

/// Raw samples of one metric in [since, until).
pub async fn raw_series(
    conn: &mut AnyConnection,
    proxy_id: &str,
    metric: &str,
    since: i64,
    until: i64,
) -> Result<Vec<Point>> {
    Ok(sqlx::query_as(
        "SELECT ts AS t, 1 AS count, value AS avg, value AS min, value AS max, value AS last FROM stats_raw
         WHERE proxy_id = $1 AND metric = $2 AND ts >= $3 AND ts < $4 ORDER BY ts LIMIT 10000",
    )
    .bind(proxy_id)
    .bind(metric)
    .bind(since)
    .bind(until)
    .fetch_all(conn)
    .await?)
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

/// Metric names a proxy has reported.
pub async fn metric_names(conn: &mut AnyConnection, proxy_id: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT metric FROM stats_rollup WHERE proxy_id = $1 ORDER BY metric",
    )
    .bind(proxy_id)
    .fetch_all(conn)
    .await?)
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

/// Applies retention: raw samples older than `raw_before`, rollups older than `rollup_before`,
/// log lines older than `logs_before`. Returns the number of rows deleted.
pub async fn apply_retention(
    conn: &mut AnyConnection,
    raw_before: i64,
    rollup_before: i64,
    logs_before: i64,
) -> Result<u64> {
    let mut n = sqlx::query("DELETE FROM stats_raw WHERE ts < $1")
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

    fn s(p: &str, m: &str, ts: i64, value: f64) -> NewSample {
        NewSample {
            proxy_id: p.into(),
            metric: m.into(),
            ts,
            value,
        }
    }

    #[test]
    fn fold_keeps_the_later_raw_value_and_folds_rollups_in_order() {
        let b = ROLLUP_MS;
        let (raw, rollup) = fold_batch(&[
            s("p", "m", b, 5.0),
            s("p", "m", b + 2000, 9.0),
            s("p", "m", b, 7.0),
            s("p", "m", b + 1000, 1.0),
            s("q", "m", b, 2.0),
            s("p", "m", 2 * b, 3.0),
        ]);
        assert_eq!(raw.len(), 5);
        assert_eq!(
            raw[0],
            s("p", "m", b, 7.0),
            "a repeated key keeps the later value"
        );
        assert_eq!(rollup.len(), 3);
        let r = &rollup[0];
        assert_eq!((r.count, r.sum, r.min, r.max), (4, 22.0, 1.0, 9.0));
        assert_eq!(
            (r.last, r.last_ts),
            (9.0, b + 2000),
            "an older sample never becomes last"
        );
        assert_eq!((rollup[1].proxy_id.as_str(), rollup[1].count), ("q", 1));
        assert_eq!(rollup[2].bucket, 2 * b);
    }

    #[test]
    fn values_lists_number_placeholders_row_major() {
        assert_eq!(values_list(2, 3, true), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_list(1, 1, true), "($1)");
        assert_eq!(values_list(2, 2, false), "(?, ?), (?, ?)");
    }
}
