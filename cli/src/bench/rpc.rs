//! The request/response row: an `IpcServer` with a sync echo handler (`register_sync_handler`, the
//! dispatch that allocates nothing) in the server child, an
//! `IpcClient` in the bench process. Round trips are sequential requests; throughput is requests
//! per second with many in flight on the one connection (pipelining).

use std::time::{Duration, Instant};

use bytes::Bytes;
use lapce_ipc::config::WaitMode;
use lapce_ipc::frame::MessageType;
use lapce_ipc::{IpcClient, IpcConfig, IpcServer};

use super::child::announce_ready;
use hdrhistogram::Histogram;

use super::measure::{new_histogram, Result, Throughput};
use super::{lapce, Mode, ServerArgs, Test};

/// Requests in flight at once in the throughput test.
pub const IN_FLIGHT: usize = 64;

fn config(mode: Mode, payload: usize, metrics: bool) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.wait_mode = match mode {
        Mode::Spin => WaitMode::Spin,
        Mode::Adaptive | Mode::EventLoop => WaitMode::Adaptive,
        Mode::Blocking => WaitMode::Blocking,
    };
    config.ipc.ring_size = lapce::ring_capacity(Test::Echo, payload);
    config.ipc.max_concurrent_requests = 4 * IN_FLIGHT;
    config.ipc.request_timeout_ms = 60_000;
    config.metrics.enable = metrics;
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

/// The bench process's side: a client on a runtime of its own (one worker thread, as
/// `BlockingIpcClient` has); the measurements run as tasks on it.
pub struct RpcClient {
    runtime: tokio::runtime::Runtime,
    client: IpcClient,
}

impl RpcClient {
    /// Connects to the server child `name`, with metrics collected or not.
    pub fn connect(name: &str, mode: Mode, payload: usize, metrics: bool) -> Result<RpcClient> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let client = runtime.block_on(IpcClient::connect(name, config(mode, payload, metrics)))?;
        Ok(RpcClient { runtime, client })
    }

    /// Round trips of sequential requests made from a task on the client's runtime, as an async
    /// application makes them (a thread blocked in `block_on` adds a thread wake-up to each
    /// answer): `warmup` unrecorded, then `rounds` recorded in nanoseconds, every echo checked.
    pub fn rtt(&self, payload: usize, warmup: u64, rounds: u64) -> Result<Histogram<u64>> {
        let client = self.client.clone();
        let mut hist = new_histogram()?;
        let task = self.runtime.spawn(async move {
            let mut msg = vec![0xA5u8; payload];
            for i in 0..warmup + rounds {
                msg[0] = i as u8;
                let request = Bytes::copy_from_slice(&msg);
                let start = Instant::now();
                let answer = client.request(MessageType::Data, request).await?;
                let rtt = start.elapsed();
                if answer.len() != payload || answer.first() != msg.first() {
                    return Err(lapce_ipc::IpcError::Corrupted(format!("bad echo for request {i}")));
                }
                if i >= warmup {
                    hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Ok(hist)
        });
        Ok(self.runtime.block_on(task)??)
    }

    /// Requests per second with [`IN_FLIGHT`] requests in flight: `warmup` unmeasured requests,
    /// then `count` measured; every answer is checked.
    pub fn pipelined(&self, payload: usize, warmup: u64, count: u64) -> Result<Throughput> {
        let client = self.client.clone();
        let run = |n: u64| {
            let client = client.clone();
            async move {
                let per_task = n.div_ceil(IN_FLIGHT as u64);
                let mut tasks = tokio::task::JoinSet::new();
                for t in 0..IN_FLIGHT as u64 {
                    let client = client.clone();
                    let requests = per_task.min(n.saturating_sub(t * per_task));
                    tasks.spawn(async move {
                        let mut msg = vec![0x3Cu8; payload];
                        for i in 0..requests {
                            msg[0] = (t + i) as u8;
                            let answer =
                                client.request(MessageType::Data, Bytes::copy_from_slice(&msg)).await?;
                            if answer.len() != payload || answer.first() != msg.first() {
                                return Err(lapce_ipc::IpcError::Corrupted("bad echo".into()));
                            }
                        }
                        Ok(requests)
                    });
                }
                let mut done = 0;
                while let Some(r) = tasks.join_next().await {
                    done += r.map_err(|e| lapce_ipc::IpcError::Io(std::io::Error::other(e)))??;
                }
                Ok::<u64, lapce_ipc::IpcError>(done)
            }
        };
        self.runtime.block_on(run(warmup))?;
        let start = Instant::now();
        let done = self.runtime.block_on(run(count))?;
        Ok(Throughput { messages: done, payload, elapsed: start.elapsed() })
    }
}
