//! The TLS options of `serve` (`--listen tls://HOST:PORT` and its certificate and token) and of
//! `call` (`call tls://HOST:PORT` with `--pin`/`--ca` and `--token`).

use std::path::{Path, PathBuf};

use clap::Args;
use lapce_ipc::remote::{remote_address, TlsEndpoint};
use lapce_ipc::{IpcConfig, IpcError, IpcServer};

/// `serve`'s TLS listener.
#[derive(Debug, Args)]
pub struct ServeTls {
    /// Also serve remote clients over TCP with TLS, e.g. tls://127.0.0.1:7443.
    ///
    /// Port 0 picks a free port (printed). Needs --cert and --key (or --self-signed), and
    /// --token-file or --client-ca: everyone else is refused, counted and logged.
    #[arg(long, value_name = "tls://HOST:PORT")]
    pub listen: Option<String>,
    /// The server's certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires = "listen")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "PEM", requires = "listen")]
    pub key: Option<PathBuf>,
    /// Make a self-signed certificate, written to --cert and --key.
    ///
    /// For the --listen host and localhost; clients pin it (`call --pin CERT`).
    #[arg(long, requires_all = ["listen", "cert", "key"])]
    pub self_signed: bool,
    /// A file holding the token remote clients must send (`call --token-file`).
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub token_file: Option<PathBuf>,
    /// Admit only clients presenting a certificate signed by this CA (PEM).
    #[arg(long, value_name = "PEM", requires = "listen")]
    pub client_ca: Option<PathBuf>,
}

/// `call`'s trust in a `tls://` server and its credentials.
#[derive(Debug, Args)]
pub struct CallTls {
    /// tls:// only: trust exactly this server certificate (PEM).
    ///
    /// For example the one `serve --self-signed` wrote. A server presenting any other
    /// certificate is refused before anything is sent.
    #[arg(long, value_name = "PEM")]
    pub pin: Option<PathBuf>,
    /// tls:// only: trust server certificates this CA signed (PEM).
    ///
    /// The server's name in the address must match its certificate.
    #[arg(long, value_name = "PEM", conflicts_with = "pin")]
    pub ca: Option<PathBuf>,
    /// tls:// only: the token the server requires.
    ///
    /// Visible to other users in the process list: prefer --token-file.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// tls:// only: a file holding the token.
    ///
    /// Its contents less surrounding whitespace, as `serve --token-file` reads it.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// tls:// only: the client certificate to present (PEM).
    ///
    /// For a server started with --client-ca; with --client-key.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// tls:// only: the private key of --client-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl CallTls {
    /// Puts the options given into `config`'s `[tls]` section.
    pub fn apply(&self, config: &mut IpcConfig) {
        let tls = &mut config.tls;
        let set = |slot: &mut Option<PathBuf>, value: &Option<PathBuf>| {
            if value.is_some() {
                slot.clone_from(value);
            }
        };
        set(&mut tls.pin, &self.pin);
        set(&mut tls.ca, &self.ca);
        set(&mut tls.token_file, &self.token_file);
        set(&mut tls.client_cert, &self.client_cert);
        set(&mut tls.client_key, &self.client_key);
        if self.token.is_some() {
            tls.token.clone_from(&self.token);
        }
    }
}

impl ServeTls {
    /// Puts the options given into `config` (a --listen replaces the configuration's `listen`,
    /// which `serve` starts itself, so as to print the address), making the certificate first
    /// with --self-signed.
    pub fn apply(&self, config: &mut IpcConfig) -> Result<(), IpcError> {
        if self.listen.is_none() {
            return Ok(());
        }
        config.tls.listen = None;
        if self.self_signed {
            let (cert, key) = (self.cert.as_deref().expect("clap"), self.key.as_deref().expect("clap"));
            self_signed(self.listen.as_deref().expect("checked"), cert, key)?;
        }
        let tls = &mut config.tls;
        for (slot, value) in [
            (&mut tls.cert, &self.cert),
            (&mut tls.key, &self.key),
            (&mut tls.token_file, &self.token_file),
            (&mut tls.client_ca, &self.client_ca),
        ] {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        Ok(())
    }

    /// Starts the --listen endpoint, if any, and says where it is.
    pub async fn listen(&self, server: &IpcServer) -> Result<Option<TlsEndpoint>, IpcError> {
        let Some(addr) = &self.listen else { return Ok(None) };
        let endpoint = server.listen_tls(addr).await?;
        eprintln!("lapce-ipc serve: TLS clients at tls://{}", endpoint.local_addr());
        if let (true, Some(cert)) = (self.self_signed, &self.cert) {
            eprintln!("lapce-ipc serve: clients pin the certificate: call --pin {}", cert.display());
        }
        Ok(Some(endpoint))
    }
}

/// Writes a self-signed certificate for the host of `listen` (and localhost) and its key (mode
/// 0600 on Unix).
fn self_signed(listen: &str, cert: &Path, key: &Path) -> Result<(), IpcError> {
    let bare = remote_address(listen).unwrap_or(listen);
    let host = bare.rsplit_once(':').map_or(bare, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let mut names = vec!["localhost".to_owned()];
    if host != "localhost" {
        names.push(host.to_owned());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| IpcError::InvalidArgument(format!("--self-signed: {e}")))?;
    std::fs::write(cert, made.cert.pem())?;
    write_private(key, made.signing_key.serialize_pem().as_bytes())?;
    Ok(())
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
