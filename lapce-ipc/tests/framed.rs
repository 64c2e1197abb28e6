//! The framed stream across processes: large messages fragmented and reassembled, limits,
//! unknown types, and a corrupted frame.

use crate::common;

use std::time::Duration;

use common::{child_role, connect_retry, message, unique_name, ChildGuard};
use lapce_ipc::frame::{
    BlockingFramedStream, CanonicalHeader, Frame, FrameError, FramedStream, MessageType, HEADER_LEN,
};
use lapce_ipc::{
    BlockingSharedMemoryListener, BlockingSharedMemoryStream, IpcError, SharedMemoryListener, StreamConfig,
};

const HANG: Duration = Duration::from_secs(60);
const BIG: usize = 10 << 20;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "framed-sender");
    let mut framed = BlockingFramedStream::new(connect_retry(&name));
    let mut big = Vec::new();
    message(42, 0, BIG, &mut big);
    big.resize(BIG, 0xAB); // exactly 10 MiB
                           // 1. A 10 MiB message, then small ones around an empty one.
    assert_eq!(framed.send(MessageType::Data, &big).unwrap(), 1);
    assert_eq!(framed.send(MessageType::Chat, b"hello").unwrap(), 2);
    framed.send_with_id(MessageType::Response, 99, b"").unwrap();
    // 2. A type this build does not know.
    framed.send(MessageType::Unknown(0x777), b"from the future").unwrap();
    // 3. Larger than the receiver's limit (the parent lowers it to 1 MiB first).
    framed.send(MessageType::Data, &big[..(1 << 20) + 1]).unwrap();
    // 4. A frame with a bad CRC, written raw on the underlying stream.
    let mut header = CanonicalHeader::for_payload(MessageType::Data, 7, b"payload", true);
    header.crc32 ^= 1;
    let mut record = header.encode().to_vec();
    record.extend_from_slice(b"payload");
    framed.get_mut().send(&record).unwrap();
    // Wait for the parent to finish reading.
    let _ = framed.get_mut().recv_timeout(&mut [0u8; 4], HANG);
}

#[test]
fn ten_mib_through_a_256_kib_ring_limits_unknown_types_and_corruption() {
    let name = unique_name("framed");
    let listener = BlockingSharedMemoryListener::bind_with(
        &name,
        StreamConfig { ring_capacity: 256 << 10, ..Default::default() },
    )
    .unwrap();
    let mut child = ChildGuard::spawn("framed-sender", &name);
    let mut framed = BlockingFramedStream::new(listener.accept().unwrap());
    assert_eq!(framed.max_message_size(), 10 << 20);

    let Frame { kind, id, payload } = framed.recv().unwrap();
    let mut want = Vec::new();
    message(42, 0, BIG, &mut want);
    want.resize(BIG, 0xAB);
    assert_eq!((kind, id, payload.len()), (MessageType::Data, 1, BIG));
    assert!(payload == want, "the 10 MiB message arrived altered");
    assert_eq!(framed.recv().unwrap(), Frame::new(MessageType::Chat, 2, b"hello".to_vec()));
    assert_eq!(framed.recv().unwrap(), Frame::new(MessageType::Response, 99, Vec::new()));
    assert_eq!(
        framed.recv().unwrap(),
        Frame::new(MessageType::Unknown(0x777), 3, b"from the future".to_vec())
    );

    let mut framed = framed.with_max_message(1 << 20);
    let err = framed.recv().unwrap_err();
    assert!(matches!(err, IpcError::Frame(FrameError::TooLong { max, .. }) if max == 1 << 20), "{err}");
    // The stream is closed after a bad frame: the same error again, nothing misattributed.
    assert!(matches!(framed.recv(), Err(IpcError::Frame(FrameError::TooLong { .. }))));
    framed.get_mut().send(b"done").unwrap();
    child.wait_success(HANG);
}

