//! The channel layer: one direction of a connection (a ring half plus its wake-up plumbing),
//! with blocking and async waits, backpressure and liveness.
//!
//! A waiter first spins (how long is the [`WaitStrategy`]), then announces that it sleeps on the
//! ring's waiter word, re-checks the ring, and sleeps: on the futex where the platform has one
//! (blocking flavour on Linux), else on its doorbell (a socket pair on Unix, an event on
//! Windows), which the async flavour always uses. The other side wakes it only when the word
//! says someone sleeps, so a steady stream makes no system call per message, and an idle
//! connection costs nothing.
//!
//! Liveness: on Linux the process's hang-up watcher thread (one epoll set for all connections)
//! learns at once when a peer closes its control socket or dies, even by `kill -9`; it marks the
//! link gone and wakes this side's blocking sleepers, which then return [`IpcError::PeerGone`].
//! Elsewhere, and in the async flavour, sleepers wait on the link together with their doorbell.
//! Nothing polls: an idle connection costs no CPU at all.

mod link;
mod sleeper;
mod sync;
#[cfg(test)]
mod tests;
mod wait;
#[cfg(feature = "tokio")]
mod wait_async;

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{IpcError, Result};
use crate::ring::{Consumer, Producer};
pub(crate) use link::Link;
pub(crate) use sleeper::Sleeper;
pub use wait::WaitStrategy;
use wait::{wait_blocking, Waitable};
#[cfg(feature = "tokio")]
use wait_async::{poll_sleep, wait_async, wait_async_or};

/// The sending half of a connection: the producer of the outgoing ring.
pub(crate) struct SendHalf {
    producer: Producer,
    sleeper: Sleeper,
}

impl Waitable for SendHalf {
    type Sleeper = Sleeper;
    fn ready(&mut self, len: usize) -> Result<bool> {
        let ready = self.producer.try_reserve(len)?.is_some();
        self.producer.abort();
        Ok(ready)
    }
    fn word(&self) -> &AtomicU32 {
        self.producer.space_waiter()
    }
    fn sleeper(&mut self) -> &mut Sleeper {
        &mut self.sleeper
    }
    #[inline]
    fn sleep(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.sleeper.sleep_on(self.producer.space_waiter(), timeout)
    }
}

impl SendHalf {
    pub(crate) fn new(producer: Producer, sleeper: Sleeper) -> SendHalf {
        SendHalf { producer, sleeper }
    }

    /// A gauge of the outgoing ring (for metrics).
    pub(crate) fn ring_gauge(&self) -> crate::ring::RingGauge {
        self.producer.gauge()
    }

    pub(crate) fn max_message(&self) -> usize {
        self.producer.max_payload()
    }

    pub(crate) fn set_strategy(&mut self, s: WaitStrategy) {
        self.sleeper.strategy = s;
    }

    pub(crate) fn link(&self) -> &Link {
        &self.sleeper.link
    }

    /// See [`Producer::discard_if_empty`].
    pub(crate) fn discard_if_empty(&mut self) -> Result<bool> {
        self.producer.discard_if_empty()
    }

    /// Reserves `len` bytes, lets `fill` write them and return how many to publish.
    /// `Ok(None)`: the ring is full.
    pub(crate) fn try_send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Option<usize>> {
        let Some(buf) = self.producer.try_reserve(len)? else {
            return Ok(None);
        };
        let n = fill(buf).min(len);
        let w = self.producer.commit(n);
        self.sleeper.wake(w, self.producer.peer_waiter());
        Ok(Some(n))
    }

