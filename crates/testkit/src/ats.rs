//! A real Apache Traffic Server 9.2 (Debian's `trafficserver` package) in a temp runroot.
//!
//! # Layout
//!
//! [`AtsInstance::start`] creates a temp dir `apm-ats-XXXXXX/` holding `runroot.yaml` and the
//! directories it points at: `etc/` (sysconfdir: a copy of `/etc/trafficserver/.`, then the
//! caller's files on top), `log/` (`diags.log`, `manager.log`, `traffic.out`), `run/` (the
//! `mgmtapi.sock` that `traffic_ctl` talks to), `cache/`, `var/`. `traffic_manager
//! --run-root=… --nosyslog` runs in its own session (`setsid`), so the instance is one process
//! group that is stopped by PID: `SIGKILL` to the group ([`AtsInstance::stop`]), or `SIGTERM`
//! first ([`AtsInstance::stop_gracefully`]).
//! [`Drop`] stops it too, also while a test panics, and then prints the log tails to stderr.
//! A small watchdog process (`sh`, also in its own session) kills the group if the test
//! process dies without running `Drop` (for example when a test runner kills it on timeout).
//!
//! # Config files: who owns what
//!
//! The caller supplies the files a policy renders to (`parent.config`, `records.config`,
//! `ip_allow.yaml`, …: typically `apm_policy::render(..).files`) and they are written verbatim
//! into `etc/`. The harness owns `storage.config` (`DIR/cache 64M`), `hosts` (from
//! [`Hosts`]) and `resolv.conf`, and **appends** to `records.config` a block with the records only a test host
//! needs:
//!
//! - `proxy.config.admin.user_id STRING #-1`: run as the invoking user instead of switching
//!   to the one named in the file (Debian's says `trafficserver`, which cannot write the
//!   temp dir);
//! - `proxy.config.dns.nameservers`: a [`DnsServer`] on loopback answering from the
//!   [`Hosts`] table, so test names resolve from the first request and no query leaves
//!   loopback (see [`crate::dns`] for why the hosts file alone is not enough), with
//!   `proxy.config.dns.resolv_conf` pointing at an `etc/resolv.conf` without nameservers,
//!   because ATS otherwise adds the system's nameservers to the list and round-robins to them;
//! - `proxy.config.hostdb.host_file.path`: the same table as a hosts file;
//! - `proxy.config.http.server_ports` only when the caller's `records.config` does not set it;
//! - [`FAST_SYNC_RECORDS`] (unless [`AtsConfig::stock_timing`]), each only when the caller's
//!   file does not set it: ATS's internal sync intervals shortened so that a start is usable
//!   (`traffic_ctl config status`, `metric get`) after ~4 s instead of ~10 s and a reload shows
//!   in diags.log after well under a second instead of 3-10 s. Routing is unaffected;
//!   code that must cope with production timing (the agent's reload confirmation) should be
//!   tested with `stock_timing()` too;
//! - any extra lines given with [`AtsConfig::record`].
//!
//! Appending (rather than asking each test policy to carry these in its `ats_records`) keeps
//! the files under test exactly what the renderer produced for a real host, and keeps host
//! plumbing out of policies. Appending never silently changes a record the caller set: a
//! caller's `records.config` that sets a harness record to another value, or whose
//! `server_ports` is not the instance's port, is refused ([`AtsError::Config`]); one that
//! already carries the same value is accepted without a duplicate. The listen port comes from
//! the caller ([`AtsConfig::new`]; pick one with [`crate::net::free_port`] and render the
//! policy with it), because the policy, not the harness, says where ATS listens. With no
//! caller `records.config`, Debian's is used with its `admin.user_id` and `server_ports`
//! lines commented out.
//!
//! Code under test that rewrites `records.config` itself (the agent deploying a bundle) drops
//! the harness block; such tests put [`AtsInstance::harness_records`] into what they deploy
//! (for example the test policy's `ats_records`).
//!
//! # Concurrency
//!
//! Several instances run side by side (tests run in parallel under nextest): ATS 9.2 opens no
//! fixed TCP port besides `server_ports` (management goes over unix sockets in the runroot;
//! `proxy.config.process_manager.mgmt_port` does not exist in 9.2), so a free listen port per
//! instance is all that is needed. Verified by `tests/harness.rs::two_instances_run_side_by_side`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::dns::DnsServer;
use crate::net::Hosts;

