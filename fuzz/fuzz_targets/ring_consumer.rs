//! Fuzzes the validation of peer-written ring memory in `lapce-ipc/src/ring/protocol.rs`.
//!
//! The input picks a capacity, the initial header positions (anything: huge, unaligned,
//! inconsistent), the initial data-area bytes, and then a sequence of operations mixing a
//! `ConsumerCore` (peek / release), a `ProducerCore` (reserve / commit / abort) on the same
//! header and data area, and a hostile peer that overwrites `write_pos`, `read_pos` and record
//! headers at will between calls. A `Corruption` error is always an acceptable answer (the side
//! then stops, like the real `Consumer`/`Producer` mark themselves broken); what is checked is
//! that whatever the cores *accept* is safe to act on:
//!
//! consumer, for every `Ok(Some((off, len)))`:
//! - `off % 8 == 0`, `off >= 8`, `off + len <= capacity`, `len <= max_payload(capacity)`;
//! - the record starts at the released position, or at index 0 after a padding record that runs
//!   exactly to the end of the area;
//! - its end is within the bytes ever published (`<= max write_pos stored - start`) and within
//!   one capacity of the released position; peeking again returns the same record;
//! - `release` publishes exactly the end of that record as `read_pos`.
//!
//! producer, for every `Ok(Some(reservation))`:
//! - `payload_off % 8 == 0`, `payload_off >= 8`, `payload_off + max_len <= capacity`,
//!   `max_len == len`;
//! - the record starts at the producer's position, or at index 0 when it would cross the end;
//! - it ends within one capacity of the largest `read_pos` the producer can have seen;
//! - `Ok(None)` (full) only when the current `read_pos` really leaves too little room;
//! - `commit` writes the record (and padding) headers where reserved and publishes the new end.

#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;

/// What `protocol.rs` reaches as `super::atomic`.
use std::sync::atomic;

#[path = "../../lapce-ipc/src/ring/protocol.rs"]
#[allow(dead_code)]
mod protocol;

#[allow(dead_code)]
mod common;

use common::{Input, Words};
use protocol::{
    max_payload, record_size, ConsumerCore, DataArea, ProducerCore, RingHeader, KIND_DATA,
    KIND_PADDING, RECORD_HEADER_LEN,
};

/// Upper bound on operations per input.
const MAX_OPS: usize = 1024;

/// A `(read, write)` position pair, valid or not, biased towards the interesting cases.
fn positions(inp: &mut Input, cap: u64) -> (u64, u64) {
    let delta = |inp: &mut Input| (u64::from(inp.u16()) * 8) % (cap + 16);
    match inp.u8() % 6 {
        // Anything at all.
        0 => (inp.u64(), inp.u64()),
        // Aligned, write at most one capacity (+8) ahead: mostly valid.
        1 => {
            let read = inp.u64() & !7;
            (read, read.wrapping_add(delta(inp)))
        }
        // Possibly unaligned.
        2 => {
            let read = inp.u64();
            (read, read.wrapping_add(u64::from(inp.u16())))
        }
        // Near the top of the u64 range.
        3 => {
            let read = (u64::MAX - u64::from(inp.u16()) * 8) & !7;
            (read, read.wrapping_add(delta(inp)))
        }
        // Small positions.
        4 => {
            let read = u64::from(inp.u32()) & !7;
            (read, read + delta(inp))
        }
        // A fresh ring.
        _ => (0, 0),
    }
}

/// Model of the consumer side, to check what `ConsumerCore` hands out.
struct ConsumerModel {
    core: ConsumerCore,
    /// Where the consumer started.
    start: u64,
    /// The consumer's released position (exact: it only moves on `release`).
    released: u64,
    /// Sum of the sizes of released data records.
    consumed_records: u64,
    /// The record last peeked: (payload offset, length, position of its header).
    current: Option<(usize, usize, u64)>,
}

/// Model of the producer side.
struct ProducerModel {
    core: ProducerCore,
    /// The producer's write position (exact: it only moves on `commit`).
    write: u64,
    /// The pending reservation: (payload offset, reserved length, padding before it).
    pending: Option<(usize, usize, u64)>,
}

struct Ring {
    cap: u64,
    header: RingHeader,
    data: Words,
    /// Largest value ever stored in `header.write_pos` (by the hostile peer or the producer).
    max_published: u64,
    /// Largest value the producer can have as its cached read position.
    max_read: u64,
}

impl Ring {
    fn store_write(&mut self, v: u64) {
        self.header.write_pos.0.store(v, Ordering::Release);
        self.max_published = self.max_published.max(v);
    }

