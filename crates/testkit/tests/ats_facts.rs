//! Facts about ATS 9.2 that the product relies on (ats-notes.md, /work/notes/ats-findings.md),
//! checked on the real Debian package with hand-written config files. If an ATS upgrade
//! changes one of them, the test that names it fails.

use std::time::{Duration, Instant};

use apm_testkit::ats::{AtsConfig, AtsError, AtsInstance};
use apm_testkit::client::ProxyClient;
use apm_testkit::net::{Hosts, free_port, loopback};
use apm_testkit::origin::Origin;
use apm_testkit::parent::ParentProxy;

/// How long a reload may take to show up in diags.log (9.2 needs 3-10 s).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(25);

fn records(port: u16) -> String {
    format!(
        "CONFIG proxy.config.http.server_ports STRING {port}\n\
         CONFIG proxy.config.url_remap.remap_required INT 0\n\
         CONFIG proxy.config.reverse_proxy.enabled INT 0\n\
         CONFIG proxy.config.http.uncacheable_requests_bypass_parent INT 0\n\
         CONFIG proxy.config.http.parent_proxy.self_detect INT 0\n"
    )
}

const IP_ALLOW: &str = "ip_allow:
  - apply: in
    ip_addrs: 127.0.0.0/8
    action: allow
    methods: ALL
  - apply: in
    ip_addrs: 0/0
    action: deny
    methods: ALL
  - apply: out
    ip_addrs: 0/0
    action: allow
    methods: ALL
";

fn config(port: u16, parent_config: &str) -> AtsConfig {
    AtsConfig::new(port)
        .file("records.config", records(port))
        .file("ip_allow.yaml", IP_ALLOW)
        .file("parent.config", parent_config)
}

fn to_parent(p: &ParentProxy) -> String {
    let (h, port) = p.host_port();
    format!("dest_domain=. parent=\"{h}:{port}\" round_robin=false go_direct=false\n")
}

#[test]
fn reload_is_confirmed_only_by_loading_lines_in_diags_log() {
    let hosts = Hosts::new().with("www.f1.test", loopback(6));
    let origin = Origin::start("o", loopback(6)).expect("origin");
    let p1 = ParentProxy::start("p1", loopback(3), hosts.clone()).expect("p1");
    let p2 = ParentProxy::start("p2", loopback(4), hosts.clone()).expect("p2");
    let port = free_port().expect("port");
    // Stock sync intervals: this is the production reload latency the agent must cope with.
    let ats =
        AtsInstance::start(config(port, &to_parent(&p1)).hosts(hosts).stock_timing()).expect("ATS");
    let url = format!("http://www.f1.test:{}/r", origin.addr().port());
    let client = ProxyClient::new(ats.proxy_addr());
    assert_eq!(
        client.get(&url).expect("GET").header("x-apm-parent"),
        Some("p1")
    );

    let before = ats
        .metric("proxy.node.config.reconfigure_time")
        .expect("metric");
    ats.write_config_file("parent.config", &to_parent(&p2))
        .expect("write");
    let started = Instant::now();
    let lines = ats
        .reload_and_wait(&["parent.config"], RELOAD_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "reload confirmed after {:?}; diags.log lines:\n{}",
        started.elapsed(),
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("NOTE: parent.config loading ...")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("NOTE: parent.config finished loading")),
        "{lines:?}"
    );
    assert!(
        ats.manager_log()
            .contains("NOTE: User has changed config file parent.config"),
        "{}",
        ats.manager_log()
    );
    let status = ats.traffic_ctl(&["config", "status"]).expect("status");
    eprintln!("traffic_ctl config status:\n{}", status.stdout);
    assert!(
        status.stdout.contains("Configuration is current"),
        "{}",
        status.stdout
    );
    let after = ats
        .metric("proxy.node.config.reconfigure_time")
        .expect("metric");
    assert!(
        after.parse::<u64>().expect("epoch") >= before.parse::<u64>().expect("epoch"),
        "{before} -> {after}"
    );
    assert_eq!(
        client.get(&url).expect("GET").header("x-apm-parent"),
        Some("p2"),
        "{}",
        ats.log_tails(20)
    );
}

