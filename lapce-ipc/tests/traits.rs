//! The standard traits across processes: the async framed types as `Stream` and `Sink`,
//! `ResponseStream` as a `Stream`, the listeners' `incoming()`, and (Unix) the listener's
//! descriptor in an outside poll loop.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{child_role, connect_client, connect_retry, unique_name, ChildGuard};
use futures::{SinkExt, StreamExt};
use lapce_ipc::frame::{Frame, FramedStream, MessageType};
use lapce_ipc::{
    BlockingSharedMemoryListener, IpcConfig, IpcError, IpcServer, SharedMemoryListener, SharedMemoryStream,
    StreamConfig,
};

const HANG: Duration = Duration::from_secs(60);
const COUNT: MessageType = MessageType::Unknown(0x300);
const QUIT: MessageType = MessageType::Unknown(0x301);

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    match role.as_str() {
        "sink-sender" => sink_sender(&name),
        "count-server" => count_server(&name),
        "connect-and-greet" => {
            let mut s = connect_retry(&name);
            s.send(b"hi").unwrap();
            let _ = s.recv_timeout(&mut [0u8; 8], HANG);
        }
        other => panic!("unknown role {other}"),
    }
}

/// The frames the sink sender sends: small ones around fragmented ones (up to 3 MiB through a
/// 64 KiB ring: about a hundred fragments each).
fn frames() -> Vec<Frame> {
    (0..24u64)
        .map(|i| {
            let len = if i % 4 == 1 { (3 << 20) - i as usize * 1000 } else { i as usize * 37 };
            Frame::new(MessageType::Data, 100 + i, (0..len).map(|j| (j as u64 * 31 + i) as u8).collect())
        })
        .collect()
}

/// Sends [`frames`] through the `Sink` impl, then leaves (the parent's stream then ends).
fn sink_sender(name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let stream = loop {
            match SharedMemoryStream::connect(name).await {
                Ok(s) => break s,
                Err(IpcError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => panic!("connect: {e}"),
            }
        };
        let (mut tx, _rx) = FramedStream::new(stream).into_split();
        let mut all = futures::stream::iter(frames().into_iter().map(Ok));
        tx.send_all(&mut all).await.unwrap();
        let too_big = Frame::new(MessageType::Data, 1, vec![0; (10 << 20) + 1]);
        assert!(matches!(SinkExt::send(&mut tx, too_big).await, Err(IpcError::MessageTooLarge { .. })));
        SinkExt::close(&mut tx).await.unwrap();
    });
}

/// The receiver's `Stream` yields every frame whole, in order, even when most `next()` futures
/// are dropped in the middle of a fragmented message; then it ends, as the sender went.
#[test]
fn framed_sink_to_stream_survives_cancelled_nexts_and_ends_when_the_peer_goes() {
    let name = unique_name("traits-sink");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = StreamConfig { ring_capacity: 64 << 10, ..Default::default() };
    let mut child = ChildGuard::spawn("sink-sender", &name);
    rt.block_on(async {
        let listener = SharedMemoryListener::bind_with(&name, config).unwrap();
        let (_tx, mut rx) = FramedStream::new(listener.accept().await.unwrap()).into_split();
        let mut got = Vec::new();
        let mut cancelled = 0;
        loop {
            tokio::select! {
                item = rx.next() => match item {
                    Some(frame) => got.push(frame.unwrap()),
                    None => break,
                },
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        assert!(cancelled > 0, "no next() was cancelled: the test proves nothing");
        let want = frames();
        assert_eq!(got.len(), want.len(), "frames received");
        for (g, w) in got.iter().zip(&want) {
            assert!(g == w, "{g:?} arrived instead of {w:?}");
        }
        assert!(rx.next().await.is_none(), "an ended stream stays ended");
    });
    child.wait_success(HANG);
}

fn count_server(name: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(name, IpcConfig::default()).unwrap();
        common::register_count(&server, COUNT);
        let quit = server.clone();
        server.register_handler(QUIT, move |_| {
            quit.shutdown(Duration::from_secs(1));
            async { Ok(Bytes::new()) }
        });
        server.serve().await.unwrap();
    });
    let _ = std::fs::remove_file(lapce_ipc::socket_path(name).unwrap());
}

