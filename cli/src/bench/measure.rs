//! The measurement loops, written once for every transport.
//!
//! A transport provides a [`ClientConn`] (the parent's side) and a [`ServerConn`] (the child's
//! side); the loops here are generic over them, so lapce-ipc and the socket baseline run exactly
//! the same protocol:
//!
//! - **echo** (round-trip latency): the client sends a message whose first byte is its sequence
//!   number (as `u8`), the server sends it back, the client checks length and first byte.
//! - **sink** (one-way throughput): the client sends `warmup` messages and waits for an ack,
//!   then sends `count` messages as fast as it can and waits for the final ack. The server checks
//!   every message (length, first byte = sequence number as `u8`) and reports in each ack how
//!   many it received and how many were wrong.
//!
//! A peer's row (the baselines here; the Node.js and iceoryx2 peers do the same in their own
//! programs) runs to its count or its time budget, whichever comes first: the round trips stop
//! at the budget, and the sink's client stops sending at the budget and sends an empty message,
//! the end marker (payloads are at least 1 byte), which the server acks with what it received.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use crate::error::{Error, Result};
pub use crate::histogram::new_histogram;

/// Size of an ack: messages received (`u64` LE), then messages that failed the check (`u64` LE).
pub const ACK_LEN: usize = 16;

/// The client's side of a connection.
pub trait ClientConn {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Receives one message and returns its length and first byte (0 when empty).
    fn recv_probe(&mut self) -> Result<(usize, u8)>;
    /// Receives one message into `buf` and returns its length.
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize>;
}

/// The server's side of a connection.
pub trait ServerConn {
    /// Receives one message and sends it straight back. `Ok(false)`: the client closed the
    /// connection cleanly (between messages).
    fn echo(&mut self) -> Result<bool>;
    /// Receives one message and tells whether it is `len` bytes long and starts with `tag`.
    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool>;
    /// [`recv_check`](Self::recv_check), with `None` for the sink's end marker (an empty
    /// message). Only the transports whose client has a time budget read it; the others never
    /// get one.
    fn recv_check_or_end(&mut self, len: usize, tag: u8) -> Result<Option<bool>> {
        self.recv_check(len, tag).map(Some)
    }
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> Result<()>;
}

/// Measures round trips: `warmup` unrecorded ones, then `rounds` recorded in nanoseconds.
pub fn measure_rtt<C: ClientConn>(
    conn: &mut C,
    payload: usize,
    warmup: u64,
    rounds: u64,
) -> Result<Histogram<u64>> {
    measure_rtt_within(conn, payload, warmup, rounds, None)
}

/// [`measure_rtt`] within a time `budget` (warm-up included), when given: past it the warm-up
/// ends at once and the recording after the current round trip (at least one is recorded). The
/// histogram's length is the count reached.
pub fn measure_rtt_within<C: ClientConn>(
    conn: &mut C,
    payload: usize,
    warmup: u64,
    rounds: u64,
    budget: Option<Duration>,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram()?;
    let mut msg = vec![0xA5u8; payload];
    let deadline = budget.map(|b| Instant::now() + b);
    let over = || deadline.is_some_and(|d| Instant::now() >= d);
    let mut one = |i: u64| -> Result<Duration> {
        let tag = i as u8;
        msg[0] = tag;
        let start = Instant::now();
        conn.send(&msg)?;
        let (len, first) = conn.recv_probe()?;
        let rtt = start.elapsed();
        if len != payload || first != tag {
            return Err(format!(
                "bad echo for round trip {i}: got {len} bytes starting with {first}, expected {payload} starting with {tag}"
            )
            .into());
        }
        Ok(rtt)
    };
    for i in 0..warmup {
        one(i)?;
        if over() {
            break;
        }
    }
    for i in warmup..warmup + rounds {
        let rtt = one(i)?;
        hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
        if over() {
            break;
        }
    }
    Ok(hist)
}

/// Result of a one-way throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Messages sent in the timed phase.
    pub messages: u64,
    /// Payload size of each message in bytes.
    pub payload: usize,
    /// Time from the first timed send to the final ack.
    pub elapsed: Duration,
}

