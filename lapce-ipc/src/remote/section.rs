//! The `[tls]` section of the configuration: where a server listens and who may connect, what a
//! client trusts and how it proves itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{IpcError, Result};

/// The `[tls]` section (feature `tls`): every key optional, unknown keys refused. Paths name PEM
/// files. [`IpcConfig::to_toml_string`](crate::IpcConfig::to_toml_string) does not write it.
///
/// ```
/// use lapce_ipc::IpcConfig;
///
/// let mut config = IpcConfig::default();
/// // A client of `tls://server:7443` that pins the server's certificate and sends a token.
/// config.tls.pin = Some("server-cert.pem".into());
/// config.tls.token_file = Some("token".into());
/// assert!(config.tls.listen.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Server: where [`IpcServer::serve`](crate::IpcServer::serve) also listens,
    /// `tls://HOST:PORT` (e.g. `tls://0.0.0.0:7443`; port 0 lets the system choose). `None`:
    /// local clients only.
    pub listen: Option<String>,
    /// Server: its certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Server: the private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Server: accept only clients presenting a certificate signed by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
    /// Both: the shared token. A server with a token refuses clients that do not send it; a
    /// client sends it. Prefer `token_file`, which keeps it out of the configuration.
    pub token: Option<String>,
    /// Both: a file holding the token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// Client: trust server certificates signed by these CAs (PEM); the server's name (the
    /// host of the address, or `server_name`) must be in its certificate.
    pub ca: Option<PathBuf>,
    /// Client: trust exactly these server certificates (PEM), whatever their names and dates:
    /// the pin is the trust (for a self-signed server certificate).
    pub pin: Option<PathBuf>,
    /// Client: the certificate chain to present to a server that asks for one (PEM).
    pub client_cert: Option<PathBuf>,
    /// Client: the private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// Client: the name to check in the server's certificate with `ca`, instead of the host.
    pub server_name: Option<String>,
}

impl TlsSection {
    /// The token, from `token` or `token_file`; `None` when neither is set.
    pub fn token_bytes(&self) -> Result<Option<Vec<u8>>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().as_bytes().to_vec()));
        }
        let Some(path) = &self.token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| IpcError::InvalidArgument(format!("tls.token_file {}: {e}", path.display())))?;
        Ok(Some(text.trim().as_bytes().to_vec()))
    }
}
