//! The tokio flavour: [`SharedMemoryListener`] and [`SharedMemoryStream`].
//!
//! Same rings, same handshake as the blocking flavour; waits sleep on doorbells registered with
//! the tokio reactor, which also tell when the peer goes.
//! Streams must be used inside the tokio runtime they were created in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::blocking::{Refused, Rejections};
use super::handshake::{self, Offer, CLIENT_HELLO_LEN, SERVER_HELLO_LEN};
use super::pool::{PoolStats, SegmentPool};
use super::{config_socket_path, StreamConfig};
use crate::channel::{copy_into, RecvHalf, SendHalf, WaitStrategy};
use crate::error::{IpcError, Result};
use crate::platform::{AsyncControlListener, AsyncControlStream, ControlListener};

/// Accepts shared-memory connections on a named control socket (tokio flavour).
///
/// ```no_run
/// # async fn run() -> lapce_ipc::Result<()> {
/// use lapce_ipc::SharedMemoryListener;
///
/// let listener = SharedMemoryListener::bind("echo-async")?;
/// loop {
///     let mut stream = listener.accept().await?;
///     tokio::spawn(async move {
///         let mut buf = vec![0u8; stream.max_message_size()];
///         while let Ok(n) = stream.recv(&mut buf).await {
///             if stream.send(&buf[..n]).await.is_err() {
///                 break;
///             }
///         }
///     });
/// }
/// # }
/// ```
pub struct SharedMemoryListener {
    pub(super) control: AsyncControlListener,
    path: PathBuf,
    config: StreamConfig,
    rejections: Rejections,
    pool: SegmentPool,
}

impl SharedMemoryListener {
    /// Binds `name` (see [`socket_path`](crate::socket_path)) with the default configuration.
    /// Must be called inside a tokio runtime.
    pub fn bind(name: &str) -> Result<SharedMemoryListener> {
        Self::bind_with(name, StreamConfig::default())
    }

    /// Binds `name` with `config` (see [`BlockingSharedMemoryListener::bind_with`](crate::BlockingSharedMemoryListener::bind_with)).
    pub fn bind_with(name: &str, config: StreamConfig) -> Result<SharedMemoryListener> {
        crate::ring::check_capacity(config.ring_capacity)?;
        config.prepare_process();
        let control =
            ControlListener::bind(config_socket_path(name, &config, false)?, &config.allowed_peer_uids)?;
        let path = control.path().to_path_buf();
        let control = control.into_async()?;
        let pool = SegmentPool::for_config(&config)?;
        Ok(SharedMemoryListener { control, path, config, rejections: Rejections::default(), pool })
    }

    /// The control channel's path (see [`socket_path`](crate::socket_path)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next client and completes its handshake. As with the blocking flavour,
    /// refused clients are counted in [`rejected`](Self::rejected) and skipped; errors concern
    /// the listener itself. The whole handshake is bounded by the handshake timeout.
    pub async fn accept(&self) -> Result<SharedMemoryStream> {
        loop {
            let accepted = self.control.accept().await?;
            let mut control = accepted.stream;
            if accepted.starved.is_some() {
                let refused = handshake::out_of_descriptors();
                let hello = handshake::refusal(&refused);
                self.rejections.record(refused);
                let _ =
                    tokio::time::timeout(self.config.handshake_timeout, control.write_all(&hello, &[])).await;
                continue;
            }
            let handshake = server_handshake(control, &self.config, &self.pool, &self.rejections);
            let outcome = match tokio::time::timeout(self.config.handshake_timeout, handshake).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Refused::Client(IpcError::Timeout)),
            };
            match outcome {
                Ok(stream) => return Ok(stream),
                Err(Refused::Client(e)) => self.rejections.record(e),
                Err(Refused::Answered) => {}
                Err(Refused::Ours(e)) => return Err(e),
            }
        }
    }

    /// How many clients were refused so far, and why the last one was.
    pub fn rejected(&self) -> super::blocking::Rejected {
        self.rejections.get()
    }

    /// The warm pool's state: segments ready, slots in use, claims (see
    /// [`StreamConfig::warm_pool`]).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }
}

