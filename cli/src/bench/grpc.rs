//! `lapce-ipc bench --grpc`: the round trip of a tonic unary call (an echo service generated
//! from `cli/proto/echo.proto`) over lapce-ipc's byte streams (`grpc-lapce-ipc`), against the
//! same service over a Unix socket (`grpc-uds`), TCP loopback (`grpc-tcp`) and TLS over TCP
//! loopback (`grpc-tls`: rustls, a self-signed certificate made for the run with rcgen).
//!
//! What a user gets: client and server each on a default multi-thread runtime, the calls awaited
//! from `block_on` (what `#[tokio::main]` does), default tonic and lapce-ipc settings, nothing
//! pinned. The server is a child process (this binary with the hidden `bench-grpc-server`
//! subcommand), one per row.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

use super::report::{self, PeerRatio, Row};
use super::BenchArgs;

/// The code generated from `cli/proto/echo.proto` (see scripts/grpc-codegen).
#[allow(clippy::all, clippy::pedantic)]
mod proto {
    include!("lapce.bench.v1.rs");
}

use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};
use proto::Payload;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Environment variables that hand the TLS server its certificate and key (PEM).
const CERT_ENV: &str = "LAPCE_IPC_BENCH_TLS_CERT";
const KEY_ENV: &str = "LAPCE_IPC_BENCH_TLS_KEY";

/// The payload sizes of the rows.
const PAYLOADS: [usize; 2] = [64, 1024];

/// A transport of the gRPC rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcTransport {
    /// lapce-ipc's byte stream (`lapce_ipc::grpc`).
    #[value(name = "grpc-lapce-ipc")]
    Lapce,
    /// A Unix-domain socket.
    #[value(name = "grpc-uds")]
    Uds,
    /// TCP over loopback.
    #[value(name = "grpc-tcp")]
    Tcp,
    /// TLS (rustls) over TCP loopback.
    #[value(name = "grpc-tls")]
    Tls,
    /// No IPC: the server on a runtime of its own in the bench process, joined to the client
    /// by an in-memory pipe (`tokio::io::duplex`). A reference row: tonic's own cost, the floor
    /// of every transport's.
    #[value(skip)]
    InProcess,
}

impl GrpcTransport {
    const ALL: [GrpcTransport; 5] = [
        GrpcTransport::Lapce,
        GrpcTransport::Uds,
        GrpcTransport::Tcp,
        GrpcTransport::Tls,
        GrpcTransport::InProcess,
    ];

    fn name(self) -> &'static str {
        match self {
            GrpcTransport::Lapce => "grpc-lapce-ipc",
            GrpcTransport::Uds => "grpc-uds",
            GrpcTransport::Tcp => "grpc-tcp",
            GrpcTransport::Tls => "grpc-tls",
            GrpcTransport::InProcess => "grpc-in-process",
        }
    }
}

/// Arguments of the hidden `bench-grpc-server` subcommand (the server child of `bench --grpc`).
#[derive(Debug, clap::Args)]
pub struct GrpcServerArgs {
    /// Transport to serve.
    #[arg(long, value_enum)]
    transport: GrpcTransport,
    /// Listener name (lapce-ipc) or socket path (uds); unused for TCP (an ephemeral port,
    /// printed on the `ready` line).
    #[arg(long, default_value = "")]
    name: String,
}

/// The echo service.
#[derive(Debug)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(
        &self,
        request: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// Runs the hidden `bench-grpc-server` subcommand: serves the echo service until killed, after
/// a `ready [PORT]` line on stdout.
pub fn serve(args: &GrpcServerArgs) -> ExitCode {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let served =
        tokio::runtime::Runtime::new().map_err(Error::from).and_then(|rt| rt.block_on(serve_on(args)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-grpc-server ({}): {e}", args.transport.name());
            ExitCode::FAILURE
        }
    }
}

