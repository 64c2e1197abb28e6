//! [`IpcClient`]: concurrent requests over one connection, streams, timeouts, cancellation and
//! automatic reconnection; [`BlockingIpcClient`] for callers without an async runtime.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{answer_error, decode_error, release_large_buffer, spawn_writer, FrameSink, READY};
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::{AsyncFramedReceiver, AsyncFramedShmStream, MessageType};
use crate::AsyncSharedMemoryStream;

/// First pause between reconnection attempts; doubled up to [`RECONNECT_MAX_PAUSE`], so a
/// server that comes back is found within that much time.
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(2);
const RECONNECT_MAX_PAUSE: Duration = Duration::from_millis(50);

/// How many times per default request timeout a connection looks for requests that are over it.
/// (A precise timer per request, armed and cleared around each one, was the largest single cost
/// of a request under load.) So a request under the default timeout fails between one and
/// `1 + 1/SWEEPS_PER_TIMEOUT` timeouts after it was sent.
const SWEEPS_PER_TIMEOUT: u32 = 8;

/// A client of an [`IpcServer`](crate::IpcServer) (tokio).
///
/// Cheap to clone; clones share one connection, and any number of tasks may have requests in
/// flight on it at once: each request gets an id and its answer is routed back by id, in
/// whatever order the server answers.
///
/// When the connection is lost (the server died or closed it), the requests in flight on it fail
/// with [`IpcError::PeerGone`] — never silently retried, since the server may have acted on them
/// ([`request_idempotent`](Self::request_idempotent) retries once for requests that are safe to
/// repeat). The client reconnects in the background, trying again every few milliseconds (at
/// most 50 ms apart), so it is back within about 50 ms of the server being available again;
/// requests made meanwhile wait for the connection until their timeout.
#[derive(Clone)]
pub struct IpcClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    name: String,
    config: IpcConfig,
    /// The current connection, if any (it may have died since: see `Conn::alive`).
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while (re)connecting, so that one task connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    reconnects: AtomicU64,
}

/// One live connection: where its frames are sent, the table of requests waiting for answers, the
/// reader task.
struct Conn {
    out: FrameSink,
    shared: Arc<Shared>,
    reader: AbortHandle,
    /// The task that fails requests over the default timeout (none without a default timeout).
    sweeper: Option<AbortHandle>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The last user is gone: stop reading (the writer stops when its queue closes).
        self.reader.abort();
        if let Some(sweeper) = &self.sweeper {
            sweeper.abort();
        }
    }
}

/// Requests waiting for their answers, by id.
type Pending = HashMap<u64, Waiter, BuildHasherDefault<IdHasher>>;

/// What the reader task, the sweeper and the requesters share.
struct Shared {
    pending: Mutex<Pending>,
    alive: AtomicBool,
    /// Sweeps for timed-out requests so far; changed only with `pending` locked, so a request
    /// stamped with sweep `n` was added after sweep `n` looked and before sweep `n + 1` did.
    sweeps: AtomicU64,
    /// Rung when a request is added to an empty table: the sweeper sleeps on it, without a
    /// timer, while nothing waits.
    first_waiting: Notify,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a request's waiter; `swept`: the sweeper fails it after the default timeout.
    fn wait_for(&self, id: u64, kind: MessageType, answer: oneshot::Sender<Result<Bytes>>, swept: bool) {
        let mut pending = self.pending();
        if pending.is_empty() {
            self.first_waiting.notify_one();
        }
        // Sweeps are at least a period apart: the `SWEEPS_PER_TIMEOUT + 1`th after this one
        // comes a whole timeout after this request at the earliest.
        let expires = swept.then(|| self.sweeps.load(Ordering::Relaxed) + u64::from(SWEEPS_PER_TIMEOUT) + 1);
        pending.insert(id, Waiter::Unary { kind, answer, expires });
    }
}

