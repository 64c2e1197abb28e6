//! tower adapters (feature `tower`): [`IpcClient`] as a [`Service`], and a [`Service`] as a
//! server's handler, so tower middleware (timeouts, limits, retries) wraps either side.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tower_service::Service;

use super::{IpcClient, IpcServer};
use crate::error::{IpcError, Result};
use crate::frame::MessageType;
use crate::messages::ErrorBody;

/// The client as a tower service of `(message type, payload)` requests answered by the
/// answer's payload, as [`IpcClient::request`] does. Always ready: the connection takes
/// concurrent requests (its limits apply on the server), so put a concurrency limit in front
/// if you want one on this side. Each call works on a clone of the client (a reference count).
///
/// ```no_run
/// use bytes::Bytes;
/// use lapce_ipc::frame::MessageType;
/// use lapce_ipc::{IpcClient, IpcConfig};
/// use tower_service::Service;
///
/// # async fn run() -> lapce_ipc::Result<()> {
/// let mut client = IpcClient::connect("service-doc", IpcConfig::default()).await?;
/// let answer = client.call((MessageType::Data, Bytes::from_static(b"hello"))).await?;
/// # Ok(()) }
/// ```
impl Service<(MessageType, Bytes)> for IpcClient {
    type Response = Bytes;
    type Error = IpcError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (kind, payload): (MessageType, Bytes)) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.request(kind, payload).await })
    }
}

impl IpcServer {
    /// Answers requests of type `kind` with a tower service of payloads: each request is
    /// served by a clone of `service`, once it is ready; its error is answered as an
    /// [`ErrorBody`] (so `IpcError` and `ErrorBody` errors both fit). Runs as
    /// [`register_handler`](Self::register_handler)'s handlers do.
    pub fn register_service<S>(&self, kind: MessageType, service: S)
    where
        S: Service<Bytes, Response = Bytes> + Clone + Send + Sync + 'static,
        S::Error: Into<ErrorBody>,
        S::Future: Send + 'static,
    {
        self.register_handler(kind, move |payload| {
            let mut service = service.clone();
            async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await.map_err(Into::into)?;
                service.call(payload).await.map_err(Into::into)
            }
        });
    }
}
