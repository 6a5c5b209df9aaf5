//! `apm capture load`: bulk import of a mapping directory into a WireMock (ours or real).
//!
//! Order of operations: read and check the files; back up the target's current mappings to a
//! file (abort if that fails: nothing is changed without a backup); with `replace`, delete the
//! target's mappings; import in batches with `duplicatePolicy: OVERWRITE`, retrying transient
//! failures with exponential backoff; when WireMock rejects a batch, post its mappings one by
//! one so the report names exactly which files were refused and why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apm_capture::metrics::{MetricKind, Registry};
use serde::Serialize;
use serde_json::{Value, json};

use crate::files::{FileError, LoadedMapping, read_mappings, write_atomic};

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// WireMock base URL, e.g. `http://127.0.0.1:8080`.
    pub wiremock: String,
    /// Directory with the mappings (`DIR/mappings/*.json` or `DIR/*.json`).
    pub mappings: PathBuf,
    /// Delete the target's mappings before importing.
    pub replace: bool,
    /// Where to write the backup of the target's mappings.
    pub backup: PathBuf,
    /// Mappings per import request.
    pub batch_size: usize,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First backoff delay; doubled after each failure.
    pub backoff: Duration,
    /// Longest backoff delay.
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl LoadConfig {
    /// Defaults for a mapping directory and target: batches of 100, 5 attempts, 200 ms
    /// initial backoff capped at 10 s, 30 s timeout, backup under `DIR/backups/`.
    pub fn new(wiremock: &str, mappings: &Path) -> Self {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        LoadConfig {
            wiremock: wiremock.trim_end_matches('/').to_string(),
            mappings: mappings.to_path_buf(),
            replace: false,
            backup: mappings
                .join("backups")
                .join(format!("wiremock-mappings-{stamp}.json")),
            batch_size: 100,
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A mapping WireMock refused.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Refused {
    /// The file (`file#index` for multi-mapping files).
    pub file: String,
    /// HTTP status WireMock answered.
    pub status: u16,
    /// WireMock's error text (trimmed).
    pub message: String,
}

/// What a load did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LoadReport {
    /// Mappings read from the directory.
    pub read: usize,
    /// Files that could not be read or parsed.
    pub invalid_files: Vec<FileError>,
    /// Mappings the target accepted.
    pub loaded: usize,
    /// Mappings the target refused.
    pub refused: Vec<Refused>,
    /// Import requests sent (batches).
    pub batches: usize,
    /// Retries made after transient failures.
    pub retries: usize,
    /// Mappings the target had before, saved in `backup`.
    pub backed_up: usize,
    /// The backup file.
    pub backup: PathBuf,
    /// Whether the target's mappings were deleted first.
    pub replaced: bool,
}

/// Why a load stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The mapping directory could not be read.
    #[error("{0}")]
    Files(FileError),
    /// The target could not be reached or kept failing.
    #[error("WireMock at {url}: {message}")]
    Target {
        /// The URL used.
        url: String,
        /// What failed.
        message: String,
    },
    /// The backup could not be written; nothing was changed on the target.
    #[error("backup {path}: {message}; nothing was changed on the target")]
    Backup {
        /// Backup path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Declares the loader metrics (the seed's names).
pub fn describe_metrics(r: &mut Registry) {
    r.describe(
        "wiremock_loader_mappings_processed_total",
        MetricKind::Counter,
        "Mappings processed by the loader, by status (success, error).",
    );
    r.describe(
        "wiremock_loader_mappings_errors_total",
        MetricKind::Counter,
        "Loader errors, by error_type (invalid_file, wiremock_api, connection).",
    );
    r.describe(
        "wiremock_loader_requests_total",
        MetricKind::Counter,
        "HTTP requests sent to WireMock, by operation.",
    );
    r.describe(
        "wiremock_loader_retries_total",
        MetricKind::Counter,
        "Requests retried after a transient failure.",
    );
    r.describe_histogram(
        "wiremock_loader_wiremock_requests_duration_seconds",
        "Duration of each HTTP request to WireMock (every attempt, until its answer is read \
         or it fails), by operation.",
        REQUEST_DURATION_BUCKETS,
    );
}

/// Seconds; WireMock answers admin calls in milliseconds, bulk imports of large batches in
/// seconds, and the request timeout defaults to 30 s.
const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Outcome {
    status: u16,
    body: String,
}

struct Client<'a> {
    http: reqwest::Client,
    cfg: &'a LoadConfig,
    report: &'a mut LoadReport,
    metrics: &'a mut Registry,
}

fn transient(status: u16) -> bool {
    status == 429 || status >= 500
}

impl Client<'_> {
    /// Sends with retries. Transient failures (connection errors, timeouts, 429, 5xx) are
    /// retried with exponential backoff; other answers are returned as they are.
    async fn send(
        &mut self,
        op: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Outcome, LoadError> {
        let url = format!("{}{path}", self.cfg.wiremock);
        let mut delay = self.cfg.backoff;
        let attempts = self.cfg.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.report.retries += 1;
                self.metrics
                    .inc("wiremock_loader_retries_total", &[("operation", op)], 1);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(self.cfg.max_backoff);
            }
            self.metrics
                .inc("wiremock_loader_requests_total", &[("operation", op)], 1);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.cfg.timeout);
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = std::time::Instant::now();
            let answer = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    Ok((status, resp.text().await.unwrap_or_default()))
                }
                Err(e) => Err(e),
            };
            self.metrics.observe(
                "wiremock_loader_wiremock_requests_duration_seconds",
                &[("operation", op)],
                started.elapsed().as_secs_f64(),
            );
            match answer {
                Ok((status, text)) => {
                    if transient(status) && attempt < attempts {
                        last = format!("HTTP {status}");
                        continue;
                    }
                    return Ok(Outcome { status, body: text });
                }
                Err(e) => {
                    last = if e.is_timeout() {
                        "timed out".into()
                    } else if e.is_connect() {
                        "connection failed".into()
                    } else {
                        e.to_string()
                    };
                }
            }
        }
        self.metrics.inc(
            "wiremock_loader_mappings_errors_total",
            &[("error_type", "connection")],
            1,
        );
        Err(LoadError::Target {
            url,
            message: format!("{op} failed after {attempts} attempts: {last}"),
        })
    }
}

