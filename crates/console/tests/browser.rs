//! The console in a real headless Chromium against a real `apm server` (in-process, SQLite in a
//! temp dir, on a loopback port), driven as a person would: typing, clicking, reading the page.
//! Agents are played by plain HTTP calls to the sync API. Screenshots of the main pages go to
//! `$CARGO_TARGET_DIR/screenshots` (else `target/screenshots`).

use std::time::Duration;

use apm_testkit::browser::{Browser, Engine, Tab};
use serde_json::{Value, json};

const ROOT_PASSWORD: &str = "root-password-1";

struct Server {
    running: apm_server::RunningServer,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Server {
    async fn start(idle_timeout_secs: u64) -> Server {
        Server::start_with(
            idle_timeout_secs,
            apm_server::Settings::default().approval_mode,
        )
        .await
    }

    async fn start_with(idle_timeout_secs: u64, approval_mode: apm_server::ApprovalMode) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = apm_server::Settings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().join("data"),
            root_password: Some(ROOT_PASSWORD.into()),
            session_idle_timeout_secs: idle_timeout_secs,
            approval_mode,
            log_level: "warn".into(),
            ..apm_server::Settings::default()
        };
        let running = apm_server::spawn_with(settings, apm_console::router)
            .await
            .expect("start server");
        Server {
            running,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        assert!(status.is_success(), "{method} {path} → {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn login(&self, username: &str, password: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                "",
                Some(json!({"username": username, "password": password})),
            )
            .await;
        v["token"].as_str().expect("token").to_string()
    }

    /// Enrolls an agent identity and makes it report in; returns (proxy id, agent token).
    async fn enroll(&self, root: &str, hostname: &str, ats: &str) -> (String, String) {
        let t = self
            .call(
                reqwest::Method::POST,
                "/api/v1/enrollment-tokens",
                root,
                Some(json!({"note": "test"})),
            )
            .await;
        let e = self
            .call(
                reqwest::Method::POST,
                "/api/v1/agents/enroll",
                "",
                Some(json!({"token": t["token"], "hostname": hostname})),
            )
            .await;
        let agent = e["agent_token"].as_str().expect("agent token").to_string();
        self.sync(hostname, &agent, ats, "").await;
        (e["proxy_id"].as_str().expect("proxy id").to_string(), agent)
    }

    /// One plain sync poll as the agent; returns the answer.
    async fn sync(&self, hostname: &str, agent: &str, ats: &str, hash: &str) -> Value {
        let path = format!(
            "/api/v1/sync?hostname={hostname}&hash={hash}&wait=0&ats_version={ats}&os=linux&arch=x86_64"
        );
        self.call(reqwest::Method::GET, &path, agent, None).await
    }
}

async fn shot(tab: &Tab, name: &str) {
    let path = tab.screenshot(name).await.expect("screenshot");
    eprintln!("screenshot: {}", path.display());
}

async fn login(tab: &Tab, server: &Server, username: &str, password: &str) {
    tab.wait_for("#login-form").await.expect("login form");
    tab.fill("#username", username).await.expect("username");
    tab.fill("#password", password).await.expect("password");
    tab.click("#login-submit").await.expect("submit login");
    tab.wait_for("#whoami").await.expect("logged in");
    let who = tab.text("#whoami").await.expect("whoami");
    assert!(
        who.contains(username),
        "logged in as {who}, expected {username} (at {})",
        server.url("")
    );
}

async fn logout(tab: &Tab) {
    tab.click("#logout").await.expect("logout");
    tab.wait_for("#login-form").await.expect("back at login");
}

/// Presses Tab until `selector` has the focus, as a keyboard user would, checking on every stop
/// that the focused control shows a visible focus ring. Bounded, so a control that the keyboard
/// cannot reach fails the test.
async fn tab_to(tab: &Tab, selector: &str) {
    for _ in 0..80 {
        tab.press("Tab").await.expect("tab");
        let (matched, visible, what): (bool, bool, String) = tab
            .eval(&format!(
                "(() => {{ const e = document.activeElement; if (!e || e === document.body) return [false, true, 'body']; \
                 const s = getComputedStyle(e); \
                 const ring = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; \
                 return [e.matches({sel}), ring, e.outerHTML.slice(0, 80) + ' (outline: ' + s.outlineStyle + ' ' + s.outlineWidth + ', focus-visible: ' + e.matches(':focus-visible') + ')']; }})()",
                sel = serde_json::to_string(selector).expect("json")
            ))
            .await
            .expect("focus state");
        assert!(visible, "focus is not visible on {what}");
        if matched {
            return;
        }
    }
    panic!("{selector} is not reachable with Tab");
}

