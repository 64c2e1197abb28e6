//! The request/response layer applications use: [`IpcServer`] (handlers per message type,
//! streaming, connection limit, graceful shutdown) and [`IpcClient`] (concurrent requests
//! correlated by id, streams, timeouts, cancellation, automatic reconnection), over framed
//! shared-memory streams.
//!
//! Conventions on the wire (normative: docs/PROTOCOL.md §7):
//! - Right after the handshake the server sends one frame: `Control`, id 0, payload `ready` when
//!   it takes the connection; `Error`, id 0, an [`ErrorBody`] as JSON when it refuses it (at its
//!   connection limit, shutting down), and then it closes.
//! - A request is a frame of any type that has a handler; its id, chosen by the client and unique
//!   among its requests in flight on that connection, correlates the answer: one `Response`
//!   (unary handlers), or `StreamChunk`s then one `StreamEnd` (streaming handlers), or one
//!   `Error` carrying an [`ErrorBody`] as JSON.
//! - `Cancel` with a request's id stops that request; the server answers it with an `Error`
//!   whose code is [`ErrorCode::CANCELLED`] if it was still running. `Heartbeat` is echoed.
//! - A frame the server cannot accept (bad CRC, over the size limit) is answered with an `Error`
//!   with id 0, and the connection is closed: the framed stream cannot resynchronise.

mod client;
mod server;
mod unwind;

pub use client::{BlockingIpcClient, IpcClient, ResponseStream};
pub use server::{ChunkSender, HandlerResult, IpcServer, ServerStats};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::error::IpcError;
use crate::frame::{AsyncFramedSender, MessageType};
use crate::metrics::{Metrics, WRITE_SAMPLE};
use crate::protocol::{Codec, ErrorBody, ErrorCode};

/// Payload of the server's greeting frame (`Control`, id 0).
const READY: &[u8] = b"ready";

/// Frames queued for a connection's writer task.
const OUTGOING_QUEUE: usize = 256;

/// One frame to send.
struct Outgoing {
    kind: MessageType,
    id: u64,
    payload: Bytes,
}

/// The sending half of a connection, owned by its writer task (see [`spawn_writer`]).
struct Writer {
    tx: tokio::sync::Mutex<AsyncFramedSender>,
    /// Set by the writer task when it gave the ring's pages back and stopped looking at the
    /// clock; the next direct write clears it and wakes the task through `resumed`.
    trimmed: AtomicBool,
    resumed: Notify,
    /// Frames counted in before they enter the queue and counted out by the writer once they are
    /// written whole: while it is not 0, a frame sent earlier may still be on its way, and
    /// [`FrameSink`] does not write directly (see there).
    queued: AtomicUsize,
    /// Where sampled write durations go (the server's metrics; `None` for clients and with
    /// metrics off).
    metrics: Option<Arc<Metrics>>,
    /// Frames this connection began to write (only counted with metrics on), for sampling.
    frames: AtomicU64,
}

impl Writer {
    /// Counts a frame about to be written (the caller holds `tx`) and starts timing it if it is
    /// one of the sampled ones ([`WRITE_SAMPLE`]).
    fn start_frame(&self) -> Option<std::time::Instant> {
        self.metrics.as_ref()?;
        // Only the holder of `tx` writes it: a plain store, no read-modify-write.
        let n = self.frames.load(Ordering::Relaxed) + 1;
        self.frames.store(n, Ordering::Relaxed);
        n.is_multiple_of(WRITE_SAMPLE).then(std::time::Instant::now)
    }

    /// Records a sampled frame's write duration.
    fn frame_written(&self, started: Option<std::time::Instant>) {
        if let (Some(started), Some(m)) = (started, &self.metrics) {
            m.write_duration.observe_since(started);
        }
    }
}

/// Where everything sent on a connection goes: written straight into the ring when that is safe
/// (no task hop), else queued for the connection's writer task.
///
/// Guarantees, the same as with the queue alone:
/// - Nothing leaves half a message in the ring when a sender is cancelled: the direct write is
///   synchronous (one record, no await point), and a queued frame is written by the writer task,
///   which nobody cancels while the connection is in use.
/// - If sending frame A happens before sending frame B (same task, or B's sender learnt that A
///   was sent, e.g. a request and then its `Cancel`, chunks and then `StreamEnd`), A reaches the
///   ring first. If both are queued, the queue keeps their order. If A was written directly, it
///   was in the ring before its send returned. If A was queued and B would go directly: A was
///   counted in `queued` before it entered the queue, hence before B's send began, and it is
///   counted out only after the writer wrote it whole, holding the sender's lock; B writes only
///   while holding that lock and seeing `queued == 0`, so A is already in the ring (every count
///   out is of a frame counted in earlier, so A's own count keeps `queued` above 0 until A is
///   out). Otherwise B is queued, after A. Frames of unrelated requests may be reordered, which
///   the protocol allows (answers are matched by id).
/// - A writer that stopped midway (ring failure, task aborted) never counts its frame out, so
///   nothing is written directly after it; and the sending half lives with the writer task
///   (only weak references here), so it is closed when that task ends, as before.
#[derive(Clone)]
struct FrameSink {
    queue: mpsc::Sender<Outgoing>,
    writer: Weak<Writer>,
}

