//! Sleeping and waking in one process: the futex where the backend has one ([`HAS_FUTEX`]), and
//! the blocking doorbell sleep ([`sleep_blocking`]) everywhere. (Across processes:
//! `control.rs`; in tokio: `tokio_io.rs`.)
//!
//! A lost wake-up shows as a sleep that lasts its whole [`LONG`] timeout; no test asserts how
//! fast a wake-up is.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{link_pair, LONG};
use crate::platform::{futex_wait, futex_wake, sleep_blocking, Doorbell, HAS_FUTEX};

/// `futex_wait` returns at once when the word no longer holds the expected value. Without a
/// futex, `futex_wake` is a harmless no-op (the layers above call it unconditionally).
#[test]
fn futex_wait_returns_at_once_on_a_changed_value() {
    let word = AtomicU32::new(5);
    if !HAS_FUTEX {
        futex_wake(&word);
        return;
    }
    let start = Instant::now();
    futex_wait(&word, 4, Some(LONG));
    assert!(start.elapsed() < LONG, "futex_wait slept although the value had changed");
}

/// `futex_wake` wakes a thread sleeping on the word.
#[test]
fn futex_wake_wakes_a_sleeper() {
    if !HAS_FUTEX {
        return;
    }
    let word = Arc::new(AtomicU32::new(0));
    let sleeper = {
        let word = word.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            word.store(1, Ordering::SeqCst);
            while word.load(Ordering::SeqCst) == 1 && start.elapsed() < LONG {
                futex_wait(&word, 1, Some(LONG));
            }
            start.elapsed()
        })
    };
    while word.load(Ordering::SeqCst) != 1 {
        std::thread::yield_now();
    }
    // Give the sleeper time to be asleep, so the wake-up is what ends its sleep.
    std::thread::sleep(Duration::from_millis(20));
    word.store(2, Ordering::SeqCst);
    futex_wake(&word);
    assert!(sleeper.join().unwrap() < LONG, "futex_wake did not wake the sleeper");
}

/// A futex sleep with a timeout ends by itself when nobody wakes it.
#[test]
fn futex_wait_times_out() {
    if !HAS_FUTEX {
        return;
    }
    let word = AtomicU32::new(0);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            futex_wait(&word, 0, Some(Duration::from_millis(20)));
            let _ = done.send(());
        });
        assert!(finished.recv_timeout(LONG).is_ok(), "futex_wait ignored its timeout");
    });
}

/// A ring made before the peer sleeps is not lost: the sleep ends at once.
#[test]
fn a_ring_before_the_sleep_is_not_lost() {
    let (link, _peer_link) = link_pair("ring-first");
    let (ours, theirs) = Doorbell::pair().unwrap();
    for _ in 0..3 {
        theirs.ring();
        let start = Instant::now();
        sleep_blocking(&ours, &link, Some(LONG)).unwrap();
        assert!(start.elapsed() < LONG, "a ring made before the sleep was lost");
    }
}

/// A ring wakes a sleeping peer, each time; a sleep nobody rings ends at its timeout without
/// an error (the peer is alive).
#[test]
fn a_ring_wakes_a_blocking_sleeper() {
    let (link, _peer_link) = link_pair("ring-wakes");
    let (ours, theirs) = Doorbell::pair().unwrap();
    assert!(sleep_blocking(&ours, &link, Some(Duration::from_millis(10))).is_ok());
    let rounds = 5;
    let ringer = std::thread::spawn(move || {
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_millis(10));
            theirs.ring();
        }
        theirs
    });
    for round in 0..rounds {
        let start = Instant::now();
        sleep_blocking(&ours, &link, Some(LONG)).unwrap();
        assert!(start.elapsed() < LONG, "ring {round} did not wake the sleeper");
    }
    drop(ringer.join().unwrap());
}

/// Dropping a link is heard by the peer at once: its blocking sleep ends (`Ok`, or `PeerGone`
/// where the backend says so) and its link reports the hang-up.
#[test]
fn a_dropped_link_ends_the_peers_blocking_sleep() {
    let (link, peer_link) = link_pair("link-drop");
    let (ours, _theirs) = Doorbell::pair().unwrap();
    assert!(!link.hung_up());
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(peer_link);
    });
    let start = Instant::now();
    while !link.hung_up() && start.elapsed() < LONG {
        let _ = sleep_blocking(&ours, &link, Some(LONG));
    }
    assert!(start.elapsed() < LONG, "the peer's hang-up did not end the sleep");
    assert!(link.hung_up());
    dropper.join().unwrap();
}
