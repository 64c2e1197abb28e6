//! The lapce-ipc transport: a [`SharedMemoryListener`] in the server child, a
//! [`SharedMemoryStream`] in the client.

use std::time::Duration;

use lapce_ipc::{
    IpcError, SharedMemoryListener, SharedMemoryStream, StreamConfig, StreamReceiver, StreamSender,
    WaitStrategy,
};

use super::child::announce_ready;
use super::measure::{self, ClientConn, Result, ServerConn};
use super::{Mode, ServerArgs, Test};

/// The wait strategy of a bench mode.
pub fn wait_strategy(mode: Mode) -> WaitStrategy {
    match mode {
        Mode::Spin => WaitStrategy::Spin,
        Mode::Adaptive => WaitStrategy::default(),
        Mode::Blocking => WaitStrategy::Blocking,
    }
}

/// Ring capacity for a test: at least the library default (256 KiB) for echo, at least 1 MiB for
/// the sink (so many messages are in flight), and always room for a few `payload`-byte messages.
pub fn ring_capacity(test: Test, payload: usize) -> usize {
    let room = (4 * (payload + 64)).next_power_of_two();
    let floor = match test {
        Test::Echo => StreamConfig::default().ring_capacity,
        Test::Sink => 1 << 20,
    };
    room.max(floor).min(lapce_ipc::MAX_CAPACITY)
}

/// Connection config for a mode.
fn config(mode: Mode, ring_capacity: usize) -> StreamConfig {
    StreamConfig { ring_capacity, wait: wait_strategy(mode), handshake_timeout: Duration::from_secs(10) }
}

/// The client side of a lapce-ipc connection.
pub struct LapceClient {
    stream: SharedMemoryStream,
}

impl LapceClient {
    /// Connects to the listener `name` with the wait strategy of `mode`.
    pub fn connect(name: &str, mode: Mode) -> Result<LapceClient> {
        let stream =
            SharedMemoryStream::connect_with(name, &config(mode, StreamConfig::default().ring_capacity))?;
        Ok(LapceClient { stream })
    }

    /// Largest message the connection carries.
    pub fn max_message_size(&self) -> usize {
        self.stream.max_message_size()
    }
}

impl ClientConn for LapceClient {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.stream.send(msg)?)
    }

    fn recv_probe(&mut self) -> Result<(usize, u8)> {
        Ok(self.stream.recv_with(|m| (m.len(), m.first().copied().unwrap_or(0)))?)
    }

    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        Ok(self.stream.recv(buf)?)
    }
}

/// The server side of a lapce-ipc connection, split so that an echo copies straight from the
/// incoming ring into the outgoing one.
struct LapceServer {
    tx: StreamSender,
    rx: StreamReceiver,
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
    let listener = SharedMemoryListener::bind_with(&args.name, config(args.mode, ring))?;
    announce_ready()?;
    let stream = listener.accept()?;
    drop(listener);
    if args.payload > stream.max_message_size() {
        return Err(format!(
            "payload {} exceeds the ring's limit {}",
            args.payload,
            stream.max_message_size()
        )
        .into());
    }
    let (tx, rx) = stream.into_split();
    let mut conn = LapceServer { tx, rx };
    match args.test {
        Test::Echo => measure::serve_echo(&mut conn),
        Test::Sink => measure::serve_sink(&mut conn, args.payload, args.warmup, args.count),
    }
}
