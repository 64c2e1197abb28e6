//! The Node.js IPC peer: `child_process.fork` + `process.send` between two Node.js processes, with
//! the json and the advanced serialization, measured by a script shipped in the repository
//! (`cli/node/ipc-bench.js`, built into this binary) with the same echo and sink tests as every
//! other transport. The script's parent is the measured side; this module runs it, pins its two
//! processes like the other servers and clients (Linux), and turns what it prints into the
//! bench's histogram and throughput.
//!
//! When `node` cannot be run, the Node.js rows are skipped with a message saying why.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;

use super::measure::{self, Result, Throughput};
use super::Counts;

/// The script, as shipped in the repository.
const SCRIPT: &str = include_str!("../../node/ipc-bench.js");

/// Node.js's two IPC serializations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serialization {
    /// `serialization: 'json'` (the default): newline-delimited JSON; the payload is a string.
    Json,
    /// `serialization: 'advanced'`: the V8 structured-clone format; the payload is a Buffer.
    Advanced,
}

impl Serialization {
    /// Both, in table order.
    pub const ALL: [Serialization; 2] = [Serialization::Json, Serialization::Advanced];

    /// Value of the script's `--serialization`.
    fn arg(self) -> &'static str {
        match self {
            Serialization::Json => "json",
            Serialization::Advanced => "advanced",
        }
    }
}

/// A usable `node` and the script written where it can run it (removed when dropped).
pub struct NodePeer {
    node: PathBuf,
    /// `node --version`.
    pub version: String,
    script: PathBuf,
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.script);
    }
}

/// What the script prints first with `--pin-handshake 1`.
#[derive(Deserialize)]
struct Pids {
    parent_pid: u32,
    child_pid: u32,
}

/// What the script prints at the end.
#[derive(Deserialize)]
struct Output {
    rtt_ns: Vec<u64>,
    messages: u64,
    elapsed_ns: u64,
    wrong: u64,
    /// The time budget stopped a test before its count (then fewer round trips or messages
    /// than asked, at least one of each).
    #[serde(default)]
    budget_hit: bool,
}

impl NodePeer {
    /// Finds `node` (a name looked up in `PATH`, or a path) and writes the script to the temp
    /// directory; `Err` says why the Node.js rows cannot run.
    pub fn find(node: &Path) -> std::result::Result<NodePeer, String> {
        let out = Command::new(node)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", node.display()))?;
        if !out.status.success() {
            return Err(format!("`{} --version` failed ({})", node.display(), out.status));
        }
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        static PEERS: AtomicU64 = AtomicU64::new(0);
        let n = PEERS.fetch_add(1, Ordering::Relaxed);
        let script =
            std::env::temp_dir().join(format!("lapce-ipc-bench-{}-{n}-ipc-bench.js", std::process::id()));
        std::fs::write(&script, SCRIPT).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        Ok(NodePeer { node: node.to_path_buf(), version, script })
    }

    /// Runs the echo and sink tests of one payload with `counts` (warm-up, recorded round trips,
    /// timed messages), each within `budget`: the round-trip histogram and the one-way
    /// throughput. The script's parent is pinned to `cpus.0` and its child to `cpus.1` when
    /// given; both are killed after `timeout`.
    pub fn measure(
        &self,
        serialization: Serialization,
        payload: usize,
        counts: Counts,
        cpus: Option<(usize, usize)>,
        budget: Duration,
        timeout: Duration,
    ) -> Result<(Histogram<u64>, Throughput)> {
        let Counts { warmup, rounds, messages } = counts;
        let mut cmd = Command::new(&self.node);
        cmd.arg(&self.script)
            .args(["--serialization", serialization.arg()])
            .args(["--payload", &payload.to_string()])
            .args(["--warmup", &warmup.to_string()])
            .args(["--rounds", &rounds.to_string()])
            .args(["--messages", &messages.to_string()])
            .args(["--budget-ms", &budget.as_millis().max(1).to_string()]);
        run_peer(cmd, "node", payload, counts, cpus, timeout)
    }
}

/// Parses one line a peer printed as JSON; `Err` names the peer and quotes the line.
pub(super) fn parse_line<T: serde::de::DeserializeOwned>(peer: &str, line: &str) -> Result<T> {
    serde_json::from_str(line).map_err(|e| {
        let shown: String = line.chars().take(120).collect();
        format!("{peer} printed a malformed line ({e}): {shown:?}").into()
    })
}

