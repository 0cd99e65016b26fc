//! The server's side of sender-constrained tokens and key-based clients: `private_key_jwt`
//! client assertions (RFC 7523), DPoP proofs and bound tokens (RFC 9449), pushed
//! authorization requests (RFC 9126), resource indicators (RFC 8707) and introspection
//! (RFC 7662). Every JWT here is signed by the test with `ring`, independently of the
//! server's code, and each refusal breaks one rule only.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, agent};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const STATE: &str = "st4te";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A key pair the test signs with, and its public JWK.
struct Key {
    pair: Pair,
    jwk: Value,
}

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl Key {
    fn es256() -> Key {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Key {
            pair: Pair::Es256(pair),
            jwk,
        }
    }

    fn eddsa() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        Key {
            pair: Pair::EdDsa(pair),
            jwk,
        }
    }

    /// The 2048-bit RSA key of the test vectors.
    fn rs256() -> Key {
        let der = include_bytes!("../../tests/vectors/keys/rsa2048.pkcs8.der");
        let private: Value =
            serde_json::from_str(include_str!("../../tests/vectors/keys/rsa2048.jwk.json"))
                .unwrap();
        let jwk = json!({"kty": "RSA", "n": private["n"], "e": private["e"]});
        Key {
            pair: Pair::Rs256(RsaKeyPair::from_pkcs8(der).unwrap()),
            jwk,
        }
    }

    fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::EdDsa(_) => "EdDSA",
            Pair::Rs256(_) => "RS256",
        }
    }

    /// A compact JWS of `claims` with `header` (its `alg` added).
    fn sign(&self, mut header: Value, claims: &Value) -> String {
        header["alg"] = self.alg().into();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Es256(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Pair::EdDsa(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
            Pair::Rs256(pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut out,
                )
                .unwrap();
                out
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// RFC 7638, computed here on its own.
    fn thumbprint(&self) -> String {
        let j = &self.jwk;
        let canonical = match self.pair {
            Pair::Es256(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                j["x"].as_str().unwrap(),
                j["y"].as_str().unwrap()
            ),
            Pair::EdDsa(_) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                j["x"].as_str().unwrap()
            ),
            Pair::Rs256(_) => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                j["e"].as_str().unwrap(),
                j["n"].as_str().unwrap()
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A DPoP proof for `method` at `url`, with `nonce` and the hash of `token`.
    fn proof(&self, method: &str, url: &str, nonce: Option<&str>, token: Option<&str>) -> String {
        let mut claims = proof_claims(method, url);
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        if let Some(token) = token {
            claims["ath"] = URL_SAFE_NO_PAD
                .encode(Sha256::digest(token.as_bytes()))
                .into();
        }
        self.proof_with(&claims)
    }

    fn proof_with(&self, claims: &Value) -> String {
        self.sign(json!({"typ": "dpop+jwt", "jwk": self.jwk}), claims)
    }

    /// A client assertion by `client` for `aud`.
    fn assertion(&self, client: &str, aud: &str) -> String {
        self.sign(json!({"typ": "JWT"}), &assertion_claims(client, aud))
    }
}

fn jti() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(16))
}

fn proof_claims(method: &str, url: &str) -> Value {
    json!({"htm": method, "htu": url, "iat": unix_now(), "jti": jti()})
}

fn assertion_claims(client: &str, aud: &str) -> Value {
    let now = unix_now();
    json!({"iss": client, "sub": client, "aud": aud, "iat": now, "exp": now + 60, "jti": jti()})
}

fn jwt_client(id: &str, key: &Key) -> Client {
    Client {
        id: id.into(),
        secret: None,
        auth: ClientAuth::PrivateKeyJwt {
            jwk: key.jwk.to_string(),
        },
        redirect_uris: vec![REDIRECT.into()],
    }
}

fn start_with(extra: Vec<Client>, configure: impl FnOnce(&mut Config)) -> DevIdp {
    let mut all = clients();
    all.extend(extra);
    let mut config = Config::new(all);
    configure(&mut config);
    start(config)
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(random_bytes(32));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Browses to the authorization endpoint with `client`'s request plus `extra`; returns
/// the single hop.
fn authorize_hop(idp: &DevIdp, query: &str) -> agent::Hop {
    let hops = agent::browse(&format!("{}?{query}", idp.authorization_endpoint())).unwrap();
    assert_eq!(hops.len(), 1, "{hops:?}");
    hops.into_iter().next().unwrap()
}

fn authz_query(client: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", STATE),
        ("scope", "openid read"),
    ];
    fields.extend_from_slice(extra);
    form(&fields)
}

/// The redirect's parameters.
fn redirected(hop: &agent::Hop) -> Vec<(String, String)> {
    assert_eq!(hop.status, 303, "{hop:?}");
    query(hop.location.as_deref().unwrap())
}

/// A code for `client` (whose request carries `extra`), and its verifier.
fn code_for(idp: &DevIdp, client: &str, extra: &[(&str, &str)]) -> (String, String) {
    let (verifier, challenge) = pkce();
    let params = redirected(&authorize_hop(idp, &authz_query(client, &challenge, extra)));
    let code = param(&params, "code").unwrap_or_else(|| panic!("{params:?}"));
    (code.to_owned(), verifier)
}

fn exchange_fields<'a>(code: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ]
}

