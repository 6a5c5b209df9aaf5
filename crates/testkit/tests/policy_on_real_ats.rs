//! The routing policy, rendered by `apm-policy`, does on a real ATS 9.2 what it says.
//!
//! Each test starts its own ATS (about 3 s) with two parents and the origins it needs, all on
//! loopback, so tests are independent and run in parallel. Names resolve through the
//! harness's private hosts file:
//!
//! | name / address | what | policy |
//! |---|---|---|
//! | `127.0.0.2`, `intra.corp.test` | origin `intra` | rule 0: ip `127.0.0.2/32` → direct |
//! | `www.direct.test` (`127.0.0.5`) | origin `eec` | rule 1: domain_suffix `direct.test` → direct |
//! | `www.internet.test`, `127.0.0.6` | origin `internet` | default → parent |
//! | `127.0.0.3`, `127.0.0.4` | parents `p1` (primary), `p2` | `primary_fallback` |

use std::time::{Duration, Instant};

use apm_policy::{AtsMajor, Bundle, Policy};
use apm_testkit::ats::{AtsConfig, AtsInstance};
use apm_testkit::client::{HttpResponse, ProxyClient};
use apm_testkit::net::{Hosts, free_port, loopback};
use apm_testkit::origin::Origin;
use apm_testkit::parent::ParentProxy;

/// Failover timing of the test policy: one failure marks a parent down, retried after 4 s.
const RETRY_TIME_S: u64 = 4;

struct World {
    hosts: Hosts,
    intra: Origin,
    eec: Origin,
    internet: Origin,
    p1: ParentProxy,
    p2: ParentProxy,
    port: u16,
}

impl World {
    fn new() -> Self {
        let hosts = Hosts::new()
            .with("intra.corp.test", loopback(2))
            .with("www.direct.test", loopback(5))
            .with("www.internet.test", loopback(6));
        Self {
            intra: Origin::start("intra", loopback(2)).expect("origin intra"),
            eec: Origin::start("eec", loopback(5)).expect("origin eec"),
            internet: Origin::start("internet", loopback(6)).expect("origin internet"),
            p1: ParentProxy::start("p1", loopback(3), hosts.clone()).expect("parent p1"),
            p2: ParentProxy::start("p2", loopback(4), hosts.clone()).expect("parent p2"),
            port: free_port().expect("free port"),
            hosts,
        }
    }

    /// The test policy as a user would write it; `extra_rules` go before the two standard ones.
    fn policy_toml(&self, extra_rules: &str) -> String {
        let (p1h, p1p) = self.p1.host_port();
        let (p2h, p2p) = self.p2.host_port();
        format!(
            r#"
listen_port = {port}
default_action = "parent"
allowed_clients = ["127.0.0.0/8", "::1/128"]
connect_ports = ["*"]

[[parents]]
host = "{p1h}"
port = {p1p}

[[parents]]
host = "{p2h}"
port = {p2p}

[failover]
policy = "primary_fallback"
fail_threshold = 1
retry_time_s = {RETRY_TIME_S}
total_connect_attempts = 2
per_parent_connect_attempts = 1
connect_timeout_s = 2
{extra_rules}
[[rules]]
match = "ip"
value = "127.0.0.2/32"
action = "direct"

[[rules]]
match = "domain_suffix"
value = "direct.test"
action = "direct"

[ats_records]
# Test parents live on loopback, which ATS would otherwise take for itself and mark down.
"proxy.config.http.parent_proxy.self_detect" = 0
"#,
            port = self.port
        )
    }

    fn render(&self, toml: &str) -> Bundle {
        let policy = Policy::from_toml_str(toml).unwrap_or_else(|e| panic!("parse: {e}\n{toml}"));
        let valid = policy
            .validate()
            .unwrap_or_else(|e| panic!("validate: {e}\n{toml}"));
        apm_policy::render(&valid, AtsMajor::V9)
    }

