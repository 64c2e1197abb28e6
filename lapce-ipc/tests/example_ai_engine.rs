//! Runs `examples/ai_engine.rs` across two processes: its engine in a child (this test binary
//! re-run in the `ai-engine` role), its client here.

use crate::common;

use std::time::Duration;

use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::messages::ErrorCode;

#[path = "../examples/ai_engine.rs"]
#[allow(dead_code)]
mod example;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "ai-engine");
    example::serve(&name);
}

#[test]
fn the_ai_engine_completes_streams_and_runs_tools() {
    let name = unique_name("ai-engine");
    let mut engine = ChildGuard::spawn("ai-engine", &name).listening_on(&name);
    let summary = example::run_client(&name).expect("the engine answered");

    assert_eq!(summary.completion.content, "You asked: stream these five words please");
    assert_eq!(summary.completion.model.as_deref(), Some("stand-in"));
    let deltas: Vec<&str> = summary.chunks.iter().map(|c| c.delta.as_str()).collect();
    assert_eq!(deltas, ["stream", " these", " five", " words", " please"]);
    let finished: Vec<Option<&str>> = summary.chunks.iter().map(|c| c.finish_reason.as_deref()).collect();
    assert_eq!(finished, [None, None, None, None, Some("stop")]);
    assert_eq!((summary.tool.tool_call_id.as_str(), summary.tool.content.as_str()), ("call-1", "42"));
    assert_eq!(summary.bad_tool.code, ErrorCode::BAD_REQUEST);
    assert!(summary.bad_tool.message.contains("invalid type"), "{}", summary.bad_tool.message);

    // The engine's registry: its own series beside the server's, registered into it.
    let metrics = &summary.metrics;
    assert!(metrics.contains("\nengine_chat_words_total 5\n"), "{metrics}");
    assert!(metrics.contains("\nengine_lapce_ipc_requests_total{type=\"Complete\"} 1\n"), "{metrics}");
    assert!(metrics.contains("\nengine_lapce_ipc_requests_total{type=\"App(1)\"} 2\n"), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    example::stop(&name).expect("the engine stops");
    engine.wait_success(Duration::from_secs(30));
    assert!(!lapce_ipc::socket_path(&name).unwrap().exists(), "the engine removed its socket file");
}
