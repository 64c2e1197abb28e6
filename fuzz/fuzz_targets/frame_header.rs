//! Fuzzes the frame header decoder and payload check (`lapce_ipc::frame`): arbitrary bytes never
//! panic the decoder; an accepted header re-encodes to exactly the bytes it came from, respects
//! the maximum, and its type value is preserved; a payload that passes `verify` under the CRC
//! flag has exactly that CRC.
#![no_main]

use lapce_ipc::frame::{CanonicalHeader, FrameFlags, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&max_byte, rest)) = data.split_first() else { return };
    let max = u32::from(max_byte) << 8;
    match CanonicalHeader::decode(rest, max) {
        Ok(h) => {
            assert_eq!(&h.encode()[..], &rest[..HEADER_LEN], "accepted header is not canonical");
            assert!(h.payload_len <= max);
            let payload = &rest[HEADER_LEN..];
            if h.verify(payload).is_ok() {
                assert_eq!(payload.len(), h.payload_len as usize);
                if h.flags.contains(FrameFlags::CRC) {
                    assert_eq!(crc32(payload), h.crc32);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

/// Bitwise CRC-32 (IEEE), independent of the crate's crc32fast, as a reference.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
