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
