//! [`IpcServer`]: accepts connections, dispatches requests to handlers, answers.

mod connection;
mod context;
mod handlers;
mod peer;
mod request;

pub use context::RequestContext;
pub use handlers::{ChunkSender, HandlerResult, Reply};
pub use peer::Peer;

use std::collections::HashMap;
use std::future::Future;
#[cfg(feature = "metrics-http")]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tracing::Instrument;

use self::connection::serve_connection;
use self::handlers::{ContextFn, Handler, HandlerMap, Handlers, Registered, StreamFn, Unary, WithContext};
use super::error_payload;
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::{FramedStream, MessageType};
use crate::messages::{ErrorBody, ErrorCode};
#[cfg(feature = "metrics-http")]
use crate::metrics::MetricsEndpoint;
use crate::metrics::{ListenerReport, Metrics};
use crate::{SharedMemoryListener, SharedMemoryStream};

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
    /// hello): the listener's [`rejected`](crate::SharedMemoryListener::rejected) count.
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

/// The socket path and the live connections.
impl std::fmt::Debug for IpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcServer")
            .field("path", &self.path())
            .field("active", &self.inner.active.load(Ordering::Relaxed))
            .field("stopping", &self.inner.stopping_now())
            .finish()
    }
}

struct Inner {
    listener: SharedMemoryListener,
    /// The name bound (remote connections reach the server through its own listener).
    #[cfg(feature = "tls")]
    name: String,
    config: IpcConfig,
    /// The handlers, replaced whole on each registration (connections keep a copy), and how
    /// many times they were replaced.
    handlers: RwLock<Arc<HandlerMap>>,
    handlers_version: AtomicU64,
    /// `true` once shutdown began: stop accepting and reading new requests. (`stopping_flag`
    /// tells the same without the channel's lock, for a look per request.)
    stopping: watch::Sender<bool>,
    stopping_flag: AtomicBool,
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
    /// The open connections, for notifications ([`IpcServer::peers`]).
    peers: Mutex<HashMap<u64, Peer>>,
    /// Called with each new connection ([`IpcServer::on_connect`]).
    on_connect: RwLock<Option<ConnectHook>>,
}

/// What [`IpcServer::on_connect`] registered.
type ConnectHook = Arc<dyn Fn(Peer) + Send + Sync>;

