//! Criterion micro-benchmarks of the frame layer and the ring, all in one process on one thread:
//!
//! - `header/encode`, `header/decode_verify/*` (decode and validate a header, then check the
//!   payload's length and CRC), `header/for_payload/*` (CRC plus header);
//! - `crc32/*`: `crc32fast::hash` of 64 B, 1 KiB and 64 KiB;
//! - `ring/write_read/*`: one [`SharedMemoryBuffer`] record written and read back (the ring with
//!   no waiting and no second process: what a message costs the two sides' CPUs, without the
//!   cross-core cache traffic a real connection adds);
//! - `ring_framed/*`: the same with the canonical header, CRC on and off (what
//!   `BlockingFramedStream` adds per single-record message: header encode into the record, decode,
//!   CRC);
//! - `protocol/*`: the AI protocol types through [`Codec`]: a typical chat [`AIRequest`] (system
//!   prompt and four messages with 1 KiB of text, one earlier tool call, one tool offered;
//!   1588 B as rkyv, 1703 B as JSON) and a [`StreamChunk`] of a few tokens (60 B as rkyv, 37 B as
//!   JSON): `access_rkyv` (validated zero-copy view), `from_rkyv` (validated, then
//!   deserialized), `to_rkyv`, and `from_json` (and `to_json` of the request) for comparison.
//!
//! Short measurement times keep `cargo bench -p lapce-ipc` around a minute; for steadier
//! figures pass criterion's own options, e.g. `cargo bench -p lapce-ipc -- --measurement-time 5`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lapce_ipc::frame::{CanonicalHeader, FrameFlags, MessageType, HEADER_LEN};
use lapce_ipc::messages::{AIRequest, Codec, Message, MessageRole, RawJson, StreamChunk, Tool, ToolCall};
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
                    // What BlockingFramedStream::send does for a single-record message...
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

/// A typical chat request: a system prompt, a short conversation in which the assistant called
/// the one tool offered, about 1 KiB of text in all.
fn chat_request() -> AIRequest {
    let code = "fn parse_header(bytes: &[u8]) -> Result<Header, Error> {\n    \
                let magic = u32::from_le_bytes(bytes[..4].try_into()?);\n    \
                if magic != MAGIC { return Err(Error::BadMagic(magic)); }\n    \
                Ok(Header { magic, len: u32::from_le_bytes(bytes[4..8].try_into()?) })\n}";
    let read_file = ToolCall {
        name: "read_file".into(),
        parameters: RawJson::new(r#"{"path":"src/frame/header.rs","startLine":1,"endLine":80}"#).unwrap(),
        id: "call_7f3a9c".into(),
    };
    AIRequest {
        messages: vec![
            Message::user(format!(
                "Why does this panic on short input, and how should I fix it?\n\n```rust\n{code}\n```"
            )),
            Message {
                role: MessageRole::Assistant,
                content: "Let me look at how the header is read elsewhere in the file first.".into(),
                tool_calls: Some(vec![read_file]),
            },
            Message::user(
                "It is called from the socket reader with whatever the last read returned, which \
                 can be fewer than eight bytes when the peer is slow.",
            ),
            Message::assistant(
                "Then the slices `bytes[..4]` and `bytes[4..8]` index out of bounds on short input: \
                 check `bytes.len() >= 8` first and return `Error::Short`. Better still, keep \
                 the partial read in the reader's buffer and call `parse_header` only once eight \
                 bytes have arrived: a slow peer is normal, not an error, and the caller should \
                 not have to retry by hand. `bytes.get(..8)` with `ok_or(Error::Short)?` gives \
                 you the check and the slice in one step, and the two `try_into` calls can then \
                 no longer fail.",
            ),
        ],
        model: "claude-sonnet-4-5".into(),
        temperature: Some(0.2),
        max_tokens: Some(4096),
        tools: Some(vec![Tool {
            name: "read_file".into(),
            description: Some("Read a range of lines of a file in the workspace.".into()),
            parameters: RawJson::new(
                r#"{"type":"object","properties":{"path":{"type":"string"},"startLine":{"type":"integer"},"endLine":{"type":"integer"}},"required":["path"]}"#,
            )
            .unwrap(),
        }]),
        system_prompt: Some("You are a coding assistant inside the Lapce editor. Answer concisely.".into()),
        stream: Some(true),
    }
}

fn protocol(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol");
    let request = chat_request();
    let archive = request.to_rkyv().unwrap();
    let json = request.to_json().unwrap();
    g.bench_function("access_rkyv/AIRequest", |b| {
        b.iter(|| black_box(AIRequest::access_rkyv(black_box(&archive)).unwrap().messages.len()))
    });
    g.bench_function("from_rkyv/AIRequest", |b| {
        b.iter(|| black_box(AIRequest::from_rkyv(black_box(&archive)).unwrap()))
    });
    g.bench_function("to_rkyv/AIRequest", |b| b.iter(|| black_box(black_box(&request).to_rkyv().unwrap())));
    g.bench_function("from_json/AIRequest", |b| {
        b.iter(|| black_box(AIRequest::from_json(black_box(&json)).unwrap()))
    });
    g.bench_function("to_json/AIRequest", |b| b.iter(|| black_box(black_box(&request).to_json().unwrap())));

    let chunk = StreamChunk { delta: " check `bytes.len() >= 8`".into(), ..Default::default() };
    let archive = chunk.to_rkyv().unwrap();
    let json = chunk.to_json().unwrap();
    g.bench_function("access_rkyv/StreamChunk", |b| {
        b.iter(|| black_box(StreamChunk::access_rkyv(black_box(&archive)).unwrap().delta.len()))
    });
    g.bench_function("from_rkyv/StreamChunk", |b| {
        b.iter(|| black_box(StreamChunk::from_rkyv(black_box(&archive)).unwrap()))
    });
    g.bench_function("to_rkyv/StreamChunk", |b| b.iter(|| black_box(black_box(&chunk).to_rkyv().unwrap())));
    g.bench_function("from_json/StreamChunk", |b| {
        b.iter(|| black_box(StreamChunk::from_json(black_box(&json)).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = header, crc32, ring_raw, ring_framed, protocol
}
criterion_main!(benches);
