//! Results: the rows of the table and of the JSON file, the figures' formats, and the end of a
//! run. The tables are printed by [`table`], the targets judged by [`targets`].

mod table;
mod targets;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use self::table::{print_idle, print_large_table, print_metrics, print_table};
pub use self::targets::{print_targets, ratio_verdict, GateMargin, Verdict};
use super::measure::Throughput;
use super::{Mode, Transport};

/// Measurements of one (transport, mode, payload).
pub struct CaseResult {
    /// Transport measured.
    pub transport: Transport,
    /// Wait mode measured.
    pub mode: Mode,
    /// Payload size in bytes.
    pub payload: usize,
    /// A large-message row (throughput only, framed messages fragmented through the ring).
    pub large: bool,
    /// Recorded round trips.
    pub rounds: u64,
    /// Timed throughput messages.
    pub messages: u64,
    /// The time budget of each test, for a peer's row (`None`: lapce-ipc, run to the counts).
    pub budget: Option<Duration>,
    /// Round-trip latencies in nanoseconds, or why they are missing; `None` when not measured
    /// (large-message rows).
    pub rtt: Option<Result<Histogram<u64>, String>>,
    /// One-way throughput, or why it is missing.
    pub tput: Result<Throughput, String>,
}

/// The idle-CPU measurement.
#[derive(Debug, Clone)]
pub enum Idle {
    /// Measured.
    #[cfg_attr(windows, allow(dead_code, reason = "Windows has no idle measurement"))]
    Measured(IdleResult),
    /// Not measured on this platform, for the reason given (not an error).
    #[cfg_attr(not(windows), allow(dead_code, reason = "only Windows has no idle measurement"))]
    Unavailable(&'static str),
    /// The measurement failed.
    #[cfg_attr(windows, allow(dead_code, reason = "Windows has no idle measurement"))]
    Failed(String),
}

/// CPU used by an idle server blocked in `recv`.
#[derive(Debug, Clone, Copy)]
pub struct IdleResult {
    /// How long the pair sat idle.
    pub wall: Duration,
    /// `utime + stime` ticks the server used meanwhile.
    pub ticks: u64,
    /// Clock ticks per second.
    pub ticks_per_second: u64,
    /// Nanoseconds on CPU from `schedstat`, when available (much finer than ticks).
    pub sched_ns: Option<u64>,
}

impl IdleResult {
    /// CPU use in percent of one core: from `schedstat` when available, else from ticks.
    pub fn percent(&self) -> f64 {
        match self.sched_ns {
            Some(ns) => ns as f64 / self.wall.as_nanos() as f64 * 100.0,
            None => self.ticks_percent(),
        }
    }

    /// CPU use in percent of one core from `/proc/<pid>/stat` ticks alone.
    pub fn ticks_percent(&self) -> f64 {
        self.ticks as f64 / self.ticks_per_second as f64 / self.wall.as_secs_f64() * 100.0
    }
}

/// Request/response round trips of one payload with metrics off and on (the same run).
pub struct MetricsCost {
    /// Payload size in bytes.
    pub payload: usize,
    /// Recorded round trips of each.
    pub rounds: u64,
    /// Round trips with `metrics.enable = false`, nanoseconds.
    pub off: Result<Histogram<u64>, String>,
    /// Round trips with `metrics.enable = true`, nanoseconds.
    pub on: Result<Histogram<u64>, String>,
}

impl MetricsCost {
    /// `(p50 off, p50 on, mean off, mean on)` in µs, when both were measured.
    fn figures(&self) -> Option<(f64, f64, f64, f64)> {
        let (off, on) = (self.off.as_ref().ok()?, self.on.as_ref().ok()?);
        Some((
            ns_to_us(off.value_at_quantile(0.5)),
            ns_to_us(on.value_at_quantile(0.5)),
            off.mean() / 1000.0,
            on.mean() / 1000.0,
        ))
    }

