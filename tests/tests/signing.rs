//! Keys that sign for the client, client assertions (RFC 7523) in every request of a
//! `private_key_jwt` client, and DPoP proofs (RFC 9449), checked by an independent verifier: `ring` through its verification interface, on key
//! files OpenSSL made (`tests/vectors/keys/make.sh`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::crypto::{Algorithm, CryptoProvider, Curve, PublicKey, SignatureError, SigningKey};
use latchkey::dpop::{Proof, ProofError};
use latchkey::keys::{self, KeyError, KeyType, PrivateKey, Signer};
use latchkey::{Action, AssertionAudience, ClientAuth, ConfigError, FlowOptions, TokenSet};
use latchkey_tests::harness::{self, Harness};
use secrecy::SecretString;
use serde_json::{Map, Value};

fn key_file(name: &str) -> Vec<u8> {
    let path = format!("{}/vectors/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn ring() -> Arc<dyn CryptoProvider> {
    latchkey_io::crypto::ring()
}

fn signer(name: &str) -> Signer {
    let key = PrivateKey::parse(&key_file(name)).unwrap_or_else(|error| panic!("{name}: {error}"));
    Signer::new(key, ring()).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// A compact JWS taken apart and its signature checked with `key` by ring.
struct Checked {
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

fn check(token: &str, key: &PublicKey) -> Checked {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let json = |part: &str| -> Map<String, Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    let header = json(parts[0]);
    let algorithm = Algorithm::from_name(header["alg"].as_str().expect("alg")).expect("known alg");
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    let input = &token[..parts[0].len() + 1 + parts[1].len()];
    ring()
        .verify(algorithm, key, input.as_bytes(), &signature)
        .unwrap_or_else(|error| panic!("{algorithm}: {error}"));
    Checked {
        header,
        claims: json(parts[1]),
    }
}

/// The public key in a DPoP proof's `jwk` header, read back.
fn header_key(jwk: &Value) -> PublicKey {
    let bytes = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    match jwk["kty"].as_str().unwrap() {
        "EC" => PublicKey::Ec {
            curve: match jwk["crv"].as_str().unwrap() {
                "P-256" => Curve::P256,
                _ => Curve::P384,
            },
            x: bytes("x"),
            y: bytes("y"),
        },
        "OKP" => PublicKey::Ed25519(bytes("x").try_into().unwrap()),
        _ => PublicKey::Rsa {
            n: bytes("n"),
            e: bytes("e"),
        },
    }
}

const AT: u64 = 1_767_225_600;

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(AT)
}

#[test]
fn every_key_file_form_loads_and_signs_what_an_independent_verifier_accepts() {
    for (file, key_type, algorithm) in [
        (
            "rsa2048.pkcs8.pem",
            KeyType::Rsa { bits: 2048 },
            Algorithm::RS256,
        ),
        (
            "rsa2048.pkcs1.pem",
            KeyType::Rsa { bits: 2048 },
            Algorithm::RS256,
        ),
        (
            "rsa2048.pkcs8.der",
            KeyType::Rsa { bits: 2048 },
            Algorithm::RS256,
        ),
        (
            "rsa2048.pkcs1.der",
            KeyType::Rsa { bits: 2048 },
            Algorithm::RS256,
        ),
        (
            "rsa2048.jwk.json",
            KeyType::Rsa { bits: 2048 },
            Algorithm::RS256,
        ),
        ("p256.sec1.pem", KeyType::Ec(Curve::P256), Algorithm::ES256),
        ("p256.sec1.der", KeyType::Ec(Curve::P256), Algorithm::ES256),
        ("p256.pkcs8.pem", KeyType::Ec(Curve::P256), Algorithm::ES256),
        ("p256.jwk.json", KeyType::Ec(Curve::P256), Algorithm::ES256),
        ("p384.pkcs8.pem", KeyType::Ec(Curve::P384), Algorithm::ES384),
        ("ed25519.pkcs8.pem", KeyType::Ed25519, Algorithm::EdDSA),
    ] {
        let key = PrivateKey::parse(&key_file(file)).unwrap();
        assert_eq!(
            (key.key_type(), key.algorithm()),
            (key_type, algorithm),
            "{file}"
        );
        let signer = Signer::new(key, ring()).unwrap_or_else(|error| panic!("{file}: {error}"));
        let assertion = signer
            .client_assertion("cli", "https://idp.example", at())
            .unwrap();
        let checked = check(&assertion, signer.public_key());
        assert_eq!(checked.header["alg"], algorithm.name(), "{file}");
    }
}

#[test]
fn an_rsa_key_signs_pss_when_asked() {
    let key = PrivateKey::parse(&key_file("rsa2048.pkcs8.pem"))
        .unwrap()
        .with_algorithm(Algorithm::PS256)
        .unwrap();
    let signer = Signer::new(key, ring()).unwrap();
    let assertion = signer
        .client_assertion("cli", "https://idp.example", at())
        .unwrap();
    assert_eq!(
        check(&assertion, signer.public_key()).header["alg"],
        "PS256"
    );
}

#[test]
fn the_forms_of_one_key_are_one_key() {
    let thumbprints = |files: &[&str]| -> Vec<String> {
        files
            .iter()
            .map(|file| signer(file).thumbprint().to_owned())
            .collect()
    };
    let rsa = thumbprints(&[
        "rsa2048.pkcs8.pem",
        "rsa2048.pkcs1.pem",
        "rsa2048.pkcs8.der",
        "rsa2048.pkcs1.der",
        "rsa2048.jwk.json",
    ]);
    assert!(rsa.windows(2).all(|pair| pair[0] == pair[1]), "{rsa:?}");
    let ec = thumbprints(&[
        "p256.sec1.pem",
        "p256.sec1.der",
        "p256.pkcs8.pem",
        "p256.jwk.json",
    ]);
    assert!(ec.windows(2).all(|pair| pair[0] == pair[1]), "{ec:?}");
    assert_ne!(rsa[0], ec[0]);
    // The JWK's kid names the key in assertions.
    let assertion = signer("p256.jwk.json")
        .client_assertion("cli", "https://idp.example", at())
        .unwrap();
    let checked = check(&assertion, signer("p256.pkcs8.pem").public_key());
    assert_eq!(checked.header.get("kid"), Some(&Value::from("ec-1")));
}

#[test]
fn s63_weak_or_mismatched_keys_are_configuration_errors() {
    let parse = |file: &str| PrivateKey::parse(&key_file(file)).map(|_| ()).unwrap_err();
    assert_eq!(parse("rsa1024.pkcs8.pem"), KeyError::WeakKey { bits: 1024 });
    assert!(matches!(
        parse("p521.pkcs8.pem"),
        KeyError::UnsupportedType(_)
    ));
    assert!(matches!(
        parse("x25519.pkcs8.pem"),
        KeyError::UnsupportedType(_)
    ));
    assert!(matches!(
        parse("rsapss.pkcs8.pem"),
        KeyError::UnsupportedType(_)
    ));
    assert_eq!(parse("p256.encrypted.pem"), KeyError::Encrypted);
    assert_eq!(parse("p256.public.pem"), KeyError::PublicOnly);

    let jwk = |edit: &dyn Fn(&mut Map<String, Value>)| {
        let mut object: Map<String, Value> =
            serde_json::from_slice(&key_file("p256.jwk.json")).unwrap();
        edit(&mut object);
        PrivateKey::parse(&serde_json::to_vec(&object).unwrap())
            .and_then(|key| Signer::new(key, ring()))
            .map(|_| ())
            .unwrap_err()
    };
    assert_eq!(
        jwk(&|o| {
            o.insert("alg".into(), "HS256".into());
        }),
        KeyError::WeakAlgorithm("HS256".into())
    );
    assert_eq!(
        jwk(&|o| {
            o.insert("alg".into(), "none".into());
        }),
        KeyError::WeakAlgorithm("none".into())
    );
    assert_eq!(
        jwk(&|o| {
            o.insert("alg".into(), "RS256".into());
        }),
        KeyError::AlgorithmMismatch {
            key: KeyType::Ec(Curve::P256),
            algorithm: Algorithm::RS256
        }
    );
    assert_eq!(
        jwk(&|o| {
            o.remove("d");
        }),
        KeyError::PublicOnly
    );
    assert_eq!(
        jwk(&|o| {
            o.insert("use".into(), "enc".into());
        }),
        KeyError::NotForSigning
    );
    assert!(matches!(
        jwk(&|o| {
            o.insert("crv".into(), "P-521".into());
        }),
        KeyError::UnsupportedType(_)
    ));
    // A public point that is not the private key's: ring refuses the pair.
    assert!(matches!(
        jwk(&|o| {
            let y = o["y"].as_str().unwrap().replace('r', "s");
            o.insert("y".into(), y.into());
        }),
        KeyError::Provider(_) | KeyError::Malformed(_)
    ));
    assert_eq!(
        PrivateKey::parse(br#"{"kty":"oct","k":"c2VjcmV0"}"#).unwrap_err(),
        KeyError::SharedSecret
    );
    // An Ed25519 JWK whose x is not its d's: refused before anything is signed.
    let ed25519 = br#"{"kty":"OKP","crv":"Ed25519",
        "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        "x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
    let key = PrivateKey::parse(ed25519).unwrap();
    assert_eq!(
        Signer::new(key, ring()).unwrap_err(),
        KeyError::PublicKeyMismatch
    );
    for garbage in [
        &b""[..],
        b"hello",
        b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        b"[1]",
    ] {
        let error = PrivateKey::parse(garbage).unwrap_err();
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn s63_client_assertions_name_the_client_and_issuer_live_a_minute_and_never_repeat() {
    let signer = signer("ed25519.pkcs8.pem");
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..100 {
        let assertion = signer
            .client_assertion("my-cli", "https://idp.example", at())
            .unwrap();
        let Checked { header, claims } = check(&assertion, signer.public_key());
        assert_eq!(header.len(), 1, "only alg: {header:?}");
        assert_eq!(claims["iss"], "my-cli");
        assert_eq!(claims["sub"], "my-cli");
        assert_eq!(claims["aud"], "https://idp.example");
        assert_eq!(claims["iat"], AT);
        assert_eq!(claims["exp"], AT + keys::ASSERTION_LIFETIME.as_secs());
        assert!(keys::ASSERTION_LIFETIME <= Duration::from_secs(300));
        let jti = claims["jti"].as_str().unwrap().to_owned();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&jti).unwrap().len(),
            16,
            "128 random bits"
        );
        assert!(jtis.insert(jti), "a jti repeated");
        assert_eq!(claims.len(), 6, "{claims:?}");
    }
}

/// ring's signatures with a random source of zeros: Ed25519 signatures are deterministic,
/// so a whole proof can be golden.
#[derive(Debug)]
struct ZeroRandom;

impl CryptoProvider for ZeroRandom {
    fn verify(
        &self,
        algorithm: Algorithm,
        key: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        ring().verify(algorithm, key, message, signature)
    }

    fn signing_key(&self, key: &PrivateKey) -> Result<Arc<dyn SigningKey>, SignatureError> {
        ring().signing_key(key)
    }

    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), SignatureError> {
        bytes.fill(0);
        Ok(())
    }
}

/// RFC 8037 §A.1's Ed25519 key.
const RFC8037_KEY: &[u8] = br#"{"kty":"OKP","crv":"Ed25519",
    "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
    "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

#[test]
fn s61_a_golden_dpop_proof() {
    let signer = Signer::new(
        PrivateKey::parse(RFC8037_KEY).unwrap(),
        Arc::new(ZeroRandom),
    )
    .unwrap();
    // RFC 8037 §A.3.
    assert_eq!(
        signer.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    let proof = Proof::new("POST", "https://idp.example/token?x=1#y")
        .unwrap()
        .nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v")
        .sign(&signer, at())
        .unwrap();
    assert_eq!(
        proof,
        "eyJhbGciOiJFZERTQSIsImp3ayI6eyJjcnYiOiJFZDI1NTE5Iiwia3R5IjoiT0tQIiwieCI6IjExcVlBWUt4Q3JmVlNfN1R5V1FIT2c3aGN2UGFwaU1scndJYWFQY0hVUm8ifSwidHlwIjoiZHBvcCtqd3QifQ.\
         eyJodG0iOiJQT1NUIiwiaHR1IjoiaHR0cHM6Ly9pZHAuZXhhbXBsZS90b2tlbiIsImlhdCI6MTc2NzIyNTYwMCwianRpIjoiQUFBQUFBQUFBQUFBQUFBQUFBQUFBQSIsIm5vbmNlIjoiZXlKN1NfekcuZXlKSDAtWi5IWDR3LTd2In0.\
         cBvdIVJ1c0AQTHY6KcJUctGf4FeJ5jinMo0qEocJjvqa5FHQI_ea7ExP95cJJLOXjoee6wPCUhxsIfVII1BTBg"
    );
    // The signature is the key's own: an independent verifier accepts it.
    let checked = check(&proof, signer.public_key());
    assert_eq!(checked.claims["nonce"], "eyJ7S_zG.eyJH0-Z.HX4w-7v");
}

#[test]
fn s61_dpop_proofs_carry_the_request_a_fresh_jti_and_the_public_key_only() {
    let signer = Signer::generate(Algorithm::ES256, ring()).unwrap();
    let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..50 {
        let proof = Proof::new("GET", "https://api.example/me?page=2")
            .unwrap()
            .access_token(token)
            .sign(&signer, at())
            .unwrap();
        let Checked { header, claims } = check(&proof, signer.public_key());
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        let jwk = header["jwk"].as_object().unwrap();
        let mut members: Vec<&str> = jwk.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["crv", "kty", "x", "y"], "no private member");
        assert_eq!(&header_key(&header["jwk"]), signer.public_key());
        assert_eq!(
            keys::thumbprint(&header_key(&header["jwk"])),
            signer.thumbprint()
        );
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example/me");
        assert_eq!(claims["iat"], AT);
        assert_eq!(claims["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        assert!(claims.get("nonce").is_none());
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
    let bad_nonce = Proof::new("POST", "https://idp.example/token")
        .unwrap()
        .nonce("a b")
        .sign(&signer, at());
    assert_eq!(bad_nonce, Err(ProofError::Nonce));
}

#[test]
fn s61_a_generated_key_survives_its_pkcs8_and_never_shows_in_debug() {
    for algorithm in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
        let signer = Signer::generate(algorithm, ring()).unwrap();
        let der = signer.private_key().pkcs8_der().to_vec();
        let again = Signer::new(PrivateKey::from_pkcs8_der(der.clone()).unwrap(), ring()).unwrap();
        assert_eq!(again.thumbprint(), signer.thumbprint());
        assert_eq!(again.algorithm(), algorithm);
        let shown = format!("{signer:?} {:?} {again:?}", signer.private_key());
        let hex: String = der.iter().map(|byte| format!("{byte:02x}")).collect();
        for window in der.windows(8).step_by(4) {
            let b64 = URL_SAFE_NO_PAD.encode(&window[..6]);
            assert!(!shown.contains(&b64), "{shown}");
        }
        assert!(!shown.contains(&hex[hex.len() - 16..]), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", &der[der.len() - 8..])),
            "{shown}"
        );
    }
    assert!(matches!(
        Signer::generate(Algorithm::RS256, ring()),
        Err(KeyError::WeakAlgorithm(_))
    ));
}

/// A provider that only verifies: signing is a configuration error, not a panic.
#[derive(Debug)]
struct VerifyOnly;

impl CryptoProvider for VerifyOnly {
    fn verify(
        &self,
        _: Algorithm,
        _: &PublicKey,
        _: &[u8],
        _: &[u8],
    ) -> Result<(), SignatureError> {
        Err(SignatureError::Invalid)
    }
}

#[test]
fn a_provider_that_cannot_sign_is_a_configuration_error() {
    let key = PrivateKey::parse(&key_file("p256.pkcs8.pem")).unwrap();
    assert_eq!(
        Signer::new(key, Arc::new(VerifyOnly)).unwrap_err(),
        KeyError::Provider(SignatureError::Unsupported)
    );
    assert_eq!(
        Signer::generate(Algorithm::ES256, Arc::new(VerifyOnly)).unwrap_err(),
        KeyError::Provider(SignatureError::Unsupported)
    );
}

// ----- private_key_jwt in the machines' requests -----

fn jwt_provider() -> latchkey::ProviderBuilder {
    harness::provider()
        .client_key(PrivateKey::parse(&key_file("p256.pkcs8.pem")).unwrap())
        .crypto(ring())
        .revocation_endpoint("https://idp.example/revoke")
        .device_authorization_endpoint("https://idp.example/device")
}

/// The form body's `(name, value)` pairs, decoded.
fn form(request: &http::Request<Vec<u8>>) -> Vec<(String, String)> {
    std::str::from_utf8(request.body())
        .unwrap()
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (
                harness::percent_decode(name),
                harness::percent_decode(value),
            )
        })
        .collect()
}

#[test]
fn s63_private_key_jwt_requests_carry_an_assertion_made_when_they_are_sent() {
    let provider = jwt_provider().build().unwrap();
    assert_eq!(provider.client_auth(), ClientAuth::PrivateKeyJwt);
    let public = signer("p256.pkcs8.pem").public_key().clone();
    let mut h = Harness::with(harness::config_with(provider).build().unwrap());
    let started = h.start();
    let query = format!(
        "code=auth-code-1&state={}&iss=https%3A%2F%2Fidp.example",
        started.state
    );
    let (_, actions) = h.callback(&query);
    let request = actions
        .into_iter()
        .find_map(|action| match action {
            Action::SendTokenRequest { request, .. } => Some(request),
            _ => None,
        })
        .expect("a token request");
    assert!(request.is_signed());
    // As built: no client_id, no secret, no assertion yet.
    let built = form(request.request());
    assert!(
        built.iter().all(|(name, _)| !name.starts_with("client_")),
        "{built:?}"
    );
    assert!(request.request().headers().get("authorization").is_none());

    let sent = request.finish(at()).unwrap();
    let pairs = form(&sent);
    let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "code",
            "redirect_uri",
            "code_verifier",
            "client_assertion_type",
            "client_assertion"
        ]
    );
    assert_eq!(pairs[4].1, keys::ASSERTION_TYPE);
    let Checked { claims, .. } = check(&pairs[5].1, &public);
    assert_eq!(claims["iss"], "latchkey-test");
    assert_eq!(claims["sub"], "latchkey-test");
    assert_eq!(claims["aud"], harness::ISSUER);
    assert_eq!(claims["iat"], AT);
}

