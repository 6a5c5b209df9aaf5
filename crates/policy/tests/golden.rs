//! Golden files: the default policy rendered for ATS 9 and ATS 10, byte for byte.
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p apm-policy --test golden`
//! and review the diff like code.

use std::path::PathBuf;

use apm_policy::{AtsMajor, render, template};

fn check(ats: AtsMajor, dir: &str) {
    let bundle = render(&template::default_policy().validate().unwrap(), ats);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir);
    let mut expected_files = bundle.files.clone();
    expected_files.insert("hash".to_string(), format!("{}\n", bundle.hash));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&root).unwrap();
        for (name, content) in &expected_files {
            std::fs::write(root.join(name), content).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", root.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = expected_files.keys().cloned().collect();
    names.sort();
    assert_eq!(
        on_disk,
        names,
        "golden file set differs in {}",
        root.display()
    );
    for (name, content) in &expected_files {
        let golden = std::fs::read_to_string(root.join(name)).unwrap();
        if &golden != content {
            let diff = similar::TextDiff::from_lines(&golden, content);
            panic!(
                "{dir}/{name} differs from the golden file:\n{}",
                diff.unified_diff().header("golden", "rendered")
            );
        }
    }
}

#[test]
fn default_policy_for_ats9() {
    check(AtsMajor::V9, "default-ats9");
}

#[test]
fn default_policy_for_ats10() {
    check(AtsMajor::V10, "default-ats10");
}
