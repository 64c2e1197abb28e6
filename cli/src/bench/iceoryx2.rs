//! The iceoryx2 peer: iceoryx2's request-response between two processes, busy-polling (`spin`) or
//! blocking in its `WaitSet` (`waitset`), measured by an optional program built on its own
//! (`peers/iceoryx2`, not a member of this workspace, so neither the library's nor the CLI's build
//! downloads iceoryx2) with the same echo and sink tests as every other row. The program speaks
//! the Node.js script's line protocol (see `cli/node/ipc-bench.js`), so it runs through
//! [`node::run_peer`](super::node::run_peer): its two processes are pinned like the other servers
//! and clients, and its output becomes the bench's histogram and throughput.
//!
//! When the program is not built, the iceoryx2 rows are skipped with a message saying how to
//! build it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::measure::{Result, Throughput};
use super::report::CaseResult;
use super::{node, Bench, Counts, Mode, Transport};

/// Where `cargo build --release --manifest-path peers/iceoryx2/Cargo.toml` puts the program in
/// the checkout this binary was built from.
fn default_path() -> PathBuf {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent().unwrap_or(cli).join("peers/iceoryx2/target/release/lapce-ipc-iceoryx2-peer")
}

/// The command that builds the program, for the skip message.
pub const BUILD_HINT: &str = "cargo build --release --manifest-path peers/iceoryx2/Cargo.toml";

/// How both sides of the peer wait for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// Busy-polling the server port and the pending response.
    Spin,
    /// Blocking in iceoryx2's `WaitSet` on an event service notified after each message.
    WaitSet,
}

impl WaitMode {
    /// Both, in table order.
    pub const ALL: [WaitMode; 2] = [WaitMode::Spin, WaitMode::WaitSet];

    /// Value of the program's `--mode`.
    fn arg(self) -> &'static str {
        match self {
            WaitMode::Spin => "spin",
            WaitMode::WaitSet => "waitset",
        }
    }

    /// The row's transport.
    fn transport(self) -> Transport {
        match self {
            WaitMode::Spin => Transport::Iceoryx2Spin,
            WaitMode::WaitSet => Transport::Iceoryx2WaitSet,
        }
    }

    /// The row's mode: the waitset blocks between messages.
    fn mode(self) -> Mode {
        match self {
            WaitMode::Spin => Mode::Spin,
            WaitMode::WaitSet => Mode::Blocking,
        }
    }
}

/// The built peer program.
pub struct Iceoryx2Peer {
    /// Path of `lapce-ipc-iceoryx2-peer`.
    pub program: PathBuf,
}

impl Iceoryx2Peer {
    /// The program at `path` (`--iceoryx2`), else where its build puts it in this checkout;
    /// `Err` says why the iceoryx2 rows cannot run and how to build it.
    pub fn find(path: Option<&Path>) -> std::result::Result<Iceoryx2Peer, String> {
        let program = path.map_or_else(default_path, Path::to_path_buf);
        if !program.is_file() {
            return Err(format!(
                "{} not found (build it with `{BUILD_HINT}` in the repository, or pass --iceoryx2 PATH)",
                program.display()
            ));
        }
        // Shown in the output: without the `cli/..` of the default.
        let program = program.canonicalize().unwrap_or(program);
        Ok(Iceoryx2Peer { program })
    }

    /// Runs the echo and sink tests of one payload with `counts` in `mode`, each within
    /// `budget`: the round-trip histogram and the one-way throughput. The peer's client is pinned
    /// to `cpus.0` and its server to `cpus.1` when given; both are killed after `timeout`.
    pub fn measure(
        &self,
        mode: WaitMode,
        payload: usize,
        counts: Counts,
        cpus: Option<(usize, usize)>,
        budget: Duration,
        timeout: Duration,
    ) -> Result<(Histogram<u64>, Throughput)> {
        let mut cmd = Command::new(&self.program);
        cmd.args(["--mode", mode.arg()])
            .args(["--payload", &payload.to_string()])
            .args(["--warmup", &counts.warmup.to_string()])
            .args(["--rounds", &counts.rounds.to_string()])
            .args(["--messages", &counts.messages.to_string()])
            .args(["--budget-ms", &budget.as_millis().max(1).to_string()]);
        node::run_peer(cmd, "the iceoryx2 peer", payload, counts, cpus, timeout)
    }
}

