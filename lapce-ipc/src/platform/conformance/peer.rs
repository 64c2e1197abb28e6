//! [`PeerLink`]: a peer process killed outright (SIGKILL; TerminateProcess on Windows), which
//! closes nothing itself, is heard by a blocking sleeper and by the hang-up watcher where the
//! backend has one ([`HAS_HANGUP_WATCHER`]). (In tokio: `tokio_io.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    assert_name_gone, bind_unique, child_role, deadline, doorbell_from, recv, send, ChildGuard, LONG,
};
use crate::error::Result;
use crate::platform::{
    control_path, sleep_blocking, ControlListener, ControlStream, Doorbell, PeerLink, HAS_HANGUP_WATCHER,
};

const OFFER: u64 = 10;
const READY: u64 = 11;

/// A connected child process, set up and idle: it holds the other end of `bell` and its own
/// link, and sleeps until the parent hangs up (or [`LONG`] passes).
pub(super) struct IdleChild {
    pub(super) child: ChildGuard,
    pub(super) stream: ControlStream,
    pub(super) bell: Doorbell,
    /// The listener the child connected to, and its name: the test drops it and checks the
    /// name is gone.
    pub(super) listener: ControlListener,
    pub(super) name: String,
}

impl IdleChild {
    /// Starts the child of `test` (the caller's full test path), which must call
    /// [`IdleChild::run_child`] first thing.
    pub(super) fn start(test: &str) -> IdleChild {
        let (listener, name) = bind_unique("idle");
        let mut child = ChildGuard::spawn(test, "idle", &name);
        let mut stream = child.accept_on(&listener);
        let (bell, theirs) = Doorbell::pair().unwrap();
        send(&mut stream, OFFER, 0, &theirs.handles()).unwrap();
        drop(theirs);
        recv(&mut stream, READY).unwrap();
        IdleChild { child, stream, bell, listener, name }
    }

    /// The child's part, when this process is one; false in the parent.
    pub(super) fn run_child() -> bool {
        let Some((_, name)) = child_role() else { return false };
        idle(&name).unwrap();
        true
    }
}

fn idle(name: &str) -> Result<()> {
    let mut stream = ControlStream::connect(&control_path(name)?, deadline())?;
    let (_, mut handles) = recv(&mut stream, OFFER)?;
    let bell = doorbell_from(&mut handles);
    send(&mut stream, READY, 0, &[])?;
    let link = PeerLink::new(stream, Box::new(|| {}))?;
    let start = Instant::now();
    while !link.hung_up() && start.elapsed() < LONG {
        let _ = sleep_blocking(&bell, &link, Some(LONG));
    }
    Ok(())
}

/// A killed peer process ends a blocking sleep at once (`Ok`, or `PeerGone` where the backend
/// tells), the link then reports the hang-up, and where the backend has a hang-up watcher the
/// link's callback runs; elsewhere the callback is dropped unrun when the link is made.
#[test]
fn a_killed_peer_ends_a_blocking_sleep() {
    if IdleChild::run_child() {
        return;
    }
    let mut peer = IdleChild::start(concat!(module_path!(), "::a_killed_peer_ends_a_blocking_sleep"));
    let heard = Arc::new(AtomicBool::new(false));
    let told = heard.clone();
    let link = PeerLink::new(peer.stream, Box::new(move || told.store(true, Ordering::SeqCst))).unwrap();
    if !HAS_HANGUP_WATCHER {
        assert_eq!(Arc::strong_count(&heard), 1, "without a watcher the callback is dropped at once");
    }
    assert!(!link.hung_up(), "a live peer counts as hung up");
    // The link stays ours: dropping it would cancel the watch, and with it the callback.
    let (slept, hung_up) = std::thread::scope(|s| {
        let sleeper = s.spawn(|| {
            let start = Instant::now();
            while !link.hung_up() && start.elapsed() < LONG {
                let _ = sleep_blocking(&peer.bell, &link, Some(LONG));
            }
            (start.elapsed(), link.hung_up())
        });
        // Give the sleeper time to be asleep, so the hang-up is what ends its sleep.
        std::thread::sleep(Duration::from_millis(20));
        peer.child.kill();
        sleeper.join().unwrap()
    });
    assert!(hung_up && slept < LONG, "the killed peer was not heard (slept {slept:?})");
    if HAS_HANGUP_WATCHER {
        let start = Instant::now();
        while !heard.load(Ordering::SeqCst) && start.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(heard.load(Ordering::SeqCst), "the hang-up watcher did not run the callback");
    }
    drop(link);
    drop(peer.listener);
    assert_name_gone(&peer.name);
}
