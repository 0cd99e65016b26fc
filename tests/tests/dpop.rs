//! DPoP (RFC 9449) in the machines: a login's key binds its code and tokens, every token,
//! refresh and revocation request carries a proof made when it is sent, the provider's
//! nonce is answered by one retry (S61, S62). Proofs are checked by `ring` as verifier.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::crypto::{Algorithm, CryptoProvider, Curve, PublicKey};
use latchkey::directory::DirectoryError;
use latchkey::keys;
use latchkey::session::{Purpose, Session, SessionAction};
use latchkey::{
    Action, BadTokenResponse, ConfigError, ExchangeId, FlowError, FlowOptions, Provider,
    ProviderRequest, RefreshError, TokenSet, TokenType,
};
use latchkey_tests::harness::{self, Harness, Replicas};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

fn ring() -> Arc<dyn CryptoProvider> {
    latchkey_io::crypto::ring()
}

fn dpop_provider() -> Provider {
    harness::provider()
        .dpop(Algorithm::ES256)
        .crypto(ring())
        .revocation_endpoint("https://idp.example/revoke")
        .build()
        .expect("a DPoP provider")
}

const AT: u64 = 1_767_225_600;

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(AT)
}

/// A proof's header and claims, its signature checked by ring with the key of its own
/// `jwk` header, which is returned too.
fn proof_of(
    request: &http::Request<Vec<u8>>,
) -> (Map<String, Value>, Map<String, Value>, PublicKey) {
    let proof = request
        .headers()
        .get("dpop")
        .expect("a DPoP header")
        .to_str()
        .unwrap();
    let parts: Vec<&str> = proof.split('.').collect();
    assert_eq!(parts.len(), 3);
    let json = |part: &str| -> Map<String, Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let (header, claims) = (json(parts[0]), json(parts[1]));
    let bytes = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(header["jwk"][name].as_str().unwrap())
            .unwrap()
    };
    let key = PublicKey::Ec {
        curve: Curve::P256,
        x: bytes("x"),
        y: bytes("y"),
    };
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    ring()
        .verify(
            Algorithm::ES256,
            &key,
            &proof.as_bytes()[..parts[0].len() + 1 + parts[1].len()],
            &signature,
        )
        .expect("the proof verifies with its own key");
    assert_eq!(header["typ"], "dpop+jwt");
    (header, claims, key)
}

fn token_request(actions: Vec<Action>) -> (ExchangeId, ProviderRequest) {
    actions
        .into_iter()
        .find_map(|action| match action {
            Action::SendTokenRequest {
                exchange, request, ..
            } => Some((exchange, request)),
            _ => None,
        })
        .expect("a token request")
}

fn dpop_answer(status: u16, body: &str, nonce: Option<&str>) -> Vec<u8> {
    let nonce = nonce.map_or(String::new(), |nonce| format!("DPoP-Nonce: {nonce}\r\n"));
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{nonce}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const BOUND: &str = r#"{"access_token":"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU","token_type":"DPoP","expires_in":3600,"refresh_token":"refresh-1"}"#;

/// A login up to its first token request.
fn to_exchange(h: &mut Harness) -> (String, ExchangeId, ProviderRequest) {
    let started = h.start();
    let jkt = harness::query_value(&started.url, "dpop_jkt").expect("dpop_jkt in the URL");
    let query = format!(
        "code=auth-code-1&state={}&iss=https%3A%2F%2Fidp.example",
        started.state
    );
    let (_, actions) = h.callback(&query);
    let (exchange, request) = token_request(actions);
    (jkt, exchange, request)
}

fn finished(actions: &[Action]) -> Option<&Result<TokenSet, FlowError>> {
    actions.iter().find_map(|action| match action {
        Action::Finished { result, .. } => Some(result),
        _ => None,
    })
}

fn persisted(actions: &[Action]) -> Option<&TokenSet> {
    actions.iter().find_map(|action| match action {
        Action::Persist { tokens, .. } => Some(tokens),
        _ => None,
    })
}

#[test]
fn s61_a_dpop_login_binds_its_code_and_tokens_to_its_own_key() {
    let mut h = Harness::with(harness::config_with(dpop_provider()).build().unwrap());
    let (jkt, exchange, request) = to_exchange(&mut h);
    assert!(request.has_dpop());
    let sent = request.finish(at()).unwrap();
    let (header, claims, key) = proof_of(&sent);
    assert_eq!(
        keys::thumbprint(&key),
        jkt,
        "dpop_jkt is the proof key's thumbprint"
    );
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], harness::TOKEN);
    assert_eq!(claims["iat"], AT);
    assert!(claims.get("ath").is_none(), "no token is presented");
    assert!(claims.get("nonce").is_none());

    let actions = h.token_response(exchange, &dpop_answer(200, BOUND, None));
    let tokens = persisted(&actions).expect("bound tokens are stored");
    assert_eq!(*tokens.token_type(), TokenType::DPoP);
    let key = tokens
        .dpop_key()
        .expect("the login's key is kept with them");
    let signer = keys::Signer::new(key.clone(), ring()).unwrap();
    assert_eq!(signer.thumbprint(), jkt);

    // Each login has a key of its own.
    let mut h = Harness::with(harness::config_with(dpop_provider()).build().unwrap());
    let (other, _, _) = to_exchange(&mut h);
    assert_ne!(other, jkt);
}

