//! ID token signature verification on `ring`, the library rustls already brings in.

use std::sync::{Arc, OnceLock};

use latchkey::oidc::{Algorithm, CryptoProvider, PublicKey, SignatureError};
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};

/// The `ring` verifier, shared: what the drivers give every provider that verifies ID
/// tokens.
pub fn ring() -> Arc<dyn CryptoProvider> {
    static RING: OnceLock<Arc<dyn CryptoProvider>> = OnceLock::new();
    RING.get_or_init(|| Arc::new(Ring)).clone()
}

/// [`CryptoProvider`] on `ring`: RS256/384/512 and PS256/384/512 with 2048- to 8192-bit
/// keys, ES256 and ES384 with fixed-length (`r || s`) signatures, and Ed25519.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ring;

impl CryptoProvider for Ring {
    fn verify(
        &self,
        algorithm: Algorithm,
        key: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let verified = match (key, rsa_parameters(algorithm)) {
            (PublicKey::Rsa { n, e }, Some(parameters)) => {
                RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
            (PublicKey::Ec { .. }, None) => {
                let parameters = match algorithm {
                    Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return Err(SignatureError::Unsupported),
                };
                let point = key.sec1_uncompressed().unwrap_or_default();
                UnparsedPublicKey::new(parameters, point).verify(message, signature)
            }
            (PublicKey::Ed25519(x), None) if algorithm == Algorithm::EdDSA => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(message, signature)
            }
            _ => return Err(SignatureError::Unsupported),
        };
        verified.map_err(|_| SignatureError::Invalid)
    }
}

fn rsa_parameters(algorithm: Algorithm) -> Option<&'static RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}
