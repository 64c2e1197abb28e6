//! `lapce-ipc bench`: round-trip latency, one-way throughput and idle CPU of lapce-ipc (spin and
//! adaptive waits, raw and framed) against a baseline, and the one-way throughput of large framed
//! messages (1 MiB, 10 MiB: fragmented through the ring) against the same baseline. The baseline
//! is a Unix-domain socket (module `uds`), on Windows a named pipe (module `pipe`): length-prefixed
//! messages, blocking I/O.
//!
//! Every measurement runs against a fresh server child process (this binary re-executed with the
//! hidden `bench-server` subcommand), pinned to another CPU than the client when there are two
//! (Linux only). The parent is the client. See [`measure`] for the protocol of each test.
//!
//! On Windows the idle-CPU measurement is not available (it reads `/proc`), and the targets
//! summary reports the performance targets for Windows instead of the Linux ones.
//!
//! The files, by job: [`args`] the options, [`transport`] what is measured, [`counts`] how much,
//! [`cpu`] pinning and CPU time, [`session`] one server child and its client, [`cases`] the
//! rows, [`server`] the `bench-server` child, [`report`] the results, [`scale`] the `--scale`
//! mode, [`grpc`] the `--grpc` mode.

mod args;
mod cases;
mod counts;
mod cpu;
mod grpc;
mod iceoryx2;
mod lapce;
mod measure;
mod node;
#[cfg(windows)]
mod pipe;
mod plot;
mod prefixed;
mod report;
mod rpc;
mod rpc_report;
mod scale;
mod server;
mod session;
mod tls;
mod transport;
#[cfg(unix)]
mod uds;
#[cfg(unix)]
mod uds_tokio;

#[cfg(windows)]
use self::pipe as baseline;
#[cfg(unix)]
use self::uds as baseline;

use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

pub use self::args::BenchArgs;
use self::counts::Counts;
use self::cpu::Pinning;
pub use self::grpc::{serve as grpc_serve, GrpcServerArgs};
use self::report::{CaseResult, Idle, MetricsCost, Row};
pub use self::scale::{client as scale_client, ScaleClient, ScaleClientArgs};
pub use self::server::{serve, ServerArgs};
use self::session::Bench;
pub use self::transport::{Framing, Mode, Test, Transport};
use self::transport::{CASES, LARGE_CASES, PEER_MAX_PAYLOAD};
use crate::progress::Progress;