/// A POST of `fields` to `url` as the `private_key_jwt` client `id` (named in the body
/// too, which is allowed).
fn as_jwt_client(url: &str, id: &str, assertion: &str, fields: &[(&str, &str)]) -> Reply {
    let mut fields = fields.to_vec();
    fields.extend([
        ("client_id", id),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]);
    post_form(url, &[], &form(&fields))
}

fn introspect(idp: &DevIdp, token: &str) -> Value {
    let reply = authenticated_at(
        &idp.introspection_endpoint(),
        "post-app",
        &[],
        &[("token", token)],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

// ---- private_key_jwt --------------------------------------------------------------------

#[test]
fn private_key_jwt_clients_log_in_with_each_key_type() {
    for key in [Key::es256(), Key::eddsa(), Key::rs256()] {
        let idp = start_with(vec![jwt_client("signer", &key)], |_| {});
        let (code, verifier) = code_for(&idp, "signer", &[]);
        let assertion = key.assertion("signer", &idp.issuer());
        let fields = exchange_fields(&code, &verifier);
        let reply = as_jwt_client(&idp.token_endpoint(), "signer", &assertion, &fields);
        assert_eq!(reply.status, 200, "{}: {}", key.alg(), reply.body);
        let refresh_token = reply.json()["refresh_token"].as_str().unwrap().to_owned();
        // The token endpoint's URL is an audience too (RFC 7523 §3).
        let assertion = key.assertion("signer", &idp.token_endpoint());
        let fields = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ];
        let reply = as_jwt_client(&idp.token_endpoint(), "signer", &assertion, &fields);
        assert_eq!(reply.status, 200, "{}: {}", key.alg(), reply.body);
        // And the endpoint called, here the revocation endpoint.
        let new_refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();
        let assertion = key.assertion("signer", &idp.revocation_endpoint());
        let reply = as_jwt_client(
            &idp.revocation_endpoint(),
            "signer",
            &assertion,
            &[("token", &new_refresh)],
        );
        assert_eq!(reply.status, 200, "{}: {}", key.alg(), reply.body);
        assert_eq!(introspect(&idp, &new_refresh)["active"], false);
        assert_eq!(idp.stats().client_assertions, 3, "{}", key.alg());
    }
}

#[test]
fn client_assertions_breaking_one_rule_are_refused() {
    let key = Key::es256();
    let other = Key::eddsa();
    let idp = start_with(vec![jwt_client("signer", &key)], |_| {});
    let issuer = idp.issuer();
    let now = unix_now();
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = assertion_claims("signer", &issuer);
        change(&mut claims);
        claims
    };
    let header = || json!({"typ": "JWT"});
    let cases: Vec<(&str, String)> = vec![
        ("another key", other.assertion("signer", &issuer)),
        (
            "iss is not sub",
            key.sign(header(), &claims(&|c| c["iss"] = "someone".into())),
        ),
        (
            "unknown client",
            key.sign(
                header(),
                &claims(&|c| {
                    c["iss"] = "nobody".into();
                    c["sub"] = "nobody".into();
                }),
            ),
        ),
        (
            "a client registered for a secret",
            key.sign(
                header(),
                &claims(&|c| {
                    c["iss"] = "post-app".into();
                    c["sub"] = "post-app".into();
                }),
            ),
        ),
        (
            "another audience",
            key.sign(
                header(),
                &claims(&|c| c["aud"] = "https://elsewhere.example".into()),
            ),
        ),
        (
            "no audience",
            key.sign(
                header(),
                &claims(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
        ),
        (
            "expired",
            key.sign(header(), &claims(&|c| c["exp"] = (now - 1).into())),
        ),
        (
            "living an hour",
            key.sign(header(), &claims(&|c| c["exp"] = (now + 3600).into())),
        ),
        (
            "issued in the future",
            key.sign(header(), &claims(&|c| c["iat"] = (now + 600).into())),
        ),
        (
            "no jti",
            key.sign(header(), &claims(&|c| c["jti"] = Value::Null)),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(claims(&|_| {}).to_string())
            ),
        ),
        ("not a JWT", "not.a.jwt".to_owned()),
    ];
    for (what, assertion) in cases {
        let (code, verifier) = code_for(&idp, "signer", &[]);
        let fields = exchange_fields(&code, &verifier);
        let reply = as_jwt_client(&idp.token_endpoint(), "signer", &assertion, &fields);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (401, "invalid_client"),
            "{what}: {}",
            reply.body
        );
    }
    assert_eq!(idp.stats().client_assertions, 0);
}

