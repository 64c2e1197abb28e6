//! The request/response rows in the report: a note on what they measure, and their targets
//! (ratios of this run's figures, judged by `--gate` like the others).

use super::report::{fmt_us, payload_label, rate, ratio_verdict, Row, Verdict};
use super::{Mode, Transport};

/// One row of the run, if it was measured.
fn row(rows: &[Row], transport: Transport, mode: Mode, payload: usize) -> Option<&Row> {
    rows.iter().find(|r| r.is(transport, mode, payload as u64))
}

/// The p50 of a row, in µs.
fn p50(rows: &[Row], transport: Transport, mode: Mode, payload: usize) -> Option<f64> {
    row(rows, transport, mode, payload).and_then(|r| r.rtt_p50_us)
}

/// Explains the request/response rows and compares them with the frames they send.
pub fn print_note(rows: &[Row]) {
    let rpc = Transport::Rpc.name();
    if !rows.iter().any(|r| r.transport == rpc) {
        return;
    }
    outln!(
        "{rpc}, {}: request/response through IpcServer and IpcClient / BlockingIpcClient (framed, CRC \
         on, a sync echo handler); round trips are sequential requests, msg/s answered requests per \
         second with {} tasks (async) or {} threads (blocking) making requests back to back. \
         Modes: adaptive and blocking = the bench's pinned setup; tokio-main and unpinned = an \
         ordinary program (default configuration, nothing pinned; tokio-main awaits from block_on).",
        Transport::RpcBlocking.name(),
        super::rpc::IN_FLIGHT,
        super::rpc::THREADS,
    );
    let framed = Transport::LapceFramed;
    for r in
        rows.iter().filter(|r| r.transport == rpc && r.mode == Mode::Adaptive.name() && r.test == "standard")
    {
        let payload = r.payload_bytes as usize;
        if let (Some(p50), Some(framed_p50)) = (r.rtt_p50_us, p50(rows, framed, Mode::Spin, payload)) {
            outln!(
                "  {}: p50 {} µs vs the same frames' {} µs ({} spin): {:.2}× the frames' round trip",
                payload_label(payload),
                fmt_us(p50),
                fmt_us(framed_p50),
                framed.name(),
                p50 / framed_p50
            );
        }
    }
}

/// Judges `limit` on `a / b` for each payload with both figures: how far past its limit the
/// worst is (see [`ratio_verdict`]) and the figures; `None` when none has both.
fn ratio_at(
    payloads: &[(usize, f64)],
    a: impl Fn(usize) -> Option<f64>,
    b: impl Fn(usize) -> Option<f64>,
) -> Option<(f64, String)> {
    let mut judged = Vec::new();
    let mut past = 0.0f64;
    for &(payload, limit) in payloads {
        if let (Some(a), Some(b)) = (a(payload), b(payload)) {
            past = past.max(a / b / limit);
            judged.push(format!(
                "{} {}/{} µs = {:.2}× (≤ {limit}×)",
                payload_label(payload),
                fmt_us(a),
                fmt_us(b),
                a / b
            ));
        }
    }
    (!judged.is_empty()).then(|| (past, judged.join(", ")))
}

/// A verdict from [`ratio_at`], or unknown with `why`.
fn judged(outcome: Option<(f64, String)>, why: &str) -> Verdict {
    outcome.map_or_else(|| Verdict::Unknown(why.into()), |(past, detail)| ratio_verdict(past, detail))
}

/// The request/response layer's targets: it adds little to the frames it sends, keeps its lead
/// over the socket at 64 KiB, its blocking client keeps up with the async one, an ordinary
/// program gets the rings' speed, and pipelined requests outrun the socket's one-way messages.
pub fn targets(rows: &[Row]) -> Vec<(&'static str, Verdict)> {
    let base = Transport::Baseline;
    let uds = |payload| p50(rows, base, Mode::Blocking, payload);
    let rpc = |payload| p50(rows, Transport::Rpc, Mode::Adaptive, payload);
    let framed = |payload| p50(rows, Transport::LapceFramed, Mode::Spin, payload);
    let blocking = |payload| p50(rows, Transport::RpcBlocking, Mode::Blocking, payload);
    let mut targets = vec![
        (
            "lapce-ipc-rpc RTT p50 ≤ 1.3× lapce-ipc-framed at 64 B and 1 KiB, ≤ 1.5× at 64 KiB",
            judged(ratio_at(&[(64, 1.3), (1024, 1.3), (64 << 10, 1.5)], rpc, framed), "not measured"),
        ),
        (
            "lapce-ipc-rpc-blocking RTT p50 ≤ 1.5× lapce-ipc-rpc at 64 B and 1 KiB",
            judged(ratio_at(&[(64, 1.5), (1024, 1.5)], blocking, rpc), "not measured"),
        ),
    ];
    let faster = |what: Option<f64>, than: Option<f64>, times: f64| {
        what.zip(than).map_or_else(
            || Verdict::Unknown("64 B or 64 KiB not measured or failed".into()),
            |(w, u)| {
                ratio_verdict(
                    times / (u / w),
                    format!("{} {} µs / {} µs = {:.1}×", base.name(), fmt_us(u), fmt_us(w), u / w),
                )
            },
        )
    };
    targets.push((
        "lapce-ipc-rpc RTT p50 at 64 KiB at least 10× better than the baseline",
        faster(rpc(64 << 10), uds(64 << 10), 10.0),
    ));
    targets.push((
        "lapce-ipc-rpc tokio-main RTT p50 at 64 B at least 20× better than the baseline",
        faster(p50(rows, Transport::Rpc, Mode::TokioMain, 64), uds(64), 20.0),
    ));
    targets.push((
        "lapce-ipc-rpc-blocking unpinned RTT p50 at 64 B at least 20× better than the baseline",
        faster(p50(rows, Transport::RpcBlocking, Mode::Unpinned, 64), uds(64), 20.0),
    ));
    let pipelined = row(rows, Transport::Rpc, Mode::Adaptive, 64).and_then(|r| r.msgs_per_sec);
    let one_way = row(rows, base, Mode::Blocking, 64).and_then(|r| r.msgs_per_sec);
    targets.push((
        "pipelined lapce-ipc-rpc req/s at 64 B ≥ 4× the baseline's one-way msg/s",
        pipelined.zip(one_way).map_or_else(
            || Verdict::Unknown("64 B not measured or failed".into()),
            |(p, u)| {
                ratio_verdict(4.0 * u / p, format!("{} req/s vs {} msg/s = {:.1}×", rate(p), rate(u), p / u))
            },
        ),
    ));
    targets
}
