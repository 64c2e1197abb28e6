//! A lock-free histogram of durations with fixed buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
