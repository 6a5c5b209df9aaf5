//! Accept loop shared by the test servers: runs on [`crate::net::runtime`], tracks every
//! connection task so that stopping a server really closes its sockets (a stopped parent must
//! look dead to ATS: new connections refused, kept-alive ones closed).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

use crate::net::{bind_reusable, runtime};

/// Connection tasks of one running server; also used for CONNECT tunnels spawned by a handler.
pub(crate) type Tasks = Arc<Mutex<JoinSet<()>>>;

/// Spawns `fut` into `tasks` on the server runtime.
pub(crate) fn spawn_tracked<F>(tasks: &Tasks, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut set = tasks.lock().unwrap_or_else(PoisonError::into_inner);
    // Reap finished tasks so a long-running server does not accumulate them.
    while set.try_join_next().is_some() {}
    set.spawn_on(fut, runtime().handle());
}

/// A running accept loop. Dropping it stops the server.
pub(crate) struct Running {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    tasks: Tasks,
}

impl Running {
    /// Binds `addr` (port 0 = ephemeral) and serves every connection with `handle`.
    pub(crate) fn start<H, F>(addr: SocketAddr, handle: H) -> std::io::Result<Self>
    where
        H: Fn(TcpStream, Tasks) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = bind_reusable(addr)?;
        let addr = listener.local_addr()?;
        let tasks: Tasks = Arc::new(Mutex::new(JoinSet::new()));
        let loop_tasks = tasks.clone();
        let accept = runtime().spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        let fut = handle(stream, loop_tasks.clone());
                        spawn_tracked(&loop_tasks, fut);
                    }
                    // EMFILE and friends: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        Ok(Self {
            addr,
            accept,
            tasks,
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.accept.abort();
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
        // Wait (bounded) for the accept task to drop its listener, so that when stop returns
        // the port already refuses connections. Polling instead of block_on keeps this callable
        // from inside any async context.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.accept.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
