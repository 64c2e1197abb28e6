//! Loom model of the ring protocol: publish, announce-sleep, wake.
//!
//! `src/ring/protocol.rs` is compiled here verbatim against loom's atomics (it only reaches them
//! through `super::atomic`), so the model checks the very code the library runs: the producer
//! and consumer cores with their position arithmetic, padding and validation, and the waiter
//! words. What is modelled around it:
//! - the data area as loom cells, one per 8-byte word, so any read of a record that is not
//!   ordered after its write (a torn or stale record) is reported by loom;
//! - the futex as a mutex + condvar: `wait` compares the word and sleeps under the lock, `wake`
//!   notifies under the same lock, which is exactly the atomicity the kernel gives the syscall
//!   pair. The model has no timeouts, so a lost wake-up shows up as a deadlock.
//!
//! The wait loops mirror `src/channel.rs` (`wait_blocking`) minus its spin phase and liveness
//! slices, which only add re-checks.
//!
//! Not built for Windows: loom drives its executions with panics inside its fiber scheduler,
//! which the windows-gnu unwinder under Wine cannot raise ("failed to initiate panic"). The
//! protocol is the same code on every platform, so the Linux run covers it.
#![cfg(not(windows))]

#[path = "../src/ring/protocol.rs"]
#[allow(dead_code)]
mod protocol;

use crate::common::test_in_caller_file;
use loom::cell::UnsafeCell;
use loom::sync::atomic;
use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};

use protocol::{
    announce_sleep, cancel_sleep, ConsumerCore, DataArea, Padded, ProducerCore, RingHeader, AWAKE,
    SLEEPS_FUTEX,
};

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

fn producer(s: &Shared) {
    let mut core = ProducerCore::new(CAP, 0, 0).unwrap();
    for (i, &len) in LENS.iter().enumerate() {
        let r = loop {
            if let Some(r) = core.reserve(&s.header, len).unwrap() {
                break r;
            }
            announce_sleep(&s.header.space_waiter.0, SLEEPS_FUTEX);
            if core.reserve(&s.header, len).unwrap().is_some() {
                cancel_sleep(&s.header.space_waiter.0);
                continue;
            }
            s.space_futex.wait(&s.header.space_waiter.0, SLEEPS_FUTEX);
            cancel_sleep(&s.header.space_waiter.0);
        };
        s.data.write_payload(r.payload_off, len, i as u8 + 1);
        if core.commit(&s.header, &s.data, len) != AWAKE {
            s.data_futex.wake();
        }
    }
}

/// `recheck`: whether the consumer re-checks the ring between announcing and sleeping. Without
/// it the protocol is broken, and the model must find the lost wake-up.
fn consumer(s: &Shared, recheck: bool) {
    let mut core = ConsumerCore::new(CAP, 0, 0).unwrap();
    for (i, &len) in LENS.iter().enumerate() {
        loop {
            if let Some((off, got)) = core.peek(&s.header, &s.data).unwrap() {
                assert_eq!(got, len, "record {i} has the wrong length");
                s.data.check_payload(off, len, i as u8 + 1);
                if core.release(&s.header) != AWAKE {
                    s.space_futex.wake();
                }
                break;
            }
            announce_sleep(&s.header.data_waiter.0, SLEEPS_FUTEX);
            if recheck && core.peek(&s.header, &s.data).unwrap().is_some() {
                cancel_sleep(&s.header.data_waiter.0);
                continue;
            }
            s.data_futex.wait(&s.header.data_waiter.0, SLEEPS_FUTEX);
            cancel_sleep(&s.header.data_waiter.0);
        }
    }
    assert_eq!(core.peek(&s.header, &s.data).unwrap(), None, "nothing beyond the sent records");
}

fn model(recheck: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let s = shared();
        let p = {
            let s = s.clone();
            loom::thread::spawn(move || producer(&s))
        };
        consumer(&s, recheck);
        p.join().unwrap();
    });
}

#[test]
fn no_lost_wakeup_no_torn_record() {
    model(true);
}

/// Shows the model has teeth: the same consumer without its re-check loses a wake-up, which
/// loom reports as a deadlock. Run in a child process because loom aborts on that failure.
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
    assert!(
        !out.status.success(),
        "loom did not find the lost wake-up of a consumer that skips its re-check"
    );
    assert!(stderr.contains("deadlock"), "failed for another reason than a lost wake-up:\n{stderr}");
}

#[test]
#[ignore = "run by model_finds_the_lost_wakeup_of_a_broken_waiter in a child process"]
fn broken_waiter_model() {
    if std::env::var_os("LAPCE_IPC_LOOM_BROKEN").is_some() {
        model(false);
    }
}
