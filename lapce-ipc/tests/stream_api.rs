//! API semantics of listeners and streams: errors callers match on, limits, timeouts, the
//! handshake's refusals. Peers are threads or raw sockets here; the cross-process behaviour is
//! covered in `cross_process.rs`.

use crate::common;

use std::io::{Read, Write};
#[cfg(unix)]
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use common::{raw_connect, raw_message, unique_name, HANDLE_TRAILER};
use lapce_ipc::{
    BlockingSharedMemoryListener, BlockingSharedMemoryStream, IpcError, StreamConfig, PROTOCOL_VERSION,
};

fn pair(
    config: StreamConfig,
) -> (BlockingSharedMemoryListener, BlockingSharedMemoryStream, BlockingSharedMemoryStream) {
    let name = unique_name("api");
    let listener = BlockingSharedMemoryListener::bind_with(&name, config).unwrap();
    let client = std::thread::spawn(move || BlockingSharedMemoryStream::connect(&name).unwrap());
    let server = listener.accept().unwrap();
    (listener, server, client.join().unwrap())
}

fn small() -> StreamConfig {
    StreamConfig { ring_capacity: 4096, ..StreamConfig::default() }
}

#[test]
fn limits_and_non_blocking_calls() {
    let (_l, mut server, mut client) = pair(small());
    assert_eq!(client.max_message_size(), 4096 / 2 - 8);
    assert_eq!(client.peer_pid(), std::process::id());

    let too_big = vec![0u8; client.max_message_size() + 1];
    assert!(matches!(client.send(&too_big), Err(IpcError::MessageTooLarge { len, max }) if len == max + 1));
    assert!(matches!(client.try_send(&too_big), Err(IpcError::MessageTooLarge { .. })));
    assert!(matches!(server.try_recv(&mut [0u8; 8]), Err(IpcError::WouldBlock)), "nothing was written");

    client.send(b"twelve bytes").unwrap();
    let mut small_buf = [0u8; 4];
    assert!(matches!(server.recv(&mut small_buf), Err(IpcError::BufferTooSmall { needed: 12, buf: 4 })));
    let mut buf = [0u8; 16];
    assert_eq!(server.recv(&mut buf).unwrap(), 12, "the message stayed queued");
    assert_eq!(&buf[..12], b"twelve bytes");

    assert!(matches!(server.recv_timeout(&mut buf, Duration::from_millis(20)), Err(IpcError::Timeout)));
    while client.try_send(&[0u8; 100]).is_ok() {}
    assert!(matches!(client.try_send(&[0u8; 100]), Err(IpcError::WouldBlock)));
    let r = client.send_timeout(&[0u8; 100], Duration::from_millis(20));
    assert!(matches!(r, Err(IpcError::Timeout)), "{r:?}");
    // Drain, then the full ring accepts again.
    while server.try_recv(&mut buf[..]).is_ok() || server.try_recv_with(|_| ()).is_ok() {}
    client.send_timeout(&[0u8; 100], Duration::from_secs(5)).unwrap();
}

#[test]
fn zero_copy_send_and_receive() {
    let (_l, mut server, mut client) = pair(StreamConfig::default());
    let n = client
        .send_with(1000, |buf| {
            buf[..5].copy_from_slice(b"hello");
            5
        })
        .unwrap();
    assert_eq!(n, 5, "only the bytes the closure reported are published");
    assert_eq!(server.recv_with(|b| b.to_vec()).unwrap(), b"hello");
    client.send(b"").unwrap();
    assert_eq!(server.recv_with(|b| b.len()).unwrap(), 0, "empty messages are messages");
}

#[test]
fn closing_one_side_ends_the_other_with_peer_gone() {
    let (_l, mut server, mut client) = pair(StreamConfig::default());
    client.send(b"last words").unwrap();
    drop(client);
    let mut buf = [0u8; 32];
    assert_eq!(server.recv(&mut buf).unwrap(), 10, "queued messages are delivered first");
    let t = std::time::Instant::now();
    assert!(matches!(server.recv(&mut buf), Err(IpcError::PeerGone)));
    eprintln!("clean close noticed in {:?}", t.elapsed());
}

#[test]
fn version_mismatch_is_refused_and_the_listener_goes_on() {
    let name = unique_name("version");
    let listener = Arc::new(BlockingSharedMemoryListener::bind(&name).unwrap());
    // Detached, not scoped: a failed assertion must fail the test, not leave a scope waiting
    // for an accept no client makes.
    let accepted = std::thread::spawn({
        let listener = Arc::clone(&listener);
        move || listener.accept().map(|s| s.peer_pid())
    });
    let mut sock = raw_connect(listener.path());
    let mut hello = [0u8; 24];
    hello[..8].copy_from_slice(b"LAPCHELO");
    hello[8..12].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    sock.write_all(&raw_message(&hello)).unwrap();
    let mut answer = [0u8; 48 + HANDLE_TRAILER];
    sock.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[..8], b"LAPCSRVR");
    assert_eq!(u32::from_le_bytes(answer[12..16].try_into().unwrap()), 1, "status: version mismatch");
    assert_eq!(sock.read(&mut [0u8; 8]).unwrap(), 0, "the server closes a refused connection");

    // The same accept call goes on to the next, well-behaved client.
    let _client = BlockingSharedMemoryStream::connect(&name).unwrap();
    assert_eq!(accepted.join().unwrap().unwrap(), std::process::id());
    let lapce_ipc::Rejected { count, last } = listener.rejected();
    assert_eq!(count, 1);
    assert!(last.unwrap().contains("version mismatch"));
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let name = unique_name("silent");
    let cfg = StreamConfig { handshake_timeout: Duration::from_millis(100), ..StreamConfig::default() };
    let listener = BlockingSharedMemoryListener::bind_with(&name, cfg).unwrap();
    let _silent = raw_connect(listener.path());
    let client = std::thread::spawn(move || BlockingSharedMemoryStream::connect(&name).map(|_| ()));
    listener.accept().unwrap();
    client.join().unwrap().unwrap();
    let lapce_ipc::Rejected { count, last } = listener.rejected();
    assert_eq!(count, 1);
    assert!(last.unwrap().contains("timed out"));
}