#[test]
fn s63_refresh_revocation_and_device_requests_are_signed_too() {
    let provider = jwt_provider().build().unwrap();
    for request in client_requests(&provider) {
        assert!(request.is_signed(), "{request:?}");
        let sent = request.finish(at()).unwrap();
        let pairs = form(&sent);
        assert!(
            pairs.iter().any(|(name, _)| name == "client_assertion"),
            "{pairs:?}"
        );
        assert!(
            pairs
                .iter()
                .all(|(name, _)| name != "client_id" && name != "client_secret")
        );
    }
}

#[test]
fn s63_the_assertion_audience_is_the_issuer_or_the_endpoint_each_request_goes_to() {
    let public = signer("p256.pkcs8.pem").public_key().clone();
    let audiences = |provider: &latchkey::Provider| -> Vec<(String, Value)> {
        client_requests(provider)
            .into_iter()
            .map(|request| {
                let sent = request.finish(at()).unwrap();
                let (_, assertion) = form(&sent)
                    .into_iter()
                    .find(|(name, _)| name == "client_assertion")
                    .expect("an assertion");
                let Checked { claims, .. } = check(&assertion, &public);
                (sent.uri().to_string(), claims["aud"].clone())
            })
            .collect()
    };
    // The default: the issuer, whatever the endpoint.
    let by_issuer = audiences(&jwt_provider().build().unwrap());
    assert_eq!(by_issuer.len(), 4, "device, refresh, two revocations");
    for (uri, aud) in &by_issuer {
        assert_eq!(aud, harness::ISSUER, "{uri}");
    }
    // Okta's and Entra's way: the URL each request is sent to, without a query.
    let by_endpoint = jwt_provider()
        .assertion_audience(AssertionAudience::Endpoint)
        .build()
        .unwrap();
    assert_eq!(
        by_endpoint.assertion_audience(),
        AssertionAudience::Endpoint
    );
    let sent = audiences(&by_endpoint);
    let uris: Vec<&str> = sent.iter().map(|(uri, _)| uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "https://idp.example/device",
            harness::TOKEN,
            "https://idp.example/revoke",
            "https://idp.example/revoke"
        ]
    );
    for (uri, aud) in &sent {
        assert_eq!(aud, uri.as_str());
    }
    // The endpoint needs no issuer; the issuer does.
    let without_issuer = || {
        latchkey::Provider::builder(
            "https://idp.example/authorize",
            "https://idp.example/token?tenant=a",
            "cli",
        )
        .revocation_endpoint("https://idp.example/revoke")
        .client_key(PrivateKey::parse(&key_file("p256.pkcs8.pem")).unwrap())
        .crypto(ring())
    };
    assert_eq!(
        without_issuer().build().err(),
        Some(ConfigError::AssertionNeedsIssuer)
    );
    let provider = without_issuer()
        .assertion_audience(AssertionAudience::Endpoint)
        .build()
        .expect("no issuer needed");
    let tokens = TokenSet::new(SecretString::from("access-1"))
        .with_refresh_token(SecretString::from("refresh-1"));
    let refresh = support_requests(&provider, &tokens).remove(0);
    let sent = refresh.finish(at()).unwrap();
    let (_, assertion) = form(&sent)
        .into_iter()
        .find(|(name, _)| name == "client_assertion")
        .unwrap();
    let Checked { claims, .. } = check(&assertion, &public);
    assert_eq!(
        claims["aud"], "https://idp.example/token",
        "the endpoint without its query"
    );
    // The presets of the providers that want it.
    for preset in [
        latchkey::presets::okta("dev-1.okta.com", "cli"),
        latchkey::presets::entra("organizations", "cli"),
    ] {
        let provider = preset
            .client_key(PrivateKey::parse(&key_file("p256.pkcs8.pem")).unwrap())
            .crypto(ring())
            .build()
            .unwrap();
        assert_eq!(provider.assertion_audience(), AssertionAudience::Endpoint);
    }
    assert_eq!(
        AssertionAudience::from_name("endpoint"),
        Some(AssertionAudience::Endpoint)
    );
    assert_eq!(AssertionAudience::from_name("Issuer"), None);
}