    fn start_ats(&self, bundle: &Bundle) -> AtsInstance {
        AtsInstance::start(
            AtsConfig::new(self.port)
                .files(bundle.files.clone())
                .hosts(self.hosts.clone()),
        )
        .unwrap_or_else(|e| panic!("ATS did not start with the rendered bundle: {e}"))
    }

    fn start(&self) -> AtsInstance {
        self.start_ats(&self.render(&self.policy_toml("")))
    }
}

fn get(ats: &AtsInstance, url: &str) -> HttpResponse {
    ProxyClient::new(ats.proxy_addr())
        .get(url)
        .unwrap_or_else(|e| panic!("{e}\n{}", ats.log_tails(30)))
}

/// Asserts the response came from `origin` without any parent, i.e. DIRECT.
#[track_caller]
fn assert_direct(ats: &AtsInstance, r: &HttpResponse, origin: &str, world: &World) {
    let context = || {
        format!(
            "status {} headers {:?} body {:?}\nparents: p1 {:?} p2 {:?}\n{}",
            r.status,
            r.headers,
            r.body_text(),
            world.p1.counts(),
            world.p2.counts(),
            ats.log_tails(30)
        )
    };
    assert_eq!(r.status, 200, "{}", context());
    assert_eq!(r.header("x-apm-origin"), Some(origin), "{}", context());
    assert_eq!(r.header("x-apm-parent"), None, "{}", context());
    assert_eq!(world.p1.total() + world.p2.total(), 0, "{}", context());
}

/// Asserts the response came from `origin` through parent `parent`.
#[track_caller]
fn assert_via(ats: &AtsInstance, r: &HttpResponse, origin: &str, parent: &str) {
    let context = || {
        format!(
            "status {} headers {:?} body {:?}\n{}",
            r.status,
            r.headers,
            r.body_text(),
            ats.log_tails(30)
        )
    };
    assert_eq!(r.status, 200, "{}", context());
    assert_eq!(r.header("x-apm-parent"), Some(parent), "{}", context());
    assert_eq!(r.header("x-apm-origin"), Some(origin), "{}", context());
}

#[test]
fn ip_rule_sends_an_ip_literal_direct() {
    let w = World::new();
    let ats = w.start();
    let r = get(&ats, &w.intra.url("/ip-literal"));
    assert_direct(&ats, &r, "intra", &w);
    assert_eq!(w.intra.request_count(), 1);
}

#[test]
fn ip_rule_sends_a_name_that_resolves_into_the_range_direct() {
    let w = World::new();
    let ats = w.start();
    let url = format!("http://intra.corp.test:{}/by-name", w.intra.addr().port());
    let r = get(&ats, &url);
    assert_direct(&ats, &r, "intra", &w);
}

#[test]
fn domain_suffix_rule_sends_direct() {
    let w = World::new();
    let ats = w.start();
    let url = format!("http://www.direct.test:{}/suffix", w.eec.addr().port());
    let r = get(&ats, &url);
    assert_direct(&ats, &r, "eec", &w);
    assert_eq!(w.eec.request_count(), 1);
}

#[test]
fn default_sends_a_host_name_to_the_primary_parent() {
    let w = World::new();
    let ats = w.start();
    let url = format!(
        "http://www.internet.test:{}/default",
        w.internet.addr().port()
    );
    let r = get(&ats, &url);
    assert_via(&ats, &r, "internet", "p1");
    assert_eq!(w.p1.count("GET"), 1);
    assert_eq!(w.p2.total(), 0);
    // ATS sends the parent an absolute-form request for the original URL.
    assert_eq!(w.p1.requests()[0].target, url);
}

#[test]
fn default_sends_an_unmatched_ip_literal_to_the_primary_parent() {
    let w = World::new();
    let ats = w.start();
    let r = get(&ats, &w.internet.url("/ip-default"));
    assert_via(&ats, &r, "internet", "p1");
    assert_eq!(w.p1.count("GET"), 1);
    assert_eq!(w.p2.total(), 0);
}

