//! The server's Prometheus metrics as a scraper sees them: the server runs in a child process
//! (this test binary re-run in the `metrics-server` role) with its HTTP `/metrics` endpoint on an
//! ephemeral loopback port, which it writes to a file the test reads; the test scrapes over plain
//! TCP (HTTP/1.0), checks the text is well-formed OpenMetrics and that the counters move by exactly
//! the requests, errors and connections it caused.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, connect_retry, unique_name, ChildGuard};
use lapce_ipc::frame::{BlockingFramedStream, Frame, MessageType};
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::metrics::CONTENT_TYPE;
use lapce_ipc::{IpcClient, IpcConfig, IpcError, IpcServer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

const HANG: Duration = Duration::from_secs(60);

/// Echo.
const ECHO: MessageType = MessageType::Data;
/// Sleeps the number of milliseconds in the first 8 bytes, then echoes.
const SLOW: MessageType = MessageType::Complete;
/// Streams as many chunks as the payload says (decimal), chunk `i` = `i` in decimal.
const COUNT: MessageType = MessageType::Chat;
const PANICS: MessageType = MessageType::Unknown(0x200);
const FAILS: MessageType = MessageType::Unknown(0x201);
/// No handler for this one.
const NOBODY: MessageType = MessageType::Unknown(0x300);
/// Answers the host application's registry as OpenMetrics text (the "host-registry" server).
const HOST_TEXT: MessageType = MessageType::Unknown(0x301);

fn config(max_connections: usize) -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.max_connections = max_connections;
    config.ipc.request_timeout_ms = 60_000;
    // Within the warm budget of any open-file limit a CI machine sets (a quarter of 1024 is 28
    // segments), so the slot counts below do not depend on the machine.
    config.ipc.warm_pool_size = WARM;
    config
}

/// The server's warm pool.
const WARM: usize = 16;

fn register_handlers(server: &IpcServer) {
    server.register_handler(ECHO, |p: Bytes| async move { Ok(p) });
    server.register_handler(SLOW, |p: Bytes| async move {
        let ms = u64::from_le_bytes(p[..8].try_into().unwrap());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(p)
    });
    common::register_count(server, COUNT);
    server.register_handler(PANICS, |_| async move {
        if true {
            panic!("handler boom");
        }
        Ok(Bytes::new())
    });
    server.register_handler(FAILS, |_| async move { Err(ErrorBody::new(ErrorCode::Number(429), "later")) });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, arg)) = child_role() else { return };
    match role.as_str() {
        // `NAME,PORT_FILE,MAX_CONNECTIONS`: a server with its metrics endpoint on a free loopback
        // port, written to PORT_FILE once it listens.
        "metrics-server" => {
            let mut args = arg.split(',');
            let (name, port_file, max) = (args.next().unwrap(), args.next().unwrap(), args.next().unwrap());
            std::panic::set_hook(Box::new(|info| eprintln!("metrics-server: {info}")));
            runtime().block_on(async {
                let server = IpcServer::bind(name, config(max.parse().unwrap())).unwrap();
                register_handlers(&server);
                let endpoint = server.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
                let tmp = format!("{port_file}.tmp");
                std::fs::write(&tmp, endpoint.local_addr().port().to_string()).unwrap();
                std::fs::rename(&tmp, port_file).unwrap();
                server.serve().await.unwrap();
                drop(endpoint);
            });
        }
        // `NAME`: a server whose families are registered in a host application's registry
        // (prefix `editor`, with one metric of the host's own), which `HOST_TEXT` answers.
        "host-registry-server" => runtime().block_on(async {
            let server = IpcServer::bind(&arg, config(10)).unwrap();
            register_handlers(&server);
            let mut registry = Registry::with_prefix("editor");
            let documents = Counter::<u64>::default();
            registry.register("documents_opened", "Documents the editor opened", documents.clone());
            documents.inc_by(7);
            server.register_metrics(&mut registry).unwrap();
            server.register_sync_handler(HOST_TEXT, move |_| {
                let mut text = String::new();
                prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
                Ok(Bytes::from(text))
            });
            server.serve().await.unwrap();
        }),
        // `NAME,PORT`: a server that serves its endpoint because `metrics.addr` says so.
        "addr-server" => {
            let (name, port) = arg.split_once(',').unwrap();
            runtime().block_on(async {
                let mut config = config(10);
                config.metrics.addr = Some(format!("127.0.0.1:{port}"));
                let server = IpcServer::bind(name, config).unwrap();
                register_handlers(&server);
                server.serve().await.unwrap();
            });
        }
        // `NAME`: a client that connects and then waits to be killed.
        "idle-client" => runtime().block_on(async {
            let _client = connect(&arg).await;
            std::future::pending::<()>().await
        }),
        other => panic!("unknown role {other}"),
    }
}

