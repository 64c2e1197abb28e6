//! The tokio flavours: [`AsyncControlListener`] / [`AsyncControlStream`], the async doorbell
//! sleep ([`poll_sleep`]) and [`AsyncHangupWatch`], in one process and against a killed child.

use std::future::{poll_fn, Future};
use std::time::{Duration, Instant};

use super::peer::IdleChild;
use super::{assert_name_gone, fill, link_pair, mismatch, unique_name, LONG, MSG_LEN};
use crate::error::IpcError;
use crate::platform::{
    borrow_handle, control_path, current_pid, poll_sleep, sleep_blocking, AsyncControlStream,
    AsyncHangupWatch, ControlListener, Doorbell, PeerLink, Segment,
};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// `future` within [`LONG`]; panics with `what` otherwise.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LONG, future).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not happen within {LONG:?}"),
    }
}

/// The async listener accepts the async client; each sees the other's pid; a message carries
/// a segment the other side maps with the sender's bytes; the connection becomes a link.
#[test]
fn async_control_streams_carry_handles() {
    let name = unique_name("async");
    block_on(async {
        let listener =
            ControlListener::bind(control_path(&name).unwrap(), &[]).unwrap().into_async().unwrap();
        let path = control_path(&name).unwrap();
        let (accepted, client) = tokio::join!(listener.accept(), AsyncControlStream::connect(&path));
        let (mut server, mut client) = (accepted.unwrap().stream, client.unwrap());
        assert_eq!(server.check_peer(&[]).unwrap(), current_pid());
        assert_eq!(client.check_peer(&[]).unwrap(), current_pid());

        let (seg, handle) = Segment::create("conformance", 4096).unwrap();
        fill(&seg, 0, 4096, 5);
        let msg = [9u8; MSG_LEN];
        client.write_all(&msg, &[borrow_handle(&handle)]).await.unwrap();
        let mut got = [0u8; MSG_LEN];
        let handles = within("the async read", server.read_exact(&mut got)).await.unwrap();
        assert_eq!((got, handles.len()), (msg, 1));
        assert_eq!(mismatch(&Segment::open(borrow_handle(&handles[0]), 4096).unwrap(), 0, 4096, 5), None);

        let link = PeerLink::new(server.into_blocking().unwrap(), Box::new(|| {})).unwrap();
        drop(client);
        let watch = AsyncHangupWatch::new(&link).unwrap();
        within("the closed client's hang-up", watch.hung_up()).await.unwrap();
        drop(listener);
    });
    assert_name_gone(&name);
}

/// An async sleep ends at a ring made before it and at a ring made while it sleeps.
#[test]
fn a_ring_wakes_an_async_sleeper() {
    let (link, _peer_link) = link_pair("async-ring");
    let (mut ours, theirs) = Doorbell::pair().unwrap();
    block_on(async {
        theirs.ring();
        within("a ring made before the sleep", poll_fn(|cx| poll_sleep(&mut ours, &link, cx))).await.unwrap();
        for round in 0..5 {
            let ring = async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                theirs.ring();
            };
            let sleep = within("a ring during the sleep", poll_fn(|cx| poll_sleep(&mut ours, &link, cx)));
            let (woke, ()) = tokio::join!(sleep, ring);
            assert!(woke.is_ok(), "round {round}: {woke:?}");
        }
    });
}

/// A doorbell an async sleep has used still wakes a blocking sleep (the two halves of a
/// connection may wait either way): at a ring made before it and at one made during it.
#[test]
fn a_blocking_sleep_after_an_async_one_still_wakes() {
    let (link, _peer_link) = link_pair("mixed");
    let (mut ours, theirs) = Doorbell::pair().unwrap();
    theirs.ring();
    block_on(within("a ring", poll_fn(|cx| poll_sleep(&mut ours, &link, cx)))).unwrap();
    theirs.ring();
    let start = Instant::now();
    sleep_blocking(&ours, &link, Some(LONG)).unwrap();
    assert!(start.elapsed() < LONG, "a ring before the blocking sleep was lost");
    let ringer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        theirs.ring();
        theirs
    });
    let start = Instant::now();
    sleep_blocking(&ours, &link, Some(LONG)).unwrap();
    assert!(start.elapsed() < LONG, "a ring during the blocking sleep was lost");
    drop(ringer.join().unwrap());
}

/// A dropped link is heard by the peer's async hang-up watch.
#[test]
fn a_dropped_link_is_heard_by_an_async_watch() {
    let (link, peer_link) = link_pair("async-drop");
    block_on(async {
        let watch = AsyncHangupWatch::new(&link).unwrap();
        let drop_later = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(peer_link);
        };
        let (heard, ()) = tokio::join!(within("the peer's hang-up", watch.hung_up()), drop_later);
        heard.unwrap();
    });
    assert!(link.hung_up());
}

/// A dropped link ends the peer's async doorbell sleep, as it ends a blocking one ("wait for a
/// doorbell or the peer's hang-up"), although the peer still holds its doorbell end. The Unix
/// backends do not keep this: their async sleep watches the doorbell alone (a peer that dies
/// closes both), so it goes on until the doorbell end closes too.
#[test]
#[cfg_attr(unix, ignore = "the Unix async sleep watches the doorbell alone, not the link")]
fn a_dropped_link_ends_the_peers_async_sleep() {
    let (link, peer_link) = link_pair("async-link-drop");
    let (mut ours, _theirs) = Doorbell::pair().unwrap();
    block_on(async {
        let drop_later = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(peer_link);
        };
        let sleep = within("the end of the sleep", poll_fn(|cx| poll_sleep(&mut ours, &link, cx)));
        let (slept, ()) = tokio::join!(sleep, drop_later);
        assert!(matches!(slept, Ok(()) | Err(IpcError::PeerGone)), "{slept:?}");
    });
    assert!(link.hung_up());
}

/// A killed peer process is heard in tokio: the hang-up watch resolves and a doorbell sleep
/// ends (`Ok`, or `PeerGone` where the backend tells).
#[test]
fn a_killed_peer_is_heard_in_tokio() {
    if IdleChild::run_child() {
        return;
    }
    let mut peer = IdleChild::start(concat!(module_path!(), "::a_killed_peer_is_heard_in_tokio"));
    let link = PeerLink::new(peer.stream, Box::new(|| {})).unwrap();
    let mut bell = peer.bell;
    block_on(async {
        let watch = AsyncHangupWatch::new(&link).unwrap();
        let kill = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            peer.child.kill();
        };
        let sleep = within("the end of the sleep", poll_fn(|cx| poll_sleep(&mut bell, &link, cx)));
        let (slept, ()) = tokio::join!(sleep, kill);
        assert!(matches!(slept, Ok(()) | Err(IpcError::PeerGone)), "{slept:?}");
        within("the killed peer's hang-up", watch.hung_up()).await.unwrap();
    });
    assert!(link.hung_up());
    drop(link);
    drop(peer.listener);
    assert_name_gone(&peer.name);
}
