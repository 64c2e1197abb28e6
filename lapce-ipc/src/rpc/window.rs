//! Stream windows: flow control of streamed responses, end to end (docs/PROTOCOL.md §7).
//!
//! A client that reads a connection for its other calls takes in the chunks of a stream whose
//! owner does not read (they wait in the stream's slot). The ring's backpressure never reaches
//! that stream's handler then, so the client announces a window (`StreamWindow`, id 0, right
//! after the greeting) and the server keeps each stream's *outstanding* bytes (chunks sent and
//! not yet credited back) below it: [`ChunkSender::send`](super::ChunkSender::send) waits at or
//! above it. The owner credits back what it consumed (`StreamWindow` with the stream's id), in
//! batches of a quarter window ([`BATCHES`]), so a reader that keeps up costs one small frame per
//! quarter window. Such a reader has outstanding at most what the ring holds plus a batch not
//! credited yet: a window of at least twice the ring leaves a quarter window for the credit on
//! its way, so the ring holds the handler back, not the window (see
//! [`IpcSection::stream_window`]).
//!
//! A chunk costs its payload length plus [`CHUNK_OVERHEAD`], so that empty chunks are bounded
//! too. One chunk always goes when nothing is outstanding: a chunk larger than the window still
//! flows, one at a time.
//!
//! [`IpcSection::stream_window`]: crate::config::IpcSection::stream_window

use std::pin::pin;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::IpcConfig;
use crate::frame::FrameError;

/// Credit goes back in batches of this fraction of the window. Half a window (what HTTP/2 peers
/// commonly do) is not enough here: the ring alone holds half a default window, so a reader
/// that keeps up would meet the window before the ring, and every such stall costs a sleep and
/// a wake on both sides.
const BATCHES: u32 = 4;

/// What a chunk costs in a window besides its payload: about what an unread chunk costs the
/// client besides its bytes (the frame header it came in, its handle and its place in the
/// stream's queue, the allocator's own overhead), so that a window of tiny chunks bounds the
/// client's memory as well as a window of large ones.
pub(crate) const CHUNK_OVERHEAD: u64 = 128;

/// What a chunk of `len` payload bytes costs in a window.
pub(super) fn cost(len: usize) -> u64 {
    (len as u64).saturating_add(CHUNK_OVERHEAD)
}

/// The payload of a `StreamWindow` message: a byte count, 4 bytes little-endian.
pub(super) fn encode(bytes: u32) -> [u8; 4] {
    bytes.to_le_bytes()
}

/// Reads the payload of a `StreamWindow` message: a byte count of at least 1.
pub(super) fn decode(payload: &[u8]) -> Result<u32, FrameError> {
    let bytes: [u8; 4] =
        payload.try_into().map_err(|_| FrameError::BadStreamWindow("the payload is not 4 bytes"))?;
    match u32::from_le_bytes(bytes) {
        0 => Err(FrameError::BadStreamWindow("a count of 0 bytes")),
        n => Ok(n),
    }
}

/// The sender's accounting of one stream: its window and its outstanding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Credit {
    window: u64,
    outstanding: u64,
    /// The window no longer applies.
    lifted: bool,
}

impl Credit {
    pub(super) fn new(window: u32) -> Credit {
        Credit { window: u64::from(window), outstanding: 0, lifted: false }
    }

    /// Whether a chunk may go now: the outstanding bytes are below the window (so one chunk,
    /// however large, goes when nothing is outstanding).
    pub(super) fn may_send(&self) -> bool {
        self.lifted || self.outstanding < self.window
    }

    /// A chunk of `len` payload bytes went.
    pub(super) fn sent(&mut self, len: usize) {
        self.outstanding = self.outstanding.saturating_add(cost(len));
    }

    /// The receiver credits `bytes` back. More than is outstanding is a broken peer (it credits
    /// bytes it was never sent): refused, the accounting unchanged.
    pub(super) fn credit(&mut self, bytes: u32) -> Result<(), FrameError> {
        self.outstanding = self
            .outstanding
            .checked_sub(u64::from(bytes))
            .ok_or(FrameError::BadStreamWindow("more bytes credited than the stream has outstanding"))?;
        Ok(())
    }

    /// No more waits: the window no longer applies.
    fn lift(&mut self) {
        self.lifted = true;
    }

    #[cfg(test)]
    pub(super) fn outstanding(&self) -> u64 {
        self.outstanding
    }
}

/// The server's side of one stream's window, shared by its [`ChunkSender`](super::ChunkSender)s
/// and the connection task, which credits it.
pub(super) struct StreamWindow {
    credit: Mutex<Credit>,
    /// Told when credit comes back or the window is lifted.
    opened: Notify,
}

impl StreamWindow {
    pub(super) fn new(window: u32) -> StreamWindow {
        StreamWindow { credit: Mutex::new(Credit::new(window)), opened: Notify::new() }
    }

    fn credit(&self) -> MutexGuard<'_, Credit> {
        self.credit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a chunk of `len` payload bytes may go, and counts it as sent. Counted before
    /// it is written, so that the client cannot credit it back before it is counted.
    pub(super) async fn reserve(&self, len: usize) {
        // The common case (the reader keeps up): one uncontended lock.
        if self.try_reserve(len) {
            return;
        }
        loop {
            let mut opened = pin!(self.opened.notified());
            // Registered before the check, so that credit coming in between is not missed.
            opened.as_mut().enable();
            if self.try_reserve(len) {
                return;
            }
            opened.await;
        }
    }

    fn try_reserve(&self, len: usize) -> bool {
        let mut credit = self.credit();
        if credit.may_send() {
            credit.sent(len);
            return true;
        }
        false
    }

