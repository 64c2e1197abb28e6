//! The request/response layer across processes: the server runs in a child process (this test
//! binary re-run in the `rpc-server` role), the client in the test.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::{BlockingIpcClient, BlockingSharedMemoryStream, IpcClient, IpcConfig, IpcError, IpcServer};

const HANG: Duration = Duration::from_secs(60);

/// Echo.
const ECHO: MessageType = MessageType::Data;
/// Sleeps the number of milliseconds in the first 8 bytes, then echoes.
const SLOW_ECHO: MessageType = MessageType::Complete;
/// Streams as many chunks as the payload says (decimal), chunk `i` = `i` in decimal.
const COUNT: MessageType = MessageType::Chat;
const PANICS: MessageType = MessageType::Unknown(0x200);
const FAILS: MessageType = MessageType::Unknown(0x201);
/// Answers how many requests run on the server, itself included (decimal).
const IN_FLIGHT: MessageType = MessageType::Unknown(0x202);
/// Answers with one byte more than the message limit.
const TOO_BIG: MessageType = MessageType::Unknown(0x203);
/// `register_sync_handler` versions: echo, panic, error, answer over the limit, and the
/// in-flight count (which includes the sync request itself).
const SYNC_ECHO: MessageType = MessageType::Unknown(0x210);
const SYNC_PANICS: MessageType = MessageType::Unknown(0x211);
const SYNC_FAILS: MessageType = MessageType::Unknown(0x212);
const SYNC_TOO_BIG: MessageType = MessageType::Unknown(0x213);
const SYNC_IN_FLIGHT: MessageType = MessageType::Unknown(0x214);
/// Begins a graceful shutdown (grace 10 s) and answers at once.
const SHUT_DOWN: MessageType = MessageType::Unknown(0x2FF);
/// No handler for this one.
const NOBODY: MessageType = MessageType::Unknown(0x300);

fn config(max_connections: usize) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.max_connections = max_connections;
    config.ipc.max_concurrent_requests = 2048;
    config.ipc.request_timeout_ms = 60_000;
    config
}

fn millis(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_le_bytes())
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, arg)) = child_role() else { return };
    assert_eq!(role, "rpc-server");
    // `name,max_connections[,idle_timeout_secs]`
    let mut args = arg.split(',');
    let (name, max) = (args.next().unwrap(), args.next().unwrap());
    let idle_secs: Option<u64> = args.next().map(|s| s.parse().unwrap());
    // One line per handler panic instead of a backtrace each (the test provokes a hundred).
    std::panic::set_hook(Box::new(|info| eprintln!("rpc-server: {info}")));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut config = config(max.parse().unwrap());
        if let Some(secs) = idle_secs {
            config.ipc.idle_timeout_secs = secs;
        }
        let server = IpcServer::bind(name, config).unwrap();
        server.register_handler(ECHO, |p: Bytes| async move { Ok(p) });
        server.register_handler(SLOW_ECHO, |p: Bytes| async move {
            let ms = u64::from_le_bytes(p[..8].try_into().unwrap());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(p)
        });
        common::register_count(&server, COUNT);
        server.register_handler(PANICS, |_| async move {
            if true {
                panic!("handler boom");
            }
            Ok(Bytes::new())
        });
        server.register_handler(FAILS, |_| async move {
            Err(ErrorBody::new(ErrorCode::Number(429), "rate limited, try later"))
        });
        server.register_handler(TOO_BIG, |_| async move { Ok(Bytes::from(vec![7u8; (10 << 20) + 1])) });
        server.register_sync_handler(SYNC_ECHO, |p| Ok(Bytes::from(p.to_ascii_uppercase())));
        server.register_sync_handler(SYNC_PANICS, |_| panic!("sync handler boom"));
        server.register_sync_handler(SYNC_FAILS, |_| Err(ErrorBody::new(ErrorCode::Number(503), "busy")));
        server.register_sync_handler(SYNC_TOO_BIG, |_| Ok(Bytes::from(vec![7u8; (10 << 20) + 1])));
        let handle = server.clone();
        server.register_sync_handler(SYNC_IN_FLIGHT, move |_| {
            Ok(Bytes::from(handle.stats().requests_in_flight.to_string()))
        });
        let handle = server.clone();
        server.register_handler(IN_FLIGHT, move |_| {
            let n = handle.stats().requests_in_flight;
            async move { Ok(Bytes::from(n.to_string())) }
        });
        let handle = server.clone();
        server.register_handler(SHUT_DOWN, move |_| {
            handle.shutdown(Duration::from_secs(10));
            async { Ok(Bytes::from_static(b"bye")) }
        });
        server.serve().await.unwrap();
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Connects, waiting for the child server to come up.
async fn connect(name: &str) -> IpcClient {
    common::connect_client(name, config(1000)).await
}

