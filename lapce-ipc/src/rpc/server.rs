//! [`IpcServer`]: accepts connections, dispatches requests to handlers, answers.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::unwind::CatchUnwind;
use super::{error_payload, release_large_buffer, spawn_writer, FrameSink, READY};
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::{AsyncFramedShmStream, FrameError, MessageType};
use crate::metrics::{ErrorKind, ListenerReport, Metrics, MetricsEndpoint, TypeMetrics};
use crate::protocol::{ErrorBody, ErrorCode};
use crate::{AsyncSharedMemoryListener, AsyncSharedMemoryStream};

/// What a unary handler returns: the response payload, or an error body sent back as an
/// `Error` frame.
pub type HandlerResult = std::result::Result<Bytes, ErrorBody>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type UnaryFn = dyn Fn(Bytes) -> BoxFuture<HandlerResult> + Send + Sync;
type SyncFn = dyn Fn(Bytes) -> HandlerResult + Send + Sync;
type StreamFn = dyn Fn(Bytes, ChunkSender) -> BoxFuture<std::result::Result<(), ErrorBody>> + Send + Sync;

#[derive(Clone)]
enum Handler {
    Unary(Arc<UnaryFn>),
    Sync(Arc<SyncFn>),
    Stream(Arc<StreamFn>),
}

/// A registered handler and the metric series of its type (when metrics are on).
#[derive(Clone)]
struct Registered {
    handler: Handler,
    metrics: Option<Arc<TypeMetrics>>,
}

/// Counters of a server, for tests, logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections open now.
    pub connections_active: usize,
    /// Connections accepted so far.
    pub connections_accepted: u64,
    /// Connections refused at the limit or during shutdown.
    pub connections_refused: u64,
    /// Requests dispatched to a handler.
    pub requests: u64,
    /// Requests whose handler runs now (on all connections).
    pub requests_in_flight: usize,
    /// Requests answered with an error (handler errors, unknown types, cancellations, panics).
    pub errors: u64,
    /// Handler panics (each answered with an error; the server went on).
    pub panics: u64,
    /// Clients refused during the handshake (a uid neither ours nor allowed, a bad or late
    /// hello): the listener's [`rejected`](crate::AsyncSharedMemoryListener::rejected) count.
    pub handshakes_refused: u64,
    /// Times the server gave its allocator's free memory back to the OS: once connections stopped
    /// closing for `idle_trim_ms` (see [`IpcConfig::idle_trim`]).
    pub heap_trims: u64,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    heap_trims: AtomicU64,
}

/// A request/response server on a shared-memory listener (tokio).
///
/// Register handlers per [`MessageType`], then [`serve`](Self::serve). Every connection reads
/// requests in order and runs up to `max_concurrent_requests` of them at once (pipelining): a
/// unary handler first runs on the connection's own task until it first waits (one that answers
/// at once is answered from there, without a task hop), then in a task of its own, as streaming
/// handlers always do, so slow handlers do not hold up fast ones and answers may go out of
/// order (the client matches them by id). A handler should therefore not compute for long
/// before its first `.await` (use `spawn_blocking` for that): it would hold up its connection.
/// A [sync handler](Self::register_sync_handler) runs there entirely, with no future to box:
/// the dispatch of a small echo then allocates nothing. A handler's error or panic, an unknown message type or
/// a cancelled request is answered with an `Error` frame; only a frame the server cannot read
/// closes that one connection. The handle is cheap to clone: clones share the server.
///
/// ```
/// use bytes::Bytes;
/// use lapce_ipc::frame::MessageType;
/// use lapce_ipc::{IpcClient, IpcConfig, IpcServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lapce_ipc::Result<()> {
/// let name = format!("rpc-doc-{}", std::process::id());
/// let server = IpcServer::bind(&name, IpcConfig::default())?;
/// server.register_handler(MessageType::Data, |request: Bytes| async move {
///     Ok(Bytes::from(request.to_ascii_uppercase()))
/// });
/// let serving = tokio::spawn({
///     let server = server.clone();
///     async move { server.serve().await }
/// });
///
/// let client = IpcClient::connect(&name, IpcConfig::default()).await?;
/// let answer = client.request(MessageType::Data, Bytes::from_static(b"hello")).await?;
/// assert_eq!(&answer[..], b"HELLO");
///
/// server.shutdown(std::time::Duration::from_secs(1));
/// serving.await.unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IpcServer {
    inner: Arc<Inner>,
}