    /// Like `try_send_with`, waiting (blocking) for room until `deadline`.
    pub(crate) fn send_with(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize> {
        self.check_len(len)?;
        wait_blocking(self, len, deadline)?;
        // Room only grows while we wait (we are the only producer), so this cannot fail.
        self.try_send_with(len, fill).map(|r| r.expect("room was just observed"))
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max_message() {
            return Err(IpcError::MessageTooLarge { len, max: self.max_message() });
        }
        Ok(())
    }

    /// Copies `msg` into one record without waiting; `WouldBlock` when the ring is full.
    pub(crate) fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len())?;
        self.try_send_with(msg.len(), copy_from(msg))?.map(|_| ()).ok_or(IpcError::WouldBlock)
    }

    /// Copies `msg` into one record, waiting (blocking) for room until `deadline`.
    pub(crate) fn send(&mut self, msg: &[u8], deadline: Option<Instant>) -> Result<()> {
        self.send_with(msg.len(), deadline, copy_from(msg)).map(|_| ())
    }

    #[cfg(feature = "tokio")]
    /// Copies `msg` into one record, waiting asynchronously for room.
    pub(crate) async fn send_async(&mut self, msg: &[u8]) -> Result<()> {
        self.send_with_async(msg.len(), copy_from(msg)).await.map(|_| ())
    }

    #[cfg(feature = "tokio")]
    /// Waits asynchronously until a record of `len` bytes fits (cancel-safe).
    pub(crate) async fn room_async(&mut self, len: usize) -> Result<()> {
        self.check_len(len)?;
        wait_async(self, len).await
    }

    /// Waits (blocking) until a record of `len` bytes fits or `deadline` passes.
    pub(crate) fn room_blocking(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        self.check_len(len)?;
        wait_blocking(self, len, deadline)
    }

    #[cfg(feature = "tokio")]
    /// Polls for room for a record of `len` bytes, for the `Sink` and `AsyncWrite` impls: ready
    /// at once when there is room, else the async sleep, polled in place (no spin: a poll must
    /// not hold its task). Each pending poll announces the sleep afresh, so a wait another call
    /// ended in between cannot leave this one unwoken.
    pub(crate) fn poll_room(&mut self, len: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.check_len(len)?;
        if self.ready(len)? {
            return Poll::Ready(Ok(()));
        }
        poll_sleep(self, len, &mut false, cx)
    }

    #[cfg(feature = "tokio")]
    /// Async flavour of `send_with`.
    pub(crate) async fn send_with_async(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize> {
        self.check_len(len)?;
        wait_async(self, len).await?;
        self.try_send_with(len, fill).map(|r| r.expect("room was just observed"))
    }
}

/// The receiving half of a connection: the consumer of the incoming ring.
pub(crate) struct RecvHalf {
    consumer: Consumer,
    sleeper: Sleeper,
}

impl Waitable for RecvHalf {
    type Sleeper = Sleeper;
    fn ready(&mut self, _len: usize) -> Result<bool> {
        Ok(self.consumer.try_peek()?.is_some())
    }
    fn word(&self) -> &AtomicU32 {
        self.consumer.data_waiter()
    }
    fn sleeper(&mut self) -> &mut Sleeper {
        &mut self.sleeper
    }
    #[inline]
    fn sleep(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.sleeper.sleep_on(self.consumer.data_waiter(), timeout)
    }
}

impl RecvHalf {
    /// A gauge of the incoming ring (for metrics).
    pub(crate) fn ring_gauge(&self) -> crate::ring::RingGauge {
        self.consumer.gauge()
    }

    pub(crate) fn new(consumer: Consumer, sleeper: Sleeper) -> RecvHalf {
        RecvHalf { consumer, sleeper }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.consumer.max_payload()
    }

    pub(crate) fn set_strategy(&mut self, s: WaitStrategy) {
        self.sleeper.strategy = s;
    }

    /// Hands the next message to `f` (zero-copy) if there is one. When `f` returns
    /// `Err`, the message stays queued (used for a too-small caller buffer).
    pub(crate) fn try_recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<Option<R>> {
        let Some(bytes) = self.consumer.try_peek()? else {
            return Ok(None);
        };
        let r = f(bytes)?;
        let w = self.consumer.release();
        self.sleeper.wake(w, self.consumer.peer_waiter());
        Ok(Some(r))
    }

    /// Like `try_recv_with`, with `WouldBlock` when nothing is queued.
    pub(crate) fn recv_now<R>(&mut self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.try_recv_with(f)?.ok_or(IpcError::WouldBlock)
    }

