//! Loom model of the ring protocol and the blocking wait: publish, announce-sleep, wake.
//!
//! Two files of the library are compiled here verbatim against loom, so the model checks the very
//! code the library runs:
//! - `src/ring/protocol.rs` (it reaches atomics only through `super::atomic`): the producer and
//!   consumer cores with their position arithmetic, padding and validation, and the waiter words;
//! - `src/channel/wait.rs`, the blocking wait of a ring half (spin, announce, re-check, sleep),
//!   which reaches everything outside itself through `super::sync` (here the [`sync`] module
//!   below: loom's atomics and scheduler hints) and the `Waitable` and `Sleep` traits (here the
//!   model's halves). The model waits with the `Blocking` strategy, one ring check per spin
//!   round (each check is a step loom explores; the clock means nothing here), no deadline, and
//!   a peer that never goes: the spin phase and the liveness checks only add re-checks.
//!
//! What is modelled around them:
//! - the data area as loom cells, one per 8-byte word, so any read of a record that is not
//!   ordered after its write (a torn or stale record) is reported by loom;
//! - the futex as a mutex + condvar: `wait` compares the word and sleeps under the lock, `wake`
//!   notifies under the same lock, which is exactly the atomicity the kernel gives the syscall
//!   pair. The model has no timeouts, so a lost wake-up shows up as a deadlock.
//!
//! Not built for Windows: loom drives its executions with panics inside its fiber scheduler,
//! which the windows-gnu unwinder under Wine cannot raise ("failed to initiate panic"). The
//! protocol and the wait are the same code on every platform, so the Linux run covers them.
#![cfg(not(windows))]

#[path = "../src/ring/protocol.rs"]
#[allow(dead_code)]
mod protocol;

#[path = "../src/channel/wait.rs"]
#[allow(dead_code)]
mod wait;

/// What `wait.rs` reaches outside itself: the library's `src/channel/sync.rs`, for the model.
mod sync {
    pub use super::protocol::{announce_sleep, cancel_sleep, SLEEPS_DOORBELL, SLEEPS_FUTEX};
    pub use loom::hint::spin_loop;
    pub use loom::sync::atomic::AtomicU32;
    pub use loom::thread::yield_now;
    pub use std::time::{Duration, Instant};

    /// The model's sleeps are on its futex; its peer never goes, so nothing needs probing.
    pub const HAS_FUTEX: bool = true;
    pub const HAS_HANGUP_WATCHER: bool = true;

    /// The outcomes of a wait other than success (neither happens in the model).
    #[derive(Debug)]
    pub enum IpcError {
        PeerGone,
        Timeout,
    }

    pub type Result<T> = std::result::Result<T, IpcError>;
}

use crate::common::test_in_caller_file;
use loom::cell::UnsafeCell;
use loom::sync::atomic;
use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};

use protocol::{ConsumerCore, DataArea, Padded, ProducerCore, RingHeader, AWAKE, SLEEPS_FUTEX};
use wait::{wait_blocking, RecentWaits, Sleep, WaitStrategy, Waitable};

/// A 64-byte ring: records of up to 24 payload bytes, so a few messages wrap and fill it.
const CAP: u64 = 64;
/// Payload lengths sent in the model: 32 + 16 + (16 padding + 32) bytes of ring: the third
/// message must wait for room and is preceded by a padding record.
const LENS: [usize; 5] = [24, 8, 24, 0, 16];

struct Data {
    words: Vec<UnsafeCell<u64>>,
}

impl Data {
    fn new() -> Data {
        Data { words: (0..CAP / 8).map(|_| UnsafeCell::new(0)).collect() }
    }

    fn write_payload(&self, off: usize, len: usize, fill: u8) {
        for w in 0..len.div_ceil(8) {
            self.words[off / 8 + w].with_mut(|p| unsafe { *p = u64::from_ne_bytes([fill; 8]) });
        }
    }

    fn check_payload(&self, off: usize, len: usize, fill: u8) {
        for w in 0..len.div_ceil(8) {
            let v = self.words[off / 8 + w].with(|p| unsafe { *p });
            assert_eq!(v, u64::from_ne_bytes([fill; 8]), "torn or stale payload");
        }
    }
}

impl DataArea for Data {
    fn write_header(&self, off: usize, len: u32, kind: u32) {
        self.words[off / 8].with_mut(|p| unsafe { *p = u64::from(len) | (u64::from(kind) << 32) });
    }

    fn read_header(&self, off: usize) -> (u32, u32) {
        let v = self.words[off / 8].with(|p| unsafe { *p });
        (v as u32, (v >> 32) as u32)
    }
}

/// The futex: compare-and-sleep and wake are atomic with respect to each other.
struct Futex {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Futex {
    fn new() -> Futex {
        Futex { lock: Mutex::new(()), cv: Condvar::new() }
    }

    fn wait(&self, word: &AtomicU32, expected: u32) {
        let guard = self.lock.lock().unwrap();
        if word.load(atomic::Ordering::SeqCst) == expected {
            drop(self.cv.wait(guard).unwrap());
        }
    }

    fn wake(&self) {
        let _guard = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
}

struct Shared {
    header: RingHeader,
    data: Data,
    data_futex: Futex,
    space_futex: Futex,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        header: RingHeader {
            magic: Padded(AtomicU64::new(protocol::RING_MAGIC)),
            capacity: Padded(AtomicU64::new(CAP)),
            write_pos: Padded(AtomicU64::new(0)),
            read_pos: Padded(AtomicU64::new(0)),
            data_waiter: Padded(AtomicU32::new(AWAKE)),
            space_waiter: Padded(AtomicU32::new(AWAKE)),
        },
        data: Data::new(),
        data_futex: Futex::new(),
        space_futex: Futex::new(),
    })
}

