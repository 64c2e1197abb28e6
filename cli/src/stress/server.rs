//! The hidden `stress-server` subcommand: an `IpcServer` child that echoes `Data` requests and
//! checks each one on the way in (see [`payload`]): per lane, the sequence number must be the
//! next one (a lower one is a duplicate, a higher one a gap) and the checksum must match.
//!
//! Two extra request types serve the parent: [`STATS`] answers the server's counters as JSON,
//! [`SHUTDOWN`] begins a graceful shutdown, after which the process exits with status 0 (any
//! other end is a crash).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lapce_ipc::frame::MessageType;
use lapce_ipc::{IpcConfig, IpcServer, ServerStats};
use tokio::sync::oneshot;

use super::payload::{self, Checked};
use super::Result;
use crate::child::{self, Argv, ChildArgs};

/// Quiet time before idle rings and the server's heap are trimmed: 200 ms instead of the
/// default second, so that level 4's samples, taken after the heap trim, wait less.
pub const IDLE_TRIM_MS: u64 = 200;

/// Request type: the server's counters as JSON.
pub const STATS: MessageType = MessageType::Unknown(0x7A01);
/// Request type: shut down gracefully.
pub const SHUTDOWN: MessageType = MessageType::Unknown(0x7A02);
/// Largest message the stress server accepts (the oversized chaos messages are larger).
pub const MAX_MESSAGE: usize = 2 << 20;

/// Arguments of `stress-server`.
#[derive(Debug, PartialEq, clap::Args)]
pub struct ServerArgs {
    /// Listener name.
    #[arg(long)]
    pub name: String,
    /// Connection limit.
    #[arg(long)]
    pub max_connections: usize,
    /// Pid of the stress process; the server dies with it.
    #[arg(long)]
    pub parent_pid: Option<u32>,
}

impl ChildArgs for ServerArgs {
    const SUBCOMMAND: &'static str = "stress-server";

    fn push_flags(&self, argv: &mut Argv) {
        argv.value("--name", &self.name)
            .value("--max-connections", self.max_connections)
            .option("--parent-pid", self.parent_pid);
    }
}

/// The stress server's configuration (the clients use it too): the defaults, with room for
/// `max_connections` and [`MAX_MESSAGE`], and [`IDLE_TRIM_MS`].
pub fn config(max_connections: usize) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.max_connections = max_connections;
    config.ipc.idle_trim_ms = IDLE_TRIM_MS;
    config.ipc.trim_heap = true;
    config.ipc.max_slots = config.ipc.max_slots.max(max_connections + config.ipc.warm_pool_size + 1);
    config.ipc.max_message_size = MAX_MESSAGE;
    config
}

/// What the handler checks, per lane and in total.
#[derive(Default)]
struct Tracker {
    /// Next expected sequence number per lane.
    next: Mutex<HashMap<u64, u64>>,
    checked: AtomicU64,
    tiny: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    corrupt: AtomicU64,
}

impl Tracker {
    fn check(&self, request: &[u8]) {
        match payload::check(request) {
            Checked::Tiny => {
                self.tiny.fetch_add(1, Ordering::Relaxed);
            }
            Checked::Corrupt => {
                self.corrupt.fetch_add(1, Ordering::Relaxed);
            }
            Checked::Sound { key, seq, fin } => {
                self.checked.fetch_add(1, Ordering::Relaxed);
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let expected = next.get(&key).copied().unwrap_or(0);
                if seq < expected {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                } else if seq > expected {
                    self.gaps.fetch_add(1, Ordering::Relaxed);
                }
                if fin {
                    next.remove(&key);
                } else {
                    next.insert(key, expected.max(seq + 1));
                }
            }
        }
    }
}

/// Test hook: with `LAPCE_IPC_STRESS_LEAK_EVERY=N`, the server leaks one descriptor every `N`
/// echo requests, so a test can check that level 4 catches a leak.
const LEAK_EVERY_ENV: &str = "LAPCE_IPC_STRESS_LEAK_EVERY";

/// The leak [`LEAK_EVERY_ENV`] asks for (none when unset).
struct InjectedLeak {
    every: u64,
    requests: std::sync::atomic::AtomicU64,
}