#[test]
fn bad_crc_is_an_error_and_closes_the_framed_stream() {
    let name = unique_name("framed-crc");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let client = std::thread::spawn({
        let name = name.clone();
        move || {
            let mut raw = BlockingSharedMemoryStream::connect(&name).unwrap();
            let mut header = CanonicalHeader::for_payload(MessageType::Data, 7, b"payload", true);
            header.crc32 ^= 1;
            let mut record = header.encode().to_vec();
            record.extend_from_slice(b"payload");
            raw.send(&record).unwrap();
            raw.send(&CanonicalHeader::for_payload(MessageType::Data, 8, b"", true).encode()).unwrap();
            let _ = raw.recv_timeout(&mut [0u8; 4], HANG);
        }
    });
    let mut framed = BlockingFramedStream::new(listener.accept().unwrap());
    let err = framed.recv().unwrap_err();
    assert!(matches!(err, IpcError::Frame(FrameError::CrcMismatch { .. })), "{err}");
    assert!(matches!(framed.recv(), Err(IpcError::Frame(FrameError::CrcMismatch { .. }))), "stays closed");
    framed.get_mut().send(b"done").unwrap();
    client.join().unwrap();
}

#[test]
fn oversized_messages_are_refused_before_anything_is_written() {
    let name = unique_name("framed-big");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let client = std::thread::spawn({
        let name = name.clone();
        move || BlockingSharedMemoryStream::connect(&name).unwrap()
    });
    let mut sender = BlockingFramedStream::new(listener.accept().unwrap()).with_max_message(1000);
    let mut receiver = client.join().unwrap();
    let err = sender.send(MessageType::Data, &[0u8; 1001]).unwrap_err();
    assert!(matches!(err, IpcError::MessageTooLarge { len: 1001, max: 1000 }), "{err}");
    assert!(matches!(receiver.try_recv(&mut [0u8; 2048]), Err(IpcError::WouldBlock)), "nothing was written");
    // Without CRC the header is still there, with a zero CRC field.
    let mut sender = sender.with_crc(false);
    sender.send(MessageType::Data, &[5u8; 1000]).unwrap();
    let (header, len) = receiver.recv_with(|r| (CanonicalHeader::decode(r, 1000).unwrap(), r.len())).unwrap();
    assert_eq!((header.payload_len, header.crc32, len), (1000, 0, HEADER_LEN + 1000));
}

/// The tokio flavour receives the same sequence from the same (blocking) sender process.
#[test]
fn async_framed_stream_receives_the_same_sequence() {
    let name = unique_name("framed-async");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut child = ChildGuard::spawn("framed-sender", &name);
    rt.block_on(async {
        let listener = SharedMemoryListener::bind_with(
            &name,
            StreamConfig { ring_capacity: 256 << 10, ..Default::default() },
        )
        .unwrap();
        let mut framed = FramedStream::new(listener.accept().await.unwrap());
        let Frame { kind, id, payload } = framed.recv().await.unwrap();
        let mut want = Vec::new();
        message(42, 0, BIG, &mut want);
        want.resize(BIG, 0xAB);
        assert_eq!((kind, id), (MessageType::Data, 1));
        assert!(payload == want, "the 10 MiB message arrived altered");
        assert_eq!(framed.recv().await.unwrap(), Frame::new(MessageType::Chat, 2, b"hello".to_vec()));
        assert_eq!(framed.recv().await.unwrap(), Frame::new(MessageType::Response, 99, Vec::new()));
        assert_eq!(
            framed.recv().await.unwrap(),
            Frame::new(MessageType::Unknown(0x777), 3, b"from the future".to_vec())
        );
        let mut framed = framed.with_max_message(1 << 20);
        assert!(matches!(framed.recv().await, Err(IpcError::Frame(FrameError::TooLong { .. }))));
        assert!(matches!(framed.recv().await, Err(IpcError::Frame(FrameError::TooLong { .. }))));
        framed.get_mut().send(b"done").await.unwrap();
    });
    child.wait_success(HANG);
}

/// An async sender's fragments reach a blocking receiver intact (and with CRC off).
#[test]
fn async_framed_sender_to_blocking_receiver() {
    let name = unique_name("framed-async-send");
    let listener = BlockingSharedMemoryListener::bind_with(
        &name,
        StreamConfig { ring_capacity: 4096, ..Default::default() },
    )
    .unwrap();
    let sender = std::thread::spawn({
        let name = name.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let stream = lapce_ipc::SharedMemoryStream::connect(&name).await.unwrap();
                let mut framed = FramedStream::new(stream).with_crc(false);
                let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
                framed.send_with_id(MessageType::StreamChunk, 5, &payload).await.unwrap();
                framed.send(MessageType::StreamEnd, b"").await.unwrap();
                let _ = framed.get_mut().recv_timeout(&mut [0u8; 4], HANG).await;
            });
        }
    });
    let mut framed = BlockingFramedStream::new(listener.accept().unwrap());
    let Frame { kind, id, payload } = framed.recv().unwrap();
    assert_eq!((kind, id, payload.len()), (MessageType::StreamChunk, 5, 100_000));
    assert!(payload.iter().enumerate().all(|(i, &b)| b == (i as u32 * 7) as u8));
    assert_eq!(framed.recv().unwrap(), Frame::new(MessageType::StreamEnd, 1, Vec::new()));
    framed.get_mut().send(b"done").unwrap();
    sender.join().unwrap();
}