    /// The cost of metrics in percent of the round trip, on the p50 (`on / off - 1`).
    fn cost_percent(&self) -> Option<f64> {
        self.figures().map(|(off, on, _, _)| (on / off - 1.0) * 100.0)
    }
}

/// The metrics-on and metrics-off rows (`test` = `metrics-off` / `metrics-on`).
pub fn metrics_rows(costs: &[MetricsCost]) -> Vec<Row> {
    let mut rows = Vec::new();
    for c in costs {
        for (test, h) in [("metrics-off", &c.off), ("metrics-on", &c.on)] {
            let mut row = Row::empty(Transport::Rpc.name(), Mode::Adaptive.name(), test, c.payload as u64);
            match h {
                Ok(h) => row.set_rtt(h),
                Err(e) => row.error = Some(format!("rtt ({} round trips): {e}", c.rounds)),
            }
            rows.push(row);
        }
    }
    rows
}

/// One row of the table and of the JSON array.
///
/// The `_vs_uds` ratios compare with the baseline of the platform: the Unix-domain socket
/// (`uds`), on Windows the named pipe (`pipe`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `lapce-ipc`, `lapce-ipc-framed`, `lapce-ipc-framed-nocrc`, or the baseline: `uds`
    /// (`pipe` on Windows).
    pub transport: String,
    /// `spin`, `adaptive`, `blocking`, or `adaptive-idle` for the idle-CPU row.
    pub mode: String,
    /// `standard` (latency and throughput of one payload size), `large` (one-way throughput of
    /// large messages, fragmented by the framed stream), `idle`, or `metrics-off` / `metrics-on`
    /// (request/response round trips with `metrics.enable` false / true).
    pub test: String,
    /// Payload size in bytes (0 for the idle row).
    pub payload_bytes: u64,
    /// Round-trip latency, mean, µs.
    pub rtt_mean_us: Option<f64>,
    /// Round-trip latency, median, µs.
    pub rtt_p50_us: Option<f64>,
    /// Round-trip latency, 99th percentile, µs.
    pub rtt_p99_us: Option<f64>,
    /// Round-trip latency, 99.9th percentile, µs.
    pub rtt_p999_us: Option<f64>,
    /// Round-trip latency, maximum, µs.
    pub rtt_max_us: Option<f64>,
    /// Round trips recorded.
    pub rtt_round_trips: Option<u64>,
    /// One-way throughput, messages per second.
    pub msgs_per_sec: Option<f64>,
    /// One-way throughput, payload MB (1e6 bytes) per second.
    pub mb_per_sec: Option<f64>,
    /// One-way throughput, payload GiB (2^30 bytes) per second.
    pub gib_per_sec: Option<f64>,
    /// Messages in the timed throughput phase.
    pub throughput_messages: Option<u64>,
    /// `baseline p50 / this p50`: how many times lower this median round trip is than the
    /// baseline's.
    pub rtt_p50_speedup_vs_uds: Option<f64>,
    /// `this msg/s / baseline msg/s`.
    pub msgs_per_sec_vs_uds: Option<f64>,
    /// The same two ratios against every peer measured in this run with the same test and
    /// payload (the baseline, the Node.js IPC and iceoryx2 rows), keyed by the peer's transport; empty for
    /// the peers' own rows.
    pub vs_peers: BTreeMap<String, PeerRatio>,
    /// Idle row only: CPU of the idle server in percent of one core.
    pub idle_cpu_percent: Option<f64>,
    /// A peer's row: the time budget of each of its tests, in seconds (`--peer-budget`); null
    /// for lapce-ipc's rows, which run to their counts.
    pub budget_secs: Option<f64>,
    /// The time budget stopped a test of this row before its count: `rtt_round_trips` and
    /// `throughput_messages` are the counts reached, and the figures are computed from them.
    pub budget_hit: bool,
    /// What the budget cut short, for the table (`budget_hit` rows only).
    #[serde(skip)]
    pub budget_note: Option<String>,
    /// What went wrong, if a measurement failed.
    pub error: Option<String>,
}