#[test]
fn a_client_assertion_is_single_use_and_alone() {
    let key = Key::es256();
    let idp = start_with(vec![jwt_client("signer", &key)], |_| {});
    let assertion = key.assertion("signer", &idp.issuer());
    let (code, verifier) = code_for(&idp, "signer", &[]);
    let fields = exchange_fields(&code, &verifier);
    let reply = as_jwt_client(&idp.token_endpoint(), "signer", &assertion, &fields);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Replayed (RFC 7523 §3 point 7).
    let (code, verifier) = code_for(&idp, "signer", &[]);
    let fields = exchange_fields(&code, &verifier);
    let reply = as_jwt_client(&idp.token_endpoint(), "signer", &assertion, &fields);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (401, "invalid_client")
    );
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("used before")
    );
    // With a secret besides, or the wrong assertion type, or without any.
    let fresh = key.assertion("signer", &idp.issuer());
    let mut fields = exchange_fields(&code, &verifier);
    fields.push(("client_secret", "x"));
    let reply = as_jwt_client(&idp.token_endpoint(), "signer", &fresh, &fields);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (401, "invalid_client")
    );
    let mut fields = exchange_fields(&code, &verifier);
    fields.extend([
        ("client_assertion_type", "urn:example:saml"),
        ("client_assertion", &fresh),
    ]);
    let reply = post_form(&idp.token_endpoint(), &[], &form(&fields));
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (401, "invalid_client")
    );
    let mut fields = exchange_fields(&code, &verifier);
    fields.push(("client_id", "signer"));
    let reply = post_form(&idp.token_endpoint(), &[], &form(&fields));
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (401, "invalid_client")
    );
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("private_key_jwt")
    );
    // The unused fresh assertion still works, once.
    let fields = exchange_fields(&code, &verifier);
    let reply = as_jwt_client(&idp.token_endpoint(), "signer", &fresh, &fields);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_jwk_set_lets_the_assertion_kid_pick_the_key() {
    let (old, new) = (Key::eddsa(), Key::es256());
    let mut old_jwk = old.jwk.clone();
    old_jwk["kid"] = "old".into();
    let mut new_jwk = new.jwk.clone();
    new_jwk["kid"] = "new".into();
    let client = Client {
        id: "rotating".into(),
        secret: None,
        auth: ClientAuth::PrivateKeyJwt {
            jwk: json!({"keys": [old_jwk, new_jwk]}).to_string(),
        },
        redirect_uris: vec![REDIRECT.into()],
    };
    let idp = start_with(vec![client], |_| {});
    for (key, kid) in [(&old, "old"), (&new, "new")] {
        let assertion = key.sign(
            json!({"kid": kid}),
            &assertion_claims("rotating", &idp.issuer()),
        );
        let (code, verifier) = code_for(&idp, "rotating", &[]);
        let fields = exchange_fields(&code, &verifier);
        let reply = as_jwt_client(&idp.token_endpoint(), "rotating", &assertion, &fields);
        assert_eq!(reply.status, 200, "{kid}: {}", reply.body);
    }
}

