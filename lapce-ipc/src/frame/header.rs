//! [`CanonicalHeader`]: encode, decode and validate without allocating.

/// Magic number, little-endian on the wire (bytes `43 50 41 4C`); reads "LAPC" as a hex literal.
pub const FRAME_MAGIC: u32 = 0x4C41_5043;
/// The header version this build writes and accepts.
pub const FRAME_VERSION: u8 = 1;
/// Size of an encoded header in bytes.
pub const HEADER_LEN: usize = 24;

/// What a message is. Values this build does not know are kept as [`MessageType::Unknown`], so
/// that a newer peer's message can be answered with an "unknown type" error instead of a
/// disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Liveness probe.
    Heartbeat,
    /// Application data.
    Data,
    /// Control message.
    Control,
    /// Response to a request.
    Response,
    /// Error answer; its payload describes the error.
    Error,
    /// One chunk of a streamed response (AI tokens).
    StreamChunk,
    /// End of a streamed response.
    StreamEnd,
    /// Flow control of streamed responses: the client's stream window (id 0) or the bytes of a
    /// stream it consumed (the stream's id); see docs/PROTOCOL.md §7.
    StreamWindow,
    /// AI request: completion.
    Complete,
    /// AI request: chat.
    Chat,
    /// AI request: cancel a request in flight.
    Cancel,
    /// An application's own method `n` (0 to [`MessageType::APP_MAX`]): wire value
    /// [`MessageType::APP_BASE`]` + n`. The library gives these no meaning of its own: a server
    /// routes them to the handlers registered for them. Build them with [`MessageType::app`],
    /// which checks the range (only the low 15 bits of `n` reach the wire).
    App(u16),
    /// A value this build does not know, preserved as received.
    Unknown(u16),
}

impl MessageType {
    /// The first wire value of the application range (`0x8000`): values from here to `0xFFFF`
    /// are [`MessageType::App`] methods, never used by the library itself.
    pub const APP_BASE: u16 = 0x8000;
    /// The largest application method number (`0x7FFF`).
    pub const APP_MAX: u16 = u16::MAX - Self::APP_BASE;

    /// The application's method `n`. Panics when `n` is over [`MessageType::APP_MAX`]
    /// (at compile time in a `const`).
    ///
    /// ```
    /// use lapce_ipc::frame::MessageType;
    ///
    /// const SEARCH: MessageType = MessageType::app(7);
    /// assert_eq!(SEARCH.to_u16(), 0x8007);
    /// assert_eq!(MessageType::from_u16(0x8007), SEARCH);
    /// assert_eq!(SEARCH.to_string(), "App(7)");
    /// ```
    pub const fn app(n: u16) -> MessageType {
        assert!(n <= Self::APP_MAX, "application method numbers go from 0 to 0x7FFF");
        MessageType::App(n)
    }

    /// The wire value (docs/PROTOCOL.md §6; 0 is reserved).
    pub fn to_u16(self) -> u16 {
        match self {
            MessageType::Heartbeat => 1,
            MessageType::Data => 2,
            MessageType::Control => 3,
            MessageType::Response => 4,
            MessageType::Error => 5,
            MessageType::StreamChunk => 6,
            MessageType::StreamEnd => 7,
            MessageType::StreamWindow => 8,
            MessageType::Complete => 0x100,
            MessageType::Chat => 0x101,
            MessageType::Cancel => 0x102,
            MessageType::App(n) => Self::APP_BASE | (n & Self::APP_MAX),
            MessageType::Unknown(v) => v,
        }
    }

    /// The type of a wire value; unknown values are preserved.
    pub fn from_u16(v: u16) -> MessageType {
        match v {
            1 => MessageType::Heartbeat,
            2 => MessageType::Data,
            3 => MessageType::Control,
            4 => MessageType::Response,
            5 => MessageType::Error,
            6 => MessageType::StreamChunk,
            7 => MessageType::StreamEnd,
            8 => MessageType::StreamWindow,
            0x100 => MessageType::Complete,
            0x101 => MessageType::Chat,
            0x102 => MessageType::Cancel,
            app @ Self::APP_BASE.. => MessageType::App(app - Self::APP_BASE),
            other => MessageType::Unknown(other),
        }
    }
}

/// The variant's name, an application method as `App(n)` and an unknown value in hex
/// (`Unknown(0x0777)`).
impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageType::App(n) => write!(f, "App({n})"),
            MessageType::Unknown(v) => write!(f, "Unknown(0x{v:04x})"),
            other => std::fmt::Debug::fmt(other, f),
        }
    }
}

/// Header flags (byte 5). Bits not defined here are refused on decode: a peer that sets them
/// speaks a newer format and must bump the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// The CRC field holds the CRC32 of the payload (otherwise it is 0 and not checked).
    pub const CRC: FrameFlags = FrameFlags(1);
    /// More fragments of this message follow.
    pub const MORE_FRAGMENTS: FrameFlags = FrameFlags(2);
    /// Last message of a stream.
    pub const END_OF_STREAM: FrameFlags = FrameFlags(4);
    /// The payload is an error body.
    pub const ERROR: FrameFlags = FrameFlags(8);
    const KNOWN: u8 = 0b1111;

    /// No flags.
    pub const fn empty() -> FrameFlags {
        FrameFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Flags from raw bits; `None` if a bit this version does not define is set.
    pub const fn from_bits(bits: u8) -> Option<FrameFlags> {
        if bits & !Self::KNOWN == 0 {
            Some(FrameFlags(bits))
        } else {
            None
        }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: FrameFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    pub const fn with(self, other: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | other.0)
    }
}

