//! The apply transaction against a real ATS 9.2 (Debian package, apm-testkit harness):
//! confirm from the logs, roll back what ATS rejects, recover from a crash mid-apply, detect
//! restart-only changes, survive the 9.2 loader hang; metrics and log capture on real ATS.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apm_agent::apply::{Applier, ApplyOutcome, ApplySettings, ValidBundle, materialize};
use apm_agent::ats::{LogFiles, TrafficCtl};
use apm_agent::capture::{Capturer, Confirmation};
use apm_agent::metrics::METRICS;
use apm_agent::records::LocalRecords;
use apm_agent::state::StateDir;
use apm_policy::{Bundle, ContentHash};
use apm_testkit::ats::AtsInstance;
use support::{World, local_records, route};

struct Rig {
    applier: Applier,
    local: LocalRecords,
    state: StateDir,
    _state_dir: tempfile::TempDir,
}

fn ctl(ats: &AtsInstance) -> TrafficCtl {
    TrafficCtl::new(
        "/usr/bin/traffic_ctl".into(),
        Some(ats.runroot_file()),
        Duration::from_secs(20),
    )
}

fn rig(ats: &AtsInstance, settings: ApplySettings) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(&dir.path().join("state")).expect("state dir");
    let local = LocalRecords::parse(&local_records(ats)).expect("local records");
    let applier = Applier::new(
        ats.config_dir(),
        state.clone(),
        ctl(ats),
        LogFiles::new(ats.log_dir()),
        local.clone(),
        settings,
    );
    Rig {
        applier,
        local,
        state,
        _state_dir: dir,
    }
}

fn settings() -> ApplySettings {
    ApplySettings {
        confirm_timeout: Duration::from_secs(60),
        hang_timeout: Duration::from_secs(4),
        nudge_interval: Duration::from_secs(5),
        restart_timeout: Duration::from_secs(40),
        ..ApplySettings::default()
    }
}

fn valid(b: &Bundle) -> ValidBundle {
    ValidBundle::check(b.hash, Some(1), b.ats, b.files.clone()).expect("bundle passes validation")
}

/// A bundle with some files replaced (hash recomputed, so only ATS can object).
fn altered(b: &Bundle, changes: &[(&str, String)]) -> ValidBundle {
    let mut files = b.files.clone();
    for (name, content) in changes {
        files.insert((*name).to_owned(), content.clone());
    }
    ValidBundle {
        hash: ContentHash::of_files(&files),
        version: Some(9),
        ats: b.ats,
        files,
    }
}

fn on_disk(ats: &AtsInstance, names: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(ats.config_dir().join(&n)).unwrap_or_default();
            (n, text)
        })
        .collect()
}

