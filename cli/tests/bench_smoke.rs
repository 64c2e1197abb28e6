//! Smoke test of `lapce-ipc bench`: runs the real binary (which spawns its server child
//! processes) with `--quick` on one payload (plus the default large-message sizes, 1 MiB and
//! 10 MiB) and checks the JSON it writes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// The baseline transport: a Unix-domain socket, on Windows a named pipe.
const BASELINE: &str = if cfg!(windows) { "pipe" } else { "uds" };

/// Removes the JSON file when the test ends, whether it passes or not.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A path in the temp directory that no other run uses.
fn unique_json_path() -> TempFile {
    unique_path("json")
}

/// A path in the temp directory that no other run uses, ending in `.EXT`.
fn unique_path(ext: &str) -> TempFile {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    TempFile(std::env::temp_dir().join(format!("lapce-ipc-bench-smoke-{}-{nanos}.{ext}", std::process::id())))
}

#[test]
fn quick_bench_writes_json_for_every_transport() {
    let json = unique_json_path();
    let plot = unique_path("svg");
    let out = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args(["bench", "--quick", "--payloads", "64", "--json"])
        .arg(&json.0)
        .arg("--plot")
        .arg(&plot.0)
        .output()
        .expect("run lapce-ipc bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("targets"), "no targets summary:\n{stdout}");
    assert!(stdout.contains("pinned"), "no pinning line:\n{stdout}");

    let text = std::fs::read_to_string(&json.0).expect("read the JSON file");
    let rows: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = rows.as_array().expect("a JSON array");

    // The plot: an SVG picture with one panel (64 B) naming every transport measured, and
    // none for the large-message sizes (no round trips there).
    let svg = std::fs::read_to_string(&plot.0).expect("read the plot");
    assert!(stdout.contains(&format!("wrote {}", plot.0.display())), "no note of the plot:\n{stdout}");
    assert!(
        svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "not SVG: {svg:.200}"
    );
    assert!(svg.contains("64 B payload") && !svg.contains("MiB payload"), "panels:\n{svg}");
    for name in [
        "lapce-ipc spin",
        "lapce-ipc adaptive",
        "lapce-ipc-framed spin",
        "lapce-ipc-framed-nocrc spin",
        "lapce-ipc-rpc adaptive",
        "lapce-ipc-rpc tokio-main",
        "lapce-ipc-rpc-blocking blocking",
        "lapce-ipc-rpc-blocking unpinned",
        &format!("{BASELINE} blocking"),
    ] {
        assert!(svg.contains(&format!("\n{name}\n")), "{name} not in the plot's legend");
    }
    // A curve per standard row with round trips (the TLS rows, measured apart, are not
    // plotted); the legend lines and axes are short paths.
    let plotted = |r: &&serde_json::Value| r["transport"] != "lapce-ipc-rpc-tls";
    let standard_rows = rows
        .iter()
        .filter(plotted)
        .filter(|r| r["test"] == "standard" && r["rtt_p50_us"].is_number())
        .count();
    let curves = svg
        .split("<polyline")
        .filter(|p| p.split("points=").nth(1).is_some_and(|s| s.matches(',').count() > 100))
        .count();
    assert_eq!(curves, standard_rows, "one curve per standard row");

    let mut standard = vec![
        ("lapce-ipc", "spin"),
        ("lapce-ipc", "adaptive"),
        ("lapce-ipc-rpc", "adaptive"),
        ("lapce-ipc-rpc", "tokio-main"),
        ("lapce-ipc-rpc-blocking", "blocking"),
        ("lapce-ipc-rpc-blocking", "unpinned"),
        ("lapce-ipc-rpc-tls", "tokio-main"),
        (BASELINE, "blocking"),
    ];
    if cfg!(unix) {
        standard.push(("uds-tokio", "event-loop"));
    }
    for (transport, mode) in standard {
        let row = rows
            .iter()
            .find(|r| r["transport"] == transport && r["mode"] == mode && r["payload_bytes"] == 64)
            .unwrap_or_else(|| panic!("no row for {transport} {mode} 64 B in {text}"));
        for key in ["msgs_per_sec", "rtt_p50_us"] {
            let v = row[key].as_f64().unwrap_or_else(|| panic!("{transport} {mode}: {key} missing in {row}"));
            assert!(v > 0.0, "{transport} {mode}: {key} = {v}");
        }
        for key in ["rtt_mean_us", "rtt_p99_us", "rtt_p999_us", "rtt_max_us", "mb_per_sec"] {
            assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{transport} {mode}: bad {key} in {row}");
        }
        assert!(row["error"].is_null(), "{transport} {mode}: {row}");
    }
    // The Node.js IPC peer, both serializations, and every lapce-ipc row's ratio to it; without
    // Node.js the rows are skipped with a message.
    let has_node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if has_node {
        for transport in ["node-ipc-json", "node-ipc-advanced"] {
            let row = rows
                .iter()
                .find(|r| {
                    r["transport"] == transport && r["mode"] == "event-loop" && r["payload_bytes"] == 64
                })
                .unwrap_or_else(|| panic!("no row for {transport} 64 B in {text}"));
            assert!(row["error"].is_null(), "{row}");
            for key in ["msgs_per_sec", "rtt_p50_us", "rtt_p99_us"] {
                assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{transport}: bad {key} in {row}");
            }
            let adaptive = rows
                .iter()
                .find(|r| {
                    r["transport"] == "lapce-ipc" && r["mode"] == "adaptive" && r["payload_bytes"] == 64
                })
                .unwrap();
            let ratio = &adaptive["vs_peers"][transport];
            assert!(ratio["rtt_p50_speedup"].as_f64().is_some_and(|v| v > 0.0), "{adaptive}");
            assert!(ratio["msgs_per_sec"].as_f64().is_some_and(|v| v > 0.0), "{adaptive}");
        }
        assert!(stdout.contains("against each peer"), "no table of ratios to each peer:\n{stdout}");
    } else {
        assert!(stdout.contains("Node.js IPC rows: skipped"), "no note on the missing Node.js:\n{stdout}");
    }
    assert!(stdout.contains("better than Node.js IPC"), "no Node.js target:\n{stdout}");
    // Framed rows (CRC on and off) in the standard table.
    for transport in ["lapce-ipc-framed", "lapce-ipc-framed-nocrc"] {
        let row = rows
            .iter()
            .find(|r| r["transport"] == transport && r["test"] == "standard" && r["payload_bytes"] == 64)
            .unwrap_or_else(|| panic!("no row for {transport} 64 B in {text}"));
        assert!(row["rtt_p50_us"].as_f64().is_some_and(|v| v > 0.0), "{row}");
        assert!(row["error"].is_null(), "{row}");
    }
    // Large-message rows: throughput only, with GiB/s and a ratio to the baseline of the same size.
    for size in [1u64 << 20, 10 << 20] {
        for transport in ["lapce-ipc-framed", "lapce-ipc-framed-nocrc", BASELINE] {
            let row = rows
                .iter()
                .find(|r| r["transport"] == transport && r["test"] == "large" && r["payload_bytes"] == size)
                .unwrap_or_else(|| panic!("no large-message row for {transport} {size} in {text}"));
            assert!(row["error"].is_null(), "{row}");
            for key in ["msgs_per_sec", "gib_per_sec", "mb_per_sec"] {
                assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{transport} {size}: bad {key} in {row}");
            }
            assert!(row["throughput_messages"].as_u64().is_some_and(|n| n >= 10), "{row}");
            assert!(row["rtt_p50_us"].is_null(), "no round trips in a large-message row: {row}");
            if transport != BASELINE {
                assert!(row["msgs_per_sec_vs_uds"].as_f64().is_some_and(|v| v > 0.0), "{row}");
            }
        }
    }
    assert!(stdout.contains("large messages"), "no large-message table:\n{stdout}");
    // Request/response round trips with metrics on and off, and the target on their difference.
    for size in [64u64, 1024] {
        for test in ["metrics-off", "metrics-on"] {
            let row = rows
                .iter()
                .find(|r| {
                    r["transport"] == "lapce-ipc-rpc" && r["test"] == test && r["payload_bytes"] == size
                })
                .unwrap_or_else(|| panic!("no {test} row for {size} B in {text}"));
            assert!(row["error"].is_null(), "{row}");
            assert!(row["rtt_p50_us"].as_f64().is_some_and(|v| v > 0.0), "{row}");
        }
    }
    assert!(stdout.contains("metrics cost < 5% of the round trip"), "no metrics target:\n{stdout}");
    // The request/response rows are compared with the frames they send, and judged.
    assert!(stdout.contains("the frames' round trip"), "no request/response comparison:\n{stdout}");
    for target in ["≤ 1.3× lapce-ipc-framed", "tokio-main RTT p50 at 64 B", "pipelined lapce-ipc-rpc req/s"]
    {
        assert!(stdout.contains(target), "no request/response target {target:?}:\n{stdout}");
    }
    // The idle-CPU measurement reads /proc: Unix only (on Windows it is reported as not available).
    let idle = rows.iter().find(|r| r["mode"] == "adaptive-idle");
    if cfg!(windows) {
        assert!(idle.is_none(), "an idle row on Windows: {idle:?}");
        assert!(stdout.contains("not available on this platform"), "no idle note:\n{stdout}");
    } else {
        let idle = idle.expect("an idle-CPU row");
        assert!(idle["idle_cpu_percent"].as_f64().is_some_and(|v| v >= 0.0), "bad idle row {idle}");
    }
}

#[test]
fn scale_smoke_has_rows_without_errors_and_leaves_no_children() {
    scale_smoke("rpc", None, false);
}

#[test]
fn scale_smoke_with_framed_stream_clients_and_json_on_stdout() {
    scale_smoke("framed", Some(2), true);
}

/// One scale row of 8 clients driven through `api` (`--scale-client`), the server on `threads`
/// runtime threads (`--scale-server-threads`; `None`: the default, one). `json_to_stdout`:
/// `--json -`, so stdout must be the JSON alone and the report goes to stderr.
fn scale_smoke(api: &str, threads: Option<u32>, json_to_stdout: bool) {
    let json = unique_json_path();
    let json_arg = if json_to_stdout { "-".into() } else { json.0.clone().into_os_string() };
    let threads_args = threads.map(|t| vec!["--scale-server-threads".to_string(), t.to_string()]);
    let bench = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args([
            "bench",
            "--scale",
            "8",
            "--quick",
            "--scale-secs",
            "1",
            "--trim-wait",
            "0",
            "--scale-inflight",
            "8",
        ])
        .args(["--scale-client", api])
        .args(threads_args.unwrap_or_default())
        .arg("--json")
        .arg(&json_arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lapce-ipc bench --scale");
    let bench_pid = bench.id();
    let out = bench.wait_with_output().expect("wait for lapce-ipc bench --scale");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --scale failed ({}):\n{stdout}\n{stderr}", out.status);
    let (report, text) = if json_to_stdout {
        (stderr.clone(), stdout.clone())
    } else {
        (stdout.clone(), std::fs::read_to_string(&json.0).expect("read the JSON file").into())
    };
    assert!(report.contains("scale (lapce-ipc-rpc"), "no scale table:\n{report}");
    assert!(report.contains("targets"), "no targets summary:\n{report}");
    // Only the scale rows run.
    assert!(!report.contains("large messages"), "other rows ran:\n{report}");

    let rows: serde_json::Value =
        serde_json::from_str(&text).expect("valid JSON, alone on stdout with --json -");
    let rows = rows.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 1, "one scale row: {text}");
    let row = &rows[0];
    assert_eq!(row["test"], "scale", "{row}");
    assert_eq!(row["clients"], 8, "{row}");
    assert_eq!(row["client_api"], api, "{row}");
    assert_eq!(row["server_threads"], threads.unwrap_or(1), "{row}");
    assert!(row["error"].is_null(), "{row}");
    assert_eq!(row["request_errors"], 0, "{row}");
    assert!(row["requests"].as_u64().is_some_and(|n| n > 0), "{row}");
    assert!(row["requests_per_sec"].as_f64().is_some_and(|v| v > 0.0), "{row}");
    assert!(row["rtt_p50_us"].as_f64().is_some_and(|v| v > 0.0), "{row}");
    if cfg!(target_os = "linux") {
        assert!(row["idle"]["rss_kib"].as_u64().is_some_and(|v| v > 0), "{row}");
        assert!(row["connected"]["fds"].as_u64() > row["idle"]["fds"].as_u64(), "{row}");
        // Each connection holds a segment and a few descriptors; once the clients left, every
        // descriptor beyond the idle count is a warm segment's or the hang-up watcher's epoll.
        assert!(row["connected"]["segments"].as_u64().is_some_and(|s| s >= 8), "{row}");
        assert!(row["fds_per_connection"].as_f64().is_some_and(|v| (2.0..=16.0).contains(&v)), "{row}");
        assert_eq!(row["connected"]["segments_used"], 8, "one segment handed out per client: {row}");
        assert_eq!(row["disconnected"]["segments_used"], 0, "a connection outlived its client: {row}");
        assert_eq!(row["fds_left_after_disconnect"], 0, "{row}");
        // Every server and client child of that bench is gone (they all got `--parent-pid`).
        let marker = format!("\0--parent-pid\0{bench_pid}\0");
        let left: Vec<String> = std::fs::read_dir("/proc")
            .expect("read /proc")
            .filter_map(|e| {
                let path = e.ok()?.path();
                let cmdline = std::fs::read(path.join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
                cmdline
                    .contains(&marker)
                    .then(|| format!("{}: {}", path.display(), cmdline.replace('\0', " ")))
            })
            .collect();
        assert!(left.is_empty(), "child processes left: {left:?}");
    }
}

/// A plot path in a directory that does not exist fails the run at once, naming the path.
#[test]
fn plot_into_a_missing_directory_fails_before_measuring() {
    let path = std::env::temp_dir().join("lapce-ipc-bench-smoke-no-such-dir").join("plot.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args(["bench", "--quick", "--payloads", "64", "--plot"])
        .arg(&path)
        .output()
        .expect("run lapce-ipc bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "the error names the path:\n{stderr}");
    assert!(!stdout.contains("targets"), "nothing was measured:\n{stdout}");
}

/// A peer slowed down by the test hook (`LAPCE_IPC_BENCH_PEER_DELAY_US`: the baseline servers
/// and the Node.js peer's child wait before each message) stops at its time budget: the run
/// exits 0, the peer rows are marked in the JSON (`budget_hit`, the counts reached) and in the
/// table, with figures from what they reached; lapce-ipc's rows run to their counts.
#[test]
fn a_slow_peer_stops_at_its_time_budget_without_failing_the_run() {
    let json = unique_json_path();
    let out = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args(["bench", "--quick", "--payloads", "64", "--no-large", "--no-iceoryx2"])
        .args(["--rounds", "1000", "--peer-budget", "0.3", "--json"])
        .arg(&json.0)
        .env("LAPCE_IPC_BENCH_PEER_DELAY_US", "200")
        .output()
        .expect("run lapce-ipc bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("budget hit: cut short by the time budget (0.3 s a test)"), "no mark:\n{stdout}");

    let text = std::fs::read_to_string(&json.0).expect("read the JSON file");
    let rows: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = rows.as_array().expect("a JSON array");
    let has_node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let mut slowed = vec![BASELINE];
    if cfg!(unix) {
        slowed.push("uds-tokio");
    }
    if has_node {
        slowed.extend(["node-ipc-json", "node-ipc-advanced"]);
    }
    for transport in slowed {
        let row = rows
            .iter()
            .find(|r| r["transport"] == transport && r["test"] == "standard")
            .unwrap_or_else(|| panic!("no row for {transport} in {text}"));
        assert!(row["error"].is_null(), "{row}");
        assert_eq!(row["budget_hit"], true, "{row}");
        assert_eq!(row["budget_secs"], 0.3, "{row}");
        // At 200 µs or more a message, 0.3 s holds well under the 10,000 messages asked.
        let messages = row["throughput_messages"].as_u64().unwrap_or(0);
        assert!((1..10_000).contains(&messages), "{row}");
        let round_trips = row["rtt_round_trips"].as_u64().unwrap_or(0);
        assert!((1..=1000).contains(&round_trips), "{row}");
        for key in ["rtt_p50_us", "msgs_per_sec"] {
            assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{transport}: bad {key} in {row}");
        }
    }
    for row in rows.iter().filter(|r| r["transport"].as_str().is_some_and(|t| t.starts_with("lapce-ipc"))) {
        assert_eq!(row["budget_hit"], false, "{row}");
        assert!(row["budget_secs"].is_null(), "{row}");
        assert!(row["error"].is_null(), "{row}");
    }
}

/// A payload size that parses but is more than the bench supports is refused at once as out of
/// range, naming the range (not as a bad size); text that is no size is a bad size.
#[test]
fn sizes_beyond_the_bench_are_out_of_range_not_bad() {
    for (flag, size) in [("--payloads", "1GiB"), ("--large", "64MiB"), ("--payloads", "0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
            .args(["bench", flag, size])
            .output()
            .expect("run lapce-ipc bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {size}: {stderr}");
        assert!(
            stderr.contains(&format!("size \"{size}\" out of range: the bench supports 1 B to 16 MiB")),
            "{flag} {size}: {stderr}"
        );
        assert!(!stderr.contains("bad size"), "{flag} {size}: {stderr}");
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_lapce-ipc")).args(["bench", "--payloads", "1 TB"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad size \"1 TB\""), "{stderr}");
}
