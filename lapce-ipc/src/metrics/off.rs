//! The metrics' stand-in without the `metrics` feature: the internal API the server records
//! through, with no registry behind it. A server's metrics are then always `None`
//! ([`Metrics::for_server`]), so no recording point ever runs; the types only let the server's
//! code compile the same way with and without the feature.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "points.rs"]
mod points;

pub(crate) use points::{ErrorKind, ListenerReader, ListenerReport, EMPTY_TEXT, WRITE_SAMPLE};

use crate::frame::MessageType;
use crate::ring::RingGauge;

/// Never made: see the module doc.
pub(crate) struct Metrics {
    never: Infallible,
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_refused: Counter,
    pub(crate) connections_active: Gauge,
    pub(crate) connect_duration: DurationHistogram,
    pub(crate) requests_in_flight: Gauge,
    pub(crate) stream_chunks: Counter,
    pub(crate) request_bytes: Counter,
    pub(crate) response_bytes: Counter,
    pub(crate) dead_connections: Counter,
    pub(crate) backpressure_events: Counter,
    pub(crate) backpressure_wait: DurationHistogram,
    pub(crate) write_duration: DurationHistogram,
    pub(crate) rings: Arc<RingRegistry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.never {}
    }
}

impl Metrics {
    /// Always `None`: metrics are not compiled in.
    pub(crate) fn for_server(_enable: bool, _read: ListenerReader) -> Option<Arc<Metrics>> {
        None
    }

    pub(crate) fn for_type(&self, _: MessageType) -> TypeMetrics {
        match self.never {}
    }

    pub(crate) fn error(&self, _: ErrorKind) {
        match self.never {}
    }

    pub(crate) fn encode(&self) -> String {
        match self.never {}
    }
}

/// Stand-in of a request type's series.
#[derive(Debug, Clone)]
pub(crate) struct TypeMetrics {
    never: Infallible,
}

impl TypeMetrics {
    pub(crate) fn dispatched(&self) {
        match self.never {}
    }

    pub(crate) fn answered(&self, _: Duration) {
        match self.never {}
    }
}

/// Stand-in of a counter.
#[derive(Debug)]
pub(crate) struct Counter(Infallible);

impl Counter {
    pub(crate) fn inc(&self) {
        match self.0 {}
    }

    pub(crate) fn inc_by(&self, _: u64) {
        match self.0 {}
    }
}

/// Stand-in of a gauge.
#[derive(Debug)]
pub(crate) struct Gauge(Infallible);

impl Gauge {
    pub(crate) fn inc(&self) {
        match self.0 {}
    }

    pub(crate) fn dec(&self) {
        match self.0 {}
    }
}

/// Stand-in of a duration histogram.
#[derive(Debug)]
pub(crate) struct DurationHistogram(Infallible);

impl DurationHistogram {
    pub(crate) fn observe(&self, _: Duration) {
        match self.0 {}
    }

    pub(crate) fn observe_since(&self, _: Instant) {
        match self.0 {}
    }
}

/// Stand-in of the live rings' registry.
#[derive(Debug)]
pub(crate) struct RingRegistry(Infallible);

impl RingRegistry {
    pub(crate) fn register(self: &Arc<Self>, _: RingGauge, _: RingGauge) -> RingRegistration {
        match self.0 {}
    }
}

/// Stand-in of a connection's place in the ring registry.
#[derive(Debug)]
pub(crate) struct RingRegistration(Infallible);