impl FrameSink {
    /// Sends a frame: directly when possible, else through the queue, waiting for room in it.
    /// `Err` when the connection's writer is gone (the connection is closing).
    async fn send(&self, kind: MessageType, id: u64, payload: Bytes) -> Result<(), ()> {
        if self.write_now(kind, id, &payload) {
            return Ok(());
        }
        let count = self.count_in();
        self.queue.send(Outgoing { kind, id, payload }).await.map_err(|_| ())?;
        count.hand_over();
        Ok(())
    }

    /// Queues a frame for the writer task, never writing it directly (for stream chunks: a
    /// producer of many chunks is faster with the writer task writing them in parallel, and a
    /// hop matters little to a stream). Same order guarantees as [`send`](Self::send).
    async fn send_queued(&self, kind: MessageType, id: u64, payload: Bytes) -> Result<(), ()> {
        let count = self.count_in();
        self.queue.send(Outgoing { kind, id, payload }).await.map_err(|_| ())?;
        count.hand_over();
        Ok(())
    }

    /// Like [`send`](Self::send) without ever waiting: `Err` when the queue is full or closed.
    fn try_send(&self, kind: MessageType, id: u64, payload: Bytes) -> Result<(), ()> {
        if self.write_now(kind, id, &payload) {
            return Ok(());
        }
        let count = self.count_in();
        self.queue.try_send(Outgoing { kind, id, payload }).map_err(|_| ())?;
        count.hand_over();
        Ok(())
    }

    /// Writes a one-record frame into the ring right away if nobody else is writing, nothing
    /// sent earlier is still queued, and the ring has room; `false` (nothing written) otherwise,
    /// including on errors, which the writer task then meets and reports as before.
    fn write_now(&self, kind: MessageType, id: u64, payload: &[u8]) -> bool {
        let Some(writer) = self.writer.upgrade() else { return false };
        let Ok(mut tx) = writer.tx.try_lock() else { return false };
        if writer.queued.load(Ordering::Acquire) != 0 {
            return false;
        }
        let started = writer.start_frame();
        let written = matches!(tx.try_send_with_id(kind, id, payload), Ok(true));
        if written {
            writer.frame_written(started);
        }
        if written && writer.trimmed.load(Ordering::Relaxed) && writer.trimmed.swap(false, Ordering::AcqRel) {
            writer.resumed.notify_one();
        }
        written
    }

    /// Counts a frame in before it is queued (see [`Writer::queued`]).
    fn count_in(&self) -> QueuedCount {
        let writer = self.writer.upgrade();
        if let Some(w) = &writer {
            w.queued.fetch_add(1, Ordering::AcqRel);
        }
        QueuedCount(writer)
    }
}

/// A frame counted in [`Writer::queued`]: counted out again if it never entered the queue
/// (send failed or cancelled); once it is in, the writer counts it out.
struct QueuedCount(Option<Arc<Writer>>);

impl QueuedCount {
    fn hand_over(mut self) {
        self.0 = None;
    }
}