/// Where the Debian package keeps its default configuration.
const DEBIAN_SYSCONFDIR: &str = "/etc/trafficserver";
/// Records the harness adds (unless [`AtsConfig::stock_timing`]) to make ATS's internal
/// syncs faster: how often traffic_server checks for config changes and syncs records to
/// traffic_manager, and how long traffic_manager waits on its process socket.
/// Each entry is (name, type, value).
pub const FAST_SYNC_RECORDS: [(&str, &str, &str); 4] = [
    ("proxy.config.config_update_interval_ms", "INT", "500"),
    ("proxy.config.raw_stat_sync_interval_ms", "INT", "500"),
    ("proxy.config.remote_sync_interval_ms", "INT", "500"),
    ("proxy.config.process_manager.timeout", "INT", "1"),
];

/// Set this environment variable to keep the temp dir of every instance (its path is printed).
pub const KEEP_ENV: &str = "APM_TESTKIT_KEEP";

/// Errors of the ATS harness. Every variant that concerns a running ATS carries the tail of its
/// logs, so a failed test shows why without digging.
#[derive(Debug, thiserror::Error)]
pub enum AtsError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The files given to the harness conflict with what it must set.
    #[error("ATS harness config: {0}")]
    Config(String),
    /// ATS did not become ready in time, or exited while starting.
    #[error("ATS not ready after {waited:?}: {reason}\n{logs}")]
    NotReady {
        /// How long the harness waited.
        waited: Duration,
        /// What was still missing.
        reason: String,
        /// Tails of diags.log, manager.log and traffic.out.
        logs: String,
    },
    /// `traffic_ctl` failed or timed out.
    #[error("traffic_ctl {args} failed ({status}): {stderr}{stdout}")]
    TrafficCtl {
        /// The arguments.
        args: String,
        /// Exit status, or "timeout".
        status: String,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },
    /// A reload was not confirmed in diags.log in time.
    #[error(
        "reload of {files:?} not confirmed after {waited:?}; diags.log since the reload:\n{new_lines}\n{logs}"
    )]
    ReloadNotConfirmed {
        /// Files whose "finished loading" line was expected.
        files: Vec<String>,
        /// How long the harness waited.
        waited: Duration,
        /// diags.log lines written since the reload was requested.
        new_lines: String,
        /// Tails of the logs.
        logs: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AtsError {
    let what = what.into();
    move |source| AtsError::Io { what, source }
}

/// What to start: the listen port, the config files, the hosts table, extra harness records.
#[derive(Debug, Clone)]
pub struct AtsConfig {
    proxy_port: u16,
    files: BTreeMap<String, String>,
    hosts: Hosts,
    records: Vec<String>,
    startup_timeout: Duration,
    fast_sync: bool,
}

impl AtsConfig {
    /// A config for an ATS listening on `proxy_port` (the port the caller's `records.config`
    /// sets in `proxy.config.http.server_ports`, or that the harness sets when it does not).
    pub fn new(proxy_port: u16) -> Self {
        Self {
            proxy_port,
            files: BTreeMap::new(),
            hosts: Hosts::new(),
            records: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            fast_sync: true,
        }
    }

    /// Adds a file to write into the sysconfdir (replacing the Debian default of that name).
    pub fn file(mut self, name: impl Into<String>, contents: impl Into<String>) -> Self {
        self.files.insert(name.into(), contents.into());
        self
    }

    /// Adds several files, e.g. the `files` of a rendered `apm_policy::Bundle`.
    pub fn files<K, V>(mut self, files: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in files {
            self.files.insert(k.into(), v.into());
        }
        self
    }

    /// The names ATS resolves through its private hosts file.
    pub fn hosts(mut self, hosts: Hosts) -> Self {
        self.hosts = hosts;
        self
    }

    /// Appends a raw `records.config` line (e.g. `CONFIG proxy.config.diags.debug.enabled INT 1`)
    /// to the harness block. For test-host plumbing only; routing records belong in the policy.
    pub fn record(mut self, line: impl Into<String>) -> Self {
        self.records.push(line.into());
        self
    }

    /// How long [`AtsInstance::start`] and [`AtsInstance::restart`] wait for readiness
    /// (default 30 s; a healthy start takes about 3 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Keeps ATS's stock sync intervals (no [`FAST_SYNC_RECORDS`]): slower starts and
    /// reloads, as on a production host.
    pub fn stock_timing(mut self) -> Self {
        self.fast_sync = false;
        self
    }

    /// The listen port.
    pub fn proxy_port(&self) -> u16 {
        self.proxy_port
    }
}

/// The output of a successful `traffic_ctl` run.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr (9.2 prints "NOTE: using the environment variable TS_RUNROOT" there).
    pub stderr: String,
}

/// A running (or stopped) ATS in its own temp runroot. Dropping it stops ATS.
pub struct AtsInstance {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    config: AtsConfig,
    manager: Option<Child>,
    watchdog: Option<Child>,
    dns: DnsServer,
    /// Length of diags.log when the current process was started.
    diags_start: u64,
}

impl std::fmt::Debug for AtsInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtsInstance")
            .field("root", &self.root)
            .field("proxy_port", &self.config.proxy_port)
            .field("pid", &self.pid())
            .finish()
    }
}

