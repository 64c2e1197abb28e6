//! In-process tests of the ring: record layout, wrap-around, limits, and every way a peer can
//! corrupt the shared header or records.

use std::sync::Arc;

use super::protocol::{record_size, RingHeader, KIND_DATA, KIND_PADDING};
use super::*;
use crate::platform::Segment;

const CAP: usize = 4096;

/// A ring alone at the start of its segment.
const AT0: RingPlace = RingPlace { header: 0, data: RING_HEADER_SPAN };

fn ring(capacity: usize) -> (Arc<Segment>, Producer, Consumer) {
    let seg = Arc::new(Segment::create("ring-test", ring_footprint(capacity)).unwrap().0);
    let region: Arc<dyn SharedRegion> = seg.clone();
    init_ring(&region, AT0, capacity).unwrap();
    let p = Producer::attach(region.clone(), AT0, capacity).unwrap();
    let c = Consumer::attach(region, AT0, capacity).unwrap();
    (seg, p, c)
}

fn write(p: &mut Producer, bytes: &[u8]) -> bool {
    match p.try_reserve(bytes.len()).unwrap() {
        Some(buf) => {
            buf.copy_from_slice(bytes);
            p.commit(bytes.len());
            true
        }
        None => false,
    }
}

fn read(c: &mut Consumer) -> Option<Vec<u8>> {
    let v = c.try_peek().unwrap().map(<[u8]>::to_vec);
    if v.is_some() {
        c.release();
    }
    v
}

/// The header of the ring at offset 0 of `seg`, to play a hostile peer.
fn header(seg: &Segment) -> &RingHeader {
    // SAFETY: test-only view of the shared header of a live, page-aligned mapping that is at
    // least a ring footprint long; the header consists of atomics only.
    unsafe { &*(seg.as_ptr() as *const RingHeader) }
}

fn data_word(seg: &Segment, off: usize) -> &atomic::AtomicU32 {
    assert!(off + 4 <= CAP);
    // SAFETY: test-only; a 4-aligned word inside the data area of a live mapping (asserted).
    unsafe { &*(seg.as_ptr().add(RING_HEADER_SPAN + off) as *const atomic::AtomicU32) }
}

#[test]
fn record_sizes_are_8_aligned() {
    assert_eq!(record_size(0), 8);
    assert_eq!(record_size(1), 16);
    assert_eq!(record_size(8), 16);
    assert_eq!(record_size(9), 24);
    assert_eq!(max_message(CAP), CAP / 2 - 8);
}

#[test]
fn roundtrip_in_order_including_empty_messages() {
    let (_s, mut p, mut c) = ring(CAP);
    assert_eq!(read(&mut c), None);
    for m in [&b""[..], b"a", b"hello world", &[7u8; 100]] {
        assert!(write(&mut p, m));
    }
    assert_eq!(read(&mut c).unwrap(), b"");
    assert_eq!(read(&mut c).unwrap(), b"a");
    assert_eq!(read(&mut c).unwrap(), b"hello world");
    assert_eq!(read(&mut c).unwrap(), vec![7u8; 100]);
    assert_eq!(read(&mut c), None);
}

#[test]
fn fills_up_then_frees_space() {
    let (_s, mut p, mut c) = ring(CAP);
    let msg = [1u8; 56]; // 64-byte records: exactly CAP / 64 fit
    let mut n = 0;
    while write(&mut p, &msg) {
        n += 1;
    }
    assert_eq!(n, CAP / 64);
    assert!(read(&mut c).is_some());
    assert!(write(&mut p, &msg), "a released record makes room");
    assert!(!write(&mut p, &msg));
}

#[test]
fn wraps_with_padding_and_keeps_records_contiguous() {
    let (_s, mut p, mut c) = ring(CAP);
    let mut next = 0u32;
    let mut expect = 0u32;
    // Sizes chosen so that records straddle the end of the area many times.
    for round in 0..2000 {
        let len = (round * 37) % (max_message(CAP) + 1);
        let msg: Vec<u8> = (0..len).map(|i| (next as usize + i) as u8).collect();
        while !write(&mut p, &msg) {
            let got = read(&mut c).expect("full ring must have data");
            assert_eq!(got.first().copied().unwrap_or(expect as u8), expect as u8);
            expect = expect.wrapping_add(1);
        }
        next = next.wrapping_add(1);
        let _ = round;
    }
    while read(&mut c).is_some() {}
}

#[test]
fn oversized_message_is_refused_before_writing() {
    let (_s, mut p, mut c) = ring(CAP);
    let err = p.try_reserve(max_message(CAP) + 1).unwrap_err();
    assert!(matches!(err, IpcError::MessageTooLarge { .. }), "{err}");
    assert!(write(&mut p, &vec![9u8; max_message(CAP)]));
    assert_eq!(read(&mut c).unwrap().len(), max_message(CAP));
}

