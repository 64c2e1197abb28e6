//! The client side: `tls://HOST:PORT` in [`IpcClient::connect`](crate::IpcClient::connect) and
//! [`BlockingIpcClient::connect`](crate::BlockingIpcClient::connect), and their reconnections. A
//! TCP connection, the TLS handshake, the hello with the token, the server's verdict; then a
//! ring pair whose far end is pumped to the socket.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::pair::{pair_config, pair_listener, ring_pair};
use super::{certs, pump::pump, remote_address, wire};
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::{BlockingSharedMemoryStream, SharedMemoryStream};

/// A stream to the server `name`: remote for `tls://HOST:PORT`, else local.
pub(crate) async fn connect(name: &str, config: &IpcConfig) -> Result<SharedMemoryStream> {
    let Some(addr) = remote_address(name) else {
        return SharedMemoryStream::connect_with(name, &config.stream_config()).await;
    };
    let timeout = config.stream_config().handshake_timeout;
    let tls = tokio::time::timeout(timeout, dial(addr, config)).await.map_err(|_| IpcError::Timeout)??;
    let (near, far) = ring_pair(config).await?;
    tokio::spawn(bridge(far, tls));
    Ok(near)
}

/// The blocking flavour of [`connect`]: the far end is pumped by a thread of its own (with a
/// one-thread runtime), which ends with the connection.
pub(crate) fn connect_blocking(name: &str, config: &IpcConfig) -> Result<BlockingSharedMemoryStream> {
    let Some(addr) = remote_address(name) else {
        return BlockingSharedMemoryStream::connect_with(name, &config.stream_config());
    };
    let pairing = pair_config(config);
    let (ready, named) = std::sync::mpsc::channel::<Result<String>>();
    let (addr, config, far_config) = (addr.to_owned(), config.clone(), pairing.clone());
    std::thread::Builder::new().name("lapce-ipc-tls".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return drop(ready.send(Err(e.into()))),
        };
        runtime.block_on(async move {
            let timeout = far_config.handshake_timeout;
            let dialled =
                tokio::time::timeout(timeout, dial(&addr, &config)).await.map_err(|_| IpcError::Timeout);
            let (tls, (listener, name)) =
                match dialled.and_then(|d| d).and_then(|tls| Ok((tls, pair_listener(&far_config)?))) {
                    Ok(ready_to_pair) => ready_to_pair,
                    Err(e) => return drop(ready.send(Err(e))),
                };
            let _ = ready.send(Ok(name));
            // The caller connects now; if it does not, the wait ends with the handshake timeout.
            let Ok(Ok(far)) = tokio::time::timeout(timeout, listener.accept()).await else { return };
            drop(listener);
            bridge(far, tls).await;
        });
    })?;
    let name = named.recv().map_err(|_| IpcError::PeerGone)??;
    BlockingSharedMemoryStream::connect_with(&name, &pairing)
}

/// Pumps until either side ends.
async fn bridge(far: SharedMemoryStream, tls: TlsStream<TcpStream>) {
    if let Err(e) = pump(far, tls).await {
        tracing::debug!(error = %e, "TLS connection ended");
    }
}

/// Connects to the server at `addr` (`HOST:PORT`) and is admitted: TLS, hello, verdict.
async fn dial(addr: &str, config: &IpcConfig) -> Result<TlsStream<TcpStream>> {
    let tls_config = certs::client_config(&config.tls)?;
    let token = config.tls.token_bytes()?.unwrap_or_default();
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = config.tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| IpcError::InvalidArgument(format!("TLS server name {name:?}: {e}")))?;
    let tcp =
        TcpStream::connect(addr).await.map_err(|e| IpcError::Connect { path: addr.into(), source: e })?;
    let _ = tcp.set_nodelay(true);
    let connector = TlsConnector::from(Arc::clone(&tls_config));
    let mut tls = connector.connect(server_name, tcp).await.map_err(|e| certs::client_error(addr, e))?;
    wire::send_hello(&mut tls, &token).await.map_err(|e| match e {
        IpcError::Io(e) => certs::client_error(addr, e),
        e => e,
    })?;
    // With TLS 1.3 a server that refuses the client's certificate says so only now.
    match wire::read_verdict(&mut tls).await.map_err(|e| certs::client_error(addr, e))? {
        Ok(()) => Ok(tls),
        Err(why) => {
            Err(IpcError::ServerRefused(format!("the TLS server at {addr} refused this client: {why}")))
        }
    }
}