impl AtsInstance {
    /// Lays out the runroot, starts ATS and waits until it serves (the proxy port answers HTTP
    /// and `traffic_ctl` answers, see [`AtsInstance::wait_ready`]), for at most the config's
    /// startup timeout. On failure ATS is stopped and the error carries the log tails.
    pub fn start(config: AtsConfig) -> Result<Self, AtsError> {
        let timeout = config.startup_timeout;
        let mut ats = Self::spawn(config)?;
        ats.wait_ready(timeout)?;
        Ok(ats)
    }

    /// Lays out the runroot and starts `traffic_manager` without waiting for readiness
    /// (for tests about start-up itself; call [`AtsInstance::wait_ready`] next, or not).
    pub fn spawn(config: AtsConfig) -> Result<Self, AtsError> {
        let dir = tempfile::Builder::new()
            .prefix("apm-ats-")
            .tempdir()
            .map_err(io_err("create the ATS temp dir"))?;
        let root = dir.path().to_path_buf();
        let dns =
            DnsServer::start(config.hosts.clone()).map_err(io_err("start the test DNS server"))?;
        let mut ats = Self {
            dir: Some(dir),
            root,
            config,
            manager: None,
            watchdog: None,
            dns,
            diags_start: 0,
        };
        ats.lay_out()?;
        ats.launch()?;
        Ok(ats)
    }

