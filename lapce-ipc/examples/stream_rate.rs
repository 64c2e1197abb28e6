//! How fast a response stream runs when its reader keeps up: `cargo run --release -p lapce-ipc
//! --example stream_rate -- CHUNK_BYTES WINDOW_BYTES [CHUNKS]`. A server (on a runtime of its own)
//! streams CHUNKS chunks of CHUNK_BYTES (default 300,000) to an `IpcClient` whose
//! `ipc.stream_window` is WINDOW_BYTES (0: no window), which reads them all; three rounds, each
//! printed in chunks per second. Both sides run in this process, on two threads.

use std::time::{Duration, Instant};

use bytes::Bytes;
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::{IpcClient, IpcConfig, IpcServer};

fn arg(i: usize, default: Option<u64>) -> u64 {
    match (std::env::args().nth(i), default) {
        (Some(a), _) => a.parse().unwrap_or_else(|_| panic!("argument {i} ({a:?}) is not a number")),
        (None, Some(d)) => d,
        (None, None) => panic!("usage: stream_rate CHUNK_BYTES WINDOW_BYTES [CHUNKS]"),
    }
}

fn main() {
    let (size, window, n) = (arg(1, None) as usize, arg(2, None) as usize, arg(3, Some(300_000)));
    let name = format!("stream-rate-{}", std::process::id());
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = server_rt.block_on(async { IpcServer::bind(&name, IpcConfig::default()) }).unwrap();
    server.register_stream_handler(MessageType::Chat, move |count: Bytes, out| async move {
        let count: u64 = std::str::from_utf8(&count).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let chunk = vec![7u8; size];
        for _ in 0..count {
            out.send(&chunk).await.map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))?;
        }
        Ok(())
    });
    let serving = server.clone();
    let serving = server_rt.spawn(async move { serving.serve().await });

    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    client_rt.block_on(async {
        let mut config = IpcConfig::default();
        config.ipc.stream_window = window;
        let client = IpcClient::connect(&name, config).await.unwrap();
        for round in 1..=3 {
            let started = Instant::now();
            let mut stream = client.request_stream(MessageType::Chat, n.to_string()).await.unwrap();
            let mut got = 0u64;
            while let Some(chunk) = stream.next().await {
                chunk.unwrap();
                got += 1;
            }
            assert_eq!(got, n, "chunks lost");
            let rate = n as f64 / started.elapsed().as_secs_f64();
            println!("chunk {size} B, window {window} B, round {round}: {:.2} M chunks/s", rate / 1e6);
        }
    });
    // Wait for the server to close, so that its listener removes its socket file.
    server.shutdown(Duration::from_millis(100));
    server_rt.block_on(serving).unwrap().unwrap();
}
