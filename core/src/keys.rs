//! Private keys that sign for the client: `private_key_jwt` client assertions (RFC 7523)
//! and DPoP proofs (RFC 9449).
//!
//! A key file becomes a [`PrivateKey`] with [`PrivateKey::parse`], which reads what people
//! have:
//!
//! - PEM (RFC 7468): `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC 1, as
//!   `openssl ecparam -genkey` writes it, its `EC PARAMETERS` block skipped) and
//!   `RSA PRIVATE KEY` (PKCS#1);
//! - a private JWK (RFC 7517): `kty` `RSA` (with its CRT members), `EC` or `OKP`;
//! - PKCS#8 DER.
//!
//! Every form becomes PKCS#8 DER, the one form a [`CryptoProvider`] loads and a store
//! keeps. The key's type decides its algorithm: RSA keys of 2048 bits or more sign `RS256`
//! (or another `RS*`/`PS*` through [`PrivateKey::with_algorithm`]), P-256 keys `ES256`,
//! P-384 keys `ES384`, Ed25519 keys `EdDSA`. Anything else is a [`KeyError`] at
//! configuration time (S63): an encrypted file, a public key, a certificate, a shared
//! secret (`kty: "oct"`), a JWK whose `alg` is `HS256` or `none`, a short RSA modulus, an
//! unsupported curve, a JWK whose public half does not belong to its private half.
//!
//! [`Signer::new`] hands the key to the crypto provider, which refuses what it cannot load.
//! A `Signer` makes the compact JWS of assertions and proofs; its private half never
//! appears in `Debug` (S61).
//!
//! ```
//! use latchkey::keys::{KeyError, KeyType, PrivateKey};
//! use latchkey::oidc::{Algorithm, Curve};
//!
//! // RFC 8037 §A.1's Ed25519 key, as a JWK.
//! let key = PrivateKey::parse(br#"{"kty":"OKP","crv":"Ed25519","kid":"k1",
//!     "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
//!     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)?;
//! assert_eq!((key.key_type(), key.algorithm(), key.kid()), (KeyType::Ed25519, Algorithm::EdDSA, Some("k1")));
//! assert!(!format!("{key:?}").contains("nWGx"));
//!
//! // A shared secret is not a private key.
//! let secret = PrivateKey::parse(br#"{"kty":"oct","k":"c2VjcmV0"}"#);
//! assert!(matches!(secret, Err(KeyError::SharedSecret)));
//! // Nor is a public key.
//! let public = PrivateKey::parse(b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n");
//! assert!(matches!(public, Err(KeyError::PublicOnly)));
//! # let _ = Curve::P256;
//! # Ok::<(), KeyError>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{
    Algorithm, CryptoProvider, Curve, KeyKind, PublicKey, SignatureError, SigningKey,
};
use crate::der;

/// The shortest RSA modulus accepted, in bits (S63).
pub const MIN_RSA_BITS: u32 = 2048;

/// How long a client assertion is valid (S63: at most a few minutes).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// The `client_assertion_type` of `private_key_jwt` (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The largest key file read, in bytes.
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

// Object identifiers, as their DER contents.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const X25519: &[u8] = &[0x2b, 0x65, 0x6e];
const ED448: &[u8] = &[0x2b, 0x65, 0x71];

/// What kind of key a [`PrivateKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, with a modulus of this many bits.
    Rsa {
        /// The modulus length.
        bits: u32,
    },
    /// ECDSA on a curve.
    Ec(Curve),
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// The algorithm a key of this type signs with unless told otherwise.
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            KeyType::Rsa { .. } => Algorithm::RS256,
            KeyType::Ec(Curve::P256) => Algorithm::ES256,
            KeyType::Ec(Curve::P384) => Algorithm::ES384,
            KeyType::Ed25519 => Algorithm::EdDSA,
        }
    }

    fn fits(self, algorithm: Algorithm) -> bool {
        match (self, algorithm.key_kind()) {
            (KeyType::Rsa { .. }, KeyKind::Rsa) | (KeyType::Ed25519, KeyKind::Ed25519) => true,
            (KeyType::Ec(curve), KeyKind::Ec(needed)) => curve == needed,
            _ => false,
        }
    }
}

