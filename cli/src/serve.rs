//! `lapce-ipc serve`: an `IpcServer` with an echo handler and a mock AI engine, until Ctrl-C;
//! `lapce-ipc call`: one request from the command line, its answer (or streamed chunks) printed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use lapce_ipc::frame::MessageType;
use lapce_ipc::protocol::{
    AIRequest, Codec, CompletionResponse, ErrorBody, ErrorCode, MessageRole, StreamChunk,
};
use lapce_ipc::{IpcClient, IpcConfig, IpcError, IpcServer, ServerStats};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listener name.
    #[arg(default_value = "lapce-ai")]
    pub name: String,
    /// TOML configuration file (`[ipc]` and `[metrics]`; see docs/config.example.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Pause between two streamed tokens of the mock AI engine, in milliseconds.
    #[arg(long, default_value_t = 15)]
    pub token_delay_ms: u64,
    /// On Ctrl-C, how long requests in flight may take to finish before they are aborted.
    #[arg(long, default_value_t = 5)]
    pub grace_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (default:
    /// `metrics.addr` of the configuration, else no endpoint). Keep it on loopback: the endpoint
    /// has no authentication. Port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Arguments of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Listener name of the server.
    pub name: String,
    /// Message type of the request.
    #[arg(long = "type", value_enum, default_value_t = CallType::Data)]
    pub kind: CallType,
    /// The payload as JSON (for chat and complete: an AIRequest as a TypeScript client writes
    /// it, e.g. '{"model":"mock","messages":[{"role":"user","content":"hi"}]}').
    #[arg(long, conflicts_with = "text")]
    pub json: Option<String>,
    /// The payload as plain text.
    #[arg(long)]
    pub text: Option<String>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
}

/// Request types `call` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallType {
    /// Echoed by `lapce-ipc serve`.
    Data,
    /// Answered by the server itself.
    Heartbeat,
    /// A completion: one `CompletionResponse`.
    Complete,
    /// A chat: the answer streamed token by token (`StreamChunk`s).
    Chat,
}

impl CallType {
    fn message_type(self) -> MessageType {
        match self {
            CallType::Data => MessageType::Data,
            CallType::Heartbeat => MessageType::Heartbeat,
            CallType::Complete => MessageType::Complete,
            CallType::Chat => MessageType::Chat,
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Runs `serve`.
pub fn serve(args: &ServeArgs) -> ExitCode {
    match serve_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lapce-ipc serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_inner(args: &ServeArgs) -> Result<(), IpcError> {
    let mut config = match &args.config {
        Some(path) => IpcConfig::from_file(path)?,
        None => IpcConfig::default(),
    };
    // A process of its own: giving its free heap back to the OS concerns nobody else.
    config.ipc.trim_heap = true;
    if args.print_config {
        print!("{}", config.to_toml_string());
        return Ok(());
    }
    let name = args.name.clone();
    // Served here rather than by `IpcServer::serve`, to print the port that 0 picked.
    let metrics_addr = match (args.metrics_addr, config.metrics.addr.take()) {
        (Some(addr), _) => Some(addr),
        // Checked by the configuration's validation already.
        (None, Some(addr)) => Some(addr.parse::<SocketAddr>().map_err(|e| {
            IpcError::InvalidArgument(format!("metrics.addr {addr:?} is not a socket address: {e}"))
        })?),
        (None, None) => None,
    };
    let token_delay = Duration::from_millis(args.token_delay_ms);
    let limit = config.ipc.max_connections;
    let grace = Duration::from_secs(args.grace_secs);
    runtime()?.block_on(async move {
        let server = IpcServer::bind(&name, config)?;
        server.register_sync_handler(MessageType::Data, Ok);
        server.register_handler(MessageType::Complete, |request: Bytes| async move {
            let request = decode_request(&request)?;
            let response = CompletionResponse {
                content: mock_answer(&request),
                model: Some(request.model),
                finish_reason: Some("stop".into()),
                ..CompletionResponse::default()
            };
            encode(&response)
        });
        server.register_stream_handler(MessageType::Chat, move |request: Bytes, out| async move {
            let request = decode_request(&request)?;
            for token in tokens(&mock_answer(&request)) {
                tokio::time::sleep(token_delay).await;
                let chunk = StreamChunk { delta: token.to_string(), ..StreamChunk::default() };
                out.send(encode(&chunk)?).await.map_err(|e| ErrorBody::new(ErrorCode::UNAVAILABLE, e.to_string()))?;
            }
            let last = StreamChunk { finish_reason: Some("stop".into()), ..StreamChunk::default() };
            out.send(encode(&last)?).await.map_err(|e| ErrorBody::new(ErrorCode::UNAVAILABLE, e.to_string()))
        });
        let _metrics = match metrics_addr {
            Some(addr) => {
                let endpoint = server.serve_metrics(addr).await?;
                if !addr.ip().is_loopback() {
                    eprintln!(
                        "lapce-ipc serve: warning: the metrics endpoint listens on {addr}, not on loopback; \
                         it has no authentication"
                    );
                }
                eprintln!("lapce-ipc serve: metrics at {}", endpoint.url());
                Some(endpoint)
            }
            None => None,
        };
        eprintln!(
            "lapce-ipc serve: listening as {name:?} on {} (echo: data; mock AI: complete, chat). Ctrl-C stops.",
            server.path().display()
        );
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve().await }
        });
        let (stop_watching, stop) = tokio::sync::watch::channel(false);
        let watching = tokio::spawn(warn_of_refusals(server.clone(), limit, stop));
        tokio::signal::ctrl_c().await?;
        eprintln!("lapce-ipc serve: stopping (requests in flight get up to {grace:?})");
        server.shutdown(grace);
        serving.await.map_err(|e| IpcError::Io(std::io::Error::other(e)))??;
        stop_watching.send_replace(true);
        let _ = watching.await;
        let s = server.stats();
        eprintln!(
            "lapce-ipc serve: stopped after {} connections, {} requests ({} errors, {} panics); \
             refused {} connections at the limit or during shutdown, {} clients in the handshake",
            s.connections_accepted,
            s.requests,
            s.errors,
            s.panics,
            s.connections_refused,
            s.handshakes_refused
        );
        Ok(())
    })
}

/// How often `serve` looks for new refusals in the server's counters.
const REFUSAL_POLL: Duration = Duration::from_millis(100);

/// Prints a warning for each peer the server refuses (the library counts them, see
/// [`IpcServer::stats`]): at the connection limit (`limit`) or during shutdown, or in the
/// handshake (another user, a bad or late hello). Looks every [`REFUSAL_POLL`] until `stop`
/// says so, then once more, so every refusal counted in the summary was warned of.
async fn warn_of_refusals(server: IpcServer, limit: usize, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut seen = ServerStats::default();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(REFUSAL_POLL) => false,
            _ = stop.changed() => true,
        };
        let now = server.stats();
        for _ in seen.connections_refused..now.connections_refused {
            eprintln!(
                "lapce-ipc serve: warning: refused a connection (at the limit of {limit} connections, or shutting down)"
            );
        }
        for _ in seen.handshakes_refused..now.handshakes_refused {
            eprintln!(
                "lapce-ipc serve: warning: refused a client in the handshake (another user, or a bad or late hello)"
            );
        }
        seen = now;
        if stopping {
            return;
        }
    }
}

