//! gRPC ([tonic]) and HTTP (hyper) over shared memory, behind the `grpc` feature: the
//! byte-stream mode ([`ByteStream`]) carries an HTTP/2 connection, so a tonic service
//! and its clients talk through the rings instead of a socket, with the same generated code.
//!
//! - Client: [`ShmConnector`], a tower service from `Uri` to a connection, for tonic's
//!   [`Endpoint::connect_with_connector`](tonic::transport::Endpoint::connect_with_connector)
//!   (or hyper's client); [`connect`] does that for a listener name. The URI is not used (it
//!   only has to parse): the connector always dials the listener it was made for.
//! - Server: [`ShmIncoming`], the listener's connections as a stream of [`ShmConnection`]s
//!   (`AsyncRead + AsyncWrite` + tonic's [`Connected`](tonic::transport::server::Connected)),
//!   for `Server::builder()...serve_with_incoming`. Each request carries a [`ShmConnectInfo`]
//!   (the client's pid) in its extensions.
//!
//! Plain hyper needs nothing from this module: wrap a [`ByteStream`] in
//! `hyper_util::rt::TokioIo` and hand it to `hyper::client::conn` or `hyper::server::conn`
//! (HTTP/1.1 or HTTP/2; see `examples/http_over_shm.rs`).
//!
//! Both sides must use the byte-stream mode on their connection. A peer that goes away ends
//! the byte stream (EOF after what it sent), so calls in flight fail with an error status at
//! once rather than hang.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lapce_ipc::grpc::{self, ShmIncoming};
//!
//! // Server: any tonic service, served over the listener named "chat".
//! # let service = tonic::service::Routes::default();
//! let incoming = ShmIncoming::bind("chat")?;
//! tokio::spawn(
//!     tonic::transport::Server::builder().add_routes(service).serve_with_incoming(incoming),
//! );
//!
//! // Client: a tonic channel for the generated client types (`ChatClient::new(channel)`).
//! let channel = grpc::connect("chat").await?;
//! # drop(channel);
//! # Ok(()) }
//! ```

mod connector;
mod incoming;

pub use self::connector::{connect, connect_with, ShmConnector};
pub use self::incoming::{ShmConnectInfo, ShmConnection, ShmIncoming};

#[cfg(doc)]
use crate::ByteStream;