async fn server_handshake(
    mut control: AsyncControlStream,
    config: &StreamConfig,
    pool: &SegmentPool,
    rejections: &Rejections,
) -> Result<SharedMemoryStream, Refused> {
    let mut hello = [0u8; CLIENT_HELLO_LEN];
    let checked = match control.check_peer(&config.allowed_peer_uids) {
        Ok(pid) => control
            .read_exact(&mut hello)
            .await
            .and_then(|_| handshake::check_client_hello(&hello))
            .map(|_| pid),
        Err(e) => Err(e),
    };
    let client_pid = match checked {
        Ok(pid) => pid,
        Err(e) => {
            let hello = handshake::refusal(&e);
            rejections.record(e);
            let _ = control.write_all(&hello, &[]).await;
            return Err(Refused::Answered);
        }
    };
    let (prepared, slot) = match pool.claim().map_err(handshake::as_refusal) {
        Ok(claimed) => claimed,
        Err(Ok(refused)) => {
            let hello = handshake::refusal(&refused);
            rejections.record(refused);
            let _ = control.write_all(&hello, &[]).await;
            return Err(Refused::Answered);
        }
        Err(Err(e)) => return Err(Refused::Ours(e)),
    };
    let offer = Offer::new(prepared, slot, config.ring_capacity).map_err(Refused::Ours)?;
    control.write_all(&offer.hello, &offer.handles()).await.map_err(Refused::Client)?;
    let control = control.into_blocking().map_err(Refused::Ours)?;
    let (tx, rx) = offer.into_halves(control, client_pid, config.wait).map_err(Refused::Ours)?;
    Ok(SharedMemoryStream::from_halves(tx, rx))
}

/// A connected pair of shared-memory rings (tokio flavour). Same guarantees as
/// [`BlockingSharedMemoryStream`](crate::BlockingSharedMemoryStream); waits are `async` and never block the
/// executor beyond a spin of a few microseconds.
///
/// ```no_run
/// # async fn run() -> lapce_ipc::Result<()> {
/// let mut stream = lapce_ipc::SharedMemoryStream::connect("echo-async").await?;
/// stream.send(b"ping").await?;
/// let reply = stream.recv_with(|bytes| bytes.to_vec()).await?;
/// assert_eq!(reply, b"ping");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SharedMemoryStream {
    tx: StreamSender,
    rx: StreamReceiver,
}

/// The sending half of a [`SharedMemoryStream`].
#[derive(Debug)]
pub struct StreamSender {
    half: SendHalf,
}

/// The receiving half of a [`SharedMemoryStream`].
#[derive(Debug)]
pub struct StreamReceiver {
    half: RecvHalf,
}

impl SharedMemoryStream {
    fn from_halves(tx: SendHalf, rx: RecvHalf) -> SharedMemoryStream {
        SharedMemoryStream { tx: StreamSender { half: tx }, rx: StreamReceiver { half: rx } }
    }

    /// Connects to the listener bound to `name`, with the default configuration.
    pub async fn connect(name: &str) -> Result<SharedMemoryStream> {
        Self::connect_with(name, &StreamConfig::default()).await
    }

    /// Connects to the listener bound to `name`; `config.ring_capacity` is ignored.
    pub async fn connect_with(name: &str, config: &StreamConfig) -> Result<SharedMemoryStream> {
        config.prepare_process();
        let path = config_socket_path(name, config, true)?;
        let connect = async {
            let mut control = AsyncControlStream::connect(&path).await?;
            let server_pid = control.check_peer(&config.allowed_peer_uids)?;
            match control.write_all(&handshake::client_hello(handshake::PROTOCOL_VERSION), &[]).await {
                // A refusing server may have closed before our hello went out (see the blocking
                // flavour): its answer, read next, says why.
                Ok(()) | Err(IpcError::PeerGone) => {}
                Err(e) => return Err(e),
            }
            let mut hello = [0u8; SERVER_HELLO_LEN];
            let fds = control.read_exact(&mut hello).await?;
            let control = control.into_blocking()?;
            let (tx, rx) = handshake::client_halves(&hello, fds, control, server_pid, config.wait)?;
            Ok(Self::from_halves(tx, rx))
        };
        tokio::time::timeout(config.handshake_timeout, connect).await.map_err(|_| IpcError::Timeout)?
    }

