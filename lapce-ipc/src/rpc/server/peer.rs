//! [`Peer`]: a handle on one client connection, to push notifications to it.
//!
//! A notification is a frame of an application message type with id 0 (docs/PROTOCOL.md §7):
//! request ids are never 0, so it answers no request, and a client that does not listen drops
//! it. The handle holds its connection weakly: keeping one (in a list of subscribers, say) does
//! not keep a closed connection's memory.

use std::sync::{Arc, Weak};

use super::super::notify::is_notification_type;
use super::connection::Connection;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;

/// A client connection of an [`IpcServer`](crate::IpcServer), for server-to-client
/// notifications. Cheap to clone (a weak reference and two numbers), `Send + Sync`; obtained
/// from [`IpcServer::on_connect`](crate::IpcServer::on_connect) or
/// [`IpcServer::peers`](crate::IpcServer::peers).
#[derive(Clone)]
pub struct Peer {
    id: u64,
    pid: u32,
    conn: Weak<Connection>,
    max_message: usize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("id", &self.id).field("pid", &self.pid).finish()
    }
}

impl Peer {
    pub(super) fn new(id: u64, pid: u32, conn: &Arc<Connection>, max_message: usize) -> Peer {
        Peer { id, pid, conn: Arc::downgrade(conn), max_message }
    }

    /// The connection's number on this server (1, 2, ...; as in the `ipc_connection` span).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client's process id, as the OS reported it at the handshake.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.conn.upgrade().is_some_and(|c| !c.is_closed())
    }

    /// Sends a notification of type `kind`, waiting for room in the client's ring (a client
    /// that listens reads it promptly; one that does not takes it in with its next answer, so
    /// this may wait that long: use [`try_notify`](Self::try_notify) not to wait). Errors:
    /// [`IpcError::PeerGone`] once the connection is closed, [`IpcError::InvalidArgument`]
    /// for a type the protocol uses itself (Heartbeat, Control, Response, Error, StreamChunk,
    /// StreamEnd, StreamWindow, Cancel),
    /// [`IpcError::MessageTooLarge`] over the configured message limit.
    pub async fn notify(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<()> {
        let conn = self.checked(kind, payload.as_ref().len())?;
        conn.outbox.send(kind, 0, payload.as_ref()).await?;
        conn.count_sent(payload.as_ref().len());
        Ok(())
    }

    /// Sends a notification if the client's ring has room now (and nobody else is writing to
    /// it): `Ok(false)`, nothing sent, otherwise. Errors as [`notify`](Self::notify).
    pub fn try_notify(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<bool> {
        let conn = self.checked(kind, payload.as_ref().len())?;
        let sent = conn.outbox.try_send(kind, 0, payload.as_ref());
        if sent {
            conn.count_sent(payload.as_ref().len());
        }
        Ok(sent)
    }

    /// The connection, if a notification of `kind` and `len` bytes may go to it.
    fn checked(&self, kind: MessageType, len: usize) -> Result<Arc<Connection>> {
        if !is_notification_type(kind) {
            return Err(IpcError::InvalidArgument(format!("{kind:?} cannot be a notification's type")));
        }
        if len > self.max_message {
            return Err(IpcError::MessageTooLarge { len, max: self.max_message });
        }
        self.conn.upgrade().filter(|c| !c.is_closed()).ok_or(IpcError::PeerGone)
    }
}