/// The split halves of a framed stream: a server echoes each request from its receive half
/// straight into its send half (in place for one-record messages, from the reassembly buffer
/// for fragmented ones, including one larger than the buffer a stream keeps); every shape of
/// message comes back intact with its id, read through one reused buffer.
#[test]
fn split_halves_echo_in_place() {
    let name = unique_name("framed-split");
    let listener = BlockingSharedMemoryListener::bind_with(
        &name,
        StreamConfig { ring_capacity: 64 << 10, ..Default::default() },
    )
    .unwrap();
    let server = std::thread::spawn(move || {
        let (mut tx, mut rx) = BlockingFramedStream::new(listener.accept().unwrap()).into_split();
        assert_eq!((tx.max_message_size(), rx.max_message_size()), (10 << 20, 10 << 20));
        loop {
            match rx.recv_with(|kind, request, id| tx.send_with_id(kind, id, request)) {
                Ok(sent) => sent.unwrap(),
                Err(IpcError::PeerGone) => return,
                Err(e) => panic!("server: {e}"),
            }
        }
    });
    let mut client =
        BlockingFramedStream::new(BlockingSharedMemoryStream::connect(&name).unwrap()).with_crc(false);
    let mut buf = Frame::default();
    for (i, len) in [0usize, 1, 100, 40_000, 100_000, 3 << 19, 10].into_iter().enumerate() {
        let want: Vec<u8> = (0..len).map(|j| (j * 131 + i) as u8).collect();
        let id = client.send(MessageType::StreamChunk, &want).unwrap();
        assert_eq!(id, i as u64 + 1);
        client.recv_into(&mut buf).unwrap();
        assert_eq!((buf.kind, buf.id), (MessageType::StreamChunk, id));
        assert!(buf.payload == want, "message {i} of {len} bytes came back altered");
    }
    drop(client);
    server.join().unwrap();
}

/// The tokio flavour's borrowing and buffer-reusing receives, for one-record and fragmented
/// messages.
#[test]
fn async_recv_with_and_recv_into() {
    let name = unique_name("framed-async-recv");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = rt.block_on(async {
        SharedMemoryListener::bind_with(&name, StreamConfig { ring_capacity: 4096, ..Default::default() })
    });
    let listener = listener.unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
    let sender = std::thread::spawn({
        let big = big.clone();
        move || {
            let mut framed = BlockingFramedStream::new(BlockingSharedMemoryStream::connect(&name).unwrap());
            for payload in [&b"small"[..], &big, &big, b""] {
                framed.send(MessageType::Data, payload).unwrap();
            }
            let _ = framed.get_mut().recv_timeout(&mut [0u8; 4], HANG);
        }
    });
    rt.block_on(async {
        let mut framed = FramedStream::new(listener.accept().await.unwrap());
        let probe = |kind, p: &[u8], id| (kind, p.len(), p.first().copied(), id);
        assert_eq!(framed.recv_with(probe).await.unwrap(), (MessageType::Data, 5, Some(b's'), 1));
        let got = framed.recv_with(|_, p, id| (p == &big[..], id)).await.unwrap();
        assert_eq!(got, (true, 2));
        let mut buf = Frame::new(MessageType::Chat, 0, vec![1u8; 7]);
        framed.recv_into(&mut buf).await.unwrap();
        assert_eq!((buf.kind, buf.id), (MessageType::Data, 3));
        assert!(buf.payload == big);
        framed.recv_into(&mut buf).await.unwrap();
        assert_eq!((buf.kind, buf.id), (MessageType::Data, 4));
        assert!(buf.payload.is_empty());
        framed.get_mut().send(b"done").await.unwrap();
    });
    sender.join().unwrap();
}
