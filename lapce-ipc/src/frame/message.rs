//! [`Frame`]: one received message of a framed stream.

use std::fmt;

use crate::frame::MessageType;

/// One message of a framed stream: its type, its id and its payload.
///
/// What [`BlockingFramedStream::recv`](crate::frame::BlockingFramedStream::recv) returns, what
/// [`recv_into`](crate::frame::BlockingFramedStream::recv_into) fills (reusing the payload's
/// capacity), what the async framed receivers yield as a `Stream` and what the async framed
/// senders take as a `Sink`.
///
/// ```
/// use lapce_ipc::frame::{Frame, MessageType};
///
/// let frame = Frame::new(MessageType::Chat, 7, b"hello".to_vec());
/// assert_eq!((frame.kind, frame.id, &frame.payload[..]), (MessageType::Chat, 7, &b"hello"[..]));
/// // Debug names the payload's length, never its bytes.
/// assert_eq!(format!("{frame:?}"), "Frame { kind: Chat, id: 7, payload_len: 5 }");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub kind: MessageType,
    /// The message id (a request's id on its answers).
    pub id: u64,
    /// The whole payload, reassembled from its fragments.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame of type `kind` with id `id`.
    pub fn new(kind: MessageType, id: u64, payload: Vec<u8>) -> Frame {
        Frame { kind, id, payload }
    }
}

/// An empty `Data` frame with id 0: a buffer for `recv_into` to fill.
impl Default for Frame {
    fn default() -> Frame {
        Frame::new(MessageType::Data, 0, Vec::new())
    }
}

/// The payload's length, not its bytes: a payload may be megabytes.
impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
