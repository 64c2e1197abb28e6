//! Prometheus metrics of an [`IpcServer`](crate::IpcServer): what they count, how to read them
//! ([`IpcServer::metrics_text`](crate::IpcServer::metrics_text)) and the opt-in HTTP `/metrics`
//! endpoint ([`IpcServer::serve_metrics`](crate::IpcServer::serve_metrics)).
//!
//! Metrics are on by default and off with `[metrics] enable = false`
//! ([`MetricsSection::enable`](crate::config::MetricsSection::enable)); off, nothing is recorded
//! (every recording point is one branch on an `Option`) and the text is just `# EOF`. On, every
//! recording is a few relaxed atomic additions on handles created when the server binds or a
//! handler is registered: no lock, no allocation, no label lookup per request. The registry is
//! the [`prometheus-client`](https://docs.rs/prometheus-client) crate's; the text is the
//! OpenMetrics 1.0 exposition, which Prometheus reads.
//!
//! # Families
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `lapce_ipc_connections_total` | counter | `status`: `accepted`, `refused` | connections taken, or refused at the connection limit or while shutting down |
//! | `lapce_ipc_connections_active` | gauge | | connections open now |
//! | `lapce_ipc_connect_duration_seconds` | histogram | | from the listener handing over a connection (handshake done) to the server's greeting sent |
//! | `lapce_ipc_requests_total` | counter | `type` | requests dispatched to a handler |
//! | `lapce_ipc_request_duration_seconds` | histogram | `type` | from the request's dispatch (its task spawned, so scheduling delay counts) until its answer (`Response`, `StreamEnd` or `Error`) is queued for sending; a cancelled request is not observed |
//! | `lapce_ipc_requests_in_flight` | gauge | | requests whose handler runs now, all connections |
//! | `lapce_ipc_stream_chunks_total` | counter | | `StreamChunk`s sent by streaming handlers |
//! | `lapce_ipc_errors_total` | counter | `kind` (below) | errors, by what went wrong |
//! | `lapce_ipc_request_bytes_total` | counter | | payload bytes of every frame received from clients (requests, cancels, heartbeats; not the flow control of streams, `StreamWindow`; without the 24-byte headers) |
//! | `lapce_ipc_response_bytes_total` | counter | | payload bytes of every answer frame queued for clients (responses, chunks, errors, heartbeats) |
//! | `lapce_ipc_dead_connections_reclaimed_total` | counter | | connections that ended because the client hung up (closed, exited or was killed: the protocol has no goodbye, so the server cannot tell these apart) and whose segment and tasks the server then released |
//! | `lapce_ipc_slots` | gauge | | segments the listener holds now, in use and warm (see [`StreamConfig::warm_pool`](crate::StreamConfig::warm_pool)) |
//! | `lapce_ipc_slots_available` | gauge | | warm segments ready for the next clients |
//! | `lapce_ipc_slots_in_use` | gauge | | segments held by connections now |
//! | `lapce_ipc_slots_max` | gauge | | `max_slots` |
//! | `lapce_ipc_slot_claims_total` | counter | | slots claimed by accepted clients |
//! | `lapce_ipc_slot_claims_cold_total` | counter | | claims that found the warm pool empty and made their segment on the spot |
//! | `lapce_ipc_slots_reclaimed_total` | counter | | slots given back when a connection closed (by the server, or because the client closed, exited or died), ready for the next client |
//! | `lapce_ipc_handshakes_refused_total` | counter | | clients the listener refused during the handshake: another user, a bad hello, no free slot |
//! | `lapce_ipc_stale_resources_cleaned_total` | counter | | stale runtime files this process removed: the socket of a dead server replaced when binding its name, and whatever [`clean_stale_sockets`](crate::clean_stale_sockets) removed |
//! | `lapce_ipc_backpressure_events_total` | counter | | answers of one ring record that found the ring to their client full and waited for the client to read (the waits between the records of a fragmented answer are how it is sent, not counted) |
//! | `lapce_ipc_backpressure_wait_seconds` | histogram | | how long each of those answers waited |
//! | `lapce_ipc_ring_occupancy_ratio` | gauge | `direction`: `to_server`, `to_client` | share of the ring in use (written, not yet read) of the fullest live connection, 0 to 1 |
//! | `lapce_ipc_ring_written_bytes_total` | counter | `direction` | bytes written into the rings, record headers and padding included, all connections so far |
//! | `lapce_ipc_ring_read_bytes_total` | counter | `direction` | bytes read out of the rings and released, the same way |
//! | `lapce_ipc_ring_writes_total` | counter | `direction`: `to_client` | ring records the server wrote (a fragmented frame is several) |
//! | `lapce_ipc_ring_reads_total` | counter | `direction`: `to_server` | ring records the server read |
//! | `lapce_ipc_ring_write_duration_seconds` | histogram | | time to write one answer frame into the client's ring, waits for room included; one frame in 16 ([`WRITE_SAMPLE`]) per connection is timed |
//!
//! The slot, handshake and stale-file families are read from the listener (and a process-wide
//! counter) when the text is made: no recording on any path. Backpressure is recorded by the
//! connection's writer task only when a write finds the ring full.
//!
//! The ring families are read from the rings' shared headers when the text is made (validated:
//! a connection whose header holds impossible positions is left out), summed over the live
//! connections and the totals of the ended ones; occupancy is the fullest live ring's. The
//! only cost per message is each ring end's record count, a plain store by the one thread that
//! writes it. Record counts are the server's own operations: the client's writes into
//! `to_server` and reads out of `to_client` happen in its process (their bytes show in the
//! positions). The write duration is sampled because two clock reads on every frame would cost
//! the smallest round trips a few percent.
//!
//! `errors_total` kinds: `handler` (the handler returned an error), `panic` (it panicked),
//! `unknown_type` (no handler for the request's type), `cancelled` (a `Cancel` stopped a running
//! request), `bad_request` (a client sent an answer type such as `Response` as a request),
//! `bad_frame` (a frame or ring record that could not be read: bad magic, CRC, version,
//! corrupted ring; the connection is closed), `too_large` (a frame over `max_message_size`; the
//! connection is closed). Every kind and status is exported from the start, at 0.
//!
//! Label values are bounded: `type` is the name of a known [`MessageType`] (`Data`, `Complete`,
//! `Chat`, …) or, for an application's own type, its wire value in hex (`0x0200`), and a series
//! exists only for the types the application registered a handler for. Nothing a client sends
//! creates a series (a request of a type without a handler only counts as
//! `errors_total{kind="unknown_type"}`).
//!
//! Histogram buckets (every histogram, in seconds): 1, 2.5, 5, 10, 25, 50, 100, 250 and 500 µs,
//! 1, 2.5, 5, 10, 25, 50, 100, 250 and 500 ms, 1, 2.5, 5, 10, 30 and 60 s. They are lock-free
//! (one atomic add per bucket and one for the sum); a scrape that races an observation may see
//! the sum of one observation before its bucket, never a `_count` that disagrees with the
//! buckets.
//!
//! # Not exported yet
//!
//! The seed documents list families this server has no implementation for yet, so they are not
//! exported (no zero-valued stand-ins): slot claim duration (a claim is a counter update under
//! the pool's lock; the segment work happens in the refiller) and a read latency histogram (a
//! read out of the ring is a copy; what a reader waits for is the peer, which the request
//! duration and the client's round trip already show).
//!
//! # The HTTP endpoint
//!
//! [`IpcServer::serve_metrics`](crate::IpcServer::serve_metrics) binds a TCP address and answers
//! `GET /metrics` (and `HEAD`) with the text above, `Content-Type`
//! [`CONTENT_TYPE`]; any other path gets 404, any other method 405. It is a minimal HTTP/1.1
//! responder (no keep-alive: one request per connection, then close), enough for a Prometheus
//! scraper or `curl`. Nothing is served unless asked for: `lapce-ipc serve --metrics-addr
//! 127.0.0.1:9464` or `[metrics] addr`. Keep it on loopback (`127.0.0.1`, `[::1]`): it has no
//! authentication, and the metrics tell anyone who can reach it how busy the server is.
//!
//! ```
//! use bytes::Bytes;
//! use lapce_ipc::frame::MessageType;
//! use lapce_ipc::{IpcClient, IpcConfig, IpcServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lapce_ipc::Result<()> {
//! let name = format!("metrics-doc-{}", std::process::id());
//! let server = IpcServer::bind(&name, IpcConfig::default())?;
//! server.register_handler(MessageType::Data, |request: Bytes| async move { Ok(request) });
//! tokio::spawn({
//!     let server = server.clone();
//!     async move { server.serve().await }
//! });
//! // Port 0: the system picks a free port; the handle tells which.
//! let endpoint = server.serve_metrics("127.0.0.1:0".parse().unwrap()).await?;
//! println!("scrape {}", endpoint.url());
//!
//! let client = IpcClient::connect(&name, IpcConfig::default()).await?;
//! client.request(MessageType::Data, Bytes::from_static(b"hi")).await?;
//! let text = server.metrics_text();
//! assert!(text.contains("lapce_ipc_requests_total{type=\"Data\"} 1\n"));
//! assert!(text.ends_with("# EOF\n"));
//! # server.shutdown(std::time::Duration::ZERO);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::{IpcError, Result};
use crate::frame::MessageType;
use crate::ring::{RingGauge, RingLevels};