impl Bench<'_> {
    /// Measures the iceoryx2 peer in `mode` for one payload: the same counts, tests and pinning
    /// as the other rows, run by the peer program.
    pub(super) fn iceoryx2_case(&self, peer: &Iceoryx2Peer, mode: WaitMode, payload: usize) -> CaseResult {
        self.peer_case(mode.transport(), mode.mode(), payload, |counts, cpus, budget, timeout| {
            peer.measure(mode, payload, counts, cpus, budget, timeout)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTS: Counts = Counts { warmup: 1, rounds: 3, messages: 10 };

    /// The peer's result line becomes the histogram and throughput; a malformed line, a failed
    /// check or counts other than asked are errors that say so.
    #[test]
    fn parses_the_peer_output() {
        let line = r#"{"rtt_ns": [1000,2000,3000], "messages": 10, "elapsed_ns": 5000000, "wrong": 0}"#;
        let (h, tput) = node::parse_output("the iceoryx2 peer", line, 64, COUNTS).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h.value_at_quantile(0.5), 2000);
        assert_eq!((tput.messages, tput.payload, tput.elapsed), (10, 64, Duration::from_millis(5)));
        assert_eq!(tput.msgs_per_sec(), 2000.0);

        let err =
            node::parse_output("the iceoryx2 peer", "rtt 1000 2000", 64, COUNTS).unwrap_err().to_string();
        assert!(err.starts_with("the iceoryx2 peer printed a malformed line ("), "{err}");
        assert!(err.contains("\"rtt 1000 2000\""), "the line is quoted: {err}");
        let truncated = r#"{"rtt_ns": [1000,2000"#;
        assert!(node::parse_output("p", truncated, 64, COUNTS)
            .unwrap_err()
            .to_string()
            .contains("malformed"));

        let wrong = r#"{"rtt_ns": [1,2,3], "messages": 10, "elapsed_ns": 5, "wrong": 2}"#;
        let err = node::parse_output("p", wrong, 64, COUNTS).unwrap_err().to_string();
        assert!(err.contains("2 of 10 messages failed the check"), "{err}");
        let short = r#"{"rtt_ns": [1,2], "messages": 10, "elapsed_ns": 5, "wrong": 0}"#;
        let err = node::parse_output("p", short, 64, COUNTS).unwrap_err().to_string();
        assert!(err.contains("reported 2 round trips and 10 messages, asked for 3 and 10"), "{err}");

        // Fewer than asked is a result when the peer says its time budget stopped it (at least
        // one of each), never more than asked.
        let cut = r#"{"rtt_ns": [1,2], "messages": 4, "elapsed_ns": 5, "wrong": 0, "budget_hit": true}"#;
        let (h, tput) = node::parse_output("p", cut, 64, COUNTS).unwrap();
        assert_eq!((h.len(), tput.messages), (2, 4));
        for bad in [
            r#"{"rtt_ns": [], "messages": 4, "elapsed_ns": 5, "wrong": 0, "budget_hit": true}"#,
            r#"{"rtt_ns": [1,2], "messages": 0, "elapsed_ns": 5, "wrong": 0, "budget_hit": true}"#,
            r#"{"rtt_ns": [1,2,3,4], "messages": 4, "elapsed_ns": 5, "wrong": 0, "budget_hit": true}"#,
            r#"{"rtt_ns": [1,2,3], "messages": 11, "elapsed_ns": 5, "wrong": 0, "budget_hit": true}"#,
        ] {
            let err = node::parse_output("p", bad, 64, COUNTS).unwrap_err().to_string();
            assert!(err.contains("(time budget hit), asked for 3 and 10"), "{err}");
        }
    }

    #[test]
    fn a_missing_program_is_a_reason_with_the_build_command() {
        let err = Iceoryx2Peer::find(Some(Path::new("/nonexistent/peer"))).err().expect("no peer there");
        assert!(err.contains("/nonexistent/peer") && err.contains(BUILD_HINT), "{err}");
    }

    /// The built peer, both modes, one payload, small counts (skipped with a message when it is
    /// not built).
    #[test]
    fn the_peer_measures_both_modes() {
        let peer = match Iceoryx2Peer::find(None) {
            Ok(peer) => peer,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        };
        let counts = Counts { warmup: 5, rounds: 50, messages: 500 };
        for mode in WaitMode::ALL {
            let (h, tput) = peer
                .measure(mode, 1024, counts, None, Duration::from_secs(30), Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(h.len(), 50);
            assert!(h.min() > 0);
            assert_eq!((tput.messages, tput.payload), (500, 1024));
            assert!(tput.elapsed > Duration::ZERO);
        }
    }
}
