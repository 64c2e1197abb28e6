//! An AI engine behind typed handlers: `cargo run -p lapce-ipc --example ai_engine`.
//!
//! Run with no arguments it starts itself as the engine (`ai_engine serve NAME`, a process of
//! its own), asks it for a completion, a streamed chat and a tool call, prints what came back,
//! and stops it. The engine is a stand-in model that answers from the prompt:
//! - `Complete`: an [`AIRequest`] in JSON answered by a [`CompletionResponse`];
//! - `Chat`: an [`AIRequest`] in JSON answered by a stream of [`StreamChunk`]s, a word each,
//!   the last with `finishReason: "stop"`;
//! - `RUN_TOOL` (an application method): a [`ToolCall`] in rkyv answered by a [`ToolResult`];
//! - `METRICS` (an application method): the engine's own Prometheus registry as text: its
//!   own series (`engine_chat_words_total`) beside the server's, registered into it;
//! - `STOP` (an application method): shuts the engine down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{
    AIRequest, CompletionResponse, ErrorBody, ErrorCode, Json, Message, RawJson, Rkyv, StreamChunk, ToolCall,
    ToolResult, Usage,
};
use lapce_ipc::{IpcClient, IpcConfig, IpcError, IpcServer, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Runs a tool: `{"a": .., "b": ..}` to their sum.
const RUN_TOOL: MessageType = MessageType::app(1);
/// Stops the engine.
const STOP: MessageType = MessageType::app(2);
/// Answers the engine's metrics (OpenMetrics text).
const METRICS: MessageType = MessageType::app(3);

/// What the client got back.
#[derive(Debug)]
pub struct Summary {
    /// The answer to the completion.
    pub completion: CompletionResponse,
    /// The streamed chat's chunks, in order.
    pub chunks: Vec<StreamChunk>,
    /// The tool's result.
    pub tool: ToolResult,
    /// What the engine answered to a tool call with arguments of the wrong shape.
    pub bad_tool: ErrorBody,
    /// The engine's metrics after all that.
    pub metrics: String,
}

/// The last user message, or an error the client sees as a bad request.
fn prompt(request: &AIRequest) -> std::result::Result<&str, ErrorBody> {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == lapce_ipc::messages::MessageRole::User)
        .map(|m| m.content.as_str())
        .ok_or_else(|| ErrorBody::new(ErrorCode::BAD_REQUEST, "no user message"))
}

fn complete(request: &AIRequest) -> std::result::Result<CompletionResponse, ErrorBody> {
    let text = prompt(request)?;
    Ok(CompletionResponse {
        content: format!("You asked: {text}"),
        model: Some(request.model.clone()),
        finish_reason: Some("stop".into()),
        usage: Some(Usage { prompt_tokens: text.split_whitespace().count() as u32, completion_tokens: 1 }),
        ..CompletionResponse::default()
    })
}

/// The tool: adds `a` and `b`; arguments of another shape are a bad request (through `?`).
fn run_tool(call: &ToolCall) -> std::result::Result<ToolResult, ErrorBody> {
    #[derive(serde::Deserialize)]
    struct Sum {
        a: i64,
        b: i64,
    }
    let args: Sum = call.parameters.parse()?;
    Ok(ToolResult { tool_call_id: call.id.clone(), content: (args.a + args.b).to_string(), is_error: None })
}