    fn store_read(&mut self, v: u64) {
        self.header.read_pos.0.store(v, Ordering::Release);
        self.max_read = self.max_read.max(v);
    }
}

fn consumer_peek(ring: &Ring, c: &mut ConsumerModel) -> bool {
    let cap = ring.cap;
    let mask = cap - 1;
    match c.core.peek(&ring.header, &ring.data) {
        Err(_) => false,
        Ok(None) => {
            assert!(c.current.is_none(), "peek returned None with a record outstanding");
            true
        }
        Ok(Some((off, len))) => {
            assert!(off.is_multiple_of(8), "payload offset {off} not 8-aligned");
            assert!(off >= RECORD_HEADER_LEN as usize, "payload offset {off} leaves no room for a header");
            assert!(off + len <= cap as usize, "record {off}+{len} beyond capacity {cap}");
            assert!(len as u64 <= max_payload(cap), "record of {len} bytes over the limit {}", max_payload(cap));
            if let Some((o, l, _)) = c.current {
                assert_eq!((o, l), (off, len), "a second peek returned a different record");
                return true;
            }
            let rec_idx = (off - RECORD_HEADER_LEN as usize) as u64;
            let idx = c.released & mask;
            let pos = if rec_idx == idx {
                c.released as u128
            } else {
                assert_eq!(rec_idx, 0, "record at index {rec_idx}, released position at index {idx}");
                c.released as u128 + (cap - idx) as u128
            };
            let end = pos + record_size(len as u64) as u128;
            assert!(
                end <= ring.max_published as u128,
                "record ends at {end}, beyond anything published (max {})",
                ring.max_published
            );
            assert!(
                end - c.released as u128 <= cap as u128,
                "record ends at {end}, more than one capacity past the released position {}",
                c.released
            );
            let consumed = c.consumed_records as u128 + record_size(len as u64) as u128;
            assert!(consumed <= (ring.max_published - c.start) as u128, "consumed more than was published");
            c.current = Some((off, len, pos as u64));
            true
        }
    }
}

fn consumer_release(ring: &mut Ring, c: &mut ConsumerModel) {
    let Some((_, len, pos)) = c.current.take() else { return };
    c.core.release(&ring.header);
    let end = pos + record_size(len as u64);
    let published = ring.header.read_pos.0.load(Ordering::Relaxed);
    assert_eq!(published, end, "release published {published}, expected the record end {end}");
    ring.max_read = ring.max_read.max(end);
    c.released = end;
    c.consumed_records += record_size(len as u64);
}

fn producer_reserve(ring: &Ring, p: &mut ProducerModel, len: usize) -> bool {
    let cap = ring.cap;
    let mask = cap - 1;
    let need = record_size(len as u64);
    let widx = p.write & mask;
    let to_end = cap - widx;
    let pad = if need > to_end { to_end } else { 0 };
    let total = pad + need;
    match p.core.reserve(&ring.header, len) {
        Err(_) => false,
        Ok(None) => {
            // `reserve` refreshes before giving up: the read position it saw is the current one.
            let read = ring.header.read_pos.0.load(Ordering::Relaxed);
            assert!(read <= p.write && p.write - read <= cap, "full on an invalid read position {read}");
            assert!(cap - (p.write - read) < total, "ring reported full with {} free, {total} needed", cap - (p.write - read));
            p.pending = None;
            true
        }
        Ok(Some(r)) => {
            let off = r.payload_off;
            assert!(off.is_multiple_of(8), "reservation offset {off} not 8-aligned");
            assert!(off >= RECORD_HEADER_LEN as usize, "reservation offset {off} leaves no room for a header");
            assert!(off + r.max_len <= cap as usize, "reservation {off}+{} beyond capacity {cap}", r.max_len);
            assert_eq!(r.max_len, len, "reservation of a different length");
            let rec_idx = (off - RECORD_HEADER_LEN as usize) as u64;
            if pad == 0 {
                assert_eq!(rec_idx, widx, "record not at the write position");
            } else {
                assert_eq!(rec_idx, 0, "record crossing the end not moved to index 0");
            }
            let end = p.write as u128 + total as u128;
            assert!(
                end <= ring.max_read as u128 + cap as u128,
                "reservation ends at {end}, more than one capacity past any read position (max {})",
                ring.max_read
            );
            p.pending = Some((off, len, pad));
            true
        }
    }
}