/// Connects, waiting for the child server to come up.
async fn connect(name: &str) -> IpcClient {
    let deadline = Instant::now() + HANG;
    loop {
        match IpcClient::connect(name, config(1000)).await {
            Ok(c) => return c,
            Err(IpcError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// Removes the port file however the test ends.
struct PortFile(PathBuf);

impl Drop for PortFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("port.tmp"));
    }
}

/// The metrics endpoint's address, once the child has written it.
fn wait_for_port(file: &Path) -> SocketAddr {
    let deadline = Instant::now() + HANG;
    loop {
        if let Ok(port) = std::fs::read_to_string(file) {
            return SocketAddr::from(([127, 0, 0, 1], port.trim().parse().unwrap()));
        }
        assert!(Instant::now() < deadline, "the server never wrote its metrics port to {}", file.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One HTTP exchange as a scraper does it: status line, headers (lower-case names), body.
struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

fn http(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(HANG)).unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: BTreeMap<_, _> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    if !request.starts_with("HEAD ") {
        assert_eq!(headers["content-length"].parse::<usize>().unwrap(), body.len(), "Content-Length");
    }
    assert_eq!(headers["connection"], "close");
    HttpResponse { status, headers, body: body.to_string() }
}

fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {CONTENT_TYPE}\r\n\r\n"))
}

/// A scrape of `/metrics`, checked as OpenMetrics text: every sample by its series (name and
/// labels as written), and the type of every family.
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of a series; panics if it is not there.
    fn get(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| panic!("no series {series} in {:#?}", self.samples))
    }
}

fn scrape(addr: SocketAddr) -> Scrape {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], CONTENT_TYPE);
    parse_openmetrics(&r.body)
}

/// Parses and checks OpenMetrics text: descriptors before their samples and each family once,
/// samples grouped under the family they belong to (counters `_total`, histograms `_bucket`,
/// `_sum`, `_count`), well-formed labels, every series once, histogram buckets cumulative and
/// ending with `+Inf` equal to `_count`, one `# EOF` at the very end.
fn parse_openmetrics(text: &str) -> Scrape {
    parse_openmetrics_of(text, "lapce_ipc_")
}

/// [`parse_openmetrics`] of a registry whose families all start with `prefix`.
fn parse_openmetrics_of(text: &str, prefix: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "no EOF at the end:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.iter().filter(|l| **l == "# EOF").count(), 1);
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    // Histogram buckets per (series without `le`): (le, cumulative count) in order.
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with(prefix), "{line}");
            match kind {
                "HELP" => assert!(!value.is_empty()),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram"].contains(&value), "{line}");
                    assert!(families.insert(name.to_string(), value.to_string()).is_none(), "twice: {line}");
                    current = Some((name.to_string(), value.to_string()));
                }
                "UNIT" => assert!(name.ends_with(&format!("_{value}")), "{line}"),
                _ => panic!("unexpected comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}').expect("closing brace"))),
            None => (series, Vec::new()),
        };
        let (family, kind) = current.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let suffix = name.strip_prefix(family.as_str()).unwrap_or_else(|| panic!("{name} outside {family}"));
        match kind.as_str() {
            "counter" => assert_eq!(suffix, "_total", "{line}"),
            "gauge" => assert_eq!(suffix, "", "{line}"),
            _ => assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}"),
        }
        if suffix == "_bucket" {
            let le = labels.iter().find(|(k, _)| k == "le").expect("le label").1.clone();
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            let rest: Vec<_> =
                labels.iter().filter(|(k, _)| k != "le").map(|(k, v)| format!("{k}={v}")).collect();
            buckets.entry(format!("{family}{{{}}}", rest.join(","))).or_default().push((le, value));
        }
        if kind == "counter" || suffix == "_count" || suffix == "_bucket" {
            assert!(value >= 0.0 && value.fract() == 0.0, "{line}");
        }
        assert!(samples.insert(series.to_string(), value).is_none(), "series twice: {line}");
    }
    for (series, b) in &buckets {
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{series}: {b:?}");
        let (last_le, total) = *b.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{series}");
        let family = series.split('{').next().unwrap();
        let labels = &series[family.len()..];
        let count_series =
            if labels == "{}" { format!("{family}_count") } else { format!("{family}_count{}", labels) };
        // Rebuild the `_count` series as the encoder writes it (label values quoted).
        let count = samples
            .iter()
            .find(|(k, _)| k.replace('"', "") == count_series)
            .unwrap_or_else(|| panic!("no {count_series}"))
            .1;
        assert_eq!(total, *count, "{series}: +Inf bucket vs _count");
    }
    Scrape { samples, families }
}

