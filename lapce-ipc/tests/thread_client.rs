//! `BlockingIpcClient` for thread-based applications, against a server in a child process:
//! callbacks of `request_async`, streams read as iterators and cancelled from another thread,
//! and a connect that waits for a server still starting.

use crate::common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::{BlockingIpcClient, IpcClient, IpcConfig, IpcError, IpcServer};

const HANG: Duration = Duration::from_secs(60);

/// Echo.
const ECHO: MessageType = MessageType::Data;
/// Sleeps the number of milliseconds in the payload (decimal), then echoes.
const SLOW_ECHO: MessageType = MessageType::Complete;
/// Streams as many chunks as the payload says (decimal), chunk `i` = `i` in decimal.
const COUNT: MessageType = MessageType::Chat;
/// Sends one chunk, then waits for ever (until cancelled).
const ONE_THEN_WAIT: MessageType = MessageType::Unknown(0x400);
/// Answers how many requests run on the server, itself included (decimal).
const IN_FLIGHT: MessageType = MessageType::Unknown(0x401);
/// No handler for this one.
const NOBODY: MessageType = MessageType::Unknown(0x4FF);

fn config() -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.request_timeout_ms = 60_000;
    config
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "thread-server");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(&name, config()).unwrap();
        server.register_handler(ECHO, |p: Bytes| async move { Ok(p) });
        server.register_handler(SLOW_ECHO, |p: Bytes| async move {
            let ms: u64 = std::str::from_utf8(&p).unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(p)
        });
        common::register_count(&server, COUNT);
        server.register_stream_handler(ONE_THEN_WAIT, |_, out| async move {
            out.send("first").await.map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))?;
            std::future::pending::<()>().await;
            Ok(())
        });
        let handle = server.clone();
        server.register_handler(IN_FLIGHT, move |_| {
            let n = handle.stats().requests_in_flight;
            async move { Ok(Bytes::from(n.to_string())) }
        });
        server.serve().await.unwrap();
    });
}

fn server(name: &str) -> ChildGuard {
    ChildGuard::spawn("thread-server", name).listening_on(name)
}

fn connect(name: &str, config: IpcConfig) -> BlockingIpcClient {
    BlockingIpcClient::connect_timeout(name, config, HANG).unwrap()
}

