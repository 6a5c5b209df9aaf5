//! The console over plain HTTP (no browser): CSRF and origin checks, redirects, static files,
//! and that everything else still reaches the API untouched.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;

async fn server() -> (apm_server::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = apm_server::Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        root_password: Some("root-password-1".into()),
        log_level: "warn".into(),
        ..apm_server::Settings::default()
    };
    let running = apm_server::spawn_with(settings, apm_console::router)
        .await
        .expect("server");
    (running, dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in through the API and returns the session cookie pair (`apm_session=…`).
async fn session(base: &str) -> (String, String) {
    let res = client()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "root", "password": "root-password-1"}))
        .send()
        .await
        .expect("login");
    assert!(res.status().is_success());
    let token = res.json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    (
        format!("apm_session={token}"),
        apm_console::ctx::csrf_token(&token),
    )
}

#[tokio::test]
async fn pages_need_a_session_and_forms_need_the_sessions_token_and_origin() {
    let (running, _dir) = server().await;
    let base = running.url();
    let http = client();

    // Anonymous: pages redirect to login with the way back.
    let res = http
        .get(format!("{base}/configs?x=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/login?next=%2Fconfigs%3Fx%3D1");

    // The login page sets its double-submit cookie; a login without it is refused.
    let res = http
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("login page");
    assert!(
        res.headers()[SET_COOKIE]
            .to_str()
            .expect("cookie")
            .starts_with("apm_login_csrf=")
    );
    let res = http
        .post(format!("{base}/login"))
        .form(&[
            ("username", "root"),
            ("password", "root-password-1"),
            ("_csrf", "guess"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "no login cookie: back to a fresh login form"
    );
    let res = http
        .post(format!("{base}/login"))
        .header(COOKIE, "apm_login_csrf=abc")
        .form(&[
            ("username", "root"),
            ("password", "root-password-1"),
            ("_csrf", "abd"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "mismatched double submit"
    );
    let res = http
        .post(format!("{base}/login"))
        .header(COOKIE, "apm_login_csrf=abc")
        .form(&[
            ("username", "root"),
            ("password", "root-password-1"),
            ("_csrf", "abc"),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[LOCATION],
        "/",
        "foreign next targets are dropped"
    );
    assert!(
        res.headers()
            .get_all(SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap_or("").starts_with("apm_session=apms_"))
    );

    let (cookie, csrf) = session(&base).await;
    let form = [("name", "from-test"), ("_csrf", csrf.as_str())];

    // Wrong token, no token, foreign origin: refused, nothing created.
    for (token, origin) in [
        ("nope", None),
        ("", None),
        (csrf.as_str(), Some("http://evil.example")),
    ] {
        let mut req = http
            .post(format!("{base}/tokens"))
            .header(COOKIE, &cookie)
            .form(&[("name", "x"), ("_csrf", token)]);
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        let res = req.send().await.expect("post");
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "token {token:?} origin {origin:?}"
        );
        assert!(res.text().await.expect("body").contains("Form expired"));
    }
    // The right token from the same origin works; htmx may send it as a header instead.
    let res = http
        .post(format!("{base}/tokens"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, base.as_str())
        .form(&form)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.expect("body").contains("apmt_"));
    let res = http
        .post(format!("{base}/tokens"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .form(&[("name", "via-header")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: serde_json::Value = http
        .get(format!("{base}/api/v1/tokens"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = tokens
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    running.stop().await;
}

#[tokio::test]
async fn static_files_and_the_api_are_served_beside_the_pages() {
    let (running, _dir) = server().await;
    let base = running.url();
    let http = client();
    let res = http
        .get(format!("{base}/static/console.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/css");
    let res = http
        .get(format!("{base}/static/htmx-LICENSE.txt"))
        .send()
        .await
        .expect("licence");
    assert_eq!(res.status(), StatusCode::OK);
    let res = http
        .get(format!("{base}/static/../Cargo.toml"))
        .send()
        .await
        .expect("traversal");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // API paths go to the API, with its problem documents.
    let res = http
        .get(format!("{base}/api/v1/configs"))
        .send()
        .await
        .expect("api");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status(), StatusCode::OK);
    // A console page's API calls carry the page's request id into the audit trail.
    let (cookie, csrf) = session(&base).await;
    let res = http
        .post(format!("{base}/users"))
        .header(COOKIE, &cookie)
        .form(&[
            ("username", "dave"),
            ("password", "dave-password-1"),
            ("role", "regular"),
            ("_csrf", csrf.as_str()),
        ])
        .send()
        .await
        .expect("create user");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let request_id = res.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let audit: serde_json::Value = http
        .get(format!("{base}/api/v1/audit?action=user.create"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let row = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["new_value"]["username"] == "dave")
        .expect("audit row for dave");
    assert_eq!(row["request_id"], request_id.as_str());
    running.stop().await;
}

/// Logs in `username` through the API: (cookie pair, CSRF token, bearer token).
async fn login_as(base: &str, username: &str, password: &str) -> (String, String, String) {
    let res = client()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login");
    assert!(res.status().is_success(), "login {username}");
    let token = res.json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    (
        format!("apm_session={token}"),
        apm_console::ctx::csrf_token(&token),
        token,
    )
}

#[tokio::test]
async fn approval_through_the_console_follows_the_servers_four_eyes_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = apm_server::Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        root_password: Some("root-password-1".into()),
        approval_mode: apm_server::ApprovalMode::FourEyes,
        log_level: "warn".into(),
        ..apm_server::Settings::default()
    };
    let running = apm_server::spawn_with(settings, apm_console::router)
        .await
        .expect("server");
    let base = running.url();
    let http = client();
    let (_, _, root) = login_as(&base, "root", "root-password-1").await;
    for name in ["ann", "ben"] {
        let res = http
            .post(format!("{base}/api/v1/users"))
            .bearer_auth(&root)
            .json(&json!({"username": name, "password": format!("{name}-password-1"), "role": "admin"}))
            .send()
            .await
            .expect("create admin");
        assert!(res.status().is_success());
    }
    let (ann_cookie, ann_csrf, ann) = login_as(&base, "ann", "ann-password-1").await;
    let template: serde_json::Value = http
        .get(format!("{base}/api/v1/policy/template"))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("template")
        .json()
        .await
        .expect("json");
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/configs"))
        .bearer_auth(&ann)
        .json(&json!({"name": "four-eyes", "policy": template}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    let post = |cookie: &str, csrf: &str, path: &str, extra: Vec<(&'static str, &'static str)>| {
        let mut fields = vec![("_csrf".to_string(), csrf.to_string())];
        fields.extend(
            extra
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        http.post(format!("{base}{path}"))
            .header(COOKIE, cookie)
            .form(&fields)
            .send()
    };
    let res = post(
        &ann_cookie,
        &ann_csrf,
        &format!("/configs/{id}/submit"),
        vec![],
    )
    .await
    .expect("submit");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // Without the explicit confirmation nothing happens, whoever asks.
    let res = post(
        &ann_cookie,
        &ann_csrf,
        &format!("/configs/{id}/approve"),
        vec![],
    )
    .await
    .expect("approve unconfirmed");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("Tick the confirmation box")
    );
    // The submitter may not approve under four eyes: the API's refusal is shown as a 403 page.
    let res = post(
        &ann_cookie,
        &ann_csrf,
        &format!("/configs/{id}/approve"),
        vec![("confirm", "yes")],
    )
    .await
    .expect("approve by submitter");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.expect("body").contains("Not allowed"));
    // Another admin may.
    let (ben_cookie, ben_csrf, _) = login_as(&base, "ben", "ben-password-1").await;
    let res = post(
        &ben_cookie,
        &ben_csrf,
        &format!("/configs/{id}/approve"),
        vec![("confirm", "yes")],
    )
    .await
    .expect("approve by another admin");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[LOCATION],
        format!("/configs/{id}?msg=approved").as_str()
    );
    let detail: serde_json::Value = http
        .get(format!("{base}/api/v1/configs/{id}"))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("detail")
        .json()
        .await
        .expect("json");
    assert_eq!(detail["status"], "active");
    assert_eq!(detail["active_version"], 1);
    running.stop().await;
}
