//! Did a reload take? `traffic_ctl config reload` returns at once; ATS 9.2 re-reads changed
//! files a few seconds later and reports only in its logs. This module reads the log lines
//! written since the reload was requested (pure; the caller tails the files).
//!
//! What ATS 9.2.9 writes (seen on this machine, see docs/agent.md):
//!
//! ```text
//! diags.log:   [ET_TASK 1] NOTE: parent.config loading ...
//!              [ET_TASK 1] ERROR: [ParentSelection] discarding /…/parent.config entry at line 3 : Malformed entry
//!              [ET_TASK 1] ERROR: [ParentSelection] No parent port specified at line 2
//!              [ET_TASK 1] NOTE: parent.config finished loading
//!              [ET_TASK 0] WARNING: IPAllow[/…/ip_allow.yaml] Line 2 - 'nonsense' is not a valid range.
//!              [ET_TASK 0] ERROR: ip_allow.yaml failed to load
//! manager.log: traffic_manager NOTE: User has changed config file records.config
//!              traffic_manager WARNING: Could not parse line at '/…/records.config:8' -- skipping line: '…'
//!              traffic_manager WARNING: Unrecognized configuration value 'proxy.config.nonexistent.thing'
//! ```
//!
//! A record given with the wrong type (`STRING` for an `INT` record) is ignored without any
//! line at all; the agent cannot see that one.
//!
//! `records.config` produces no diags.log line; its confirmation is the manager.log line. The
//! ATS 9.2 dest_ip hang shows as "loading ..." with no "finished loading", ever.

use std::collections::BTreeMap;

/// What the logs say about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProgress {
    /// No line about it yet.
    NotSeen,
    /// "loading ..." without "finished loading" (yet).
    Loading,
    /// Done: loaded, failed to load, or (records.config) taken by traffic_manager.
    Finished,
}

/// The reading of the logs since a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Per changed file.
    pub files: BTreeMap<String, FileProgress>,
    /// Log lines that mean the new config was (partly) refused.
    pub errors: Vec<String>,
}

/// The verdict once the caller stops waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every changed file loaded, no error line.
    Confirmed,
    /// ATS refused (part of) the config; the lines say why.
    Rejected(Vec<String>),
    /// A file started loading and never finished: the ATS 9.2 loader hang. Only a restart
    /// (with good files) recovers.
    Hung(Vec<String>),
    /// Some file never showed up in the logs within the timeout.
    NotConfirmed(Vec<String>),
}

impl Assessment {
    /// True when nothing more needs to be waited for (all files finished, or an error seen).
    pub fn settled(&self) -> bool {
        !self.errors.is_empty() || self.files.values().all(|p| *p == FileProgress::Finished)
    }

    /// The verdict now; `timed_out` says the caller will not wait longer.
    pub fn verdict(&self, timed_out: bool) -> Option<Verdict> {
        let all_finished = self.files.values().all(|p| *p == FileProgress::Finished);
        let loading: Vec<String> = self
            .files
            .iter()
            .filter(|(_, p)| **p == FileProgress::Loading)
            .map(|(f, _)| f.clone())
            .collect();
        if !self.errors.is_empty() && (all_finished || timed_out) {
            return Some(Verdict::Rejected(self.errors.clone()));
        }
        if all_finished {
            return Some(Verdict::Confirmed);
        }
        if !timed_out {
            return None;
        }
        if !loading.is_empty() {
            return Some(Verdict::Hung(loading));
        }
        Some(Verdict::NotConfirmed(
            self.files
                .iter()
                .filter(|(_, p)| **p == FileProgress::NotSeen)
                .map(|(f, _)| f.clone())
                .collect(),
        ))
    }
}

