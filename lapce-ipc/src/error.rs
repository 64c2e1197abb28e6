//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `lapce-ipc`.
///
/// Variants are meant to be matched: a caller can tell a peer that went away
/// ([`IpcError::PeerGone`]) from a peer that broke the protocol
/// ([`IpcError::Corrupted`]) or a full ring ([`IpcError::WouldBlock`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// The listener could not bind its control socket.
    #[error("cannot bind {path}: {source}")]
    Bind {
        /// The socket path that was being bound.
        path: PathBuf,
        /// The underlying OS error.
        source: io::Error,
    },
    /// The client could not reach a listener.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path that was being connected to.
        path: PathBuf,
        /// The underlying OS error.
        source: io::Error,
    },
    /// The runtime directory or socket path is not safe to use.
    #[error("insecure path {path}: {reason}")]
    InsecurePath {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer runs as another user and was refused.
    #[error("peer running as {peer_user} refused (this process runs as {own_user})")]
    PeerRefused {
        /// The peer's user as the OS reports it: `uid N` (SO_PEERCRED / getpeereid) or a
        /// Windows SID.
        peer_user: String,
        /// This process's user, in the same form.
        own_user: String,
    },
    /// The two sides speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, peer speaks {theirs}")]
    VersionMismatch {
        /// Our protocol version.
        ours: u32,
        /// The peer's protocol version.
        theirs: u32,
    },
    /// The handshake failed for a reason other than the version.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer process closed the connection or died.
    #[error("peer gone")]
    PeerGone,
    /// The operation did not complete before its deadline.
    #[error("timed out")]
    Timeout,
    /// A non-blocking operation could not proceed (ring full or empty).
    #[error("operation would block")]
    WouldBlock,
    /// The message is larger than the ring's record limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The size that was asked for.
        len: usize,
        /// The largest size allowed.
        max: usize,
    },
    /// The caller's buffer cannot hold the next message (the message stays queued).
    #[error("receive buffer of {buf} bytes too small for a {needed}-byte message")]
    BufferTooSmall {
        /// Size of the next message.
        needed: usize,
        /// Size of the buffer the caller offered.
        buf: usize,
    },
    /// The shared memory violates the ring protocol: the peer is buggy or hostile.
    /// The connection cannot be used any more; other connections are unaffected.
    #[error("shared memory corrupted: {0}")]
    Corrupted(String),
    /// A frame header or payload was refused (see [`FrameError`](crate::frame::FrameError)).
    #[error("bad frame: {0}")]
    Frame(#[from] crate::frame::FrameError),
    /// The server has no handler for the request's message type (it answered with an error and
    /// the connection goes on).
    #[error("the server has no handler for message type {0:?}")]
    UnknownMessageType(crate::frame::MessageType),
    /// The server's handler panicked; the server logged the panic and goes on serving.
    #[error("the server's handler panicked: {0}")]
    HandlerPanic(String),
    /// The server answered the request with an error (a handler's own error, or the server's:
    /// too large, bad request, shutting down…).
    #[cfg(feature = "ai-types")]
    #[error("server error {}: {}", .0.code, .0.message)]
    Remote(crate::messages::ErrorBody),
    /// The request was cancelled before its answer arrived.
    #[error("request cancelled")]
    Cancelled,
    /// The server refused the connection (for example it is at its connection limit).
    #[error("server refused the connection: {0}")]
    ServerRefused(String),
    /// A protocol payload (see [`messages`](crate::messages)) could not be decoded: invalid JSON
    /// or a field of the wrong shape, or an rkyv archive that failed validation (which includes
    /// bytes not aligned for zero-copy access).
    #[error("cannot decode {what} from {format}: {reason}")]
    Decode {
        /// The encoding: `"json"` or `"rkyv"`.
        format: &'static str,
        /// The type that was being decoded, e.g. `"AIRequest"`.
        what: &'static str,
        /// What was wrong, as the decoder reported it.
        reason: String,
    },
    /// A protocol value could not be encoded (for example a string longer than an rkyv archive
    /// can hold).
    #[error("cannot encode {what} as {format}: {reason}")]
    Encode {
        /// The encoding: `"json"` or `"rkyv"`.
        format: &'static str,
        /// The type that was being encoded.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A size or option is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A configuration ([`IpcConfig`](crate::IpcConfig)) could not be read or has a bad value.
    #[error("config {origin}: {}{reason}", .key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Config {
        /// Where the configuration came from: the file name, or `(in memory)`.
        origin: String,
        /// The offending key, e.g. `ipc.ring_size`, when one is to blame.
        key: Option<String>,
        /// What is wrong, with the line and column in the file where known.
        reason: String,
    },
    /// Any other operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `Result` with [`IpcError`].
pub type Result<T, E = IpcError> = std::result::Result<T, E>;

/// I/O errors of a handshake: timeouts and hang-ups get their own variants.
pub(crate) fn handshake_io(e: io::Error) -> IpcError {
    use io::ErrorKind::*;
    match e.kind() {
        WouldBlock | TimedOut => IpcError::Timeout,
        UnexpectedEof | ConnectionReset | BrokenPipe => IpcError::PeerGone,
        _ => IpcError::Io(e),
    }
}

/// The error a handler answers with when it meets `e`, so that `?` on a `Result<_, IpcError>`
/// works in handlers. Codes ([`ErrorCode`](crate::messages::ErrorCode)): what the client sent
/// was wrong (`Decode`, `InvalidArgument`, `Frame`) is `BAD_REQUEST`; `Timeout` is `TIMEOUT`;
/// `MessageTooLarge` is `TOO_LARGE`; `Cancelled` is `CANCELLED`; a service the handler depends
/// on that is gone or refuses (`PeerGone`, `Connect`, `ServerRefused`) is `UNAVAILABLE`; an
/// error answer from another server (`Remote`) is passed on as it came; anything else is
/// `INTERNAL`. The message is the error's text.
///
/// ```
/// use lapce_ipc::messages::{ErrorBody, ErrorCode};
/// use lapce_ipc::IpcError;
///
/// fn parse(text: &str) -> Result<u32, ErrorBody> {
///     let n = text.parse::<u32>().map_err(|e| IpcError::InvalidArgument(e.to_string()))?;
///     Ok(n)
/// }
/// assert_eq!(parse("12"), Ok(12));
/// assert_eq!(parse("twelve").unwrap_err().code, ErrorCode::BAD_REQUEST);
/// ```
#[cfg(feature = "ai-types")]
impl From<IpcError> for crate::messages::ErrorBody {
    fn from(e: IpcError) -> crate::messages::ErrorBody {
        use crate::messages::{ErrorBody, ErrorCode};
        let e = match e {
            IpcError::Remote(body) => return body,
            other => other,
        };
        let code = match &e {
            IpcError::Decode { .. } | IpcError::InvalidArgument(_) | IpcError::Frame(_) => {
                ErrorCode::BAD_REQUEST
            }
            IpcError::Timeout => ErrorCode::TIMEOUT,
            IpcError::MessageTooLarge { .. } => ErrorCode::TOO_LARGE,
            IpcError::Cancelled => ErrorCode::CANCELLED,
            IpcError::PeerGone | IpcError::Connect { .. } | IpcError::ServerRefused(_) => {
                ErrorCode::UNAVAILABLE
            }
            _ => ErrorCode::INTERNAL,
        };
        ErrorBody::new(code, e.to_string())
    }
}

/// A JSON error met in a handler: `BAD_REQUEST` for text that is not JSON or not of the
/// expected shape, `INTERNAL` for an I/O error under the parser.
#[cfg(feature = "ai-types")]
impl From<serde_json::Error> for crate::messages::ErrorBody {
    fn from(e: serde_json::Error) -> crate::messages::ErrorBody {
        use crate::messages::{ErrorBody, ErrorCode};
        let code = if e.is_io() { ErrorCode::INTERNAL } else { ErrorCode::BAD_REQUEST };
        ErrorBody::new(code, format!("json: {e}"))
    }
}

#[cfg(all(test, feature = "ai-types"))]
mod tests {
    use super::*;
    use crate::messages::{ErrorBody, ErrorCode};

    #[test]
    fn ipc_errors_become_error_bodies_with_fitting_codes() {
        let code = |e: IpcError| ErrorBody::from(e).code;
        let decode = IpcError::Decode { format: "json", what: "T", reason: "eof".into() };
        assert_eq!(code(decode), ErrorCode::BAD_REQUEST);
        assert_eq!(code(IpcError::Timeout), ErrorCode::TIMEOUT);
        assert_eq!(code(IpcError::MessageTooLarge { len: 2, max: 1 }), ErrorCode::TOO_LARGE);
        assert_eq!(code(IpcError::Cancelled), ErrorCode::CANCELLED);
        assert_eq!(code(IpcError::PeerGone), ErrorCode::UNAVAILABLE);
        assert_eq!(code(IpcError::Corrupted("x".into())), ErrorCode::INTERNAL);
        let remote = ErrorBody::new(ErrorCode::Text("rate_limited".into()), "slow down");
        assert_eq!(ErrorBody::from(IpcError::Remote(remote.clone())), remote);
        let json = serde_json::from_slice::<u32>(b"nope").unwrap_err();
        assert_eq!(ErrorBody::from(json).code, ErrorCode::BAD_REQUEST);
    }
}