fn producer_commit(ring: &mut Ring, p: &mut ProducerModel, len: usize) {
    let Some((off, max_len, pad)) = p.pending.take() else { return };
    let len = if len == usize::MAX { max_len } else { len % (max_len + 1) };
    let mask = ring.cap - 1;
    let widx = (p.write & mask) as usize;
    p.core.commit(&ring.header, &ring.data, len);
    if pad > 0 {
        assert_eq!(
            ring.data.read_header(widx),
            ((pad - RECORD_HEADER_LEN) as u32, KIND_PADDING),
            "padding header not written at the write position"
        );
    }
    assert_eq!(
        ring.data.read_header(off - RECORD_HEADER_LEN as usize),
        (len as u32, KIND_DATA),
        "record header not written where reserved"
    );
    p.write += pad + record_size(len as u64);
    let published = ring.header.write_pos.0.load(Ordering::Relaxed);
    assert_eq!(published, p.write, "commit published {published}, expected {}", p.write);
    ring.max_published = ring.max_published.max(published);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let cap = common::capacity(inp.u8());
    let maxp = max_payload(cap);

    let (read, write) = positions(&mut inp, cap);
    let (pread, pwrite) = positions(&mut inp, cap);

    let mut ring = Ring {
        cap,
        header: common::header(cap, read, write),
        data: Words::new(cap),
        max_published: write,
        max_read: read.max(pread),
    };
    let mut area = vec![0u8; (inp.u16() as u64 % (cap + 1)) as usize];
    let n = inp.fill(&mut area);
    ring.data.fill(&area[..n]);

    let mut consumer = ConsumerCore::new(cap, read, write).ok().map(|core| ConsumerModel {
        core,
        start: read,
        released: read,
        consumed_records: 0,
        current: None,
    });
    let mut producer =
        ProducerCore::new(cap, pread, pwrite).ok().map(|core| ProducerModel { core, write: pwrite, pending: None });
    if consumer.is_none() && producer.is_none() {
        return;
    }

    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 14 {
            0..=2 => {
                if let Some(c) = consumer.as_mut() {
                    if !consumer_peek(&ring, c) {
                        consumer = None;
                    }
                }
            }
            3 | 4 => {
                if let Some(c) = consumer.as_mut() {
                    consumer_release(&mut ring, c);
                }
            }
            // The peer stores any write position.
            5 => {
                let v = inp.u64();
                ring.store_write(v);
            }
            // The peer advances (or moves back) the write position by a few words, or by a few
            // bytes (unaligned).
            6 => {
                let cur = ring.header.write_pos.0.load(Ordering::Relaxed);
                let b = inp.u8();
                let v = match b >> 6 {
                    0 | 1 => cur.wrapping_add(u64::from(b & 0x7f) * 8),
                    2 => cur.wrapping_sub(u64::from(b & 0x3f) * 8),
                    _ => cur.wrapping_add(u64::from(b & 0x3f)),
                };
                ring.store_write(v);
            }
            // The peer writes a record header anywhere in the area.
            7 | 8 => {
                let off = (usize::from(inp.u16()) * 8) % cap as usize;
                let k = inp.u8();
                let len = if k & 0x40 != 0 { inp.u32() } else { u32::from(inp.u16()) % (cap as u32 + 8) };
                let kind = if k & 0x80 != 0 { inp.u32() } else { u32::from(k % 3) };
                ring.data.write_header(off, len, kind);
            }
            // The peer writes a well-formed padding record.
            9 => {
                let off = (usize::from(inp.u16()) * 8) % cap as usize;
                ring.data.write_header(off, (cap as usize - off - 8) as u32, KIND_PADDING);
            }
            // The peer (a hostile consumer) stores any read position.
            10 => {
                let v = match inp.u8() % 3 {
                    0 => inp.u64(),
                    1 => ring.header.read_pos.0.load(Ordering::Relaxed).wrapping_add(u64::from(inp.u8()) * 8),
                    _ => ring.header.write_pos.0.load(Ordering::Relaxed).wrapping_sub(u64::from(inp.u8()) * 8),
                };
                ring.store_read(v);
            }
            11 | 12 => {
                let len = (u64::from(inp.u16()) % (maxp + 1)) as usize;
                if let Some(p) = producer.as_mut() {
                    if !producer_reserve(&ring, p, len) {
                        producer = None;
                    }
                }
            }
            _ => {
                let b = inp.u8();
                if let Some(p) = producer.as_mut() {
                    if b == 0xff {
                        p.core.abort();
                        p.pending = None;
                    } else {
                        // Mostly the full reservation, sometimes a shorter commit.
                        let len = if b & 1 == 0 { usize::MAX } else { usize::from(b >> 1) };
                        producer_commit(&mut ring, p, len);
                    }
                }
            }
        }
    }
});
