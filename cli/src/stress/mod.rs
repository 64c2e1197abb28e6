//! `lapce-ipc stress --level N | --all [--full] [--json FILE]`: five "nuclear" stress levels,
//! with counts for a 2-core CI machine by default and the levels' full counts with `--full`.
//!
//! 1. connection bomb: many concurrent connections, each doing request/response; all complete;
//! 2. memory: floods of 4 KiB and 1 MiB messages; the server's RSS stays under a stated bound;
//! 3. latency torture: one client measures round trips while others saturate the server;
//! 4. leak detection: cycles of clients connecting, working and leaving; the server's RSS, open
//!    descriptors and mappings return to their baseline;
//! 5. chaos: kill -9 of clients mid-message, corrupted frames, oversized messages, stalled
//!    readers, floods of tiny messages, while healthy connections must lose, duplicate and
//!    corrupt nothing.
//!
//! Every level runs against a fresh server child (`stress-server`, this binary re-executed) with
//! its clients in client children (`stress-client`), so everything crosses real process
//! boundaries; chaos connections and the control connection live in this process. A level
//! passes or fails on correctness only, never on wall-clock time; its figures are printed (and
//! written to `--json`). The exit status is non-zero when a level fails.

mod chaos;
mod client;
mod death;
mod levels;
mod payload;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use lapce_ipc::IpcClient;
use serde::Serialize;
use serde_json::{Map, Value};

pub use self::client::{run as client, ClientArgs};
pub use self::server::{serve, ServerArgs};
use crate::child::{self, ClientProcess, ServerProcess};
pub use crate::error::{Error, Result};
use crate::footprint::{footprint, Footprint};
pub use crate::histogram::new_histogram;
use crate::progress::Progress;

/// Arguments of `lapce-ipc stress`.
#[derive(Debug, clap::Args)]
pub struct StressArgs {
    /// The level to run, 1 to 5 (see --help).
    ///
    /// 1 connection bomb, 2 memory, 3 latency torture, 4 leak detection, 5 chaos.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5), required_unless_present = "all")]
    pub level: Option<u8>,
    /// Run all five levels.
    #[arg(long, conflicts_with = "level")]
    pub all: bool,
    /// Full counts: minutes to hours per level.
    ///
    /// Default: counts for a 2-core CI machine, seconds per level. The full counts are what
    /// each level is designed for, e.g. level 1: 1000 connections of 5000 requests each instead
    /// of 20.
    #[arg(long)]
    pub full: bool,
    /// Also write the figures as JSON to FILE; `-`: to stdout.
    ///
    /// With `--json -` stdout holds the JSON alone, and the human-readable report goes to stderr.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Seed of the random choices (chaos schedule, client counts) [default: from the clock].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Per-level limit in seconds (default 120, with --full 7200).
    ///
    /// The server child is killed after it and the level fails.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// The figures and verdict of one level.
#[derive(Debug, Serialize)]
pub struct LevelReport {
    /// 1..=5.
    pub level: u8,
    /// Short name.
    pub name: &'static str,
    /// Whether the full counts were used.
    pub full: bool,
    /// Whether every correctness check held.
    pub passed: bool,
    /// Wall time of the level, seconds (reported, never judged).
    pub secs: f64,
    /// The figures, by name.
    pub figures: Map<String, Value>,
    /// The checks that failed.
    pub failures: Vec<String>,
}

impl LevelReport {
    fn new(level: u8, full: bool) -> LevelReport {
        let name = ["connection bomb", "memory", "latency torture", "leak detection", "chaos"]
            [usize::from(level) - 1];
        LevelReport { level, name, full, passed: true, secs: 0.0, figures: Map::new(), failures: Vec::new() }
    }

    /// Records a figure.
    fn fig(&mut self, key: &str, value: impl Into<Value>) {
        self.figures.insert(key.to_string(), value.into());
    }

    /// Records a correctness check; a false one fails the level.
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.passed = false;
            self.failures.push(what.into());
        }
    }
}

/// Everything a level needs: the server child, its name, a runtime and a control connection
/// in this process.
struct Session {
    server: ServerProcess,
    name: String,
    socket: PathBuf,
    max_connections: usize,
    runtime: tokio::runtime::Runtime,
    control: IpcClient,
    timeout: Duration,
}

/// Measurements of the server process from `/proc` (`None` where not available).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    footprint: Footprint,
    maps: Option<u64>,
}

impl Sample {
    fn rss(&self) -> Option<u64> {
        self.footprint.rss_kib
    }
}

/// Lines of `/proc/PID/maps` (mappings).
#[cfg(target_os = "linux")]
fn maps(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).ok().map(|m| m.lines().count() as u64)
}

/// Not available outside Linux.
#[cfg(not(target_os = "linux"))]
fn maps(_pid: u32) -> Option<u64> {
    None
}

