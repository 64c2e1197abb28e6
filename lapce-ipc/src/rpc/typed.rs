//! Typed requests and answers: the server's typed registrations and the clients' typed calls,
//! built on the untyped ones with an [`Encoding`] (JSON, rkyv, or one of your own) turning
//! values into payloads and back.
//!
//! A request that does not decode is answered with an `Error` whose code is
//! [`ErrorCode::BAD_REQUEST`] and whose message names the message type, the format and the
//! type expected; it counts as an error in the server's stats. On the client an answer that does
//! not decode is an [`IpcError::Decode`](crate::IpcError::Decode) and an error answer is the
//! same [`IpcError`](crate::IpcError) as for untyped calls.

use std::future::Future;

use bytes::Bytes;

use super::{BlockingIpcClient, ChunkSender, IpcClient, IpcServer, RequestContext, ResponseStream};
use crate::error::Result;
use crate::frame::MessageType;
use crate::messages::{Encoding, ErrorBody, ErrorCode};

/// Decodes a request of type `kind`, answering a bad request when it does not decode.
fn decode_request<T, E: Encoding<T>>(
    encoding: &E,
    kind: MessageType,
    payload: &[u8],
) -> Result<T, ErrorBody> {
    encoding
        .decode(payload)
        .map_err(|e| ErrorBody::new(ErrorCode::BAD_REQUEST, format!("bad request for {kind}: {e}")))
}

impl IpcServer {
    /// Answers requests of type `kind` with an async handler of typed values: the payload is
    /// decoded with `encoding` (a request that does not decode is answered with a bad-request
    /// error, see the module), `handler` gets the request's [`RequestContext`] and the value,
    /// and its answer is encoded with `encoding`. The handler's error type is [`ErrorBody`], so
    /// `?` works on [`IpcError`](crate::IpcError)s and JSON errors (see their conversions).
    /// Runs as [`register_handler_with_context`](Self::register_handler_with_context) does.
    ///
    /// ```no_run
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::messages::{AIRequest, CompletionResponse, Json};
    /// use lapce_ipc::{IpcClient, IpcConfig, IpcServer};
    ///
    /// # async fn run() -> lapce_ipc::Result<()> {
    /// let server = IpcServer::bind("typed-doc", IpcConfig::default())?;
    /// server.register_typed(MessageType::Complete, Json, |_ctx, request: AIRequest| async move {
    ///     let last = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
    ///     Ok(CompletionResponse { content: last.to_uppercase(), ..CompletionResponse::default() })
    /// });
    ///
    /// let client = IpcClient::connect("typed-doc", IpcConfig::default()).await?;
    /// let answer: CompletionResponse =
    ///     client.request_typed(MessageType::Complete, &Json, &AIRequest::default()).await?;
    /// # Ok(()) }
    /// ```
    pub fn register_typed<Req, Resp, E, F, Fut>(&self, kind: MessageType, encoding: E, handler: F)
    where
        E: Encoding<Req> + Encoding<Resp> + Clone + Send + Sync + 'static,
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ErrorBody>> + Send + 'static,
    {
        self.register_handler_with_context(kind, move |ctx, payload: Bytes| {
            let call = decode_request(&encoding, kind, &payload).map(|request| handler(ctx, request));
            let encoding = encoding.clone();
            async move {
                let answer = call?.await?;
                Ok(encoding.encode(&answer)?)
            }
        });
    }

    /// Like [`register_typed`](Self::register_typed) for a quick synchronous handler, run as
    /// [`register_sync_handler`](Self::register_sync_handler)'s are: right on the connection's
    /// task, with no context.
    pub fn register_typed_sync<Req, Resp, E, F>(&self, kind: MessageType, encoding: E, handler: F)
    where
        E: Encoding<Req> + Encoding<Resp> + Send + Sync + 'static,
        F: Fn(Req) -> Result<Resp, ErrorBody> + Send + Sync + 'static,
    {
        self.register_sync_handler(kind, move |payload: Bytes| {
            let answer = handler(decode_request(&encoding, kind, &payload)?)?;
            Ok(encoding.encode(&answer)?)
        });
    }

    /// Like [`register_stream_handler`](Self::register_stream_handler) with a typed request
    /// and a [`RequestContext`]: the payload is decoded with `encoding` (a request that does
    /// not decode is answered with a bad-request error and no chunk); the handler sends its
    /// chunks, typed or not, through the [`ChunkSender`] ([`ChunkSender::send_typed`]). The
    /// context's cancellation signal is raised when the stream is cancelled (the client dropped
    /// its stream, or cancelled it).
    pub fn register_typed_stream<Req, E, F, Fut>(&self, kind: MessageType, encoding: E, handler: F)
    where
        Req: Send + 'static,
        E: Encoding<Req> + Send + Sync + 'static,
        F: Fn(RequestContext, Req, ChunkSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ErrorBody>> + Send + 'static,
    {
        self.register_stream_handler(kind, move |payload: Bytes, sink| {
            let ctx = RequestContext::of_stream(kind, &sink);
            let call =
                decode_request(&encoding, kind, &payload).map(|request| handler(ctx.clone(), request, sink));
            ctx.watch(Box::pin(async move { call?.await }))
        });
    }
}

impl ChunkSender {
    /// Sends `value`, encoded with `encoding`, as one chunk (see [`send`](Self::send)).
    pub async fn send_typed<T, E: Encoding<T>>(&self, encoding: &E, value: &T) -> Result<()> {
        self.send(encoding.encode(value)?).await
    }
}

impl IpcClient {
    /// Sends `request` encoded with `encoding` and decodes the answer with it (see
    /// [`request`](Self::request) for the timeout and the errors; an answer that does not
    /// decode is an [`IpcError::Decode`](crate::IpcError::Decode)). The answer is decoded
    /// from a private copy, never from shared memory the server could still change.
    pub async fn request_typed<Req, Resp, E>(
        &self,
        kind: MessageType,
        encoding: &E,
        request: &Req,
    ) -> Result<Resp>
    where
        E: Encoding<Req> + Encoding<Resp>,
    {
        let payload = encoding.encode(request)?;
        let answer = self.request(kind, payload).await?;
        encoding.decode(&answer)
    }

    /// Sends `request` encoded with `encoding` to a streaming handler (see
    /// [`request_stream`](Self::request_stream)); read the chunks with
    /// [`ResponseStream::next_typed`].
    pub async fn request_stream_typed<Req, E: Encoding<Req>>(
        &self,
        kind: MessageType,
        encoding: &E,
        request: &Req,
    ) -> Result<ResponseStream> {
        let payload = encoding.encode(request)?;
        self.request_stream(kind, payload).await
    }
}

impl ResponseStream {
    /// The next chunk decoded with `encoding` (see [`next`](Self::next)); `None` at the end of
    /// the stream. A chunk that does not decode is an
    /// [`IpcError::Decode`](crate::IpcError::Decode); the stream goes on.
    pub async fn next_typed<T, E: Encoding<T>>(&mut self, encoding: &E) -> Option<Result<T>> {
        Some(self.next().await?.and_then(|chunk| encoding.decode(&chunk)))
    }
}

impl BlockingIpcClient {
    /// Sends `request` encoded with `encoding` and decodes the answer with it (see
    /// [`IpcClient::request_typed`]).
    pub fn request_typed<Req, Resp, E>(&self, kind: MessageType, encoding: &E, request: &Req) -> Result<Resp>
    where
        E: Encoding<Req> + Encoding<Resp>,
    {
        let payload = encoding.encode(request)?;
        let answer = self.request(kind, payload)?;
        encoding.decode(&answer)
    }
}
