//! Runs `examples/http_over_shm.rs` across two processes: hyper's server over the byte-stream
//! mode in a child, its HTTP/1.1 and HTTP/2 client here.

use crate::common;

use std::time::Duration;

use common::{child_role, unique_name, ChildGuard};
use hyper::Version;

#[path = "../examples/http_over_shm.rs"]
#[allow(dead_code)]
mod example;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "http-server");
    example::serve(&name).unwrap();
}

#[test]
fn http1_and_http2_over_the_byte_stream_mode() {
    let name = unique_name("example-http");
    let mut server = ChildGuard::spawn("http-server", &name).listening_on(&name);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let [http1, http2] = runtime.block_on(example::run_client(&name)).unwrap();
    // The 1 MiB echo crossed the 256 KiB rings both ways on each connection.
    assert!(example::ECHO_BODY > 2 * lapce_ipc::StreamConfig::default().ring_capacity);
    let expected = |version: Version| example::Exchange {
        version,
        hello: format!("hello over {version:?}"),
        echoed: true,
    };
    assert_eq!(http1, expected(Version::HTTP_11));
    assert_eq!(http2, expected(Version::HTTP_2));
    // Both connections closed: the server exits by itself.
    server.wait_success(Duration::from_secs(60));
}