struct Inner {
    listener: AsyncSharedMemoryListener,
    config: IpcConfig,
    handlers: RwLock<HashMap<MessageType, Registered>>,
    /// `true` once shutdown began: stop accepting and reading new requests.
    stopping: watch::Sender<bool>,
    /// `true` when the grace period is over: abort what still runs.
    force: watch::Sender<bool>,
    grace: Mutex<Duration>,
    active: AtomicUsize,
    /// Told whenever a connection ends (the heap trim waits for them to stop).
    connection_ended: Arc<Notify>,
    counters: Counters,
    /// `None` with `metrics.enable = false`: then nothing is recorded.
    metrics: Option<Arc<Metrics>>,
    next_connection: AtomicU64,
}

impl IpcServer {
    /// Binds `name` (see [`socket_path`](crate::socket_path)) with `config`. Must be called
    /// inside a tokio runtime.
    pub fn bind(name: &str, config: IpcConfig) -> Result<IpcServer> {
        config.validate()?;
        let listener = AsyncSharedMemoryListener::bind_with(name, config.stream_config())?;
        Ok(IpcServer {
            inner: Arc::new_cyclic(|me: &std::sync::Weak<Inner>| {
                let metrics = config.metrics.enable.then(|| {
                    let mut metrics = Metrics::new();
                    let me = me.clone();
                    metrics.register_listener(Arc::new(move || {
                        me.upgrade().map_or_else(Default::default, |inner| ListenerReport {
                            pool: inner.listener.pool_stats(),
                            handshakes_refused: inner.listener.rejected().0,
                            stale_cleaned: crate::connection::stale_cleaned(),
                        })
                    }));
                    Arc::new(metrics)
                });
                Inner {
                    listener,
                    config,
                    handlers: RwLock::default(),
                    stopping: watch::channel(false).0,
                    force: watch::channel(false).0,
                    grace: Mutex::new(Duration::ZERO),
                    active: AtomicUsize::new(0),
                    connection_ended: Arc::new(Notify::new()),
                    counters: Counters::default(),
                    metrics,
                    next_connection: AtomicU64::new(1),
                }
            }),
        })
    }

    /// The listener's warm pool: segments ready, slots in use, claims.
    pub fn pool_stats(&self) -> crate::PoolStats {
        self.inner.listener.pool_stats()
    }

    /// The control channel's path.
    pub fn path(&self) -> &std::path::Path {
        self.inner.listener.path()
    }

