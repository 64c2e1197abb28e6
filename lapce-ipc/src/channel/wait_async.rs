//! The async wait (tokio): a short spin, then a sleep on the doorbell polled in place.

use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::sleeper::Sleeper;
use super::wait::{spin_briefly, WaitStrategy, Waitable};
use crate::error::{IpcError, Result};
use crate::ring::{announce_sleep, cancel_sleep, SLEEPS_DOORBELL};

/// Waits asynchronously until `ready` holds or the peer is gone.
pub(super) async fn wait_async<W: Waitable<Sleeper = Sleeper>>(w: &mut W, len: usize) -> Result<()> {
    wait_async_or(w, len, false, |_| Poll::Pending).await.map(|_| ())
}

/// Waits asynchronously until `ready` holds (`Ok(false)`), the peer is gone, or `other` is ready
/// (`Ok(true)`; it is polled only once the wait sleeps, and is woken through the waker it is
/// given). First a spin ([`spin_async`]), then a sleep on the doorbell, polled in place: the
/// whole wait holds no future but a yield's.
///
/// `yield_when_busy`: on a busy runtime (no spin), let the other tasks run once before sleeping,
/// for a wait whose condition other tasks of this process bring about (a client's reader: the
/// tasks it wakes send the requests whose answers it waits for). What they do then often brings
/// the answer, which costs no doorbell (the peer's system call) and no wake-up through the
/// reactor. A server's connection waits for its client alone: it sleeps at once.
pub(super) async fn wait_async_or<W: Waitable<Sleeper = Sleeper>>(
    w: &mut W,
    len: usize,
    yield_when_busy: bool,
    mut other: impl FnMut(&mut Context<'_>) -> Poll<()>,
) -> Result<bool> {
    let started = match spin_async(w, len)? {
        Spun::Ready => return Ok(false),
        Spun::Busy if yield_when_busy => {
            tokio::task::yield_now().await;
            if w.ready(len)? {
                return Ok(false);
            }
            None
        }
        Spun::Busy => None,
        Spun::Sleep(started) => started,
    };
    let mut sleeping = false;
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(slept) = poll_sleep(w, len, &mut sleeping, cx) {
            return Poll::Ready(slept.map(|()| false));
        }
        // Asleep, and `cx`'s waker registered with the doorbell: now with `other` too.
        if other(cx).is_ready() {
            cancel_sleep(w.word());
            return Poll::Ready(Ok(true));
        }
        Poll::Pending
    })
    .await;
    if let (Ok(false), Some(started)) = (&outcome, started) {
        w.sleeper().recent.note(started.elapsed());
    }
    outcome
}

/// How the spin of an async wait ended.
enum Spun {
    /// The condition holds.
    Ready,
    /// No spin on a busy runtime: yield once, then sleep.
    Busy,
    /// Spun in vain (since the instant given, if the clock was read): sleep.
    Sleep(Option<Instant>),
}

/// The spin of an async wait, with no await: a short one whatever the strategy asks (a long one
/// would stall the executor), unless this half's recent waits were short enough to be caught by
/// a longer one; and none on a busy runtime, where other tasks are ready to run on this thread.
fn spin_async<W: Waitable<Sleeper = Sleeper>>(w: &mut W, len: usize) -> Result<Spun> {
    if w.ready(len)? {
        return Ok(Spun::Ready);
    }
    let strategy = w.sleeper().strategy;
    let budget = match strategy {
        WaitStrategy::Blocking => return Ok(Spun::Sleep(None)),
        _ if !w.sleeper().async_spin_allowed() => return Ok(Spun::Busy),
        WaitStrategy::Adaptive(d) => w.sleeper().recent.spin_budget(d.min(ASYNC_SPIN_CAP)),
        WaitStrategy::Spin => w.sleeper().recent.spin_budget(ASYNC_SPIN_CAP),
    };
    if budget.is_zero() {
        return Ok(Spun::Sleep(None));
    }
    if spin_briefly(w, len)? {
        w.sleeper().recent.note(Duration::ZERO);
        return Ok(Spun::Ready);
    }
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..64 {
            std::hint::spin_loop();
            if w.ready(len)? {
                w.sleeper().recent.note(start.elapsed());
                return Ok(Spun::Ready);
            }
        }
    }
    Ok(Spun::Sleep(Some(start)))
}

/// The sleep of an async wait, polled: announces the sleep, re-checks the ring and the peer's
/// liveness, and sleeps on the doorbell and the link until the peer rings (or goes). `sleeping`
/// carries whether the sleep is announced between polls.
pub(super) fn poll_sleep<W: Waitable<Sleeper = Sleeper>>(
    w: &mut W,
    len: usize,
    sleeping: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<()>> {
    loop {
        if *sleeping {
            let Poll::Ready(slept) = w.sleeper().poll_bell(cx) else { return Poll::Pending };
            cancel_sleep(w.word());
            *sleeping = false;
            match w.ready(len) {
                Ok(true) => return Poll::Ready(Ok(())),
                // An error here is the peer going away: its doorbell broken, or its control
                // socket hung up (PeerGone either way).
                Ok(false) => w.sleeper().link.remember(slept)?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        announce_sleep(w.word(), SLEEPS_DOORBELL);
        let ready = match w.ready(len) {
            Ok(ready) => ready,
            Err(e) => {
                cancel_sleep(w.word());
                return Poll::Ready(Err(e));
            }
        };
        if ready {
            cancel_sleep(w.word());
            return Poll::Ready(Ok(()));
        }
        // Where a hang-up watcher runs this reads its flag and makes no system call (a hang-up
        // it has not flagged yet wakes the sleep, which watches the link too); only without a
        // watcher does it probe the socket.
        if w.sleeper().link.gone_before_sleep() {
            cancel_sleep(w.word());
            // The peer may have published just before it went: deliver that first.
            return Poll::Ready(match w.ready(len) {
                Ok(true) => Ok(()),
                Ok(false) => Err(IpcError::PeerGone),
                Err(e) => Err(e),
            });
        }
        *sleeping = true;
    }
}

/// Longest spin of an async wait, unless the half's recent waits ask for more (see
/// [`RecentWaits::spin_budget`](super::wait::RecentWaits::spin_budget)).
const ASYNC_SPIN_CAP: Duration = Duration::from_micros(20);

/// Most tasks a runtime may have for its async waits to spin. A server with a few connections
/// has a task per connection and a few of its own; with a thousand connections a spin holds up
/// tasks that are ready to run.
pub(super) const ASYNC_SPIN_MAX_TASKS: usize = 32;

/// Whether the current tokio runtime (if any) has at most [`ASYNC_SPIN_MAX_TASKS`] tasks.
pub(super) fn runtime_is_quiet() -> bool {
    tokio::runtime::Handle::try_current()
        .map_or(true, |h| h.metrics().num_alive_tasks() <= ASYNC_SPIN_MAX_TASKS)
}

/// How many async waits of a half reuse its last look at the runtime's task count.
pub(super) const ASYNC_SPIN_RECHECK: u32 = 64;
