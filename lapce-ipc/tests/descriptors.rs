//! Descriptors per connection: a client process and a server process, each started under the
//! usual soft open-file limit of 1024, hold a thousand connections and answer requests on all
//! of them; each connection costs at most three descriptors on either side. Linux only: the
//! counts come from `/proc`.
#![cfg(target_os = "linux")]

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::MessageType;
use lapce_ipc::{IpcClient, IpcConfig, IpcError, IpcServer};

const HANG: Duration = Duration::from_secs(120);

/// Echo.
const ECHO: MessageType = MessageType::Data;
/// Answers the server's open descriptors less those of its warm pool (decimal).
const FDS: MessageType = MessageType::Unknown(0x2F0);
/// Answers the number of clients the listener refused during their handshake (decimal).
const REFUSED: MessageType = MessageType::Unknown(0x2F1);
/// Begins a graceful shutdown and answers at once.
const SHUT_DOWN: MessageType = MessageType::Unknown(0x2FF);

/// Connections the test holds at once: the default `max_connections`.
const CONNECTIONS: usize = 1000;
/// The soft open-file limit both processes start with.
const USUAL_SOFT_LIMIT: u64 = 1024;
/// Most descriptors one connection may cost on either side (Unix: the control socket and one
/// doorbell end per direction).
const PER_CONNECTION: usize = 3;
/// Descriptors one warm segment of the server's pool holds: the segment and both ends of its
/// two doorbells.
const PER_WARM_SEGMENT: usize = 5;

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, arg)) = child_role() else { return };
    lower_soft_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match role.as_str() {
        "fd-server" => rt.block_on(serve(&arg)),
        "fd-starved-server" => {
            use rustix::process::{setrlimit, Resource, Rlimit};
            let limit = Some(STARVED_LIMIT);
            setrlimit(Resource::Nofile, Rlimit { current: limit, maximum: limit }).unwrap();
            rt.block_on(serve(&arg))
        }
        "fd-clients" => rt.block_on(hold_connections(&arg)),
        other => panic!("unknown role {other}"),
    }
}

/// Starts this process under the usual soft limit, whatever the test runner's is.
fn lower_soft_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    assert!(
        hard.is_none_or(|h| h >= 4 * CONNECTIONS as u64),
        "the hard limit {hard:?} is too low for this test"
    );
    setrlimit(Resource::Nofile, Rlimit { current: Some(USUAL_SOFT_LIMIT), maximum: hard }).unwrap();
}

/// This process's open descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn config() -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.max_connections = CONNECTIONS + 1;
    config.ipc.max_slots = 2 * CONNECTIONS;
    config.ipc.request_timeout_ms = 60_000;
    config
}

async fn serve(name: &str) {
    let server = IpcServer::bind(name, config()).unwrap();
    server.register_handler(ECHO, |p: Bytes| async move { Ok(p) });
    let handle = server.clone();
    server.register_sync_handler(FDS, move |_| {
        let net = open_fds() - PER_WARM_SEGMENT * handle.pool_stats().warm;
        Ok(Bytes::from(net.to_string()))
    });
    let handle = server.clone();
    server.register_sync_handler(REFUSED, move |_| {
        Ok(Bytes::from(handle.stats().handshakes_refused.to_string()))
    });
    let handle = server.clone();
    server.register_handler(SHUT_DOWN, move |_| {
        handle.shutdown(Duration::from_secs(10));
        async { Ok(Bytes::from_static(b"bye")) }
    });
    server.serve().await.unwrap();
}

/// Connects, waiting for the child server to come up.
async fn connect(name: &str) -> IpcClient {
    common::connect_client(name, config()).await
}

async fn ask(client: &IpcClient, what: MessageType) -> usize {
    let answer = client.request(what, b"").await.unwrap();
    std::str::from_utf8(&answer).unwrap().parse().unwrap()
}

async fn server_fds(client: &IpcClient) -> usize {
    ask(client, FDS).await
}

/// `name,n`: opens `n` connections, asks each for an echo, and checks what they cost.
async fn hold_connections(arg: &str) {
    let (name, n) = arg.split_once(',').unwrap();
    let n: usize = n.parse().unwrap();
    let first = connect(name).await;
    let (ours_before, theirs_before) = (open_fds(), server_fds(&first).await);
    let mut clients = vec![first];
    for i in 1..n {
        match IpcClient::connect(name, config()).await {
            Ok(c) => clients.push(c),
            Err(e) => panic!("connection {i} of {n}: {e}"),
        }
    }
    for (i, client) in clients.iter().enumerate() {
        let answer = client.request(ECHO, i.to_string()).await.unwrap();
        assert_eq!(answer, i.to_string().as_bytes(), "connection {i}");
    }
    let (ours, theirs) = (open_fds() - ours_before, server_fds(&clients[0]).await - theirs_before);
    let added = n - 1;
    eprintln!(
        "{added} connections: client +{ours} descriptors ({:.2} each), server +{theirs} ({:.2} each)",
        ours as f64 / added as f64,
        theirs as f64 / added as f64
    );
    assert!(ours <= PER_CONNECTION * added, "client: {ours} descriptors for {added} connections");
    // The pool's refiller may hold a segment it has not counted as warm yet.
    let slack = 2 * PER_WARM_SEGMENT;
    assert!(theirs <= PER_CONNECTION * added + slack, "server: {theirs} descriptors for {added} connections");
    clients[0].request(SHUT_DOWN, b"").await.unwrap();
}

/// A thousand connections between two processes that each start under a soft limit of 1024
/// descriptors: both raise their limit at bind or connect, each connection costs at most three
/// descriptors on either side, and every connection answers.
#[test]
fn a_thousand_connections_under_the_usual_open_file_limit() {
    let name = unique_name("fd-1000");
    let mut server = ChildGuard::spawn("fd-server", &name).listening_on(&name);
    let mut clients = ChildGuard::spawn("fd-clients", &format!("{name},{CONNECTIONS}"));
    clients.wait_success(HANG);
    server.wait_success(HANG);
}

/// The hard (and soft) open-file limit of the starved server: room for a few dozen connections.
const STARVED_LIMIT: u64 = 96;

/// A server at its hard open-file limit: the clients it has no descriptors for are refused with
/// an error that says so (not a bare hang-up or a handshake timeout), the refusals are counted,
/// and the connections it holds keep working.
#[test]
fn a_server_out_of_descriptors_refuses_clients_saying_why() {
    let name = unique_name("fd-starved");
    let mut server = ChildGuard::spawn("fd-starved-server", &name).listening_on(&name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let first = connect(&name).await;
        let mut held = Vec::new();
        let refusal = loop {
            match IpcClient::connect(&name, config()).await {
                Ok(client) => held.push(client),
                Err(e) => break e,
            }
            assert!(
                held.len() < STARVED_LIMIT as usize,
                "{} connections on {STARVED_LIMIT} descriptors",
                held.len()
            );
        };
        eprintln!("refused after {} connections: {refusal}", held.len() + 1);
        assert!(
            matches!(&refusal, IpcError::ServerRefused(why) if why.contains("file descriptors")),
            "{refusal:?}"
        );
        assert!(ask(&first, REFUSED).await >= 1);
        for (i, client) in held.iter().enumerate() {
            assert_eq!(client.request(ECHO, i.to_string()).await.unwrap(), i.to_string().as_bytes());
        }
        first.request(SHUT_DOWN, b"").await.unwrap();
    });
    server.wait_success(HANG);
}
