//! Real headless browsers for end-to-end tests: Debian's `chromium` driven over the DevTools
//! protocol, and Debian's `firefox-esr` driven over WebDriver BiDi ([`crate::firefox`]). The same
//! scenario code runs in both: [`Browser::launch`] takes an [`Engine`], and [`Tab`] offers the
//! same verbs whichever engine is behind it.
//!
//! [`Chromium::launch`] starts `chromium --headless=new --no-sandbox` (tests run as root) with a
//! fresh `--user-data-dir` in a temp dir and every background feature that would talk to the
//! network switched off (component updates, QUIC, sync, background networking), listening for
//! DevTools on a loopback port it picks itself (read back from `DevToolsActivePort`). Chromium
//! runs in its own process group; [`Drop`] kills that group by PID (renderers and the zygote
//! included), also while a test panics, and a small watchdog process kills it if the test process
//! dies without running `Drop`.
//!
//! One browser serves a whole test binary: [`Chromium::new_tab`] opens a tab in a *fresh
//! browser context* (its own cookie jar and storage), so each simulated user is isolated without
//! paying for another browser start.
//!
//! [`Tab`] wraps a page with the few verbs an end-to-end test needs (go to, wait for a selector,
//! click, type with real key events, read text, run a script, take a screenshot). Screenshots go
//! to [`screenshot_dir`]: `$CARGO_TARGET_DIR/screenshots`, else `target/screenshots` at the
//! workspace root; Firefox's carry a `firefox-` prefix so both sets sit side by side.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, InsertTextParams,
};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser as CdpBrowser, Page};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::firefox::{Bidi, Firefox};

/// Where Debian installs Chromium; override with `APM_CHROMIUM`.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// How long [`Tab`] waits for a selector or condition by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Errors of the browser harness.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Starting Chromium or reading its files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The browser did not come up; carries the tail of its stderr.
    #[error("browser did not start: {reason}\n--- browser stderr (tail) ---\n{stderr}")]
    Start {
        /// Why.
        reason: String,
        /// Tail of its stderr.
        stderr: String,
    },
    /// A DevTools command failed.
    #[error("devtools: {what}: {message}")]
    Cdp {
        /// What was being done.
        what: String,
        /// The protocol error.
        message: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {waited:?} waiting for {what} (page: {url})")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The page's URL at that moment.
        url: String,
    },
    /// A script returned something of an unexpected shape.
    #[error("script {script:?} returned an unexpected value: {message}")]
    Script {
        /// The script (truncated).
        script: String,
        /// What went wrong.
        message: String,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrowserError {
    let what = what.into();
    move |source| BrowserError::Io { what, source }
}

fn cdp(what: impl Into<String>) -> impl FnOnce(chromiumoxide::error::CdpError) -> BrowserError {
    let what = what.into();
    move |e| BrowserError::Cdp {
        what,
        message: e.to_string(),
    }
}

/// Directory screenshots are written to (created on demand).
pub fn screenshot_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("screenshots"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots"),
    }
}

