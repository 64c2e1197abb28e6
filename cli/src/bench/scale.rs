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
//! The parent drives the client children over lines on their stdin and stdout:
//! child → `connected K` (or `error MSG`), parent → `go`, child → `result REQUESTS ERRORS
//! ELAPSED_NS V:C,V:C,...` (its latency histogram as value:count pairs, merged by the parent),
//! parent → `close`, child exits. Every line is awaited under a timeout; children are killed and
//! reaped when their guard drops (also on error), and die with the parent (Linux) or when their
//! stdin closes.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapce_ipc::frame::{FramedStream, MessageType};
use lapce_ipc::{IpcClient, IpcConfig, SharedMemoryStream};
use serde::Serialize;

use super::child::{self, ServerProcess};
use super::measure::{new_histogram, Result};
use super::report::{fmt_us, rate};
use super::{Bench, BenchArgs, Transport};

/// Client processes the N connections are spread over (fewer when N is smaller).
pub const CLIENT_PROCESSES: usize = 4;

/// Payload of the load's requests.
pub const PAYLOAD: usize = 64;

/// File descriptors one connection is assumed to need at most on either side, for the check of
/// the descriptor limit before a run (3 per connection, plus slack for the processes' own).
const FDS_PER_CONNECTION_BOUND: u64 = 4;

/// Descriptors the limit must leave for everything else: the process's own, and the warm pool,
/// which may hold a quarter of the limit (`StreamConfig::warm_pool`).
fn fds_for_connections(limit: u64) -> u64 {
    (limit - limit / 4).saturating_sub(256)
}

/// How long the server gets to settle before the idle measurement.
const SETTLE: Duration = Duration::from_millis(300);

/// Arguments of the hidden `bench-scale-client` subcommand (a client child of `--scale`).
#[derive(Debug, clap::Args)]
pub struct ScaleClientArgs {
    /// Listener name of the server.
    #[arg(long)]
    pub name: String,
    /// Connections this process opens.
    #[arg(long)]
    pub connections: usize,
    /// Requests in flight per connection during the load.
    #[arg(long)]
    pub inflight: usize,
    /// Seconds of load.
    #[arg(long)]
    pub secs: f64,
    /// Pid of the bench process; the client dies with it.
    #[arg(long)]
    pub parent_pid: Option<u32>,
    /// The API the connections are driven through.
    #[arg(long, value_enum, default_value_t = ScaleClient::Rpc)]
    pub api: ScaleClient,
}

/// How a scale client drives its connections (`bench --scale-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleClient {
    /// `IpcClient::request`, one task per request in flight.
    Rpc,
    /// Frames with ids over `FramedStream`, one task per connection.
    Framed,
}

/// Memory and descriptors of a process at one moment (`None`: not available here).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Footprint {
    /// `VmRSS`, KiB.
    pub rss_kib: Option<u64>,
    /// `RssAnon`, KiB.
    pub rss_anon_kib: Option<u64>,
    /// `RssShmem`, KiB.
    pub rss_shmem_kib: Option<u64>,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: Option<u64>,
    /// Of those, lapce-ipc segments (memfds, or POSIX shared memory objects): the warm pool's
    /// (a segment handed out to a client is mapped, its descriptor closed).
    pub segments: Option<u64>,
    /// Of the segments, those handed out to a client: their mapping has resident pages (the
    /// server writes the ring headers when it hands a segment out; a warm one is untouched,
    /// and a used one is never made warm again). After the clients left, any is a connection
    /// the server did not close.
    pub segments_used: Option<u64>,
    /// Of the descriptors, epoll instances (the runtime's, and the hang-up watcher's once a
    /// client came).
    pub epolls: Option<u64>,
}

/// Descriptors a warm segment holds in the server: the segment and both ends of its two
/// doorbells (the client's ends go to the client when it is handed out).
pub const FDS_PER_WARM_SEGMENT: u64 = 5;

impl Footprint {
    /// Warm segments: those not handed out (the only segments with a descriptor).
    pub fn warm_segments(&self) -> Option<i64> {
        Some(self.segments? as i64)
    }

    /// Descriptors less those of the warm pool, which grows under bursts of clients and shrinks
    /// back only after a quiet while: what connections and everything else hold.
    pub fn fds_beyond_warm_pool(&self) -> Option<i64> {
        Some(self.fds? as i64 - FDS_PER_WARM_SEGMENT as i64 * self.warm_segments()?)
    }

    /// Descriptors held now beyond those of `idle` that neither more warm segments (a burst of
    /// connections grows the pool for a while) nor the hang-up watcher's epoll (made with the
    /// first connection) explain: with no client connected, anything else is a leak, and a
    /// connection the server kept counts whole (its segment is a used one). `None` when not
    /// measured.
    pub fn unexplained_fds(&self, idle: &Footprint) -> Option<i64> {
        let fds = self.fds? as i64 - idle.fds? as i64;
        let warm = self.warm_segments()? - idle.warm_segments()?;
        let epolls = self.epolls? as i64 - idle.epolls? as i64;
        Some(fds - FDS_PER_WARM_SEGMENT as i64 * warm - epolls.min(1))
    }

