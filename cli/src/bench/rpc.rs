//! The request/response rows: an `IpcServer` with a sync echo handler (`register_sync_handler`,
//! the dispatch that allocates nothing) in the server child, a client in the bench process.
//! Round trips are sequential requests; throughput is requests per second with many in flight
//! on the one connection.
//!
//! The clients, by (transport, mode):
//! - `lapce-ipc-rpc adaptive`: `IpcClient` on a runtime with one worker, requests made from
//!   tasks spawned on it; client and server pinned to their CPUs (the best case).
//! - `lapce-ipc-rpc tokio-main`: an ordinary async program: `IpcClient` on a multi-thread runtime
//!   with the default workers, round trips awaited from the future given to `block_on` (what
//!   `#[tokio::main]` does), default `IpcConfig`, nothing pinned (client or server).
//! - `lapce-ipc-rpc-blocking blocking`: `BlockingIpcClient` called from the bench's thread,
//!   pinned as the best case is; it waits the default (adaptive) way.
//! - `lapce-ipc-rpc-blocking unpinned`: the same from an unpinned thread, default `IpcConfig`,
//!   server unpinned (an editor's thread).
//!
//! Throughput: [`IN_FLIGHT`] tasks (or [`THREADS`] threads sharing the blocking client) making
//! requests back to back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapce_ipc::config::WaitMode;
use lapce_ipc::frame::MessageType;
use lapce_ipc::{BlockingIpcClient, IpcClient, IpcConfig, IpcError, IpcServer};

use super::cpu;
use super::measure::{new_histogram, Result, Throughput};
use super::{lapce, Mode, ServerArgs, Test, Transport};
use crate::child::announce_ready;

/// Requests in flight at once in the async throughput test.
pub const IN_FLIGHT: usize = 64;

/// Threads sharing one `BlockingIpcClient` in its throughput test.
pub const THREADS: usize = 4;

/// Whether a mode is an ordinary program's: default configuration, nothing pinned.
pub fn is_ordinary(mode: Mode) -> bool {
    matches!(mode, Mode::TokioMain | Mode::Unpinned)
}

/// The configuration of a row: the defaults for an ordinary program's; else the bench's wait
/// mode, a ring sized for the payload, room for the requests in flight and metrics as asked.
fn config(mode: Mode, payload: usize, metrics: bool) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.metrics.enable = metrics;
    if is_ordinary(mode) {
        return config;
    }
    // The blocking client's pinned row waits the default way too: its mode names the API.
    config.ipc.wait_mode = if mode == Mode::Spin { WaitMode::Spin } else { WaitMode::Adaptive };
    config.ipc.ring_size = lapce::ring_capacity(Test::Echo, payload);
    config.ipc.max_concurrent_requests = 4 * IN_FLIGHT;
    config.ipc.request_timeout_ms = 60_000;
    config
}

/// The scale server's configuration: the defaults, with room for `clients` connections (and a
/// slot for each).
pub fn scale_config(clients: usize) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.max_connections = config.ipc.max_connections.max(clients + 1);
    config.ipc.max_slots = config.ipc.max_slots.max(clients + 1 + config.ipc.warm_pool_size);
    config
}

/// The server child: echoes `Data` requests until its one client has come and gone. With
/// `--scale-clients N` (the scale rows), the default configuration with room for N clients, and
/// it exits when N + 1 clients (the last one a sentinel the bench connects once it has measured
/// the server after the N left) have come and gone.
pub fn serve(args: &ServerArgs) -> Result<()> {
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n as usize).enable_all().build()?,
    };
    let (config, expected) = match args.scale_clients {
        Some(n) => (scale_config(n as usize), n + 1),
        None => (config(args.mode, args.payload, args.metrics), 1),
    };
    runtime.block_on(async {
        let server = IpcServer::bind(&args.name, config)?;
        server.register_sync_handler(MessageType::Data, Ok);
        let watcher = server.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let s = watcher.stats();
                if s.connections_accepted >= expected && s.connections_active == 0 {
                    watcher.shutdown(Duration::ZERO);
                    return;
                }
            }
        });
        announce_ready()?;
        server.serve().await?;
        Ok(())
    })
}

/// The bench process's side of a request/response row.
pub enum RpcClient {
    /// `IpcClient` on a one-worker runtime; requests from tasks spawned on it.
    Tasks { runtime: tokio::runtime::Runtime, client: IpcClient },
    /// `IpcClient` on a default multi-thread runtime; round trips from `block_on`.
    TokioMain { runtime: tokio::runtime::Runtime, client: IpcClient },
    /// `BlockingIpcClient`, shared by the threads of the throughput test.
    Blocking { client: Arc<BlockingIpcClient>, unpinned: bool },
}

/// Runs `f` on a thread of its own that may run on every CPU of `cpus` (an ordinary program's
/// thread), or right here when `cpus` is `None`.
fn on_thread<T: Send>(cpus: Option<&[usize]>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(cpus) = cpus else { return f() };
    std::thread::scope(|s| {
        s.spawn(|| {
            cpu::allow_cpus(cpus)?;
            f()
        })
        .join()
        .map_err(|_| "the measuring thread panicked")?
    })
}

