//! `lapce-ipc bench --scale N,...`: what N connected clients cost an `IpcServer`.
//!
//! For each N: a fresh server child (`bench-server --transport lapce-ipc-rpc --scale-clients N`,
//! the default configuration with room for N connections, an echo handler, on the runtime
//! `--scale-server-threads` asks for); its RSS and open
//! file descriptors while idle with no clients; then N client connections spread over
//! [`CLIENT_PROCESSES`] client children (the hidden `bench-scale-client` subcommand, one tokio
//! runtime each), made with the API `--scale-client` names (`IpcClient`, one task per request
//! in flight, or framed streams, one task per connection: see [`ScaleClient`]); RSS and
//! descriptors again after `--trim-wait` seconds with all N connected and idle; then
//! request/response load on every connection (64 B, `--scale-inflight` requests in flight per
//! connection, `--scale-secs` seconds); then the clients exit and the server's descriptors are
//! counted once more (net of the warm segments it kept: [`Footprint::unexplained_fds`]).
//!
//! The client children follow the line protocol of [`crate::child`].

mod client;
mod lean;
mod report;

use std::time::{Duration, Instant};

use lapce_ipc::{IpcClient, IpcConfig};
use serde::Serialize;

pub use self::client::{client, ScaleClientArgs};
pub use self::lean::lean_server_idle;
pub use self::report::{print_table, targets};
use super::report::{fmt_us, rate};
use super::{Bench, BenchArgs, Mode, ServerArgs, Test, Transport};
use crate::child::{self, ClientProcess, ServerProcess};
use crate::error::Result;
use crate::footprint::{footprint, Footprint};
use crate::histogram::new_histogram;

/// Client processes the N connections are spread over (fewer when N is smaller).
pub const CLIENT_PROCESSES: usize = 4;

/// Payload of the load's requests.
pub const PAYLOAD: usize = 64;

/// How long the server gets to settle before the idle measurement.
const SETTLE: Duration = Duration::from_millis(300);

/// How a scale client drives its connections (`bench --scale-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleClient {
    /// `IpcClient::request`, one task per request in flight.
    Rpc,
    /// Frames with ids over `FramedStream`, one task per connection.
    Framed,
}

/// One scale row: the figures for N clients.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Always `lapce-ipc-rpc`.
    pub transport: String,
    /// Always `scale`.
    pub test: String,
    /// Clients connected at once.
    pub clients: usize,
    /// Client processes they were spread over.
    pub client_processes: usize,
    /// Request payload in bytes.
    pub payload_bytes: u64,
    /// Requests in flight per connection during the load.
    pub inflight_per_connection: usize,
    /// The clients' API.
    pub client_api: ScaleClient,
    /// The server's runtime threads (1: tokio's current-thread runtime).
    pub server_threads: usize,
    /// Server idle, no clients.
    pub idle: Footprint,
    /// Server with all clients connected and idle, after the trim wait.
    pub connected: Footprint,
    /// Seconds waited with all clients idle before `connected` was measured.
    pub trim_wait_secs: f64,
    /// `(connected RSS - idle RSS) / clients`, KiB.
    pub rss_per_connection_kib: Option<f64>,
    /// Descriptors per connection: `(connected fds - idle fds) / clients`, less those of the
    /// warm segments the connecting burst added to the pool ([`Footprint::fds_per_connection`]).
    pub fds_per_connection: Option<f64>,
    /// The server after all clients left.
    pub disconnected: Footprint,
    /// Of its descriptors then, those beyond the idle count that its warm segments and epoll
    /// instances do not explain ([`Footprint::unexplained_fds`]): 0 when nothing leaked.
    pub fds_left_after_disconnect: Option<i64>,
    /// Requests answered during the load, all processes.
    pub requests: Option<u64>,
    /// Requests per second, all processes (total requests / longest process's load time).
    pub requests_per_sec: Option<f64>,
    /// Latency of one request (merged histograms of all processes), median, µs.
    pub rtt_p50_us: Option<f64>,
    /// Latency, 99th percentile, µs.
    pub rtt_p99_us: Option<f64>,
    /// Latency, maximum, µs.
    pub rtt_max_us: Option<f64>,
    /// Failed requests (must be 0).
    pub request_errors: Option<u64>,
    /// What went wrong, if the row failed.
    pub error: Option<String>,
}

