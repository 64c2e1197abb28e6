//! Server configuration: the `[ipc]` and `[metrics]` sections of a TOML file.
//!
//! Every key is optional and [`IpcConfig::default()`] works without any file. With the
//! `config-file` feature, `IpcConfig::from_file` and `IpcConfig::from_toml_str` read TOML and
//! check it: a syntax error, a value of the wrong type, an unknown key or section and a value out
//! of range are all reported as [`IpcError::Config`](crate::IpcError::Config) naming the file, the key (`ipc.ring_size`)
//! and, where the key is in the file, its line and column. Without the feature the types, their
//! defaults, [`IpcConfig::validate`], the conversions ([`IpcConfig::stream_config`],
//! [`IpcConfig::wait_strategy`]) and [`IpcConfig::to_toml_string`] are all there; only the parser
//! (and its dependency, the `toml` crate) is left out.
//!
//! The listener's name is not part of the configuration: it is what
//! [`IpcServer::bind`](crate::IpcServer::bind) and the clients' `connect` take.
//!
//! # Example: every key, with its default
//!
//! `config.example.toml` in the crate's directory is the same file with a comment on every key.
//!
//! ```
//! # #[cfg(feature = "config-file")] {
//! use lapce_ipc::IpcConfig;
//!
//! let text = r#"
//! [ipc]
//! max_connections = 1000
//! idle_timeout_secs = 300           # 0 = never
//! idle_trim_ms = 1000               # 0 = never
//! trim_heap = false                 # malloc_trim the whole process when quiet
//! max_message_size = 10485760       # 10 MiB
//! ring_size = 262144                # 256 KiB per direction, a power of two
//! warm_pool_size = 64
//! max_slots = 1024
//! wait_mode = "adaptive"            # "spin" | "adaptive" | "blocking"
//! spin_micros = 50
//! max_concurrent_requests = 256
//! handshake_timeout_ms = 5000
//! request_timeout_ms = 30000        # 0 = none
//! stream_window = 2097152           # 2 MiB per response stream; 0 = unbounded
//! socket_dir = ""                   # Unix; "" = the private runtime directory
//! allowed_uids = []                 # Unix; other uids allowed to connect (and to serve)
//! raise_open_file_limit = true      # Unix; soft RLIMIT_NOFILE to the hard limit
//!
//! [metrics]
//! enable = true
//! ## addr = "127.0.0.1:9464"         # no HTTP endpoint by default
//! "#;
//! let config = IpcConfig::from_toml_str(text, "lapce-ipc.toml")?;
//! assert_eq!(config, IpcConfig::default());
//! assert_eq!(config.stream_config().ring_capacity, 256 * 1024);
//!
//! // Errors name the file, the key and where it is.
//! let err = IpcConfig::from_toml_str("[ipc]\nring_size = 5000\n", "lapce-ipc.toml").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "config lapce-ipc.toml: ipc.ring_size: must be a power of two between 4096 and 1073741824 \
//!      (got 5000) (line 2, column 13)"
//! );
//! # }
//! # Ok::<(), lapce_ipc::IpcError>(())
//! ```

#[cfg(feature = "config-file")]
mod file;
#[cfg(test)]
mod tests;
mod toml_out;
mod validate;

use std::fmt::{self, Display};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::WaitStrategy;
use crate::connection::StreamConfig;

/// The default [`IpcSection::stream_window`]: 2 MiB, eight default rings.
pub const DEFAULT_STREAM_WINDOW: usize = 2 * 1024 * 1024;

/// The whole configuration: the `[ipc]` and `[metrics]` sections.
///
/// A missing section or key takes its default; an unknown one is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    /// `[ipc]`: the listener, its limits and the rings.
    pub ipc: IpcSection,
    /// `[metrics]`: metrics collection and export.
    pub metrics: MetricsSection,
    /// `[tls]`: the server and client over TCP with TLS (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: crate::remote::TlsSection,
}

