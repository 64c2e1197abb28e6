//! The latency histograms of `bench` and `stress`, and of the result lines client children send.

use hdrhistogram::Histogram;

use crate::error::Result;

/// Highest latency the histograms track (larger values are clamped): 60 s in nanoseconds.
const HIST_MAX_NS: u64 = 60_000_000_000;

/// A new latency histogram in nanoseconds, 3 significant figures.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_NS, 3)?)
}