impl IpcServer {
    /// Binds `name` (see [`socket_path`](crate::socket_path)) with `config`. Must be called
    /// inside a tokio runtime.
    pub fn bind(name: &str, config: IpcConfig) -> Result<IpcServer> {
        config.validate()?;
        let listener = SharedMemoryListener::bind_with(name, config.stream_config())?;
        Ok(IpcServer {
            inner: Arc::new_cyclic(|me: &std::sync::Weak<Inner>| {
                let me = me.clone();
                let metrics = Metrics::for_server(
                    config.metrics.enable,
                    Arc::new(move || {
                        me.upgrade().map_or_else(Default::default, |inner| ListenerReport {
                            pool: inner.listener.pool_stats(),
                            handshakes_refused: inner.listener.rejected().count,
                            stale_cleaned: crate::connection::stale_cleaned(),
                        })
                    }),
                );
                Inner {
                    listener,
                    #[cfg(feature = "tls")]
                    name: name.to_owned(),
                    config,
                    handlers: RwLock::default(),
                    handlers_version: AtomicU64::new(0),
                    stopping: watch::channel(false).0,
                    stopping_flag: AtomicBool::new(false),
                    force: watch::channel(false).0,
                    grace: Mutex::new(Duration::ZERO),
                    active: AtomicUsize::new(0),
                    connection_ended: Arc::new(Notify::new()),
                    counters: Counters::default(),
                    metrics,
                    next_connection: AtomicU64::new(1),
                    peers: Mutex::default(),
                    on_connect: RwLock::default(),
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
        self.register(kind, Handler::Unary(Arc::new(Unary::new(handler))));
    }

    /// Like [`register_handler`](Self::register_handler), for a handler that wants to know
    /// about its request: it gets a [`RequestContext`] (the request's id and type, the client's
    /// process id, the cancellation signal) with the payload. Its future is boxed per request;
    /// otherwise it runs as `register_handler`'s do (first polled on the connection's task,
    /// then in a task of its own if it waits).
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::{IpcConfig, IpcServer, RequestContext};
    ///
    /// # fn run() -> lapce_ipc::Result<()> {
    /// let server = IpcServer::bind("ctx-doc", IpcConfig::default())?;
    /// server.register_handler_with_context(MessageType::app(1), |ctx: RequestContext, _: Bytes| async move {
    ///     // Slow work off the runtime, stopping early when the client gives up.
    ///     let job = tokio::task::spawn_blocking(move || {
    ///         let mut steps = 0u64;
    ///         while !ctx.is_cancelled() && steps < 1_000 {
    ///             steps += 1;
    ///         }
    ///         steps
    ///     });
    ///     let steps = job.await.unwrap_or(0);
    ///     Ok(Bytes::from(steps.to_string()))
    /// });
    /// # Ok(()) }
    /// ```
    pub fn register_handler_with_context<F, Fut>(&self, kind: MessageType, handler: F)
    where
        F: Fn(RequestContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let f: Arc<ContextFn> = Arc::new(move |ctx, payload| Box::pin(handler(ctx, payload)));
        self.register(kind, Handler::Unary(Arc::new(WithContext(f))));
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

    /// Answers requests of type `kind` in place: `handler` reads the request where it lies in
    /// the connection's shared memory and writes its answer through [`Reply`], straight into
    /// the client's ring when it fits one record and the ring has room (else it is kept and sent
    /// right after). An echo this way copies the request once, from one ring into the other.
    ///
    /// It runs on the connection's task while the request still holds its ring space, so the
    /// rules of [`register_sync_handler`](Self::register_sync_handler) apply, more strictly:
    /// quick work only. A client that breaks the protocol could change the request's bytes while
    /// the handler reads them (after their CRC was checked): validate what you rely on. Errors
    /// and panics are answered as for other handlers, unless the answer was written already
    /// (then it stands, and the error is logged).
    ///
    /// ```
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::{IpcClient, IpcConfig, IpcServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lapce_ipc::Result<()> {
    /// let name = format!("rpc-in-place-doc-{}", std::process::id());
    /// let server = IpcServer::bind(&name, IpcConfig::default())?;
    /// // Upper-cases the request straight into the answer.
    /// server.register_in_place_handler(MessageType::Data, |request, reply| {
    ///     reply
    ///         .write_with(request.len(), |out| {
    ///             for (o, i) in out.iter_mut().zip(request) {
    ///                 *o = i.to_ascii_uppercase();
    ///             }
    ///             request.len()
    ///         })
    ///         .map(|_| ())
    ///         .map_err(|e| lapce_ipc::messages::ErrorBody::new(lapce_ipc::messages::ErrorCode::INTERNAL, e.to_string()))
    /// });
    /// let serving = tokio::spawn({
    ///     let server = server.clone();
    ///     async move { server.serve().await }
    /// });
    ///
    /// let client = IpcClient::connect(&name, IpcConfig::default()).await?;
    /// assert_eq!(&client.request(MessageType::Data, "hello").await?[..], b"HELLO");
    ///
    /// server.shutdown(std::time::Duration::from_secs(1));
    /// serving.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub fn register_in_place_handler<F>(&self, kind: MessageType, handler: F)
    where
        F: Fn(&[u8], &mut Reply<'_>) -> std::result::Result<(), ErrorBody> + Send + Sync + 'static,
    {
        self.register(kind, Handler::InPlace(Arc::new(handler)));
    }

    fn register(&self, kind: MessageType, handler: Handler) {
        // The type's series are created here, once, so that a request only adds to them.
        let metrics = self.inner.metrics.as_ref().map(|m| Arc::new(m.for_type(kind)));
        let mut handlers = self.inner.handlers.write().unwrap_or_else(|p| p.into_inner());
        let mut map = HandlerMap::clone(&handlers);
        map.insert(kind, Registered { handler, metrics });
        *handlers = Arc::new(map);
        self.inner.handlers_version.fetch_add(1, Ordering::Release);
    }

    /// Accepts and serves connections until [`shutdown`](Self::shutdown), then waits for the
    /// requests in flight (up to the grace period), closes every connection, drops the handlers
    /// and returns. The listener (and its socket file) goes with the last handle of the server;
    /// a handler that holds one (to shut the server down, say) no longer counts once this returns.
    pub async fn serve(&self) -> Result<()> {
        let inner = &self.inner;
        let mut stopping = inner.stopping.subscribe();
        #[cfg(feature = "metrics-http")]
        let _endpoint = match inner.config.metrics.addr.as_deref() {
            Some(addr) => Some(
                self.serve_metrics(addr.parse().map_err(|e| {
                    IpcError::InvalidArgument(format!("metrics.addr {addr:?} is not a socket address: {e}"))
                })?)
                .await?,
            ),
            None => None,
        };
        #[cfg(feature = "tls")]
        let _tls = crate::remote::listen_configured(self).await?;
        let trim_heap = inner.config.ipc.trim_heap.then(|| inner.config.idle_trim()).flatten();
        let _trimmer = trim_heap.map(|quiet| {
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
            tokio::spawn(serve_connection(self.inner.clone(), stream, conn, accepted_at).instrument(span));
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
        *inner.handlers.write().unwrap_or_else(|p| p.into_inner()) = Arc::default();
        inner.handlers_version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Begins a graceful shutdown: stop accepting, stop reading new requests, let the requests
    /// in flight finish for up to `grace`, then abort the rest and close. [`serve`](Self::serve)
    /// returns when all connections are closed.
    pub fn shutdown(&self, grace: Duration) {
        *self.inner.grace.lock().unwrap_or_else(|p| p.into_inner()) = grace;
        self.inner.stopping_flag.store(true, Ordering::Release);
        self.inner.stopping.send_replace(true);
    }

    /// Calls `hook` with a [`Peer`] for each connection the server takes, before it reads the
    /// connection's first request (so a subscriber list is up to date before the client's first
    /// request is answered). It runs on the connection's task: keep it quick (store the peer,
    /// send it a channel) and spawn anything that waits. Replaces an earlier hook.
    ///
    /// ```
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::{IpcConfig, IpcServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lapce_ipc::Result<()> {
    /// let server = IpcServer::bind(&format!("peer-doc-{}", std::process::id()), IpcConfig::default())?;
    /// server.on_connect(|peer| {
    ///     tokio::spawn(async move {
    ///         // Tell each new client which model is loaded.
    ///         let _ = peer.notify(MessageType::Data, "model: small").await;
    ///     });
    /// });
    /// # Ok(()) }
    /// ```
    pub fn on_connect(&self, hook: impl Fn(Peer) + Send + Sync + 'static) {
        *self.inner.on_connect.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hook));
    }

    /// The connections open now, oldest first.
    pub fn peers(&self) -> Vec<Peer> {
        let peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut open: Vec<Peer> = peers.values().filter(|p| p.is_connected()).cloned().collect();
        open.sort_by_key(Peer::id);
        open
    }

    /// Sends a notification to every open connection whose ring has room now (see
    /// [`Peer::try_notify`]: a client that does not read is skipped, never waited for); returns
    /// how many took it. Errors as [`Peer::notify`] for a bad type or size, before anything is
    /// sent.
    pub fn broadcast(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<usize> {
        let mut reached = 0;
        for peer in self.peers() {
            match peer.try_notify(kind, payload.as_ref()) {
                Ok(true) => reached += 1,
                Ok(false) | Err(IpcError::PeerGone) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(reached)
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
            handshakes_refused: self.inner.listener.rejected().count,
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

    /// Registers the server's metric families (the same series, not copies) in a host
    /// application's registry, under the prefix `lapce_ipc` within it, so that one scrape of the
    /// host's endpoint shows them. [`IpcError::InvalidArgument`] when metrics are off.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use lapce_ipc::{IpcConfig, IpcServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lapce_ipc::Result<()> {
    /// let server = IpcServer::bind(&format!("host-registry-doc-{}", std::process::id()), IpcConfig::default())?;
    /// let mut registry = Registry::with_prefix("editor");
    /// server.register_metrics(&mut registry)?;
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("editor_lapce_ipc_connections_active 0"));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) -> Result<()> {
        let Some(metrics) = &self.inner.metrics else {
            return Err(IpcError::InvalidArgument(
                "metrics are off (metrics.enable = false): there is nothing to register".into(),
            ));
        };
        metrics.register_families(registry.sub_registry_with_prefix(crate::metrics::PREFIX));
        Ok(())
    }

    /// Serves [`metrics_text`](Self::metrics_text) over HTTP at `http://ADDR/metrics` until the
    /// returned handle is dropped (a minimal HTTP/1.1 responder; see [`crate::metrics`]). Port 0
    /// lets the system choose; [`MetricsEndpoint::local_addr`] tells which. There is no
    /// authentication: keep `addr` on loopback (`127.0.0.1:9464`). Fails if the address cannot be
    /// bound, or with [`IpcError::InvalidArgument`] when metrics are off. Must be called inside a
    /// tokio runtime.
    #[cfg(feature = "metrics-http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics-http")))]
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<MetricsEndpoint> {
        let Some(metrics) = &self.inner.metrics else {
            return Err(IpcError::InvalidArgument(
                "metrics are off (metrics.enable = false): there is nothing to serve".into(),
            ));
        };
        crate::metrics::serve(addr, metrics.clone()).await
    }
}

#[cfg(feature = "tls")]
impl IpcServer {
    /// What a remote endpoint needs of the server: its name, configuration, shutdown signal and
    /// metrics (not the server itself, which would keep the listener alive).
    pub(crate) fn remote_parts(&self) -> (String, IpcConfig, watch::Receiver<bool>, Option<Arc<Metrics>>) {
        let inner = &self.inner;
        (inner.name.clone(), inner.config.clone(), inner.stopping.subscribe(), inner.metrics.clone())
    }
}

/// Tells a client why it is refused, then closes.
async fn refuse(stream: SharedMemoryStream, reason: String) {
    let mut framed = FramedStream::new(stream);
    let body = ErrorBody::new(ErrorCode::UNAVAILABLE, reason);
    let _ = framed.send_with_id(MessageType::Error, 0, &error_payload(&body)).await;
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
/// the burst, the server's RSS would stay there. One trim per quiet spell, on this worker: a
/// trim takes milliseconds at most, and a thread of its own would cost an arena.
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

impl Inner {
    /// A connection is open: it joins the peers, and the hook hears of it.
    fn connected(&self, peer: Peer) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.id(), peer.clone());
        let hook = self.on_connect.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            if handlers::catch_panic(|| hook(peer)).is_err() {
                tracing::error!("the on_connect hook panicked");
            }
        }
    }

    /// A connection closed: it leaves the peers.
    fn disconnected(&self, id: u64) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Whether a shutdown began (a look per request: no lock).
    fn stopping_now(&self) -> bool {
        self.stopping_flag.load(Ordering::Acquire)
    }

    /// A copy of the current handlers, for a new connection.
    fn handlers(&self) -> Handlers {
        let version = self.handlers_version.load(Ordering::Acquire);
        Handlers::new(version, self.handlers.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Brings a connection's copy of the handlers up to date (a look per request: no lock
    /// unless they changed).
    fn refresh_handlers(&self, copy: &mut Handlers) {
        let version = self.handlers_version.load(Ordering::Acquire);
        copy.refresh(version, || self.handlers.read().unwrap_or_else(|p| p.into_inner()).clone());
    }

    /// Counts and logs a handler's panic; the error body its request is answered with.
    fn panicked(&self, kind: MessageType, panic: &str) -> ErrorBody {
        self.counters.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(kind = ?kind, panic, "handler panicked; answered with an error");
        ErrorBody::new(ErrorCode::HANDLER_PANICKED, format!("handler for {kind:?} panicked: {panic}"))
    }
}