/// A figure that may be unavailable: the number, or "not available".
fn opt(v: Option<u64>) -> Value {
    v.map_or_else(|| Value::from("not available"), Value::from)
}

/// The sum of what a group of client processes reported.
#[derive(Debug)]
struct Outcome {
    ok: u64,
    errors: u64,
    corrupt: u64,
    /// The longest process's time, seconds.
    secs: f64,
    hist: Histogram<u64>,
}

/// How one group of client processes is asked to work.
#[derive(Debug, Clone)]
struct Work {
    connections: usize,
    processes: usize,
    lanes: usize,
    /// Per lane; 0 = until stopped.
    requests: u64,
    payloads: Vec<usize>,
}

impl Session {
    fn start(level: u8, max_connections: usize, timeout: Duration) -> Result<Session> {
        Self::start_with_env(level, max_connections, &[], timeout)
    }

    /// [`start`](Self::start) with `env` added to the server's environment.
    fn start_with_env(
        level: u8,
        max_connections: usize,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Session> {
        let name = format!("lapce-ipc-stress-{}-{level}", std::process::id());
        let socket =
            if cfg!(unix) { lapce_ipc::socket_path(&name).unwrap_or_default() } else { PathBuf::new() };
        let args = ServerArgs { name: name.clone(), max_connections, parent_pid: Some(std::process::id()) };
        let cleanup = if socket.as_os_str().is_empty() { Vec::new() } else { vec![socket.clone()] };
        let mut server = ServerProcess::spawn_with_env(&args, env, timeout, cleanup)?;
        server.wait_ready()?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let control = runtime.block_on(IpcClient::connect(&name, server::config(max_connections)))?;
        Ok(Session { server, name, socket, max_connections, runtime, control, timeout })
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }

    fn sample(&self) -> Sample {
        Sample { footprint: footprint(self.pid()), maps: maps(self.pid()) }
    }

    /// The server's counters (see `server::STATS`).
    fn stats(&self) -> Result<Value> {
        let answer =
            self.runtime.block_on(self.control.request(server::STATS, Bytes::from_static(b"stats")))?;
        Ok(serde_json::from_slice(&answer)?)
    }

    /// One counter of [`stats`](Self::stats).
    fn stat(&self, key: &str) -> Result<u64> {
        let stats = self.stats()?;
        stats[key].as_u64().ok_or_else(|| format!("no {key} in the server's stats {stats}").into())
    }

    /// Waits (bounded) until only the control connection is open.
    fn wait_idle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.stat("connections_active")? <= 1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("the server still counts open connections 10 s after the clients left".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (after [`wait_idle`](Self::wait_idle)) for the server's heap trim that follows the
    /// last connection's end by [`server::IDLE_TRIM_MS`], so that a sample sees the heap as an
    /// idle server keeps it. `false` when none came within 5 s.
    fn wait_heap_trim(&self) -> Result<bool> {
        let before = self.stat("heap_trims")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if self.stat("heap_trims")? > before {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts the processes of `work` and waits until all their connections are up.
    fn spawn(&self, work: &Work) -> Result<Vec<ClientProcess>> {
        let processes = work.processes.clamp(1, work.connections.max(1));
        let children = (0..processes).map(|p| ClientArgs {
            name: self.name.clone(),
            connections: child::share(work.connections, processes, p),
            lanes: work.lanes,
            requests: work.requests,
            payloads: work.payloads.clone(),
            max_connections: self.max_connections,
            parent_pid: Some(std::process::id()),
        });
        child::spawn_connected(children, self.timeout)
    }

    /// Sends `line` (`go` or `stop`) to every process.
    fn tell(clients: &mut [ClientProcess], line: &str) -> Result<()> {
        for c in clients {
            c.send(line)?;
        }
        Ok(())
    }

    /// Collects the results of `clients` (after `go`, or `stop`), closes them and sums up.
    fn collect(&self, clients: Vec<ClientProcess>) -> Result<Outcome> {
        let mut out = Outcome { ok: 0, errors: 0, corrupt: 0, secs: 0.0, hist: new_histogram()? };
        let mut done = Vec::with_capacity(clients.len());
        for mut c in clients {
            let line = c.line(self.timeout, "report its corrupt count")?;
            let corrupt = line
                .strip_prefix("corrupt ")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("bad line from a client process: {line:?}"))?;
            let line = c.line(self.timeout, "report its result")?;
            let (ok, errors, ns, hist) = child::parse_result(&line)?;
            out.ok += ok;
            out.errors += errors;
            out.corrupt += corrupt;
            out.secs = out.secs.max(ns as f64 / 1e9);
            out.hist.add(&hist).map_err(|e| format!("cannot merge histograms: {e}"))?;
            done.push(c);
        }
        for c in done {
            c.close(Duration::from_secs(10))?;
        }
        Ok(out)
    }

    /// Runs `work` with a fixed number of requests to the end.
    fn run(&self, work: &Work) -> Result<Outcome> {
        let mut clients = self.spawn(work)?;
        Self::tell(&mut clients, "go")?;
        self.collect(clients)
    }

    /// The checks every level ends with: the server's own counters (no duplicate, gap or
    /// corrupt request seen), then a graceful shutdown with exit status 0 and no socket file
    /// left behind.
    fn finish(self, report: &mut LevelReport) -> Result<()> {
        let stats = self.stats()?;
        for key in ["duplicates", "gaps", "corrupt", "panics"] {
            let n = stats[key].as_u64().unwrap_or(u64::MAX);
            report.fig(&format!("server_{key}"), n);
            report.check(n == 0, format!("the server saw {n} {key}"));
        }
        report.fig("server_requests", stats["requests"].clone());
        report.fig("server_connections_accepted", stats["connections_accepted"].clone());
        let Session { server, socket, runtime, control, .. } = self;
        runtime.block_on(control.request(server::SHUTDOWN, Bytes::from_static(b"bye")))?;
        drop(control);
        drop(runtime);
        let exited = server.finish(Duration::from_secs(10));
        report.check(exited.is_ok(), format!("server did not exit cleanly: {exited:?}"));
        report.fig("server_exit_clean", exited.is_ok());
        let left = !socket.as_os_str().is_empty() && socket.exists();
        report.fig("socket_left_behind", left);
        report.check(!left, format!("socket file {} left behind", socket.display()));
        Ok(())
    }
}

/// Checks the totals of a fixed-count run: every request answered, none wrong.
fn check_complete(report: &mut LevelReport, prefix: &str, out: &Outcome, requested: u64) {
    report.fig(&format!("{prefix}requested"), requested);
    report.fig(&format!("{prefix}completed"), out.ok);
    report.fig(&format!("{prefix}errors"), out.errors);
    report.fig(&format!("{prefix}corrupt"), out.corrupt);
    report.check(
        out.ok == requested && out.errors == 0 && out.corrupt == 0,
        format!(
            "{prefix}{} of {requested} completed, {} errors, {} corrupt",
            out.ok, out.errors, out.corrupt
        ),
    );
}

/// Prints one level's report.
fn print(report: &LevelReport) {
    outln!(
        "level {} ({}, {} counts): {} in {:.1} s",
        report.level,
        report.name,
        if report.full { "full" } else { "bounded" },
        if report.passed { "PASS" } else { "FAIL" },
        report.secs
    );
    for (k, v) in &report.figures {
        match v {
            Value::String(s) => outln!("  {k}: {s}"),
            v => outln!("  {k}: {v}"),
        }
    }
    for f in &report.failures {
        outln!("  FAILED: {f}");
    }
}

/// Runs `lapce-ipc stress`.
pub fn run(args: &StressArgs) -> ExitCode {
    crate::output::keep_stdout_for(args.json.as_deref());
    let levels: Vec<u8> = if args.all { (1..=5).collect() } else { args.level.into_iter().collect() };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let timeout = Duration::from_secs(args.timeout.unwrap_or(if args.full { 7200 } else { 120 }));
    let fd_limit = child::raise_fd_limit();
    outln!("stress: levels {levels:?}, {} counts, seed {seed}", if args.full { "full" } else { "bounded" });
    let started = Instant::now();
    // A step per level, its phases on the bar; the levels' reports go to stdout as before.
    let progress = Progress::new(levels.len() as u64);
    let mut reports = Vec::new();
    for &level in &levels {
        let mut report = LevelReport::new(level, args.full);
        progress.status(format!("level {level} ({})", report.name));
        let t = Instant::now();
        let mut rng = payload::Rng::new(seed ^ u64::from(level));
        let p = &progress;
        let result = match level {
            1 => levels::bomb(&mut report, args.full, fd_limit, timeout, p),
            2 => levels::memory(&mut report, args.full, fd_limit, timeout, p),
            3 => levels::latency(&mut report, args.full, timeout, p),
            4 => levels::leak(&mut report, args.full, &mut rng, timeout, p),
            _ => chaos::run(&mut report, args.full, &mut rng, timeout, p),
        };
        if let Err(e) = result {
            report.check(false, format!("error: {e}"));
        }
        report.secs = t.elapsed().as_secs_f64();
        progress.suspend(|| print(&report));
        progress.advance();
        reports.push(report);
    }
    progress.finish();
    let passed = reports.iter().all(|r| r.passed);
    outln!(
        "stress: {} of {} levels passed in {:.1} s",
        reports.iter().filter(|r| r.passed).count(),
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "seed": seed, "passed": passed, "levels": reports });
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
        text.push('\n');
        if let Err(e) = crate::output::write_result(path, &text) {
            eprintln!("stress: cannot write {}: {e}", crate::output::describe(path));
            return ExitCode::FAILURE;
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
