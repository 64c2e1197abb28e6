//! The error type of `bench` and `stress`: anything printable, sent across threads.

/// Errors of `bench` and `stress`: anything printable.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