/// The `Content-Type` of the `/metrics` answer: OpenMetrics text 1.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What [`IpcServer::metrics_text`](crate::IpcServer::metrics_text) returns with metrics off: an
/// OpenMetrics text without any family.
pub(crate) const EMPTY_TEXT: &str = "# EOF\n";

/// Prefix of every family name.
const PREFIX: &str = "lapce_ipc";

/// One-label sets: `[("type", "Data")]`, `[("kind", "panic")]`.
type Label = [(&'static str, Cow<'static, str>); 1];

/// What went wrong, for `errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The handler returned an error body.
    Handler,
    /// The handler panicked.
    Panic,
    /// No handler for the request's type.
    UnknownType,
    /// A `Cancel` stopped a running request.
    Cancelled,
    /// A client sent an answer type (`Response`, `Error`, …) as a request.
    BadRequest,
    /// A frame or ring record that could not be read.
    BadFrame,
    /// A frame over the size limit.
    TooLarge,
}

impl ErrorKind {
    const ALL: [ErrorKind; 7] = [
        ErrorKind::Handler,
        ErrorKind::Panic,
        ErrorKind::UnknownType,
        ErrorKind::Cancelled,
        ErrorKind::BadRequest,
        ErrorKind::BadFrame,
        ErrorKind::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Handler => "handler",
            ErrorKind::Panic => "panic",
            ErrorKind::UnknownType => "unknown_type",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::TooLarge => "too_large",
        }
    }
}