impl Row {
    /// Sets the round-trip columns from a histogram of round trips in nanoseconds.
    pub(super) fn set_rtt(&mut self, h: &Histogram<u64>) {
        self.rtt_mean_us = Some(h.mean() / 1000.0);
        self.rtt_p50_us = Some(ns_to_us(h.value_at_quantile(0.5)));
        self.rtt_p99_us = Some(ns_to_us(h.value_at_quantile(0.99)));
        self.rtt_p999_us = Some(ns_to_us(h.value_at_quantile(0.999)));
        self.rtt_max_us = Some(ns_to_us(h.max()));
        self.rtt_round_trips = Some(h.len());
    }

    /// A row with only its identity set.
    pub(super) fn empty(transport: &str, mode: &str, test: &str, payload: u64) -> Row {
        Row {
            transport: transport.into(),
            mode: mode.into(),
            test: test.into(),
            payload_bytes: payload,
            rtt_mean_us: None,
            rtt_p50_us: None,
            rtt_p99_us: None,
            rtt_p999_us: None,
            rtt_max_us: None,
            rtt_round_trips: None,
            msgs_per_sec: None,
            mb_per_sec: None,
            gib_per_sec: None,
            throughput_messages: None,
            rtt_p50_speedup_vs_uds: None,
            msgs_per_sec_vs_uds: None,
            vs_peers: BTreeMap::new(),
            idle_cpu_percent: None,
            budget_secs: None,
            budget_hit: false,
            budget_note: None,
            error: None,
        }
    }

    /// Whether this row is the standard row of (transport, mode, payload).
    pub(super) fn is(&self, transport: Transport, mode: Mode, payload: u64) -> bool {
        self.test == STANDARD
            && self.transport == transport.name()
            && self.mode == mode.name()
            && self.payload_bytes == payload
    }
}

/// A row's figures as ratios to one peer's row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeerRatio {
    /// `peer p50 / this p50`: how many times lower this median round trip is.
    pub rtt_p50_speedup: Option<f64>,
    /// `this msg/s / peer msg/s`.
    pub msgs_per_sec: Option<f64>,
}

/// The transports that are what users would otherwise pick: the ratios compare with them.
const PEERS: [Transport; 6] = [
    Transport::Baseline,
    Transport::BaselineTokio,
    Transport::NodeJson,
    Transport::NodeAdvanced,
    Transport::Iceoryx2Spin,
    Transport::Iceoryx2WaitSet,
];

/// Whether `row` is one of the peers' rows.
fn is_peer(row: &Row) -> bool {
    PEERS.iter().any(|p| row.transport == p.name())
}

/// `test` of the rows with latency and throughput of one payload size.
pub(super) const STANDARD: &str = "standard";
/// `test` of the large-message throughput rows.
const LARGE: &str = "large";

/// `test` of a case's row.
fn test_name(large: bool) -> &'static str {
    if large {
        LARGE
    } else {
        STANDARD
    }
}

