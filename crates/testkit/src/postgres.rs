//! A real PostgreSQL for tests: Debian's binaries from `/usr/lib/postgresql/<version>/bin` (15 on
//! bookworm; the newest installed version is used), a cluster in a temp dir, listening on a free
//! loopback port. No Docker, no download.
//!
//! When the tests run as root the cluster is owned by and runs as the `postgres` user (PostgreSQL
//! refuses to run as root), through `runuser -u postgres`.
//!
//! [`Postgres::shared`] gives one instance per test process; every test then takes its own database
//! with [`Postgres::fresh_database`]. A shared instance lives in a `static` and so is never dropped:
//! a small watchdog shell started next to it stops the cluster (`pg_ctl stop -m immediate`) once the
//! test process is gone, whatever way it ended. Owned instances ([`Postgres::start`]) are stopped by
//! `Drop` as well.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Where Debian puts the PostgreSQL server binaries of each installed major version.
pub const PG_LIB: &str = "/usr/lib/postgresql";

/// The `bin` directory of the newest installed PostgreSQL major version.
pub fn pg_bin() -> Option<PathBuf> {
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
    versions.pop().map(|(_, bin)| bin)
}

fn bin(program: &str) -> PathBuf {
    pg_bin()
        .unwrap_or_else(|| PathBuf::from(PG_LIB).join("15/bin"))
        .join(program)
}

/// A running PostgreSQL cluster in a temp dir. Stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    pid: u32,
    run_as_postgres: bool,
}

static SHARED: OnceLock<std::result::Result<Postgres, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// True when the PostgreSQL binaries are installed (scripts/install-test-deps.sh does it).
    pub fn available() -> bool {
        pg_bin().is_some()
    }

    /// One cluster for the whole test process, started on first use.
    pub fn shared() -> Result<&'static Postgres> {
        let result = SHARED.get_or_init(|| {
            Postgres::start()
                .and_then(|pg| {
                    pg.spawn_watchdog()?;
                    Ok(pg)
                })
                .map_err(|e| format!("{e:#}"))
        });
        match result {
            Ok(pg) => Ok(pg),
            Err(e) => bail!("starting the shared test PostgreSQL failed: {e}"),
        }
    }

    /// Starts a new cluster: initdb (copied from a cached template cluster when one exists), then
    /// `pg_ctl start` on a free 127.0.0.1 port with durability switched off for speed.
    pub fn start() -> Result<Postgres> {
        if !Self::available() {
            bail!("PostgreSQL binaries not found under {PG_LIB}: run scripts/install-test-deps.sh");
        }
        let run_as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("apm-pg-").tempdir()?;
        let data = dir.path().join("data");
        let template = template_cluster(run_as_postgres)?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .context("copying the template cluster")?;
        if !status.success() {
            bail!("cp -a {} {} failed", template.display(), data.display());
        }
        if run_as_postgres {
            let (uid, gid) = postgres_ids()?;
            chown(dir.path(), Some(uid), Some(gid))?;
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB",
            dir.path().display()
        );
        let output = pg_command(run_as_postgres, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&options)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        if !output.status.success() {
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "pg_ctl start failed: {}{}\n{log_text}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let pid_file = fs::read_to_string(data.join("postmaster.pid"))
            .context("reading postmaster.pid after start")?;
        let pid: u32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid has no PID on its first line")?;
        Ok(Postgres {
            dir,
            port,
            pid,
            run_as_postgres,
        })
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A connection URL for `database` (user `postgres`, trust authentication on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new empty database with a unique name and returns its URL.
    pub fn fresh_database(&self) -> Result<String> {
        let name = format!(
            "apm_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let output = Command::new(bin("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&name)
            .stdin(Stdio::null())
            .output()
            .context("running createdb")?;
        if !output.status.success() {
            bail!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(self.url(&name))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the cluster at once when this process is gone (used for the never-dropped shared one).
    fn spawn_watchdog(&self) -> Result<()> {
        let pg_ctl = bin("pg_ctl");
        let stop = if self.run_as_postgres {
            format!(
                "runuser -u postgres -- {} stop -D {} -m immediate",
                pg_ctl.display(),
                self.data_dir().display()
            )
        } else {
            format!(
                "{} stop -D {} -m immediate",
                pg_ctl.display(),
                self.data_dir().display()
            )
        };
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; \
             kill -9 {pid} 2>/dev/null; rm -rf {dir}",
            parent = std::process::id(),
            pid = self.pid,
            dir = self.dir.path().display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the PostgreSQL watchdog")?;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = pg_command(self.run_as_postgres, "pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !stopped {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
    }
}

fn pg_command(run_as_postgres: bool, program: &str) -> Command {
    let path = bin(program);
    if run_as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 3 && fields[0] == "postgres" {
            return Ok((fields[2].parse()?, fields[3].parse()?));
        }
    }
    bail!("no `postgres` user in /etc/passwd (install the postgresql package)")
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// initdb is the slow part (~1-2 s); it runs once per machine and later clusters copy the result.
fn template_cluster(run_as_postgres: bool) -> Result<PathBuf> {
    let suffix = if run_as_postgres { "pg" } else { "user" };
    let version = pg_bin()
        .and_then(|b| {
            b.parent()
                .and_then(|v| v.file_name())
                .map(|v| v.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let base = std::env::temp_dir().join(format!("apm-testkit-pg{version}-template-{suffix}"));
    if base.join("PG_VERSION").exists() {
        return Ok(base);
    }
    let work = tempfile::Builder::new()
        .prefix("apm-pg-initdb-")
        .tempdir()?
        .keep();
    let data = work.join("data");
    if run_as_postgres {
        let (uid, gid) = postgres_ids()?;
        chown(&work, Some(uid), Some(gid))?;
    }
    let output = pg_command(run_as_postgres, "initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Another process may have won the race; either way `base` is a complete cluster afterwards.
    if fs::rename(&data, &base).is_err() && !base.join("PG_VERSION").exists() {
        bail!(
            "could not install the template cluster at {}",
            base.display()
        );
    }
    let _ = fs::remove_dir_all(&work);
    Ok(base)
}
