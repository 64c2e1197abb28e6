//! Smoke test of `lapce-ipc stress --all` with the bounded counts: runs the real binary (which
//! spawns its server and client child processes) and checks the exit status and the JSON it
//! writes to stdout (`--json -`, the report going to stderr): every level passed and reported
//! non-trivial figures.

use std::process::Command;

use serde_json::Value;

/// Removes the JSON file when the test ends, whether it passes or not.
#[cfg(target_os = "linux")]
struct TempFile(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn figure<'a>(level: &'a Value, key: &str) -> &'a Value {
    let v = &level["figures"][key];
    assert!(!v.is_null(), "level {}: no figure {key} in {level}", level["level"]);
    v
}

fn num(level: &Value, key: &str) -> f64 {
    figure(level, key).as_f64().unwrap_or_else(|| panic!("level {}: {key} is not a number", level["level"]))
}

/// `completed == requested > 0` with no errors and nothing corrupt, for figures named `PREFIX*`.
fn all_completed(level: &Value, prefix: &str) {
    let requested = num(level, &format!("{prefix}requested"));
    assert!(requested > 0.0, "level {}: nothing requested", level["level"]);
    assert_eq!(num(level, &format!("{prefix}completed")), requested, "level {}", level["level"]);
    assert_eq!(num(level, &format!("{prefix}errors")), 0.0);
    assert_eq!(num(level, &format!("{prefix}corrupt")), 0.0);
}

#[test]
fn bounded_stress_levels_all_pass() {
    // `--json -`: the JSON alone on stdout, the report on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args(["stress", "--all", "--json", "-"])
        .output()
        .expect("run lapce-ipc stress");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stress failed ({}):\n{text}\n{stderr}", out.status);
    assert!(stderr.contains("5 of 5 levels passed"), "no report on stderr:\n{stderr}");
    assert!(stderr.contains("level 5 (chaos"), "no level report on stderr:\n{stderr}");

    let report: Value = serde_json::from_str(&text).expect("stdout is the JSON alone");
    assert_eq!(report["passed"], true, "{text}");
    let levels = report["levels"].as_array().expect("levels array");
    assert_eq!(levels.len(), 5, "{text}");
    for (i, level) in levels.iter().enumerate() {
        assert_eq!(level["level"], i as u64 + 1);
        assert_eq!(level["passed"], true, "{level}");
        assert_eq!(level["full"], false);
        assert!(level["failures"].as_array().is_some_and(Vec::is_empty), "{level}");
        for key in ["server_duplicates", "server_gaps", "server_corrupt", "server_panics"] {
            assert_eq!(num(level, key), 0.0, "level {}: {key}", i + 1);
        }
        assert_eq!(figure(level, "server_exit_clean"), true);
        assert_eq!(figure(level, "socket_left_behind"), false);
        assert!(num(level, "server_requests") > 0.0);
    }
    let [bomb, memory, latency, leak, chaos] = &levels[..] else { unreachable!() };

    all_completed(bomb, "");
    assert_eq!(num(bomb, "concurrent_connections"), 1000.0);

    all_completed(memory, "small_4k_");
    all_completed(memory, "large_1m_");
    if cfg!(target_os = "linux") {
        assert!(num(memory, "server_rss_kib_peak") > 0.0);
        assert!(num(memory, "server_rss_kib_peak") <= num(memory, "server_rss_kib_bound"));
    }

    all_completed(latency, "probe_");
    assert!(num(latency, "background_requests") > 0.0);
    assert!(num(latency, "rtt_max_us") > 0.0);
    assert!(num(latency, "rtt_share_over_10us_pct") >= 0.0);

    all_completed(leak, "");
    assert!(num(leak, "cycles") >= 2.0);
    // The leak level's server runs without glibc's per-thread caches, unless this test's
    // environment already sets GLIBC_TUNABLES (which the server then inherits).
    let tunables = &leak["figures"]["server_glibc_tunables"];
    if cfg!(all(target_os = "linux", target_env = "gnu")) && std::env::var_os("GLIBC_TUNABLES").is_none() {
        assert_eq!(tunables, "glibc.malloc.tcache_count=0", "{leak}");
    } else if std::env::var_os("GLIBC_TUNABLES").is_none() {
        assert!(tunables.is_null(), "{leak}");
    }
    if cfg!(target_os = "linux") {
        assert!(num(leak, "rss_growth_kib_max") < 512.0);
        assert!(num(leak, "server_fds_final") <= num(leak, "server_fds_baseline"));
        assert!(num(leak, "server_maps_final") <= num(leak, "server_maps_baseline"));
    }

    assert!(num(chaos, "healthy_requests") > 0.0);
    assert_eq!(num(chaos, "healthy_lost"), 0.0);
    assert_eq!(num(chaos, "healthy_corrupt"), 0.0);
    assert_eq!(num(chaos, "unhandled_events"), 0.0);
    for event in ["kill", "corrupt", "oversized", "stalled_reader", "tiny_flood"] {
        assert!(num(chaos, &format!("events_{event}")) > 0.0, "no {event} event");
    }
    assert!(num(chaos, "recovery_ms_max") > 0.0);
    assert!(num(chaos, "failure_pct") < 1.0);
}

/// Level 4 fails on a leak however the warm pool grew: a server that leaks one descriptor every
/// 30 requests (about one per connection) fails the descriptor check.
#[cfg(target_os = "linux")]
#[test]
fn the_leak_level_catches_a_descriptor_leaked_per_connection() {
    use std::time::{SystemTime, UNIX_EPOCH};

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let json = TempFile(
        std::env::temp_dir().join(format!("lapce-ipc-stress-leak-{}-{nanos}.json", std::process::id())),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args(["stress", "--level", "4", "--json"])
        .arg(&json.0)
        .env("LAPCE_IPC_STRESS_LEAK_EVERY", "30")
        .output()
        .expect("run lapce-ipc stress");
    let text = std::fs::read_to_string(&json.0).expect("read the JSON file");
    assert!(!out.status.success(), "a leaking server passed level 4:\n{text}");
    assert!(text.contains("fds beyond the warm pool"), "{text}");
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(report["passed"], false, "{text}");
}
