//! The hidden `bench-scale-client` subcommand: a client child of `bench --scale`, with
//! `--connections` connections on one tokio runtime, driven through the API `--api` names, that
//! follows the line protocol of [`crate::child`].

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapce_ipc::frame::{FramedStream, MessageType};
use lapce_ipc::{IpcClient, IpcConfig, SharedMemoryStream};

use super::{ScaleClient, PAYLOAD};
use crate::child::{self, Argv, ChildArgs};
use crate::error::Result;
use crate::histogram::new_histogram;

/// Arguments of the hidden `bench-scale-client` subcommand (a client child of `--scale`).
#[derive(Debug, PartialEq, clap::Args)]
pub struct ScaleClientArgs {
    /// Listener name of the server.
    #[arg(long)]
    pub name: String,
    /// Connections this process opens.
    #[arg(long)]
    pub connections: usize,
    /// Requests in flight per connection during the load.
    #[arg(long)]
    pub inflight: usize,
    /// Seconds of load.
    #[arg(long)]
    pub secs: f64,
    /// Pid of the bench process; the client dies with it.
    #[arg(long)]
    pub parent_pid: Option<u32>,
    /// The API the connections are driven through.
    #[arg(long, value_enum, default_value_t = ScaleClient::Rpc)]
    pub api: ScaleClient,
}

impl ChildArgs for ScaleClientArgs {
    const SUBCOMMAND: &'static str = "bench-scale-client";

    fn push_flags(&self, argv: &mut Argv) {
        argv.value("--name", &self.name)
            .value("--connections", self.connections)
            .value("--inflight", self.inflight)
            .value("--secs", self.secs)
            .option("--parent-pid", self.parent_pid)
            .value_enum("--api", &self.api);
    }
}

/// The client child (`bench-scale-client`).
pub fn client(args: &ScaleClientArgs) -> std::process::ExitCode {
    child::child_exit(ScaleClientArgs::SUBCOMMAND, client_inner(args))
}

fn client_inner(args: &ScaleClientArgs) -> Result<()> {
    // Outside Linux the parent check would read stdin, which carries this child's commands; the
    // child ends there when its stdin closes instead.
    child::die_with_parent(if cfg!(target_os = "linux") { args.parent_pid } else { None })?;
    child::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let clients = runtime.block_on(connect_all(&args.name, args.connections, args.api))?;
    child::connected_then_wait_for_go(clients.len())?;
    let secs = Duration::from_secs_f64(args.secs);
    let inflight = args.inflight;
    // One histogram for the whole process, shared by every request loop: one per loop (hundreds
    // of KiB each at this resolution) would cost gigabytes with thousands of loops, and the
    // load would measure the allocator. The runtime has one worker, so the lock is uncontended.
    let hist = Arc::new(Mutex::new(new_histogram()?));
    let (requests, errors, elapsed, clients) = runtime.block_on(async {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + secs;
        let mut set = tokio::task::JoinSet::new();
        let mut kept = Vec::new();
        for (c, client) in clients.into_iter().enumerate() {
            match client {
                Connection::Rpc(client) => {
                    for t in 0..inflight {
                        set.spawn(rpc_loop(client.clone(), (c * 31 + t) as u8, deadline, hist.clone()));
                    }
                    kept.push(client);
                }
                Connection::Framed(stream) => {
                    set.spawn(framed_loop(*stream, inflight, deadline, hist.clone()));
                }
            }
        }
        let (mut ok, mut errors) = (0u64, 0u64);
        while let Some(r) = set.join_next().await {
            match r {
                Ok((o, e)) => {
                    ok += o;
                    errors += e;
                }
                Err(_) => errors += 1,
            }
        }
        (ok, errors, start.elapsed(), kept)
    });
    let hist = hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = std::io::stdout();
    writeln!(out, "{}", child::format_result(requests, errors, elapsed, &hist))?;
    out.flush()?;
    child::wait_for_parent(); // `close`
    drop(clients);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// One scale client connection.
enum Connection {
    Rpc(IpcClient),
    /// Greeted already (the server's `ready` frame read).
    Framed(Box<FramedStream>),
}

/// Opens `count` connections to `name`, a few at a time (the server accepts one after another
/// anyway).
async fn connect_all(name: &str, count: usize, api: ScaleClient) -> Result<Vec<Connection>> {
    let mut clients = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for _ in chunk {
            let name = name.to_owned();
            set.spawn(async move {
                match api {
                    ScaleClient::Rpc => {
                        Ok(Connection::Rpc(IpcClient::connect(&name, IpcConfig::default()).await?))
                    }
                    ScaleClient::Framed => {
                        let mut framed = FramedStream::new(SharedMemoryStream::connect(&name).await?);
                        let (kind, id) = framed.recv_with(|kind, _, id| (kind, id)).await?;
                        if (kind, id) != (MessageType::Control, 0) {
                            return Err(format!("expected the server's greeting, got {kind:?} #{id}").into());
                        }
                        Ok::<_, crate::error::Error>(Connection::Framed(Box::new(framed)))
                    }
                }
            });
        }
        while let Some(c) = set.join_next().await {
            clients.push(c.map_err(|e| format!("connect task: {e}"))??);
        }
    }
    Ok(clients)
}