/// Why a key cannot sign for the client. Each is a configuration error: nothing is sent
/// with such a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Neither PEM, a JWK nor DER latchkey reads; or a PEM block of another kind.
    NotAKey(String),
    /// The key file is encrypted (`ENCRYPTED PRIVATE KEY`, or a `Proc-Type` header).
    Encrypted,
    /// A public key or certificate, without the private half.
    PublicOnly,
    /// A shared secret (`kty: "oct"`): that is a client secret, not a key.
    SharedSecret,
    /// A key type or curve latchkey does not sign with (RSASSA-PSS-only keys, X25519,
    /// Ed448, P-521, multi-prime RSA, …).
    UnsupportedType(String),
    /// An RSA modulus shorter than [`MIN_RSA_BITS`].
    WeakKey {
        /// The modulus length.
        bits: u32,
    },
    /// An algorithm latchkey never signs with (`none`, `HS256`, unknown names).
    WeakAlgorithm(String),
    /// The algorithm does not fit the key's type (`ES256` for an RSA key, …).
    AlgorithmMismatch {
        /// The key's type.
        key: KeyType,
        /// The algorithm asked for.
        algorithm: Algorithm,
    },
    /// The JWK's public members do not belong to its private key.
    PublicKeyMismatch,
    /// The JWK says the key is not for signatures (`use` other than `sig`, `key_ops`
    /// without `sign`).
    NotForSigning,
    /// The structure is broken: what is missing or wrong.
    Malformed(&'static str),
    /// [`PrivateKey::with_certificate`] was given something else than a certificate of a
    /// key type latchkey signs with.
    Certificate(&'static str),
    /// The certificate certifies another key than this one.
    CertificateMismatch,
    /// The crypto provider refused the key, or cannot sign at all.
    Provider(SignatureError),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotAKey(what) => write!(f, "not a private key: {what}"),
            KeyError::Encrypted => {
                f.write_str("the key file is encrypted; decrypt it first (openssl pkcs8 -nocrypt)")
            }
            KeyError::PublicOnly => f.write_str("a public key or certificate, not a private key"),
            KeyError::SharedSecret => {
                f.write_str("a shared secret (kty \"oct\"), not a private key; use a client secret")
            }
            KeyError::UnsupportedType(what) => write!(f, "unsupported key type: {what}"),
            KeyError::WeakKey { bits } => {
                write!(
                    f,
                    "a {bits}-bit RSA key is too short (at least {MIN_RSA_BITS} bits)"
                )
            }
            KeyError::WeakAlgorithm(name) => {
                write!(f, "algorithm {name:?} is not used for signing")
            }
            KeyError::AlgorithmMismatch { key, algorithm } => {
                write!(
                    f,
                    "algorithm {algorithm} does not fit a key of type {key:?}"
                )
            }
            KeyError::PublicKeyMismatch => {
                f.write_str("the public key does not belong to the private key")
            }
            KeyError::NotForSigning => f.write_str("the key is not for signatures"),
            KeyError::Malformed(what) => write!(f, "malformed key: {what}"),
            KeyError::Certificate(what) => write!(f, "unusable certificate: {what}"),
            KeyError::CertificateMismatch => {
                f.write_str("the certificate is not the certificate of this key")
            }
            KeyError::Provider(error) => write!(f, "the crypto provider refused the key: {error}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A private key, as PKCS#8 DER, with the algorithm it signs with. The bytes are wiped when
/// it is dropped and never appear in `Debug`.
#[derive(Clone)]
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    key_type: KeyType,
    algorithm: Algorithm,
    kid: Option<String>,
    /// The public half a JWK stated, checked against the one the provider derives.
    stated: Option<PublicKey>,
    /// The key's X.509 certificate, when its assertions name it.
    certificate: Option<Certified>,
}

/// What a key's certificate contributes: its SHA-256 thumbprint, and the public key it
/// certifies (checked against the key's own when the key is loaded).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Certified {
    thumbprint: String,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("type", &self.key_type)
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field(
                "x5t#S256",
                &self.certificate.as_ref().map(|c| c.thumbprint.as_str()),
            )
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads a key file: a private JWK, PEM or PKCS#8 DER, told apart by their first bytes.
    pub fn parse(bytes: &[u8]) -> Result<PrivateKey, KeyError> {
        if bytes.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::NotAKey(format!(
                "larger than {MAX_KEY_FILE_BYTES} bytes"
            )));
        }
        let text = bytes.trim_ascii_start();
        if text.starts_with(b"{") {
            PrivateKey::from_jwk(text)
        } else if text.starts_with(b"-----BEGIN ") {
            let text = std::str::from_utf8(text)
                .map_err(|_| KeyError::NotAKey("PEM that is not text".into()))?;
            PrivateKey::from_pem(text)
        } else {
            PrivateKey::from_der(bytes)
        }
    }

    /// Reads DER: PKCS#8, SEC 1 (`ECPrivateKey`) or PKCS#1 (`RSAPrivateKey`), told apart by
    /// the version number and the element after it.
    pub fn from_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        let not_a_key = || KeyError::NotAKey("neither PEM, a JWK nor a DER private key".into());
        let (body, _) = der::expect(der, der::SEQUENCE).ok_or_else(not_a_key)?;
        let (version, rest) = der::expect(body, der::INTEGER).ok_or_else(not_a_key)?;
        let next = der::read(rest).map(|(tag, _, _)| tag);
        match (der::small_integer(version), next) {
            (Some(0 | 1), Some(der::SEQUENCE)) => PrivateKey::from_pkcs8_der(der.to_vec()),
            (Some(1), Some(der::OCTET_STRING)) => PrivateKey::from_pkcs8_der(sec1_to_pkcs8(der)?),
            (Some(0), Some(der::INTEGER)) => PrivateKey::from_pkcs8_der(pkcs1_to_pkcs8(der)),
            _ => Err(not_a_key()),
        }
    }

    /// Reads the first private key block of a PEM file (`EC PARAMETERS` blocks are
    /// skipped).
    pub fn from_pem(text: &str) -> Result<PrivateKey, KeyError> {
        let mut rest = text;
        loop {
            let Some((label, body)) = pem_block(&mut rest)? else {
                return Err(KeyError::NotAKey("no PEM private key block".into()));
            };
            if label == "EC PARAMETERS" {
                continue;
            }
            if body.contains("Proc-Type:") || label == "ENCRYPTED PRIVATE KEY" {
                return Err(KeyError::Encrypted);
            }
            let der = Zeroizing::new(
                STANDARD
                    .decode(body.split_ascii_whitespace().collect::<String>())
                    .map_err(|_| KeyError::Malformed("PEM contents that are not base64"))?,
            );
            return match label {
                "PRIVATE KEY" => PrivateKey::from_pkcs8_der(der.to_vec()),
                "EC PRIVATE KEY" => PrivateKey::from_pkcs8_der(sec1_to_pkcs8(&der)?),
                "RSA PRIVATE KEY" => PrivateKey::from_pkcs8_der(pkcs1_to_pkcs8(&der)),
                "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => Err(KeyError::PublicOnly),
                other => Err(KeyError::NotAKey(format!(
                    "a PEM block of type {:?}",
                    other.chars().take(40).collect::<String>()
                ))),
            };
        }
    }

    /// Reads PKCS#8 DER (RFC 5208, or v2 of RFC 5958).
    pub fn from_pkcs8_der(der: Vec<u8>) -> Result<PrivateKey, KeyError> {
        let pkcs8 = Zeroizing::new(der);
        let key_type = pkcs8_type(&pkcs8)?;
        if let KeyType::Rsa { bits } = key_type
            && bits < MIN_RSA_BITS
        {
            return Err(KeyError::WeakKey { bits });
        }
        Ok(PrivateKey {
            pkcs8,
            key_type,
            algorithm: key_type.default_algorithm(),
            kid: None,
            stated: None,
            certificate: None,
        })
    }

    /// Reads a private JWK (RFC 7517; RFC 7518 §6 for RSA and EC, RFC 8037 for Ed25519).
    /// Its `kid` is kept; its `alg`, when present, must fit the key.
    pub fn from_jwk(json: &[u8]) -> Result<PrivateKey, KeyError> {
        let mut object = crate::oidc::unique_object(json)
            .ok_or(KeyError::NotAKey("JSON that is not one object".into()))?;
        let member = |name: &'static str| match object.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(KeyError::Malformed("a JWK member that is not a string")),
        };
        let (kid, alg) = (member("kid"), member("alg"));
        let parsed = jwk_to_pkcs8(&object);
        // The private members were copied into the DER; wipe the parsed text.
        for (_, value) in object.iter_mut() {
            if let Value::String(text) = value {
                text.zeroize();
            }
        }
        let (der, stated) = parsed?;
        let mut key = PrivateKey::from_pkcs8_der(der)?;
        key.stated = Some(stated);
        key.kid = kid?;
        match alg? {
            None => Ok(key),
            Some(name) => match Algorithm::from_name(&name) {
                Some(algorithm) => key.with_algorithm(algorithm),
                None => Err(KeyError::WeakAlgorithm(name.chars().take(16).collect())),
            },
        }
    }

    /// The same key, signing with `algorithm` (`PS256` for an RSA key, say).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Result<PrivateKey, KeyError> {
        if !self.key_type.fits(algorithm) {
            return Err(KeyError::AlgorithmMismatch {
                key: self.key_type,
                algorithm,
            });
        }
        self.algorithm = algorithm;
        Ok(self)
    }

    /// The same key, named `kid` in the JWS headers it signs.
    pub fn with_kid(mut self, kid: impl Into<String>) -> PrivateKey {
        self.kid = Some(kid.into());
        self
    }

    /// The same key with its X.509 `certificate` (PEM or DER), for providers that know a
    /// client by its certificate: Microsoft Entra's certificate credentials. Client
    /// assertions then name the certificate by its SHA-256 thumbprint (`x5t#S256`, RFC 7515
    /// §4.1.8). The certificate must certify this key: that is checked when the key is
    /// loaded ([`Signer::new`]), and is [`KeyError::CertificateMismatch`] otherwise.
    ///
    /// # Errors
    ///
    /// [`KeyError::Certificate`] when `certificate` is not a certificate of a key type
    /// latchkey signs with.
    pub fn with_certificate(mut self, certificate: &[u8]) -> Result<PrivateKey, KeyError> {
        let der = certificate_der(certificate)?;
        let public = certified_key(&der).ok_or(KeyError::Certificate(
            "not an X.509 certificate of an RSA, P-256, P-384 or Ed25519 key",
        ))?;
        self.certificate = Some(Certified {
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
            public,
        });
        Ok(self)
    }

    /// The SHA-256 thumbprint of the key's certificate (`x5t#S256`), when it has one.
    pub fn certificate_thumbprint(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.thumbprint.as_str())
    }

    /// The algorithm signatures are made with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The key id, from the JWK or [`PrivateKey::with_kid`].
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The PKCS#8 DER: what a [`CryptoProvider`] loads and what a store keeps (sealed,
    /// where the store seals).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key as stored with tokens and in shared flow records:
    /// `{"alg": "ES256", "pkcs8": BASE64URL(DER)}`. Secret: whoever stores it seals it.
    pub(crate) fn to_stored(&self) -> Value {
        let der = Zeroizing::new(URL_SAFE_NO_PAD.encode(&self.pkcs8));
        serde_json::json!({ "alg": self.algorithm().name(), "pkcs8": *der })
    }

    /// Reads what [`PrivateKey::to_stored`] wrote; the error names what is wrong, never
    /// the key.
    pub(crate) fn from_stored(stored: Value) -> Result<PrivateKey, &'static str> {
        let Value::Object(mut stored) = stored else {
            return Err("stored `dpop_key` is not an object");
        };
        let der = match stored.remove("pkcs8") {
            Some(Value::String(mut text)) => {
                let der = URL_SAFE_NO_PAD.decode(&text);
                text.zeroize();
                der.map_err(|_| "stored `dpop_key` is not base64url")?
            }
            _ => return Err("stored `dpop_key` lacks `pkcs8`"),
        };
        let key = PrivateKey::from_pkcs8_der(der).map_err(|_| "stored `dpop_key` is unusable")?;
        let algorithm = match stored.get("alg").and_then(Value::as_str) {
            Some(name) => {
                Algorithm::from_name(name).ok_or("stored `dpop_key` has an unknown `alg`")?
            }
            None => key.algorithm(),
        };
        key.with_algorithm(algorithm)
            .map_err(|_| "stored `dpop_key`'s `alg` does not fit the key")
    }
}