#[test]
fn peek_is_stable_until_release() {
    let (_s, mut p, mut c) = ring(CAP);
    write(&mut p, b"one");
    write(&mut p, b"two");
    assert_eq!(c.try_peek().unwrap().unwrap(), b"one");
    assert_eq!(c.try_peek().unwrap().unwrap(), b"one");
    c.release();
    assert_eq!(c.try_peek().unwrap().unwrap(), b"two");
}

#[test]
fn attach_validates_the_header() {
    let seg = Arc::new(Segment::create("ring-test", ring_footprint(2 * CAP)).unwrap().0);
    let region: Arc<dyn SharedRegion> = seg.clone();
    // Never initialised: no magic.
    assert!(matches!(Consumer::attach(region.clone(), AT0, CAP), Err(IpcError::Corrupted(_))));
    init_ring(&region, AT0, CAP).unwrap();
    // Wrong capacity expectation.
    assert!(matches!(Producer::attach(region.clone(), AT0, CAP * 2), Err(IpcError::Corrupted(_))));
    // Does not fit the region.
    assert!(matches!(Producer::attach(region.clone(), AT0, CAP * 4), Err(IpcError::InvalidArgument(_))));
    assert!(matches!(
        Producer::attach(region.clone(), RingPlace::alone(100), CAP),
        Err(IpcError::InvalidArgument(_))
    ));
    // Positions out of range.
    header(&seg).write_pos.0.store(CAP as u64 + 8, atomic::Ordering::Relaxed);
    assert!(matches!(Consumer::attach(region, AT0, CAP), Err(IpcError::Corrupted(_))));
}

/// A ring's header and data area must be aligned, inside the region and apart from each other;
/// two rings may share a header page.
#[test]
fn placements_are_checked_and_headers_may_share_a_page() {
    let seg = Arc::new(Segment::create("ring-test", RING_HEADER_SPAN + 2 * CAP).unwrap().0);
    let region: Arc<dyn SharedRegion> = seg.clone();
    let bad = |header, data| {
        let place = RingPlace { header, data };
        matches!(init_ring(&region, place, CAP), Err(IpcError::InvalidArgument(_)))
    };
    assert!(bad(64, RING_HEADER_SPAN), "header not aligned for RingHeader");
    assert!(bad(0, RING_HEADER_SPAN + 8), "data area not page aligned");
    assert!(bad(0, 0), "header inside the data area");
    assert!(bad(RING_HEADER_SPAN + CAP - 128, RING_HEADER_SPAN), "header overlapping the data's end");
    assert!(bad(0, RING_HEADER_SPAN + 2 * CAP), "data area past the region");
    assert!(bad(RING_HEADER_SPAN + 2 * CAP - 128, RING_HEADER_SPAN), "header past the region");
    // Header after the data area is fine, and so are two headers in one page.
    let a = RingPlace { header: 0, data: RING_HEADER_SPAN };
    let b = RingPlace { header: 2048, data: RING_HEADER_SPAN + CAP };
    init_ring(&region, a, CAP).unwrap();
    init_ring(&region, b, CAP).unwrap();
    let (mut pa, mut ca) = (
        Producer::attach(region.clone(), a, CAP).unwrap(),
        Consumer::attach(region.clone(), a, CAP).unwrap(),
    );
    let (mut pb, mut cb) =
        (Producer::attach(region.clone(), b, CAP).unwrap(), Consumer::attach(region, b, CAP).unwrap());
    for i in 0..3 * CAP / 64 {
        write(&mut pa, &[i as u8; 40]);
        write(&mut pb, &[!(i as u8); 40]);
        assert_eq!(ca.try_peek().unwrap().unwrap(), [i as u8; 40]);
        ca.release();
        assert_eq!(cb.try_peek().unwrap().unwrap(), [!(i as u8); 40]);
        cb.release();
    }
}

#[test]
fn capacity_must_be_a_power_of_two_in_range() {
    assert!(check_capacity(4096).is_ok());
    assert!(check_capacity(1 << 20).is_ok());
    for bad in [0, 1000, 2048, 4097, 3 * 4096, MAX_CAPACITY * 2] {
        assert!(check_capacity(bad).is_err(), "{bad}");
    }
}

