//! How many round trips and messages each row of the bench gets.

use super::BenchArgs;

/// How many round trips and messages one payload gets.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Unrecorded round trips (and unacked throughput messages) first.
    pub warmup: u64,
    /// Recorded round trips.
    pub rounds: u64,
    /// Timed throughput messages.
    pub messages: u64,
}

impl Counts {
    /// Counts for `payload` under `args`.
    pub fn new(args: &BenchArgs, payload: usize) -> Counts {
        let (warmup, rounds, budget_bytes) =
            if args.quick { (1_000u64, 20_000u64, 200_000_000u64) } else { (10_000, 200_000, 2_000_000_000) };
        let rounds = args.rounds.unwrap_or(rounds);
        let messages = (rounds * 10).min(budget_bytes / payload as u64).max(1);
        let scale = if payload >= 16 << 10 { 10 } else { 1 };
        let rounds = (rounds / scale).max(1);
        Counts { warmup: (warmup / scale).min(rounds), rounds, messages }
    }

    /// Counts for the large-message rows: a byte budget of 2 GB (200 MB quick), at least 10
    /// messages, a tenth of that (at least 1) as the warm-up; no round trips.
    pub fn large(args: &BenchArgs, payload: usize) -> Counts {
        let budget_bytes = if args.quick { 200_000_000u64 } else { 2_000_000_000 };
        let messages = (budget_bytes / payload as u64).max(10);
        Counts { warmup: (messages / 10).max(1), rounds: 0, messages }
    }
}

impl Counts {
    /// Round trips at most in spin mode when client and server share one CPU: each hop then
    /// waits for the spinning side's time slice to end (milliseconds), so the normal counts
    /// would take minutes and hit the child timeout.
    const SHARED_CPU_SPIN_ROUNDS: u64 = 200;

    /// These counts, cut down for spin mode on a single CPU (throughput is unaffected: a whole
    /// ring of messages moves per time slice).
    pub fn for_shared_cpu_spin(self) -> Counts {
        let rounds = self.rounds.min(Self::SHARED_CPU_SPIN_ROUNDS);
        Counts { warmup: self.warmup.min(rounds / 10), rounds, messages: self.messages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{report, ScaleClient};

    #[test]
    fn big_payloads_get_fewer_rounds() {
        let mut args = BenchArgs {
            quick: false,
            json: None,
            plot: None,
            payloads: vec![],
            rounds: None,
            timeout: 60,
            peer_budget: None,
            large: vec![],
            no_large: false,
            scale: vec![],
            trim_wait: 2.0,
            scale_inflight: 4,
            scale_secs: None,
            scale_client: vec![ScaleClient::Rpc],
            scale_server_threads: 1,
            node: "node".into(),
            no_node: false,
            iceoryx2: None,
            no_iceoryx2: false,
            gate: false,
            gate_margin: report::GateMargin::Factor(1.0),
            grpc: false,
        };
        let small = Counts::new(&args, 1024);
        let big = Counts::new(&args, 64 << 10);
        assert_eq!((small.warmup, small.rounds), (10_000, 200_000));
        assert_eq!((big.warmup, big.rounds), (1_000, 20_000));
        assert!(big.messages * (64 << 10) <= 2_000_000_000);

        let one = Counts::large(&args, 1 << 20);
        let ten = Counts::large(&args, 10 << 20);
        assert_eq!((one.messages, one.warmup, one.rounds), (1907, 190, 0));
        assert_eq!((ten.messages, ten.warmup), (190, 19));
        args.quick = true;
        let quick = Counts::large(&args, 10 << 20);
        assert_eq!((quick.messages, quick.warmup), (19, 1));
        assert_eq!(Counts::large(&args, 16 << 20).messages, 11);
    }
}