impl Throughput {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Payload megabytes (1e6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.payload as f64 / 1e6
    }

    /// Payload gibibytes (2^30 bytes) per second.
    pub fn gib_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.payload as f64 / (1u64 << 30) as f64
    }
}

/// Measures one-way throughput: `warmup` messages and an ack, then `count` timed messages and
/// the final ack.
pub fn measure_throughput<C: ClientConn>(
    conn: &mut C,
    payload: usize,
    warmup: u64,
    count: u64,
) -> Result<Throughput> {
    measure_throughput_within(conn, payload, warmup, count, None)
}

/// [`measure_throughput`] within a time `budget` for the timed messages, when given: past it
/// the client stops sending (at least one message is sent) and ends with the end marker, and
/// the server acks what it received. `messages` of the result is the count reached.
pub fn measure_throughput_within<C: ClientConn>(
    conn: &mut C,
    payload: usize,
    warmup: u64,
    count: u64,
    budget: Option<Duration>,
) -> Result<Throughput> {
    let mut msg = vec![0x5Au8; payload];
    for seq in 0..warmup {
        msg[0] = seq as u8;
        conn.send(&msg)?;
    }
    if warmup > 0 {
        expect_ack(conn, warmup)?;
    }
    let start = Instant::now();
    let deadline = budget.map(|b| start + b);
    let mut sent = 0;
    while sent < count {
        msg[0] = (warmup + sent) as u8;
        conn.send(&msg)?;
        sent += 1;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    if sent < count {
        conn.send(&[])?;
    }
    expect_ack(conn, warmup + sent)?;
    let elapsed = start.elapsed();
    Ok(Throughput { messages: sent, payload, elapsed })
}

/// Waits for an ack and checks that the server got `expected` messages, all intact.
fn expect_ack<C: ClientConn>(conn: &mut C, expected: u64) -> Result<()> {
    let mut buf = [0u8; 64];
    let n = conn.recv_into(&mut buf)?;
    let (received, bad) = decode_ack(&buf[..n])?;
    if received != expected || bad != 0 {
        return Err(format!(
            "server acked {received} messages ({bad} failed the check), expected {expected} intact"
        )
        .into());
    }
    Ok(())
}

/// Encodes an ack.
fn encode_ack(received: u64, bad: u64) -> [u8; ACK_LEN] {
    let mut ack = [0u8; ACK_LEN];
    ack[..8].copy_from_slice(&received.to_le_bytes());
    ack[8..].copy_from_slice(&bad.to_le_bytes());
    ack
}

/// Decodes an ack into (received, bad).
fn decode_ack(ack: &[u8]) -> Result<(u64, u64)> {
    if ack.len() != ACK_LEN {
        return Err(format!("ack of {} bytes, expected {ACK_LEN}", ack.len()).into());
    }
    let word = |i: usize| u64::from_le_bytes(ack[i..i + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(8)))
}

/// Server of the echo test: echoes until the client closes the connection.
pub fn serve_echo<S: ServerConn>(conn: &mut S) -> Result<()> {
    while conn.echo()? {}
    Ok(())
}

/// Server of the sink test: receives and checks `warmup + count` messages of `payload` bytes,
/// acking after the warmup (if any) and at the end, or at the end marker (the client's budget
/// ran out) with what it received.
pub fn serve_sink<S: ServerConn>(conn: &mut S, payload: usize, warmup: u64, count: u64) -> Result<()> {
    let mut bad = 0u64;
    for seq in 0..warmup + count {
        match conn.recv_check_or_end(payload, seq as u8)? {
            Some(true) => {}
            Some(false) => bad += 1,
            None => return conn.send(&encode_ack(seq, bad)),
        }
        if seq + 1 == warmup {
            conn.send(&encode_ack(warmup, bad))?;
        }
    }
    conn.send(&encode_ack(warmup + count, bad))
}

/// Name of the test hook's environment variable: when set to N, the baseline servers sleep N
/// µs before each message they receive, and so does the Node.js peer's child, so that a test
/// can slow a peer down until its time budget cuts its row short. Not for users.
pub const PEER_DELAY_ENV: &str = "LAPCE_IPC_BENCH_PEER_DELAY_US";

/// The test hook's delay per message, if set (see [`PEER_DELAY_ENV`]).
fn peer_delay() -> Option<Duration> {
    let us: u64 = std::env::var(PEER_DELAY_ENV).ok()?.parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

/// A server connection slowed by the test hook's delay before each message it receives.
struct Slowed<'a, S> {
    inner: &'a mut S,
    delay: Option<Duration>,
}

impl<S> Slowed<'_, S> {
    fn pause(&self) {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
    }
}

