//! Results: rows, the table, the targets summary and the JSON file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

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

/// Prints the metrics on/off comparison.
pub fn print_metrics(costs: &[MetricsCost]) {
    outln!("metrics cost (lapce-ipc-rpc adaptive round trip, metrics.enable off vs on, back to back):");
    for c in costs {
        match c.figures() {
            Some((off, on, moff, mon)) => outln!(
                "  {:>6}: p50 {} µs off, {} µs on ({:+.1}%); mean {} µs off, {} µs on ({:+.1}%)",
                payload_label(c.payload),
                fmt_us(off),
                fmt_us(on),
                (on / off - 1.0) * 100.0,
                fmt_us(moff),
                fmt_us(mon),
                (mon / moff - 1.0) * 100.0
            ),
            None => outln!("  {:>6}: failed (see above)", payload_label(c.payload)),
        }
    }
}

/// The metrics target: the worst p50 cost over the payloads measured.
fn metrics_target(costs: &[MetricsCost]) -> (&'static str, Verdict) {
    let name = "metrics cost < 5% of the round trip (p50, 64 B and 1 KiB)";
    let all: Option<Vec<(usize, f64)>> =
        costs.iter().map(|c| c.cost_percent().map(|p| (c.payload, p))).collect();
    match all {
        Some(v) if !v.is_empty() => {
            let worst = v.iter().map(|x| x.1).fold(f64::MIN, f64::max);
            let detail = v.iter().map(|(p, c)| format!("{} {c:+.1}%", payload_label(*p))).collect::<Vec<_>>();
            (name, ratio_verdict((1.0 + worst / 100.0) / 1.05, detail.join(", ")))
        }
        _ => (name, Verdict::Unknown("not measured or failed".into())),
    }
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
    let mut rows: Vec<Row> = cases
        .iter()
        .map(|c| {
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
        })
        .collect();

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

    let baselines: Vec<(String, u64, Option<f64>, Option<f64>)> = rows
        .iter()
        .filter(|r| r.transport == Transport::Baseline.name())
        .map(|r| (r.test.clone(), r.payload_bytes, r.rtt_p50_us, r.msgs_per_sec))
        .collect();
    for row in &mut rows {
        let Some((_, _, uds_p50, uds_msgs)) =
            baselines.iter().find(|b| b.0 == row.test && b.1 == row.payload_bytes)
        else {
            continue;
        };
        let (uds_p50, uds_msgs) = (*uds_p50, *uds_msgs);
        row.rtt_p50_speedup_vs_uds = uds_p50.zip(row.rtt_p50_us).map(|(u, r)| u / r);
        row.msgs_per_sec_vs_uds = row.msgs_per_sec.zip(uds_msgs).map(|(r, u)| r / u);
    }

    let mut idle_row = Row::empty(Transport::Lapce.name(), "adaptive-idle", "idle", 0);
    match idle {
        Idle::Measured(i) => idle_row.idle_cpu_percent = Some(i.percent()),
        Idle::Unavailable(_) => return rows,
        Idle::Failed(e) => idle_row.error = Some(format!("idle: {e}")),
    }
    rows.push(idle_row);
    rows
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

/// Formats an optional value, `-` when absent.
fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// Prints the table of measurement rows (not the idle row), grouped by payload.
pub fn print_table(rows: &[Row]) {
    let base = Transport::Baseline.name();
    let header = format!(
        "{:<22} {:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>13}",
        "transport",
        "mode",
        "payload",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        format!("p50 vs {base}"),
        "msg/s",
        "MB/s",
        format!("msg/s vs {base}")
    );
    outln!("{header}");
    outln!("{}", "-".repeat(header.chars().count()));
    let mut last_payload = None;
    for row in rows.iter().filter(|r| r.test == STANDARD) {
        if last_payload.is_some_and(|p| p != row.payload_bytes) {
            outln!();
        }
        last_payload = Some(row.payload_bytes);
        let is_baseline = row.transport == base;
        let ratio = |v: Option<f64>| {
            if is_baseline {
                "(baseline)".to_string()
            } else {
                opt(v, |x| format!("{x:.1}×"))
            }
        };
        outln!(
            "{:<22} {:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>13}",
            row.transport,
            row.mode,
            payload_label(row.payload_bytes as usize),
            opt(row.rtt_p50_us, fmt_us),
            opt(row.rtt_p99_us, fmt_us),
            opt(row.rtt_p999_us, fmt_us),
            opt(row.rtt_max_us, fmt_us),
            ratio(row.rtt_p50_speedup_vs_uds),
            opt(row.msgs_per_sec, rate),
            opt(row.mb_per_sec, |x| format!("{x:.1}")),
            ratio(row.msgs_per_sec_vs_uds),
        );
        print_marks(row);
    }
    outln!();
    outln!(
        "p50 vs {base} = {base} p50 / row p50 (higher is better); msg/s vs {base} = row msg/s / {base} msg/s;"
    );
    outln!("MB = 1e6 bytes of payload; throughput is one-way, timed from the first send to the final ack.");
    super::rpc_report::print_note(rows);
    print_peer_ratios(rows);
}

/// Prints what is to be said under a row of a table: its error, and that the time budget cut
/// it short.
fn print_marks(row: &Row) {
    if let Some(e) = &row.error {
        outln!("    error: {e}");
    }
    if let Some(note) = &row.budget_note {
        outln!("    budget hit: {note}");
    }
}

/// Prints each lapce-ipc row's ratios to every peer of the run (none when the baseline is the
/// only peer: the table has those).
fn print_peer_ratios(rows: &[Row]) {
    let names: Vec<&str> = PEERS
        .iter()
        .map(|p| p.name())
        .filter(|n| rows.iter().any(|r| r.test == STANDARD && r.transport == *n))
        .collect();
    if names.len() < 2 {
        return;
    }
    outln!();
    outln!("against each peer (p50: peer p50 / row p50; msg/s: row msg/s / peer msg/s; higher is better):");
    let mut header = format!("{:<22} {:<10} {:>7}", "transport", "mode", "payload");
    for n in &names {
        header.push_str(&format!(" {:>24}", format!("{n} p50 | msg/s")));
    }
    outln!("{header}");
    outln!("{}", "-".repeat(header.chars().count()));
    for row in rows.iter().filter(|r| r.test == STANDARD && !is_peer(r)) {
        let mut line = format!(
            "{:<22} {:<10} {:>7}",
            row.transport,
            row.mode,
            payload_label(row.payload_bytes as usize)
        );
        for n in &names {
            let cell = match row.vs_peers.get(*n) {
                Some(r) => format!(
                    "{} | {}",
                    opt(r.rtt_p50_speedup, |x| format!("{x:.1}×")),
                    opt(r.msgs_per_sec, |x| format!("{x:.1}×"))
                ),
                None => "-".into(),
            };
            line.push_str(&format!(" {cell:>24}"));
        }
        outln!("{line}");
    }
}

/// Prints the large-message rows: one-way throughput only.
pub fn print_large_table(rows: &[Row]) {
    outln!(
        "large messages, one-way throughput (framed lapce-ipc fragments them through a {} ring):",
        payload_label(super::lapce::LARGE_RING)
    );
    let base = Transport::Baseline.name();
    let header = format!(
        "{:<22} {:<9} {:>7} {:>9} {:>10} {:>9} {:>13}",
        "transport",
        "mode",
        "message",
        "messages",
        "msg/s",
        "GiB/s",
        format!("msg/s vs {base}")
    );
    outln!("{header}");
    outln!("{}", "-".repeat(header.chars().count()));
    let mut last_payload = None;
    for row in rows.iter().filter(|r| r.test == LARGE) {
        if last_payload.is_some_and(|p| p != row.payload_bytes) {
            outln!();
        }
        last_payload = Some(row.payload_bytes);
        let ratio = if row.transport == base {
            "(baseline)".to_string()
        } else {
            opt(row.msgs_per_sec_vs_uds, |x| format!("{x:.2}×"))
        };
        outln!(
            "{:<22} {:<9} {:>7} {:>9} {:>10} {:>9} {:>13}",
            row.transport,
            row.mode,
            payload_label(row.payload_bytes as usize),
            row.throughput_messages.map_or_else(|| "-".into(), |n| n.to_string()),
            opt(row.msgs_per_sec, rate),
            opt(row.gib_per_sec, |x| format!("{x:.2}")),
            ratio,
        );
        print_marks(row);
    }
    outln!();
    outln!(
        "GiB = 2^30 bytes of payload; msg/s vs {base} = row msg/s / {base} msg/s (same as the GiB/s ratio)."
    );
}

/// Prints the idle-CPU measurement.
pub fn print_idle(idle: &Idle) {
    match idle {
        Idle::Measured(i) => {
            let sched = match i.sched_ns {
                Some(ns) => format!("schedstat {:.0} µs on CPU; ", ns as f64 / 1e3),
                None => String::new(),
            };
            outln!(
                "idle: lapce-ipc adaptive pair, server blocked in recv for {:.2} s: server CPU {:.3}% of one core \
                 ({sched}/proc stat {} ticks at {} Hz = {:.1}%)",
                i.wall.as_secs_f64(),
                i.percent(),
                i.ticks,
                i.ticks_per_second,
                i.ticks_percent()
            );
        }
        Idle::Unavailable(why) => outln!("idle: lapce-ipc adaptive pair: {why}"),
        Idle::Failed(e) => outln!("idle: FAILED: {e}"),
    }
}

/// Outcome of one target.
pub(super) enum Verdict {
    /// Met, with the figures.
    Met(String),
    /// Missed, with the figures, and for a ratio target how far: the figure's ratio over the
    /// target's (1.3: 1.3 times worse than the target allows; `None` for an absolute target).
    Missed(String, Option<f64>),
    /// Could not be judged (not measured or failed).
    Unknown(String),
}

/// Judges `ok` on figures `detail` (an absolute target).
pub(super) fn verdict(ok: bool, detail: String) -> Verdict {
    if ok {
        Verdict::Met(detail)
    } else {
        Verdict::Missed(detail, None)
    }
}

/// Judges a ratio target on figures `detail`: `past` is the figure's ratio over the target's,
/// in the direction of worse (met up to 1; 2.0: twice as far as the target allows).
pub(super) fn ratio_verdict(past: f64, detail: String) -> Verdict {
    if past <= 1.0 {
        Verdict::Met(detail)
    } else {
        Verdict::Missed(detail, Some(past))
    }
}

/// The 1 KiB standard row of (transport, mode), if measured.
fn kib_row(rows: &[Row], transport: Transport, mode: Mode) -> Option<&Row> {
    rows.iter().find(|r| r.is(transport, mode, 1024))
}

/// Verdict when a 1 KiB figure is missing.
fn missing() -> Verdict {
    Verdict::Unknown("1 KiB not measured or failed".into())
}

/// The absolute performance targets (measured on Linux), judged on this run.
fn targets(rows: &[Row], idle: &Idle) -> Vec<(&'static str, Verdict)> {
    let spin = kib_row(rows, Transport::Lapce, Mode::Spin).and_then(|r| r.rtt_p50_us);
    vec![
        (
            "spin-mode 1 KiB RTT p50 < 1 µs",
            spin.map_or_else(missing, |s| verdict(s < 1.0, format!("{} µs", fmt_us(s)))),
        ),
        (
            "1 KiB one-way throughput ≥ 5 M msg/s (best lapce-ipc mode)",
            best_throughput(rows).map_or_else(missing, |(m, v)| {
                verdict(v >= 5e6, format!("{} msg/s ({})", rate(v), m.name()))
            }),
        ),
        idle_target(idle),
    ]
}

/// The targets that compare two figures of the same run (what `--gate` judges: ratios hold on
/// a noisy or slow machine where absolute times do not).
fn ratio_targets(rows: &[Row], metrics: &[MetricsCost]) -> Vec<(&'static str, Verdict)> {
    let p50 = |t, m| kib_row(rows, t, m).and_then(|r| r.rtt_p50_us);
    let spin = p50(Transport::Lapce, Mode::Spin);
    let adaptive = p50(Transport::Lapce, Mode::Adaptive);
    let uds = p50(Transport::Baseline, Mode::Blocking);

    let mut targets: Vec<(&str, Verdict)> = Vec::new();
    targets.push((
        "adaptive 1 KiB RTT p50 within 2× of spin p50",
        adaptive.zip(spin).map_or_else(missing, |(a, s)| {
            ratio_verdict(a / s / 2.0, format!("{} µs vs {} µs = {:.2}×", fmt_us(a), fmt_us(s), a / s))
        }),
    ));
    if cfg!(unix) {
        targets.push((
            "adaptive 1 KiB RTT p50 at least 20× better than uds",
            adaptive.zip(uds).map_or_else(missing, |(a, u)| {
                ratio_verdict(
                    20.0 / (u / a),
                    format!("uds {} µs / adaptive {} µs = {:.1}×", fmt_us(u), fmt_us(a), u / a),
                )
            }),
        ));
    }
    targets.push(node_target(rows));
    targets.extend(framing_targets(rows));
    targets.push(metrics_target(metrics));
    targets.extend(super::rpc_report::targets(rows));
    targets
}

/// The performance target "outperform Node.js IPC by 10×": the adaptive round trip's p50 against the faster
/// of the two Node.js serializations, at every payload measured (the worst counts).
fn node_target(rows: &[Row]) -> (&'static str, Verdict) {
    let name = "adaptive RTT p50 at least 10× better than Node.js IPC (faster serialization, every payload)";
    let mut worst: Option<(f64, String)> = None;
    let mut detail = Vec::new();
    for row in rows.iter().filter(|r| {
        r.test == STANDARD && r.transport == Transport::Lapce.name() && r.mode == Mode::Adaptive.name()
    }) {
        let best_node = [Transport::NodeJson, Transport::NodeAdvanced]
            .iter()
            .filter_map(|t| row.vs_peers.get(t.name()).and_then(|r| r.rtt_p50_speedup).map(|x| (x, t.name())))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((ratio, peer)) = best_node else { continue };
        detail.push(format!("{} {ratio:.1}× ({peer})", payload_label(row.payload_bytes as usize)));
        if worst.as_ref().is_none_or(|w| ratio < w.0) {
            worst = Some((ratio, peer.to_string()));
        }
    }
    match worst {
        Some((w, _)) => (name, ratio_verdict(10.0 / w, detail.join(", "))),
        None => (name, Verdict::Unknown("Node.js IPC not measured (see above)".into())),
    }
}

/// The performance targets for Windows, judged on this run: 1 KiB average latency < 15 µs,
/// p99 < 50 µs, > 300 K msg/s. Latency is the round trip of the default (adaptive) mode, with
/// spin mode alongside; throughput is one-way, best lapce-ipc mode.
fn windows_targets(rows: &[Row], idle: &Idle) -> Vec<(&'static str, Verdict)> {
    let adaptive = kib_row(rows, Transport::Lapce, Mode::Adaptive);
    let spin = kib_row(rows, Transport::Lapce, Mode::Spin);
    let latency = |f: fn(&Row) -> Option<f64>, limit: f64| {
        adaptive.and_then(f).map_or_else(missing, |a| {
            let spin = spin.and_then(f).map_or_else(|| "-".into(), fmt_us);
            verdict(a < limit, format!("adaptive {} µs (spin {spin} µs)", fmt_us(a)))
        })
    };
    vec![
        ("1 KiB RTT mean < 15 µs (adaptive)", latency(|r| r.rtt_mean_us, 15.0)),
        ("1 KiB RTT p99 < 50 µs (adaptive)", latency(|r| r.rtt_p99_us, 50.0)),
        (
            "1 KiB one-way throughput > 300 K msg/s (best lapce-ipc mode)",
            best_throughput(rows)
                .map_or_else(missing, |(m, v)| verdict(v > 3e5, format!("{} msg/s ({})", rate(v), m.name()))),
        ),
        idle_target(idle),
    ]
}

/// The best 1 KiB one-way throughput of the raw lapce-ipc modes, with its mode.
fn best_throughput(rows: &[Row]) -> Option<(Mode, f64)> {
    [Mode::Spin, Mode::Adaptive]
        .into_iter()
        .filter_map(|m| kib_row(rows, Transport::Lapce, m).and_then(|r| r.msgs_per_sec).map(|v| (m, v)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Framing overhead on a 1 KiB spin round trip, CRC on and off.
fn framing_targets(rows: &[Row]) -> Vec<(&'static str, Verdict)> {
    let p50 = |t, m| kib_row(rows, t, m).and_then(|r| r.rtt_p50_us);
    let spin = p50(Transport::Lapce, Mode::Spin);
    let mut targets = Vec::new();
    for (t, label, note) in [
        (
            Transport::LapceFramed,
            "framing overhead on a 1 KiB spin round trip < 15% (CRC on)",
            // Most of this overhead is reading the reply at all: the raw client looks at one byte.
            " (checking the CRC reads all 1 KiB of each echo from the other CPU; the raw probe reads 1 byte)",
        ),
        (Transport::LapceFramedNoCrc, "framing overhead on a 1 KiB spin round trip < 15% (CRC off)", ""),
    ] {
        targets.push((
            label,
            p50(t, Mode::Spin).zip(spin).map_or_else(missing, |(f, s)| {
                let overhead = (f / s - 1.0) * 100.0;
                ratio_verdict(
                    f / s / 1.15,
                    format!("{} µs vs raw {} µs = {overhead:+.1}%{note}", fmt_us(f), fmt_us(s)),
                )
            }),
        ));
    }
    targets
}

/// The idle-CPU target.
fn idle_target(idle: &Idle) -> (&'static str, Verdict) {
    (
        "idle connected pair < 1% CPU",
        match idle {
            Idle::Measured(i) => verdict(i.percent() < 1.0, format!("{:.3}% of one core", i.percent())),
            Idle::Unavailable(why) => Verdict::Unknown((*why).into()),
            Idle::Failed(_) => Verdict::Unknown("measurement failed".into()),
        },
    )
}

/// How far past a ratio target the gate still passes (`--gate-margin`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateMargin {
    /// The same factor on every target's ratio (1: the targets as shown).
    Factor(f64),
    /// Each target's margin from [`CI_MARGINS`].
    Ci,
}

impl std::fmt::Display for GateMargin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateMargin::Factor(x) => write!(f, "{x}×"),
            GateMargin::Ci => f.write_str("the CI margins"),
        }
    }
}

