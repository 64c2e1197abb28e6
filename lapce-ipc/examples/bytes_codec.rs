//! A tokio-util codec over the byte-stream mode: `cargo run -p lapce-ipc --example bytes_codec`.
//!
//! The process starts itself again as a line server (`bytes_codec serve NAME`), connects to it,
//! and talks in lines through `tokio_util::codec::Framed<ByteStream, LinesCodec>`: the
//! codec sees an ordinary `AsyncRead + AsyncWrite` byte stream, and the rings carry it. Lines of
//! up to 60 KB cross ring records; the server answers each with its number and the line in
//! upper case, and ends when the client closes.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use lapce_ipc::{ByteStream, IpcError, SharedMemoryListener, SharedMemoryStream};
use tokio_util::codec::{Framed, LinesCodec};

/// Longest line either side accepts: the codec's memory stays bounded whatever the peer sends.
const MAX_LINE: usize = 64 * 1024;

/// What the client saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// Lines sent.
    pub sent: usize,
    /// Answers that matched what the server should say.
    pub answered: usize,
    /// Bytes of the lines sent.
    pub bytes: usize,
}

/// Line `i` the client sends: short ones and some of tens of kilobytes.
fn line(i: usize) -> String {
    let len = if i % 10 == 9 { 60_000 - i } else { 10 + i % 50 };
    (0..len).map(|j| char::from(b'a' + ((i + j) % 26) as u8)).collect()
}

/// The answer the server gives to line number `n` (from 1).
fn answer(n: usize, line: &str) -> String {
    format!("{n}: {}", line.to_uppercase())
}

/// Serves one client: answers each line until the client closes.
pub fn serve(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = SharedMemoryListener::bind(name)?;
        let bytes = ByteStream::new(listener.accept().await?);
        let mut lines = Framed::new(bytes, LinesCodec::new_with_max_length(MAX_LINE));
        let mut n = 0;
        while let Some(line) = lines.next().await {
            n += 1;
            lines.send(answer(n, &line?)).await?;
        }
        Ok(())
    })
}

/// Connects to the server at `name` (waiting up to a minute for it to bind), sends `count`
/// lines and checks every answer.
pub fn run_client(name: &str, count: usize) -> Result<Summary, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match SharedMemoryStream::connect(name).await {
                Ok(s) => break s,
                Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut lines = Framed::new(ByteStream::new(stream), LinesCodec::new_with_max_length(MAX_LINE));
        let mut summary = Summary { sent: 0, answered: 0, bytes: 0 };
        for i in 0..count {
            let sent = line(i);
            lines.send(sent.as_str()).await?;
            summary.sent += 1;
            summary.bytes += sent.len();
            let got = lines.next().await.ok_or("the server closed early")??;
            if got == answer(i + 1, &sent) {
                summary.answered += 1;
            }
        }
        // Closing shuts our writing side down: the server reads EOF and ends.
        SinkExt::<&str>::close(&mut lines).await?;
        Ok(summary)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, name] = &args[..] {
        if role == "serve" {
            return serve(name);
        }
    }
    let name = format!("bytes-codec-{}", std::process::id());
    let mut server = std::process::Command::new(std::env::current_exe()?).args(["serve", &name]).spawn()?;
    let summary = run_client(&name, 200);
    let status = server.wait()?;
    let summary = summary?;
    println!("{summary:?}; server {status}");
    if summary.answered != summary.sent || !status.success() {
        return Err("some lines went unanswered".into());
    }
    Ok(())
}