/// The server child's work, on its runtime.
async fn serve_on(args: &GrpcServerArgs) -> Result<()> {
    let service = EchoServer::new(EchoService);
    match args.transport {
        GrpcTransport::Lapce => {
            let incoming = lapce_ipc::grpc::ShmIncoming::bind(&args.name)?;
            println!("ready");
            Server::builder().add_service(service).serve_with_incoming(incoming).await?;
        }
        #[cfg(unix)]
        GrpcTransport::Uds => {
            let listener = tokio::net::UnixListener::bind(&args.name)?;
            println!("ready");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            Server::builder().add_service(service).serve_with_incoming(incoming).await?;
        }
        #[cfg(not(unix))]
        GrpcTransport::Uds => return Err("no Unix sockets on this platform".into()),
        GrpcTransport::InProcess => return Err("the in-process row has no server child".into()),
        GrpcTransport::Tcp | GrpcTransport::Tls => {
            let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())?
                .with_nodelay(Some(true));
            println!("ready {}", incoming.local_addr()?.port());
            let mut builder = Server::builder();
            if args.transport == GrpcTransport::Tls {
                let identity = Identity::from_pem(std::env::var(CERT_ENV)?, std::env::var(KEY_ENV)?);
                builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
            }
            builder.add_service(service).serve_with_incoming(incoming).await?;
        }
    }
    Ok(())
}

/// A server child, killed and reaped when dropped; its socket file removed.
struct ServerChild {
    child: Child,
    socket: Option<PathBuf>,
    /// The port it listens on (TCP and TLS).
    port: Option<u16>,
}

impl ServerChild {
    /// Starts the server of `transport` on `name` and waits for its `ready` line.
    fn start(transport: GrpcTransport, name: &str, tls: Option<&SelfSigned>) -> Result<ServerChild> {
        let exe = std::env::current_exe()?;
        let args: [OsString; 5] = [
            "bench-grpc-server".into(),
            "--transport".into(),
            transport.name().into(),
            "--name".into(),
            name.into(),
        ];
        let mut command = Command::new(exe);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if let Some(tls) = tls {
            command.env(CERT_ENV, &tls.cert).env(KEY_ENV, &tls.key);
        }
        let mut child = command.spawn()?;
        // A killed server cannot remove its socket file: the parent does.
        let socket = match transport {
            GrpcTransport::Uds => Some(PathBuf::from(name)),
            GrpcTransport::Lapce => lapce_ipc::socket_path(name).ok(),
            _ => None,
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut server = ServerChild { child, socket, port: None };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let mut words = line.split_whitespace();
        if words.next() != Some("ready") {
            return Err(format!("the {} server did not start", transport.name()).into());
        }
        server.port = words.next().map(str::parse).transpose()?;
        Ok(server)
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The run's self-signed certificate for `localhost` and its key, PEM.
struct SelfSigned {
    cert: String,
    key: String,
}

impl SelfSigned {
    fn make() -> Result<SelfSigned> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        Ok(SelfSigned { cert: certified.cert.pem(), key: certified.signing_key.serialize_pem() })
    }
}

/// A client channel to `server`, connected.
async fn connect(
    transport: GrpcTransport,
    name: &str,
    server: &ServerChild,
    tls: &SelfSigned,
) -> Result<Channel> {
    let port = || server.port.ok_or("the server printed no port");
    let channel = match transport {
        GrpcTransport::InProcess => return Err("the in-process row has no server child".into()),
        GrpcTransport::Lapce => lapce_ipc::grpc::connect(name).await?,
        #[cfg(unix)]
        GrpcTransport::Uds => {
            let path = PathBuf::from(name);
            let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            });
            Endpoint::from_static("http://uds.local").connect_with_connector(connector).await?
        }
        #[cfg(not(unix))]
        GrpcTransport::Uds => return Err("no Unix sockets on this platform".into()),
        GrpcTransport::Tcp => {
            Endpoint::from_shared(format!("http://127.0.0.1:{}", port()?))?.connect().await?
        }
        GrpcTransport::Tls => {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.cert))
                .domain_name("localhost");
            Endpoint::from_shared(format!("https://127.0.0.1:{}", port()?))?
                .tls_config(config)?
                .connect()
                .await?
        }
    };
    Ok(channel)
}

/// Sequential unary calls: `warmup` unrecorded, then `rounds` recorded in nanoseconds (fewer
/// if `budget` runs out first), every echo checked.
async fn round_trips(
    client: &mut EchoClient<Channel>,
    payload: usize,
    warmup: u64,
    rounds: u64,
    budget: Duration,
) -> Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let data = bytes::Bytes::from(vec![0xA5u8; payload]);
    let deadline = Instant::now() + budget;
    for i in 0..warmup + rounds {
        let start = Instant::now();
        let reply = client.echo(Payload { data: data.clone() }).await?.into_inner();
        let rtt = start.elapsed();
        if reply.data != data {
            return Err(format!("bad echo for call {i}").into());
        }
        if i >= warmup {
            hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
            if Instant::now() > deadline {
                break;
            }
        }
    }
    Ok(hist)
}

