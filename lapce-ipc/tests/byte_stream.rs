//! The byte-stream mode across processes: a large transfer read in arbitrary pieces, EOF when
//! the peer shuts down or closes, and a `copy_bidirectional` proxy in front of an echo.

use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{child_role, connect_retry, unique_name, ChildGuard, Rng};
use lapce_ipc::{
    BlockingByteStream, BlockingSharedMemoryListener, ByteStream, IpcError, SharedMemoryListener,
    SharedMemoryStream, StreamConfig, BYTE_RECORD_MAX,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HANG: Duration = Duration::from_secs(60);
/// More than a hundred times the ring, so the writer waits for the reader many times over.
const LARGE: usize = 24 << 20;
/// A small ring: 64 KiB, records of at most 32 KiB minus 8.
const RING: usize = 64 << 10;

/// Byte `i` of the transfers: not periodic in any record or read size.
fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 20) as u8
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    match role.as_str() {
        "byte-writer" => write_large(&name),
        "byte-close" => write_then_vanish(&name),
        "byte-proxy-echo" => proxy_echo(&name),
        other => panic!("unknown role {other}"),
    }
}

/// Writes `LARGE` bytes in writes of random sizes, shuts down, then reads what the parent
/// sends back (a short confirmation) to the end.
fn write_large(name: &str) {
    let mut bytes = BlockingByteStream::new(connect_retry(name));
    let mut rng = Rng(7);
    let mut sent = 0;
    while sent < LARGE {
        let len = (1 + rng.below(3 * BYTE_RECORD_MAX as u64) as usize).min(LARGE - sent);
        let chunk: Vec<u8> = (sent..sent + len).map(byte_at).collect();
        bytes.write_all(&chunk).unwrap();
        sent += len;
    }
    bytes.flush().unwrap();
    bytes.shutdown_write().unwrap();
    assert!(bytes.write(b"late").is_err(), "a write after shutdown must fail");
    let mut reply = Vec::new();
    bytes.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"all read");
}

/// Writes a few bytes, then leaves without a shutdown or a drop: the connection closes when
/// the process exits.
fn write_then_vanish(name: &str) {
    let mut bytes = BlockingByteStream::new(connect_retry(name));
    bytes.write_all(b"last words").unwrap();
    std::mem::forget(bytes);
    std::process::exit(0);
}

#[test]
fn a_large_transfer_read_in_arbitrary_pieces_arrives_intact() {
    let name = unique_name("bytes-large");
    let config = StreamConfig { ring_capacity: RING, ..Default::default() };
    let listener = BlockingSharedMemoryListener::bind_with(&name, config).unwrap();
    let mut child = ChildGuard::spawn("byte-writer", &name);
    let mut bytes = BlockingByteStream::new(listener.accept().unwrap());
    let mut rng = Rng(11);
    let mut buf = vec![0u8; 200_000];
    let mut got = 0;
    loop {
        // Reads of 1 byte to more than six records, most of them splitting records.
        let want = 1 + rng.below(buf.len() as u64) as usize;
        let n = bytes.read(&mut buf[..want]).unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= want);
        for (k, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, byte_at(got + k), "byte {} altered", got + k);
        }
        got += n;
    }
    assert_eq!(got, LARGE, "EOF came after {got} of {LARGE} bytes");
    assert_eq!(bytes.read(&mut buf).unwrap(), 0, "EOF stays EOF");
    bytes.write_all(b"all read").unwrap();
    drop(bytes);
    child.wait_success(HANG);
}

#[test]
fn eof_when_the_peer_closes_without_a_shutdown() {
    let name = unique_name("bytes-close");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut child = ChildGuard::spawn("byte-close", &name);
    let mut bytes = BlockingByteStream::new(listener.accept().unwrap());
    let mut got = Vec::new();
    bytes.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words", "what the peer wrote before it went is read first");
    assert_eq!(bytes.read(&mut [0u8; 8]).unwrap(), 0);
    let err = bytes.write(b"anyone?").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    child.wait_success(HANG);
}

/// A proxy as hyper or tonic would put in front of a service: `copy_bidirectional` between the
/// shared-memory byte stream and an in-process duplex pipe whose other end echoes. EOF travels
/// both ways through it.
fn proxy_echo(name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listener = SharedMemoryListener::bind(name).unwrap();
        let mut shm = ByteStream::new(listener.accept().await.unwrap());
        let (mut near, far) = tokio::io::duplex(16 << 10);
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(far);
            let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
            n
        });
        let (up, down) = tokio::io::copy_bidirectional(&mut shm, &mut near).await.unwrap();
        assert_eq!((up, down), (ECHOED as u64, ECHOED as u64), "bytes each way");
        assert_eq!(echo.await.unwrap(), ECHOED as u64);
    });
}

/// Bytes through the proxy and back.
const ECHOED: usize = 3 << 20;

#[test]
fn copy_bidirectional_proxies_an_echo_with_eof_both_ways() {
    let name = unique_name("bytes-proxy");
    let mut child = ChildGuard::spawn("byte-proxy-echo", &name).listening_on(&name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let stream = loop {
            match SharedMemoryStream::connect(&name).await {
                Ok(s) => break s,
                Err(IpcError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => panic!("connect: {e}"),
            }
        };
        let (mut w, mut r) = ByteStream::new(stream).into_split();
        let writer = tokio::spawn(async move {
            let mut rng = Rng(3);
            let mut sent = 0;
            while sent < ECHOED {
                let len = (1 + rng.below(100_000) as usize).min(ECHOED - sent);
                let chunk: Vec<u8> = (sent..sent + len).map(byte_at).collect();
                w.write_all(&chunk).await.unwrap();
                sent += len;
            }
            w.flush().await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut rng = Rng(5);
        let mut buf = vec![0u8; 70_000];
        let mut got = 0;
        loop {
            let want = 1 + rng.below(buf.len() as u64) as usize;
            let n =
                tokio::time::timeout(HANG, r.read(&mut buf[..want])).await.expect("echo stalled").unwrap();
            if n == 0 {
                break;
            }
            assert!(
                buf[..n].iter().enumerate().all(|(k, &b)| b == byte_at(got + k)),
                "echo altered near {got}"
            );
            got += n;
        }
        assert_eq!(got, ECHOED, "EOF came after {got} of {ECHOED} bytes");
        writer.await.unwrap();
    });
    child.wait_success(HANG);
}

#[test]
fn byte_streams_debug_without_their_bytes() {
    let name = unique_name("bytes-debug");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut child = ChildGuard::spawn("byte-close", &name);
    let bytes = BlockingByteStream::new(listener.accept().unwrap());
    let shown = format!("{bytes:?} {listener:?}");
    assert!(shown.contains("peer_pid") && shown.contains("eof: false"), "{shown}");
    assert!(shown.contains(&name), "the listener shows its path: {shown}");
    drop(bytes);
    child.wait_success(HANG);
}
