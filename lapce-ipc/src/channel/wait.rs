//! The blocking wait of a ring half: spin, then announce the sleep on the half's waiter word,
//! re-check, and sleep until the peer wakes it (see the channel's module documentation).
//!
//! This file reaches atomics, the clock, the ring's waiter-word protocol and the error type only
//! through `super::sync`, and the half's sleep and its peer's liveness only through the
//! [`Waitable`] and [`Sleep`] traits, so that `tests/loom_ring.rs` compiles it verbatim against
//! loom's atomics and a model futex: the model checks the very wait loop the library runs.
//! Everything is generic and monomorphised: the facade costs the hot path nothing.

use super::sync::{
    announce_sleep, cancel_sleep, spin_loop, yield_now, AtomicU32, Duration, Instant, IpcError, Result,
    HAS_FUTEX, HAS_HANGUP_WATCHER, SLEEPS_DOORBELL, SLEEPS_FUTEX,
};

/// How long a wait spins before it starts yielding the core between checks.
const PURE_SPIN: Duration = Duration::from_micros(5);

/// How a stream waits when the ring is empty (receive) or full (send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Never sleep (blocking flavour): busy-spin until the condition holds. Lowest latency, one
    /// core per waiting side. After a few microseconds of waiting the spinner yields its core
    /// between checks, so a machine with more spinning threads than cores still makes progress.
    /// Async waits spin at most 20 µs whatever the strategy, then sleep: a longer spin would
    /// stall the executor.
    Spin,
    /// Spin for the given time, then sleep until woken. The default, with
    /// [`WaitStrategy::DEFAULT_SPIN`].
    Adaptive(Duration),
    /// Sleep at once (after a few hundred spin iterations): least CPU, a wake-up costs a syscall.
    Blocking,
}

impl WaitStrategy {
    /// Spin time of the default adaptive strategy: long enough to catch a prompt reply on a
    /// busy machine, short enough that an idle wait goes to sleep almost at once.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::Adaptive(Self::DEFAULT_SPIN)
    }
}

/// How long a half's recent waits took: a moving average, in nanoseconds.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RecentWaits {
    ns: u64,
}

impl RecentWaits {
    /// How long an adaptive wait spins before it sleeps: the configured `base`, or twice the
    /// recent waits when that is longer and at most [`ADAPTIVE_SPIN_MAX`]. Waits that usually
    /// end that soon (a 64 KiB or 1 MiB exchange, the next fragment of a message) are caught
    /// awake instead of paying a wake-up; waits that usually take longer would only burn the
    /// spin, so they keep the base.
    pub(crate) fn spin_budget(&self, base: Duration) -> Duration {
        let hint = Duration::from_nanos(self.ns.saturating_mul(2));
        if hint > base && hint <= ADAPTIVE_SPIN_MAX {
            hint
        } else {
            base
        }
    }

    /// Adds a wait that ended after `waited` (weight 1/8; a sample counts at most twice
    /// [`ADAPTIVE_SPIN_MAX`], so one long idle wait does not hide the short waits around it for
    /// long).
    pub(crate) fn note(&mut self, waited: Duration) {
        let sample = waited.min(2 * ADAPTIVE_SPIN_MAX).as_nanos() as u64;
        self.ns = self.ns - self.ns / 8 + sample / 8;
    }
}

/// Longest spin an adaptive wait takes on the strength of its half's recent waits (blocking and
/// async alike): about the turnaround of a 1 MiB exchange; a half whose waits take longer spins
/// only its base.
pub(crate) const ADAPTIVE_SPIN_MAX: Duration = Duration::from_micros(500);

/// What a wait needs from a ring half.
pub(crate) trait Waitable {
    /// The half's sleeper: how it waits and whether its peer lives.
    type Sleeper: Sleep;
    /// Checks of the ring between two looks at the clock in the spin phase. (The loom model
    /// sets 1: each check is a step it explores, and the clock means nothing there.)
    const SPIN_CHECKS: u32 = 128;
    /// Checks the condition (data to read / room for `len` bytes). Errors mean corruption.
    fn ready(&mut self, len: usize) -> Result<bool>;
    /// The waiter word this half announces its sleep on.
    fn word(&self) -> &AtomicU32;
    fn sleeper(&mut self) -> &mut Self::Sleeper;
    /// Sleeps, the sleep announced on [`word`](Self::word) (as [`SLEEPS_FUTEX`] where
    /// [`HAS_FUTEX`], else [`SLEEPS_DOORBELL`]), until the peer wakes it, `timeout` passes or the
    /// peer goes ([`IpcError::PeerGone`]). It may return early for no reason.
    fn sleep(&mut self, timeout: Option<Duration>) -> Result<()>;
}