/// The last messages of a peer that closes right after sending are delivered, then `PeerGone`,
/// in both flavours, however the wake-ups race (repeated to cover the interleavings).
#[test]
fn last_words_then_peer_gone_blocking_and_async() {
    const N: usize = 3;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for round in 0..40 {
        let name = unique_name("last-words");
        let asynchronous = round % 2 == 1;
        let talker = {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut s = common::connect_retry(&name);
                // Let the server go to sleep first, sometimes.
                std::thread::sleep(Duration::from_micros(round as u64 * 50));
                for i in 0..N {
                    s.send(&[i as u8; 16]).unwrap();
                }
            })
        };
        let mut buf = [0u8; 64];
        let (got, end) = if asynchronous {
            rt.block_on(async {
                let listener = lapce_ipc::SharedMemoryListener::bind(&name).unwrap();
                let mut s = listener.accept().await.unwrap();
                let mut got = 0;
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), s.recv(&mut buf)).await {
                        Ok(Ok(_)) => got += 1,
                        Ok(Err(e)) => break (got, e),
                        Err(_) => panic!("async recv hung after {got} messages"),
                    }
                }
            })
        } else {
            let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
            let mut s = listener.accept().unwrap();
            let mut got = 0;
            loop {
                match s.recv_timeout(&mut buf, Duration::from_secs(30)) {
                    Ok(_) => got += 1,
                    Err(e) => break (got, e),
                }
            }
        };
        talker.join().unwrap();
        assert_eq!(got, N, "round {round}: messages lost");
        assert!(matches!(end, IpcError::PeerGone), "round {round}: {end}");
    }
}

#[test]
fn huge_timeouts_mean_no_deadline() {
    let (_l, mut server, mut client) = pair(StreamConfig::default());
    client.send_timeout(b"x", Duration::MAX).unwrap();
    assert_eq!(server.recv_timeout(&mut [0u8; 4], Duration::MAX).unwrap(), 1);
}

/// Unix only: the impostor is a plain Unix-socket server.
#[cfg(unix)]
#[test]
fn a_client_gets_a_clear_error_from_a_server_that_is_not_lapce_ipc() {
    let name = unique_name("impostor");
    let path = lapce_ipc::socket_path(&name).unwrap();
    let impostor = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = impostor.accept().unwrap();
        s.write_all(&[0x42; 48]).unwrap();
        let _ = s.read(&mut [0u8; 64]);
    });
    let err = BlockingSharedMemoryStream::connect(&name).err().unwrap();
    assert!(matches!(err, IpcError::Handshake(_)), "{err}");
    server.join().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bind_errors_name_the_path_and_stale_sockets_are_replaced() {
    let name = unique_name("bind");
    let first = BlockingSharedMemoryListener::bind(&name).unwrap();
    match BlockingSharedMemoryListener::bind(&name) {
        Err(IpcError::Bind { path, source }) => {
            assert_eq!(path, first.path());
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            // On Unix the live listener's pid is known (SO_PEERCRED of a probe connection).
            if cfg!(unix) {
                let pid = format!("pid {}", std::process::id());
                assert!(source.to_string().contains(&pid), "{source}");
            }
        }
        other => panic!("second bind of a live name: {:?}", other.err()),
    }
    #[cfg(unix)]
    let path = first.path().to_path_buf();
    drop(first);
    #[cfg(unix)]
    {
        assert!(!path.exists());
        // A socket file left by a crashed process (std's listener does not unlink on drop).
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let replaced = BlockingSharedMemoryListener::bind(&name).unwrap();
        drop(replaced);
        assert!(!path.exists());
    }
    // A pipe name is free again as soon as its listener is gone.
    #[cfg(windows)]
    drop(BlockingSharedMemoryListener::bind(&name).unwrap());

    assert!(matches!(BlockingSharedMemoryStream::connect(&name), Err(IpcError::Connect { .. })));
    // On Unix a 100-character name is valid but makes the socket path longer than 107 bytes.
    let too_long_for_unix = if cfg!(unix) { "y".repeat(100) } else { String::new() };
    for bad in ["", "a/b", ".hidden", "space name", &"x".repeat(101), &too_long_for_unix] {
        assert!(
            matches!(BlockingSharedMemoryListener::bind(bad), Err(IpcError::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    let bad_ring = StreamConfig { ring_capacity: 5000, ..StreamConfig::default() };
    assert!(matches!(
        BlockingSharedMemoryListener::bind_with(&name, bad_ring),
        Err(IpcError::InvalidArgument(_))
    ));
}
