//! Property tests of the frame layer, in process: random headers, payloads, fragment sizes and
//! corruption fed to the same decoder, fragmenter and reassembler the framed streams use.
//!
//! What a corruption is guaranteed to produce (the CRC covers the payload only; the header has
//! no checksum of its own, and the ring record's own length frames every record):
//!
//! | damaged | with CRC on | with CRC off |
//! |---|---|---|
//! | payload: up to 3 flipped bits (payloads < 11 KiB), or any burst within 32 bits | `CrcMismatch` | not detected |
//! | payload: wider damage | `CrcMismatch` except with probability 2^-32 | not detected |
//! | record cut short or extended | `Truncated` | `Truncated` |
//! | header magic / version / unknown flag bits | `BadMagic` / `UnsupportedVersion` / `UnknownFlags` | same |
//! | header length field | `Truncated` (the record's length disagrees) or `TooLong` | same |
//! | header CRC field | `CrcMismatch` | not detected (not read) |
//! | header CRC flag cleared | not detected: the payload arrives intact, unchecked | — |
//! | header CRC flag set | — | `CrcMismatch` (unless the payload's CRC is 0) |
//! | header type or id | not detected in a one-record message (delivered with the damaged value, payload intact); a fragment's → `Interleaved` | same |
//! | `MORE_FRAGMENTS` set on a last record | the message waits for the next record, which is refused as `Interleaved` unless it has the same type and id | same |
//! | `MORE_FRAGMENTS` cleared on a non-last fragment | not detected: the message ends early and the rest arrives as another message of the same id | same |
//! | `END_OF_STREAM`, `ERROR` | not detected (the framed streams do not act on them) | same |
//! | fragments reordered within one message | not detected (no sequence number: the ring delivers in order) | same |
//!
//! In short: with CRC on, damaged payload bytes are never delivered as valid (up to the CRC's
//! 2^-32 miss rate for wide damage); damage to the header never produces a damaged payload from
//! a one-record message, but it can change the type or id, and damage to `MORE_FRAGMENTS` can
//! re-cut a fragmented message.

use proptest::prelude::*;

/// `prop_assert!(matches!(value, pattern))`, showing the value when it does not match.
macro_rules! prop_assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)?) => {{
        let value = $value;
        prop_assert!(matches!(value, $pattern $(if $guard)?), "{:?} does not match", value);
    }};
}

use super::header::*;
use super::stream::{fragments, Fed, Reassembly};
use crate::error::IpcError;

/// Any wire type value, known or not.
fn any_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![prop::sample::select(vec![1u16, 2, 3, 4, 5, 6, 7, 0x100, 0x101, 0x102]), any::<u16>(),]
        .prop_map(MessageType::from_u16)
}

/// Any combination of the defined flags.
fn any_flags() -> impl Strategy<Value = FrameFlags> {
    (0u8..16).prop_map(|b| FrameFlags::from_bits(b).expect("defined bits"))
}

/// Random payload bytes of a length in `len`.
fn payload(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len)
}

/// Header followed by payload: one ring record of a framed stream.
fn record(header: &CanonicalHeader, payload: &[u8]) -> Vec<u8> {
    let mut r = header.encode().to_vec();
    r.extend_from_slice(payload);
    r
}

/// Every record `fragments` produces for a message.
fn records(kind: MessageType, id: u64, payload: &[u8], chunk: usize, crc: bool) -> Vec<Vec<u8>> {
    fragments(kind, id, payload, usize::MAX, chunk, crc)
        .expect("under the maximum")
        .map(|f| {
            let mut buf = vec![0u8; f.record_len()];
            assert_eq!(f.write(&mut buf), buf.len());
            buf
        })
        .collect()
}

/// Feeds `records` to a fresh reassembly (copying path) until it completes or fails; `Ok(None)`
/// if the records ran out first.
fn reassemble(records: &[Vec<u8>], max: usize) -> Result<Option<(MessageType, Vec<u8>, u64)>, FrameError> {
    let mut message = Reassembly::new(max);
    let mut out = Vec::new();
    for r in records {
        if let Some((kind, id)) = message.feed(r, &mut out)? {
            return Ok(Some((kind, out, id)));
        }
    }
    Ok(None)
}

/// The same through the in-place path `recv_with` uses.
fn reassemble_in_place(
    records: &[Vec<u8>],
    max: usize,
) -> Result<Option<(MessageType, Vec<u8>, u64)>, FrameError> {
    let mut message = Reassembly::new(max);
    let mut out = Vec::new();
    let mut f = Some(|kind: MessageType, p: &[u8], id: u64| (kind, p.to_vec(), id));
    for r in records {
        match message.feed_in_place(r, &mut out, &mut f)? {
            Fed::InPlace(done) => return Ok(Some(done)),
            Fed::Complete(kind, id) => return Ok(Some((kind, out, id))),
            Fed::More => {}
        }
    }
    Ok(None)
}

