//! Death detection under load (part of level 5): how long after a `kill -9` of a peer a caller
//! blocked on it gets `PeerGone`. A lapce-ipc echo server child (`bench-server`) is connected,
//! answers once, then this process blocks in `recv` on another thread and kills the child; the
//! time from the kill to the `recv` returning is one sample. Reported (p50, p99, max), never
//! judged: it is wall-clock time on a loaded machine.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use lapce_ipc::{BlockingSharedMemoryStream, IpcError};

use super::Result;
use crate::bench::child::ServerProcess;

/// Kills per level-5 run.
pub const SAMPLES: usize = 30;

/// One kill: the time from the kill to the blocked `recv` returning `PeerGone`.
pub fn detect_one(round: usize, timeout: Duration) -> Result<Duration> {
    let name = format!("lapce-ipc-stress-death-{}-{round}", std::process::id());
    let args: Vec<OsString> = [
        "bench-server",
        "--transport",
        "lapce-ipc",
        "--mode",
        "blocking",
        "--name",
        &name,
        "--test",
        "echo",
        "--payload",
        "64",
        "--parent-pid",
        &std::process::id().to_string(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let socket = lapce_ipc::socket_path(&name).map(|p| vec![p]).unwrap_or_default();
    let mut server = ServerProcess::spawn(&args, timeout, socket)?;
    server.wait_ready()?;
    let mut stream = BlockingSharedMemoryStream::connect(&name)?;
    stream.send(&[7u8; 64])?;
    let mut buf = [0u8; 64];
    stream.recv(&mut buf)?;
    let blocked = std::thread::spawn(move || {
        let outcome = stream.recv(&mut buf);
        (Instant::now(), outcome)
    });
    // Let the receiver reach its sleep.
    std::thread::sleep(Duration::from_millis(5));
    let killed = Instant::now();
    server.kill();
    let (returned, outcome) = blocked.join().map_err(|_| "the blocked receiver panicked")?;
    match outcome {
        Err(IpcError::PeerGone) => Ok(returned.saturating_duration_since(killed)),
        other => Err(format!("a recv blocked on a killed peer returned {other:?}, not PeerGone").into()),
    }
}

/// The p50, p99 and max of `samples` in milliseconds.
pub fn summary(samples: &mut [Duration]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    Some((at(0.5), at(0.99), at(1.0)))
}