/// Why a header or payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than a header (or than the header announces).
    #[error("truncated frame: {got} of {needed} bytes")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Not a lapce-ipc frame.
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    /// A header version this build does not speak.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u8),
    /// Flag bits this version does not define.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// The payload is longer than the configured maximum.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// Announced length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// A fragment of another message arrived before the current one was complete.
    #[error("fragment of message {got} inside message {expected}")]
    Interleaved {
        /// Id of the message being reassembled.
        expected: u64,
        /// Id of the fragment that arrived.
        got: u64,
    },
    /// The payload does not match its CRC.
    #[error("payload CRC {actual:#010x} does not match the header's {expected:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        expected: u32,
        /// CRC of the payload received.
        actual: u32,
    },
    /// A `StreamWindow` message that breaks its rules (docs/PROTOCOL.md §7): a payload that is
    /// not 4 bytes, a window of 0, or more bytes credited back than the stream has outstanding.
    #[error("bad stream window message: {0}")]
    BadStreamWindow(&'static str),
}

/// The canonical 24-byte little-endian header:
///
/// | bytes | field |
/// |---|---|
/// | 0..4 | magic [`FRAME_MAGIC`] |
/// | 4 | version [`FRAME_VERSION`] |
/// | 5 | [`FrameFlags`] |
/// | 6..8 | [`MessageType`] (u16) |
/// | 8..12 | payload length (u32) |
/// | 12..20 | message id (u64) |
/// | 20..24 | CRC32 of the payload (0 unless [`FrameFlags::CRC`]) |
///
/// ```
/// use lapce_ipc::frame::{CanonicalHeader, MessageType};
///
/// let payload = b"hello";
/// let header = CanonicalHeader::for_payload(MessageType::Data, 7, payload, true);
/// let bytes = header.encode();
/// let decoded = CanonicalHeader::decode(&bytes, 10 << 20)?;
/// assert_eq!(decoded, header);
/// decoded.verify(payload)?;
/// assert!(decoded.verify(b"jello").is_err());
/// # Ok::<(), lapce_ipc::frame::FrameError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonicalHeader {
    /// Flags.
    pub flags: FrameFlags,
    /// Message type.
    pub msg_type: MessageType,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Message id (correlates requests and responses, and the fragments of one message).
    pub message_id: u64,
    /// CRC32 of the payload, or 0 without [`FrameFlags::CRC`].
    pub crc32: u32,
}

impl CanonicalHeader {
    /// The header for `payload`, with its CRC when `with_crc`.
    ///
    /// # Panics
    /// If `payload` is longer than `u32::MAX` bytes (callers enforce a far smaller maximum).
    pub fn for_payload(msg_type: MessageType, message_id: u64, payload: &[u8], with_crc: bool) -> Self {
        let payload_len = u32::try_from(payload.len()).expect("payload longer than u32::MAX");
        let (flags, crc32) =
            if with_crc { (FrameFlags::CRC, crc32fast::hash(payload)) } else { (FrameFlags::empty(), 0) };
        CanonicalHeader { flags, msg_type, payload_len, message_id, crc32 }
    }

    /// The 24 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        b[4] = FRAME_VERSION;
        b[5] = self.flags.bits();
        b[6..8].copy_from_slice(&self.msg_type.to_u16().to_le_bytes());
        b[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        b[12..20].copy_from_slice(&self.message_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.crc32.to_le_bytes());
        b
    }

    /// Decodes and validates the header at the start of `bytes`; payloads longer than
    /// `max_payload` are refused before anything else is read.
    pub fn decode(bytes: &[u8], max_payload: u32) -> Result<CanonicalHeader, FrameError> {
        let Some(b) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::Truncated { needed: HEADER_LEN, got: bytes.len() });
        };
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if b[4] != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion(b[4]));
        }
        let Some(flags) = FrameFlags::from_bits(b[5]) else {
            return Err(FrameError::UnknownFlags(b[5]));
        };
        let payload_len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if payload_len > max_payload {
            return Err(FrameError::TooLong { len: payload_len, max: max_payload });
        }
        Ok(CanonicalHeader {
            flags,
            msg_type: MessageType::from_u16(u16::from_le_bytes([b[6], b[7]])),
            payload_len,
            message_id: u64::from_le_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]]),
            crc32: u32::from_le_bytes([b[20], b[21], b[22], b[23]]),
        })
    }

    /// Checks `payload` against the header: its length, and its CRC when the header has one.
    pub fn verify(&self, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() != self.payload_len as usize {
            return Err(FrameError::Truncated { needed: self.payload_len as usize, got: payload.len() });
        }
        if self.flags.contains(FrameFlags::CRC) {
            let actual = crc32fast::hash(payload);
            if actual != self.crc32 {
                return Err(FrameError::CrcMismatch { expected: self.crc32, actual });
            }
        }
        Ok(())
    }
}