fn trim(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Loads a mapping directory into WireMock. Updates `metrics` with the loader counters.
pub async fn load(cfg: &LoadConfig, metrics: &mut Registry) -> Result<LoadReport, LoadError> {
    describe_metrics(metrics);
    let (mappings, invalid) = read_mappings(&cfg.mappings).map_err(LoadError::Files)?;
    let mut report = LoadReport {
        read: mappings.len(),
        backup: cfg.backup.clone(),
        ..LoadReport::default()
    };
    for _ in &invalid {
        metrics.inc(
            "wiremock_loader_mappings_errors_total",
            &[("error_type", "invalid_file")],
            1,
        );
    }
    report.invalid_files = invalid;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| LoadError::Client(e.to_string()))?;
    let mut c = Client {
        http,
        cfg,
        report: &mut report,
        metrics,
    };

    // 1. Backup first; nothing changes on the target without one.
    let current = c
        .send("backup", reqwest::Method::GET, "/__admin/mappings", None)
        .await?;
    if current.status != 200 {
        return Err(LoadError::Target {
            url: format!("{}/__admin/mappings", cfg.wiremock),
            message: format!(
                "listing mappings for the backup answered HTTP {}: {}",
                current.status,
                trim(&current.body)
            ),
        });
    }
    let listed: Value = serde_json::from_str(&current.body).map_err(|e| LoadError::Target {
        url: format!("{}/__admin/mappings", cfg.wiremock),
        message: format!("the mapping list is not JSON: {e}"),
    })?;
    c.report.backed_up = listed
        .get("mappings")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if let Some(dir) = cfg.backup.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LoadError::Backup {
            path: cfg.backup.clone(),
            message: e.to_string(),
        })?;
    }
    let mut text = serde_json::to_vec_pretty(&listed).unwrap_or_default();
    text.push(b'\n');
    write_atomic(&cfg.backup, &text).map_err(|e| LoadError::Backup {
        path: cfg.backup.clone(),
        message: e.source.to_string(),
    })?;

    // 2. Replace: clear the target.
    if cfg.replace {
        let r = c
            .send("delete", reqwest::Method::DELETE, "/__admin/mappings", None)
            .await?;
        if !(200..300).contains(&r.status) {
            return Err(LoadError::Target {
                url: format!("{}/__admin/mappings", cfg.wiremock),
                message: format!(
                    "deleting mappings answered HTTP {}: {}",
                    r.status,
                    trim(&r.body)
                ),
            });
        }
        c.report.replaced = true;
    }

    // 3. Import in batches.
    for batch in mappings.chunks(cfg.batch_size.max(1)) {
        c.report.batches += 1;
        let body = json!({
            "mappings": batch.iter().map(|m| &m.mapping).collect::<Vec<_>>(),
            "importOptions": {"duplicatePolicy": "OVERWRITE", "deleteAllNotInImport": false},
        });
        let r = c
            .send(
                "import",
                reqwest::Method::POST,
                "/__admin/mappings/import",
                Some(&body),
            )
            .await?;
        if (200..300).contains(&r.status) {
            c.report.loaded += batch.len();
            c.metrics.inc(
                "wiremock_loader_mappings_processed_total",
                &[("status", "success")],
                batch.len() as u64,
            );
        } else {
            one_by_one(&mut c, batch).await?;
        }
    }
    Ok(report)
}

/// Posts each mapping of a refused batch alone, to find which ones WireMock refuses.
async fn one_by_one(c: &mut Client<'_>, batch: &[LoadedMapping]) -> Result<(), LoadError> {
    for m in batch {
        let r = c
            .send(
                "create",
                reqwest::Method::POST,
                "/__admin/mappings",
                Some(&m.mapping),
            )
            .await?;
        if (200..300).contains(&r.status) {
            c.report.loaded += 1;
            c.metrics.inc(
                "wiremock_loader_mappings_processed_total",
                &[("status", "success")],
                1,
            );
        } else {
            c.metrics.inc(
                "wiremock_loader_mappings_processed_total",
                &[("status", "error")],
                1,
            );
            c.metrics.inc(
                "wiremock_loader_mappings_errors_total",
                &[("error_type", "wiremock_api")],
                1,
            );
            c.report.refused.push(Refused {
                file: m.origin.clone(),
                status: r.status,
                message: trim(&r.body),
            });
        }
    }
    Ok(())
}
