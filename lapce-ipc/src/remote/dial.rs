//! The client side: `tls://HOST:PORT` in [`IpcClient::connect`](crate::IpcClient::connect) and
//! its reconnections. A TCP connection, the TLS handshake, the hello with the token, the
//! server's verdict; then a ring pair whose far end is pumped to the socket.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{certs, pair::ring_pair, pump::pump, remote_address, wire};
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::AsyncSharedMemoryStream;

/// A stream to the server `name`: remote for `tls://HOST:PORT`, else local.
pub(crate) async fn connect(name: &str, config: &IpcConfig) -> Result<AsyncSharedMemoryStream> {
    match remote_address(name) {
        Some(addr) => {
            let timeout = config.stream_config().handshake_timeout;
            tokio::time::timeout(timeout, dial(addr, config)).await.map_err(|_| IpcError::Timeout)?
        }
        None => AsyncSharedMemoryStream::connect_with(name, &config.stream_config()).await,
    }
}

/// Connects to the server at `addr` (`HOST:PORT`) and bridges it to a local ring pair.
async fn dial(addr: &str, config: &IpcConfig) -> Result<AsyncSharedMemoryStream> {
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
        Ok(()) => {}
        Err(why) => {
            return Err(IpcError::ServerRefused(format!(
                "the TLS server at {addr} refused this client: {why}"
            )))
        }
    }
    let (near, far) = ring_pair(config).await?;
    tokio::spawn(async move {
        if let Err(e) = pump(far, tls).await {
            tracing::debug!(error = %e, "TLS connection ended");
        }
    });
    Ok(near)
}
