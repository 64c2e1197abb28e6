//! Unit tests of the wait policy: the adaptive spin budget and the async spin's task limit.

use std::time::Duration;

use super::wait::{RecentWaits, ADAPTIVE_SPIN_MAX};
#[cfg(feature = "tokio")]
use super::wait_async::{runtime_is_quiet, ASYNC_SPIN_MAX_TASKS};

#[test]
fn waits_that_usually_end_soon_are_spun_for_and_long_ones_are_not() {
    let base = Duration::from_micros(20);
    let mut recent = RecentWaits::default();
    assert_eq!(recent.spin_budget(base), base, "no history: the base");
    // A 64 KiB exchange: waits of ~30 µs.
    for _ in 0..64 {
        recent.note(Duration::from_micros(30));
    }
    let budget = recent.spin_budget(base);
    assert!(budget > Duration::from_micros(50) && budget <= Duration::from_micros(60), "{budget:?}");
    // One long idle wait does not undo it for long, nor leave it spinning the maximum.
    recent.note(Duration::from_secs(5));
    let after_idle = recent.spin_budget(base);
    assert!(after_idle > budget && after_idle <= ADAPTIVE_SPIN_MAX, "{after_idle:?}");
    // A connection whose waits are long (requests now and then): the base, not a spin that
    // would only burn the CPU before each sleep.
    for _ in 0..64 {
        recent.note(Duration::from_millis(100));
    }
    assert_eq!(recent.spin_budget(base), base);
    // Waits that end at once: the base again (a longer spin buys nothing).
    for _ in 0..64 {
        recent.note(Duration::ZERO);
    }
    assert_eq!(recent.spin_budget(base), base);
}

#[cfg(feature = "tokio")]
#[test]
fn async_waits_spin_only_while_the_runtime_has_few_tasks() {
    assert!(runtime_is_quiet(), "outside a runtime nothing else waits for the thread");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut tasks: Vec<_> =
            (0..ASYNC_SPIN_MAX_TASKS).map(|_| tokio::spawn(std::future::pending::<()>())).collect();
        assert!(runtime_is_quiet(), "{ASYNC_SPIN_MAX_TASKS} tasks still allow a spin");
        tasks.push(tokio::spawn(std::future::pending::<()>()));
        assert!(!runtime_is_quiet(), "one task more does not");
        for t in &tasks {
            t.abort();
        }
    });
}