/// Whether `line` names `file` as a whole word: `parent.config loading` or
/// `/etc/trafficserver/parent.config finished loading`.
fn mentions(line: &str, file: &str, suffix: &str) -> bool {
    let needle = format!("{file} {suffix}");
    line.match_indices(&needle)
        .any(|(at, _)| at == 0 || matches!(line.as_bytes()[at - 1], b' ' | b'/' | b'[' | b'\''))
}

/// Reads diags.log and manager.log lines written since the reload, for the changed files.
pub fn assess(changed: &[String], diags: &[String], manager: &[String]) -> Assessment {
    let mut files: BTreeMap<String, FileProgress> = changed
        .iter()
        .map(|f| (f.clone(), FileProgress::NotSeen))
        .collect();
    let mut errors = Vec::new();
    for line in diags {
        for (file, progress) in files.iter_mut() {
            if mentions(line, file, "finished loading") || mentions(line, file, "failed to load") {
                *progress = FileProgress::Finished;
            } else if mentions(line, file, "loading ...") && *progress == FileProgress::NotSeen {
                *progress = FileProgress::Loading;
            }
        }
        if is_config_error(line, changed) {
            errors.push(line.trim().to_owned());
        }
    }
    for line in manager {
        if let Some(progress) = files.get_mut("records.config")
            && line.contains("User has changed config file records.config")
        {
            *progress = FileProgress::Finished;
        }
        let refused = (line.contains("Could not parse line at") && line.contains("records.config"))
            || line.contains("Unrecognized configuration value");
        if refused {
            errors.push(line.trim().to_owned());
        }
    }
    Assessment { files, errors }
}

/// An ERROR (or, from the parent/ip_allow loaders, WARNING) line about the config files.
fn is_config_error(line: &str, changed: &[String]) -> bool {
    let error = line.contains(" ERROR: ");
    let warning = line.contains(" WARNING: ");
    if !error && !warning {
        return false;
    }
    let loader = line.contains("[ParentSelection]")
        || line.contains("IPAllow")
        || line.contains("failed to load")
        || line.contains("discarding");
    let names_file = changed.iter().any(|f| line.contains(f.as_str()));
    if error { loader || names_file } else { loader }
}

/// Lines of `traffic_ctl alarm list` that mean a config was refused.
pub fn config_alarms(alarm_list: &str) -> Vec<String> {
    alarm_list
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("MGMT_ALARM_PROXY_CONFIG_ERROR"))
        .map(str::to_owned)
        .collect()
}

