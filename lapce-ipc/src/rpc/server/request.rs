//! One request on the server: its bookkeeping ([`Request`]), its answer ([`Outgoing`]), and
//! the handlers that run in tasks of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::super::error_payload;
use super::super::unwind::CatchUnwind;
use super::super::window::StreamWindow;
use super::connection::Connection;
use super::handlers::{
    catch_panic, ChunkSender, HandlerResult, Origin, ReplyState, Started, StreamFn, UnaryHandler,
};
use super::Inner;
use crate::frame::MessageType;
use crate::messages::{ErrorBody, ErrorCode};
use crate::metrics::{ErrorKind, TypeMetrics};

/// A frame to send: an answer, an error, an echo.
pub(super) struct Outgoing {
    pub(super) kind: MessageType,
    pub(super) id: u64,
    pub(super) payload: Bytes,
}

impl Outgoing {
    /// An `Error` frame for request `id`, counted as an error of kind `metric`.
    pub(super) fn error(server: &Inner, id: u64, metric: ErrorKind, body: &ErrorBody) -> Outgoing {
        server.counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &server.metrics {
            m.error(metric);
        }
        Outgoing { kind: MessageType::Error, id, payload: Bytes::from(error_payload(body)) }
    }

    /// Writes it now if the outbox is free and the ring has room (counted in the metrics);
    /// `Err(self)` when it must wait.
    pub(super) fn try_send(self, conn: &Connection) -> Result<(), Outgoing> {
        if conn.outbox.try_send(self.kind, self.id, &self.payload) {
            conn.count_sent(self.payload.len());
            return Ok(());
        }
        Err(self)
    }

    /// Writes it, waiting for the outbox and for room. An error means the connection is closing:
    /// nobody is left to answer.
    pub(super) async fn send(self, conn: &Connection) {
        if conn.outbox.send(self.kind, self.id, &self.payload).await.is_ok() {
            conn.count_sent(self.payload.len());
        }
    }
}

/// A request being answered: what its answer needs, its permit (one of the connection's
/// `max_concurrent_requests`, for handlers that may run in a task of their own) and its place in
/// the in-flight count, both given back when it is dropped (answered, or aborted by a cancel).
pub(super) struct Request {
    pub(super) kind: MessageType,
    pub(super) id: u64,
    /// The series of its type and when it was dispatched, when metrics are on.
    metrics: Option<(Arc<TypeMetrics>, Instant)>,
    /// It runs in a task of its own, registered in the connection's in-flight table.
    spawned: bool,
    _permit: Option<OwnedSemaphorePermit>,
    _counted: InFlight,
}