/// Waits until the server runs only the request that asks (the others were stopped).
fn wait_until_idle(client: &BlockingIpcClient) {
    let deadline = Instant::now() + HANG;
    while client.request(IN_FLIGHT, "").unwrap() != "1" {
        assert!(Instant::now() < deadline, "the server's handlers were not stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn request_async_calls_every_callback_once_on_the_dispatch_thread() {
    let name = unique_name("thread-async");
    let _child = server(&name);
    let client = std::sync::Arc::new(connect(&name, config()));
    let (tx, rx) = mpsc::channel();
    // Slow ones first: the fast answers overtake them, each reaching its own callback.
    for i in 0..300u64 {
        let (kind, payload) =
            if i % 10 == 0 { (SLOW_ECHO, (200 - i / 2).to_string()) } else { (ECHO, i.to_string()) };
        let (tx, expected) = (tx.clone(), payload.clone());
        client.request_async(kind, payload, move |answer| {
            let thread = std::thread::current().name().map(str::to_owned);
            tx.send((i, answer.map(|a| a == expected), thread)).unwrap();
        });
    }
    // A callback that makes a blocking request of its own.
    let (tx2, caller) = (tx.clone(), client.clone());
    client.request_async(ECHO, "outer", move |answer| {
        assert_eq!(answer.unwrap(), "outer");
        let inner = caller.request(ECHO, "inner").map(|a| a == "inner");
        tx2.send((1000, inner, None)).unwrap();
    });
    drop(tx);
    let mut seen = HashSet::new();
    for (i, ok, thread) in rx.iter() {
        assert!(
            ok.unwrap_or_else(|e| panic!("request {i}: {e}")),
            "request {i} got another request's answer"
        );
        assert!(seen.insert(i), "callback {i} called twice");
        if i < 1000 {
            assert_eq!(thread.as_deref(), Some("lapce-ipc-dispatch"));
        }
    }
    assert_eq!(seen.len(), 301, "every callback called");
}

#[test]
fn request_async_reports_errors_timeouts_and_the_drop() {
    let name = unique_name("thread-async-err");
    let _child = server(&name);
    let mut short = config();
    short.ipc.request_timeout_ms = 300;
    let client = connect(&name, short);
    let (tx, rx) = mpsc::channel();
    let send = |tag: &'static str| {
        let tx = tx.clone();
        move |answer: lapce_ipc::Result<Bytes>| tx.send((tag, answer)).unwrap()
    };
    client.request_async(NOBODY, "", send("unknown"));
    client.request_async(ECHO, vec![0u8; (10 << 20) + 1], send("too large"));
    let started = Instant::now();
    client.request_async(SLOW_ECHO, "5000", send("slow"));
    let mut got: Vec<_> = (0..3).map(|_| rx.recv_timeout(HANG).unwrap()).collect();
    got.sort_by_key(|(tag, _)| *tag);
    assert!(matches!(got[0], ("slow", Err(IpcError::Timeout))), "{:?}", got[0]);
    assert!(started.elapsed() >= Duration::from_millis(300), "timed out early");
    assert!(started.elapsed() < Duration::from_secs(4), "timed out late: {:?}", started.elapsed());
    assert!(matches!(got[1], ("too large", Err(IpcError::MessageTooLarge { .. }))), "{:?}", got[1]);
    assert!(matches!(got[2], ("unknown", Err(IpcError::UnknownMessageType(NOBODY)))), "{:?}", got[2]);
    // The timed-out request was cancelled on the server.
    wait_until_idle(&client);

    // Dropped with a call in flight: its callback is told, and the server's handler stops.
    let mut long = config();
    long.ipc.request_timeout_ms = 0;
    let client = connect(&name, long);
    client.request_async(SLOW_ECHO, "30000", send("dropped"));
    std::thread::sleep(Duration::from_millis(100));
    let dropped_at = Instant::now();
    drop(client);
    let (tag, answer) = rx.recv_timeout(HANG).unwrap();
    assert_eq!(tag, "dropped");
    assert!(matches!(answer, Err(IpcError::Cancelled)), "{answer:?}");
    assert!(dropped_at.elapsed() < Duration::from_secs(5), "the drop took {:?}", dropped_at.elapsed());
    wait_until_idle(&connect(&name, config()));
}

#[test]
fn request_async_fails_with_peer_gone_when_the_server_dies() {
    let name = unique_name("thread-async-kill");
    let mut child = server(&name);
    let client = connect(&name, config());
    let (tx, rx) = mpsc::channel();
    client.request_async(SLOW_ECHO, "30000", move |answer| tx.send(answer).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    child.kill();
    let answer = rx.recv_timeout(HANG).unwrap();
    assert!(matches!(answer, Err(IpcError::PeerGone)), "{answer:?}");
}

#[test]
fn a_stream_is_an_iterator_and_a_cancel_from_another_thread_wakes_its_reader() {
    let name = unique_name("thread-stream");
    let _child = server(&name);
    let client = connect(&name, config());
    let chunks: Vec<Bytes> = client.request_stream(COUNT, "1000").unwrap().map(Result::unwrap).collect();
    assert_eq!(chunks, (0..1000).map(|i| Bytes::from(i.to_string())).collect::<Vec<_>>());

    // The reader blocks in `next` for a chunk that never comes; another thread cancels.
    let mut stream = client.request_stream(ONE_THEN_WAIT, "").unwrap();
    assert_eq!(stream.next().unwrap().unwrap(), "first");
    let canceller = stream.canceller();
    let cancelled_at = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let at = Instant::now();
        canceller.cancel();
        at
    });
    let next = stream.next();
    let woke_at = Instant::now();
    let cancelled_at = cancelled_at.join().unwrap();
    assert!(matches!(next, Some(Err(IpcError::Cancelled))), "{next:?}");
    assert!(woke_at >= cancelled_at, "woke before the cancel");
    assert!(
        woke_at - cancelled_at < Duration::from_secs(5),
        "woke {:?} after the cancel",
        woke_at - cancelled_at
    );
    assert!(stream.next().is_none(), "nothing after the cancel");
    assert!(stream.canceller().is_cancelled());
    // The handler was stopped on the server.
    wait_until_idle(&client);
    drop(stream);

    // A cancel while another thread reads the connection for its own request: this stream's
    // owner waits parked, and the cancel wakes it at once.
    let mut stream = client.request_stream(ONE_THEN_WAIT, "").unwrap();
    assert_eq!(stream.next().unwrap().unwrap(), "first");
    let canceller = stream.canceller();
    std::thread::scope(|s| {
        s.spawn(|| client.request(SLOW_ECHO, "400").unwrap());
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            canceller.cancel();
        });
        assert!(matches!(stream.next(), Some(Err(IpcError::Cancelled))));
    });
    wait_until_idle(&client);
}

#[test]
fn connect_timeout_waits_for_a_server_that_starts_later() {
    let name = unique_name("thread-connect");
    // Nobody there: the time runs out, with a clear error.
    let started = Instant::now();
    let none = BlockingIpcClient::connect_timeout(&name, config(), Duration::from_millis(200));
    assert!(matches!(none, Err(IpcError::Timeout)), "{:?}", none.err());
    assert!(started.elapsed() >= Duration::from_millis(150), "gave up after {:?}", started.elapsed());

    // The clients start first; the server binds later.
    let waiting = {
        let name = name.clone();
        std::thread::spawn(move || BlockingIpcClient::connect_timeout(&name, config(), HANG))
    };
    let waiting_async = {
        let name = name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = IpcClient::connect_timeout(&name, config(), HANG).await?;
                client.request(ECHO, "async").await
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let spawned_at = Instant::now();
    let _child = server(&name);
    let client = waiting.join().unwrap().unwrap();
    assert!(spawned_at.elapsed() < HANG);
    assert_eq!(client.request(ECHO, "hello").unwrap(), "hello");
    assert_eq!(waiting_async.join().unwrap().unwrap(), "async");
}
