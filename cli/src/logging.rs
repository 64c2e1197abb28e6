//! The log of the library's `tracing` events: on stderr, never mixed into stdout's results.
//!
//! `RUST_LOG`, when set, decides what is shown (`RUST_LOG=lapce_ipc=debug`); otherwise warnings
//! and errors (refused peers, handler panics), more with each `-v`. Commands that provoke
//! failures on purpose (`bench`, `stress` and their child processes) show only errors by default,
//! so that the failures they cause are not reported as if they were the user's.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// The level shown without `RUST_LOG`: `quiet` starts at errors, else at warnings; each
/// `verbose` step raises it one level (info, debug, trace).
pub fn default_level(verbose: u8, quiet: bool) -> LevelFilter {
    const LEVELS: [LevelFilter; 5] =
        [LevelFilter::ERROR, LevelFilter::WARN, LevelFilter::INFO, LevelFilter::DEBUG, LevelFilter::TRACE];
    let start = if quiet { 0 } else { 1 };
    LEVELS[(start + usize::from(verbose)).min(LEVELS.len() - 1)]
}

/// Installs the subscriber: events at `default_level(verbose, quiet)` and above, or as
/// `RUST_LOG` says, to stderr (with colours only on a terminal).
pub fn init(verbose: u8, quiet: bool) {
    let builder = EnvFilter::builder().with_default_directive(default_level(verbose, quiet).into());
    let filter = builder.from_env().unwrap_or_else(|e| {
        eprintln!("lapce-ipc: RUST_LOG: {e}; using the default log level");
        builder.parse_lossy("")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_raises_the_level_from_warn_or_error() {
        assert_eq!(default_level(0, false), LevelFilter::WARN);
        assert_eq!(default_level(1, false), LevelFilter::INFO);
        assert_eq!(default_level(2, false), LevelFilter::DEBUG);
        assert_eq!(default_level(9, false), LevelFilter::TRACE);
        assert_eq!(default_level(0, true), LevelFilter::ERROR);
        assert_eq!(default_level(1, true), LevelFilter::WARN);
    }
}
