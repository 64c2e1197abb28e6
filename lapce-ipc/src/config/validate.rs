//! [`IpcConfig::validate`]: every value checked against its range, the error naming the key.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use super::IpcConfig;
use crate::error::{IpcError, Result};
use crate::ring::{MAX_CAPACITY, MIN_CAPACITY};

/// What [`IpcConfig::validate`] names as the origin of a configuration built in code.
pub(super) const IN_MEMORY: &str = "(in memory)";

/// A value out of range: the key and what is wrong, before the origin is known.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) key: &'static str,
    pub(super) reason: String,
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

    pub(super) fn check(&self) -> Result<(), Invalid> {
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
}
