//! A tonic gRPC service over shared memory: `cargo run -p lapce-ipc --features grpc --example
//! grpc_over_shm`.
//!
//! The process starts itself again as the server (`grpc_over_shm serve NAME`), then calls it as
//! an ordinary tonic client would: a unary `Complete` (with an attachment larger than the rings,
//! sent back reversed), a server-streaming `StreamComplete`, and `Stop`, after which the server
//! exits and is reaped. The service is generated from `examples/proto/chat.proto` (the code is
//! checked in beside it: no protoc at build time); only the transport differs from a TCP
//! service: [`ShmIncoming`] on the server, [`grpc::connect`] on the client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapce_ipc::grpc::{self, ShmConnectInfo, ShmIncoming};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// The code generated from `examples/proto/chat.proto` (see scripts/grpc-codegen).
pub mod chat {
    include!("proto/lapce.chat.v1.rs");
}

use chat::chat_client::ChatClient;
use chat::chat_server::{Chat, ChatServer};
use chat::{CompleteReply, CompleteRequest, StopReply, StopRequest, Token};

/// Size of the attachment the client sends: twelve times the default ring (256 KiB), under
/// tonic's default 4 MiB message limit.
pub const ATTACHMENT: usize = 3 << 20;

/// Token `i` of the completion of `prompt`.
pub fn token(prompt: &str, i: u32) -> String {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let word = words.get(i as usize % words.len().max(1)).copied().unwrap_or("…");
    format!("{word}#{i} ")
}

/// The mock engine: completes a prompt by cycling through its words.
#[derive(Debug)]
struct MockEngine {
    /// Notified by `Stop`.
    stop: Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl Chat for MockEngine {
    async fn complete(&self, request: Request<CompleteRequest>) -> Result<Response<CompleteReply>, Status> {
        // Set by the server for each connection from `ShmConnection`'s `Connected` impl.
        let client_pid = request.extensions().get::<ShmConnectInfo>().map_or(0, |info| info.peer_pid);
        let req = request.into_inner();
        let text: String = (0..req.max_tokens).map(|i| token(&req.prompt, i)).collect();
        let attachment: Vec<u8> = req.attachment.iter().rev().copied().collect();
        Ok(Response::new(CompleteReply {
            text,
            tokens: req.max_tokens,
            attachment: attachment.into(),
            client_pid,
        }))
    }

    type StreamCompleteStream = futures::stream::BoxStream<'static, Result<Token, Status>>;

    async fn stream_complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let req = request.into_inner();
        let delay = Duration::from_millis(req.token_delay_ms.into());
        let tokens = futures::stream::iter(0..req.max_tokens).then(move |index| {
            let text = token(&req.prompt, index);
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Token { index, text })
            }
        });
        Ok(Response::new(tokens.boxed()))
    }

    async fn stop(&self, _request: Request<StopRequest>) -> Result<Response<StopReply>, Status> {
        self.stop.notify_one();
        Ok(Response::new(StopReply {}))
    }
}

/// Serves the chat service on the listener `name` until a client calls `Stop` (then answers
/// the calls in flight and returns).
pub fn serve(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let stop = Arc::new(tokio::sync::Notify::new());
        let engine = MockEngine { stop: Arc::clone(&stop) };
        let incoming = ShmIncoming::bind(name)?;
        Server::builder()
            .add_service(ChatServer::new(engine))
            .serve_with_incoming_shutdown(incoming, stop.notified())
            .await?;
        Ok(())
    })
}

/// A client of the server at `name`, waiting up to a minute for it to bind.
pub async fn connect(name: &str) -> Result<ChatClient<Channel>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match grpc::connect(name).await {
            Ok(channel) => return Ok(ChatClient::new(channel)),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the client saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// The unary completion's text matched.
    pub completed: bool,
    /// The attachment came back reversed, whole.
    pub attachment_ok: bool,
    /// The client's pid, as the server saw it.
    pub client_pid: u32,
    /// Tokens streamed, in order and as expected.
    pub streamed: u32,
}

/// Calls `Complete`, `StreamComplete` and `Stop` on the server at `name`.
pub async fn run_client(name: &str) -> Result<Summary, Box<dyn std::error::Error>> {
    let mut client = connect(name).await?;
    let prompt = "fn main() { println!(\"hello\") }".to_string();
    let attachment: Vec<u8> = (0..ATTACHMENT).map(|i| (i % 251) as u8).collect();
    let request = CompleteRequest {
        prompt: prompt.clone(),
        max_tokens: 8,
        attachment: attachment.clone().into(),
        token_delay_ms: 0,
    };
    let reply = client.complete(request).await?.into_inner();
    let expected: String = (0..8).map(|i| token(&prompt, i)).collect();
    let attachment_ok =
        reply.attachment.len() == ATTACHMENT && reply.attachment.iter().eq(attachment.iter().rev());

    let request = CompleteRequest {
        prompt: prompt.clone(),
        max_tokens: 100,
        attachment: Default::default(),
        token_delay_ms: 0,
    };
    let mut tokens = client.stream_complete(request).await?.into_inner();
    let mut streamed = 0;
    while let Some(t) = tokens.message().await? {
        if t.index == streamed && t.text == token(&prompt, streamed) {
            streamed += 1;
        }
    }
    client.stop(StopRequest {}).await?;
    Ok(Summary {
        completed: reply.text == expected && reply.tokens == 8,
        attachment_ok,
        client_pid: reply.client_pid,
        streamed,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, name] = &args[..] {
        if role == "serve" {
            return serve(name);
        }
    }
    let name = format!("grpc-over-shm-{}", std::process::id());
    let mut server = std::process::Command::new(std::env::current_exe()?).args(["serve", &name]).spawn()?;
    // The client's runtime is what `#[tokio::main]` makes: multi-thread, default settings.
    let summary = tokio::runtime::Runtime::new()?.block_on(run_client(&name));
    if summary.is_err() {
        // No `Stop` went through: the server would wait for one forever.
        let _ = server.kill();
    }
    let status = server.wait()?;
    let summary = summary?;
    println!("{summary:?}; server {status}");
    let pid_seen = summary.client_pid == std::process::id();
    if !(summary.completed && summary.attachment_ok && summary.streamed == 100 && pid_seen) {
        return Err("the server's answers were not as expected".into());
    }
    if !status.success() {
        return Err(format!("the server failed: {status}").into());
    }
    Ok(())
}