/// The key type of a PKCS#8 document, read from its algorithm identifier (and, for RSA,
/// the modulus length from the key itself).
fn pkcs8_type(der: &[u8]) -> Result<KeyType, KeyError> {
    const BROKEN: KeyError = KeyError::Malformed("not a PKCS#8 private key");
    let (info, trailing) = der::expect(der, der::SEQUENCE).ok_or(BROKEN)?;
    if !trailing.is_empty() {
        return Err(BROKEN);
    }
    let (version, rest) = der::expect(info, der::INTEGER).ok_or(BROKEN)?;
    if !matches!(der::small_integer(version), Some(0 | 1)) {
        return Err(BROKEN);
    }
    let (algorithm, rest) = der::expect(rest, der::SEQUENCE).ok_or(BROKEN)?;
    let (private, _) = der::expect(rest, der::OCTET_STRING).ok_or(BROKEN)?;
    let (oid, parameters) = der::expect(algorithm, der::OID).ok_or(BROKEN)?;
    match oid {
        RSA_ENCRYPTION => {
            let (rsa, _) = der::expect(private, der::SEQUENCE).ok_or(BROKEN)?;
            let (version, rest) = der::expect(rsa, der::INTEGER).ok_or(BROKEN)?;
            if der::small_integer(version) != Some(0) {
                return Err(KeyError::UnsupportedType("multi-prime RSA".into()));
            }
            let (n, _) = der::expect(rest, der::INTEGER).ok_or(BROKEN)?;
            let n = der::unsigned(n).ok_or(BROKEN)?;
            let bits = n.len() as u32 * 8 - n.first().map_or(8, |top| top.leading_zeros());
            Ok(KeyType::Rsa { bits })
        }
        RSASSA_PSS => Err(KeyError::UnsupportedType(
            "an RSASSA-PSS key (use an rsaEncryption key; PS256 signs with it)".into(),
        )),
        EC_PUBLIC_KEY => match der::expect(parameters, der::OID).map(|(curve, _)| curve) {
            Some(P256) => Ok(KeyType::Ec(Curve::P256)),
            Some(P384) => Ok(KeyType::Ec(Curve::P384)),
            _ => Err(KeyError::UnsupportedType(
                "an EC key on a curve other than P-256 and P-384".into(),
            )),
        },
        ED25519 => Ok(KeyType::Ed25519),
        X25519 => Err(KeyError::UnsupportedType(
            "X25519 (a key-agreement key)".into(),
        )),
        ED448 => Err(KeyError::UnsupportedType("Ed448".into())),
        _ => Err(KeyError::UnsupportedType("an unknown key algorithm".into())),
    }
}