/// Nanoseconds to microseconds.
fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Builds the rows (with ratios to the baseline row of the same payload) and the idle row (none
/// when the measurement is not available here).
pub fn rows(cases: &[CaseResult], idle: &Idle) -> Vec<Row> {
    let mut rows: Vec<Row> = cases.iter().map(case_row).collect();
    set_peer_ratios(&mut rows);
    set_baseline_ratios(&mut rows);
    let mut idle_row = Row::empty(Transport::Lapce.name(), "adaptive-idle", "idle", 0);
    match idle {
        Idle::Measured(i) => idle_row.idle_cpu_percent = Some(i.percent()),
        Idle::Unavailable(_) => return rows,
        Idle::Failed(e) => idle_row.error = Some(format!("idle: {e}")),
    }
    rows.push(idle_row);
    rows
}

/// The row of one case: its figures, its errors, and what its time budget cut short.
fn case_row(c: &CaseResult) -> Row {
    let mut row = Row::empty(c.transport.name(), c.mode.name(), test_name(c.large), c.payload as u64);
    let mut errors = Vec::new();
    match &c.rtt {
        None => {}
        Some(Ok(h)) => row.set_rtt(h),
        Some(Err(e)) => errors.push(format!("rtt ({} round trips): {e}", c.rounds)),
    }
    match &c.tput {
        Ok(t) => {
            row.msgs_per_sec = Some(t.msgs_per_sec());
            row.mb_per_sec = Some(t.mb_per_sec());
            row.gib_per_sec = Some(t.gib_per_sec());
            row.throughput_messages = Some(t.messages);
        }
        Err(e) => errors.push(format!("throughput ({} messages): {e}", c.messages)),
    }
    if !errors.is_empty() {
        row.error = Some(errors.join("; "));
    }
    if let Some(budget) = c.budget {
        row.budget_secs = Some(budget.as_secs_f64());
        let mut cut = Vec::new();
        if let Some(Ok(h)) = &c.rtt {
            if h.len() < c.rounds {
                cut.push(format!("{} of {} round trips", h.len(), c.rounds));
            }
        }
        if let Ok(t) = &c.tput {
            if t.messages < c.messages {
                cut.push(format!("{} of {} messages", t.messages, c.messages));
            }
        }
        if !cut.is_empty() {
            row.budget_hit = true;
            row.budget_note = Some(format!(
                "cut short by the time budget ({} s a test): figures from {}",
                budget.as_secs_f64(),
                cut.join(" and ")
            ));
        }
    }
    row
}

/// Sets every non-peer row's ratios to each peer row of the same test and payload.
fn set_peer_ratios(rows: &mut [Row]) {
    let peers: Vec<Row> = rows.iter().filter(|r| is_peer(r)).cloned().collect();
    for row in rows.iter_mut().filter(|r| !is_peer(r)) {
        for peer in peers.iter().filter(|p| p.test == row.test && p.payload_bytes == row.payload_bytes) {
            let ratio = PeerRatio {
                rtt_p50_speedup: peer.rtt_p50_us.zip(row.rtt_p50_us).map(|(p, r)| p / r),
                msgs_per_sec: row.msgs_per_sec.zip(peer.msgs_per_sec).map(|(r, p)| r / p),
            };
            row.vs_peers.insert(peer.transport.clone(), ratio);
        }
    }
}

/// Sets every row's ratios to the baseline row of the same test and payload.
fn set_baseline_ratios(rows: &mut [Row]) {
    let baselines: Vec<(String, u64, Option<f64>, Option<f64>)> = rows
        .iter()
        .filter(|r| r.transport == Transport::Baseline.name())
        .map(|r| (r.test.clone(), r.payload_bytes, r.rtt_p50_us, r.msgs_per_sec))
        .collect();
    for row in rows.iter_mut() {
        let Some((_, _, uds_p50, uds_msgs)) =
            baselines.iter().find(|b| b.0 == row.test && b.1 == row.payload_bytes)
        else {
            continue;
        };
        let (uds_p50, uds_msgs) = (*uds_p50, *uds_msgs);
        row.rtt_p50_speedup_vs_uds = uds_p50.zip(row.rtt_p50_us).map(|(u, r)| u / r);
        row.msgs_per_sec_vs_uds = row.msgs_per_sec.zip(uds_msgs).map(|(r, u)| r / u);
    }
}

/// A payload size for humans: `64 B`, `1 KiB`, `64 KiB`, `1 MiB`, `1500 B`.
pub fn payload_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Nanoseconds as microseconds with sensible precision.
pub fn us(ns: u64) -> String {
    fmt_us(ns_to_us(ns))
}

/// Microseconds with sensible precision.
pub fn fmt_us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A rate such as `12.35 M` or `850.2 k`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}