#[test]
fn private_keys_and_secrets_are_not_registered_as_client_keys() {
    let key = Key::es256();
    let mut private = key.jwk.clone();
    private["d"] = "AAAA".into();
    for jwk in [
        private.to_string(),
        r#"{"kty":"oct","k":"c2VjcmV0"}"#.to_owned(),
        "not json".to_owned(),
        r#"{"keys":[]}"#.to_owned(),
    ] {
        let client = Client {
            id: "bad".into(),
            secret: None,
            auth: ClientAuth::PrivateKeyJwt { jwk: jwk.clone() },
            redirect_uris: vec![REDIRECT.into()],
        };
        let config = Config::new(vec![client]);
        assert!(
            DevIdp::start(config, "127.0.0.1:0".parse().unwrap()).is_err(),
            "{jwk}"
        );
    }
}

// ---- DPoP ---------------------------------------------------------------------------------

/// A public client's DPoP-bound login: the token response.
fn dpop_login(idp: &DevIdp, key: &Key, nonce: Option<&str>) -> Value {
    let (code, verifier) = code_for(idp, "public-app", &[]);
    let mut fields = exchange_fields(&code, &verifier);
    fields.push(("client_id", "public-app"));
    let proof = key.proof("POST", &idp.token_endpoint(), nonce, None);
    let reply = post_form(&idp.token_endpoint(), &[("DPoP", &proof)], &form(&fields));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn userinfo(idp: &DevIdp, authorization: &str, proof: Option<&str>) -> Reply {
    let mut headers = vec![("Authorization", authorization)];
    headers.extend(proof.map(|p| ("DPoP", p)));
    get_reply(&idp.userinfo_endpoint(), &headers)
}

#[test]
fn dpop_bound_tokens_need_their_keys_proof() {
    let key = Key::es256();
    let idp = start_with(vec![], |_| {});
    let tokens = dpop_login(&idp, &key, None);
    assert_eq!(tokens["token_type"], "DPoP");
    let access = tokens["access_token"].as_str().unwrap();
    let seen = introspect(&idp, access);
    assert_eq!(seen["token_type"], "DPoP");
    assert_eq!(seen["cnf"]["jkt"], key.thumbprint());

    let url = idp.userinfo_endpoint();
    let ok = userinfo(
        &idp,
        &format!("DPoP {access}"),
        Some(&key.proof("GET", &url, None, Some(access))),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["sub"], "dev-user");
    // A copied token without its key is worth nothing (RFC 9449 §7.1).
    let as_bearer = userinfo(&idp, &format!("Bearer {access}"), None);
    assert_eq!(as_bearer.status, 401);
    let refusals = [
        ("no proof", None),
        (
            "another key",
            Some(Key::eddsa().proof("GET", &url, None, Some(access))),
        ),
        ("no ath", Some(key.proof("GET", &url, None, None))),
        (
            "ath of another token",
            Some(key.proof("GET", &url, None, Some("other"))),
        ),
        (
            "another method",
            Some(key.proof("POST", &url, None, Some(access))),
        ),
        (
            "another URL",
            Some(key.proof("GET", &idp.token_endpoint(), None, Some(access))),
        ),
    ];
    for (what, proof) in refusals {
        let reply = userinfo(&idp, &format!("DPoP {access}"), proof.as_deref());
        assert_eq!(reply.status, 401, "{what}");
        let challenge = reply.header("www-authenticate").unwrap();
        assert!(challenge.starts_with("DPoP "), "{what}: {challenge}");
    }
    // A bearer token is not presented as DPoP either.
    let (code, verifier) = code_for(&idp, "post-app", &[]);
    let bearer = authenticated(&idp, "post-app", &exchange_fields(&code, &verifier)).json();
    assert_eq!(bearer["token_type"], "Bearer");
    let bearer = bearer["access_token"].as_str().unwrap();
    let proof = key.proof("GET", &url, None, Some(bearer));
    assert_eq!(
        userinfo(&idp, &format!("DPoP {bearer}"), Some(&proof)).status,
        401
    );
    assert_eq!(
        userinfo(&idp, &format!("Bearer {bearer}"), None).status,
        200
    );
}

#[test]
fn dpop_proofs_breaking_one_rule_are_refused() {
    let key = Key::eddsa();
    let idp = start_with(vec![], |_| {});
    let token_url = idp.token_endpoint();
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = proof_claims("POST", &token_url);
        change(&mut claims);
        claims
    };
    let mut private = key.jwk.clone();
    private["d"] = "AAAA".into();
    let replayed = key.proof("POST", &token_url, None, None);
    let cases: Vec<(&str, String)> = vec![
        (
            "typ JWT",
            key.sign(json!({"typ": "JWT", "jwk": key.jwk}), &claims(&|_| {})),
        ),
        (
            "no jwk",
            key.sign(json!({"typ": "dpop+jwt"}), &claims(&|_| {})),
        ),
        (
            "another jwk",
            key.sign(
                json!({"typ": "dpop+jwt", "jwk": Key::eddsa().jwk}),
                &claims(&|_| {}),
            ),
        ),
        (
            "a private jwk",
            key.sign(json!({"typ": "dpop+jwt", "jwk": private}), &claims(&|_| {})),
        ),
        (
            "htm GET",
            key.proof_with(&claims(&|c| c["htm"] = "GET".into())),
        ),
        (
            "htu of another endpoint",
            key.proof_with(&claims(&|c| c["htu"] = idp.revocation_endpoint().into())),
        ),
        (
            "iat ten minutes ago",
            key.proof_with(&claims(&|c| c["iat"] = (unix_now() - 600).into())),
        ),
        (
            "iat ten minutes ahead",
            key.proof_with(&claims(&|c| c["iat"] = (unix_now() + 600).into())),
        ),
        (
            "no jti",
            key.proof_with(&claims(&|c| c["jti"] = Value::Null)),
        ),
        ("replayed", replayed.clone()),
        ("not a JWT", "a.b".to_owned()),
    ];
    // The first use of `replayed` is good.
    dpop_login_with(&idp, &replayed).expect("a fresh proof");
    for (what, proof) in cases {
        let reply = dpop_login_with(&idp, &proof).expect_err(what);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (400, "invalid_dpop_proof"),
            "{what}: {}",
            reply.body
        );
    }
    // Two DPoP headers.
    let (code, verifier) = code_for(&idp, "public-app", &[]);
    let mut fields = exchange_fields(&code, &verifier);
    fields.push(("client_id", "public-app"));
    let (a, b) = (
        key.proof("POST", &token_url, None, None),
        key.proof("POST", &token_url, None, None),
    );
    let reply = post_form(&token_url, &[("DPoP", &a), ("DPoP", &b)], &form(&fields));
    assert_eq!(reply.error(), "invalid_dpop_proof");
    // htu compares without query and fragment (RFC 9449 §4.3).
    let with_query = key.proof_with(&claims(&|c| c["htu"] = format!("{token_url}?x=1#f").into()));
    dpop_login_with(&idp, &with_query).expect("htu with a query");
}

