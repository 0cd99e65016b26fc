//! Signatures and randomness on `ring`, the library rustls already brings in: ID token
//! verification, client assertions and DPoP proofs.

use std::sync::{Arc, OnceLock};

use latchkey::crypto::{Algorithm, CryptoProvider, Curve, PublicKey, SignatureError, SigningKey};
use latchkey::keys::PrivateKey;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaParameters, RsaPublicKeyComponents,
    UnparsedPublicKey,
};

/// The `ring` verifier, shared: what the drivers give every provider that verifies ID
/// tokens.
pub fn ring() -> Arc<dyn CryptoProvider> {
    static RING: OnceLock<Arc<dyn CryptoProvider>> = OnceLock::new();
    RING.get_or_init(|| Arc::new(Ring)).clone()
}

/// [`CryptoProvider`] on `ring`: RS256/384/512 and PS256/384/512 with 2048- to 8192-bit
/// keys (signing: 2048 to 4096 bits), ES256 and ES384 with fixed-length (`r || s`)
/// signatures, and Ed25519; new ES256, ES384 and Ed25519 key pairs and random bytes from the
/// operating system's generator.
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

    fn signing_key(&self, key: &PrivateKey) -> Result<Arc<dyn SigningKey>, SignatureError> {
        let der = key.pkcs8_der();
        let refused = |_| SignatureError::Invalid;
        let (pair, public) = match key.algorithm() {
            Algorithm::ES256 | Algorithm::ES384 => {
                let (signing, curve) = match key.algorithm() {
                    Algorithm::ES256 => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, Curve::P256),
                    _ => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, Curve::P384),
                };
                let pair = EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
                    .map_err(refused)?;
                // The public key is the SEC 1 uncompressed point, 04 || x || y.
                let point = pair.public_key().as_ref();
                let (x, y) = point[1..].split_at(curve.coordinate_len());
                let public = PublicKey::Ec {
                    curve,
                    x: x.to_vec(),
                    y: y.to_vec(),
                };
                (Pair::Ecdsa(pair), public)
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(refused)?;
                let public = <[u8; 32]>::try_from(pair.public_key().as_ref())
                    .map_err(|_| SignatureError::Invalid)?;
                (Pair::Ed25519(pair), PublicKey::Ed25519(public))
            }
            algorithm => {
                let encoding = rsa_encoding(algorithm).ok_or(SignatureError::Unsupported)?;
                let pair = RsaKeyPair::from_pkcs8(der).map_err(refused)?;
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                let public = PublicKey::Rsa {
                    n: components.n,
                    e: components.e,
                };
                (Pair::Rsa(pair, encoding), public)
            }
        };
        Ok(Arc::new(RingKey {
            pair,
            public,
            algorithm: key.algorithm(),
        }))
    }

    fn generate_key(&self, algorithm: Algorithm) -> Result<Vec<u8>, SignatureError> {
        let random = SystemRandom::new();
        let document = match algorithm {
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            }
            Algorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &random)
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&random),
            _ => return Err(SignatureError::Unsupported),
        };
        document
            .map(|document| document.as_ref().to_vec())
            .map_err(|_| SignatureError::Unsupported)
    }

    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), SignatureError> {
        SystemRandom::new()
            .fill(bytes)
            .map_err(|_| SignatureError::Unsupported)
    }
}

/// A key `ring` loaded.
struct RingKey {
    pair: Pair,
    public: PublicKey,
    algorithm: Algorithm,
}

enum Pair {
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// The key itself stays out of logs: only its algorithm and public half are shown.
impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey")
            .field("algorithm", &self.algorithm)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey for RingKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let random = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(pair, encoding) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &random, message, &mut signature)
                    .map_err(|_| SignatureError::Unsupported)?;
                Ok(signature)
            }
            Pair::Ecdsa(pair) => pair
                .sign(&random, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| SignatureError::Unsupported),
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

fn rsa_encoding(algorithm: Algorithm) -> Option<&'static dyn signature::RsaEncoding> {
    Some(match algorithm {
        Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_SHA512,
        _ => return None,
    })
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
