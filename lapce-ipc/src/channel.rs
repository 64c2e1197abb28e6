//! The channel layer: one direction of a connection (a ring half plus its wake-up plumbing),
//! with blocking and async waits, backpressure and liveness.
//!
//! A waiter first spins (how long is the [`WaitStrategy`]), then announces that it sleeps on the
//! ring's waiter word, re-checks the ring, and sleeps: on the futex where the platform has one
//! (blocking flavour on Linux), else on its doorbell (a socket pair on Unix, an event on
//! Windows), which the async flavour always uses. The other side wakes it only when the word
//! says someone sleeps, so a steady stream makes no system call per message, and an idle
//! connection costs nothing.
//!
//! Liveness: on Linux the process's hang-up watcher thread (one epoll set for all connections)
//! learns at once when a peer closes its control socket or dies, even by `kill -9`; it marks the
//! link gone and wakes this side's blocking sleepers, which then return [`IpcError::PeerGone`].
//! Elsewhere, and in the async flavour, sleepers wait on the link together with their doorbell.
//! Nothing polls: an idle connection costs no CPU at all.

#[cfg(feature = "tokio")]
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(feature = "tokio")]
use tokio::sync::Notify;

use crate::error::{IpcError, Result};
use crate::platform::{
    futex_wait, futex_wake, sleep_blocking, ControlStream, Doorbell, PeerLink, HAS_FUTEX, HAS_HANGUP_WATCHER,
};
#[cfg(feature = "tokio")]
use crate::platform::{poll_sleep as poll_bell, AsyncHangupWatch};
use crate::ring::{
    announce_sleep, cancel_sleep, Consumer, Producer, WaiterWord, Wake, AWAKE, SLEEPS_DOORBELL, SLEEPS_FUTEX,
};

/// How often [`Link::gone_lately`] may ask the OS whether the peer hung up, where no watcher
/// tells.
const PROBE_EVERY: Duration = Duration::from_millis(1);

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

/// The control channel of a connection: after the handshake it only tells whether the peer lives.
///
/// Where the platform has a hang-up watcher, it sets `gone` the moment the peer closes the
/// channel or dies, and wakes this side's blocking sleepers; a sleeper checks `gone` after
/// announcing its sleep, so the wake-up cannot be lost (same argument as for a publish).
/// Elsewhere sleepers wait on the link itself as well as on their doorbell.
pub(crate) struct Link {
    peer: PeerLink,
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
    fn remember(&self, slept: Result<()>) -> Result<()> {
        if let Err(IpcError::PeerGone) = slept {
            self.gone.store(true, Ordering::SeqCst);
        }
        slept
    }