/// The CI margins (`--gate-margin ci`, what `.ci/run` uses), by the start of the target's name:
/// how far past its target a figure may be before the gate fails on a shared 2-vCPU CI machine,
/// other builds running. Each is at least 2.5 times the worst miss seen in `bench --quick` runs on
/// such a machine (docs/BENCHMARKS.md has them), so that noise does not fail CI and a gross
/// regression (a lost wake-up path, a copy too many) still does. `None`: reported, not gated in
/// CI, because on a loaded machine the figure is set by the other load, not by lapce-ipc: the
/// "ordinary program" rows' unpinned threads wait for a CPU (their 64 B p50 was 38-56 µs,
/// 34-50× past the target, with the CPUs busy), and the 64 KiB target has not been met on this
/// machine kind (2.1-2.9× against 10×).
pub const CI_MARGINS: &[(&str, Option<f64>)] = &[
    ("adaptive 1 KiB RTT p50 within 2× of spin", Some(4.0)),
    ("adaptive 1 KiB RTT p50 at least 20× better than uds", Some(4.0)),
    ("adaptive RTT p50 at least 10× better than Node.js IPC", Some(4.0)),
    ("framing overhead on a 1 KiB spin round trip", Some(4.0)),
    ("metrics cost < 5%", Some(3.0)),
    ("lapce-ipc-rpc RTT p50 ≤ 1.3× lapce-ipc-framed", Some(4.0)),
    ("lapce-ipc-rpc-blocking RTT p50 ≤ 1.5× lapce-ipc-rpc", Some(4.0)),
    ("lapce-ipc-rpc RTT p50 at 64 KiB", None),
    ("lapce-ipc-rpc tokio-main RTT p50", None),
    ("lapce-ipc-rpc-blocking unpinned RTT p50", None),
    // The socket's one-way rate moves most with the load: 238 k to 924 k msg/s between runs.
    ("pipelined lapce-ipc-rpc req/s", Some(8.0)),
];

