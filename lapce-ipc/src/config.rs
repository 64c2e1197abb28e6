//! Server configuration: the `[ipc]` and `[metrics]` sections of a TOML file.
//!
//! Every key is optional and [`IpcConfig::default()`] works without any file. With the
//! `config-file` feature, `IpcConfig::from_file` and `IpcConfig::from_toml_str` read TOML and
//! check it: a syntax error, a value of the wrong type, an unknown key or section and a value out
//! of range are all reported as [`IpcError::Config`] naming the file, the key (`ipc.ring_size`)
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

use std::fmt::{self, Display};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::WaitStrategy;
use crate::connection::StreamConfig;
use crate::error::{IpcError, Result};
use crate::ring::{MAX_CAPACITY, MIN_CAPACITY};

/// The default [`IpcSection::stream_window`]: 2 MiB, eight default rings.
pub const DEFAULT_STREAM_WINDOW: usize = 2 * 1024 * 1024;

/// What [`IpcConfig::validate`] names as the origin of a configuration built in code.
const IN_MEMORY: &str = "(in memory)";

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
    /// two from 4 KiB to 1 GiB ([`MIN_CAPACITY`] to [`MAX_CAPACITY`]).
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

/// A value out of range: the key and what is wrong, before the origin is known.
#[derive(Debug)]
struct Invalid {
    key: &'static str,
    reason: String,
}

fn invalid(key: &'static str, reason: String) -> Invalid {
    Invalid { key, reason }
}

fn in_range<T: PartialOrd + Display>(key: &'static str, value: T, min: T, max: T) -> Result<(), Invalid> {
    if value < min || value > max {
        return Err(invalid(key, format!("must be between {min} and {max} (got {value})")));
    }
    Ok(())
}

