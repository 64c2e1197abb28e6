//! [`Link`]: the control channel of a connection once the handshake is over, which only tells
//! whether the peer lives.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "tokio")]
use tokio::sync::Notify;

use crate::error::{IpcError, Result};
#[cfg(feature = "tokio")]
use crate::platform::AsyncHangupWatch;
use crate::platform::{futex_wake, ControlStream, PeerLink, HAS_HANGUP_WATCHER};
use crate::ring::{cancel_sleep, WaiterWord};

/// How often [`Link::gone_lately`] may ask the OS whether the peer hung up, where no watcher
/// tells.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// The control channel of a connection: after the handshake it only tells whether the peer lives.
///
/// Where the platform has a hang-up watcher, it sets `gone` the moment the peer closes the
/// channel or dies, and wakes this side's blocking sleepers; a sleeper checks `gone` after
/// announcing its sleep, so the wake-up cannot be lost (same argument as for a publish).
/// Elsewhere sleepers wait on the link itself as well as on their doorbell.
pub(crate) struct Link {
    pub(super) peer: PeerLink,
    peer_pid: u32,
    gone: Arc<AtomicBool>,
    #[cfg(feature = "tokio")]
    /// Told by the hang-up watcher, where there is one (see [`Link::hung_up`]).
    hangup: Arc<Notify>,
    /// When the link was made, and when [`Link::gone_lately`] last probed it (nanoseconds
    /// after that).
    epoch: Instant,
    last_probe_ns: AtomicU64,
    /// Whatever must live exactly as long as the connection (the server's pool slot).
    _held: Option<Box<dyn Send + Sync>>,
}

impl Link {
    /// `own_words`: the waiter words this side sleeps on (its producer's space word and its
    /// consumer's data word), to be woken when the peer goes.
    pub(crate) fn new(control: ControlStream, peer_pid: u32, own_words: [WaiterWord; 2]) -> Result<Link> {
        let gone = Arc::new(AtomicBool::new(false));
        #[cfg(feature = "tokio")]
        let hangup = Arc::new(Notify::new());
        #[cfg(feature = "tokio")]
        let told = hangup.clone();
        let flag = gone.clone();
        let on_hangup = Box::new(move || {
            flag.store(true, Ordering::SeqCst);
            for w in &own_words {
                cancel_sleep(w.get());
                futex_wake(w.get());
            }
            #[cfg(feature = "tokio")]
            told.notify_one();
        });
        let peer = PeerLink::new(control, on_hangup)?;
        Ok(Link {
            peer,
            peer_pid,
            gone,
            #[cfg(feature = "tokio")]
            hangup,
            epoch: Instant::now(),
            last_probe_ns: AtomicU64::new(0),
            _held: None,
        })
    }

    /// Keeps `held` until the connection is closed (both halves dropped).
    pub(crate) fn holding(mut self, held: Box<dyn Send + Sync>) -> Link {
        self._held = Some(held);
        self
    }

    /// True once the peer has hung up (or sent anything, which no live peer does). A hang-up
    /// seen here is remembered, so that the cheap [`gone_lately`](Self::gone_lately) of the
    /// other direction knows it at once.
    pub(crate) fn peer_gone(&self) -> bool {
        if self.gone.load(Ordering::SeqCst) {
            return true;
        }
        let gone = self.peer.hung_up();
        if gone {
            self.gone.store(true, Ordering::SeqCst);
        }
        gone
    }

    /// Passes a sleep's outcome through, remembering a hang-up it reported (see
    /// [`peer_gone`](Self::peer_gone)).
    pub(super) fn remember(&self, slept: Result<()>) -> Result<()> {
        if let Err(IpcError::PeerGone) = slept {
            self.gone.store(true, Ordering::SeqCst);
        }
        slept
    }

    /// The watcher's verdict alone: a single load, cheap enough for spin loops.
    pub(super) fn gone_flag(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Whether the peer is gone, cheaply enough to ask before every request: the watcher's flag
    /// where there is a watcher; elsewhere a probe of the link (a system call), made only when
    /// the last one is [`PROBE_EVERY`] old, so a busy connection makes no system call for it.
    pub(crate) fn gone_lately(&self) -> bool {
        if HAS_HANGUP_WATCHER {
            return self.gone_flag();
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.last_probe_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PROBE_EVERY.as_nanos() as u64 {
            return self.gone_flag();
        }
        self.last_probe_ns.store(now, Ordering::Relaxed);
        if self.peer.hung_up() {
            self.gone.store(true, Ordering::SeqCst);
        }
        self.gone_flag()
    }

    #[cfg(feature = "tokio")]
    /// Resolves once the peer has hung up: told by the watcher where there is one, else by a
    /// registration of the link with the current tokio reactor (made for this wait).
    pub(crate) async fn hung_up(&self) -> Result<()> {
        if !HAS_HANGUP_WATCHER {
            return AsyncHangupWatch::new(&self.peer)?.hung_up().await;
        }
        // The watcher sets the flag before it notifies, and a notification with nobody waiting
        // is kept for the next wait: none is lost between the check and the wait.
        while !self.gone_flag() {
            self.hangup.notified().await;
        }
        Ok(())
    }

    /// The cheapest sound check before a sleep: the watcher's flag where there is a watcher
    /// (it wakes sleepers itself), a probe of the socket where there is none.
    pub(super) fn gone_before_sleep(&self) -> bool {
        if HAS_HANGUP_WATCHER {
            self.gone_flag()
        } else {
            self.peer_gone()
        }
    }

    pub(crate) fn peer_pid(&self) -> u32 {
        self.peer_pid
    }
}
