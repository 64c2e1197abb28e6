//! The report of `bench --scale`: its table and its targets.

use super::lean::{LeanIdle, LEAN_STARTS};
use super::{ScaleClient, ScaleRow, PAYLOAD, SETTLE};
use crate::bench::report::{fmt_us, rate};
use crate::footprint::FDS_PER_WARM_SEGMENT;

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