    /// The client credits `bytes` back (see [`Credit::credit`]).
    pub(super) fn credited(&self, bytes: u32) -> Result<(), FrameError> {
        self.credit().credit(bytes)?;
        self.opened.notify_waiters();
        Ok(())
    }

    /// Lifts the window for good: the connection no longer reads credit (it is closing), so the
    /// stream is left to the ring's backpressure and to the connection's end.
    pub(super) fn lift(&self) {
        self.credit().lift();
        self.opened.notify_waiters();
    }
}

/// The window a client announces: its `stream_window`, if any (validated to fit a `u32`).
pub(super) fn configured(config: &IpcConfig) -> Option<u32> {
    u32::try_from(config.ipc.stream_window).ok().filter(|&w| w > 0)
}

/// The receiver's side of one stream: the bytes consumed and not yet credited back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Consumed {
    /// Credit goes back once this many bytes are consumed: a quarter window.
    batch: u32,
    pending: u32,
}

impl Consumed {
    pub(super) fn new(window: u32) -> Consumed {
        Consumed { batch: (window / BATCHES).max(1), pending: 0 }
    }

    /// The owner consumed a chunk of `len` payload bytes: the bytes to credit back now, if a
    /// batch is complete (then [`credited`](Self::credited) once they were sent).
    pub(super) fn consumed(&mut self, len: usize) -> Option<u32> {
        let cost = u32::try_from(cost(len)).unwrap_or(u32::MAX);
        self.pending = self.pending.saturating_add(cost);
        self.due()
    }

    /// The bytes to credit back now, if a batch is complete.
    pub(super) fn due(&self) -> Option<u32> {
        (self.pending >= self.batch).then_some(self.pending)
    }

    /// `bytes` (as returned by [`consumed`](Self::consumed)) were credited back.
    pub(super) fn credited(&mut self, bytes: u32) {
        self.pending -= bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_chunk_goes_when_nothing_is_outstanding_however_large() {
        let mut c = Credit::new(100);
        assert!(c.may_send());
        c.sent(1000);
        assert!(!c.may_send());
        c.credit(1000 + CHUNK_OVERHEAD as u32).unwrap();
        assert!(c.may_send());
    }

    #[test]
    fn crediting_more_than_outstanding_is_refused() {
        let mut c = Credit::new(1 << 20);
        c.sent(10);
        let cost = 10 + CHUNK_OVERHEAD;
        assert!(c.credit(cost as u32 + 1).is_err());
        assert_eq!(c.outstanding(), cost);
        assert!(c.credit(u32::MAX).is_err());
        c.credit(cost as u32).unwrap();
        assert!(c.credit(1).is_err());
    }

    #[test]
    fn payloads_are_four_bytes_of_at_least_one() {
        assert_eq!(decode(&encode(7)), Ok(7));
        assert!(decode(&encode(0)).is_err());
        assert!(decode(&[1, 0, 0]).is_err());
        assert!(decode(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn a_lifted_window_never_waits() {
        let w = StreamWindow::new(1);
        assert!(w.try_reserve(100));
        assert!(!w.try_reserve(100));
        w.lift();
        assert!(w.try_reserve(usize::MAX));
        assert!(w.try_reserve(100));
    }

    #[test]
    fn a_sender_waiting_for_credit_is_woken_by_it() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let w = std::sync::Arc::new(StreamWindow::new(64));
            w.reserve(100).await;
            let waiting = tokio::spawn({
                let w = w.clone();
                async move { w.reserve(1).await }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "no credit yet");
            w.credited((100 + CHUNK_OVERHEAD) as u32).unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
        });
    }

    proptest! {
        /// A sender and a receiver that follow the rules, over any chunk sizes and any pattern of
        /// reads: the outstanding bytes never exceed the window by more than one chunk, credit is
        /// never refused, nothing waits for ever (a chunk always goes once the receiver caught
        /// up), and the receiver's uncredited bytes stay below a batch.
        #[test]
        fn sender_and_receiver_stay_within_the_window(
            window in 1u32..100_000,
            chunks in proptest::collection::vec(0usize..70_000, 1..300),
            reads in proptest::collection::vec(0usize..8, 1..300),
        ) {
            let mut sender = Credit::new(window);
            let mut receiver = Consumed::new(window);
            // Chunks in flight or queued at the receiver, oldest first.
            let mut queued = std::collections::VecDeque::new();
            let mut next = chunks.iter().copied();
            let mut reads = reads.iter().copied().cycle();
            let largest = chunks.iter().copied().max().unwrap() as u64 + CHUNK_OVERHEAD;
            let mut pending = next.next();
            while pending.is_some() || !queued.is_empty() {
                // The sender sends while the window lets it.
                while let Some(len) = pending.filter(|_| sender.may_send()) {
                    sender.sent(len);
                    queued.push_back(len);
                    pending = next.next();
                }
                prop_assert!(sender.outstanding() < u64::from(window) + largest);
                // The receiver consumes a few (at least one, so that the run ends).
                for _ in 0..reads.next().unwrap().max(1) {
                    let Some(len) = queued.pop_front() else { break };
                    if let Some(bytes) = receiver.consumed(len) {
                        prop_assert!(sender.credit(bytes).is_ok());
                        receiver.credited(bytes);
                    }
                    prop_assert!(receiver.pending < receiver.batch);
                }
            }
            // Everything consumed: what is outstanding is exactly what was not credited yet.
            prop_assert_eq!(sender.outstanding(), u64::from(receiver.pending));
        }
    }
}