/// The next PEM block of `rest` (RFC 7468): its label and its base64 body, `rest` moved
/// past it; `None` when there is none.
fn pem_block<'a>(rest: &mut &'a str) -> Result<Option<(&'a str, &'a str)>, KeyError> {
    let Some(start) = rest.find("-----BEGIN ") else {
        return Ok(None);
    };
    let after = &rest[start + 11..];
    let label_end = after
        .find("-----")
        .ok_or(KeyError::Malformed("a PEM line without its closing dashes"))?;
    let label = &after[..label_end];
    let body_start = &after[label_end + 5..];
    let end_line = format!("-----END {label}-----");
    let body_len = body_start
        .find(&end_line)
        .ok_or(KeyError::Malformed("a PEM block without its END line"))?;
    *rest = &body_start[body_len + end_line.len()..];
    Ok(Some((label, &body_start[..body_len])))
}

/// The DER of a certificate given as PEM (its `CERTIFICATE` block) or DER.
fn certificate_der(certificate: &[u8]) -> Result<Vec<u8>, KeyError> {
    const NOT: KeyError = KeyError::Certificate("neither a PEM CERTIFICATE block nor DER");
    if certificate.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Certificate(
            "larger than a certificate file can be",
        ));
    }
    if certificate.first() == Some(&der::SEQUENCE) {
        return Ok(certificate.to_vec());
    }
    let mut rest = std::str::from_utf8(certificate).map_err(|_| NOT)?;
    let body = loop {
        match pem_block(&mut rest) {
            Ok(Some(("CERTIFICATE", body))) => break body,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err(NOT),
        }
    };
    STANDARD
        .decode(body.split_ascii_whitespace().collect::<String>())
        .map_err(|_| KeyError::Certificate("PEM contents that are not base64"))
}

