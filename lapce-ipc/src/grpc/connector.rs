//! The client side: [`ShmConnector`] dials a listener for tonic's channel (or any hyper client
//! that takes a connector).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::connection::StreamConfig;
use crate::error::IpcError;
use crate::{ByteStream, SharedMemoryStream};

/// A tower service that connects to the shared-memory listener `name` whatever URI it is
/// asked for, and hands back the connection as a byte stream wrapped for hyper
/// ([`TokioIo`]). Cheap to clone. A tonic channel calls it again to reconnect after a
/// connection ends.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use lapce_ipc::grpc::ShmConnector;
/// use tonic::transport::Endpoint;
///
/// // The URI only has to parse; its authority becomes the requests' `:authority`.
/// let channel = Endpoint::from_static("http://chat.lapce-ipc")
///     .connect_with_connector(ShmConnector::new("chat"))
///     .await?;
/// # drop(channel);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShmConnector {
    name: Arc<str>,
    config: Arc<StreamConfig>,
}

impl ShmConnector {
    /// Dials the listener `name` with the default [`StreamConfig`].
    pub fn new(name: &str) -> ShmConnector {
        Self::with_config(name, StreamConfig::default())
    }

    /// Dials the listener `name` with `config` (its socket directory, allowed peers, handshake
    /// timeout, wait strategy; the ring capacity is the listener's).
    pub fn with_config(name: &str, config: StreamConfig) -> ShmConnector {
        ShmConnector { name: name.into(), config: Arc::new(config) }
    }

    /// The listener this connector dials.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ShmConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmConnector").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A connection under way.
type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<ByteStream>, IpcError>> + Send>>;

impl tower_service::Service<Uri> for ShmConnector {
    type Response = TokioIo<ByteStream>;
    type Error = IpcError;
    type Future = Connecting;

    /// Always ready: each call makes a connection of its own.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), IpcError>> {
        Poll::Ready(Ok(()))
    }

    /// Connects and completes the handshake; `uri` is ignored.
    fn call(&mut self, _uri: Uri) -> Connecting {
        let (name, config) = (self.name.clone(), self.config.clone());
        Box::pin(async move {
            let stream = SharedMemoryStream::connect_with(&name, &config).await?;
            Ok(TokioIo::new(ByteStream::new(stream)))
        })
    }
}

/// A tonic [`Channel`] to the listener `name` (default configuration), connected now: hand it
/// to a generated client (`FooClient::new(channel)`). Fails if the listener cannot be reached.
pub async fn connect(name: &str) -> Result<Channel, tonic::transport::Error> {
    connect_with(name, StreamConfig::default()).await
}

/// [`connect`] with a [`StreamConfig`] (see [`ShmConnector::with_config`]).
pub async fn connect_with(name: &str, config: StreamConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://lapce-ipc")
        .connect_with_connector(ShmConnector::with_config(name, config))
        .await
}