/// How a half waits, and what a wait needs to know of its peer's liveness.
pub(crate) trait Sleep {
    fn strategy(&self) -> WaitStrategy;
    /// How long this half's recent waits took (how long its adaptive waits spin).
    fn recent(&mut self) -> &mut RecentWaits;
    /// The hang-up watcher's verdict alone: a single load, cheap enough for spin loops.
    fn gone_flag(&self) -> bool;
    /// Asks the OS whether the peer hung up (a system call), remembering a hang-up.
    fn peer_gone(&self) -> bool;
    /// The cheapest sound check before a sleep: the watcher's flag where there is a watcher
    /// (it wakes sleepers itself), a probe of the link where there is none.
    fn gone_before_sleep(&self) -> bool;
    /// Passes a sleep's outcome through, remembering a hang-up it reported.
    fn remember(&self, slept: Result<()>) -> Result<()>;
}

/// Blocks until `ready` holds, the deadline passes or the peer is gone.
pub(crate) fn wait_blocking<W: Waitable>(w: &mut W, len: usize, deadline: Option<Instant>) -> Result<()> {
    if w.ready(len)? {
        return Ok(());
    }
    let spin_for = match w.sleeper().strategy() {
        WaitStrategy::Spin => None,
        WaitStrategy::Adaptive(d) => Some(w.sleeper().recent().spin_budget(d)),
        WaitStrategy::Blocking => Some(Duration::ZERO),
    };
    if spin_for != Some(Duration::ZERO) && spin_briefly(w, len)? {
        w.sleeper().recent().note(Duration::ZERO);
        return Ok(());
    }
    let start = Instant::now();
    let outcome = wait_blocking_from(w, len, deadline, start, spin_for);
    if outcome.is_ok() && !matches!(w.sleeper().strategy(), WaitStrategy::Blocking) {
        w.sleeper().recent().note(start.elapsed());
    }
    outcome
}

/// The spin and sleep phases of [`wait_blocking`], from `start`; `spin_for`: `None` spins until
/// the condition holds.
fn wait_blocking_from<W: Waitable>(
    w: &mut W,
    len: usize,
    deadline: Option<Instant>,
    start: Instant,
    spin_for: Option<Duration>,
) -> Result<()> {
    // Spin phase. The clock and the watcher's flag are looked at every `SPIN_CHECKS` checks;
    // without a watcher the socket itself is probed every millisecond.
    let mut next_probe = start + Duration::from_millis(1);
    loop {
        for _ in 0..W::SPIN_CHECKS {
            spin_loop();
            if w.ready(len)? {
                return Ok(());
            }
        }
        let now = Instant::now();
        let probe = !HAS_HANGUP_WATCHER && now >= next_probe;
        if probe {
            next_probe = now + Duration::from_millis(1);
        }
        if w.sleeper().gone_flag() || (probe && w.sleeper().peer_gone()) {
            return if w.ready(len)? { Ok(()) } else { Err(IpcError::PeerGone) };
        }
        if deadline.is_some_and(|d| now >= d) {
            return Err(IpcError::Timeout);
        }
        if spin_for.is_some_and(|d| now - start >= d) {
            break;
        }
        // Past the first few microseconds, let other threads on this core run between checks:
        // when there are more busy threads than cores, the one we wait for may need our core.
        if now - start >= PURE_SPIN {
            yield_now();
        }
    }
    // Sleep phase: announce, re-check (the ring, then the peer's liveness), sleep.
    let how = if HAS_FUTEX { SLEEPS_FUTEX } else { SLEEPS_DOORBELL };
    loop {
        announce_sleep(w.word(), how);
        if w.ready(len)? {
            cancel_sleep(w.word());
            return Ok(());
        }
        if w.sleeper().gone_before_sleep() {
            cancel_sleep(w.word());
            // The peer may have published just before it went: deliver that first.
            return if w.ready(len)? { Ok(()) } else { Err(IpcError::PeerGone) };
        }
        let timeout = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    cancel_sleep(w.word());
                    return Err(IpcError::Timeout);
                }
            },
            None => None,
        };
        let slept = w.sleep(timeout);
        cancel_sleep(w.word());
        if w.ready(len)? {
            return Ok(());
        }
        // The peer closed its end of the doorbell: it is gone.
        w.sleeper().remember(slept)?;
    }
}

/// Checks `ready` [`BRIEF_SPIN`] times without looking at the clock: on a busy connection most
/// waits end within that, and a clock read costs as much as a few dozen checks.
pub(crate) fn spin_briefly<W: Waitable>(w: &mut W, len: usize) -> Result<bool> {
    for _ in 0..BRIEF_SPIN {
        spin_loop();
        if w.ready(len)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks of a wait's first, clock-free spin (well under a microsecond).
const BRIEF_SPIN: u32 = 128;
