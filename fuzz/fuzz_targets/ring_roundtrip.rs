//! Round trip through `lapce-ipc/src/ring/protocol.rs`: one `ProducerCore` and one
//! `ConsumerCore` on the same fresh ring (no hostile peer, no garbage), driven by a fuzz-chosen
//! capacity, start position (a fresh ring at 0, or positions already far along, so records wrap
//! at every index) and interleaving of reserve / commit (full or shorter) / abort / peek /
//! release. Payload bytes go to a side `Vec<u8>` indexed by data-area offset, since the
//! `DataArea` trait only carries record headers.
//!
//! Checked:
//! - no `Corruption` is ever reported between two honest sides;
//! - every message read equals the one written, in FIFO order; nothing is lost or duplicated
//!   (the ring is drained at the end and must then be empty);
//! - `reserve` fails (`None`) exactly when `capacity - (write - released) < padding + record`,
//!   `peek` returns `None` exactly when no committed message is unread;
//! - reservations are 8-aligned, in bounds, at the write position (or at index 0 when the record
//!   would cross the end) and never overlap unread records; the reserved space (payload and its
//!   header slot) is scribbled over at reservation time, so any overlap would corrupt a message;
//! - released space is poisoned, so reading a record after its space was given back would fail;
//! - `read_pos`/`write_pos` in the header are exactly the model's after each publish;
//! - once drained, a message of `max_payload` bytes always fits.

#![no_main]

use std::collections::VecDeque;
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
use protocol::{max_payload, record_size, ConsumerCore, DataArea, ProducerCore, RECORD_HEADER_LEN};

const MAX_OPS: usize = 2048;
/// Written over reserved space before the producer fills it.
const SCRIBBLE: u8 = 0xee;
/// Written over released space.
const POISON: u8 = 0xdd;

struct Message {
    /// Position of its record header (monotonic counter).
    pos: u64,
    bytes: Vec<u8>,
}

struct Rt {
    cap: u64,
    header: protocol::RingHeader,
    data: Words,
    payload: Vec<u8>,
    producer: ProducerCore,
    consumer: ConsumerCore,
    /// Producer's write position.
    write: u64,
    /// Consumer's released position.
    released: u64,
    /// Pending reservation: (payload offset, length, padding before it, record position).
    pending: Option<(usize, usize, u64, u64)>,
    /// Committed, unreleased messages, oldest first.
    queue: VecDeque<Message>,
    /// Whether the front of the queue was peeked.
    peeked: bool,
    seq: u32,
    seed: u8,
}

impl Rt {
    fn reserve(&mut self, len: usize) {
        let cap = self.cap;
        let widx = self.write & (cap - 1);
        let need = record_size(len as u64);
        let pad = if need > cap - widx { cap - widx } else { 0 };
        let total = pad + need;
        let free = cap - (self.write - self.released);
        let r = self.producer.reserve(&self.header, len).expect("honest ring reported corrupt on reserve");
        let Some(r) = r else {
            assert!(free < total, "reserve({len}) reported full with {free} bytes free, {total} needed");
            self.pending = None;
            return;
        };
        assert!(free >= total, "reserve({len}) succeeded with {free} bytes free, {total} needed");
        let off = r.payload_off;
        assert_eq!(r.max_len, len);
        assert!(off.is_multiple_of(8) && off >= 8 && off + len <= cap as usize, "reservation {off}+{len} out of bounds");
        let rec_idx = (off - RECORD_HEADER_LEN as usize) as u64;
        assert_eq!(rec_idx, (self.write + pad) & (cap - 1), "reservation not at the write position");
        // The producer owns [write, write + total): scribble over all of it.
        if pad > 0 {
            self.data.write_header(widx as usize, 0xdead_beef, 0xdead_beef);
            self.payload[widx as usize..].fill(SCRIBBLE);
        }
        self.data.write_header(rec_idx as usize, 0xdead_beef, 0xdead_beef);
        self.payload[off..off + (need - RECORD_HEADER_LEN) as usize].fill(SCRIBBLE);
        self.pending = Some((off, len, pad, self.write + pad));
    }

    fn commit(&mut self, shorten: Option<u8>) {
        let Some((off, max_len, pad, pos)) = self.pending.take() else { return };
        let len = shorten.map_or(max_len, |s| usize::from(s) % (max_len + 1));
        let bytes: Vec<u8> = (0..len)
            .map(|j| (self.seq as u8).wrapping_mul(31) ^ (j as u8).wrapping_mul(7) ^ self.seed ^ (j >> 8) as u8)
            .collect();
        self.payload[off..off + len].copy_from_slice(&bytes);
        self.seq += 1;
        self.producer.commit(&self.header, &self.data, len);
        self.write += pad + record_size(len as u64);
        assert_eq!(self.header.write_pos.0.load(Ordering::Relaxed), self.write, "commit published a wrong position");
        self.queue.push_back(Message { pos, bytes });
    }

