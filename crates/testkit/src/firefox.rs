//! A real headless Firefox (Debian's `firefox-esr`) driven over WebDriver BiDi, the W3C protocol
//! Firefox speaks natively: no geckodriver, no extra download.
//!
//! [`Firefox::launch`] starts `firefox-esr --headless --remote-debugging-port 0` with a fresh
//! profile in a temp dir whose `user.js` switches off everything that would talk to the network
//! (updates, telemetry, studies, captive-portal and connectivity checks, safe browsing, remote
//! settings, DNS-over-HTTPS, prefetching) and forces direct connections. Firefox writes the
//! port it picked to `WebDriverBiDiServer.json` in the profile; the harness connects to
//! `ws://127.0.0.1:<port>/session` and opens a session. Firefox runs in its own process group,
//! killed by PID on [`Drop`] (content processes included), also while a test panics, and by a
//! watchdog when the test process dies first.
//!
//! Each [`crate::browser::Tab`] lives in its own *user context* (`browser.createUserContext`):
//! own cookies and storage, like Chromium's browser contexts.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};

use crate::browser::{BrowserError, io, kill_group, spawn_watchdog, stop_watchdog, tail};

/// Where Debian installs Firefox ESR; override with `APM_FIREFOX`.
pub const DEFAULT_FIREFOX: &str = "/usr/bin/firefox-esr";

/// Preferences of the test profile. Loopback only: nothing may phone home.
const USER_JS: &str = r#"
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("app.update.disabledForTesting", true);
user_pref("app.update.checkInstallTime", false);
user_pref("app.normandy.enabled", false);
user_pref("app.normandy.api_url", "");
user_pref("app.shield.optoutstudies.enabled", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);
user_pref("nimbus.disabled", true);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.usage.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.archive.enabled", false);
user_pref("toolkit.telemetry.server", "");
user_pref("toolkit.telemetry.shutdownPingSender.enabled", false);
user_pref("toolkit.telemetry.firstShutdownPing.enabled", false);
user_pref("toolkit.telemetry.newProfilePing.enabled", false);
user_pref("toolkit.telemetry.bhrPing.enabled", false);
user_pref("browser.ping-centre.telemetry", false);
user_pref("browser.newtabpage.activity-stream.feeds.telemetry", false);
user_pref("browser.newtabpage.activity-stream.telemetry", false);
user_pref("browser.newtabpage.activity-stream.feeds.snippets", false);
user_pref("browser.newtabpage.activity-stream.feeds.topsites", false);
user_pref("browser.newtabpage.activity-stream.feeds.section.topstories", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.discovery.enabled", false);
user_pref("browser.crashReports.unsubmittedCheck.autoSubmit2", false);
user_pref("breakpad.reportURL", "");
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.trr.mode", 5);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.predictor.enabled", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.proxy.type", 0);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.downloads.remote.enabled", false);
user_pref("browser.safebrowsing.blockedURIs.enabled", false);
user_pref("browser.safebrowsing.provider.mozilla.updateURL", "");
user_pref("browser.safebrowsing.provider.google4.updateURL", "");
user_pref("browser.safebrowsing.provider.google.updateURL", "");
user_pref("services.settings.server", "data:,#remote-settings-dummy/v1");
user_pref("services.sync.enabled", false);
user_pref("identity.fxaccounts.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.blocklist.enabled", false);
user_pref("extensions.systemAddon.update.enabled", false);
user_pref("browser.search.update", false);
user_pref("browser.region.network.url", "");
user_pref("browser.region.update.enabled", false);
user_pref("geo.enabled", false);
user_pref("geo.provider.network.url", "");
user_pref("media.gmp-manager.url", "");
user_pref("media.gmp-manager.updateEnabled", false);
user_pref("media.gmp-manager.chromium-update-url", "");
user_pref("media.gmp-provider.enabled", false);
user_pref("media.eme.enabled", false);
user_pref("media.gmp-gmpopenh264.enabled", false);
user_pref("media.gmp-widevinecdm.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.page", 0);
user_pref("browser.startup.homepage", "about:blank");
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("startup.homepage_welcome_url", "");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("trailhead.firstrun.didSeeAboutWelcome", true);
user_pref("browser.sessionstore.resume_from_crash", false);
user_pref("toolkit.startup.max_resumed_crashes", -1);
user_pref("browser.tabs.warnOnClose", false);
user_pref("signon.rememberSignons", false);
user_pref("dom.disable_open_during_load", false);
user_pref("layout.css.devPixelsPerPx", "1.0");
user_pref("ui.prefersReducedMotion", 1);
"#;

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;
type Sink = async_tungstenite::WebSocketSender<async_tungstenite::tokio::ConnectStream>;

/// A WebDriver BiDi connection: commands are matched to answers by id; events are ignored.
pub(crate) struct Bidi {
    sink: Mutex<Sink>,
    pending: Pending,
    next: AtomicU64,
}

impl Bidi {
    /// Sends a command and waits (bounded) for its result.
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        let bidi = |message: String| BrowserError::Cdp {
            what: format!("bidi {method}"),
            message,
        };
        self.sink
            .lock()
            .await
            .send(Message::text(text))
            .await
            .map_err(|e| bidi(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(answer)) => answer.map_err(bidi),
            Ok(Err(_)) => Err(bidi("connection to Firefox closed".into())),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(BrowserError::Timeout {
                    what: format!("bidi {method}"),
                    waited: Duration::from_secs(30),
                    url: String::new(),
                })
            }
        }
    }
}

/// A running headless Firefox. Dropping it kills the browser's process group.
pub struct Firefox {
    pub(crate) bidi: Arc<Bidi>,
    reader: tokio::task::JoinHandle<()>,
    child: Child,
    watchdog: Option<Child>,
    version: String,
    profile: tempfile::TempDir,
}

