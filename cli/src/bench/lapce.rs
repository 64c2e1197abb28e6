//! The lapce-ipc transport: a [`BlockingSharedMemoryListener`] in the server child, a
//! [`BlockingSharedMemoryStream`] in the client.

use std::time::Duration;

use lapce_ipc::frame::{
    BlockingFramedReceiver, BlockingFramedSender, BlockingFramedStream, Frame, MessageType,
    DEFAULT_MAX_MESSAGE,
};
use lapce_ipc::{
    BlockingSharedMemoryListener, BlockingSharedMemoryStream, BlockingStreamReceiver, BlockingStreamSender,
    IpcError, StreamConfig, WaitStrategy,
};

use super::child::announce_ready;
use super::measure::{self, ClientConn, Result, ServerConn};
use super::{Framing, Mode, ServerArgs, Test};

/// The wait strategy of a bench mode.
pub fn wait_strategy(mode: Mode) -> WaitStrategy {
    match mode {
        Mode::Spin => WaitStrategy::Spin,
        // The other modes are the peers' and the request/response rows'; were they asked of
        // the stream, the default.
        Mode::Adaptive | Mode::EventLoop | Mode::TokioMain | Mode::Unpinned => WaitStrategy::default(),
        Mode::Blocking => WaitStrategy::Blocking,
    }
}

/// Ring capacity of the large-message test: messages larger than a record of it (512 KiB) are
/// fragmented by the framed stream, as they would be in use.
pub const LARGE_RING: usize = 1 << 20;

/// Ring capacity for a test: at least the library default (256 KiB) for echo, at least 1 MiB for
/// the sink (so many messages are in flight), and always room for a few `payload`-byte messages;
/// always [`LARGE_RING`] for the large-message test.
pub fn ring_capacity(test: Test, payload: usize) -> usize {
    let room = (4 * (payload + 64)).next_power_of_two();
    let floor = match test {
        Test::Echo => StreamConfig::default().ring_capacity,
        Test::Sink => 1 << 20,
        Test::LargeSink => return LARGE_RING,
    };
    room.max(floor).min(lapce_ipc::MAX_CAPACITY)
}

/// Largest message of a framed stream for a test of `payload`-byte messages.
fn framed_max(payload: usize) -> usize {
    payload.max(DEFAULT_MAX_MESSAGE)
}

/// Connection config for a mode.
fn config(mode: Mode, ring_capacity: usize) -> StreamConfig {
    StreamConfig {
        ring_capacity,
        wait: wait_strategy(mode),
        handshake_timeout: Duration::from_secs(10),
        ..StreamConfig::default()
    }
}

/// The client side of a lapce-ipc connection: the raw stream, or a framed one.
pub enum LapceClient {
    /// Raw messages.
    Raw(BlockingSharedMemoryStream),
    /// A canonical frame header on every message.
    Framed(BlockingFramedStream),
}

impl LapceClient {
    /// Connects to the listener `name` with the wait strategy of `mode`, framed if asked (with
    /// room for `payload`-byte messages).
    pub fn connect(name: &str, mode: Mode, framing: Option<Framing>, payload: usize) -> Result<LapceClient> {
        let stream = BlockingSharedMemoryStream::connect_with(
            name,
            &config(mode, StreamConfig::default().ring_capacity),
        )?;
        Ok(match framing {
            None => LapceClient::Raw(stream),
            Some(f) => LapceClient::Framed(
                BlockingFramedStream::new(stream).with_crc(f.crc).with_max_message(framed_max(payload)),
            ),
        })
    }

    /// Largest payload that travels as one ring record (the frame header takes its share).
    pub fn max_message_size(&self) -> usize {
        match self {
            LapceClient::Raw(s) => s.max_message_size(),
            LapceClient::Framed(f) => f.single_record_limit(),
        }
    }
}

