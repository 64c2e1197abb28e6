//! The hidden `stress-client` subcommand: a client child process with `--connections` `IpcClient`
//! connections, each running `--lanes` sequential request loops ("lanes"). Every request is a
//! [`payload`] with the lane's key and next sequence number, of the sizes in `--payloads` in
//! turn; every answer must be the request byte for byte.
//!
//! Lines on stdin and stdout, as for `bench-scale-client` (the parent drives both with the same
//! `ClientProcess`): child → `connected K`, parent → `go`; with `--requests 0` the lanes run
//! until the parent sends `stop`; then child → `corrupt N` and `result OK ERRORS ELAPSED_NS
//! V:C,...` (the latency histogram), parent → `close`, child exits. A lane stops at its first
//! failed request (an error counts in ERRORS, a wrong answer in N).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use lapce_ipc::frame::MessageType;
use lapce_ipc::IpcClient;

use super::payload::{self, FIN};
use super::{new_histogram, server, Result};
use crate::child::{self, Argv, ChildArgs};

/// Arguments of `stress-client`.
#[derive(Debug, PartialEq, clap::Args)]
pub struct ClientArgs {
    /// Listener name of the server.
    #[arg(long)]
    pub name: String,
    /// Connections this process opens.
    #[arg(long)]
    pub connections: usize,
    /// Sequential request loops per connection.
    #[arg(long, default_value_t = 1)]
    pub lanes: usize,
    /// Requests per lane; 0: until the parent says `stop`.
    #[arg(long, default_value_t = 0)]
    pub requests: u64,
    /// Request sizes in bytes, used in turn.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub payloads: Vec<usize>,
    /// Connection limit of the server (the client's configuration matches it).
    #[arg(long, default_value_t = 1100)]
    pub max_connections: usize,
    /// Pid of the stress process; the client dies with it.
    #[arg(long)]
    pub parent_pid: Option<u32>,
}

impl ChildArgs for ClientArgs {
    const SUBCOMMAND: &'static str = "stress-client";

    fn push_flags(&self, argv: &mut Argv) {
        argv.value("--name", &self.name)
            .value("--connections", self.connections)
            .value("--lanes", self.lanes)
            .value("--requests", self.requests)
            .list("--payloads", &self.payloads)
            .value("--max-connections", self.max_connections)
            .option("--parent-pid", self.parent_pid);
    }
}

/// What one lane did.
struct Lane {
    ok: u64,
    errors: u64,
    corrupt: u64,
    hist: Histogram<u64>,
}

/// Runs the client child.
pub fn run(args: &ClientArgs) -> std::process::ExitCode {
    child::child_exit(ClientArgs::SUBCOMMAND, run_inner(args))
}

fn run_inner(args: &ClientArgs) -> Result<()> {
    child::die_with_parent(if cfg!(target_os = "linux") { args.parent_pid } else { None })?;
    child::raise_fd_limit();
    if args.payloads.is_empty() || args.lanes == 0 || args.lanes >= 1 << 12 {
        return Err("need at least one payload size and 1..4096 lanes".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let config = server::config(args.max_connections);
    let clients = runtime.block_on(async {
        // At most 16 handshakes at a time: the server accepts one after another anyway.
        let gate = Arc::new(tokio::sync::Semaphore::new(16));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..args.connections {
            let (name, config, gate) = (args.name.clone(), config.clone(), Arc::clone(&gate));
            set.spawn(async move {
                let _permit = gate.acquire().await;
                (i, IpcClient::connect(&name, config).await)
            });
        }
        let mut clients = Vec::with_capacity(args.connections);
        while let Some(joined) = set.join_next().await {
            let (i, client) = joined.map_err(|e| format!("connect task: {e}"))?;
            clients.push((i, client.map_err(|e| format!("connection {i}: {e}"))?));
        }
        clients.sort_by_key(|(i, _)| *i);
        Ok::<_, super::Error>(clients.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
    })?;
    child::connected_then_wait_for_go(clients.len())?;
    let stop = Arc::new(AtomicBool::new(false));
    let sizes: Arc<[usize]> = args.payloads.clone().into();
    let start = Instant::now();
    let mut tasks = Vec::new();
    let pid = u64::from(std::process::id());
    for (c, client) in clients.iter().enumerate() {
        for l in 0..args.lanes {
            let key = (pid << 32) | ((c as u64) << 12) | l as u64;
            let lane = lane(client.clone(), key, args.requests, Arc::clone(&sizes), Arc::clone(&stop));
            tasks.push(runtime.spawn(lane));
        }
    }
    if args.requests == 0 {
        child::wait_for_parent(); // `stop`
        stop.store(true, Ordering::Relaxed);
    }
    let (mut ok, mut errors, mut corrupt) = (0u64, 0u64, 0u64);
    let mut hist = new_histogram()?;
    runtime.block_on(async {
        for task in tasks {
            match task.await {
                Ok(lane) => {
                    ok += lane.ok;
                    errors += lane.errors;
                    corrupt += lane.corrupt;
                    let _ = hist.add(&lane.hist);
                }
                Err(_) => errors += 1,
            }
        }
    });
    let elapsed = start.elapsed();
    let mut out = std::io::stdout();
    writeln!(out, "corrupt {corrupt}")?;
    writeln!(out, "{}", child::format_result(ok, errors, elapsed, &hist))?;
    out.flush()?;
    child::wait_for_parent(); // `close`
    drop(clients);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// One lane: sequential requests until `requests` are done (or, with 0, until `stop`), then a
/// last one flagged [`FIN`] so the server forgets the lane.
async fn lane(
    client: IpcClient,
    key: u64,
    requests: u64,
    sizes: Arc<[usize]>,
    stop: Arc<AtomicBool>,
) -> Lane {
    let mut lane =
        Lane { ok: 0, errors: 0, corrupt: 0, hist: new_histogram().expect("valid histogram bounds") };
    let mut seq = 0u64;
    loop {
        let last = if requests == 0 { stop.load(Ordering::Relaxed) } else { seq + 1 == requests };
        if requests > 0 && seq >= requests {
            break;
        }
        let len = sizes[(seq % sizes.len() as u64) as usize];
        let msg = Bytes::from(payload::make(key, if last { seq | FIN } else { seq }, len));
        let sent = Instant::now();
        match client.request(MessageType::Data, msg.clone()).await {
            Ok(answer) if answer == msg => {
                lane.hist.saturating_record(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                lane.ok += 1;
            }
            Ok(_) => {
                lane.corrupt += 1;
                break;
            }
            Err(e) => {
                eprintln!("stress-client: lane {key:#x}, request {seq}: {e}");
                lane.errors += 1;
                break;
            }
        }
        seq += 1;
        if last {
            break;
        }
    }
    lane
}
