//! ID tokens with real signatures: every algorithm latchkey accepts and every reason to
//! refuse a token, as literal bytes (`tests/vectors/id_tokens.json`, made by the script
//! beside it; `latchkey_tests::id_token_vectors` reads them), the published RFC 7515,
//! RFC 7520 and RFC 8037 examples (`tests/vectors/rfc_jws.json`), and properties that no
//! changed byte passes. The signatures are checked by `latchkey_io::crypto::ring()`, the
//! drivers' provider.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::oidc::{Algorithm, Expected, KeySet, KeySetError, SignatureError};
use latchkey::{IdTokenError, Provider};
use latchkey_tests::id_token_vectors::Vectors;
use quickcheck::{QuickCheck, TestResult};
use serde_json::Value;

const RFC: &str = include_str!("../vectors/rfc_jws.json");

#[test]
fn s46_s47_s48_every_algorithm_and_every_rejection_as_literal_tokens() {
    let vectors = Vectors::get();
    let mut verified = Vec::new();
    for case in &vectors.cases {
        let outcome = vectors.verify(Some(case), &vectors.keys, &case.token);
        match (case.expect.as_str(), outcome) {
            ("ok", Ok(_)) => verified.push(case.name.as_str()),
            (kind, Err(error)) if error.kind() == kind => {
                // People read the reason: it names what was wrong, never the token.
                assert!(!error.to_string().contains("eyJ"), "{}: {error}", case.name);
            }
            (kind, outcome) => panic!("{}: expected {kind}, got {outcome:?}", case.name),
        }
    }
    for algorithm in vectors.algorithms() {
        let name = format!("{algorithm} signed by the provider");
        assert!(verified.contains(&name.as_str()), "{name} verified");
    }
}

#[test]
fn s48_a_verified_token_gives_the_identity_of_its_claims() {
    let vectors = Vectors::get();
    let case = &vectors.cases[0];
    let identity = vectors
        .verify(Some(case), &vectors.keys, &case.token)
        .expect("valid");
    assert_eq!(identity.iss(), "https://idp.example");
    assert_eq!(identity.sub(), "248289761001");
    assert_eq!(identity.email(), Some("jane@example.com"));
    assert_eq!(identity.email_verified(), Some(true));
    assert_eq!(identity.name(), Some("Jane Doe"));
    assert_eq!(identity.display_name(), "jane@example.com");
    assert_eq!(identity.claims()["aud"], "latchkey-cli");
}

#[test]
fn s49_a_refreshed_token_must_name_the_same_user_issuer_and_audience() {
    let vectors = Vectors::get();
    let provider = vectors.provider(None);
    let policy = provider.id_token_policy().expect("verifies");
    let at = vectors.checked_at();
    let login = Expected {
        nonce: Some(vectors.nonce()),
        ..Expected::default()
    };
    let token = |name: &str| vectors.case(name).token.as_str();
    let identity = policy
        .verify(
            &vectors.keys,
            token("RS256 signed by the provider"),
            &login,
            at,
        )
        .expect("the login's token");
    // A refresh sends no nonce: another token is checked against the stored identity.
    let refreshed = Expected {
        previous: Some(&identity),
        ..Expected::default()
    };
    let again = policy.verify(
        &vectors.keys,
        token("ES256 signed by the provider"),
        &refreshed,
        at,
    );
    assert_eq!(
        again.map(|id| id.sub().to_owned()),
        Ok("248289761001".into())
    );
    // Another audience set is refused, even one still containing this client.
    let wider = policy.verify(
        &vectors.keys,
        token("several audiences with azp of this client"),
        &refreshed,
        at,
    );
    assert_eq!(wider.err(), Some(IdTokenError::Audience));
}

#[test]
fn s47_a_rotated_key_is_unknown_to_the_old_key_set_and_verifies_with_the_new_one() {
    let vectors = Vectors::get();
    let case = vectors.case("signed by a key the provider does not publish");
    assert_eq!(
        vectors.verify(Some(case), &vectors.keys, &case.token).err(),
        Some(IdTokenError::UnknownKey)
    );
    assert!(
        vectors
            .verify(Some(case), &vectors.rotated, &case.token)
            .is_ok()
    );
}

#[test]
fn s47_the_hmac_key_of_the_set_is_never_used() {
    let keys = &Vectors::get().keys;
    assert!(keys.keys().iter().all(|key| key.kid() != Some("hmac")));
    assert_eq!(keys.keys().len(), 4);
}

