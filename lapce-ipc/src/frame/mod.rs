//! The frame layer: the canonical 24-byte header every message carries, with its message type,
//! flags, length, id and CRC32 (normative layout: docs/PROTOCOL.md §6).
//!
//! This module encodes and validates headers; fragmentation of large messages and the framed
//! stream build on it (issue 4).

mod header;

pub use header::{
    CanonicalHeader, FrameError, FrameFlags, MessageType, FRAME_MAGIC, FRAME_VERSION, HEADER_LEN,
};

#[cfg(test)]
mod tests;
