//! Header codec tests: the byte layout of docs/PROTOCOL.md §6, every refusal, and garbage.

use super::header::*;

fn rng(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn layout_matches_protocol_md() {
    let h = CanonicalHeader {
        flags: FrameFlags::CRC.with(FrameFlags::END_OF_STREAM),
        msg_type: MessageType::Chat,
        payload_len: 0x0102_0304,
        message_id: 0x1112_1314_1516_1718,
        crc32: 0xA1A2_A3A4,
    };
    let b = h.encode();
    assert_eq!(&b[0..4], &[0x43, 0x50, 0x41, 0x4C]);
    assert_eq!(b[4], 1);
    assert_eq!(b[5], 0b0101);
    assert_eq!(&b[6..8], &[0x01, 0x01]);
    assert_eq!(&b[8..12], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(&b[12..20], &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]);
    assert_eq!(&b[20..24], &[0xA4, 0xA3, 0xA2, 0xA1]);
    let codes: Vec<u16> = [
        MessageType::Heartbeat,
        MessageType::Data,
        MessageType::Control,
        MessageType::Response,
        MessageType::Error,
        MessageType::StreamChunk,
        MessageType::StreamEnd,
        MessageType::StreamWindow,
        MessageType::Complete,
        MessageType::Chat,
        MessageType::Cancel,
    ]
    .iter()
    .map(|t| t.to_u16())
    .collect();
    assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7, 8, 0x100, 0x101, 0x102]);
    assert_eq!(
        [FrameFlags::CRC, FrameFlags::MORE_FRAGMENTS, FrameFlags::END_OF_STREAM, FrameFlags::ERROR]
            .map(FrameFlags::bits),
        [1, 2, 4, 8]
    );
}

#[test]
fn every_type_and_flag_combination_round_trips() {
    for code in (0..=0x200u16).chain([0xFFFF]) {
        let t = MessageType::from_u16(code);
        assert_eq!(t.to_u16(), code, "type value {code} not preserved");
        for flags in 0..16u8 {
            let h = CanonicalHeader {
                flags: FrameFlags::from_bits(flags).unwrap(),
                msg_type: t,
                payload_len: u32::from(code),
                message_id: u64::from(code) << 40 | u64::from(flags),
                crc32: u32::from(code).wrapping_mul(0x9E37_79B9),
            };
            assert_eq!(CanonicalHeader::decode(&h.encode(), u32::MAX), Ok(h));
        }
    }
    assert_eq!(FrameFlags::from_bits(16), None);
    assert_eq!(MessageType::from_u16(0), MessageType::Unknown(0));
    assert_eq!(MessageType::from_u16(0x777), MessageType::Unknown(0x777));
}

#[test]
fn every_refusal_is_precise() {
    let good = CanonicalHeader::for_payload(MessageType::Data, 1, b"abc", true).encode();
    assert_eq!(CanonicalHeader::decode(&good[..23], 100), Err(FrameError::Truncated { needed: 24, got: 23 }));
    assert_eq!(CanonicalHeader::decode(&[], 100), Err(FrameError::Truncated { needed: 24, got: 0 }));
    let mut bad = good;
    bad[0] = b'X';
    assert!(matches!(CanonicalHeader::decode(&bad, 100), Err(FrameError::BadMagic(_))));
    let mut bad = good;
    bad[4] = 2;
    assert_eq!(CanonicalHeader::decode(&bad, 100), Err(FrameError::UnsupportedVersion(2)));
    let mut bad = good;
    bad[5] = 0x10;
    assert_eq!(CanonicalHeader::decode(&bad, 100), Err(FrameError::UnknownFlags(0x10)));
    assert_eq!(CanonicalHeader::decode(&good, 2), Err(FrameError::TooLong { len: 3, max: 2 }));
    let h = CanonicalHeader::decode(&good, 3).unwrap();
    assert_eq!(h.verify(b"abc"), Ok(()));
    assert_eq!(h.verify(b"ab"), Err(FrameError::Truncated { needed: 3, got: 2 }));
    assert!(matches!(h.verify(b"abd"), Err(FrameError::CrcMismatch { .. })));
    // Without the CRC flag the CRC field is neither set nor checked (a stream may trade the
    // check for speed); the length still is.
    let plain = CanonicalHeader::for_payload(MessageType::Data, 1, b"abc", false);
    assert_eq!((plain.crc32, plain.flags), (0, FrameFlags::empty()));
    assert_eq!(plain.verify(b"xyz"), Ok(()));
    assert!(plain.verify(b"xy").is_err());
}

/// Random bytes never panic the decoder; any header it accepts re-encodes to the same bytes.
#[test]
fn garbage_never_panics_and_accepted_headers_are_canonical() {
    let mut next = rng(7);
    let mut accepted = 0;
    for i in 0..200_000u32 {
        let mut b = [0u8; 32];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes()[..chunk.len()]);
        }
        if i % 2 == 0 {
            // Half the time start from a plausible header so the later checks are reached.
            b[..6].copy_from_slice(&[0x43, 0x50, 0x41, 0x4C, 1, (next() % 32) as u8]);
            b[8..12].copy_from_slice(&((next() % 4096) as u32).to_le_bytes());
        }
        let len = (next() % 33) as usize;
        if let Ok(h) = CanonicalHeader::decode(&b[..len], (next() % 4096) as u32) {
            assert_eq!(&h.encode()[..], &b[..HEADER_LEN]);
            accepted += 1;
        }
    }
    assert!(accepted > 1000, "the generator rarely produced a valid header ({accepted})");
}

/// CRC32 catches every single-bit error in a payload, and every burst of up to 32 bits.
#[test]
fn corrupted_payloads_are_never_accepted() {
    let mut next = rng(11);
    for _ in 0..2_000 {
        let len = 1 + (next() % 300) as usize;
        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let h = CanonicalHeader::for_payload(MessageType::StreamChunk, next(), &payload, true);
        let mut bad = payload.clone();
        let bit = (next() % (len as u64 * 8)) as usize;
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(matches!(h.verify(&bad), Err(FrameError::CrcMismatch { .. })), "bit flip {bit} accepted");
        let at = (next() % len as u64) as usize;
        for (k, byte) in bad.iter_mut().enumerate() {
            *byte = payload[k];
        }
        for byte in &mut bad[at..(at + 4).min(len)] {
            *byte ^= (next() as u8) | 1;
        }
        assert!(h.verify(&bad).is_err(), "burst at {at} accepted");
        assert_eq!(h.verify(&payload), Ok(()));
    }
}

#[test]
fn every_wire_value_round_trips_and_the_app_range_is_app() {
    for v in 0..=u16::MAX {
        let kind = MessageType::from_u16(v);
        assert_eq!(kind.to_u16(), v, "{kind:?}");
        assert_eq!(matches!(kind, MessageType::App(_)), v >= MessageType::APP_BASE, "{v:#x}");
    }
    assert_eq!(MessageType::app(0).to_u16(), 0x8000);
    assert_eq!(MessageType::app(MessageType::APP_MAX).to_u16(), 0xFFFF);
    assert_eq!(MessageType::from_u16(0x7FFF), MessageType::Unknown(0x7FFF));
    assert_eq!(MessageType::Unknown(0x200).to_string(), "Unknown(0x0200)");
    assert_eq!(MessageType::Chat.to_string(), "Chat");
}

#[test]
#[should_panic(expected = "0x7FFF")]
fn an_app_method_over_the_range_is_refused() {
    let _ = MessageType::app(0x8000);
}