#[test]
fn s61_bearer_tokens_for_a_dpop_login_are_refused() {
    let mut h = Harness::with(harness::config_with(dpop_provider()).build().unwrap());
    let (_, exchange, _) = to_exchange(&mut h);
    let bearer = BOUND.replace(r#""DPoP""#, r#""Bearer""#);
    let actions = h.token_response(exchange, &dpop_answer(200, &bearer, None));
    assert!(persisted(&actions).is_none(), "nothing stored");
    assert!(
        matches!(
            finished(&actions),
            Some(Err(FlowError::BadTokenResponse {
                status: 200,
                reason: BadTokenResponse::NotDpopBound
            }))
        ),
        "{actions:?}"
    );
}

#[test]
fn s62_use_dpop_nonce_is_answered_once_with_the_nonce_which_is_kept() {
    let mut h = Harness::with(harness::config_with(dpop_provider()).build().unwrap());
    let (_, exchange, _) = to_exchange(&mut h);
    let asks = r#"{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof"}"#;
    let actions = h.token_response(exchange, &dpop_answer(400, asks, Some("eyJ7S_zG.eyJH0-Z")));
    let (again, request) = token_request(actions);
    assert_eq!(again, exchange, "the same exchange, sent once more");
    let (_, claims, _) = proof_of(&request.finish(at()).unwrap());
    assert_eq!(claims["nonce"], "eyJ7S_zG.eyJH0-Z");

    // A second refusal is not retried (S62: once per request).
    let actions = h.token_response(again, &dpop_answer(400, asks, Some("second-nonce")));
    assert!(
        actions
            .iter()
            .all(|action| !matches!(action, Action::SendTokenRequest { .. })),
        "{actions:?}"
    );
    match finished(&actions) {
        Some(Err(FlowError::TokenRejected { status: 400, error })) => {
            assert_eq!(error.code, "use_dpop_nonce");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }

    // The newest nonce is kept for the next login's first proof.
    let (_, _, request) = to_exchange(&mut h);
    let (_, claims, _) = proof_of(&request.finish(at()).unwrap());
    assert_eq!(claims["nonce"], "second-nonce");
}

#[test]
fn s62_a_nonce_that_is_not_a_nonce_is_not_used() {
    let mut h = Harness::with(harness::config_with(dpop_provider()).build().unwrap());
    let (_, exchange, _) = to_exchange(&mut h);
    let asks = r#"{"error":"use_dpop_nonce"}"#;
    let actions = h.token_response(
        exchange,
        &dpop_answer(400, asks, Some("a \"quoted\" nonce")),
    );
    assert!(
        actions
            .iter()
            .all(|action| !matches!(action, Action::SendTokenRequest { .. })),
        "no retry with a nonce a proof cannot carry"
    );
    assert!(matches!(
        finished(&actions),
        Some(Err(FlowError::TokenRejected { .. }))
    ));
}

#[test]
fn dpop_is_configured_with_a_key_algorithm_and_a_crypto_provider() {
    assert!(matches!(
        harness::provider().dpop(Algorithm::ES256).build().err(),
        Some(ConfigError::Dpop(_))
    ));
    assert!(matches!(
        harness::provider()
            .dpop(Algorithm::RS256)
            .crypto(ring())
            .build()
            .err(),
        Some(ConfigError::Dpop(_))
    ));
    for algorithm in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
        let provider = harness::provider()
            .dpop(algorithm)
            .crypto(ring())
            .build()
            .unwrap();
        assert_eq!(provider.dpop(), Some(algorithm));
    }
}

#[test]
fn s61_a_shared_login_carries_its_key_to_the_replica_that_gets_the_callback() {
    let mut r = Replicas::new(dpop_provider(), at());
    let flow =
        r.a.start_with(
            r.now,
            [9; latchkey::ENTROPY_LEN],
            FlowOptions::new().shared(at()),
        )
        .unwrap();
    let (record, url) = r.shared(flow);
    let stored: Value = serde_json::from_slice(record.expose_bytes()).unwrap();
    assert_eq!(stored["v"], 2, "a record with a key is version 2");
    assert_eq!(stored["dpop_key"]["alg"], "ES256");
    assert!(
        !format!("{record:?}").contains("pkcs8"),
        "redacted in Debug"
    );
    let jkt = harness::query_value(&url, "dpop_jkt").expect("dpop_jkt");
    let state = harness::query_value(&url, "state").unwrap();

    // Replica B gets the callback, takes the record and proves the same key.
    let (exchange, request) = token_request(r.adopt(&state, record));
    let sent = request.clone().finish(at()).unwrap();
    let (_, claims, public) = proof_of(&sent);
    assert_eq!(
        keys::thumbprint(&public),
        jkt,
        "the key of the URL's dpop_jkt"
    );
    assert_eq!(claims["htu"], "https://idp.example/token");

    // Its nonce retry and its tokens are B's as for any login: bound to that key.
    let answer =
        |status, body: &str, nonce| harness::parse_response(&dpop_answer(status, body, nonce));
    r.b.handle_token_response(
        r.now,
        at(),
        exchange,
        answer(400, r#"{"error":"use_dpop_nonce"}"#, Some("n-1")),
    );
    let (exchange, retry) = token_request(r.drain_b());
    let (_, claims, _) = proof_of(&retry.finish(at()).unwrap());
    assert_eq!(claims["nonce"], "n-1");
    r.b.handle_token_response(r.now, at(), exchange, answer(200, BOUND, None));
    let actions = r.drain_b();
    let Some(Action::Persist { tokens, .. }) = actions
        .iter()
        .find(|action| matches!(action, Action::Persist { .. }))
    else {
        panic!("bound tokens are stored: {actions:?}");
    };
    let stored_key = tokens.dpop_key().expect("the tokens keep the login's key");
    let signer = keys::Signer::new(stored_key.clone(), ring()).unwrap();
    assert_eq!(signer.thumbprint(), jkt);

    // A bearer answer to a DPoP login is refused on B too (S61).
    let mut r = Replicas::new(dpop_provider(), at());
    let flow =
        r.a.start_with(
            r.now,
            [10; latchkey::ENTROPY_LEN],
            FlowOptions::new().shared(at()),
        )
        .unwrap();
    let (record, url) = r.shared(flow);
    let state = harness::query_value(&url, "state").unwrap();
    let (exchange, _) = token_request(r.adopt(&state, record));
    let bearer = BOUND.replace(r#""DPoP""#, r#""Bearer""#);
    r.b.handle_token_response(r.now, at(), exchange, answer(200, &bearer, None));
    assert!(matches!(
        finished(&r.drain_b()),
        Some(Err(FlowError::BadTokenResponse {
            reason: BadTokenResponse::NotDpopBound,
            ..
        }))
    ));
}

#[test]
fn a_shared_record_without_the_key_a_dpop_replica_needs_is_foreign() {
    // A replica without DPoP wrote the record; this one binds its tokens: not alike.
    let mut plain = Replicas::new(harness::provider().build().unwrap(), at());
    let flow = plain
        .a
        .start_with(
            plain.now,
            [11; latchkey::ENTROPY_LEN],
            FlowOptions::new().shared(at()),
        )
        .unwrap();
    let (record, url) = plain.shared(flow);
    let state = harness::query_value(&url, "state").unwrap();
    let mut r = Replicas::new(dpop_provider(), at());
    let actions = r.adopt(&state, record);
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::SendTokenRequest { .. })),
        "no token request without the key: {actions:?}"
    );
    assert!(matches!(
        finished(&actions),
        Some(Err(FlowError::Directory(DirectoryError::Foreign)))
    ));
}

