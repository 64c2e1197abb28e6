//! The warm pool of a listener: connection segments (with both ends of their two doorbells) made
//! ahead of time by a background thread, so that accepting a client creates nothing, and the
//! slot count that bounds how many segments exist at once.
//!
//! - A *slot* is one connection's claim on a segment. [`SegmentPool::claim`] takes a warm
//!   segment (or, when the pool ran dry, makes one on the spot: a *miss*) and a [`Slot`]; the
//!   slot goes with the connection and is given back when both halves of the stream are dropped
//!   (closed by us, or the peer hung up or died), which wakes the refiller.
//! - Segments are never handed to a second client: a former peer may still have the old one
//!   mapped (it closed the connection but kept the memory, or passed it on), so reusing it would
//!   let that process write into a stranger's rings. What is reused is the slot; its segment is
//!   freed by the kernel when the last process lets go, and a fresh one is made in the
//!   background.
//! - The pool holds `target` warm segments, at most `max_slots - in_use`. `target` starts at the
//!   configured warm size; a claim that finds the pool empty doubles it (up to `max_slots`), so a
//!   burst of clients is soon served warm; once no claim has found the pool empty for
//!   [`SHRINK_AFTER`], it drops back to the configured size and the extra segments are freed.
//!   The first fill after the listener binds does not count: a client connecting at once (an
//!   editor starting its engine) finds the pool still filling, which is no burst, and doubling
//!   then would hold twice the warm descriptors for [`SHRINK_AFTER`].
//! - Warm segments cost file descriptors (the segment and four doorbell ends on Unix) but almost
//!   no memory: the rings are only written (their headers initialised) when a client claims
//!   them. So all the pools of a process together keep at most a quarter of its open-file limit
//!   in warm segments (see [`WarmBudget`]): under a soft limit of 1024 that is 51 segments, and
//!   the rest of the descriptors stay free for connections (claims beyond the warm ones make
//!   their segment on the spot).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{IpcError, Result};
use crate::platform::{Doorbell, OsHandle, Segment};

/// How long without the pool running dry before a grown pool shrinks back to its warm size.
pub(crate) const SHRINK_AFTER: Duration = Duration::from_secs(30);

/// Handles one warm segment holds: the segment and both ends of its two doorbells (five
/// descriptors on Unix).
const HANDLES_PER_SEGMENT: usize = 1 + 2 * 2 * crate::platform::DOORBELL_HANDLES;

/// The share of the open-file limit all warm pools of a process may hold together.
const WARM_SHARE_OF_LIMIT: usize = 4;

/// A budget of warm segments shared by pools: the process's one (see [`PROCESS_BUDGET`]) or,
/// in tests, one of their own.
pub(crate) struct WarmBudget {
    /// Warm segments held now by the pools sharing this budget.
    used: AtomicUsize,
    /// How many they may hold (read at each reservation: the limit may change at run time).
    limit: fn() -> usize,
}

/// The budget all pools of the process share: a quarter of the open-file limit. Without it, a
/// process at the usual soft limit of 1024 descriptors with two listeners (or a test binary
/// binding one per test) would spend every descriptor on segments nobody asked for yet, and
/// its next `accept`, `connect` or file open would fail with EMFILE.
static PROCESS_BUDGET: WarmBudget = WarmBudget { used: AtomicUsize::new(0), limit: process_limit };

fn process_limit() -> usize {
    crate::platform::handle_limit().map_or(usize::MAX, |n| n / WARM_SHARE_OF_LIMIT / HANDLES_PER_SEGMENT)
}

