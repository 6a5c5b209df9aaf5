//! The browser harness itself, for both engines: starts, isolates contexts, types with real keys,
//! screenshots, and leaves no process behind.

use apm_testkit::browser::{Browser, Engine};

const PAGE: &str = "data:text/html,<title>t</title><input id=a><button id=b onclick=\"document.getElementById('out').textContent='clicked:'+document.getElementById('a').value\">go</button><p id=out></p>";

async fn drives_a_page_and_dies_with_its_group(engine: Engine) {
    let browser = Browser::launch(engine).await.expect("launch browser");
    let version = browser.version().await.expect("version");
    let expected = match engine {
        Engine::Chromium => "Chrome",
        Engine::Firefox => "firefox",
    };
    assert!(version.contains(expected), "unexpected product {version}");

    let tab = browser.new_tab().await.expect("tab");
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
    // Keyboard: Tab moves the focus from the input to the button, Enter presses it.
    tab.fill("#a", "keys").await.expect("fill");
    tab.press("Tab").await.expect("tab");
    assert_eq!(
        tab.eval::<String>("document.activeElement.id")
            .await
            .expect("focus"),
        "b"
    );
    tab.press("Enter").await.expect("enter");
    tab.wait_for_text("clicked:keys")
        .await
        .expect("enter pressed");
    let err = tab
        .wait_until_for("false", "never", std::time::Duration::from_millis(200))
        .await
        .expect_err("must time out");
    assert!(err.to_string().contains("never"), "{err}");
    let thrown = tab.eval::<bool>("nope.nope").await;
    assert!(thrown.is_err(), "a throwing script is an error");

    // A second tab has its own storage.
    let url = tab.url().await;
    assert!(url.starts_with("data:text/html,"), "{url}");
    let other = browser.new_tab().await.expect("second tab");
    other.goto("data:text/html,<p>x</p>").await.expect("goto");
    assert!(other.exists("p").await.expect("p"));

    let shot = tab
        .screenshot("testkit-browser-selftest")
        .await
        .expect("screenshot");
    let bytes = std::fs::read(&shot).expect("read screenshot");
    assert_eq!(&bytes[1..4], b"PNG", "screenshot is a PNG");

    let pgid = browser.pid();
    let pids = group_pids(pgid);
    assert!(
        !pids.is_empty(),
        "browser processes are visible while running"
    );
    let profile = browser.profile_dir().to_path_buf();
    drop(browser);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = group_pids(pgid);
    assert!(left.is_empty(), "processes left after drop: {left:?}");
    assert!(
        !profile.exists(),
        "profile dir removed: {}",
        profile.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_drives_a_page_and_dies_with_its_group() {
    drives_a_page_and_dies_with_its_group(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_drives_a_page_and_dies_with_its_group() {
    drives_a_page_and_dies_with_its_group(Engine::Firefox).await;
}

/// Live (non-zombie) processes of a process group.
fn group_pids(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}