impl ClientConn for LapceClient {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        match self {
            LapceClient::Raw(s) => s.send(msg)?,
            LapceClient::Framed(f) => {
                f.send(MessageType::Data, msg)?;
            }
        }
        Ok(())
    }

    fn recv_probe(&mut self) -> Result<(usize, u8)> {
        Ok(match self {
            LapceClient::Raw(s) => s.recv_with(|m| (m.len(), m.first().copied().unwrap_or(0)))?,
            // In place, like the raw stream's probe (the header and CRC are checked first).
            LapceClient::Framed(f) => f.recv_with(|_, m, _| (m.len(), m.first().copied().unwrap_or(0)))?,
        })
    }

    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self {
            LapceClient::Raw(s) => Ok(s.recv(buf)?),
            LapceClient::Framed(f) => Ok(f.recv_with(|_, m, _| {
                let n = m.len().min(buf.len());
                buf[..n].copy_from_slice(&m[..n]);
                m.len()
            })?),
        }
    }
}

/// The server side of a framed connection, split like the raw one: an echo reads the request
/// in place (header and CRC checked) and writes the reply with the request's id straight into
/// the outgoing ring.
struct FramedServer {
    tx: BlockingFramedSender,
    rx: BlockingFramedReceiver,
    /// Sink: copy each message into `frame` (large messages, reassembled there) instead of
    /// checking it in place.
    copy_out: bool,
    frame: Frame,
}

impl ServerConn for FramedServer {
    fn echo(&mut self) -> Result<bool> {
        let tx = &mut self.tx;
        match self.rx.recv_with(|kind, m, id| tx.send_with_id(kind, id, m)) {
            Ok(sent) => sent.map(|()| true).map_err(Into::into),
            Err(IpcError::PeerGone) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool> {
        if self.copy_out {
            self.rx.recv_into(&mut self.frame)?;
            let got = &self.frame.payload;
            return Ok(got.len() == len && got.first() == Some(&tag));
        }
        Ok(self.rx.recv_with(|_, m, _| m.len() == len && m.first() == Some(&tag))?)
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.send(MessageType::Data, msg)?;
        Ok(())
    }
}

/// The server side of a lapce-ipc connection, split so that an echo copies straight from the
/// incoming ring into the outgoing one.
struct LapceServer {
    tx: BlockingStreamSender,
    rx: BlockingStreamReceiver,
}

impl ServerConn for LapceServer {
    fn echo(&mut self) -> Result<bool> {
        let tx = &mut self.tx;
        match self.rx.recv_with(|m| tx.send(m)) {
            Ok(sent) => sent.map(|()| true).map_err(Into::into),
            Err(IpcError::PeerGone) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool> {
        Ok(self.rx.recv_with(|m| m.len() == len && m.first() == Some(&tag))?)
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.tx.send(msg)?)
    }
}

/// Runs the server child: binds `args.name`, prints `ready`, accepts one client, unbinds (the
/// socket file goes away at once) and serves the test.
pub fn serve(args: &ServerArgs) -> Result<()> {
    let ring = args.ring_capacity.unwrap_or_else(|| ring_capacity(args.test, args.payload));
    let listener = BlockingSharedMemoryListener::bind_with(&args.name, config(args.mode, ring))?;
    announce_ready()?;
    let stream = listener.accept()?;
    drop(listener);
    // Only the large-message test sends messages larger than a record (framed, fragmented).
    if args.test != Test::LargeSink && args.payload > stream.max_message_size() {
        return Err(format!(
            "payload {} exceeds the ring's limit {}",
            args.payload,
            stream.max_message_size()
        )
        .into());
    }
    if let Some(framing) = args.transport.framing() {
        let framed = BlockingFramedStream::new(stream)
            .with_crc(framing.crc)
            .with_max_message(framed_max(args.payload));
        let (tx, rx) = framed.into_split();
        let mut conn =
            FramedServer { tx, rx, copy_out: args.test == Test::LargeSink, frame: Frame::default() };
        return match args.test {
            Test::Echo => measure::serve_echo(&mut conn),
            Test::Sink | Test::LargeSink => {
                measure::serve_sink(&mut conn, args.payload, args.warmup, args.count)
            }
        };
    }
    let (tx, rx) = stream.into_split();
    let mut conn = LapceServer { tx, rx };
    match args.test {
        Test::Echo => measure::serve_echo(&mut conn),
        Test::Sink | Test::LargeSink => measure::serve_sink(&mut conn, args.payload, args.warmup, args.count),
    }
}