/// Flipping bits of one byte of a valid token, anywhere, never leaves it valid (S46–S48):
/// the header or payload then no longer matches the signature, or no longer decodes.
#[test]
fn s47_no_single_changed_byte_of_a_token_verifies() {
    fn property(which: usize, position: usize, change: u8) -> TestResult {
        let vectors = Vectors::get();
        let valid: Vec<_> = vectors.cases.iter().filter(|c| c.expect == "ok").collect();
        let case = valid[which % valid.len()];
        let mut bytes = case.token.as_bytes().to_vec();
        let at = position % bytes.len();
        bytes[at] ^= change.max(1);
        let Ok(changed) = String::from_utf8(bytes) else {
            return TestResult::discard();
        };
        TestResult::from_bool(vectors.verify(Some(case), &vectors.keys, &changed).is_err())
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(property as fn(usize, usize, u8) -> TestResult);
}

/// Every byte position of the token of each algorithm, exhaustively: a changed signature
/// byte is a bad signature, a changed header or payload byte too, or unreadable.
#[test]
fn s47_every_byte_of_each_algorithms_token_matters() {
    let vectors = Vectors::get();
    for case in vectors.cases.iter().take(vectors.algorithms().len()) {
        for at in 0..case.token.len() {
            let mut bytes = case.token.as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).expect("ASCII");
            let outcome = vectors.verify(Some(case), &vectors.keys, &changed);
            assert!(
                outcome.is_err(),
                "{}: byte {at} changed still verifies",
                case.name
            );
        }
    }
}

/// Tokens of another algorithm's key type never reach the crypto provider with the wrong
/// key: an RS256 header naming the EC key is refused before any signature check.
#[test]
fn s46_a_key_of_another_type_is_never_tried() {
    let vectors = Vectors::get();
    let case = vectors.case("RS256 naming the EC key");
    assert_eq!(
        vectors.verify(Some(case), &vectors.keys, &case.token).err(),
        Some(IdTokenError::UnknownKey)
    );
}

fn rfc_vectors() -> Vec<Value> {
    let document: Value = serde_json::from_str(RFC).expect("JSON");
    document["vectors"].as_array().expect("vectors").clone()
}

fn text<'v>(value: &'v Value, name: &str) -> &'v str {
    value[name].as_str().expect("a string")
}

/// The published examples: each signature verifies with its key through `ring`, and a
/// changed signature does not. P-521 (ES512) is outside what latchkey accepts: its keys are
/// skipped and its algorithm is unknown.
#[test]
fn s47_rfc_7515_7520_8037_signatures() {
    let ring = latchkey_io::crypto::ring();
    let mut checked = 0;
    for vector in rfc_vectors() {
        let name = text(&vector, "name");
        let document = serde_json::json!({ "keys": [vector["jwk"]] });
        let keys = KeySet::parse(&serde_json::to_vec(&document).expect("JSON"));
        let Some(algorithm) = Algorithm::from_name(text(&vector, "alg")) else {
            assert_eq!(text(&vector, "alg"), "ES512", "{name}");
            assert_eq!(keys, Err(KeySetError::NoUsableKey), "{name}");
            continue;
        };
        let keys = keys.unwrap_or_else(|error| panic!("{name}: {error}"));
        let key = keys.keys()[0].key();
        let (signed, signature) = text(&vector, "jws").rsplit_once('.').expect("three parts");
        let mut signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        assert_eq!(
            ring.verify(algorithm, key, signed.as_bytes(), &signature),
            Ok(()),
            "{name}"
        );
        signature[7] ^= 0x10;
        assert_eq!(
            ring.verify(algorithm, key, signed.as_bytes(), &signature),
            Err(SignatureError::Invalid),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// RFC 7515's JWT examples through the whole check: the signature passes, and the token
/// then fails on its claims (its issuer is "joe"), not on its signature.
#[test]
fn s47_rfc_7515_jwts_pass_the_signature_and_fail_on_claims() {
    let jwts = rfc_vectors();
    let jwts = jwts
        .iter()
        .filter(|vector| text(vector, "name").starts_with("RFC 7515 A."));
    let mut checked = 0;
    for vector in jwts {
        let Some(algorithm) = Algorithm::from_name(text(vector, "alg")) else {
            continue;
        };
        let provider = Provider::builder("https://joe.example/a", "https://joe.example/t", "c")
            .scope("openid")
            .issuer("https://joe.example")
            .jwks_uri("https://joe.example/jwks")
            .id_token_algorithms([algorithm])
            .crypto(latchkey_io::crypto::ring())
            .build()
            .expect("valid");
        let document = serde_json::json!({ "keys": [vector["jwk"]] });
        let keys = KeySet::parse(&serde_json::to_vec(&document).expect("JSON")).expect("usable");
        let policy = provider.id_token_policy().expect("verifies");
        let jws = text(vector, "jws");
        let at = UNIX_EPOCH + Duration::from_secs(1_300_819_000);
        let outcome = policy.verify(&keys, jws, &Expected::default(), at);
        assert_eq!(outcome.err(), Some(IdTokenError::Issuer), "{algorithm}");
        let last = if jws.ends_with('A') { "B" } else { "A" };
        let forged = format!("{}{last}", &jws[..jws.len() - 1]);
        let outcome = policy.verify(&keys, &forged, &Expected::default(), at);
        assert!(
            matches!(
                outcome,
                Err(IdTokenError::Signature | IdTokenError::Malformed(_))
            ),
            "{algorithm}: {outcome:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "RS256 and ES256");
}
