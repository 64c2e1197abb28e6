//! The kinds of handler a server runs, how each is stored, and what they answer through:
//! [`Reply`] (an answer written in place) and [`ChunkSender`] (a stream's chunks).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;

use super::super::outbound::Outbox;
use super::super::unwind::{panic_message, CatchUnwind};
use super::super::window::StreamWindow;
use super::connection::Connection;
use super::context::RequestContext;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;
use crate::messages::ErrorBody;
use crate::metrics::{Metrics, TypeMetrics};

/// What a unary handler returns: the response payload, or an error body sent back as an
/// `Error` frame.
pub type HandlerResult = std::result::Result<Bytes, ErrorBody>;

/// A boxed handler future that reports a panic as its message.
pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub(super) type SyncFn = dyn Fn(Bytes) -> HandlerResult + Send + Sync;
pub(super) type InPlaceFn = dyn Fn(&[u8], &mut Reply<'_>) -> std::result::Result<(), ErrorBody> + Send + Sync;
pub(super) type ContextFn = dyn Fn(RequestContext, Bytes) -> BoxFuture<HandlerResult> + Send + Sync;
pub(super) type StreamFn =
    dyn Fn(Bytes, ChunkSender) -> BoxFuture<std::result::Result<(), ErrorBody>> + Send + Sync;

/// A registered handler.
#[derive(Clone)]
pub(super) enum Handler {
    /// `register_handler`: an async function, first polled on the connection's task.
    Unary(Arc<dyn UnaryHandler>),
    /// `register_sync_handler`: a function of the owned payload.
    Sync(Arc<SyncFn>),
    /// `register_in_place_handler`: a function of the payload in the ring, answering in place.
    InPlace(Arc<InPlaceFn>),
    /// `register_stream_handler`: an async function sending chunks.
    Stream(Arc<StreamFn>),
}

/// A registered handler and the metric series of its type (when metrics are on).
#[derive(Clone)]
pub(super) struct Registered {
    pub(super) handler: Handler,
    pub(super) metrics: Option<Arc<TypeMetrics>>,
}

/// The handlers by type: replaced whole when one is registered, so a connection keeps a copy
/// and looks up without a lock ([`Handlers::refresh`]). A list: servers have a handful of
/// types, and a scan of a few entries is cheaper than hashing.
#[derive(Clone, Default)]
pub(super) struct HandlerMap(Vec<(MessageType, Registered)>);

impl HandlerMap {
    pub(super) fn get(&self, kind: MessageType) -> Option<&Registered> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, r)| r)
    }

    /// Adds `registered` for `kind`, replacing an earlier one.
    pub(super) fn insert(&mut self, kind: MessageType, registered: Registered) {
        match self.0.iter_mut().find(|(k, _)| *k == kind) {
            Some(entry) => entry.1 = registered,
            None => self.0.push((kind, registered)),
        }
    }
}

/// A connection's copy of the server's handlers and the version it copied.
pub(super) struct Handlers {
    version: u64,
    pub(super) map: Arc<HandlerMap>,
}

impl Handlers {
    pub(super) fn new(version: u64, map: Arc<HandlerMap>) -> Handlers {
        Handlers { version, map }
    }

    /// Takes the server's current handlers if they changed since the copy was made.
    pub(super) fn refresh(&mut self, version: u64, current: impl FnOnce() -> Arc<HandlerMap>) {
        if version != self.version {
            self.map = current();
            self.version = version;
        }
    }
}

/// How a unary handler's call starts: polled once right away, on the connection's task.
pub(super) enum Started {
    /// It completed at once: its outcome (a panic as its message).
    Done(std::result::Result<HandlerResult, String>),
    /// It waits: the rest runs in a task of its own.
    Pending(BoxFuture<HandlerResult>),
}

/// Which request a unary handler is started for: what its context is made of, for the
/// handlers that take one.
pub(super) struct Origin<'a> {
    pub(super) id: u64,
    pub(super) kind: MessageType,
    pub(super) conn: &'a Connection,
}

/// A unary handler with its future's type erased.
pub(super) trait UnaryHandler: Send + Sync {
    /// Calls the handler on `payload` and polls its future once with `cx`.
    fn start(&self, payload: Bytes, origin: Origin<'_>, cx: &mut Context<'_>) -> Started;
}

/// Most finished future boxes a handler keeps for reuse.
const SPARE_BOXES: usize = 4;

/// An async handler function and boxes for its futures. A future that completes at its first
/// poll (most do) leaves its box for the next call, so such a request allocates nothing; one
/// that waits keeps its box and goes on in its own task.
pub(super) struct Unary<F, Fut> {
    f: F,
    spare: Mutex<Vec<Pin<Box<Fut>>>>,
}

impl<F, Fut> Unary<F, Fut> {
    pub(super) fn new(f: F) -> Unary<F, Fut> {
        Unary { f, spare: Mutex::new(Vec::new()) }
    }
}

impl<F, Fut> UnaryHandler for Unary<F, Fut>
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn start(&self, payload: Bytes, _: Origin<'_>, cx: &mut Context<'_>) -> Started {
        let future = match catch_panic(|| (self.f)(payload)) {
            Ok(future) => future,
            Err(panic) => return Started::Done(Err(panic)),
        };
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut boxed = match spare {
            Some(mut b) => {
                b.as_mut().set(future);
                b
            }
            None => Box::pin(future),
        };
        match Pin::new(&mut CatchUnwind::new(&mut boxed)).poll(cx) {
            Poll::Ready(outcome) => {
                // A future that panicked is not polled again, nor its box reused.
                if outcome.is_ok() {
                    let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
                    if spare.len() < SPARE_BOXES {
                        spare.push(boxed);
                    }
                }
                Started::Done(outcome)
            }
            Poll::Pending => Started::Pending(boxed),
        }
    }
}

