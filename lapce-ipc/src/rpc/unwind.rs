//! Panic isolation for handler futures.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs a future and turns a panic in any of its polls into `Err(message)`.
///
/// Unwind safety: after a panic the future is never polled again (it is dropped with the
/// connection's request task), and the state it shares with the server (the outgoing queue, the
/// in-flight table) is only touched through channels and short mutex sections that cannot panic
/// halfway, so nothing is observed in a broken state.
///
/// The future must be `Unpin` (handlers' futures arrive boxed already): wrapping it costs no
/// allocation, which keeps a request's dispatch from allocating once more (tests/zero_alloc.rs).
pub(super) struct CatchUnwind<F: Future + Unpin>(F);

impl<F: Future + Unpin> CatchUnwind<F> {
    pub(super) fn new(future: F) -> CatchUnwind<F> {
        CatchUnwind(future)
    }
}

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()))),
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors_and_values_pass_through() {
        assert_eq!(CatchUnwind::new(Box::pin(async { 7 })).await, Ok(7));
        let r = CatchUnwind::new(Box::pin(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 42);
        }))
        .await;
        assert_eq!(r, Err::<(), _>("boom 42".to_string()));
    }
}