    /// Waits (blocking) for a message until `deadline`, then hands it to `f`.
    pub(crate) fn recv_with<R>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        wait_blocking(self, 0, deadline)?;
        self.try_recv_with(f).map(|r| r.expect("a record was just observed"))
    }

    #[cfg(feature = "tokio")]
    /// Async flavour of `recv_with`.
    pub(crate) async fn recv_with_async<R>(&mut self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        wait_async(self, 0).await?;
        self.try_recv_with(f).map(|r| r.expect("a record was just observed"))
    }

    #[cfg(feature = "tokio")]
    /// Waits asynchronously until a record is there (cancel-safe: dropping the wait loses
    /// nothing, at most the peer rings once for nobody).
    pub(crate) async fn readable_async(&mut self) -> Result<()> {
        wait_async(self, 0).await
    }

    #[cfg(feature = "tokio")]
    /// Like [`readable_async`](Self::readable_async), also ending when `other` is ready
    /// (`Ok(true)`; polled only once the wait sleeps): one small future for a wait on the ring
    /// or on something else. For a reader whose data other tasks of this process bring about
    /// (see [`wait_async_or`]).
    pub(crate) async fn readable_or(
        &mut self,
        other: impl FnMut(&mut Context<'_>) -> Poll<()>,
    ) -> Result<bool> {
        wait_async_or(self, 0, true, other).await
    }

    #[cfg(feature = "tokio")]
    /// Polls for a record, for the `Stream` and `AsyncRead` impls: see
    /// [`SendHalf::poll_room`].
    pub(crate) fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.ready(0)? {
            return Poll::Ready(Ok(()));
        }
        poll_sleep(self, 0, &mut false, cx)
    }

    /// Copies the next record from byte `*offset` on into `buf` (as much as fits), and frees the
    /// record once all of it is copied (`*offset` back to 0): the byte-stream mode's read.
    /// `Ok(None)`: nothing queued. An empty record is freed and reported as `Some(0)`.
    pub(crate) fn try_read_part(&mut self, offset: &mut usize, buf: &mut [u8]) -> Result<Option<usize>> {
        let Some(bytes) = self.consumer.try_peek()? else {
            return Ok(None);
        };
        // `min`: a record is re-read from shared memory, which a hostile peer may have shrunk.
        let rest = &bytes[(*offset).min(bytes.len())..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        if n < rest.len() {
            *offset += n;
            return Ok(Some(n));
        }
        *offset = 0;
        let w = self.consumer.release();
        self.sleeper.wake(w, self.consumer.peer_waiter());
        Ok(Some(n))
    }

    /// Waits (blocking) until a record is there or `deadline` passes.
    pub(crate) fn readable_blocking(&mut self, deadline: Option<Instant>) -> Result<()> {
        wait_blocking(self, 0, deadline)
    }

    /// A handle on the connection's link to the peer (liveness, pid) that outlives this half.
    pub(crate) fn link_handle(&self) -> Arc<Link> {
        self.sleeper.link.clone()
    }
}

/// What a handle's `Debug` shows of a direction: the peer and whether it is gone, never the
/// ring's bytes.
fn debug_half(f: &mut std::fmt::Formatter<'_>, name: &str, link: &Link, max: usize) -> std::fmt::Result {
    f.debug_struct(name)
        .field("peer_pid", &link.peer_pid())
        .field("peer_gone", &link.gone_flag())
        .field("max_message", &max)
        .finish()
}

impl std::fmt::Debug for SendHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_half(f, "SendHalf", &self.sleeper.link, self.max_message())
    }
}

impl std::fmt::Debug for RecvHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_half(f, "RecvHalf", &self.sleeper.link, self.max_message())
    }
}

/// Fills a reserved record with `msg` (the reservation is exactly `msg.len()` bytes).
fn copy_from(msg: &[u8]) -> impl FnOnce(&mut [u8]) -> usize + '_ {
    move |buf| {
        buf.copy_from_slice(msg);
        msg.len()
    }
}

/// Copies a message into a caller buffer, or refuses (leaving it queued) when it does not fit.
pub(crate) fn copy_into(buf: &mut [u8]) -> impl FnOnce(&[u8]) -> Result<usize> + '_ {
    move |bytes| {
        if bytes.len() > buf.len() {
            return Err(IpcError::BufferTooSmall { needed: bytes.len(), buf: buf.len() });
        }
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(bytes.len())
    }
}