/// The model's sleeper: blocking strategy, a peer that never goes.
#[derive(Default)]
struct ModelSleeper {
    recent: RecentWaits,
}

impl Sleep for ModelSleeper {
    fn strategy(&self) -> WaitStrategy {
        WaitStrategy::Blocking
    }
    fn recent(&mut self) -> &mut RecentWaits {
        &mut self.recent
    }
    fn gone_flag(&self) -> bool {
        false
    }
    fn peer_gone(&self) -> bool {
        false
    }
    fn gone_before_sleep(&self) -> bool {
        false
    }
    fn remember(&self, slept: sync::Result<()>) -> sync::Result<()> {
        slept
    }
}

/// The sending half: waits for room on the space word, like the library's `SendHalf`.
struct Sender<'a> {
    s: &'a Shared,
    core: ProducerCore,
    sleeper: ModelSleeper,
}

impl Waitable for Sender<'_> {
    type Sleeper = ModelSleeper;
    const SPIN_CHECKS: u32 = 1;
    fn ready(&mut self, len: usize) -> sync::Result<bool> {
        let ready = self.core.reserve(&self.s.header, len).unwrap().is_some();
        self.core.abort();
        Ok(ready)
    }
    fn word(&self) -> &AtomicU32 {
        &self.s.header.space_waiter.0
    }
    fn sleeper(&mut self) -> &mut ModelSleeper {
        &mut self.sleeper
    }
    fn sleep(&mut self, timeout: Option<sync::Duration>) -> sync::Result<()> {
        assert!(timeout.is_none(), "the model has no deadlines");
        self.s.space_futex.wait(self.word(), SLEEPS_FUTEX);
        Ok(())
    }
}

/// The receiving half: waits for data on the data word, like the library's `RecvHalf`.
/// `blind`: a broken waiter that finds the ring empty whenever its sleep is announced, i.e. one
/// that skips the re-check between announcing and sleeping.
struct Receiver<'a> {
    s: &'a Shared,
    core: ConsumerCore,
    sleeper: ModelSleeper,
    blind: bool,
}

impl Waitable for Receiver<'_> {
    type Sleeper = ModelSleeper;
    const SPIN_CHECKS: u32 = 1;
    fn ready(&mut self, _len: usize) -> sync::Result<bool> {
        if self.blind && self.word().load(atomic::Ordering::SeqCst) != AWAKE {
            return Ok(false);
        }
        Ok(self.core.peek(&self.s.header, &self.s.data).unwrap().is_some())
    }
    fn word(&self) -> &AtomicU32 {
        &self.s.header.data_waiter.0
    }
    fn sleeper(&mut self) -> &mut ModelSleeper {
        &mut self.sleeper
    }
    fn sleep(&mut self, timeout: Option<sync::Duration>) -> sync::Result<()> {
        assert!(timeout.is_none(), "the model has no deadlines");
        self.s.data_futex.wait(self.word(), SLEEPS_FUTEX);
        Ok(())
    }
}

/// Sends [`LENS`] as the library's `send_with` does: wait for room, reserve, write, commit, wake.
fn producer(s: &Shared) {
    let mut tx = Sender { s, core: ProducerCore::new(CAP, 0, 0).unwrap(), sleeper: ModelSleeper::default() };
    for (i, &len) in LENS.iter().enumerate() {
        wait_blocking(&mut tx, len, None).unwrap();
        let r = tx.core.reserve(&s.header, len).unwrap().expect("room was just observed");
        s.data.write_payload(r.payload_off, len, i as u8 + 1);
        if tx.core.commit(&s.header, &s.data, len) != AWAKE {
            s.data_futex.wake();
        }
    }
}

/// Receives [`LENS`] as the library's `recv_with` does: wait for a record, check it, release it,
/// wake. `blind`: see [`Receiver`].
fn consumer(s: &Shared, blind: bool) {
    let core = ConsumerCore::new(CAP, 0, 0).unwrap();
    let mut rx = Receiver { s, core, sleeper: ModelSleeper::default(), blind };
    for (i, &len) in LENS.iter().enumerate() {
        wait_blocking(&mut rx, 0, None).unwrap();
        let (off, got) = rx.core.peek(&s.header, &s.data).unwrap().expect("a record was just observed");
        assert_eq!(got, len, "record {i} has the wrong length");
        s.data.check_payload(off, len, i as u8 + 1);
        if rx.core.release(&s.header) != AWAKE {
            s.space_futex.wake();
        }
    }
    assert_eq!(rx.core.peek(&s.header, &s.data).unwrap(), None, "nothing beyond the sent records");
}

fn model(blind: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let s = shared();
        let p = {
            let s = s.clone();
            loom::thread::spawn(move || producer(&s))
        };
        consumer(&s, blind);
        p.join().unwrap();
    });
}

#[test]
fn no_lost_wakeup_no_torn_record() {
    model(false);
}

/// Shows the model has teeth: a consumer blind to the ring while its sleep is announced (as if
/// the wait skipped its re-check) loses a wake-up, which loom reports as a deadlock. Run in a
/// child process because loom aborts on that failure.
#[test]
fn model_finds_the_lost_wakeup_of_a_broken_waiter() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            &test_in_caller_file("broken_waiter_model"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LAPCE_IPC_LOOM_BROKEN", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "loom did not find the lost wake-up of a consumer blind to its re-check");
    assert!(stderr.contains("deadlock"), "failed for another reason than a lost wake-up:\n{stderr}");
}

#[test]
#[ignore = "run by model_finds_the_lost_wakeup_of_a_broken_waiter in a child process"]
fn broken_waiter_model() {
    if std::env::var_os("LAPCE_IPC_LOOM_BROKEN").is_some() {
        model(true);
    }
}
