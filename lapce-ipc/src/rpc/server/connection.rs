//! One server connection's task: read the requests the ring holds, dispatch them, answer, wait
//! for more; at the end, drain what still runs.
//!
//! A request is read and dispatched right on this task, with no await in between: a handler
//! that answers at once (a sync or in-place handler, an async one whose first poll completes) is
//! answered from here, with no task hop, when the answer can be written at once. Only what must
//! wait (room for an answer, a permit) is awaited; a handler that waits, and every stream, goes
//! on in a task of its own, which answers itself.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;

use super::super::inbound::{Inbound, Message, PayloadBlock};
use super::super::outbound::{trim_when_idle, Outbound, Outbox};
use super::super::window::{self, StreamWindow};
use super::super::READY;
use super::handlers::{catch_panic, Handler, Handlers, Registered, Reply, ReplyState};
use super::peer::Peer;
use super::request::{start_stream, start_unary, Outgoing, Request};
use super::Inner;
use crate::error::IpcError;
use crate::frame::{FrameError, MessageType};
use crate::messages::{ErrorBody, ErrorCode};
use crate::metrics::{ErrorKind, Metrics};
use crate::SharedMemoryStream;

/// Requests served in a row before the task lets the runtime run others.
const BATCH: usize = 16;

/// What one connection shares with its request tasks and stream senders.
pub(crate) struct Connection {
    pub(super) outbox: Outbox,
    /// Requests running in tasks of their own, by id, for cancellation.
    in_flight: Mutex<HashMap<u64, AbortHandle>>,
    metrics: Option<Arc<Metrics>>,
    /// Set when the connection closes: its stream senders stop.
    closed: AtomicBool,
    /// The window the client announced for its streams (`StreamWindow`, id 0); 0 until it does
    /// (then its streams have none).
    stream_window: AtomicU32,
    /// The windows of the streams running with one, by id, for the client's credit.
    windows: Mutex<HashMap<u64, Arc<StreamWindow>>>,
    /// Set once the connection no longer reads: no credit can come, so no window applies.
    windows_lifted: AtomicBool,
    /// The client's process id as the OS reported it (0 where it does not tell).
    pub(super) peer_pid: u32,
}

impl Connection {
    pub(super) fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<StreamWindow>>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The window of a stream starting now with id `id`, registered for the client's credit;
    /// `None` when the client announced no window (or the connection no longer reads).
    pub(super) fn open_window(&self, id: u64) -> Option<Arc<StreamWindow>> {
        let size = self.stream_window.load(Ordering::Relaxed);
        if size == 0 {
            return None;
        }
        let mut windows = self.windows();
        // Checked under the lock `lift_windows` takes: a window opened after it would wait for
        // credit that nobody reads.
        if self.windows_lifted.load(Ordering::Relaxed) {
            return None;
        }
        let w = Arc::new(StreamWindow::new(size));
        windows.insert(id, w.clone());
        Some(w)
    }

    /// Forgets the window of stream `id` once the stream is over (unless a later stream with the
    /// same id has one meanwhile).
    pub(super) fn close_window(&self, id: u64, window: &Arc<StreamWindow>) {
        let mut windows = self.windows();
        if windows.get(&id).is_some_and(|w| Arc::ptr_eq(w, window)) {
            windows.remove(&id);
        }
    }

    /// The client credits `bytes` back to stream `id`. Credit for a stream that is over (or
    /// never had a window) is ignored: it may cross the stream's end.
    fn credit(&self, id: u64, bytes: u32) -> std::result::Result<(), FrameError> {
        let window = self.windows().get(&id).cloned();
        match window {
            Some(w) => w.credited(bytes),
            None => Ok(()),
        }
    }

    /// The connection no longer reads: every stream waiting for credit goes on without a window
    /// (bounded by the ring, and stopped by the connection's end).
    fn lift_windows(&self) {
        let mut windows = self.windows();
        self.windows_lifted.store(true, Ordering::Relaxed);
        for (_, w) in windows.drain() {
            w.lift();
        }
    }

