//! Per-flow secrets: the PKCE verifier and challenge (RFC 7636) and the `state` value.
//!
//! Both come straight from the caller's entropy: 32 bytes each, base64url without padding,
//! 43 characters of the unreserved alphabet (S1, S2). The state is random and nothing else:
//! it carries no meaning (S3). The engine never stores the state itself, only its SHA-256
//! digest, which it uses to find the flow a callback belongs to (see [`StateKey`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The entropy a flow needs: 32 bytes for the verifier, 32 for the state.
pub const ENTROPY_LEN: usize = 64;

/// The secrets of one flow, fresh from the caller's entropy.
pub struct FlowSecrets {
    /// The PKCE `code_verifier`; sent only in the token request.
    pub verifier: SecretString,
    /// `BASE64URL(SHA256(verifier))`, sent in the authorization URL.
    pub challenge: String,
    /// The `state` parameter.
    pub state: SecretString,
}

impl FlowSecrets {
    /// Derives the secrets from 64 bytes of entropy.
    pub fn new(entropy: &[u8; ENTROPY_LEN]) -> FlowSecrets {
        let (verifier_bytes, state_bytes) = entropy.split_at(ENTROPY_LEN / 2);
        let verifier = URL_SAFE_NO_PAD.encode(verifier_bytes);
        FlowSecrets {
            challenge: challenge_s256(&verifier),
            verifier: verifier.into(),
            state: URL_SAFE_NO_PAD.encode(state_bytes).into(),
        }
    }
}

/// The S256 code challenge for `verifier` (RFC 7636 §4.2).
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The key under which a flow is found by its `state`: SHA-256 of the state.
///
/// Callbacks are routed by looking this digest up in an ordered map. The comparisons that
/// lookup makes take time that depends on the digest of the attacker's guess, never on the
/// state itself, so timing reveals nothing that helps forge a state (S10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateKey([u8; 32]);

impl StateKey {
    /// The key of `state`.
    pub fn of(state: &str) -> StateKey {
        StateKey(Sha256::digest(state.as_bytes()).into())
    }

    /// The key of a flow's secret state.
    pub fn of_secret(state: &SecretString) -> StateKey {
        StateKey::of(state.expose_secret())
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
            secrets.verifier.expose_secret(),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        assert_eq!(
            secrets.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn s1_s2_verifier_and_state_are_43_unreserved_characters_from_separate_entropy() {
        let entropy: [u8; ENTROPY_LEN] = std::array::from_fn(|i| i as u8);
        let secrets = FlowSecrets::new(&entropy);
        for value in [
            secrets.verifier.expose_secret(),
            secrets.state.expose_secret(),
        ] {
            assert_eq!(value.len(), 43);
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            );
        }
        assert_ne!(
            secrets.verifier.expose_secret(),
            secrets.state.expose_secret()
        );
    }

    #[test]
    fn s2_state_changes_with_every_bit_of_its_entropy() {
        let base = FlowSecrets::new(&[7; ENTROPY_LEN]);
        for bit in 0..256 {
            let mut entropy = [7; ENTROPY_LEN];
            entropy[32 + bit / 8] ^= 1 << (bit % 8);
            let other = FlowSecrets::new(&entropy);
            assert_ne!(other.state.expose_secret(), base.state.expose_secret());
            assert_eq!(
                other.verifier.expose_secret(),
                base.verifier.expose_secret()
            );
        }
    }
}
