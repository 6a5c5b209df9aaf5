//! Child processes of a run: the real `apm server`, a throw-away PostgreSQL, the hello-world
//! server; and CPU/RSS readings from /proc. Every child runs in its own process group and is
//! stopped by its PID (group) on drop, also when the run fails or panics.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// A child process in its own process group, killed (group) on drop.
pub struct Managed {
    child: Child,
    what: &'static str,
}

impl Managed {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(mut cmd: Command, what: &'static str) -> Result<Managed, BenchError> {
        cmd.process_group(0).stdin(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::Setup(format!("starting {what}: {e}")))?;
        Ok(Managed { child, what })
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process already exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BenchError::Setup(format!(
                "{} exited early with {status}",
                self.what
            ))),
            _ => Ok(()),
        }
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let pgid = Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// CPU time and memory of a process, from /proc/PID/stat and /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcUsage {
    /// user + system CPU seconds.
    pub cpu_secs: f64,
    /// Current RSS, KiB.
    pub rss_kib: u64,
    /// Peak RSS (VmHWM), KiB.
    pub hwm_kib: u64,
}

/// Reads the usage of `pid` (None when it is gone).
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_usage(&stat, &status, clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux ABI we run on; sysconf would need unsafe or another crate.
    100.0
}

/// Parses /proc/PID/stat (utime, stime: fields 14 and 15) and the VmRSS/VmHWM lines of status.
pub fn parse_usage(stat: &str, status: &str, ticks: f64) -> Option<ProcUsage> {
    // The command name (field 2) may contain spaces; fields restart after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcUsage {
        cpu_secs: (utime + stime) / ticks,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// 1-minute load average.
pub fn load_avg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The running `apm server` child.
pub struct ServerProcess {
    /// The process.
    pub proc: Managed,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr (logs).
    pub log_path: PathBuf,
}

/// How to start the server.
pub struct ServerSpec<'a> {
    /// The `apm` executable.
    pub exe: &'a Path,
    /// Data dir (SQLite lives here unless `database_url` is set).
    pub data_dir: &'a Path,
    /// PostgreSQL URL.
    pub database_url: Option<&'a str>,
    /// Root password to set.
    pub root_password: &'a str,
    /// Log filter.
    pub log_level: &'a str,
    /// Extra `apm server` flags.
    pub extra_args: &'a [String],
    /// Where stderr goes.
    pub log_path: PathBuf,
}

impl ServerProcess {
    /// Starts `apm server` on a free loopback port and waits until `/health` answers.
    pub async fn start(spec: ServerSpec<'_>) -> Result<ServerProcess, BenchError> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(spec.exe);
        cmd.arg("server")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(spec.data_dir)
            .arg("--log-level")
            .arg(spec.log_level)
            .args(spec.extra_args);
        if let Some(url) = spec.database_url {
            cmd.arg("--database-url").arg(url);
        }
        // The operator's APM_* variables must not change the server under test.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("APM_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("APM_ROOT_PASSWORD", spec.root_password);
        let log = fs::File::create(&spec.log_path)?;
        cmd.stdout(Stdio::null()).stderr(log);
        let mut proc = Managed::spawn(cmd, "apm server")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            proc.check_alive().map_err(|e| {
                let tail = fs::read_to_string(&spec.log_path).unwrap_or_default();
                let tail: String = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
                BenchError::Setup(format!("{e}; last log lines:\n{tail}"))
            })?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "apm server did not listen on {addr} within 60 s (log: {})",
                    spec.log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(ServerProcess {
            proc,
            addr,
            log_path: spec.log_path,
        })
    }
}

/// Where Debian installs PostgreSQL.
const PG_LIB: &str = "/usr/lib/postgresql";

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(PG_LIB)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn postgres_ids() -> Result<(u32, u32), BenchError> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            BenchError::Setup("no `postgres` user (install the postgresql package)".into())
        })
}

/// A throw-away PostgreSQL cluster in a temp dir (Debian binaries; as the `postgres` user when
/// run as root), tuned like a small production server rather than a test: durability through
/// `synchronous_commit=off` (as SQLite's `synchronous=NORMAL` in WAL mode: a crash may lose the
/// last commits, never corrupts), fsync on.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// The postmaster.
    pub pid: u32,
    /// Port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    fn cmd(bin: &Path, as_postgres: bool, program: &str) -> Command {
        if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        }
    }

    /// initdb + start; `max_connections` must cover the server's pool.
    pub fn start(max_connections: u32) -> Result<Postgres, BenchError> {
        let bin = pg_bin().ok_or_else(|| {
            BenchError::Setup(format!(
                "PostgreSQL binaries not found under {PG_LIB}: run scripts/install-test-deps.sh"
            ))
        })?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("apm-bench-pg-").tempdir()?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let out = Self::cmd(&bin, as_postgres, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(BenchError::Setup(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections={} \
             -c shared_buffers=256MB -c synchronous_commit=off -c wal_buffers=16MB \
             -c max_wal_size=4GB -c checkpoint_timeout=15min",
            dir.path().display(),
            max_connections.max(20) + 10
        );
        let out = Self::cmd(&bin, as_postgres, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&options)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(BenchError::Setup(format!(
                "pg_ctl start failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            )));
        }
        let pid = fs::read_to_string(data.join("postmaster.pid"))?
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| BenchError::Setup("postmaster.pid has no PID".into()))?;
        Ok(Postgres {
            dir,
            bin,
            as_postgres,
            pid,
            port,
        })
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// CPU of every PostgreSQL process (postmaster and backends), seconds.
    pub fn cpu_secs(&self) -> f64 {
        let Ok(entries) = fs::read_dir("/proc") else {
            return 0.0;
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                *pid == self.pid
                    || fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            let rest = s[s.rfind(')')? + 2..].to_string();
                            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                        })
                        == Some(self.pid)
            })
            .filter_map(proc_usage)
            .map(|u| u.cpu_secs)
            .sum()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let ok = Self::cmd(&self.bin, self.as_postgres, "pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "1234 (apm server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        let status = "Name:\tapm\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        let u = parse_usage(stat, status, 100.0).expect("parses");
        assert_eq!(u.cpu_secs, 3.0);
        assert_eq!(u.rss_kib, 102_400);
        assert_eq!(u.hwm_kib, 204_800);
        assert!(parse_usage("garbage", status, 100.0).is_none());
    }

    #[test]
    fn reads_our_own_process() {
        let u = proc_usage(std::process::id()).expect("own /proc");
        assert!(u.rss_kib > 0 && u.hwm_kib >= u.rss_kib);
    }
}