/// The `type` label of a message type: the name of a known type, the hex wire value of another.
fn type_label(kind: MessageType) -> Cow<'static, str> {
    Cow::Borrowed(match kind {
        MessageType::Heartbeat => "Heartbeat",
        MessageType::Data => "Data",
        MessageType::Control => "Control",
        MessageType::Response => "Response",
        MessageType::Error => "Error",
        MessageType::StreamChunk => "StreamChunk",
        MessageType::StreamEnd => "StreamEnd",
        MessageType::StreamWindow => "StreamWindow",
        MessageType::Complete => "Complete",
        MessageType::Chat => "Chat",
        MessageType::Cancel => "Cancel",
        MessageType::App(n) => return Cow::Owned(format!("App({n})")),
        MessageType::Unknown(v) => return Cow::Owned(format!("0x{v:04x}")),
    })
}

/// A server's metrics: the registry and a handle on every series it records into.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Label, Counter>,
    request_duration: Family<Label, DurationHistogram>,
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_refused: Counter,
    pub(crate) connections_active: Gauge,
    pub(crate) connect_duration: DurationHistogram,
    pub(crate) requests_in_flight: Gauge,
    pub(crate) stream_chunks: Counter,
    errors: [Counter; ErrorKind::ALL.len()],
    pub(crate) request_bytes: Counter,
    pub(crate) response_bytes: Counter,
    pub(crate) dead_connections: Counter,
    pub(crate) backpressure_events: Counter,
    pub(crate) backpressure_wait: DurationHistogram,
    pub(crate) write_duration: DurationHistogram,
    pub(crate) rings: Arc<RingRegistry>,
}

/// The series of one request type, created when its handler is registered.
#[derive(Debug, Clone)]
pub(crate) struct TypeMetrics {
    requests: Counter,
    duration: DurationHistogram,
}

impl TypeMetrics {
    /// A request of this type was dispatched to its handler.
    pub(crate) fn dispatched(&self) {
        self.requests.inc();
    }

    /// A request of this type was answered `elapsed` after its dispatch.
    pub(crate) fn answered(&self, elapsed: Duration) {
        self.duration.observe(elapsed);
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let connections = Family::<Label, Counter>::default();
        let status = |s: &'static str| connections.get_or_create_owned(&[("status", Cow::Borrowed(s))]);
        let (connections_accepted, connections_refused) = (status("accepted"), status("refused"));
        registry.register(
            "connections",
            "Connections accepted, or refused at the connection limit or while shutting down",
            connections,
        );
        let connections_active = Gauge::default();
        registry.register("connections_active", "Connections open now", connections_active.clone());
        let connect_duration = DurationHistogram::default();
        registry.register_with_unit(
            "connect_duration",
            "Time from the listener handing over a connection (handshake done) to the greeting sent",
            Unit::Seconds,
            connect_duration.clone(),
        );
        let requests = Family::<Label, Counter>::default();
        registry.register("requests", "Requests dispatched to a handler, by message type", requests.clone());
        let request_duration = Family::<Label, DurationHistogram>::default();
        registry.register_with_unit(
            "request_duration",
            "Time from dispatch to the handler until the answer is queued, by message type",
            Unit::Seconds,
            request_duration.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests whose handler runs now, on all connections",
            requests_in_flight.clone(),
        );
        let stream_chunks = Counter::default();
        registry.register("stream_chunks", "Stream chunks sent by streaming handlers", stream_chunks.clone());
        let error_family = Family::<Label, Counter>::default();
        let errors =
            ErrorKind::ALL.map(|k| error_family.get_or_create_owned(&[("kind", Cow::Borrowed(k.label()))]));
        registry.register("errors", "Errors, by kind", error_family);
        let request_bytes = Counter::default();
        registry.register_with_unit(
            "request",
            "Payload bytes of the frames received from clients",
            Unit::Bytes,
            request_bytes.clone(),
        );
        let response_bytes = Counter::default();
        registry.register_with_unit(
            "response",
            "Payload bytes of the answer frames queued for clients",
            Unit::Bytes,
            response_bytes.clone(),
        );
        let dead_connections = Counter::default();
        registry.register(
            "dead_connections_reclaimed",
            "Connections that ended because the client hung up or died, their resources released",
            dead_connections.clone(),
        );
        let backpressure_events = Counter::default();
        registry.register(
            "backpressure_events",
            "Answers that found the connection's outgoing ring full and waited for the client to read",
            backpressure_events.clone(),
        );
        let backpressure_wait = DurationHistogram::default();
        registry.register_with_unit(
            "backpressure_wait",
            "How long those answers waited for room in the ring",
            Unit::Seconds,
            backpressure_wait.clone(),
        );
        let write_duration = DurationHistogram::default();
        registry.register_with_unit(
            "ring_write_duration",
            "Time to write one answer frame into the client's ring, waits for room included \
             (one frame in WRITE_SAMPLE is timed)",
            Unit::Seconds,
            write_duration.clone(),
        );
        let rings = Arc::new(RingRegistry::default());
        type Pick = fn(&RingSnapshot, Direction) -> Option<RingValue>;
        let ring_families: [(&str, &str, MetricType, Pick); 5] = [
            (
                "ring_occupancy_ratio",
                "Share of the ring in use (written, not yet read) of the fullest connection now, by direction",
                MetricType::Gauge,
                |s, d| Some(RingValue::Gauge(s.occupancy[d as usize])),
            ),
            (
                "ring_written_bytes",
                "Bytes written into the rings, record headers and padding included, by direction",
                MetricType::Counter,
                |s, d| Some(RingValue::Counter(s.totals.written[d as usize])),
            ),
            (
                "ring_read_bytes",
                "Bytes read out of the rings and released, record headers and padding included, by direction",
                MetricType::Counter,
                |s, d| Some(RingValue::Counter(s.totals.read[d as usize])),
            ),
            (
                "ring_writes",
                "Ring records the server wrote (to_client; the client's writes happen in its own process)",
                MetricType::Counter,
                |s, d| (d == Direction::ToClient).then_some(RingValue::Counter(s.totals.records[d as usize])),
            ),
            (
                "ring_reads",
                "Ring records the server read (to_server; the client's reads happen in its own process)",
                MetricType::Counter,
                |s, d| (d == Direction::ToServer).then_some(RingValue::Counter(s.totals.records[d as usize])),
            ),
        ];
        for (name, help, kind, pick) in ring_families {
            registry.register(name, help, RingFamily { rings: rings.clone(), kind, pick });
        }
        Metrics {
            registry,
            requests,
            request_duration,
            connections_accepted,
            connections_refused,
            connections_active,
            connect_duration,
            requests_in_flight,
            stream_chunks,
            errors,
            request_bytes,
            response_bytes,
            dead_connections,
            backpressure_events,
            backpressure_wait,
            write_duration,
            rings,
        }
    }

