//! Connecting and reconnecting an [`IpcClient`](super::IpcClient): the handshake, the
//! connection's housekeeping task, and reconnection in the background after a loss.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::super::calls::{Calls, SWEEPS_PER_TIMEOUT};
use super::super::greeted;
use super::super::inbound::Inbound;
use super::super::listen::listen;
use super::super::notify::Hub;
use super::super::outbound::{trim_when_idle, Outbound, Outbox};
use super::super::window;
use super::conn::Conn;
use crate::channel::Link;
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;

/// First pause between reconnection attempts; doubled up to [`RECONNECT_MAX_PAUSE`], so a
/// server that comes back is found within that much time.
pub(super) const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(2);
pub(super) const RECONNECT_MAX_PAUSE: Duration = Duration::from_millis(50);

pub(super) struct ClientInner {
    pub(super) name: String,
    pub(super) config: IpcConfig,
    /// The current connection, if any (it may have died since: see `Conn::is_alive`).
    pub(super) conn: Mutex<Option<Arc<Conn>>>,
    /// Held while (re)connecting, so that one task connects and the others wait for it.
    pub(super) connecting: tokio::sync::Mutex<()>,
    pub(super) reconnects: AtomicU64,
    /// Notifications, across connections.
    pub(super) hub: Arc<Hub>,
}

impl ClientInner {
    /// A client of `name`, not connected yet.
    pub(super) fn new(name: &str, config: IpcConfig) -> Arc<ClientInner> {
        Arc::new(ClientInner {
            name: name.to_string(),
            config,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            reconnects: AtomicU64::new(0),
            hub: Arc::default(),
        })
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.hub.close();
    }
}

pub(super) fn current(inner: &ClientInner) -> Option<Arc<Conn>> {
    let conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
    conn.as_ref().filter(|c| c.is_alive()).cloned()
}

pub(super) async fn connection(inner: &Arc<ClientInner>, deadline: Option<Instant>) -> Result<Arc<Conn>> {
    let mut pause = RECONNECT_FIRST_PAUSE;
    loop {
        if let Some(conn) = current(inner) {
            return Ok(conn);
        }
        let attempt = {
            let _one_at_a_time = inner.connecting.lock().await;
            if let Some(conn) = current(inner) {
                return Ok(conn);
            }
            establish(inner).await
        };
        match attempt {
            Ok(conn) => {
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                return Ok(conn);
            }
            // No server (yet), or it went away during the handshake: wait and try again.
            Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                if deadline.is_none_or(|d| Instant::now() + pause < d) =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
            }
            // The request's time ran out while the server was away.
            Err(IpcError::Connect { .. } | IpcError::PeerGone) => return Err(IpcError::Timeout),
            Err(e) => return Err(e),
        }
    }
}

/// Opens a connection: stream handshake, then the server's greeting, then the housekeeping task.
pub(super) async fn establish(inner: &Arc<ClientInner>) -> Result<Arc<Conn>> {
    let stream_config = inner.config.stream_config();
    // `tls://host:port` goes through the remote bridge; a local name connects directly.
    #[cfg(feature = "tls")]
    let stream = crate::remote::connect(&inner.name, &inner.config).await?;
    #[cfg(not(feature = "tls"))]
    let stream = crate::SharedMemoryStream::connect_with(&inner.name, &stream_config).await?;
    let max_message = inner.config.ipc.max_message_size;
    let (tx, rx) = stream.into_halves();
    let link = rx.link_handle();
    let mut inbound = Inbound::new(rx, max_message);
    tokio::time::timeout(stream_config.handshake_timeout, greeting(&mut inbound))
        .await
        .map_err(|_| IpcError::Timeout)??;
    let outbox = Outbox::new(Outbound::new(tx, max_message), None);
    if let Some(size) = window::configured(&inner.config) {
        // The first frame: it applies to every stream requested after it.
        outbox.send(MessageType::StreamWindow, 0, &window::encode(size)).await?;
    }
    let conn = Arc::new(Conn {
        calls: Calls::new(inbound, inner.hub.clone()),
        outbox,
        link: link.clone(),
        alive: AtomicBool::new(true),
        housekeeper: Mutex::new(None),
    });
    let sweep_every = inner.config.request_timeout().map(|t| t / SWEEPS_PER_TIMEOUT);
    let task =
        keep_house(Arc::downgrade(&conn), link, Arc::downgrade(inner), sweep_every, inner.config.idle_trim());
    let handle = tokio::spawn(task).abort_handle();
    *conn.housekeeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    if inner.hub.is_subscribed() {
        start_listener(&conn, &inner.hub);
    }
    Ok(conn)
}