    /// Counts `len` bytes sent to the client.
    pub(super) fn count_sent(&self, len: usize) {
        if let Some(m) = &self.metrics {
            m.response_bytes.inc_by(len as u64);
        }
    }
}

/// Serves one accepted connection until the client goes, the idle timeout or a shutdown.
pub(super) async fn serve_connection(
    server: Arc<Inner>,
    stream: SharedMemoryStream,
    id: u64,
    accepted_at: Instant,
) {
    let _active = ActiveGuard(server.clone());
    let pid = stream.peer_pid();
    let Some(mut task) = ConnectionTask::open(server, stream, accepted_at).await else { return };
    let max_message = task.server.config.ipc.max_message_size;
    task.server.connected(Peer::new(id, pid, &task.conn, max_message));
    while task.serve_next().await {}
    task.server.disconnected(id);
    task.conn.lift_windows();
    task.close().await;
}

/// The state of a connection's own task.
struct ConnectionTask {
    server: Arc<Inner>,
    conn: Arc<Connection>,
    inbound: Inbound,
    handlers: Handlers,
    /// Bounds the requests running in tasks of their own (`max_concurrent_requests`).
    permits: Arc<Semaphore>,
    max_requests: usize,
    idle: Option<IdleWatch>,
    stopping: watch::Receiver<bool>,
    /// Requests read so far (for the idle check).
    received: u64,
    /// The idle trim of the outgoing ring, polled while the task waits.
    trim: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Keeps the rings' gauges registered with the metrics while the connection lives.
    _rings: Option<crate::metrics::RingRegistration>,
}

/// What serving the requests at hand came to.
enum Served {
    /// The ring is empty: wait for more.
    Drained,
    /// A batch was served and more may be there: let the runtime run others, then go on.
    Batch,
    /// Something must be awaited before the next request.
    Later(Later),
    /// The ring cannot be read any more.
    Failed(IpcError),
}

/// What a request asks of the connection task, decided while it is read.
enum Action<'h> {
    /// `Cancel` of a running request.
    Cancel(u64),
    /// Nothing more to do (credit for a stream, taken while it was read).
    Done,
    /// A frame to send as it is (a `Heartbeat` echo, an error).
    Send(Outgoing),
    /// An in-place handler ran: what it left to send, and how it ended.
    RanInPlace(Request, ReplyState, std::result::Result<std::result::Result<(), ErrorBody>, String>),
    /// A handler to call with the payload.
    Call(MessageType, u64, &'h Registered, Bytes),
}

/// What must be awaited before the task goes on.
enum Later {
    /// A frame that found the outbox busy or the ring full; then its request (if any) ends.
    Send(Option<Request>, Outgoing),
    /// A request whose handler may run in a task of its own, waiting for a permit.
    Dispatch(MessageType, u64, Registered, Bytes),
}

impl ConnectionTask {
    /// Greets the client and sets the connection up; `None` if the client is gone already.
    async fn open(
        server: Arc<Inner>,
        stream: SharedMemoryStream,
        accepted_at: Instant,
    ) -> Option<ConnectionTask> {
        let max_message = server.config.ipc.max_message_size;
        let peer_pid = stream.peer_pid();
        let (tx, rx) = stream.into_halves();
        let rings = server.metrics.as_ref().map(|m| m.rings.register(rx.ring_gauge(), tx.ring_gauge()));
        let outbox = Outbox::new(Outbound::new(tx, max_message), server.metrics.clone());
        if let Err(e) = outbox.send(MessageType::Control, 0, READY).await {
            if matches!(e, IpcError::PeerGone) {
                peer_gone(&server);
            }
            return None;
        }
        if let Some(m) = &server.metrics {
            m.connect_duration.observe_since(accepted_at);
        }
        let conn = Arc::new(Connection {
            outbox,
            in_flight: Mutex::default(),
            metrics: server.metrics.clone(),
            closed: AtomicBool::new(false),
            stream_window: AtomicU32::new(0),
            windows: Mutex::default(),
            windows_lifted: AtomicBool::new(false),
            peer_pid,
        });
        let max_requests = server.config.ipc.max_concurrent_requests.max(1);
        let trim =
            Box::pin(trim_when_idle(Arc::downgrade(&conn), server.config.idle_trim(), |c: &Connection| {
                &c.outbox
            }));
        Some(ConnectionTask {
            handlers: server.handlers(),
            permits: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            idle: server.config.idle_timeout().map(IdleWatch::new),
            stopping: server.stopping.subscribe(),
            inbound: Inbound::new(rx, max_message),
            received: 0,
            trim,
            _rings: rings,
            server,
            conn,
        })
    }

