//! The families read from the server's listener when the metrics are encoded: its warm pool,
//! refused handshakes and stale files removed. Nothing is recorded on any path.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::{ListenerReader, ListenerReport, Metrics};

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
        register_families(&mut self.registry, &read);
        self.listener = Some(read);
    }
}

/// Registers the listener families in `registry`, read through `read` when encoded.
pub(super) fn register_families(registry: &mut Registry, read: &ListenerReader) {
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
        registry.register(name, help, LiveValue { read: read.clone(), pick, counter });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

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
}