impl IpcConfig {
    /// Checks every value against its range (see the field docs); the error
    /// ([`IpcError::Config`]) names the key, e.g. `ipc.ring_size`.
    ///
    /// ```
    /// let mut config = lapce_ipc::IpcConfig::default();
    /// config.ipc.max_connections = 0;
    /// let err = config.validate().unwrap_err();
    /// assert!(err.to_string().contains("ipc.max_connections: must be between 1 and 65536 (got 0)"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|e| IpcError::Config {
            origin: IN_MEMORY.to_owned(),
            key: Some(e.key.to_owned()),
            reason: e.reason,
        })
    }

    fn check(&self) -> Result<(), Invalid> {
        let ipc = &self.ipc;
        in_range("ipc.max_connections", ipc.max_connections, 1, 65536)?;
        in_range("ipc.idle_timeout_secs", ipc.idle_timeout_secs, 0, 365 * 86400)?;
        in_range("ipc.idle_trim_ms", ipc.idle_trim_ms, 0, 86_400_000)?;
        in_range("ipc.max_message_size", ipc.max_message_size, 1024, 1 << 30)?;
        if !ipc.ring_size.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&ipc.ring_size) {
            return Err(invalid(
                "ipc.ring_size",
                format!(
                    "must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY} (got {})",
                    ipc.ring_size
                ),
            ));
        }
        in_range("ipc.max_slots", ipc.max_slots, 1, 65536)?;
        if ipc.warm_pool_size > ipc.max_slots {
            return Err(invalid(
                "ipc.warm_pool_size",
                format!("must be at most ipc.max_slots ({}) (got {})", ipc.max_slots, ipc.warm_pool_size),
            ));
        }
        in_range("ipc.spin_micros", ipc.spin_micros, 0, 1_000_000)?;
        in_range("ipc.max_concurrent_requests", ipc.max_concurrent_requests, 1, 65536)?;
        in_range("ipc.handshake_timeout_ms", ipc.handshake_timeout_ms, 1, 600_000)?;
        in_range("ipc.request_timeout_ms", ipc.request_timeout_ms, 0, 86_400_000)?;
        if ipc.stream_window != 0 && !(4096..=1 << 30).contains(&ipc.stream_window) {
            return Err(invalid(
                "ipc.stream_window",
                format!("must be 0 (none) or between 4096 and 1073741824 (got {})", ipc.stream_window),
            ));
        }
        if !ipc.socket_dir.is_empty() && !Path::new(&ipc.socket_dir).is_absolute() {
            return Err(invalid(
                "ipc.socket_dir",
                format!(
                    "must be an absolute path, or \"\" for the runtime directory (got {:?})",
                    ipc.socket_dir
                ),
            ));
        }
        for (i, &uid) in ipc.allowed_uids.iter().enumerate() {
            if uid == u32::MAX {
                return Err(invalid(
                    "ipc.allowed_uids",
                    format!("{uid} is not a user id (it is (uid_t)-1) (got {uid})"),
                ));
            }
            if ipc.allowed_uids[..i].contains(&uid) {
                return Err(invalid("ipc.allowed_uids", format!("uid {uid} is listed twice (got {uid})")));
            }
        }
        if !ipc.allowed_uids.is_empty() && ipc.socket_dir.is_empty() {
            return Err(invalid(
                "ipc.allowed_uids",
                format!(
                    "needs ipc.socket_dir: other users cannot enter the private runtime directory, so \
                     uids {:?} could never connect; set socket_dir to a directory they can traverse",
                    ipc.allowed_uids
                ),
            ));
        }
        let metrics = &self.metrics;
        if let Some(addr) = &metrics.addr {
            if let Err(e) = addr.parse::<SocketAddr>() {
                return Err(invalid(
                    "metrics.addr",
                    format!("must be a socket address such as \"127.0.0.1:9464\" (got {addr:?}: {e})"),
                ));
            }
        }
        Ok(())
    }

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

    /// This configuration as a TOML file, every key written out (defaults included) with a short
    /// comment; `metrics.addr` is written as a comment when it is unset. Reading it back with
    /// `IpcConfig::from_toml_str` (feature `config-file`) gives this configuration again. Needs
    /// no feature itself.
    pub fn to_toml_string(&self) -> String {
        let (ipc, metrics) = (&self.ipc, &self.metrics);
        let mut out = String::from("# lapce-ipc server configuration; every key is optional.\n\n[ipc]\n");
        let o = &mut out;
        entry(o, "max_connections", &ipc.max_connections, "1 to 65536");
        entry(o, "idle_timeout_secs", &ipc.idle_timeout_secs, "0 = never");
        entry(o, "idle_trim_ms", &ipc.idle_trim_ms, "give idle rings' pages back; 0 = never");
        entry(o, "trim_heap", &ipc.trim_heap, "malloc_trim the whole process when quiet");
        entry(o, "max_message_size", &ipc.max_message_size, "bytes, 1 KiB to 1 GiB");
        entry(o, "ring_size", &ipc.ring_size, "bytes per direction, power of two, 4 KiB to 1 GiB");
        entry(o, "warm_pool_size", &ipc.warm_pool_size, "segments created ahead, at most max_slots");
        entry(o, "max_slots", &ipc.max_slots, "most segments at once");
        entry(o, "wait_mode", &toml_string(ipc.wait_mode.as_str()), "\"spin\" | \"adaptive\" | \"blocking\"");
        entry(o, "spin_micros", &ipc.spin_micros, "spin before sleeping (adaptive)");
        entry(o, "max_concurrent_requests", &ipc.max_concurrent_requests, "in flight per connection");
        entry(o, "handshake_timeout_ms", &ipc.handshake_timeout_ms, "1 to 600000");
        entry(o, "request_timeout_ms", &ipc.request_timeout_ms, "client default, 0 = none");
        entry(o, "stream_window", &ipc.stream_window, "client, bytes per stream; 0 = unbounded");
        entry(o, "socket_dir", &toml_string(&ipc.socket_dir), "Unix; \"\" = private runtime directory");
        let uids: Vec<String> = ipc.allowed_uids.iter().map(u32::to_string).collect();
        entry(o, "allowed_uids", &format!("[{}]", uids.join(", ")), "Unix; other uids trusted");
        entry(o, "raise_open_file_limit", &ipc.raise_open_file_limit, "Unix; soft RLIMIT_NOFILE to hard");
        o.push_str("\n[metrics]\n");
        entry(o, "enable", &metrics.enable, "collect metrics");
        match &metrics.addr {
            Some(addr) => entry(o, "addr", &toml_string(addr), "HTTP /metrics endpoint"),
            None => {
                entry(o, "# addr", &toml_string("127.0.0.1:9464"), "HTTP /metrics endpoint; none by default")
            }
        }
        out
    }
}

