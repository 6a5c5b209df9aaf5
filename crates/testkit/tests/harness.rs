//! Tests of the harness itself, against the real ATS 9.2, with hand-written config files (so a
//! renderer bug cannot hide a harness bug, and the other way round).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use apm_testkit::ats::{AtsConfig, AtsError, AtsInstance};
use apm_testkit::client::ProxyClient;
use apm_testkit::net::{Hosts, free_port, loopback};
use apm_testkit::origin::Origin;
use apm_testkit::parent::ParentProxy;

/// Minimal forward-proxy records, as the policy renderer writes them (ATS 9 syntax).
fn records(port: u16) -> String {
    format!(
        "CONFIG proxy.config.http.server_ports STRING {port}\n\
         CONFIG proxy.config.url_remap.remap_required INT 0\n\
         CONFIG proxy.config.reverse_proxy.enabled INT 0\n\
         CONFIG proxy.config.http.uncacheable_requests_bypass_parent INT 0\n\
         CONFIG proxy.config.http.parent_proxy.self_detect INT 0\n"
    )
}

/// `methods: ALL` is required: ATS 9.2 treats an allow rule without `methods` as allowing none.
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

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

#[test]
fn start_routes_to_a_parent_and_stop_kills_the_whole_group() {
    let hosts = Hosts::new().with("www.h1.test", loopback(6));
    let origin = Origin::start("o6", loopback(6)).expect("origin");
    let parent = ParentProxy::start("p1", loopback(3), hosts.clone()).expect("parent");
    let port = free_port().expect("port");
    let (ph, pp) = parent.host_port();
    let mut ats = AtsInstance::start(
        config(
            port,
            &format!("dest_domain=. parent=\"{ph}:{pp}\" round_robin=false go_direct=false\n"),
        )
        .hosts(hosts),
    )
    .expect("ATS starts");

    let url = format!("http://www.h1.test:{}/harness", origin.addr().port());
    let r = ProxyClient::new(ats.proxy_addr()).get(&url).expect("GET");
    assert_eq!(r.status, 200, "{}\n{}", r.body_text(), ats.log_tails(20));
    assert_eq!(r.header("x-apm-parent"), Some("p1"));
    assert_eq!(r.header("x-apm-origin"), Some("o6"));
    assert_eq!(parent.count("GET"), 1);

    // traffic_ctl answers and the harness's records are in force.
    assert_eq!(ats.metric("proxy.node.proxy_running").expect("metric"), "1");
    let user = ats
        .traffic_ctl(&["config", "get", "proxy.config.admin.user_id"])
        .expect("config get");
    assert!(user.stdout.contains("#-1"), "{}", user.stdout);

    let pgid = ats.pid().expect("running");
    ats.stop_gracefully().expect("stop");
    assert!(
        ats.manager_log()
            .contains("Cleaning up and reissuing signal #15"),
        "{}",
        ats.log_tails(5)
    );
    assert!(!ats.is_running());
    assert!(
        !std::path::Path::new(&format!("/proc/{pgid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pgid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "traffic_manager {pgid} still alive"
    );
    assert!(
        refused(ats.proxy_addr()),
        "proxy port still open after stop"
    );
}

#[test]
fn two_instances_run_side_by_side() {
    let origin = Origin::start("o7", loopback(7)).expect("origin");
    let direct = "dest_domain=. go_direct=true\n";
    let (p1, p2) = (free_port().expect("port"), free_port().expect("port"));
    // Both start at the same time: nothing but the listen port may be shared between them.
    let mut a = AtsInstance::spawn(config(p1, direct)).expect("first ATS");
    let mut b = AtsInstance::spawn(config(p2, direct)).expect("second ATS");
    a.wait_ready(Duration::from_secs(30)).expect("first ready");
    b.wait_ready(Duration::from_secs(30)).expect("second ready");
    for ats in [&a, &b] {
        let r = ProxyClient::new(ats.proxy_addr())
            .get(&origin.url("/side-by-side"))
            .expect("GET");
        assert_eq!(r.status, 200, "{}", ats.log_tails(20));
        assert_eq!(r.header("x-apm-origin"), Some("o7"));
        assert_eq!(ats.metric("proxy.node.proxy_running").expect("metric"), "1");
    }
    assert_eq!(origin.request_count(), 2);
}

#[test]
fn drop_stops_ats_even_when_the_test_panics() {
    let port = free_port().expect("port");
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let ats =
            AtsInstance::start(config(port, "dest_domain=. go_direct=true\n")).expect("ATS starts");
        tx.send(ats.pid().expect("pid")).expect("send");
        panic!("deliberate panic with ATS running");
    });
    assert!(handle.join().is_err(), "the thread must have panicked");
    let pgid = rx.recv().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !refused(SocketAddr::from(([127, 0, 0, 1], port))) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        refused(SocketAddr::from(([127, 0, 0, 1], port))),
        "ATS (group {pgid}) still listening after the panicking owner was dropped"
    );
}

#[test]
fn restart_keeps_config_and_logs_and_serves_again() {
    let origin = Origin::start("o8", loopback(8)).expect("origin");
    let port = free_port().expect("port");
    let mut ats =
        AtsInstance::start(config(port, "dest_domain=. go_direct=true\n")).expect("ATS starts");
    let first_pid = ats.pid();
    ats.restart().expect("restart");
    assert_ne!(ats.pid(), first_pid);
    let r = ProxyClient::new(ats.proxy_addr())
        .get(&origin.url("/after-restart"))
        .expect("GET");
    assert_eq!(r.status, 200, "{}", ats.log_tails(20));
    // Both starts are in the same diags.log; the second is what diags_since_start shows.
    assert_eq!(ats.diags_log().matches("traffic server running").count(), 2);
    assert_eq!(
        ats.diags_since_start()
            .iter()
            .filter(|l| l.contains("traffic server running"))
            .count(),
        1
    );
}

#[test]
fn startup_failure_is_reported_with_the_logs() {
    let port = free_port().expect("port");
    // A records.config value of the wrong type for a port makes traffic_server refuse to run.
    let started = Instant::now();
    let err = AtsInstance::start(
        config(port, "dest_domain=. go_direct=true\n")
            .record("CONFIG proxy.config.http.server_ports STRING not-a-port")
            .startup_timeout(Duration::from_secs(4)),
    )
    .expect_err("ATS cannot serve with no valid port");
    assert!(started.elapsed() < Duration::from_secs(20));
    match &err {
        AtsError::NotReady { logs, .. } => {
            assert!(logs.contains("diags.log"), "{err}");
            assert!(logs.contains("manager.log"), "{err}");
        }
        other => panic!("expected NotReady, got {other}"),
    }
}

#[test]
fn starts_with_debian_defaults_when_given_no_files() {
    let port = free_port().expect("port");
    let ats = AtsInstance::start(AtsConfig::new(port)).expect("ATS with Debian's files");
    let records = std::fs::read_to_string(ats.config_dir().join("records.config")).expect("read");
    assert!(records.contains("# apm-testkit: replaced below: CONFIG proxy.config.admin.user_id"));
    let ports = ats
        .traffic_ctl(&["config", "get", "proxy.config.http.server_ports"])
        .expect("config get");
    assert_eq!(
        ports.stdout.trim(),
        format!("proxy.config.http.server_ports: {port}")
    );
    // The harness records are also available to code that rewrites records.config itself.
    let names: Vec<String> = ats.harness_records().into_iter().map(|r| r.name).collect();
    assert!(
        names.contains(&"proxy.config.dns.nameservers".to_owned()),
        "{names:?}"
    );
}