/// The public key an X.509 certificate (RFC 5280 §4.1) certifies: its
/// `subjectPublicKeyInfo`, read as far as needed.
fn certified_key(der: &[u8]) -> Option<PublicKey> {
    let (certificate, trailing) = der::expect(der, der::SEQUENCE)?;
    if !trailing.is_empty() {
        return None;
    }
    let (tbs, _) = der::expect(certificate, der::SEQUENCE)?;
    // version [0] EXPLICIT (absent for v1), serialNumber, signature, issuer, validity,
    // subject, then subjectPublicKeyInfo.
    let mut rest = match der::read(tbs)? {
        (der::CONTEXT_0, _, rest) => rest,
        _ => tbs,
    };
    rest = der::expect(rest, der::INTEGER)?.1;
    for _ in 0..4 {
        rest = der::expect(rest, der::SEQUENCE)?.1;
    }
    let (info, _) = der::expect(rest, der::SEQUENCE)?;
    let (algorithm, rest) = der::expect(info, der::SEQUENCE)?;
    let (bits, _) = der::expect(rest, der::BIT_STRING)?;
    let (0, key) = bits.split_first().map(|(unused, key)| (*unused, key))? else {
        return None;
    };
    let (oid, parameters) = der::expect(algorithm, der::OID)?;
    match oid {
        RSA_ENCRYPTION => {
            let (rsa, _) = der::expect(key, der::SEQUENCE)?;
            let (n, rest) = der::expect(rsa, der::INTEGER)?;
            let (e, _) = der::expect(rest, der::INTEGER)?;
            Some(PublicKey::Rsa {
                n: der::unsigned(n)?.to_vec(),
                e: der::unsigned(e)?.to_vec(),
            })
        }
        EC_PUBLIC_KEY => {
            let curve = match der::expect(parameters, der::OID)?.0 {
                P256 => Curve::P256,
                P384 => Curve::P384,
                _ => return None,
            };
            let length = curve.coordinate_len();
            let (4, point) = key.split_first().map(|(form, point)| (*form, point))? else {
                return None;
            };
            (point.len() == 2 * length).then(|| PublicKey::Ec {
                curve,
                x: point[..length].to_vec(),
                y: point[length..].to_vec(),
            })
        }
        ED25519 => Some(PublicKey::Ed25519(key.try_into().ok()?)),
        _ => None,
    }
}

/// `PrivateKeyInfo { version 0, AlgorithmIdentifier { oid, parameters }, private }`.
fn wrap_pkcs8(oid_header: &[u8], oid: &[u8], parameters: Option<&[u8]>, private: &[u8]) -> Vec<u8> {
    let mut algorithm = Vec::with_capacity(32);
    algorithm.extend_from_slice(oid_header);
    algorithm.extend_from_slice(oid);
    if let Some(parameters) = parameters {
        algorithm.extend_from_slice(parameters);
    }
    let mut info = Zeroizing::new(Vec::with_capacity(private.len() + 48));
    der::write(&mut info, der::INTEGER, &[0]);
    der::write(&mut info, der::SEQUENCE, &algorithm);
    der::write(&mut info, der::OCTET_STRING, private);
    der::element(der::SEQUENCE, &info)
}