/// One `key = value  # comment` line of [`IpcConfig::to_toml_string`].
fn entry(out: &mut String, key: &str, value: &dyn Display, comment: &str) {
    use std::fmt::Write as _;

    let assignment = format!("{key} = {value}");
    let _ = writeln!(out, "{assignment:<40}# {comment}");
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(feature = "config-file")]
mod file {
    use std::ops::Range;
    use std::path::Path;

    use serde::Deserialize;
    use toml::de::{DeTable, DeValue};

    use super::IpcConfig;
    use crate::error::{IpcError, Result};

    impl IpcConfig {
        /// Reads and checks a TOML configuration; `origin` (usually the file name) is what errors
        /// name. An empty text gives the defaults. (Feature `config-file`.)
        ///
        /// Errors ([`IpcError::Config`]) name `origin`, the key (`ipc.max_connections`) and,
        /// where the key appears in the text, its line and column: syntax errors, values of the
        /// wrong type, unknown keys or sections, and values out of range
        /// ([`IpcConfig::validate`]).
        ///
        /// ```
        /// use lapce_ipc::IpcConfig;
        ///
        /// let config = IpcConfig::from_toml_str("[ipc]\nwait_mode = \"spin\"\n", "my.toml")?;
        /// assert_eq!(config.wait_strategy(), lapce_ipc::WaitStrategy::Spin);
        ///
        /// let err = IpcConfig::from_toml_str("[ipc]\nmax_connections = \"many\"\n", "my.toml").unwrap_err();
        /// let msg = err.to_string();
        /// assert!(msg.starts_with("config my.toml: ipc.max_connections: invalid type"), "{msg}");
        /// assert!(msg.ends_with("(line 2, column 19)"), "{msg}");
        /// # Ok::<(), lapce_ipc::IpcError>(())
        /// ```
        #[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
        pub fn from_toml_str(text: &str, origin: &str) -> Result<IpcConfig> {
            let (root, errors) = DeTable::parse_recoverable(text);
            if let Some(e) = errors.into_iter().next() {
                return Err(located(text, &root, origin, e.message(), e.span()));
            }
            let config = IpcConfig::deserialize(toml::de::Deserializer::from(root.clone()))
                .map_err(|e| located(text, &root, origin, e.message(), e.span()))?;
            config.check().map_err(|e| {
                let span = span_of_key(root.get_ref(), e.key);
                let mut err = located(text, &root, origin, &e.reason, span);
                if let IpcError::Config { key, .. } = &mut err {
                    *key = Some(e.key.to_owned());
                }
                err
            })?;
            Ok(config)
        }