fn server(name: &str, max_connections: usize) -> ChildGuard {
    ChildGuard::spawn("rpc-server", &format!("{name},{max_connections}")).listening_on(name)
}

#[test]
fn a_thousand_concurrent_requests_answered_out_of_order_on_one_connection() {
    let name = unique_name("rpc-many");
    let _child = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        // A slow request first, then fast ones: the fast answers overtake it.
        let slow = {
            let client = client.clone();
            tokio::spawn(async move {
                let answer = client.request(SLOW_ECHO, millis(1000)).await.unwrap();
                (answer, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000u64 {
            let client = client.clone();
            tasks.spawn(async move {
                // Every fourth request takes a few milliseconds, in reverse order of sending.
                let (kind, payload) = if i % 4 == 0 {
                    let mut p = millis(20 - (i % 20)).to_vec();
                    p.extend_from_slice(&i.to_le_bytes());
                    (SLOW_ECHO, Bytes::from(p))
                } else {
                    (ECHO, Bytes::from(format!("request {i}")))
                };
                let answer = client.request(kind, payload.clone()).await.unwrap();
                assert_eq!(answer, payload, "answer to request {i} is its own");
                Instant::now()
            });
        }
        let mut last_fast = None;
        while let Some(done) = tasks.join_next().await {
            last_fast = last_fast.max(Some(done.unwrap()));
        }
        let (answer, slow_done) = slow.await.unwrap();
        assert_eq!(answer, millis(1000));
        assert!(
            last_fast.unwrap() < slow_done,
            "the 1000 later requests were all answered before the slow one"
        );
    });
}

#[test]
fn ten_thousand_chunks_streamed_in_order() {
    let name = unique_name("rpc-stream");
    let _child = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        let mut stream = client.request_stream(COUNT, "10000").await.unwrap();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            assert_eq!(chunk.unwrap(), n.to_string(), "chunk {n}");
            n += 1;
        }
        assert_eq!(n, 10_000, "no chunk lost");
        // The connection is still usable after the stream ended.
        assert_eq!(client.request(ECHO, "after").await.unwrap(), "after");
    });
}

#[test]
fn panics_errors_and_unknown_types_are_answered_and_the_connection_goes_on() {
    let name = unique_name("rpc-errors");
    let _child = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        match client.request(PANICS, "x").await {
            Err(IpcError::HandlerPanic(msg)) => assert!(msg.contains("handler boom"), "{msg}"),
            other => panic!("expected HandlerPanic, got {other:?}"),
        }
        match client.request(NOBODY, "x").await {
            Err(IpcError::UnknownMessageType(kind)) => assert_eq!(kind, NOBODY),
            other => panic!("expected UnknownMessageType, got {other:?}"),
        }
        match client.request(FAILS, "x").await {
            Err(IpcError::Remote(body)) => {
                assert_eq!(body.code, ErrorCode::Number(429));
                assert_eq!(body.message, "rate limited, try later");
            }
            other => panic!("expected Remote, got {other:?}"),
        }
        // An answer over the limit is refused by the server, which goes on answering.
        match client.request(TOO_BIG, "x").await {
            Err(IpcError::Remote(body)) => assert_eq!(body.code, ErrorCode::TOO_LARGE, "{}", body.message),
            other => panic!("expected a 413 error, got {other:?}"),
        }
        // Too large for the configured maximum: refused before anything is sent.
        let big = Bytes::from(vec![0u8; (10 << 20) + 1]);
        assert!(matches!(client.request(ECHO, big).await, Err(IpcError::MessageTooLarge { .. })));
        // The same connection (never reconnected) still answers, panic after panic.
        for i in 0..20 {
            assert!(matches!(client.request(PANICS, "x").await, Err(IpcError::HandlerPanic(_))));
            assert_eq!(client.request(ECHO, format!("{i}")).await.unwrap(), format!("{i}"));
        }
        assert_eq!(client.reconnects(), 0);
    });
}

