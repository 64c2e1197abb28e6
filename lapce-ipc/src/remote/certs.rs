//! The rustls configurations of both sides, from the `[tls]` section: PEM files loaded, the
//! server's client verification, the client's trust (a CA, or pinned certificates).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::TlsSection;
use crate::error::{IpcError, Result};

/// The one crypto provider: ring (aws-lc-rs needs cmake and a C toolchain on every target).
/// rustls marks it deprecated for want of post-quantum key exchange; the classical suites it
/// offers are what both ends of this bridge speak.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: &str, path: &Path, e: impl std::fmt::Display) -> IpcError {
    IpcError::InvalidArgument(format!("tls.{what} {}: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(what, path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(what, path, e))?;
    if certs.is_empty() {
        return Err(bad(what, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad(what, path, e))
}

/// `key` of the section, or an error naming it.
fn required<'a, T>(value: &'a Option<T>, what: &str, side: &str) -> Result<&'a T> {
    value.as_ref().ok_or_else(|| IpcError::InvalidArgument(format!("a TLS {side} needs tls.{what}")))
}

/// The server's configuration: its certificate, and client certificates required when
/// `client_ca` is set.
pub(crate) fn server_config(tls: &TlsSection) -> Result<Arc<ServerConfig>> {
    let chain = certs("cert", required(&tls.cert, "cert", "server")?)?;
    let key = key("key", required(&tls.key, "key", "server")?)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| IpcError::InvalidArgument(format!("TLS: {e}")))?;
    let builder = match &tls.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("client_ca", path)? {
                roots.add(cert).map_err(|e| bad("client_ca", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| bad("client_ca", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config =
        builder.with_single_cert(chain, key).map_err(|e| IpcError::InvalidArgument(format!("TLS: {e}")))?;
    Ok(Arc::new(config))
}

/// The client's configuration: trust from `pin` or `ca`, and its certificate if it has one.
pub(crate) fn client_config(tls: &TlsSection) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| IpcError::InvalidArgument(format!("TLS: {e}")))?;
    let builder = match (&tls.pin, &tls.ca) {
        (Some(pin), _) => builder.dangerous().with_custom_certificate_verifier(Arc::new(Pinned {
            certs: certs("pin", pin)?,
            provider: provider(),
        })),
        (None, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("ca", ca)? {
                roots.add(cert).map_err(|e| bad("ca", ca, e))?;
            }
            builder.with_root_certificates(roots)
        }
        (None, None) => {
            return Err(IpcError::InvalidArgument(
                "a TLS client needs tls.pin (the server's certificate) or tls.ca to trust the server".into(),
            ))
        }
    };
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(k)) => builder
            .with_client_auth_cert(certs("client_cert", cert)?, key("client_key", k)?)
            .map_err(|e| IpcError::InvalidArgument(format!("TLS client certificate: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(IpcError::InvalidArgument("tls.client_cert and tls.client_key go together".into())),
    };
    Ok(Arc::new(config))
}

/// Trusts exactly the pinned certificates: the server's leaf must be one of them, byte for byte,
/// and its handshake signature must verify with that certificate's key. Names and dates are not
/// checked: the pin is the trust.
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// What a client reports for a failed TLS exchange with `addr`: an untrusted server certificate
/// or a refusal by the server said plainly; a connection lost on the way as [`IpcError::PeerGone`].
pub(crate) fn client_error(addr: &str, e: std::io::Error) -> IpcError {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => IpcError::Handshake(format!(
            "TLS to {addr}: the server's certificate is not trusted ({why:?}): pin it (tls.pin) or \
             name the CA that signed it (tls.ca)"
        )),
        Some(rustls::Error::AlertReceived(alert)) => IpcError::ServerRefused(format!(
            "TLS to {addr}: the server refused the handshake ({alert:?}): it requires a client \
             certificate it trusts (tls.client_cert), or this one is unknown to it"
        )),
        Some(other) => IpcError::Handshake(format!("TLS to {addr}: {other}")),
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        ) =>
        {
            IpcError::PeerGone
        }
        None => IpcError::Io(e),
    }
}