/// A corruption of a payload that CRC-32 is guaranteed to catch.
#[derive(Debug, Clone)]
enum Damage {
    /// Flip these bits (distinct, at most 3; CRC-32 has Hamming distance 4 up to 91,607 data
    /// bits, so any 3 flips in a payload under 11 KiB are caught).
    Bits(Vec<usize>),
    /// XOR up to 4 consecutive bytes from this offset with a non-zero mask (a burst within 32
    /// bits: always caught by a degree-32 CRC).
    Burst(usize, u32),
}

fn damage(len: usize) -> impl Strategy<Value = Damage> {
    let bits = len * 8;
    prop_oneof![
        prop::collection::btree_set(0..bits, 1..=3).prop_map(|s| Damage::Bits(s.into_iter().collect())),
        // An odd mask changes the first byte, so there is damage even at the payload's end.
        (0..len, any::<u32>()).prop_map(|(at, mask)| Damage::Burst(at, mask | 1)),
    ]
}

fn apply(damage: &Damage, bytes: &mut [u8]) {
    match damage {
        Damage::Bits(bits) => {
            for &b in bits {
                bytes[b / 8] ^= 1 << (b % 8);
            }
        }
        Damage::Burst(at, mask) => {
            for (byte, m) in bytes[*at..].iter_mut().zip(mask.to_le_bytes()) {
                *byte ^= m;
            }
        }
    }
}