    /// Descriptors per connection with `clients` connected now: the growth since `idle`, less
    /// [`FDS_PER_WARM_SEGMENT`] for every warm segment more than then (the warm pool grows while
    /// clients connect in a burst, and shrinks back 30 s later), divided by `clients`. Without
    /// the segment counts, the plain growth per client.
    pub fn fds_per_connection(&self, idle: &Footprint, clients: u64) -> Option<f64> {
        if clients == 0 {
            return None;
        }
        let fds = self.fds? as f64 - idle.fds? as f64;
        let warm_growth = match (self.warm_segments(), idle.warm_segments()) {
            (Some(now), Some(then)) => (now - then) as f64,
            _ => 0.0,
        };
        Some((fds - FDS_PER_WARM_SEGMENT as f64 * warm_growth) / clients as f64)
    }
}

/// Whether a descriptor's or a mapping's target is a lapce-ipc segment: memfd backend
/// `/memfd:lapce-ipc (deleted)`, posix backend `/dev/shm/lapce-ipc-…`.
#[cfg(target_os = "linux")]
fn is_segment(target: &str) -> bool {
    target.starts_with("/memfd:lapce-ipc") || target.starts_with("/dev/shm/lapce-ipc-")
}

/// Mappings of segments in `smaps` (the text of `/proc/PID/smaps`) with resident pages.
#[cfg(target_os = "linux")]
fn used_segment_mappings(smaps: &str) -> u64 {
    let (mut used, mut in_segment) = (0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.ends_with(':') {
            // A field of the current mapping: `Rss:   4 kB`.
            if in_segment && first == "Rss:" {
                used += u64::from(line.split_whitespace().nth(1).is_some_and(|kib| kib != "0"));
            }
        } else {
            // A mapping's first line: `start-end perms offset dev inode [path]`.
            let path = line.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            in_segment = is_segment(&path);
        }
    }
    used
}

/// Reads the footprint of `pid` from `/proc` (Linux).
#[cfg(target_os = "linux")]
pub fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let (mut fds, mut segments, mut epolls) = (None, 0, 0);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        let mut count = 0;
        for entry in dir.flatten() {
            count += 1;
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            let target = target.to_string_lossy();
            if is_segment(&target) {
                segments += 1;
            } else if target == "anon_inode:[eventpoll]" {
                epolls += 1;
            }
        }
        fds = Some(count);
    }
    Footprint {
        rss_kib: field("VmRSS"),
        rss_anon_kib: field("RssAnon"),
        rss_shmem_kib: field("RssShmem"),
        fds,
        segments: fds.map(|_| segments),
        segments_used: std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .ok()
            .map(|m| used_segment_mappings(&m)),
        epolls: fds.map(|_| epolls),
    }
}

/// Not available outside Linux: everything `n/a`.
#[cfg(not(target_os = "linux"))]
pub fn footprint(_pid: u32) -> Footprint {
    Footprint::default()
}

/// The library's smallest server, `examples/echo_server` (an `IpcServer` with the default
/// configuration and an echo handler, nothing else), next to this binary when built with
/// `cargo build --release -p lapce-ipc --example echo_server`.
fn lean_server_path() -> std::result::Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this binary: {e}"))?;
    let dir = exe.parent().ok_or("this binary has no directory")?;
    let lean = dir.join("examples").join(format!("echo_server{}", std::env::consts::EXE_SUFFIX));
    if lean.is_file() {
        Ok(lean)
    } else {
        Err(format!(
            "not built ({}; build it with `cargo build --release -p lapce-ipc --example echo_server`)",
            lean.display()
        ))
    }
}

/// A lean server child, killed and reaped when dropped, its socket file removed.
struct LeanServer {
    child: Child,
    name: String,
}

impl Drop for LeanServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, it could not remove its socket file.
        if let Ok(path) = lapce_ipc::socket_path(&self.name) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts of the lean server measured idle: its RSS varies by a few percent from one start to
/// the next (mostly which pages of the C library the kernel maps along with the ones touched),
/// so the target is judged on the median.
const LEAN_STARTS: usize = 3;

/// The lean server idle: the start with the median RSS of [`LEAN_STARTS`], and the RSS range.
#[derive(Debug, Clone, Copy)]
pub struct LeanIdle {
    /// The start with the median RSS.
    pub median: Footprint,
    /// The smallest RSS of the starts, KiB.
    pub rss_min_kib: Option<u64>,
    /// The largest, KiB.
    pub rss_max_kib: Option<u64>,
}

/// The idle footprint of the lean server ([`lean_server_path`]), as the one an application
/// embedding the library would have: the CLI's own server carries the benchmark suite, the
/// plots and the CLI's dependencies in its binary, whose pages count in its RSS.
pub fn lean_server_idle() -> std::result::Result<LeanIdle, String> {
    let mut starts = (0..LEAN_STARTS).map(lean_server_start).collect::<std::result::Result<Vec<_>, _>>()?;
    starts.sort_by_key(|f| f.rss_kib);
    let rss = starts.iter().filter_map(|f| f.rss_kib);
    Ok(LeanIdle { median: starts[LEAN_STARTS / 2], rss_min_kib: rss.clone().min(), rss_max_kib: rss.max() })
}