/// Writes the rows as a pretty JSON array to `path` (`-`: stdout).
pub fn write_json(path: &Path, rows: &[impl serde::Serialize]) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(rows).map_err(std::io::Error::other)?;
    text.push('\n');
    crate::output::write_result(path, &text)
}

/// The end of a bench run: writes `--json` if asked (a failure to write fails the run), then the
/// exit status, with `failed` printed when something went wrong.
pub fn finish(
    json: Option<&Path>,
    rows: &[impl serde::Serialize],
    mut ok: bool,
    failed: &str,
) -> std::process::ExitCode {
    if let Some(path) = json {
        match write_json(path, rows) {
            Ok(()) => outln!("wrote {}", crate::output::describe(path)),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", crate::output::describe(path));
                ok = false;
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("error: {failed}");
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(payload_label(64), "64 B");
        assert_eq!(payload_label(1024), "1 KiB");
        assert_eq!(payload_label(65536), "64 KiB");
        assert_eq!(payload_label(1500), "1500 B");
        assert_eq!(rate(12_345_678.0), "12.35 M");
        assert_eq!(us(850), "0.85");
    }

    #[test]
    fn ratios_against_uds() {
        let mut h = crate::bench::measure::new_histogram().unwrap();
        h.record(1000).unwrap();
        let mut slow = crate::bench::measure::new_histogram().unwrap();
        slow.record(50_000).unwrap();
        let tput = |msgs_per_sec: u64| {
            Ok(Throughput { messages: msgs_per_sec, payload: 64, elapsed: Duration::from_secs(1) })
        };
        let cases = vec![
            CaseResult {
                transport: Transport::Lapce,
                mode: Mode::Spin,
                payload: 64,
                large: false,
                rounds: 1,
                messages: 1,
                budget: None,
                rtt: Some(Ok(h)),
                tput: tput(4_000_000),
            },
            CaseResult {
                transport: Transport::Baseline,
                mode: Mode::Blocking,
                payload: 64,
                large: false,
                rounds: 1,
                messages: 1,
                budget: None,
                rtt: Some(Ok(slow)),
                tput: tput(1_000_000),
            },
            // Large rows of the same size are compared with the large uds row only.
            CaseResult {
                transport: Transport::LapceFramed,
                mode: Mode::Spin,
                payload: 64,
                large: true,
                rounds: 0,
                messages: 1,
                budget: None,
                rtt: None,
                tput: tput(3_000_000),
            },
            CaseResult {
                transport: Transport::Baseline,
                mode: Mode::Blocking,
                payload: 64,
                large: true,
                rounds: 0,
                messages: 1,
                budget: None,
                rtt: None,
                tput: tput(2_000_000),
            },
        ];
        let idle = Idle::Measured(IdleResult {
            wall: Duration::from_secs(1),
            ticks: 0,
            ticks_per_second: 100,
            sched_ns: None,
        });
        let rows = rows(&cases, &idle);
        assert_eq!(rows.len(), 5);
        let speedup = rows[0].rtt_p50_speedup_vs_uds.unwrap();
        assert!((speedup - 50.0).abs() < 0.5, "{speedup}");
        assert_eq!(rows[0].msgs_per_sec_vs_uds, Some(4.0));
        assert_eq!((rows[2].test.as_str(), rows[2].msgs_per_sec_vs_uds), ("large", Some(1.5)));
        assert_eq!((rows[2].rtt_p50_us, rows[2].rtt_p50_speedup_vs_uds, &rows[2].error), (None, None, &None));
        let gib = rows[2].gib_per_sec.unwrap();
        assert!((gib - 3e6 * 64.0 / (1u64 << 30) as f64).abs() < 1e-9, "{gib}");
        assert_eq!(rows[4].mode, "adaptive-idle");
        assert_eq!(rows[4].idle_cpu_percent, Some(0.0));
    }
}