/// Every kind of garbage a hostile producer can publish ends in `Corrupted`, and the consumer
/// stays broken (no later read trusts the ring again).
#[test]
fn consumer_rejects_corrupt_records_and_positions() {
    type Scribble = fn(&Segment);
    let cases: [(&str, Scribble); 7] = [
        ("write_pos beyond a capacity", |s| {
            header(s).write_pos.0.store(CAP as u64 + 64, atomic::Ordering::Relaxed)
        }),
        ("write_pos unaligned", |s| header(s).write_pos.0.store(13, atomic::Ordering::Relaxed)),
        ("unknown kind", |s| data_word(s, 4).store(0xdead, atomic::Ordering::Relaxed)),
        ("length past published bytes", |s| data_word(s, 0).store(200, atomic::Ordering::Relaxed)),
        ("length past the record limit", |s| data_word(s, 0).store(u32::MAX, atomic::Ordering::Relaxed)),
        ("padding not reaching the end", |s| {
            data_word(s, 0).store(8, atomic::Ordering::Relaxed);
            data_word(s, 4).store(KIND_PADDING, atomic::Ordering::Relaxed);
        }),
        ("padding beyond published bytes", |s| {
            data_word(s, 0).store(CAP as u32 - 8, atomic::Ordering::Relaxed);
            data_word(s, 4).store(KIND_PADDING, atomic::Ordering::Relaxed);
        }),
    ];
    for (what, scribble) in cases {
        let (seg, mut p, mut c) = ring(CAP);
        write(&mut p, b"0123456789abcdef");
        scribble(&seg);
        assert!(matches!(c.try_peek(), Err(IpcError::Corrupted(_))), "{what}: not detected");
        assert!(matches!(c.try_peek(), Err(IpcError::Corrupted(_))), "{what}: ring usable again");
    }
}

#[test]
fn consumer_rejects_write_pos_going_back() {
    let (seg, mut p, mut c) = ring(CAP);
    write(&mut p, b"abc");
    write(&mut p, b"def");
    assert_eq!(read(&mut c).unwrap(), b"abc");
    header(&seg).write_pos.0.store(0, atomic::Ordering::Relaxed);
    // The second record is still cached as published; the regression shows at the next refresh.
    assert_eq!(read(&mut c).unwrap(), b"def");
    assert!(matches!(c.try_peek(), Err(IpcError::Corrupted(_))));
}

#[test]
fn producer_rejects_corrupt_read_position() {
    let (seg, mut p, _c) = ring(CAP);
    let msg = [0u8; 56];
    while write(&mut p, &msg) {}
    // A consumer claiming to have read more than was written.
    header(&seg).read_pos.0.store(CAP as u64 * 4, atomic::Ordering::Relaxed);
    assert!(matches!(p.try_reserve(56), Err(IpcError::Corrupted(_))));
    assert!(matches!(p.try_reserve(0), Err(IpcError::Corrupted(_))));
}

#[test]
fn a_valid_record_written_by_hand_is_accepted() {
    // Guards the corruption tests above: the scribbles differ from a valid layout only where
    // they claim to.
    let (seg, _p, mut c) = ring(CAP);
    data_word(&seg, 0).store(3, atomic::Ordering::Relaxed);
    data_word(&seg, 4).store(KIND_DATA, atomic::Ordering::Relaxed);
    header(&seg).write_pos.0.store(16, atomic::Ordering::Release);
    assert_eq!(c.try_peek().unwrap().unwrap().len(), 3);
}

/// The offsets and constants docs/PROTOCOL.md §4-5 promises.
#[test]
fn layout_matches_protocol_md() {
    use std::mem::offset_of;
    assert_eq!(offset_of!(RingHeader, magic), 0);
    assert_eq!(offset_of!(RingHeader, capacity), 128);
    assert_eq!(offset_of!(RingHeader, write_pos), 256);
    assert_eq!(offset_of!(RingHeader, read_pos), 384);
    assert_eq!(offset_of!(RingHeader, data_waiter), 512);
    assert_eq!(offset_of!(RingHeader, space_waiter), 640);
    assert_eq!(std::mem::size_of::<RingHeader>(), 768);
    assert_eq!(&protocol::RING_MAGIC.to_le_bytes(), b"LAPCRNG1");
    assert_eq!((KIND_DATA, KIND_PADDING), (1, 2));
    assert_eq!((AWAKE, SLEEPS_FUTEX, SLEEPS_DOORBELL), (0, 1, 2));
    assert_eq!(RING_HEADER_SPAN, 4096);
    assert_eq!(ring_footprint(1 << 16), 4096 + (1 << 16));
}