#[test]
fn connect_goes_through_the_primary_parent() {
    let w = World::new();
    let ats = w.start();
    let authority = format!("www.internet.test:{}", w.internet.addr().port());
    let t = ProxyClient::new(ats.proxy_addr())
        .connect_get(&authority, "/in-tunnel")
        .unwrap_or_else(|e| panic!("{e}\n{}", ats.log_tails(30)));
    assert_eq!(
        t.connect.status,
        200,
        "CONNECT refused: {:?} {:?}\n{}",
        t.connect.headers,
        t.connect.body_text(),
        ats.log_tails(30)
    );
    let inner = t.inner.expect("tunnel opened");
    assert_eq!(inner.status, 200);
    assert_eq!(inner.header("x-apm-origin"), Some("internet"));
    assert_eq!(w.p1.count("CONNECT"), 1, "p1 saw {:?}", w.p1.requests());
    assert_eq!(w.p1.requests()[0].target, authority);
    assert_eq!(w.p2.total(), 0);
}

#[test]
fn connect_to_a_direct_destination_skips_the_parents() {
    let w = World::new();
    let ats = w.start();
    let authority = format!("www.direct.test:{}", w.eec.addr().port());
    let t = ProxyClient::new(ats.proxy_addr())
        .connect_get(&authority, "/direct-tunnel")
        .unwrap_or_else(|e| panic!("{e}\n{}", ats.log_tails(30)));
    assert_eq!(t.connect.status, 200, "{}", ats.log_tails(30));
    let inner = t.inner.expect("tunnel opened");
    assert_eq!(inner.header("x-apm-origin"), Some("eec"));
    assert_eq!(w.p1.total() + w.p2.total(), 0);
}

