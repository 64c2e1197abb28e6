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
//! - Stream windows: a client may announce a window for its streams (`StreamWindow`, id 0,
//!   right after the greeting; the server acknowledges it in kind). The server then holds each
//!   stream's chunks not yet credited back (each its length plus 128) below it, and the client
//!   credits back what its reader consumed (`StreamWindow` with the stream's id); see
//!   [`window`].
//! - Notifications: the server may push a frame of an application type with id 0 at any time
//!   ([`Peer::notify`]); a client keeps them only once it listens ([`notify`]).
//! - `Cancel` with a request's id stops that request; the server answers it with an `Error`
//!   whose code is [`ErrorCode::CANCELLED`] if it was still running. `Heartbeat` is echoed.
//! - A frame the server cannot accept (bad CRC, over the size limit) is answered with an `Error`
//!   with id 0, and the connection is closed: the framed stream cannot resynchronise.
//!
//! - An application's own request types are `MessageType::App(n)` (wire values `0x8000 + n`,
//!   see [`MessageType::app`]); typed requests and answers ([`typed`]) encode their values with
//!   an [`Encoding`](crate::messages::Encoding) both ends name.
//!
//! How a request travels (see the modules for the rules each keeps):
//! - the caller writes it straight into the ring ([`outbound`]: no writer task, no queue);
//! - the server's connection task reads it, runs a quick handler right there and writes the
//!   answer straight back ([`server`]); a handler that waits goes on in a task of its own;
//! - the caller reads the answer itself ([`calls`]: no reader task), handing answers it finds for
//!   other callers on to them.

mod blocking;
mod blocking_stream;
mod calls;
mod client;
mod dispatch;
mod inbound;
mod listen;
mod notify;
mod outbound;
mod response_stream;
mod server;
#[cfg(feature = "tower")]
mod service;
mod typed;
mod unwind;
mod window;

pub use blocking::BlockingIpcClient;
pub use blocking_stream::{BlockingResponseStream, StreamCanceller};
pub use client::IpcClient;
pub use notify::{Notification, NotificationReceiver, NOTIFICATION_QUEUE_BYTES, NOTIFICATION_QUEUE_LEN};
pub use response_stream::ResponseStream;
pub use server::{ChunkSender, HandlerResult, IpcServer, Peer, Reply, RequestContext, ServerStats};

use crate::error::IpcError;
use crate::frame::MessageType;
use crate::messages::{Codec, ErrorBody, ErrorCode};

/// Payload of the server's greeting frame (`Control`, id 0).
const READY: &[u8] = b"ready";

/// An error answer as it travels: the body as JSON.
fn error_payload(body: &ErrorBody) -> Vec<u8> {
    body.to_json().unwrap_or_else(|_| br#"{"code":500,"message":"error body could not be encoded"}"#.to_vec())
}

/// What the server's greeting (the first message of a connection) says: `ready`, or why it
/// refuses the connection.
fn greeted(msg: &inbound::Message<'_>) -> Result<crate::Result<()>, crate::frame::FrameError> {
    Ok(match (msg.kind, msg.id) {
        (MessageType::Control, 0) if msg.in_place()? == READY => Ok(()),
        (MessageType::Error, 0) => Err(IpcError::ServerRefused(decode_error(msg.in_place()?).message)),
        (kind, id) => {
            Err(IpcError::Handshake(format!("unexpected greeting from the server: {kind:?} id {id}")))
        }
    })
}

/// Refuses a request payload of `len` bytes over the configured largest message `max`, before
/// anything is sent.
fn check_size(len: usize, max: usize) -> crate::Result<()> {
    if len > max {
        return Err(IpcError::MessageTooLarge { len, max });
    }
    Ok(())
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
