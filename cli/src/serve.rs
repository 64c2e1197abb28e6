//! `lapce-ipc serve`: an `IpcServer` with an echo handler and a mock AI engine, until Ctrl-C.

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
use lapce_ipc::{IpcConfig, IpcError, IpcServer, MetricsEndpoint, ServerStats};

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

/// The runtime of `serve` and `call`.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
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
    let metrics_addr = metrics_addr(args, &mut config)?;
    let token_delay = Duration::from_millis(args.token_delay_ms);
    let limit = config.ipc.max_connections;
    let grace = Duration::from_secs(args.grace_secs);
    runtime()?.block_on(async move {
        let server = IpcServer::bind(&name, config)?;
        let _tls = args.tls.listen(&server).await?;
        register_handlers(&server, token_delay);
        let _metrics = match metrics_addr {
            Some(addr) => Some(serve_metrics(&server, addr).await?),
            None => None,
        };
        eprintln!(
            "lapce-ipc serve: listening as {name:?} on {} (echo: data; mock AI: complete, chat). Ctrl-C stops.",
            server.path().display()
        );
        serve_until_ctrl_c(&server, limit, grace).await?;
        print_summary(&server.stats());
        Ok(())
    })
}

/// Where to serve the metrics: `--metrics-addr`, else `metrics.addr` of the configuration
/// (taken out of it: served here rather than by `IpcServer::serve`, to print the port that 0
/// picked), else nowhere.
fn metrics_addr(args: &ServeArgs, config: &mut IpcConfig) -> Result<Option<SocketAddr>, IpcError> {
    Ok(match (args.metrics_addr, config.metrics.addr.take()) {
        (Some(addr), _) => Some(addr),
        // Checked by the configuration's validation already.
        (None, Some(addr)) => Some(addr.parse::<SocketAddr>().map_err(|e| {
            IpcError::InvalidArgument(format!("metrics.addr {addr:?} is not a socket address: {e}"))
        })?),
        (None, None) => None,
    })
}

/// The echo handler (`data`) and the mock AI engine (`complete`, and `chat` streamed token by
/// token, `token_delay` apart).
fn register_handlers(server: &IpcServer, token_delay: Duration) {
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
            out.send(encode(&chunk)?)
                .await
                .map_err(|e| ErrorBody::new(ErrorCode::UNAVAILABLE, e.to_string()))?;
        }
        let last = StreamChunk { finish_reason: Some("stop".into()), ..StreamChunk::default() };
        out.send(encode(&last)?).await.map_err(|e| ErrorBody::new(ErrorCode::UNAVAILABLE, e.to_string()))
    });
}

/// Serves the metrics at `addr`, with a warning when that is not loopback; the endpoint stops
/// when the returned guard drops.
async fn serve_metrics(server: &IpcServer, addr: SocketAddr) -> Result<MetricsEndpoint, IpcError> {
    let endpoint = server.serve_metrics(addr).await?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "lapce-ipc serve: warning: the metrics endpoint listens on {addr}, not on loopback; \
             it has no authentication"
        );
    }
    eprintln!("lapce-ipc serve: metrics at {}", endpoint.url());
    Ok(endpoint)
}

/// Serves until Ctrl-C, warning of refused peers (the connection limit is `limit`), then shuts
/// down gracefully: requests in flight get up to `grace`.
async fn serve_until_ctrl_c(server: &IpcServer, limit: usize, grace: Duration) -> Result<(), IpcError> {
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
    Ok(())
}

/// The last line of `serve`: what the server did.
fn print_summary(s: &ServerStats) {
    eprintln!(
        "lapce-ipc serve: stopped after {} connections, {} requests ({} errors, {} panics); \
         refused {} connections at the limit or during shutdown, {} clients in the handshake",
        s.connections_accepted, s.requests, s.errors, s.panics, s.connections_refused, s.handshakes_refused
    );
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
