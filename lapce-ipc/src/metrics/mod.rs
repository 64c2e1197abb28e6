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
//! | `lapce_ipc_ring_write_duration_seconds` | histogram | | time to write one answer frame into the client's ring, waits for room included; one frame in 16 per connection is timed |
//! | `lapce_ipc_tls_refused_total` | counter | | feature `tls` only: remote clients refused before any frame (a failed TLS handshake, such as an unknown client certificate; a missing or wrong token; a bad or late hello) |
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
//! # Not exported
//!
//! No slot claim duration (a claim is a counter update under the pool's lock; the segment work
//! happens in the refiller) and no read latency histogram (a read out of the ring is a copy;
//! what a reader waits for is the peer, which the request duration and the client's round trip
//! already show).
//!
//! # In a host application's registry
//!
//! [`IpcServer::register_metrics`](crate::IpcServer::register_metrics) registers the same
//! families in the application's own `prometheus_client` registry (under `lapce_ipc` within
//! its prefix), so that the application's one endpoint serves them.
//!
//! # The HTTP endpoint
//!
//! [`IpcServer::serve_metrics`](crate::IpcServer::serve_metrics) binds a TCP address and answers
//! `GET /metrics` (and `HEAD`) with the text above, `Content-Type`
//! [`CONTENT_TYPE`]; any other path gets 404, any other method 405. It is a minimal HTTP/1.1
//! responder (no keep-alive: one request per connection, then close), enough for a Prometheus
//! scraper or `curl`. Nothing is served unless asked for: `[metrics] addr` (served while
//! [`IpcServer::serve`](crate::IpcServer::serve) runs), `lapce-ipc serve --metrics-addr
//! 127.0.0.1:9464`, or a call of `serve_metrics`. Feature `metrics-http`. Keep it on loopback (`127.0.0.1`, `[::1]`): it has no
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

mod histogram;
#[cfg(feature = "metrics-http")]
mod http;
mod listener;
mod points;
mod rings;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub(crate) use histogram::DurationHistogram;
#[cfg(feature = "metrics-http")]
pub(crate) use http::serve;
#[cfg(feature = "metrics-http")]
pub use http::MetricsEndpoint;
pub(crate) use points::{ErrorKind, ListenerReader, ListenerReport, EMPTY_TEXT, WRITE_SAMPLE};
pub(crate) use rings::{RingRegistration, RingRegistry};

use crate::frame::MessageType;

/// The `Content-Type` of the `/metrics` answer: OpenMetrics text 1.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every family name.
pub(crate) const PREFIX: &str = "lapce_ipc";

/// One-label sets: `[("type", "Data")]`, `[("kind", "panic")]`.
type Label = [(&'static str, Cow<'static, str>); 1];

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

/// The help of `lapce_ipc_tls_refused_total`.
#[cfg(feature = "tls")]
const TLS_REFUSED_HELP: &str =
    "Remote (TLS) clients refused before any frame: a failed TLS handshake, a bad token or hello";

