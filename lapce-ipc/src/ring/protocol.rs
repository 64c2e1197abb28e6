//! The ring protocol, independent of where its memory lives.
//!
//! This file holds everything the two sides of a ring must agree on: the header layout, the
//! record format, the position arithmetic, the validation of peer-written values, and the
//! publish / announce-sleep / wake handshake. It is written against `super::atomic` and the
//! [`DataArea`] trait only, so the same code runs over real shared memory in the library and over
//! loom's model atomics and cells in `tests/loom_ring.rs`, which includes this file verbatim.
//!
//! # Invariants
//! - `write_pos` and `read_pos` are monotonic byte counters, never wrapped; the index of a
//!   position is `pos & (capacity - 1)`. `read_pos <= write_pos <= read_pos + capacity` always,
//!   and no position exceeds [`MAX_POSITION`] (2^63).
//! - Records are 8-byte aligned: an 8-byte header (`len: u32`, `kind: u32`) then `len` bytes,
//!   padded to 8. A record never crosses the end of the data area: when it would, a padding
//!   record filling the rest of the area precedes it, published together with it.
//! - The producer writes the record, then stores `write_pos` with Release; the consumer loads it
//!   with Acquire before reading. The consumer symmetrically publishes `read_pos` when done.
//! - Wake-ups: a side about to sleep announces it with an atomic swap on its waiter word
//!   (AcqRel), re-checks the ring, and only then sleeps. The other side, after each publish,
//!   swaps the word back to [`AWAKE`] (AcqRel) and wakes the sleeper if there was one. Because
//!   both sides use read-modify-writes on the same word, one of them always sees the other:
//!   either the publisher reads the announcement, or the waiter's swap reads the publisher's and
//!   its re-check sees the new position. No wake-up is lost; see `tests/loom_ring.rs`.
//! - Nothing read from the shared header or a record header is trusted: positions must be
//!   monotonic, 8-aligned and within one capacity of each other; record lengths must fit the
//!   published bytes, the contiguous space and the record limit; kinds must be known.

use super::atomic::{AtomicU32, AtomicU64, Ordering};

/// "LAPCRNG1": marks an initialised ring header.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"LAPCRNG1");
/// Size of a record header.
pub const RECORD_HEADER_LEN: u64 = 8;
/// Record kind: application bytes.
pub const KIND_DATA: u32 = 1;
/// Record kind: filler up to the end of the data area; the reader skips it.
pub const KIND_PADDING: u32 = 2;

/// Waiter word value: nobody sleeps.
pub const AWAKE: u32 = 0;
/// Waiter word value: the peer sleeps in `futex_wait` on this word.
pub const SLEEPS_FUTEX: u32 = 1;
/// Waiter word value: the peer sleeps on its doorbell file descriptor.
pub const SLEEPS_DOORBELL: u32 = 2;

/// Keeps each field on its own 128-byte block (a cache line plus the adjacent-line prefetch).
#[repr(C, align(128))]
pub struct Padded<T>(pub T);

/// The ring header at the start of every ring, shared by both processes.
#[repr(C)]
pub struct RingHeader {
    /// [`RING_MAGIC`] once initialised.
    pub magic: Padded<AtomicU64>,
    /// Capacity of the data area in bytes, as the creator set it (informational: each side
    /// uses the capacity it created or validated at attach time, never re-reads this).
    pub capacity: Padded<AtomicU64>,
    /// Bytes ever published by the producer. Written by the producer only.
    pub write_pos: Padded<AtomicU64>,
    /// Bytes ever released by the consumer. Written by the consumer only.
    pub read_pos: Padded<AtomicU64>,
    /// The consumer's "I sleep waiting for data" word (also the futex word).
    pub data_waiter: Padded<AtomicU32>,
    /// The producer's "I sleep waiting for space" word (also the futex word).
    pub space_waiter: Padded<AtomicU32>,
}

/// Why the ring cannot be used any more: a value read from shared memory broke an invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption(pub String);

/// Access to the data area. Offsets are indices in `0..capacity`; the protocol guarantees that
/// every call stays inside the area and touches only bytes the caller currently owns.
pub trait DataArea {
    /// Writes a record header (8-aligned `off`, `off + 8 <= capacity`).
    fn write_header(&self, off: usize, len: u32, kind: u32);
    /// Reads a record header written by the peer.
    fn read_header(&self, off: usize) -> (u32, u32);
}

/// Bytes a record of `len` payload bytes occupies (header + payload, rounded up to 8).
pub fn record_size(len: u64) -> u64 {
    (RECORD_HEADER_LEN + len + 7) & !7
}

/// Largest payload one record may carry in a ring of `capacity` bytes. Half the ring, so a
/// record plus the padding in front of it always fits once the ring has drained.
pub fn max_payload(capacity: u64) -> u64 {
    capacity / 2 - RECORD_HEADER_LEN
}