/// `k="v",k2="v2"` (values may contain `\"`, `\\`, `\n`).
fn parse_labels(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"").unwrap_or_else(|| panic!("bad labels {s:?}"));
        assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{key}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (_, '\\') => value.push(chars.next().unwrap().1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.to_string(), value));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    out
}

/// Scrapes until `ready` holds, for values the server records just after the client could see
/// the effect (a duration observed once the answer is queued, a hang-up noticed), then returns
/// that scrape.
fn scrape_until(addr: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + HANG;
    loop {
        let s = scrape(addr);
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "the metrics never reached the expected values: {s:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn millis(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_le_bytes())
}

#[test]
fn scraped_counters_move_by_exactly_the_requests_errors_and_connections_made() {
    let name = unique_name("metrics");
    let port_file = PortFile(std::env::temp_dir().join(format!("{name}.port")));
    let mut server = ChildGuard::spawn("metrics-server", &format!("{name},{},2", port_file.0.display()))
        .listening_on(&name);
    let rt = runtime();
    let addr = wait_for_port(&port_file.0);
    // The first client connects once the warm pool is full, so that the slot counts checked at
    // the end come back to a known figure. (Before the pool stopped counting its first fill as a
    // burst, a claim then doubled its target for 30 s and the test waited that out, now and then.)
    scrape_until(addr, |s| s.get("lapce_ipc_slots_available") == WARM as f64);
    let client = rt.block_on(connect(&name));

    // The connect duration is observed just after the greeting, which the client may see first.
    let before = scrape_until(addr, |s| s.get("lapce_ipc_connect_duration_seconds_count") == 1.0);
    for (family, kind) in [
        ("lapce_ipc_connections", "counter"),
        ("lapce_ipc_connections_active", "gauge"),
        ("lapce_ipc_connect_duration_seconds", "histogram"),
        ("lapce_ipc_requests", "counter"),
        ("lapce_ipc_request_duration_seconds", "histogram"),
        ("lapce_ipc_requests_in_flight", "gauge"),
        ("lapce_ipc_stream_chunks", "counter"),
        ("lapce_ipc_errors", "counter"),
        ("lapce_ipc_request_bytes", "counter"),
        ("lapce_ipc_response_bytes", "counter"),
        ("lapce_ipc_dead_connections_reclaimed", "counter"),
        ("lapce_ipc_slots", "gauge"),
        ("lapce_ipc_slots_available", "gauge"),
        ("lapce_ipc_slots_in_use", "gauge"),
        ("lapce_ipc_slots_max", "gauge"),
        ("lapce_ipc_slot_claims", "counter"),
        ("lapce_ipc_slot_claims_cold", "counter"),
        ("lapce_ipc_slots_reclaimed", "counter"),
        ("lapce_ipc_handshakes_refused", "counter"),
        ("lapce_ipc_backpressure_events", "counter"),
        ("lapce_ipc_stale_resources_cleaned", "counter"),
        ("lapce_ipc_backpressure_wait_seconds", "histogram"),
        ("lapce_ipc_ring_occupancy_ratio", "gauge"),
        ("lapce_ipc_ring_written_bytes", "counter"),
        ("lapce_ipc_ring_read_bytes", "counter"),
        ("lapce_ipc_ring_writes", "counter"),
        ("lapce_ipc_ring_reads", "counter"),
        ("lapce_ipc_ring_write_duration_seconds", "histogram"),
    ] {
        assert_eq!(before.families.get(family).map(String::as_str), Some(kind), "{family}: {before:#?}");
    }
    // Series exist from the start: every registered type and every error kind, at 0.
    for series in [
        r#"lapce_ipc_requests_total{type="Data"}"#,
        r#"lapce_ipc_requests_total{type="Chat"}"#,
        r#"lapce_ipc_requests_total{type="0x0200"}"#,
        r#"lapce_ipc_errors_total{kind="panic"}"#,
        r#"lapce_ipc_errors_total{kind="bad_frame"}"#,
        r#"lapce_ipc_errors_total{kind="too_large"}"#,
    ] {
        assert_eq!(before.get(series), 0.0, "{series}");
    }
    assert_eq!(before.get(r#"lapce_ipc_connections_total{status="accepted"}"#), 1.0);
    assert_eq!(before.get("lapce_ipc_connections_active"), 1.0);

    // Requests of every outcome through one client.
    const N: usize = 25;
    let mut sent_bytes = 0;
    let mut echoed_bytes = 0;
    rt.block_on(async {
        for i in 0..N {
            let payload = "x".repeat(i);
            sent_bytes += payload.len();
            echoed_bytes += payload.len();
            assert_eq!(client.request(ECHO, payload.clone()).await.unwrap(), payload);
        }
        for _ in 0..3 {
            assert!(matches!(client.request(PANICS, "p").await, Err(IpcError::HandlerPanic(_))));
        }
        for _ in 0..2 {
            assert!(matches!(client.request(FAILS, "f").await, Err(IpcError::Remote(_))));
            assert!(matches!(client.request(NOBODY, "n").await, Err(IpcError::UnknownMessageType(_))));
        }
        sent_bytes += 3 + 2 + 2;
        let mut stream = client.request_stream(COUNT, "10").await.unwrap();
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            echoed_bytes += chunk.unwrap().len();
            chunks += 1;
        }
        assert_eq!(chunks, 10);
        sent_bytes += 2;
        // A request the client gives up on: it sends a Cancel (no payload), the server stops it.
        let r = client.request_timeout(SLOW, millis(600_000), Some(Duration::from_millis(50))).await;
        assert!(matches!(r, Err(IpcError::Timeout)), "{r:?}");
        sent_bytes += 8;
    });

    let delta = |s: &Scrape, series: &str| s.get(series) - before.get(series);
    // The cancel is processed after the client gave up, and durations are observed just after
    // the answer is queued: wait until those have landed, then check everything exactly.
    let after = scrape_until(addr, |s| {
        delta(s, r#"lapce_ipc_errors_total{kind="cancelled"}"#) >= 1.0
            && s.get("lapce_ipc_requests_in_flight") == 0.0
            && delta(s, r#"lapce_ipc_request_duration_seconds_count{type="Data"}"#) >= N as f64
            && delta(s, r#"lapce_ipc_request_duration_seconds_count{type="0x0200"}"#) >= 3.0
            && delta(s, r#"lapce_ipc_request_duration_seconds_count{type="0x0201"}"#) >= 2.0
            && delta(s, r#"lapce_ipc_request_duration_seconds_count{type="Chat"}"#) >= 1.0
    });
    for (series, expected) in [
        (r#"lapce_ipc_requests_total{type="Data"}"#, N as f64),
        (r#"lapce_ipc_requests_total{type="0x0200"}"#, 3.0),
        (r#"lapce_ipc_requests_total{type="0x0201"}"#, 2.0),
        (r#"lapce_ipc_requests_total{type="Chat"}"#, 1.0),
        (r#"lapce_ipc_requests_total{type="Complete"}"#, 1.0),
        (r#"lapce_ipc_request_duration_seconds_count{type="Data"}"#, N as f64),
        (r#"lapce_ipc_request_duration_seconds_count{type="0x0200"}"#, 3.0),
        (r#"lapce_ipc_request_duration_seconds_count{type="0x0201"}"#, 2.0),
        (r#"lapce_ipc_request_duration_seconds_count{type="Chat"}"#, 1.0),
        // The cancelled request was never answered: not observed.
        (r#"lapce_ipc_request_duration_seconds_count{type="Complete"}"#, 0.0),
        ("lapce_ipc_stream_chunks_total", 10.0),
        (r#"lapce_ipc_errors_total{kind="panic"}"#, 3.0),
        (r#"lapce_ipc_errors_total{kind="handler"}"#, 2.0),
        (r#"lapce_ipc_errors_total{kind="unknown_type"}"#, 2.0),
        (r#"lapce_ipc_errors_total{kind="cancelled"}"#, 1.0),
        (r#"lapce_ipc_errors_total{kind="bad_request"}"#, 0.0),
        (r#"lapce_ipc_errors_total{kind="bad_frame"}"#, 0.0),
        (r#"lapce_ipc_errors_total{kind="too_large"}"#, 0.0),
        ("lapce_ipc_request_bytes_total", sent_bytes as f64),
        (r#"lapce_ipc_connections_total{status="accepted"}"#, 0.0),
        ("lapce_ipc_dead_connections_reclaimed_total", 0.0),
    ] {
        assert_eq!(delta(&after, series), expected, "{series}");
    }
    // Answers carry the echoes and chunks plus the error bodies (JSON of unspecified length).
    assert!(delta(&after, "lapce_ipc_response_bytes_total") > echoed_bytes as f64);
    // A type without a handler gets no series of its own (peers cannot add label values).
    assert!(!after.samples.keys().any(|k| k.contains("0x0300")), "{:#?}", after.samples);

    // Connections: a client process that is killed, one refused over the limit of 2, one that
    // closes normally.
    let mut idle = ChildGuard::spawn("idle-client", &name);
    scrape_until(addr, |s| s.get("lapce_ipc_connections_active") == 2.0);
    rt.block_on(async {
        match IpcClient::connect(&name, config(1000)).await {
            Err(IpcError::ServerRefused(reason)) => assert!(reason.contains("limit of 2"), "{reason}"),
            other => panic!("expected a refusal over the limit, got {:?}", other.map(|_| ())),
        }
    });
    idle.kill();
    scrape_until(addr, |s| s.get("lapce_ipc_connections_active") == 1.0);
    rt.block_on(async {
        let closing = connect(&name).await;
        assert_eq!(closing.request(ECHO, "bye").await.unwrap(), "bye");
    });
    let last = scrape_until(addr, |s| {
        s.get("lapce_ipc_connections_active") == 1.0
            && delta(s, r#"lapce_ipc_connections_total{status="accepted"}"#) >= 2.0
            && delta(s, "lapce_ipc_dead_connections_reclaimed_total") >= 2.0
            && s.get("lapce_ipc_slots_in_use") == 1.0
            && s.get("lapce_ipc_slots_available") == WARM as f64
    });
    for (series, expected) in [
        (r#"lapce_ipc_connections_total{status="accepted"}"#, 2.0),
        (r#"lapce_ipc_connections_total{status="refused"}"#, 1.0),
        ("lapce_ipc_connect_duration_seconds_count", 2.0),
        // The killed client and the one that closed: the server cannot tell them apart.
        ("lapce_ipc_dead_connections_reclaimed_total", 2.0),
        (r#"lapce_ipc_requests_total{type="Data"}"#, N as f64 + 1.0),
        // Slots: the idle client, the refused one (the listener took it, the server turned it
        // away) and the closing one each claimed a slot, and each gave it back.
        ("lapce_ipc_slot_claims_total", 3.0),
        ("lapce_ipc_slots_reclaimed_total", 3.0),
        ("lapce_ipc_slot_claims_cold_total", 0.0),
        ("lapce_ipc_handshakes_refused_total", 0.0),
    ] {
        assert_eq!(delta(&last, series), expected, "{series}");
    }
    // The warm pool was refilled after every claim; one slot is held by the first client.
    assert_eq!(last.get("lapce_ipc_slots"), WARM as f64 + 1.0);
    assert_eq!(last.get("lapce_ipc_slots_max"), 1024.0);
    // The first client is still served.
    assert_eq!(rt.block_on(client.request(ECHO, "still here")).unwrap(), "still here");
    server.kill();
    // Killed: its socket file is ours to remove.
    let _ = std::fs::remove_file(lapce_ipc::socket_path(&name).unwrap());
}

/// A client that sends requests and does not read the answers for a while: the server writes
/// answers until the ring to the client is full, then waits for room (and reads no more
/// requests meanwhile: nothing piles up in its memory), and each wait is counted with its
/// duration; once the client reads, every answer arrives intact and in order.
#[test]
fn answers_to_a_client_that_does_not_read_are_counted_as_backpressure() {
    const REQUESTS: u64 = 48;
    const SIZE: usize = 16 << 10; // 48 x 16 KiB of answers, three times the 256 KiB ring
    let name = unique_name("metrics-bp");
    let port_file = PortFile(std::env::temp_dir().join(format!("{name}.port")));
    let mut server = ChildGuard::spawn("metrics-server", &format!("{name},{},2", port_file.0.display()))
        .listening_on(&name);
    let (mut tx, mut rx) = BlockingFramedStream::new(connect_retry(&name)).into_split();
    let mut answer = Frame::default();
    rx.recv_into(&mut answer).unwrap();
    assert_eq!((answer.kind, answer.id), (MessageType::Control, 0), "greeting");
    let addr = wait_for_port(&port_file.0);
    let before = scrape(addr);
    assert_eq!(before.get("lapce_ipc_backpressure_events_total"), 0.0);
    let payload = |id: u64| vec![id as u8; SIZE];
    // The requests go from a thread of their own: once the server waits for room for answers it
    // reads no requests, and the sends wait in turn until the answers are read.
    let sender = std::thread::spawn(move || {
        for id in 1..=REQUESTS {
            tx.send_with_id(ECHO, id, &payload(id)).unwrap();
        }
        tx
    });
    let ring =
        |s: &Scrape, family: &str, direction: &str| s.get(&format!("{family}{{direction=\"{direction}\"}}"));
    // Not reading: the ring to the client fills up and the server's answer waits for room.
    let stuck = scrape_until(addr, |s| ring(s, "lapce_ipc_ring_occupancy_ratio", "to_client") > 0.9);
    let full = ring(&stuck, "lapce_ipc_ring_occupancy_ratio", "to_client");
    assert!(full <= 1.0, "occupancy {full}");
    assert!(stuck.get("lapce_ipc_requests_total{type=\"Data\"}") < REQUESTS as f64, "{stuck:#?}");
    assert_eq!(stuck.get("lapce_ipc_backpressure_wait_seconds_count"), 0.0, "counted when the wait ends");
    std::thread::sleep(Duration::from_millis(50));
    for id in 1..=REQUESTS {
        rx.recv_into(&mut answer).unwrap();
        assert_eq!((answer.kind, answer.id), (MessageType::Response, id));
        assert!(answer.payload == payload(id), "answer {id} altered");
    }
    let _tx = sender.join().unwrap();
    let after = scrape_until(addr, |s| s.get("lapce_ipc_backpressure_events_total") >= 1.0);
    let events = after.get("lapce_ipc_backpressure_events_total");
    assert!(events <= REQUESTS as f64, "{events} events for {REQUESTS} answers");
    assert_eq!(after.get("lapce_ipc_backpressure_wait_seconds_count"), events);
    // The first answer to wait waited at least the 50 ms the client slept.
    assert!(after.get("lapce_ipc_backpressure_wait_seconds_sum") >= 0.05, "{after:#?}");
    // Read to the end: every request read out of its ring (one record each), the greeting and
    // the 48 answers written, each byte of them read, both rings empty again; some of the 48
    // writes were timed (one in 16).
    let done = scrape_until(addr, |s| ring(s, "lapce_ipc_ring_occupancy_ratio", "to_client") == 0.0);
    assert_eq!(done.get("lapce_ipc_requests_total{type=\"Data\"}"), REQUESTS as f64);
    assert_eq!(ring(&done, "lapce_ipc_ring_reads_total", "to_server"), REQUESTS as f64);
    let to_server = ring(&done, "lapce_ipc_ring_written_bytes_total", "to_server");
    assert!(to_server > (REQUESTS as usize * SIZE) as f64, "{done:#?}");
    assert_eq!(ring(&done, "lapce_ipc_ring_read_bytes_total", "to_server"), to_server);
    assert_eq!(ring(&done, "lapce_ipc_ring_occupancy_ratio", "to_server"), 0.0);
    assert_eq!(ring(&done, "lapce_ipc_ring_writes_total", "to_client"), REQUESTS as f64 + 1.0);
    let to_client = ring(&done, "lapce_ipc_ring_written_bytes_total", "to_client");
    assert!(to_client > (REQUESTS as usize * SIZE) as f64, "{done:#?}");
    assert_eq!(ring(&done, "lapce_ipc_ring_read_bytes_total", "to_client"), to_client);
    let timed = done.get("lapce_ipc_ring_write_duration_seconds_count");
    assert!((1.0..=REQUESTS as f64).contains(&timed), "{timed} timed writes");
    drop((_tx, rx));
    server.kill();
    // Killed: its socket file is ours to remove.
    let _ = std::fs::remove_file(lapce_ipc::socket_path(&name).unwrap());
}

/// A server killed with SIGKILL leaves its socket file; the next server of the same name
/// replaces it, counts it in `stale_resources_cleaned`, and serves.
#[cfg(unix)]
#[test]
fn a_restarted_server_replaces_the_killed_ones_socket_and_counts_it() {
    let name = unique_name("metrics-stale");
    let first_port = PortFile(std::env::temp_dir().join(format!("{name}.1.port")));
    let mut first = ChildGuard::spawn("metrics-server", &format!("{name},{},2", first_port.0.display()));
    let addr = wait_for_port(&first_port.0);
    assert_eq!(scrape(addr).get("lapce_ipc_stale_resources_cleaned_total"), 0.0);
    first.kill();
    let path = lapce_ipc::socket_path(&name).unwrap();
    assert!(path.exists(), "a killed server leaves {} behind", path.display());

    let port = PortFile(std::env::temp_dir().join(format!("{name}.2.port")));
    let mut second =
        ChildGuard::spawn("metrics-server", &format!("{name},{},2", port.0.display())).listening_on(&name);
    let addr = wait_for_port(&port.0);
    assert_eq!(scrape(addr).get("lapce_ipc_stale_resources_cleaned_total"), 1.0);
    let rt = runtime();
    let client = rt.block_on(connect(&name));
    assert_eq!(rt.block_on(client.request(ECHO, "after the crash")).unwrap(), "after the crash");
    drop(client);
    second.kill();
    assert!(!path.exists(), "the guard of the second server removes the socket it leaves");
}

#[test]
fn endpoint_answers_only_get_metrics_and_stops_with_its_handle() {
    let name = unique_name("metrics-http");
    runtime().block_on(async {
        let server = IpcServer::bind(&name, config(10)).unwrap();
        register_handlers(&server);
        let endpoint = server.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = endpoint.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        assert_eq!(endpoint.url(), format!("http://{addr}/metrics"));
        let (ok, missing, root, post, head) = tokio::task::spawn_blocking(move || {
            (
                get(addr, "/metrics"),
                get(addr, "/other"),
                get(addr, "/"),
                http(addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
                http(addr, "HEAD /metrics HTTP/1.0\r\n\r\n"),
            )
        })
        .await
        .unwrap();
        assert_eq!(ok.status, 200);
        assert_eq!(ok.headers["content-type"], CONTENT_TYPE);
        parse_openmetrics(&ok.body);
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert_eq!(root.status, 404);
        assert_eq!(post.status, 405);
        assert_eq!(post.headers["allow"], "GET, HEAD");
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert!(head.headers["content-length"].parse::<usize>().unwrap() > 0);
        // The same text as metrics_text(), which a program can also read directly.
        assert!(server.metrics_text().contains("# TYPE lapce_ipc_requests counter\n"));

        drop(endpoint);
        let deadline = Instant::now() + HANG;
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "the endpoint still accepts after its handle was dropped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.shutdown(Duration::ZERO);
    });
}

/// A host application registers the server's families in its own registry: its one scrape shows
/// the server's series (the same values, moved by requests from another process) beside its own.
#[test]
fn a_host_registry_shows_the_server_families_beside_its_own() {
    let name = unique_name("metrics-host");
    let mut child = ChildGuard::spawn("host-registry-server", &name).listening_on(&name);
    runtime().block_on(async {
        let client = connect(&name).await;
        for _ in 0..3 {
            assert_eq!(client.request(ECHO, "hi").await.unwrap(), "hi");
        }
        let text = client.request(HOST_TEXT, "").await.unwrap();
        let text = std::str::from_utf8(&text).unwrap();
        let scrape = parse_openmetrics_of(text, "editor_");
        assert_eq!(scrape.get("editor_documents_opened_total"), 7.0, "{text}");
        assert_eq!(scrape.get("editor_lapce_ipc_requests_total{type=\"Data\"}"), 3.0, "{text}");
        assert_eq!(scrape.get("editor_lapce_ipc_connections_active"), 1.0, "{text}");
        assert!(text.contains("editor_lapce_ipc_slots_max "), "the listener families too: {text}");
    });
    child.kill();
}

/// `metrics.addr` in the configuration is served by `IpcServer::serve` itself.
#[test]
fn metrics_addr_is_served_while_the_server_runs() {
    let name = unique_name("metrics-addr");
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = ChildGuard::spawn("addr-server", &format!("{name},{port}")).listening_on(&name);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    runtime().block_on(async {
        let client = connect(&name).await;
        assert_eq!(client.request(ECHO, "hi").await.unwrap(), "hi");
    });
    let scrape = scrape_until(addr, |s| s.get("lapce_ipc_requests_total{type=\"Data\"}") == 1.0);
    assert_eq!(scrape.get("lapce_ipc_connections_total{status=\"accepted\"}"), 1.0);
    child.kill();
}

#[test]
fn metrics_off_records_nothing_and_serves_nothing() {
    let name = unique_name("metrics-off");
    runtime().block_on(async {
        let mut config = config(10);
        config.metrics.enable = false;
        let server = IpcServer::bind(&name, config).unwrap();
        register_handlers(&server);
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve().await }
        });
        let client = connect(&name).await;
        assert_eq!(client.request(ECHO, "hi").await.unwrap(), "hi");
        assert!(client.request(PANICS, "").await.is_err());
        // Counted in the plain stats, nothing in the metrics.
        assert_eq!(server.stats().requests, 2);
        assert_eq!(server.metrics_text(), "# EOF\n");
        match server.serve_metrics("127.0.0.1:0".parse().unwrap()).await {
            Err(IpcError::InvalidArgument(reason)) => assert!(reason.contains("metrics.enable"), "{reason}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        server.shutdown(Duration::from_secs(1));
        drop(client);
        serving.await.unwrap().unwrap();
    });
}

/// The family table in the `metrics` module's docs is the one list of what a server exports:
/// every family a bound server's text declares is in it, with the same type, and every row
/// names a family the text declares.
#[test]
fn the_documented_family_table_is_what_a_server_exports() {
    let name = unique_name("metrics-table");
    #[allow(unused_mut)]
    let mut documented = documented_families(include_str!("../src/metrics/mod.rs"));
    // Exported only by a build with the TLS listener.
    #[cfg(not(feature = "tls"))]
    documented.remove("lapce_ipc_tls_refused_total");
    assert!(documented.len() >= 20, "the table was not found: {documented:?}");
    let exported = runtime().block_on(async {
        let server = IpcServer::bind(&name, config(10)).unwrap();
        register_handlers(&server);
        let text = server.metrics_text();
        server.shutdown(Duration::ZERO);
        text
    });
    let exported: std::collections::BTreeMap<String, String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            // OpenMetrics names a counter's family without its `_total` suffix.
            let name = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
            (name, kind.to_string())
        })
        .collect();
    assert_eq!(documented, exported, "the table in src/metrics/mod.rs and the exported families differ");
}

/// The `| name | type | ...` rows of the module docs' family table.
fn documented_families(source: &str) -> std::collections::BTreeMap<String, String> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `lapce_ipc_"))
        .map(|row| {
            let mut cells = row.split('|').map(str::trim);
            let name = format!("lapce_ipc_{}", cells.next().unwrap().trim_end_matches('`'));
            (name, cells.next().unwrap().to_string())
        })
        .collect()
}
