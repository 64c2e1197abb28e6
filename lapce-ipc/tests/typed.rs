//! Typed requests across processes: the server (this test binary re-run in the `typed-server`
//! role) registers typed, context-taking and application-id handlers; the client in the test
//! calls them.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{AIRequest, CompletionResponse, ErrorCode, Json, Message, Rkyv, Usage};
use lapce_ipc::{BlockingIpcClient, IpcClient, IpcConfig, IpcError, IpcServer, RequestContext};

/// Completes an [`AIRequest`] in JSON: the last message upper-cased.
const COMPLETE_JSON: MessageType = MessageType::app(1);
/// The same in rkyv.
const COMPLETE_RKYV: MessageType = MessageType::app(2);
/// The same, a sync handler, in JSON.
const COMPLETE_SYNC: MessageType = MessageType::app(3);
/// Fails with `?` on an `IpcError::Timeout`.
const FAILS_WITH_TIMEOUT: MessageType = MessageType::app(4);
/// Answers its context as JSON: `[request id, message type, peer pid or 0]`.
const CONTEXT: MessageType = MessageType::app(5);
/// Never answers; a task it starts counts the cancellations its context reports.
const WAITS: MessageType = MessageType::app(6);
/// Answers `[cancellations seen, server errors so far]` as JSON.
const COUNTS: MessageType = MessageType::app(7);
/// Streams one chunk, `[n + 1, the context's request id]`, then never ends; a task it starts counts the cancellations its context
/// reports.
const STREAM_WAITS: MessageType = MessageType::app(9);
/// The top of the application range, to show it is routed like the rest.
const LAST_APP: MessageType = MessageType::app(MessageType::APP_MAX);
/// No handler for this one.
const NOBODY: MessageType = MessageType::app(0x1234);
/// A tower service as a handler (with the `tower` feature).
#[cfg(feature = "tower")]
const SERVICE: MessageType = MessageType::app(8);

static CANCELS_SEEN: AtomicU64 = AtomicU64::new(0);

fn config() -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.request_timeout_ms = 60_000;
    config
}

fn complete(request: AIRequest) -> CompletionResponse {
    let last = request.messages.last().map(|m| m.content.to_uppercase()).unwrap_or_default();
    CompletionResponse {
        content: last,
        model: Some(request.model),
        usage: Some(Usage { prompt_tokens: request.messages.len() as u32, completion_tokens: 1 }),
        ..CompletionResponse::default()
    }
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "typed-server");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(&name, config()).unwrap();
        register(&server);
        server.serve().await.unwrap();
    });
}

fn register(server: &IpcServer) {
    server.register_typed(COMPLETE_JSON, Json, |_, request: AIRequest| async move { Ok(complete(request)) });
    server.register_typed(COMPLETE_RKYV, Rkyv, |_, request: AIRequest| async move { Ok(complete(request)) });
    server.register_typed_sync(COMPLETE_SYNC, Json, |request: AIRequest| Ok(complete(request)));
    server.register_typed(LAST_APP, Json, |_, n: u64| async move { Ok(n + 1) });
    server.register_typed(FAILS_WITH_TIMEOUT, Json, |_, _: AIRequest| async move {
        let upstream: Result<CompletionResponse, IpcError> = Err(IpcError::Timeout);
        let answer = upstream?;
        Ok(answer)
    });
    server.register_typed(CONTEXT, Json, |ctx: RequestContext, (): ()| async move {
        Ok((ctx.request_id(), ctx.message_type().to_u16(), ctx.peer_pid().unwrap_or(0)))
    });
    server.register_handler_with_context(WAITS, |ctx: RequestContext, _| async move {
        tokio::spawn(count_cancel(ctx.clone()));
        std::future::pending::<()>().await;
        Ok(Bytes::new())
    });
    server.register_typed_stream(STREAM_WAITS, Json, |ctx, n: u64, sink| async move {
        sink.send_typed(&Json, &(n + 1, ctx.request_id())).await?;
        tokio::spawn(count_cancel(ctx));
        std::future::pending::<()>().await;
        Ok(())
    });
    let handle = server.clone();
    server.register_typed_sync(COUNTS, Json, move |(): ()| {
        Ok((CANCELS_SEEN.load(Ordering::SeqCst), handle.stats().errors))
    });
    #[cfg(feature = "tower")]
    server.register_service(SERVICE, tower_service_fn::Upper);
}