/// One start of the lean server: its footprint once it listens and has settled.
fn lean_server_start(start: usize) -> std::result::Result<Footprint, String> {
    let path = lean_server_path()?;
    let name = format!("lean-idle-{}-{start}", std::process::id());
    let child = Command::new(&path)
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let mut lean = LeanServer { child, name };
    let stdout = lean.child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    // It prints one line once it listens; EOF means it died.
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("reading its output: {e}"))?;
    if !line.starts_with("listening on ") {
        return Err(format!("{} did not start: {:?}", path.display(), line.trim()));
    }
    std::thread::sleep(SETTLE);
    Ok(footprint(lean.child.id()))
}

/// Raises the soft limit of open files to the hard limit and returns the soft limit now in
/// force (`None` when unknown or unlimited).
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    getrlimit(Resource::Nofile).current
}

/// No descriptor limit to raise here (Windows handles are not limited that way).
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
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

/// A client child, killed and reaped when dropped.
pub(crate) struct ClientProcess {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl ClientProcess {
    pub(crate) fn spawn(args: &[OsString]) -> Result<ClientProcess> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the current executable: {e}"))?;
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ClientProcess { child, stdin, lines, reader: Some(reader) })
    }

    /// Sends one line to the child.
    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("client stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The child's next line, within `timeout`; its `error ...` lines become errors.
    pub(crate) fn line(&mut self, timeout: Duration, what: &str) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => match line.strip_prefix("error ") {
                Some(e) => Err(format!("client process {}: {e}", self.child.id()).into()),
                None => Ok(line),
            },
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "client process {} did not {what} within {} s",
                self.child.id(),
                timeout.as_secs()
            )
            .into()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("client process {} exited before it could {what} ({status})", self.child.id())
                    .into())
            }
        }
    }

    /// Tells the child to close and waits (at most `grace`) for it to exit.
    pub(crate) fn close(mut self, grace: Duration) -> Result<()> {
        let _ = self.send("close");
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("client process failed ({status})").into())
                };
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "client process {} did not exit within {} s",
                    self.child.id(),
                    grace.as_secs()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// How many clients the descriptor limit leaves room for (see [`check_fd_limit`]).
pub(crate) fn clients_within_fd_limit(limit: Option<u64>) -> Option<usize> {
    limit.map(|l| (fds_for_connections(l) / FDS_PER_CONNECTION_BOUND) as usize)
}

/// Checks that the descriptor limit leaves room for `clients` connections.
pub(crate) fn check_fd_limit(clients: usize, limit: Option<u64>) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let needed = clients as u64 * FDS_PER_CONNECTION_BOUND;
    if fds_for_connections(limit) < needed {
        return Err(format!(
            "the open-file limit ({limit}, raised to the hard limit) is too low for {clients} clients: the server \
             may need about {needed} descriptors for them, and a quarter of the limit goes to its warm pool; \
             raise the hard limit (ulimit -Hn) or use a smaller --scale"
        )
        .into());
    }
    Ok(())
}

/// Runs the scale rows (one per N of `--scale`), a step of `bench.progress` each: its phases on
/// the bar (the same lines, plain, without one).
pub(super) fn run(bench: &Bench<'_>, args: &BenchArgs) -> Vec<ScaleRow> {
    let limit = raise_fd_limit();
    let secs = args.scale_secs.unwrap_or(if args.quick { 1.0 } else { 3.0 });
    let mut rows = Vec::new();
    for &n in &args.scale {
        let n = n as usize;
        let processes = CLIENT_PROCESSES.min(n);
        for &api in &args.scale_client {
            let mut row = ScaleRow::new(n, processes, api, args);
            if let Err(e) = check_fd_limit(n, limit).and_then(|()| one(bench, args, n, secs, &mut row)) {
                bench.progress.note(format!("  FAILED: {e}"));
                row.error = Some(e.to_string());
            }
            bench.progress.advance();
            rows.push(row);
        }
    }
    rows
}

