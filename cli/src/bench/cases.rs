//! The rows of the bench: each case's round trips and throughput, the peers' rows, the
//! large-message rows, idle CPU and the cost of metrics, with their progress lines.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::counts::Counts;
#[cfg(unix)]
use super::cpu;
use super::cpu::Pinning;
use super::measure::{self, Result, Throughput};
use super::report::{self, CaseResult, Idle, MetricsCost};
use super::session::{Bench, Client};
use super::{node, Mode, Test, Transport};

impl Bench<'_> {
    /// Measures round-trip latency.
    fn rtt(
        &self,
        transport: Transport,
        mode: Mode,
        payload: usize,
        counts: Counts,
    ) -> Result<Histogram<u64>> {
        let budget = self.budget(transport);
        self.session(transport, mode, Test::Echo, payload, counts, |client, _| match client {
            Client::Lapce(c) => measure::measure_rtt(&mut **c, payload, counts.warmup, counts.rounds),
            Client::Rpc(c) => c.rtt(payload, counts.warmup, counts.rounds, &self.all_cpus),
            Client::Baseline(c) => {
                measure::measure_rtt_within(c, payload, counts.warmup, counts.rounds, budget)
            }
            #[cfg(unix)]
            Client::BaselineTokio(c) => {
                measure::measure_rtt_within(c, payload, counts.warmup, counts.rounds, budget)
            }
        })
    }

    /// Request/response round trips (adaptive) with metrics on and off, back to back, for one
    /// payload: p50 and mean of each, in µs.
    pub(super) fn metrics_cost(&self, payload: usize) -> MetricsCost {
        let counts = Counts::new(self.args, payload);
        let measure = |metrics: bool| -> std::result::Result<Histogram<u64>, String> {
            self.progress.start(format!(
                "measuring lapce-ipc-rpc adaptive {} rtt, metrics {} ({} round trips)",
                report::payload_label(payload),
                if metrics { "on" } else { "off" },
                counts.rounds
            ));
            let r = self
                .session_with(Transport::Rpc, Mode::Adaptive, Test::Echo, payload, counts, metrics, |c, _| {
                    let Client::Rpc(c) = c else { unreachable!("a request/response session") };
                    c.rtt(payload, counts.warmup, counts.rounds, &self.all_cpus)
                })
                .map_err(|e| e.to_string());
            match &r {
                Ok(h) => self.progress.done(format!(
                    "mean {} µs, p50 {} µs",
                    report::fmt_us(h.mean() / 1000.0),
                    report::us(h.value_at_quantile(0.5))
                )),
                Err(e) => self.progress.done(format!("FAILED: {e}")),
            }
            r
        };
        let off = measure(false);
        let on = measure(true);
        MetricsCost { payload, rounds: counts.rounds, off, on }
    }

    /// Measures one-way throughput with the sink `test`.
    fn throughput(
        &self,
        transport: Transport,
        mode: Mode,
        test: Test,
        payload: usize,
        counts: Counts,
    ) -> Result<Throughput> {
        let budget = self.budget(transport);
        self.session(transport, mode, test, payload, counts, |client, _| match client {
            Client::Lapce(c) => {
                measure::measure_throughput(&mut **c, payload, counts.warmup, counts.messages)
            }
            // Request/response has no one-way mode: requests per second, many in flight.
            Client::Rpc(c) => c.pipelined(payload, counts.warmup, counts.messages / 10, &self.all_cpus),
            Client::Baseline(c) => {
                measure::measure_throughput_within(c, payload, counts.warmup, counts.messages, budget)
            }
            #[cfg(unix)]
            Client::BaselineTokio(c) => {
                measure::measure_throughput_within(c, payload, counts.warmup, counts.messages, budget)
            }
        })
    }

    /// Measures latency and throughput of one (transport, mode, payload), with progress lines.
    pub(super) fn case(&self, transport: Transport, mode: Mode, payload: usize) -> CaseResult {
        let mut counts = Counts::new(self.args, payload);
        if mode == Mode::Spin && matches!(self.pinning, Pinning::SingleCpu) {
            counts = counts.for_shared_cpu_spin();
            self.progress.note(format!(
                "note: one CPU: spin-mode round trips wait for scheduler time slices; measuring only {}",
                counts.rounds
            ));
        }
        let what = format!("{} {} {}", transport.name(), mode.name(), report::payload_label(payload));

        self.progress.start(format!("measuring {what} rtt ({} round trips)", counts.rounds));
        let t = Instant::now();
        let rtt = self.rtt(transport, mode, payload, counts).map_err(|e| e.to_string());
        match &rtt {
            Ok(h) => self.progress.done(format!(
                "mean {} µs, p50 {} µs, p99 {} µs ({:.2} s){}",
                report::fmt_us(h.mean() / 1000.0),
                report::us(h.value_at_quantile(0.5)),
                report::us(h.value_at_quantile(0.99)),
                t.elapsed().as_secs_f64(),
                cut_short(h.len(), counts.rounds, "round trips")
            )),
            Err(e) => self.progress.done(format!("FAILED: {e}")),
        }

        self.progress.start(format!("measuring {what} throughput ({} messages)", counts.messages));
        let t = Instant::now();
        let tput = self.throughput(transport, mode, Test::Sink, payload, counts).map_err(|e| e.to_string());
        match &tput {
            Ok(r) => self.progress.done(format!(
                "{} msg/s, {:.1} MB/s ({:.2} s){}",
                report::rate(r.msgs_per_sec()),
                r.mb_per_sec(),
                t.elapsed().as_secs_f64(),
                if transport.is_peer() {
                    cut_short(r.messages, counts.messages, "messages")
                } else {
                    String::new()
                }
            )),
            Err(e) => self.progress.done(format!("FAILED: {e}")),
        }
        CaseResult {
            transport,
            mode,
            payload,
            large: false,
            rounds: counts.rounds,
            messages: counts.messages,
            budget: self.budget(transport),
            rtt: Some(rtt),
            tput,
        }
    }

    /// Measures the Node.js IPC peer with `serialization` for one payload: the same counts, tests
    /// and pinning as the other rows, run by the shipped script.
    pub(super) fn node_case(
        &self,
        peer: &node::NodePeer,
        serialization: node::Serialization,
        payload: usize,
    ) -> CaseResult {
        let transport = match serialization {
            node::Serialization::Json => Transport::NodeJson,
            node::Serialization::Advanced => Transport::NodeAdvanced,
        };
        self.peer_case(transport, Mode::EventLoop, payload, |counts, cpus, budget, timeout| {
            peer.measure(serialization, payload, counts, cpus, budget, timeout)
        })
    }

    /// One row of a peer that runs its own processes (Node.js, iceoryx2): `measure` gets this
    /// run's counts, the (client, server) CPUs to pin to, the time budget of each test and the
    /// timeout (both tests' budgets on top of `--timeout`).
    pub(super) fn peer_case(
        &self,
        transport: Transport,
        mode: Mode,
        payload: usize,
        measure: impl FnOnce(
            Counts,
            Option<(usize, usize)>,
            Duration,
            Duration,
        ) -> Result<(Histogram<u64>, Throughput)>,
    ) -> CaseResult {
        let counts = Counts::new(self.args, payload);
        let what = format!("{} {}", transport.name(), report::payload_label(payload));
        self.progress.start(format!(
            "measuring {what} rtt ({} round trips) and throughput ({} messages)",
            counts.rounds, counts.messages
        ));
        let t = Instant::now();
        let cpus = match self.pinning {
            Pinning::Pinned { client, server } => Some((client, server)),
            Pinning::SingleCpu | Pinning::NotPinned(_) => None,
        };
        let budget = self.args.peer_budget();
        let timeout = Duration::from_secs(self.args.timeout) + 2 * budget;
        let measured = measure(counts, cpus, budget, timeout).map_err(|e| e.to_string());
        let (rtt, tput) = match measured {
            Ok((h, tput)) => {
                self.progress.done(format!(
                    "p50 {} µs, p99 {} µs, {} msg/s ({:.2} s){}{}",
                    report::us(h.value_at_quantile(0.5)),
                    report::us(h.value_at_quantile(0.99)),
                    report::rate(tput.msgs_per_sec()),
                    t.elapsed().as_secs_f64(),
                    cut_short(h.len(), counts.rounds, "round trips"),
                    cut_short(tput.messages, counts.messages, "messages")
                ));
                (Ok(h), Ok(tput))
            }
            Err(e) => {
                self.progress.done(format!("FAILED: {e}"));
                (Err(e.clone()), Err(e))
            }
        };
        CaseResult {
            transport,
            mode,
            payload,
            large: false,
            rounds: counts.rounds,
            messages: counts.messages,
            budget: self.budget(transport),
            rtt: Some(rtt),
            tput,
        }
    }

    /// Measures the one-way throughput of large messages (framed lapce-ipc fragments them).
    pub(super) fn large(&self, transport: Transport, mode: Mode, payload: usize) -> CaseResult {
        let counts = Counts::large(self.args, payload);
        self.progress.start(format!(
            "measuring {} {} {} large-message throughput ({} messages)",
            transport.name(),
            mode.name(),
            report::payload_label(payload),
            counts.messages
        ));
        let t = Instant::now();
        let tput =
            self.throughput(transport, mode, Test::LargeSink, payload, counts).map_err(|e| e.to_string());
        match &tput {
            Ok(r) => self.progress.done(format!(
                "{} msg/s, {:.2} GiB/s ({:.2} s){}",
                report::rate(r.msgs_per_sec()),
                r.gib_per_sec(),
                t.elapsed().as_secs_f64(),
                cut_short(r.messages, counts.messages, "messages")
            )),
            Err(e) => self.progress.done(format!("FAILED: {e}")),
        }
        CaseResult {
            transport,
            mode,
            payload,
            large: true,
            rounds: 0,
            messages: counts.messages,
            budget: self.budget(transport),
            rtt: None,
            tput,
        }
    }

    /// Measures the CPU an idle connected adaptive pair costs: the server sits in `recv` while
    /// the client does nothing for `period`.
    #[cfg(unix)]
    pub(super) fn idle(&self, period: Duration) -> Idle {
        self.progress.start(format!("measuring lapce-ipc adaptive idle CPU ({:.1} s)", period.as_secs_f64()));
        let counts = Counts { warmup: 0, rounds: 0, messages: 0 };
        let result = self
            .session(Transport::Lapce, Mode::Adaptive, Test::Echo, 1, counts, |client, pid| {
                let Client::Lapce(c) = client else { unreachable!("a lapce-ipc session") };
                // One round trip: the server is now in its receive loop.
                measure::measure_rtt(&mut **c, 1, 0, 1)?;
                // Let it finish spinning and go to sleep.
                std::thread::sleep(Duration::from_millis(20));
                let before = cpu::process_cpu_time(pid)?;
                let start = Instant::now();
                std::thread::sleep(period);
                let after = cpu::process_cpu_time(pid)?;
                let wall = start.elapsed();
                Ok(report::IdleResult {
                    wall,
                    ticks: after.ticks.saturating_sub(before.ticks),
                    ticks_per_second: cpu::ticks_per_second(),
                    sched_ns: after.sched_ns.zip(before.sched_ns).map(|(a, b)| a.saturating_sub(b)),
                })
            })
            .map_err(|e| e.to_string());
        match result {
            Ok(idle) => {
                self.progress.done(format!("{:.3}% of one core", idle.percent()));
                Idle::Measured(idle)
            }
            Err(e) => {
                self.progress.done(format!("FAILED: {e}"));
                Idle::Failed(e)
            }
        }
    }

    /// The idle-CPU measurement needs another process's CPU time, which std does not give on
    /// Windows (`GetProcessTimes` would take `unsafe` FFI): not measured.
    #[cfg(windows)]
    pub(super) fn idle(&self, _period: Duration) -> Idle {
        let why = "not available on this platform (no per-process CPU time without unsafe FFI)";
        eprintln!("lapce-ipc adaptive idle CPU: {why}");
        Idle::Unavailable(why)
    }
}

/// A note for a progress line when a test stopped at its time budget (`reached` of `asked`).
fn cut_short(reached: u64, asked: u64, what: &str) -> String {
    if reached < asked {
        format!("; time budget hit: {reached} of {asked} {what}")
    } else {
        String::new()
    }
}