/// A server's metrics: its own registry and a handle on every series it records into. The
/// handles share their values with every registry they are registered in, so a host
/// application's registry ([`Metrics::register_families`]) shows the same series.
pub(crate) struct Metrics {
    registry: Registry,
    connections: Family<Label, Counter>,
    requests: Family<Label, Counter>,
    request_duration: Family<Label, DurationHistogram>,
    error_family: Family<Label, Counter>,
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
    /// Remote clients refused before any frame (TLS handshake, token, certificate).
    #[cfg(feature = "tls")]
    pub(crate) tls_refused: Counter,
    /// Where the listener families read from, once the server has registered its listener.
    listener: Option<ListenerReader>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("registry", &self.registry).finish_non_exhaustive()
    }
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
    /// A server's metrics when `enable`d, with the listener families read through `read`.
    pub(crate) fn for_server(enable: bool, read: ListenerReader) -> Option<Arc<Metrics>> {
        enable.then(|| {
            let mut metrics = Metrics::new();
            metrics.register_listener(read);
            Arc::new(metrics)
        })
    }

    /// Every family at 0, registered in the server's own registry (names prefixed `lapce_ipc_`).
    pub(crate) fn new() -> Metrics {
        let connections = Family::<Label, Counter>::default();
        let status = |s: &'static str| connections.get_or_create_owned(&[("status", Cow::Borrowed(s))]);
        let (connections_accepted, connections_refused) = (status("accepted"), status("refused"));
        let error_family = Family::<Label, Counter>::default();
        let errors =
            ErrorKind::ALL.map(|k| error_family.get_or_create_owned(&[("kind", Cow::Borrowed(k.label()))]));
        let mut metrics = Metrics {
            registry: Registry::default(),
            connections,
            requests: Family::default(),
            request_duration: Family::default(),
            error_family,
            connections_accepted,
            connections_refused,
            connections_active: Gauge::default(),
            connect_duration: DurationHistogram::default(),
            requests_in_flight: Gauge::default(),
            stream_chunks: Counter::default(),
            errors,
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
            dead_connections: Counter::default(),
            backpressure_events: Counter::default(),
            backpressure_wait: DurationHistogram::default(),
            write_duration: DurationHistogram::default(),
            rings: Arc::new(RingRegistry::default()),
            #[cfg(feature = "tls")]
            tls_refused: Counter::default(),
            listener: None,
        };
        let mut registry = Registry::with_prefix(PREFIX);
        metrics.register_families(&mut registry);
        metrics.registry = registry;
        metrics
    }

    /// Registers every family in `registry` (names as they are given, prefixed by the
    /// registry's own prefix if it has one), sharing the values with this server's own.
    pub(crate) fn register_families(&self, registry: &mut Registry) {
        registry.register(
            "connections",
            "Connections accepted, or refused at the connection limit or while shutting down",
            self.connections.clone(),
        );
        registry.register("connections_active", "Connections open now", self.connections_active.clone());
        #[cfg(feature = "tls")]
        registry.register("tls_refused", TLS_REFUSED_HELP, self.tls_refused.clone());
        registry.register_with_unit(
            "connect_duration",
            "Time from the listener handing over a connection (handshake done) to the greeting sent",
            Unit::Seconds,
            self.connect_duration.clone(),
        );
        registry.register(
            "requests",
            "Requests dispatched to a handler, by message type",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from dispatch to the handler until the answer is queued, by message type",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests whose handler runs now, on all connections",
            self.requests_in_flight.clone(),
        );
        registry.register(
            "stream_chunks",
            "Stream chunks sent by streaming handlers",
            self.stream_chunks.clone(),
        );
        registry.register("errors", "Errors, by kind", self.error_family.clone());
        registry.register_with_unit(
            "request",
            "Payload bytes of the frames received from clients",
            Unit::Bytes,
            self.request_bytes.clone(),
        );
        registry.register_with_unit(
            "response",
            "Payload bytes of the answer frames queued for clients",
            Unit::Bytes,
            self.response_bytes.clone(),
        );
        registry.register(
            "dead_connections_reclaimed",
            "Connections that ended because the client hung up or died, their resources released",
            self.dead_connections.clone(),
        );
        registry.register(
            "backpressure_events",
            "Answers that found the connection's outgoing ring full and waited for the client to read",
            self.backpressure_events.clone(),
        );
        registry.register_with_unit(
            "backpressure_wait",
            "How long those answers waited for room in the ring",
            Unit::Seconds,
            self.backpressure_wait.clone(),
        );
        registry.register_with_unit(
            "ring_write_duration",
            "Time to write one answer frame into the client's ring, waits for room included \
             (one frame in WRITE_SAMPLE is timed)",
            Unit::Seconds,
            self.write_duration.clone(),
        );
        rings::register_families(registry, &self.rings);
        if let Some(read) = &self.listener {
            listener::register_families(registry, read);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
