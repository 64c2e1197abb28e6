//! What the listeners offer beyond `accept`: `incoming()` (an iterator, a `Stream`), their one
//! descriptor for outside poll loops (Unix), and `Debug`.
//!
//! Only the listeners have a descriptor to give. A connection's wake-ups are futexes (Linux) or
//! doorbells rung only while the other side has announced a sleep, so no descriptor of a stream
//! turns readable when a message arrives: a stream offers none rather than one a poll loop
//! would wait on in vain. Windows listeners wait on overlapped pipe connections, which no
//! handle-readiness loop can watch: they offer none either.

use std::fmt;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(feature = "tokio")]
use futures_core::Stream;

use super::{BlockingSharedMemoryListener, BlockingSharedMemoryStream};
#[cfg(feature = "tokio")]
use super::{SharedMemoryListener, SharedMemoryStream};
use crate::error::Result;

/// The clients of a [`BlockingSharedMemoryListener`], accepted one by one (see
/// [`BlockingSharedMemoryListener::incoming`]). Never ends.
#[derive(Debug)]
pub struct BlockingIncoming<'a> {
    listener: &'a BlockingSharedMemoryListener,
}

impl Iterator for BlockingIncoming<'_> {
    type Item = Result<BlockingSharedMemoryStream>;

    /// Waits for the next client ([`BlockingSharedMemoryListener::accept`]); never `None`.
    fn next(&mut self) -> Option<Result<BlockingSharedMemoryStream>> {
        Some(self.listener.accept())
    }
}

impl BlockingSharedMemoryListener {
    /// An iterator over the clients as they connect, each handshake done (like
    /// `std::net::TcpListener::incoming`). It never ends; an item is an error only for the
    /// listener itself (refused clients are counted and skipped, as with `accept`).
    ///
    /// ```no_run
    /// let listener = lapce_ipc::BlockingSharedMemoryListener::bind("incoming-doc")?;
    /// for stream in listener.incoming() {
    ///     let mut stream = stream?;
    ///     std::thread::spawn(move || stream.send(b"welcome"));
    /// }
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    pub fn incoming(&self) -> BlockingIncoming<'_> {
        BlockingIncoming { listener: self }
    }
}

#[cfg(feature = "tokio")]
/// A pending accept of [`Incoming`].
type Accepting<'a> = Pin<Box<dyn Future<Output = Result<SharedMemoryStream>> + Send + 'a>>;

#[cfg(feature = "tokio")]
/// The clients of a [`SharedMemoryListener`], as a [`futures_core::Stream`] (see
/// [`SharedMemoryListener::incoming`]). Never ends.
pub struct Incoming<'a> {
    listener: &'a SharedMemoryListener,
    accepting: Option<Accepting<'a>>,
}

#[cfg(feature = "tokio")]
impl Stream for Incoming<'_> {
    type Item = Result<SharedMemoryStream>;

    /// The next client ([`SharedMemoryListener::accept`]); never `None`. The accept in
    /// progress is kept between polls, so a client half through its handshake is not lost.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let listener = self.listener;
        let accepting = self.accepting.get_or_insert_with(|| Box::pin(listener.accept()));
        let Poll::Ready(accepted) = accepting.as_mut().poll(cx) else { return Poll::Pending };
        self.accepting = None;
        Poll::Ready(Some(accepted))
    }
}

#[cfg(feature = "tokio")]
impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", self.listener)
            .field("accepting", &self.accepting.is_some())
            .finish()
    }
}

#[cfg(feature = "tokio")]
impl SharedMemoryListener {
    /// The clients as they connect, each handshake done, as a `Stream` (for `StreamExt`'s
    /// `for_each_concurrent`, `take`, `select`…). It never ends; an item is an error only for
    /// the listener itself. Each accept is boxed (one allocation per client).
    ///
    /// ```no_run
    /// # async fn run() -> lapce_ipc::Result<()> {
    /// use futures::StreamExt;
    ///
    /// let listener = lapce_ipc::SharedMemoryListener::bind("incoming-async-doc")?;
    /// let mut clients = listener.incoming();
    /// while let Some(stream) = clients.next().await {
    ///     let mut stream = stream?;
    ///     tokio::spawn(async move { stream.send(b"welcome").await });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self, accepting: None }
    }
}

/// The path, the refusals and the pool, never a segment.
impl fmt::Debug for BlockingSharedMemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingSharedMemoryListener")
            .field("path", &self.path())
            .field("rejected", &self.rejected().count)
            .field("pool", &self.pool_stats())
            .finish()
    }
}

#[cfg(feature = "tokio")]
/// The path, the refusals and the pool, never a segment.
impl fmt::Debug for SharedMemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryListener")
            .field("path", &self.path())
            .field("rejected", &self.rejected().count)
            .field("pool", &self.pool_stats())
            .finish()
    }
}

/// The listening socket, for an outside poll loop (`poll`, `epoll`, mio, `AsyncFd`): readable
/// when a client waits to be accepted. `accept` then runs the handshake on the calling thread
/// (bounded by the handshake timeout), and may still wait when that client is refused.
#[cfg(unix)]
impl std::os::fd::AsFd for BlockingSharedMemoryListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.control.as_fd()
    }
}

/// See the [`AsFd`](std::os::fd::AsFd) impl.
#[cfg(unix)]
impl std::os::fd::AsRawFd for BlockingSharedMemoryListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(self).as_raw_fd()
    }
}

#[cfg(feature = "tokio")]
/// The listening socket, readable when a client waits to be accepted (as for
/// [`BlockingSharedMemoryListener`]); the tokio reactor watches it too.
#[cfg(unix)]
impl std::os::fd::AsFd for SharedMemoryListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.control.as_fd()
    }
}

#[cfg(feature = "tokio")]
/// See the [`AsFd`](std::os::fd::AsFd) impl.
#[cfg(unix)]
impl std::os::fd::AsRawFd for SharedMemoryListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(self).as_raw_fd()
    }
}