/// Whether diags.log lines since a (re)start show traffic_server fully up.
pub fn started(diags: &[String]) -> bool {
    diags.iter().any(|l| {
        l.contains("Traffic Server is fully initialized") || l.contains("traffic server running")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn changed(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn clean_reload_is_confirmed() {
        let a = assess(
            &changed(&["parent.config", "ip_allow.yaml", "records.config"]),
            &lines(
                "[Nov 21 22:12:19.552] [ET_TASK 1] NOTE: parent.config loading ...\n\
                 [Nov 21 22:12:19.553] [ET_TASK 1] NOTE: parent.config finished loading\n\
                 [Nov 21 22:12:19.553] [ET_TASK 0] NOTE: ip_allow.yaml loading ...\n\
                 [Nov 21 22:12:19.553] [ET_TASK 0] NOTE: /tmp/x/etc/ip_allow.yaml finished loading\n",
            ),
            &lines(
                "[Nov 21 22:12:16.268] traffic_manager NOTE: User has changed config file records.config\n",
            ),
        );
        assert!(a.settled());
        assert_eq!(a.verdict(false), Some(Verdict::Confirmed));
    }

    #[test]
    fn dropped_parent_lines_are_a_rejection() {
        let a = assess(
            &changed(&["parent.config"]),
            &lines(
                "[Nov 21 22:12:13.542] [ET_TASK 1] NOTE: parent.config loading ...\n\
                 [Nov 21 22:12:13.542] [ET_TASK 1] ERROR: [ParentSelection] discarding /tmp/atsexp/etc/parent.config entry at line 3 : Malformed entry\n\
                 [Nov 21 22:12:13.542] [ET_TASK 1] ERROR: [ParentSelection] No parent port specified at line 2\n\
                 [Nov 21 22:12:13.542] [ET_TASK 1] NOTE: parent.config finished loading\n",
            ),
            &[],
        );
        match a.verdict(false) {
            Some(Verdict::Rejected(errors)) => {
                assert_eq!(errors.len(), 2);
                assert!(errors[0].contains("discarding"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ip_allow_failed_to_load_is_a_rejection() {
        let a = assess(
            &changed(&["ip_allow.yaml"]),
            &lines(
                "[x] [ET_TASK 0] NOTE: ip_allow.yaml loading ...\n\
                 [x] [ET_TASK 0] WARNING: IPAllow[/t/ip_allow.yaml] Line 2 - 'nonsense' is not a valid range.\n\
                 [x] [ET_TASK 0] ERROR: ip_allow.yaml failed to load\n",
            ),
            &[],
        );
        assert!(a.settled());
        assert!(matches!(a.verdict(false), Some(Verdict::Rejected(e)) if e.len() == 2));
    }

    #[test]
    fn loading_without_finished_is_the_hang() {
        let a = assess(
            &changed(&["parent.config"]),
            &lines("[x] [ET_TASK 1] NOTE: parent.config loading ...\n"),
            &[],
        );
        assert!(!a.settled());
        assert_eq!(a.verdict(false), None);
        assert_eq!(
            a.verdict(true),
            Some(Verdict::Hung(changed(&["parent.config"])))
        );
    }

    #[test]
    fn nothing_seen_is_not_confirmed() {
        let a = assess(&changed(&["parent.config", "records.config"]), &[], &[]);
        assert_eq!(
            a.verdict(true),
            Some(Verdict::NotConfirmed(changed(&[
                "parent.config",
                "records.config"
            ])))
        );
    }

    #[test]
    fn records_parse_warning_is_a_rejection() {
        let a = assess(
            &changed(&["records.config"]),
            &[],
            &lines(
                "[x] traffic_manager NOTE: User has changed config file records.config\n\
                 [x] traffic_manager WARNING: Could not parse line at '/t/etc/records.config:8' -- skipping line: 'garbage'\n",
            ),
        );
        assert!(matches!(a.verdict(false), Some(Verdict::Rejected(_))));
    }

    #[test]
    fn unknown_records_are_a_rejection() {
        let a = assess(
            &changed(&["records.config"]),
            &[],
            &lines(
                "[x] traffic_manager NOTE: User has changed config file records.config\n\
                 [x] traffic_manager WARNING: Unrecognized configuration value 'proxy.config.nonexistent.thing'\n",
            ),
        );
        assert!(
            matches!(a.verdict(false), Some(Verdict::Rejected(e)) if e[0].contains("nonexistent"))
        );
    }

    #[test]
    fn unrelated_lines_do_not_count() {
        let a = assess(
            &changed(&["parent.config"]),
            &lines(
                "[x] NOTE: /t/etc/logging.yaml loading ...\n\
                 [x] ERROR: some unrelated origin error\n\
                 [x] NOTE: myparent.config finished loading\n",
            ),
            &[],
        );
        assert_eq!(a.files["parent.config"], FileProgress::NotSeen);
        assert!(a.errors.is_empty());
    }

    #[test]
    fn alarms_and_start() {
        assert_eq!(
            config_alarms("MGMT_ALARM_PROXY_CONFIG_ERROR\nMGMT_ALARM_PROXY_SYSTEM_ERROR\n"),
            vec!["MGMT_ALARM_PROXY_CONFIG_ERROR".to_owned()]
        );
        assert!(config_alarms("").is_empty());
        assert!(started(&lines(
            "[x] traffic_server NOTE: Traffic Server is fully initialized."
        )));
    }
}
