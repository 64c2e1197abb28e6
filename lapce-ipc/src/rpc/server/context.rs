//! [`RequestContext`]: what a handler registered with a context knows about its request, and
//! the signal that tells it the request was cancelled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Notify;

use super::connection::Connection;
use super::handlers::ChunkSender;
use crate::frame::MessageType;

/// What a handler knows about the request it answers (see
/// [`IpcServer::register_handler_with_context`](crate::IpcServer::register_handler_with_context)
/// and the typed registrations). Cheap to clone: clones share the cancellation signal, so work
/// the handler hands on (a `spawn_blocking` job, a thread) can watch it too.
///
/// Cancellation: when the client cancels the request (a `Cancel` frame: its timeout ran out or
/// its call was dropped) or a shutdown's grace period runs out, the server stops the handler's
/// future. The signal is raised as that future is dropped, so work that outlives it (a task or
/// thread it started with a clone of the context) sees [`is_cancelled`](Self::is_cancelled)
/// turn true and [`cancelled`](Self::cancelled) complete, and can stop. A request that
/// completes is never marked cancelled. A client that hangs up sends no `Cancel`: its running
/// requests finish (their answers go nowhere).
#[derive(Clone)]
pub struct RequestContext {
    inner: Arc<Shared>,
}

struct Shared {
    id: u64,
    kind: MessageType,
    peer_pid: u32,
    cancelled: AtomicBool,
    cancel: Notify,
}

impl RequestContext {
    /// The context of request `id` of type `kind` on `conn`.
    pub(super) fn new(id: u64, kind: MessageType, conn: &Connection) -> RequestContext {
        RequestContext::with_pid(id, kind, conn.peer_pid)
    }

    /// The context of the streamed request of type `kind` that `sink` answers.
    pub(crate) fn of_stream(kind: MessageType, sink: &ChunkSender) -> RequestContext {
        let pid = sink.conn.upgrade().map_or(0, |c| c.peer_pid);
        RequestContext::with_pid(sink.id, kind, pid)
    }

    fn with_pid(id: u64, kind: MessageType, peer_pid: u32) -> RequestContext {
        let inner = Shared { id, kind, peer_pid, cancelled: AtomicBool::new(false), cancel: Notify::new() };
        RequestContext { inner: Arc::new(inner) }
    }

    /// The request's id on its connection (chosen by the client).
    pub fn request_id(&self) -> u64 {
        self.inner.id
    }

    /// The request's message type.
    pub fn message_type(&self) -> MessageType {
        self.inner.kind
    }

    /// The client's process id, when the platform reports it for the connection (Linux's
    /// `SO_PEERCRED`, macOS's `LOCAL_PEERPID`, Windows' named pipe client id).
    pub fn peer_pid(&self) -> Option<u32> {
        (self.inner.peer_pid != 0).then_some(self.inner.peer_pid)
    }

    /// Whether the request was cancelled (see the type's documentation).
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Completes when the request is cancelled (at once if it was already).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.cancel.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a cancel between the two is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        self.inner.cancel.notify_waiters();
    }

    /// `future` (a handler's), raising the cancellation signal if it is dropped before it
    /// completes.
    pub(crate) fn watch<F: Future>(&self, future: F) -> Watched<F> {
        Watched { future, ctx: self.clone(), done: false }
    }
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.inner.id)
            .field("message_type", &self.inner.kind)
            .field("peer_pid", &self.peer_pid())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A handler's future that raises its request's cancellation signal when dropped unfinished.
pub(crate) struct Watched<F> {
    future: F,
    ctx: RequestContext,
    done: bool,
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let out = Pin::new(&mut this.future).poll(cx);
        this.done = out.is_ready();
        out
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        if !self.done {
            self.ctx.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RequestContext {
        RequestContext::with_pid(7, MessageType::app(1), 0)
    }

    #[tokio::test]
    async fn a_dropped_future_cancels_and_a_finished_one_does_not() {
        let ctx = context();
        assert_eq!(ctx.watch(Box::pin(async { 1 })).await, 1);
        assert!(!ctx.is_cancelled());

        let waiter = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.cancelled().await }
        });
        let pending = ctx.watch(Box::pin(std::future::pending::<()>()));
        drop(pending);
        assert!(ctx.is_cancelled());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(ctx.peer_pid(), None);
        assert_eq!(ctx.request_id(), 7);
    }
}
