//! Shared by the ring fuzz targets: the input cursor, the data area and header constructors.
//!
//! Each target includes `lapce-ipc/src/ring/protocol.rs` verbatim as `crate::protocol` (with
//! `std::sync::atomic` as the `atomic` module at the crate root, which the file reaches through
//! `super::atomic`) and this file as `crate::common`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::protocol::{DataArea, Padded, RingHeader, AWAKE, RING_MAGIC};

/// Reads the fuzz input front to back; once it is exhausted every read yields zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    /// Copies up to `out.len()` input bytes into `out`, returns how many.
    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        n
    }
}

/// A ring capacity from one input byte: a power of two in `64..=4096`.
pub fn capacity(b: u8) -> u64 {
    64 << (b % 7)
}

/// A ring header as `init_ring` leaves it, with the given positions.
pub fn header(capacity: u64, read: u64, write: u64) -> RingHeader {
    RingHeader {
        magic: Padded(AtomicU64::new(RING_MAGIC)),
        capacity: Padded(AtomicU64::new(capacity)),
        write_pos: Padded(AtomicU64::new(write)),
        read_pos: Padded(AtomicU64::new(read)),
        data_waiter: Padded(AtomicU32::new(AWAKE)),
        space_waiter: Padded(AtomicU32::new(AWAKE)),
    }
}

/// The data area as 32-bit atomic words, accessed exactly like `RingMemory` in
/// `lapce-ipc/src/ring/mod.rs` (`word` asserts 4-alignment and bounds), plus the stricter
/// contract the `DataArea` trait documents for record headers (8-aligned, `off + 8 <= capacity`).
pub struct Words {
    pub words: Vec<AtomicU32>,
    pub capacity: usize,
}

impl Words {
    pub fn new(capacity: u64) -> Words {
        let capacity = capacity as usize;
        Words { words: (0..capacity / 4).map(|_| AtomicU32::new(0)).collect(), capacity }
    }

    /// Fills the area from raw bytes (little-endian words), starting at offset 0.
    pub fn fill(&self, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(4).enumerate().take(self.words.len()) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words[i].store(u32::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.capacity, "record header offset {off} out of range");
        &self.words[off / 4]
    }

    fn check_header_off(&self, off: usize) {
        assert!(
            off.is_multiple_of(8) && off.checked_add(8).is_some_and(|end| end <= self.capacity),
            "record header offset {off} breaks the DataArea contract (capacity {})",
            self.capacity
        );
    }
}

impl DataArea for Words {
    fn write_header(&self, off: usize, len: u32, kind: u32) {
        self.check_header_off(off);
        self.word(off).store(len, Ordering::Relaxed);
        self.word(off + 4).store(kind, Ordering::Relaxed);
    }

    fn read_header(&self, off: usize) -> (u32, u32) {
        self.check_header_off(off);
        (self.word(off).load(Ordering::Relaxed), self.word(off + 4).load(Ordering::Relaxed))
    }
}