    /// Splits the stream so that two tasks can send and receive concurrently.
    pub fn into_split(self) -> (StreamSender, StreamReceiver) {
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

    /// The sending half, in place (for the framed layer's `Sink`).
    pub(crate) fn sender_mut(&mut self) -> &mut StreamSender {
        &mut self.tx
    }

    /// The receiving half, in place (for the framed layer).
    pub(crate) fn receiver_mut(&mut self) -> &mut StreamReceiver {
        &mut self.rx
    }

    /// The peer's process id, as the OS reported it for the control channel (0 where it does
    /// not tell).
    pub fn peer_pid(&self) -> u32 {
        self.tx.half.link().peer_pid()
    }

    /// Changes how both directions wait.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.tx.half.set_strategy(wait);
        self.rx.half.set_strategy(wait);
    }

    /// Sends one message, waiting for room. See [`StreamSender::send`].
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.send(msg).await
    }

    /// Sends without waiting; [`IpcError::WouldBlock`] when the ring is full.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.try_send(msg)
    }

    /// Sends, waiting at most `timeout` for room.
    pub async fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.tx.send_timeout(msg, timeout).await
    }

    /// Zero-copy send. See [`StreamSender::send_with`].
    pub async fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        self.tx.send_with(len, fill).await
    }

    /// Receives the next message into `buf`. See [`StreamReceiver::recv`].
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv(buf).await
    }

    /// Receives without waiting; [`IpcError::WouldBlock`] when nothing is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.try_recv(buf)
    }

    /// Receives, waiting at most `timeout`.
    pub async fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.rx.recv_timeout(buf, timeout).await
    }

    /// Zero-copy receive. See [`StreamReceiver::recv_with`].
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.rx.recv_with(f).await
    }
}

impl StreamSender {
    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.half.max_message()
    }

    /// Sends one message; waits asynchronously while the ring is full. Fails with
    /// [`IpcError::MessageTooLarge`] before writing anything if `msg` exceeds the limit, and
    /// with [`IpcError::PeerGone`] if the peer goes away while we wait.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.half.send_async(msg).await
    }

    /// Sends, waiting at most `timeout` for room; [`IpcError::Timeout`] after that.
    pub async fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.send(msg)).await.map_err(|_| IpcError::Timeout)?
    }

    /// Sends without waiting; [`IpcError::WouldBlock`] when the ring is full.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.half.try_send(msg)
    }

    /// Zero-copy send: `fill` writes the message in place and returns its length (≤ `len`).
    pub async fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        self.half.send_with_async(len, fill).await
    }

    /// Polls for room for a record of `len` bytes (see `SendHalf::poll_room`).
    pub(crate) fn poll_room(
        &mut self,
        len: usize,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        self.half.poll_room(len, cx)
    }

    /// Zero-copy send without waiting: `fill` writes up to `len` bytes in place and returns how
    /// many to publish; `Ok(None)`, nothing written, when the ring has no room for them now.
    pub(crate) fn try_send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Option<usize>> {
        self.half.try_send_with(len, fill)
    }
}

impl StreamReceiver {
    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.half.max_message()
    }

    /// Receives the next message into `buf` and returns its length. If `buf` is too small the
    /// message stays queued and [`IpcError::BufferTooSmall`] is returned.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.half.recv_with_async(copy_into(buf)).await
    }

    /// Receives, waiting at most `timeout`; [`IpcError::Timeout`] after that.
    pub async fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        tokio::time::timeout(timeout, self.recv(buf)).await.map_err(|_| IpcError::Timeout)?
    }

    /// Receives without waiting; [`IpcError::WouldBlock`] when nothing is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.half.recv_now(copy_into(buf))
    }

    /// Zero-copy receive: calls `f` with the message bytes in shared memory, then frees them.
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.half.recv_with_async(|b| Ok(f(b))).await
    }

    /// Polls for a message (see `RecvHalf::poll_readable`).
    pub(crate) fn poll_readable(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        self.half.poll_readable(cx)
    }

    /// Zero-copy receive without waiting: `Ok(None)` when nothing is queued.
    pub(crate) fn try_recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.half.try_recv_with(|b| Ok(f(b)))
    }
}