        /// Reads and checks the TOML file at `path` (see [`IpcConfig::from_toml_str`]); errors
        /// name the file. (Feature `config-file`.)
        #[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
        pub fn from_file(path: impl AsRef<Path>) -> Result<IpcConfig> {
            let path = path.as_ref();
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| IpcError::Config {
                origin: origin.clone(),
                key: None,
                reason: format!("cannot read: {e}"),
            })?;
            IpcConfig::from_toml_str(&text, &origin)
        }
    }

    /// A [`IpcError::Config`] for an error at `span` of `text`: the key is the one the span falls
    /// in, the position is appended to the reason.
    fn located(
        text: &str,
        root: &toml::Spanned<DeTable<'_>>,
        origin: &str,
        reason: &str,
        span: Option<Range<usize>>,
    ) -> IpcError {
        let mut key = None;
        let mut reason = reason.trim_end().replace('\n', "; ");
        if let Some(span) = span {
            let mut path = Vec::new();
            if key_path_at(root.get_ref(), span.start, &mut path) {
                key = Some(path.join("."));
            }
            let (line, column) = line_column(text, span.start);
            let source = text.lines().nth(line - 1).unwrap_or_default().trim();
            if key.is_none() && !source.is_empty() {
                // A syntax error: no key to name, so show the line.
                reason.push_str(&format!(" (line {line}, column {column}: `{source}`)"));
            } else {
                reason.push_str(&format!(" (line {line}, column {column})"));
            }
        }
        IpcError::Config { origin: origin.to_owned(), key, reason }
    }

    /// The dotted key whose name or value contains byte `pos`, innermost first.
    fn key_path_at(table: &DeTable<'_>, pos: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table.iter() {
            let here = key.span().contains(&pos) || value.span().contains(&pos);
            path.push(key.get_ref().to_string());
            if let DeValue::Table(inner) = value.get_ref() {
                if key_path_at(inner, pos, path) {
                    return true;
                }
            }
            if here {
                return true;
            }
            path.pop();
        }
        false
    }

    /// Where the value of the dotted `key` is in the text, if the key is there.
    fn span_of_key(root: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
        let mut table = root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let (_, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
            if parts.peek().is_none() {
                return Some(value.span());
            }
            table = value.get_ref().as_table()?;
        }
        None
    }

    /// 1-based line and column (in characters) of byte `pos`.
    fn line_column(text: &str, pos: usize) -> (usize, usize) {
        let before = &text.as_bytes()[..pos.min(text.len())];
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(config: &IpcConfig) -> (String, String) {
        match config.validate() {
            Err(IpcError::Config { origin, key, reason }) => {
                assert_eq!(origin, IN_MEMORY);
                (key.expect("validation errors name the key"), reason)
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = IpcConfig::default();
        c.validate().unwrap();
        assert_eq!(c.ipc.max_connections, 1000);
        assert_eq!(c.ipc.idle_timeout_secs, 300);
        assert_eq!(c.ipc.max_message_size, 10_485_760);
        assert_eq!(c.ipc.ring_size, 262_144);
        assert_eq!(c.ipc.warm_pool_size, 64);
        assert_eq!(c.ipc.max_slots, 1024);
        assert_eq!(c.ipc.wait_mode, WaitMode::Adaptive);
        assert_eq!(c.ipc.spin_micros, 50);
        assert_eq!(c.ipc.max_concurrent_requests, 256);
        assert_eq!(c.ipc.handshake_timeout_ms, 5000);
        assert_eq!(c.ipc.request_timeout_ms, 30_000);
        assert_eq!(c.ipc.socket_dir, "");
        assert!(c.ipc.allowed_uids.is_empty());
        assert!(c.metrics.enable);
        assert!(!c.ipc.trim_heap, "trimming the host's heap is opt-in");
        assert_eq!(c.metrics.addr, None);
        assert_eq!(c.idle_timeout(), Some(Duration::from_secs(300)));
        assert_eq!(c.request_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(c.idle_trim(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn default_stream_config_matches_stream_config_default() {
        let ours = IpcConfig::default().stream_config();
        let theirs = StreamConfig::default();
        assert_eq!(ours.ring_capacity, theirs.ring_capacity);
        assert_eq!(ours.wait, theirs.wait);
        assert_eq!(ours.handshake_timeout, theirs.handshake_timeout);
        assert_eq!((ours.warm_pool, ours.max_slots), (theirs.warm_pool, theirs.max_slots));
        assert_eq!(ours.socket_dir, theirs.socket_dir);
        assert_eq!(ours.allowed_peer_uids, theirs.allowed_peer_uids);
        assert_eq!(theirs.socket_dir, None);
        assert!(theirs.allowed_peer_uids.is_empty());
    }

    #[test]
    fn stream_config_maps_every_field() {
        let mut c = IpcConfig::default();
        c.ipc.ring_size = 1 << 20;
        c.ipc.handshake_timeout_ms = 250;
        c.ipc.wait_mode = WaitMode::Adaptive;
        c.ipc.spin_micros = 7;
        c.ipc.warm_pool_size = 3;
        c.ipc.max_slots = 9;
        let s = c.stream_config();
        assert_eq!((s.warm_pool, s.max_slots), (3, 9));
        assert_eq!(s.ring_capacity, 1 << 20);
        assert_eq!(s.handshake_timeout, Duration::from_millis(250));
        assert_eq!(s.wait, WaitStrategy::Adaptive(Duration::from_micros(7)));
        c.ipc.wait_mode = WaitMode::Spin;
        assert_eq!(c.stream_config().wait, WaitStrategy::Spin);
        assert_eq!(c.wait_strategy(), WaitStrategy::Spin);
        c.ipc.wait_mode = WaitMode::Blocking;
        assert_eq!(c.stream_config().wait, WaitStrategy::Blocking);
        assert_eq!(c.stream_config().socket_dir, None);
        c.ipc.socket_dir = "/run/lapce-shared".to_owned();
        c.ipc.allowed_uids = vec![1000, 4242];
        let s = c.stream_config();
        assert_eq!(s.socket_dir.as_deref(), Some(std::path::Path::new("/run/lapce-shared")));
        assert_eq!(s.allowed_peer_uids, vec![1000, 4242]);
    }

    #[test]
    fn socket_dir_and_allowed_uids_are_checked() {
        let mut c = IpcConfig::default();
        // An absolute path as this OS spells one (validation is the same everywhere; binding
        // with a socket_dir is refused on Windows).
        c.ipc.socket_dir = if cfg!(windows) { r"C:\lapce-shared" } else { "/run/lapce-shared" }.to_owned();
        c.ipc.allowed_uids = vec![0, 1000, 4294967294];
        c.validate().unwrap();
        for bad in ["relative/dir", "run"] {
            c.ipc.socket_dir = bad.to_owned();
            let (key, reason) = err_of(&c);
            assert_eq!(key, "ipc.socket_dir");
            assert!(reason.contains("absolute path") && reason.contains(&format!("{bad:?}")), "{reason}");
        }
        c.ipc.socket_dir = String::new();
        c.ipc.allowed_uids = vec![1000, 4242, 1000];
        let (key, reason) = err_of(&c);
        assert_eq!(key, "ipc.allowed_uids");
        assert!(reason.contains("uid 1000 is listed twice"), "{reason}");
        c.ipc.allowed_uids = vec![u32::MAX];
        let (key, reason) = err_of(&c);
        assert_eq!(key, "ipc.allowed_uids");
        assert!(reason.contains("not a user id"), "{reason}");
        // An allow-list is only reachable through a socket_dir.
        c.ipc.allowed_uids = vec![1000];
        let (key, reason) = err_of(&c);
        assert_eq!(key, "ipc.allowed_uids");
        assert!(reason.contains("needs ipc.socket_dir") && reason.contains("[1000]"), "{reason}");
    }

    #[test]
    fn zero_timeouts_mean_none() {
        let mut c = IpcConfig::default();
        c.ipc.idle_timeout_secs = 0;
        c.ipc.request_timeout_ms = 0;
        c.ipc.idle_trim_ms = 0;
        c.validate().unwrap();
        assert_eq!(c.idle_trim(), None);
        assert_eq!(c.idle_timeout(), None);
        assert_eq!(c.request_timeout(), None);
    }

    /// Each range check: the first value out of range on each side is refused with the key named,
    /// the bound itself accepted.
    #[test]
    fn range_checks_name_the_key() {
        type Set = fn(&mut IpcConfig, u64);
        let cases: &[(&str, Set, &[u64], &[u64])] = &[
            ("ipc.max_connections", |c, v| c.ipc.max_connections = v as usize, &[1, 65536], &[0, 65537]),
            ("ipc.idle_timeout_secs", |c, v| c.ipc.idle_timeout_secs = v, &[0, 31_536_000], &[31_536_001]),
            ("ipc.idle_trim_ms", |c, v| c.ipc.idle_trim_ms = v, &[0, 86_400_000], &[86_400_001]),
            (
                "ipc.max_message_size",
                |c, v| c.ipc.max_message_size = v as usize,
                &[1024, 1 << 30],
                &[1023, (1 << 30) + 1],
            ),
            (
                "ipc.ring_size",
                |c, v| c.ipc.ring_size = v as usize,
                &[4096, 1 << 30],
                &[0, 2048, 5000, 4097, 1 << 31],
            ),
            ("ipc.max_slots", |c, v| c.ipc.max_slots = v as usize, &[64, 65536], &[0, 65537]),
            ("ipc.warm_pool_size", |c, v| c.ipc.warm_pool_size = v as usize, &[0, 1024], &[1025]),
            ("ipc.spin_micros", |c, v| c.ipc.spin_micros = v, &[0, 1_000_000], &[1_000_001]),
            (
                "ipc.max_concurrent_requests",
                |c, v| c.ipc.max_concurrent_requests = v as usize,
                &[1, 65536],
                &[0, 65537],
            ),
            ("ipc.handshake_timeout_ms", |c, v| c.ipc.handshake_timeout_ms = v, &[1, 600_000], &[0, 600_001]),
            ("ipc.request_timeout_ms", |c, v| c.ipc.request_timeout_ms = v, &[0, 86_400_000], &[86_400_001]),
        ];
        for &(key, set, good, bad) in cases {
            for &v in good {
                let mut c = IpcConfig::default();
                set(&mut c, v);
                c.validate().unwrap_or_else(|e| panic!("{key} = {v} refused: {e}"));
            }
            for &v in bad {
                let mut c = IpcConfig::default();
                set(&mut c, v);
                let (k, reason) = err_of(&c);
                assert_eq!(k, key, "{key} = {v}");
                assert!(reason.contains(&format!("(got {v})")), "{key} = {v}: {reason}");
            }
        }
    }

    #[test]
    fn ring_size_error_reads_as_documented() {
        let mut c = IpcConfig::default();
        c.ipc.ring_size = 5000;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "config (in memory): ipc.ring_size: must be a power of two between 4096 and 1073741824 (got 5000)"
        );
    }

    #[test]
    fn warm_pool_is_bounded_by_max_slots() {
        let mut c = IpcConfig::default();
        c.ipc.max_slots = 10;
        c.ipc.warm_pool_size = 11;
        let (key, reason) = err_of(&c);
        assert_eq!(key, "ipc.warm_pool_size");
        assert!(reason.contains("ipc.max_slots (10)"), "{reason}");
        c.ipc.warm_pool_size = 10;
        c.validate().unwrap();
    }

    #[test]
    fn metrics_addr_must_be_a_socket_address() {
        let mut c = IpcConfig::default();
        c.metrics.addr = Some("127.0.0.1:9464".to_owned());
        c.validate().unwrap();
        c.metrics.addr = Some("[::1]:9464".to_owned());
        c.validate().unwrap();
        for bad in ["localhost:9464", "127.0.0.1", "127.0.0.1:99999", ""] {
            c.metrics.addr = Some(bad.to_owned());
            let (key, reason) = err_of(&c);
            assert_eq!(key, "metrics.addr");
            assert!(reason.contains(&format!("{bad:?}")), "{reason}");
        }
    }

    #[test]
    fn wait_mode_names() {
        for (mode, name) in
            [(WaitMode::Spin, "spin"), (WaitMode::Adaptive, "adaptive"), (WaitMode::Blocking, "blocking")]
        {
            assert_eq!(mode.as_str(), name);
            assert_eq!(mode.to_string(), name);
        }
        assert_eq!(WaitMode::default(), WaitMode::Adaptive);
    }

    #[test]
    fn to_toml_string_writes_every_key() {
        let text = IpcConfig::default().to_toml_string();
        for key in [
            "max_connections = 1000",
            "idle_timeout_secs = 300",
            "idle_trim_ms = 1000",
            "trim_heap = false",
            "max_message_size = 10485760",
            "ring_size = 262144",
            "warm_pool_size = 64",
            "max_slots = 1024",
            "wait_mode = \"adaptive\"",
            "spin_micros = 50",
            "max_concurrent_requests = 256",
            "handshake_timeout_ms = 5000",
            "request_timeout_ms = 30000",
            "socket_dir = \"\"",
            "allowed_uids = []",
            "enable = true",
            "# addr = \"127.0.0.1:9464\"",
        ] {
            assert!(text.lines().any(|l| l.starts_with(key)), "{key} missing from:\n{text}");
        }
        assert!(text.find("[ipc]").unwrap() < text.find("[metrics]").unwrap());
    }

    #[test]
    fn toml_string_escapes() {
        assert_eq!(toml_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }
}
