//! tonic over shared memory (feature `grpc`), across processes: `examples/grpc_over_shm.rs`'s
//! server in a child, its client here. Unary and server-streaming calls, a message far larger
//! than the rings, and a server that dies in the middle of a call.

use crate::common;

use std::time::Duration;

use common::{child_role, unique_name, ChildGuard};

#[path = "../examples/grpc_over_shm.rs"]
#[allow(dead_code)]
mod example;

use example::chat::CompleteRequest;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "grpc-chat-server");
    example::serve(&name).unwrap();
}

/// A runtime like `#[tokio::main]`'s.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn the_grpc_example_runs_across_processes() {
    let name = unique_name("grpc-example");
    let mut server = ChildGuard::spawn("grpc-chat-server", &name).listening_on(&name);
    let summary = runtime().block_on(example::run_client(&name)).unwrap();
    // The 3 MiB attachment crossed 256 KiB rings both ways, whole and in order.
    assert!(example::ATTACHMENT > 10 * lapce_ipc::StreamConfig::default().ring_capacity);
    assert_eq!(
        summary,
        example::Summary {
            completed: true,
            attachment_ok: true,
            client_pid: std::process::id(),
            streamed: 100
        }
    );
    // `Stop` ended the server by itself.
    server.wait_success(Duration::from_secs(60));
}

#[test]
fn several_calls_share_one_connection_concurrently() {
    let name = unique_name("grpc-concurrent");
    let mut server = ChildGuard::spawn("grpc-chat-server", &name).listening_on(&name);
    runtime().block_on(async {
        let client = example::connect(&name).await.unwrap();
        let calls = (0..16u32).map(|i| {
            let mut client = client.clone();
            async move {
                let prompt = format!("call {i} of sixteen");
                let attachment: Vec<u8> =
                    (0..100_000 + i as usize).map(|b| (b * 7 + i as usize) as u8).collect();
                let request = CompleteRequest {
                    prompt: prompt.clone(),
                    max_tokens: i,
                    attachment: attachment.clone().into(),
                    token_delay_ms: 0,
                };
                let reply = client.complete(request).await.unwrap().into_inner();
                let expected: String = (0..i).map(|t| example::token(&prompt, t)).collect();
                assert_eq!(reply.text, expected);
                assert!(reply.attachment.iter().eq(attachment.iter().rev()), "call {i}: attachment");
            }
        });
        futures::future::join_all(calls).await;
        let mut client = client;
        client.stop(example::chat::StopRequest {}).await.unwrap();
    });
    server.wait_success(Duration::from_secs(60));
}

#[test]
fn a_server_killed_mid_stream_ends_the_call_with_an_error() {
    let name = unique_name("grpc-killed");
    let mut server = ChildGuard::spawn("grpc-chat-server", &name).listening_on(&name);
    runtime().block_on(async {
        let mut client = example::connect(&name).await.unwrap();
        // Endless tokens, a few milliseconds apart: the call is in flight when the server dies.
        let request = CompleteRequest {
            prompt: "never ending".into(),
            max_tokens: u32::MAX,
            attachment: Default::default(),
            token_delay_ms: 2,
        };
        let mut tokens = client.stream_complete(request).await.unwrap().into_inner();
        for i in 0..3 {
            let token = tokens.message().await.unwrap().expect("a token");
            assert_eq!(token.index, i);
        }
        server.kill();
        // Tokens already on their way may still arrive; then the call fails, it does not hang.
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match tokens.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await
        .expect("the stream hung after the server died");
        let status = outcome.expect_err("the stream ended cleanly though the server died");
        assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");

        // And a new call on the same channel fails too (the listener is gone).
        let request = CompleteRequest {
            prompt: "hello".into(),
            max_tokens: 1,
            attachment: Default::default(),
            token_delay_ms: 0,
        };
        let unary = tokio::time::timeout(Duration::from_secs(30), client.complete(request))
            .await
            .expect("a unary call hung after the server died");
        assert!(unary.is_err(), "a call succeeded with the server dead: {unary:?}");
    });
}
