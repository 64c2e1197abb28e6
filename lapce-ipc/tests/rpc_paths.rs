//! The request/response layer without reader or writer tasks, across processes: callers that
//! read the ring for each other, fragmented requests and answers up to 10 MiB, in-place handlers
//! and in-place answers, the blocking client shared by threads, and callers that give up midway
//! (a request dropped while its fragments are being written). The server runs in a child process
//! (this binary in the `paths-server` role).

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, message, unique_name, ChildGuard, Rng};
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::{BlockingIpcClient, IpcClient, IpcConfig, IpcError, IpcServer};

const HANG: Duration = Duration::from_secs(120);

/// Echo, sync handler.
const ECHO: MessageType = MessageType::Data;
/// Echo, async handler; requests of a length divisible by 3 wait once (run in a task).
const ASYNC_ECHO: MessageType = MessageType::Unknown(0x400);
/// Answers the request's length (8 bytes LE) and CRC32 (4 bytes LE): for large requests.
const DIGEST: MessageType = MessageType::Unknown(0x401);
/// Request: length n (8 bytes LE) and a seed (8 bytes LE); answer: `message(seed, 0, ..)` of
/// exactly n bytes (see [`sized`]): for large answers.
const SIZED: MessageType = MessageType::Unknown(0x402);
/// In-place handler: the request reversed, written straight into the ring when it fits.
const REVERSED: MessageType = MessageType::Unknown(0x403);
/// In-place handler: writes "partial", then fails: the answer stands.
const WRITES_THEN_FAILS: MessageType = MessageType::Unknown(0x404);
/// In-place handler: fails without writing.
const FAILS_IN_PLACE: MessageType = MessageType::Unknown(0x405);
/// Sleeps the milliseconds in the first 8 bytes, then echoes.
const SLOW: MessageType = MessageType::Unknown(0x406);
/// Streams as many chunks as the payload says (decimal), chunk `i` = `i` in decimal.
const COUNT: MessageType = MessageType::Unknown(0x407);

fn config() -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.max_concurrent_requests = 4096;
    config.ipc.request_timeout_ms = 60_000;
    config
}

/// The answer of a `SIZED` request for `len` bytes with `seed`.
fn sized(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    // `message` picks a length of its own: ask for far more and cut, so the bytes are the same
    // on both sides.
    while out.len() < len {
        let mut part = Vec::new();
        message(seed, out.len() as u64, 1 << 16, &mut part);
        out.extend_from_slice(&part);
    }
    out.truncate(len);
    out
}

fn sized_request(len: usize, seed: u64) -> Vec<u8> {
    [(len as u64).to_le_bytes(), seed.to_le_bytes()].concat()
}

fn digest(payload: &[u8]) -> Vec<u8> {
    [(payload.len() as u64).to_le_bytes().as_slice(), &crc32fast::hash(payload).to_le_bytes()].concat()
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "paths-server");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(&name, config()).unwrap();
        server.register_sync_handler(ECHO, Ok);
        server.register_handler(ASYNC_ECHO, |p: Bytes| async move {
            if p.len().is_multiple_of(3) {
                tokio::task::yield_now().await;
            }
            Ok(p)
        });
        server.register_sync_handler(DIGEST, |p| Ok(Bytes::from(digest(&p))));
        server.register_sync_handler(SIZED, |p| {
            let len = u64::from_le_bytes(p[..8].try_into().unwrap()) as usize;
            let seed = u64::from_le_bytes(p[8..16].try_into().unwrap());
            Ok(Bytes::from(sized(len, seed)))
        });
        server.register_in_place_handler(REVERSED, |request, reply| {
            let n = reply
                .write_with(request.len(), |out| {
                    for (o, i) in out.iter_mut().zip(request.iter().rev()) {
                        *o = *i;
                    }
                    request.len()
                })
                .map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))?;
            assert_eq!(n, request.len());
            // A second answer is refused.
            assert!(reply.write(b"again").is_err());
            Ok(())
        });
        server.register_in_place_handler(WRITES_THEN_FAILS, |_, reply| {
            reply.write(b"partial").unwrap();
            Err(ErrorBody::new(ErrorCode::INTERNAL, "failed after answering"))
        });
        server.register_in_place_handler(FAILS_IN_PLACE, |_, _| {
            Err(ErrorBody::new(ErrorCode::Number(418), "refused in place"))
        });
        server.register_handler(SLOW, |p: Bytes| async move {
            let ms = u64::from_le_bytes(p[..8].try_into().unwrap());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(p)
        });
        common::register_count(&server, COUNT);
        server.serve().await.unwrap();
    });
}