impl ScaleRow {
    fn new(clients: usize, processes: usize, api: ScaleClient, args: &BenchArgs) -> ScaleRow {
        ScaleRow {
            transport: Transport::Rpc.name().into(),
            test: "scale".into(),
            clients,
            client_processes: processes,
            payload_bytes: PAYLOAD as u64,
            inflight_per_connection: args.scale_inflight as usize,
            client_api: api,
            server_threads: args.scale_server_threads as usize,
            idle: Footprint::default(),
            connected: Footprint::default(),
            trim_wait_secs: args.trim_wait,
            rss_per_connection_kib: None,
            fds_per_connection: None,
            disconnected: Footprint::default(),
            fds_left_after_disconnect: None,
            requests: None,
            requests_per_sec: None,
            rtt_p50_us: None,
            rtt_p99_us: None,
            rtt_max_us: None,
            request_errors: None,
            error: None,
        }
    }
}

/// Runs the scale rows (one per N of `--scale`), a step of `bench.progress` each: its phases on
/// the bar (the same lines, plain, without one).
pub(super) fn run(bench: &Bench<'_>, args: &BenchArgs) -> Vec<ScaleRow> {
    let limit = child::raise_fd_limit();
    let secs = args.scale_secs.unwrap_or(if args.quick { 1.0 } else { 3.0 });
    let mut rows = Vec::new();
    for &n in &args.scale {
        let n = n as usize;
        let processes = CLIENT_PROCESSES.min(n);
        for &api in &args.scale_client {
            let mut row = ScaleRow::new(n, processes, api, args);
            if let Err(e) = child::check_fd_limit(n, limit).and_then(|()| one(bench, args, n, secs, &mut row))
            {
                bench.progress.note(format!("  FAILED: {e}"));
                row.error = Some(e.to_string());
            }
            bench.progress.advance();
            rows.push(row);
        }
    }
    rows
}

/// Measures N clients into `row`: a server child for the row, then [`RowRun::phases`] under its
/// watchdog.
fn one(bench: &Bench<'_>, args: &BenchArgs, n: usize, secs: f64, row: &mut ScaleRow) -> Result<()> {
    let (name, file) = bench.endpoint(Transport::Rpc);
    let server_args = ServerArgs {
        scale_clients: Some(n as u64),
        threads: args.scale_server_threads,
        parent_pid: Some(std::process::id()),
        ..ServerArgs::new(Transport::Rpc, Mode::Adaptive, name.clone(), Test::Echo, PAYLOAD)
    };
    let cleanup = if file.as_os_str().is_empty() { Vec::new() } else { vec![file] };
    let timeout = Duration::from_secs(args.timeout);
    // The whole row runs under the server's watchdog.
    let budget = timeout + Duration::from_secs_f64(args.trim_wait + secs);
    let mut server = ServerProcess::spawn(&server_args, budget, cleanup)?;
    server.wait_ready()?;
    let run = RowRun { bench, args, name: &name, pid: server.pid(), n, secs, timeout };
    match run.phases(row) {
        Ok(()) => server.finish(Duration::from_secs(10)),
        Err(e) => Err(server.explain(e)),
    }
}

/// One scale row being measured: its server child (`pid`, listening on `name`) and what it is
/// asked to carry.
struct RowRun<'a> {
    bench: &'a Bench<'a>,
    args: &'a BenchArgs,
    name: &'a str,
    pid: u32,
    /// Clients.
    n: usize,
    /// Seconds of load.
    secs: f64,
    /// Bound of each line awaited from a client process.
    timeout: Duration,
}