    /// The series of requests of type `kind` (created at 0 the first time).
    pub(crate) fn for_type(&self, kind: MessageType) -> TypeMetrics {
        let label = [("type", type_label(kind))];
        TypeMetrics {
            requests: self.requests.get_or_create_owned(&label),
            duration: self.request_duration.get_or_create_owned(&label),
        }
    }

    /// Counts one error of `kind`.
    pub(crate) fn error(&self, kind: ErrorKind) {
        // `ALL` lists the kinds in declaration order (checked by a test).
        self.errors[kind as usize].inc();
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Only a formatting error of the encoder itself; never expected with these types.
            tracing::error!("encoding the metrics failed");
            out.clear();
            out.push_str(EMPTY_TEXT);
        }
        out
    }
}

/// What the server's listener reports at scrape time (read, not recorded: see [`LiveValue`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ListenerReport {
    pub(crate) pool: crate::PoolStats,
    /// Clients whose handshake the listener refused (another user, a bad hello, no free slot).
    pub(crate) handshakes_refused: u64,
    /// Stale runtime files this process removed (sockets of dead listeners replaced at bind,
    /// what `clean_stale_sockets` removed).
    pub(crate) stale_cleaned: u64,
}

type ListenerReader = Arc<dyn Fn() -> ListenerReport + Send + Sync>;

/// A gauge or counter whose value is read when the registry is encoded, from state that
/// another layer keeps anyway (the listener's pool): nothing is recorded on any hot path.
struct LiveValue {
    read: ListenerReader,
    pick: fn(&ListenerReport) -> u64,
    counter: bool,
}

impl std::fmt::Debug for LiveValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveValue({})", (self.pick)(&(self.read)()))
    }
}

impl TypedMetric for LiveValue {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for LiveValue {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let v = (self.pick)(&(self.read)());
        if self.counter {
            encoder.encode_counter::<NoLabelSet, _, u64>(&v, None)
        } else {
            encoder.encode_gauge(&(v as i64))
        }
    }

    fn metric_type(&self) -> MetricType {
        if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        }
    }
}

impl Metrics {
    /// Registers the families read from the listener at scrape time: the warm pool's slots, the
    /// refused handshakes and the stale runtime files removed.
    pub(crate) fn register_listener(&mut self, read: ListenerReader) {
        type Pick = fn(&ListenerReport) -> u64;
        let families: [(&str, &str, bool, Pick); 9] = [
            ("slots", "Segments held now, in use and warm", false, |r| (r.pool.in_use + r.pool.warm) as u64),
            ("slots_available", "Warm segments ready for the next clients", false, |r| r.pool.warm as u64),
            ("slots_in_use", "Segments held by connections now", false, |r| r.pool.in_use as u64),
            ("slots_max", "Most segments at once (max_slots)", false, |r| r.pool.max_slots as u64),
            ("slot_claims", "Slots claimed by accepted clients", true, |r| r.pool.claims),
            (
                "slot_claims_cold",
                "Claims that found the warm pool empty and made their segment on the spot",
                true,
                |r| r.pool.misses,
            ),
            (
                "slots_reclaimed",
                "Slots given back by closed connections (closed, hung up or dead peers), for reuse",
                true,
                |r| r.pool.released,
            ),
            (
                "handshakes_refused",
                "Clients the listener refused: another user, a bad hello, no free slot",
                true,
                |r| r.handshakes_refused,
            ),
            (
                "stale_resources_cleaned",
                "Stale runtime files removed by this process: sockets of dead servers replaced at bind, \
                 what clean_stale_sockets removed",
                true,
                |r| r.stale_cleaned,
            ),
        ];
        for (name, help, counter, pick) in families {
            self.registry.register(name, help, LiveValue { read: read.clone(), pick, counter });
        }
    }
}