/// Turns a peer's result line into the round-trip histogram and the throughput, checking that it
/// measured what was asked (`counts`; fewer, but at least one of each, when it says its time
/// budget stopped it) and that no message failed the check.
pub(super) fn parse_output(
    peer: &str,
    line: &str,
    payload: usize,
    counts: Counts,
) -> Result<(Histogram<u64>, Throughput)> {
    let Counts { rounds, messages, .. } = counts;
    let out: Output = parse_line(peer, line)?;
    if out.wrong != 0 {
        return Err(format!("{} of {} messages failed the check", out.wrong, out.messages).into());
    }
    let reached = out.rtt_ns.len() as u64;
    let as_asked = reached == rounds && out.messages == messages;
    let within_budget = out.budget_hit
        && (1..=rounds).contains(&reached)
        && (1..=messages).contains(&out.messages)
        && !as_asked;
    if !(as_asked || within_budget) {
        return Err(format!(
            "{peer} reported {reached} round trips and {} messages{}, asked for {rounds} and {messages}",
            out.messages,
            if out.budget_hit { " (time budget hit)" } else { "" }
        )
        .into());
    }
    let messages = out.messages;
    let mut hist = measure::new_histogram()?;
    for ns in out.rtt_ns {
        hist.saturating_record(ns.max(1));
    }
    let tput = Throughput { messages, payload, elapsed: Duration::from_nanos(out.elapsed_ns.max(1)) };
    Ok((hist, tput))
}

/// Runs an external peer that speaks the script's line protocol (`cmd` with the test's arguments;
/// `--pin-handshake 1` is added): reads its two pids and pins them (its parent, the measured side,
/// to `cpus.0`, its child to `cpus.1`) when `cpus` is given, lets it start, and parses its result
/// line. `peer` names it in errors; it is killed after `timeout`.
pub(super) fn run_peer(
    mut cmd: Command,
    peer: &str,
    payload: usize,
    counts: Counts,
    cpus: Option<(usize, usize)>,
    timeout: Duration,
) -> Result<(Histogram<u64>, Throughput)> {
    let mut child = cmd
        .args(["--pin-handshake", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", Path::new(cmd.get_program()).display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let outcome = (|| -> Result<(Histogram<u64>, Throughput)> {
        let next_line = || -> Result<String> {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => Ok(line?),
                Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                    "no answer from {peer} within {} s (its time budgets and --timeout)",
                    timeout.as_secs()
                )
                .into()),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err(format!("{peer} exited early (see its message above)").into())
                }
            }
        };
        let pids: Pids = parse_line(peer, &next_line()?)?;
        if let Some((client, server)) = cpus {
            super::cpu::pin_process(pids.parent_pid, client)?;
            super::cpu::pin_process(pids.child_pid, server)?;
        }
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(b"go\n")?;
        drop(stdin);
        parse_output(peer, &next_line()?, payload, counts)
    })();
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let _ = reader.join();
    let result = outcome?;
    if !status.success() {
        return Err(format!("{peer} exited with {status}").into());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_is_a_reason_not_a_failure() {
        let err = NodePeer::find(Path::new("/nonexistent/node")).err().expect("no node there");
        assert!(err.contains("/nonexistent/node"), "{err}");
    }

    /// The shipped script against the real `node`, both serializations, with small counts: the
    /// histogram and throughput are what it measured (skipped with a message without Node.js).
    #[test]
    fn the_script_measures_both_serializations() {
        let peer = match NodePeer::find(Path::new("node")) {
            Ok(peer) => peer,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        };
        for serialization in Serialization::ALL {
            let (h, tput) = peer
                .measure(
                    serialization,
                    100,
                    Counts { warmup: 5, rounds: 50, messages: 500 },
                    None,
                    Duration::from_secs(30),
                    Duration::from_secs(60),
                )
                .unwrap_or_else(|e| panic!("{serialization:?}: {e}"));
            assert_eq!(h.len(), 50);
            assert!(h.min() > 0);
            assert_eq!((tput.messages, tput.payload), (500, 100));
            assert!(tput.elapsed > Duration::ZERO);
        }
        let script = peer.script.clone();
        drop(peer);
        assert!(!script.exists(), "the script is removed with the peer");
    }

    /// Bad arguments make the script exit with a message; measure reports it as an error.
    #[test]
    fn the_script_refuses_bad_arguments() {
        let Ok(peer) = NodePeer::find(Path::new("node")) else { return };
        let out = Command::new("node")
            .arg(&peer.script)
            .args(["--serialization", "yaml", "--payload", "1", "--warmup", "0", "--rounds", "1"])
            .args(["--messages", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--serialization must be json or advanced"));
    }
}