/// Measures N clients into `row`.
fn one(bench: &Bench<'_>, args: &BenchArgs, n: usize, secs: f64, row: &mut ScaleRow) -> Result<()> {
    let (name, file) = bench.endpoint(Transport::Rpc);
    let timeout = Duration::from_secs(args.timeout);
    let server_args: Vec<OsString> = vec![
        "bench-server".into(),
        "--transport".into(),
        Transport::Rpc.name().into(),
        "--mode".into(),
        "adaptive".into(),
        "--name".into(),
        name.clone().into(),
        "--test".into(),
        "echo".into(),
        "--payload".into(),
        PAYLOAD.to_string().into(),
        "--scale-clients".into(),
        n.to_string().into(),
        "--threads".into(),
        args.scale_server_threads.to_string().into(),
        "--parent-pid".into(),
        std::process::id().to_string().into(),
    ];
    let cleanup = if file.as_os_str().is_empty() { Vec::new() } else { vec![file] };
    // The whole row runs under the server's watchdog.
    let budget = timeout + Duration::from_secs_f64(args.trim_wait + secs);
    let mut server = ServerProcess::spawn(&server_args, budget, cleanup)?;
    server.wait_ready()?;
    let pid = server.pid();
    let progress = &bench.progress;
    let result = (|| -> Result<()> {
        progress.phase(format!("scale {n}: server pid {pid}, settling {} ms...", SETTLE.as_millis()));
        std::thread::sleep(SETTLE);
        row.idle = footprint(pid);

        let processes = row.client_processes;
        progress.phase(format!("scale {n}: connecting {n} clients from {processes} processes..."));
        let started = Instant::now();
        let mut clients = Vec::new();
        for p in 0..processes {
            let k = n / processes + usize::from(p < n % processes);
            let client_args: Vec<OsString> = vec![
                "bench-scale-client".into(),
                "--name".into(),
                name.clone().into(),
                "--connections".into(),
                k.to_string().into(),
                "--inflight".into(),
                args.scale_inflight.to_string().into(),
                "--secs".into(),
                secs.to_string().into(),
                "--parent-pid".into(),
                std::process::id().to_string().into(),
                "--api".into(),
                clap::ValueEnum::to_possible_value(&row.client_api)
                    .expect("no skipped variants")
                    .get_name()
                    .into(),
            ];
            clients.push(ClientProcess::spawn(&client_args)?);
        }
        for c in &mut clients {
            let line = c.line(timeout, "connect")?;
            if !line.starts_with("connected ") {
                return Err(format!("unexpected line from a client process: {line:?}").into());
            }
        }
        progress.line(format!(
            "scale {n}: {n} connected in {:.2} s; idle for {} s (trim wait)...",
            started.elapsed().as_secs_f64(),
            args.trim_wait
        ));
        std::thread::sleep(Duration::from_secs_f64(args.trim_wait));
        row.connected = footprint(pid);
        row.rss_per_connection_kib =
            row.connected.rss_kib.zip(row.idle.rss_kib).map(|(a, b)| (a as f64 - b as f64) / n as f64);
        row.fds_per_connection = row.connected.fds_per_connection(&row.idle, n as u64);

        progress
            .phase(format!("scale {n}: load, {} in flight per connection, {secs} s...", args.scale_inflight));
        for c in &mut clients {
            c.send("go")?;
        }
        let mut hist = new_histogram()?;
        let (mut requests, mut errors, mut longest) = (0u64, 0u64, 0u64);
        let result_timeout = timeout + Duration::from_secs_f64(secs);
        for c in &mut clients {
            let line = c.line(result_timeout, "report its load")?;
            let (r, e, ns, h) = parse_result(&line)?;
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
        progress.line(format!(
            "scale {n}: {} req/s, p50 {} µs, p99 {} µs, {errors} errors; disconnecting...",
            row.requests_per_sec.map_or("-".into(), rate),
            row.rtt_p50_us.map_or("-".into(), fmt_us),
            row.rtt_p99_us.map_or("-".into(), fmt_us),
        ));
        for c in clients {
            c.close(Duration::from_secs(10))?;
        }
        // Let the server notice every hang-up: wait (bounded) until its descriptors are all
        // explained. (Above 0 connections are still closing; below 0 the pool is making a warm
        // segment whose memfd exists and whose doorbells do not yet.)
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            row.disconnected = footprint(pid);
            row.fds_left_after_disconnect = row.disconnected.unexplained_fds(&row.idle);
            if row.fds_left_after_disconnect.is_none_or(|left| left == 0) || Instant::now() >= deadline {
                break;
            }
        }
        // The sentinel client: the server exits once it has come and gone.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let client = IpcClient::connect(&name, IpcConfig::default()).await?;
            drop(client);
            Ok::<(), lapce_ipc::IpcError>(())
        })?;
        drop(runtime);
        Ok(())
    })();
    match result {
        Ok(()) => server.finish(Duration::from_secs(10)),
        Err(e) => Err(server.explain(e)),
    }
}

/// Parses a `result REQUESTS ERRORS ELAPSED_NS V:C,...` line.
pub(crate) fn parse_result(line: &str) -> Result<(u64, u64, u64, Histogram<u64>)> {
    let bad = || format!("bad result line from a client process: {line:?}");
    let mut parts = line.split(' ');
    if parts.next() != Some("result") {
        return Err(bad().into());
    }
    let mut num = || parts.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
    let (requests, errors, ns) = (num()?, num()?, num()?);
    let mut hist = new_histogram()?;
    if let Some(pairs) = parts.next() {
        for pair in pairs.split(',').filter(|p| !p.is_empty()) {
            let (v, c) = pair.split_once(':').ok_or_else(bad)?;
            let (v, c) = (v.parse::<u64>().map_err(|_| bad())?, c.parse::<u64>().map_err(|_| bad())?);
            hist.record_n(v, c).map_err(|_| bad())?;
        }
    }
    Ok((requests, errors, ns, hist))
}