/// An async handler that takes a [`RequestContext`]: its future is boxed per request (with the
/// watch that raises the context's cancellation signal when the future is dropped unfinished).
pub(super) struct WithContext(pub(super) Arc<ContextFn>);

impl UnaryHandler for WithContext {
    fn start(&self, payload: Bytes, origin: Origin<'_>, cx: &mut Context<'_>) -> Started {
        let ctx = RequestContext::new(origin.id, origin.kind, origin.conn);
        let future = match catch_panic(|| (self.0)(ctx.clone(), payload)) {
            Ok(future) => ctx.watch(future),
            Err(panic) => return Started::Done(Err(panic)),
        };
        let mut boxed: BoxFuture<HandlerResult> = Box::pin(future);
        match Pin::new(&mut CatchUnwind::new(&mut boxed)).poll(cx) {
            Poll::Ready(outcome) => Started::Done(outcome),
            Poll::Pending => Started::Pending(boxed),
        }
    }
}

/// Calls a handler, turning a panic into its message.
pub(super) fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// Where an in-place handler ([`IpcServer::register_in_place_handler`](crate::IpcServer::register_in_place_handler))
/// writes its answer: straight into the client's ring when it fits one record and the ring has
/// room now, else into a buffer that the server sends right after the handler returns.
///
/// One answer per request: a second write is refused. A handler that writes nothing answers
/// with an empty payload.
pub struct Reply<'a> {
    pub(super) outbox: &'a Outbox,
    pub(super) id: u64,
    pub(super) max: usize,
    pub(super) state: ReplyState,
}

/// The request id and the limit, never the answer's bytes.
impl std::fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("id", &self.id).field("max", &self.max).finish()
    }
}

/// What a [`Reply`] holds.
pub(super) enum ReplyState {
    /// Nothing written yet.
    Empty,
    /// Written into the ring, this many payload bytes.
    Written(usize),
    /// Written into a buffer, to be sent after the handler.
    Kept(Vec<u8>),
}

impl Reply<'_> {
    /// Writes an answer of at most `len` bytes: `fill` writes them (into the ring itself when
    /// possible) and returns how many it wrote, which is returned. Errors:
    /// [`IpcError::MessageTooLarge`] over the connection's message limit,
    /// [`IpcError::InvalidArgument`] for a second answer.
    pub fn write_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        if !matches!(self.state, ReplyState::Empty) {
            return Err(IpcError::InvalidArgument("a request is answered once".into()));
        }
        if len > self.max {
            return Err(IpcError::MessageTooLarge { len, max: self.max });
        }
        let mut fill = Some(fill);
        let in_ring = self.outbox.try_send_in_place(MessageType::Response, self.id, len, |buf| {
            (fill.take().expect("filled once"))(buf)
        });
        if let Some(n) = in_ring {
            self.state = ReplyState::Written(n);
            return Ok(n);
        }
        let mut buf = vec![0; len];
        let n = (fill.take().expect("not filled in the ring"))(&mut buf).min(len);
        buf.truncate(n);
        self.state = ReplyState::Kept(buf);
        Ok(n)
    }

    /// Writes `answer` as the answer (one copy, into the ring when possible).
    pub fn write(&mut self, answer: &[u8]) -> Result<()> {
        self.write_with(answer.len(), |buf| {
            buf.copy_from_slice(answer);
            answer.len()
        })
        .map(|_| ())
    }

    /// The request's id on its connection.
    pub fn request_id(&self) -> u64 {
        self.id
    }
}

/// Sends the chunks of one streamed response (see
/// [`IpcServer::register_stream_handler`](crate::IpcServer::register_stream_handler)).
#[derive(Clone)]
pub struct ChunkSender {
    pub(super) conn: Weak<Connection>,
    pub(super) id: u64,
    pub(super) metrics: Option<Arc<Metrics>>,
    /// The largest message the connection carries.
    pub(super) max: usize,
    /// The stream's window, when the client announced one.
    pub(super) window: Option<Arc<StreamWindow>>,
}

/// The stream's id and whether its connection is still there.
impl std::fmt::Debug for ChunkSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSender")
            .field("id", &self.id)
            .field("connected", &(self.conn.strong_count() > 0))
            .field("max", &self.max)
            .finish()
    }
}

impl ChunkSender {
    /// Sends one chunk, written straight into the client's ring. Waits (backpressure) while
    /// the client has the stream's window of chunks unread — the client announces the window
    /// (its `stream_window`, 2 MiB by default) and credits back what its reader consumes — and
    /// while the ring is full. So a handler runs no further ahead of its reader than the window,
    /// whatever else reads the connection; dropping the client's stream cancels the handler.
    /// [`IpcError::PeerGone`] when the connection is closed: stop producing. A chunk over the
    /// connection's message limit is refused with [`IpcError::MessageTooLarge`] (nothing is
    /// sent; the stream goes on).
    pub async fn send(&self, chunk: impl AsRef<[u8]>) -> Result<()> {
        let chunk = chunk.as_ref();
        if chunk.len() > self.max {
            return Err(IpcError::MessageTooLarge { len: chunk.len(), max: self.max });
        }
        if let Some(window) = &self.window {
            window.reserve(chunk.len()).await;
        }
        let conn = self.conn.upgrade().filter(|c| !c.is_closed()).ok_or(IpcError::PeerGone)?;
        if let Some(m) = &self.metrics {
            m.stream_chunks.inc();
            m.response_bytes.inc_by(chunk.len() as u64);
        }
        conn.outbox.send(MessageType::StreamChunk, self.id, chunk).await
    }

    /// The id of the request this stream answers.
    pub fn request_id(&self) -> u64 {
        self.id
    }
}
