//! The blocking flavour: [`BlockingSharedMemoryListener`] and [`BlockingSharedMemoryStream`].

use std::path::Path;
use std::time::{Duration, Instant};

use super::handshake::{self, Offer, CLIENT_HELLO_LEN, SERVER_HELLO_LEN};
use super::pool::{PoolStats, SegmentPool};
use super::{config_socket_path, StreamConfig};
use crate::channel::{copy_into, RecvHalf, SendHalf, WaitStrategy};
use crate::error::{IpcError, Result};
use crate::platform::{ControlListener, ControlStream};

/// Accepts shared-memory connections on a named control socket (blocking flavour).
///
/// ```no_run
/// use lapce_ipc::BlockingSharedMemoryListener;
///
/// let listener = BlockingSharedMemoryListener::bind("echo")?;
/// loop {
///     let mut stream = listener.accept()?;
///     std::thread::spawn(move || {
///         let mut buf = vec![0u8; stream.max_message_size()];
///         while let Ok(n) = stream.recv(&mut buf) {
///             if stream.send(&buf[..n]).is_err() {
///                 break;
///             }
///         }
///     });
/// }
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub struct BlockingSharedMemoryListener {
    pub(super) control: ControlListener,
    config: StreamConfig,
    rejections: Rejections,
    pool: SegmentPool,
}

impl BlockingSharedMemoryListener {
    /// Binds `name` (see [`socket_path`](crate::socket_path)) with the default configuration.
    pub fn bind(name: &str) -> Result<BlockingSharedMemoryListener> {
        Self::bind_with(name, StreamConfig::default())
    }

    /// Binds `name` with `config` (its [`socket_dir`](StreamConfig::socket_dir) and
    /// [`allowed_peer_uids`](StreamConfig::allowed_peer_uids) decide where and who may connect).
    pub fn bind_with(name: &str, config: StreamConfig) -> Result<BlockingSharedMemoryListener> {
        crate::ring::check_capacity(config.ring_capacity)?;
        config.prepare_process();
        let control =
            ControlListener::bind(config_socket_path(name, &config, false)?, &config.allowed_peer_uids)?;
        let pool = SegmentPool::for_config(&config)?;
        Ok(BlockingSharedMemoryListener { control, config, rejections: Rejections::default(), pool })
    }

    /// The control channel's path (see [`socket_path`](crate::socket_path)).
    pub fn path(&self) -> &Path {
        self.control.path()
    }

    /// Waits for the next client and completes its handshake.
    ///
    /// A client whose handshake fails (another uid, another protocol version, a broken or
    /// missing hello within the handshake timeout, a hang-up) is refused and counted in
    /// [`rejected`](Self::rejected); `accept` then waits for the next client. So is a client
    /// this process has no slot, descriptors or memory for: it hears why
    /// ([`IpcError::ServerRefused`] naming the resource), and the refusal is logged at warn.
    /// Errors are returned only for the listener itself (its `accept` failing).
    /// The handshake runs on the calling thread: a slow client delays the next accept by at
    /// most the handshake timeout.
    pub fn accept(&self) -> Result<BlockingSharedMemoryStream> {
        loop {
            let accepted = self.control.accept()?;
            let mut control = accepted.stream;
            if accepted.starved.is_some() {
                let refused = handshake::out_of_descriptors();
                let hello = handshake::refusal(&refused);
                self.rejections.record(refused);
                let _ = control.write_all_by(&hello, &[], Instant::now() + self.config.handshake_timeout);
                continue;
            }
            match server_handshake(control, &self.config, &self.pool, &self.rejections) {
                Ok(stream) => return Ok(stream),
                Err(Refused::Client(e)) => self.rejections.record(e),
                Err(Refused::Answered) => {}
                Err(Refused::Ours(e)) => return Err(e),
            }
        }
    }

    /// How many clients were refused so far, and why the last one was.
    pub fn rejected(&self) -> Rejected {
        self.rejections.get()
    }

    /// The warm pool's state: segments ready, slots in use, claims (see
    /// [`StreamConfig::warm_pool`]).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }
}