/// Formats a `result` line (see [`parse_result`]).
pub(crate) fn format_result(requests: u64, errors: u64, elapsed: Duration, hist: &Histogram<u64>) -> String {
    let pairs: Vec<String> =
        hist.iter_recorded().map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value())).collect();
    format!("result {requests} {errors} {} {}", elapsed.as_nanos(), pairs.join(","))
}

/// A client child's start: tells the parent its `n` connections are up (`connected N` on
/// stdout), then waits for the parent's `go` on stdin, so that every child starts its load at
/// once.
pub(crate) fn connected_then_wait_for_go(n: usize) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "connected {n}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        return Err(format!("expected go, got {:?}", line.trim()).into());
    }
    Ok(())
}

/// Waits for the parent's next line on stdin (`stop`, `close`) or its end: either way, the
/// client child goes on to stop.
pub(crate) fn wait_for_parent() {
    let _ = std::io::stdin().lock().read_line(&mut String::new());
}

/// The client child (`bench-scale-client`).
pub fn client(args: &ScaleClientArgs) -> std::process::ExitCode {
    child_exit("bench-scale-client", client_inner(args))
}

/// The exit of a client child `name`: an error goes to the parent as an `error` line on stdout
/// (what it reads) and to stderr for a person.
pub(crate) fn child_exit(name: &str, outcome: Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "error {e}");
            let _ = out.flush();
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn client_inner(args: &ScaleClientArgs) -> Result<()> {
    // Outside Linux the parent check would read stdin, which carries this child's commands; the
    // child ends there when its stdin closes instead.
    child::die_with_parent(if cfg!(target_os = "linux") { args.parent_pid } else { None })?;
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let clients = runtime.block_on(connect_all(&args.name, args.connections, args.api))?;
    connected_then_wait_for_go(clients.len())?;
    let secs = Duration::from_secs_f64(args.secs);
    let inflight = args.inflight;
    // One histogram for the whole process, shared by every request loop: a histogram per loop
    // (hundreds of KiB each at this resolution) made thousands of loops cost gigabytes, and
    // the load measured the allocator. The runtime has one worker, so the lock is uncontended.
    let hist = Arc::new(Mutex::new(new_histogram()?));
    let (requests, errors, elapsed, clients) = runtime.block_on(async {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + secs;
        let mut set = tokio::task::JoinSet::new();
        let mut kept = Vec::new();
        for (c, client) in clients.into_iter().enumerate() {
            match client {
                Connection::Rpc(client) => {
                    for t in 0..inflight {
                        set.spawn(rpc_loop(client.clone(), (c * 31 + t) as u8, deadline, hist.clone()));
                    }
                    kept.push(client);
                }
                Connection::Framed(stream) => {
                    set.spawn(framed_loop(*stream, inflight, deadline, hist.clone()));
                }
            }
        }
        let (mut ok, mut errors) = (0u64, 0u64);
        while let Some(r) = set.join_next().await {
            match r {
                Ok((o, e)) => {
                    ok += o;
                    errors += e;
                }
                Err(_) => errors += 1,
            }
        }
        (ok, errors, start.elapsed(), kept)
    });
    let hist = hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = std::io::stdout();
    writeln!(out, "{}", format_result(requests, errors, elapsed, &hist))?;
    out.flush()?;
    wait_for_parent(); // `close`
    drop(clients);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// One scale client connection.
enum Connection {
    Rpc(IpcClient),
    /// Greeted already (the server's `ready` frame read).
    Framed(Box<FramedStream>),
}

/// Opens `count` connections to `name`, a few at a time (the server accepts one after another
/// anyway).
async fn connect_all(name: &str, count: usize, api: ScaleClient) -> Result<Vec<Connection>> {
    let mut clients = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for _ in chunk {
            let name = name.to_owned();
            set.spawn(async move {
                match api {
                    ScaleClient::Rpc => {
                        Ok(Connection::Rpc(IpcClient::connect(&name, IpcConfig::default()).await?))
                    }
                    ScaleClient::Framed => {
                        let mut framed = FramedStream::new(SharedMemoryStream::connect(&name).await?);
                        let (kind, id) = framed.recv_with(|kind, _, id| (kind, id)).await?;
                        if (kind, id) != (MessageType::Control, 0) {
                            return Err(format!("expected the server's greeting, got {kind:?} #{id}").into());
                        }
                        Ok::<_, super::measure::Error>(Connection::Framed(Box::new(framed)))
                    }
                }
            });
        }
        while let Some(c) = set.join_next().await {
            clients.push(c.map_err(|e| format!("connect task: {e}"))??);
        }
    }
    Ok(clients)
}

/// Records one round trip.
fn record(hist: &Mutex<Histogram<u64>>, sent: Instant) {
    let rtt = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
    hist.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(rtt);
}

