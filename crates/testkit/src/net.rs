//! Loopback networking helpers shared by the harness: free ports, waiting for a listener, and
//! the background tokio runtime the test servers run on.
//!
//! The test servers ([`crate::origin`], [`crate::parent`]) run on one process-wide runtime
//! owned by this module rather than on the caller's runtime. That keeps the harness API
//! synchronous, so it works the same from `#[test]`, `#[tokio::test]` (current-thread, where a
//! blocking wait for ATS would otherwise starve the servers) and from `spawn_blocking`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A TCP port that was free on every address when this function returned.
///
/// The port is found by binding `0.0.0.0:0` and releasing it, so there is a small window in
/// which another process could take it; ephemeral ports are handed out round-robin by the
/// kernel, which makes that unlikely within the lifetime of a test.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    Ok(listener.local_addr()?.port())
}

/// `127.0.0.N` for `N` in 2..=254.
///
/// Test origins must not use `127.0.0.1`: ATS always bypasses parents for that host
/// (see `ats-notes.md`, trap 3), so a test would see DIRECT whatever the policy says.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Waits until a TCP connection to `addr` succeeds, or `timeout` passes.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing accepted connections on {addr} within {timeout:?}: {e}"),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The runtime every test server of this process runs on (two worker threads, created on
/// first use, never shut down: it lives as long as the test process).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("apm-testkit-net")
            .enable_all()
            .build()
            // Without a runtime no test server can run; this is a broken environment, not input.
            .expect("apm-testkit: cannot build the tokio runtime for test servers")
    })
}

/// Binds a listener on `addr` with `SO_REUSEADDR`, from inside the server runtime, so a
/// server that was stopped can be started again on the same address and port while old
/// connections are still in `TIME_WAIT`.
pub(crate) fn bind_reusable(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let _guard = runtime().enter();
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// A private name → address table for test host names (`www.example.test` → `127.0.0.5`).
///
/// One table serves both sides of a test: [`crate::ats::AtsConfig`] writes it as the hosts file
/// ATS resolves from (`proxy.config.hostdb.host_file.path`), and [`crate::parent::ParentProxy`]
/// resolves forwarded requests with it, so neither touches `/etc/hosts` or real DNS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    entries: BTreeMap<String, IpAddr>,
}

impl Hosts {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `name` → `ip`. Names are case-insensitive.
    pub fn insert(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        self.entries.insert(name.to_ascii_lowercase(), ip);
        self
    }

    /// Builder form of [`Hosts::insert`].
    pub fn with(mut self, name: &str, ip: IpAddr) -> Self {
        self.insert(name, ip);
        self
    }

    /// The address of `host`: an IP literal (optionally in `[v6]` brackets) is its own address,
    /// a name is looked up in the table; anything else is `None`.
    pub fn resolve(&self, host: &str) -> Option<IpAddr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(ip);
        }
        self.entries.get(&host.to_ascii_lowercase()).copied()
    }

    /// The address of `name` in the table (no IP-literal parsing).
    pub fn entry(&self, name: &str) -> Option<IpAddr> {
        self.entries.get(&name.to_ascii_lowercase()).copied()
    }

    /// The table in `/etc/hosts` format, one `ADDRESS NAME` line per entry.
    pub fn to_hosts_file(&self) -> String {
        self.entries
            .iter()
            .map(|(name, ip)| format!("{ip} {name}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_names_and_literals() {
        let hosts = Hosts::new().with("WWW.Example.test", loopback(5));
        assert_eq!(hosts.resolve("www.example.TEST"), Some(loopback(5)));
        assert_eq!(hosts.resolve("127.0.0.7"), Some(loopback(7)));
        assert_eq!(hosts.resolve("[::1]"), Some("::1".parse().expect("v6")));
        assert_eq!(hosts.resolve("unknown.test"), None);
        assert_eq!(hosts.to_hosts_file(), "127.0.0.5 www.example.test\n");
    }

    #[test]
    fn free_port_is_bindable_on_loopback_aliases() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        let l = TcpListener::bind((loopback(2), port)).expect("bind 127.0.0.2");
        assert_eq!(l.local_addr().expect("addr").port(), port);
    }

    #[test]
    fn wait_for_listener_times_out_on_a_closed_port() {
        let port = free_port().expect("free port");
        let err = wait_for_listener(
            SocketAddr::new(loopback(9), port),
            Duration::from_millis(200),
        )
        .expect_err("nothing listens there");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn reusable_bind_can_rebind_the_same_port_after_close() {
        let addr = SocketAddr::new(loopback(3), 0);
        let l = bind_reusable(addr).expect("first bind");
        let bound = l.local_addr().expect("addr");
        drop(l);
        let again = bind_reusable(bound).expect("rebind after close");
        assert_eq!(again.local_addr().expect("addr"), bound);
    }
}
