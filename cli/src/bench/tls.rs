//! The `lapce-ipc-rpc-tls` rows: `IpcClient` to `IpcServer` over TLS on TCP loopback, 64 B and
//! 1 KiB, in the JSON shape of the other rows (mode `tokio-main`: default configuration, nothing
//! pinned). The server is a `lapce-ipc serve` child (its `Data` handler echoes, as the
//! request/response rows' server does) listening with a self-signed certificate the client
//! pins and a token; round trips are sequential requests, throughput is requests per second
//! with [`IN_FLIGHT`] in flight on the one connection.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use lapce_ipc::{IpcClient, IpcConfig};

use super::measure::{Result, Throughput};
use super::report::{Row, STANDARD};
use super::rpc::{async_round_trips, in_flight};
use super::{BenchArgs, Counts};

/// The rows' transport and mode.
pub(super) const TRANSPORT: &str = "lapce-ipc-rpc-tls";
const MODE: &str = "tokio-main";
/// The payloads measured, when the run asks for them.
const PAYLOADS: [usize; 2] = [64, 1024];

/// Measures the rows of the payloads of `args` among [`PAYLOADS`]; a failure is each row's error.
pub(super) fn rows(args: &BenchArgs) -> Vec<Row> {
    let payloads: Vec<usize> = args.payloads.iter().copied().filter(|p| PAYLOADS.contains(p)).collect();
    if payloads.is_empty() {
        return Vec::new();
    }
    outln!("measuring {TRANSPORT} (TLS over TCP loopback): {} payload(s)", payloads.len());
    let dir = std::env::temp_dir().join(format!("lapce-ipc-bench-tls-{}", std::process::id()));
    let measured = TlsServer::start(&dir).and_then(|mut server| {
        let rows = measure_all(args, &server, &payloads);
        server.stop();
        rows
    });
    let _ = std::fs::remove_dir_all(&dir);
    match measured {
        Ok(rows) => rows,
        Err(e) => payloads
            .iter()
            .map(|&p| {
                let mut row = Row::empty(TRANSPORT, MODE, STANDARD, p as u64);
                row.error = Some(e.to_string());
                row
            })
            .collect(),
    }
}

/// Connects once and measures every payload.
fn measure_all(args: &BenchArgs, server: &TlsServer, payloads: &[usize]) -> Result<Vec<Row>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut config = IpcConfig::default();
    config.ipc.request_timeout_ms = 60_000;
    config.tls.pin = Some(server.dir.join("cert.pem"));
    config.tls.token_file = Some(server.dir.join("token"));
    let client = runtime.block_on(IpcClient::connect(&server.addr, config))?;
    let mut rows = Vec::new();
    for &payload in payloads {
        let counts = Counts::new(args, payload);
        let mut row = Row::empty(TRANSPORT, MODE, STANDARD, payload as u64);
        let measured = runtime.block_on(async {
            let h = async_round_trips(&client, payload, counts.warmup, counts.rounds).await?;
            in_flight(&client, payload, counts.warmup).await?;
            let start = Instant::now();
            let messages = in_flight(&client, payload, counts.messages).await?;
            Ok::<_, super::measure::Error>((h, Throughput { messages, payload, elapsed: start.elapsed() }))
        });
        match measured {
            Ok((h, t)) => {
                outln!(
                    "  {payload} B: p50 {:.1} µs, {:.0} msg/s",
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    t.msgs_per_sec()
                );
                row.set_rtt(&h);
                row.msgs_per_sec = Some(t.msgs_per_sec());
                row.mb_per_sec = Some(t.mb_per_sec());
                row.gib_per_sec = Some(t.gib_per_sec());
                row.throughput_messages = Some(t.messages);
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The `lapce-ipc serve` child with its TLS listener.
struct TlsServer {
    child: Option<Child>,
    /// Its certificate, key and token.
    dir: PathBuf,
    /// `tls://127.0.0.1:PORT`.
    addr: String,
}

impl TlsServer {
    /// Starts the server with a certificate made in `dir`, and reads the address it listens on.
    fn start(dir: &Path) -> Result<TlsServer> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("token"), "bench-token")?;
        let name = format!("lapce-ipc-bench-tls-{}", std::process::id());
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", &name, "--listen", "tls://127.0.0.1:0", "--self-signed", "--cert"])
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
        let mut server = TlsServer { child: Some(child), dir: dir.to_path_buf(), addr: String::new() };
        let mut log = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line)? == 0 {
                return Err(format!("the TLS server ended before listening: {log}").into());
            }
            if let Some(addr) = line.trim().strip_prefix("lapce-ipc serve: TLS clients at ") {
                server.addr = addr.to_owned();
                break;
            }
            log.push_str(&line);
        }
        // Drained, so that its warnings never block it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(server)
    }

    /// Stops the server as Ctrl-C does (it then removes its socket file), and reaps it.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            if rustix::process::kill_process(pid, rustix::process::Signal::INT).is_ok() {
                let _ = child.wait();
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