    /// Answers requests of type `kind` with `handler`'s result: a `Response` frame with the
    /// returned bytes, or an `Error` frame with the returned [`ErrorBody`]. Replaces an earlier
    /// handler of that type; may be called while serving.
    pub fn register_handler<F, Fut>(&self, kind: MessageType, handler: F)
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let f: Arc<UnaryFn> = Arc::new(move |payload| Box::pin(handler(payload)));
        self.register(kind, Handler::Unary(f));
    }

    /// Answers requests of type `kind` with `handler`'s result, computed right on the
    /// connection's task: no future, no task, no allocation per request (the dispatch of such
    /// an echo allocates nothing: tests/zero_alloc.rs). For quick answers (a lookup, an echo, a
    /// small transformation): while it runs, its connection reads no other request, so
    /// anything that waits (I/O, locks held elsewhere, long computation) belongs in
    /// [`register_handler`](Self::register_handler). Answers and errors are sent as there; a
    /// panic is caught and answered with an error.
    ///
    /// A request payload of up to 1 KiB is a slice of a block its connection reuses, shared
    /// with other requests' payloads: a handler that keeps one long after answering (in a cache,
    /// say) should keep a copy (`Bytes::copy_from_slice`), or it holds the whole block.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::{IpcClient, IpcConfig, IpcServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lapce_ipc::Result<()> {
    /// let name = format!("rpc-sync-doc-{}", std::process::id());
    /// let server = IpcServer::bind(&name, IpcConfig::default())?;
    /// server.register_sync_handler(MessageType::Data, |request: Bytes| Ok(request));
    /// let serving = tokio::spawn({
    ///     let server = server.clone();
    ///     async move { server.serve().await }
    /// });
    ///
    /// let client = IpcClient::connect(&name, IpcConfig::default()).await?;
    /// let answer = client.request(MessageType::Data, Bytes::from_static(b"echo")).await?;
    /// assert_eq!(&answer[..], b"echo");
    ///
    /// server.shutdown(std::time::Duration::from_secs(1));
    /// serving.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub fn register_sync_handler<F>(&self, kind: MessageType, handler: F)
    where
        F: Fn(Bytes) -> HandlerResult + Send + Sync + 'static,
    {
        self.register(kind, Handler::Sync(Arc::new(handler)));
    }

    /// Answers requests of type `kind` with a stream: `handler` sends any number of chunks
    /// through its [`ChunkSender`] (each a `StreamChunk` frame), and when it returns `Ok` the
    /// server sends `StreamEnd`; an `Err` ends the stream with an `Error` frame instead.
    pub fn register_stream_handler<F, Fut>(&self, kind: MessageType, handler: F)
    where
        F: Fn(Bytes, ChunkSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), ErrorBody>> + Send + 'static,
    {
        let f: Arc<StreamFn> = Arc::new(move |payload, sink| Box::pin(handler(payload, sink)));
        self.register(kind, Handler::Stream(f));
    }

    fn register(&self, kind: MessageType, handler: Handler) {
        // The type's series are created here, once, so that a request only adds to them.
        let metrics = self.inner.metrics.as_ref().map(|m| Arc::new(m.for_type(kind)));
        let mut handlers = self.inner.handlers.write().unwrap_or_else(|p| p.into_inner());
        handlers.insert(kind, Registered { handler, metrics });
    }

    /// Accepts and serves connections until [`shutdown`](Self::shutdown), then waits for the
    /// requests in flight (up to the grace period), closes every connection, drops the handlers
    /// and returns. The listener (and its socket file) goes with the last handle of the server;
    /// a handler that holds one (to shut the server down, say) no longer counts once this returns.
    pub async fn serve(&self) -> Result<()> {
        let inner = &self.inner;
        let mut stopping = inner.stopping.subscribe();
        let _trimmer = inner.config.idle_trim().map(|quiet| {
            let trim = trim_heap_when_quiet(inner.connection_ended.clone(), Arc::downgrade(inner), quiet);
            AbortOnDrop(tokio::spawn(trim).abort_handle())
        });
        loop {
            if *stopping.borrow_and_update() {
                break;
            }
            let accepted = tokio::select! {
                _ = stopping.changed() => continue,
                r = inner.listener.accept() => r,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // The listener itself failed (e.g. out of descriptors): log, breathe, go on.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let accepted_at = Instant::now();
            let limit = inner.config.ipc.max_connections;
            if inner.active.load(Ordering::Relaxed) >= limit {
                inner.counters.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &inner.metrics {
                    m.connections_refused.inc();
                }
                tracing::warn!(limit, "connection refused: at the connection limit");
                let reason = format!("the server is at its limit of {limit} connections");
                tokio::spawn(refuse(stream, reason));
                continue;
            }
            inner.active.fetch_add(1, Ordering::Relaxed);
            inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &inner.metrics {
                m.connections_accepted.inc();
                m.connections_active.inc();
            }
            let conn = inner.next_connection.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("ipc_connection", conn, peer_pid = stream.peer_pid());
            tokio::spawn(serve_connection(self.inner.clone(), stream, accepted_at).instrument(span));
        }
        // Graceful end: connections stop reading, finish what runs, then close.
        let grace = *inner.grace.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = tokio::time::Instant::now() + grace;
        while inner.active.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                inner.force.send_replace(true);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A handler holding a handle of this server would keep it (and so its listener and
        // socket file) alive for ever: found by CI's leftovers check once nothing else swept it.
        inner.handlers.write().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    /// Begins a graceful shutdown: stop accepting, stop reading new requests, let the requests
    /// in flight finish for up to `grace`, then abort the rest and close. [`serve`](Self::serve)
    /// returns when all connections are closed.
    pub fn shutdown(&self, grace: Duration) {
        *self.inner.grace.lock().unwrap_or_else(|p| p.into_inner()) = grace;
        self.inner.stopping.send_replace(true);
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        ServerStats {
            connections_active: self.inner.active.load(Ordering::Relaxed),
            connections_accepted: c.accepted.load(Ordering::Relaxed),
            connections_refused: c.refused.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            requests_in_flight: c.in_flight.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            panics: c.panics.load(Ordering::Relaxed),
            handshakes_refused: self.inner.listener.rejected().0,
            heap_trims: c.heap_trims.load(Ordering::Relaxed),
        }
    }

    /// The server's metrics as OpenMetrics text (the families are listed in [`crate::metrics`]),
    /// ending with `# EOF`. With metrics off (`metrics.enable = false`) just `# EOF\n`.
    pub fn metrics_text(&self) -> String {
        match &self.inner.metrics {
            Some(m) => m.encode(),
            None => crate::metrics::EMPTY_TEXT.to_owned(),
        }
    }

    /// Serves [`metrics_text`](Self::metrics_text) over HTTP at `http://ADDR/metrics` until the
    /// returned handle is dropped (a minimal HTTP/1.1 responder; see [`crate::metrics`]). Port 0
    /// lets the system choose; [`MetricsEndpoint::local_addr`] tells which. There is no
    /// authentication: keep `addr` on loopback (`127.0.0.1:9464`). Fails if the address cannot be
    /// bound, or with [`IpcError::InvalidArgument`] when metrics are off. Must be called inside a
    /// tokio runtime.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<MetricsEndpoint> {
        let Some(metrics) = &self.inner.metrics else {
            return Err(IpcError::InvalidArgument(
                "metrics are off (metrics.enable = false): there is nothing to serve".into(),
            ));
        };
        crate::metrics::serve(addr, metrics.clone()).await
    }
}

/// Tells a client why it is refused, then closes.
async fn refuse(stream: AsyncSharedMemoryStream, reason: String) {
    let mut framed = AsyncFramedShmStream::new(stream);
    let body = ErrorBody::new(ErrorCode::UNAVAILABLE, reason);
    let _ = framed.send_with_id(MessageType::Error, 0, &error_payload(&body)).await;
}

/// Sends the chunks of one streamed response (see [`IpcServer::register_stream_handler`]).
#[derive(Clone)]
pub struct ChunkSender {
    out: FrameSink,
    id: u64,
    metrics: Option<Arc<Metrics>>,
    /// The largest message the connection carries.
    max: usize,
}

impl ChunkSender {
    /// Sends one chunk; waits while the connection's outgoing queue is full (backpressure).
    /// [`IpcError::PeerGone`] when the connection is closed: stop producing.
    /// A chunk over the connection's message limit is refused with
    /// [`IpcError::MessageTooLarge`] (nothing is sent; the stream goes on).
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<()> {
        let payload = chunk.into();
        if payload.len() > self.max {
            return Err(IpcError::MessageTooLarge { len: payload.len(), max: self.max });
        }
        if let Some(m) = &self.metrics {
            m.stream_chunks.inc();
            m.response_bytes.inc_by(payload.len() as u64);
        }
        self.out.send_queued(MessageType::StreamChunk, self.id, payload).await.map_err(|_| IpcError::PeerGone)
    }

    /// The id of the request this stream answers.
    pub fn request_id(&self) -> u64 {
        self.id
    }
}

/// What one connection shares with its request tasks.
struct Connection {
    out: FrameSink,
    /// Requests running now, by id, for cancellation.
    in_flight: Mutex<HashMap<u64, AbortHandle>>,
    metrics: Option<Arc<Metrics>>,
}

impl Connection {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a request in a task of its own, registered (for cancellation) under the lock the
    /// task takes to unregister, so that it cannot finish before it is registered.
    fn spawn_request(&self, id: u64, task: impl Future<Output = ()> + Send + 'static) {
        let mut in_flight = self.in_flight();
        let handle = tokio::spawn(task);
        in_flight.insert(id, handle.abort_handle());
    }

    async fn send(&self, kind: MessageType, id: u64, payload: Bytes) {
        if let Some(m) = &self.metrics {
            m.response_bytes.inc_by(payload.len() as u64);
        }
        // An error means the connection is closing: nobody is left to answer.
        let _ = self.out.send(kind, id, payload).await;
    }

    async fn send_error(&self, server: &Inner, id: u64, kind: ErrorKind, body: ErrorBody) {
        server.counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.error(kind);
        }
        self.send(MessageType::Error, id, error_payload(&body)).await;
    }
}