impl InjectedLeak {
    fn from_env() -> InjectedLeak {
        let every = std::env::var(LEAK_EVERY_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        InjectedLeak { every, requests: std::sync::atomic::AtomicU64::new(0) }
    }

    fn maybe_leak(&self) {
        if self.every == 0 {
            return;
        }
        let n = self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(self.every) {
            if let Ok(file) = std::fs::File::open(std::env::current_exe().unwrap_or_default()) {
                std::mem::forget(file);
            }
        }
    }
}

/// Runs the server child.
pub fn serve(args: &ServerArgs) -> std::process::ExitCode {
    match serve_inner(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stress-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve_inner(args: &ServerArgs) -> Result<()> {
    child::die_with_parent(args.parent_pid)?;
    child::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let server = IpcServer::bind(&args.name, config(args.max_connections))?;
        let tracker = Arc::new(Tracker::default());
        {
            let tracker = Arc::clone(&tracker);
            let leak = InjectedLeak::from_env();
            server.register_handler(MessageType::Data, move |request: Bytes| {
                tracker.check(&request);
                leak.maybe_leak();
                async move { Ok(request) }
            });
        }
        {
            let tracker = Arc::clone(&tracker);
            // The handler must not own the server (a cycle would keep the listener alive): it
            // asks a task that holds a clone, which ends at shutdown.
            let (ask, mut asked) = tokio::sync::mpsc::channel::<oneshot::Sender<ServerStats>>(16);
            let watcher = server.clone();
            let stats_task = tokio::spawn(async move {
                while let Some(reply) = asked.recv().await {
                    let _ = reply.send(watcher.stats());
                }
            });
            server.register_handler(STATS, move |_request: Bytes| {
                let (ask, tracker) = (ask.clone(), Arc::clone(&tracker));
                async move {
                    let (tx, rx) = oneshot::channel();
                    let s = match ask.send(tx).await {
                        Ok(()) => rx.await.unwrap_or_default(),
                        Err(_) => ServerStats::default(),
                    };
                    let t = &tracker;
                    let body = serde_json::json!({
                        "connections_active": s.connections_active,
                        "connections_accepted": s.connections_accepted,
                        "connections_refused": s.connections_refused,
                        "handshakes_refused": s.handshakes_refused,
                        "requests": s.requests,
                        "errors": s.errors,
                        "panics": s.panics,
                        "heap_trims": s.heap_trims,
                        "checked": t.checked.load(Ordering::Relaxed),
                        "tiny": t.tiny.load(Ordering::Relaxed),
                        "duplicates": t.duplicates.load(Ordering::Relaxed),
                        "gaps": t.gaps.load(Ordering::Relaxed),
                        "corrupt": t.corrupt.load(Ordering::Relaxed),
                        "lanes_open": t.next.lock().unwrap_or_else(|p| p.into_inner()).len(),
                        // The allocator setting it runs with (level 4 sets one), or null.
                        "glibc_tunables": std::env::var("GLIBC_TUNABLES").ok(),
                    });
                    Ok(Bytes::from(body.to_string()))
                }
            });
            let stop = Arc::new(tokio::sync::Notify::new());
            {
                let stop = Arc::clone(&stop);
                server.register_handler(SHUTDOWN, move |_request: Bytes| {
                    stop.notify_one();
                    async move { Ok(Bytes::from_static(b"bye")) }
                });
            }
            let stopper = server.clone();
            tokio::spawn(async move {
                stop.notified().await;
                // Let the answer go out first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                stats_task.abort();
                stopper.shutdown(Duration::from_millis(500));
            });
        }
        child::announce_ready()?;
        server.serve().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_gaps_and_corruption() {
        let t = Tracker::default();
        for seq in [0, 1, 1, 2, 5, 6] {
            t.check(&payload::make(9, seq, 64));
        }
        let mut bad = payload::make(9, 7, 64);
        bad[40] ^= 4;
        t.check(&bad);
        t.check(&payload::make(9, 7 | payload::FIN, 64));
        t.check(b"tiny");
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((n(&t.duplicates), n(&t.gaps), n(&t.corrupt), n(&t.tiny)), (1, 1, 1, 1));
        assert_eq!(n(&t.checked), 7);
        assert!(t.next.lock().unwrap().is_empty(), "FIN forgets the lane");
    }
}