impl Drop for QueuedCount {
    fn drop(&mut self) {
        if let Some(w) = &self.0 {
            w.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Starts the task that owns a connection's sending half. Frames that cannot be written
/// directly (see [`FrameSink`]) go through it, so a cancelled request or handler can never leave
/// half a message in the ring. It ends when every sender of the queue is dropped (or the ring
/// breaks), and the sending half with it.
///
/// Idle trim (`trim_after`, see [`IpcConfig::idle_trim`](crate::IpcConfig::idle_trim)): when no
/// frame was queued for that long, the task gives the outgoing ring's pages back to the OS if
/// the peer has read everything and nothing was written since its last look; once it has, it
/// stops waking up until something is sent again, so an idle connection costs no CPU.
fn spawn_writer(
    tx: AsyncFramedSender,
    trim_after: Option<Duration>,
    metrics: Option<Arc<Metrics>>,
) -> (FrameSink, tokio::task::JoinHandle<()>) {
    let (queue, mut frames) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    let writer = Arc::new(Writer {
        tx: tokio::sync::Mutex::new(tx),
        queued: AtomicUsize::new(0),
        trimmed: AtomicBool::new(false),
        resumed: Notify::new(),
        metrics: metrics.clone(),
        frames: AtomicU64::new(0),
    });
    let sink = FrameSink { queue, writer: Arc::downgrade(&writer) };
    let task = tokio::spawn(async move {
        loop {
            let next = match trim_after {
                None => frames.recv().await,
                Some(after) => match tokio::time::timeout(after, frames.recv()).await {
                    Ok(next) => next,
                    Err(_quiet) => {
                        if trim_idle_ring(&writer) {
                            // Given back: sleep without a timer until the next frame, queued or
                            // written directly.
                            tokio::select! {
                                next = frames.recv() => {
                                    writer.trimmed.store(false, Ordering::Relaxed);
                                    next
                                }
                                _ = writer.resumed.notified() => continue,
                            }
                        } else {
                            continue;
                        }
                    }
                },
            };
            let Some(mut f) = next else { break };
            let mut tx = writer.tx.lock().await;
            // Whatever else is queued goes out under the same lock.
            loop {
                let started = writer.start_frame();
                if let Err(e) = write_frame(&mut tx, &f, metrics.as_deref()).await {
                    // Not counted out: nothing is written directly after a failed frame.
                    tracing::debug!(error = %e, "connection writer stops");
                    return;
                }
                writer.frame_written(started);
                writer.queued.fetch_sub(1, Ordering::AcqRel);
                match frames.try_recv() {
                    Ok(next) => f = next,
                    Err(_) => break,
                }
            }
        }
    });
    (sink, task)
}

/// Writes one frame, waiting for room. A frame of one record that finds the ring full is
/// backpressure (the peer reads slower than we write): counted, with how long it waited. (The
/// waits between the records of a fragmented message are not: they are how it is sent.)
async fn write_frame(
    tx: &mut AsyncFramedSender,
    f: &Outgoing,
    metrics: Option<&Metrics>,
) -> crate::Result<()> {
    if tx.try_send_with_id(f.kind, f.id, &f.payload)? {
        return Ok(());
    }
    let full = tx.fits_one_record(f.payload.len());
    let waited_from = std::time::Instant::now();
    tx.send_with_id(f.kind, f.id, &f.payload).await?;
    if let (true, Some(m)) = (full, metrics) {
        m.backpressure_events.inc();
        m.backpressure_wait.observe(waited_from.elapsed());
    }
    Ok(())
}

/// One idle-trim attempt of a writer task: true when the outgoing ring's pages are given back
/// (now or earlier, with nothing written since); then `trimmed` is set for the next direct
/// write to clear.
fn trim_idle_ring(writer: &Writer) -> bool {
    let Ok(mut tx) = writer.tx.try_lock() else { return false };
    // Set before looking, under the sender's lock: a direct write after this point (it takes
    // the same lock) sees the flag and wakes the task.
    writer.trimmed.store(true, Ordering::Release);
    match tx.discard_if_empty() {
        Ok(true) => true,
        _ => {
            writer.trimmed.store(false, Ordering::Relaxed);
            false
        }
    }
}

/// The most capacity a connection's receive buffer keeps between messages. It grows to the
/// largest message received; one 10 MiB file would otherwise stay allocated, per connection,
/// for as long as the connection lives.
const RETAINED_RECEIVE_BUFFER: usize = 64 * 1024;

/// Lets go of a receive buffer that a large message grew past [`RETAINED_RECEIVE_BUFFER`] (its
/// contents have been used): the next large message allocates again, small ones reuse it.
fn release_large_buffer(buf: &mut Vec<u8>) {
    if buf.capacity() > RETAINED_RECEIVE_BUFFER {
        *buf = Vec::new();
    }
}

/// An error answer as it travels: the body as JSON.
fn error_payload(body: &ErrorBody) -> Bytes {
    match body.to_json() {
        Ok(json) => Bytes::from(json),
        Err(_) => Bytes::from_static(br#"{"code":500,"message":"error body could not be encoded"}"#),
    }
}

/// The body of an `Error` frame; a body that does not decode is reported as such.
fn decode_error(payload: &[u8]) -> ErrorBody {
    ErrorBody::from_json(payload).unwrap_or_else(|e| {
        ErrorBody::new(ErrorCode::INTERNAL, format!("undecodable error answer from the server: {e}"))
    })
}

/// What a client reports for an `Error` answer to a request of type `kind`.
fn answer_error(kind: MessageType, body: ErrorBody) -> IpcError {
    if body.code == ErrorCode::UNKNOWN_TYPE {
        IpcError::UnknownMessageType(kind)
    } else if body.code == ErrorCode::HANDLER_PANICKED {
        IpcError::HandlerPanic(body.message)
    } else if body.code == ErrorCode::CANCELLED {
        IpcError::Cancelled
    } else {
        IpcError::Remote(body)
    }
}
