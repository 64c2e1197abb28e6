//! Property tests of the framed stream over real connections (a thread as the peer): random
//! messages through rings of random sizes, received through every receive call, and random
//! damage written as raw records, which must be refused and close the framed stream.
//! The decoder and reassembler themselves are property-tested in process in
//! `src/frame/proptests.rs`.

use crate::common;

use std::thread::JoinHandle;
use std::time::Duration;

use common::unique_name;
use lapce_ipc::frame::{BlockingFramedStream, CanonicalHeader, Frame, FrameError, MessageType, HEADER_LEN};
use lapce_ipc::{BlockingSharedMemoryListener, BlockingSharedMemoryStream, IpcError, StreamConfig};
use proptest::prelude::*;

/// Upper bound on any wait (a lost message fails the test instead of hanging it).
const HANG: Duration = Duration::from_secs(60);

/// Deterministic payload bytes of one message.
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A listener with the given ring, and a peer thread that connects and runs `peer` with the
/// stream; `peer` ends with [`wait_done`].
fn pair(
    ring: usize,
    peer: impl FnOnce(BlockingSharedMemoryStream) + Send + 'static,
) -> (BlockingSharedMemoryStream, JoinHandle<()>) {
    let name = unique_name("frame-props");
    let listener = BlockingSharedMemoryListener::bind_with(
        &name,
        StreamConfig { ring_capacity: ring, ..Default::default() },
    )
    .unwrap();
    let peer = std::thread::spawn(move || peer(BlockingSharedMemoryStream::connect(&name).unwrap()));
    (listener.accept().unwrap(), peer)
}

/// Keeps the peer's stream open until the test says it is done (or gives up, bounded).
fn wait_done(stream: &mut BlockingSharedMemoryStream) {
    let _ = stream.recv_timeout(&mut [0u8; 8], HANG);
}

/// One message of a test: type, length, and which receive call reads it.
#[derive(Debug, Clone)]
struct Msg {
    kind: MessageType,
    len: usize,
    how: Recv,
}

#[derive(Debug, Clone, Copy)]
enum Recv {
    Owned,
    Into,
    InPlace,
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        any::<u16>().prop_map(MessageType::from_u16),
        prop_oneof![0usize..64, 0usize..5000, 0usize..40_000],
        prop::sample::select(vec![Recv::Owned, Recv::Into, Recv::InPlace]),
    )
        .prop_map(|(kind, len, how)| Msg { kind, len, how })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random messages (empty, one record, many fragments) through a ring of 4 to 64 KiB arrive
    /// intact and in order, with their types and ids, whichever receive call reads them (one
    /// reused buffer for `recv_into`).
    #[test]
    fn random_messages_arrive_intact(
        ring in prop::sample::select(vec![4096usize, 8192, 65536]),
        msgs in prop::collection::vec(msg(), 1..12),
        with_crc in any::<bool>(),
    ) {
        let sent = msgs.clone();
        let (stream, peer) = pair(ring, move |stream| {
            let mut framed = BlockingFramedStream::new(stream).with_crc(with_crc);
            for (i, m) in sent.iter().enumerate() {
                let id = framed.send(m.kind, &fill(i as u64, m.len)).unwrap();
                assert_eq!(id, i as u64 + 1);
            }
            wait_done(framed.get_mut());
        });
        let mut framed = BlockingFramedStream::new(stream);
        let mut buf = Frame::default();
        for (i, m) in msgs.iter().enumerate() {
            let want = (m.kind, fill(i as u64, m.len), i as u64 + 1);
            let got = match m.how {
                Recv::Owned => {
                    let f = framed.recv().unwrap();
                    (f.kind, f.payload, f.id)
                }
                Recv::Into => {
                    framed.recv_into(&mut buf).unwrap();
                    (buf.kind, buf.payload.clone(), buf.id)
                }
                Recv::InPlace => framed.recv_with(|kind, p, id| (kind, p.to_vec(), id)).unwrap(),
            };
            prop_assert!(got == want, "message {} ({:?}) arrived altered", i, m);
        }
        framed.get_mut().send(b"done").unwrap();
        peer.join().unwrap();
    }

    /// After `good` intact messages the peer writes one damaged record (payload damage under a
    /// CRC, or a damaged magic, version or length): the intact ones arrive, the damaged one is
    /// refused with the precise error, and the framed stream stays closed with that error.
    #[test]
    fn damaged_records_are_refused_and_close_the_stream(
        good in 0usize..4,
        body in prop::collection::vec(any::<u8>(), 1..2000),
        at in any::<prop::sample::Index>(),
        mask in any::<u32>(),
        field in 0usize..4,
        in_place in any::<bool>(),
    ) {
        let mut record = CanonicalHeader::for_payload(MessageType::Data, 77, &body, true).encode().to_vec();
        record.extend_from_slice(&body);
        match field {
            // A burst of up to 32 bits in the payload (odd mask: the first byte changes).
            0 => {
                let at = HEADER_LEN + at.index(body.len());
                for (b, m) in record[at..].iter_mut().zip((mask | 1).to_le_bytes()) {
                    *b ^= m;
                }
            }
            1 => record[at.index(4)] ^= (mask as u8) | 1,
            2 => record[4] ^= (mask as u8) | 1,
            _ => record[8 + at.index(4)] ^= (mask as u8) | 1,
        }
        let (stream, peer) = pair(4096, move |mut stream| {
            for i in 0..good {
                let h = CanonicalHeader::for_payload(MessageType::Chat, i as u64, b"intact", true);
                let mut ok = h.encode().to_vec();
                ok.extend_from_slice(b"intact");
                stream.send(&ok).unwrap();
            }
            stream.send(&record).unwrap();
            wait_done(&mut stream);
        });
        let mut framed = BlockingFramedStream::new(stream);
        let mut buf = Frame::default();
        let mut next = |framed: &mut BlockingFramedStream| -> Result<(MessageType, Vec<u8>, u64), IpcError> {
            if in_place {
                framed.recv_with(|kind, p, id| (kind, p.to_vec(), id))
            } else {
                framed.recv_into(&mut buf).map(|()| (buf.kind, buf.payload.clone(), buf.id))
            }
        };
        for i in 0..good {
            prop_assert_eq!(next(&mut framed).unwrap(), (MessageType::Chat, b"intact".to_vec(), i as u64));
        }
        let err = next(&mut framed).unwrap_err();
        let precise = match field {
            0 => matches!(err, IpcError::Frame(FrameError::CrcMismatch { .. })),
            1 => matches!(err, IpcError::Frame(FrameError::BadMagic(_))),
            2 => matches!(err, IpcError::Frame(FrameError::UnsupportedVersion(_))),
            _ => matches!(err, IpcError::Frame(FrameError::Truncated { .. })),
        };
        prop_assert!(precise, "field {}: {}", field, err);
        let again = next(&mut framed).unwrap_err();
        prop_assert_eq!(again.to_string(), err.to_string(), "the framed stream stays closed");
        framed.get_mut().send(b"done").unwrap();
        peer.join().unwrap();
    }
}
