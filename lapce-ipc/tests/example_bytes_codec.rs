//! Runs `examples/bytes_codec.rs` across two processes: its server function in a child, its
//! client in this process.

use crate::common;

use std::time::Duration;

use common::{child_role, unique_name, ChildGuard};

#[path = "../examples/bytes_codec.rs"]
#[allow(dead_code)]
mod example;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "bytes-codec-server");
    example::serve(&name).unwrap();
}

#[test]
fn lines_codec_over_the_byte_stream_mode() {
    let name = unique_name("example-bytes-codec");
    let mut server = ChildGuard::spawn("bytes-codec-server", &name).listening_on(&name);
    let summary = example::run_client(&name, 120).unwrap();
    assert_eq!(summary, example::Summary { sent: 120, answered: 120, bytes: summary.bytes });
    assert!(summary.bytes > 600_000, "long lines crossed records: {} bytes", summary.bytes);
    server.wait_success(Duration::from_secs(60));
}