    fn lay_out(&self) -> Result<(), AtsError> {
        for sub in ["etc", "log", "run", "cache", "var"] {
            let p = self.root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(format!("create {}", p.display())))?;
        }
        copy_dir(Path::new(DEBIAN_SYSCONFDIR), &self.config_dir())?;
        let root = self.root.display();
        let runroot = format!(
            "prefix: {root}\nexec_prefix: /usr\nbindir: /usr/bin\nsbindir: /usr/bin\n\
             sysconfdir: {root}/etc\ndatadir: {root}/var\nincludedir: /usr/include\n\
             libdir: /usr/lib/trafficserver\nlibexecdir: /usr/lib/trafficserver/modules\n\
             localstatedir: {root}/var\nruntimedir: {root}/run\nlogdir: {root}/log\n\
             cachedir: {root}/cache\n"
        );
        write_file(&self.runroot_file(), &runroot)?;
        for (name, contents) in &self.config.files {
            if name.contains('/') || name.starts_with('.') {
                return Err(AtsError::Config(format!(
                    "config file name {name:?} must be a plain file name"
                )));
            }
            if name != "records.config" {
                self.write_config_file(name, contents)?;
            }
        }
        write_file(
            &self.config_dir().join("storage.config"),
            &format!("{root}/cache 64M\n"),
        )?;
        write_file(&self.hosts_file(), &self.config.hosts.to_hosts_file())?;
        write_file(
            &self.resolv_conf(),
            "# apm-testkit: no system nameservers; see proxy.config.dns.nameservers\n",
        )?;
        let harness = self.harness_records();
        let base = match self.config.files.get("records.config") {
            Some(text) => text.clone(),
            None => {
                let debian = fs::read_to_string(self.config_dir().join("records.config"))
                    .map_err(io_err("read the Debian records.config"))?;
                let mut names: Vec<&str> = harness.iter().map(|r| r.name.as_str()).collect();
                names.push("proxy.config.http.server_ports");
                neutralize_debian_records(&debian, &names)
            }
        };
        let records = compose_records(
            &base,
            self.config.proxy_port,
            &harness,
            &self.config.records,
        )?;
        self.write_config_file("records.config", &records)
    }

    fn launch(&mut self) -> Result<(), AtsError> {
        self.diags_start = file_len(&self.diags_log_path());
        let out_path = self.log_dir().join("traffic.out");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(io_err(format!("open {}", out_path.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("dup {}", out_path.display())))?;
        // `setsid` (util-linux) execs in place when its caller is not a group leader, which a
        // freshly spawned child never is: the PID we get is traffic_manager's, and it leads a
        // new session and process group. (std has no safe setsid for a child.)
        let manager = Command::new("setsid")
            .arg("traffic_manager")
            .arg(format!("--run-root={}", self.runroot_file().display()))
            .arg("--nosyslog")
            .current_dir(&self.root)
            .env_remove("TS_ROOT")
            .env_remove("TS_RUNROOT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(
                "start traffic_manager (is Debian's trafficserver installed? scripts/install-test-deps.sh)",
            ))?;
        let pgid = manager.id();
        self.manager = Some(manager);
        // Kills the group if this test process dies without running Drop.
        let watchdog = Command::new("setsid")
            .args([
                "sh",
                "-c",
                // No `--` before the group: dash's `kill` (Debian's /bin/sh) rejects it, and
                // the group would survive.
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
                 kill -TERM -\"$2\" 2>/dev/null; sleep 2; kill -KILL -\"$2\" 2>/dev/null",
                "apm-ats-watchdog",
                &std::process::id().to_string(),
                &pgid.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("start the ATS watchdog"))?;
        self.watchdog = Some(watchdog);
        Ok(())
    }

    /// Waits until ATS serves and can be managed: the proxy port answers an HTTP probe,
    /// `traffic_ctl server status` reports `Proxy -- on`, and `traffic_ctl config status`
    /// succeeds (it fails with "[11] Invalid parameters" for a few seconds after traffic_server
    /// starts serving, as do `metric get proxy.process.*`). Fails early when `traffic_manager`
    /// exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), AtsError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut missing = "the proxy port to answer HTTP".to_owned();
        loop {
            if let Some(child) = self.manager.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // traffic_server may outlive its manager: clear the whole group.
                    let _ = self.stop();
                    return Err(AtsError::NotReady {
                        waited: started.elapsed(),
                        reason: format!("traffic_manager exited while starting: {status}"),
                        logs: self.log_tails(40),
                    });
                }
            } else {
                return Err(AtsError::NotReady {
                    waited: started.elapsed(),
                    reason: "ATS is not running".to_owned(),
                    logs: self.log_tails(40),
                });
            }
            if http_probe(self.proxy_addr()) {
                missing = "traffic_ctl server status to say `Proxy -- on`".to_owned();
                let on = self
                    .traffic_ctl_with_timeout(&["server", "status"], Duration::from_secs(5))
                    .map(|o| o.stdout.contains("Proxy -- on"))
                    .unwrap_or(false);
                // `config status` and `metric get proxy.process.*` fail with "[11] Invalid
                // parameters" until traffic_server has synced its records to traffic_manager,
                // a few seconds after it serves; callers expect them to work once ready.
                if on {
                    missing = "traffic_ctl config status to answer".to_owned();
                    if self
                        .traffic_ctl_with_timeout(&["config", "status"], Duration::from_secs(5))
                        .is_ok()
                    {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(AtsError::NotReady {
                    waited: started.elapsed(),
                    reason: format!("still waiting for {missing}"),
                    logs: self.log_tails(40),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The temp dir everything lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `runroot.yaml` to pass as `--run-root` / `TS_RUNROOT`.
    pub fn runroot_file(&self) -> PathBuf {
        self.root.join("runroot.yaml")
    }

    /// The sysconfdir (where `parent.config`, `records.config`, … live).
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// The log dir (`diags.log`, `manager.log`, `traffic.out`).
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// The resolv.conf ATS reads (it lists no nameservers).
    pub fn resolv_conf(&self) -> PathBuf {
        self.config_dir().join("resolv.conf")
    }

    /// The private hosts file ATS resolves names from.
    pub fn hosts_file(&self) -> PathBuf {
        self.config_dir().join("hosts")
    }

    /// The listen port.
    pub fn proxy_port(&self) -> u16 {
        self.config.proxy_port
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.config.proxy_port))
    }

    /// The records the harness adds to records.config for this instance (admin user, hosts
    /// file, DNS server, resolv.conf, and the fast-sync intervals unless `stock_timing`).
    ///
    /// Code under test that rewrites records.config itself (the agent applying a bundle)
    /// drops the harness block; such a test must carry these records into what it deploys,
    /// e.g. in the test policy's `ats_records`, or names stop resolving after a restart.
    pub fn harness_records(&self) -> Vec<HarnessRecord> {
        harness_records(
            &self.hosts_file(),
            self.dns.addr(),
            &self.resolv_conf(),
            self.config.fast_sync,
        )
    }

    /// The loopback DNS server ATS resolves names with.
    pub fn nameserver(&self) -> SocketAddr {
        self.dns.addr()
    }

    /// PID (= process group id) of `traffic_manager`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.manager.as_ref().map(Child::id)
    }

    /// Atomically replaces `name` in the sysconfdir (write to a temp file, then rename), as a
    /// deployment would. ATS notices only after [`AtsInstance::reload`] or a restart.
    pub fn write_config_file(&self, name: &str, contents: &str) -> Result<(), AtsError> {
        let path = self.config_dir().join(name);
        let tmp = self.config_dir().join(format!(".{name}.tmp"));
        write_file(&tmp, contents)?;
        fs::rename(&tmp, &path).map_err(io_err(format!("rename into {}", path.display())))
    }

    /// Runs `traffic_ctl ARGS` against this instance (`TS_RUNROOT` set), with a 20 s timeout.
    /// A non-zero exit is an error carrying stdout and stderr.
    pub fn traffic_ctl(&self, args: &[&str]) -> Result<CtlOutput, AtsError> {
        self.traffic_ctl_with_timeout(args, Duration::from_secs(20))
    }

    fn traffic_ctl_with_timeout(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CtlOutput, AtsError> {
        let joined = args.join(" ");
        let child = Command::new("traffic_ctl")
            .args(args)
            .env("TS_RUNROOT", self.runroot_file())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(format!("run traffic_ctl {joined}")))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(timeout) {
            Ok(result) => result.map_err(io_err(format!("run traffic_ctl {joined}")))?,
            Err(_) => {
                let _ = kill(pid_of(pid), Signal::SIGKILL);
                return Err(AtsError::TrafficCtl {
                    args: joined,
                    status: format!("timeout after {timeout:?}"),
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            Ok(CtlOutput { stdout, stderr })
        } else {
            Err(AtsError::TrafficCtl {
                args: joined,
                status: output.status.to_string(),
                stdout,
                stderr,
            })
        }
    }

    /// Makes traffic_manager pass queued record changes (a `config set`, or the "file
    /// changed" record behind a reload) on to traffic_server now. ATS 9.2's traffic_manager
    /// forwards them only when its traffic_server socket has been quiet for a second or
    /// another management event wakes it; traffic_server's stats pushes keep that socket
    /// busy, so on a loaded host a change can wait for minutes. A plugin message with a tag
    /// no plugin listens to is such an event and changes nothing else. Repeat it until the
    /// change shows: traffic_manager queues a change up to 5 s after it was made.
    pub fn wake_manager(&self) -> Result<(), AtsError> {
        self.traffic_ctl(&["plugin", "msg", "apm-testkit.wake", "wake"])
            .map(|_| ())
    }

    /// `traffic_ctl config reload`. Asynchronous in ATS: it returns at once and the files are
    /// re-read seconds later; use [`AtsInstance::reload_and_wait`] to know when.
    pub fn reload(&self) -> Result<(), AtsError> {
        self.traffic_ctl(&["config", "reload"]).map(|_| ())
    }

    /// Reloads and waits until diags.log says `<file> finished loading` for each of `files`
    /// (only files that changed are re-read). Returns the diags.log lines written since the
    /// reload was requested, so the caller can look for `ERROR` lines (ATS drops bad
    /// `parent.config` lines and still reports success).
    pub fn reload_and_wait(
        &self,
        files: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>, AtsError> {
        // ATS 9.2 sometimes never acts on a reload (seen right after start on a loaded host:
        // traffic_manager logs the change, traffic_server never re-reads). As the agent does,
        // give the files a new mtime and ask again when nothing has started loading.
        const NUDGE_AFTER: Duration = Duration::from_secs(8);
        const WAKE_EVERY: Duration = Duration::from_secs(1);
        let offset = file_len(&self.diags_log_path());
        let started = Instant::now();
        let mut last_ask = started;
        let mut last_wake = started;
        self.reload()?;
        loop {
            let lines = self.diags_lines_since(offset);
            let confirmed = files.iter().all(|f| {
                lines
                    .iter()
                    .any(|l| l.contains(&format!("{f} finished loading")))
            });
            if confirmed {
                return Ok(lines);
            }
            if last_wake.elapsed() >= WAKE_EVERY {
                let _ = self.wake_manager();
                last_wake = Instant::now();
            }
            let loading = lines.iter().any(|l| l.contains(" loading ..."));
            if !loading && last_ask.elapsed() >= NUDGE_AFTER {
                let now = std::time::SystemTime::now();
                for f in files {
                    if let Ok(file) = fs::File::options()
                        .append(true)
                        .open(self.config_dir().join(f))
                    {
                        let _ = file.set_modified(now);
                    }
                }
                self.reload()?;
                last_ask = Instant::now();
            }
            if started.elapsed() >= timeout {
                return Err(AtsError::ReloadNotConfirmed {
                    files: files.iter().map(|f| (*f).to_owned()).collect(),
                    waited: started.elapsed(),
                    new_lines: lines.join("\n"),
                    logs: self.log_tails(20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `traffic_ctl metric get NAME`, parsed to the value (the text after the name).
    pub fn metric(&self, name: &str) -> Result<String, AtsError> {
        let out = self.traffic_ctl(&["metric", "get", name])?;
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .ok_or_else(|| AtsError::TrafficCtl {
                args: format!("metric get {name}"),
                status: "unexpected output".to_owned(),
                stdout: out.stdout.clone(),
                stderr: out.stderr.clone(),
            })
    }

    /// Path of diags.log.
    pub fn diags_log_path(&self) -> PathBuf {
        self.log_dir().join("diags.log")
    }

    /// The whole diags.log (empty when it does not exist yet).
    pub fn diags_log(&self) -> String {
        read_lossy(&self.diags_log_path())
    }

    /// The current length of diags.log in bytes, to pass to [`AtsInstance::diags_lines_since`].
    pub fn diags_offset(&self) -> u64 {
        file_len(&self.diags_log_path())
    }

    /// diags.log lines written after byte `offset`.
    pub fn diags_lines_since(&self, offset: u64) -> Vec<String> {
        let text = read_lossy(&self.diags_log_path());
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        text.get(start..)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// diags.log lines written since the current ATS process was started.
    pub fn diags_since_start(&self) -> Vec<String> {
        self.diags_lines_since(self.diags_start)
    }

    /// The whole manager.log.
    pub fn manager_log(&self) -> String {
        read_lossy(&self.log_dir().join("manager.log"))
    }

    /// The whole traffic.out (stdout/stderr of traffic_manager and traffic_server, where debug
    /// output goes; the harness creates it since 9.2's traffic_manager does not when it is not
    /// daemonized).
    pub fn traffic_out(&self) -> String {
        read_lossy(&self.log_dir().join("traffic.out"))
    }

    /// The last `n` lines of diags.log, manager.log and traffic.out, labelled, for messages.
    pub fn log_tails(&self, n: usize) -> String {
        let mut s = String::new();
        for name in ["diags.log", "manager.log", "traffic.out"] {
            let text = read_lossy(&self.log_dir().join(name));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(n)..];
            let _ = writeln!(
                s,
                "--- {} (last {} lines) ---",
                self.log_dir().join(name).display(),
                tail.len()
            );
            for l in tail {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }

    /// Whether the ATS process group is running.
    pub fn is_running(&mut self) -> bool {
        match self.manager.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops ATS (keeping the runroot and its logs), then starts it again with the files now in
    /// the sysconfdir and waits for readiness.
    pub fn restart(&mut self) -> Result<(), AtsError> {
        self.stop()?;
        self.launch()?;
        self.wait_ready(self.config.startup_timeout)
    }

    /// Stops ATS at once: `SIGKILL` to its process group, then waits until no process of the
    /// group is left. The runroot and logs stay until the instance is dropped. (A test ATS has
    /// nothing worth a graceful shutdown, which costs traffic_manager about a second.)
    pub fn stop(&mut self) -> Result<(), AtsError> {
        self.stop_with(Signal::SIGKILL)
    }

    /// Stops ATS the way an init system does: `SIGTERM` to its process group (traffic_manager
    /// logs "Cleaning up and reissuing signal #15" and takes about a second), `SIGKILL` after
    /// 5 s if anything is left.
    pub fn stop_gracefully(&mut self) -> Result<(), AtsError> {
        self.stop_with(Signal::SIGTERM)
    }

    fn stop_with(&mut self, first: Signal) -> Result<(), AtsError> {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = killpg(pid_of(watchdog.id()), Signal::SIGKILL);
            let _ = watchdog.wait();
        }
        let Some(mut manager) = self.manager.take() else {
            return Ok(());
        };
        let pgid = manager.id();
        let _ = killpg(pid_of(pgid), first);
        if !wait_group_gone(&mut manager, pgid, Duration::from_secs(5)) {
            let _ = killpg(pid_of(pgid), Signal::SIGKILL);
            let _ = manager.kill();
            if !wait_group_gone(&mut manager, pgid, Duration::from_secs(5)) {
                return Err(AtsError::Io {
                    what: format!("stop ATS process group {pgid}"),
                    source: std::io::Error::other("processes left after SIGKILL"),
                });
            }
        }
        let _ = manager.wait();
        Ok(())
    }
}

impl Drop for AtsInstance {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Err(e) = self.stop() {
            eprintln!("apm-testkit: {e}");
        }
        if panicking {
            eprintln!(
                "apm-testkit: ATS in {} at the time of the failure:\n{}",
                self.root.display(),
                self.log_tails(40)
            );
        }
        if std::env::var_os(KEEP_ENV).is_some()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("apm-testkit: kept ATS runroot {}", kept.display());
        }
    }
}

/// One `records.config` record the harness sets (`CONFIG name kind value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessRecord {
    /// Record name, e.g. `proxy.config.dns.nameservers`.
    pub name: String,
    /// `INT` or `STRING`.
    pub kind: &'static str,
    /// The value as written in records.config.
    pub value: String,
}

impl std::fmt::Display for HarnessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CONFIG {} {} {}", self.name, self.kind, self.value)
    }
}

impl HarnessRecord {
    fn new(name: &str, kind: &'static str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            value: value.into(),
        }
    }
}

/// What the harness adds to records.config, in order: the records it needs, then (when
/// `fast_sync`) [`FAST_SYNC_RECORDS`].
fn harness_records(
    hosts_file: &Path,
    nameserver: SocketAddr,
    resolv_conf: &Path,
    fast_sync: bool,
) -> Vec<HarnessRecord> {
    let mut records = vec![
        HarnessRecord::new("proxy.config.admin.user_id", "STRING", "#-1"),
        HarnessRecord::new(
            "proxy.config.hostdb.host_file.path",
            "STRING",
            hosts_file.display().to_string(),
        ),
        HarnessRecord::new(
            "proxy.config.dns.nameservers",
            "STRING",
            nameserver.to_string(),
        ),
        HarnessRecord::new(
            "proxy.config.dns.resolv_conf",
            "STRING",
            resolv_conf.display().to_string(),
        ),
    ];
    if fast_sync {
        for (name, kind, value) in FAST_SYNC_RECORDS {
            records.push(HarnessRecord::new(name, kind, value));
        }
    }
    records
}

/// Comments out, in Debian's own records.config, the lines for records the harness sets
/// (Debian sets `admin.user_id trafficserver` and `server_ports 8080`), so that a start with
/// no caller records.config gets Debian's defaults plus the harness's records.
fn neutralize_debian_records(debian: &str, names: &[&str]) -> String {
    debian
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let is_owned = matches!(parts.next(), Some("CONFIG" | "LOCAL"))
                && parts.next().is_some_and(|n| names.contains(&n));
            if is_owned {
                format!("# apm-testkit: replaced below: {line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// Builds the final records.config: the caller's text, then the harness block.
///
/// A harness record the caller's text already sets to the same value is not repeated (so a
/// file that carries them, e.g. through a policy's `ats_records`, is accepted); a different
/// value is an error, as is a `server_ports` that is not `port`.
fn compose_records(
    base: &str,
    port: u16,
    records: &[HarnessRecord],
    extra: &[String],
) -> Result<String, AtsError> {
    let fast: Vec<&str> = FAST_SYNC_RECORDS.iter().map(|(n, _, _)| *n).collect();
    let mut out = base.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n# --- apm-testkit: records for the test host (not part of the policy) ---\n");
    for record in records {
        match record_value(base, &record.name) {
            None => {
                let _ = writeln!(out, "{record}");
            }
            Some(v) if v == record.value => {}
            // The caller may tune ATS's sync intervals itself.
            Some(_) if fast.contains(&record.name.as_str()) => {}
            Some(v) => {
                return Err(AtsError::Config(format!(
                    "records.config sets {} = {v:?}; the harness needs {:?} there",
                    record.name, record.value
                )));
            }
        }
    }
    match record_value(base, "proxy.config.http.server_ports") {
        None => {
            let _ = writeln!(out, "CONFIG proxy.config.http.server_ports STRING {port}");
        }
        Some(v) => {
            let first = v.split_whitespace().next().unwrap_or_default();
            let first_port = first.split(':').next().unwrap_or_default();
            if first_port != port.to_string() {
                return Err(AtsError::Config(format!(
                    "records.config sets proxy.config.http.server_ports = {v:?} but the \
                     instance was configured for port {port}: render the policy with \
                     listen_port = {port}"
                )));
            }
        }
    }
    for line in extra {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// The value of the last `CONFIG|LOCAL name TYPE value` line for `name`, if any.
pub fn record_value(records_config: &str, name: &str) -> Option<String> {
    records_config.lines().rev().find_map(|l| {
        let mut parts = l.trim().splitn(4, char::is_whitespace);
        let scope = parts.next()?;
        let n = parts.next()?;
        let _ty = parts.next()?;
        let value = parts.next().unwrap_or_default();
        (matches!(scope, "CONFIG" | "LOCAL") && n == name).then(|| value.trim().to_owned())
    })
}

fn pid_of(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).unwrap_or(i32::MAX))
}

/// True once no live (non-zombie) process of group `pgid` is left. Reaps `leader` on the way.
fn wait_group_gone(leader: &mut Child, pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let _ = leader.try_wait();
        if !group_has_live_members(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Scans /proc for processes whose process group is `pgid` and that are not zombies.
fn group_has_live_members(pgid: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may contain spaces, so split after the `)`.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let _ppid = fields.next();
        let pgrp = fields.next().and_then(|p| p.parse::<u32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

/// Sends a minimal request and reports whether an HTTP server (not just a listening socket:
/// traffic_manager binds the port before traffic_server runs) answered or closed the
/// connection.
fn http_probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    match s.read(&mut buf) {
        // An ip_allow that denies the prober closes the connection: still a serving ATS.
        Ok(0) => true,
        Ok(n) => buf[..n].starts_with(&b"HTTP/"[..n]),
        Err(_) => false,
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), AtsError> {
    fs::create_dir_all(to).map_err(io_err(format!("create {}", to.display())))?;
    let entries = fs::read_dir(from).map_err(io_err(format!(
        "read {} (is Debian's trafficserver installed?)",
        from.display()
    )))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("read {}", from.display())))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        // Follow symlinks: the package links some defaults into /usr/share.
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).map_err(io_err(format!(
                "copy {} to {}",
                src.display(),
                dst.display()
            )))?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<(), AtsError> {
    let mut f = fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("write {}", path.display())))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5353);

    fn harness(fast: bool) -> Vec<HarnessRecord> {
        harness_records(
            Path::new("/t/etc/hosts"),
            DNS,
            Path::new("/t/etc/resolv.conf"),
            fast,
        )
    }

    #[test]
    fn record_value_reads_the_last_config_line() {
        let text = "# c\nCONFIG proxy.config.a INT 1\nLOCAL proxy.config.b STRING x y\n\
                    CONFIG proxy.config.a INT 2\n";
        assert_eq!(record_value(text, "proxy.config.a").as_deref(), Some("2"));
        assert_eq!(record_value(text, "proxy.config.b").as_deref(), Some("x y"));
        assert_eq!(record_value(text, "proxy.config.c"), None);
    }

    #[test]
    fn compose_appends_harness_records_and_the_port_when_missing() {
        let out = compose_records(
            "CONFIG proxy.config.url_remap.remap_required INT 0",
            18000,
            &harness(true),
            &["CONFIG proxy.config.diags.debug.enabled INT 1".to_owned()],
        )
        .expect("compose");
        let value = |name| record_value(&out, name);
        assert_eq!(
            value("proxy.config.http.server_ports").as_deref(),
            Some("18000")
        );
        assert_eq!(value("proxy.config.admin.user_id").as_deref(), Some("#-1"));
        assert_eq!(
            value("proxy.config.hostdb.host_file.path").as_deref(),
            Some("/t/etc/hosts")
        );
        assert_eq!(
            value("proxy.config.dns.nameservers").as_deref(),
            Some("127.0.0.1:5353")
        );
        assert_eq!(
            value("proxy.config.dns.resolv_conf").as_deref(),
            Some("/t/etc/resolv.conf")
        );
        assert_eq!(
            value("proxy.config.config_update_interval_ms").as_deref(),
            Some("500")
        );
        assert_eq!(
            value("proxy.config.diags.debug.enabled").as_deref(),
            Some("1")
        );
        assert!(out.starts_with("CONFIG proxy.config.url_remap.remap_required INT 0\n"));
    }

    #[test]
    fn stock_timing_adds_no_sync_records() {
        let out = compose_records("", 1, &harness(false), &[]).expect("compose");
        assert_eq!(
            record_value(&out, "proxy.config.config_update_interval_ms"),
            None
        );
    }

    #[test]
    fn compose_keeps_a_matching_port_and_refuses_a_different_one() {
        let ok = compose_records(
            "CONFIG proxy.config.http.server_ports STRING 18000 18000:ipv6\n",
            18000,
            &harness(true),
            &[],
        )
        .expect("same port");
        assert_eq!(ok.matches("server_ports").count(), 1);
        let err = compose_records(
            "CONFIG proxy.config.http.server_ports STRING 8153\n",
            18000,
            &harness(true),
            &[],
        )
        .expect_err("different port");
        assert!(err.to_string().contains("listen_port = 18000"), "{err}");
    }

    #[test]
    fn compose_accepts_harness_records_already_present_and_refuses_other_values() {
        let carried: String = harness(true).iter().map(|r| format!("{r}\n")).collect();
        let out = compose_records(&carried, 1, &harness(true), &[]).expect("carried");
        assert_eq!(out.matches("proxy.config.dns.nameservers").count(), 1);
        let err = compose_records(
            "CONFIG proxy.config.admin.user_id STRING nobody\n",
            1,
            &harness(true),
            &[],
        )
        .expect_err("owned");
        assert!(err.to_string().contains("admin.user_id"), "{err}");
    }

    #[test]
    fn debian_lines_for_harness_records_are_commented_out() {
        let debian = "CONFIG proxy.config.admin.user_id STRING trafficserver\n\
                      CONFIG proxy.config.http.server_ports STRING 8080 8080:ipv6\n\
                      CONFIG proxy.config.exec_thread.limit INT 2\n";
        let base = neutralize_debian_records(
            debian,
            &[
                "proxy.config.admin.user_id",
                "proxy.config.http.server_ports",
            ],
        );
        assert_eq!(record_value(&base, "proxy.config.admin.user_id"), None);
        assert_eq!(record_value(&base, "proxy.config.http.server_ports"), None);
        assert_eq!(
            record_value(&base, "proxy.config.exec_thread.limit").as_deref(),
            Some("2")
        );
        compose_records(&base, 18000, &harness(true), &[]).expect("composes");
    }
}