fn register(server: &IpcServer) {
    // The engine's own registry, as an application has one: its series and the server's.
    let mut registry = Registry::with_prefix("engine");
    let words = Counter::<u64>::default();
    registry.register("chat_words", "Words streamed by the chat", words.clone());
    server.register_metrics(&mut registry).expect("metrics are on by default");
    let registry = Arc::new(registry);
    server.register_sync_handler(METRICS, move |_| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))?;
        Ok(bytes::Bytes::from(text))
    });
    server.register_typed(
        MessageType::Complete,
        Json,
        |_, request: AIRequest| async move { complete(&request) },
    );
    server.register_typed_stream(MessageType::Chat, Json, move |_, request: AIRequest, sink| {
        let counted = words.clone();
        async move {
            let words: Vec<String> = prompt(&request)?.split_whitespace().map(str::to_owned).collect();
            for (i, word) in words.iter().enumerate() {
                let last = i + 1 == words.len();
                let chunk = StreamChunk {
                    delta: if i == 0 { word.clone() } else { format!(" {word}") },
                    finish_reason: last.then(|| "stop".to_owned()),
                    ..StreamChunk::default()
                };
                sink.send_typed(&Json, &chunk).await?;
                counted.inc();
            }
            Ok(())
        }
    });
    server.register_typed(RUN_TOOL, Rkyv, |_, call: ToolCall| async move { run_tool(&call) });
    let handle = server.clone();
    server.register_sync_handler(STOP, move |_| {
        handle.shutdown(Duration::from_secs(1));
        Ok(bytes::Bytes::new())
    });
}

/// The engine: serves `name` until a client sends `STOP`.
pub fn serve(name: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(name, IpcConfig::default()).expect("bind");
        register(&server);
        server.serve().await.expect("serve");
    });
}

/// Connects to the engine, waiting up to a minute for it to come up.
async fn connect(name: &str) -> Result<IpcClient> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match IpcClient::connect(name, IpcConfig::default()).await {
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// Asks the engine at `name` for a completion, a streamed chat and two tool calls.
pub fn run_client(name: &str) -> Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = connect(name).await?;
        let request = AIRequest {
            messages: vec![Message::system("Be brief."), Message::user("stream these five words please")],
            model: "stand-in".into(),
            ..AIRequest::default()
        };
        let completion = client.request_typed(MessageType::Complete, &Json, &request).await?;

        let mut stream = client.request_stream_typed(MessageType::Chat, &Json, &request).await?;
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next_typed(&Json).await {
            chunks.push(chunk?);
        }

        let call = ToolCall {
            name: "add".into(),
            parameters: RawJson::new(r#"{"a": 40, "b": 2}"#)?,
            id: "call-1".into(),
        };
        let tool = client.request_typed(RUN_TOOL, &Rkyv, &call).await?;
        let bad = ToolCall { parameters: RawJson::new(r#"{"a": "forty"}"#)?, ..call };
        let bad_tool = match client.request_typed::<_, ToolResult, _>(RUN_TOOL, &Rkyv, &bad).await {
            Err(IpcError::Remote(body)) => body,
            other => panic!("a bad tool call was answered with {other:?}"),
        };
        let metrics = client.request(METRICS, b"").await?;
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        Ok(Summary { completion, chunks, tool, bad_tool, metrics })
    })
}

/// Asks the engine at `name` to stop.
pub fn stop(name: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { connect(name).await?.request(STOP, b"").await.map(|_| ()) })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [role, name] = args.as_slice() {
        assert_eq!(role, "serve", "usage: ai_engine [serve NAME]");
        serve(name);
        return;
    }
    let name = format!("ai-engine-{}", std::process::id());
    let exe = std::env::current_exe().expect("this example's path");
    let mut engine =
        std::process::Command::new(exe).args(["serve", &name]).spawn().expect("start the engine");
    let summary = run_client(&name);
    let stopped = stop(&name);
    let status = engine.wait().expect("reap the engine");
    let summary = summary.expect("the engine answered");
    stopped.expect("the engine stopped");
    assert!(status.success(), "the engine failed: {status}");
    println!("completion: {}", summary.completion.content);
    let text: String = summary.chunks.iter().map(|c| c.delta.as_str()).collect();
    println!("chat, {} chunks: {text}", summary.chunks.len());
    println!("tool {}: {}", summary.tool.tool_call_id, summary.tool.content);
    println!("bad tool call: {} {}", summary.bad_tool.code, summary.bad_tool.message);
}