/// One request in flight on an `IpcClient`, again and again until `deadline`: requests answered
/// and errors (a wrong echo or a failed request ends the loop: a dead connection would
/// otherwise fail as fast as it can).
async fn rpc_loop(
    client: IpcClient,
    seed: u8,
    deadline: tokio::time::Instant,
    hist: Arc<Mutex<Histogram<u64>>>,
) -> (u64, u64) {
    let mut ok = 0u64;
    let mut msg = [0x5Au8; PAYLOAD];
    let mut i = seed;
    let deadline = deadline.into_std();
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        i = i.wrapping_add(1);
        msg[0] = i;
        match client.request(MessageType::Data, msg).await {
            Ok(answer) if answer.len() == PAYLOAD && answer[0] == i => {
                record(&hist, sent);
                ok += 1;
            }
            _ => return (ok, 1),
        }
    }
    (ok, 0)
}

/// `inflight` requests kept in flight on one framed stream until `deadline`, then the last
/// answers collected: requests answered and errors. Each request has the next id and its id's
/// low byte as first payload byte; an answer must be a `Response` to the oldest request in
/// flight (one connection's requests are answered in order by an echo that completes at
/// once) with that payload, or it counts as an error and ends the loop.
async fn framed_loop(
    mut stream: FramedStream,
    inflight: usize,
    deadline: tokio::time::Instant,
    hist: Arc<Mutex<Histogram<u64>>>,
) -> (u64, u64) {
    let mut sent_at = std::collections::VecDeque::with_capacity(inflight);
    let mut msg = [0x5Au8; PAYLOAD];
    let (mut next, mut ok) = (1u64, 0u64);
    loop {
        while sent_at.len() < inflight && tokio::time::Instant::now() < deadline {
            msg[0] = next as u8;
            sent_at.push_back((next, Instant::now()));
            if stream.send_with_id(MessageType::Data, next, &msg).await.is_err() {
                return (ok, 1);
            }
            next += 1;
        }
        let Some(&(want, sent)) = sent_at.front() else { return (ok, 0) };
        let answer = stream.recv_with(|kind, payload, id| {
            kind == MessageType::Response
                && id == want
                && payload.len() == PAYLOAD
                && payload[0] == want as u8
        });
        match answer.await {
            Ok(true) => {
                record(&hist, sent);
                sent_at.pop_front();
                ok += 1;
            }
            _ => return (ok, 1),
        }
    }
}

/// How the server's runtime is described: `threads` as given to `--scale-server-threads`.
fn server_runtime(threads: usize) -> String {
    match threads {
        1 => "a current-thread runtime".to_string(),
        n => format!("a multi-thread runtime of {n} workers"),
    }
}

/// A figure in KiB shown in MiB, or "n/a" when it was not measured.
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_string(), |k| format!("{:.2}", k as f64 / 1024.0))
}

/// Prints the scale table.
pub fn print_table(rows: &[ScaleRow]) {
    let mut apis: Vec<ScaleClient> = rows.iter().map(|r| r.client_api).collect();
    apis.dedup();
    for (i, api) in apis.into_iter().enumerate() {
        if i > 0 {
            outln!();
        }
        let of_api: Vec<ScaleRow> = rows.iter().filter(|r| r.client_api == api).cloned().collect();
        print_api_table(&of_api);
    }
    outln!(
        "idle = server alone after {} ms; N idle = all N connected and idle after the trim wait; KiB/conn = \
         (N idle - idle) / N; fd/conn likewise, less {FDS_PER_WARM_SEGMENT} per warm segment the burst added;",
        SETTLE.as_millis()
    );
    outln!(
        "fds left = the server's descriptors after the clients left, beyond its idle count, less {FDS_PER_WARM_SEGMENT} \
         per warm segment it kept (a burst of"
    );
    outln!(
        "connections grows the warm pool for 30 s) and the hang-up watcher's epoll: 0 = nothing leaked (a connection \
         kept counts {FDS_PER_WARM_SEGMENT});"
    );
    outln!("req/s over all client processes, p50/p99 from their merged histograms.");
}

/// The table of the rows of one client API.
fn print_api_table(rows: &[ScaleRow]) {
    let num = |v: Option<u64>| v.map_or_else(|| "n/a".to_string(), |k| k.to_string());
    let header = format!(
        "{:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>7} {:>7} {:>8} {:>9} {:>11} {:>9} {:>9} {:>7}",
        "N",
        "idle MB",
        "N idle MB",
        "anon MB",
        "shmem MB",
        "KiB/conn",
        "idle fds",
        "N fds",
        "fd/conn",
        "fds left",
        "in flight",
        "req/s",
        "p50 µs",
        "p99 µs",
        "errors"
    );
    let api = rows.first().map_or(ScaleClient::Rpc, |r| r.client_api);
    let api = match api {
        ScaleClient::Rpc => "IpcClient clients",
        ScaleClient::Framed => "framed-stream clients",
    };
    let server = rows.first().map_or_else(String::new, |r| server_runtime(r.server_threads));
    outln!("scale (lapce-ipc-rpc, {PAYLOAD} B requests, {api}, server on {server}; MB = MiB of server RSS):");
    outln!("{header}");
    outln!("{}", "-".repeat(header.chars().count()));
    for r in rows {
        outln!(
            "{:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>7} {:>7} {:>8} {:>9} {:>11} {:>9} {:>9} {:>7}",
            r.clients,
            mib(r.idle.rss_kib),
            mib(r.connected.rss_kib),
            mib(r.connected.rss_anon_kib),
            mib(r.connected.rss_shmem_kib),
            r.rss_per_connection_kib.map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
            num(r.idle.fds),
            num(r.connected.fds),
            r.fds_per_connection.map_or_else(|| "n/a".into(), |v| format!("{v:.2}")),
            r.fds_left_after_disconnect.map_or_else(|| "n/a".into(), |left| left.to_string()),
            r.clients * r.inflight_per_connection,
            r.requests_per_sec.map_or_else(|| "-".into(), rate),
            r.rtt_p50_us.map_or_else(|| "-".into(), fmt_us),
            r.rtt_p99_us.map_or_else(|| "-".into(), fmt_us),
            num(r.request_errors),
        );
        if let Some(e) = &r.error {
            outln!("    error: {e}");
        }
    }
}