/// The CI margin of the ratio target `name` (`None`: not gated in CI); a target missing from
/// [`CI_MARGINS`] gets 1, its target as shown (a unit test keeps the table complete).
fn ci_margin(name: &str) -> Option<f64> {
    CI_MARGINS.iter().find(|(start, _)| name.starts_with(start)).map_or(Some(1.0), |m| m.1)
}

impl GateMargin {
    /// The factor for the ratio target `name`; `None`: not gated.
    fn for_target(self, name: &str) -> Option<f64> {
        match self {
            GateMargin::Factor(x) => Some(x),
            GateMargin::Ci => ci_margin(name),
        }
    }
}

/// Prints the targets and whether this run met them: the ratio targets, then the absolute ones
/// (the performance targets, measured on Linux; on Windows the targets for Windows instead). Returns
/// how many ratio targets the gate fails: missed by more than their `margin` (`--gate-margin`),
/// or not judged, so a broken measurement cannot pass the gate.
pub fn print_targets(rows: &[Row], idle: &Idle, metrics: &[MetricsCost], margin: GateMargin) -> usize {
    let ratios = ratio_targets(rows, metrics);
    let absolute = if cfg!(windows) { windows_targets(rows, idle) } else { targets(rows, idle) };
    if margin == GateMargin::Factor(1.0) {
        outln!("ratio targets (figures of this run against each other; `--gate` fails the run on a miss):");
    } else {
        outln!(
            "ratio targets (figures of this run against each other; `--gate` fails the run on a miss beyond \
             {margin}):"
        );
    }
    print_verdicts(&ratios, Some(margin));
    if cfg!(windows) {
        outln!("absolute targets (the performance targets for Windows; a report, never a gate):");
    } else {
        outln!("absolute targets (a report, never a gate: times depend on the machine):");
    }
    print_verdicts(&absolute, None);
    let met = ratios.iter().chain(&absolute).filter(|(_, v)| matches!(v, Verdict::Met(_))).count();
    outln!("  {met} of {} targets met on this run", ratios.len() + absolute.len());
    ratios.iter().filter(|(name, v)| fails_gate(v, margin.for_target(name))).count()
}