/// The `[ipc]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcSection {
    /// Most clients connected at once (default 1000, 1 to 65536); further connections are
    /// refused.
    pub max_connections: usize,
    /// Seconds without traffic after which a connection is closed (default 300); 0 = never.
    /// At most one year (31536000). A connection checks four times per timeout, so it is closed
    /// between one and 1.25 timeouts after its last message; not while a request is in flight.
    pub idle_timeout_secs: u64,
    /// Milliseconds a connection's outgoing ring must stay empty and unwritten before its pages
    /// are given back to the OS (default 1000); 0 = never. The ring keeps working: the next
    /// message is written to fresh pages. Applies to servers and clients alike (each trims the
    /// ring it writes). At most one day (86400000).
    pub idle_trim_ms: u64,
    /// Whether an `IpcServer` gives the process's free heap pages back to the OS (glibc's
    /// `malloc_trim`) once no connection has ended for `idle_trim_ms` (default `false`). It
    /// trims the whole host process's heap, not only the server's, so it is for processes that
    /// are mostly a server (the `lapce-ipc serve` command turns it on); counted in
    /// `ServerStats::heap_trims`. A no-op where the allocator returns free memory by itself.
    pub trim_heap: bool,
    /// Largest message in bytes, either way (default 10 MiB = 10485760; 1 KiB to 1 GiB).
    pub max_message_size: usize,
    /// Capacity in bytes of each ring, one per direction (default 262144 = 256 KiB): a power of
    /// two from 4 KiB to 1 GiB ([`MIN_CAPACITY`](crate::ring::MIN_CAPACITY) to [`MAX_CAPACITY`](crate::ring::MAX_CAPACITY)).
    pub ring_size: usize,
    /// Shared-memory segments created ahead of time so that accepting a client allocates
    /// nothing (default 64; 0 to `max_slots`), within a quarter of the process's open-file
    /// limit (see [`StreamConfig::warm_pool`](crate::StreamConfig::warm_pool)).
    pub warm_pool_size: usize,
    /// Most segments (slots) the server holds at once (default 1024; 1 to 65536).
    pub max_slots: usize,
    /// How sends and receives wait (default `"adaptive"`): see [`WaitMode`].
    pub wait_mode: WaitMode,
    /// How long the adaptive wait spins before it sleeps, in microseconds (default 50; at most
    /// 1000000). Only used with `wait_mode = "adaptive"`.
    pub spin_micros: u64,
    /// Requests one connection may have in flight at once (pipelining bound; default 256,
    /// 1 to 65536).
    pub max_concurrent_requests: usize,
    /// How long either side waits for the other's hello, in milliseconds (default 5000;
    /// 1 to 600000).
    pub handshake_timeout_ms: u64,
    /// The client's default timeout per request, in milliseconds (default 30000); 0 = none.
    /// At most one day (86400000). Checked eight times per timeout: a request fails between one
    /// and 1.125 timeouts after it was sent (`IpcClient::request_timeout` times one precisely).
    pub request_timeout_ms: u64,
    /// The client's window per response stream, in bytes (default 2097152 = 2 MiB; 0 = none,
    /// else 4 KiB to 1 GiB): how far a stream's handler may run ahead of the code that reads the
    /// stream. Each chunk counts its length plus 128 bytes (about what an unread chunk costs the
    /// client besides its bytes). The client
    /// announces it to the server when it connects and credits back what its reader consumed
    /// every quarter window; the handler's `ChunkSender::send` waits while a window of chunks
    /// is unread (docs/PROTOCOL.md §7). So a stream nobody reads holds at most about a window
    /// in the client, even while other requests on the connection read its chunks off the ring,
    /// and the handler waits.
    ///
    /// The default is eight default rings: a reader that keeps up has at most the ring's
    /// contents plus a quarter window outstanding, so it is held by the ring, not by the window;
    /// what the window costs it is one credit frame per half megabyte read (docs/BENCHMARKS.md
    /// has the figures). An unread stream holds about a window in the client whatever its chunk
    /// size. With a larger `ring_size`, raise it to at least twice that. 0 lets streams run unbounded, as with a
    /// server that predates windows. Servers ignore the key: each client announces its own.
    ///
    /// ```
    /// use lapce_ipc::IpcConfig;
    ///
    /// let mut config = IpcConfig::default();
    /// assert_eq!(config.ipc.stream_window, 2 << 20);
    /// config.ipc.stream_window = 64 * 1024; // a client that keeps little of an unread stream
    /// config.validate()?;
    /// config.ipc.stream_window = 100; // below 4 KiB
    /// assert!(config.validate().is_err());
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    pub stream_window: usize,
    /// Unix: the directory of the control socket (default `""`: the private runtime
    /// directory). An absolute path to an existing directory owned by the user, not writable by
    /// group or others, and mode 0700 unless `allowed_uids` is set: see
    /// [`StreamConfig::socket_dir`]. Refused on Windows.
    pub socket_dir: String,
    /// Unix: uids besides our own whose processes may connect (for a server) or serve (for a
    /// client), checked from the kernel's credentials (default `[]`: our own user only). The
    /// socket is then mode 0666 and the credential check is what keeps other users out: see
    /// [`StreamConfig::allowed_peer_uids`]. No duplicates, not 4294967295. Refused on Windows.
    pub allowed_uids: Vec<u32>,
    /// Unix: raise the process's soft open-file limit to its hard limit at bind or connect
    /// (default `true`): see [`StreamConfig::raise_open_file_limit`].
    pub raise_open_file_limit: bool,
}