impl RpcClient {
    /// Connects to the server child `name` the way the row's (transport, mode) says, with
    /// metrics collected or not; `all_cpus`: the CPUs an unpinned thread may use.
    pub fn connect(
        name: &str,
        transport: Transport,
        mode: Mode,
        payload: usize,
        metrics: bool,
        all_cpus: &[usize],
    ) -> Result<RpcClient> {
        let config = config(mode, payload, metrics);
        if transport == Transport::RpcBlocking {
            let unpinned = is_ordinary(mode);
            let client = BlockingIpcClient::connect(name, config)?;
            return Ok(RpcClient::Blocking { client: Arc::new(client), unpinned });
        }
        if mode == Mode::TokioMain {
            // Built on an unpinned thread: the runtime's workers inherit its CPUs.
            let runtime = on_thread(Some(all_cpus), || {
                Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
            })?;
            let client = runtime.block_on(IpcClient::connect(name, config))?;
            return Ok(RpcClient::TokioMain { runtime, client });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let client = runtime.block_on(IpcClient::connect(name, config))?;
        Ok(RpcClient::Tasks { runtime, client })
    }

    /// Round trips of sequential requests: `warmup` unrecorded, then `rounds` recorded in
    /// nanoseconds, every echo checked.
    pub fn rtt(
        &self,
        payload: usize,
        warmup: u64,
        rounds: u64,
        all_cpus: &[usize],
    ) -> Result<Histogram<u64>> {
        match self {
            RpcClient::Tasks { runtime, client } => {
                let client = client.clone();
                let task =
                    runtime.spawn(async move { async_round_trips(&client, payload, warmup, rounds).await });
                runtime.block_on(task)?
            }
            RpcClient::TokioMain { runtime, client } => on_thread(Some(all_cpus), || {
                runtime.block_on(async_round_trips(client, payload, warmup, rounds))
            }),
            RpcClient::Blocking { client, unpinned } => {
                let cpus = unpinned.then_some(all_cpus);
                on_thread(cpus, || blocking_round_trips(client, payload, warmup, rounds))
            }
        }
    }

    /// Requests per second with many in flight: `warmup` unmeasured requests, then `count`
    /// measured; every answer is checked.
    pub fn pipelined(
        &self,
        payload: usize,
        warmup: u64,
        count: u64,
        all_cpus: &[usize],
    ) -> Result<Throughput> {
        match self {
            RpcClient::Tasks { runtime, client } | RpcClient::TokioMain { runtime, client } => {
                let cpus = matches!(self, RpcClient::TokioMain { .. }).then_some(all_cpus);
                on_thread(cpus, || {
                    runtime.block_on(in_flight(client, payload, warmup))?;
                    let start = Instant::now();
                    let done = runtime.block_on(in_flight(client, payload, count))?;
                    Ok(Throughput { messages: done, payload, elapsed: start.elapsed() })
                })
            }
            RpcClient::Blocking { client, unpinned } => {
                let cpus = unpinned.then_some(all_cpus);
                on_thread(cpus, || {
                    threaded(client, payload, warmup)?;
                    let start = Instant::now();
                    let done = threaded(client, payload, count)?;
                    Ok(Throughput { messages: done, payload, elapsed: start.elapsed() })
                })
            }
        }
    }
}

/// Checks an echo of request `i`.
fn check(i: u64, payload: usize, answer: &[u8], msg: &[u8]) -> std::result::Result<(), IpcError> {
    if answer.len() != payload || answer.first() != msg.first() {
        return Err(IpcError::Corrupted(format!("bad echo for request {i}")));
    }
    Ok(())
}

/// Sequential round trips through an `IpcClient`.
pub(super) async fn async_round_trips(
    client: &IpcClient,
    payload: usize,
    warmup: u64,
    rounds: u64,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram()?;
    let mut msg = vec![0xA5u8; payload];
    for i in 0..warmup + rounds {
        msg[0] = i as u8;
        let start = Instant::now();
        let answer = client.request(MessageType::Data, &msg).await?;
        let rtt = start.elapsed();
        check(i, payload, &answer, &msg)?;
        if i >= warmup {
            hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(hist)
}

/// Sequential round trips through a `BlockingIpcClient`.
fn blocking_round_trips(
    client: &BlockingIpcClient,
    payload: usize,
    warmup: u64,
    rounds: u64,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram()?;
    let mut msg = vec![0xA5u8; payload];
    for i in 0..warmup + rounds {
        msg[0] = i as u8;
        let start = Instant::now();
        let answer = client.request(MessageType::Data, &msg)?;
        let rtt = start.elapsed();
        check(i, payload, &answer, &msg)?;
        if i >= warmup {
            hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(hist)
}

/// `n` requests made by [`IN_FLIGHT`] tasks back to back; returns how many were answered.
pub(super) async fn in_flight(client: &IpcClient, payload: usize, n: u64) -> Result<u64> {
    let per_task = n.div_ceil(IN_FLIGHT as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..IN_FLIGHT as u64 {
        let client = client.clone();
        let requests = per_task.min(n.saturating_sub(t * per_task));
        tasks.spawn(async move {
            let mut msg = vec![0x3Cu8; payload];
            for i in 0..requests {
                msg[0] = (t + i) as u8;
                let answer = client.request(MessageType::Data, &msg).await?;
                check(i, payload, &answer, &msg)?;
            }
            Ok::<u64, IpcError>(requests)
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        done += r??;
    }
    Ok(done)
}

/// `n` requests made by [`THREADS`] threads sharing `client`; returns how many were answered.
fn threaded(client: &BlockingIpcClient, payload: usize, n: u64) -> Result<u64> {
    let per_thread = n.div_ceil(THREADS as u64);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let requests = per_thread.min(n.saturating_sub(t * per_thread));
                s.spawn(move || -> std::result::Result<u64, IpcError> {
                    let mut msg = vec![0x5Au8; payload];
                    for i in 0..requests {
                        msg[0] = (t + i) as u8;
                        let answer = client.request(MessageType::Data, &msg)?;
                        check(i, payload, &answer, &msg)?;
                    }
                    Ok(requests)
                })
            })
            .collect();
        let mut done = 0;
        for t in threads {
            done += t.join().map_err(|_| "a request thread panicked")??;
        }
        Ok(done)
    })
}
