//! [`IpcConfig::to_toml_string`]: a configuration written back out as a commented TOML file.

use std::fmt::Display;

use super::IpcConfig;

impl IpcConfig {
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
pub(super) fn toml_string(s: &str) -> String {
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