/// A PKCS#1 `RSAPrivateKey` wrapped as PKCS#8.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let null = der::element(der::NULL, &[]);
    wrap_pkcs8(&[der::OID, 0x09], RSA_ENCRYPTION, Some(&null), pkcs1)
}

/// A SEC 1 `ECPrivateKey` wrapped as PKCS#8, its curve taken from its parameters.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, KeyError> {
    const BROKEN: KeyError = KeyError::Malformed("not a SEC 1 EC private key");
    let (key, _) = der::expect(sec1, der::SEQUENCE).ok_or(BROKEN)?;
    let (version, rest) = der::expect(key, der::INTEGER).ok_or(BROKEN)?;
    if der::small_integer(version) != Some(1) {
        return Err(BROKEN);
    }
    let (_, rest) = der::expect(rest, der::OCTET_STRING).ok_or(BROKEN)?;
    let (parameters, _) = der::expect(rest, der::CONTEXT_0).ok_or(KeyError::Malformed(
        "an EC private key that does not name its curve",
    ))?;
    let (curve, _) = der::expect(parameters, der::OID).ok_or(BROKEN)?;
    let curve = der::element(der::OID, curve);
    Ok(wrap_pkcs8(
        &[der::OID, 0x07],
        EC_PUBLIC_KEY,
        Some(&curve),
        sec1,
    ))
}

/// The PKCS#8 DER of a private JWK, and the public key it states.
fn jwk_to_pkcs8(object: &Map<String, Value>) -> Result<(Vec<u8>, PublicKey), KeyError> {
    let text = |name: &'static str| match object.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(KeyError::Malformed("a JWK member that is not a string")),
    };
    let bytes = |name: &'static str| -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let value = text(name)?.ok_or(KeyError::Malformed(
            "a JWK without a member its key type needs",
        ))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Malformed("a JWK member that is not base64url"))
    };
    if text("use")?.is_some_and(|usage| usage != "sig") {
        return Err(KeyError::NotForSigning);
    }
    if let Some(ops) = object.get("key_ops") {
        let signs = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op == "sign"));
        if !signs {
            return Err(KeyError::NotForSigning);
        }
    }
    let kty = text("kty")?.ok_or(KeyError::Malformed("a JWK without kty"))?;
    if kty == "oct" {
        return Err(KeyError::SharedSecret);
    }
    if object.get("d").is_none() {
        return Err(KeyError::PublicOnly);
    }
    match kty {
        "RSA" => {
            if object.contains_key("oth") {
                return Err(KeyError::UnsupportedType("multi-prime RSA".into()));
            }
            let n = bytes("n")?;
            let e = bytes("e")?;
            let mut key = Zeroizing::new(Vec::with_capacity(n.len() * 5));
            der::write(&mut key, der::INTEGER, &[0]);
            for part in [&n, &e] {
                der::write_unsigned(&mut key, part);
            }
            for name in ["d", "p", "q", "dp", "dq", "qi"] {
                der::write_unsigned(&mut key, &bytes(name)?);
            }
            let rsa = Zeroizing::new(der::element(der::SEQUENCE, &key));
            let pkcs8 = pkcs1_to_pkcs8(&rsa);
            let strip = |bytes: &[u8]| {
                let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
                bytes[zeros..].to_vec()
            };
            Ok((
                pkcs8,
                PublicKey::Rsa {
                    n: strip(&n),
                    e: strip(&e),
                },
            ))
        }
        "EC" => {
            let (curve, oid) = match text("crv")? {
                Some("P-256") => (Curve::P256, P256),
                Some("P-384") => (Curve::P384, P384),
                Some(other) => {
                    return Err(KeyError::UnsupportedType(format!(
                        "EC curve {:?}",
                        other.chars().take(16).collect::<String>()
                    )));
                }
                None => return Err(KeyError::Malformed("an EC JWK without crv")),
            };
            let (d, x, y) = (bytes("d")?, bytes("x")?, bytes("y")?);
            if [d.len(), x.len(), y.len()] != [curve.coordinate_len(); 3] {
                return Err(KeyError::Malformed(
                    "EC members of the wrong length for the curve",
                ));
            }
            let mut point = Vec::with_capacity(2 + 2 * x.len());
            point.extend_from_slice(&[0, 4]);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let mut key = Zeroizing::new(Vec::with_capacity(160));
            der::write(&mut key, der::INTEGER, &[1]);
            der::write(&mut key, der::OCTET_STRING, &d);
            der::write(&mut key, der::CONTEXT_0, &der::element(der::OID, oid));
            der::write(
                &mut key,
                der::CONTEXT_1,
                &der::element(der::BIT_STRING, &point),
            );
            let sec1 = Zeroizing::new(der::element(der::SEQUENCE, &key));
            let curve_oid = der::element(der::OID, oid);
            let pkcs8 = wrap_pkcs8(&[der::OID, 0x07], EC_PUBLIC_KEY, Some(&curve_oid), &sec1);
            Ok((
                pkcs8,
                PublicKey::Ec {
                    curve,
                    x: x.to_vec(),
                    y: y.to_vec(),
                },
            ))
        }
        "OKP" => {
            match text("crv")? {
                Some("Ed25519") => {}
                Some(other) => {
                    return Err(KeyError::UnsupportedType(format!(
                        "OKP curve {:?}",
                        other.chars().take(16).collect::<String>()
                    )));
                }
                None => return Err(KeyError::Malformed("an OKP JWK without crv")),
            }
            let (d, x) = (bytes("d")?, bytes("x")?);
            let (Ok(_), Ok(x)) = (<[u8; 32]>::try_from(&d[..]), <[u8; 32]>::try_from(&x[..]))
            else {
                return Err(KeyError::Malformed("Ed25519 members that are not 32 bytes"));
            };
            let seed = Zeroizing::new(der::element(der::OCTET_STRING, &d));
            Ok((
                wrap_pkcs8(&[der::OID, 0x03], ED25519, None, &seed),
                PublicKey::Ed25519(x),
            ))
        }
        other => Err(KeyError::UnsupportedType(format!(
            "JWK key type {:?}",
            other.chars().take(16).collect::<String>()
        ))),
    }
}