/// Decrements the active count when a connection task ends, however it ends.
struct ActiveGuard(Arc<Inner>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.0.metrics {
            m.connections_active.dec();
        }
        self.0.connection_ended.notify_one();
    }
}

/// Aborts a task when dropped (when [`IpcServer::serve`] returns).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Gives the allocator's free memory back to the OS once connections have stopped ending for
/// `quiet`. A burst of connections leaves the heap at its high-water mark, in pages that are
/// free but still mapped (glibc's `malloc` returns only the top of each heap by itself): after
/// the burst, the server's RSS would stay there. One trim per quiet spell, on this worker
/// (measured with glibc 2.x on a fragmented heap: 0.3 ms for 4 MiB touched, 6 ms for 64 MiB; a
/// thread of its own would cost an arena).
///
/// The task holds the server weakly: an abort takes effect later, and until then a strong
/// reference would keep the listener (and its socket file) alive after the server is dropped.
async fn trim_heap_when_quiet(ended: Arc<Notify>, server: Weak<Inner>, quiet: Duration) {
    loop {
        ended.notified().await;
        while tokio::time::timeout(quiet, ended.notified()).await.is_ok() {}
        let Some(server) = server.upgrade() else { return };
        let started = Instant::now();
        crate::platform::release_free_heap();
        server.counters.heap_trims.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(took = ?started.elapsed(), "gave the heap's free pages back to the OS");
    }
}