impl WarmBudget {
    /// Reserves room for one more warm segment; false when the budget is spent.
    fn reserve(&self) -> bool {
        let limit = (self.limit)();
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    /// Gives back `n` reservations (segments claimed, freed, or never made).
    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A segment and the doorbells of one connection, not yet handed to anyone.
pub(crate) struct Prepared {
    pub(crate) segment: Segment,
    /// The segment's handle, to send to the client.
    pub(crate) handle: OsHandle,
    /// `(server end, client end)` of the client→server and the server→client ring's doorbell.
    pub(crate) bells: [(Doorbell, Doorbell); 2],
}

impl Prepared {
    fn new(segment_len: usize) -> Result<Prepared> {
        let (segment, handle) = Segment::create("lapce-ipc", segment_len)?;
        Ok(Prepared { segment, handle, bells: [Doorbell::pair()?, Doorbell::pair()?] })
    }
}

/// What the pool holds and has done, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Segments made ready and not yet claimed.
    pub warm: usize,
    /// Slots held by connections now.
    pub in_use: usize,
    /// Most slots at once (`max_slots`).
    pub max_slots: usize,
    /// How many warm segments the pool aims at now (grows under bursts, shrinks when quiet).
    pub target: usize,
    /// Slots claimed so far.
    pub claims: u64,
    /// Claims that found the pool empty and made their segment on the spot.
    pub misses: u64,
    /// Claims refused because every slot was in use.
    pub exhausted: u64,
    /// Slots given back so far (connections closed, or whose peer hung up or died).
    pub released: u64,
}

struct State {
    warm: Vec<Prepared>,
    in_use: usize,
    target: usize,
    /// When a claim last found the pool empty.
    last_dry: Instant,
    /// The refiller has caught up once (filled to its target, or to what the budget allows);
    /// before that an empty pool is the first fill, not a burst.
    settled: bool,
    /// The listener is gone: the refiller stops, warm segments are freed.
    closed: bool,
}

struct Shared {
    segment_len: usize,
    base: usize,
    budget: &'static WarmBudget,
    max_slots: usize,
    shrink_after: Duration,
    state: Mutex<State>,
    /// Wakes the refiller (a claim, a release, the listener closing).
    refill: Condvar,
    claims: AtomicU64,
    misses: AtomicU64,
    exhausted: AtomicU64,
    released: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many warm segments the refiller should keep now.
    fn wanted(&self, s: &State) -> usize {
        s.target.min(self.max_slots.saturating_sub(s.in_use))
    }
}

/// A listener's warm pool (see the module docs). Dropping it stops the refiller (and waits for
/// it) and frees the warm segments; slots still held keep working.
pub(crate) struct SegmentPool {
    shared: Arc<Shared>,
    /// Joined on drop: a process that exits right after dropping its listener must not kill the
    /// refiller mid-segment (the POSIX backend names a segment between `shm_open` and
    /// `shm_unlink`, so that would leave the name in /dev/shm).
    refiller: Option<std::thread::JoinHandle<()>>,
}

/// One connection's claim on the pool; given back on drop.
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.lock().in_use -= 1;
        self.shared.released.fetch_add(1, Ordering::Relaxed);
        self.shared.refill.notify_one();
    }
}

impl SegmentPool {
    /// A pool of segments of `segment_len` bytes keeping `warm` of them ready (refilled by a
    /// background thread), with at most `max_slots` claimed at once.
    pub(crate) fn new(segment_len: usize, warm: usize, max_slots: usize) -> Result<SegmentPool> {
        Self::with_budget(segment_len, warm, max_slots, SHRINK_AFTER, &PROCESS_BUDGET)
    }

    /// The pool of a listener with `config`: its warm size, slots and ring capacity.
    pub(crate) fn for_config(config: &super::StreamConfig) -> Result<SegmentPool> {
        Self::new(super::handshake::segment_len(config.ring_capacity), config.warm_pool, config.max_slots)
    }