/// A private key the crypto provider loaded, with the public JWK and thumbprint it signs
/// under: what makes client assertions and DPoP proofs. Cheap to clone (shared).
#[derive(Clone)]
pub struct Signer(Arc<SignerInner>);

struct SignerInner {
    key: PrivateKey,
    signing: Arc<dyn SigningKey>,
    crypto: Arc<dyn CryptoProvider>,
    /// The public key as a JWK (`kty` and its public members only).
    jwk: Map<String, Value>,
    /// RFC 7638 thumbprint, base64url.
    thumbprint: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("algorithm", &self.0.key.algorithm)
            .field("kid", &self.0.key.kid)
            .field("thumbprint", &self.0.thumbprint)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads `key` with `crypto`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Provider`] when the provider cannot sign or refuses the key;
    /// [`KeyError::PublicKeyMismatch`] when a JWK's public members are not those of its
    /// private key; [`KeyError::WeakKey`] for a short RSA modulus.
    pub fn new(key: PrivateKey, crypto: Arc<dyn CryptoProvider>) -> Result<Signer, KeyError> {
        let signing = crypto.signing_key(&key).map_err(KeyError::Provider)?;
        if signing.algorithm() != key.algorithm {
            return Err(KeyError::AlgorithmMismatch {
                key: key.key_type,
                algorithm: signing.algorithm(),
            });
        }
        let public = signing.public_key().clone();
        if key.stated.as_ref().is_some_and(|stated| *stated != public)
            || !key.key_type.fits(key.algorithm)
            || public.kind() != key.algorithm.key_kind()
        {
            return Err(KeyError::PublicKeyMismatch);
        }
        if key.certificate.as_ref().is_some_and(|c| c.public != public) {
            return Err(KeyError::CertificateMismatch);
        }
        let jwk = public_jwk(&public);
        let thumbprint = thumbprint(&public);
        Ok(Signer(Arc::new(SignerInner {
            key,
            signing,
            crypto,
            jwk,
            thumbprint,
        })))
    }

    /// A new key pair for `algorithm` (`ES256` or `EdDSA`), made by `crypto` from its
    /// secure random source: a DPoP key.
    pub fn generate(
        algorithm: Algorithm,
        crypto: Arc<dyn CryptoProvider>,
    ) -> Result<Signer, KeyError> {
        if !matches!(
            algorithm,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA
        ) {
            return Err(KeyError::WeakAlgorithm(format!(
                "{algorithm} (DPoP keys are ES256, ES384 or EdDSA)"
            )));
        }
        let pkcs8 = crypto.generate_key(algorithm).map_err(KeyError::Provider)?;
        let key = PrivateKey::from_pkcs8_der(pkcs8)?.with_algorithm(algorithm)?;
        Signer::new(key, crypto)
    }

    /// The algorithm of every signature.
    pub fn algorithm(&self) -> Algorithm {
        self.0.key.algorithm
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.0.signing.public_key()
    }

    /// The public key as a JWK: `kty` and the public members, nothing else.
    pub fn public_jwk(&self) -> &Map<String, Value> {
        &self.0.jwk
    }

    /// The JWK SHA-256 thumbprint of the public key (RFC 7638), base64url: DPoP's
    /// `dpop_jkt` and the `jkt` of a bound token's `cnf`.
    pub fn thumbprint(&self) -> &str {
        &self.0.thumbprint
    }

    /// The private key, to be stored (sealed, where the store seals).
    pub fn private_key(&self) -> &PrivateKey {
        &self.0.key
    }

    /// A client assertion (RFC 7523 §2.2, `private_key_jwt`; S63) made at `wall`: `iss` and
    /// `sub` the client id, `aud` the `audience` (the issuer, or the endpoint's URL), `exp`
    /// [`ASSERTION_LIFETIME`] after `iat`, a fresh `jti`; the header names the key's `kid`
    /// when it has one, and its certificate (`x5t#S256`) when it has one.
    pub fn client_assertion(
        &self,
        client_id: &str,
        audience: &str,
        wall: SystemTime,
    ) -> Result<String, SignatureError> {
        let iat = unix_seconds(wall);
        let mut claims = Map::new();
        claims.insert("iss".into(), client_id.into());
        claims.insert("sub".into(), client_id.into());
        claims.insert("aud".into(), audience.into());
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), (iat + ASSERTION_LIFETIME.as_secs()).into());
        claims.insert("jti".into(), self.jti()?.into());
        let mut header = Map::new();
        if let Some(certificate) = &self.0.key.certificate {
            header.insert("x5t#S256".into(), certificate.thumbprint.as_str().into());
        }
        self.jws(header, &claims, true)
    }

    /// A fresh `jti`: 128 bits from the provider's random source, base64url.
    pub(crate) fn jti(&self) -> Result<String, SignatureError> {
        let mut bytes = [0u8; 16];
        self.0.crypto.fill_random(&mut bytes)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The compact JWS of `claims` under `header` (to which `alg`, and `kid` when the key
    /// has one and `with_kid`, are added).
    pub(crate) fn jws(
        &self,
        mut header: Map<String, Value>,
        claims: &Map<String, Value>,
        with_kid: bool,
    ) -> Result<String, SignatureError> {
        header.insert("alg".into(), self.algorithm().name().into());
        if let (true, Some(kid)) = (with_kid, &self.0.key.kid) {
            header.insert("kid".into(), kid.as_str().into());
        }
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let claims = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 96);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self.0.signing.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

/// `kty` and the public members of `key`, as a JWK object.
pub(crate) fn public_jwk(key: &PublicKey) -> Map<String, Value> {
    let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
    let mut jwk = Map::new();
    match key {
        PublicKey::Rsa { n, e } => {
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), b64(n));
            jwk.insert("e".into(), b64(e));
        }
        PublicKey::Ec { curve, x, y } => {
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), curve_name(*curve).into());
            jwk.insert("x".into(), b64(x));
            jwk.insert("y".into(), b64(y));
        }
        PublicKey::Ed25519(x) => {
            jwk.insert("kty".into(), "OKP".into());
            jwk.insert("crv".into(), "Ed25519".into());
            jwk.insert("x".into(), b64(x));
        }
    }
    jwk
}