/// The in-process row: the server on a runtime of its own, an in-memory pipe between them.
fn measure_in_process(payload: usize, counts: (u64, u64, Duration)) -> Result<Histogram<u64>> {
    let (client_io, server_io) = tokio::io::duplex(256 * 1024);
    let server = tokio::runtime::Runtime::new()?;
    server.spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io))),
    );
    let client_io = std::sync::Mutex::new(Some(client_io));
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let io = client_io.lock().map(|mut io| io.take()).ok().flatten();
        async move { io.map(TokioIo::new).ok_or_else(|| std::io::Error::other("the pipe is used already")) }
    });
    let runtime = tokio::runtime::Runtime::new()?;
    let (warmup, rounds, budget) = counts;
    let rtt = runtime.block_on(async {
        let channel = Endpoint::from_static("http://in-process").connect_with_connector(connector).await?;
        round_trips(&mut EchoClient::new(channel), payload, warmup, rounds, budget).await
    });
    server.shutdown_background();
    rtt
}

/// One row: a fresh server child, a client on a default multi-thread runtime.
fn measure(
    transport: GrpcTransport,
    payload: usize,
    counts: (u64, u64, Duration),
    tls: &SelfSigned,
) -> Result<Histogram<u64>> {
    if transport == GrpcTransport::InProcess {
        return measure_in_process(payload, counts);
    }
    let name = match transport {
        GrpcTransport::Lapce => format!("grpc-bench-{}", std::process::id()),
        _ => std::env::temp_dir()
            .join(format!("lapce-ipc-grpc-bench-{}.sock", std::process::id()))
            .display()
            .to_string(),
    };
    let server = ServerChild::start(transport, &name, (transport == GrpcTransport::Tls).then_some(tls))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (warmup, rounds, budget) = counts;
    runtime.block_on(async {
        let mut client = EchoClient::new(connect(transport, &name, &server, tls).await?);
        round_trips(&mut client, payload, warmup, rounds, budget).await
    })
}

/// Nanoseconds as microseconds.
fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A row of the JSON, in the shape of the other bench rows.
fn row(transport: GrpcTransport, payload: usize, rtt: &Result<Histogram<u64>, String>) -> Row {
    let h = rtt.as_ref().ok();
    let us = |q: f64| h.map(|h| ns_to_us(h.value_at_quantile(q)));
    Row {
        transport: transport.name().into(),
        mode: "tokio-main".into(),
        test: "standard".into(),
        payload_bytes: payload as u64,
        rtt_mean_us: h.map(|h| h.mean() / 1000.0),
        rtt_p50_us: us(0.5),
        rtt_p99_us: us(0.99),
        rtt_p999_us: us(0.999),
        rtt_max_us: h.map(|h| ns_to_us(h.max())),
        rtt_round_trips: h.map(Histogram::len),
        msgs_per_sec: None,
        mb_per_sec: None,
        gib_per_sec: None,
        throughput_messages: None,
        rtt_p50_speedup_vs_uds: None,
        msgs_per_sec_vs_uds: None,
        vs_peers: Default::default(),
        idle_cpu_percent: None,
        budget_secs: None,
        budget_hit: false,
        budget_note: None,
        error: rtt.as_ref().err().map(|e| format!("rtt: {e}")),
    }
}

/// Fills each row's ratios to the other transports' rows of its payload; the `vs_uds` ratio is
/// to `grpc-uds`.
fn add_ratios(rows: &mut [Row]) {
    let p50s: Vec<(String, u64, Option<f64>)> =
        rows.iter().map(|r| (r.transport.clone(), r.payload_bytes, r.rtt_p50_us)).collect();
    for row in rows.iter_mut() {
        for (peer, payload, p50) in &p50s {
            if *payload != row.payload_bytes || *peer == row.transport {
                continue;
            }
            let speedup = p50.zip(row.rtt_p50_us).map(|(peer, this)| peer / this);
            row.vs_peers.insert(peer.clone(), PeerRatio { rtt_p50_speedup: speedup, msgs_per_sec: None });
            if peer == GrpcTransport::Uds.name() {
                row.rtt_p50_speedup_vs_uds = speedup;
            }
        }
    }
}