fn server_handshake(
    mut control: ControlStream,
    config: &StreamConfig,
    pool: &SegmentPool,
    rejections: &Rejections,
) -> Result<BlockingSharedMemoryStream, Refused> {
    let deadline = Instant::now() + config.handshake_timeout;
    let checked = control.check_peer(&config.allowed_peer_uids).and_then(|pid| {
        let mut hello = [0u8; CLIENT_HELLO_LEN];
        control.read_exact_by(&mut hello, deadline)?;
        handshake::check_client_hello(&hello).map(|_claimed| pid)
    });
    let client_pid = match checked {
        Ok(pid) => pid,
        Err(e) => {
            let hello = handshake::refusal(&e);
            rejections.record(e);
            let _ = control.write_all_by(&hello, &[], deadline);
            return Err(Refused::Answered);
        }
    };
    let (prepared, slot) = match pool.claim().map_err(handshake::as_refusal) {
        Ok(claimed) => claimed,
        Err(Ok(refused)) => {
            let hello = handshake::refusal(&refused);
            rejections.record(refused);
            let _ = control.write_all_by(&hello, &[], deadline);
            return Err(Refused::Answered);
        }
        Err(Err(e)) => return Err(Refused::Ours(e)),
    };
    let offer = Offer::new(prepared, slot, config.ring_capacity).map_err(Refused::Ours)?;
    control.write_all_by(&offer.hello, &offer.handles(), deadline).map_err(Refused::Client)?;
    let (tx, rx) = offer.into_halves(control, client_pid, config.wait).map_err(Refused::Ours)?;
    Ok(BlockingSharedMemoryStream::from_halves(tx, rx))
}

/// The clients a listener refused (see [`BlockingSharedMemoryListener::rejected`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// How many clients were refused so far.
    pub count: u64,
    /// Why the last one was, if any was.
    pub last: Option<String>,
}

/// A failed server-side handshake: the client's fault (refuse it, go on accepting) or ours.
pub(super) enum Refused {
    Client(IpcError),
    /// The client was refused with an answer saying why, and counted before the answer went
    /// (so that whoever hears of the refusal finds it counted).
    Answered,
    Ours(IpcError),
}

/// The count of refused clients and the last reason, shared by both listener flavours.
#[derive(Default)]
pub(super) struct Rejections {
    count: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<String>>,
}

impl Rejections {
    pub(super) fn record(&self, e: IpcError) {
        if let IpcError::ServerRefused(why) = &e {
            tracing::warn!(reason = %why, "client refused");
        }
        self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    pub(super) fn get(&self) -> Rejected {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Rejected { count: self.count.load(std::sync::atomic::Ordering::Relaxed), last }
    }
}

/// A connected pair of shared-memory rings: a message-oriented duplex stream (blocking flavour).
///
/// Messages are delivered whole, in order, exactly once; a message may be up to
/// [`max_message_size`](Self::max_message_size) bytes. When the outgoing ring is full, `send`
/// waits for room; it never drops. When the peer dies, a waiting call returns
/// [`IpcError::PeerGone`] as soon as the kernel reports the hang-up (a watcher thread hears it),
/// after every message the peer sent before it went has been delivered.
///
/// A stream is closed when both halves are dropped. Dropping only one half of a split stream is
/// not visible to the peer (a peer blocked on the other direction keeps waiting).
///
/// Use [`into_split`](Self::into_split) to send and receive from two threads, and
/// [`BlockingByteStream`](crate::BlockingByteStream) to read and write it as bytes.
///
/// A stream has no descriptor for an outside poll loop: its wake-ups are futexes (Linux) or
/// doorbells rung only while this side has announced a sleep, so no descriptor turns readable
/// when a message arrives. Wait in a thread of its own, or use the tokio flavour. (A listener's
/// descriptor is truthful, and offered: see [`BlockingSharedMemoryListener`]'s `AsFd`.)
#[derive(Debug)]
pub struct BlockingSharedMemoryStream {
    tx: BlockingStreamSender,
    rx: BlockingStreamReceiver,
}

/// The sending half of a [`BlockingSharedMemoryStream`].
#[derive(Debug)]
pub struct BlockingStreamSender {
    half: SendHalf,
}

/// The receiving half of a [`BlockingSharedMemoryStream`].
#[derive(Debug)]
pub struct BlockingStreamReceiver {
    half: RecvHalf,
}

impl BlockingSharedMemoryStream {
    pub(super) fn from_halves(tx: SendHalf, rx: RecvHalf) -> BlockingSharedMemoryStream {
        BlockingSharedMemoryStream {
            tx: BlockingStreamSender { half: tx },
            rx: BlockingStreamReceiver { half: rx },
        }
    }

    /// Connects to the listener bound to `name`, with the default configuration.
    pub fn connect(name: &str) -> Result<BlockingSharedMemoryStream> {
        Self::connect_with(name, &StreamConfig::default())
    }