pub(crate) fn curve_name(curve: Curve) -> &'static str {
    match curve {
        Curve::P256 => "P-256",
        Curve::P384 => "P-384",
    }
}

/// The RFC 7638 §3 input: the required members, in lexicographic order, no whitespace.
fn thumbprint_input(key: &PublicKey) -> String {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match key {
        PublicKey::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
        PublicKey::Ec { curve, x, y } => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            curve_name(*curve),
            b64(x),
            b64(y)
        ),
        PublicKey::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
    }
}

/// The RFC 7638 thumbprint of `key`, base64url (what `cnf.jkt` of a DPoP-bound token
/// holds).
pub fn thumbprint(key: &PublicKey) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input(key)))
}

/// Whole seconds since the epoch (0 before it).
pub(crate) fn unix_seconds(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_s3_1_thumbprint() {
        let n = URL_SAFE_NO_PAD
            .decode(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t\
                 Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-\
                 65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qN\
                 Lyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awa\
                 pJzKnqDKgw",
            )
            .unwrap();
        let key = PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        };
        assert_eq!(
            thumbprint(&key),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_private_jwk_becomes_pkcs8_of_the_same_key_type() {
        let key = PrivateKey::from_jwk(
            br#"{"kty":"EC","crv":"P-384","d":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        )
        .unwrap();
        assert_eq!(
            (key.key_type(), key.algorithm()),
            (KeyType::Ec(Curve::P384), Algorithm::ES384)
        );
        let again = PrivateKey::from_der(key.pkcs8_der()).unwrap();
        assert_eq!(again.key_type(), key.key_type());
        // Members of the wrong length for the curve.
        let short =
            PrivateKey::from_jwk(br#"{"kty":"EC","crv":"P-256","d":"AA","x":"AA","y":"AA"}"#);
        assert!(matches!(short, Err(KeyError::Malformed(_))));
    }

    #[test]
    fn pem_files_are_read_block_by_block() {
        let unterminated = "-----BEGIN PRIVATE KEY-----\nAAAA\n";
        assert!(matches!(
            PrivateKey::from_pem(unterminated),
            Err(KeyError::Malformed(_))
        ));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            PrivateKey::from_pem(legacy).unwrap_err(),
            KeyError::Encrypted
        );
        let params_only =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        assert!(matches!(
            PrivateKey::from_pem(params_only),
            Err(KeyError::NotAKey(_))
        ));
        let other =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(other),
            Err(KeyError::NotAKey(_))
        ));
    }
}