#[test]
fn s63_a_certificate_is_named_in_the_assertion_by_its_sha256_thumbprint() {
    use sha2::Digest as _;
    for name in ["rsa2048", "p256", "ed25519"] {
        let pem = key_file(&format!("{name}.cert.pem"));
        let key = PrivateKey::parse(&key_file(&format!("{name}.pkcs8.pem")))
            .unwrap()
            .with_certificate(&pem)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        // Computed here from the certificate's DER, independently of latchkey.
        let body: String = String::from_utf8(pem)
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let expected = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der));
        assert_eq!(key.certificate_thumbprint(), Some(expected.as_str()));
        assert!(format!("{key:?}").contains(&expected), "Debug names it");
        let signer = Signer::new(key, ring()).unwrap_or_else(|error| panic!("{name}: {error}"));
        let assertion = signer
            .client_assertion("cli", "https://idp.example/token", at())
            .unwrap();
        let Checked { header, claims } = check(&assertion, signer.public_key());
        assert_eq!(header["x5t#S256"], expected.as_str(), "{name}");
        assert_eq!(claims["aud"], "https://idp.example/token");
    }
    // The same certificate as DER, and as pinned (openssl x509 -fingerprint -sha256).
    let der = PrivateKey::parse(&key_file("p256.pkcs8.pem"))
        .unwrap()
        .with_certificate(&key_file("p256.cert.der"))
        .unwrap();
    assert_eq!(
        der.certificate_thumbprint(),
        Some("xX1nCtTtz8IcIN8R_SHwSJy7dK1xohkPYg0-M3c6r2k")
    );
    // Without a certificate, no such header.
    let plain = signer("p256.pkcs8.pem")
        .client_assertion("cli", harness::ISSUER, at())
        .unwrap();
    let Checked { header, .. } = check(&plain, signer("p256.pkcs8.pem").public_key());
    assert!(!header.contains_key("x5t#S256"));
    // Another key's certificate is refused when the key is loaded.
    let other = PrivateKey::parse(&key_file("p256.pkcs8.pem"))
        .unwrap()
        .with_certificate(&key_file("rsa2048.cert.pem"))
        .expect("a certificate");
    assert_eq!(
        Signer::new(other, ring()).err(),
        Some(KeyError::CertificateMismatch)
    );
    // Not certificates.
    let key = || PrivateKey::parse(&key_file("p256.pkcs8.pem")).unwrap();
    let truncated = &key_file("p256.cert.der")[..200];
    for (what, bytes) in [
        ("a private key", key_file("p256.pkcs8.pem")),
        ("a public key", key_file("p256.public.pem")),
        ("truncated DER", truncated.to_vec()),
        ("text", b"hello".to_vec()),
        ("empty", Vec::new()),
    ] {
        assert!(
            matches!(
                key().with_certificate(&bytes),
                Err(KeyError::Certificate(_))
            ),
            "{what}"
        );
    }
}