    /// A pool that shrinks after `shrink_after` and keeps its warm segments within `budget`.
    fn with_budget(
        segment_len: usize,
        warm: usize,
        max_slots: usize,
        shrink_after: Duration,
        budget: &'static WarmBudget,
    ) -> Result<SegmentPool> {
        if max_slots == 0 || warm > max_slots {
            return Err(IpcError::InvalidArgument(format!(
                "warm pool of {warm} segments with {max_slots} slots: need 1 <= max_slots and warm <= max_slots"
            )));
        }
        let shared = Arc::new(Shared {
            segment_len,
            base: warm,
            budget,
            max_slots,
            shrink_after,
            state: Mutex::new(State {
                warm: Vec::with_capacity(warm),
                in_use: 0,
                target: warm,
                last_dry: Instant::now(),
                settled: false,
                closed: false,
            }),
            refill: Condvar::new(),
            claims: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            released: AtomicU64::new(0),
        });
        let refiller = shared.clone();
        let refiller =
            std::thread::Builder::new().name("lapce-ipc-pool".into()).spawn(move || refill(&refiller))?;
        Ok(SegmentPool { shared, refiller: Some(refiller) })
    }

    /// A segment for a new connection and its slot. Refused (a client error: the caller refuses
    /// that client and goes on) when all `max_slots` slots are in use.
    pub(crate) fn claim(&self) -> Result<(Prepared, Slot)> {
        let sh = &self.shared;
        let mut s = sh.lock();
        if s.in_use >= sh.max_slots {
            drop(s);
            sh.exhausted.fetch_add(1, Ordering::Relaxed);
            return Err(IpcError::ServerRefused(format!(
                "the listener is at its limit of {} connection slots",
                sh.max_slots
            )));
        }
        s.in_use += 1;
        let slot = Slot { shared: sh.clone() };
        let warm = s.warm.pop();
        if warm.is_some() {
            sh.budget.release(1);
        }
        if s.warm.is_empty() && sh.base > 0 && s.settled {
            // A burst: keep more ready next time (the refiller resets this when it is quiet).
            s.target = (s.target.max(1) * 2).min(sh.max_slots);
            s.last_dry = Instant::now();
        }
        drop(s);
        sh.claims.fetch_add(1, Ordering::Relaxed);
        sh.refill.notify_one();
        let prepared = match warm {
            Some(p) => p,
            None => {
                sh.misses.fetch_add(1, Ordering::Relaxed);
                Prepared::new(sh.segment_len)?
            }
        };
        Ok((prepared, slot))
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let sh = &self.shared;
        let s = sh.lock();
        PoolStats {
            warm: s.warm.len(),
            in_use: s.in_use,
            max_slots: sh.max_slots,
            target: s.target,
            claims: sh.claims.load(Ordering::Relaxed),
            misses: sh.misses.load(Ordering::Relaxed),
            exhausted: sh.exhausted.load(Ordering::Relaxed),
            released: sh.released.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SegmentPool {
    fn drop(&mut self) {
        let warm = {
            let mut s = self.shared.lock();
            s.closed = true;
            std::mem::take(&mut s.warm)
        };
        self.shared.refill.notify_one();
        self.shared.budget.release(warm.len());
        drop(warm);
        // At most one segment in the making: the refiller sees `closed` once it has the lock.
        if let Some(refiller) = self.refiller.take() {
            let _ = refiller.join();
        }
    }
}

/// The refiller thread: keeps [`Shared::wanted`] segments warm, shrinks a grown pool back when
/// it has been quiet, and sleeps (no CPU) in between.
fn refill(sh: &Shared) {
    let mut s = sh.lock();
    loop {
        if s.closed {
            return;
        }
        if s.target > sh.base && s.last_dry.elapsed() >= sh.shrink_after {
            s.target = sh.base;
        }
        let wanted = sh.wanted(&s);
        // Below target and within the process's budget (when the budget is spent, by this
        // pool or others, the pool waits like a full one: its next claim or release looks again).
        if s.warm.len() < wanted && sh.budget.reserve() {
            // Made without the lock, so claims never wait for the refiller.
            drop(s);
            let made = Prepared::new(sh.segment_len);
            s = sh.lock();
            match made {
                Ok(p) if !s.closed => s.warm.push(p),
                Ok(_) => sh.budget.release(1),
                Err(e) => {
                    sh.budget.release(1);
                    // Out of descriptors or memory: claims make their own (and fail if they
                    // must); try again later rather than spin.
                    tracing::warn!(error = %e, "warm pool: could not prepare a segment");
                    s = sh
                        .refill
                        .wait_timeout(s, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            continue;
        }
        if s.warm.len() > wanted {
            let extra = s.warm.split_off(wanted);
            sh.budget.release(extra.len());
            drop(s);
            drop(extra);
            s = sh.lock();
            continue;
        }
        // Full (or out of budget): sleep until a claim or release, or until a grown pool may
        // shrink.
        s.settled = true;
        let timeout = if s.target > sh.base {
            sh.shrink_after.saturating_sub(s.last_dry.elapsed()).max(Duration::from_millis(1))
        } else {
            Duration::from_secs(3600)
        };
        s = sh.refill.wait_timeout(s, timeout).unwrap_or_else(|p| p.into_inner()).0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(pool: &SegmentPool, what: &str, ok: impl Fn(&PoolStats) -> bool) -> PoolStats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = pool.stats();
            if ok(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{what}: pool stuck at {st:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A connection segment with the smallest rings.
    const LEN: usize = 4096 + 2 * 4096;

    /// A budget of its own for each test that counts warm segments, so that pools of other tests
    /// running at the same time (and the process's open-file limit) cannot change the counts.
    macro_rules! own_budget {
        ($limit:expr) => {{
            static BUDGET: WarmBudget = WarmBudget { used: AtomicUsize::new(0), limit: || $limit };
            &BUDGET
        }};
    }

    fn pool(warm: usize, max_slots: usize, budget: &'static WarmBudget) -> SegmentPool {
        SegmentPool::with_budget(LEN, warm, max_slots, SHRINK_AFTER, budget).unwrap()
    }

    #[test]
    fn fills_to_its_warm_size_and_refills_after_claims() {
        let pool = pool(4, 16, own_budget!(usize::MAX));
        wait_for(&pool, "initial fill", |s| s.warm == 4);
        let (p, slot) = pool.claim().unwrap();
        assert_eq!(p.segment.len(), LEN);
        let st = wait_for(&pool, "refill", |s| s.warm == 4);
        assert_eq!((st.in_use, st.claims, st.misses), (1, 1, 0));
        drop(slot);
        let st = wait_for(&pool, "release", |s| s.in_use == 0);
        assert_eq!(st.released, 1);
    }

    /// A claim while the pool is still making its first segments finds it empty without a burst:
    /// the target stays (an immediate claim finds at most one segment made, so before this rule
    /// it nearly always doubled).
    #[test]
    fn a_claim_during_the_first_fill_does_not_grow_the_pool() {
        let pool = pool(4, 16, own_budget!(usize::MAX));
        let (_p, _slot) = pool.claim().unwrap();
        assert_eq!(pool.stats().target, 4);
        let st = wait_for(&pool, "first fill", |s| s.warm == 4);
        assert_eq!((st.target, st.in_use), (4, 1));
    }

    #[test]
    fn grows_under_a_burst_and_shrinks_back_when_quiet() {
        let budget = own_budget!(usize::MAX);
        let pool = SegmentPool::with_budget(LEN, 2, 12, Duration::from_millis(300), budget).unwrap();
        wait_for(&pool, "initial fill", |s| s.warm == 2);
        // Claim faster than the refiller can follow: the pool runs dry and grows.
        let slots: Vec<_> = (0..6).map(|_| pool.claim().unwrap()).collect();
        let st = pool.stats();
        assert!(st.target > 2, "a dry pool should aim higher: {st:?}");
        let st = wait_for(&pool, "grown fill", |s| s.warm == s.target.min(12 - 6));
        assert!(st.warm > 2, "{st:?}");
        // Quiet: back to its warm size, extra segments freed.
        let st = wait_for(&pool, "shrink", |s| s.target == 2 && s.warm == 2);
        assert_eq!(st.in_use, 6);
        drop(slots);
        wait_for(&pool, "release", |s| s.in_use == 0 && s.released == 6);
    }

    #[test]
    fn refuses_claims_beyond_max_slots_and_reuses_released_slots() {
        let pool = pool(1, 3, own_budget!(usize::MAX));
        let mut held: Vec<_> = (0..3).map(|_| pool.claim().unwrap()).collect();
        let err = pool.claim().err().expect("a fourth claim must be refused");
        assert!(err.to_string().contains("limit of 3 connection slots"), "{err}");
        // Never more warm segments than free slots.
        assert_eq!(pool.stats().warm, 0);
        drop(held.pop());
        wait_for(&pool, "slot freed", |s| s.in_use == 2);
        let _again = pool.claim().expect("a freed slot is claimed again");
        let st = pool.stats();
        assert_eq!((st.claims, st.exhausted, st.in_use), (4, 1, 3));
    }

    #[test]
    fn a_zero_warm_pool_makes_segments_on_demand() {
        let pool = pool(0, 2, own_budget!(usize::MAX));
        let (_p, _slot) = pool.claim().unwrap();
        let st = pool.stats();
        assert_eq!((st.misses, st.target, st.warm), (1, 0, 0));
    }

    /// Two pools sharing a budget of 5 hold 5 warm segments between them, whatever their own
    /// targets; claims beyond that still succeed (made on the spot), and the budget a pool
    /// gives back (by a claim, or by closing) lets the other one fill.
    #[test]
    fn pools_sharing_a_budget_keep_within_it() {
        let budget = own_budget!(5);
        let a = pool(4, 16, budget);
        let b = pool(4, 16, budget);
        let total = || a.stats().warm + b.stats().warm;
        let deadline = Instant::now() + Duration::from_secs(10);
        while total() < 5 {
            assert!(Instant::now() < deadline, "stuck at {} warm", total());
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(total(), 5, "{:?} {:?}", a.stats(), b.stats());
        assert_eq!(budget.used.load(Ordering::Relaxed), 5);
        // Seven claims on a pool holding at most 4 warm all succeed (the rest are made on the
        // spot, or by the refiller as claims give budget back).
        let held: Vec<_> = (0..7).map(|_| a.claim().unwrap()).collect();
        assert_eq!(a.stats().in_use, 7);
        // `a` gave its reservations back and may take them again: still 5 warm in all.
        std::thread::sleep(Duration::from_millis(50));
        assert!(total() <= 5, "{:?} {:?}", a.stats(), b.stats());
        // Closing `a` hands its budget to `b`, which fills to its own size at its next claim.
        drop(a);
        drop(held);
        // (Its target is 4, or 8 if that claim emptied it.)
        drop(b.claim().unwrap());
        let st = wait_for(&b, "b fills once a is gone", |s| s.warm == s.target.min(5));
        assert_eq!(budget.used.load(Ordering::Relaxed), st.warm);
        drop(b);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0, "closing gives every reservation back");
    }

    /// The process budget is a quarter of the open-file limit, in segments of five descriptors
    /// (the segment and four doorbell ends), which is what a warm segment really holds.
    #[cfg(unix)]
    #[test]
    fn the_process_budget_follows_the_open_file_limit() {
        let limit = crate::platform::handle_limit();
        assert_eq!(process_limit(), limit.map_or(usize::MAX, |n| n / 4 / 5));
        assert_eq!(HANDLES_PER_SEGMENT, {
            let p = Prepared::new(LEN).unwrap();
            let before = crate::platform::open_handles().unwrap();
            drop(p);
            before - crate::platform::open_handles().unwrap()
        });
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        assert!(SegmentPool::new(LEN, 2, 0).is_err());
        assert!(SegmentPool::new(LEN, 5, 4).is_err());
    }
}