/// Records one round trip.
fn record(hist: &Mutex<Histogram<u64>>, sent: Instant) {
    let rtt = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
    hist.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(rtt);
}

/// One request in flight on an `IpcClient`, again and again until `deadline`: requests answered
/// and errors (a wrong echo or a failed request ends the loop: a dead connection would
/// otherwise fail as fast as it can).
async fn rpc_loop(
    client: IpcClient,
    seed: u8,
    deadline: tokio::time::Instant,
    hist: Arc<Mutex<Histogram<u64>>>,
) -> (u64, u64) {
    let mut ok = 0u64;
    let mut msg = [0x5Au8; PAYLOAD];
    let mut i = seed;
    let deadline = deadline.into_std();
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        i = i.wrapping_add(1);
        msg[0] = i;
        match client.request(MessageType::Data, msg).await {
            Ok(answer) if answer.len() == PAYLOAD && answer[0] == i => {
                record(&hist, sent);
                ok += 1;
            }
            _ => return (ok, 1),
        }
    }
    (ok, 0)
}

/// `inflight` requests kept in flight on one framed stream until `deadline`, then the last
/// answers collected: requests answered and errors. Each request has the next id and its id's
/// low byte as first payload byte; an answer must be a `Response` to the oldest request in
/// flight (one connection's requests are answered in order by an echo that completes at
/// once) with that payload, or it counts as an error and ends the loop.
async fn framed_loop(
    mut stream: FramedStream,
    inflight: usize,
    deadline: tokio::time::Instant,
    hist: Arc<Mutex<Histogram<u64>>>,
) -> (u64, u64) {
    let mut sent_at = std::collections::VecDeque::with_capacity(inflight);
    let mut msg = [0x5Au8; PAYLOAD];
    let (mut next, mut ok) = (1u64, 0u64);
    loop {
        while sent_at.len() < inflight && tokio::time::Instant::now() < deadline {
            msg[0] = next as u8;
            sent_at.push_back((next, Instant::now()));
            if stream.send_with_id(MessageType::Data, next, &msg).await.is_err() {
                return (ok, 1);
            }
            next += 1;
        }
        let Some(&(want, sent)) = sent_at.front() else { return (ok, 0) };
        let answer = stream.recv_with(|kind, payload, id| {
            kind == MessageType::Response
                && id == want
                && payload.len() == PAYLOAD
                && payload[0] == want as u8
        });
        match answer.await {
            Ok(true) => {
                record(&hist, sent);
                sent_at.pop_front();
                ok += 1;
            }
            _ => return (ok, 1),
        }
    }
}