/// `ResponseStream` as a `Stream`: `StreamExt` combinators see every chunk in order and the
/// end; the inherent `next` picks up where a dropped `Stream` poll left off.
#[test]
fn response_stream_is_a_stream() {
    let name = unique_name("traits-chunks");
    let mut child = ChildGuard::spawn("count-server", &name).listening_on(&name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = connect_client(&name, IpcConfig::default()).await;
        let chunks = client.request_stream(COUNT, "500").await.unwrap();
        let numbers: Vec<u64> =
            chunks.map(|c| std::str::from_utf8(&c.unwrap()).unwrap().parse::<u64>().unwrap()).collect().await;
        assert_eq!(numbers, (0..500).collect::<Vec<_>>());

        let mut chunks = client.request_stream(COUNT, "3").await.unwrap();
        assert_eq!(
            format!("{chunks:?}"),
            format!("ResponseStream {{ request_id: {}, waiting: false }}", chunks.request_id())
        );
        assert_eq!(StreamExt::next(&mut chunks).await.unwrap().unwrap(), "0");
        assert_eq!(chunks.next().await.unwrap().unwrap(), "1");
        assert_eq!(StreamExt::next(&mut chunks).await.unwrap().unwrap(), "2");
        assert!(chunks.next().await.is_none());
        assert!(StreamExt::next(&mut chunks).await.is_none(), "ended for both");
        assert!(format!("{client:?}").contains("connected: true"), "{client:?}");
        let _ = client.request(QUIT, b"").await;
    });
    child.wait_success(HANG);
}

/// `incoming()` hands over each client, handshake done: the blocking iterator and the async
/// `Stream`.
#[test]
fn incoming_yields_each_client() {
    let name = unique_name("traits-incoming");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut children: Vec<_> = (0..2).map(|_| ChildGuard::spawn("connect-and-greet", &name)).collect();
    for stream in listener.incoming().take(2) {
        let mut stream = stream.unwrap();
        assert_eq!(stream.recv_with(|m| m.to_vec()).unwrap(), b"hi");
        let pid = stream.peer_pid();
        assert!(children.iter().any(|c| c.pid() == pid), "a client we started: {pid}");
    }
    drop(listener);
    children.iter_mut().for_each(|c| c.wait_success(HANG));

    let name = unique_name("traits-incoming-async");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let listener = SharedMemoryListener::bind(&name).unwrap();
        let mut children: Vec<_> = (0..2).map(|_| ChildGuard::spawn("connect-and-greet", &name)).collect();
        let accepted: Vec<_> = listener.incoming().take(2).collect().await;
        for stream in accepted {
            let mut stream = stream.unwrap();
            assert_eq!(stream.recv_with(|m| m.to_vec()).await.unwrap(), b"hi");
        }
        children.iter_mut().for_each(|c| c.wait_success(HANG));
    });
}

/// The listener's descriptor in an outside poll loop (`poll(2)`): not readable while nobody
/// connects, readable once a client waits, and `accept` then takes that client.
#[cfg(unix)]
#[test]
fn the_listener_descriptor_is_readable_when_a_client_waits() {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    let readable = |listener: &BlockingSharedMemoryListener, wait: Duration| {
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        let timeout = Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ };
        poll(&mut fds, Some(&timeout)).unwrap() == 1 && fds[0].revents().contains(PollFlags::IN)
    };
    let name = unique_name("traits-asfd");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    assert!(!readable(&listener, Duration::from_millis(200)), "readable with no client");
    let mut child = ChildGuard::spawn("connect-and-greet", &name);
    assert!(readable(&listener, HANG), "not readable with a client waiting");
    let mut stream = listener.accept().unwrap();
    assert_eq!(stream.recv_with(|m| m.to_vec()).unwrap(), b"hi");
    use std::os::fd::{AsFd, AsRawFd};
    assert_eq!(listener.as_raw_fd(), listener.as_fd().as_raw_fd());
    drop(stream);
    child.wait_success(HANG);
}
