//! The crypto interface, as rustls takes a `CryptoProvider`: latchkey decides *which* key
//! and algorithm may check a token, what a client assertion or DPoP proof says and when one
//! is made; a [`CryptoProvider`] does the arithmetic and supplies the randomness.
//!
//! `latchkey-io` ships one on `ring` (`latchkey_io::crypto::ring()`).

use std::fmt;
use std::sync::Arc;

use crate::keys::PrivateKey;

/// A JWS signature algorithm latchkey accepts for ID tokens (RFC 7518 §3, RFC 8037 §3.1).
///
/// `none` and the HMAC algorithms (`HS256`, …) are deliberately absent: an ID token signed
/// with no key, or with a key the client also holds, proves nothing about who issued it
/// (S46).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256; the signature is `r || s`, 64 bytes.
    ES256,
    /// ECDSA on P-384 with SHA-384; the signature is `r || s`, 96 bytes.
    ES384,
    /// EdDSA; latchkey accepts it with Ed25519 keys only.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order of this enum.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The algorithm named `name` in a JOSE header or a discovery document (exact,
    /// case-sensitive, RFC 7515 §4.1.1); `None` for `none`, HMAC and anything unknown.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
    }

    /// The JOSE name, such as `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The key type a key needs to check this algorithm.
    pub(crate) fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::Ec(Curve::P256),
            Algorithm::ES384 => KeyKind::Ec(Curve::P384),
            Algorithm::EdDSA => KeyKind::Ed25519,
        }
    }

    /// The hash of `at_hash` (OpenID Connect Core §3.1.3.6): the algorithm's own, SHA-512
    /// for Ed25519.
    pub(crate) fn hash_bits(self) -> u16 {
        match self {
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => 256,
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => 384,
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => 512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An elliptic curve of an `EC` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Curve {
    /// NIST P-256 (`crv: "P-256"`), 32-byte coordinates.
    P256,
    /// NIST P-384 (`crv: "P-384"`), 48-byte coordinates.
    P384,
}

impl Curve {
    /// The length of one coordinate, in bytes.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            _ => None,
        }
    }
}

/// What kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    Ec(Curve),
    Ed25519,
}

/// A public key from a key set, already checked for shape: an RSA modulus of 2048 to 8192
/// bits, EC coordinates of exactly the curve's length, a 32-byte Ed25519 key.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA key (`kty: "RSA"`).
    Rsa {
        /// The modulus, big-endian, without leading zero bytes.
        n: Vec<u8>,
        /// The public exponent, big-endian, without leading zero bytes.
        e: Vec<u8>,
    },
    /// An elliptic-curve key (`kty: "EC"`).
    Ec {
        /// The curve.
        curve: Curve,
        /// The x coordinate, big-endian, exactly [`Curve::coordinate_len`] bytes.
        x: Vec<u8>,
        /// The y coordinate, big-endian, exactly [`Curve::coordinate_len`] bytes.
        y: Vec<u8>,
    },
    /// An Ed25519 key (`kty: "OKP"`, `crv: "Ed25519"`, RFC 8037).
    Ed25519([u8; 32]),
}

impl PublicKey {
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { .. } => KeyKind::Rsa,
            PublicKey::Ec { curve, .. } => KeyKind::Ec(*curve),
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The EC point as SEC 1 uncompressed bytes, `04 || x || y`, for providers whose
    /// interface takes that form.
    pub fn sec1_uncompressed(&self) -> Option<Vec<u8>> {
        match self {
            PublicKey::Ec { x, y, .. } => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                Some(point)
            }
            _ => None,
        }
    }
}

/// Public keys are not secret, but a dump of a 4096-bit modulus helps nobody: `Debug` names
/// the type and size.
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Rsa { n, .. } => write!(f, "Rsa({} bits)", n.len() * 8),
            PublicKey::Ec { curve, .. } => write!(f, "Ec({curve:?})"),
            PublicKey::Ed25519(_) => f.write_str("Ed25519"),
        }
    }
}

/// Why a [`CryptoProvider`] did not accept a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature does not verify with this key.
    Invalid,
    /// This provider cannot check this algorithm (or this key size).
    Unsupported,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::Invalid => "signature does not verify",
            SignatureError::Unsupported => "algorithm or key not supported",
        })
    }
}

impl std::error::Error for SignatureError {}

/// Signatures and randomness, supplied by the application, as rustls takes a
/// `CryptoProvider`. The core chooses the algorithm and key and checks everything else;
/// an implementation answers whether a signature verifies, makes signatures with keys it
/// loaded, makes new key pairs and fills buffers from a secure random source.
///
/// `latchkey-io` ships one on `ring` (`latchkey_io::crypto::ring()`), which the drivers use.
/// An implementation must be a real verification with the exact algorithm named: no
/// fallback to another algorithm, no acceptance of an empty signature.
///
/// Only [`verify`](CryptoProvider::verify) is required: a provider without the signing
/// methods verifies ID tokens and answers [`SignatureError::Unsupported`] when asked for
/// client assertions or DPoP proofs, which configuration then refuses.
pub trait CryptoProvider: fmt::Debug + Send + Sync {
    /// Checks `signature` over `message` (the JWS signing input) with `key` under
    /// `algorithm`. The key's type always fits the algorithm (RSA for `RS*`/`PS*`, the
    /// algorithm's curve for `ES*`, Ed25519 for `EdDSA`); the signature has the length the
    /// algorithm and key require.
    fn verify(
        &self,
        algorithm: Algorithm,
        key: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError>;

    /// Loads `key` to sign with [`PrivateKey::algorithm`]. The key's type fits the
    /// algorithm (latchkey checked its PKCS#8 structure); the provider checks the key
    /// itself and refuses one it cannot use.
    fn signing_key(&self, key: &PrivateKey) -> Result<Arc<dyn SigningKey>, SignatureError> {
        let _ = key;
        Err(SignatureError::Unsupported)
    }

    /// A new key pair for `algorithm` (latchkey asks for `ES256` or `EdDSA`), from the
    /// provider's secure random source, as PKCS#8 for [`PrivateKey::from_pkcs8_der`].
    fn generate_key(&self, algorithm: Algorithm) -> Result<Vec<u8>, SignatureError> {
        let _ = algorithm;
        Err(SignatureError::Unsupported)
    }

    /// Fills `bytes` from a cryptographically secure random source (the unique `jti` of
    /// every assertion and proof).
    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), SignatureError> {
        let _ = bytes;
        Err(SignatureError::Unsupported)
    }
}

/// A private key a [`CryptoProvider`] loaded: it signs, and tells its public half.
pub trait SigningKey: fmt::Debug + Send + Sync {
    /// The algorithm every signature is made with.
    fn algorithm(&self) -> Algorithm;

    /// The public key, for the `jwk` header of DPoP proofs and its thumbprint.
    fn public_key(&self) -> &PublicKey;

    /// Signs `message` (a JWS signing input) with the key's algorithm: for ECDSA the
    /// fixed-length `r || s` form of RFC 7518 §3.4.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError>;
}