/// Whether a ratio target's verdict fails the gate with `margin` (`None`: not gated).
fn fails_gate(v: &Verdict, margin: Option<f64>) -> bool {
    let Some(margin) = margin else { return false };
    match v {
        Verdict::Met(_) => false,
        Verdict::Missed(_, Some(past)) => *past > margin,
        Verdict::Missed(_, None) | Verdict::Unknown(_) => true,
    }
}

/// Prints targets and their verdicts; `margin`: the gate's, for ratio targets.
fn print_verdicts(targets: &[(&str, Verdict)], margin: Option<GateMargin>) {
    for (name, v) in targets {
        let (tag, detail) = match v {
            Verdict::Met(d) => ("met   ", d.clone()),
            Verdict::Missed(d, None) => ("MISSED", d.clone()),
            Verdict::Missed(d, Some(past)) => {
                let gate = match margin.map(|m| m.for_target(name)) {
                    Some(Some(m)) if *past <= m => format!(", within the gate's {m}× margin"),
                    Some(None) => ", not gated with this margin".to_string(),
                    _ => String::new(),
                };
                ("MISSED", format!("{d} ({past:.2}× past the target{gate})"))
            }
            Verdict::Unknown(d) => ("n/a   ", d.clone()),
        };
        outln!("  [{tag}] {name}: {detail}");
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

    /// A standard case of (transport, mode) at `payload` with one round trip of `rtt_ns` and
    /// `msgs_per_sec`.
    fn one(transport: Transport, mode: Mode, payload: usize, rtt_ns: u64, msgs_per_sec: u64) -> CaseResult {
        let mut h = crate::bench::measure::new_histogram().unwrap();
        h.record(rtt_ns).unwrap();
        CaseResult {
            transport,
            mode,
            payload,
            large: false,
            rounds: 1,
            messages: msgs_per_sec,
            budget: None,
            rtt: Some(Ok(h)),
            tput: Ok(Throughput { messages: msgs_per_sec, payload, elapsed: Duration::from_secs(1) }),
        }
    }

    /// Every non-peer row gets a ratio to each peer of its payload; peers get none; the Node.js
    /// target takes the faster serialization at the worst payload, and a miss there counts for
    /// the gate.
    #[test]
    fn ratios_to_each_peer_and_the_node_target() {
        let cases = [
            one(Transport::Lapce, Mode::Adaptive, 64, 1_000, 4_000_000),
            one(Transport::Baseline, Mode::Blocking, 64, 20_000, 1_000_000),
            one(Transport::NodeJson, Mode::EventLoop, 64, 30_000, 100_000),
            one(Transport::NodeAdvanced, Mode::EventLoop, 64, 40_000, 50_000),
            one(Transport::Lapce, Mode::Adaptive, 1024, 2_000, 2_000_000),
            one(Transport::NodeJson, Mode::EventLoop, 1024, 50_000, 100_000),
            one(Transport::NodeAdvanced, Mode::EventLoop, 1024, 16_000, 100_000),
        ];
        let rows = rows(&cases, &Idle::Unavailable("test"));
        let r = &rows[0].vs_peers;
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            ["node-ipc-advanced", "node-ipc-json", Transport::Baseline.name()]
        );
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 0.05 * b);
        assert!(near(r["node-ipc-json"].rtt_p50_speedup, 30.0), "{r:?}");
        assert!(near(r["node-ipc-json"].msgs_per_sec, 40.0), "{r:?}");
        assert!(near(r["node-ipc-advanced"].msgs_per_sec, 80.0), "{r:?}");
        assert!(rows[1].vs_peers.is_empty() && rows[2].vs_peers.is_empty(), "peers get no ratios");
        // 1 KiB: only the Node.js peers were measured.
        assert_eq!(rows[4].vs_peers.len(), 2);

        // At 1 KiB the faster serialization (advanced, 16 µs) is only 8× slower: missed.
        let (_, v) = node_target(&rows);
        let Verdict::Missed(detail, past) = v else { panic!("expected a miss") };
        // 8× where 10× is the target: 1.25 times as far.
        assert!(past.is_some_and(|p| (p - 1.25).abs() < 0.01), "{past:?}");
        assert!(
            detail.contains("64 B 30.0× (node-ipc-json)")
                && detail.contains("1 KiB 8.0× (node-ipc-advanced)"),
            "{detail}"
        );
        let missed = ratio_targets(&rows, &[]);
        assert!(missed.iter().any(|(n, v)| n.contains("Node.js") && matches!(v, Verdict::Missed(..))));
        // The gate's margin: a miss within it passes, one beyond it and a target not judged fail.
        let node = &missed.iter().find(|(n, _)| n.contains("Node.js")).unwrap().1;
        assert!(fails_gate(node, Some(1.0)) && fails_gate(node, Some(1.2)));
        assert!(!fails_gate(node, Some(1.3)) && !fails_gate(node, Some(3.0)) && !fails_gate(node, None));
        assert!(fails_gate(&Verdict::Unknown("x".into()), Some(100.0)));
        assert!(!fails_gate(&Verdict::Unknown("x".into()), None));
        assert!(!fails_gate(&Verdict::Met("x".into()), Some(1.0)));
        // Without Node.js rows the target cannot be judged (and the gate counts it as missed).
        let without_node = super::rows(&cases[..2], &Idle::Unavailable("test"));
        let (_, v) = node_target(&without_node);
        assert!(matches!(v, Verdict::Unknown(_)));
        let idle = Idle::Unavailable("test");
        assert!(print_targets(&without_node, &idle, &[], GateMargin::Factor(1.0)) >= 1);
        assert!(print_targets(&without_node, &idle, &[], GateMargin::Factor(100.0)) >= 1);
        assert!(print_targets(&without_node, &idle, &[], GateMargin::Ci) >= 1);
    }

    /// Every ratio target has its CI margin (the names are the same whatever was measured), each
    /// entry of the table names one target, and the margins are at least 1.
    #[test]
    fn every_ratio_target_has_a_ci_margin() {
        let targets = ratio_targets(&[], &[]);
        for (name, _) in &targets {
            let entries = CI_MARGINS.iter().filter(|(start, _)| name.starts_with(start)).count();
            assert_eq!(entries, 1, "{name}: {entries} CI margins");
        }
        for (start, margin) in CI_MARGINS {
            // Windows has no uds target.
            let here = !(cfg!(windows) && start.contains("uds"));
            assert_eq!(targets.iter().any(|(name, _)| name.starts_with(start)), here, "{start}");
            assert!(margin.is_none_or(|m| m >= 1.0), "{start}");
        }
        assert_eq!(GateMargin::Ci.for_target("lapce-ipc-rpc tokio-main RTT p50 at 64 B ..."), None);
        assert_eq!(GateMargin::Ci.for_target("metrics cost < 5% of the round trip"), Some(3.0));
        assert_eq!(GateMargin::Factor(2.0).for_target("anything"), Some(2.0));
    }

    #[test]
    fn windows_targets_use_mean_p99_and_throughput() {
        let case = |mode, rtts_ns: &[u64], msgs_per_sec: u64| {
            let mut h = crate::bench::measure::new_histogram().unwrap();
            for &ns in rtts_ns {
                h.record(ns).unwrap();
            }
            CaseResult {
                transport: Transport::Lapce,
                mode,
                payload: 1024,
                large: false,
                rounds: rtts_ns.len() as u64,
                messages: 1,
                budget: None,
                rtt: Some(Ok(h)),
                tput: Ok(Throughput {
                    messages: msgs_per_sec,
                    payload: 1024,
                    elapsed: Duration::from_secs(1),
                }),
            }
        };
        // Adaptive: mean 14 µs, but one slow round trip in 100 puts p99 over 50 µs.
        let mut adaptive = vec![10_000u64; 98];
        adaptive.extend([100_000, 300_000]);
        let cases = [case(Mode::Spin, &[5_000; 100], 250_000), case(Mode::Adaptive, &adaptive, 400_000)];
        let idle = Idle::Unavailable("not available on this platform");
        let rows = rows(&cases, &idle);
        assert_eq!(rows.len(), 2, "no idle row when it is not measured");
        let mean = rows[1].rtt_mean_us.unwrap();
        assert!((mean - 13.8).abs() < 0.1, "{mean}");

        let targets = windows_targets(&rows, &idle);
        let verdicts: Vec<&str> = targets
            .iter()
            .map(|(_, v)| match v {
                Verdict::Met(_) => "met",
                Verdict::Missed(..) => "missed",
                Verdict::Unknown(_) => "n/a",
            })
            .collect();
        // mean, p99, throughput (best mode: adaptive), idle (the framing targets are ratios).
        assert_eq!(verdicts, ["met", "missed", "met", "n/a"]);
        let Verdict::Met(detail) = &targets[0].1 else { unreachable!() };
        assert!(detail.contains("spin 5.00 µs"), "{detail}");
    }
}
