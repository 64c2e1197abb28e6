//! Criterion micro-benchmarks of the frame layer and the ring, all in one process on one thread:
//!
//! - `header/encode`, `header/decode_verify/*` (decode and validate a header, then check the
//!   payload's length and CRC), `header/for_payload/*` (CRC plus header);
//! - `crc32/*`: `crc32fast::hash` of 64 B, 1 KiB and 64 KiB;
//! - `ring/write_read/*`: one [`SharedMemoryBuffer`] record written and read back (the ring with
//!   no waiting and no second process: what a message costs the two sides' CPUs, without the
//!   cross-core cache traffic a real connection adds);
//! - `ring_framed/*`: the same with the canonical header, CRC on and off (what
//!   `FramedShmStream` adds per single-record message: header encode into the record, decode,
//!   CRC).
//!
//! Short measurement times keep `cargo bench -p lapce-ipc` around a minute; for steadier
//! figures pass criterion's own options, e.g. `cargo bench -p lapce-ipc -- --measurement-time 5`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lapce_ipc::frame::{CanonicalHeader, FrameFlags, MessageType, HEADER_LEN};
use lapce_ipc::SharedMemoryBuffer;

/// Payload sizes of the header and ring benchmarks.
const SIZES: [(usize, &str); 2] = [(64, "64B"), (1024, "1KiB")];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn header(c: &mut Criterion) {
    let mut g = c.benchmark_group("header");
    let h = CanonicalHeader {
        flags: FrameFlags::CRC,
        msg_type: MessageType::Chat,
        payload_len: 1024,
        message_id: 0x1234_5678,
        crc32: 0xDEAD_BEEF,
    };
    g.bench_function("encode", |b| b.iter(|| black_box(black_box(&h).encode())));
    for (len, label) in SIZES {
        let p = payload(len);
        let mut record = CanonicalHeader::for_payload(MessageType::Data, 7, &p, true).encode().to_vec();
        record.extend_from_slice(&p);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("decode_verify", label), &record, |b, record| {
            b.iter(|| {
                let record = black_box(&record[..]);
                let h = CanonicalHeader::decode(record, 10 << 20).unwrap();
                h.verify(&record[HEADER_LEN..]).unwrap();
                black_box(h)
            })
        });
        g.bench_with_input(BenchmarkId::new("for_payload", label), &p, |b, p| {
            b.iter(|| black_box(CanonicalHeader::for_payload(MessageType::Data, 7, black_box(p), true)))
        });
    }
    g.finish();
}

fn crc32(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32");
    for (len, label) in [(64, "64B"), (1024, "1KiB"), (64 << 10, "64KiB")] {
        let p = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &p, |b, p| {
            b.iter(|| black_box(crc32fast::hash(black_box(p))))
        });
    }
    g.finish();
}

/// A ring large enough that one write and one read never find it full or empty.
fn ring() -> SharedMemoryBuffer {
    SharedMemoryBuffer::create("lapce-ipc-bench", 64 << 10).expect("create a ring")
}

fn ring_raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    let mut ring = ring();
    for (len, label) in SIZES {
        let p = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("write_read", label), &p, |b, p| {
            b.iter(|| {
                ring.write(black_box(p)).unwrap();
                // Read every byte, as a receiver that copies or checks the message would.
                black_box(ring.read_with(|m| m.iter().fold(0u8, |a, &x| a ^ x)).unwrap())
            })
        });
    }
    g.finish();
}

fn ring_framed(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_framed");
    let mut ring = ring();
    for crc in [true, false] {
        for (len, label) in SIZES {
            let p = payload(len);
            let name = if crc { "write_read_crc" } else { "write_read_nocrc" };
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_with_input(BenchmarkId::new(name, label), &p, |b, p| {
                b.iter(|| {
                    let p = black_box(&p[..]);
                    // What FramedShmStream::send does for a single-record message...
                    let header = CanonicalHeader::for_payload(MessageType::Data, 7, p, crc).encode();
                    ring.write_with(HEADER_LEN + p.len(), |buf| {
                        buf[..HEADER_LEN].copy_from_slice(&header);
                        buf[HEADER_LEN..].copy_from_slice(p);
                        buf.len()
                    })
                    .unwrap();
                    // ...and what its in-place recv_with checks before handing the payload over.
                    let got = ring.read_with(|record| {
                        let h = CanonicalHeader::decode(record, 10 << 20).unwrap();
                        let part = &record[HEADER_LEN..];
                        h.verify(part).unwrap();
                        part.iter().fold(0u8, |a, &x| a ^ x)
                    });
                    black_box(got.unwrap())
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = header, crc32, ring_raw, ring_framed
}
criterion_main!(benches);