    /// Serves the requests at hand, or waits for more; `false` when the connection is to close.
    async fn serve_next(&mut self) -> bool {
        if self.server.stopping_now() {
            return false;
        }
        self.server.refresh_handlers(&mut self.handlers);
        let served = poll_fn(|cx| Poll::Ready(self.serve_ready(cx))).await;
        match served {
            Served::Drained => match self.wait().await {
                Waited::Readable => true,
                Waited::Stop => false,
                Waited::Failed(e) => {
                    self.read_failed(e).await;
                    false
                }
            },
            Served::Batch => {
                tokio::task::consume_budget().await;
                true
            }
            Served::Later(later) => finish(&self.server, &self.conn, &self.permits, later).await,
            Served::Failed(e) => {
                self.read_failed(e).await;
                false
            }
        }
    }

    /// Serves up to [`BATCH`] requests the ring holds now, with no await: each is answered
    /// here when its handler answers at once and the answer can be written at once.
    fn serve_ready(&mut self, cx: &mut Context<'_>) -> Served {
        for _ in 0..BATCH {
            let (server, conn, handlers) = (&self.server, &self.conn, &self.handlers);
            let read = self.inbound.try_next(|msg, block| read_request(server, conn, handlers, msg, block));
            let action = match read {
                Ok(Some(action)) => action,
                Ok(None) => return Served::Drained,
                Err(e) => return Served::Failed(e),
            };
            self.received += 1;
            if let Some(later) = act_now(server, conn, &self.permits, action, cx) {
                return Served::Later(later);
            }
        }
        Served::Batch
    }

    /// Waits for the next request, a shutdown, the idle timeout, and trims the outgoing ring
    /// meanwhile. Biased, the ring first: while requests keep coming nothing else is polled, so
    /// nothing registers with the shutdown signal or the timers per request.
    async fn wait(&mut self) -> Waited {
        let busy = self.permits.available_permits() < self.max_requests;
        let received = self.received;
        tokio::select! {
            biased;
            ready = self.inbound.rx().readable_async() => match ready {
                Ok(()) => Waited::Readable,
                Err(e) => Waited::Failed(e),
            },
            _ = self.stopping.changed() => Waited::Readable,
            () = tick(&mut self.idle) => {
                // Nothing in flight counts as idle (a long stream is not).
                if self.idle.as_mut().is_some_and(|w| w.expired(received, busy)) {
                    tracing::debug!("closing an idle connection");
                    return Waited::Stop;
                }
                Waited::Readable
            }
            () = &mut self.trim => Waited::Readable,
        }
    }

    /// The connection cannot be read any more: say why when it is the client's fault.
    async fn read_failed(&mut self, error: IpcError) {
        let server = &self.server;
        match error {
            IpcError::PeerGone => peer_gone(server),
            IpcError::Frame(e) => {
                // The framed stream cannot resynchronise: say why, then close.
                tracing::warn!(error = %e, "unreadable frame: closing the connection");
                let (code, metric) = match e {
                    FrameError::TooLong { .. } => (ErrorCode::TOO_LARGE, ErrorKind::TooLarge),
                    _ => (ErrorCode::BAD_REQUEST, ErrorKind::BadFrame),
                };
                Outgoing::error(server, 0, metric, &ErrorBody::new(code, e.to_string()))
                    .send(&self.conn)
                    .await;
            }
            e => {
                tracing::warn!(error = %e, "connection failed");
                if let Some(m) = &server.metrics {
                    m.error(ErrorKind::BadFrame);
                }
            }
        }
    }