impl Default for IpcSection {
    fn default() -> Self {
        IpcSection {
            max_connections: 1000,
            idle_timeout_secs: 300,
            idle_trim_ms: 1000,
            trim_heap: false,
            max_message_size: crate::frame::DEFAULT_MAX_MESSAGE,
            ring_size: 256 * 1024,
            warm_pool_size: 64,
            max_slots: 1024,
            wait_mode: WaitMode::Adaptive,
            spin_micros: 50,
            max_concurrent_requests: 256,
            handshake_timeout_ms: 5000,
            request_timeout_ms: 30_000,
            stream_window: DEFAULT_STREAM_WINDOW,
            socket_dir: String::new(),
            allowed_uids: Vec::new(),
            raise_open_file_limit: true,
        }
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Whether metrics are collected (default `true`).
    pub enable: bool,
    /// Address of an HTTP `/metrics` endpoint, e.g. `"127.0.0.1:9464"` (default none: no
    /// endpoint). Must parse as a socket address. [`IpcServer::serve`](crate::IpcServer::serve)
    /// serves it while it runs (feature `metrics-http`; without it a set address is an error at
    /// bind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection { enable: true, addr: None }
    }
}

/// `wait_mode`: how a stream waits for an empty ring (receive) or a full one (send). Written in
/// lower case in the file; maps onto [`WaitStrategy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMode {
    /// `"spin"`: never sleep ([`WaitStrategy::Spin`]); lowest latency, a core per waiter.
    Spin,
    /// `"adaptive"`: spin for `spin_micros`, then sleep ([`WaitStrategy::Adaptive`]). The default.
    #[default]
    Adaptive,
    /// `"blocking"`: sleep at once ([`WaitStrategy::Blocking`]); least CPU.
    Blocking,
}

impl WaitMode {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitMode::Spin => "spin",
            WaitMode::Adaptive => "adaptive",
            WaitMode::Blocking => "blocking",
        }
    }
}

impl Display for WaitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl IpcConfig {
    /// The [`WaitStrategy`] of `wait_mode` (and `spin_micros` for `"adaptive"`).
    pub fn wait_strategy(&self) -> WaitStrategy {
        match self.ipc.wait_mode {
            WaitMode::Spin => WaitStrategy::Spin,
            WaitMode::Adaptive => WaitStrategy::Adaptive(Duration::from_micros(self.ipc.spin_micros)),
            WaitMode::Blocking => WaitStrategy::Blocking,
        }
    }

    /// The stream options: `ring_size`, the wait strategy, `handshake_timeout_ms`, `socket_dir`
    /// (`""` gives `None`) and `allowed_uids`. The default configuration gives the values of
    /// [`StreamConfig::default()`].
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            ring_capacity: self.ipc.ring_size,
            wait: self.wait_strategy(),
            handshake_timeout: Duration::from_millis(self.ipc.handshake_timeout_ms),
            warm_pool: self.ipc.warm_pool_size,
            max_slots: self.ipc.max_slots,
            socket_dir: (!self.ipc.socket_dir.is_empty()).then(|| PathBuf::from(&self.ipc.socket_dir)),
            allowed_peer_uids: self.ipc.allowed_uids.clone(),
            raise_open_file_limit: self.ipc.raise_open_file_limit,
        }
    }

    /// `idle_trim_ms` as a duration; `None` for 0 (never).
    pub fn idle_trim(&self) -> Option<Duration> {
        (self.ipc.idle_trim_ms > 0).then(|| Duration::from_millis(self.ipc.idle_trim_ms))
    }

    /// `idle_timeout_secs` as a duration; `None` for 0 (never).
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.ipc.idle_timeout_secs > 0).then(|| Duration::from_secs(self.ipc.idle_timeout_secs))
    }

    /// `request_timeout_ms` as a duration; `None` for 0 (no timeout).
    pub fn request_timeout(&self) -> Option<Duration> {
        (self.ipc.request_timeout_ms > 0).then(|| Duration::from_millis(self.ipc.request_timeout_ms))
    }
}
