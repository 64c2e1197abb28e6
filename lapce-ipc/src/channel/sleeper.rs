//! [`Sleeper`]: what one ring half needs to sleep and to wake its peer (its doorbell, its link),
//! and the [`Sleep`] side of the wait code over it.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::Duration;

use super::link::Link;
use super::wait::{RecentWaits, Sleep, WaitStrategy};
#[cfg(feature = "tokio")]
use super::wait_async::{runtime_is_quiet, ASYNC_SPIN_RECHECK};
use crate::error::Result;
#[cfg(feature = "tokio")]
use crate::platform::poll_sleep as poll_bell;
use crate::platform::{futex_wait, futex_wake, sleep_blocking, Doorbell, HAS_FUTEX};
use crate::ring::{Wake, AWAKE, SLEEPS_DOORBELL, SLEEPS_FUTEX};

/// Everything one ring half needs to sleep and to wake its peer.
pub(crate) struct Sleeper {
    /// This side's end of the ring's doorbell: rung to wake the peer when it sleeps on its end;
    /// where this half sleeps in the async flavour (and in the blocking one without a futex).
    bell: Doorbell,
    pub(super) link: Arc<Link>,
    pub(super) strategy: WaitStrategy,
    /// Async waits so far, and whether the last look at the runtime allowed a spin.
    async_waits: u32,
    async_spin: bool,
    /// How long this half's recent waits took (how long its adaptive waits spin).
    pub(super) recent: RecentWaits,
}

impl Sleeper {
    pub(crate) fn new(bell: Doorbell, link: Arc<Link>, strategy: WaitStrategy) -> Sleeper {
        Sleeper { bell, link, strategy, async_waits: 0, async_spin: true, recent: RecentWaits::default() }
    }

    #[cfg(feature = "tokio")]
    /// Whether this async wait may spin: only while the runtime has at most
    /// [`ASYNC_SPIN_MAX_TASKS`](super::wait_async::ASYNC_SPIN_MAX_TASKS) tasks, looked up every [`ASYNC_SPIN_RECHECK`] waits. A spin holds
    /// its executor thread: with a handful of tasks there is rarely another one ready to run
    /// (and the spin saves the wake-up), with a thousand connections there nearly always is.
    pub(super) fn async_spin_allowed(&mut self) -> bool {
        if self.async_waits.is_multiple_of(ASYNC_SPIN_RECHECK) {
            self.async_spin = runtime_is_quiet();
        }
        self.async_waits = self.async_waits.wrapping_add(1);
        self.async_spin
    }

    #[cfg(feature = "tokio")]
    /// Ready when the peer rang (or went); else registers `cx`'s waker and is pending.
    pub(super) fn poll_bell(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_bell(&mut self.bell, &self.link.peer, cx)
    }

    /// Wakes the peer as its waiter word said (`wake` is the value taken from the word).
    pub(super) fn wake(&self, wake: Wake, word: &AtomicU32) {
        match wake {
            AWAKE => {}
            SLEEPS_FUTEX => futex_wake(word),
            SLEEPS_DOORBELL => self.bell.ring(),
            // A value no honest peer writes: wake both ways; a spurious wake-up is harmless.
            _ => {
                futex_wake(word);
                self.bell.ring();
            }
        }
    }

    /// Sleeps on `word` (this half's waiter word) as [`Waitable::sleep`](super::wait::Waitable::sleep)
    /// says: on the futex where the platform has one, else on the doorbell and the link.
    #[inline]
    pub(super) fn sleep_on(&self, word: &AtomicU32, timeout: Option<Duration>) -> Result<()> {
        if HAS_FUTEX {
            futex_wait(word, SLEEPS_FUTEX, timeout);
            Ok(())
        } else {
            sleep_blocking(&self.bell, &self.link.peer, timeout)
        }
    }
}

impl Sleep for Sleeper {
    #[inline]
    fn strategy(&self) -> WaitStrategy {
        self.strategy
    }
    #[inline]
    fn recent(&mut self) -> &mut RecentWaits {
        &mut self.recent
    }
    #[inline]
    fn gone_flag(&self) -> bool {
        self.link.gone_flag()
    }
    fn peer_gone(&self) -> bool {
        self.link.peer_gone()
    }
    #[inline]
    fn gone_before_sleep(&self) -> bool {
        self.link.gone_before_sleep()
    }
    fn remember(&self, slept: Result<()>) -> Result<()> {
        self.link.remember(slept)
    }
}
