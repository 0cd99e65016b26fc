//! ID tokens with real signatures: every algorithm latchkey accepts and every reason to
//! refuse a token, as literal bytes (`tests/vectors/id_tokens.json`, made by the script
//! beside it), the published RFC 7515, RFC 7520 and RFC 8037 examples
//! (`tests/vectors/rfc_jws.json`), and a property that no single changed byte passes.
//! The signatures are checked by `latchkey_io::crypto::ring()`, the drivers' provider.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::oidc::{Algorithm, Expected, KeySet, KeySetError, SignatureError};
use latchkey::{IdTokenError, Provider};
use quickcheck::{QuickCheck, TestResult};
use serde_json::Value;

const VECTORS: &str = include_str!("../vectors/id_tokens.json");
const RFC: &str = include_str!("../vectors/rfc_jws.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("the vectors are JSON")
}

fn string<'v>(value: &'v Value, name: &str) -> &'v str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` is a string"))
}

/// The provider of the vectors, with a case's changes (issuer, algorithms, max_age).
fn provider(vectors: &Value, case: &Value) -> Provider {
    let algorithms: Vec<Algorithm> = case
        .get("algorithms")
        .unwrap_or(&vectors["algorithms"])
        .as_array()
        .expect("a list")
        .iter()
        .map(|name| Algorithm::from_name(name.as_str().expect("a name")).expect("known"))
        .collect();
    let mut builder = Provider::builder(
        "https://idp.example/authorize",
        "https://idp.example/token",
        string(vectors, "client_id"),
    )
    .scopes(["openid", "email"])
    .issuer(
        case.get("issuer")
            .and_then(Value::as_str)
            .unwrap_or(string(vectors, "issuer")),
    )
    .tenant_issuer(
        case.get("tenant_issuer")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    )
    .jwks_uri("https://idp.example/jwks")
    .id_token_algorithms(algorithms)
    .crypto(latchkey_io::crypto::ring());
    if let Some(max_age) = case.get("max_age").and_then(Value::as_u64) {
        builder = builder.param("max_age", max_age.to_string());
    }
    builder.build().expect("a valid provider")
}

fn key_set(value: &Value) -> KeySet {
    KeySet::parse(&serde_json::to_vec(value).expect("JSON")).expect("a usable key set")
}

fn checked_at(vectors: &Value) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(vectors["checked_at"].as_u64().expect("a time"))
}

/// Verifies `token` as the vectors' login would: their nonce and access token.
fn verify(vectors: &Value, case: &Value, keys: &KeySet, token: &str) -> Result<(), IdTokenError> {
    let provider = provider(vectors, case);
    let expected = Expected {
        nonce: Some(string(vectors, "nonce")),
        access_token: Some(string(vectors, "access_token")),
        previous: None,
    };
    let policy = provider.id_token_policy().expect("openid is requested");
    policy
        .verify(keys, token, &expected, checked_at(vectors))
        .map(drop)
}

#[test]
fn s46_s47_s48_every_algorithm_and_every_rejection_as_literal_tokens() {
    let vectors = vectors();
    let keys = key_set(&vectors["keys"]);
    let cases = vectors["cases"].as_array().expect("cases");
    let algorithms = vectors["algorithms"].as_array().expect("algorithms");
    let mut signed_ok = Vec::new();
    for case in cases {
        let name = string(case, "name");
        let outcome = verify(&vectors, case, &keys, string(case, "token"));
        match (string(case, "expect"), outcome) {
            ("ok", Ok(())) => signed_ok.push(name),
            (kind, Err(error)) if error.kind() == kind => {
                // People read the reason: it names what was wrong, never the token.
                assert!(!error.to_string().contains("eyJ"), "{name}: {error}");
            }
            (kind, outcome) => panic!("{name}: expected {kind}, got {outcome:?}"),
        }
    }
    for algorithm in algorithms {
        let name = format!(
            "{} signed by the provider",
            algorithm.as_str().expect("a name")
        );
        assert!(signed_ok.contains(&name.as_str()), "{name} verified");
    }
}