/// A message large enough to be fragmented and the `chunk` it is cut with.
fn fragmented() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (1usize..600).prop_flat_map(|chunk| (payload(2 * chunk + 1..6 * chunk), Just(chunk)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any header encodes and decodes to itself; a payload within the header's limit verifies.
    #[test]
    fn headers_round_trip(
        kind in any_type(),
        flags in any_flags(),
        id in any::<u64>(),
        body in payload(0..4096),
        with_crc in any::<bool>(),
    ) {
        let mut h = CanonicalHeader::for_payload(kind, id, &body, with_crc);
        h.flags = h.flags.with(flags);
        if !with_crc && flags.contains(FrameFlags::CRC) {
            h.crc32 = crc32fast::hash(&body);
        }
        let bytes = h.encode();
        prop_assert_eq!(CanonicalHeader::decode(&bytes, body.len() as u32), Ok(h));
        prop_assert_eq!(h.verify(&body), Ok(()));
        prop_assert_eq!(h.msg_type.to_u16(), kind.to_u16());
        if !body.is_empty() {
            let max = body.len() as u32 - 1;
            prop_assert_eq!(
                CanonicalHeader::decode(&bytes, max),
                Err(FrameError::TooLong { len: body.len() as u32, max })
            );
        }
    }

    /// Arbitrary bytes never panic the decoder or the reassembler; an accepted header is
    /// canonical (re-encodes to the same bytes).
    #[test]
    fn garbage_never_panics(
        bytes in payload(0..2048),
        plausible in any::<bool>(),
        max in any::<u32>(),
        split in any::<prop::sample::Index>(),
    ) {
        let mut bytes = bytes;
        if plausible && bytes.len() >= 6 {
            // Reach the checks after the magic and version.
            bytes[..5].copy_from_slice(&[0x43, 0x50, 0x41, 0x4C, FRAME_VERSION]);
        }
        if let Ok(h) = CanonicalHeader::decode(&bytes, max) {
            prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_LEN]);
            let _ = h.verify(&bytes[HEADER_LEN..]);
        }
        // The same bytes as one record, and cut in two records.
        let at = split.index(bytes.len() + 1);
        let two = [bytes[..at].to_vec(), bytes[at..].to_vec()];
        let _ = reassemble(std::slice::from_ref(&bytes), max as usize);
        let _ = reassemble(&two, max as usize);
        let _ = reassemble_in_place(&two, max as usize);
    }

    /// With CRC on, a damaged payload is always refused with a CRC error, by both receive paths;
    /// with CRC off the same damage goes through (that is the trade the flag makes).
    #[test]
    fn damaged_payloads_are_crc_errors(
        (body, dmg) in payload(1..8192).prop_flat_map(|b| { let n = b.len(); (Just(b), damage(n)) }),
        kind in any_type(),
        id in any::<u64>(),
    ) {
        let mut bad = body.clone();
        apply(&dmg, &mut bad);
        prop_assume!(bad != body);
        let h = CanonicalHeader::for_payload(kind, id, &body, true);
        prop_assert_matches!(h.verify(&bad), Err(FrameError::CrcMismatch { .. }));
        let rec = vec![record(&h, &bad)];
        prop_assert_matches!(reassemble(&rec, usize::MAX), Err(FrameError::CrcMismatch { .. }));
        prop_assert_matches!(reassemble_in_place(&rec, usize::MAX), Err(FrameError::CrcMismatch { .. }));

        let plain = CanonicalHeader::for_payload(kind, id, &body, false);
        prop_assert_eq!(reassemble(&[record(&plain, &bad)], usize::MAX), Ok(Some((kind, bad, id))));
    }

    /// Damage to any one fragment of a fragmented message (CRC on) fails the whole message:
    /// nothing is delivered.
    #[test]
    fn a_damaged_fragment_fails_the_message(
        (body, chunk) in fragmented(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mask in any::<u32>(),
    ) {
        let mut recs = records(MessageType::Data, 9, &body, chunk, true);
        let r = which.index(recs.len());
        let part_len = recs[r].len() - HEADER_LEN;
        apply(&Damage::Burst(at.index(part_len), mask | 1), &mut recs[r][HEADER_LEN..]);
        prop_assert_matches!(reassemble(&recs, usize::MAX), Err(FrameError::CrcMismatch { .. }));
        prop_assert_matches!(reassemble_in_place(&recs, usize::MAX), Err(FrameError::CrcMismatch { .. }));
    }

    /// A record cut short (anywhere, header included) or extended is refused, CRC on or off.
    #[test]
    fn cut_or_extended_records_are_refused(
        body in payload(0..2048),
        cut in any::<prop::sample::Index>(),
        extra in payload(1..64),
        with_crc in any::<bool>(),
    ) {
        let whole = record(&CanonicalHeader::for_payload(MessageType::Data, 1, &body, with_crc), &body);
        let short = [whole[..cut.index(whole.len())].to_vec()];
        prop_assert_matches!(reassemble(&short, usize::MAX), Err(FrameError::Truncated { .. }));
        prop_assert_matches!(reassemble_in_place(&short, usize::MAX), Err(FrameError::Truncated { .. }));
        let mut long = [whole];
        long[0].extend_from_slice(&extra);
        prop_assert_matches!(reassemble(&long, usize::MAX), Err(FrameError::Truncated { .. }));
        prop_assert_matches!(reassemble_in_place(&long, usize::MAX), Err(FrameError::Truncated { .. }));
    }

    /// One damaged header byte of a one-record message (followed by an intact next message):
    /// either a precise error for the field, or (for the fields nothing covers) delivery of
    /// the intact payload with the damaged type or id. A damaged payload is never delivered.
    #[test]
    fn damaged_headers_give_precise_errors_or_an_intact_payload(
        body in payload(0..512),
        kind in any_type(),
        id in 0..u64::MAX,
        with_crc in any::<bool>(),
        offset in 0..HEADER_LEN,
        mask in 1..=u8::MAX,
    ) {
        let h = CanonicalHeader::for_payload(kind, id, &body, with_crc);
        let mut rec = record(&h, &body);
        rec[offset] ^= mask;
        let next = record(&CanonicalHeader::for_payload(kind, id + 1, b"next", with_crc), b"next");
        let recs = [rec.clone(), next];
        for result in [reassemble(&recs, usize::MAX), reassemble_in_place(&recs, usize::MAX)] {
            match offset {
                0..=3 => prop_assert_matches!(result, Err(FrameError::BadMagic(_))),
                4 => prop_assert_eq!(result, Err(FrameError::UnsupportedVersion(FRAME_VERSION ^ mask))),
                5 => {
                    let bits = rec[5];
                    let Some(flags) = FrameFlags::from_bits(bits) else {
                        prop_assert_eq!(result, Err(FrameError::UnknownFlags(bits)));
                        continue;
                    };
                    if flags.contains(FrameFlags::CRC) && !with_crc && crc32fast::hash(&body) != 0 {
                        // Checked against a CRC field of 0.
                        prop_assert_matches!(result, Err(FrameError::CrcMismatch { expected: 0, .. }));
                    } else if flags.contains(FrameFlags::MORE_FRAGMENTS) {
                        // Waits for the next record, which has another id.
                        prop_assert_eq!(result, Err(FrameError::Interleaved { expected: id, got: id + 1 }));
                    } else {
                        // CRC flag cleared (the check is skipped), END_OF_STREAM or ERROR
                        // toggled: delivered as sent.
                        prop_assert_eq!(result, Ok(Some((kind, body.clone(), id))));
                    }
                }
                6..=7 => {
                    let damaged = MessageType::from_u16(u16::from_le_bytes([rec[6], rec[7]]));
                    prop_assert_ne!(damaged, kind);
                    prop_assert_eq!(result, Ok(Some((damaged, body.clone(), id))));
                }
                8..=11 => prop_assert_matches!(result, Err(FrameError::Truncated { .. })),
                12..=19 => {
                    let damaged = u64::from_le_bytes(rec[12..20].try_into().unwrap());
                    prop_assert_ne!(damaged, id);
                    prop_assert_eq!(result, Ok(Some((kind, body.clone(), damaged))));
                }
                _ => {
                    if with_crc {
                        prop_assert_matches!(result, Err(FrameError::CrcMismatch { .. }));
                    } else {
                        prop_assert_eq!(result, Ok(Some((kind, body.clone(), id))));
                    }
                }
            }
        }
    }

    /// Any message, cut at any record size, is reassembled exactly by both receive paths; the
    /// fragments are as the protocol says (sizes, flags, type and id on each).
    #[test]
    fn fragments_reassemble_exactly(
        body in payload(0..40_000),
        chunk in 1usize..5000,
        kind in any_type(),
        id in any::<u64>(),
        with_crc in any::<bool>(),
    ) {
        let recs = records(kind, id, &body, chunk, with_crc);
        prop_assert_eq!(recs.len(), body.len().div_ceil(chunk).max(1));
        for (i, r) in recs.iter().enumerate() {
            let h = CanonicalHeader::decode(r, u32::MAX).unwrap();
            let last = i + 1 == recs.len();
            prop_assert_eq!(h.flags.contains(FrameFlags::MORE_FRAGMENTS), !last);
            prop_assert_eq!(h.flags.contains(FrameFlags::CRC), with_crc);
            prop_assert_eq!((h.msg_type, h.message_id), (kind, id));
            prop_assert!(h.payload_len as usize <= chunk);
            if !last {
                prop_assert_eq!(h.payload_len as usize, chunk);
            }
            prop_assert_eq!(h.verify(&r[HEADER_LEN..]), Ok(()));
        }
        let want = Some((kind, body.clone(), id));
        prop_assert_eq!(reassemble(&recs, body.len()), Ok(want.clone()));
        prop_assert_eq!(reassemble_in_place(&recs, body.len()), Ok(want));
        // Only the last record completes the message.
        prop_assert_eq!(reassemble(&recs[..recs.len() - 1], body.len()), Ok(None));
    }

    /// Limits: a sender refuses a message over its maximum before producing any record; a
    /// receiver refuses a message once the fragments exceed its maximum.
    #[test]
    fn limits_are_enforced_on_both_sides(
        body in payload(1..20_000),
        chunk in 1usize..5000,
        less in any::<prop::sample::Index>(),
    ) {
        let max = less.index(body.len());
        let sent = fragments(MessageType::Data, 1, &body, max, chunk, true);
        let refused = sent.err();
        prop_assert_matches!(refused, Some(IpcError::MessageTooLarge { len, max: m }) if len == body.len() && m == max);
        let recs = records(MessageType::Data, 1, &body, chunk, true);
        for result in [reassemble(&recs, max), reassemble_in_place(&recs, max)] {
            prop_assert_matches!(result, Err(FrameError::TooLong { .. }));
        }
    }

    /// A record of another message (other id, or same id and other type) inside a fragmented
    /// message is refused, wherever it lands.
    #[test]
    fn interleaved_fragments_are_refused(
        (body, chunk) in fragmented(),
        other in payload(0..300),
        at in any::<prop::sample::Index>(),
        same_id in any::<bool>(),
    ) {
        let mut recs = records(MessageType::Chat, 5, &body, chunk, true);
        let (other_kind, other_id) = if same_id { (MessageType::Data, 5) } else { (MessageType::Chat, 6) };
        let intruder = records(other_kind, other_id, &other, 1 << 20, true).remove(0);
        // After the first fragment and before the last.
        let pos = 1 + at.index(recs.len() - 1);
        recs.insert(pos, intruder);
        let want = Err(FrameError::Interleaved { expected: 5, got: other_id });
        prop_assert_eq!(reassemble(&recs, usize::MAX), want.clone());
        prop_assert_eq!(reassemble_in_place(&recs, usize::MAX), want);
    }
}

/// Fragments carry no sequence number: the ring delivers records in order, and the frame layer
/// relies on it. This pins down what a reordering does (see the table above).
#[test]
fn reordered_fragments_are_not_detected() {
    let body: Vec<u8> = (0..40u8).collect();
    let recs = records(MessageType::Data, 3, &body, 10, true);
    assert_eq!(recs.len(), 4);
    // Two middle fragments swapped: accepted, bytes in the wrong order.
    let swapped = [recs[0].clone(), recs[2].clone(), recs[1].clone(), recs[3].clone()];
    let (_, got, _) = reassemble(&swapped, usize::MAX).unwrap().unwrap();
    assert_ne!(got, body);
    assert_eq!(&got[10..20], &body[20..30]);
    // The last fragment first: a one-record message of its 10 bytes, with the same id.
    let last_first = [recs[3].clone(), recs[0].clone()];
    assert_eq!(reassemble(&last_first, usize::MAX), Ok(Some((MessageType::Data, body[30..].to_vec(), 3))));
}