/// Where the answer to one request goes.
enum Waiter {
    Unary {
        kind: MessageType,
        answer: oneshot::Sender<Result<Bytes>>,
        /// The sweep that fails it with a timeout (`None`: no timeout, or a timer of its own).
        expires: Option<u64>,
    },
    Stream {
        kind: MessageType,
        chunks: mpsc::UnboundedSender<Result<Bytes>>,
    },
}

/// Hashes request ids, which this client numbers one after another: a multiplication spreads
/// them over the table. (With SipHash, the default, the table's insert and remove were 6% of all
/// samples of `bench --scale 1000`, clients and server together. The ids are not chosen by the
/// peer: the server's answers can only look up ids that are there.)
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl IpcClient {
    /// Connects to the server bound to `name`. Fails if the server is not there or refuses the
    /// connection (e.g. [`IpcError::ServerRefused`] at its connection limit). Must be called
    /// inside a tokio runtime; the connection's tasks run on it.
    pub async fn connect(name: &str, config: IpcConfig) -> Result<IpcClient> {
        config.validate()?;
        let inner = Arc::new(ClientInner {
            name: name.to_string(),
            config,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            reconnects: AtomicU64::new(0),
        });
        let conn = establish(&inner).await?;
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        Ok(IpcClient { inner })
    }

    /// Sends a request and waits for its answer, at most about the configured request timeout
    /// (`request_timeout_ms`, 0 = no timeout): the connection looks for requests over it eight
    /// times per timeout instead of arming a timer for each, so one fails between one and 1.125
    /// timeouts after it was sent. [`request_timeout`](Self::request_timeout) for a precise
    /// timeout; the errors are the same.
    pub async fn request(&self, kind: MessageType, payload: impl Into<Bytes>) -> Result<Bytes> {
        let timeout = self.inner.config.request_timeout();
        let payload = payload.into();
        match self.current() {
            Some(conn) if conn.sweeper.is_some() => {
                self.check_size(&payload)?;
                self.exchange(&conn, kind, payload, None, true).await
            }
            // No connection (reconnecting, on a timer), or no timeout.
            _ => self.request_timeout(kind, payload, timeout).await,
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
        payload: impl Into<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let payload = payload.into();
        self.check_size(&payload)?;
        let conn = self.connection(deadline).await?;
        self.exchange(&conn, kind, payload, deadline, false).await
    }

    /// Sends a request on `conn` and waits for its answer: until `deadline`, or until the
    /// sweeper fails it when `swept`.
    async fn exchange(
        &self,
        conn: &Arc<Conn>,
        kind: MessageType,
        payload: Bytes,
        deadline: Option<Instant>,
        swept: bool,
    ) -> Result<Bytes> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        conn.shared.wait_for(id, kind, answer, swept);
        let mut guard = CancelOnDrop { conn, id, armed: true };
        if conn.out.send(kind, id, payload).await.is_err() {
            return Err(IpcError::PeerGone);
        }
        let outcome = match deadline {
            None => Ok(answered.await),
            Some(d) => tokio::time::timeout_at(d, answered).await.map_err(|_| IpcError::Timeout),
        };
        match outcome {
            // (A timeout from the sweeper, which has cancelled the request already.)
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            // The reader dropped our waiter: the connection is gone.
            Ok(Err(_)) => Err(IpcError::PeerGone),
            Err(timeout) => Err(timeout),
        }
    }

    /// Like [`request`](Self::request), for requests that are safe to repeat: if the connection
    /// is lost with the request in flight, it is sent once more after reconnecting.
    pub async fn request_idempotent(&self, kind: MessageType, payload: impl Into<Bytes>) -> Result<Bytes> {
        let payload = payload.into();
        match self.request(kind, payload.clone()).await {
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
        payload: impl Into<Bytes>,
    ) -> Result<ResponseStream> {
        let payload = payload.into();
        self.check_size(&payload)?;
        let deadline = self.inner.config.request_timeout().map(|t| Instant::now() + t);
        let conn = self.connection(deadline).await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (chunks, received) = mpsc::unbounded_channel();
        conn.shared.pending().insert(id, Waiter::Stream { kind, chunks });
        if conn.out.send(kind, id, payload).await.is_err() {
            conn.shared.pending().remove(&id);
            return Err(IpcError::PeerGone);
        }
        Ok(ResponseStream { received, conn, id, finished: false })
    }

    /// How many times the client has reconnected after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the client has a live connection right now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    fn check_size(&self, payload: &Bytes) -> Result<()> {
        let max = self.inner.config.ipc.max_message_size;
        if payload.len() > max {
            return Err(IpcError::MessageTooLarge { len: payload.len(), max });
        }
        Ok(())
    }

    fn current(&self) -> Option<Arc<Conn>> {
        current(&self.inner)
    }

    /// The live connection, reconnecting (and waiting for the server) until `deadline`.
    async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Conn>> {
        connection(&self.inner, deadline).await
    }
}