fn decode_request(bytes: &[u8]) -> Result<AIRequest, ErrorBody> {
    AIRequest::from_json(bytes).map_err(|e| ErrorBody::new(ErrorCode::BAD_REQUEST, e.to_string()))
}

fn encode<T: Codec>(value: &T) -> Result<Bytes, ErrorBody> {
    value.to_json().map(Bytes::from).map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))
}

/// The mock engine's answer: it quotes the last user message.
fn mock_answer(request: &AIRequest) -> String {
    let asked = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == MessageRole::User)
        .map(|m| m.content.as_str())
        .unwrap_or("nothing");
    format!("You asked: \"{asked}\". This is the lapce-ipc mock engine, answering token by token.")
}

/// Splits text into tokens that concatenate back to it: each word with the space before it.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let skip = rest.len() - rest.trim_start().len();
        let end = rest[skip..].find(' ').map_or(rest.len(), |i| skip + i);
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

/// Runs `clean`.
pub fn clean() -> ExitCode {
    match lapce_ipc::clean_stale_sockets() {
        Ok(removed) => {
            for path in &removed {
                println!("removed {}", path.display());
            }
            eprintln!("lapce-ipc clean: {} stale socket file(s) removed", removed.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lapce-ipc clean: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `call`.
pub fn call(args: &CallArgs) -> ExitCode {
    match call_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lapce-ipc call: {e}");
            ExitCode::FAILURE
        }
    }
}

fn call_inner(args: &CallArgs) -> Result<(), IpcError> {
    let payload = match (&args.json, &args.text) {
        (Some(json), _) => {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| IpcError::InvalidArgument(format!("--json is not valid JSON: {e}")))?;
            if matches!(args.kind, CallType::Chat | CallType::Complete) {
                // Refuse a malformed request here, with the decoder's precise message.
                AIRequest::from_json(json.as_bytes())?;
            }
            Bytes::from(json.clone().into_bytes())
        }
        (None, Some(text)) => Bytes::from(text.clone().into_bytes()),
        (None, None) if matches!(args.kind, CallType::Chat | CallType::Complete) => {
            return Err(IpcError::InvalidArgument(format!(
                "--type {:?} needs --json with an AIRequest",
                args.kind
            )))
        }
        (None, None) => Bytes::new(),
    };
    let mut config = IpcConfig::default();
    config.ipc.request_timeout_ms = args.timeout_ms;
    let kind = args.kind.message_type();
    runtime()?.block_on(async {
        let client = IpcClient::connect(&args.name, config).await?;
        let mut stdout = std::io::stdout();
        if args.kind == CallType::Chat {
            let mut stream = client.request_stream(kind, payload).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = StreamChunk::from_json(&chunk?)?;
                print!("{}", chunk.delta);
                stdout.flush()?;
                if let Some(reason) = chunk.finish_reason {
                    println!();
                    eprintln!("[finish reason: {reason}]");
                }
            }
            return Ok(());
        }
        let answer = client.request(kind, payload).await?;
        match std::str::from_utf8(&answer) {
            Ok(text) => println!("{text}"),
            Err(_) => println!("{answer:?}"),
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_back_to_the_text() {
        let text = "You asked: \"hi  there\". Done.";
        let got: Vec<_> = tokens(text).collect();
        assert_eq!(got.concat(), text);
        assert_eq!(got[0], "You");
        assert_eq!(got[1], " asked:");
        assert!(got.len() >= 4);
    }
}