/// Random garbage in the header and the data area, thousands of times: the consumer and the
/// producer either work or report `Corrupted`; they never panic (every slice they hand out is
/// bounds-checked with an assertion, so an escaped bad length would panic here).
#[test]
fn random_garbage_never_panics_or_escapes_the_ring() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (mut corrupted, mut delivered) = (0u32, 0u64);
    for _ in 0..5_000 {
        let (seg, mut p, mut c) = ring(CAP);
        for _ in 0..(next() % 8) {
            let len = (next() % 600) as usize;
            write(&mut p, &vec![0xAB; len]);
        }
        for _ in 0..(1 + next() % 4) {
            let v = next();
            match next() % 6 {
                0 => header(&seg).write_pos.0.store(v % (4 * CAP as u64), atomic::Ordering::Relaxed),
                1 => header(&seg).write_pos.0.store(v, atomic::Ordering::Relaxed),
                2 => header(&seg).read_pos.0.store(v % (4 * CAP as u64), atomic::Ordering::Relaxed),
                3 => data_word(&seg, (next() % (CAP as u64 / 4)) as usize * 4)
                    .store(v as u32, atomic::Ordering::Relaxed),
                4 => data_word(&seg, (next() % (CAP as u64 / 8)) as usize * 8)
                    .store((v % (CAP as u64)) as u32, atomic::Ordering::Relaxed),
                _ => data_word(&seg, (next() % (CAP as u64 / 8)) as usize * 8 + 4)
                    .store((v % 4) as u32, atomic::Ordering::Relaxed),
            }
        }
        for _ in 0..64 {
            match c.try_peek() {
                Ok(Some(bytes)) => {
                    assert!(bytes.len() <= max_message(CAP));
                    delivered += 1;
                    c.release();
                }
                Ok(None) => break,
                Err(IpcError::Corrupted(_)) => {
                    corrupted += 1;
                    break;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        match p.try_reserve((next() % 600) as usize) {
            Ok(_) | Err(IpcError::Corrupted(_)) => p.abort(),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(corrupted > 1000, "the garbage rarely hit validation ({corrupted}); the test lost its teeth");
    assert!(delivered > 1000, "valid records were rarely delivered ({delivered})");
}

/// Positions near `u64::MAX` written by a hostile peer are corruption, not an overflow panic in
/// the producer's arithmetic (regression for the `ring_consumer` fuzz finding).
#[test]
fn positions_near_the_top_of_u64_are_rejected() {
    for top in [u64::MAX - 7, protocol::MAX_POSITION + 8] {
        let (seg, _p, _c) = ring(CAP);
        let region: Arc<dyn SharedRegion> = seg.clone();
        header(&seg).read_pos.0.store(top, atomic::Ordering::Relaxed);
        header(&seg).write_pos.0.store(top, atomic::Ordering::Relaxed);
        assert!(
            matches!(Producer::attach(region.clone(), AT0, CAP), Err(IpcError::Corrupted(_))),
            "{top:#x}"
        );
        assert!(matches!(Consumer::attach(region, AT0, CAP), Err(IpcError::Corrupted(_))), "{top:#x}");
    }
    // A live producer whose consumer claims such a position.
    let (seg, mut p, _c) = ring(CAP);
    while write(&mut p, &[0u8; 56]) {}
    header(&seg).read_pos.0.store(u64::MAX - 7, atomic::Ordering::Relaxed);
    assert!(matches!(p.try_reserve(56), Err(IpcError::Corrupted(_))));
}

/// A gauge reads both positions and this side's record count as they move, from either end, and
/// refuses positions no honest peer writes.
#[test]
fn gauge_follows_the_positions_and_refuses_impossible_ones() {
    let (seg, mut p, mut c) = ring(CAP);
    let (written_by, read_by) = (p.gauge(), c.gauge());
    let empty = RingLevels { written: 0, read: 0, capacity: CAP as u64, records: 0 };
    assert_eq!(written_by.levels(), Some(empty));
    assert!(write(&mut p, &[7; 100]) && write(&mut p, &[8; 200]));
    let two = written_by.levels().unwrap();
    let size = record_size(100) + record_size(200);
    assert_eq!((two.written, two.read, two.records), (size, 0, 2));
    assert!((two.occupancy() - size as f64 / CAP as f64).abs() < 1e-12);
    assert_eq!(read(&mut c).unwrap(), vec![7; 100]);
    let one_read = read_by.levels().unwrap();
    assert_eq!((one_read.written, one_read.read, one_read.records), (size, record_size(100), 1));
    // A peer's scribbles: the read position past the write position, then positions further
    // apart than the ring holds.
    let h = header(&seg);
    h.read_pos.0.store(size + 8, atomic::Ordering::Relaxed);
    assert_eq!(written_by.levels(), None);
    h.read_pos.0.store(0, atomic::Ordering::Relaxed);
    h.write_pos.0.store(2 * CAP as u64, atomic::Ordering::Relaxed);
    assert_eq!(read_by.levels(), None);
}
