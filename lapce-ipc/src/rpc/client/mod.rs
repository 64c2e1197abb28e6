//! [`IpcClient`]: concurrent requests over one connection, streams, timeouts, cancellation and
//! automatic reconnection, with no task between the caller and the rings (see [`super::calls`]).

mod chunks;
mod conn;
mod connect;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::calls::{Collect, InPlace, ToBytes};
use super::check_size;
use super::notify::NotificationReceiver;
use super::window::{self, Consumed};
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;
use crate::ResponseStream;
pub(super) use chunks::Chunks;
use conn::Conn;
use connect::{
    connection, current, establish, start_listener, ClientInner, RECONNECT_FIRST_PAUSE, RECONNECT_MAX_PAUSE,
};

/// A client of an [`IpcServer`](crate::IpcServer) (tokio).
///
/// Cheap to clone; clones share one connection, and any number of tasks may have requests in
/// flight on it at once: each request gets an id and its answer is routed back by id, in
/// whatever order the server answers. There is no reader task: a task waiting for an answer
/// reads the connection itself when no other task does, and passes the answers it finds for
/// other tasks on to them. So a request answered promptly costs no task or thread hop, also when
/// it is made from the future given to `block_on` (what `#[tokio::main]` does).
///
/// When the connection is lost (the server died or closed it), the requests in flight on it fail
/// with [`IpcError::PeerGone`] — never silently retried, since the server may have acted on them
/// ([`request_idempotent`](Self::request_idempotent) retries once for requests that are safe to
/// repeat). The client reconnects in the background, trying again every few milliseconds (at
/// most 50 ms apart), so it is back within about 50 ms of the server being available again;
/// requests made meanwhile wait for the connection until their timeout, then fail with
/// [`IpcError::Timeout`].
#[derive(Clone)]
pub struct IpcClient {
    inner: Arc<ClientInner>,
}

/// The server's name and the connection's state.
impl std::fmt::Debug for IpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcClient")
            .field("name", &self.inner.name)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

impl IpcClient {
    /// Connects to the server bound to `name`. Fails if the server is not there or refuses the
    /// connection (e.g. [`IpcError::ServerRefused`] at its connection limit). Must be called
    /// inside a tokio runtime; the connection's housekeeping task runs on it.
    pub async fn connect(name: &str, config: IpcConfig) -> Result<IpcClient> {
        config.validate()?;
        let inner = ClientInner::new(name, config);
        let conn = establish(&inner).await?;
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        Ok(IpcClient { inner })
    }

