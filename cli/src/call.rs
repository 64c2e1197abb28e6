//! `lapce-ipc call`: one request from the command line, its answer (or streamed chunks) printed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{AIRequest, Codec, StreamChunk};
use lapce_ipc::{IpcClient, IpcConfig, IpcError};

use crate::serve::runtime;

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