/// A running headless Chromium. Dropping it kills the browser's process group.
pub struct Chromium {
    browser: CdpBrowser,
    handler: tokio::task::JoinHandle<()>,
    child: Child,
    watchdog: Option<Child>,
    profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts Chromium and connects to it. Must be called inside a tokio runtime (the DevTools
    /// connection is driven by a task on it).
    pub async fn launch() -> Result<Chromium, BrowserError> {
        let exe = std::env::var("APM_CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.to_string());
        if !Path::new(&exe).exists() {
            return Err(BrowserError::Start {
                reason: format!(
                    "{exe} not found: install Debian's `chromium` (scripts/install-test-deps.sh) or set APM_CHROMIUM"
                ),
                stderr: String::new(),
            });
        }
        let profile = tempfile::Builder::new()
            .prefix("apm-chromium-")
            .tempdir()
            .map_err(io("creating the Chromium profile dir"))?;
        let stderr_path = profile.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).map_err(io("creating chromium stderr.log"))?;
        let data_dir = profile.path().join("data");
        let mut command = Command::new(&exe);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--disable-component-update",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
                // Loopback only: without this Chromium still looks up Google's account, update
                // and component hosts through the system resolver. The rules also apply to IP
                // literals, hence the loopback exclusions.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*",
                "--disable-client-side-phishing-detection",
                "--disable-domain-reliability",
                "--no-pings",
                "--disable-breakpad",
                "--password-store=basic",
                "--use-mock-keychain",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1440,900",
            ])
            .arg(format!("--user-data-dir={}", data_dir.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        // Own process group: renderers and the zygote are killed with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(io(format!("starting {exe}")))?;
        let pid = child.id();
        let watchdog = spawn_watchdog(pid, profile.path(), "apm-chromium-");

        // Chromium writes the chosen port and the browser target's path to this file.
        let port_file = data_dir.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let ws_url = loop {
            if let Ok(text) = fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && port.trim().parse::<u16>().is_ok()
                {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                kill_group(pid);
                return Err(BrowserError::Start {
                    reason: format!("chromium exited with {status}"),
                    stderr: tail(&stderr_path),
                });
            }
            if Instant::now() > deadline {
                kill_group(pid);
                let _ = child.wait();
                return Err(BrowserError::Start {
                    reason: "no DevToolsActivePort after 30 s".into(),
                    stderr: tail(&stderr_path),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let config = HandlerConfig {
            viewport: Some(Viewport {
                width: 1440,
                height: 900,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            }),
            request_timeout: Duration::from_secs(30),
            ..HandlerConfig::default()
        };
        let connected = CdpBrowser::connect_with_config(ws_url.clone(), config).await;
        let (browser, mut handler) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(BrowserError::Start {
                    reason: format!("connecting to {ws_url}: {e}"),
                    stderr: tail(&stderr_path),
                });
            }
        };
        // Some events fail to decode on newer Chromium versions; those errors are per message,
        // so the loop only ends when the connection does.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Ok(Chromium {
            browser,
            handler,
            child,
            watchdog,
            profile,
        })
    }

    /// The Chromium version string (e.g. `Chrome/156.0...`).
    pub async fn version(&self) -> Result<String, BrowserError> {
        Ok(self
            .browser
            .version()
            .await
            .map_err(cdp("Browser.getVersion"))?
            .product)
    }

    /// Opens a tab in a new, isolated browser context (own cookies and storage).
    pub async fn new_tab(&self) -> Result<Tab, BrowserError> {
        let context: BrowserContextId = self
            .browser
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .map_err(cdp("Target.createBrowserContext"))?;
        let params = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(context)
            .build()
            .map_err(|message| BrowserError::Cdp {
                what: "building Target.createTarget".into(),
                message,
            })?;
        let page = self
            .browser
            .new_page(params)
            .await
            .map_err(cdp("Target.createTarget"))?;
        Ok(Tab {
            inner: Inner::Cdp(page),
            viewport: std::sync::Mutex::new(None),
        })
    }

    /// The browser's PID, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The profile dir (holds `stderr.log`, useful when a test fails).
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }
}