    /// Like [`connect`](Self::connect), waiting up to `timeout` for a server that is not there
    /// yet (still starting, or restarting): tries again every few milliseconds (the pause
    /// doubles from 2 up to 50 ms) while there is no server to reach or it goes away during the
    /// handshake. After `timeout`, [`IpcError::Timeout`]; other errors (a refusal, a version
    /// mismatch, a bad configuration) at once.
    pub async fn connect_timeout(name: &str, config: IpcConfig, timeout: Duration) -> Result<IpcClient> {
        config.validate()?;
        let deadline = Instant::now() + timeout;
        let inner = ClientInner::new(name, config);
        let mut pause = RECONNECT_FIRST_PAUSE;
        let conn = loop {
            match establish(&inner).await {
                Ok(conn) => break conn,
                Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                    if Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
                }
                Err(IpcError::Connect { .. } | IpcError::PeerGone) => return Err(IpcError::Timeout),
                Err(e) => return Err(e),
            }
        };
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        Ok(IpcClient { inner })
    }

    /// Sends a request and waits for its answer, at most about the configured request timeout
    /// (`request_timeout_ms`, 0 = no timeout): the connection looks for requests over it eight
    /// times per timeout instead of arming a timer for each, so one fails between one and 1.125
    /// timeouts after it was sent. [`request_timeout`](Self::request_timeout) for a precise
    /// timeout; the errors are the same.
    pub async fn request(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<Bytes> {
        self.request_collect(kind, payload.as_ref(), ToBytes).await
    }

    /// Like [`request`](Self::request), handing the answer to `f` in place instead of copying it
    /// out: a one-record answer is read where it lies in shared memory (checked against its CRC
    /// first), so a large answer costs no copy at all. `f` runs while the answer holds ring
    /// space: keep it short. With an untrusted server prefer [`request`](Self::request), which
    /// checks a private copy (see the crate's guarantees about zero-copy calls).
    ///
    /// ```no_run
    /// # async fn run(client: lapce_ipc::IpcClient) -> lapce_ipc::Result<()> {
    /// use lapce_ipc::frame::MessageType;
    /// let lines = client.request_with(MessageType::Data, "file.rs", |text| text.split(|&b| b == b'\n').count()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_with<R>(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.request_collect(kind, payload.as_ref(), InPlace(f)).await
    }

    async fn request_collect<C: Collect>(
        &self,
        kind: MessageType,
        payload: &[u8],
        collect: C,
    ) -> Result<C::Out> {
        self.check_size(payload.len())?;
        let timeout = self.inner.config.request_timeout();
        match self.current() {
            Some(conn) => conn.call(kind, payload, timeout.is_some(), collect).await,
            // Reconnecting: waits for the server, the whole request on a timer. (Boxed: the
            // connecting future is large, and would otherwise make every request's as large.)
            None => Box::pin(self.request_within(kind, payload, timeout, collect)).await,
        }
    }

    /// Sends a request and waits at most `timeout` (`None`: no limit) for its answer.
    ///
    /// Errors: the server's answers ([`IpcError::UnknownMessageType`], [`IpcError::HandlerPanic`],
    /// [`IpcError::Remote`] for a handler's own error), [`IpcError::Timeout`] (the request is then
    /// cancelled on the server), [`IpcError::PeerGone`] if the connection was lost with the
    /// request in flight, [`IpcError::MessageTooLarge`] before anything is sent. Dropping the
    /// returned future cancels the request on the server too.
    pub async fn request_timeout(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        self.check_size(payload.as_ref().len())?;
        self.request_within(kind, payload.as_ref(), timeout, ToBytes).await
    }

    async fn request_within<C: Collect>(
        &self,
        kind: MessageType,
        payload: &[u8],
        timeout: Option<Duration>,
        collect: C,
    ) -> Result<C::Out> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let conn = match self.current() {
            Some(conn) => conn,
            None => Box::pin(self.connection(deadline)).await?,
        };
        match deadline {
            None => conn.call(kind, payload, false, collect).await,
            Some(d) => tokio::time::timeout_at(d, conn.call(kind, payload, false, collect))
                .await
                .map_err(|_| IpcError::Timeout)?,
        }
    }

    /// Like [`request`](Self::request), for requests that are safe to repeat: if the connection
    /// is lost with the request in flight, it is sent once more after reconnecting.
    pub async fn request_idempotent(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<Bytes> {
        match self.request(kind, payload.as_ref()).await {
            Err(IpcError::PeerGone) => self.request(kind, payload).await,
            other => other,
        }
    }

    /// Sends a request answered by a stream of chunks (a streaming handler on the server).
    /// Waiting for the connection is bounded by the request timeout; the chunks themselves have
    /// no deadline (a token stream may legitimately take minutes).
    pub async fn request_stream(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
    ) -> Result<ResponseStream> {
        let payload = payload.as_ref();
        self.check_size(payload.len())?;
        let deadline = self.inner.config.request_timeout().map(|t| Instant::now() + t);
        let conn = self.connection(deadline).await?;
        let (ticket, role) = conn.calls.begin(kind, true, false)?;
        let consumed = window::configured(&self.inner.config).map(Consumed::new);
        let mut stream = Chunks { conn, ticket, kind, role, finished: false, consumed };
        // The role is not kept between chunks (nor while the request waits for room).
        if let Some(inbound) = stream.role.take() {
            stream.conn.calls.give_back(inbound);
        }
        if let Err(e) = stream.conn.outbox.send(kind, ticket.id, payload).await {
            stream.finished = true;
            return Err(e);
        }
        Ok(ResponseStream::new(stream))
    }

    /// The notifications the server pushes to this client (see
    /// [`Peer::notify`](crate::Peer::notify)), from now on and across reconnections. Until the
    /// first call the client keeps none (they are dropped as read, at no cost); from then on a
    /// listener task reads the connection while no request does, on the current runtime (call
    /// this inside one), and the notifications wait in a bounded queue: at
    /// [`NOTIFICATION_QUEUE_LEN`](crate::NOTIFICATION_QUEUE_LEN) notifications or
    /// [`NOTIFICATION_QUEUE_BYTES`](crate::NOTIFICATION_QUEUE_BYTES) bytes the newest are dropped
    /// and counted ([`notifications_dropped`](Self::notifications_dropped)). Receivers share the
    /// one queue: each notification goes to one of them.
    ///
    /// ```no_run
    /// # async fn run(client: lapce_ipc::IpcClient) {
    /// let mut notifications = client.notifications();
    /// while let Some(n) = notifications.recv().await {
    ///     println!("{:?}: {} bytes", n.kind, n.payload.len());
    /// }
    /// # }
    /// ```
    pub fn notifications(&self) -> NotificationReceiver {
        self.inner.hub.subscribe();
        if let Some(conn) = self.current() {
            start_listener(&conn, &self.inner.hub);
        }
        NotificationReceiver::new(self.inner.hub.clone())
    }

    /// Notifications dropped so far because the queue was full.
    pub fn notifications_dropped(&self) -> u64 {
        self.inner.hub.dropped()
    }

    /// How many times the client has reconnected after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the client has a live connection right now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    fn check_size(&self, len: usize) -> Result<()> {
        check_size(len, self.inner.config.ipc.max_message_size)
    }

    fn current(&self) -> Option<Arc<Conn>> {
        current(&self.inner)
    }

    /// The live connection, reconnecting (and waiting for the server) until `deadline`.
    async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Conn>> {
        connection(&self.inner, deadline).await
    }
}