/// The value of the field the editor shows for a rule.
fn rule_value(i: usize) -> String {
    format!("#f-rules-{i}-value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_runs_the_whole_approval_flow_in_chromium() {
    a_new_user_runs_the_whole_approval_flow(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_runs_the_whole_approval_flow_in_firefox() {
    a_new_user_runs_the_whole_approval_flow(Engine::Firefox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_user_cannot_change_anything_and_an_expired_session_returns_to_login_in_chromium()
{
    a_regular_user_cannot_change_anything_and_an_expired_session_returns_to_login(Engine::Chromium)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_user_cannot_change_anything_and_an_expired_session_returns_to_login_in_firefox()
{
    a_regular_user_cannot_change_anything_and_an_expired_session_returns_to_login(Engine::Firefox)
        .await;
}

/// Point 9 of the console issue, as a new user would do it. The same scenario runs in each
/// engine; Firefox's screenshots carry a `firefox-` prefix.
async fn a_new_user_runs_the_whole_approval_flow(engine: Engine) {
    let server = Server::start(120).await;
    let root = server.login("root", ROOT_PASSWORD).await;
    let (proxy_id, agent) = server.enroll(&root, "edge-1.example", "9.2.5").await;
    let (proxy2_id, agent2) = server.enroll(&root, "edge-2.example", "10.1.0").await;
    // Metric samples every 5 minutes over the last two hours, so the proxy's charts (raw,
    // last hour) and the fleet's (5-minute steps) have lines.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for i in 0..24u64 {
        let ts = now - (23 - i) * 300;
        server
            .call(
                reqwest::Method::POST,
                "/api/v1/sync/stats",
                &agent,
                Some(
                    json!({"hostname": "edge-1.example", "timestamp": ts.to_string(), "metrics": {
                        "proxy.process.http.current_client_connections": (40 + (i * 7) % 25) as f64,
                        "proxy.process.cache.ram_cache.hits": (1000 + i * 130) as f64,
                        "proxy.process.cache.ram_cache.misses": (200 + i * 20) as f64,
                    }}),
                ),
            )
            .await;
    }
    apm_server::roll_up_stats_now(&server.running.state.db)
        .await
        .expect("roll up");

    let browser = Browser::launch(engine).await.expect("browser");
    let tab = browser.new_tab().await.expect("tab");

    // Not logged in: the console sends us to the login page.
    tab.goto(&server.url("/")).await.expect("open console");
    tab.wait_for_path("/login")
        .await
        .expect("redirected to login");
    shot(&tab, "01-login").await;

    // A wrong password is refused on the page.
    tab.fill("#username", "root").await.expect("user");
    tab.fill("#password", "wrong-password").await.expect("pw");
    tab.click("#login-submit").await.expect("submit");
    tab.wait_for("#login-error")
        .await
        .expect("login error shown");

    // Root logs in and creates an admin.
    login(&tab, &server, "root", ROOT_PASSWORD).await;
    tab.wait_for("#stat-online").await.expect("dashboard");
    assert_eq!(tab.text("#stat-online .num").await.expect("online"), "2");
    shot(&tab, "02-dashboard").await;

    tab.click("a[href='/users']").await.expect("users nav");
    tab.wait_for("#create-user-form").await.expect("users page");
    tab.fill("#new-username", "alice").await.expect("username");
    tab.fill("#new-password", "alice-password-1")
        .await
        .expect("password");
    tab.select("#new-role", "admin").await.expect("role");
    tab.click("#create-user").await.expect("create user");
    tab.wait_for("#user-alice").await.expect("alice listed");
    // innerText applies the badge's text-transform, hence the lowercase.
    assert!(
        tab.text("#user-alice")
            .await
            .expect("row")
            .to_lowercase()
            .contains("admin")
    );
    shot(&tab, "03-users").await;
    // Root creates a regular user and disables the account.
    tab.fill("#new-username", "carol").await.expect("username");
    tab.fill("#new-password", "carol-password-1")
        .await
        .expect("password");
    tab.click("#create-user").await.expect("create carol");
    tab.wait_for("#user-carol").await.expect("carol listed");
    tab.click("#user-carol summary")
        .await
        .expect("manage carol");
    tab.click("#user-carol button.danger")
        .await
        .expect("disable");
    tab.wait_for_text("User disabled.")
        .await
        .expect("disabled notice");
    assert!(
        tab.text("#user-carol")
            .await
            .expect("row")
            .to_lowercase()
            .contains("disabled")
    );
    logout(&tab).await;

    // The admin logs in and creates a config from the default template.
    login(&tab, &server, "alice", "alice-password-1").await;
    tab.click("a[href='/configs']").await.expect("configs nav");
    tab.click("#new-config").await.expect("new config");
    tab.fill("#name", "prod-edge").await.expect("name");
    tab.fill("#description", "Edge proxies of the production clusters")
        .await
        .expect("description");
    tab.click("#create-config").await.expect("create");
    tab.wait_for("#editor").await.expect("editor");
    let rules_before: usize = tab
        .eval("document.querySelectorAll('#rules-editor tbody tr').length")
        .await
        .expect("count rules");
    assert!(rules_before >= 5, "the template has its rules");

    // Add a rule with a bad CIDR: the error shows next to that input.
    tab.click("#f-add_rule").await.expect("add rule");
    let new = rule_value(rules_before);
    tab.wait_for(&new).await.expect("new rule row");
    let focused: String = tab.eval("document.activeElement.id").await.expect("focus");
    assert_eq!(
        focused,
        new.trim_start_matches('#'),
        "the new rule's input has the focus"
    );
    tab.select(&format!("#f-rules-{rules_before}-match"), "ip")
        .await
        .expect("match ip");
    tab.fill(&new, "10.300.0.0/8").await.expect("bad cidr");
    tab.fill(
        &format!("#f-rules-{rules_before}-comment"),
        "carrier-grade NAT",
    )
    .await
    .expect("comment");
    tab.click("#save-draft").await.expect("save");
    tab.wait_for("#error-summary").await.expect("error summary");
    let err_id = format!("{new}-err");
    let message = tab.text(&err_id).await.expect("error next to the field");
    assert!(
        !message.trim().is_empty(),
        "an error message next to the CIDR input"
    );
    let invalid: String = tab
        .eval(&format!(
            "document.querySelector('{new}').getAttribute('aria-invalid')"
        ))
        .await
        .expect("aria-invalid");
    assert_eq!(invalid, "true");
    assert_eq!(
        tab.value(&new).await.expect("typed value kept"),
        "10.300.0.0/8"
    );
    shot(&tab, "04-editor-validation-error").await;

    // Fix it and save.
    tab.fill(&new, "100.64.0.0/10").await.expect("good cidr");
    tab.click("#save-draft").await.expect("save");
    tab.wait_for("#config-status").await.expect("config page");
    tab.wait_for_text("Draft saved")
        .await
        .expect("saved notice");
    assert!(
        tab.text("#rules-table")
            .await
            .expect("rules")
            .contains("100.64.0.0/10")
    );

    // Explain a URL, with htmx answering in place.
    tab.fill("#explain-url", "http://100.64.1.2/status")
        .await
        .expect("url");
    tab.click("#explain-submit").await.expect("explain");
    tab.wait_for("#explain-action").await.expect("explanation");
    assert_eq!(tab.text("#explain-action").await.expect("action"), "DIRECT");
    assert!(
        tab.text("#explain-rule")
            .await
            .expect("rule")
            .contains(&format!("rule {}", rules_before + 1))
    );
    tab.fill("#explain-url", "https://api.github.com/")
        .await
        .expect("url");
    tab.click("#explain-submit").await.expect("explain");
    tab.wait_until(
        "document.querySelector('#explain-action') && document.querySelector('#explain-action').innerText === 'PARENT'",
        "explain PARENT",
    )
    .await
    .expect("parent explanation");

    // Assign the proxy, then submit.
    tab.click(&format!("#assign-form input[value='{proxy_id}']"))
        .await
        .expect("tick proxy");
    tab.click(&format!("#assign-form input[value='{proxy2_id}']"))
        .await
        .expect("tick second proxy");
    tab.click("#assign-submit").await.expect("assign");
    tab.wait_for("#assigned-table").await.expect("assigned");
    assert!(
        tab.text("#assigned-table")
            .await
            .expect("table")
            .contains("edge-1.example")
    );
    let before: Value = server
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/proxies/{proxy_id}"),
            &root,
            None,
        )
        .await;
    assert!(
        before["desired_hash"].is_null(),
        "no active version yet: {before}"
    );
    shot(&tab, "05-config").await;
    // The rendered files preview shows the new rule as ATS will read it.
    tab.click(".files details summary")
        .await
        .expect("open ATS 9 files");
    let parent_config = tab
        .text("#file-9-parent-config")
        .await
        .expect("parent.config");
    assert!(
        parent_config.contains("dest_ip=100.64.0.0-100.127.255.255 go_direct=true"),
        "{parent_config}"
    );
    shot(&tab, "05b-rendered-files").await;

    tab.click("#submit-approval").await.expect("submit");
    tab.wait_for("#approve-start").await.expect("pending");
    assert_eq!(
        tab.text("#config-status").await.expect("status"),
        "Pending approval"
    );

    // Step two: the confirmation page. Without the explicit tick nothing is approved, even when
    // the browser's own check is bypassed.
    tab.click("#approve-start").await.expect("approve…");
    tab.wait_for("#approve-form")
        .await
        .expect("confirmation page");
    shot(&tab, "06-approve-confirmation").await;
    tab.eval::<bool>(
        "(() => { document.querySelector('#approve-confirm').required = false; return true; })()",
    )
    .await
    .expect("drop required");
    tab.click("#approve-submit")
        .await
        .expect("confirm without tick");
    tab.wait_for("#approve-error").await.expect("tick required");
    tab.click("#approve-confirm").await.expect("tick");
    tab.click("#approve-submit").await.expect("confirm");
    tab.wait_for_text("Approved")
        .await
        .expect("approved notice");
    assert_eq!(tab.text("#config-status").await.expect("status"), "Active");
    assert!(
        tab.text("#active-version")
            .await
            .expect("active")
            .contains("v1")
    );

    // The proxy's desired hash changed to the approved version's ATS 9 hash.
    let detail: Value = server
        .call(reqwest::Method::GET, "/api/v1/configs", &root, None)
        .await;
    let config_id = detail[0]["id"].as_str().expect("config id").to_string();
    let cfg: Value = server
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/configs/{config_id}"),
            &root,
            None,
        )
        .await;
    let hash9 = cfg["active"]["hashes"]["9"]
        .as_str()
        .expect("hash 9")
        .to_string();
    tab.goto(&server.url(&format!("/proxies/{proxy_id}")))
        .await
        .expect("proxy page");
    assert_eq!(tab.text("#desired-hash").await.expect("desired"), hash9);
    assert_eq!(tab.text("#applied-hash").await.expect("applied"), "—");

    // The agent applies it and acknowledges; the page then shows it in sync.
    let bundle = server.sync("edge-1.example", &agent, "9.2.5", "").await;
    assert_eq!(bundle["hash"].as_str(), Some(hash9.as_str()));
    server
        .call(
            reqwest::Method::POST,
            "/api/v1/sync/ack",
            &agent,
            Some(json!({"hostname": "edge-1.example", "hash": hash9, "status": "ok"})),
        )
        .await;

    // Log capture with the live view: lines shipped by the agent appear without a reload.
    tab.goto(&server.url(&format!("/proxies/{proxy_id}")))
        .await
        .expect("proxy page");
    assert_eq!(tab.text("#applied-hash").await.expect("applied"), hash9);
    tab.select("#minutes", "2").await.expect("minutes");
    tab.click("#capture-start").await.expect("start capture");
    tab.wait_for_text("Log capture started")
        .await
        .expect("capture started");
    server
        .call(
            reqwest::Method::POST,
            "/api/v1/sync/logs",
            &agent,
            Some(json!({"hostname": "edge-1.example", "lines": [
                "[Nov 21 22:40:01.123] DIAG: (parent_select) parent 10.96.215.26:3128 chosen for api.github.com",
                "[Nov 21 22:40:01.456] DIAG: (http) dest_ip 100.64.1.2 goes direct"
            ]})),
        )
        .await;
    tab.wait_until_for(
        "document.querySelectorAll('#log-view .logline').length >= 2",
        "live log lines",
        Duration::from_secs(8),
    )
    .await
    .expect("lines arrive in the live view");
    assert!(
        tab.text("#log-view")
            .await
            .expect("log")
            .contains("parent_select")
    );
    // Counters are charted as rates (130 hits per 5 minutes ≈ 0.43/s), levels as they are.
    let captions: Vec<String> = tab
        .eval("[...document.querySelectorAll('.chart-box figcaption')].map(f => f.querySelector('span').textContent + ' = ' + f.querySelector('strong').textContent)")
        .await
        .expect("chart captions");
    assert!(
        captions.iter().any(|c| c == "RAM cache hits /s = 0.43"),
        "{captions:?}"
    );
    assert!(
        captions
            .iter()
            .any(|c| c.starts_with("Client connections (current) = ")),
        "{captions:?}"
    );
    shot(&tab, "07-proxy-detail").await;

    // A new proxy: the admin creates an enrollment token on the page, an agent enrolls with it.
    tab.goto(&server.url("/proxies")).await.expect("proxies");
    tab.fill("#enroll-note", "cluster-b").await.expect("note");
    tab.click("#enroll-submit")
        .await
        .expect("create enrollment token");
    tab.wait_for("#enroll-token")
        .await
        .expect("token shown once");
    let enroll_token = tab.text("#enroll-token").await.expect("token");
    let enrolled = server
        .call(
            reqwest::Method::POST,
            "/api/v1/agents/enroll",
            "",
            Some(json!({"token": enroll_token.trim(), "hostname": "edge-3.example"})),
        )
        .await;
    let agent3 = enrolled["agent_token"]
        .as_str()
        .expect("agent token")
        .to_string();
    server.sync("edge-3.example", &agent3, "10.1.0", "").await;
    tab.goto(&server.url("/proxies")).await.expect("proxies");
    tab.wait_for("#proxies-table").await.expect("table");
    assert!(
        tab.text("#proxies-table")
            .await
            .expect("table")
            .contains("edge-3.example")
    );
    shot(&tab, "08-proxies").await;
    // Filters narrow the list.
    tab.select("#fsync", "in_sync")
        .await
        .expect("filter in sync");
    tab.click("form.filters button[type=submit]")
        .await
        .expect("filter");
    tab.wait_until(
        "location.search.includes('sync=in_sync') && document.readyState === 'complete'",
        "filtered",
    )
    .await
    .expect("filtered");
    let listed = tab.text("#proxies-table").await.expect("table");
    assert!(
        listed.contains("edge-1.example") && !listed.contains("edge-3.example"),
        "{listed}"
    );
    // The used token is no longer listed; a new one can be revoked before use.
    tab.goto(&server.url("/proxies")).await.expect("proxies");
    assert!(
        !tab.exists("#enroll-tokens").await.expect("query"),
        "the single-use token was used"
    );
    tab.fill("#enroll-note", "spare").await.expect("note");
    tab.click("#enroll-submit").await.expect("create");
    tab.wait_for("#enroll-tokens")
        .await
        .expect("open token listed");
    tab.click("#enroll-tokens button.danger")
        .await
        .expect("revoke token");
    tab.wait_until("document.readyState === 'complete' && !document.querySelector('#enroll-tokens') && !!document.querySelector('#enroll-form')", "token gone")
        .await
        .expect("revoked token gone");
    // Decommissioning edge-3: its credential is revoked and the agent is refused.
    let edge3 = tab
        .eval::<String>("[...document.querySelectorAll('#proxies-table a')].find(a => a.innerText === 'edge-3.example').getAttribute('href')")
        .await
        .expect("edge-3 link");
    tab.goto(&server.url(&edge3)).await.expect("edge-3 page");
    tab.click("details.danger-zone summary")
        .await
        .expect("open");
    tab.click("#revoke-proxy").await.expect("revoke");
    tab.wait_for_text("Credential revoked")
        .await
        .expect("revoked notice");
    let refused = server
        .http
        .get(server.url("/api/v1/sync?hostname=edge-3.example&wait=0"))
        .bearer_auth(&agent3)
        .send()
        .await
        .expect("sync");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);

    // The audit trail has the approval, with old and new values side by side.
    tab.click("a[href='/audit']").await.expect("audit nav");
    tab.fill("#a-action", "config.approve")
        .await
        .expect("filter");
    tab.click("#audit-filter").await.expect("apply filter");
    tab.wait_until(
        "location.search.includes('action=config.approve') && document.readyState === 'complete'",
        "filtered audit page",
    )
    .await
    .expect("filter applied");
    tab.wait_for("tr[data-action='config.approve']")
        .await
        .expect("approval row");
    let rows: usize = tab
        .eval("document.querySelectorAll('#audit-table tbody tr').length")
        .await
        .expect("rows");
    assert_eq!(rows, 1, "only the approval matches the filter");
    tab.click("tr[data-action='config.approve'] summary")
        .await
        .expect("open change");
    let old = tab
        .text("tr[data-action='config.approve'] pre.old")
        .await
        .expect("old");
    let new = tab
        .text("tr[data-action='config.approve'] pre.new")
        .await
        .expect("new");
    assert!(old.contains("pending_approval"), "old value: {old}");
    assert!(new.contains("\"active\""), "new value: {new}");
    assert!(
        tab.text("tr[data-action='config.approve']")
            .await
            .expect("row")
            .contains("alice")
    );
    // The opened values wrap inside the table's card: nothing is cut off at the right edge.
    let clipped: bool = tab
        .eval("(() => { const edge = document.querySelector('#audit-table').parentElement.getBoundingClientRect().right; \
               return [...document.querySelectorAll('#audit-table pre, #audit-table td')].some(e => e.getBoundingClientRect().right > edge + 1); })()")
        .await
        .expect("audit width");
    assert!(!clipped, "the audit table is wider than its card");
    shot(&tab, "09-audit").await;

    // Restore v1 as a new draft (v2), add a rule and move it up, then history and diff.
    tab.goto(&server.url(&format!("/configs/{config_id}")))
        .await
        .expect("config");
    tab.click("#history-link").await.expect("history");
    tab.wait_for("#versions-table").await.expect("versions");
    tab.click("button[form='restore-1']")
        .await
        .expect("restore v1");
    tab.wait_for_text("restored as a new draft")
        .await
        .expect("restored");
    assert!(
        tab.text("#working-version")
            .await
            .expect("working")
            .contains("v2")
    );
    tab.click("#edit-link").await.expect("edit v2");
    tab.click("#f-add_rule").await.expect("add rule");
    let last = rules_before + 1;
    tab.fill(&rule_value(last), "corp.example")
        .await
        .expect("domain");
    tab.click(&format!("button[value='up_rule:{last}']"))
        .await
        .expect("move up");
    tab.wait_until(
        &format!(
            "document.querySelector('{}') && document.querySelector('{}').value === 'corp.example'",
            rule_value(last - 1),
            rule_value(last - 1)
        ),
        "rule moved up one place",
    )
    .await
    .expect("reordered");
    assert_eq!(
        tab.value(&rule_value(last)).await.expect("swapped"),
        "100.64.0.0/10"
    );
    tab.click("#save-draft").await.expect("save v2");
    tab.wait_for_text("Draft saved").await.expect("v2 saved");
    tab.click("#history-link").await.expect("history");
    tab.wait_for("#versions-table").await.expect("versions");
    tab.click("#diff-submit").await.expect("diff");
    tab.wait_for("#policy-diff").await.expect("policy diff");
    assert!(
        tab.text("#policy-diff")
            .await
            .expect("diff")
            .contains("corp.example")
    );
    shot(&tab, "10-diff").await;

    // Submit v2 and reject it with a reason: back to draft, the reason shown to the editors.
    tab.goto(&server.url(&format!("/configs/{config_id}")))
        .await
        .expect("config");
    tab.click("#submit-approval").await.expect("submit v2");
    tab.wait_for("#approve-start").await.expect("pending");
    tab.click("details.reject summary")
        .await
        .expect("open reject");
    tab.fill("#reason", "corp.example must go through the parent")
        .await
        .expect("reason");
    tab.click("#reject-submit").await.expect("reject");
    tab.wait_for("#reject-reason").await.expect("reason shown");
    assert!(
        tab.text("#reject-reason")
            .await
            .expect("reason")
            .contains("must go through the parent")
    );
    assert_eq!(tab.text("#config-status").await.expect("status"), "Draft");

    // The second proxy fails to apply v1: the dashboard shows it out of sync with its error.
    let bundle2 = server.sync("edge-2.example", &agent2, "10.1.0", "").await;
    let hash10 = bundle2["hash"].as_str().expect("hash 10").to_string();
    server
        .call(
            reqwest::Method::POST,
            "/api/v1/sync/ack",
            &agent2,
            Some(json!({"hostname": "edge-2.example", "hash": hash10, "status": "error",
                        "error": "traffic_ctl config reload: parent.config line 3: unknown parent host"})),
        )
        .await;
    tab.goto(&server.url("/")).await.expect("dashboard");
    tab.wait_for("#drift-table").await.expect("drift listed");
    let drift = tab.text("#drift-table").await.expect("drift");
    assert!(
        drift.contains("edge-2.example") && drift.contains("unknown parent host"),
        "{drift}"
    );
    assert!(
        !drift.contains("edge-1.example"),
        "edge-1 runs its desired version: {drift}"
    );
    assert_eq!(
        tab.text("#stat-drift .num").await.expect("drift count"),
        "1"
    );
    tab.wait_for("svg.chart polyline")
        .await
        .expect("a chart with a line");
    // The fleet charts: the server sums levels and turns counters into rates per second.
    let captions: Vec<String> = tab
        .eval("[...document.querySelectorAll('.chart-box figcaption')].map(f => f.querySelector('span').textContent + ' = ' + f.querySelector('strong').textContent)")
        .await
        .expect("chart captions");
    assert!(
        captions.iter().any(|c| c == "RAM cache hits /s = 0.43"),
        "{captions:?}"
    );
    shot(&tab, "11-dashboard-after").await;

    // API tokens of the current user: shown once.
    tab.click("a[href='/tokens']").await.expect("tokens");
    tab.fill("#token-name", "ci-deploy")
        .await
        .expect("token name");
    tab.fill("#token-days", "30").await.expect("days");
    tab.click("#create-token").await.expect("create token");
    tab.wait_for("#new-token").await.expect("token shown");
    let token = tab.text("#new-token").await.expect("token");
    assert!(token.starts_with("apmt_"), "{token}");
    let me: Value = server
        .call(reqwest::Method::GET, "/api/v1/auth/me", token.trim(), None)
        .await;
    assert_eq!(me["user"]["username"], "alice");
    shot(&tab, "12-tokens").await;

    // A smaller laptop screen: the editor still fits without sideways scrolling.
    tab.set_viewport(1280, 720).await.expect("viewport");
    tab.goto(&server.url(&format!("/configs/{config_id}/edit")))
        .await
        .expect("editor");
    tab.wait_for("#rules-editor").await.expect("editor");
    let overflow: bool = tab
        .eval("document.documentElement.scrollWidth > window.innerWidth")
        .await
        .expect("overflow");
    assert!(!overflow, "no horizontal scrolling at 1280 px");
    shot(&tab, "15-editor-1280").await;

    // The common laptop screen, 1366×768: the main pages fit without sideways scrolling.
    tab.set_viewport(1366, 768).await.expect("viewport");
    for (path, ready, name) in [
        ("/".to_string(), "#stat-online", "18-dashboard-1366"),
        (
            format!("/configs/{config_id}"),
            "#config-status",
            "19-config-1366",
        ),
        ("/proxies".to_string(), "#proxies-table", "20-proxies-1366"),
        ("/audit".to_string(), "#audit-table", "21-audit-1366"),
    ] {
        tab.goto(&server.url(&path)).await.expect("page");
        tab.wait_for(ready).await.expect("page ready");
        let overflow: bool = tab
            .eval("document.documentElement.scrollWidth > window.innerWidth")
            .await
            .expect("overflow");
        assert!(!overflow, "no horizontal scrolling at 1366 px on {path}");
        shot(&tab, name).await;
    }
}

/// Roles, CSRF and the session lifecycle, with the keyboard.
async fn a_regular_user_cannot_change_anything_and_an_expired_session_returns_to_login(
    engine: Engine,
) {
    let server = Server::start(5).await;
    // Sessions die after 5 s idle here, so the test's own API calls use an API token.
    let session = server.login("root", ROOT_PASSWORD).await;
    let token = server
        .call(
            reqwest::Method::POST,
            "/api/v1/tokens",
            &session,
            Some(json!({"name": "test"})),
        )
        .await;
    let root = token["token"].as_str().expect("api token").to_string();
    server
        .call(
            reqwest::Method::POST,
            "/api/v1/users",
            &root,
            Some(json!({"username": "bob", "password": "bob-password-1", "role": "regular"})),
        )
        .await;
    let template = server
        .call(reqwest::Method::GET, "/api/v1/policy/template", &root, None)
        .await;
    let created = server
        .call(
            reqwest::Method::POST,
            "/api/v1/configs",
            &root,
            Some(json!({"name": "lab", "description": "lab proxies", "policy": template})),
        )
        .await;
    let config_id = created["id"].as_str().expect("id").to_string();

    // Console pages refuse framing and foreign scripts; the API's answers are untouched.
    let page = server
        .http
        .get(server.url("/login"))
        .send()
        .await
        .expect("login page");
    let csp = page
        .headers()
        .get("content-security-policy")
        .expect("csp")
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(
        page.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    let health = server
        .http
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert!(
        health.status().is_success() && health.headers().get("content-security-policy").is_none()
    );

    let browser = Browser::launch(engine).await.expect("browser");
    let tab = browser.new_tab().await.expect("tab");
    // Keyboard only: the username has the focus, Tab moves to the password, Enter submits.
    tab.goto(&server.url("/login")).await.expect("login page");
    tab.wait_for("#login-form").await.expect("login form");
    assert_eq!(tab.focused_id().await.expect("focus"), "username");
    tab.type_text("bob").await.expect("type username");
    tab.press("Tab").await.expect("tab");
    assert_eq!(tab.focused_id().await.expect("focus"), "password");
    tab.type_text("bob-password-1")
        .await
        .expect("type password");
    tab.press("Enter").await.expect("enter");
    tab.wait_for("#whoami")
        .await
        .expect("logged in with the keyboard");
    // The first Tab on a page reaches the skip link, whose target is the main content.
    tab.press("Tab").await.expect("tab");
    assert_eq!(
        tab.eval::<String>("document.activeElement.className")
            .await
            .expect("skip link"),
        "skip"
    );
    assert!(tab.exists("#readonly-note").await.expect("note"));

    // No edit controls anywhere.
    tab.goto(&server.url("/configs")).await.expect("configs");
    tab.wait_for("#configs-table").await.expect("list");
    assert!(!tab.exists("#new-config").await.expect("new button"));
    tab.goto(&server.url(&format!("/configs/{config_id}")))
        .await
        .expect("config");
    tab.wait_for("#config-status").await.expect("config page");
    for control in [
        "#edit-link",
        "#submit-approval",
        "#approve-start",
        "#assign-form",
        "#reject-form",
    ] {
        assert!(
            !tab.exists(control).await.expect("query"),
            "{control} must not be shown to a regular user"
        );
    }
    // Reading still works: explain is not a change.
    tab.fill("#explain-url", "http://10.1.2.3/")
        .await
        .expect("url");
    tab.click("#explain-submit").await.expect("explain");
    tab.wait_for("#explain-action").await.expect("explained");
    tab.goto(&server.url("/users")).await.expect("users");
    tab.wait_for("#users-table").await.expect("users list");
    assert!(!tab.exists("#create-user-form").await.expect("query"));

    // Forcing an edit URL: a clear 403 page.
    tab.goto(&server.url(&format!("/configs/{config_id}/edit")))
        .await
        .expect("forced edit");
    tab.wait_for("#error-page").await.expect("error page");
    assert_eq!(
        tab.eval::<String>("document.querySelector('#error-page').dataset.status")
            .await
            .expect("status"),
        "403"
    );
    assert!(tab.text("h1").await.expect("h1").contains("Not allowed"));
    shot(&tab, "13-forbidden").await;

    // Forcing a POST with a valid CSRF token: the API refuses it, the page says so.
    tab.goto(&server.url(&format!("/configs/{config_id}")))
        .await
        .expect("config");
    tab.wait_for("#config-status").await.expect("config page");
    tab.eval::<bool>(&format!(
        "(() => {{ const f = document.createElement('form'); f.method = 'post'; f.action = '/configs/{config_id}/submit'; \
         const i = document.createElement('input'); i.type = 'hidden'; i.name = '_csrf'; \
         i.value = document.querySelector('meta[name=apm-csrf]').content; f.appendChild(i); document.body.appendChild(f); f.submit(); return true; }})()"
    ))
    .await
    .expect("forced post");
    tab.wait_for("#error-page").await.expect("error page");
    assert_eq!(
        tab.eval::<String>("document.querySelector('#error-page').dataset.status")
            .await
            .expect("status"),
        "403"
    );
    assert!(
        tab.text("#error-detail")
            .await
            .expect("detail")
            .contains("admin")
    );
    let cfg: Value = server
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/configs/{config_id}"),
            &root,
            None,
        )
        .await;
    assert_eq!(cfg["status"], "draft", "nothing changed");

    // A POST without the CSRF token is refused before reaching the API.
    tab.goto(&server.url("/tokens")).await.expect("tokens");
    tab.eval::<bool>(
        "(() => { const f = document.querySelector('#create-token-form'); f.querySelector('[name=_csrf]').value = 'forged'; \
         f.querySelector('#token-name').value = 'x'; f.submit(); return true; })()",
    )
    .await
    .expect("forged post");
    tab.wait_for("#error-page").await.expect("csrf error page");
    assert!(tab.text("h1").await.expect("h1").contains("Form expired"));
    let tokens: Value = server
        .call(
            reqwest::Method::GET,
            "/api/v1/tokens",
            &server.login("bob", "bob-password-1").await,
            None,
        )
        .await;
    assert_eq!(
        tokens.as_array().map(Vec::len),
        Some(0),
        "no token was created"
    );

    // The session dies (no beacon for longer than the idle timeout): the page says so, keeps
    // what was typed, and returns to login; after logging in the input is back.
    tab.goto(&server.url("/audit")).await.expect("audit");
    tab.wait_for("#audit-filters").await.expect("filters");
    tab.fill("#a-actor", "someone-typed-this")
        .await
        .expect("type");
    // An open page keeps its session past the idle timeout: the beacon adapts to it.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    assert!(
        !tab.eval::<bool>("!document.querySelector('#session-ended').hidden")
            .await
            .expect("overlay state"),
        "the session must survive while the page is open"
    );
    // Now the network drops the beacons (they never answer) for longer than the idle timeout;
    // when it is back, the next beacon finds the session gone.
    tab.eval::<bool>(
        "(() => { window.__fetch = window.fetch; window.fetch = () => new Promise(() => {}); return true; })()",
    )
    .await
    .expect("drop beacons");
    tokio::time::sleep(Duration::from_millis(7000)).await;
    tab.eval::<bool>(
        "(() => { window.fetch = window.__fetch; window.apmBeacon(); return true; })()",
    )
    .await
    .expect("network back");
    tab.wait_until(
        "!document.querySelector('#session-ended').hidden",
        "session-ended notice",
    )
    .await
    .expect("notice shown");
    shot(&tab, "14-session-ended").await;
    tab.wait_until_for(
        "location.pathname === '/login' && document.readyState === 'complete'",
        "back at login",
        Duration::from_secs(10),
    )
    .await
    .expect("returned to login");
    assert!(
        tab.text("#login-notice")
            .await
            .expect("notice")
            .contains("session ended")
    );
    login(&tab, &server, "bob", "bob-password-1").await;
    tab.wait_for_path("/audit")
        .await
        .expect("back where we were");
    tab.wait_for("#restored-note").await.expect("restored note");
    assert_eq!(
        tab.value("#a-actor").await.expect("actor"),
        "someone-typed-this"
    );

    // The same for a form sent after the session ended (e.g. a laptop waking up): nothing is
    // saved, the login page says so, and the typed text is back after logging in.
    tab.goto(&server.url("/tokens")).await.expect("tokens");
    tab.fill("#token-name", "typed-before-expiry")
        .await
        .expect("type");
    // The network drops the beacons (they never answer), so the session idles out; the form
    // is then sent by a plain navigation.
    tab.eval::<bool>("(() => { window.fetch = () => new Promise(() => {}); return true; })()")
        .await
        .expect("drop beacons");
    tokio::time::sleep(Duration::from_millis(7000)).await;
    tab.click("#create-token")
        .await
        .expect("submit after expiry");
    tab.wait_for("#login-notice").await.expect("login page");
    assert!(
        tab.text("#login-notice")
            .await
            .expect("notice")
            .contains("nothing was saved")
    );
    login(&tab, &server, "bob", "bob-password-1").await;
    tab.wait_for_path("/tokens")
        .await
        .expect("back on the form's page");
    tab.wait_for("#restored-note").await.expect("restored note");
    assert_eq!(
        tab.value("#token-name").await.expect("name"),
        "typed-before-expiry"
    );
    let tokens: Value = server
        .call(
            reqwest::Method::GET,
            "/api/v1/tokens",
            &server.login("bob", "bob-password-1").await,
            None,
        )
        .await;
    assert_eq!(
        tokens.as_array().map(Vec::len),
        Some(0),
        "the expired form created nothing"
    );
}

/// Root resets an admin's password on the Users page (the admin logs in with the new one, the
/// old one is refused, the audit shows the change without the secret); under `four_eyes` the
/// submitter is not offered "Approve…" and sees why, while another admin approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_and_four_eyes_approval_in_chromium() {
    password_reset_and_four_eyes_approval(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_and_four_eyes_approval_in_firefox() {
    password_reset_and_four_eyes_approval(Engine::Firefox).await;
}

async fn password_reset_and_four_eyes_approval(engine: Engine) {
    let server = Server::start_with(120, apm_server::ApprovalMode::FourEyes).await;
    let root = server.login("root", ROOT_PASSWORD).await;
    for name in ["ann", "ben"] {
        server
            .call(
                reqwest::Method::POST,
                "/api/v1/users",
                &root,
                Some(json!({"username": name, "password": format!("{name}-password-1"), "role": "admin"})),
            )
            .await;
    }
    let browser = Browser::launch(engine).await.expect("browser");

    // Root resets ben's password through the console.
    let root_tab = browser.new_tab().await.expect("root tab");
    root_tab.goto(&server.url("/login")).await.expect("login");
    login(&root_tab, &server, "root", ROOT_PASSWORD).await;
    root_tab.goto(&server.url("/users")).await.expect("users");
    root_tab
        .click("#user-ben summary")
        .await
        .expect("manage ben");
    root_tab
        .fill("#user-ben input[name=password]", "ben-new-password-2")
        .await
        .expect("new password");
    shot(&root_tab, "16-password-reset").await;
    root_tab
        .click("#user-ben button[type=submit]")
        .await
        .expect("reset");
    root_tab
        .wait_for_text("Password reset.")
        .await
        .expect("reset notice");

    // Ben, in his own browser context: the old password is refused, the new one works.
    let ben_tab = browser.new_tab().await.expect("ben tab");
    ben_tab.goto(&server.url("/login")).await.expect("login");
    ben_tab.fill("#username", "ben").await.expect("user");
    ben_tab
        .fill("#password", "ben-password-1")
        .await
        .expect("old password");
    ben_tab.click("#login-submit").await.expect("submit");
    ben_tab
        .wait_for("#login-error")
        .await
        .expect("old password refused");
    login(&ben_tab, &server, "ben", "ben-new-password-2").await;

    // The audit row names the change and never carries the password or its hash.
    root_tab
        .goto(&server.url("/audit?action=user.update"))
        .await
        .expect("audit");
    root_tab
        .wait_for("tr[data-action='user.update']")
        .await
        .expect("reset row");
    root_tab
        .click("tr[data-action='user.update'] summary")
        .await
        .expect("open change");
    let new = root_tab
        .text("tr[data-action='user.update'] pre.new")
        .await
        .expect("new value");
    assert!(new.contains("password_changed"), "{new}");
    let row = root_tab
        .text("tr[data-action='user.update']")
        .await
        .expect("row");
    assert!(row.contains("root") && row.contains("ben"), "{row}");
    let page_html: String = root_tab
        .eval("document.documentElement.outerHTML")
        .await
        .expect("html");
    assert!(
        !page_html.contains("ben-new-password-2") && !page_html.contains("$argon2"),
        "no secret on the audit page"
    );

    // Four eyes: ann creates and submits a config; she is told to wait for another approver.
    let ann_tab = browser.new_tab().await.expect("ann tab");
    ann_tab.goto(&server.url("/login")).await.expect("login");
    login(&ann_tab, &server, "ann", "ann-password-1").await;
    ann_tab
        .goto(&server.url("/configs/new"))
        .await
        .expect("new config");
    ann_tab.fill("#name", "four-eyes").await.expect("name");
    ann_tab.click("#create-config").await.expect("create");
    ann_tab.wait_for("#editor").await.expect("editor");
    ann_tab.click("#save-draft").await.expect("save");
    ann_tab.wait_for_text("Draft saved").await.expect("saved");
    ann_tab.click("#submit-approval").await.expect("submit");
    ann_tab
        .wait_for("#approve-waiting")
        .await
        .expect("waiting note");
    assert_eq!(
        ann_tab.text("#config-status").await.expect("status"),
        "Pending approval"
    );
    assert!(
        !ann_tab.exists("#approve-start").await.expect("query"),
        "the submitter is not offered Approve…"
    );
    assert!(
        ann_tab
            .text("#approve-waiting")
            .await
            .expect("why")
            .contains("Waiting for another approver")
    );
    shot(&ann_tab, "17-four-eyes-waiting").await;
    // Forcing the confirmation page shows the same reason and no form.
    let config_url = ann_tab.url().await;
    let config_path = config_url
        .split_once("/configs/")
        .map(|(_, rest)| format!("/configs/{}", rest.split(['?', '#']).next().unwrap_or(rest)))
        .expect("config path");
    ann_tab
        .goto(&server.url(&format!("{config_path}/approve")))
        .await
        .expect("forced approve page");
    ann_tab
        .wait_for("#approve-waiting")
        .await
        .expect("reason on the confirmation page");
    assert!(!ann_tab.exists("#approve-form").await.expect("query"));

    // Ben (another admin) is offered the approval and approves with the confirmation.
    ben_tab
        .goto(&server.url(&config_path))
        .await
        .expect("config page");
    ben_tab.wait_for("#config-status").await.expect("page");
    assert!(!ben_tab.exists("#approve-waiting").await.expect("query"));
    // Keyboard only, with the focus visible at every stop.
    tab_to(&ben_tab, "#approve-start").await;
    ben_tab.press("Enter").await.expect("open approval");
    ben_tab
        .wait_for("#approve-form")
        .await
        .expect("confirmation page");
    tab_to(&ben_tab, "#approve-confirm").await;
    ben_tab.press("Space").await.expect("tick");
    tab_to(&ben_tab, "#approve-submit").await;
    ben_tab.press("Enter").await.expect("confirm");
    ben_tab.wait_for_text("Approved").await.expect("approved");
    assert_eq!(
        ben_tab.text("#config-status").await.expect("status"),
        "Active"
    );
}