    fn abort(&mut self) {
        self.producer.abort();
        self.pending = None;
    }

    fn peek(&mut self) {
        let got = self.consumer.peek(&self.header, &self.data).expect("honest ring reported corrupt on peek");
        match (got, self.queue.front()) {
            (None, None) => {}
            (None, Some(m)) => panic!("peek found nothing, message at {} unread", m.pos),
            (Some((off, len)), None) => panic!("peek found a record {off}+{len} nobody wrote"),
            (Some((off, len)), Some(m)) => {
                assert_eq!(off as u64, (m.pos & (self.cap - 1)) + RECORD_HEADER_LEN, "record at the wrong offset");
                assert_eq!(len, m.bytes.len(), "record of the wrong length");
                assert!(off + len <= self.cap as usize);
                assert!(self.payload[off..off + len] == m.bytes[..], "record bytes differ from what was written");
                self.peeked = true;
            }
        }
    }

    fn release(&mut self) {
        if !self.peeked {
            return;
        }
        self.peeked = false;
        let m = self.queue.pop_front().expect("peeked without a message");
        self.consumer.release(&self.header);
        let size = record_size(m.bytes.len() as u64);
        let idx = (m.pos & (self.cap - 1)) as usize;
        self.payload[idx..idx + size as usize].fill(POISON);
        self.data.write_header(idx, 0xdddd_dddd, 0xdddd_dddd);
        if m.pos != self.released {
            // A padding record preceded it: that space is released too.
            let pidx = (self.released & (self.cap - 1)) as usize;
            assert_eq!(m.pos - self.released, self.cap - pidx as u64, "gap before a record is not a padding to the end");
            self.payload[pidx..].fill(POISON);
            self.data.write_header(pidx, 0xdddd_dddd, 0xdddd_dddd);
        }
        self.released = m.pos + size;
        assert_eq!(self.header.read_pos.0.load(Ordering::Relaxed), self.released, "release published a wrong position");
        assert!(self.write - self.released <= self.cap);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let cap = common::capacity(inp.u8());
    let maxp = max_payload(cap) as usize;
    let start = match inp.u8() % 4 {
        0 | 1 => 0,
        2 => u64::from(inp.u16()) * 8,
        // Far along, but nowhere near u64 overflow.
        _ => (inp.u64() & ((1 << 56) - 1)) & !7,
    };
    let seed = inp.u8();
    let mut rt = Rt {
        cap,
        header: common::header(cap, start, start),
        data: Words::new(cap),
        payload: vec![0; cap as usize],
        producer: ProducerCore::new(cap, start, start).expect("fresh producer"),
        consumer: ConsumerCore::new(cap, start, start).expect("fresh consumer"),
        write: start,
        released: start,
        pending: None,
        queue: VecDeque::new(),
        peeked: false,
        seq: 0,
        seed,
    };

    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        match op % 8 {
            // Send a whole message: reserve + commit.
            0 | 1 => {
                let b = inp.u8();
                let len = if b & 0x80 != 0 { maxp - usize::from(b & 0x7f) % (maxp + 1) } else { usize::from(b) % (maxp + 1) };
                rt.reserve(len);
                rt.commit(None);
            }
            // Reserve only (the commit may come after reads).
            2 => {
                let len = usize::from(inp.u16()) % (maxp + 1);
                rt.reserve(len);
            }
            // Commit the pending reservation, in full or shorter.
            3 => {
                let b = inp.u8();
                rt.commit(if b & 1 == 0 { None } else { Some(b >> 1) });
            }
            4 => rt.abort(),
            // Receive: peek + release.
            5 | 6 => {
                rt.peek();
                rt.release();
            }
            // Peek only (a later peek must return the same record), or release only.
            _ => {
                if op & 0x80 == 0 {
                    rt.peek();
                } else {
                    rt.release();
                }
            }
        }
    }

    // Drain: everything committed comes out, in order, then the ring is empty.
    rt.abort();
    while !rt.queue.is_empty() {
        rt.peek();
        rt.release();
    }
    assert_eq!(rt.consumer.peek(&rt.header, &rt.data).expect("corrupt at drain"), None);
    assert_eq!(rt.write, rt.released);
    // A drained ring takes a message of the maximum size, whatever the position.
    rt.reserve(maxp);
    assert!(rt.pending.is_some(), "drained ring refused a max_payload message");
    rt.commit(None);
    rt.peek();
    rt.release();
    assert!(rt.queue.is_empty());
});