// ----- the session: refresh and revocation of bound tokens -----

fn bound_tokens() -> TokenSet {
    let key = keys::Signer::generate(Algorithm::ES256, ring())
        .unwrap()
        .private_key()
        .clone();
    TokenSet::new(SecretString::from("access-1"))
        .with_refresh_token(SecretString::from("refresh-1"))
        .with_expires_at(at())
        .with_dpop_key(key)
}

fn sent(session: &mut Session) -> (latchkey::RequestId, Purpose, ProviderRequest) {
    match session.poll_action() {
        Some(SessionAction::Send {
            id,
            purpose,
            request,
        }) => (id, purpose, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn answer(status: u16, body: &str, nonce: Option<&str>) -> http::Response<Vec<u8>> {
    harness::parse_response(&dpop_answer(status, body, nonce))
}

#[test]
fn s61_s62_bound_tokens_are_refreshed_with_proofs_and_stay_bound_to_their_key() {
    let tokens = bound_tokens();
    let thumbprint = keys::Signer::new(tokens.dpop_key().unwrap().clone(), ring())
        .unwrap()
        .thumbprint()
        .to_owned();
    let (now, wall) = (Instant::now(), at());
    let mut session = Session::new(dpop_provider());
    let call = session.refresh(now);
    let Some(SessionAction::Load { op }) = session.poll_action() else {
        panic!("a load")
    };
    session.handle_loaded(now, wall, op, Ok(Some(tokens.clone())));
    let (id, purpose, request) = sent(&mut session);
    assert_eq!(purpose, Purpose::Refresh);
    let (_, claims, key) = proof_of(&request.finish(wall).unwrap());
    assert_eq!(keys::thumbprint(&key), thumbprint, "the stored key proves");
    assert!(claims.get("nonce").is_none());

    // The provider wants a nonce: one retry under the same id.
    let asks = r#"{"error":"use_dpop_nonce"}"#;
    session.handle_response(now, wall, id, answer(400, asks, Some("n-1")));
    let (again, _, request) = sent(&mut session);
    assert_eq!(again, id);
    let (_, claims, _) = proof_of(&request.finish(wall).unwrap());
    assert_eq!(claims["nonce"], "n-1");

    let fresh = r#"{"access_token":"access-2","token_type":"DPoP","expires_in":3600}"#;
    session.handle_response(now, wall, again, answer(200, fresh, Some("n-2")));
    let Some(SessionAction::Save {
        op, tokens: saved, ..
    }) = session.poll_action()
    else {
        panic!("a save")
    };
    assert_eq!(saved.access_token().expose_secret(), "access-2");
    assert_eq!(
        saved.dpop_key().map(|key| key.pkcs8_der()),
        tokens.dpop_key().map(|key| key.pkcs8_der()),
        "still bound to the same key"
    );
    session.handle_saved(now, wall, op, Ok(()));
    match session.poll_action() {
        Some(SessionAction::Tokens {
            call: answered,
            result: Ok(_),
        }) => assert_eq!(answered, call),
        other => panic!("expected the tokens, got {other:?}"),
    }

    // Logging out: both revocations carry proofs, with the latest nonce.
    session.logout(now);
    let Some(SessionAction::Load { op }) = session.poll_action() else {
        panic!("a load")
    };
    session.handle_loaded(now, wall, op, Ok(Some(saved)));
    for _ in 0..2 {
        let (id, purpose, request) = sent(&mut session);
        assert!(matches!(purpose, Purpose::Revoke(_)));
        let request = request.finish(wall).unwrap();
        assert_eq!(request.uri(), "https://idp.example/revoke");
        let (_, claims, key) = proof_of(&request);
        assert_eq!(keys::thumbprint(&key), thumbprint);
        assert_eq!(claims["nonce"], "n-2");
        assert_eq!(claims["htu"], "https://idp.example/revoke");
        session.handle_response(now, wall, id, answer(200, "", None));
    }
}

#[test]
fn s61_a_refresh_answered_with_bearer_tokens_is_refused() {
    let (now, wall) = (Instant::now(), at());
    let mut session = Session::new(dpop_provider());
    let call = session.refresh(now);
    let Some(SessionAction::Load { op }) = session.poll_action() else {
        panic!("a load")
    };
    session.handle_loaded(now, wall, op, Ok(Some(bound_tokens())));
    let (id, _, _) = sent(&mut session);
    let bearer = r#"{"access_token":"access-2","token_type":"Bearer","expires_in":3600}"#;
    session.handle_response(now, wall, id, answer(200, bearer, None));
    let result = std::iter::from_fn(|| session.poll_action()).find_map(|action| match action {
        SessionAction::Tokens {
            call: answered,
            result,
        } if answered == call => Some(result),
        _ => None,
    });
    match result {
        Some(Err(latchkey::SessionError::Refresh(RefreshError::BadResponse {
            reason, ..
        }))) => {
            assert_eq!(reason, BadTokenResponse::NotDpopBound)
        }
        other => panic!("expected a refused refresh, got {other:?}"),
    }
}

#[test]
fn s61_the_key_is_stored_with_the_tokens_and_never_shown() {
    let tokens = bound_tokens();
    let json = serde_json::to_string(&tokens).unwrap();
    let back: TokenSet = serde_json::from_str(&json).unwrap();
    let (key, again) = (tokens.dpop_key().unwrap(), back.dpop_key().unwrap());
    assert_eq!(key.pkcs8_der(), again.pkcs8_der());
    assert_eq!(again.algorithm(), Algorithm::ES256);
    let shown = format!("{tokens:?} {back:?}");
    let der = URL_SAFE_NO_PAD.encode(key.pkcs8_der());
    for window in der.as_bytes().windows(12).step_by(6) {
        assert!(
            !shown.contains(std::str::from_utf8(window).unwrap()),
            "{shown}"
        );
    }
    for broken in [
        r#"{"access_token":"a","dpop_key":{"pkcs8":"not base64!"}}"#,
        r#"{"access_token":"a","dpop_key":{"pkcs8":"AAAA"}}"#,
        r#"{"access_token":"a","dpop_key":"AAAA"}"#,
    ] {
        assert!(
            serde_json::from_str::<TokenSet>(broken).is_err(),
            "{broken}"
        );
    }
}

#[test]
fn s61_bound_tokens_make_proofs_for_the_applications_own_requests() {
    let tokens = bound_tokens();
    let proof = tokens
        .dpop_proof(
            ring(),
            "GET",
            "https://api.example/me?x=1",
            Some("n-9"),
            at(),
        )
        .expect("bound tokens")
        .expect("a proof");
    let request = http::Request::get("https://api.example/me")
        .header("dpop", &proof)
        .body(Vec::new())
        .unwrap();
    let (_, claims, key) = proof_of(&request);
    let signer = keys::Signer::new(tokens.dpop_key().unwrap().clone(), ring()).unwrap();
    assert_eq!(&key, signer.public_key());
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["htu"], "https://api.example/me");
    assert_eq!(claims["nonce"], "n-9");
    assert_eq!(claims["ath"], latchkey::dpop::ath("access-1"));
    let bearer = TokenSet::new(SecretString::from("access-1"));
    assert!(
        bearer
            .dpop_proof(ring(), "GET", "https://api.example/me", None, at())
            .is_none()
    );
    assert!(matches!(
        tokens.dpop_proof(ring(), "GET", "/me", None, at()),
        Some(Err(latchkey::dpop::ProofError::Uri))
    ));
}

// ----- the rules as a property (the fuzz target `dpop_ops` runs the same model) -----

#[test]
fn s61_s62_any_answers_keep_the_dpop_rules() {
    use latchkey_tests::dpop_model::{DpopOp, DpopSim};
    fn holds(ops: Vec<DpopOp>) -> quickcheck::TestResult {
        harness::ops_hold::<DpopSim>(&ops)
    }
    harness::check_2000(holds as fn(Vec<DpopOp>) -> quickcheck::TestResult);
}

#[test]
fn s61_s62_any_refresh_answers_keep_the_dpop_rules() {
    use latchkey_tests::dpop_model::{DpopSessionOp, DpopSessionSim};
    fn holds(ops: Vec<DpopSessionOp>) -> quickcheck::TestResult {
        harness::ops_hold::<DpopSessionSim>(&ops)
    }
    harness::check_2000(holds as fn(Vec<DpopSessionOp>) -> quickcheck::TestResult);
}