/// The scale targets, judged on this run: `(name, Some(met), detail)`, `None` when not judged.
///
/// The idle target is judged on the lean server (`lean`, the library's smallest server) when it
/// was measured, else on the CLI's server; both figures are shown.
pub fn targets(
    rows: &[ScaleRow],
    lean: &std::result::Result<LeanIdle, String>,
) -> Vec<(String, Option<bool>, String)> {
    let mut out = Vec::new();
    let mb = |k: u64| k as f64 / 1024.0;
    let idle = rows.iter().filter_map(|r| r.idle.rss_kib).max();
    let lean_rss = lean.as_ref().ok().and_then(|l| l.median.rss_kib);
    let cli = idle.map_or_else(
        || "CLI server n/a".to_string(),
        |k| format!("CLI server {:.2} MiB (its binary's pages; largest of the runs)", mb(k)),
    );
    let lean_detail = match lean {
        Ok(l) => format!(
            "lean server (examples/echo_server) {} MiB (median of {LEAN_STARTS} starts, {}-{}), of which \
             anonymous {} MiB",
            mib(l.median.rss_kib),
            mib(l.rss_min_kib),
            mib(l.rss_max_kib),
            mib(l.median.rss_anon_kib)
        ),
        Err(why) => format!("lean server {why}"),
    };
    out.push((
        "server RSS idle ≤ 3 MB".to_string(),
        lean_rss.or(idle).map(|k| mb(k) <= 3.0),
        format!("{lean_detail}; {cli}"),
    ));
    let big = rows.iter().find(|r| r.clients == 1000);
    let rss = big.and_then(|r| r.connected.rss_kib);
    out.push((
        "server RSS with 1000 idle clients ≤ 3 MB + 16 KiB × N".to_string(),
        rss.map(|k| k as f64 <= 3.0 * 1024.0 + 16.0 * 1000.0),
        rss.map_or_else(
            || "n/a (N=1000 not measured)".into(),
            |k| format!("{:.2} MiB vs limit {:.2} MiB", mb(k), (3.0 * 1024.0 + 16.0 * 1000.0) / 1024.0),
        ),
    ));
    let load = big.and_then(|r| r.requests_per_sec.zip(r.request_errors).map(|(v, e)| (r, v, e)));
    out.push((
        "N=1000, zero errors and ≥ 1 M msg/s aggregate".to_string(),
        load.map(|(_, v, e)| e == 0 && v >= 1e6),
        load.map_or_else(
            || "n/a (N=1000 not measured)".into(),
            |(r, v, e)| {
                let api = match r.client_api {
                    ScaleClient::Rpc => "IpcClient",
                    ScaleClient::Framed => "framed-stream clients",
                };
                format!(
                    "{} req/s, {e} errors, {} in flight ({} per connection, {api}; server on {})",
                    rate(v),
                    r.clients * r.inflight_per_connection,
                    r.inflight_per_connection,
                    server_runtime(r.server_threads)
                )
            },
        ),
    ));
    out.push(api_ratio_target(rows));
    out
}

