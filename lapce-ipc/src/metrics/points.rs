//! What the server records, shared by the metrics and their stand-in without the `metrics`
//! feature ([`super`] is one or the other).

use std::sync::Arc;

/// What [`IpcServer::metrics_text`](crate::IpcServer::metrics_text) returns with metrics off: an
/// OpenMetrics text without any family.
pub(crate) const EMPTY_TEXT: &str = "# EOF\n";

/// One frame in this many that a connection's writer writes is timed into
/// `lapce_ipc_ring_write_duration_seconds` (two clock reads per timed frame; timing every frame
/// would cost the small round trip a few percent).
pub(crate) const WRITE_SAMPLE: u64 = 16;

/// What went wrong, for `errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The handler returned an error body.
    Handler,
    /// The handler panicked.
    Panic,
    /// No handler for the request's type.
    UnknownType,
    /// A `Cancel` stopped a running request.
    Cancelled,
    /// A client sent an answer type (`Response`, `Error`, …) as a request.
    BadRequest,
    /// A frame or ring record that could not be read.
    BadFrame,
    /// A frame over the size limit.
    TooLarge,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl ErrorKind {
    pub(super) const ALL: [ErrorKind; 7] = [
        ErrorKind::Handler,
        ErrorKind::Panic,
        ErrorKind::UnknownType,
        ErrorKind::Cancelled,
        ErrorKind::BadRequest,
        ErrorKind::BadFrame,
        ErrorKind::TooLarge,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            ErrorKind::Handler => "handler",
            ErrorKind::Panic => "panic",
            ErrorKind::UnknownType => "unknown_type",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::TooLarge => "too_large",
        }
    }
}

/// What the server's listener reports at scrape time (read, not recorded).
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct ListenerReport {
    pub(crate) pool: crate::PoolStats,
    /// Clients whose handshake the listener refused (another user, a bad hello, no free slot).
    pub(crate) handshakes_refused: u64,
    /// Stale runtime files this process removed (sockets of dead listeners replaced at bind,
    /// what `clean_stale_sockets` removed).
    pub(crate) stale_cleaned: u64,
}

pub(crate) type ListenerReader = Arc<dyn Fn() -> ListenerReport + Send + Sync>;
