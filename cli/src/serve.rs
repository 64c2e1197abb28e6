//! `lapce-ipc serve`: an `IpcServer` with an echo handler and a mock AI engine, until Ctrl-C;
//! `lapce-ipc call`: one request from the command line, its answer (or streamed chunks) printed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{
    AIRequest, Codec, CompletionResponse, ErrorBody, ErrorCode, MessageRole, StreamChunk,
};
use lapce_ipc::{IpcClient, IpcConfig, IpcError, IpcServer, ServerStats};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listener name.
    #[arg(default_value = "lapce-ai")]
    pub name: String,
    /// TOML configuration file (`[ipc]` and `[metrics]`).
    ///
    /// Every key is optional; lapce-ipc/config.example.toml in the repository lists them all
    /// with their defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Pause between two streamed tokens of the mock AI engine, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 15)]
    pub token_delay_ms: u64,
    /// On Ctrl-C, seconds requests in flight get to finish before they are aborted.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub grace_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    ///
    /// Default: `metrics.addr` of the configuration, else no endpoint. Keep it on loopback: the
    /// endpoint has no authentication. Port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: crate::remote::ServeTls,
}

/// Arguments of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Listener name of the server, or tls://HOST:PORT for a remote one.
    #[arg(default_value = "lapce-ai")]
    pub name: String,
    /// TOML configuration file, the same as the server's (`serve --config`).
    ///
    /// The client takes from it what it must agree on with the server (`socket_dir`,
    /// `allowed_uids`, `ring_size`, ...) and its request timeout (`request_timeout_ms`, unless
    /// --timeout-ms is given). Without it, the defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Message type: a name, or a number 1 to 65535 (decimal or 0x hex); see --help.
    // The long help is made at run time: it lists the names of this build's message types.
    #[arg(long = "type", value_name = "TYPE", default_value = "data", value_parser = parse_message_type,
          long_help = type_long_help())]
    pub kind: MessageType,
    /// The payload as JSON (for chat and complete: an AIRequest, see --help).
    ///
    /// For chat and complete an AIRequest as a TypeScript client writes it, e.g.
    /// '{"model":"mock","messages":[{"role":"user","content":"hi"}]}'; it is checked before it
    /// is sent.
    #[arg(long, conflicts_with = "text")]
    pub json: Option<String>,
    /// The payload as plain text.
    #[arg(long)]
    pub text: Option<String>,
    /// Give up after this many milliseconds [default: the configuration's, 30000].
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    #[command(flatten)]
    pub tls: crate::remote::CallTls,
}

/// The message types that have a name in this build, with their names as `call --type` takes
/// them (`StreamChunk` is `stream-chunk`). Read from [`MessageType::from_u16`], so a type the
/// library adds is named here too.
fn named_message_types() -> impl Iterator<Item = (String, MessageType)> {
    let named = |t: &MessageType| !matches!(t, MessageType::Unknown(_) | MessageType::App(_));
    (1..=u16::MAX).map(MessageType::from_u16).filter(named).map(|t| {
        let mut name = String::new();
        for (i, c) in format!("{t:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('-');
            }
            name.push(c.to_ascii_lowercase());
        }
        (name, t)
    })
}

/// The long help of `call --type`, with the names of this build's message types.
fn type_long_help() -> String {
    let names: Vec<String> =
        named_message_types().map(|(name, t)| format!("{name} ({:#x})", t.to_u16())).collect();
    let text = "Message type: a name, or a number 1 to 65535 (decimal or 0x hex).\n\n\
                Names: TYPES. A number is the wire value (0 is reserved), e.g. 0x100 for complete \
                or a type a server of your own handles (0x8000 + n is application method n, \
                MessageType::app(n)). chat streams its answer; every other type gets one answer.";
    text.replace("TYPES", &names.join(", "))
}