#[test]
fn s48_a_verified_token_gives_the_identity_of_its_claims() {
    let vectors = vectors();
    let keys = key_set(&vectors["keys"]);
    let case = &vectors["cases"][0];
    let provider = provider(&vectors, case);
    let expected = Expected {
        nonce: Some(string(&vectors, "nonce")),
        access_token: Some(string(&vectors, "access_token")),
        previous: None,
    };
    let policy = provider.id_token_policy().expect("verifies");
    let identity = policy
        .verify(
            &keys,
            string(case, "token"),
            &expected,
            checked_at(&vectors),
        )
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
    let vectors = vectors();
    let keys = key_set(&vectors["keys"]);
    let provider = provider(&vectors, &Value::Null);
    let policy = provider.id_token_policy().expect("verifies");
    let at = checked_at(&vectors);
    let login = Expected {
        nonce: Some(string(&vectors, "nonce")),
        ..Expected::default()
    };
    let token = |name: &str| {
        let cases = vectors["cases"].as_array().expect("cases");
        let case = cases
            .iter()
            .find(|case| case["name"] == name)
            .expect("a case");
        string(case, "token").to_owned()
    };
    let identity = policy
        .verify(&keys, &token("RS256 signed by the provider"), &login, at)
        .expect("the login's token");
    // A refresh sends no nonce: the same token is checked against the stored identity.
    let refreshed = Expected {
        previous: Some(&identity),
        ..Expected::default()
    };
    let again = policy.verify(
        &keys,
        &token("ES256 signed by the provider"),
        &refreshed,
        at,
    );
    assert_eq!(
        again.map(|id| id.sub().to_owned()),
        Ok("248289761001".into())
    );
    // Another audience set is refused, even one still containing this client.
    let wider = policy.verify(
        &keys,
        &token("several audiences with azp of this client"),
        &refreshed,
        at,
    );
    assert_eq!(wider.err(), Some(IdTokenError::Audience));
}

#[test]
fn s47_a_rotated_key_is_unknown_to_the_old_key_set_and_verifies_with_the_new_one() {
    let vectors = vectors();
    let case = vectors["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|case| case["name"] == "signed by a key the provider does not publish")
        .expect("the rotation case");
    let token = string(case, "token");
    let old = key_set(&vectors["keys"]);
    assert_eq!(
        verify(&vectors, case, &old, token),
        Err(IdTokenError::UnknownKey)
    );
    let rotated = key_set(&vectors["rotated_keys"]);
    assert_eq!(verify(&vectors, case, &rotated, token), Ok(()));
}

#[test]
fn s47_the_hmac_key_of_the_set_is_never_used() {
    let vectors = vectors();
    let keys = key_set(&vectors["keys"]);
    assert!(keys.keys().iter().all(|key| key.kid() != Some("hmac")));
    assert_eq!(keys.keys().len(), 4);
}

/// The vectors, their key set and their valid tokens (built once; quickcheck wants a plain
/// function).
fn valid_tokens() -> &'static (Value, KeySet, Vec<Value>) {
    static FIXTURE: OnceLock<(Value, KeySet, Vec<Value>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let vectors = vectors();
        let keys = key_set(&vectors["keys"]);
        let cases = vectors["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .filter(|case| case["expect"] == "ok")
            .cloned()
            .collect();
        (vectors, keys, cases)
    })
}

