//! The server side: [`IpcServer::listen_tls`] and [`TlsEndpoint`]. Each TCP connection is
//! admitted (TLS handshake, then the client's hello and token), then bridged to a connection to
//! the server's own listener, which serves it as any local client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::{certs, pump::pump, remote_address, wire};
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::metrics::Metrics;
use crate::{IpcServer, SharedMemoryStream};

/// A server's TLS listener, running until dropped or until the server shuts down (see
/// [`IpcServer::listen_tls`]). Connections it bridged stay until they end.
#[derive(Debug)]
pub struct TlsEndpoint {
    local_addr: SocketAddr,
    refused: Arc<AtomicU64>,
    task: AbortHandle,
}

impl TlsEndpoint {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Clients refused so far before any frame: a failed TLS handshake (an unknown client
    /// certificate, say), a missing or wrong token, a bad or late hello.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every admission needs.
struct Admission {
    acceptor: TlsAcceptor,
    token: Option<Vec<u8>>,
    /// The server's name and configuration, to connect to its listener.
    name: String,
    config: IpcConfig,
    refused: Arc<AtomicU64>,
    metrics: Option<Arc<Metrics>>,
}

impl IpcServer {
    /// Listens on `addr` (`tls://HOST:PORT` or `HOST:PORT`; port 0 lets the system choose) for
    /// remote clients, with the certificate, key, token and client CA of the server's
    /// configuration (`[tls]`, see [`TlsSection`](super::TlsSection)): a token, client certificates or both must
    /// be required, or this fails with [`IpcError::InvalidArgument`]. Admitted clients are served
    /// as local ones (same handlers, limits, metrics), through the server's own listener:
    /// [`serve`](Self::serve) must be running. Must be called inside a tokio runtime.
    ///
    /// ```no_run
    /// use lapce_ipc::{IpcConfig, IpcServer};
    ///
    /// # async fn run() -> lapce_ipc::Result<()> {
    /// let mut config = IpcConfig::default();
    /// config.tls.cert = Some("server-cert.pem".into());
    /// config.tls.key = Some("server-key.pem".into());
    /// config.tls.token_file = Some("token".into());
    /// let server = IpcServer::bind("engine", config)?;
    /// let endpoint = server.listen_tls("tls://0.0.0.0:7443").await?;
    /// println!("listening on {}", endpoint.local_addr());
    /// server.serve().await
    /// # }
    /// ```
    pub async fn listen_tls(&self, addr: &str) -> Result<TlsEndpoint> {
        let (name, config, stopping, metrics) = self.remote_parts();
        let acceptor = TlsAcceptor::from(certs::server_config(&config.tls)?);
        let token = config.tls.token_bytes()?.filter(|t| !t.is_empty());
        if token.is_none() && config.tls.client_ca.is_none() {
            return Err(IpcError::InvalidArgument(
                "a TLS listener must require a token (tls.token, tls.token_file) or client \
                 certificates (tls.client_ca): it would admit anyone"
                    .into(),
            ));
        }
        let bare = remote_address(addr).unwrap_or(addr);
        let listener =
            TcpListener::bind(bare).await.map_err(|e| IpcError::Bind { path: bare.into(), source: e })?;
        let local_addr = listener.local_addr()?;
        let refused = Arc::new(AtomicU64::new(0));
        let admission =
            Arc::new(Admission { acceptor, token, name, config, refused: refused.clone(), metrics });
        let task = tokio::spawn(accept_loop(listener, admission, stopping)).abort_handle();
        tracing::info!(%local_addr, "listening for TLS clients");
        Ok(TlsEndpoint { local_addr, refused, task })
    }
}

/// Starts the listener `[tls] listen` names, if it names one (called by `serve`).
pub(crate) async fn listen_configured(server: &IpcServer) -> Result<Option<TlsEndpoint>> {
    let (_, config, _, _) = server.remote_parts();
    match &config.tls.listen {
        Some(addr) => server.listen_tls(addr).await.map(Some),
        None => Ok(None),
    }
}

/// Accepts TCP connections until the server shuts down; each is admitted on a task of its own.
async fn accept_loop(listener: TcpListener, admission: Arc<Admission>, mut stopping: watch::Receiver<bool>) {
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            _ = stopping.changed() => continue,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let span = tracing::info_span!("tls_connection", %peer);
                tokio::spawn(serve_remote(admission.clone(), tcp, peer).instrument(span));
            }
            Err(e) => {
                // Out of descriptors, say: log, breathe, go on.
                tracing::error!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Admits one client, then bridges it to the server's listener until either side ends.
async fn serve_remote(admission: Arc<Admission>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let timeout = admission.config.stream_config().handshake_timeout;
    let admitted = tokio::time::timeout(timeout, admit(&admission, tcp)).await;
    let (mut tls, local) = match admitted {
        Ok(Ok(pair)) => pair,
        Ok(Err(Refusal::Client(why))) => return refuse(&admission, peer, &why),
        Ok(Err(Refusal::Ours(e))) => {
            tracing::warn!(%peer, error = %e, "cannot bridge a TLS client to the local server");
            return;
        }
        Err(_) => return refuse(&admission, peer, "no hello within the handshake timeout"),
    };
    if wire::send_verdict(&mut tls, Ok(())).await.is_err() {
        return;
    }
    match pump(local, tls).await {
        Ok(()) => tracing::debug!(%peer, "TLS client gone"),
        Err(e) => tracing::debug!(%peer, error = %e, "TLS connection ended"),
    }
}

/// Why a client was not admitted.
enum Refusal {
    /// The client's fault: counted and logged.
    Client(String),
    /// Ours (the local server is gone or full): the client was told, not counted.
    Ours(IpcError),
}

/// The TLS handshake, the hello, the token check, then the local connection.
async fn admit(
    admission: &Admission,
    tcp: TcpStream,
) -> std::result::Result<(tokio_rustls::server::TlsStream<TcpStream>, SharedMemoryStream), Refusal> {
    let mut tls = admission
        .acceptor
        .accept(tcp)
        .await
        .map_err(|e| Refusal::Client(format!("TLS handshake failed: {e}")))?;
    let hello = wire::read_hello(&mut tls).await.map_err(|e| Refusal::Client(format!("no hello: {e}")))?;
    let verdict = match (hello, &admission.token) {
        (Err(why), _) => Err(why),
        (Ok(got), Some(want)) if !wire::same_token(&got, want) => {
            Err(if got.is_empty() { "a token is required" } else { "the token is not valid" }.to_owned())
        }
        (Ok(_), _) => Ok(()),
    };
    if let Err(why) = verdict {
        let _ = wire::send_verdict(&mut tls, Err(&why)).await;
        return Err(Refusal::Client(why));
    }
    let stream_config = admission.config.stream_config();
    match SharedMemoryStream::connect_with(&admission.name, &stream_config).await {
        Ok(mut local) => {
            // The bridge's end sleeps at once: a spin would take the CPU the TLS work needs.
            local.set_wait_strategy(crate::WaitStrategy::Blocking);
            Ok((tls, local))
        }
        Err(e) => {
            let _ = wire::send_verdict(&mut tls, Err(&format!("the server is not available: {e}"))).await;
            Err(Refusal::Ours(e))
        }
    }
}

/// Counts and logs a refused client.
fn refuse(admission: &Admission, peer: SocketAddr, why: &str) {
    admission.refused.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "metrics")]
    if let Some(m) = &admission.metrics {
        m.tls_refused.inc();
    }
    #[cfg(not(feature = "metrics"))]
    let _ = &admission.metrics;
    tracing::warn!(%peer, reason = why, "TLS client refused");
}
