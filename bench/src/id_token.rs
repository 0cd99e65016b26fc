//! Who signed in: the CPU time to verify one ID token, per algorithm, through latchkey and
//! through `jsonwebtoken`, with `ring` alone as the floor.
//!
//! The tokens and keys are the test vectors (`tests/vectors/id_tokens.json`): one token per
//! algorithm, signed by the provider. Every contender checks the same token with the same
//! key and must accept it before it is timed:
//!
//! - latchkey: [`IdTokenPolicy::verify`](latchkey::oidc::IdTokenPolicy::verify), the whole
//!   check (JWS reading, key choice by `kid`, signature, `iss`, `aud`, `azp`, `exp`, `iat`,
//!   `nonce`, `at_hash`);
//! - `jsonwebtoken` 9 (on `ring`, the crypto latchkey's drivers use: the difference is the
//!   verifier itself) and 12 (on RustCrypto, its pure-Rust backend): `decode` with the
//!   issuer, audience and required `exp`/`iss`/`aud`/`sub` checked (it has no `nonce` or
//!   `at_hash` check; its clock is the machine's, so its leeway covers the vectors' age);
//! - floor: `ring`'s signature check alone, key and signature decoded beforehand.
//!
//! Contenders take turns round by round in one process; each round times `iterations`
//! verifications on the process CPU clock; the report gives each contender's median and
//! range over rounds, and the ratio to latchkey round by round.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::oidc::{Algorithm, Expected, KeySet};
use latchkey_tests::id_token_vectors::Vectors;
use serde_json::Value;

use crate::servers::process_cpu_nanos;

/// The contenders, in the report's order.
pub const CONTENDERS: [&str; 4] = [
    "latchkey",
    "jsonwebtoken 9 (ring)",
    "jsonwebtoken 12 (RustCrypto)",
    "ring alone (floor)",
];

/// One algorithm's figures.
#[derive(Debug, Clone)]
pub struct AlgorithmResult {
    /// The JOSE name.
    pub algorithm: &'static str,
    /// CPU nanoseconds per verification, one figure per round, by contender (in
    /// [`CONTENDERS`]' order).
    pub nanos: Vec<Vec<f64>>,
}

type Check = Box<dyn Fn() -> bool>;

/// Measures every algorithm: `rounds` rounds of `iterations` verifications per contender.
///
/// # Errors
///
/// When a contender refuses a token it must accept (the comparison would be meaningless).
pub fn run(
    rounds: usize,
    iterations: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<AlgorithmResult>, String> {
    let vectors = Vectors::get();
    let mut results = Vec::new();
    for algorithm in Algorithm::ALL {
        let case = vectors.case(&format!("{} signed by the provider", algorithm.name()));
        let checks = contenders(vectors, algorithm, &case.token)?;
        for (name, check) in CONTENDERS.iter().zip(&checks) {
            if !check() {
                return Err(format!("{name} refused the {algorithm} token"));
            }
        }
        let mut nanos = vec![Vec::with_capacity(rounds); checks.len()];
        for round in 0..rounds {
            // Each round starts with another contender, so none always runs first.
            for offset in 0..checks.len() {
                let index = (round + offset) % checks.len();
                let check = &checks[index];
                let started = process_cpu_nanos();
                for _ in 0..iterations {
                    std::hint::black_box(check());
                }
                let spent = process_cpu_nanos() - started;
                nanos[index].push(spent as f64 / f64::from(iterations));
            }
        }
        progress(&format!("ID token {algorithm}: {rounds} rounds measured"));
        results.push(AlgorithmResult {
            algorithm: algorithm.name(),
            nanos,
        });
    }
    Ok(results)
}

/// The checks of [`CONTENDERS`] for `token`, signed with `algorithm`.
fn contenders(
    vectors: &'static Vectors,
    algorithm: Algorithm,
    token: &str,
) -> Result<Vec<Check>, String> {
    let provider = vectors.provider(None);
    let keys: KeySet = vectors.keys.clone();
    let at = vectors.checked_at();
    let owned = token.to_owned();
    let latchkey: Check = Box::new(move || {
        let Some(policy) = provider.id_token_policy() else {
            return false;
        };
        let expected = Expected {
            nonce: Some(vectors.nonce()),
            access_token: Some(vectors.access_token()),
            previous: None,
        };
        policy.verify(&keys, &owned, &expected, at).is_ok()
    });

    let kid = header(token)?["kid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let jwk = vectors.keys.to_json()["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|key| key["kid"] == kid.as_str()).cloned())
        .ok_or_else(|| format!("no key {kid}"))?;
    // The vectors were issued months ago, by `jsonwebtoken`'s clock (the machine's).
    let age = SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    let aud = vectors.provider(None).client_id().to_owned();

    // The same check with either version: their APIs agree.
    macro_rules! jsonwebtoken {
        ($jwt:ident) => {{
            use $jwt as jwt;
            let key: jwt::jwk::Jwk =
                serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
            let key = jwt::DecodingKey::from_jwk(&key).map_err(|e| e.to_string())?;
            let alg: jwt::Algorithm = algorithm.name().parse().map_err(|_| "algorithm")?;
            let mut validation = jwt::Validation::new(alg);
            validation.set_issuer(&[vectors.issuer()]);
            validation.set_audience(&[aud.as_str()]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = age;
            let token = token.to_owned();
            Box::new(move || jwt::decode::<Value>(&token, &key, &validation).is_ok()) as Check
        }};
    }
    let old = jsonwebtoken!(jsonwebtoken9);
    let new = jsonwebtoken!(jsonwebtoken12);

    let ring = latchkey_io::crypto::ring();
    let public = vectors
        .keys
        .keys()
        .iter()
        .find(|key| key.kid() == Some(kid.as_str()))
        .map(|key| key.key().clone())
        .ok_or("no key")?;
    let (signed, signature) = token.rsplit_once('.').ok_or("a JWS")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    let signed = signed.as_bytes().to_vec();
    let floor: Check =
        Box::new(move || ring.verify(algorithm, &public, &signed, &signature).is_ok());

    Ok(vec![latchkey, old, new, floor])
}

/// The decoded header of `token`.
fn header(token: &str) -> Result<Value, String> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
