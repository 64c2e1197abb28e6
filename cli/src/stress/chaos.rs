//! Level 5, chaos: while healthy clients (a child process) run sequenced, checksummed requests
//! without pause, this process fires random events at the server (bounded 100, full 1800):
//!
//! - **kill**: a victim child with 4 connections flooding 64 KiB and 1 MiB requests is killed
//!   with SIGKILL mid-message; a replacement connection (here) must then connect and get an
//!   answer: the time from the kill to that answer is the recovery time;
//! - **corrupt**: a raw connection writes a frame with bad magic, a bad CRC or random bytes; the
//!   server must answer it with an error or close it;
//! - **oversized**: a raw connection sends a message over the server's limit; same;
//! - **stalled reader**: a raw connection sends 96 requests of 4 KiB and never reads the answers;
//! - **tiny flood**: a fresh connection sends 1000 requests of 1 to 23 bytes, 64 in flight.
//!
//! Passes when the server survives (answers and exits cleanly), the healthy and tiny-flood
//! connections lose, duplicate and corrupt nothing (their own checks plus the server's sequence
//! and checksum checks), every corrupt, oversized or stalled connection is dealt with, and
//! failures (lost replacements, unhandled events) stay under 1% of the operations. Recovery
//! times are reported, not judged (wall clock).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lapce_ipc::frame::{BlockingFramedStream, CanonicalHeader, Frame, MessageType};
use lapce_ipc::{BlockingSharedMemoryStream, IpcClient};
use serde_json::Value;

use super::death;
use super::payload::{self, Rng, FIN};
use super::{server, LevelReport, Result, Session, Work};
use crate::progress::Progress;