impl RowRun<'_> {
    /// The phases of a row, each on the progress bar: the server idle, N clients connected and
    /// idle, the load, the disconnection, then the sentinel client the server exits after.
    fn phases(&self, row: &mut ScaleRow) -> Result<()> {
        let progress = &self.bench.progress;
        let (n, pid) = (self.n, self.pid);
        progress.phase(format!("scale {n}: server pid {pid}, settling {} ms...", SETTLE.as_millis()));
        std::thread::sleep(SETTLE);
        row.idle = footprint(pid);
        let mut clients = self.connect(row.client_processes, row.client_api)?;
        self.trim_wait(row);
        self.load(&mut clients, row)?;
        for c in clients {
            c.close(Duration::from_secs(10))?;
        }
        self.disconnected(row);
        self.sentinel()
    }

    /// Starts the client processes and waits until all N connections are up.
    fn connect(&self, processes: usize, api: ScaleClient) -> Result<Vec<ClientProcess>> {
        let n = self.n;
        self.bench.progress.phase(format!("scale {n}: connecting {n} clients from {processes} processes..."));
        let started = Instant::now();
        let children = (0..processes).map(|p| ScaleClientArgs {
            name: self.name.to_string(),
            connections: child::share(n, processes, p),
            inflight: self.args.scale_inflight as usize,
            secs: self.secs,
            parent_pid: Some(std::process::id()),
            api,
        });
        let clients = child::spawn_connected(children, self.timeout)?;
        self.bench.progress.line(format!(
            "scale {n}: {n} connected in {:.2} s; idle for {} s (trim wait)...",
            started.elapsed().as_secs_f64(),
            self.args.trim_wait
        ));
        Ok(clients)
    }

    /// Waits `--trim-wait` with all clients connected and idle, then measures the server.
    fn trim_wait(&self, row: &mut ScaleRow) {
        let n = self.n;
        std::thread::sleep(Duration::from_secs_f64(self.args.trim_wait));
        row.connected = footprint(self.pid);
        row.rss_per_connection_kib =
            row.connected.rss_kib.zip(row.idle.rss_kib).map(|(a, b)| (a as f64 - b as f64) / n as f64);
        row.fds_per_connection = row.connected.fds_per_connection(&row.idle, n as u64);
    }

    /// Starts the load on every client process at once and merges their reports into `row`.
    fn load(&self, clients: &mut [ClientProcess], row: &mut ScaleRow) -> Result<()> {
        let (n, secs) = (self.n, self.secs);
        let inflight = self.args.scale_inflight;
        self.bench
            .progress
            .phase(format!("scale {n}: load, {inflight} in flight per connection, {secs} s..."));
        for c in clients.iter_mut() {
            c.send("go")?;
        }
        let mut hist = new_histogram()?;
        let (mut requests, mut errors, mut longest) = (0u64, 0u64, 0u64);
        let result_timeout = self.timeout + Duration::from_secs_f64(secs);
        for c in clients.iter_mut() {
            let line = c.line(result_timeout, "report its load")?;
            let (r, e, ns, h) = child::parse_result(&line)?;
            requests += r;
            errors += e;
            longest = longest.max(ns);
            hist.add(&h).map_err(|e| format!("cannot merge histograms: {e}"))?;
        }
        row.requests = Some(requests);
        row.request_errors = Some(errors);
        if longest > 0 {
            row.requests_per_sec = Some(requests as f64 / (longest as f64 / 1e9));
        }
        if !hist.is_empty() {
            row.rtt_p50_us = Some(hist.value_at_quantile(0.5) as f64 / 1000.0);
            row.rtt_p99_us = Some(hist.value_at_quantile(0.99) as f64 / 1000.0);
            row.rtt_max_us = Some(hist.max() as f64 / 1000.0);
        }
        self.bench.progress.line(format!(
            "scale {n}: {} req/s, p50 {} µs, p99 {} µs, {errors} errors; disconnecting...",
            row.requests_per_sec.map_or("-".into(), rate),
            row.rtt_p50_us.map_or("-".into(), fmt_us),
            row.rtt_p99_us.map_or("-".into(), fmt_us),
        ));
        Ok(())
    }

    /// Measures the server once it has noticed every hang-up: waits (bounded) until its
    /// descriptors are all explained. (Above 0 connections are still closing; below 0 the pool
    /// is making a warm segment whose memfd exists and whose doorbells do not yet.)
    fn disconnected(&self, row: &mut ScaleRow) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            row.disconnected = footprint(self.pid);
            row.fds_left_after_disconnect = row.disconnected.unexplained_fds(&row.idle);
            if row.fds_left_after_disconnect.is_none_or(|left| left == 0) || Instant::now() >= deadline {
                break;
            }
        }
    }

    /// The sentinel client: the server exits once it has come and gone.
    fn sentinel(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let client = IpcClient::connect(self.name, IpcConfig::default()).await?;
            drop(client);
            Ok::<(), lapce_ipc::IpcError>(())
        })?;
        drop(runtime);
        Ok(())
    }
}
