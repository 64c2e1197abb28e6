//! Unit tests of the configuration: defaults, validation, conversions and TOML output.

use super::toml_out::toml_string;
use super::validate::IN_MEMORY;
use super::*;
use crate::error::IpcError;

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