/// Sync handlers run on the connection's task: answers, errors, panics and answers over the
/// limit go back as for async ones, the connection goes on, and payloads copied into the
/// connection's reused block stay intact while many are in flight at once.
#[test]
fn sync_handlers_answer_fail_and_panic_like_async_ones() {
    let name = unique_name("rpc-sync");
    let _child = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        assert_eq!(client.request(SYNC_ECHO, "abc").await.unwrap(), "ABC");
        assert_eq!(client.request(SYNC_ECHO, "").await.unwrap(), "");
        assert_eq!(client.request(SYNC_IN_FLIGHT, "").await.unwrap(), "1");
        match client.request(SYNC_PANICS, "x").await {
            Err(IpcError::HandlerPanic(msg)) => assert!(msg.contains("sync handler boom"), "{msg}"),
            other => panic!("expected HandlerPanic, got {other:?}"),
        }
        match client.request(SYNC_FAILS, "x").await {
            Err(IpcError::Remote(body)) => {
                assert_eq!((body.code, &body.message[..]), (ErrorCode::Number(503), "busy"))
            }
            other => panic!("expected Remote, got {other:?}"),
        }
        match client.request(SYNC_TOO_BIG, "x").await {
            Err(IpcError::Remote(body)) => assert_eq!(body.code, ErrorCode::TOO_LARGE, "{}", body.message),
            other => panic!("expected a 413 error, got {other:?}"),
        }
        // Payloads of every size around the block's (1 KiB), many in flight: the slow echoes
        // hold theirs (slices of a block) while they sleep, so later copies fill new blocks, and
        // the sync ones reuse blocks no request holds any more.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400usize {
            let len = [0, 1, 63, 64, 1000, 1016, 1017, 1024, 1025, 4096][i % 10];
            let data: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
            let client = client.clone();
            tasks.spawn(async move {
                let (kind, payload, want) = if i % 2 == 0 {
                    (SYNC_ECHO, data.clone(), data.to_ascii_uppercase())
                } else {
                    let mut p = millis(1 + (i % 3) as u64).to_vec();
                    p.extend_from_slice(&data);
                    (SLOW_ECHO, p.clone(), p)
                };
                let got = client.request(kind, Bytes::from(payload)).await.unwrap();
                assert!(got[..] == want[..], "request {i} ({} bytes) came back altered", want.len());
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        for i in 0..20 {
            assert!(matches!(client.request(SYNC_PANICS, "x").await, Err(IpcError::HandlerPanic(_))));
            assert_eq!(client.request(SYNC_ECHO, format!("x{i}")).await.unwrap(), format!("X{i}"));
        }
        assert_eq!(client.reconnects(), 0);
    });
}

