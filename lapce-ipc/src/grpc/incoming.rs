//! The server side: [`ShmIncoming`], a listener's connections for tonic's
//! `serve_with_incoming`, each a [`ShmConnection`].

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::connection::StreamConfig;
use crate::error::Result;
use crate::{ByteStream, SharedMemoryListener, SharedMemoryStream};

/// The clients of a [`SharedMemoryListener`] as byte-stream connections, a `Stream` for
/// tonic's `Server::builder()...serve_with_incoming` (or any accept loop). It owns the
/// listener, so the server future it is given to can be spawned. It never ends; an item is an
/// error only for the listener itself (refused clients are counted and skipped, as with
/// [`accept`](SharedMemoryListener::accept)). Must be polled inside the tokio runtime the
/// listener was bound in.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use lapce_ipc::grpc::ShmIncoming;
/// use tonic::transport::Server;
///
/// # let service = tonic::service::Routes::default();
/// // `service`: a generated server, e.g. `ChatServer::new(MyChat)`.
/// let incoming = ShmIncoming::bind("chat")?;
/// Server::builder().add_routes(service).serve_with_incoming(incoming).await?;
/// # Ok(()) }
/// ```
pub struct ShmIncoming {
    listener: Arc<SharedMemoryListener>,
    accepting: Option<Accepting>,
}

/// An accept under way.
type Accepting = Pin<Box<dyn Future<Output = Result<SharedMemoryStream>> + Send>>;

impl ShmIncoming {
    /// Binds `name` with the default configuration (see [`SharedMemoryListener::bind`]).
    pub fn bind(name: &str) -> Result<ShmIncoming> {
        Ok(Self::new(SharedMemoryListener::bind(name)?))
    }

    /// Binds `name` with `config` (see [`SharedMemoryListener::bind_with`]).
    pub fn bind_with(name: &str, config: StreamConfig) -> Result<ShmIncoming> {
        Ok(Self::new(SharedMemoryListener::bind_with(name, config)?))
    }

    /// The connections of `listener`.
    pub fn new(listener: SharedMemoryListener) -> ShmIncoming {
        ShmIncoming { listener: Arc::new(listener), accepting: None }
    }

    /// The listener (its path, refusals and pool).
    pub fn listener(&self) -> &SharedMemoryListener {
        &self.listener
    }
}

impl Stream for ShmIncoming {
    type Item = Result<ShmConnection>;

    /// The next client, handshake done; never `None`. The accept in progress is kept between
    /// polls, so a client half through its handshake is not lost.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let accepting = this.accepting.get_or_insert_with(|| {
            let listener = Arc::clone(&this.listener);
            Box::pin(async move { listener.accept().await })
        });
        let Poll::Ready(accepted) = accepting.as_mut().poll(cx) else { return Poll::Pending };
        self.accepting = None;
        Poll::Ready(Some(accepted.map(ShmConnection::new)))
    }
}

impl fmt::Debug for ShmIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmIncoming")
            .field("listener", &self.listener)
            .field("accepting", &self.accepting.is_some())
            .finish()
    }
}

/// An accepted connection in the byte-stream mode, as tonic's server wants it:
/// `AsyncRead + AsyncWrite` and [`Connected`], whose [`ShmConnectInfo`] every request of the
/// connection carries (`request.extensions().get::<ShmConnectInfo>()`).
#[derive(Debug)]
pub struct ShmConnection {
    bytes: ByteStream,
}

impl ShmConnection {
    /// `stream` in the byte-stream mode.
    pub fn new(stream: SharedMemoryStream) -> ShmConnection {
        ShmConnection { bytes: ByteStream::new(stream) }
    }

    /// The byte stream inside.
    pub fn into_inner(self) -> ByteStream {
        self.bytes
    }
}

/// What a tonic service learns of the client of a shared-memory connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmConnectInfo {
    /// The client's process id, as the OS reported it when it connected (0 where it does not
    /// tell).
    pub peer_pid: u32,
}

impl Connected for ShmConnection {
    type ConnectInfo = ShmConnectInfo;

    fn connect_info(&self) -> ShmConnectInfo {
        ShmConnectInfo { peer_pid: self.bytes.peer_pid() }
    }
}

impl AsyncRead for ShmConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.bytes).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShmConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.bytes).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.bytes).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.bytes).poll_shutdown(cx)
    }
}