/// Runs `lapce-ipc bench`. Missed targets do not fail it; failed measurements do (exit 1).
pub fn run(args: &BenchArgs) -> ExitCode {
    crate::output::keep_stdout_for(args.json.as_deref());
    if args.grpc {
        return grpc::run(args);
    }
    if !args.scale.is_empty() {
        return run_scale(args);
    }
    let started = Instant::now();
    if let Some(path) = &args.plot {
        if let Err(e) = plot::check_path(path) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Read before the pinning narrows this thread to one CPU.
    let all_cpus = cpu::allowed_cpus();
    let mut bench = Bench {
        args,
        pinning: Pinning::setup(),
        all_cpus,
        counter: AtomicU64::new(0),
        progress: Progress::plain(),
    };
    let large: &[usize] = if args.no_large { &[] } else { &args.large };
    print_header(&bench, large);
    let peers = Peers::find(args);
    bench.progress = Progress::new(peers.steps(args, large));
    let cases = peers.measure(&bench, large);
    let idle = bench.idle(Duration::from_millis(if args.quick { 300 } else { 1000 }));
    let metrics: Vec<MetricsCost> = [64, 1024].into_iter().map(|p| bench.metrics_cost(p)).collect();
    bench.progress.finish();

    let mut rows = report::rows(&cases, &idle);
    rows.extend(tls::rows(args));
    rows.extend(report::metrics_rows(&metrics));
    let missed = print_report(&rows, &idle, &metrics, !large.is_empty(), args);
    outln!("{}; total time {:.1} s", bench.pinning.describe(), started.elapsed().as_secs_f64());
    let plot_written = write_plot(args, &cases);
    exit_status(args, &rows, plot_written, missed)
}

/// The first line of the report: what is measured, and where.
fn print_header(bench: &Bench<'_>, large: &[usize]) {
    let args = bench.args;
    let labels =
        |sizes: &[usize]| sizes.iter().map(|&p| report::payload_label(p)).collect::<Vec<_>>().join(", ");
    outln!(
        "lapce-ipc bench{}: payloads {}; large messages {}; {}",
        if args.quick { " (quick)" } else { "" },
        labels(&args.payloads),
        if large.is_empty() { "none".to_string() } else { labels(large) },
        bench.pinning.describe()
    );
}

/// The peers that run their own processes, each `None` when skipped or not found (the report
/// says why).
struct Peers {
    node: Option<node::NodePeer>,
    ice: Option<iceoryx2::Iceoryx2Peer>,
}

impl Peers {
    /// Looks for Node.js and the iceoryx2 peer program, one report line each.
    fn find(args: &BenchArgs) -> Peers {
        let node = if args.no_node {
            outln!("Node.js IPC rows: skipped (--no-node)");
            None
        } else {
            match node::NodePeer::find(&args.node) {
                Ok(peer) => {
                    outln!("Node.js IPC rows: node {} (child_process.fork + process.send)", peer.version);
                    Some(peer)
                }
                Err(why) => {
                    outln!("Node.js IPC rows: skipped: {why} (install Node.js or pass --node PATH)");
                    None
                }
            }
        };
        let ice = if args.no_iceoryx2 {
            outln!("iceoryx2 rows: skipped (--no-iceoryx2)");
            None
        } else {
            match iceoryx2::Iceoryx2Peer::find(args.iceoryx2.as_deref()) {
                Ok(peer) => {
                    outln!("iceoryx2 rows: {} (request-response, spin and WaitSet)", peer.program.display());
                    Some(peer)
                }
                Err(why) => {
                    outln!("iceoryx2 rows: skipped: {why}");
                    None
                }
            }
        };
        Peers { node, ice }
    }

    /// The steps of the progress bar: rtt and throughput of each case, one step per Node.js and
    /// iceoryx2 row, each large row, idle, and the metrics cost (off and on, two payloads).
    fn steps(&self, args: &BenchArgs, large: &[usize]) -> u64 {
        let node_rows = if self.node.is_some() { node::Serialization::ALL.len() } else { 0 };
        let ice_rows = if self.ice.is_some() { iceoryx2::WaitMode::ALL.len() } else { 0 };
        let peer_payloads = args.payloads.iter().filter(|&&p| p <= PEER_MAX_PAYLOAD).count();
        if peer_payloads < args.payloads.len() && (self.node.is_some() || self.ice.is_some()) {
            outln!("peer rows: payloads up to {} only", report::payload_label(PEER_MAX_PAYLOAD));
        }
        let steps = args.payloads.len() * 2 * CASES.len()
            + peer_payloads * (node_rows + ice_rows)
            + large.len() * LARGE_CASES.len()
            + 1
            + 4;
        steps as u64
    }

    /// Measures the rows in table order: per payload the cases, then the peers' rows; then the
    /// large-message rows.
    fn measure(&self, bench: &Bench<'_>, large: &[usize]) -> Vec<CaseResult> {
        let mut cases = Vec::new();
        for &payload in &bench.args.payloads {
            for &(transport, mode) in CASES {
                cases.push(bench.case(transport, mode, payload));
            }
            if payload > PEER_MAX_PAYLOAD {
                continue;
            }
            if let Some(peer) = &self.node {
                for serialization in node::Serialization::ALL {
                    cases.push(bench.node_case(peer, serialization, payload));
                }
            }
            if let Some(peer) = &self.ice {
                for mode in iceoryx2::WaitMode::ALL {
                    cases.push(bench.iceoryx2_case(peer, mode, payload));
                }
            }
        }
        for &payload in large {
            for (transport, mode) in LARGE_CASES {
                cases.push(bench.large(transport, mode, payload));
            }
        }
        cases
    }
}

/// Prints the tables and the targets; the number of targets missed beyond the gate's margin.
fn print_report(rows: &[Row], idle: &Idle, metrics: &[MetricsCost], large: bool, args: &BenchArgs) -> usize {
    outln!();
    report::print_table(rows);
    if large {
        outln!();
        report::print_large_table(rows);
    }
    outln!();
    report::print_idle(idle);
    outln!();
    report::print_metrics(metrics);
    outln!();
    let missed = report::print_targets(rows, idle, metrics, args.gate_margin);
    outln!();
    missed
}

/// Draws `--plot`, if asked; whether that went well (or was not asked).
fn write_plot(args: &BenchArgs, cases: &[CaseResult]) -> bool {
    args.plot.as_deref().is_none_or(|path| {
        let title = format!(
            "lapce-ipc bench{}: round-trip latency by transport",
            if args.quick { " --quick" } else { "" }
        );
        match plot::write(path, cases, &title) {
            Ok(()) => {
                outln!("wrote {}", path.display());
                true
            }
            Err(e) => {
                eprintln!("error: {e}");
                false
            }
        }
    })
}

/// Writes `--json` and decides the exit status: 1 when a measurement failed or the plot could
/// not be written, 2 when `--gate` finds `missed` targets, 0 otherwise.
fn exit_status(args: &BenchArgs, rows: &[Row], plot_written: bool, missed: usize) -> ExitCode {
    let ok = rows.iter().all(|r| r.error.is_none());
    let status = report::finish(args.json.as_deref(), rows, ok, "some measurements failed (see above)");
    if !plot_written {
        return ExitCode::FAILURE;
    }
    if ok && args.gate && missed > 0 {
        eprintln!(
            "gate: {missed} ratio target(s) missed beyond the margin ({}) or not judged (see the targets above)",
            args.gate_margin
        );
        return ExitCode::from(2);
    }
    status
}

/// Runs `lapce-ipc bench --scale`: only the scale rows. Missed targets do not fail it; failed
/// rows and request errors do (exit 1).
fn run_scale(args: &BenchArgs) -> ExitCode {
    let started = Instant::now();
    // The clients share the CPUs with the server: nothing is pinned.
    let mut bench = Bench {
        args,
        pinning: Pinning::NotPinned("scale mode".into()),
        all_cpus: cpu::allowed_cpus(),
        counter: AtomicU64::new(0),
        progress: Progress::plain(),
    };
    let list = args.scale.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    outln!(
        "lapce-ipc bench --scale{}: {list} clients, {} in flight per connection, trim wait {} s",
        if args.quick { " (quick)" } else { "" },
        args.scale_inflight,
        args.trim_wait
    );
    if !(args.trim_wait.is_finite() && (0.0..=3600.0).contains(&args.trim_wait)) {
        eprintln!("error: --trim-wait must be between 0 and 3600 seconds");
        return ExitCode::FAILURE;
    }
    if args.scale_secs.is_some_and(|s| !(s.is_finite() && s > 0.0 && s <= 3600.0)) {
        eprintln!("error: --scale-secs must be above 0 and at most 3600 seconds");
        return ExitCode::FAILURE;
    }
    // A step per client count and API, its phases on the bar.
    bench.progress = Progress::new((args.scale.len() * args.scale_client.len()) as u64);
    let rows = scale::run(&bench, args);
    bench.progress.finish();
    outln!();
    scale::print_table(&rows);
    outln!();
    outln!("targets (a report, not a gate):");
    let lean = scale::lean_server_idle();
    let targets = scale::targets(&rows, &lean);
    for (name, met, detail) in &targets {
        let tag = match met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        outln!("  [{tag}] {name}: {detail}");
    }
    let met = targets.iter().filter(|t| t.1 == Some(true)).count();
    outln!("  {met} of {} targets met on this run", targets.len());
    outln!();
    outln!("total time {:.1} s", started.elapsed().as_secs_f64());
    let ok = rows.iter().all(|r| r.error.is_none() && r.request_errors == Some(0));
    report::finish(
        args.json.as_deref(),
        &rows,
        ok,
        "some scale measurements failed or had request errors (see above)",
    )
}