#[test]
fn timeouts_and_cancellation_stop_the_request_on_the_server() {
    let name = unique_name("rpc-cancel");
    let _child = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        // Only the probe itself runs once everything else was stopped.
        let settled = || async {
            let deadline = Instant::now() + HANG;
            loop {
                let n = client.request(IN_FLIGHT, "").await.unwrap();
                if n == "1" {
                    return;
                }
                assert!(Instant::now() < deadline, "requests still running on the server: {n:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let t = Instant::now();
        let r = client.request_timeout(SLOW_ECHO, millis(600_000), Some(Duration::from_millis(50))).await;
        assert!(matches!(r, Err(IpcError::Timeout)), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(60));
        settled().await; // the timed-out request was cancelled on the server, not left sleeping
                         // A stream dropped early: the server stops it, the connection goes on.
        let mut stream = client.request_stream(COUNT, "100000000").await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "0");
        stream.cancel();
        settled().await;
        // A request future dropped by its caller is cancelled too.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(30), client.request(SLOW_ECHO, millis(600_000)));
        assert!(abandoned.await.is_err());
        settled().await;
        assert_eq!(client.request(ECHO, "still here").await.unwrap(), "still here");
        // The default timeout (checked eight times per timeout, not timed per request): each
        // request fails a whole timeout after its own send at the earliest, and is cancelled on
        // the server too. The second is sent between two checks.
        let mut short = config(1000);
        short.ipc.request_timeout_ms = 400;
        let quick = IpcClient::connect(&name, short).await.unwrap();
        let timed = |delay: u64| {
            let quick = quick.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let sent = Instant::now();
                let r = quick.request(SLOW_ECHO, millis(600_000)).await;
                (r, sent.elapsed())
            }
        };
        let ((r1, after1), (r2, after2)) = tokio::join!(timed(0), timed(130));
        for (r, after) in [(r1, after1), (r2, after2)] {
            assert!(matches!(r, Err(IpcError::Timeout)), "{r:?}");
            assert!(after >= Duration::from_millis(400), "timed out after {after:?}, before the timeout");
            assert!(after < Duration::from_secs(30), "timed out only after {after:?}");
        }
        settled().await;
        assert_eq!(quick.request(ECHO, "on time").await.unwrap(), "on time");
    });
}

