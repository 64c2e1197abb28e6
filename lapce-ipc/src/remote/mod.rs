//! The same [`IpcServer`](crate::IpcServer) and [`IpcClient`](crate::IpcClient) across machines:
//! over TCP with TLS (rustls), feature `tls`.
//!
//! A server listens with [`IpcServer::listen_tls`](crate::IpcServer::listen_tls) (or the
//! `[tls] listen` key, read by [`serve`](crate::IpcServer::serve)); a client names
//! `tls://HOST:PORT` where it would name a local server, in [`IpcClient::connect`] and the rest
//! ([`BlockingIpcClient`](crate::BlockingIpcClient) too: its bridge runs on a thread of its
//! own), and reconnects as it does locally.
//!
//! How it works: a bridge. Each remote connection is pumped, message by message, between the
//! TLS socket and an ordinary local connection: on the server, a connection to the server's own
//! listener, so that the frames, handlers, streaming, limits and metrics are those of local
//! clients, with nothing added to their path; on the client, one end of a ring pair made in
//! the process, whose other end the client code uses as it uses a local connection. The cost is
//! one more ring hop each way (about a microsecond), small against TLS and TCP.
//!
//! Who may connect: the server presents its certificate, which the client pins
//! ([`TlsSection::pin`]) or checks against a CA ([`TlsSection::ca`]); the client then proves
//! itself with a shared token ([`TlsSection::token`]), a client certificate the server's
//! [`client_ca`](TlsSection::client_ca) signed, or both, as the server requires (it requires at
//! least one). Everyone else is refused before any frame reaches the server code, counted
//! ([`TlsEndpoint::refused`], the metric `lapce_ipc_tls_refused_total`) and logged at warn.
//! There is no plaintext TCP listener.
//!
//! A remote client fragments large frames by its own ring, not by one the server offers as a
//! local client's is: keep its `ring_size` no larger than the server's (the defaults agree).
//!
//! On the wire (docs/PROTOCOL.md, "TCP transport"): after the TLS handshake the client sends
//! its hello (magic, protocol version, token), the server answers with its verdict, then each
//! ring message travels as a 4-byte little-endian length and the message's bytes.
//!
//! [`IpcClient::connect`]: crate::IpcClient::connect

mod certs;
mod dial;
mod listen;
mod pair;
mod pump;
mod section;
mod wire;

pub use listen::TlsEndpoint;
pub use section::TlsSection;

pub(crate) use dial::{connect, connect_blocking};
pub(crate) use listen::listen_configured;

/// The scheme of a remote address: `tls://HOST:PORT`.
pub const TLS_SCHEME: &str = "tls://";

/// `addr` without its `tls://` scheme, if it is a remote address.
pub fn remote_address(addr: &str) -> Option<&str> {
    addr.strip_prefix(TLS_SCHEME)
}
