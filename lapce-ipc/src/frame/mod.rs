//! The frame layer: the canonical 24-byte header every message carries, with its message type,
//! flags, length, id and CRC32 (normative layout: docs/PROTOCOL.md §6).
//!
//! [`CanonicalHeader`] encodes and validates headers; [`FramedShmStream`] puts one on every record
//! and fragments messages larger than a ring record.

mod header;
mod message;
mod stream;

pub(crate) use stream::fragments;
#[cfg(feature = "tokio")]
pub use stream::{AsyncFramedReceiver, AsyncFramedSender, AsyncFramedShmStream};
pub use stream::{FramedReceiver, FramedSender, FramedShmStream, DEFAULT_MAX_MESSAGE};

pub use header::{
    CanonicalHeader, FrameError, FrameFlags, MessageType, FRAME_MAGIC, FRAME_VERSION, HEADER_LEN,
};
pub use message::Frame;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
