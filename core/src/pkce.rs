//! Per-flow secrets: the PKCE verifier and challenge (RFC 7636), the `state` value and the
//! OpenID Connect `nonce`.
//!
//! All come straight from the caller's entropy: 32 bytes each, base64url without padding,
//! 43 characters of the unreserved alphabet (S1, S2, S48). The state is random and nothing else:
//! it carries no meaning (S3). The engine never stores the state itself, only its SHA-256
//! digest, which it uses to find the flow a callback belongs to (see [`StateKey`]).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The entropy a flow needs: 32 bytes each for the verifier, the state and the nonce.
pub const ENTROPY_LEN: usize = 96;

/// The length of a verifier, challenge or state: 32 bytes in base64url without padding.
const ENCODED_LEN: usize = 43;

/// The secrets of one flow, fresh from the caller's entropy. Kept inline (a pending flow
/// costs no allocation for them) and zeroized when dropped.
pub struct FlowSecrets {
    /// The PKCE `code_verifier`; sent only in the token request.
    pub verifier: Verifier,
    /// `BASE64URL(SHA256(verifier))`, sent in the authorization URL.
    challenge: [u8; ENCODED_LEN],
    /// The `state` parameter.
    state: Zeroizing<[u8; ENCODED_LEN]>,
    /// The OpenID Connect `nonce`, sent when `openid` is requested and expected back in the
    /// ID token.
    pub nonce: Nonce,
}

impl FlowSecrets {
    /// Derives the secrets from 96 bytes of entropy: the verifier from the first 32, the
    /// state from the next 32, the nonce from the last 32.
    pub fn new(entropy: &[u8; ENTROPY_LEN]) -> FlowSecrets {
        let verifier = Verifier(encode(&entropy[..32]));
        FlowSecrets {
            challenge: *encode(&Sha256::digest(verifier.as_str().as_bytes())),
            verifier,
            state: encode(&entropy[32..64]),
            nonce: Nonce(encode(&entropy[64..])),
        }
    }

    /// The S256 code challenge.
    pub fn challenge(&self) -> &str {
        ascii(&self.challenge)
    }

    /// The `state`.
    pub fn state(&self) -> &str {
        ascii(&self.state)
    }
}

/// A PKCE `code_verifier`: 43 characters of the unreserved alphabet, inline, zeroized when
/// dropped, `[REDACTED]` in `Debug`.
#[derive(Clone)]
pub struct Verifier(Zeroizing<[u8; ENCODED_LEN]>);

impl Verifier {
    /// The verifier's text.
    pub fn as_str(&self) -> &str {
        ascii(&self.0)
    }