impl Request {
    pub(super) fn start(
        server: &Arc<Inner>,
        kind: MessageType,
        id: u64,
        metrics: Option<&Arc<TypeMetrics>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Request {
        server.counters.requests.fetch_add(1, Ordering::Relaxed);
        // Timed from here, so that the wait for a task to be scheduled counts too.
        let metrics = metrics.map(|m| {
            m.dispatched();
            (m.clone(), Instant::now())
        });
        Request { kind, id, metrics, spawned: false, _permit: permit, _counted: InFlight::start(server) }
    }

    /// What answers a unary handler's outcome: its answer, its error, or its panic's message.
    pub(super) fn outgoing(
        &self,
        server: &Inner,
        outcome: std::result::Result<HandlerResult, String>,
    ) -> Outgoing {
        let max = server.config.ipc.max_message_size;
        let (metric, body) = match outcome {
            // An answer over the limit would break the connection's sending side: refuse it.
            Ok(Ok(response)) if response.len() > max => {
                let message = format!(
                    "the handler's answer of {} bytes is over the limit of {max} bytes",
                    response.len()
                );
                (ErrorKind::TooLarge, ErrorBody::new(ErrorCode::TOO_LARGE, message))
            }
            Ok(Ok(response)) => {
                return Outgoing { kind: MessageType::Response, id: self.id, payload: response }
            }
            Ok(Err(body)) => (ErrorKind::Handler, body),
            Err(panic) => (ErrorKind::Panic, server.panicked(self.kind, &panic)),
        };
        Outgoing::error(server, self.id, metric, &body)
    }

    /// What ends an in-place handler's request: what its reply kept (or an empty answer when it
    /// wrote none), its error or panic; `None` when its answer is in the ring already. An error
    /// after an answer was written is only logged: the answer stands.
    pub(super) fn replied(
        &self,
        server: &Inner,
        conn: &Connection,
        reply: ReplyState,
        outcome: std::result::Result<std::result::Result<(), ErrorBody>, String>,
    ) -> Option<Outgoing> {
        let response = |payload| Outgoing { kind: MessageType::Response, id: self.id, payload };
        match (outcome, reply) {
            (Ok(Ok(())), ReplyState::Written(n)) => {
                conn.count_sent(n);
                None
            }
            (Ok(Ok(())), ReplyState::Kept(answer)) => Some(response(Bytes::from(answer))),
            (Ok(Ok(())), ReplyState::Empty) => Some(response(Bytes::new())),
            (failed, ReplyState::Written(_)) => {
                tracing::warn!(kind = ?self.kind, id = self.id, "an in-place handler failed after it answered: {failed:?}");
                None
            }
            (Ok(Err(body)), _) => Some(Outgoing::error(server, self.id, ErrorKind::Handler, &body)),
            (Err(panic), _) => {
                let body = server.panicked(self.kind, &panic);
                Some(Outgoing::error(server, self.id, ErrorKind::Panic, &body))
            }
        }
    }

    /// Sends `out` and ends the request (in a task of its own, or when it must wait for room).
    pub(super) async fn answer(self, conn: &Connection, out: Outgoing) {
        out.send(conn).await;
        self.end(conn);
    }

    /// Records the request's time and takes it out of the in-flight table.
    pub(super) fn end(self, conn: &Connection) {
        if let Some((m, dispatched)) = &self.metrics {
            m.answered(dispatched.elapsed());
        }
        if self.spawned {
            conn.in_flight().remove(&self.id);
        }
    }
}

/// Starts an async handler: polled once right here, with the connection task's context. One
/// that completes at once (most do) gives its outcome back, with no task hop or allocation; one
/// that waits goes on in a task of its own, so that it holds up nothing. (The first poll
/// registered the connection task's waker where the request waits: a spurious wake-up of that
/// task is harmless, and the request's task registers its own at its first poll.)
pub(super) fn start_unary(
    server: &Arc<Inner>,
    conn: &Arc<Connection>,
    f: &dyn UnaryHandler,
    payload: Bytes,
    request: Request,
    cx: &mut Context<'_>,
) -> Option<(Request, Outgoing)> {
    let span = tracing::debug_span!("ipc_request", id = request.id, kind = ?request.kind);
    let origin = Origin { id: request.id, kind: request.kind, conn };
    match span.in_scope(|| f.start(payload, origin, cx)) {
        Started::Done(outcome) => {
            let out = request.outgoing(server, outcome);
            Some((request, out))
        }
        Started::Pending(future) => {
            let (server, conn_) = (server.clone(), conn.clone());
            spawn_request(conn, request, span, move |request| async move {
                let outcome = CatchUnwind::new(future).await;
                let out = request.outgoing(&server, outcome);
                request.answer(&conn_, out).await;
            });
            None
        }
    }
}

/// Runs a streaming handler in a task of its own.
pub(super) fn start_stream(
    server: &Arc<Inner>,
    conn: &Arc<Connection>,
    f: Arc<StreamFn>,
    payload: Bytes,
    request: Request,
) {
    let span = tracing::debug_span!("ipc_request", id = request.id, kind = ?request.kind);
    let (server, conn_) = (server.clone(), conn.clone());
    spawn_request(conn, request, span, move |request| run_stream(server, conn_, f, payload, request));
}

/// Runs `task` (given its request) in a task of its own, registered in the in-flight table (for
/// cancellation) under the lock the task takes to unregister, so that it cannot finish before it
/// is registered.
fn spawn_request<F, Fut>(conn: &Connection, mut request: Request, span: tracing::Span, task: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    request.spawned = true;
    let id = request.id;
    let mut in_flight = conn.in_flight();
    let handle = tokio::spawn(task(request).instrument(span));
    in_flight.insert(id, handle.abort_handle());
}

/// Runs a streaming handler and ends its stream: `StreamEnd` when it returns `Ok`, an `Error`
/// frame for its error or panic.
async fn run_stream(
    server: Arc<Inner>,
    conn: Arc<Connection>,
    f: Arc<StreamFn>,
    payload: Bytes,
    request: Request,
) {
    let window = conn.open_window(request.id).map(|w| WindowGuard { conn: &conn, id: request.id, window: w });
    let sink = ChunkSender {
        conn: Arc::downgrade(&conn),
        id: request.id,
        metrics: server.metrics.clone(),
        max: server.config.ipc.max_message_size,
        window: window.as_ref().map(|g| g.window.clone()),
    };
    let outcome = match catch_panic(|| f(payload, sink)) {
        Ok(future) => CatchUnwind::new(future).await,
        Err(panic) => Err(panic),
    };
    drop(window);
    let out = match outcome {
        Ok(Ok(())) => Outgoing { kind: MessageType::StreamEnd, id: request.id, payload: Bytes::new() },
        Ok(Err(body)) => Outgoing::error(&server, request.id, ErrorKind::Handler, &body),
        Err(panic) => {
            let body = server.panicked(request.kind, &panic);
            Outgoing::error(&server, request.id, ErrorKind::Panic, &body)
        }
    };
    request.answer(&conn, out).await;
}

/// A stream's window, registered with its connection for the client's credit until the stream is
/// over (also when its task is aborted).
struct WindowGuard<'a> {
    conn: &'a Connection,
    id: u64,
    window: Arc<StreamWindow>,
}

impl Drop for WindowGuard<'_> {
    fn drop(&mut self) {
        self.conn.close_window(self.id, &self.window);
    }
}

/// Counts a request in [`ServerStats::requests_in_flight`](super::ServerStats) (and its gauge)
/// until dropped.
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