/// Parses `call --type`: a message type's name, or its wire value in decimal or `0x` hex.
fn parse_message_type(text: &str) -> Result<MessageType, String> {
    let lower = text.trim().to_ascii_lowercase();
    let number = match lower.strip_prefix("0x") {
        Some(hex) => Some(u32::from_str_radix(hex, 16)),
        None if lower.starts_with(|c: char| c.is_ascii_digit()) => Some(lower.parse::<u32>()),
        None => None,
    };
    match number {
        Some(Ok(0)) => Err("0 is reserved; a message type is 1 to 65535 (0xffff)".into()),
        Some(Ok(v)) => u16::try_from(v)
            .map(MessageType::from_u16)
            .map_err(|_| format!("{v} is out of range; a message type is 1 to 65535 (0xffff)")),
        Some(Err(_)) => Err(format!(
            "{text:?} is not a number from 1 to 65535 (0xffff); decimal or 0x hex, e.g. 256 or 0x100"
        )),
        None => named_message_types().find(|(name, _)| *name == lower).map(|(_, t)| t).ok_or_else(|| {
            let names: Vec<String> = named_message_types().map(|(name, _)| name).collect();
            format!("unknown message type {text:?}; one of {}, or a number 1 to 65535", names.join(", "))
        }),
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
    args.tls.apply(&mut config)?;
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
        let _tls = args.tls.listen(&server).await?;
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
            if matches!(args.kind, MessageType::Chat | MessageType::Complete) {
                // Refuse a malformed request here, with the decoder's precise message.
                AIRequest::from_json(json.as_bytes())?;
            }
            Bytes::from(json.clone().into_bytes())
        }
        (None, Some(text)) => Bytes::from(text.clone().into_bytes()),
        (None, None) if matches!(args.kind, MessageType::Chat | MessageType::Complete) => {
            return Err(IpcError::InvalidArgument(format!(
                "--type {:?} needs --json with an AIRequest",
                args.kind
            )))
        }
        (None, None) => Bytes::new(),
    };
    let mut config = match &args.config {
        Some(path) => IpcConfig::from_file(path)?,
        None => IpcConfig::default(),
    };
    if let Some(ms) = args.timeout_ms {
        config.ipc.request_timeout_ms = ms;
    }
    args.tls.apply(&mut config);
    let name = args.name.clone();
    let kind = args.kind;
    runtime()?.block_on(async {
        let client = IpcClient::connect(&name, config).await?;
        let mut stdout = std::io::stdout();
        if kind == MessageType::Chat {
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

    #[test]
    fn message_types_parse_by_name_decimal_and_hex() {
        assert_eq!(parse_message_type("chat"), Ok(MessageType::Chat));
        assert_eq!(parse_message_type("Stream-Chunk"), Ok(MessageType::StreamChunk));
        assert_eq!(parse_message_type("256"), Ok(MessageType::Complete));
        assert_eq!(parse_message_type("0x102"), Ok(MessageType::Cancel));
        assert_eq!(parse_message_type("0x7A01"), Ok(MessageType::Unknown(0x7a01)));
        assert_eq!(parse_message_type("0xBEEF"), Ok(MessageType::app(0xbeef - 0x8000)));
        assert_eq!(parse_message_type("65535"), Ok(MessageType::app(0x7fff)));
        assert!(parse_message_type("65536").unwrap_err().contains("out of range"));
        assert!(parse_message_type("0x10000").unwrap_err().contains("out of range"));
        assert!(parse_message_type("0").unwrap_err().contains("reserved"));
        assert!(parse_message_type("0xzz").unwrap_err().contains("not a number"));
        assert!(parse_message_type("-1").unwrap_err().contains("unknown message type"));
        assert!(parse_message_type("bogus").unwrap_err().contains("stream-window"));
        // Every name the library has, and each parses back to its type.
        let names: Vec<_> = named_message_types().collect();
        // The named types only: application methods (0x8000 and up) are numbers, not 32,768 names.
        assert!(names.len() < 32, "{} named types", names.len());
        assert!(names.len() >= 11, "{names:?}");
        for (name, t) in names {
            assert_eq!(parse_message_type(&name), Ok(t));
        }
    }
}