/// Prints the rows and the target (a report, not a gate).
fn print(rows: &[Row]) {
    let header = format!(
        "{:<16} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "transport", "payload", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "p50 vs uds", "calls"
    );
    outln!("{header}");
    outln!("{}", "-".repeat(header.chars().count()));
    let opt = |v: Option<f64>| v.map_or("-".to_string(), report::fmt_us);
    for r in rows {
        if let Some(e) = &r.error {
            outln!("{:<16} {:>7} FAILED: {e}", r.transport, report::payload_label(r.payload_bytes as usize));
            continue;
        }
        outln!(
            "{:<16} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
            r.transport,
            report::payload_label(r.payload_bytes as usize),
            opt(r.rtt_p50_us),
            opt(r.rtt_p99_us),
            opt(r.rtt_p999_us),
            opt(r.rtt_max_us),
            r.rtt_p50_speedup_vs_uds.map_or("-".to_string(), |s| format!("{s:.2}×")),
            r.rtt_round_trips.unwrap_or(0)
        );
    }
    outln!();
    outln!("target (a report, not a gate):");
    let ratios: Vec<String> = rows
        .iter()
        .filter(|r| r.transport == GrpcTransport::Lapce.name())
        .map(|r| {
            let ratio = r.rtt_p50_speedup_vs_uds.map_or("n/a".to_string(), |s| format!("{s:.2}×"));
            format!("{}: {ratio}", report::payload_label(r.payload_bytes as usize))
        })
        .collect();
    let met = rows
        .iter()
        .filter(|r| r.transport == GrpcTransport::Lapce.name())
        .all(|r| r.rtt_p50_speedup_vs_uds.is_some_and(|s| s >= 3.0));
    let tag = if met { "met   " } else { "MISSED" };
    outln!("  [{tag}] tonic over lapce-ipc p50 >= 3× better than tonic over UDS: {}", ratios.join(", "));
    outln!("  (grpc-in-process: no IPC at all, tonic's own cost: the floor of every transport)");
}

/// Reports the TLS target: `lapce-ipc-rpc-tls` p50 no worse than `grpc-tls` at each payload.
fn print_tls_target(rows: &[Row]) {
    let p50 = |transport: &str, payload: u64| {
        rows.iter()
            .find(|r| r.transport == transport && r.payload_bytes == payload)
            .and_then(|r| r.rtt_p50_us)
    };
    let mut met = true;
    let mut ratios = Vec::new();
    for payload in PAYLOADS {
        let ours = p50(super::tls::TRANSPORT, payload as u64);
        let tonic = p50(GrpcTransport::Tls.name(), payload as u64);
        let ratio = ours.zip(tonic).map(|(ours, tonic)| tonic / ours);
        met &= ratio.is_some_and(|r| r >= 1.0);
        let ratio = ratio.map_or("n/a".to_string(), |r| format!("{r:.2}×"));
        ratios.push(format!("{}: {ratio}", report::payload_label(payload)));
    }
    let tag = if met { "met   " } else { "MISSED" };
    outln!("  [{tag}] lapce-ipc-rpc-tls p50 no worse than grpc-tls: {}", ratios.join(", "));
}

/// Runs `lapce-ipc bench --grpc`: the gRPC rows only. A missed target does not fail it; a
/// failed row does (exit 1).
pub fn run(args: &BenchArgs) -> ExitCode {
    crate::output::keep_stdout_for(args.json.as_deref());
    let started = Instant::now();
    let rounds = args.rounds.unwrap_or(if args.quick { 2_000 } else { 10_000 });
    let budget =
        args.peer_budget.map_or(Duration::from_secs(if args.quick { 2 } else { 5 }), Duration::from_secs_f64);
    let counts = (rounds / 10, rounds, budget);
    outln!(
        "lapce-ipc bench --grpc: tonic unary echo, {rounds} calls per row (at most {:.0} s), \
         default multi-thread runtimes, nothing pinned",
        budget.as_secs_f64()
    );
    let tls = match SelfSigned::make() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: cannot make a self-signed certificate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for payload in PAYLOADS {
        for transport in GrpcTransport::ALL {
            let rtt = measure(transport, payload, counts, &tls).map_err(|e| e.to_string());
            rows.push(row(transport, payload, &rtt));
        }
    }
    // lapce-ipc's own client and server over TLS, against tonic over TLS in the same run.
    rows.extend(super::tls::rows(args));
    add_ratios(&mut rows);
    outln!();
    print(&rows);
    print_tls_target(&rows);
    outln!();
    outln!("total time {:.1} s", started.elapsed().as_secs_f64());
    let ok = rows.iter().all(|r| r.error.is_none());
    report::finish(args.json.as_deref(), &rows, ok, "some gRPC measurements failed (see above)")
}
