//! The stress payload: every request a lane sends carries who sent it, its sequence number and a
//! checksum of the rest, so the server can count duplicates, gaps and corruption on the way in,
//! and the client checks that the echo is byte-for-byte the request on the way back.
//!
//! Layout (little endian): `0..8` key (one per lane, unique in the run), `8..16` sequence number
//! (bit 63 set on the lane's last request: the server then forgets the key), `16..24` checksum
//! of key, sequence number and body, `24..` body (a pattern derived from key and sequence
//! number). Payloads shorter than [`HEADER`] ("tiny" messages) carry no header and are only
//! compared with their echo.

/// Bytes of the payload header.
pub const HEADER: usize = 24;

/// Bit of the sequence number marking a lane's last request.
pub const FIN: u64 = 1 << 63;

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// A request of `len` bytes for lane `key`, number `seq` (with [`FIN`] possibly set).
pub fn make(key: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if len < HEADER {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seq as u8).wrapping_add(i as u8);
        }
        return buf;
    }
    let mut word = (key ^ seq).wrapping_mul(K);
    for chunk in buf[HEADER..].chunks_mut(8) {
        word = word.rotate_left(7) ^ K;
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    buf[0..8].copy_from_slice(&key.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    let sum = checksum(key, seq, &buf[HEADER..]);
    buf[16..24].copy_from_slice(&sum.to_le_bytes());
    buf
}

/// The checksum of a payload's key, sequence number and body.
pub fn checksum(key: u64, seq: u64, body: &[u8]) -> u64 {
    let mut h = key.wrapping_mul(K) ^ seq.rotate_left(32) ^ body.len() as u64;
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01B3);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// What the server learns from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Too short for a header: nothing to track.
    Tiny,
    /// A sound payload of lane `key`, number `seq` (without [`FIN`]), `fin` when it is the last.
    Sound {
        /// The lane.
        key: u64,
        /// Its sequence number.
        seq: u64,
        /// Whether it is the lane's last request.
        fin: bool,
    },
    /// The checksum does not match.
    Corrupt,
}

/// Checks a payload received by the server.
pub fn check(buf: &[u8]) -> Checked {
    if buf.len() < HEADER {
        return Checked::Tiny;
    }
    let word = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let (key, seq, sum) = (word(0), word(8), word(16));
    if checksum(key, seq, &buf[HEADER..]) != sum {
        return Checked::Corrupt;
    }
    Checked::Sound { key, seq: seq & !FIN, fin: seq & FIN != 0 }
}

/// A small deterministic random number generator (xorshift64*), for the chaos schedule and the
/// client counts of the leak level.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { K } else { seed })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_detect_corruption() {
        for len in [24, 25, 31, 64, 1000, 4096] {
            let mut p = make(7, 3 | FIN, len);
            assert_eq!(check(&p), Checked::Sound { key: 7, seq: 3, fin: true });
            p[len - 1] ^= 1;
            assert_eq!(check(&p), Checked::Corrupt);
        }
        assert_eq!(check(&make(1, 2, 10)), Checked::Tiny);
        assert_ne!(make(1, 2, 100), make(1, 3, 100));
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(42);
        for _ in 0..1000 {
            let v = r.range(100, 500);
            assert!((100..=500).contains(&v));
        }
    }
}