/// Trap 1: a bad line is dropped with an ERROR, the rest goes live, the reload reports
/// success, and traffic the dropped catch-all should have sent to a parent goes DIRECT.
#[test]
fn a_bad_parent_line_is_dropped_and_the_reload_still_succeeds() {
    let hosts = Hosts::new().with("www.f2.test", loopback(6));
    let origin = Origin::start("o", loopback(6)).expect("origin");
    let p1 = ParentProxy::start("p1", loopback(3), hosts.clone()).expect("p1");
    let port = free_port().expect("port");
    let ats = AtsInstance::start(config(port, &to_parent(&p1)).hosts(hosts)).expect("ATS");
    let (h, _) = p1.host_port();
    // The catch-all lacks the mandatory parent port; the second line has an unknown modifier.
    ats.write_config_file(
        "parent.config",
        &format!(
            "dest_domain=. parent=\"{h}\" round_robin=false go_direct=false\n\
             dest_domain=bad.test bogus=1\n"
        ),
    )
    .expect("write");
    let lines = ats
        .reload_and_wait(&["parent.config"], RELOAD_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("diags.log after the bad reload:\n{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR: [ParentSelection] No parent port specified at line 1")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR: [ParentSelection] Unknown modifier at line 2")),
        "{lines:?}"
    );
    let alarms = ats.traffic_ctl(&["alarm", "list"]).expect("alarm list");
    eprintln!("traffic_ctl alarm list:\n{}", alarms.stdout);
    assert!(
        alarms.stdout.contains("MGMT_ALARM_PROXY_CONFIG_ERROR"),
        "{}",
        alarms.stdout
    );
    let status = ats.traffic_ctl(&["config", "status"]).expect("status");
    assert!(status.stdout.contains("Configuration is current"));

    let url = format!("http://www.f2.test:{}/now-direct", origin.addr().port());
    let r = ProxyClient::new(ats.proxy_addr()).get(&url).expect("GET");
    assert_eq!(r.status, 200, "{}", ats.log_tails(20));
    assert_eq!(r.header("x-apm-parent"), None, "went to a parent after all");
    assert_eq!(p1.total(), 0);
}