/// How long one raw chaos connection may take before it counts as unhandled.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs level 5.
pub fn run(
    report: &mut LevelReport,
    full: bool,
    rng: &mut Rng,
    timeout: Duration,
    progress: &Progress,
) -> Result<()> {
    let events = if full { 1800 } else { 100 };
    let healthy = Work {
        connections: if full { 32 } else { 8 },
        processes: 1,
        lanes: 2,
        requests: 0,
        payloads: vec![64, 1024, 4096],
    };
    let session = Session::start(5, 256, timeout)?;
    let mut healthy_clients = session.spawn(&healthy)?;
    Session::tell(&mut healthy_clients, "go")?;

    let mut counts = [0u64; 5];
    let mut unhandled = Vec::new();
    let mut recoveries: Vec<f64> = Vec::new();
    let mut lost_replacements = 0u64;
    let (mut tiny_ok, mut tiny_bad) = (0u64, 0u64);
    let mut raw_key = u64::from(std::process::id()) << 32 | 0xFFF0_0000;
    for e in 0..events {
        // The first five events are one of each, then at random.
        let kind = if e < 5 { e } else { rng.range(0, 4) as usize };
        counts[kind] += 1;
        progress.status(format!("level 5 (chaos): event {} of {events} ({})", e + 1, NAMES[kind]));
        let outcome: Result<()> = match kind {
            0 => match kill_and_replace(&session, rng) {
                Ok(ms) => {
                    recoveries.push(ms);
                    Ok(())
                }
                Err(err) => {
                    lost_replacements += 1;
                    Err(err)
                }
            },
            1 => raw_event(&session.name, move |f| corrupt(f, rng_byte(e))),
            2 => raw_event(&session.name, oversized),
            3 => {
                raw_key += 1;
                let key = raw_key;
                raw_event(&session.name, move |f| stalled(f, key))
            }
            _ => {
                let (ok, bad) = tiny_flood(&session)?;
                tiny_ok += ok;
                tiny_bad += bad;
                Ok(())
            }
        };
        if let Err(err) = outcome {
            progress.note(format!("stress chaos: event {e} ({}): {err}", NAMES[kind]));
            unhandled.push(format!("event {e} ({}): {err}", NAMES[kind]));
        }
        if full {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Death detection, with the healthy clients still loading the machine.
    let mut deaths = Vec::new();
    for round in 0..death::SAMPLES {
        progress.status(format!("level 5 (chaos): kill -9 detection {} of {}", round + 1, death::SAMPLES));
        match death::detect_one(round, timeout) {
            Ok(after) => deaths.push(after),
            Err(err) => unhandled.push(format!("kill -9 detection {round}: {err}")),
        }
    }
    // The server still answers the control connection after all that.
    let alive = session.stats().is_ok();
    Session::tell(&mut healthy_clients, "stop")?;
    let out = session.collect(healthy_clients)?;

    for (k, name) in NAMES.iter().enumerate() {
        report.fig(&format!("events_{}", name.replace(' ', "_")), counts[k]);
    }
    report.fig("healthy_connections", healthy.connections as u64 * healthy.lanes as u64);
    report.fig("healthy_requests", out.ok);
    report.fig("healthy_lost", out.errors);
    report.fig("healthy_corrupt", out.corrupt);
    report.check(out.ok > 0, "no healthy request was answered");
    report.check(
        out.errors == 0 && out.corrupt == 0,
        format!("healthy connections: {} lost, {} corrupt", out.errors, out.corrupt),
    );
    report.fig("tiny_requests", tiny_ok);
    report.fig("tiny_bad", tiny_bad);
    report.check(tiny_bad == 0, format!("{tiny_bad} tiny requests lost or wrong"));
    report.fig("server_alive_after_chaos", alive);
    report.check(alive, "the server no longer answers after the chaos");
    report.fig("unhandled_events", unhandled.len() as u64);
    report.fig("lost_replacements", lost_replacements);
    if !recoveries.is_empty() {
        let max = recoveries.iter().copied().fold(0.0, f64::max);
        let mean = recoveries.iter().sum::<f64>() / recoveries.len() as f64;
        report.fig("recovery_ms_max", (max * 1000.0).round() / 1000.0);
        report.fig("recovery_ms_mean", (mean * 1000.0).round() / 1000.0);
        report.fig("recoveries_over_100ms", recoveries.iter().filter(|&&ms| ms > 100.0).count() as u64);
    }
    if let Some((p50, p99, max)) = death::summary(&mut deaths) {
        let ms = |v: f64| (v * 1000.0).round() / 1000.0;
        report.fig("kill9_detection_ms_p50", ms(p50));
        report.fig("kill9_detection_ms_p99", ms(p99));
        report.fig("kill9_detection_ms_max", ms(max));
        progress.note(format!(
            "stress chaos: kill -9 detected by a blocked recv after p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms ({} kills, under load)",
            deaths.len()
        ));
    }
    let operations = events as u64 + out.ok + tiny_ok;
    let failures = unhandled.len() as u64 + out.errors + out.corrupt + tiny_bad;
    let pct = 100.0 * failures as f64 / operations.max(1) as f64;
    report.fig("failures", failures);
    report.fig("failure_pct", Value::from((pct * 1000.0).round() / 1000.0));
    report.check(pct < 1.0, format!("failures {pct:.3}% (limit 1%)"));
    report.check(unhandled.is_empty(), format!("unhandled events: {}", unhandled.join("; ")));
    session.finish(report)
}

const NAMES: [&str; 5] = ["kill", "corrupt", "oversized", "stalled reader", "tiny flood"];

fn rng_byte(e: usize) -> u8 {
    (e as u8).wrapping_mul(37)
}

/// Starts a flooding victim, kills it with SIGKILL mid-message, then times a replacement
/// connection's first answer from the kill. Returns the recovery time in milliseconds.
fn kill_and_replace(session: &Session, rng: &mut Rng) -> Result<f64> {
    let work =
        Work { connections: 4, processes: 1, lanes: 1, requests: 0, payloads: vec![64 * 1024, 1 << 20] };
    let mut victim = session.spawn(&work)?.pop().ok_or("no victim process")?;
    victim.send("go")?;
    std::thread::sleep(Duration::from_millis(rng.range(1, 20)));
    let killed = Instant::now();
    victim.child.kill()?;
    victim.child.wait()?;
    drop(victim);
    let name = session.name.clone();
    let config = server::config(session.max_connections);
    let answer = session.runtime.block_on(async move {
        let client = IpcClient::connect(&name, config).await?;
        let msg = Bytes::from(payload::make(u64::from(std::process::id()) << 32 | 0xFFFF_F000, FIN, 1024));
        let answer = client.request(MessageType::Data, msg.clone()).await?;
        Ok::<bool, lapce_ipc::IpcError>(answer == msg)
    })?;
    let ms = killed.elapsed().as_secs_f64() * 1000.0;
    if !answer {
        return Err("the replacement got a wrong answer".into());
    }
    Ok(ms)
}

/// Runs `f` on a fresh raw framed connection (after the server's greeting) in a thread, bounded
/// by [`EVENT_TIMEOUT`].
fn raw_event<F>(name: &str, f: F) -> Result<()>
where
    F: FnOnce(&mut BlockingFramedStream) -> Result<()> + Send + 'static,
{
    let name = name.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<()> {
            let mut framed = BlockingFramedStream::new(BlockingSharedMemoryStream::connect(&name)?)
                .with_max_message(4 << 20);
            let kind = framed.recv()?.kind;
            if kind != MessageType::Control {
                return Err(format!("greeting was {kind:?}").into());
            }
            f(&mut framed)
        })();
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(EVENT_TIMEOUT) {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(format!("not dealt with within {} s", EVENT_TIMEOUT.as_secs()).into()),
    }
}

/// After a bad frame: the server must answer with an `Error` frame or close the connection.
fn expect_refusal(framed: &mut BlockingFramedStream) -> Result<()> {
    match framed.recv() {
        Ok(Frame { kind: MessageType::Error, .. }) | Err(_) => Ok(()),
        Ok(Frame { kind, id, .. }) => {
            Err(format!("the server answered a bad frame with {kind:?} (id {id})").into())
        }
    }
}

/// Writes one corrupt frame (bad magic, bad CRC or random bytes, by `pick`).
fn corrupt(framed: &mut BlockingFramedStream, pick: u8) -> Result<()> {
    let body = payload::make(1, 1, 512);
    let mut header = CanonicalHeader::for_payload(MessageType::Data, 1, &body, true);
    let mut frame = Vec::with_capacity(24 + body.len());
    match pick % 3 {
        0 => {
            frame.extend_from_slice(&header.encode());
            frame[0] ^= 0xFF;
            frame.extend_from_slice(&body);
        }
        1 => {
            header.crc32 ^= 0x5A5A;
            frame.extend_from_slice(&header.encode());
            frame.extend_from_slice(&body);
        }
        _ => {
            let mut rng = Rng::new(u64::from(pick) + 1);
            frame.extend((0..200).map(|_| rng.next_u64() as u8));
        }
    }
    if framed.get_mut().send(&frame).is_err() {
        return Ok(()); // already closed: dealt with
    }
    expect_refusal(framed)
}

/// Sends a message one byte over the server's limit.
fn oversized(framed: &mut BlockingFramedStream) -> Result<()> {
    let body = vec![0xEEu8; server::MAX_MESSAGE + 1];
    if framed.send(MessageType::Data, &body).is_err() {
        return Ok(()); // the server closed it midway: dealt with
    }
    expect_refusal(framed)
}

/// Sends 96 requests of 4 KiB and never reads an answer, then lingers and leaves.
fn stalled(framed: &mut BlockingFramedStream, key: u64) -> Result<()> {
    for seq in 0..96u64 {
        let seq = if seq == 95 { seq | FIN } else { seq };
        framed.send(MessageType::Data, &payload::make(key, seq, 4096))?;
    }
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

/// 1000 requests of 1 to 23 bytes, 64 in flight, on a fresh connection: (answered intact, bad).
fn tiny_flood(session: &Session) -> Result<(u64, u64)> {
    let name = session.name.clone();
    let config = server::config(session.max_connections);
    Ok(session.runtime.block_on(async move {
        let client = IpcClient::connect(&name, config).await?;
        let mut set = tokio::task::JoinSet::new();
        for t in 0..64u64 {
            let client = client.clone();
            set.spawn(async move {
                let (mut ok, mut bad) = (0u64, 0u64);
                for i in (t..1000).step_by(64) {
                    let msg = Bytes::from(payload::make(0, i, 1 + (i % 23) as usize));
                    match client.request(MessageType::Data, msg.clone()).await {
                        Ok(answer) if answer == msg => ok += 1,
                        _ => bad += 1,
                    }
                }
                (ok, bad)
            });
        }
        let (mut ok, mut bad) = (0, 0);
        while let Some(r) = set.join_next().await {
            let (o, b) = r.unwrap_or((0, 64));
            ok += o;
            bad += b;
        }
        Ok::<_, lapce_ipc::IpcError>((ok, bad))
    })?)
}