    /// Connects to the listener bound to `name`; `config.ring_capacity` is ignored (the
    /// listener decides). `config.socket_dir` must be the listener's, and the listener must run
    /// as our uid or one of `config.allowed_peer_uids`.
    pub fn connect_with(name: &str, config: &StreamConfig) -> Result<BlockingSharedMemoryStream> {
        config.prepare_process();
        let deadline = Instant::now() + config.handshake_timeout;
        let mut control = ControlStream::connect(&config_socket_path(name, config, true)?, deadline)?;
        let server_pid = control.check_peer(&config.allowed_peer_uids)?;
        match control.write_all_by(&handshake::client_hello(handshake::PROTOCOL_VERSION), &[], deadline) {
            // A server that refuses us (our uid) answers at once and closes, possibly before our
            // hello went out: its answer, read next, says why.
            Ok(()) | Err(IpcError::PeerGone) => {}
            Err(e) => return Err(e),
        }
        let mut hello = [0u8; SERVER_HELLO_LEN];
        let fds = control.read_exact_by(&mut hello, deadline)?;
        let (tx, rx) = handshake::client_halves(&hello, fds, control, server_pid, config.wait)?;
        Ok(Self::from_halves(tx, rx))
    }

    /// Splits the stream so that one thread can send while another receives.
    pub fn into_split(self) -> (BlockingStreamSender, BlockingStreamReceiver) {
        (self.tx, self.rx)
    }

    /// The channel halves inside, for the layers that wait on them in their own way.
    pub(crate) fn into_halves(self) -> (SendHalf, RecvHalf) {
        (self.tx.half, self.rx.half)
    }

    /// Largest message this stream sends or receives, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.tx.max_message_size()
    }

    /// The peer's process id, as the OS reported it for the control channel (SO_PEERCRED,
    /// LOCAL_PEERPID, GetNamedPipe*ProcessId; 0 where the OS does not tell).
    pub fn peer_pid(&self) -> u32 {
        self.tx.half.link().peer_pid()
    }

    /// Changes how both directions wait.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.tx.set_wait_strategy(wait);
        self.rx.set_wait_strategy(wait);
    }

    /// Sends one message, waiting for room while the ring is full. See [`BlockingStreamSender::send`].
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.send(msg)
    }

    /// Sends without waiting; [`IpcError::WouldBlock`] when the ring is full.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.try_send(msg)
    }

    /// Sends, waiting at most `timeout` for room.
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.tx.send_timeout(msg, timeout)
    }

    /// Zero-copy send. See [`BlockingStreamSender::send_with`].
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        self.tx.send_with(len, fill)
    }

    /// Receives the next message into `buf`. See [`BlockingStreamReceiver::recv`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv(buf)
    }

    /// Receives without waiting; [`IpcError::WouldBlock`] when nothing is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.try_recv(buf)
    }

    /// Receives, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.rx.recv_timeout(buf, timeout)
    }

    /// Zero-copy receive. See [`BlockingStreamReceiver::recv_with`].
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.rx.recv_with(f)
    }

    /// Zero-copy receive without waiting; [`IpcError::WouldBlock`] when nothing is queued.
    pub fn try_recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.rx.try_recv_with(f)
    }
}

impl BlockingStreamSender {
    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.half.max_message()
    }

    /// Changes how this half waits for room.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.half.set_strategy(wait);
    }

    /// Sends one message. Waits (spinning, then sleeping) while the ring is full; fails with
    /// [`IpcError::MessageTooLarge`] before writing anything if `msg` exceeds the limit, and with
    /// [`IpcError::PeerGone`] if the peer dies while we wait.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.half.send(msg, None)
    }

    /// Sends, waiting at most `timeout` for room; [`IpcError::Timeout`] after that.
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.half.send(msg, Instant::now().checked_add(timeout))
    }

    /// Sends without waiting; [`IpcError::WouldBlock`] when the ring is full.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.half.try_send(msg)
    }

    /// Zero-copy send: reserves `len` bytes in the ring, lets `fill` write the message in place
    /// and return its final length (at most `len`), then publishes it.
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        self.half.send_with(len, None, fill)
    }
}

impl BlockingStreamReceiver {
    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.half.max_message()
    }

    /// Changes how this half waits for messages.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.half.set_strategy(wait);
    }

    /// Receives the next message into `buf` and returns its length. If `buf` is too small the
    /// message stays queued and [`IpcError::BufferTooSmall`] says how much room it needs.
    /// Messages the peer sent before dying are still delivered; then [`IpcError::PeerGone`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.half.recv_with(None, copy_into(buf))
    }

    /// Receives, waiting at most `timeout`; [`IpcError::Timeout`] after that.
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.half.recv_with(Instant::now().checked_add(timeout), copy_into(buf))
    }

    /// Receives without waiting; [`IpcError::WouldBlock`] when nothing is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.half.recv_now(copy_into(buf))
    }

    /// Zero-copy receive: calls `f` with the message bytes in shared memory, then frees them.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.half.recv_with(None, |b| Ok(f(b)))
    }

    /// Zero-copy receive without waiting; [`IpcError::WouldBlock`] when nothing is queued.
    pub fn try_recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.half.recv_now(|b| Ok(f(b)))
    }
}