#[test]
fn debug_output_can_be_switched_on_at_runtime() {
    let origin = Origin::start("o", loopback(7)).expect("origin");
    let port = free_port().expect("port");
    let ats = AtsInstance::start(
        config(port, "dest_domain=. go_direct=true\n")
            .record("CONFIG proxy.config.diags.debug.tags STRING http_trans"),
    )
    .expect("ATS");
    let set = ats
        .traffic_ctl(&["config", "set", "proxy.config.diags.debug.enabled", "1"])
        .expect("config set");
    eprintln!("traffic_ctl config set said: {}", set.stdout);
    let get = ats
        .traffic_ctl(&["config", "get", "proxy.config.diags.debug.enabled"])
        .expect("config get");
    assert_eq!(get.stdout.trim(), "proxy.config.diags.debug.enabled: 1");
    // On its own the change reaches traffic_server after anything from 1 s to over a minute
    // on a loaded machine: traffic_manager forwards it only when woken (see
    // `AtsInstance::wake_manager`); woken every second it arrives within ~6 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = ProxyClient::new(ats.proxy_addr());
    let set_at = Instant::now();
    loop {
        let _ = ats.wake_manager();
        let _ = client.get(&origin.url("/debug"));
        if ats.traffic_out().contains("DEBUG: <HttpTransact.cc") {
            eprintln!(
                "debug output after {:?}; diags.log since start:\n{}",
                set_at.elapsed(),
                ats.diags_since_start().join("\n")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no DEBUG line in traffic.out:\n{}",
            ats.log_tails(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !ats.diags_log().contains("DEBUG:"),
        "debug goes to traffic.out"
    );
}

#[test]
fn the_metrics_the_agent_reads_exist() {
    let port = free_port().expect("port");
    let ats = AtsInstance::start(config(port, "dest_domain=. go_direct=true\n")).expect("ATS");
    let names = [
        "proxy.node.proxy_running",
        "proxy.node.config.reconfigure_time",
        "proxy.node.config.reconfigure_required",
        "proxy.node.config.restart_required.proxy",
        "proxy.node.config.restart_required.manager",
        "proxy.process.http.current_client_connections",
        "proxy.process.http.total_client_connections",
        "proxy.process.http.current_active_client_connections",
        "proxy.process.http.current_server_connections",
        "proxy.process.http.current_parent_proxy_connections",
        "proxy.process.http.total_parent_proxy_connections",
        "proxy.process.http.incoming_requests",
        "proxy.process.http.completed_requests",
        "proxy.process.http.connect_requests",
        "proxy.process.http.cache_hit_fresh",
        "proxy.process.http.cache_miss_cold",
        "proxy.process.cache.ram_cache.hits",
        "proxy.process.cache.ram_cache.misses",
        "proxy.process.http.err_connect_fail_count_stat",
        "proxy.process.http.err_client_abort_count_stat",
        "proxy.process.http.broken_server_connections",
        "proxy.process.http.2xx_responses",
        "proxy.process.http.4xx_responses",
        "proxy.process.http.5xx_responses",
    ];
    for name in names {
        let v = ats.metric(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(v.parse::<i64>().is_ok(), "{name} = {v:?}");
    }
    assert_eq!(ats.metric("proxy.node.proxy_running").expect("m"), "1");
    // Several names in one call: one `NAME VALUE` line each.
    let out = ats
        .traffic_ctl(&["metric", "get", names[0], names[5], names[6]])
        .expect("multi get");
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    // A records.config without duplicate lines does not flag a restart at start-up.
    assert_eq!(
        ats.metric("proxy.node.config.restart_required.proxy")
            .expect("m"),
        "0"
    );
}

/// ats-notes.md: a later `dest_ip` range ending one address below an earlier one's start hangs
/// the 9.2 parent.config loader at start-up: "parent.config loading ..." and nothing after it.
/// If this test starts failing, ATS fixed the bug (and the renderer's reordering is moot).
#[test]
fn descending_adjacent_dest_ip_ranges_hang_the_9_2_loader() {
    let port = free_port().expect("port");
    let bad = "dest_ip=127.0.1.8-127.0.1.10 go_direct=true\n\
               dest_ip=127.0.1.0-127.0.1.7 go_direct=true\n\
               dest_domain=. go_direct=true\n";
    let mut ats = AtsInstance::spawn(config(port, bad)).expect("spawn");
    // Wait for the loader to start on parent.config, then give it time it never needs when
    // healthy (a good file loads within milliseconds of that line).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ats.diags_log().contains("parent.config loading ...") {
        assert!(Instant::now() < deadline, "{}", ats.log_tails(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = ats
        .wait_ready(Duration::from_secs(4))
        .expect_err("ATS must not become ready with the bad ordering");
    assert!(matches!(err, AtsError::NotReady { .. }), "{err}");
    let diags = ats.diags_log();
    assert!(
        !diags.contains("parent.config finished loading"),
        "the loader finished after all:\n{diags}"
    );
    assert!(!diags.contains("traffic server running"), "{diags}");
}

/// ats-notes.md: reloading into the same pattern never finishes; ATS keeps routing with the
/// old file, a later reload (a rollback) does not finish either, and only a restart with a
/// good file recovers. The agent's reload confirmation depends on this.
#[test]
fn a_reload_into_the_dest_ip_hang_never_finishes_and_only_a_restart_recovers() {
    let hosts = Hosts::new().with("www.f3.test", loopback(6));
    let origin = Origin::start("o", loopback(6)).expect("origin");
    let p1 = ParentProxy::start("p1", loopback(3), hosts.clone()).expect("p1");
    let p2 = ParentProxy::start("p2", loopback(4), hosts.clone()).expect("p2");
    let port = free_port().expect("port");
    let mut ats = AtsInstance::start(config(port, &to_parent(&p1)).hosts(hosts)).expect("ATS");
    let url = format!("http://www.f3.test:{}/hang", origin.addr().port());
    let client = ProxyClient::new(ats.proxy_addr());

    let bad = format!(
        "dest_ip=127.0.1.8-127.0.1.10 go_direct=true\n\
         dest_ip=127.0.1.0-127.0.1.7 go_direct=true\n{}",
        to_parent(&p2)
    );
    ats.write_config_file("parent.config", &bad).expect("write");
    let offset = ats.diags_offset();
    // Long enough for reload_and_wait's nudge (after 8 s): ATS 9.2 sometimes ignores a reload
    // issued right after start, and then this reload would never even begin (seen in CI).
    let err = ats
        .reload_and_wait(&["parent.config"], Duration::from_secs(20))
        .expect_err("the reload must not finish");
    assert!(matches!(err, AtsError::ReloadNotConfirmed { .. }), "{err}");
    let lines = ats.diags_lines_since(offset);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("parent.config loading ...")),
        "the reload did not even start: {lines:?}"
    );
    let r = client.get(&url).expect("GET");
    assert_eq!(
        r.header("x-apm-parent"),
        Some("p1"),
        "old config still serves"
    );

    // Rolling back with a reload does not help: the task thread is stuck.
    ats.write_config_file("parent.config", &to_parent(&p2))
        .expect("write");
    let rollback = ats.reload_and_wait(&["parent.config"], Duration::from_secs(4));
    assert!(
        rollback.is_err(),
        "a reload after the hang finished: {rollback:?}"
    );
    assert_eq!(
        client.get(&url).expect("GET").header("x-apm-parent"),
        Some("p1")
    );

    ats.restart().expect("restart with the good file");
    assert_eq!(
        client.get(&url).expect("GET").header("x-apm-parent"),
        Some("p2"),
        "{}",
        ats.log_tails(20)
    );
}