/// Tail (30 lines) of a browser's stderr log, for start-up errors.
pub(crate) fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Starts a watchdog that kills the browser's process group (and removes its temp dir, which
/// must carry `marker` in its name) when the test process dies without running `Drop`.
pub(crate) fn spawn_watchdog(pid: u32, dir: &Path, marker: &str) -> Option<Child> {
    Command::new("setsid")
        .args([
            "sh",
            "-c",
            // A dead test process may linger as a zombie, which `kill -0` still finds.
            // After killing the browser, the profile the test could not remove goes too.
            // No `--` before the group: dash's `kill` (Debian's /bin/sh) rejects it.
            "while [ -d /proc/$1 ] && ! grep -q '^[0-9]* (.*) Z' /proc/$1/stat 2>/dev/null; do sleep 1; done; \
             kill -KILL -\"$2\" 2>/dev/null; sleep 1; \
             case \"$3\" in */\"$4\"*) rm -rf -- \"$3\" ;; esac",
            "apm-browser-watchdog",
            &std::process::id().to_string(),
            &pid.to_string(),
            &dir.to_string_lossy(),
            marker,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Stops a watchdog (its own session, so its group) once the browser is gone.
pub(crate) fn stop_watchdog(watchdog: Option<Child>) {
    if let Some(mut w) = watchdog {
        if let Ok(raw) = i32::try_from(w.id()) {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
        let _ = w.wait();
    }
}

pub(crate) fn kill_group(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.handler.abort();
        kill_group(self.child.id());
        let _ = self.child.wait();
        stop_watchdog(self.watchdog.take());
    }
}

/// Which browser engine to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Debian's `chromium`, over the DevTools protocol.
    Chromium,
    /// Debian's `firefox-esr`, over WebDriver BiDi.
    Firefox,
}

impl Engine {
    /// Lower-case name (`chromium`, `firefox`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }
}

/// A running browser of either engine. Dropping it kills the browser's process group.
pub enum Browser {
    /// Chromium over CDP (boxed: its connection state is large).
    Chromium(Box<Chromium>),
    /// Firefox over WebDriver BiDi.
    Firefox(Firefox),
}

impl Browser {
    /// Starts the browser of `engine`. Must be called inside a tokio runtime.
    pub async fn launch(engine: Engine) -> Result<Browser, BrowserError> {
        Ok(match engine {
            Engine::Chromium => Browser::Chromium(Box::new(Chromium::launch().await?)),
            Engine::Firefox => Browser::Firefox(Firefox::launch().await?),
        })
    }

    /// The engine behind this browser.
    pub fn engine(&self) -> Engine {
        match self {
            Browser::Chromium(_) => Engine::Chromium,
            Browser::Firefox(_) => Engine::Firefox,
        }
    }

    /// Product and version (e.g. `Chrome/156.0…`, `firefox 153.7.0`).
    pub async fn version(&self) -> Result<String, BrowserError> {
        match self {
            Browser::Chromium(c) => c.version().await,
            Browser::Firefox(f) => Ok(f.version().to_string()),
        }
    }

    /// Opens a tab with its own cookies and storage.
    pub async fn new_tab(&self) -> Result<Tab, BrowserError> {
        match self {
            Browser::Chromium(c) => c.new_tab().await,
            Browser::Firefox(f) => Ok(Tab {
                inner: Inner::Bidi {
                    context: f.new_context().await?,
                    bidi: f.bidi.clone(),
                },
                viewport: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The browser's PID, which is also its process group id.
    pub fn pid(&self) -> u32 {
        match self {
            Browser::Chromium(c) => c.pid(),
            Browser::Firefox(f) => f.pid(),
        }
    }

    /// The temp dir of the browser's profile (holds `stderr.log`).
    pub fn profile_dir(&self) -> &Path {
        match self {
            Browser::Chromium(c) => c.profile_dir(),
            Browser::Firefox(f) => f.profile_dir(),
        }
    }
}

/// One browser tab.
pub struct Tab {
    inner: Inner,
    /// The viewport the test asked for, re-applied after Chromium's full-page capture (which
    /// resets the device metrics to the launch size).
    viewport: std::sync::Mutex<Option<(u32, u32)>>,
}

enum Inner {
    Cdp(Page),
    Bidi { bidi: Arc<Bidi>, context: String },
}

/// JSON-quotes a string for embedding in a script.
fn js(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// WebDriver's code for a named key (BiDi `keyDown.value`).
fn webdriver_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "Tab" => "\u{E004}",
        "Enter" => "\u{E007}",
        "Escape" => "\u{E00C}",
        " " | "Space" => " ",
        "ArrowUp" => "\u{E013}",
        "ArrowDown" => "\u{E015}",
        _ => return None,
    })
}

fn key_actions(keys: impl IntoIterator<Item = String>) -> Value {
    let mut actions = Vec::new();
    for k in keys {
        actions.push(json!({"type": "keyDown", "value": k}));
        actions.push(json!({"type": "keyUp", "value": k}));
    }
    json!([{"type": "key", "id": "keyboard", "actions": actions}])
}

impl Tab {
    /// Which engine this tab belongs to.
    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Cdp(_) => Engine::Chromium,
            Inner::Bidi { .. } => Engine::Firefox,
        }
    }

    async fn bidi(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        match &self.inner {
            Inner::Bidi { bidi, .. } => bidi.call(method, params).await,
            Inner::Cdp(_) => Err(BrowserError::Cdp {
                what: method.into(),
                message: "not a Firefox tab".into(),
            }),
        }
    }

    fn context(&self) -> &str {
        match &self.inner {
            Inner::Bidi { context, .. } => context,
            Inner::Cdp(_) => "",
        }
    }

    /// Brings a Firefox tab to the front: only the selected tab's document has the focus, and
    /// without it key events still arrive but `:focus-visible` (the focus ring) never matches.
    async fn activate(&self) -> Result<(), BrowserError> {
        self.bidi(
            "browsingContext.activate",
            json!({"context": self.context()}),
        )
        .await
        .map(|_| ())
    }

    /// Navigates and waits for the load.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        match &self.inner {
            Inner::Cdp(page) => {
                page.goto(url)
                    .await
                    .map_err(cdp(format!("navigating to {url}")))?;
            }
            Inner::Bidi { .. } => {
                self.bidi(
                    "browsingContext.navigate",
                    json!({"context": self.context(), "url": url, "wait": "complete"}),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        match &self.inner {
            Inner::Cdp(page) => page.url().await.ok().flatten().unwrap_or_default(),
            Inner::Bidi { .. } => self
                .bidi(
                    "browsingContext.getTree",
                    json!({"root": self.context(), "maxDepth": 0}),
                )
                .await
                .ok()
                .and_then(|t| t["contexts"][0]["url"].as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }

    /// Evaluates an expression and deserializes its (JSON-able) value.
    pub async fn eval<T: DeserializeOwned>(&self, script: &str) -> Result<T, BrowserError> {
        let value = match &self.inner {
            Inner::Cdp(page) => {
                // A script sent while the page's context is being replaced can wait forever for
                // a context; bound it so a test fails instead of hanging.
                let result = tokio::time::timeout(Duration::from_secs(15), page.evaluate(script))
                    .await
                    .map_err(|_| BrowserError::Timeout {
                        what: format!("script {}", short(script)),
                        waited: Duration::from_secs(15),
                        url: String::new(),
                    })?
                    .map_err(cdp(format!("evaluating {}", short(script))))?;
                return result.into_value().map_err(|e| BrowserError::Script {
                    script: short(script),
                    message: e.to_string(),
                });
            }
            Inner::Bidi { .. } => {
                // BiDi answers with typed remote values; JSON text inside an array (so that
                // `undefined` becomes null) deserializes like CDP's by-value results.
                let answer = self
                    .bidi(
                        "script.evaluate",
                        json!({
                            "expression": format!("JSON.stringify([(\n{script}\n)])"),
                            "target": {"context": self.context()},
                            "awaitPromise": false,
                            "resultOwnership": "none",
                        }),
                    )
                    .await?;
                if answer["type"] == "exception" {
                    return Err(BrowserError::Script {
                        script: short(script),
                        message: answer["exceptionDetails"]["text"]
                            .as_str()
                            .unwrap_or("exception")
                            .to_string(),
                    });
                }
                let text = answer["result"]["value"].as_str().unwrap_or("[null]");
                let mut v: Value =
                    serde_json::from_str(text).map_err(|e| BrowserError::Script {
                        script: short(script),
                        message: e.to_string(),
                    })?;
                v[0].take()
            }
        };
        serde_json::from_value(value).map_err(|e| BrowserError::Script {
            script: short(script),
            message: e.to_string(),
        })
    }

    /// Polls `condition` (a boolean JS expression) until it holds. Errors during navigation
    /// (the page's context being replaced) count as "not yet".
    pub async fn wait_until(&self, condition: &str, what: &str) -> Result<(), BrowserError> {
        self.wait_until_for(condition, what, DEFAULT_WAIT).await
    }

    /// [`Tab::wait_until`] with an explicit timeout.
    pub async fn wait_until_for(
        &self,
        condition: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let start = Instant::now();
        let script = format!(
            "(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if let Ok(true) = self.eval::<bool>(&script).await {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(BrowserError::Timeout {
                    what: what.to_string(),
                    waited: timeout,
                    url: self.url().await,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page has loaded and an element matches `selector`.
    pub async fn wait_for(&self, selector: &str) -> Result<(), BrowserError> {
        self.wait_until(
            &format!(
                "document.readyState === 'complete' && document.querySelector({})",
                js(selector)
            ),
            &format!("selector {selector}"),
        )
        .await
    }

    /// Finds an element, retrying briefly when the document is being replaced under us (a
    /// navigation between the wait and the lookup makes node ids stale).
    async fn element(
        &self,
        page: &Page,
        selector: &str,
    ) -> Result<chromiumoxide::Element, BrowserError> {
        let mut last = None;
        for _ in 0..20 {
            self.wait_for(selector).await?;
            match page.find_element(selector).await {
                Ok(e) => return Ok(e),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BrowserError::Cdp {
            what: format!("finding {selector}"),
            message: last.map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    /// Waits until the page's visible text contains `text`.
    pub async fn wait_for_text(&self, text: &str) -> Result<(), BrowserError> {
        self.wait_until(
            &format!(
                "document.body && document.body.innerText.includes({})",
                js(text)
            ),
            &format!("text {text:?}"),
        )
        .await
    }

    /// Waits until the URL's path (plus query) satisfies `starts_with`.
    pub async fn wait_for_path(&self, prefix: &str) -> Result<(), BrowserError> {
        self.wait_until(
            &format!(
                "document.readyState === 'complete' && (location.pathname + location.search).startsWith({})",
                js(prefix)
            ),
            &format!("path starting with {prefix}"),
        )
        .await
    }

    /// Clicks the element (a real mouse click at its centre, after scrolling it into view).
    pub async fn click(&self, selector: &str) -> Result<(), BrowserError> {
        match &self.inner {
            Inner::Cdp(page) => {
                let element = self.element(page, selector).await?;
                element
                    .scroll_into_view()
                    .await
                    .map_err(cdp(format!("scrolling to {selector}")))?;
                element
                    .click()
                    .await
                    .map_err(cdp(format!("clicking {selector}")))?;
            }
            Inner::Bidi { .. } => {
                self.wait_for(selector).await?;
                let centre: Option<(f64, f64)> = self
                    .eval(&format!(
                        "(() => {{ const e = document.querySelector({}); if (!e) return null; \
                         e.scrollIntoView({{block: 'center', inline: 'center'}}); \
                         const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                        js(selector)
                    ))
                    .await?;
                let Some((x, y)) = centre else {
                    return Err(BrowserError::Script {
                        script: format!("click {selector}"),
                        message: "the element went away before the click".into(),
                    });
                };
                self.bidi(
                    "input.performActions",
                    json!({"context": self.context(), "actions": [{
                        "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                        "actions": [
                            {"type": "pointerMove", "x": x.floor() as i64, "y": y.floor() as i64, "origin": "viewport"},
                            {"type": "pointerDown", "button": 0},
                            {"type": "pointerUp", "button": 0},
                        ],
                    }]}),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Clears an input or textarea and types `text` with real key events.
    pub async fn fill(&self, selector: &str, text: &str) -> Result<(), BrowserError> {
        self.wait_for(selector).await?;
        self.eval::<bool>(&format!(
            "(() => {{ const e = document.querySelector({}); e.focus(); e.value = ''; return true; }})()",
            js(selector)
        ))
        .await?;
        match &self.inner {
            Inner::Cdp(page) => {
                let element = self.element(page, selector).await?;
                // Key events for what the US layout has; text insertion (as an IME would) for
                // the rest.
                let mut run = String::new();
                for ch in text.chars().chain(std::iter::once('\0')) {
                    if ch.is_ascii() && ch != '\0' {
                        run.push(ch);
                        continue;
                    }
                    if !run.is_empty() {
                        element
                            .type_str(&run)
                            .await
                            .map_err(cdp(format!("typing into {selector}")))?;
                        run.clear();
                    }
                    if ch != '\0' {
                        page.execute(InsertTextParams::new(ch.to_string()))
                            .await
                            .map_err(cdp(format!("inserting text into {selector}")))?;
                    }
                }
                Ok(())
            }
            Inner::Bidi { .. } => self.type_text(text).await,
        }
    }

    /// Selects the `<option>` with `value` in a `<select>` and fires `change`.
    pub async fn select(&self, selector: &str, value: &str) -> Result<(), BrowserError> {
        self.wait_for(selector).await?;
        let ok: bool = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); \
                 if (![...e.options].some(o => o.value === {v})) return false; \
                 e.value = {v}; e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
                js(selector),
                v = js(value)
            ))
            .await?;
        if ok {
            Ok(())
        } else {
            Err(BrowserError::Script {
                script: format!("select {selector}"),
                message: format!("no option with value {value:?}"),
            })
        }
    }

    /// Presses a key (e.g. `"Enter"`, `"Tab"`) as a real key event on whatever has the focus,
    /// so default actions (focus moves, form submission) happen as for a person at a keyboard.
    pub async fn press(&self, key: &str) -> Result<(), BrowserError> {
        let unsupported = || BrowserError::Script {
            script: format!("press {key}"),
            message: "unsupported key (Tab, Enter, Escape, Space, ArrowUp, ArrowDown)".into(),
        };
        let page = match &self.inner {
            Inner::Cdp(page) => page,
            Inner::Bidi { .. } => {
                let code = webdriver_key(key).ok_or_else(unsupported)?;
                self.activate().await?;
                self.bidi(
                    "input.performActions",
                    json!({"context": self.context(), "actions": key_actions([code.to_string()])}),
                )
                .await?;
                return Ok(());
            }
        };
        let (code, vk, text) = match key {
            "Tab" => ("Tab", 9, None),
            "Enter" => ("Enter", 13, Some("\r")),
            "Escape" => ("Escape", 27, None),
            " " | "Space" => ("Space", 32, Some(" ")),
            "ArrowUp" => ("ArrowUp", 38, None),
            "ArrowDown" => ("ArrowDown", 40, None),
            _ => return Err(unsupported()),
        };
        let key_name = if key == "Space" { " " } else { key };
        for kind in [DispatchKeyEventType::KeyDown, DispatchKeyEventType::KeyUp] {
            let mut builder = DispatchKeyEventParams::builder()
                .r#type(kind.clone())
                .key(key_name)
                .code(code)
                .windows_virtual_key_code(vk)
                .native_virtual_key_code(vk);
            if let (Some(t), DispatchKeyEventType::KeyDown) = (text, &kind) {
                builder = builder.text(t);
            }
            let params = builder.build().map_err(|message| BrowserError::Cdp {
                what: format!("building key event {key}"),
                message,
            })?;
            page.execute(params)
                .await
                .map_err(cdp(format!("pressing {key}")))?;
        }
        Ok(())
    }

    /// Types text as key events into whatever has the focus (ASCII only for Chromium; Firefox
    /// takes any character).
    pub async fn type_text(&self, text: &str) -> Result<(), BrowserError> {
        match &self.inner {
            Inner::Cdp(page) => {
                page.find_element(":focus")
                    .await
                    .map_err(cdp("finding the focused element (is anything focused?)"))?
                    .type_str(text)
                    .await
                    .map_err(cdp(format!("typing {} characters", text.chars().count())))?;
            }
            Inner::Bidi { .. } => {
                if text.is_empty() {
                    return Ok(());
                }
                self.activate().await?;
                self.bidi(
                    "input.performActions",
                    json!({"context": self.context(), "actions": key_actions(text.chars().map(String::from))}),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The `id` of the focused element (empty when none has one).
    pub async fn focused_id(&self) -> Result<String, BrowserError> {
        self.eval("(document.activeElement && document.activeElement.id) || ''")
            .await
    }

    /// Resizes the viewport (CSS pixels), e.g. to check a layout on a smaller laptop screen.
    pub async fn set_viewport(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        *self.viewport.lock().unwrap_or_else(|e| e.into_inner()) = Some((width, height));
        self.apply_viewport(width, height).await
    }

    async fn apply_viewport(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        match &self.inner {
            Inner::Cdp(page) => {
                let params = SetDeviceMetricsOverrideParams::new(
                    i64::from(width),
                    i64::from(height),
                    1.0,
                    false,
                );
                page.execute(params)
                    .await
                    .map_err(cdp("Emulation.setDeviceMetricsOverride"))?;
            }
            Inner::Bidi { .. } => {
                self.bidi(
                    "browsingContext.setViewport",
                    json!({"context": self.context(), "viewport": {"width": width, "height": height}}),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The visible text of the first element matching `selector`.
    pub async fn text(&self, selector: &str) -> Result<String, BrowserError> {
        self.wait_for(selector).await?;
        self.eval(&format!(
            "document.querySelector({}).innerText",
            js(selector)
        ))
        .await
    }

    /// Whether an element matches `selector` right now.
    pub async fn exists(&self, selector: &str) -> Result<bool, BrowserError> {
        self.eval(&format!(
            "document.querySelector({}) !== null",
            js(selector)
        ))
        .await
    }

    /// The value of an input.
    pub async fn value(&self, selector: &str) -> Result<String, BrowserError> {
        self.wait_for(selector).await?;
        self.eval(&format!("document.querySelector({}).value", js(selector)))
            .await
    }

    /// Saves a full-page PNG as `<screenshot_dir>/<name>.png` (Firefox:
    /// `firefox-<name>.png`) and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, BrowserError> {
        let dir = screenshot_dir();
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let bytes = match &self.inner {
            Inner::Cdp(page) => {
                let params = ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .full_page(true)
                    .build();
                let bytes = page
                    .screenshot(params)
                    .await
                    .map_err(cdp(format!("screenshot {name}")))?;
                let asked = *self.viewport.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((width, height)) = asked {
                    self.apply_viewport(width, height).await?;
                }
                bytes
            }
            Inner::Bidi { .. } => {
                // Like Chromium's full-page capture: the viewport grows to the whole page for
                // the shot, so sticky bars sit where they belong instead of where the page
                // happened to be scrolled.
                let (width, height): (u32, u32) =
                    self.eval("[window.innerWidth, window.innerHeight]").await?;
                let full: u32 = self
                    .eval("Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)")
                    .await?;
                self.apply_viewport(width, full.max(height)).await?;
                let shot = self
                    .bidi(
                        "browsingContext.captureScreenshot",
                        json!({"context": self.context(), "origin": "viewport"}),
                    )
                    .await;
                self.apply_viewport(width, height).await?;
                let shot = shot?;
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(shot["data"].as_str().unwrap_or_default())
                    .map_err(|e| BrowserError::Cdp {
                        what: format!("screenshot {name}"),
                        message: e.to_string(),
                    })?
            }
        };
        let file = match self.engine() {
            Engine::Chromium => format!("{name}.png"),
            Engine::Firefox => format!("firefox-{name}.png"),
        };
        let path = dir.join(file);
        fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

fn short(s: &str) -> String {
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}
