//! Key files and DPoP proofs from hostile input: what a user points `--client-key` at, and
//! the method, URI, nonce and token an application or a provider puts into a proof.
//!
//! Checks:
//! - a key file: no panic; a key that parses reads back from its own PKCS#8 as the same
//!   type and algorithm, and loading it with `ring` does not panic;
//! - the same bytes as a key's certificate: no panic; one that is taken has a thumbprint
//!   of 43 base64url characters, and loading the key with it does not panic;
//! - a proof: no panic; a URI that is accepted leaves `htu` without query or fragment;
//!   a signed proof verifies with `ring` and says exactly the method, `htu`, `iat`, nonce
//!   and `ath` it was made for (S61).
#![no_main]
#![forbid(unsafe_code)]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::dpop::{self, Proof, ProofError};
use latchkey::keys::{PrivateKey, Signer};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

#[derive(Debug, Arbitrary)]
struct Input {
    key_file: Vec<u8>,
    method: String,
    uri: String,
    nonce: Option<String>,
    access_token: Option<String>,
    seconds: u32,
}

/// RFC 8037 §A.1's Ed25519 key.
const KEY: &[u8] = br#"{"kty":"OKP","crv":"Ed25519",
    "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
    "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

fuzz_target!(|input: Input| {
    let ring = latchkey_io::crypto::ring();

    if let Ok(key) = PrivateKey::parse(&input.key_file) {
        let again = PrivateKey::from_der(key.pkcs8_der()).expect("its own PKCS#8 reads back");
        assert_eq!(again.key_type(), key.key_type());
        let _ = Signer::new(key, ring.clone());
    }

    let rfc_key = PrivateKey::parse(KEY).expect("the RFC key");
    if let Ok(certified) = rfc_key.clone().with_certificate(&input.key_file) {
        let thumbprint = certified.certificate_thumbprint().expect("a thumbprint");
        assert_eq!(thumbprint.len(), 43, "{thumbprint}");
        let _ = Signer::new(certified, ring.clone());
    }
    let signer = Signer::new(rfc_key, ring.clone()).expect("ring loads it");
    let Ok(mut proof) = Proof::new(&input.method, &input.uri) else {
        return;
    };
    let htu = proof.htu().to_owned();
    assert!(!htu.contains(['?', '#']), "{htu}");
    assert!(
        htu.starts_with("https://") || htu.starts_with("http://"),
        "{htu}"
    );
    if let Some(nonce) = &input.nonce {
        proof = proof.nonce(nonce);
    }
    if let Some(token) = &input.access_token {
        proof = proof.access_token(token);
    }
    let wall = UNIX_EPOCH + Duration::from_secs(input.seconds.into());
    let token = match proof.sign(&signer, wall) {
        Ok(token) => token,
        Err(ProofError::Nonce) => {
            assert!(!dpop::is_nonce(input.nonce.as_deref().unwrap_or("x")));
            return;
        }
        Err(error) => panic!("{error}"),
    };
    let (input_part, signature) = token.rsplit_once('.').expect("three parts");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    ring.verify(
        signer.algorithm(),
        signer.public_key(),
        input_part.as_bytes(),
        &signature,
    )
    .expect("the proof verifies");
    let claims: Map<String, Value> = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(input_part.split('.').nth(1).expect("claims"))
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(claims["htm"], input.method.as_str());
    assert_eq!(claims["htu"], htu.as_str());
    assert_eq!(claims["iat"], u64::from(input.seconds));
    assert_eq!(
        claims.get("nonce").and_then(Value::as_str),
        input.nonce.as_deref()
    );
    let ath = input.access_token.as_deref().map(dpop::ath);
    assert_eq!(claims.get("ath").and_then(Value::as_str), ath.as_deref());
});