fn current(inner: &ClientInner) -> Option<Arc<Conn>> {
    let conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
    conn.as_ref().filter(|c| c.shared.alive.load(Ordering::Acquire)).cloned()
}

async fn connection(inner: &Arc<ClientInner>, deadline: Option<Instant>) -> Result<Arc<Conn>> {
    let mut pause = RECONNECT_FIRST_PAUSE;
    loop {
        if let Some(conn) = current(inner) {
            return Ok(conn);
        }
        let attempt = {
            let _one_at_a_time = inner.connecting.lock().await;
            if let Some(conn) = current(inner) {
                return Ok(conn);
            }
            establish(inner).await
        };
        match attempt {
            Ok(conn) => {
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                return Ok(conn);
            }
            // No server (yet), or it went away during the handshake: wait and try again.
            Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                if deadline.is_none_or(|d| Instant::now() + pause < d) =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens a connection: stream handshake, then the server's greeting, then the reader and writer
/// tasks.
async fn establish(inner: &Arc<ClientInner>) -> Result<Arc<Conn>> {
    let stream_config = inner.config.stream_config();
    let stream = AsyncSharedMemoryStream::connect_with(&inner.name, &stream_config).await?;
    let max_message = inner.config.ipc.max_message_size;
    let (tx, mut rx) = AsyncFramedShmStream::new(stream).with_max_message(max_message).into_split();
    let mut buf = Vec::new();
    let greeting = tokio::time::timeout(stream_config.handshake_timeout, rx.recv_into(&mut buf)).await;
    match greeting.map_err(|_| IpcError::Timeout)?? {
        (MessageType::Control, 0) if buf == READY => {}
        (MessageType::Error, 0) => return Err(IpcError::ServerRefused(decode_error(&buf).message)),
        (kind, id) => {
            return Err(IpcError::Handshake(format!("unexpected greeting from the server: {kind:?} id {id}")))
        }
    }
    let (out, _writer) = spawn_writer(tx, inner.config.idle_trim(), None);
    let shared = Arc::new(Shared {
        pending: Mutex::default(),
        alive: AtomicBool::new(true),
        sweeps: AtomicU64::new(0),
        first_waiting: Notify::new(),
    });
    let reader = tokio::spawn(read_answers(rx, shared.clone(), Arc::downgrade(inner)));
    let sweeper = inner.config.request_timeout().map(|t| {
        tokio::spawn(fail_timed_out_requests(shared.clone(), out.clone(), t / SWEEPS_PER_TIMEOUT))
            .abort_handle()
    });
    Ok(Arc::new(Conn { out, shared, reader: reader.abort_handle(), sweeper }))
}

/// The sweeper: every `period` while requests wait, fails those over the default timeout with
/// [`IpcError::Timeout`] and cancels them on the server.
async fn fail_timed_out_requests(shared: Arc<Shared>, out: FrameSink, period: Duration) {
    loop {
        if shared.pending().is_empty() {
            shared.first_waiting.notified().await;
        }
        tokio::time::sleep(period).await;
        let expired: Vec<(u64, Waiter)> = {
            let mut pending = shared.pending();
            let sweep = shared.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
            pending
                .extract_if(|_, w| matches!(w, Waiter::Unary { expires: Some(at), .. } if *at <= sweep))
                .collect()
        };
        for (id, waiter) in expired {
            if let Waiter::Unary { answer, .. } = waiter {
                let _ = answer.send(Err(IpcError::Timeout));
            }
            // Best effort, as in `cancel`. The request's send began as its waiter was added, nine
            // sweeps ago; only one still waiting for room in the queue all that time could be
            // overtaken, and the server then answers it into the void, as it does an answer
            // that crosses its cancel.
            let _ = out.try_send(MessageType::Cancel, id, Bytes::new());
        }
    }
}

/// Routes every answer to its waiter until the connection ends; then fails what still waits and
/// starts reconnecting in the background.
async fn read_answers(mut rx: AsyncFramedReceiver, shared: Arc<Shared>, client: Weak<ClientInner>) {
    let mut buf = Vec::new();
    let end = loop {
        let (kind, id) = match rx.recv_into(&mut buf).await {
            Ok(message) => message,
            Err(e) => break e,
        };
        if id == 0 && kind == MessageType::Error {
            // About the connection itself (e.g. we sent something unreadable): it closes.
            let body = decode_error(&buf);
            tracing::warn!(code = %body.code, message = %body.message, "server closes the connection");
            continue;
        }
        route(&shared, kind, id, &buf);
        release_large_buffer(&mut buf);
        // After a unary answer, let the requester just woken run before this task waits for the
        // next answer: it is usually queued right behind us on this worker (where it cannot be
        // stolen), and the wait begins with a spin that would hold it up, and with it its next
        // request. Not after stream chunks: more usually follow at once, and a yield per chunk
        // (each a poll of the reactor when nothing else is queued) would cost their throughput.
        if matches!(kind, MessageType::Response | MessageType::Error | MessageType::Heartbeat) {
            tokio::task::yield_now().await;
        }
    };
    shared.alive.store(false, Ordering::Release);
    tracing::debug!(error = %end, "connection to the server ended");
    // Dropping the waiters fails their requests with PeerGone and ends their streams with it.
    for (_, waiter) in shared.pending().drain() {
        if let Waiter::Stream { chunks, .. } = waiter {
            let _ = chunks.send(Err(IpcError::PeerGone));
        }
    }
    if client.strong_count() > 0 {
        tokio::spawn(reconnect_in_background(client));
    }
}

fn route(shared: &Shared, kind: MessageType, id: u64, payload: &[u8]) {
    let mut pending = shared.pending();
    match kind {
        MessageType::Response | MessageType::Heartbeat => {
            if let Some(Waiter::Unary { answer, .. }) = pending.remove(&id) {
                let _ = answer.send(Ok(Bytes::copy_from_slice(payload)));
            }
        }
        MessageType::Error => match pending.remove(&id) {
            Some(Waiter::Unary { kind, answer, .. }) => {
                let _ = answer.send(Err(answer_error(kind, decode_error(payload))));
            }
            Some(Waiter::Stream { kind, chunks }) => {
                let _ = chunks.send(Err(answer_error(kind, decode_error(payload))));
            }
            None => {}
        },
        MessageType::StreamChunk => {
            if let Some(Waiter::Stream { chunks, .. }) = pending.get(&id) {
                if chunks.send(Ok(Bytes::copy_from_slice(payload))).is_err() {
                    // The stream was dropped without reading to the end (its Drop cancels).
                    pending.remove(&id);
                }
            }
        }
        MessageType::StreamEnd => {
            pending.remove(&id);
        }
        other => tracing::debug!(kind = ?other, id, "ignoring an unexpected frame from the server"),
    }
}

/// Reconnects as soon as the server is back, for as long as the client exists. (Boxed: it is
/// spawned by the reader task, which the connection it makes spawns in turn.)
fn reconnect_in_background(client: Weak<ClientInner>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut pause = RECONNECT_FIRST_PAUSE;
        loop {
            let Some(inner) = client.upgrade() else { return };
            match connection(&inner, Some(Instant::now())).await {
                Ok(_) => return,
                Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout) => {}
                Err(e) => tracing::debug!(error = %e, "reconnecting failed"),
            }
            drop(inner);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
        }
    })
}

