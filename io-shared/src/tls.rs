//! The rustls client configuration for token requests.
//!
//! Certificates are always verified (S34); the only choice is which roots to trust. The
//! crypto provider is named explicitly (ring) rather than taken from the process default,
//! which panics when a build ends up with two providers enabled.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};
use rustls::{ClientConfig, RootCertStore};

/// The certificate authorities a client trusts.
#[derive(Clone, Default)]
pub enum Roots {
    /// Mozilla's root certificates, as compiled in by `webpki-roots`. The default.
    #[default]
    WebPki,
    /// These CA certificates (PEM, one or more `CERTIFICATE` sections) instead: a company
    /// CA, or a test CA.
    Pem(Vec<u8>),
    /// Mozilla's root certificates and these (PEM) as well: a company CA that signs some
    /// hosts (an internal identity provider, or a TLS-inspecting proxy) while the rest of
    /// the web keeps its public roots.
    WebPkiAnd(Vec<u8>),
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::WebPki => f.write_str("WebPki"),
            // The certificates are public, but pages of base64 help nobody reading a log.
            Roots::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
            Roots::WebPkiAnd(pem) => write!(f, "WebPkiAnd({} bytes)", pem.len()),
        }
    }
}

/// Why a client configuration could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM data is malformed.
    BadPem(pem::Error),
    /// The PEM data holds no `CERTIFICATE` section.
    NoCertificates,
    /// rustls refused a certificate or the configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::BadPem(error) => write!(f, "malformed PEM CA certificates: {error}"),
            TlsError::NoCertificates => f.write_str("no CERTIFICATE in the PEM CA certificates"),
            TlsError::Rustls(error) => write!(f, "TLS configuration: {error}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::BadPem(error) => Some(error),
            TlsError::NoCertificates => None,
            TlsError::Rustls(error) => Some(error),
        }
    }
}

/// A client configuration trusting `roots`: ring as the crypto provider, TLS 1.2 and 1.3,
/// certificate verification on, no client certificate, ALPN `http/1.1` (the token client
/// speaks nothing else).
///
/// # Errors
///
/// A [`TlsError`] if [`Roots::Pem`] holds malformed PEM, no certificate, or a certificate
/// rustls does not accept as a trust anchor.
pub fn client_config(roots: &Roots) -> Result<Arc<ClientConfig>, TlsError> {
    let store = match roots {
        Roots::WebPki => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::Pem(pem) => with_pem(RootCertStore::empty(), pem)?,
        Roots::WebPkiAnd(pem) => with_pem(
            RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            pem,
        )?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `store` with the certificates of `pem` added; at least one is required.
fn with_pem(mut store: RootCertStore, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let before = store.len();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        store
            .add(certificate.map_err(TlsError::BadPem)?)
            .map_err(TlsError::Rustls)?;
    }
    if store.len() == before {
        return Err(TlsError::NoCertificates);
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_roots_build_a_config() {
        let config = client_config(&Roots::WebPki).expect("config");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        for pem in [
            &b""[..],
            b"not pem at all",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(matches!(
                client_config(&Roots::Pem(pem.to_vec())),
                Err(TlsError::NoCertificates)
            ));
            assert!(matches!(
                client_config(&Roots::WebPkiAnd(pem.to_vec())),
                Err(TlsError::NoCertificates)
            ));
        }
    }

    #[test]
    fn malformed_pem_is_bad_pem() {
        let pem = b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        let error = client_config(&Roots::Pem(pem.to_vec())).expect_err("malformed");
        assert!(matches!(error, TlsError::BadPem(_)), "{error:?}");
    }

    #[test]
    fn a_certificate_that_is_not_der_is_refused_by_rustls() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = client_config(&Roots::Pem(pem.to_vec())).expect_err("not a certificate");
        assert!(matches!(error, TlsError::Rustls(_)), "{error:?}");
    }

    #[test]
    fn debug_of_pem_roots_shows_the_size_only() {
        assert_eq!(format!("{:?}", Roots::Pem(vec![b'x'; 10])), "Pem(10 bytes)");
    }
}