/// Publishes `pos` as the new value of `field` and takes the peer's waiter word: the returned
/// value tells whether (and how) the peer must be woken.
pub fn publish(field: &AtomicU64, pos: u64, waiter: &AtomicU32) -> u32 {
    field.store(pos, Ordering::Release);
    waiter.swap(AWAKE, Ordering::AcqRel)
}

/// Announces that this side is about to sleep on `waiter` (`how` = [`SLEEPS_FUTEX`] or
/// [`SLEEPS_DOORBELL`]). The caller must re-check the ring after this and before sleeping.
pub fn announce_sleep(waiter: &AtomicU32, how: u32) {
    waiter.swap(how, Ordering::AcqRel);
}

/// Withdraws an announcement (the re-check found work, or the sleep ended).
///
/// A read-modify-write, not a plain store: the word may hold the publisher's release swap, and a
/// plain store here would end that release sequence, so the next announcement could miss the
/// publication it must see (the loom model in `tests/loom_ring.rs` finds exactly that lost
/// wake-up when this is a Relaxed store).
pub fn cancel_sleep(waiter: &AtomicU32) {
    waiter.swap(AWAKE, Ordering::AcqRel);
}

/// Highest position either side accepts: 2^63 bytes (9.2 EB, years of traffic at memory speed)
/// per direction. The bound keeps every position sum below `u64::MAX`: a peer that writes
/// positions near the top of the range gets `Corruption`, not an arithmetic overflow (found by
/// the `ring_consumer` fuzz target).
pub const MAX_POSITION: u64 = 1 << 63;

/// Checks a pair of positions: read before write, at most `capacity` apart, aligned, in range.
pub fn check_positions(read: u64, write: u64, capacity: u64) -> Result<(), Corruption> {
    if read > write
        || write - read > capacity
        || write > MAX_POSITION
        || !read.is_multiple_of(8)
        || !write.is_multiple_of(8)
    {
        return Err(Corruption(format!(
            "positions out of range: read {read}, write {write}, capacity {capacity}"
        )));
    }
    Ok(())
}

/// Checks a header this side did not create (or re-opens): magic, capacity and positions.
/// Returns the current `(read_pos, write_pos)`.
pub fn validate_header(header: &RingHeader, capacity: u64) -> Result<(u64, u64), Corruption> {
    let magic = header.magic.0.load(Ordering::Acquire);
    if magic != RING_MAGIC {
        return Err(Corruption(format!("bad ring magic {magic:#x}")));
    }
    let cap = header.capacity.0.load(Ordering::Relaxed);
    if cap != capacity {
        return Err(Corruption(format!("ring capacity {cap}, expected {capacity}")));
    }
    let read = header.read_pos.0.load(Ordering::Acquire);
    let write = header.write_pos.0.load(Ordering::Acquire);
    check_positions(read, write, capacity)?;
    Ok((read, write))
}

/// Space handed out by [`ProducerCore::reserve`], published by [`ProducerCore::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Offset of the payload in the data area.
    pub payload_off: usize,
    /// Most bytes the caller may write and commit.
    pub max_len: usize,
    pad: u64,
    record_off: usize,
}

/// The producer's private state: its own position, a cached copy of the consumer's.
#[derive(Debug)]
pub struct ProducerCore {
    capacity: u64,
    write_pos: u64,
    cached_read: u64,
    pending: Option<Reservation>,
}

impl ProducerCore {
    /// Starts producing at `write_pos` (validated against `read_pos` by the caller).
    pub fn new(capacity: u64, read_pos: u64, write_pos: u64) -> Result<ProducerCore, Corruption> {
        check_positions(read_pos, write_pos, capacity)?;
        Ok(ProducerCore { capacity, write_pos, cached_read: read_pos, pending: None })
    }

    /// Largest payload of one record.
    pub fn max_payload(&self) -> usize {
        max_payload(self.capacity) as usize
    }

    fn refresh(&mut self, header: &RingHeader) -> Result<(), Corruption> {
        let read = header.read_pos.0.load(Ordering::Acquire);
        if read < self.cached_read {
            return Err(Corruption(format!("read position went back from {} to {read}", self.cached_read)));
        }
        check_positions(read, self.write_pos, self.capacity)?;
        self.cached_read = read;
        Ok(())
    }

    /// Reserves room for a record of up to `len` payload bytes (`len <= max_payload()`).
    /// `Ok(None)` means the ring is full for now.
    pub fn reserve(&mut self, header: &RingHeader, len: usize) -> Result<Option<Reservation>, Corruption> {
        debug_assert!(len <= self.max_payload());
        let need = record_size(len as u64);
        let to_end = self.capacity - (self.write_pos & (self.capacity - 1));
        let pad = if need > to_end { to_end } else { 0 };
        let total = pad + need;
        if self.capacity - (self.write_pos - self.cached_read) < total {
            self.refresh(header)?;
            if self.capacity - (self.write_pos - self.cached_read) < total {
                return Ok(None);
            }
        }
        let record_off = ((self.write_pos + pad) & (self.capacity - 1)) as usize;
        let r = Reservation {
            payload_off: record_off + RECORD_HEADER_LEN as usize,
            max_len: len,
            pad,
            record_off,
        };
        self.pending = Some(r);
        Ok(Some(r))
    }