/// Every request but the code exchange that authenticates the client: a device
/// authorization request, then a refresh and a logout's two revocations.
fn client_requests(provider: &latchkey::Provider) -> Vec<latchkey::ProviderRequest> {
    let mut h = Harness::with(harness::config_with(provider.clone()).build().unwrap());
    h.engine
        .start_device(h.now, FlowOptions::new())
        .expect("a device endpoint");
    let device = h
        .drain()
        .into_iter()
        .find_map(|action| match action {
            Action::RequestDeviceCode { request, .. } => Some(request),
            _ => None,
        })
        .unwrap();
    let tokens = TokenSet::new(SecretString::from("access-1"))
        .with_refresh_token(SecretString::from("refresh-1"));
    std::iter::once(device)
        .chain(support_requests(provider, &tokens))
        .collect()
}

/// A refresh and a logout's two revocations of `tokens`, as a session emits them.
fn support_requests(
    provider: &latchkey::Provider,
    tokens: &TokenSet,
) -> Vec<latchkey::ProviderRequest> {
    use latchkey::session::{Session, SessionAction};
    let (now, wall) = (std::time::Instant::now(), at());
    let mut session = Session::new(provider.clone());
    let mut requests = Vec::new();
    session.refresh(now);
    let Some(SessionAction::Load { op }) = session.poll_action() else {
        panic!("a load")
    };
    session.handle_loaded(now, wall, op, Ok(Some(tokens.clone())));
    let Some(SessionAction::Send { request, .. }) = session.poll_action() else {
        panic!("a refresh")
    };
    requests.push(request);
    let mut session = Session::new(provider.clone());
    session.logout(now);
    let Some(SessionAction::Load { op }) = session.poll_action() else {
        panic!("a load")
    };
    session.handle_loaded(now, wall, op, Ok(Some(tokens.clone())));
    let Some(SessionAction::Send { id, request, .. }) = session.poll_action() else {
        panic!("a revocation")
    };
    requests.push(request);
    let ok = http::Response::builder()
        .status(200)
        .body(Vec::new())
        .unwrap();
    session.handle_response(now, wall, id, ok);
    let Some(SessionAction::Send { request, .. }) = session.poll_action() else {
        panic!("a second revocation")
    };
    requests.push(request);
    requests
}