/// A public client's code exchange with `proof`.
fn dpop_login_with(idp: &DevIdp, proof: &str) -> Result<Value, Reply> {
    let (code, verifier) = code_for(idp, "public-app", &[]);
    let mut fields = exchange_fields(&code, &verifier);
    fields.push(("client_id", "public-app"));
    let reply = post_form(&idp.token_endpoint(), &[("DPoP", proof)], &form(&fields));
    match reply.status {
        200 => Ok(reply.json()),
        _ => Err(reply),
    }
}

#[test]
fn nonces_are_asked_for_and_rotate() {
    let key = Key::es256();
    let idp = start_with(vec![], |config| config.dpop_nonce = true);
    let token_url = idp.token_endpoint();
    let refused = dpop_login_with(&idp, &key.proof("POST", &token_url, None, None)).unwrap_err();
    assert_eq!(
        (refused.status, refused.error().as_str()),
        (400, "use_dpop_nonce")
    );
    let nonce = refused.header("dpop-nonce").unwrap().to_owned();
    assert_eq!(nonce, idp.dpop_nonce());
    let tokens = dpop_login(&idp, &key, Some(&nonce));
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(idp.stats().dpop_nonce_challenges, 1);

    // UserInfo asks the same way, with a 401 (RFC 9449 §9).
    let url = idp.userinfo_endpoint();
    let reply = userinfo(
        &idp,
        &format!("DPoP {access}"),
        Some(&key.proof("GET", &url, None, Some(access))),
    );
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("use_dpop_nonce")
    );
    assert_eq!(reply.header("dpop-nonce"), Some(nonce.as_str()));

    // After a rotation the old nonce is refused, and the answer names the new one.
    let rotated = idp.rotate_dpop_nonce().unwrap();
    assert_ne!(rotated, nonce);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let fields = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", "public-app"),
    ]);
    let stale = key.proof("POST", &token_url, Some(&nonce), None);
    let reply = post_form(&token_url, &[("DPoP", &stale)], &fields);
    assert_eq!(reply.error(), "use_dpop_nonce");
    assert_eq!(reply.header("dpop-nonce"), Some(rotated.as_str()));
    let fresh = key.proof("POST", &token_url, Some(&rotated), None);
    let reply = post_form(&token_url, &[("DPoP", &fresh)], &fields);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("dpop-nonce"), Some(rotated.as_str()));
}

