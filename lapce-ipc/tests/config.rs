//! Reading the server configuration from TOML (feature `config-file`; `cargo test --workspace`
//! turns it on through the CLI): defaults, files with keys that no longer exist, errors that
//! name the file, the key and the line, and round trips.
#![cfg(feature = "config-file")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use lapce_ipc::config::WaitMode;
use lapce_ipc::{IpcConfig, IpcError, WaitStrategy};

/// A file with the keys earlier versions accepted and never applied (`socket_path`,
/// `buffer_pool_size`, `export_interval_secs`).
const OLD_KEYS: &str = r#"[ipc]
socket_path = "/tmp/lapce-ai.sock"
max_connections = 1000
idle_timeout_secs = 300
max_message_size = 10485760  # 10MB
buffer_pool_size = 100

[metrics]
enable = true
export_interval_secs = 60
"#;

/// The documented example file with every key.
const DOCS_EXAMPLE: &str = include_str!("../config.example.toml");

/// The parts of a config error; panics on anything else.
fn config_err(result: lapce_ipc::Result<IpcConfig>) -> (String, Option<String>, String) {
    match result {
        Err(IpcError::Config { origin, key, reason }) => (origin, key, reason),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("lapce-ipc-config-{}-{tag}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn no_file_and_empty_file_give_the_defaults() {
    let defaults = IpcConfig::default();
    defaults.validate().unwrap();
    assert_eq!(IpcConfig::from_toml_str("", "empty.toml").unwrap(), defaults);
    assert_eq!(IpcConfig::from_toml_str("# nothing\n[ipc]\n[metrics]\n", "sections.toml").unwrap(), defaults);
    // One key set, the rest defaults.
    let c = IpcConfig::from_toml_str("[ipc]\nmax_connections = 7\n", "one.toml").unwrap();
    assert_eq!(c.ipc.max_connections, 7);
    assert_eq!(
        IpcConfig { ipc: lapce_ipc::config::IpcSection { max_connections: 1000, ..c.ipc }, ..c },
        defaults
    );
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let path = std::env::temp_dir().join(format!("lapce-ipc-config-{}-missing.toml", std::process::id()));
    let (origin, key, reason) = config_err(IpcConfig::from_file(&path));
    assert_eq!(origin, path.display().to_string());
    assert_eq!(key, None);
    assert!(reason.starts_with("cannot read: "), "{reason}");
}

/// Keys that were accepted but never applied are gone: a file that still has them is refused
/// at the first one, named with its line, and loads once they are taken out.
#[test]
fn keys_that_did_nothing_are_refused_by_name() {
    let file = TempFile::new("old-keys", OLD_KEYS);
    let (origin, key, reason) = config_err(IpcConfig::from_file(&file.0));
    assert_eq!(origin, file.0.display().to_string());
    let key = key.expect("the key is named");
    let (field, line) = match key.as_str() {
        "ipc.socket_path" => ("socket_path", 2),
        "ipc.buffer_pool_size" => ("buffer_pool_size", 6),
        other => panic!("{other}: {reason}"),
    };
    assert!(reason.starts_with(&format!("unknown field `{field}`")), "{reason}");
    assert!(reason.ends_with(&format!("(line {line}, column 1)")), "{reason}");
    let (_, key, _) = config_err(IpcConfig::from_toml_str("[ipc]\nbuffer_pool_size = 100\n", "b.toml"));
    assert_eq!(key.as_deref(), Some("ipc.buffer_pool_size"));
    let (_, key, _) =
        config_err(IpcConfig::from_toml_str("[metrics]\nexport_interval_secs = 60\n", "e.toml"));
    assert_eq!(key.as_deref(), Some("metrics.export_interval_secs"));
    let kept: String = OLD_KEYS
        .lines()
        .filter(|l| {
            !["socket_path", "buffer_pool_size", "export_interval_secs"].iter().any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = IpcConfig::from_toml_str(&kept, "kept.toml").unwrap();
    assert_eq!(
        (c.ipc.max_connections, c.ipc.idle_timeout_secs, c.ipc.max_message_size),
        (1000, 300, 10 << 20)
    );
    assert_eq!(c, IpcConfig::default(), "the remaining values are the defaults");
}

#[test]
fn unknown_key_in_ipc_names_section_key_and_file() {
    let text = "[ipc]\nmax_connections = 10\nmax_conections = 20\n";
    let err = IpcConfig::from_toml_str(text, "/etc/lapce/ipc.toml").unwrap_err();
    let msg = err.to_string();
    let (origin, key, reason) = config_err(Err(err));
    assert_eq!(origin, "/etc/lapce/ipc.toml");
    assert_eq!(key.as_deref(), Some("ipc.max_conections"));
    assert!(reason.starts_with("unknown field `max_conections`, expected one of"), "{reason}");
    assert!(reason.contains("`max_connections`"), "{reason}");
    assert!(reason.ends_with("(line 3, column 1)"), "{reason}");
    assert!(msg.starts_with("config /etc/lapce/ipc.toml: ipc.max_conections: unknown field"), "{msg}");
    // The same in [metrics], and as a dotted key at the top level.
    let (_, key, _) = config_err(IpcConfig::from_toml_str("[metrics]\nenabled = true\n", "m.toml"));
    assert_eq!(key.as_deref(), Some("metrics.enabled"));
    let (_, key, _) = config_err(IpcConfig::from_toml_str("ipc.bogus = 1\n", "d.toml"));
    assert_eq!(key.as_deref(), Some("ipc.bogus"));
}

#[test]
fn unknown_section_names_it_and_the_file() {
    let text = "[ipc]\nmax_connections = 10\n\n[server]\nport = 1\n";
    let (origin, key, reason) = config_err(IpcConfig::from_toml_str(text, "x.toml"));
    assert_eq!(origin, "x.toml");
    assert_eq!(key.as_deref(), Some("server"));
    // The sections this build knows (`tls` with the feature).
    assert!(reason.starts_with("unknown field `server`, expected "), "{reason}");
    assert!(reason.contains("`ipc`") && reason.contains("`metrics`"), "{reason}");
    assert!(reason.ends_with("(line 4, column 2)"), "{reason}");
    // A stray top-level key.
    let (_, key, _) = config_err(IpcConfig::from_toml_str("verbose = true\n", "x.toml"));
    assert_eq!(key.as_deref(), Some("verbose"));
}

#[test]
fn wrong_type_names_key_and_line() {
    let text = "# comment\n[ipc]\nmax_connections = \"many\"\n";
    let err = IpcConfig::from_toml_str(text, "t.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config t.toml: ipc.max_connections: invalid type: string \"many\", expected usize (line 3, column 19)"
    );
    let cases = [
        ("[metrics]\nenable = \"yes\"\n", "metrics.enable"),
        ("[ipc]\nring_size = 1.5\n", "ipc.ring_size"),
        ("[ipc]\nidle_timeout_secs = -1\n", "ipc.idle_timeout_secs"),
        ("[ipc]\ntrim_heap = 1\n", "ipc.trim_heap"),
        ("ipc = 5\n", "ipc"),
        ("[metrics]\naddr = 9464\n", "metrics.addr"),
    ];
    for (text, want) in cases {
        let (_, key, reason) = config_err(IpcConfig::from_toml_str(text, "t.toml"));
        assert_eq!(key.as_deref(), Some(want), "{text:?}: {reason}");
        assert!(reason.contains("(line "), "{text:?}: {reason}");
    }
}

#[test]
fn syntax_errors_give_file_line_and_column() {
    let (origin, key, reason) = config_err(IpcConfig::from_toml_str("[ipc]\nmax_connections = \n", "s.toml"));
    assert_eq!(origin, "s.toml");
    assert_eq!(key, None);
    assert!(reason.contains("(line 2, column 19: `max_connections =`)"), "{reason}");
    let (_, _, reason) = config_err(IpcConfig::from_toml_str("[ipc\n", "s.toml"));
    assert!(reason.contains("(line 1, column 5"), "{reason}");
    let dup = "[ipc]\nmax_connections = 1\nmax_connections = 2\n";
    let (_, _, reason) = config_err(IpcConfig::from_toml_str(dup, "s.toml"));
    assert!(reason.starts_with("duplicate key"), "{reason}");
    assert!(reason.contains("line 3, column 1: `max_connections = 2`"), "{reason}");
}

/// Values out of range in a file: the key, the value and the line of the value.
#[test]
fn range_errors_in_a_file_name_key_value_and_line() {
    let cases = [
        ("[ipc]\nmax_connections = 0\n", "ipc.max_connections", "(got 0)", 2),
        ("[ipc]\nmax_connections = 70000\n", "ipc.max_connections", "(got 70000)", 2),
        ("[ipc]\nmax_message_size = 100\n", "ipc.max_message_size", "(got 100)", 2),
        (
            "[ipc]\nring_size = 5000\n",
            "ipc.ring_size",
            "power of two between 4096 and 1073741824 (got 5000)",
            2,
        ),
        ("[ipc]\nring_size = 2048\n", "ipc.ring_size", "(got 2048)", 2),
        ("[ipc]\n\nmax_slots = 8\nwarm_pool_size = 9\n", "ipc.warm_pool_size", "max_slots (8) (got 9)", 4),
        ("[ipc]\nmax_slots = 0\nwarm_pool_size = 0\n", "ipc.max_slots", "(got 0)", 2),
        ("[ipc]\nmax_concurrent_requests = 0\n", "ipc.max_concurrent_requests", "(got 0)", 2),
        ("[ipc]\nhandshake_timeout_ms = 0\n", "ipc.handshake_timeout_ms", "(got 0)", 2),
        ("[ipc]\nspin_micros = 2000000\n", "ipc.spin_micros", "(got 2000000)", 2),
        (
            "[ipc]\nstream_window = 100\n",
            "ipc.stream_window",
            "0 (none) or between 4096 and 1073741824 (got 100)",
            2,
        ),
        ("[metrics]\naddr = \"localhost\"\n", "metrics.addr", "socket address", 2),
    ];
    for (text, want_key, want_reason, line) in cases {
        let (origin, key, reason) = config_err(IpcConfig::from_toml_str(text, "r.toml"));
        assert_eq!(origin, "r.toml");
        assert_eq!(key.as_deref(), Some(want_key), "{text:?}: {reason}");
        assert!(reason.contains(want_reason), "{text:?}: {reason}");
        assert!(reason.contains(&format!("(line {line}, column ")), "{text:?}: {reason}");
    }
    // A value that breaks a rule only together with a default still names the key (no line: the
    // offending value is not in the file).
    let (_, key, reason) = config_err(IpcConfig::from_toml_str("[ipc]\nmax_slots = 10\n", "r.toml"));
    assert_eq!(key.as_deref(), Some("ipc.warm_pool_size"));
    assert!(!reason.contains("(line"), "{reason}");
}

#[test]
fn wait_mode_parsing() {
    for (name, mode, strategy) in [
        ("spin", WaitMode::Spin, WaitStrategy::Spin),
        ("adaptive", WaitMode::Adaptive, WaitStrategy::Adaptive(Duration::from_micros(50))),
        ("blocking", WaitMode::Blocking, WaitStrategy::Blocking),
    ] {
        let c = IpcConfig::from_toml_str(&format!("[ipc]\nwait_mode = \"{name}\"\n"), "w.toml").unwrap();
        assert_eq!(c.ipc.wait_mode, mode);
        assert_eq!(c.wait_strategy(), strategy);
    }
    let c = IpcConfig::from_toml_str("[ipc]\nwait_mode = \"adaptive\"\nspin_micros = 0\n", "w.toml").unwrap();
    assert_eq!(c.wait_strategy(), WaitStrategy::Adaptive(Duration::ZERO));
    for bad in ["Spin", "fast", ""] {
        let text = format!("[ipc]\nwait_mode = \"{bad}\"\n");
        let (_, key, reason) = config_err(IpcConfig::from_toml_str(&text, "w.toml"));
        assert_eq!(key.as_deref(), Some("ipc.wait_mode"));
        assert!(reason.contains("expected one of `spin`, `adaptive`, `blocking`"), "{reason}");
    }
}

/// An absolute directory on this OS (`socket_dir` must be absolute; "/run/..." is not on
/// Windows).
const SHARED_DIR: &str = if cfg!(windows) { r"C:\lapce-shared" } else { "/run/lapce-shared" };

#[test]
fn stream_config_from_a_file() {
    let text = "[ipc]\nring_size = 1048576\nwait_mode = \"adaptive\"\nspin_micros = 20\nhandshake_timeout_ms = 750\n";
    let s = IpcConfig::from_toml_str(text, "s.toml").unwrap().stream_config();
    assert_eq!(s.ring_capacity, 1 << 20);
    assert_eq!(s.wait, WaitStrategy::Adaptive(Duration::from_micros(20)));
    assert_eq!(s.handshake_timeout, Duration::from_millis(750));
    assert_eq!(s.socket_dir, None);
    assert!(s.allowed_peer_uids.is_empty());

    // (Debug formatting writes the path as a TOML basic string: backslashes escaped.)
    let text = format!("[ipc]\nsocket_dir = {SHARED_DIR:?}\nallowed_uids = [1000, 4242]\n");
    let s = IpcConfig::from_toml_str(&text, "s.toml").unwrap().stream_config();
    assert_eq!(s.socket_dir.as_deref(), Some(std::path::Path::new(SHARED_DIR)));
    assert_eq!(s.allowed_peer_uids, vec![1000, 4242]);
}

#[test]
fn socket_dir_and_allowed_uids_errors_name_key_and_line() {
    let (_, key, reason) =
        config_err(IpcConfig::from_toml_str("[ipc]\nsocket_dir = \"run/here\"\n", "d.toml"));
    assert_eq!(key.as_deref(), Some("ipc.socket_dir"));
    assert!(reason.contains("absolute path") && reason.ends_with("(line 2, column 14)"), "{reason}");
    let (_, key, reason) = config_err(IpcConfig::from_toml_str("[ipc]\nallowed_uids = [7, 7]\n", "u.toml"));
    assert_eq!(key.as_deref(), Some("ipc.allowed_uids"));
    assert!(reason.contains("uid 7 is listed twice") && reason.contains("line 2"), "{reason}");
    // Not a uid at all: a negative number or a string is a type error naming the key.
    for bad in ["[-1]", "[\"root\"]", "0"] {
        let text = format!("[ipc]\nallowed_uids = {bad}\n");
        let (_, key, reason) = config_err(IpcConfig::from_toml_str(&text, "u.toml"));
        assert_eq!(key.as_deref().map(|k| k.starts_with("ipc.allowed_uids")), Some(true), "{bad}: {reason}");
    }
}

/// A configuration with every value changed from its default.
fn all_changed() -> IpcConfig {
    let mut c = IpcConfig::default();
    let ipc = &mut c.ipc;
    ipc.max_connections = 12;
    ipc.idle_timeout_secs = 0;
    ipc.max_message_size = 1 << 30;
    ipc.trim_heap = true;
    ipc.ring_size = 4096;
    ipc.warm_pool_size = 3;
    ipc.max_slots = 4;
    ipc.wait_mode = WaitMode::Blocking;
    ipc.spin_micros = 1;
    ipc.max_concurrent_requests = 65536;
    ipc.handshake_timeout_ms = 1;
    ipc.request_timeout_ms = 0;
    ipc.stream_window = 4096;
    ipc.socket_dir = format!("{SHARED_DIR} \"quoted\"");
    ipc.allowed_uids = vec![0, 4242, 4294967294];
    ipc.raise_open_file_limit = false;
    c.metrics.enable = false;
    c.metrics.addr = Some("[::1]:9464".to_owned());
    c
}

#[test]
fn to_toml_string_round_trips() {
    let changed = all_changed();
    changed.validate().unwrap();
    for original in [IpcConfig::default(), changed] {
        let text = original.to_toml_string();
        let back =
            IpcConfig::from_toml_str(&text, "round-trip.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, original, "{text}");
    }
}

/// `section.key` of every `key = value` line (comments skipped).
fn keys_of(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if !line.starts_with('#') {
            if let Some((key, _)) = line.split_once('=') {
                keys.insert(format!("{section}.{}", key.trim()));
            }
        }
    }
    keys
}

#[test]
fn docs_example_file_is_the_defaults_with_every_key() {
    assert_eq!(IpcConfig::from_toml_str(DOCS_EXAMPLE, "config.example.toml").unwrap(), IpcConfig::default());
    // Every key is written out: the same keys as to_toml_string with every value set, less
    // metrics.addr, which has no default and appears as a comment.
    let mut want = keys_of(&all_changed().to_toml_string());
    assert!(want.remove("metrics.addr"));
    assert_eq!(keys_of(DOCS_EXAMPLE), want);
    assert_eq!(want.len(), 18);
    assert!(DOCS_EXAMPLE.lines().any(|l| l.starts_with("# addr = \"127.0.0.1:9464\"")));
}