#[test]
fn connections_over_the_limit_are_refused_with_a_clear_error() {
    let name = unique_name("rpc-limit");
    let _child = server(&name, 2);
    runtime().block_on(async {
        let a = connect(&name).await;
        let b = connect(&name).await;
        match IpcClient::connect(&name, config(1000)).await {
            Err(IpcError::ServerRefused(reason)) => assert!(reason.contains("limit of 2"), "{reason}"),
            Err(e) => panic!("expected ServerRefused, got {e}"),
            Ok(_) => panic!("a third connection was accepted over the limit of 2"),
        }
        assert_eq!(a.request(ECHO, "a").await.unwrap(), "a");
        drop(b);
        // A freed place is taken by the next client.
        let deadline = Instant::now() + HANG;
        let c = loop {
            match IpcClient::connect(&name, config(1000)).await {
                Ok(c) => break c,
                Err(IpcError::ServerRefused(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(c.request(ECHO, "c").await.unwrap(), "c");
    });
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout_and_busy_ones_are_kept() {
    let name = unique_name("rpc-idle");
    let _child = ChildGuard::spawn("rpc-server", &format!("{name},1000,1")).listening_on(&name);
    runtime().block_on(async {
        let busy = connect(&name).await;
        let waiting = connect(&name).await;
        // A raw connection, to see exactly when the server closes it.
        let mut idle =
            lapce_ipc::frame::FramedStream::new(lapce_ipc::SharedMemoryStream::connect(&name).await.unwrap());
        let mut buf = lapce_ipc::frame::Frame::default();
        idle.recv_into(&mut buf).await.unwrap();
        assert_eq!((buf.kind, buf.id), (MessageType::Control, 0), "greeting");
        let connected = Instant::now();
        let closed = tokio::spawn(async move {
            let end = idle.recv_into(&mut buf).await;
            (end, connected.elapsed())
        });
        // Over three timeouts: one client sends every 100 ms, one waits for a 3 s answer.
        let slow =
            tokio::spawn(async move { waiting.request(SLOW_ECHO, millis(3000)).await.map(|_| waiting) });
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            assert_eq!(busy.request(ECHO, "x").await.unwrap(), "x");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waiting = slow.await.unwrap().expect("the request in flight was answered");
        let (end, after) = tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the idle connection was not closed within 10 s")
            .unwrap();
        assert!(matches!(end, Err(IpcError::PeerGone)), "the idle connection ended with {end:?}");
        // Closed after one timeout and at most a quarter more (four checks per timeout), with
        // room above for a loaded machine; never before.
        assert!(after >= Duration::from_millis(950), "closed after {after:?}, before the 1 s timeout");
        assert!(after < Duration::from_secs(3), "closed only after {after:?}");
        assert_eq!(busy.reconnects(), 0, "the busy connection was closed");
        assert_eq!(waiting.reconnects(), 0, "the connection waiting for an answer was closed");
    });
}

#[test]
fn server_killed_and_restarted_the_client_reconnects() {
    let name = unique_name("rpc-restart");
    let mut first = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        assert_eq!(client.request(ECHO, "before").await.unwrap(), "before");
        let in_flight = {
            let client = client.clone();
            tokio::spawn(async move { client.request(SLOW_ECHO, millis(30_000)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.kill();
        match in_flight.await.unwrap() {
            Err(IpcError::PeerGone) => {}
            other => panic!("a request in flight when the server died: expected PeerGone, got {other:?}"),
        }
        assert!(!client.is_connected());
        // While no server runs, a request fails when its time is up, with a timeout.
        let outage = client.request_timeout(ECHO, "outage", Some(Duration::from_millis(100))).await;
        assert!(matches!(outage, Err(IpcError::Timeout)), "a request during the outage: {outage:?}");

        let _second = server(&name, 1000);
        // When is the new server available? Probe it the way any client would.
        let available = tokio::task::spawn_blocking({
            let name = name.clone();
            move || loop {
                if BlockingSharedMemoryStream::connect(&name).is_ok() {
                    return Instant::now();
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .await
        .unwrap();
        while !client.is_connected() {
            assert!(available.elapsed() < HANG, "the client never reconnected");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let reconnected = Instant::now();
        eprintln!(
            "client reconnected {:?} after the restarted server became available",
            reconnected.saturating_duration_since(available)
        );
        assert_eq!(client.request(ECHO, "after").await.unwrap(), "after");
        assert_eq!(client.reconnects(), 1);
    });
}

#[test]
fn graceful_shutdown_finishes_the_requests_in_flight() {
    let name = unique_name("rpc-shutdown");
    let mut child = server(&name, 1000);
    runtime().block_on(async {
        let client = connect(&name).await;
        let slow: Vec<_> = (0..10)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.request(SLOW_ECHO, millis(200 + i * 10)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(client.request(SHUT_DOWN, "").await.unwrap(), "bye");
        for (i, request) in slow.into_iter().enumerate() {
            let answer = request.await.unwrap();
            assert_eq!(answer.unwrap(), millis(200 + i as u64 * 10), "in-flight request {i} finished");
        }
        // New requests are not taken any more: the server is closing.
        let late = client.request_timeout(ECHO, "late", Some(Duration::from_millis(500))).await;
        assert!(late.is_err(), "a request after shutdown was answered: {late:?}");
    });
    child.wait_success(HANG);
    // Its shutdown handler holds a handle of the server: once `serve` returns, that no longer
    // keeps the listener alive, so the socket file went when the child dropped its last one.
    let path = lapce_ipc::socket_path(&name).unwrap();
    assert!(cfg!(windows) || !path.exists(), "the server that shut down left {}", path.display());
}

#[test]
fn blocking_client_requests_and_streams() {
    let name = unique_name("rpc-blocking");
    let _child = server(&name, 1000);
    let deadline = Instant::now() + HANG;
    let client = loop {
        match BlockingIpcClient::connect(&name, config(1000)) {
            Ok(c) => break c,
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(client.request(ECHO, "blocking").unwrap(), "blocking");
    let got: Vec<Bytes> = client.request_stream(COUNT, "50").unwrap().map(Result::unwrap).collect();
    assert_eq!(got, (0..50).map(|i| Bytes::from(i.to_string())).collect::<Vec<_>>());
}
