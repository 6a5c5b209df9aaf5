//! The Chromium harness itself: starts, isolates contexts, types with real keys, screenshots,
//! and leaves no process behind.

use apm_testkit::browser::Chromium;

const PAGE: &str = "data:text/html,<title>t</title><input id=a><button id=b onclick=\"document.getElementById('out').textContent='clicked:'+document.getElementById('a').value\">go</button><p id=out></p>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_drives_a_page_and_dies_with_its_group() {
    let chromium = Chromium::launch().await.expect("launch chromium");
    let version = chromium.version().await.expect("version");
    assert!(version.contains("Chrome"), "unexpected product {version}");

    let tab = chromium.new_tab().await.expect("tab");
    tab.goto(PAGE).await.expect("goto");
    tab.fill("#a", "héllo 42").await.expect("fill");
    assert_eq!(tab.focused_id().await.expect("focus"), "a");
    tab.click("#b").await.expect("click");
    tab.wait_for_text("clicked:héllo 42")
        .await
        .expect("text after click");
    assert_eq!(tab.value("#a").await.expect("value"), "héllo 42");
    assert!(tab.exists("#out").await.expect("exists"));
    assert!(!tab.exists("#nope").await.expect("exists"));
    let err = tab
        .wait_until_for("false", "never", std::time::Duration::from_millis(200))
        .await
        .expect_err("must time out");
    assert!(err.to_string().contains("never"), "{err}");

    // A second tab has its own storage.
    tab.eval::<bool>("(() => { localStorage.setItem('k', 'v'); return true; })()")
        .await
        .ok();
    let other = chromium.new_tab().await.expect("second tab");
    other.goto("data:text/html,<p>x</p>").await.expect("goto");

    let shot = tab
        .screenshot("testkit-browser-selftest")
        .await
        .expect("screenshot");
    let bytes = std::fs::read(&shot).expect("read screenshot");
    assert_eq!(&bytes[1..4], b"PNG", "screenshot is a PNG");

    let profile = chromium.profile_dir().to_path_buf();
    let pids = chromium_pids(&profile);
    assert!(
        !pids.is_empty(),
        "chromium processes are visible while running"
    );
    drop(chromium);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = chromium_pids(&profile);
    assert!(left.is_empty(), "processes left after drop: {left:?}");
}

/// Pids whose command line mentions this browser's profile dir.
fn chromium_pids(profile: &std::path::Path) -> Vec<u32> {
    let needle = profile.to_string_lossy().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains(&needle) && !cmd.contains("watchdog") {
                // Zombies have an empty cmdline, so anything here is alive.
                out.push(pid);
            }
        }
    }
    out
}