/// Counts the request's cancellation once the context reports it.
async fn count_cancel(ctx: RequestContext) {
    ctx.cancelled().await;
    assert!(ctx.is_cancelled());
    CANCELS_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// A tower service that upper-cases its request and refuses an empty one.
#[cfg(feature = "tower")]
mod tower_service_fn {
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use lapce_ipc::messages::{ErrorBody, ErrorCode};

    #[derive(Clone)]
    pub struct Upper;

    impl tower_service::Service<Bytes> for Upper {
        type Response = Bytes;
        type Error = ErrorBody;
        type Future = std::future::Ready<Result<Bytes, ErrorBody>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ErrorBody>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Bytes) -> Self::Future {
            std::future::ready(if request.is_empty() {
                Err(ErrorBody::new(ErrorCode::BAD_REQUEST, "empty"))
            } else {
                Ok(Bytes::from(request.to_ascii_uppercase()))
            })
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn server(name: &str) -> ChildGuard {
    ChildGuard::spawn("typed-server", name).listening_on(name)
}

fn chat(text: &str) -> AIRequest {
    AIRequest { messages: vec![Message::user(text)], model: "test-model".into(), ..AIRequest::default() }
}

/// The server's `[cancellations seen, errors]`.
async fn counts(client: &IpcClient) -> (u64, u64) {
    client.request_typed(COUNTS, &Json, &()).await.unwrap()
}

#[test]
fn typed_requests_round_trip_in_json_and_rkyv_on_app_ids() {
    let name = unique_name("typed-trip");
    let _child = server(&name);
    runtime().block_on(async {
        let client = common::connect_client(&name, config()).await;
        for (kind, text) in [(COMPLETE_JSON, "json"), (COMPLETE_SYNC, "sync")] {
            let answer: CompletionResponse = client.request_typed(kind, &Json, &chat(text)).await.unwrap();
            assert_eq!(answer.content, text.to_uppercase());
            assert_eq!(answer.model.as_deref(), Some("test-model"));
        }
        let answer: CompletionResponse =
            client.request_typed(COMPLETE_RKYV, &Rkyv, &chat("rkyv")).await.unwrap();
        assert_eq!(answer.content, "RKYV");
        assert_eq!(answer.usage, Some(Usage { prompt_tokens: 1, completion_tokens: 1 }));
        // The wire carries what the encoding says: the JSON answer is the TypeScript shape.
        let raw =
            client.request(COMPLETE_JSON, br#"{"messages":[{"role":"user","content":"x"}],"model":"m"}"#);
        let raw = raw.await.unwrap();
        assert_eq!(
            &raw[..],
            br#"{"content":"X","model":"m","usage":{"promptTokens":1,"completionTokens":1}}"#
        );
        // The top of the application range is routed too; an unregistered app id is unknown.
        let next: u64 = client.request_typed(LAST_APP, &Json, &41u64).await.unwrap();
        assert_eq!(next, 42);
        match client.request(NOBODY, "x").await {
            Err(IpcError::UnknownMessageType(kind)) => assert_eq!(kind, NOBODY),
            other => panic!("unregistered app id: {other:?}"),
        }
    });
    // The blocking client's typed call.
    let client = BlockingIpcClient::connect(&name, config()).unwrap();
    let answer: CompletionResponse = client.request_typed(COMPLETE_RKYV, &Rkyv, &chat("blocking")).unwrap();
    assert_eq!(answer.content, "BLOCKING");
}

#[test]
fn a_request_that_does_not_decode_is_a_counted_bad_request() {
    let name = unique_name("typed-bad");
    let _child = server(&name);
    runtime().block_on(async {
        let client = common::connect_client(&name, config()).await;
        let (_, errors_before) = counts(&client).await;
        for (kind, format) in [(COMPLETE_JSON, "json"), (COMPLETE_RKYV, "rkyv"), (COMPLETE_SYNC, "json")] {
            match client.request(kind, b"\xFFnot a request").await {
                Err(IpcError::Remote(body)) => {
                    assert_eq!(body.code, ErrorCode::BAD_REQUEST, "{body:?}");
                    let expected = format!("bad request for {kind}: cannot decode AIRequest from {format}");
                    assert!(body.message.starts_with(&expected), "{}", body.message);
                }
                other => panic!("garbage for {kind}: {other:?}"),
            }
        }
        let (_, errors_after) = counts(&client).await;
        assert_eq!(errors_after - errors_before, 3, "each refusal counts as an error");
        // The client's side: an answer of another shape is a decode error naming the type.
        match client.request_typed::<AIRequest, String, _>(COMPLETE_JSON, &Json, &chat("x")).await {
            Err(IpcError::Decode { format: "json", what: "String", .. }) => {}
            other => panic!("answer of another type: {other:?}"),
        }
    });
}

#[test]
fn question_mark_on_an_ipc_error_reaches_the_client_with_its_code() {
    let name = unique_name("typed-q");
    let _child = server(&name);
    runtime().block_on(async {
        let client = common::connect_client(&name, config()).await;
        match client.request_typed::<_, CompletionResponse, _>(FAILS_WITH_TIMEOUT, &Json, &chat("x")).await {
            Err(IpcError::Remote(body)) => {
                assert_eq!(body.code, ErrorCode::TIMEOUT);
                assert_eq!(body.message, "timed out");
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn the_context_knows_the_request_and_the_client_process() {
    let name = unique_name("typed-ctx");
    let _child = server(&name);
    runtime().block_on(async {
        let client = common::connect_client(&name, config()).await;
        let (id1, kind1, pid): (u64, u16, u32) = client.request_typed(CONTEXT, &Json, &()).await.unwrap();
        let (id2, kind2, _): (u64, u16, u32) = client.request_typed(CONTEXT, &Json, &()).await.unwrap();
        assert_eq!((kind1, kind2), (CONTEXT.to_u16(), CONTEXT.to_u16()));
        assert!(id1 != 0 && id2 != 0 && id1 != id2, "ids {id1:#x} {id2:#x}");
        assert_eq!(pid, std::process::id(), "the peer pid the server saw is this process");
    });
}

#[test]
fn a_client_cancel_is_seen_through_the_context() {
    let name = unique_name("typed-cancel");
    let _child = server(&name);
    runtime().block_on(async {
        let client = common::connect_client(&name, config()).await;
        assert_eq!(counts(&client).await.0, 0);
        // The timeout cancels the request on the server.
        let waited = client.request_timeout(WAITS, "x", Some(Duration::from_millis(200))).await;
        assert!(matches!(waited, Err(IpcError::Timeout)), "{waited:?}");
        wait_for_cancels(&client, 1).await;
        // A request that completes is not reported as cancelled.
        let _: CompletionResponse = client.request_typed(COMPLETE_JSON, &Json, &chat("x")).await.unwrap();
        assert_eq!(counts(&client).await.0, 1);
    });
}

/// Waits until the server has seen `n` cancellations.
async fn wait_for_cancels(client: &IpcClient, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counts(client).await.0 < n {
        assert!(std::time::Instant::now() < deadline, "the handler never saw its cancellation");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(counts(client).await.0, n);
}

#[test]
fn a_typed_streams_context_has_its_id_and_sees_the_stream_dropped() {
    let name = unique_name("typed-stream-cancel");
    let _child = server(&name);
    runtime().block_on(async {
        let client = common::connect_client(&name, config()).await;
        let mut stream = client.request_stream_typed(STREAM_WAITS, &Json, &41u64).await.unwrap();
        let (first, id): (u64, u64) = stream.next_typed(&Json).await.unwrap().unwrap();
        assert_eq!(first, 42);
        assert_eq!(id, stream.request_id(), "the context's id is the client's");
        assert_eq!(counts(&client).await.0, 0);
        drop(stream);
        wait_for_cancels(&client, 1).await;
    });
}

#[cfg(feature = "tower")]
#[test]
fn a_tower_service_on_both_ends() {
    use tower_service::Service;

    let name = unique_name("typed-tower");
    let _child = server(&name);
    runtime().block_on(async {
        let mut client = common::connect_client(&name, config()).await;
        std::future::poll_fn(|cx| client.poll_ready(cx)).await.unwrap();
        let answer = client.call((SERVICE, Bytes::from_static(b"tower"))).await.unwrap();
        assert_eq!(&answer[..], b"TOWER");
        match client.call((SERVICE, Bytes::new())).await {
            Err(IpcError::Remote(body)) => assert_eq!(body.code, ErrorCode::BAD_REQUEST),
            other => panic!("{other:?}"),
        }
    });
}
