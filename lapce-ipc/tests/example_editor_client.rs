//! Runs `examples/editor_client.rs` across two processes: its engine (`serve`) in a child, its
//! editor (`run_client`) here.

use crate::common;

use std::time::Duration;

use common::{child_role, unique_name, ChildGuard};

#[path = "../examples/editor_client.rs"]
#[allow(dead_code)]
mod example;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "editor-engine");
    example::serve(&name);
}

#[test]
fn the_editor_client_example_runs_across_processes() {
    let name = unique_name("example-editor");
    // The editor connects while the engine is still starting.
    let mut engine = ChildGuard::spawn("editor-engine", &name).listening_on(&name);
    let summary = example::run_client(&name).unwrap();
    assert_eq!(summary.hover, "fn main() at main.rs:1:4");
    assert_eq!(summary.indexed, "indexed 42 files");
    assert_eq!(summary.completion, "let x = 42;");
    assert!(summary.cancelled, "the generation was not cancelled: {summary:?}");
    assert!(summary.generated > 0, "no token before the cancel");
    // The engine quit when told: it exits by itself.
    engine.wait_success(Duration::from_secs(60));
}