    /// A verifier read back from a shared flow's record: exactly as this module writes
    /// them, or `None`.
    pub(crate) fn from_text(text: &str) -> Option<Verifier> {
        parse_encoded(text).map(Verifier)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// An OpenID Connect `nonce`: 256 bits, inline, zeroized when dropped, `[REDACTED]` in
/// `Debug`.
#[derive(Clone)]
pub struct Nonce(Zeroizing<[u8; ENCODED_LEN]>);

impl Nonce {
    /// The nonce's text.
    pub fn as_str(&self) -> &str {
        ascii(&self.0)
    }

    /// A nonce read back from a shared flow's record: exactly as this module writes
    /// them, or `None`.
    pub(crate) fn from_text(text: &str) -> Option<Nonce> {
        parse_encoded(text).map(Nonce)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// 32 bytes in base64url without padding.
fn encode(bytes: &[u8]) -> Zeroizing<[u8; ENCODED_LEN]> {
    let mut out = Zeroizing::new([0; ENCODED_LEN]);
    let written = URL_SAFE_NO_PAD
        .encode_slice(bytes, &mut out[..])
        .expect("32 bytes encode to exactly 43 characters");
    debug_assert_eq!(written, ENCODED_LEN);
    out
}

/// `text` if it is what [`encode`] writes: 43 characters of the base64url alphabet.
fn parse_encoded(text: &str) -> Option<Zeroizing<[u8; ENCODED_LEN]>> {
    let bytes = text.as_bytes();
    let valid = bytes.len() == ENCODED_LEN
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| {
        let mut out = Zeroizing::new([0; ENCODED_LEN]);
        out.copy_from_slice(bytes);
        out
    })
}

/// base64url output as text; it is ASCII by construction.
fn ascii(encoded: &[u8; ENCODED_LEN]) -> &str {
    std::str::from_utf8(encoded).expect("base64url output is ASCII")
}

/// The key under which a flow is found by its `state`: SHA-256 of the state.
///
/// Callbacks are routed by looking this digest up in an ordered map. The comparisons that
/// lookup makes take time that depends on the digest of the attacker's guess, never on the
/// state itself, so timing reveals nothing that helps forge a state (S10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateKey([u64; 4]);

impl StateKey {
    /// The key of `state`. The digest is kept as four words, which compare without a call
    /// to `memcmp`; any total order serves the map.
    pub fn of(state: &str) -> StateKey {
        StateKey::from_digest(Sha256::digest(state.as_bytes()).into())
    }

    /// The key of a SHA-256 digest of a state.
    pub(crate) fn from_digest(digest: [u8; 32]) -> StateKey {
        let mut words = [0; 4];
        for (word, bytes) in words.iter_mut().zip(digest.chunks_exact(8)) {
            let mut chunk = [0; 8];
            chunk.copy_from_slice(bytes);
            *word = u64::from_ne_bytes(chunk);
        }
        StateKey(words)
    }

    /// The SHA-256 digest of the state.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut digest = [0; 32];
        for (bytes, word) in digest.chunks_exact_mut(8).zip(self.0) {
            bytes.copy_from_slice(&word.to_ne_bytes());
        }
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B: the verifier from these octets, and its S256 challenge.
    #[test]
    fn s1_rfc7636_appendix_b_vector() {
        let octets: [u8; 32] = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let mut entropy = [0; ENTROPY_LEN];
        entropy[..32].copy_from_slice(&octets);
        let secrets = FlowSecrets::new(&entropy);
        assert_eq!(
            secrets.verifier.as_str(),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        assert_eq!(
            secrets.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn s1_s2_verifier_and_state_are_43_unreserved_characters_from_separate_entropy() {
        let entropy: [u8; ENTROPY_LEN] = std::array::from_fn(|i| i as u8);
        let secrets = FlowSecrets::new(&entropy);
        let values = [
            secrets.verifier.as_str(),
            secrets.state(),
            secrets.nonce.as_str(),
        ];
        for value in values {
            assert_eq!(value.len(), 43);
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            );
        }
        assert_ne!(values[0], values[1]);
        assert_ne!(values[1], values[2]);
        assert_ne!(values[0], values[2]);
    }

    #[test]
    fn s2_state_changes_with_every_bit_of_its_entropy() {
        let base = FlowSecrets::new(&[7; ENTROPY_LEN]);
        for bit in 0..256 {
            let mut entropy = [7; ENTROPY_LEN];
            entropy[32 + bit / 8] ^= 1 << (bit % 8);
            let other = FlowSecrets::new(&entropy);
            assert_ne!(other.state(), base.state());
            assert_eq!(other.verifier.as_str(), base.verifier.as_str());
        }
    }

    #[test]
    fn s48_the_nonce_has_256_bits_of_its_own_entropy() {
        let base = FlowSecrets::new(&[7; ENTROPY_LEN]);
        for bit in 0..256 {
            let mut entropy = [7; ENTROPY_LEN];
            entropy[64 + bit / 8] ^= 1 << (bit % 8);
            let other = FlowSecrets::new(&entropy);
            assert_ne!(other.nonce.as_str(), base.nonce.as_str());
            assert_eq!(other.state(), base.state());
            assert_eq!(other.verifier.as_str(), base.verifier.as_str());
        }
    }
}
