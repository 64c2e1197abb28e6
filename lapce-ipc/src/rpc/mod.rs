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

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::IpcError;
use crate::frame::{AsyncFramedSender, MessageType};
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

/// Starts the task that owns a connection's sending half: every frame goes through it, so a
/// cancelled request or handler can never leave half a message in the ring. It ends when every
/// sender of the queue is dropped (or the ring breaks).
fn spawn_writer(mut tx: AsyncFramedSender) -> (mpsc::Sender<Outgoing>, tokio::task::JoinHandle<()>) {
    let (queue, mut frames) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if let Err(e) = tx.send_with_id(f.kind, f.id, &f.payload).await {
                tracing::debug!(error = %e, "connection writer stops");
                break;
            }
        }
    });
    (queue, writer)
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