/// Counts a connection whose client hung up (closed, exited or died) in the metrics.
fn peer_gone(server: &Inner) {
    if let Some(m) = &server.metrics {
        m.dead_connections.inc();
    }
}

async fn serve_connection(server: Arc<Inner>, stream: AsyncSharedMemoryStream, accepted_at: Instant) {
    let _active = ActiveGuard(server.clone());
    let max_message = server.config.ipc.max_message_size;
    let (mut tx, mut rx) = AsyncFramedShmStream::new(stream).with_max_message(max_message).into_split();
    // Read at scrape time; the last levels go to the totals when the connection ends.
    let _rings = server.metrics.as_ref().map(|m| m.rings.register(rx.ring_gauge(), tx.ring_gauge()));
    if let Err(e) = tx.send_with_id(MessageType::Control, 0, READY).await {
        if matches!(e, IpcError::PeerGone) {
            peer_gone(&server);
        }
        return;
    }
    if let Some(m) = &server.metrics {
        m.connect_duration.observe_since(accepted_at);
    }
    let (out, mut writer) = spawn_writer(tx, server.config.idle_trim(), server.metrics.clone());
    let conn = Arc::new(Connection { out, in_flight: Mutex::default(), metrics: server.metrics.clone() });
    let max_requests = server.config.ipc.max_concurrent_requests.max(1);
    let permits = Arc::new(Semaphore::new(max_requests));
    let mut idle = server.config.idle_timeout().map(IdleWatch::new);
    let mut stopping = server.stopping.subscribe();
    let mut buf = Vec::new();
    let mut payloads = PayloadBlock::default();
    let mut received_count = 0u64;
    loop {
        if *stopping.borrow_and_update() {
            break;
        }
        // (The last request's bytes were copied out: a large one's buffer can go.)
        release_large_buffer(&mut buf);
        // Biased, the receive first: while requests keep coming, the other branches are never
        // polled, so nothing registers with the shutdown signal (a lock) or the timer per request.
        // A shutdown is still seen at the top of the loop.
        let received = tokio::select! {
            biased;
            r = rx.recv_into(&mut buf) => r,
            _ = stopping.changed() => continue,
            () = tick(&mut idle) => {
                // Nothing in flight counts as idle (a long stream is not).
                let busy = permits.available_permits() < max_requests;
                if idle.as_mut().is_some_and(|w| w.expired(received_count, busy)) {
                    tracing::debug!("closing an idle connection");
                    break;
                }
                continue;
            }
        };
        received_count += 1;
        let (kind, id) = match received {
            Ok(message) => message,
            Err(IpcError::PeerGone) => {
                peer_gone(&server);
                break;
            }
            Err(IpcError::Frame(e)) => {
                // The framed stream cannot resynchronise: say why, then close.
                tracing::warn!(error = %e, "unreadable frame: closing the connection");
                let (code, metric) = match e {
                    FrameError::TooLong { .. } => (ErrorCode::TOO_LARGE, ErrorKind::TooLarge),
                    _ => (ErrorCode::BAD_REQUEST, ErrorKind::BadFrame),
                };
                conn.send_error(&server, 0, metric, ErrorBody::new(code, e.to_string())).await;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "connection failed");
                if let Some(m) = &server.metrics {
                    m.error(ErrorKind::BadFrame);
                }
                break;
            }
        };
        if let Some(m) = &server.metrics {
            m.request_bytes.inc_by(buf.len() as u64);
        }
        match kind {
            MessageType::Cancel => {
                let running = conn.in_flight().remove(&id);
                if let Some(task) = running {
                    task.abort();
                    let body = ErrorBody::new(ErrorCode::CANCELLED, "request cancelled");
                    conn.send_error(&server, id, ErrorKind::Cancelled, body).await;
                }
            }
            MessageType::Heartbeat => {
                conn.send(MessageType::Heartbeat, id, Bytes::copy_from_slice(&buf)).await
            }
            MessageType::Response
            | MessageType::Error
            | MessageType::StreamChunk
            | MessageType::StreamEnd
            | MessageType::Control => {
                let body = ErrorBody::new(ErrorCode::BAD_REQUEST, format!("{kind:?} is not a request type"));
                conn.send_error(&server, id, ErrorKind::BadRequest, body).await;
            }
            _ => {
                let registered =
                    server.handlers.read().unwrap_or_else(|p| p.into_inner()).get(&kind).cloned();
                let Some(Registered { handler, metrics }) = registered else {
                    let body = ErrorBody::new(
                        ErrorCode::UNKNOWN_TYPE,
                        format!("no handler for message type {kind:?} (0x{:04x})", kind.to_u16()),
                    );
                    conn.send_error(&server, id, ErrorKind::UnknownType, body).await;
                    continue;
                };
                // Waiting here when too many requests run stops reading: the ring fills up and
                // the client's sends wait (backpressure), nothing is dropped.
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                server.counters.requests.fetch_add(1, Ordering::Relaxed);
                // Timed from here, so that the wait for the task to be scheduled counts too.
                let metrics = metrics.map(|m| {
                    m.dispatched();
                    (m, Instant::now())
                });
                let span = tracing::debug_span!("ipc_request", id, kind = ?kind);
                let request =
                    Running { kind, id, metrics, _permit: permit, _counted: InFlight::start(&server) };
                match handler {
                    Handler::Sync(f) => {
                        let payload = payloads.copy(&buf);
                        let outcome = span.in_scope(|| catch_panic(|| f(payload)));
                        request.answer(&server, &conn, outcome).await;
                    }
                    Handler::Unary(f) => {
                        let payload = Bytes::copy_from_slice(&buf);
                        let mut future = match span.in_scope(|| catch_panic(|| f(payload))) {
                            Ok(future) => CatchUnwind::new(future),
                            Err(panic) => {
                                request.answer(&server, &conn, Err(panic)).await;
                                continue;
                            }
                        };
                        // First run right here, up to its first wait (panics caught as in its
                        // own task): one that completes at once (most do) is answered without a
                        // task hop or an allocation beyond its future's box, and was never
                        // cancellable. One that waits goes on in its own task, so that it holds
                        // up nothing. (This poll registered the connection task's waker where
                        // the request waits: a spurious wake-up of this task is harmless, and
                        // the request's task registers its own waker at its first poll.)
                        let first =
                            poll_fn(|cx| Poll::Ready(span.in_scope(|| Pin::new(&mut future).poll(cx)))).await;
                        if let Poll::Ready(outcome) = first {
                            request.answer(&server, &conn, outcome).await;
                            continue;
                        }
                        let (server, conn_) = (server.clone(), conn.clone());
                        let task = async move {
                            let outcome = future.await;
                            request.answer(&server, &conn_, outcome).await;
                        };
                        conn.spawn_request(id, task.instrument(span));
                    }
                    Handler::Stream(f) => {
                        let payload = Bytes::copy_from_slice(&buf);
                        let task = run_stream(server.clone(), conn.clone(), f, payload, request);
                        conn.spawn_request(id, task.instrument(span));
                    }
                }
            }
        }
    }
    // Let the requests in flight finish (all permits back), unless the grace period ends first.
    let mut force = server.force.subscribe();
    tokio::select! {
        _ = permits.acquire_many(max_requests as u32) => {}
        _ = force.wait_for(|f| *f) => {
            for (_, task) in conn.in_flight().drain() {
                task.abort();
            }
        }
    }
    // Let the writer send the last answers (it ends once every sender is gone), but not wait
    // forever on a handler that kept a `ChunkSender` alive somewhere.
    drop(conn);
    if tokio::time::timeout(WRITER_FLUSH, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// How long a closing connection waits for its writer to send the last answers.
const WRITER_FLUSH: Duration = Duration::from_secs(1);

/// A connection's idle timeout, checked [`IDLE_CHECKS`] times per timeout rather than timed per
/// message: a timer armed and cleared around every receive was a tenth of the server's time under
/// load (perf, `bench --scale 1000`: the timer wheel's lock and entry, not counting the clock
/// read). So a connection is closed after between one and `1 + 1/IDLE_CHECKS` timeouts without a
/// message and with nothing in flight.
struct IdleWatch {
    ticks: tokio::time::Interval,
    /// Checks in a row that found no new message and nothing in flight.
    quiet: u32,
    /// The connection's message count at the last check.
    seen: u64,
}

/// How many times per idle timeout a connection checks whether it was idle.
const IDLE_CHECKS: u32 = 4;

impl IdleWatch {
    fn new(timeout: Duration) -> IdleWatch {
        let period = timeout / IDLE_CHECKS;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        IdleWatch { ticks, quiet: 0, seen: 0 }
    }

    /// At a tick: whether the connection has now been idle for a whole timeout.
    fn expired(&mut self, received: u64, busy: bool) -> bool {
        if busy || received != self.seen {
            self.seen = received;
            self.quiet = 0;
            return false;
        }
        self.quiet += 1;
        self.quiet >= IDLE_CHECKS
    }
}

/// The next idle check, or never when there is no idle timeout.
async fn tick(idle: &mut Option<IdleWatch>) {
    match idle {
        Some(w) => {
            w.ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A request being answered: what its answer needs, its permit (one of the connection's
/// `max_concurrent_requests`) and its place in the in-flight count, both given back when it is
/// dropped (answered, or aborted by a cancel).
struct Running {
    kind: MessageType,
    id: u64,
    /// The series of its type and when it was dispatched, when metrics are on.
    metrics: Option<(Arc<TypeMetrics>, Instant)>,
    _permit: OwnedSemaphorePermit,
    _counted: InFlight,
}

impl Running {
    /// Sends a unary handler's outcome (the answer, its error, or its panic's message), then
    /// ends the request.
    async fn answer(
        self,
        server: &Inner,
        conn: &Connection,
        outcome: std::result::Result<HandlerResult, String>,
    ) {
        let max = server.config.ipc.max_message_size;
        let failure = match outcome {
            // An answer over the limit would break the connection's sending side: refuse it.
            Ok(Ok(response)) if response.len() > max => Some((
                ErrorKind::TooLarge,
                ErrorBody::new(
                    ErrorCode::TOO_LARGE,
                    format!(
                        "the handler's answer of {} bytes is over the limit of {max} bytes",
                        response.len()
                    ),
                ),
            )),
            Ok(Ok(response)) => {
                conn.send(MessageType::Response, self.id, response).await;
                None
            }
            Ok(Err(body)) => Some((ErrorKind::Handler, body)),
            Err(panic) => Some((ErrorKind::Panic, panicked(server, self.kind, &panic))),
        };
        self.end(server, conn, failure).await;
    }

    /// Sends the error of a failed request, records its time, and takes it out of the
    /// connection's in-flight table (when it ran in a task of its own).
    async fn end(self, server: &Inner, conn: &Connection, failure: Option<(ErrorKind, ErrorBody)>) {
        if let Some((metric, body)) = failure {
            conn.send_error(server, self.id, metric, body).await;
        }
        if let Some((m, dispatched)) = &self.metrics {
            m.answered(dispatched.elapsed());
        }
        conn.in_flight().remove(&self.id);
    }
}

/// Runs a streaming handler and ends its stream.
async fn run_stream(
    server: Arc<Inner>,
    conn: Arc<Connection>,
    f: Arc<StreamFn>,
    payload: Bytes,
    request: Running,
) {
    let sink = ChunkSender {
        out: conn.out.clone(),
        id: request.id,
        metrics: server.metrics.clone(),
        max: server.config.ipc.max_message_size,
    };
    let outcome = match catch_panic(|| f(payload, sink)) {
        Ok(future) => CatchUnwind::new(future).await,
        Err(panic) => Err(panic),
    };
    let failure = match outcome {
        Ok(Ok(())) => {
            conn.send(MessageType::StreamEnd, request.id, Bytes::new()).await;
            None
        }
        Ok(Err(body)) => Some((ErrorKind::Handler, body)),
        Err(panic) => Some((ErrorKind::Panic, panicked(&server, request.kind, &panic))),
    };
    request.end(&server, &conn, failure).await;
}

/// Counts a request in [`ServerStats::requests_in_flight`] (and its gauge) until dropped.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn start(server: &Arc<Inner>) -> InFlight {
        server.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &server.metrics {
            m.requests_in_flight.inc();
        }
        InFlight(server.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.0.metrics {
            m.requests_in_flight.dec();
        }
    }
}

/// Calls a handler, turning a panic into its message.
fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|p| super::unwind::panic_message(p.as_ref()))
}

/// Where a connection's payloads for sync handlers are copied out of the ring: a block, each
/// payload a shared slice of it (a `Bytes` that the handler owns). When every slice of the block
/// has been dropped (always, unless a handler keeps its payload), the block is reused, so a small
/// request costs no allocation. If the block is still shared, the next one is twice its size (up
/// to [`PAYLOAD_BLOCK`]). The first block is just big enough for its payload; a larger payload
/// gets an allocation of its own.
///
/// Async handlers' payloads are copied into allocations of their own instead: their requests can
/// be in flight at once, and blocks that lived as long as their connections, among those
/// short-lived copies, made the server's RSS grow by up to twice what the stress suite's leak
/// level allows (`stress --level 4`, 150 clients a cycle: 56 to 1004 KiB over 18 runs, against
/// 84 to 272 KiB with a copy per request).
#[derive(Default)]
struct PayloadBlock {
    block: bytes::BytesMut,
    /// The current block's size (`block` holds what is left of it).
    size: usize,
}

/// Largest [`PayloadBlock`] block, and the largest payload copied into one.
const PAYLOAD_BLOCK: usize = 1024;

impl PayloadBlock {
    fn copy(&mut self, payload: &[u8]) -> Bytes {
        if payload.is_empty() {
            return Bytes::new();
        }
        if payload.len() > PAYLOAD_BLOCK {
            return Bytes::copy_from_slice(payload);
        }
        if !self.block.try_reclaim(payload.len()) {
            self.size = payload.len().next_multiple_of(64).max((2 * self.size).min(PAYLOAD_BLOCK));
            self.block = bytes::BytesMut::with_capacity(self.size);
        }
        self.block.extend_from_slice(payload);
        self.block.split().freeze()
    }
}

fn panicked(server: &Inner, kind: MessageType, panic: &str) -> ErrorBody {
    server.counters.panics.fetch_add(1, Ordering::Relaxed);
    tracing::error!(kind = ?kind, panic, "handler panicked; answered with an error");
    ErrorBody::new(ErrorCode::HANDLER_PANICKED, format!("handler for {kind:?} panicked: {panic}"))
}