#[test]
fn a_public_clients_refresh_token_is_bound_to_its_key() {
    let key = Key::es256();
    let idp = start_with(vec![], |_| {});
    let tokens = dpop_login(&idp, &key, None);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&idp, refresh)["cnf"]["jkt"], key.thumbprint());
    let fields = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", "public-app"),
    ]);
    let token_url = idp.token_endpoint();
    let reply = post_form(&token_url, &[], &fields);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_grant")
    );
    let thief = Key::es256().proof("POST", &token_url, None, None);
    let reply = post_form(&token_url, &[("DPoP", &thief)], &fields);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_grant")
    );
    let proof = key.proof("POST", &token_url, None, None);
    let reply = post_form(&token_url, &[("DPoP", &proof)], &fields);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let renewed = reply.json();
    assert_eq!(renewed["token_type"], "DPoP");
    let access = renewed["access_token"].as_str().unwrap();
    assert_eq!(introspect(&idp, access)["cnf"]["jkt"], key.thumbprint());
}

#[test]
fn dpop_jkt_binds_the_code_to_a_key() {
    let key = Key::es256();
    let idp = start_with(vec![], |_| {});
    let jkt = key.thumbprint();
    let token_url = idp.token_endpoint();
    let exchange = |proof: Option<String>| {
        let (code, verifier) = code_for(&idp, "public-app", &[("dpop_jkt", &jkt)]);
        let mut fields = exchange_fields(&code, &verifier);
        fields.push(("client_id", "public-app"));
        let headers: Vec<(&str, &str)> = proof.iter().map(|p| ("DPoP", p.as_str())).collect();
        post_form(&token_url, &headers, &form(&fields))
    };
    let without = exchange(None);
    assert_eq!(
        (without.status, without.error().as_str()),
        (400, "invalid_grant")
    );
    let other = exchange(Some(Key::eddsa().proof("POST", &token_url, None, None)));
    assert_eq!(
        (other.status, other.error().as_str()),
        (400, "invalid_grant")
    );
    let right = exchange(Some(key.proof("POST", &token_url, None, None)));
    assert_eq!(right.status, 200, "{}", right.body);
    // A malformed dpop_jkt is answered at the redirect URI.
    let (_, challenge) = pkce();
    let query = authz_query("public-app", &challenge, &[("dpop_jkt", "short")]);
    let params = redirected(&authorize_hop(&idp, &query));
    assert_eq!(param(&params, "error"), Some("invalid_request"));
}