impl Firefox {
    /// Starts Firefox and opens a BiDi session. Must be called inside a tokio runtime.
    pub async fn launch() -> Result<Firefox, BrowserError> {
        let exe = std::env::var("APM_FIREFOX").unwrap_or_else(|_| DEFAULT_FIREFOX.to_string());
        if !Path::new(&exe).exists() {
            return Err(BrowserError::Start {
                reason: format!(
                    "{exe} not found: install Debian's `firefox-esr` (scripts/install-test-deps.sh) or set APM_FIREFOX"
                ),
                stderr: String::new(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("apm-firefox-")
            .tempdir()
            .map_err(io("creating the Firefox profile dir"))?;
        let profile = dir.path().join("profile");
        fs::create_dir_all(&profile).map_err(io("creating the Firefox profile"))?;
        fs::write(profile.join("user.js"), USER_JS).map_err(io("writing user.js"))?;
        let home = dir.path().join("home");
        fs::create_dir_all(&home).map_err(io("creating the Firefox home"))?;
        let stderr_path = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).map_err(io("creating firefox stderr.log"))?;
        let mut command = Command::new(&exe);
        command
            .args([
                "--headless",
                "--no-remote",
                "--new-instance",
                "--remote-debugging-port",
                "0",
                "--remote-allow-hosts",
                "127.0.0.1",
                "--width",
                "1440",
                "--height",
                "900",
                "--profile",
            ])
            .arg(&profile)
            .arg("about:blank")
            // Nothing of the test machine's user leaks in (or is written back).
            .env("HOME", &home)
            .env("MOZ_HEADLESS", "1")
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .env("MOZ_DISABLE_AUTO_SAFE_MODE", "1")
            // Firefox's own switch for test runs: its network layer refuses anything that is
            // not local, and release builds then honour the remote-settings server pref above
            // (otherwise they keep resolving firefox.settings.services.mozilla.com).
            .env("MOZ_DISABLE_NONLOCAL_CONNECTIONS", "1")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        // Own process group: content processes are killed with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(io(format!("starting {exe}")))?;
        let pid = child.id();
        let watchdog = spawn_watchdog(pid, dir.path(), "apm-firefox-");

        let port_file = profile.join("WebDriverBiDiServer.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Ok(text) = fs::read_to_string(&port_file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(port) = v["ws_port"].as_u64()
            {
                break port;
            }
            let fail = |reason: String| BrowserError::Start {
                reason,
                stderr: tail(&stderr_path),
            };
            if let Ok(Some(status)) = child.try_wait() {
                kill_group(pid);
                stop_watchdog(watchdog);
                return Err(fail(format!("firefox exited with {status}")));
            }
            if Instant::now() > deadline {
                kill_group(pid);
                let _ = child.wait();
                stop_watchdog(watchdog);
                return Err(fail("no WebDriverBiDiServer.json after 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = format!("ws://127.0.0.1:{port}/session");
        let (ws, _) = match async_tungstenite::tokio::connect_async(url.as_str()).await {
            Ok(pair) => pair,
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                stop_watchdog(watchdog);
                return Err(BrowserError::Start {
                    reason: format!("connecting to {url}: {e}"),
                    stderr: tail(&stderr_path),
                });
            }
        };
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                let Some(id) = v["id"].as_u64() else { continue };
                let Some(tx) = reader_pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
                else {
                    continue;
                };
                let answer = if v["type"] == "success" {
                    Ok(v["result"].clone())
                } else {
                    Err(format!(
                        "{}: {}",
                        v["error"].as_str().unwrap_or("error"),
                        v["message"].as_str().unwrap_or("")
                    ))
                };
                let _ = tx.send(answer);
            }
            // The connection is gone: every waiting command fails instead of hanging.
            reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        let bidi = Arc::new(Bidi {
            sink: Mutex::new(sink),
            pending,
            next: AtomicU64::new(1),
        });
        let mut firefox = Firefox {
            bidi,
            reader,
            child,
            watchdog,
            version: String::new(),
            profile: dir,
        };
        let session = firefox
            .bidi
            .call("session.new", json!({"capabilities": {}}))
            .await
            .map_err(|e| BrowserError::Start {
                reason: format!("session.new: {e}"),
                stderr: tail(&stderr_path),
            })?;
        firefox.version = format!(
            "{} {}",
            session["capabilities"]["browserName"]
                .as_str()
                .unwrap_or("firefox"),
            session["capabilities"]["browserVersion"]
                .as_str()
                .unwrap_or("?")
        );
        Ok(firefox)
    }

    /// The browser name and version reported by the session (e.g. `firefox 153.7.0`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Opens a tab in a new user context (own cookies and storage); returns its context id.
    pub(crate) async fn new_context(&self) -> Result<String, BrowserError> {
        let user = self
            .bidi
            .call("browser.createUserContext", json!({}))
            .await?;
        let user = user["userContext"].as_str().unwrap_or_default().to_string();
        let created = self
            .bidi
            .call(
                "browsingContext.create",
                json!({"type": "tab", "userContext": user}),
            )
            .await?;
        let context = created["context"].as_str().unwrap_or_default().to_string();
        self.bidi
            .call(
                "browsingContext.setViewport",
                json!({"context": context, "viewport": {"width": 1440, "height": 900}}),
            )
            .await?;
        Ok(context)
    }

    /// The browser's PID, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the profile and `stderr.log`.
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        self.reader.abort();
        kill_group(self.child.id());
        let _ = self.child.wait();
        stop_watchdog(self.watchdog.take());
    }
}
