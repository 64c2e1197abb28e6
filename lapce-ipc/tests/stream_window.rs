//! A response stream its owner does not read is bounded end to end (issue 23): while other calls
//! on the connection keep reading the ring, the unread chunks wait in the client up to the
//! stream window, then the server's `ChunkSender::send` waits; the client's memory stays flat and
//! the stream resumes intact.
//!
//! A binary of its own: it watches the resident memory of its whole process. The server runs in
//! a child process (this binary re-run in the `server` role, see `common`), whose stream handler
//! sends 8-byte sequence numbers as fast as it can; a unary method answers how many it sent.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::{Frame, FramedStream, MessageType};
use lapce_ipc::messages::{Codec, ErrorBody, ErrorCode};
use lapce_ipc::{BlockingIpcClient, IpcConfig, IpcError, IpcServer};

/// Streams the sequence numbers `0, 1, 2, ...` (8 bytes, little-endian each) up to the number the
/// payload says (decimal), or until `STOP`.
const TOKENS: MessageType = MessageType::Chat;
/// Answers how many chunks the stream handlers sent so far (8 bytes, little-endian).
const SENT: MessageType = MessageType::Unknown(0x7C01);
/// Ends the running stream handlers (each sends `StreamEnd`).
const STOP: MessageType = MessageType::Unknown(0x7C02);
/// How long the stream goes unread.
const PAUSE: Duration = Duration::from_secs(2);
/// Generous bound for "must not hang".
const HANG: Duration = Duration::from_secs(60);
/// Most the client's resident memory may grow while the stream goes unread.
const MAX_GROWTH: u64 = 4 << 20;

/// Held by each test: they measure the resident memory of the process they share.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "server", "unknown role {role}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let server = IpcServer::bind(&name, IpcConfig::default()).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (sent.clone(), stop.clone());
        server.register_stream_handler(TOKENS, move |p: Bytes, out| {
            let (counter, stopped) = (counter.clone(), stopped.clone());
            async move {
                let n: u64 = std::str::from_utf8(&p).unwrap().parse().unwrap();
                for i in 0..n {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    out.send(i.to_le_bytes())
                        .await
                        .map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))?;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        });
        server.register_sync_handler(SENT, move |_| {
            Ok(Bytes::copy_from_slice(&sent.load(Ordering::Relaxed).to_le_bytes()))
        });
        server.register_sync_handler(STOP, move |_| {
            stop.store(true, Ordering::Relaxed);
            Ok(Bytes::new())
        });
        server.serve().await.unwrap();
    });
}

fn server(name: &str) -> ChildGuard {
    ChildGuard::spawn("server", name).listening_on(name)
}

/// This process's resident memory in bytes (0 where /proc is not there: the growth is then only
/// bounded through what the handler sent).
fn rss() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

fn seq(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().expect("an 8-byte chunk"))
}

fn count(answer: Bytes) -> u64 {
    u64::from_le_bytes(answer[..].try_into().unwrap())
}

/// What one run measured while the stream went unread.
struct Paused {
    growth: u64,
    /// Chunks the handler sent during the pause.
    sent: u64,
    /// Chunks the handler had sent beyond those read, at the end of the pause.
    ahead: u64,
}

impl Paused {
    fn check(&self, flavour: &str) {
        eprintln!(
            "{flavour}: unread for {PAUSE:?}: RSS grew {} KiB; the handler sent {} chunks meanwhile, \
             {} ahead of the reader at the end",
            self.growth >> 10,
            self.sent,
            self.ahead
        );
        assert!(self.growth < MAX_GROWTH, "{flavour}: RSS grew {} KiB", self.growth >> 10);
        // A window's worth of 8-byte chunks (each counts 8 + 128 bytes), the ring's contents
        // included; one more goes when the window is not quite full.
        let window = IpcConfig::default().ipc.stream_window as u64 / 136 + 1;
        assert!(
            self.ahead <= window,
            "{flavour}: the handler ran {} chunks ahead (window {window})",
            self.ahead
        );
    }
}