/// One frame in this many that a connection's writer writes is timed into
/// `lapce_ipc_ring_write_duration_seconds` (two clock reads per timed frame; timing every frame
/// would cost the small round trip a few percent).
pub(crate) const WRITE_SAMPLE: u64 = 16;

/// Which way a ring carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to server: requests (the server reads this ring).
    ToServer = 0,
    /// Server to client: answers (the server writes this ring).
    ToClient = 1,
}

impl Direction {
    const ALL: [Direction; 2] = [Direction::ToServer, Direction::ToClient];

    fn label(self) -> &'static str {
        match self {
            Direction::ToServer => "to_server",
            Direction::ToClient => "to_client",
        }
    }
}

/// Byte and record counts of rings, per [`Direction`]: `records` are the server's own
/// operations (reads of `to_server`, writes of `to_client`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RingTotals {
    written: [u64; 2],
    read: [u64; 2],
    records: [u64; 2],
}

impl RingTotals {
    fn add(&mut self, d: Direction, l: &RingLevels) {
        let i = d as usize;
        self.written[i] += l.written;
        self.read[i] += l.read;
        self.records[i] += l.records;
    }
}

/// What the ring families show at one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RingSnapshot {
    totals: RingTotals,
    /// The fullest live ring's occupancy, per direction.
    occupancy: [f64; 2],
}

/// The rings of the server's live connections, read when the metrics are encoded (nothing is
/// recorded per message but a plain store of each ring end's record count, on its own cache
/// line), and the totals of the connections that ended.
#[derive(Default)]
pub(crate) struct RingRegistry {
    inner: std::sync::Mutex<RingRegistryInner>,
}

#[derive(Default)]
struct RingRegistryInner {
    /// A slab rather than a map: a connection's slot is reused by a later one, so the table
    /// only grows with the connections open at once (a hash map with ever-new keys grows at a
    /// moment set by its deleted entries, which made the server's heap step up by 5.6 KiB at
    /// a random point of a run).
    live: slab::Slab<[RingGauge; 2]>,
    ended: RingTotals,
}

impl std::fmt::Debug for RingRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingRegistry({:?})", self.snapshot())
    }
}

/// A connection's rings in a [`RingRegistry`]; their last levels go to the totals on drop.
pub(crate) struct RingRegistration {
    registry: Arc<RingRegistry>,
    /// The connection's slot in `live`.
    key: usize,
}

impl Drop for RingRegistration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(gauges) = inner.live.try_remove(self.key) {
            for (d, g) in Direction::ALL.into_iter().zip(&gauges) {
                if let Some(l) = g.levels() {
                    inner.ended.add(d, &l);
                }
            }
        }
    }
}

impl RingRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RingRegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection's rings: `to_server` (the server's incoming ring) and `to_client`.
    pub(crate) fn register(self: &Arc<Self>, to_server: RingGauge, to_client: RingGauge) -> RingRegistration {
        let key = self.lock().live.insert([to_server, to_client]);
        RingRegistration { registry: self.clone(), key }
    }

    /// The totals (ended connections plus live ones) and the fullest live rings. A ring whose
    /// header holds impossible positions (a peer scribbled on it) is left out; its connection
    /// fails on its next use of that ring anyway.
    pub(crate) fn snapshot(&self) -> RingSnapshot {
        let inner = self.lock();
        let mut snap = RingSnapshot { totals: inner.ended, occupancy: [0.0; 2] };
        for (_, gauges) in &inner.live {
            for (d, g) in Direction::ALL.into_iter().zip(gauges) {
                if let Some(l) = g.levels() {
                    snap.totals.add(d, &l);
                    snap.occupancy[d as usize] = snap.occupancy[d as usize].max(l.occupancy());
                }
            }
        }
        snap
    }
}

/// A value of a ring family.
enum RingValue {
    Gauge(f64),
    Counter(u64),
}

/// A ring family with a `direction` label, read from the [`RingRegistry`] when encoded.
struct RingFamily {
    rings: Arc<RingRegistry>,
    /// Counter or gauge, as `pick`'s values are.
    kind: MetricType,
    pick: fn(&RingSnapshot, Direction) -> Option<RingValue>,
}

impl std::fmt::Debug for RingFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingFamily")
    }
}