    /// Lets the requests still running finish (all permits back), unless the grace period of a
    /// shutdown ends first, then closes the connection.
    async fn close(self) {
        let mut force = self.server.force.subscribe();
        tokio::select! {
            _ = self.permits.acquire_many(self.max_requests as u32) => {}
            _ = force.wait_for(|f| *f) => {
                for (_, task) in self.conn.in_flight().drain() {
                    task.abort();
                }
            }
        }
        self.conn.closed.store(true, Ordering::Release);
    }
}

/// Does what had to wait; `false` when the connection is to close.
async fn finish(server: &Arc<Inner>, conn: &Arc<Connection>, permits: &Arc<Semaphore>, later: Later) -> bool {
    match later {
        Later::Send(Some(request), out) => request.answer(conn, out).await,
        Later::Send(None, out) => out.send(conn).await,
        Later::Dispatch(kind, id, registered, payload) => {
            // Waiting here stops reading: the ring fills up and the client's sends wait
            // (backpressure), nothing is dropped.
            let Ok(permit) = permits.clone().acquire_owned().await else { return false };
            let request = Request::start(server, kind, id, registered.metrics.as_ref(), Some(permit));
            match registered.handler {
                Handler::Unary(f) => {
                    let mut start = Some((payload, request));
                    let done = poll_fn(|cx| {
                        let (payload, request) = start.take().expect("started once");
                        Poll::Ready(start_unary(server, conn, &*f, payload, request, cx))
                    })
                    .await;
                    if let Some((request, out)) = done {
                        request.answer(conn, out).await;
                    }
                }
                Handler::Stream(f) => start_stream(server, conn, f, payload, request),
                Handler::Sync(_) | Handler::InPlace(_) => unreachable!("they take no permit"),
            }
        }
    }
    true
}

/// How a wait for the next request ended.
enum Waited {
    /// Look at the ring again (also after a shutdown signal or a timer: the loop checks them).
    Readable,
    /// Close the connection.
    Stop,
    /// The ring cannot be read.
    Failed(IpcError),
}

/// Decides what a request asks, while it is in the ring; an in-place handler runs right here.
fn read_request<'h>(
    server: &Arc<Inner>,
    conn: &Connection,
    handlers: &'h Handlers,
    msg: Message<'_>,
    block: &mut PayloadBlock,
) -> std::result::Result<Action<'h>, FrameError> {
    let (kind, id) = (msg.kind, msg.id);
    if let Some(m) = server.metrics.as_ref().filter(|_| kind != MessageType::StreamWindow) {
        m.request_bytes.inc_by(msg.len() as u64);
    }
    let refuse = |metric, code, message: String| {
        Action::Send(Outgoing::error(server, id, metric, &ErrorBody::new(code, message)))
    };
    Ok(match kind {
        MessageType::Cancel => Action::Cancel(id),
        MessageType::StreamWindow if id == 0 => {
            // The client's window for the streams it requests from now on; acknowledged, so
            // that the client knows its credit is read.
            let size = window::decode(msg.in_place()?)?;
            conn.stream_window.store(size, Ordering::Relaxed);
            let ack = Bytes::copy_from_slice(&window::encode(size));
            Action::Send(Outgoing { kind: MessageType::StreamWindow, id: 0, payload: ack })
        }
        MessageType::StreamWindow => {
            conn.credit(id, window::decode(msg.in_place()?)?)?;
            Action::Done
        }
        MessageType::Heartbeat => {
            Action::Send(Outgoing { kind: MessageType::Heartbeat, id, payload: msg.to_bytes(block)? })
        }
        MessageType::Response
        | MessageType::Error
        | MessageType::StreamChunk
        | MessageType::StreamEnd
        | MessageType::Control => {
            refuse(ErrorKind::BadRequest, ErrorCode::BAD_REQUEST, format!("{kind:?} is not a request type"))
        }
        _ => match handlers.map.get(kind) {
            None => refuse(
                ErrorKind::UnknownType,
                ErrorCode::UNKNOWN_TYPE,
                format!("no handler for message type {kind:?} (0x{:04x})", kind.to_u16()),
            ),
            Some(Registered { handler: Handler::InPlace(f), metrics }) => {
                let request = Request::start(server, kind, id, metrics.as_ref(), None);
                let max = server.config.ipc.max_message_size;
                let mut reply = Reply { outbox: &conn.outbox, id, max, state: ReplyState::Empty };
                let payload = msg.in_place()?;
                let span = tracing::debug_span!("ipc_request", id, kind = ?kind);
                let outcome = span.in_scope(|| catch_panic(|| f(payload, &mut reply)));
                Action::RanInPlace(request, reply.state, outcome)
            }
            Some(registered) => Action::Call(kind, id, registered, msg.to_bytes(block)?),
        },
    })
}

