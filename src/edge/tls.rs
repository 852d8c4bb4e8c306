//! TLS termination on the proxy's TLS listener: the certificate for each handshake, picked by
//! SNI from the `CertificateStore` (which reloads swap), TLS 1.2 and 1.3 only, ALPN `h2`
//! (preferred) and `http/1.1`.
//!
//! Pingora's provider is OpenSSL (vendored and linked statically): it is the one whose
//! certificate callback is asynchronous and per handshake, so the set can change under a
//! running listener, and it also does client certificates towards backends.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, ALPN};
use pingora::tls::error::ErrorStack;
use pingora::tls::ext;
use pingora::tls::ssl::{NameType, SslRef, SslVersion};

use crate::certificates::CertificateStore;
use crate::config::ServedCertificate;

/// The TLS settings of the proxy's TLS listener, serving the certificates in `store`.
pub(crate) fn tls_settings(store: Arc<CertificateStore>) -> pingora::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(Box::new(SniCertificates(store)))?;
    settings
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "TLS 1.2", e))?;
    settings.set_alpn(ALPN::H2H1);
    Ok(settings)
}

/// Hands each handshake the certificate its SNI asks for.
struct SniCertificates(Arc<CertificateStore>);

#[async_trait]
impl TlsAccept for SniCertificates {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let name = ssl
            .servername(NameType::HOST_NAME)
            .map(str::to_ascii_lowercase);
        let certificate = self.0.pick(name.as_deref());
        if let Err(e) = use_certificate(ssl, &certificate) {
            // The handshake fails without a certificate; the client sees an alert.
            log::error!(
                "TLS: could not use {} for a handshake: {e}",
                certificate.files.cert.display()
            );
        }
    }
}

fn use_certificate(ssl: &mut SslRef, certificate: &ServedCertificate) -> Result<(), ErrorStack> {
    let (leaf, intermediates) = certificate
        .chain
        .split_first()
        .expect("a loaded chain has a certificate");
    ext::ssl_use_certificate(ssl, leaf)?;
    for intermediate in intermediates {
        ext::ssl_add_chain_cert(ssl, intermediate)?;
    }
    ext::ssl_use_private_key(ssl, &certificate.key)
}