impl TypedMetric for RingFamily {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for RingFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let snap = self.rings.snapshot();
        for d in Direction::ALL {
            let label = [("direction", d.label())];
            match (self.pick)(&snap, d) {
                Some(RingValue::Gauge(v)) => encoder.encode_family(&label)?.encode_gauge(&v)?,
                Some(RingValue::Counter(v)) => {
                    encoder.encode_family(&label)?.encode_counter::<NoLabelSet, _, u64>(&v, None)?
                }
                None => {}
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// Upper bounds of the duration buckets, in nanoseconds (then `+Inf`).
const BOUNDS_NANOS: [u64; 24] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// A lock-free histogram of durations with fixed buckets ([`BOUNDS_NANOS`]): one atomic add for
/// the bucket and one for the sum per observation. (prometheus-client's own `Histogram` takes a
/// mutex per observation.) `_count` is the sum of the buckets, so it always agrees with them.
#[derive(Debug, Clone, Default)]
pub(crate) struct DurationHistogram {
    inner: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    pub(crate) fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS.partition_point(|&b| b < nanos);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observes the time since `start`.
    pub(crate) fn observe_since(&self, start: Instant) {
        self.observe(start.elapsed());
    }

    #[cfg(test)]
    fn count(&self) -> u64 {
        self.inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let cells = &self.inner;
        let mut buckets = Vec::with_capacity(BOUNDS_NANOS.len() + 1);
        let mut count = 0;
        for (i, cell) in cells.buckets.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            count += n;
            let bound = BOUNDS_NANOS.get(i).map_or(f64::INFINITY, |&b| b as f64 / 1e9);
            buckets.push((bound, n));
        }
        let sum = cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A running HTTP `/metrics` endpoint (see [`IpcServer::serve_metrics`](crate::IpcServer::serve_metrics)).
/// It serves until this handle is dropped.
#[must_use = "the metrics endpoint stops when its handle is dropped"]
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl MetricsEndpoint {
    /// The address it listens on (with the port the system chose, if it was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Scrapes answered at once; a further connection is closed without an answer.
const MAX_SCRAPES: usize = 16;
/// A scrape must send its request and take the answer within this time.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// Binds `addr` and serves `metrics` on it until the returned handle is dropped.
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsEndpoint> {
    let context = |e: std::io::Error| {
        IpcError::Io(std::io::Error::new(e.kind(), format!("metrics endpoint on {addr}: {e}")))
    };
    let listener = TcpListener::bind(addr).await.map_err(context)?;
    let addr = listener.local_addr().map_err(context)?;
    let task = tokio::spawn(accept_scrapes(listener, metrics));
    Ok(MetricsEndpoint { addr, task: task.abort_handle() })
}

async fn accept_scrapes(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: too many scrapes at once; closing one");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SCRAPE_TIMEOUT, answer(socket, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics endpoint: scrape failed"),
                Err(_) => tracing::debug!("metrics endpoint: scrape timed out"),
            }
            drop(slot);
        });
    }
}

/// Reads one request head, writes the answer, closes.
async fn answer(mut socket: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while head_end(&head).is_none() && head.len() <= MAX_HEAD {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let response = respond(&head, || metrics.encode());
    socket.write_all(&response).await?;
    socket.shutdown().await
}

/// Where the head (request line and headers) ends: after the first empty line.
fn head_end(data: &[u8]) -> Option<usize> {
    let crlf = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The whole HTTP response to a request head; `body` makes the metrics text when it is asked for.
fn respond(head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default().trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let well_formed = head_end(head).is_some()
        && parts.next().is_none()
        && target.is_some_and(|t| t.starts_with('/'))
        && version.is_some_and(|v| v.starts_with("HTTP/1."));
    let (Some(method), Some(target), true) = (method, target, well_formed) else {
        return response("400 Bad Request", "text/plain; charset=utf-8", "", b"bad request\n", true);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "Allow: GET, HEAD\r\n",
            b"only GET and HEAD\n",
            true,
        );
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "",
            b"not found: metrics are at /metrics\n",
            !head_only,
        );
    }
    // HEAD: the headers of the GET answer (its Content-Length), without the body.
    response("200 OK", CONTENT_TYPE, "", body().as_bytes(), !head_only)
}

