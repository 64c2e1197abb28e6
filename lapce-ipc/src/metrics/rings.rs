//! The ring families: levels and totals of the live connections' rings, read from their shared
//! headers when the metrics are encoded, plus the totals of the connections that ended.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::ring::{RingGauge, RingLevels};

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

/// Registers the ring families, read from `rings` when encoded.
pub(super) fn register_families(registry: &mut Registry, rings: &Arc<RingRegistry>) {
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
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

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
}