/// Cancels a request on the server when its future is dropped before the answer came (a
/// timeout, or the caller gave up).
struct CancelOnDrop<'a> {
    conn: &'a Arc<Conn>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            cancel(self.conn, self.id);
        }
    }
}

fn cancel(conn: &Conn, id: u64) {
    if conn.shared.pending().remove(&id).is_some() {
        // Best effort: a full queue means the connection is saturated or dying, and the server
        // will answer into the void either way. It cannot overtake the request it cancels: the
        // request's send began before this (it happens before the guard or stream that calls
        // this can drop), and `FrameSink` keeps such frames in order, whether each one is
        // written directly or queued (see there). A request whose send was itself cancelled
        // never left: the server ignores a `Cancel` for an id it does not run.
        let _ = conn.out.try_send(MessageType::Cancel, id, Bytes::new());
    }
}

/// The chunks of a streamed answer (see [`IpcClient::request_stream`]). Dropping it before the
/// end cancels the request on the server.
pub struct ResponseStream {
    received: mpsc::UnboundedReceiver<Result<Bytes>>,
    conn: Arc<Conn>,
    id: u64,
    finished: bool,
}

impl ResponseStream {
    /// The next chunk; `None` after the server's `StreamEnd`. An error (the handler's error,
    /// a lost connection) ends the stream.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        let item = self.received.recv().await;
        if !matches!(item, Some(Ok(_))) {
            self.finished = true;
        }
        item
    }

    /// The request's id on its connection.
    pub fn request_id(&self) -> u64 {
        self.id
    }

    /// Stops the stream: the server aborts the handler.
    pub fn cancel(mut self) {
        self.finished = true;
        cancel(&self.conn, self.id);
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if !self.finished {
            cancel(&self.conn, self.id);
        }
    }
}