/// `IpcClient` clients against the framed load generator at N = 1000, both of this run: the
/// request/response layer costs the clients little.
fn api_ratio_target(rows: &[ScaleRow]) -> (String, Option<bool>, String) {
    let at = |api| {
        rows.iter()
            .find(|r| r.clients == 1000 && r.client_api == api && r.request_errors == Some(0))
            .and_then(|r| r.requests_per_sec)
    };
    let name =
        "N=1000, IpcClient clients ≥ 0.9× the framed load generator's req/s (--scale-client rpc,framed)";
    match (at(ScaleClient::Rpc), at(ScaleClient::Framed)) {
        (Some(rpc), Some(framed)) => (
            name.to_string(),
            Some(rpc >= 0.9 * framed),
            format!("{} req/s vs {} req/s = {:.2}×", rate(rpc), rate(framed), rpc / framed),
        ),
        _ => (name.to_string(), None, "n/a (both client APIs at N=1000 not measured)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_round_trip() {
        let mut h = new_histogram().unwrap();
        h.record_n(1500, 3).unwrap();
        h.record(90_000).unwrap();
        let line = format_result(4, 0, Duration::from_millis(1), &h);
        let (r, e, ns, back) = parse_result(&line).unwrap();
        assert_eq!((r, e, ns), (4, 0, 1_000_000));
        assert_eq!(back.len(), 4);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(parse_result("result 1 x 3 ").is_err());
        assert!(parse_result("result 0 0 5 ").unwrap().3.is_empty());
    }

    /// A footprint with `fds` descriptors, `segments` warm segments, `used` segments handed out,
    /// and `epolls` epoll instances.
    fn at(fds: u64, segments: u64, used: u64, epolls: u64) -> Footprint {
        Footprint {
            fds: Some(fds),
            segments: Some(segments),
            segments_used: Some(used),
            epolls: Some(epolls),
            ..Footprint::default()
        }
    }

    /// Descriptors after the clients left are explained by warm segments (five each) and the
    /// watcher's one epoll; a connection the server kept is not (three descriptors).
    #[test]
    fn unexplained_fds_discount_warm_segments_and_the_watchers_epoll() {
        let idle = at(588, 64, 0, 1);
        assert_eq!(at(588, 64, 0, 1).unexplained_fds(&idle), Some(0));
        assert_eq!(at(589, 64, 0, 2).unexplained_fds(&idle), Some(0), "the watcher's epoll");
        assert_eq!(at(588 + 64 * 5, 128, 0, 1).unexplained_fds(&idle), Some(0), "a doubled warm pool");
        assert_eq!(at(589 + 64 * 5, 128, 0, 1).unexplained_fds(&idle), Some(1), "one descriptor more");
        assert_eq!(at(591, 64, 1, 1).unexplained_fds(&idle), Some(3), "a connection kept, the pool refilled");
        assert_eq!(at(586, 63, 1, 1).unexplained_fds(&idle), Some(3), "the same, the pool not refilled");
        assert_eq!(at(590, 64, 0, 3).unexplained_fds(&idle), Some(1), "a second new epoll");
        assert_eq!(Footprint::default().unexplained_fds(&idle), None);
    }

    /// Per connection, the warm segments a burst added do not count; the connections' own do.
    #[test]
    fn fds_per_connection_leave_out_warm_pool_growth() {
        let idle = at(588, 64, 0, 1);
        // 512 connections of 3 descriptors each, the pool refilled to 64: no growth.
        assert_eq!(at(588 + 512 * 3, 64, 512, 1).fds_per_connection(&idle, 512), Some(3.0));
        // The same with the pool grown by 448 warm segments.
        let grown = at(588 + 512 * 3 + 448 * 5, 64 + 448, 512, 1);
        assert_eq!(grown.fds_per_connection(&idle, 512), Some(3.0));
        // The pool not refilled yet: 8 segments taken from it.
        assert_eq!(at(588 - 8 * 5 + 8 * 3, 56, 8, 1).fds_per_connection(&idle, 8), Some(3.0));
        // Without segment counts: the plain growth.
        let plain = Footprint { fds: Some(588 + 1024), ..Footprint::default() };
        assert_eq!(
            plain.fds_per_connection(&Footprint { fds: Some(588), ..Footprint::default() }, 128),
            Some(8.0)
        );
        assert_eq!(idle.fds_per_connection(&idle, 0), None);
    }

    /// Segment mappings with resident pages are counted, others and other files are not.
    #[cfg(target_os = "linux")]
    #[test]
    fn used_segments_are_the_resident_segment_mappings() {
        let smaps = "\
5600-5700 r--p 00000000 08:01 123  /usr/bin/server
Rss:                  64 kB
7f00-7f40 rw-s 00000000 00:01 2001  /memfd:lapce-ipc (deleted)
Size:                256 kB
Rss:                   4 kB
VmFlags: rd wr sh mr mw me ms sd
7f40-7f80 rw-s 00000000 00:01 2002  /memfd:lapce-ipc (deleted)
Rss:                   0 kB
7f80-7fc0 rw-s 00000000 00:1a 3003  /dev/shm/lapce-ipc-0000abcd00112233 (deleted)
Rss:                  12 kB
7fc0-7fd0 rw-p 00000000 00:00 0
Rss:                   8 kB
";
        assert_eq!(used_segment_mappings(smaps), 2);
        assert_eq!(used_segment_mappings(""), 0);
    }

    #[test]
    fn fd_limit_check() {
        assert!(check_fd_limit(1000, Some(20_000)).is_ok());
        assert!(check_fd_limit(1000, Some(1024))
            .unwrap_err()
            .to_string()
            .contains("too low for 1000 clients"));
        assert!(check_fd_limit(1000, None).is_ok());
        // 2048: 1536 after the warm pool's quarter, 256 kept, 4 per connection.
        assert_eq!(clients_within_fd_limit(Some(2048)), Some(320));
        assert!(check_fd_limit(320, Some(2048)).is_ok() && check_fd_limit(321, Some(2048)).is_err());
    }
}