#[test]
fn an_unread_stream_stops_its_handler_async_client() {
    let _alone = one_at_a_time();
    let name = unique_name("window-async");
    let _child = server(&name);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let client = common::connect_client(&name, IpcConfig::default()).await;
        let mut stream = client.request_stream(TOKENS, "100000000").await.unwrap();
        let mut expected = 0;
        for _ in 0..10 {
            assert_eq!(seq(&stream.next().await.unwrap().unwrap()), expected);
            expected += 1;
        }
        // The stream goes unread; other calls read the connection meanwhile (and so take in the
        // stream's chunks for it).
        let before = rss();
        let sent_before = count(client.request(SENT, "").await.unwrap());
        let until = Instant::now() + PAUSE;
        let mut sent_after = sent_before;
        while Instant::now() < until {
            sent_after = count(client.request(SENT, "").await.unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let paused = Paused {
            growth: rss().saturating_sub(before),
            sent: sent_after - sent_before,
            ahead: sent_after - expected,
        };
        // Read again: every chunk in order, none lost or repeated, well past the pause.
        let target = sent_after + 100_000;
        while expected < target {
            let chunk = stream.next().await.expect("the stream goes on").unwrap();
            assert_eq!(seq(&chunk), expected, "chunks in order after the pause");
            expected += 1;
        }
        drop(stream);
        // Dropping the stream stopped its handler: the count settles.
        let settled = settled_count(|| async { count(client.request(SENT, "").await.unwrap()) }).await;
        assert!(settled >= expected, "the handler sent {settled} chunks, {expected} were read");
        paused.check("IpcClient");
    });
}

/// The stream handlers' count once it stopped changing for 100 ms (within [`HANG`]).
async fn settled_count<F: std::future::Future<Output = u64>>(mut ask: impl FnMut() -> F) -> u64 {
    let deadline = Instant::now() + HANG;
    let mut last = ask().await;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ask().await;
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the stream handler still sends after the stream was dropped");
        last = now;
    }
}

