//! A thread-based editor talking to its AI engine, as Lapce does: `cargo run -p lapce-ipc
//! --example editor_client`. Run with no arguments it starts itself as the engine (`serve
//! NAME`, a server in a child process), then plays the editor against it with a
//! `BlockingIpcClient` and no async runtime:
//!
//! - a hover is asked with `request_async`: the answer reaches the UI thread's channel from a
//!   callback;
//! - the engine pushes a notification when indexing is done (`on_notification`);
//! - a completion streams in, read as an iterator;
//! - a long generation is cancelled from another thread (the user pressing Escape), which wakes
//!   the thread reading it and stops the engine's handler.
//!
//! At the end the editor tells the engine to quit, and prints what it saw.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::{BlockingIpcClient, IpcConfig, IpcError, IpcServer, Result};

/// Hover text for a position (`file:line:column`).
const HOVER: MessageType = MessageType::Data;
/// Starts indexing; the engine notifies [`INDEXED`] when done.
const INDEX: MessageType = MessageType::Unknown(0x600);
/// The notification sent when indexing is done.
const INDEXED: MessageType = MessageType::Unknown(0x601);
/// A completion: as many tokens as the payload says.
const COMPLETE: MessageType = MessageType::Complete;
/// A generation that goes on until cancelled, a token every few milliseconds.
const GENERATE: MessageType = MessageType::Chat;
/// Asks the engine to quit.
const QUIT: MessageType = MessageType::Unknown(0x6FF);

/// What the editor saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// The hover text, from the `request_async` callback.
    pub hover: String,
    /// The notification's text.
    pub indexed: String,
    /// The completion, its tokens joined.
    pub completion: String,
    /// Tokens of the generation read before the cancel.
    pub generated: usize,
    /// Whether the generation ended with `IpcError::Cancelled`.
    pub cancelled: bool,
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("serve") => serve(&args.next().expect("usage: editor_client serve NAME")),
        Some(other) => panic!("unknown argument {other:?} (run with none)"),
        None => {
            let name = format!("editor-client-{}", std::process::id());
            let exe = std::env::current_exe().expect("this program's path");
            let mut engine =
                std::process::Command::new(exe).args(["serve", &name]).spawn().expect("start the engine");
            let summary = run_client(&name);
            if summary.is_err() {
                let _ = engine.kill();
            }
            let status = engine.wait().expect("reap the engine");
            println!("{:#?}\nengine: {status}", summary.expect("the editor's session"));
        }
    }
}

fn internal(e: IpcError) -> ErrorBody {
    ErrorBody::new(ErrorCode::INTERNAL, e.to_string())
}

/// The engine: serves `name` until told to quit.
pub fn serve(name: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(name, IpcConfig::default()).expect("bind");
        server.register_sync_handler(HOVER, |at: Bytes| {
            Ok(Bytes::from(format!("fn main() at {}", String::from_utf8_lossy(&at))))
        });
        let handle = server.clone();
        server.register_sync_handler(INDEX, move |_| {
            let peers = handle.peers();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                for peer in peers {
                    let _ = peer.notify(INDEXED, "indexed 42 files").await;
                }
            });
            Ok(Bytes::from_static(b"indexing"))
        });
        server.register_stream_handler(COMPLETE, |n: Bytes, out| async move {
            let n: usize = String::from_utf8_lossy(&n).parse().unwrap_or(0);
            for token in ["let ", "x ", "= ", "42;"].iter().cycle().take(n) {
                out.send(*token).await.map_err(internal)?;
            }
            Ok(())
        });
        server.register_stream_handler(GENERATE, |_, out| async move {
            loop {
                out.send("token ").await.map_err(internal)?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let handle = server.clone();
        server.register_sync_handler(QUIT, move |_| {
            handle.shutdown(Duration::from_secs(1));
            Ok(Bytes::from_static(b"bye"))
        });
        server.serve().await.expect("serve");
    });
}

/// What reaches the editor's UI thread.
enum UiEvent {
    Hover(Result<Bytes>),
    Notice(Bytes),
}

/// The editor: connects (waiting for the engine to start), then asks, listens and cancels as
/// the module says; tells the engine to quit at the end.
pub fn run_client(name: &str) -> Result<Summary> {
    let client = BlockingIpcClient::connect_timeout(name, IpcConfig::default(), Duration::from_secs(30))?;
    let (ui, events) = mpsc::channel();
    let to_ui = ui.clone();
    client.on_notification(move |n| {
        if n.kind == INDEXED {
            let _ = to_ui.send(UiEvent::Notice(n.payload));
        }
    });
    client.request_async(HOVER, "main.rs:1:4", move |answer| {
        let _ = ui.send(UiEvent::Hover(answer));
    });
    client.request(INDEX, "")?;

    let mut summary = Summary::default();
    for token in client.request_stream(COMPLETE, "4")? {
        summary.completion.push_str(&String::from_utf8_lossy(&token?));
    }

    let mut generation = client.request_stream(GENERATE, "")?;
    let escape = generation.canceller();
    let user = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        escape.cancel();
    });
    for token in &mut generation {
        match token {
            Ok(_) => summary.generated += 1,
            Err(IpcError::Cancelled) => summary.cancelled = true,
            Err(e) => return Err(e),
        }
    }
    user.join().expect("the user thread");

    // The UI thread's loop: the hover and the notification, in whatever order they came.
    while summary.hover.is_empty() || summary.indexed.is_empty() {
        match events.recv_timeout(Duration::from_secs(30)).map_err(|_| IpcError::Timeout)? {
            UiEvent::Hover(answer) => summary.hover = String::from_utf8_lossy(&answer?).into_owned(),
            UiEvent::Notice(text) => summary.indexed = String::from_utf8_lossy(&text).into_owned(),
        }
    }
    client.request(QUIT, "")?;
    Ok(summary)
}
