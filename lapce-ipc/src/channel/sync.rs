//! What the blocking wait (`wait.rs`) reaches outside itself: atomics, the clock, the spin and
//! yield hints, the ring's waiter-word protocol, the error type and the platform's capabilities.
//! `tests/loom_ring.rs` supplies its own module of the same names (loom's atomics and scheduler
//! hints, a model error type), so that it runs `wait.rs` unchanged; keep the two in step.

pub(super) use std::hint::spin_loop;
pub(super) use std::sync::atomic::AtomicU32;
pub(super) use std::thread::yield_now;
pub(super) use std::time::{Duration, Instant};

pub(super) use crate::error::{IpcError, Result};
pub(super) use crate::platform::{HAS_FUTEX, HAS_HANGUP_WATCHER};
pub(super) use crate::ring::{announce_sleep, cancel_sleep, SLEEPS_DOORBELL, SLEEPS_FUTEX};