#[test]
fn revocation_checks_a_proof_when_one_is_sent() {
    let key = Key::es256();
    let idp = start_with(vec![], |_| {});
    let tokens = dpop_login(&idp, &key, None);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let url = idp.revocation_endpoint();
    let body = form(&[("token", refresh), ("client_id", "public-app")]);
    let bad = key.proof("POST", &idp.token_endpoint(), None, None);
    let reply = post_form(&url, &[("DPoP", &bad)], &body);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_dpop_proof")
    );
    assert_eq!(introspect(&idp, refresh)["active"], true);
    let good = key.proof("POST", &url, None, None);
    assert_eq!(post_form(&url, &[("DPoP", &good)], &body).status, 200);
    assert_eq!(introspect(&idp, refresh)["active"], false);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(&idp, access)["active"], false);
}

// ---- pushed authorization requests --------------------------------------------------------

/// Pushes `client`'s authorization request; returns the reply.
fn push(idp: &DevIdp, client: &str, challenge: &str, extra: &[(&str, &str)]) -> Reply {
    let mut fields = vec![
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", STATE),
        ("scope", "openid read"),
    ];
    fields.extend_from_slice(extra);
    authenticated_at(
        &idp.pushed_authorization_request_endpoint(),
        client,
        &[],
        &fields,
    )
}

fn by_reference(client: &str, request_uri: &str) -> String {
    form(&[("client_id", client), ("request_uri", request_uri)])
}

#[test]
fn pushed_requests_are_used_once_by_their_client() {
    let idp = start_with(vec![], |config| {
        config.require_pushed_authorization_requests = true;
    });
    let metadata = format!("{}/.well-known/oauth-authorization-server", idp.base_url());
    let doc: Value = serde_json::from_slice(&agent::get(&metadata, &[]).unwrap().2).unwrap();
    assert_eq!(doc["require_pushed_authorization_requests"], true);

    let (verifier, challenge) = pkce();
    let reply = push(&idp, "basic-app", &challenge, &[]);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["expires_in"], 60);
    let request_uri = answer["request_uri"].as_str().unwrap();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    // Another client cannot use it (RFC 9126 §4), and it survives that.
    let stolen = authorize_hop(&idp, &by_reference("post-app", request_uri));
    assert_eq!(stolen.status, 400);
    let params = redirected(&authorize_hop(
        &idp,
        &by_reference("basic-app", request_uri),
    ));
    assert_eq!(param(&params, "state"), Some(STATE));
    let code = param(&params, "code").unwrap();
    let reply = authenticated(&idp, "basic-app", &exchange_fields(code, &verifier));
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Used up.
    let again = authorize_hop(&idp, &by_reference("basic-app", request_uri));
    assert_eq!(again.status, 400);
    // Not pushed: refused where pushing is required.
    let direct = authorize_hop(&idp, &authz_query("basic-app", &challenge, &[]));
    assert_eq!(direct.status, 400);
    assert_eq!(idp.stats().pushed_authorizations, 1);
}