    /// The watcher's verdict alone: a single load, cheap enough for spin loops.
    fn gone_flag(&self) -> bool {
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
    fn gone_before_sleep(&self) -> bool {
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

/// Everything one ring half needs to sleep and to wake its peer.
pub(crate) struct Sleeper {
    /// This side's end of the ring's doorbell: rung to wake the peer when it sleeps on its end;
    /// where this half sleeps in the async flavour (and in the blocking one without a futex).
    bell: Doorbell,
    link: Arc<Link>,
    strategy: WaitStrategy,
    /// Async waits so far, and whether the last look at the runtime allowed a spin.
    async_waits: u32,
    async_spin: bool,
    /// How long this half's recent waits took (how long its adaptive waits spin).
    recent: RecentWaits,
}

impl Sleeper {
    pub(crate) fn new(bell: Doorbell, link: Arc<Link>, strategy: WaitStrategy) -> Sleeper {
        Sleeper { bell, link, strategy, async_waits: 0, async_spin: true, recent: RecentWaits::default() }
    }

    #[cfg(feature = "tokio")]
    /// Whether this async wait may spin: only while the runtime has at most
    /// [`ASYNC_SPIN_MAX_TASKS`] tasks, looked up every [`ASYNC_SPIN_RECHECK`] waits. A spin holds
    /// its executor thread: with a handful of tasks there is rarely another one ready to run
    /// (and the spin saves the wake-up), with a thousand connections there nearly always is.
    fn async_spin_allowed(&mut self) -> bool {
        if self.async_waits.is_multiple_of(ASYNC_SPIN_RECHECK) {
            self.async_spin = runtime_is_quiet();
        }
        self.async_waits = self.async_waits.wrapping_add(1);
        self.async_spin
    }

    #[cfg(feature = "tokio")]
    /// Ready when the peer rang (or went); else registers `cx`'s waker and is pending.
    fn poll_bell(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_bell(&mut self.bell, &self.link.peer, cx)
    }

    /// Wakes the peer as its waiter word said (`wake` is the value taken from the word).
    fn wake(&self, wake: Wake, word: &AtomicU32) {
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
}

/// How long a half's recent waits took: a moving average, in nanoseconds.
#[derive(Debug, Default, Clone, Copy)]
struct RecentWaits {
    ns: u64,
}

impl RecentWaits {
    /// How long an adaptive wait spins before it sleeps: the configured `base`, or twice the
    /// recent waits when that is longer and at most [`ADAPTIVE_SPIN_MAX`]. Waits that usually
    /// end that soon (a 64 KiB or 1 MiB exchange, the next fragment of a message) are caught
    /// awake instead of paying a wake-up; waits that usually take longer would only burn the
    /// spin, so they keep the base.
    fn spin_budget(&self, base: Duration) -> Duration {
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
    fn note(&mut self, waited: Duration) {
        let sample = waited.min(2 * ADAPTIVE_SPIN_MAX).as_nanos() as u64;
        self.ns = self.ns - self.ns / 8 + sample / 8;
    }
}

/// What a wait needs from a ring half.
trait Waitable {
    /// Checks the condition (data to read / room for `len` bytes). Errors mean corruption.
    fn ready(&mut self, len: usize) -> Result<bool>;
    /// The waiter word this half announces its sleep on.
    fn word(&self) -> &AtomicU32;
    fn sleeper(&mut self) -> &mut Sleeper;
}

/// Blocks until `ready` holds, the deadline passes or the peer is gone.
fn wait_blocking<W: Waitable>(w: &mut W, len: usize, deadline: Option<Instant>) -> Result<()> {
    if w.ready(len)? {
        return Ok(());
    }
    let spin_for = match w.sleeper().strategy {
        WaitStrategy::Spin => None,
        WaitStrategy::Adaptive(d) => Some(w.sleeper().recent.spin_budget(d)),
        WaitStrategy::Blocking => Some(Duration::ZERO),
    };
    if spin_for != Some(Duration::ZERO) && spin_briefly(w, len)? {
        w.sleeper().recent.note(Duration::ZERO);
        return Ok(());
    }
    let start = Instant::now();
    let outcome = wait_blocking_from(w, len, deadline, start, spin_for);
    if outcome.is_ok() && !matches!(w.sleeper().strategy, WaitStrategy::Blocking) {
        w.sleeper().recent.note(start.elapsed());
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
    // Spin phase. The clock and the watcher's flag are looked at every 128 checks; without a
    // watcher the socket itself is probed every millisecond.
    let mut next_probe = start + Duration::from_millis(1);
    loop {
        for _ in 0..128 {
            std::hint::spin_loop();
            if w.ready(len)? {
                return Ok(());
            }
        }
        let now = Instant::now();
        let probe = !HAS_HANGUP_WATCHER && now >= next_probe;
        if probe {
            next_probe = now + Duration::from_millis(1);
        }
        if w.sleeper().link.gone_flag() || (probe && w.sleeper().link.peer_gone()) {
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
            std::thread::yield_now();
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
        if w.sleeper().link.gone_before_sleep() {
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
        let slept = if HAS_FUTEX {
            futex_wait(w.word(), SLEEPS_FUTEX, timeout);
            Ok(())
        } else {
            let sleeper = w.sleeper();
            sleep_blocking(&sleeper.bell, &sleeper.link.peer, timeout)
        };
        cancel_sleep(w.word());
        if w.ready(len)? {
            return Ok(());
        }
        // The peer closed its end of the doorbell: it is gone.
        w.sleeper().link.remember(slept)?;
    }
}

/// Checks `ready` [`BRIEF_SPIN`] times without looking at the clock: on a busy connection most
/// waits end within that, and a clock read costs as much as a few dozen checks.
fn spin_briefly<W: Waitable>(w: &mut W, len: usize) -> Result<bool> {
    for _ in 0..BRIEF_SPIN {
        std::hint::spin_loop();
        if w.ready(len)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks of a wait's first, clock-free spin (well under a microsecond).
const BRIEF_SPIN: u32 = 128;

#[cfg(feature = "tokio")]
/// Waits asynchronously until `ready` holds or the peer is gone.
async fn wait_async<W: Waitable>(w: &mut W, len: usize) -> Result<()> {
    wait_async_or(w, len, false, |_| Poll::Pending).await.map(|_| ())
}

#[cfg(feature = "tokio")]
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
async fn wait_async_or<W: Waitable>(
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

#[cfg(feature = "tokio")]
/// How the spin of an async wait ended.
enum Spun {
    /// The condition holds.
    Ready,
    /// No spin on a busy runtime: yield once, then sleep.
    Busy,
    /// Spun in vain (since the instant given, if the clock was read): sleep.
    Sleep(Option<Instant>),
}

#[cfg(feature = "tokio")]
/// The spin of an async wait, with no await: a short one whatever the strategy asks (a long one
/// would stall the executor), unless this half's recent waits were short enough to be caught by
/// a longer one; and none on a busy runtime, where other tasks are ready to run on this thread.
fn spin_async<W: Waitable>(w: &mut W, len: usize) -> Result<Spun> {
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

#[cfg(feature = "tokio")]
/// The sleep of an async wait, polled: announces the sleep, re-checks the ring and the peer's
/// liveness, and sleeps on the doorbell and the link until the peer rings (or goes). `sleeping`
/// carries whether the sleep is announced between polls.
fn poll_sleep<W: Waitable>(
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

#[cfg(feature = "tokio")]
/// Longest spin of an async wait, unless the half's recent waits ask for more (see
/// [`RecentWaits::spin_budget`]).
const ASYNC_SPIN_CAP: Duration = Duration::from_micros(20);

/// Longest spin an adaptive wait takes on the strength of its half's recent waits (blocking and
/// async alike): about the turnaround of a 1 MiB exchange; a half whose waits take longer spins
/// only its base.
const ADAPTIVE_SPIN_MAX: Duration = Duration::from_micros(500);

#[cfg(feature = "tokio")]
/// Most tasks a runtime may have for its async waits to spin. A server with a few connections
/// has a task per connection and a few of its own; with a thousand connections a spin holds up
/// tasks that are ready to run.
const ASYNC_SPIN_MAX_TASKS: usize = 32;

#[cfg(feature = "tokio")]
/// Whether the current tokio runtime (if any) has at most [`ASYNC_SPIN_MAX_TASKS`] tasks.
fn runtime_is_quiet() -> bool {
    tokio::runtime::Handle::try_current()
        .map_or(true, |h| h.metrics().num_alive_tasks() <= ASYNC_SPIN_MAX_TASKS)
}

#[cfg(feature = "tokio")]
/// How many async waits of a half reuse its last look at the runtime's task count.
const ASYNC_SPIN_RECHECK: u32 = 64;

/// The sending half of a connection: the producer of the outgoing ring.
pub(crate) struct SendHalf {
    producer: Producer,
    sleeper: Sleeper,
}

impl Waitable for SendHalf {
    fn ready(&mut self, len: usize) -> Result<bool> {
        let ready = self.producer.try_reserve(len)?.is_some();
        self.producer.abort();
        Ok(ready)
    }
    fn word(&self) -> &AtomicU32 {
        self.producer.space_waiter()
    }
    fn sleeper(&mut self) -> &mut Sleeper {
        &mut self.sleeper
    }
}

impl SendHalf {
    pub(crate) fn new(producer: Producer, sleeper: Sleeper) -> SendHalf {
        SendHalf { producer, sleeper }
    }

    /// A gauge of the outgoing ring (for metrics).
    pub(crate) fn ring_gauge(&self) -> crate::ring::RingGauge {
        self.producer.gauge()
    }

    pub(crate) fn max_message(&self) -> usize {
        self.producer.max_payload()
    }

    pub(crate) fn set_strategy(&mut self, s: WaitStrategy) {
        self.sleeper.strategy = s;
    }

    pub(crate) fn link(&self) -> &Link {
        &self.sleeper.link
    }

    /// See [`Producer::discard_if_empty`].
    pub(crate) fn discard_if_empty(&mut self) -> Result<bool> {
        self.producer.discard_if_empty()
    }

    /// Reserves `len` bytes, lets `fill` write them and return how many to publish.
    /// `Ok(None)`: the ring is full.
    pub(crate) fn try_send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Option<usize>> {
        let Some(buf) = self.producer.try_reserve(len)? else {
            return Ok(None);
        };
        let n = fill(buf).min(len);
        let w = self.producer.commit(n);
        self.sleeper.wake(w, self.producer.peer_waiter());
        Ok(Some(n))
    }

    /// Like `try_send_with`, waiting (blocking) for room until `deadline`.
    pub(crate) fn send_with(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize> {
        self.check_len(len)?;
        wait_blocking(self, len, deadline)?;
        // Room only grows while we wait (we are the only producer), so this cannot fail.
        self.try_send_with(len, fill).map(|r| r.expect("room was just observed"))
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max_message() {
            return Err(IpcError::MessageTooLarge { len, max: self.max_message() });
        }
        Ok(())
    }

    /// Copies `msg` into one record without waiting; `WouldBlock` when the ring is full.
    pub(crate) fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len())?;
        self.try_send_with(msg.len(), copy_from(msg))?.map(|_| ()).ok_or(IpcError::WouldBlock)
    }

    /// Copies `msg` into one record, waiting (blocking) for room until `deadline`.
    pub(crate) fn send(&mut self, msg: &[u8], deadline: Option<Instant>) -> Result<()> {
        self.send_with(msg.len(), deadline, copy_from(msg)).map(|_| ())
    }

    #[cfg(feature = "tokio")]
    /// Copies `msg` into one record, waiting asynchronously for room.
    pub(crate) async fn send_async(&mut self, msg: &[u8]) -> Result<()> {
        self.send_with_async(msg.len(), copy_from(msg)).await.map(|_| ())
    }

    #[cfg(feature = "tokio")]
    /// Waits asynchronously until a record of `len` bytes fits (cancel-safe).
    pub(crate) async fn room_async(&mut self, len: usize) -> Result<()> {
        self.check_len(len)?;
        wait_async(self, len).await
    }

    /// Waits (blocking) until a record of `len` bytes fits or `deadline` passes.
    pub(crate) fn room_blocking(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        self.check_len(len)?;
        wait_blocking(self, len, deadline)
    }

    #[cfg(feature = "tokio")]
    /// Polls for room for a record of `len` bytes, for the `Sink` and `AsyncWrite` impls: ready
    /// at once when there is room, else the async sleep, polled in place (no spin: a poll must
    /// not hold its task). Each pending poll announces the sleep afresh, so a wait another call
    /// ended in between cannot leave this one unwoken.
    pub(crate) fn poll_room(&mut self, len: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.check_len(len)?;
        if self.ready(len)? {
            return Poll::Ready(Ok(()));
        }
        poll_sleep(self, len, &mut false, cx)
    }

    #[cfg(feature = "tokio")]
    /// Async flavour of `send_with`.
    pub(crate) async fn send_with_async(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize> {
        self.check_len(len)?;
        wait_async(self, len).await?;
        self.try_send_with(len, fill).map(|r| r.expect("room was just observed"))
    }
}

/// The receiving half of a connection: the consumer of the incoming ring.
pub(crate) struct RecvHalf {
    consumer: Consumer,
    sleeper: Sleeper,
}

impl Waitable for RecvHalf {
    fn ready(&mut self, _len: usize) -> Result<bool> {
        Ok(self.consumer.try_peek()?.is_some())
    }
    fn word(&self) -> &AtomicU32 {
        self.consumer.data_waiter()
    }
    fn sleeper(&mut self) -> &mut Sleeper {
        &mut self.sleeper
    }
}

impl RecvHalf {
    /// A gauge of the incoming ring (for metrics).
    pub(crate) fn ring_gauge(&self) -> crate::ring::RingGauge {
        self.consumer.gauge()
    }

    pub(crate) fn new(consumer: Consumer, sleeper: Sleeper) -> RecvHalf {
        RecvHalf { consumer, sleeper }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.consumer.max_payload()
    }

    pub(crate) fn set_strategy(&mut self, s: WaitStrategy) {
        self.sleeper.strategy = s;
    }

    /// Hands the next message to `f` (zero-copy) if there is one. When `f` returns
    /// `Err`, the message stays queued (used for a too-small caller buffer).
    pub(crate) fn try_recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<Option<R>> {
        let Some(bytes) = self.consumer.try_peek()? else {
            return Ok(None);
        };
        let r = f(bytes)?;
        let w = self.consumer.release();
        self.sleeper.wake(w, self.consumer.peer_waiter());
        Ok(Some(r))
    }

    /// Like `try_recv_with`, with `WouldBlock` when nothing is queued.
    pub(crate) fn recv_now<R>(&mut self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.try_recv_with(f)?.ok_or(IpcError::WouldBlock)
    }

    /// Waits (blocking) for a message until `deadline`, then hands it to `f`.
    pub(crate) fn recv_with<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        wait_blocking(self, 0, deadline)?;
        self.try_recv_with(f).map(|r| r.expect("a record was just observed"))
    }

    #[cfg(feature = "tokio")]
    /// Async flavour of `recv_with`.
    pub(crate) async fn recv_with_async<R>(&mut self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        wait_async(self, 0).await?;
        self.try_recv_with(f).map(|r| r.expect("a record was just observed"))
    }

    #[cfg(feature = "tokio")]
    /// Waits asynchronously until a record is there (cancel-safe: dropping the wait loses
    /// nothing, at most the peer rings once for nobody).
    pub(crate) async fn readable_async(&mut self) -> Result<()> {
        wait_async(self, 0).await
    }

    #[cfg(feature = "tokio")]
    /// Like [`readable_async`](Self::readable_async), also ending when `other` is ready
    /// (`Ok(true)`; polled only once the wait sleeps): one small future for a wait on the ring
    /// or on something else. For a reader whose data other tasks of this process bring about
    /// (see [`wait_async_or`]).
    pub(crate) async fn readable_or(
        &mut self,
        other: impl FnMut(&mut Context<'_>) -> Poll<()>,
    ) -> Result<bool> {
        wait_async_or(self, 0, true, other).await
    }

    #[cfg(feature = "tokio")]
    /// Polls for a record, for the `Stream` and `AsyncRead` impls: see
    /// [`SendHalf::poll_room`].
    pub(crate) fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.ready(0)? {
            return Poll::Ready(Ok(()));
        }
        poll_sleep(self, 0, &mut false, cx)
    }

    /// Copies the next record from byte `*offset` on into `buf` (as much as fits), and frees the
    /// record once all of it is copied (`*offset` back to 0): the byte-stream mode's read.
    /// `Ok(None)`: nothing queued. An empty record is freed and reported as `Some(0)`.
    pub(crate) fn try_read_part(&mut self, offset: &mut usize, buf: &mut [u8]) -> Result<Option<usize>> {
        let Some(bytes) = self.consumer.try_peek()? else {
            return Ok(None);
        };
        // `min`: a record is re-read from shared memory, which a hostile peer may have shrunk.
        let rest = &bytes[(*offset).min(bytes.len())..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        if n < rest.len() {
            *offset += n;
            return Ok(Some(n));
        }
        *offset = 0;
        let w = self.consumer.release();
        self.sleeper.wake(w, self.consumer.peer_waiter());
        Ok(Some(n))
    }

    /// Waits (blocking) until a record is there or `deadline` passes.
    pub(crate) fn readable_blocking(&mut self, deadline: Option<Instant>) -> Result<()> {
        wait_blocking(self, 0, deadline)
    }

    /// A handle on the connection's link to the peer (liveness, pid) that outlives this half.
    pub(crate) fn link_handle(&self) -> Arc<Link> {
        self.sleeper.link.clone()
    }
}

/// What a handle's `Debug` shows of a direction: the peer and whether it is gone, never the
/// ring's bytes.
fn debug_half(f: &mut std::fmt::Formatter<'_>, name: &str, link: &Link, max: usize) -> std::fmt::Result {
    f.debug_struct(name)
        .field("peer_pid", &link.peer_pid())
        .field("peer_gone", &link.gone_flag())
        .field("max_message", &max)
        .finish()
}

impl std::fmt::Debug for SendHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_half(f, "SendHalf", &self.sleeper.link, self.max_message())
    }
}

impl std::fmt::Debug for RecvHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_half(f, "RecvHalf", &self.sleeper.link, self.max_message())
    }
}

/// Fills a reserved record with `msg` (the reservation is exactly `msg.len()` bytes).
fn copy_from(msg: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
    move |buf| {
        buf.copy_from_slice(msg);
        msg.len()
    }
}

/// Copies a message into a caller buffer, or refuses (leaving it queued) when it does not fit.
pub(crate) fn copy_into(buf: &mut [u8]) -> impl FnOnce(&[u8]) -> Result<usize> + '_ {
    move |bytes| {
        if bytes.len() > buf.len() {
            return Err(IpcError::BufferTooSmall { needed: bytes.len(), buf: buf.len() });
        }
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{runtime_is_quiet, RecentWaits, ADAPTIVE_SPIN_MAX, ASYNC_SPIN_MAX_TASKS};

    #[test]
    fn waits_that_usually_end_soon_are_spun_for_and_long_ones_are_not() {
        let base = Duration::from_micros(20);
        let mut recent = RecentWaits::default();
        assert_eq!(recent.spin_budget(base), base, "no history: the base");
        // A 64 KiB exchange: waits of ~30 µs.
        for _ in 0..64 {
            recent.note(Duration::from_micros(30));
        }
        let budget = recent.spin_budget(base);
        assert!(budget > Duration::from_micros(50) && budget <= Duration::from_micros(60), "{budget:?}");
        // One long idle wait does not undo it for long, nor leave it spinning the maximum.
        recent.note(Duration::from_secs(5));
        let after_idle = recent.spin_budget(base);
        assert!(after_idle > budget && after_idle <= ADAPTIVE_SPIN_MAX, "{after_idle:?}");
        // A connection whose waits are long (requests now and then): the base, not a spin that
        // would only burn the CPU before each sleep.
        for _ in 0..64 {
            recent.note(Duration::from_millis(100));
        }
        assert_eq!(recent.spin_budget(base), base);
        // Waits that end at once: the base again (a longer spin buys nothing).
        for _ in 0..64 {
            recent.note(Duration::ZERO);
        }
        assert_eq!(recent.spin_budget(base), base);
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn async_waits_spin_only_while_the_runtime_has_few_tasks() {
        assert!(runtime_is_quiet(), "outside a runtime nothing else waits for the thread");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut tasks: Vec<_> =
                (0..ASYNC_SPIN_MAX_TASKS).map(|_| tokio::spawn(std::future::pending::<()>())).collect();
            assert!(runtime_is_quiet(), "{ASYNC_SPIN_MAX_TASKS} tasks still allow a spin");
            tasks.push(tokio::spawn(std::future::pending::<()>()));
            assert!(!runtime_is_quiet(), "one task more does not");
            for t in &tasks {
                t.abort();
            }
        });
    }
}
