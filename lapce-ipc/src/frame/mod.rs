//! The frame layer: the canonical 24-byte header every message carries, with its message type,
//! flags, length, id and CRC32 (normative layout: docs/PROTOCOL.md §6).
//!
//! [`CanonicalHeader`] encodes and validates headers; [`BlockingFramedStream`] puts one on every record
//! and fragments messages larger than a ring record.

mod header;
mod message;
mod stream;

pub(crate) use stream::fragments;
pub use stream::{BlockingFramedReceiver, BlockingFramedSender, BlockingFramedStream, DEFAULT_MAX_MESSAGE};
#[cfg(feature = "tokio")]
pub use stream::{FramedReceiver, FramedSender, FramedStream};

pub use header::{
    CanonicalHeader, FrameError, FrameFlags, MessageType, FRAME_MAGIC, FRAME_VERSION, HEADER_LEN,
};
pub use message::Frame;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