#[test]
fn an_unread_stream_stops_its_handler_blocking_client() {
    let _alone = one_at_a_time();
    let name = unique_name("window-blocking");
    let _child = server(&name);
    let deadline = Instant::now() + HANG;
    let client = loop {
        match BlockingIpcClient::connect(&name, IpcConfig::default()) {
            Ok(c) => break Arc::new(c),
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    // The reader stops for the pause at chunk 10 while another thread makes requests
    // (which read the connection, and so take in the stream's chunks); it stops the stream once
    // it is well past the pause.
    let measured: Arc<Mutex<Option<Paused>>> = Arc::default();
    let (caller, result) = (client.clone(), measured.clone());
    let mut expected = 0u64;
    let mut target = u64::MAX;
    for chunk in client.request_stream(TOKENS, "100000000").unwrap() {
        let chunk = chunk.unwrap();
        assert_eq!(seq(&chunk), expected, "chunks in order");
        expected += 1;
        if expected == 10 {
            let before = rss();
            let sent_before = count(caller.request(SENT, "").unwrap());
            let caller = caller.clone();
            let poller = std::thread::spawn(move || {
                let until = Instant::now() + PAUSE;
                let mut sent_after = sent_before;
                while Instant::now() < until {
                    sent_after = count(caller.request(SENT, "").unwrap());
                    std::thread::sleep(Duration::from_millis(5));
                }
                sent_after
            });
            let sent_after = poller.join().unwrap();
            *result.lock().unwrap() = Some(Paused {
                growth: rss().saturating_sub(before),
                sent: sent_after - sent_before,
                ahead: sent_after - expected,
            });
            target = sent_after + 100_000;
        }
        if expected == target {
            caller.request(STOP, "").unwrap();
        }
    }
    assert!(expected >= target, "the stream ended at {expected}, before {target}");
    measured.lock().unwrap().take().expect("the pause happened").check("BlockingIpcClient");
}

/// Receives the next frame within `wait`; `None` if none comes.
async fn recv_within(
    framed: &mut FramedStream,
    frame: &mut Frame,
    wait: Duration,
) -> Option<lapce_ipc::Result<(MessageType, u64)>> {
    let got = tokio::time::timeout(wait, framed.recv_into(frame)).await.ok()?;
    Some(got.map(|()| (frame.kind, frame.id)))
}

/// Receives `n` chunks of stream `id` in order from `next`, then checks that no more come.
async fn chunks_then_quiet(framed: &mut FramedStream, id: u64, next: &mut u64, n: u64) {
    let mut buf = Frame::default();
    for _ in 0..n {
        let got = recv_within(framed, &mut buf, HANG).await.expect("a chunk").unwrap();
        assert_eq!(got, (MessageType::StreamChunk, id));
        assert_eq!(seq(&buf.payload), *next);
        *next += 1;
    }
    let more = recv_within(framed, &mut buf, Duration::from_millis(300)).await;
    assert!(more.is_none(), "a frame beyond the window: {more:?}");
}

/// The wire rules of docs/PROTOCOL.md §7, seen from a raw client: the announcement is
/// acknowledged; credit for no stream is ignored; the server sends exactly up to the window (a
/// chunk of 8 bytes counts 136) and exactly as much more as is credited; credit beyond what is
/// outstanding is a broken frame (`Error` 400, id 0, and the connection closes).
#[test]
fn the_server_keeps_to_the_window_and_refuses_absurd_credit() {
    let _alone = one_at_a_time();
    let name = unique_name("window-wire");
    let _child = server(&name);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + HANG;
        let stream = loop {
            match lapce_ipc::SharedMemoryStream::connect(&name).await {
                Ok(s) => break s,
                Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Err(e) => panic!("connect: {e}"),
            }
        };
        let mut framed = FramedStream::new(stream);
        let mut buf = Frame::default();
        assert_eq!(
            recv_within(&mut framed, &mut buf, HANG).await.unwrap().unwrap(),
            (MessageType::Control, 0),
            "greeting"
        );
        framed.send_with_id(MessageType::StreamWindow, 0, &4096u32.to_le_bytes()).await.unwrap();
        assert_eq!(
            recv_within(&mut framed, &mut buf, HANG).await.unwrap().unwrap(),
            (MessageType::StreamWindow, 0)
        );
        assert_eq!(buf.payload, 4096u32.to_le_bytes(), "the acknowledgement repeats the window");
        // Credit for a stream that does not run: ignored, the connection goes on.
        framed.send_with_id(MessageType::StreamWindow, 99, &100u32.to_le_bytes()).await.unwrap();
        framed.send_with_id(MessageType::Heartbeat, 5, b"hb").await.unwrap();
        assert_eq!(
            recv_within(&mut framed, &mut buf, HANG).await.unwrap().unwrap(),
            (MessageType::Heartbeat, 5)
        );
        // A chunk of 8 bytes costs 8 + 128 = 136: chunks go while less than 4096 is outstanding,
        // 31 of them (4216 outstanding), then the handler waits; 2048 bytes of credit (2168
        // outstanding) let 15 more go (4208 outstanding).
        framed.send_with_id(TOKENS, 7, b"1000000").await.unwrap();
        let mut next = 0;
        chunks_then_quiet(&mut framed, 7, &mut next, 31).await;
        framed.send_with_id(MessageType::StreamWindow, 7, &2048u32.to_le_bytes()).await.unwrap();
        chunks_then_quiet(&mut framed, 7, &mut next, 15).await;
        // More credit than is outstanding (4208 bytes): a broken peer.
        framed.send_with_id(MessageType::StreamWindow, 7, &4209u32.to_le_bytes()).await.unwrap();
        let got = recv_within(&mut framed, &mut buf, HANG).await.expect("an answer").unwrap();
        assert_eq!(got, (MessageType::Error, 0));
        let body = ErrorBody::from_json(&buf.payload).unwrap();
        assert_eq!(body.code, ErrorCode::BAD_REQUEST, "{body:?}");
        assert!(body.message.contains("stream window"), "{body:?}");
        // It reads nothing more: no echo. (The stream's handler goes on, no longer held by a
        // window that nobody credits, until it ends or the client goes.)
        framed.send_with_id(MessageType::Heartbeat, 6, b"hb").await.unwrap();
        while let Some(got) = recv_within(&mut framed, &mut buf, Duration::from_millis(300)).await {
            // Once the handler is over the connection closes.
            let Ok((kind, id)) = got else { break };
            assert!(
                matches!(kind, MessageType::StreamChunk | MessageType::StreamEnd) && id == 7,
                "{kind:?} {id}"
            );
        }
    });
}

/// A client with a window of 0 announces none: its streams run unbounded, as before windows.
#[test]
fn a_client_without_a_window_reads_its_stream_as_before() {
    let _alone = one_at_a_time();
    let name = unique_name("window-none");
    let _child = server(&name);
    let mut config = IpcConfig::default();
    config.ipc.stream_window = 0;
    let deadline = Instant::now() + HANG;
    let client = loop {
        match BlockingIpcClient::connect(&name, config.clone()) {
            Ok(c) => break c,
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    let mut expected = 0;
    for chunk in client.request_stream(TOKENS, "100000").unwrap() {
        assert_eq!(seq(&chunk.unwrap()), expected);
        expected += 1;
    }
    assert_eq!(expected, 100_000);
}