/// Does what a request asks, without waiting; what must wait is returned.
fn act_now(
    server: &Arc<Inner>,
    conn: &Arc<Connection>,
    permits: &Arc<Semaphore>,
    action: Action<'_>,
    cx: &mut Context<'_>,
) -> Option<Later> {
    let answered = |request: Option<Request>, out: Outgoing| match out.try_send(conn) {
        Ok(()) => {
            if let Some(r) = request {
                r.end(conn);
            }
            None
        }
        Err(out) => Some(Later::Send(request, out)),
    };
    match action {
        Action::Cancel(id) => {
            let task = conn.in_flight().remove(&id)?;
            task.abort();
            let body = ErrorBody::new(ErrorCode::CANCELLED, "request cancelled");
            answered(None, Outgoing::error(server, id, ErrorKind::Cancelled, &body))
        }
        Action::Send(out) => answered(None, out),
        Action::Done => None,
        Action::RanInPlace(request, reply, outcome) => match request.replied(server, conn, reply, outcome) {
            Some(out) => answered(Some(request), out),
            None => {
                request.end(conn);
                None
            }
        },
        Action::Call(kind, id, registered, payload) => match &registered.handler {
            Handler::Sync(f) => {
                let request = Request::start(server, kind, id, registered.metrics.as_ref(), None);
                let span = tracing::debug_span!("ipc_request", id, kind = ?kind);
                let outcome = span.in_scope(|| catch_panic(|| f(payload)));
                let out = request.outgoing(server, outcome);
                answered(Some(request), out)
            }
            // They may go on in tasks of their own: within the limit.
            Handler::Unary(f) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let request = Request::start(server, kind, id, registered.metrics.as_ref(), Some(permit));
                    let (request, out) = start_unary(server, conn, &**f, payload, request, cx)?;
                    answered(Some(request), out)
                }
                Err(_) => Some(Later::Dispatch(kind, id, registered.clone(), payload)),
            },
            Handler::Stream(f) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let request = Request::start(server, kind, id, registered.metrics.as_ref(), Some(permit));
                    start_stream(server, conn, f.clone(), payload, request);
                    None
                }
                Err(_) => Some(Later::Dispatch(kind, id, registered.clone(), payload)),
            },
            Handler::InPlace(_) => unreachable!("in-place handlers run while the request is read"),
        },
    }
}

/// Counts a connection whose client hung up (closed, exited or died) in the metrics.
fn peer_gone(server: &Inner) {
    if let Some(m) = &server.metrics {
        m.dead_connections.inc();
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

/// A connection's idle timeout, checked [`IDLE_CHECKS`] times per timeout rather than timed per
/// message: a timer armed and cleared around every receive was a tenth of the server's time under
/// load (the timer wheel's lock and entry). So a connection is closed after between one and
/// `1 + 1/IDLE_CHECKS` timeouts without a message and with nothing in flight.
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
