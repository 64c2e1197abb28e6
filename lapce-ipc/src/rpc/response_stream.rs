//! [`ResponseStream`]: the chunks of a streamed answer, as an inherent `next()` and as a
//! `futures_core::Stream`.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use super::client::Chunks;
use crate::error::Result;

/// A `Stream` poll's wait for the next chunk: it owns the chunks while it runs and gives them
/// back with the chunk.
type NextChunk = Pin<Box<dyn Future<Output = (Chunks, Option<Result<Bytes>>)> + Send + Sync>>;

/// The chunks of a streamed answer (see [`IpcClient::request_stream`](crate::IpcClient::request_stream)).
/// Dropping it before the end cancels the request on the server.
///
/// Read it with [`next`](Self::next), or as a [`futures_core::Stream`] of `Result<Bytes>`
/// (`StreamExt::next`, `forward`, `collect`…), with the same items and the same end: `None`
/// after the server's `StreamEnd` or after an error. The inherent `next` waits in place; the
/// `Stream` impl boxes its wait, one small allocation per chunk.
///
/// ```no_run
/// # async fn run(client: lapce_ipc::IpcClient) -> lapce_ipc::Result<()> {
/// use futures::StreamExt;
/// use lapce_ipc::frame::MessageType;
///
/// let chunks = client.request_stream(MessageType::Chat, b"tell me a story").await?;
/// let story: Vec<_> = chunks.collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
/// # let _: Vec<bytes::Bytes> = story;
/// # Ok(()) }
/// ```
pub struct ResponseStream {
    /// The chunks, unless a `Stream` poll's wait holds them.
    chunks: Option<Chunks>,
    pending: Option<NextChunk>,
    request_id: u64,
}

impl ResponseStream {
    pub(super) fn new(chunks: Chunks) -> ResponseStream {
        let request_id = chunks.request_id();
        ResponseStream { chunks: Some(chunks), pending: None, request_id }
    }

    /// The next chunk; `None` after the server's `StreamEnd`. An error (the handler's error,
    /// a lost connection) ends the stream.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.pending.is_some() {
            // A `Stream` poll began a wait: finish it, so that no chunk is skipped.
            return poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await;
        }
        self.chunks.as_mut()?.next().await
    }

    /// The request's id on its connection.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Stops the stream: the server aborts the handler.
    pub fn cancel(self) {
        drop(self);
    }
}

impl Stream for ResponseStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        if self.pending.is_none() {
            let Some(mut chunks) = self.chunks.take() else { return Poll::Ready(None) };
            self.pending = Some(Box::pin(async move {
                let item = chunks.next().await;
                (chunks, item)
            }));
        }
        let pending = self.pending.as_mut().expect("a wait was just set up");
        let Poll::Ready((chunks, item)) = pending.as_mut().poll(cx) else { return Poll::Pending };
        self.pending = None;
        self.chunks = Some(chunks);
        Poll::Ready(item)
    }
}

impl fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseStream")
            .field("request_id", &self.request_id)
            .field("waiting", &self.pending.is_some())
            .finish()
    }
}
