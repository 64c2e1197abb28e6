//! A connected pair of local connections, both ends in this process: the client side of the
//! bridge hands one end to the client code and pumps the other to the socket.
//!
//! Made with the public parts (a listener of its own, bound for the moment of one handshake,
//! with no warm segment), so the rings, doorbells and hang-up watch are exactly a local
//! connection's on every platform. It costs a bind and a handshake per connection (well under
//! a TCP and TLS handshake); the listener and its socket file are gone once the pair is made.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::IpcConfig;
use crate::error::Result;
use crate::{SharedMemoryListener, SharedMemoryStream, StreamConfig, WaitStrategy};

/// Pairs made so far in this process (each gets a listener name of its own).
static PAIRS: AtomicU64 = AtomicU64::new(0);

/// The configuration of both ends: `config`'s rings, in the private runtime directory, with no
/// warm segment and one slot. Their waits sleep at once: an answer over TCP takes tens of
/// microseconds, so a spin would only take the CPU the pump and the TLS work need.
pub(crate) fn pair_config(config: &IpcConfig) -> StreamConfig {
    StreamConfig {
        wait: WaitStrategy::Blocking,
        warm_pool: 0,
        max_slots: 1,
        socket_dir: None,
        allowed_peer_uids: Vec::new(),
        ..config.stream_config()
    }
}

/// A listener for one end of a pair, and its name (the other end connects to it).
pub(crate) fn pair_listener(config: &StreamConfig) -> Result<(SharedMemoryListener, String)> {
    let n = PAIRS.fetch_add(1, Ordering::Relaxed);
    let name = format!("tls-bridge-{}-{n}", std::process::id());
    Ok((SharedMemoryListener::bind_with(&name, config.clone())?, name))
}

/// Two connected streams with the rings `config` asks for: (the near end, the far end).
pub(crate) async fn ring_pair(config: &IpcConfig) -> Result<(SharedMemoryStream, SharedMemoryStream)> {
    let config = pair_config(config);
    let (listener, name) = pair_listener(&config)?;
    let (near, far) = tokio::try_join!(SharedMemoryStream::connect_with(&name, &config), listener.accept())?;
    Ok((near, far))
}