/// Starts the listener of `conn` (once), on the current runtime.
pub(super) fn start_listener(conn: &Arc<Conn>, hub: &Arc<Hub>) {
    if conn.calls.start_listening() {
        tokio::spawn(listen(Arc::downgrade(conn), |c: &Conn| &c.calls, hub.clone()));
    }
}

/// Reads the server's greeting: `ready`, or its refusal.
async fn greeting(inbound: &mut Inbound) -> Result<()> {
    loop {
        if let Some(outcome) = inbound.try_next(|msg, _| greeted(&msg))? {
            return outcome;
        }
        inbound.rx().readable_async().await?;
    }
}

/// A connection's housekeeping, off every request's path: notices the peer's hang-up while no
/// request waits (and reconnects in the background), fails requests over the default timeout,
/// and gives the outgoing ring's pages back when it stays idle. Holds the connection weakly.
async fn keep_house(
    conn: Weak<Conn>,
    link: Arc<Link>,
    client: Weak<ClientInner>,
    sweep_every: Option<Duration>,
    trim_after: Option<Duration>,
) {
    let hang_up = async {
        if let Err(e) = link.hung_up().await {
            // (Out of descriptors, say.) The requests still notice a hang-up when they read.
            tracing::debug!(error = %e, "cannot watch the connection for a hang-up");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = hang_up => {}
        () = sweep(conn.clone(), sweep_every) => return,
        () = trim_when_idle(conn.clone(), trim_after, |c: &Conn| &c.outbox) => return,
    }
    if let Some(conn) = conn.upgrade() {
        conn.alive.store(false, Ordering::Release);
    }
    drop(link);
    if client.strong_count() > 0 {
        reconnect_in_background(client).await;
    }
}

/// The sweeper: every `period` while requests wait, fails those over the default timeout with
/// [`IpcError::Timeout`] and cancels them on the server. Never returns while the connection
/// lives (returns at once without a period).
async fn sweep(conn: Weak<Conn>, period: Option<Duration>) {
    let Some(period) = period else { return std::future::pending().await };
    // Waits hold no strong reference: the connection goes when its last user does.
    let Some(first_call) = conn.upgrade().map(|c| c.calls.first_call_signal()) else { return };
    loop {
        match conn.upgrade() {
            Some(c) if c.calls.is_empty() => {
                drop(c);
                first_call.notified().await;
            }
            Some(_) => {}
            None => return,
        }
        tokio::time::sleep(period).await;
        let Some(c) = conn.upgrade() else { return };
        let mut expired = Vec::new();
        c.calls.sweep(|id| expired.push(id));
        for id in expired {
            c.cancel(id);
        }
    }
}

/// Reconnects as soon as the server is back, for as long as the client exists.
fn reconnect_in_background(client: Weak<ClientInner>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut pause = RECONNECT_FIRST_PAUSE;
        loop {
            let Some(inner) = client.upgrade() else { return };
            match connection(&inner, Some(Instant::now())).await {
                Ok(_) => return,
                Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout) => {}
                Err(e) => tracing::debug!(error = %e, "reconnecting failed"),
            }
            drop(inner);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
        }
    })
}
