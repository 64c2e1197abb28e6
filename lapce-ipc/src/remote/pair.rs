//! A connected pair of local connections, both ends in this process: the client side of the
//! bridge hands one end to the client code and pumps the other to the socket.
//!
//! Made with the public parts (a listener of its own, bound for the moment of one handshake,
//! with no warm segment), so the rings, doorbells and hang-up watch are exactly a local
//! connection's on every platform. It costs a bind and a handshake per connection (well under
//! a TCP and TLS handshake); the listener and its socket file are gone when this returns.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::IpcConfig;
use crate::error::Result;
use crate::{AsyncSharedMemoryListener, AsyncSharedMemoryStream, StreamConfig};

/// Pairs made so far in this process (each gets a listener name of its own).
static PAIRS: AtomicU64 = AtomicU64::new(0);

/// Two connected streams with the rings `config` asks for: (the near end, the far end).
pub(crate) async fn ring_pair(
    config: &IpcConfig,
) -> Result<(AsyncSharedMemoryStream, AsyncSharedMemoryStream)> {
    let n = PAIRS.fetch_add(1, Ordering::Relaxed);
    let name = format!("tls-bridge-{}-{n}", std::process::id());
    let stream_config = StreamConfig {
        warm_pool: 0,
        max_slots: 1,
        socket_dir: None,
        allowed_peer_uids: Vec::new(),
        ..config.stream_config()
    };
    let listener = AsyncSharedMemoryListener::bind_with(&name, stream_config.clone())?;
    let (near, far) =
        tokio::try_join!(AsyncSharedMemoryStream::connect_with(&name, &stream_config), listener.accept())?;
    Ok((near, far))
}
