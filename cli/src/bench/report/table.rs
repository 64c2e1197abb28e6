//! The bench's tables: the measurement rows, the ratios to each peer, the large messages, idle
//! CPU and the cost of metrics.

use super::{fmt_us, is_peer, payload_label, rate, Idle, MetricsCost, Row, LARGE, PEERS, STANDARD};
use crate::bench::Transport;

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
    crate::bench::rpc_report::print_note(rows);
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
        payload_label(crate::bench::lapce::LARGE_RING)
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

/// Formats an optional value, `-` when absent.
fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}