/// [`IpcClient`] for code without an async runtime: each call blocks the calling thread. It runs
/// its own small tokio runtime (one worker thread) for the connection's tasks.
///
/// ```no_run
/// use lapce_ipc::frame::MessageType;
/// use lapce_ipc::{BlockingIpcClient, IpcConfig};
///
/// let client = BlockingIpcClient::connect("lapce-ai", IpcConfig::default())?;
/// let answer = client.request(MessageType::Data, &b"ping"[..])?;
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub struct BlockingIpcClient {
    runtime: tokio::runtime::Runtime,
    client: IpcClient,
}

impl BlockingIpcClient {
    /// Connects to the server bound to `name` (see [`IpcClient::connect`]).
    pub fn connect(name: &str, config: IpcConfig) -> Result<BlockingIpcClient> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lapce-ipc-client")
            .enable_all()
            .build()?;
        let client = runtime.block_on(IpcClient::connect(name, config))?;
        Ok(BlockingIpcClient { runtime, client })
    }

    /// See [`IpcClient::request`].
    pub fn request(&self, kind: MessageType, payload: impl Into<Bytes>) -> Result<Bytes> {
        self.runtime.block_on(self.client.request(kind, payload))
    }

    /// See [`IpcClient::request_timeout`].
    pub fn request_timeout(
        &self,
        kind: MessageType,
        payload: impl Into<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        self.runtime.block_on(self.client.request_timeout(kind, payload, timeout))
    }

    /// Sends a streaming request and calls `on_chunk` with each chunk as it arrives; returns
    /// after the stream's end (or its first error).
    pub fn request_stream(
        &self,
        kind: MessageType,
        payload: impl Into<Bytes>,
        mut on_chunk: impl FnMut(Bytes),
    ) -> Result<()> {
        self.runtime.block_on(async {
            let mut stream = self.client.request_stream(kind, payload).await?;
            while let Some(chunk) = stream.next().await {
                on_chunk(chunk?);
            }
            Ok(())
        })
    }

    /// The async client inside, e.g. to hand to code that has a runtime.
    pub fn client(&self) -> &IpcClient {
        &self.client
    }
}