fn response(status: &str, content_type: &str, extra: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &[u8]) -> &str {
        std::str::from_utf8(response).unwrap()
    }

    #[test]
    fn durations_land_in_the_first_bucket_that_holds_them() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_nanos(0)); // <= 1 µs
        h.observe(Duration::from_micros(1)); // <= 1 µs (bounds are inclusive)
        h.observe(Duration::from_nanos(1_001)); // <= 2.5 µs
        h.observe(Duration::from_secs(3600)); // +Inf
        let cells = &h.inner.buckets;
        assert_eq!(cells[0].load(Ordering::Relaxed), 2);
        assert_eq!(cells[1].load(Ordering::Relaxed), 1);
        assert_eq!(cells[BOUNDS_NANOS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 4);
        assert!(BOUNDS_NANOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn listener_families_are_read_when_encoding() {
        let mut m = Metrics::new();
        let claims = Arc::new(AtomicU64::new(0));
        let read = claims.clone();
        m.register_listener(Arc::new(move || ListenerReport {
            pool: crate::PoolStats {
                warm: 60,
                in_use: 3,
                max_slots: 1024,
                claims: read.load(Ordering::Relaxed),
                ..Default::default()
            },
            handshakes_refused: 2,
            stale_cleaned: 5,
        }));
        claims.store(7, Ordering::Relaxed);
        let t = m.encode();
        for line in [
            "# TYPE lapce_ipc_slots gauge",
            "lapce_ipc_slots 63",
            "lapce_ipc_slots_available 60",
            "lapce_ipc_slots_in_use 3",
            "lapce_ipc_slots_max 1024",
            "# TYPE lapce_ipc_slot_claims counter",
            "lapce_ipc_slot_claims_total 7",
            "lapce_ipc_slot_claims_cold_total 0",
            "lapce_ipc_slots_reclaimed_total 0",
            "lapce_ipc_handshakes_refused_total 2",
            "lapce_ipc_stale_resources_cleaned_total 5",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing from:\n{t}");
        }
        claims.store(8, Ordering::Relaxed);
        assert!(m.encode().contains("lapce_ipc_slot_claims_total 8\n"));
    }

    /// The capacity of the test rings.
    const CAP: usize = 4096;

    /// Both ends of a fresh ring of `CAP` bytes, alone in a segment of its own.
    fn ring_ends() -> (crate::ring::Producer, crate::ring::Consumer) {
        use crate::ring::{init_ring, ring_footprint, Consumer, Producer, RingPlace, SharedRegion};
        let seg = Arc::new(crate::platform::Segment::create("metrics-test", ring_footprint(CAP)).unwrap().0);
        let region: Arc<dyn SharedRegion> = seg;
        let at = RingPlace::alone(0);
        init_ring(&region, at, CAP).unwrap();
        (Producer::attach(region.clone(), at, CAP).unwrap(), Consumer::attach(region, at, CAP).unwrap())
    }

    #[test]
    fn ring_registry_reuses_the_slots_of_ended_connections_and_counts_each_once() {
        let (mut producer, consumer) = ring_ends();
        producer.try_reserve(100).unwrap().unwrap().fill(7);
        producer.commit(100);
        let one = crate::ring::protocol::record_size(100);
        // Every registration watches the same ring (the test's stand-in for a connection's
        // two), so each adds `one` written byte count per direction, live or ended.
        let rings = Arc::new(RingRegistry::default());
        let register = || rings.register(consumer.gauge(), producer.gauge());
        let written = || rings.snapshot().totals.written;
        let (a, b, c) = (register(), register(), register());
        assert_eq!(written(), [3 * one; 2]);
        drop(b);
        assert_eq!(written(), [3 * one; 2], "an ended connection's counts stay, once");
        let slots = rings.lock().live.capacity();
        let d = register();
        assert_eq!(d.key, 1, "the ended connection's slot is reused");
        assert_eq!(rings.lock().live.capacity(), slots, "no growth for a reused slot");
        assert_eq!(written(), [4 * one; 2]);
        drop((a, c));
        assert_eq!(rings.lock().live.len(), 1, "dropping a and c left d");
        drop(d);
        let snap = rings.snapshot();
        assert_eq!(snap.totals.written, [4 * one; 2]);
        assert_eq!(snap.occupancy, [0.0; 2], "no live ring");
    }

    #[test]
    fn ring_families_sum_live_rings_and_keep_the_ended_ones() {
        // One ring per direction, the server's ends: it reads `to_server`, writes `to_client`.
        let ((mut client_tx, mut server_rx), (mut server_tx, _client_rx)) = (ring_ends(), ring_ends());
        let m = Metrics::new();
        let write = |p: &mut crate::ring::Producer, n: usize| {
            p.try_reserve(n).unwrap().unwrap().fill(1);
            p.commit(n);
        };
        let registration = m.rings.register(server_rx.gauge(), server_tx.gauge());
        for _ in 0..3 {
            write(&mut client_tx, 100);
        }
        for _ in 0..2 {
            assert!(server_rx.try_peek().unwrap().is_some());
            server_rx.release();
        }
        write(&mut server_tx, 2040); // 2048 bytes with its record header: half the ring
        let record = crate::ring::protocol::record_size(100);
        let live = m.encode();
        for line in [
            "lapce_ipc_ring_occupancy_ratio{direction=\"to_client\"} 0.5".to_string(),
            format!(
                "lapce_ipc_ring_occupancy_ratio{{direction=\"to_server\"}} {}",
                record as f64 / CAP as f64
            ),
            format!("lapce_ipc_ring_written_bytes_total{{direction=\"to_server\"}} {}", 3 * record),
            format!("lapce_ipc_ring_read_bytes_total{{direction=\"to_server\"}} {}", 2 * record),
            "lapce_ipc_ring_written_bytes_total{direction=\"to_client\"} 2048".to_string(),
            "lapce_ipc_ring_read_bytes_total{direction=\"to_client\"} 0".to_string(),
            "lapce_ipc_ring_reads_total{direction=\"to_server\"} 2".to_string(),
            "lapce_ipc_ring_writes_total{direction=\"to_client\"} 1".to_string(),
            "# TYPE lapce_ipc_ring_reads counter".to_string(),
            "# TYPE lapce_ipc_ring_occupancy_ratio gauge".to_string(),
        ] {
            assert!(live.lines().any(|l| l == line), "missing {line:?} in:\n{live}");
        }
        // The server's own operations only: no reads of to_client, no writes of to_server.
        assert!(!live.contains("lapce_ipc_ring_reads_total{direction=\"to_client\"}"), "{live}");
        assert!(!live.contains("lapce_ipc_ring_writes_total{direction=\"to_server\"}"), "{live}");
        // The connection ends: its counts stay, no ring is live, so nothing is occupied.
        drop(registration);
        let ended = m.encode();
        for line in [
            "lapce_ipc_ring_occupancy_ratio{direction=\"to_client\"} 0.0".to_string(),
            format!("lapce_ipc_ring_written_bytes_total{{direction=\"to_server\"}} {}", 3 * record),
            "lapce_ipc_ring_reads_total{direction=\"to_server\"} 2".to_string(),
            "lapce_ipc_ring_writes_total{direction=\"to_client\"} 1".to_string(),
        ] {
            assert!(ended.lines().any(|l| l == line), "missing {line:?} in:\n{ended}");
        }
    }

    #[test]
    fn text_has_every_family_with_bounded_labels() {
        let m = Metrics::new();
        let data = m.for_type(MessageType::Data);
        let custom = m.for_type(MessageType::Unknown(0x200));
        data.dispatched();
        data.dispatched();
        data.answered(Duration::from_micros(30));
        custom.dispatched();
        m.error(ErrorKind::Panic);
        m.connect_duration.observe(Duration::from_micros(3));
        let t = m.encode();
        for line in [
            "# TYPE lapce_ipc_connections counter",
            "lapce_ipc_connections_total{status=\"accepted\"} 0",
            "lapce_ipc_connections_total{status=\"refused\"} 0",
            "# TYPE lapce_ipc_connections_active gauge",
            "# TYPE lapce_ipc_connect_duration_seconds histogram",
            "# UNIT lapce_ipc_connect_duration_seconds seconds",
            "lapce_ipc_connect_duration_seconds_count 1",
            "lapce_ipc_requests_total{type=\"Data\"} 2",
            "lapce_ipc_requests_total{type=\"0x0200\"} 1",
            "lapce_ipc_request_duration_seconds_count{type=\"Data\"} 1",
            "lapce_ipc_request_duration_seconds_bucket{le=\"+Inf\",type=\"Data\"} 1",
            "lapce_ipc_requests_in_flight 0",
            "lapce_ipc_stream_chunks_total 0",
            "lapce_ipc_errors_total{kind=\"panic\"} 1",
            "lapce_ipc_errors_total{kind=\"too_large\"} 0",
            "lapce_ipc_request_bytes_total 0",
            "lapce_ipc_response_bytes_total 0",
            "lapce_ipc_dead_connections_reclaimed_total 0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in:\n{t}");
        }
        assert!(t.ends_with("# EOF\n"));
        // 30 µs falls in the 50 µs bucket; the cumulative count there is 1, below it 0.
        assert!(
            t.contains("lapce_ipc_request_duration_seconds_bucket{le=\"0.000025\",type=\"Data\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("lapce_ipc_request_duration_seconds_bucket{le=\"0.00005\",type=\"Data\"} 1\n"),
            "{t}"
        );
    }

    #[test]
    fn http_answers_metrics_404_405_and_400() {
        let ok = respond(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n", || "a 1\n# EOF\n".into());
        assert_eq!(
            text(&ok),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 10\r\n\
                 Connection: close\r\n\r\na 1\n# EOF\n"
            )
        );
        let query = respond(b"GET /metrics?x=1 HTTP/1.1\n\n", || "b\n".into());
        assert!(text(&query).starts_with("HTTP/1.1 200 OK\r\n") && text(&query).ends_with("\r\n\r\nb\n"));
        let head = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", || "abc\n".into());
        assert!(text(&head).contains("Content-Length: 4\r\n") && text(&head).ends_with("\r\n\r\n"));
        let never = || -> String { panic!("the metrics are only encoded for /metrics") };
        assert!(text(&respond(b"GET / HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text(&respond(b"GET /metricsx HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 "));
        let post = respond(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", never);
        assert!(text(&post).starts_with("HTTP/1.1 405 ") && text(&post).contains("Allow: GET, HEAD\r\n"));
        assert!(text(&post).ends_with("\r\n\r\nonly GET and HEAD\n"));
        for bad in [
            &b""[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/1.1",
            b"\xff\xfe\r\n\r\n",
            b"GET x HTTP/1.1\n\n",
        ] {
            assert!(text(&respond(bad, never)).starts_with("HTTP/1.1 400 "), "{bad:?}");
        }
    }

    #[test]
    fn error_kinds_index_their_own_counter() {
        let m = Metrics::new();
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
            m.error(kind);
            let line = format!("lapce_ipc_errors_total{{kind=\"{}\"}} 1\n", kind.label());
            assert!(m.encode().contains(&line), "{line}");
        }
    }

    #[test]
    fn type_labels_are_names_or_hex() {
        assert_eq!(type_label(MessageType::Data), "Data");
        assert_eq!(type_label(MessageType::StreamChunk), format!("{:?}", MessageType::StreamChunk));
        assert_eq!(type_label(MessageType::Unknown(0x2ff)), "0x02ff");
        for v in 0..=0x200u16 {
            let kind = MessageType::from_u16(v);
            if !matches!(kind, MessageType::Unknown(_)) {
                assert_eq!(type_label(kind), format!("{kind:?}"));
            }
        }
    }
}