#[test]
fn primary_down_fails_over_to_secondary_and_back_after_retry_time() {
    let w = World::new();
    let ats = w.start();
    let url = |path: &str| {
        format!(
            "http://www.internet.test:{}{path}",
            w.internet.addr().port()
        )
    };

    assert_via(&ats, &get(&ats, &url("/before")), "internet", "p1");

    w.p1.stop();
    let diags_before = ats.diags_offset();
    let r = get(&ats, &url("/p1-down"));
    let marked_down = Instant::now();
    assert_via(&ats, &r, "internet", "p2");
    // fail_threshold = 1: the refused connection marked p1 down.
    let new_diags = ats.diags_lines_since(diags_before).join("\n");
    assert!(
        new_diags.contains("marked down"),
        "expected a 'marked down' line in diags.log, got:\n{new_diags}"
    );

    // p1 is back, but ATS keeps it down until retry_time has passed.
    w.p1.restart().expect("restart p1 on the same address");
    assert_via(&ats, &get(&ats, &url("/p1-back-early")), "internet", "p2");

    // After retry_time ATS tries p1 again and, p1 answering, stays there.
    let retry = Duration::from_secs(RETRY_TIME_S);
    if let Some(rest) = retry.checked_sub(marked_down.elapsed()) {
        std::thread::sleep(rest + Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last;
    loop {
        last = get(&ats, &url("/p1-back"));
        if last.header("x-apm-parent") == Some("p1") || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_via(&ats, &last, "internet", "p1");
    assert_via(&ats, &get(&ats, &url("/stays-on-p1")), "internet", "p1");
}

/// ATS 9.2 hangs loading a parent.config in which a later `dest_ip` range ends one address
/// below an earlier one's start (ats-notes.md). A policy written in that order must render to a
/// file ATS loads and routes with.
#[test]
fn adjacent_ip_rules_in_descending_order_render_to_a_parent_config_ats_loads() {
    let w = World::new();
    let upper = Origin::start("upper", "127.0.1.9".parse().expect("ip")).expect("origin");
    let lower = Origin::start("lower", "127.0.1.3".parse().expect("ip")).expect("origin");
    let rules = r#"
[[rules]]
match = "ip"
value = "127.0.1.8-127.0.1.10"
action = "direct"

[[rules]]
match = "ip"
value = "127.0.1.0/29"
action = "direct"
"#;
    let bundle = w.render(&w.policy_toml(rules));
    let parent_config = &bundle.files["parent.config"];
    let pos = |needle: &str| {
        parent_config
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle} in:\n{parent_config}"))
    };
    assert!(
        pos("dest_ip=127.0.1.0") < pos("dest_ip=127.0.1.8"),
        "the renderer must put the lower adjacent range first:\n{parent_config}"
    );

    let ats = AtsInstance::start(
        AtsConfig::new(w.port)
            .files(bundle.files.clone())
            .hosts(w.hosts.clone())
            .startup_timeout(Duration::from_secs(15)),
    )
    .unwrap_or_else(|e| {
        panic!("ATS did not load the rendered parent.config:\n{parent_config}\n{e}")
    });
    assert!(
        ats.diags_since_start()
            .iter()
            .any(|l| l.contains("parent.config finished loading")),
        "{}",
        ats.log_tails(30)
    );
    assert_direct(&ats, &get(&ats, &upper.url("/upper")), "upper", &w);
    assert_direct(&ats, &get(&ats, &lower.url("/lower")), "lower", &w);
    let url = format!(
        "http://www.internet.test:{}/still-parent",
        w.internet.addr().port()
    );
    assert_via(&ats, &get(&ats, &url), "internet", "p1");
}

/// Trap 1 defence: the bundle sets `proxy.config.http.parent_proxies`, so even if ATS dropped
/// the catch-all line of parent.config, unmatched traffic still goes to the primary parent.
#[test]
fn parent_proxies_safety_net_routes_when_the_catch_all_line_is_lost() {
    let w = World::new();
    let mut bundle = w.render(&w.policy_toml(""));
    let parent_config = bundle.files["parent.config"].clone();
    let without_catch_all: String = parent_config
        .lines()
        .filter(|l| !l.starts_with("dest_domain=. "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without_catch_all, parent_config, "no catch-all line found");
    bundle
        .files
        .insert("parent.config".to_owned(), without_catch_all);
    let ats = w.start_ats(&bundle);
    let url = format!("http://www.internet.test:{}/net", w.internet.addr().port());
    assert_via(&ats, &get(&ats, &url), "internet", "p1");
    // The rules that remain still send their traffic DIRECT.
    let r = get(&ats, &w.intra.url("/still-direct"));
    assert_eq!(r.status, 200, "{}", ats.log_tails(20));
    assert_eq!(r.header("x-apm-origin"), Some("intra"));
    assert_eq!(r.header("x-apm-parent"), None);
    assert_eq!(w.p1.total(), 1, "{:?}", w.p1.requests());

    // Fact, not policy: the safety net is ATS's DefaultParent, which has go_direct=true, so
    // with every parent down it sends traffic DIRECT. Only the rendered catch-all line
    // (go_direct=false) keeps "parent" traffic from ever going DIRECT; see
    // all_parents_down_is_an_error_not_direct.
    w.p1.stop();
    w.p2.stop();
    let before = w.internet.request_count();
    let r = get(
        &ats,
        &format!(
            "http://www.internet.test:{}/all-down",
            w.internet.addr().port()
        ),
    );
    assert_eq!(r.status, 200, "{}", ats.log_tails(20));
    assert_eq!(r.header("x-apm-parent"), None);
    assert_eq!(w.internet.request_count(), before + 1, "expected DIRECT");
}

/// `default_action = "parent"` renders `go_direct=false`: with every parent down the request
/// fails instead of leaking DIRECT.
#[test]
fn all_parents_down_is_an_error_not_direct() {
    let w = World::new();
    let ats = w.start();
    w.p1.stop();
    w.p2.stop();
    let url = format!(
        "http://www.internet.test:{}/nowhere",
        w.internet.addr().port()
    );
    let r = get(&ats, &url);
    assert!(
        r.status >= 500,
        "status {} {:?}\n{}",
        r.status,
        r.headers,
        ats.log_tails(20)
    );
    assert_eq!(w.internet.request_count(), 0, "the request went DIRECT");
    // DIRECT rules are unaffected by the parents being down.
    let r = get(&ats, &w.intra.url("/direct-anyway"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-apm-origin"), Some("intra"));
}