    /// Publishes the reserved record with `len` payload bytes (`len <= max_len`); the payload
    /// must already be written. Returns the consumer's waiter word (wake it unless [`AWAKE`]).
    pub fn commit(&mut self, header: &RingHeader, data: &impl DataArea, len: usize) -> u32 {
        let r = self.pending.take().expect("commit without a reservation");
        assert!(len <= r.max_len, "committed {len} bytes of a {}-byte reservation", r.max_len);
        if r.pad > 0 {
            let off = (self.write_pos & (self.capacity - 1)) as usize;
            data.write_header(off, (r.pad - RECORD_HEADER_LEN) as u32, KIND_PADDING);
        }
        data.write_header(r.record_off, len as u32, KIND_DATA);
        self.write_pos += r.pad + record_size(len as u64);
        publish(&header.write_pos.0, self.write_pos, &header.data_waiter.0)
    }

    /// Drops a reservation without publishing anything.
    pub fn abort(&mut self) {
        self.pending = None;
    }

    /// True between a [`reserve`](Self::reserve) and its commit or abort.
    pub fn has_reservation(&self) -> bool {
        self.pending.is_some()
    }

    /// The consumer's released position (loaded with Acquire and validated) and ours.
    pub fn positions(&mut self, header: &RingHeader) -> Result<(u64, u64), Corruption> {
        self.refresh(header)?;
        Ok((self.cached_read, self.write_pos))
    }
}

/// The consumer's private state: its own position, a cached copy of the producer's.
#[derive(Debug)]
pub struct ConsumerCore {
    capacity: u64,
    read_pos: u64,
    released: u64,
    cached_write: u64,
    current: Option<(usize, usize, u64)>,
}

impl ConsumerCore {
    /// Starts consuming at `read_pos`.
    pub fn new(capacity: u64, read_pos: u64, write_pos: u64) -> Result<ConsumerCore, Corruption> {
        check_positions(read_pos, write_pos, capacity)?;
        Ok(ConsumerCore { capacity, read_pos, released: read_pos, cached_write: read_pos, current: None })
    }

    fn refresh(&mut self, header: &RingHeader) -> Result<(), Corruption> {
        let write = header.write_pos.0.load(Ordering::Acquire);
        if write < self.cached_write {
            return Err(Corruption(format!(
                "write position went back from {} to {write}",
                self.cached_write
            )));
        }
        check_positions(self.released, write, self.capacity)?;
        self.cached_write = write;
        Ok(())
    }

    /// The next record as `(payload offset, payload length)`, or `None` when the ring is empty.
    /// Calling it again before [`ConsumerCore::release`] returns the same record.
    pub fn peek(
        &mut self,
        header: &RingHeader,
        data: &impl DataArea,
    ) -> Result<Option<(usize, usize)>, Corruption> {
        if let Some((off, len, _)) = self.current {
            return Ok(Some((off, len)));
        }
        loop {
            if self.read_pos == self.cached_write {
                self.refresh(header)?;
                if self.read_pos == self.cached_write {
                    return Ok(None);
                }
            }
            let idx = self.read_pos & (self.capacity - 1);
            let to_end = self.capacity - idx;
            let avail = self.cached_write - self.read_pos;
            let (len, kind) = data.read_header(idx as usize);
            match kind {
                KIND_PADDING => {
                    if u64::from(len) != to_end - RECORD_HEADER_LEN || to_end > avail {
                        return Err(Corruption(format!(
                            "padding record of {len} bytes at index {idx} (expected {}, {avail} published)",
                            to_end - RECORD_HEADER_LEN
                        )));
                    }
                    self.read_pos += to_end;
                }
                KIND_DATA => {
                    let size = record_size(u64::from(len));
                    if u64::from(len) > max_payload(self.capacity) || size > to_end || size > avail {
                        return Err(Corruption(format!(
                            "record of {len} bytes at index {idx} does not fit ({to_end} to the end, {avail} published)"
                        )));
                    }
                    let off = (idx + RECORD_HEADER_LEN) as usize;
                    self.current = Some((off, len as usize, size));
                    return Ok(Some((off, len as usize)));
                }
                other => {
                    return Err(Corruption(format!("unknown record kind {other:#x} at index {idx}")));
                }
            }
        }
    }

    /// Releases the record returned by the last [`ConsumerCore::peek`]. Returns the producer's
    /// waiter word (wake it unless [`AWAKE`]).
    pub fn release(&mut self, header: &RingHeader) -> u32 {
        let (_, _, size) = self.current.take().expect("release without a peeked record");
        self.read_pos += size;
        self.released = self.read_pos;
        publish(&header.read_pos.0, self.read_pos, &header.space_waiter.0)
    }
}