impl<S: ServerConn> ServerConn for Slowed<'_, S> {
    fn echo(&mut self) -> Result<bool> {
        self.pause();
        self.inner.echo()
    }

    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool> {
        self.pause();
        self.inner.recv_check(len, tag)
    }

    fn recv_check_or_end(&mut self, len: usize, tag: u8) -> Result<Option<bool>> {
        self.pause();
        self.inner.recv_check_or_end(len, tag)
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.inner.send(msg)
    }
}

/// Serves a baseline's `test` (echo, or the sink of `payload` with `warmup` and `count`),
/// slowed by the test hook when it is set (see [`PEER_DELAY_ENV`]).
pub fn serve_baseline<S: ServerConn>(
    conn: &mut S,
    test: super::Test,
    payload: usize,
    warmup: u64,
    count: u64,
) -> Result<()> {
    let mut conn = Slowed { inner: conn, delay: peer_delay() };
    match test {
        super::Test::Echo => serve_echo(&mut conn),
        super::Test::Sink | super::Test::LargeSink => serve_sink(&mut conn, payload, warmup, count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_round_trips() {
        assert_eq!(decode_ack(&encode_ack(12345, 6)).unwrap(), (12345, 6));
        assert!(decode_ack(&[0u8; 3]).is_err());
    }

    /// A budgeted client against the baseline's server loops over a socket pair: the round trips
    /// stop at the budget with at least one recorded, and a sink cut short ends with the end
    /// marker, acked with what the server received; without a budget both run to their counts.
    #[cfg(unix)]
    #[test]
    fn budgets_stop_the_loops_and_the_sink_acks_the_end_marker() {
        use std::os::unix::net::UnixStream;

        use crate::bench::prefixed::PrefixedConn;

        let pair = || {
            let (a, b) = UnixStream::pair().unwrap();
            let conn = |s: UnixStream| PrefixedConn::new(s.try_clone().unwrap(), s);
            (conn(a), conn(b))
        };
        let (mut client, mut server) = pair();
        let echo = std::thread::spawn(move || serve_echo(&mut server));
        let h = measure_rtt_within(&mut client, 64, 10, 1_000_000, Some(Duration::ZERO)).unwrap();
        assert_eq!(h.len(), 1, "one round trip recorded past the budget");
        let h = measure_rtt_within(&mut client, 64, 0, 50, None).unwrap();
        assert_eq!(h.len(), 50);
        drop(client);
        echo.join().unwrap().unwrap();

        let (mut client, mut server) = pair();
        let sink = std::thread::spawn(move || serve_sink(&mut server, 64, 5, 1_000_000));
        let t = measure_throughput_within(&mut client, 64, 5, 1_000_000, Some(Duration::ZERO)).unwrap();
        assert_eq!(t.messages, 1, "one message sent past the budget, then the end marker");
        sink.join().unwrap().unwrap();

        let (mut client, mut server) = pair();
        let sink = std::thread::spawn(move || serve_sink(&mut server, 64, 5, 300));
        let t = measure_throughput_within(&mut client, 64, 5, 300, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(t.messages, 300);
        sink.join().unwrap().unwrap();
    }

    #[test]
    fn throughput_units() {
        let t = Throughput { messages: 2_000_000, payload: 1000, elapsed: Duration::from_secs(2) };
        assert_eq!(t.msgs_per_sec(), 1_000_000.0);
        assert_eq!(t.mb_per_sec(), 1000.0);
        let big = Throughput { messages: 1024, payload: 1 << 20, elapsed: Duration::from_secs(1) };
        assert_eq!(big.gib_per_sec(), 1.0);
    }
}