#[test]
fn s63_private_key_jwt_is_configured_completely_or_not_at_all() {
    let key = || PrivateKey::parse(&key_file("p256.pkcs8.pem")).unwrap();
    let base = || {
        latchkey::Provider::builder(
            "https://idp.example/authorize",
            "https://idp.example/token",
            "cli",
        )
    };
    assert_eq!(
        base().client_auth(ClientAuth::PrivateKeyJwt).build().err(),
        Some(ConfigError::MissingClientKey)
    );
    assert_eq!(
        base().client_key(key()).crypto(ring()).build().err(),
        Some(ConfigError::AssertionNeedsIssuer)
    );
    assert_eq!(
        base()
            .client_key(key())
            .issuer("https://idp.example")
            .build()
            .err(),
        Some(ConfigError::ClientKey(KeyError::Provider(
            SignatureError::Unsupported
        ))),
        "no crypto provider to sign with"
    );
    assert_eq!(
        base()
            .client_key(key())
            .client_auth(ClientAuth::None)
            .build()
            .err(),
        Some(ConfigError::UnusedClientKey)
    );
    assert_eq!(
        base()
            .client_key(key())
            .client_secret(SecretString::from("s"))
            .client_auth(ClientAuth::PrivateKeyJwt)
            .issuer("https://idp.example")
            .crypto(ring())
            .build()
            .err(),
        Some(ConfigError::UnusedClientSecret)
    );
    assert_eq!(
        base()
            .client_key(key())
            .issuer("https://idp.example")
            .crypto(Arc::new(VerifyOnly))
            .build()
            .err(),
        Some(ConfigError::ClientKey(KeyError::Provider(
            SignatureError::Unsupported
        )))
    );
    let message = ConfigError::ClientKey(KeyError::WeakKey { bits: 1024 }).to_string();
    assert!(message.contains("1024"), "{message}");
}