/// Flipping bits of one byte of a valid token, anywhere, never leaves it valid (S46–S48):
/// the header or payload then no longer matches the signature, or no longer decodes.
#[test]
fn s47_no_single_changed_byte_of_a_token_verifies() {
    fn property(which: usize, position: usize, change: u8) -> TestResult {
        let (vectors, keys, cases) = valid_tokens();
        let case = &cases[which % cases.len()];
        let mut bytes = string(case, "token").as_bytes().to_vec();
        let at = position % bytes.len();
        bytes[at] ^= change.max(1);
        let Ok(changed) = String::from_utf8(bytes) else {
            return TestResult::discard();
        };
        TestResult::from_bool(verify(vectors, case, keys, &changed).is_err())
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(property as fn(usize, usize, u8) -> TestResult);
}

/// Every byte position of one token of each algorithm, exhaustively: a changed signature
/// byte is a bad signature, a changed header or payload byte too, or unreadable.
#[test]
fn s47_every_byte_of_each_algorithms_token_matters() {
    let vectors = vectors();
    let keys = key_set(&vectors["keys"]);
    for case in vectors["cases"].as_array().expect("cases").iter().take(9) {
        let token = string(case, "token");
        for at in 0..token.len() {
            let mut bytes = token.as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).expect("ASCII");
            let outcome = verify(&vectors, case, &keys, &changed);
            assert!(
                outcome.is_err(),
                "{}: byte {at} changed still verifies",
                string(case, "name")
            );
        }
    }
}

fn rfc_vectors() -> Vec<Value> {
    let document: Value = serde_json::from_str(RFC).expect("JSON");
    document["vectors"].as_array().expect("vectors").clone()
}

/// The published examples: each signature verifies with its key through `ring`, and a
/// changed signature does not. P-521 (ES512) is outside what latchkey accepts: its keys are
/// skipped and its algorithm is unknown.
#[test]
fn s47_rfc_7515_7520_8037_signatures() {
    let ring = latchkey_io::crypto::ring();
    let mut checked = 0;
    for vector in rfc_vectors() {
        let name = string(&vector, "name");
        let jws = string(&vector, "jws");
        let document = serde_json::json!({ "keys": [vector["jwk"]] });
        let keys = KeySet::parse(&serde_json::to_vec(&document).expect("JSON"));
        let Some(algorithm) = Algorithm::from_name(string(&vector, "alg")) else {
            assert_eq!(string(&vector, "alg"), "ES512", "{name}");
            assert_eq!(keys, Err(KeySetError::NoUsableKey), "{name}");
            continue;
        };
        let keys = keys.unwrap_or_else(|error| panic!("{name}: {error}"));
        let key = keys.keys()[0].key();
        let (signed, signature) = jws.rsplit_once('.').expect("three parts");
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
    for vector in rfc_vectors()
        .iter()
        .filter(|v| string(v, "name").starts_with("RFC 7515 A."))
    {
        let alg = string(vector, "alg");
        let Some(algorithm) = Algorithm::from_name(alg) else {
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
        let jws = string(vector, "jws");
        let at = UNIX_EPOCH + Duration::from_secs(1_300_819_000);
        let outcome = policy.verify(&keys, jws, &Expected::default(), at);
        assert_eq!(outcome.err(), Some(IdTokenError::Issuer), "{alg}");
        let forged = format!("{}A", &jws[..jws.len() - 1]);
        let forged = if forged == jws {
            format!("{}B", &jws[..jws.len() - 1])
        } else {
            forged
        };
        let outcome = policy.verify(&keys, &forged, &Expected::default(), at);
        assert!(
            matches!(
                outcome,
                Err(IdTokenError::Signature | IdTokenError::Malformed(_))
            ),
            "{alg}: {outcome:?}"
        );
    }
}

/// Tokens of another algorithm's key type never reach the crypto provider with the wrong
/// key: an RS256 header naming the EC key is refused before any signature check.
#[test]
fn s46_a_key_of_another_type_is_never_tried() {
    let vectors = vectors();
    let keys = key_set(&vectors["keys"]);
    let case = vectors["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|case| case["name"] == "RS256 naming the EC key")
        .expect("the case");
    assert_eq!(
        verify(&vectors, case, &keys, string(case, "token")),
        Err(IdTokenError::UnknownKey)
    );
}