fn server(name: &str) -> ChildGuard {
    ChildGuard::spawn("paths-server", name).listening_on(name)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn connect(name: &str) -> IpcClient {
    common::connect_client(name, config()).await
}

fn connect_blocking(name: &str) -> BlockingIpcClient {
    let deadline = Instant::now() + HANG;
    loop {
        match BlockingIpcClient::connect(name, config()) {
            Ok(c) => return c,
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

fn millis(ms: u64) -> Vec<u8> {
    ms.to_le_bytes().to_vec()
}

/// Many tasks on a multi-thread runtime, each request answered to the task that made it
/// whichever task read it: small and large, sync and async handlers (some waiting, so answers
/// come out of order), in place and copied. Every byte is checked.
#[test]
fn concurrent_callers_read_each_others_answers_intact() {
    let name = unique_name("paths-mixed");
    let _server = server(&name);
    runtime().block_on(async {
        let client = connect(&name).await;
        let tasks: Vec<_> = (0..24u64)
            .map(|t| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut payload = Vec::new();
                    for seq in 0..300u64 {
                        // Up to 300 KiB: more than one ring record (128 KiB) now and then.
                        let max = if seq % 50 == 0 { 300 << 10 } else { 2048 };
                        message(t, seq, max, &mut payload);
                        match seq % 3 {
                            0 => assert_eq!(client.request(ECHO, &payload).await.unwrap(), payload),
                            1 => assert_eq!(client.request(ASYNC_ECHO, &payload).await.unwrap(), payload),
                            _ => {
                                let same =
                                    client.request_with(ECHO, &payload, |a| a == &payload[..]).await.unwrap();
                                assert!(same, "task {t} request {seq}: in-place answer differs");
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(HANG, t).await.expect("callers hung").unwrap();
        }
        assert_eq!(client.reconnects(), 0);
    });
}

/// Requests and answers up to the 10 MiB limit travel as fragments and arrive whole; one over
/// the limit is refused before anything is sent; the connection goes on.
#[test]
fn ten_mib_requests_and_answers_are_fragmented_and_arrive_whole() {
    let name = unique_name("paths-large");
    let _server = server(&name);
    runtime().block_on(async {
        let client = connect(&name).await;
        let max = IpcConfig::default().ipc.max_message_size;
        for (i, len) in [(1usize << 20) + 7, 5 << 20, max].into_iter().enumerate() {
            let mut big = Vec::new();
            while big.len() < len {
                let mut part = Vec::new();
                message(i as u64, big.len() as u64, 1 << 16, &mut part);
                big.extend_from_slice(&part);
            }
            big.truncate(len);
            assert_eq!(client.request(DIGEST, &big).await.unwrap(), digest(&big), "request of {len} bytes");
            let answer = client.request(SIZED, sized_request(len, i as u64)).await.unwrap();
            assert!(answer == sized(len, i as u64), "answer of {len} bytes");
            let same =
                client.request_with(SIZED, sized_request(len, 9), |a| a == &sized(len, 9)[..]).await.unwrap();
            assert!(same, "in-place answer of {len} bytes");
        }
        let too_big = vec![0u8; max + 1];
        assert!(matches!(client.request(ECHO, &too_big).await, Err(IpcError::MessageTooLarge { .. })));
        assert_eq!(client.request(ECHO, "after").await.unwrap(), "after");
        assert_eq!(client.reconnects(), 0);
    });
}

/// In-place handlers: the answer written in place (or, larger than a record, kept and sent
/// after), a second answer refused, an error after the answer logged (the answer stands), an
/// error before it sent.
#[test]
fn in_place_handlers_answer_in_place_and_fail_like_others() {
    let name = unique_name("paths-in-place");
    let _server = server(&name);
    runtime().block_on(async {
        let client = connect(&name).await;
        for len in [0usize, 1, 64, 4096, 200 << 10] {
            let mut request = Vec::new();
            message(len as u64, 1, len, &mut request);
            request.resize(len, 0xAB);
            let reversed: Vec<u8> = request.iter().rev().copied().collect();
            assert_eq!(client.request(REVERSED, &request).await.unwrap(), reversed, "{len} bytes");
        }
        assert_eq!(client.request(WRITES_THEN_FAILS, "").await.unwrap(), "partial");
        match client.request(FAILS_IN_PLACE, "").await {
            Err(IpcError::Remote(body)) => {
                assert_eq!((body.code, body.message.as_str()), (ErrorCode::Number(418), "refused in place"))
            }
            other => panic!("expected the handler's error, got {other:?}"),
        }
        assert_eq!(client.request(ECHO, "still here").await.unwrap(), "still here");
    });
}

/// A request whose caller gives up while its fragments are being written (a timeout shorter than
/// the write of 10 MiB into a 256 KiB ring): the rest is written before anything else, so the
/// server reads a whole message and the connection goes on; the request is cancelled there.
#[test]
fn a_request_dropped_while_its_fragments_are_written_leaves_the_connection_usable() {
    let name = unique_name("paths-dropped");
    let _server = server(&name);
    runtime().block_on(async {
        let client = connect(&name).await;
        let big = vec![0x5Au8; 10 << 20];
        let mut gave_up = 0;
        for round in 0..5u64 {
            let dropped =
                client.request_timeout(DIGEST, &big, Some(Duration::from_micros(50 + 100 * round))).await;
            match dropped {
                Err(IpcError::Timeout) => gave_up += 1,
                Ok(answer) => assert_eq!(answer, digest(&big)),
                Err(e) => panic!("round {round}: {e}"),
            }
            // The next requests, small and large, are answered as if nothing happened.
            assert_eq!(client.request(ECHO, "next").await.unwrap(), "next", "round {round}");
            assert_eq!(client.request(DIGEST, &big).await.unwrap(), digest(&big), "round {round}");
        }
        assert!(gave_up > 0, "no request was dropped midway: the test proved nothing");
        assert_eq!(client.reconnects(), 0, "the connection was broken");
    });
}

/// Callers that give up (timeouts) among callers that wait, on many tasks: nobody is left
/// waiting for a reader, everything not given up is answered.
#[test]
fn callers_that_give_up_never_strand_the_others() {
    let name = unique_name("paths-give-up");
    let _server = server(&name);
    runtime().block_on(async {
        let client = connect(&name).await;
        let tasks: Vec<_> = (0..16u64)
            .map(|t| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut rng = Rng(t);
                    let mut answered = 0;
                    for seq in 0..400u64 {
                        if rng.below(5) == 0 {
                            let slow = [millis(rng.below(3)), seq.to_le_bytes().to_vec()].concat();
                            let r = client
                                .request_timeout(SLOW, &slow, Some(Duration::from_micros(rng.below(1500))))
                                .await;
                            assert!(matches!(r, Ok(_) | Err(IpcError::Timeout)), "{r:?}");
                        } else {
                            let payload = [t.to_le_bytes(), seq.to_le_bytes()].concat();
                            assert_eq!(client.request(ASYNC_ECHO, &payload).await.unwrap(), payload);
                            answered += 1;
                        }
                    }
                    answered
                })
            })
            .collect();
        let mut answered = 0;
        for t in tasks {
            answered += tokio::time::timeout(HANG, t).await.expect("a caller was stranded").unwrap();
        }
        assert!(answered > 16 * 250, "{answered}");
    });
}

/// `BlockingIpcClient` shared by threads (`&self`, `Sync`): each thread's requests answered to
/// it, whichever thread read them, with streams and large messages among them; a timeout cancels.
#[test]
fn blocking_client_shared_by_threads() {
    let name = unique_name("paths-blocking");
    let _server = server(&name);
    let client = Arc::new(connect_blocking(&name));
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let client = &client;
            s.spawn(move || {
                let mut payload = Vec::new();
                for seq in 0..300u64 {
                    let max = if seq % 60 == 0 { 300 << 10 } else { 1024 };
                    message(t, seq, max, &mut payload);
                    match seq % 4 {
                        0 => assert_eq!(client.request(ECHO, &payload).unwrap(), payload),
                        1 => assert_eq!(client.request(ASYNC_ECHO, &payload).unwrap(), payload),
                        2 => assert!(client.request_with(ECHO, &payload, |a| a == &payload[..]).unwrap()),
                        _ => {
                            let stream = client.request_stream(COUNT, "20").unwrap();
                            let chunks: Vec<Bytes> = stream.map(Result::unwrap).collect();
                            let want: Vec<Bytes> = (0..20).map(|i| Bytes::from(i.to_string())).collect();
                            assert_eq!(chunks, want, "thread {t} stream {seq}");
                        }
                    }
                }
            });
        }
    });
    let slow = client.request_timeout(SLOW, millis(5_000), Some(Duration::from_millis(50)));
    assert!(matches!(slow, Err(IpcError::Timeout)), "{slow:?}");
    assert_eq!(client.request(ECHO, "after").unwrap(), "after");
    assert_eq!(client.reconnects(), 0);
}

/// The blocking client reconnects on the next request once a restarted server is there (no
/// background thread): the request in flight when the server died fails with `PeerGone`.
#[test]
fn blocking_client_reconnects_on_the_next_request() {
    let name = unique_name("paths-blocking-restart");
    let mut first = server(&name);
    let client = Arc::new(connect_blocking(&name));
    assert_eq!(client.request(ECHO, "before").unwrap(), "before");
    let in_flight = {
        let client = client.clone();
        std::thread::spawn(move || client.request(SLOW, millis(30_000)))
    };
    std::thread::sleep(Duration::from_millis(100));
    first.kill();
    match in_flight.join().unwrap() {
        Err(IpcError::PeerGone) => {}
        other => panic!("a request in flight when the server died: expected PeerGone, got {other:?}"),
    }
    assert!(!client.is_connected());
    // While no server runs, a request fails when its time is up, with a timeout.
    let outage = client.request_timeout(ECHO, "outage", Some(Duration::from_millis(100)));
    assert!(matches!(outage, Err(IpcError::Timeout)), "a request during the outage: {outage:?}");
    let _second = server(&name);
    // The next request waits for the server (up to its timeout) and goes through.
    assert_eq!(client.request(ECHO, "after").unwrap(), "after");
    assert_eq!(client.reconnects(), 1);
}