#[track_caller]
fn assert_disk_is(ats: &AtsInstance, rig: &Rig, bundle: &ValidBundle) {
    let expected = materialize(bundle, &rig.local).expect("materialize");
    let actual = on_disk(ats, expected.keys().cloned());
    assert!(
        actual == expected,
        "config dir does not hold bundle {}",
        bundle.hash
    );
    assert!(
        !rig.state.path("apply-journal.json").exists(),
        "journal left behind"
    );
    assert!(
        !rig.state.path("apply-backup.json").exists(),
        "backup left behind"
    );
    assert!(
        !ats.config_dir().join(".apm-staging").exists(),
        "staging left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_confirm_reject_recover_and_restart_required_on_real_ats() {
    let w = World::new();
    let a = w.bundle("p1");
    let ats = w.start_ats(&a);
    let url = w.internet_url("/apply");
    assert_eq!(route(&ats, &url), (200, "p1".to_owned()));
    let rig = rig(&ats, settings());

    // 1. A new bundle is written, reloaded and confirmed; traffic follows it.
    let b = valid(&w.bundle("p2"));
    let outcome = rig.applier.apply(&b).await.expect("apply");
    match &outcome {
        ApplyOutcome::Applied { changed } => {
            assert!(changed.contains(&"parent.config".to_owned()), "{changed:?}");
        }
        other => panic!("expected Applied, got {other:?}\n{}", ats.log_tails(30)),
    }
    assert_disk_is(&ats, &rig, &b);
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));
    assert!(rig.applier.on_disk_matches(&b));

    // The same bundle again writes nothing.
    assert_eq!(
        rig.applier.apply(&b).await.expect("apply"),
        ApplyOutcome::Applied { changed: vec![] }
    );

    // 2. ip_allow.yaml that ATS fails to load: files restored, ATS still routes with B.
    let bad_ip_allow = altered(
        &w.bundle("p1"),
        &[("ip_allow.yaml", "ip_allow:\n  - apply: in\n    ip_addrs: nonsense\n    action: allow\n    methods: ALL\n".to_owned())],
    );
    let outcome = rig.applier.apply(&bad_ip_allow).await.expect("apply");
    let ApplyOutcome::Failed { detail } = outcome else {
        panic!("expected Failed, got {outcome:?}\n{}", ats.log_tails(30));
    };
    assert!(detail.contains("ip_allow.yaml failed to load"), "{detail}");
    // Only once ATS confirmed loading the restored files may the agent report them live.
    assert!(
        detail.contains("restored the previous files; ATS reloaded them"),
        "{detail}\n{}",
        ats.log_tails(30)
    );
    assert_disk_is(&ats, &rig, &b);
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));

    // 3. A parent.config line ATS drops (unknown modifier) passes the agent's checks but not
    //    the reload confirmation: rolled back, never left half-live.
    let dropped_line = format!(
        "{}dest_domain=extra.test parent=\"127.0.0.3:1\" go_direct=false bogus=1\n",
        w.bundle("p1").files["parent.config"]
    );
    let with_bad_line = altered(&w.bundle("p1"), &[("parent.config", dropped_line)]);
    let outcome = rig.applier.apply(&with_bad_line).await.expect("apply");
    let ApplyOutcome::Failed { detail } = outcome else {
        panic!("expected Failed, got {outcome:?}\n{}", ats.log_tails(30));
    };
    assert!(detail.contains("[ParentSelection]"), "{detail}");
    assert!(
        detail.contains("restored the previous files; ATS reloaded them"),
        "{detail}\n{}",
        ats.log_tails(30)
    );
    assert_disk_is(&ats, &rig, &b);
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));

    // 4. A crash mid-apply (the future is dropped between two renames, like a SIGKILL):
    //    the config dir holds a mix until recovery puts the complete old set back.
    let slow = self::rig(
        &ats,
        ApplySettings {
            step_delay: Duration::from_secs(4),
            ..settings()
        },
    );
    let c = valid(&w.bundle("p1"));
    let interrupted = tokio::time::timeout(Duration::from_secs(2), slow.applier.apply(&c)).await;
    assert!(
        interrupted.is_err(),
        "the apply should still be between renames"
    );
    // `slow` shares nothing with `rig` but the config dir; use its journal.
    let expected_new = materialize(&c, &rig.local).expect("materialize");
    let expected_old = materialize(&b, &rig.local).expect("materialize");
    let disk = on_disk(&ats, expected_new.keys().cloned());
    let new_files = disk
        .iter()
        .filter(|(n, t)| expected_new[*n] == **t && expected_old[*n] != **t)
        .count();
    let old_files = disk
        .iter()
        .filter(|(n, t)| expected_old[*n] == **t && expected_new[*n] != **t)
        .count();
    assert!(
        new_files >= 1 && old_files >= 1,
        "expected a mixed set mid-apply: {new_files} new, {old_files} old"
    );
    assert!(slow.state.path("apply-journal.json").exists());
    let recovered = slow.applier.recover().await.expect("recover");
    let note = recovered.expect("recovery should report the interrupted apply");
    assert!(note.contains("ATS reloaded the previous files"), "{note}");
    assert_disk_is(&ats, &slow, &b);
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));
    // Nothing left to recover the second time.
    assert_eq!(slow.applier.recover().await.expect("recover"), None);

    // 5. A listen-port change needs a restart: files in place, reloadable parts live,
    //    "restart required" reported, ATS still serves on the old port.
    let other_port = apm_testkit::net::free_port().expect("port");
    let d = valid(&w.bundle_with("p2", other_port, ""));
    let outcome = rig.applier.apply(&d).await.expect("apply");
    match outcome {
        ApplyOutcome::RestartRequired { changes, note } => {
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0].name, "proxy.config.http.server_ports");
            assert_eq!(
                changes[0].new.as_deref(),
                Some(other_port.to_string().as_str())
            );
            assert_eq!(note, None);
        }
        other => panic!(
            "expected RestartRequired, got {other:?}\n{}",
            ats.log_tails(30)
        ),
    }
    assert_disk_is(&ats, &rig, &d);
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ats_9_2_loader_hang_is_rolled_back_with_a_restart() {
    let w = World::new();
    let a = w.bundle("p1");
    let ats = w.start_ats(&a);
    let url = w.internet_url("/hang");
    assert_eq!(route(&ats, &url), (200, "p1".to_owned()));
    let rig = rig(&ats, settings());
    // First the agent's own files (with the local records), so the hang bundle only changes
    // parent.config.
    let a_valid = valid(&a);
    assert!(matches!(
        rig.applier.apply(&a_valid).await.expect("apply"),
        ApplyOutcome::Applied { .. }
    ));

    let hang = format!(
        "dest_ip=127.0.1.8-127.0.1.10 go_direct=true\ndest_ip=127.0.1.0-127.0.1.7 go_direct=true\n{}",
        w.bundle("p2").files["parent.config"]
    );
    let bad = altered(&w.bundle("p2"), &[("parent.config", hang)]);
    // The agent's validation refuses this ordering on its own…
    let refused = ValidBundle::check(bad.hash, None, bad.ats, bad.files.clone()).unwrap_err();
    assert!(refused.to_string().contains("hangs"), "{refused}");
    // …and if such files reached ATS anyway, the apply sees the hang and recovers.
    let started = Instant::now();
    let outcome = rig.applier.apply(&bad).await.expect("apply");
    let ApplyOutcome::Failed { detail } = outcome else {
        panic!("expected Failed, got {outcome:?}\n{}", ats.log_tails(40));
    };
    assert!(detail.contains("never finished"), "{detail}");
    assert!(
        detail.contains("restarted traffic_server"),
        "{detail}\n{}",
        ats.log_tails(40)
    );
    eprintln!("hang detected and recovered in {:?}", started.elapsed());
    assert_disk_is(&ats, &rig, &a_valid);
    assert_eq!(route(&ats, &url), (200, "p1".to_owned()));
    // Reloads work again after the restart.
    let b = valid(&w.bundle("p2"));
    assert!(
        matches!(
            rig.applier.apply(&b).await.expect("apply"),
            ApplyOutcome::Applied { .. }
        ),
        "{}",
        ats.log_tails(30)
    );
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_a_log_capture_window_on_real_ats() {
    let w = World::new();
    let ats = w.start_ats(&w.bundle("p1"));
    let ctl = ctl(&ats);
    assert_eq!(route(&ats, &w.internet_url("/m")), (200, "p1".to_owned()));

    let deadline = Instant::now() + Duration::from_secs(15);
    let values = loop {
        let values = ctl.metrics(METRICS).await.unwrap_or_default();
        if values
            .get("proxy.process.http.incoming_requests")
            .is_some_and(|v| *v >= 1.0)
        {
            break values;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the request: {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for name in METRICS {
        assert!(values.contains_key(*name), "{name} missing from {values:?}");
    }
    let version = ctl.version().await.expect("version");
    assert!(version.starts_with("9."), "{version}");

    let capturer = Capturer::new(
        ctl.clone(),
        LogFiles::new(ats.log_dir()),
        "http|parent_select".into(),
    );
    let mut window = capturer
        .prepare(None, apm_agent::now_ms() + 60_000)
        .await
        .expect("prepare");
    assert_eq!(window.previous_enabled, "0");
    assert_eq!(window.confirmed_ms, None);
    // traffic_manager says 1 at once; traffic_server takes it only when traffic_manager
    // forwards it, which the capturer provokes and confirms from diags.log.
    let raised = capturer
        .raise_and_confirm(&mut window)
        .await
        .expect("raise");
    eprintln!("debug logging raise: {raised:?}");
    assert!(
        matches!(raised, Confirmation::Confirmed(_)),
        "{raised:?}\n{}",
        ats.log_tails(30)
    );
    assert!(window.confirmed_ms.is_some(), "{window:?}");
    assert_eq!(
        ctl.config_get("proxy.config.diags.debug.enabled")
            .await
            .expect("get"),
        "1"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shipped = Vec::new();
    while !shipped.iter().any(|l: &String| l.contains("DEBUG: <")) {
        assert!(
            Instant::now() < deadline,
            "no debug lines captured: {shipped:?}"
        );
        let _ = route(&ats, &w.internet_url("/captured"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        shipped.extend(capturer.collect(&mut window));
    }
    assert!(
        shipped
            .iter()
            .all(|l| l.starts_with("diags.log: ") || l.starts_with("traffic.out: "))
    );
    let restored = capturer.restore(&window).await.expect("restore");
    eprintln!("debug logging restore: {restored:?}");
    assert!(
        matches!(restored, Confirmation::Confirmed(_)),
        "{restored:?}\n{}",
        ats.log_tails(30)
    );
    assert_eq!(
        ctl.config_get("proxy.config.diags.debug.enabled")
            .await
            .expect("get"),
        "0"
    );
    assert_eq!(
        ctl.config_get("proxy.config.diags.debug.tags")
            .await
            .expect("get"),
        window.previous_tags
    );
}
