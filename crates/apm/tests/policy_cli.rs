//! The `apm policy` commands as a user runs them: the README's quickstart, exit codes, errors.

use std::path::Path;
use std::process::{Command, Output};

fn apm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apm"))
        .args(args)
        .output()
        .expect("apm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn readme_quickstart_template_render_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    let template = apm(&["policy", "template"]);
    assert!(template.status.success());
    std::fs::write(&policy, &template.stdout).unwrap();

    let validate = apm(&["policy", "validate", policy.to_str().unwrap()]);
    assert!(validate.status.success(), "{}", text(&validate.stderr));

    let out = dir.path().join("out");
    let render = apm(&[
        "policy",
        "render",
        policy.to_str().unwrap(),
        "--ats",
        "9",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(render.status.success(), "{}", text(&render.stderr));
    let hash = text(&render.stdout).trim().to_string();
    assert_eq!(hash.len(), 64, "{hash}");
    for name in ["parent.config", "records.config", "ip_allow.yaml"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    // Leftover temp files would be picked up by ATS or confuse operators.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());

    // The same policy as JSON renders the same bytes.
    let json_policy = dir.path().join("p.json");
    std::fs::write(&json_policy, apm(&["policy", "template", "--json"]).stdout).unwrap();
    let out10 = dir.path().join("out-json");
    let again = apm(&[
        "policy",
        "render",
        json_policy.to_str().unwrap(),
        "--out",
        out10.to_str().unwrap(),
    ]);
    assert_eq!(text(&again.stdout).trim(), hash);
    assert_eq!(
        std::fs::read_to_string(out.join("parent.config")).unwrap(),
        std::fs::read_to_string(out10.join("parent.config")).unwrap()
    );
}

#[test]
fn ats10_render_writes_records_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, apm(&["policy", "template"]).stdout).unwrap();
    let out = dir.path().join("out");
    let render = apm(&[
        "policy",
        "render",
        policy.to_str().unwrap(),
        "--ats",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(render.status.success());
    assert!(out.join("records.yaml").is_file());
    assert!(!out.join("records.config").exists());
}

#[test]
fn invalid_policy_exits_1_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("bad.toml");
    std::fs::write(
        &policy,
        "default_action = \"parent\"\n[[rules]]\nmatch = \"ip\"\nvalue = \"10.0.0.0/33\"\naction = \"direct\"\n",
    )
    .unwrap();
    let out = apm(&["policy", "validate", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rules[0].value"), "{stderr}");
    assert!(stderr.contains("10.0.0.0/33"), "{stderr}");
    assert!(stderr.contains("default_action"), "{stderr}");

    std::fs::write(&policy, "default_action = [\n").unwrap();
    let out = apm(&["policy", "validate", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 1"),
        "{}",
        text(&out.stderr)
    );

    let missing = apm(&["policy", "validate", "/nonexistent/p.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/p.toml"));
}

#[test]
fn explain_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, apm(&["policy", "template"]).stdout).unwrap();
    let out = apm(&[
        "policy",
        "explain",
        policy.to_str().unwrap(),
        "http://10.1.2.3/",
        "https://github.com/x",
        "db.svc.cluster.local:5432",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = value.as_array().unwrap();
    assert_eq!(rows[0]["target"], "http://10.1.2.3/");
    assert_eq!(rows[0]["action"], "direct");
    assert_eq!(rows[0]["rule"], 0);
    assert_eq!(rows[0]["parents"], serde_json::json!([]));
    assert_eq!(rows[1]["action"], "parent");
    assert_eq!(rows[1]["rule"], serde_json::Value::Null);
    assert_eq!(
        rows[1]["parents"],
        serde_json::json!(["10.96.215.26:3128", "10.253.16.93:3128"])
    );
    assert_eq!(rows[1]["depends_on_dns"], true);
    assert_eq!(rows[2]["action"], "direct");
    assert_eq!(rows[2]["rule"], 7);

    let human = apm(&["policy", "explain", policy.to_str().unwrap(), "github.com"]);
    let stdout = text(&human.stdout);
    assert!(
        stdout.contains("PARENT 10.96.215.26:3128 -> 10.253.16.93:3128"),
        "{stdout}"
    );

    let bad = apm(&["policy", "explain", policy.to_str().unwrap(), "http://"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn pac_and_no_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, apm(&["policy", "template"]).stdout).unwrap();
    let pac = apm(&["policy", "pac", policy.to_str().unwrap()]);
    assert!(text(&pac.stdout).starts_with("// Generated by ATS Proxy Manager"));
    assert!(text(&pac.stdout).contains("function FindProxyForURL(url, host)"));
    let no_proxy = apm(&["policy", "no-proxy", policy.to_str().unwrap()]);
    assert!(no_proxy.status.success());
    assert!(text(&no_proxy.stdout).starts_with("10.0.0.0/8,172.16.0.0/12"));
    assert!(text(&no_proxy.stderr).contains("note:"));
}

#[test]
fn stdin_is_accepted() {
    let template = apm(&["policy", "template"]).stdout;
    let mut child = Command::new(env!("CARGO_BIN_EXE_apm"))
        .args(["policy", "validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&template).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(Path::new(env!("CARGO_BIN_EXE_apm")).exists());
}