#[test]
fn pushed_requests_are_checked_when_pushed() {
    let idp = start_with(vec![], |config| {
        config.request_uri_lifetime = std::time::Duration::from_millis(200);
    });
    let (_, challenge) = pkce();
    let reply = push(&idp, "post-app", &challenge, &[("request_uri", "urn:x")]);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_request")
    );
    let reply = push(&idp, "post-app", &challenge, &[("resource", "not-a-uri")]);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_target")
    );
    let plain = [
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "plain"),
    ];
    let url = idp.pushed_authorization_request_endpoint();
    let reply = authenticated_at(&url, "post-app", &[], &plain);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_request")
    );
    let unregistered = [
        ("response_type", "code"),
        ("redirect_uri", "https://attacker.example/cb"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let reply = authenticated_at(&url, "post-app", &[], &unregistered);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_request")
    );
    let unauthenticated = post_form(
        &idp.pushed_authorization_request_endpoint(),
        &[],
        &form(&[("client_id", "post-app"), ("response_type", "code")]),
    );
    assert_eq!(unauthenticated.status, 401);
    // Expired.
    let reply = push(&idp, "post-app", &challenge, &[]);
    let request_uri = reply.json()["request_uri"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let late = authorize_hop(&idp, &by_reference("post-app", &request_uri));
    assert_eq!(late.status, 400);
}

#[test]
fn a_request_pushed_with_a_proof_binds_the_code() {
    let key = Key::es256();
    let idp = start_with(vec![], |_| {});
    let (verifier, challenge) = pkce();
    let par_url = idp.pushed_authorization_request_endpoint();
    let proof = key.proof("POST", &par_url, None, None);
    let mut fields = vec![
        ("response_type", "code"),
        ("client_id", "public-app"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let reply = post_form(&par_url, &[("DPoP", &proof)], &form(&fields));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let request_uri = reply.json()["request_uri"].as_str().unwrap().to_owned();
    let params = redirected(&authorize_hop(
        &idp,
        &by_reference("public-app", &request_uri),
    ));
    let code = param(&params, "code").unwrap();
    let mut exchange = exchange_fields(code, &verifier);
    exchange.push(("client_id", "public-app"));
    let token_url = idp.token_endpoint();
    let thief = Key::es256().proof("POST", &token_url, None, None);
    let reply = post_form(&token_url, &[("DPoP", &thief)], &form(&exchange));
    assert_eq!(reply.error(), "invalid_grant");
    // A dpop_jkt that is not the proof's key is refused at once.
    let other = Key::eddsa().thumbprint();
    fields.push(("dpop_jkt", &other));
    let proof = key.proof("POST", &par_url, None, None);
    let reply = post_form(&par_url, &[("DPoP", &proof)], &form(&fields));
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_request")
    );
}

// ---- resource indicators and introspection -------------------------------------------------

#[test]
fn resources_become_the_audience_and_can_be_narrowed() {
    const MAIL: &str = "https://mail.example.com/";
    const FILES: &str = "https://files.example.com/";
    let idp = start_with(vec![], |_| {});
    let (code, verifier) = code_for(&idp, "post-app", &[("resource", MAIL), ("resource", FILES)]);
    let reply = authenticated(&idp, "post-app", &exchange_fields(&code, &verifier));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let tokens = reply.json();
    let seen = introspect(&idp, tokens["access_token"].as_str().unwrap());
    assert_eq!(seen["aud"], json!([MAIL, FILES]));
    assert_eq!(seen["active"], true);
    assert_eq!(seen["client_id"], "post-app");
    assert_eq!(seen["token_type"], "Bearer");
    assert_eq!(seen["sub"], "dev-user");
    assert!(seen.get("cnf").is_none());

    let refresh = tokens["refresh_token"].as_str().unwrap();
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("resource", "https://elsewhere.example.com/"),
    ];
    let reply = authenticated(&idp, "post-app", &fields);
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (400, "invalid_target")
    );
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("resource", FILES),
    ];
    let reply = authenticated(&idp, "post-app", &fields);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let narrowed = reply.json();
    let seen = introspect(&idp, narrowed["access_token"].as_str().unwrap());
    assert_eq!(seen["aud"], json!([FILES]));
    // The next refresh may widen back to the whole grant.
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", narrowed["refresh_token"].as_str().unwrap()),
    ];
    let reply = authenticated(&idp, "post-app", &fields);
    let seen = introspect(&idp, reply.json()["access_token"].as_str().unwrap());
    assert_eq!(seen["aud"], json!([MAIL, FILES]));

    let (_, challenge) = pkce();
    let query = authz_query(
        "post-app",
        &challenge,
        &[("resource", "https://x.example/#frag")],
    );
    let params = redirected(&authorize_hop(&idp, &query));
    assert_eq!(param(&params, "error"), Some("invalid_target"));
}

#[test]
fn introspection_needs_an_authenticated_client() {
    let idp = start_with(vec![], |_| {});
    let unknown = introspect(&idp, "no-such-token");
    assert_eq!(unknown, json!({"active": false}));
    let reply = post_form(
        &idp.introspection_endpoint(),
        &[],
        &form(&[
            ("token", "x"),
            ("client_id", "post-app"),
            ("client_secret", "wrong"),
        ]),
    );
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (401, "invalid_client")
    );
}
