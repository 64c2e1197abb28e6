//! Smoke test of `lapce-ipc bench --grpc`: runs the real binary (which spawns a tonic server
//! child per row) with few calls, its JSON on stdout, and checks the rows.

use std::process::{Command, Stdio};

#[test]
fn grpc_bench_writes_a_row_per_transport_and_payload() {
    let bench = Command::new(env!("CARGO_BIN_EXE_lapce-ipc"))
        .args(["bench", "--grpc", "--rounds", "50", "--json", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lapce-ipc bench --grpc");
    let pid = bench.id();
    let out = bench.wait_with_output().expect("wait for lapce-ipc bench --grpc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --grpc failed ({}):\n{stderr}", out.status);
    // `--json -`: the report goes to stderr, the JSON alone to stdout.
    assert!(stderr.contains("tonic over lapce-ipc p50"), "no target line:\n{stderr}");
    assert!(stderr.contains("lapce-ipc-rpc-tls p50 no worse than grpc-tls"), "no TLS target line:\n{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = rows.as_array().expect("a JSON array");

    let mut expected = Vec::new();
    for payload in [64u64, 1024] {
        for transport in ["grpc-lapce-ipc", "grpc-uds", "grpc-tcp", "grpc-tls", "grpc-in-process"] {
            expected.push((transport.to_string(), payload));
        }
    }
    // Then lapce-ipc's own client and server over TLS, in the same run.
    expected.extend([64u64, 1024].map(|payload| ("lapce-ipc-rpc-tls".to_string(), payload)));
    let seen: Vec<(String, u64)> = rows
        .iter()
        .map(|r| (r["transport"].as_str().unwrap().to_string(), r["payload_bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, expected);
    for r in rows {
        assert!(r["error"].is_null(), "a row failed: {r}");
        if r["transport"] != "lapce-ipc-rpc-tls" {
            assert_eq!(r["rtt_round_trips"].as_u64(), Some(50), "{r}");
        }
        let (p50, p99) = (r["rtt_p50_us"].as_f64().unwrap(), r["rtt_p99_us"].as_f64().unwrap());
        assert!(p50 > 0.0 && p99 >= p50, "{r}");
        if r["transport"] != "grpc-uds" {
            assert!(r["rtt_p50_speedup_vs_uds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
            assert!(r["vs_peers"]["grpc-uds"].is_object(), "{r}");
        }
    }
    // The Unix socket's file is gone with its server.
    let socket = std::env::temp_dir().join(format!("lapce-ipc-grpc-bench-{pid}.sock"));
    assert!(!socket.exists(), "socket file left: {}", socket.display());
    // And the lapce-ipc listener's, whose server was killed.
    let socket = lapce_ipc::socket_path(&format!("grpc-bench-{pid}")).unwrap();
    assert!(!socket.exists(), "socket file left: {}", socket.display());
}
