//! End-to-end tests of latchkey's sender-constrained and hardened requests against the
//! development identity provider (`latchkey-devidp`), on both drivers: `private_key_jwt`
//! client authentication (RFC 7523; S63), DPoP with the server's nonces (RFC 9449; S61,
//! S62), pushed authorization requests (RFC 9126) alone and with DPoP, and resource
//! indicators (RFC 8707).
//!
//! Every scenario checks the server's side too, not only what latchkey reports: the dev
//! IdP's counters ([`DevIdp::stats`]), the requests it recorded ([`DevIdp::requests`]) and
//! its introspection endpoint (RFC 7662), asked by a resource server client of its own.
//! Every wait has a deadline, so a bug fails a test instead of hanging it. Every port is
//! ephemeral: the dev IdP binds port 0, and the service's redirect URI has port 0, which
//! the dev IdP accepts for a loopback redirect URI registered without one (RFC 8252 §7.3).

#[macro_use]
mod support;

use support::{outcome, within};

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey::dpop::Proof;
use latchkey::keys::{PrivateKey, Signer};
use latchkey::oidc::Algorithm;
use latchkey::{
    ClientAuth, Config, FlowError, FlowOptions, Landing, Provider, ProviderBuilder, TokenKind,
    TokenSet, TokenType, TransportError, TransportErrorKind,
};
use latchkey_devidp::agent::{self, Hop};
use latchkey_devidp::{DevIdp, RecordedRequest};
use latchkey_io::discovery::discover;
use latchkey_io::runtime::Runtime;
use latchkey_io::service::{Service, ServiceOptions};
use latchkey_io::source::TokenSource;
use latchkey_io::store::MemoryStore;
use latchkey_io::transport::{TokenResult, TokenTransport, Transport};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

const SCOPES: [&str; 2] = ["openid", "profile"];
const CALLBACK_PATH: &str = "/callback";
/// Registered without a port: any port of the service's ephemeral listener matches.
const REDIRECT_URI: &str = "http://127.0.0.1/callback";
const LANDING: &str = "docker-desktop://dashboard/open";
/// The dev IdP's user when the request names none.
const USER: &str = "dev-user";
/// RFC 7523 §2.2.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 9126 §2.2.
const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// The resource server that introspects tokens (a client of its own, `client_secret_basic`).
const RS_ID: &str = "resource-server";
const RS_SECRET: &str = "resource-server-secret";

/// The longest any one step (a discovery, a browse, a login's outcome, a refresh) may take.
const STEP: Duration = Duration::from_secs(5);
/// The longest a whole scenario may take (each normally takes well under a second or two).
const SCENARIO: Duration = Duration::from_secs(30);

on_both_drivers!(
    SCENARIO;
    s63_a_p256_private_key_jwt_client_logs_in_refreshes_and_revokes,
    s63_rsa_and_ed25519_private_key_jwt_clients_log_in_and_refresh,
    s63_an_assertion_signed_with_another_key_than_the_registered_one_is_invalid_client,
    s61_s62_dpop_with_nonces_binds_the_login_the_refresh_and_the_revocation,
    par_required_the_browser_carries_only_client_id_and_request_uri,
    par_with_dpop_binds_the_pushed_request_to_the_proofs_key,
    resource_indicators_are_the_access_tokens_audience,
);

// ----- the fixture -----

/// Runs blocking `work` on the runtime's blocking pool, within [`STEP`].
async fn blocking<R: Runtime, T: Send + 'static>(
    rt: &R,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    within(rt, STEP, what, rt.unblock(work)).await
}

/// A client registered with [`REDIRECT_URI`].
fn client(
    id: &str,
    auth: latchkey_devidp::ClientAuth,
    secret: Option<&str>,
) -> latchkey_devidp::Client {
    latchkey_devidp::Client {
        id: id.into(),
        secret: secret.map(str::to_owned),
        auth,
        redirect_uris: vec![REDIRECT_URI.into()],
    }
}

/// The dev IdP on an ephemeral loopback port with `clients` and the resource server,
/// `configure`d.
fn start_idp(
    mut clients: Vec<latchkey_devidp::Client>,
    configure: impl FnOnce(&mut latchkey_devidp::Config),
) -> DevIdp {
    clients.push(latchkey_devidp::Client {
        id: RS_ID.into(),
        secret: Some(RS_SECRET.into()),
        auth: latchkey_devidp::ClientAuth::Basic,
        redirect_uris: Vec::new(),
    });
    let mut config = latchkey_devidp::Config::new(clients);
    configure(&mut config);
    DevIdp::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("start the identity provider")
}

/// `client_id`'s provider found from the dev IdP's metadata, with [`SCOPES`].
async fn discovered<R: Runtime>(rt: &R, idp: &DevIdp, client_id: &str) -> ProviderBuilder {
    let transport = support::transport();
    within(
        rt,
        STEP,
        "discovery",
        discover(rt, &transport, &idp.issuer(), client_id),
    )
    .await
    .expect("trusted metadata")
    .scopes(SCOPES)
}

/// A test key of `tests/vectors/keys/`.
fn test_key(file: &str) -> PrivateKey {
    let path = format!("{}/vectors/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    PrivateKey::parse(&std::fs::read(&path).expect("a test key")).expect("a usable key")
}

/// `key` loaded by ring.
fn signer(key: &PrivateKey) -> Signer {
    Signer::new(key.clone(), latchkey_io::crypto::ring()).expect("the key loads")
}

/// The public JWK of `key` as JSON text, as the dev IdP registers it.
fn public_jwk(key: &PrivateKey) -> String {
    Value::Object(signer(key).public_jwk().clone()).to_string()
}

/// A latchkey service on an ephemeral loopback port, storing into memory.
struct Fixture<R: Runtime> {
    service: Service<R>,
    store: Arc<MemoryStore>,
    provider: Provider,
    transport: Transport,
}

impl<R: Runtime> Fixture<R> {
    fn new(rt: &R, provider: Provider) -> Fixture<R> {
        Fixture::with(rt, provider, support::transport())
    }

    fn with(rt: &R, provider: Provider, transport: Transport) -> Fixture<R> {
        let config = Config::builder(provider.clone())
            .redirect_uri("127.0.0.1", 0, CALLBACK_PATH)
            .on_success(Landing::Redirect(LANDING.into()))
            .build()
            .expect("config");
        let store = Arc::new(MemoryStore::default());
        let options = ServiceOptions::new(store.clone(), transport.clone());
        let service = Service::bind(rt.clone(), config, options).expect("start the service");
        let port = service.local_addrs()[0].port();
        assert_ne!(port, 0);
        assert_eq!(
            service.redirect_uri(),
            format!("http://127.0.0.1:{port}{CALLBACK_PATH}")
        );
        Fixture {
            service,
            store,
            provider,
            transport,
        }
    }

    /// A token source over the service's store: refreshes and logouts of what the logins
    /// stored.
    fn source(&self, rt: &R) -> TokenSource<R> {
        TokenSource::new(
            rt.clone(),
            self.provider.clone(),
            self.store.clone(),
            self.transport.clone(),
        )
    }

    /// A whole login: started with [`Service::start_async`] (which waits for a pushed
    /// request's answer), the dev IdP's agent as the browser. The authorization URL, the
    /// browser's hops and the outcome.
    async fn log_in(&self, rt: &R) -> (String, Vec<Hop>, Result<TokenSet, FlowError>) {
        let login = within(
            rt,
            STEP,
            "the login's start",
            self.service.start_async(FlowOptions::new()),
        )
        .await
        .expect("start a login");
        let url = login.url().expect("a browser login").to_owned();
        let browsed = url.clone();
        let hops = blocking(rt, "the browser", move || agent::browse(&browsed))
            .await
            .expect("the browser's navigation");
        let events = support::events(rt, &login, STEP).await;
        (url, hops, outcome(&events))
    }

    async fn shutdown(self, rt: &R) {
        within(rt, STEP, "shutdown", self.service.shutdown()).await;
    }
}

/// The tokens of a login that must succeed, after checking the browser's path: the dev IdP
/// sent it back with a code at once, and latchkey on to the landing.
fn succeeded(hops: &[Hop], result: Result<TokenSet, FlowError>) -> TokenSet {
    let tokens = result.unwrap_or_else(|error| panic!("the login failed: {error:?}\n{hops:#?}"));
    assert_eq!(hops.len(), 2, "{hops:#?}");
    assert_eq!(hops[0].status, 303, "{hops:#?}");
    assert_eq!(
        (hops[1].status, hops[1].location.as_deref()),
        (303, Some(LANDING)),
        "{hops:#?}"
    );
    tokens
}

fn secret(token: &SecretString) -> String {
    token.expose_secret().to_owned()
}

fn refresh_token(tokens: &TokenSet) -> String {
    secret(tokens.refresh_token().expect("a refresh token"))
}

// ----- the server's side -----

/// Form-encodes `value` (unreserved characters kept).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes one form-encoded component (`+` is a space).
fn form_decode(value: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2).expect("two hex digits"))
                    .expect("ASCII hex digits");
                bytes.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                rest = &rest[2..];
            }
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).expect("UTF-8")
}

/// The decoded pairs of a form body or query, in order.
fn pairs(encoded: &str) -> Vec<(String, String)> {
    encoded
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// Every value of `name` among `pairs`.
fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
        .collect()
}

/// The one value of `name` among `pairs`.
fn value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    match values(pairs, name).as_slice() {
        [one] => one,
        other => panic!("{name}: {other:?} in {pairs:?}"),
    }
}

/// The pairs of a URL's query.
fn query_pairs(url: &str) -> Vec<(String, String)> {
    pairs(url.split_once('?').map_or("", |(_, query)| query))
}

/// The pairs of a recorded request's form body.
fn body_pairs(request: &RecordedRequest) -> Vec<(String, String)> {
    pairs(std::str::from_utf8(&request.body).expect("an ASCII form body"))
}

/// The requests the dev IdP received at `path` (query aside), oldest first.
fn requests_to(idp: &DevIdp, path: &str) -> Vec<RecordedRequest> {
    idp.requests()
        .into_iter()
        .filter(|request| request.target.split('?').next() == Some(path))
        .collect()
}

/// The header (`part` 0) or the claims (`part` 1) of a compact JWS.
fn jwt_part(token: &str, part: usize) -> Map<String, Value> {
    let encoded = token.split('.').nth(part).expect("a JWT part");
    let bytes = URL_SAFE_NO_PAD.decode(encoded).expect("base64url");
    serde_json::from_slice(&bytes).expect("a JSON object")
}

/// The header and claims of the request's DPoP proof.
fn proof_of(request: &RecordedRequest) -> (Map<String, Value>, Map<String, Value>) {
    let proof = request.header("dpop").unwrap_or_else(|| {
        panic!(
            "no DPoP header: {} {} {:?} {}",
            request.method,
            request.target,
            request.headers,
            String::from_utf8_lossy(&request.body)
        )
    });
    (jwt_part(proof, 0), jwt_part(proof, 1))
}

/// The dev IdP's introspection (RFC 7662) of `token`, asked by the resource server.
async fn introspect<R: Runtime>(rt: &R, idp: &DevIdp, token: &str) -> Value {
    let url = idp.introspection_endpoint();
    let body = format!("token={}", form_encode(token));
    let authorization = format!("Basic {}", STANDARD.encode(format!("{RS_ID}:{RS_SECRET}")));
    let (status, _, body) = blocking(rt, "introspection", move || {
        agent::post(
            &url,
            &[
                ("Authorization", &authorization),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
    })
    .await
    .expect("the introspection response");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("introspection JSON")
}

/// `GET /userinfo` with `headers`: status, header fields, body as JSON (`Null` if none).
async fn userinfo<R: Runtime>(
    rt: &R,
    idp: &DevIdp,
    headers: Vec<(&'static str, String)>,
) -> (u16, Vec<(String, String)>, Value) {
    let url = idp.userinfo_endpoint();
    let (status, fields, body) = blocking(rt, "the UserInfo request", move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        agent::get(&url, &headers)
    })
    .await
    .expect("the UserInfo response");
    (
        status,
        fields,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

// ----- 1. private_key_jwt (RFC 7523) -----

/// Checks that every request in `requests` authenticated with a client assertion only (no
/// secret, no Basic header) whose claims name `client_id` and the issuer; returns the
/// assertions' header `alg`s and `jti`s.
fn assertions(
    requests: &[RecordedRequest],
    client_id: &str,
    issuer: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut algs, mut jtis) = (Vec::new(), Vec::new());
    for request in requests {
        let pairs = body_pairs(request);
        assert_eq!(
            value(&pairs, "client_assertion_type"),
            ASSERTION_TYPE,
            "{request:?}"
        );
        assert!(values(&pairs, "client_secret").is_empty(), "{request:?}");
        assert_eq!(request.header("authorization"), None, "{request:?}");
        let assertion = value(&pairs, "client_assertion");
        let (header, claims) = (jwt_part(assertion, 0), jwt_part(assertion, 1));
        assert_eq!(claims["iss"], client_id, "{claims:?}");
        assert_eq!(claims["sub"], client_id, "{claims:?}");
        assert_eq!(claims["aud"], issuer, "{claims:?}");
        algs.push(header["alg"].as_str().expect("an alg").to_owned());
        jtis.push(claims["jti"].as_str().expect("a jti").to_owned());
    }
    (algs, jtis)
}

async fn s63_a_p256_private_key_jwt_client_logs_in_refreshes_and_revokes<R: Runtime>(rt: R) {
    const ID: &str = "jwt-es256";
    let key = test_key("p256.pkcs8.pem");
    let idp = start_idp(
        vec![client(
            ID,
            latchkey_devidp::ClientAuth::PrivateKeyJwt {
                jwk: public_jwk(&key),
            },
            None,
        )],
        |_| {},
    );
    let provider = discovered(&rt, &idp, ID)
        .await
        .client_key(key)
        .build()
        .expect("a private_key_jwt provider");
    assert_eq!(provider.client_auth(), ClientAuth::PrivateKeyJwt);
    let fx = Fixture::new(&rt, provider);

    // The code exchange: one request, one assertion.
    let (_, hops, result) = fx.log_in(&rt).await;
    let tokens = succeeded(&hops, result);
    let stats = idp.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.tokens_issued,
            stats.client_assertions
        ),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(tokens.identity().map(|identity| identity.sub()), Some(USER));
    let introspection = introspect(&rt, &idp, &secret(tokens.access_token())).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["client_id"], ID, "{introspection}");

    // The refresh: one more assertion.
    let source = fx.source(&rt);
    let fresh = within(&rt, STEP, "the refresh", source.refresh())
        .await
        .expect("a refresh authenticated by an assertion");
    assert_ne!(secret(fresh.access_token()), secret(tokens.access_token()));
    assert_ne!(refresh_token(&fresh), refresh_token(&tokens), "rotated");
    let stats = idp.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.tokens_issued,
            stats.client_assertions
        ),
        (2, 2, 2),
        "{stats:?}"
    );
    let introspection = introspect(&rt, &idp, &secret(fresh.access_token())).await;
    assert_eq!(introspection["active"], true, "{introspection}");

    // The logout: both revocations, each with an assertion of its own.
    let report = within(&rt, STEP, "the logout", source.logout())
        .await
        .expect("a logout");
    assert!(report.fully_revoked(), "{report:?}");
    assert_eq!(
        support::revoked_kinds(&report),
        [TokenKind::RefreshToken, TokenKind::AccessToken]
    );
    assert_eq!(idp.stats().client_assertions, 4, "{:?}", idp.stats());
    for token in [secret(fresh.access_token()), refresh_token(&fresh)] {
        let introspection = introspect(&rt, &idp, &token).await;
        assert_eq!(introspection["active"], false, "revoked: {introspection}");
    }

    // What the dev IdP received: assertions only, each with a jti of its own.
    let token_requests = requests_to(&idp, "/token");
    let revocations = requests_to(&idp, "/revoke");
    assert_eq!((token_requests.len(), revocations.len()), (2, 2));
    let authenticated: Vec<RecordedRequest> =
        token_requests.into_iter().chain(revocations).collect();
    let (algs, jtis) = assertions(&authenticated, ID, &idp.issuer());
    assert_eq!(algs, ["ES256"; 4]);
    assert_eq!(jtis.iter().collect::<BTreeSet<_>>().len(), 4, "{jtis:?}");
    fx.shutdown(&rt).await;
}

async fn s63_rsa_and_ed25519_private_key_jwt_clients_log_in_and_refresh<R: Runtime>(rt: R) {
    let keys = [
        ("jwt-rs256", "rsa2048.pkcs8.pem", "RS256"),
        ("jwt-eddsa", "ed25519.pkcs8.pem", "EdDSA"),
    ];
    let clients = keys
        .iter()
        .map(|(id, file, _)| {
            let jwk = public_jwk(&test_key(file));
            client(id, latchkey_devidp::ClientAuth::PrivateKeyJwt { jwk }, None)
        })
        .collect();
    let idp = start_idp(clients, |_| {});
    for (round, (id, file, alg)) in keys.into_iter().enumerate() {
        let provider = discovered(&rt, &idp, id)
            .await
            .client_key(test_key(file))
            .build()
            .expect("a private_key_jwt provider");
        let fx = Fixture::new(&rt, provider);
        let (_, hops, result) = fx.log_in(&rt).await;
        let tokens = succeeded(&hops, result);
        let fresh = within(&rt, STEP, "the refresh", fx.source(&rt).refresh())
            .await
            .unwrap_or_else(|error| panic!("{file}: the refresh failed: {error:?}"));
        assert_ne!(secret(fresh.access_token()), secret(tokens.access_token()));
        // Two requests per key, each authenticated by one assertion of that key's alg.
        let stats = idp.stats();
        assert_eq!(
            (stats.token_requests, stats.client_assertions),
            (2 * (round + 1), 2 * (round + 1)),
            "{file}: {stats:?}"
        );
        let requests: Vec<RecordedRequest> = requests_to(&idp, "/token")
            .into_iter()
            .skip(2 * round)
            .collect();
        let (algs, _) = assertions(&requests, id, &idp.issuer());
        assert_eq!(algs, [alg; 2], "{file}");
        for token in [&tokens, &fresh] {
            let introspection = introspect(&rt, &idp, &secret(token.access_token())).await;
            assert_eq!(
                (&introspection["active"], &introspection["client_id"]),
                (&Value::Bool(true), &Value::from(id)),
                "{file}: {introspection}"
            );
        }
        fx.shutdown(&rt).await;
    }
}

async fn s63_an_assertion_signed_with_another_key_than_the_registered_one_is_invalid_client<
    R: Runtime,
>(
    rt: R,
) {
    const ID: &str = "jwt-other-key";
    // Registered with a fresh key's public half; latchkey signs with the P-256 test key.
    let registered = Signer::generate(Algorithm::ES256, latchkey_io::crypto::ring())
        .expect("a fresh key")
        .private_key()
        .clone();
    let idp = start_idp(
        vec![client(
            ID,
            latchkey_devidp::ClientAuth::PrivateKeyJwt {
                jwk: public_jwk(&registered),
            },
            None,
        )],
        |_| {},
    );
    let provider = discovered(&rt, &idp, ID)
        .await
        .client_key(test_key("p256.pkcs8.pem"))
        .build()
        .expect("a private_key_jwt provider");
    let fx = Fixture::new(&rt, provider);
    let (_, hops, result) = fx.log_in(&rt).await;
    match result {
        Err(FlowError::TokenRejected { status, error }) => {
            assert_eq!(
                (status, error.code.as_str()),
                (401, "invalid_client"),
                "{error:?}"
            );
            assert_eq!(
                error.description.as_deref(),
                Some("the client assertion is not signed by the client's registered key"),
                "{error:?}"
            );
        }
        other => panic!("expected invalid_client, got {other:?}\n{hops:#?}"),
    }
    // The dev IdP got the assertion and accepted none.
    let stats = idp.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.tokens_issued,
            stats.client_assertions
        ),
        (1, 0, 0),
        "{stats:?}"
    );
    let requests = requests_to(&idp, "/token");
    let (algs, _) = assertions(&requests, ID, &idp.issuer());
    assert_eq!(algs, ["ES256"]);
    fx.shutdown(&rt).await;
}

// ----- 2. DPoP (RFC 9449) with the server's nonces -----

async fn s61_s62_dpop_with_nonces_binds_the_login_the_refresh_and_the_revocation<R: Runtime>(
    rt: R,
) {
    const ID: &str = "dpop-app";
    let idp = start_idp(
        vec![client(ID, latchkey_devidp::ClientAuth::None, None)],
        |config| config.dpop_nonce = true,
    );
    let provider = discovered(&rt, &idp, ID)
        .await
        .dpop(Algorithm::ES256)
        .build()
        .expect("a DPoP provider");
    let fx = Fixture::new(&rt, provider);

    // The login: the code exchange's first proof has no nonce, the retry has the server's.
    let (url, hops, result) = fx.log_in(&rt).await;
    let tokens = succeeded(&hops, result);
    assert_eq!(*tokens.token_type(), TokenType::DPoP);
    let key = signer(tokens.dpop_key().expect("the login's DPoP key"));
    let jkt = key.thumbprint().to_owned();
    assert_eq!(
        value(&query_pairs(&url), "dpop_jkt"),
        jkt,
        "the authorization request bound the code to the login's key: {url}"
    );
    let stats = idp.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.tokens_issued,
            stats.dpop_nonce_challenges,
            stats.dpop_proofs
        ),
        (2, 1, 1, 1),
        "use_dpop_nonce, then the retry with the nonce: {stats:?}"
    );
    let exchanges = requests_to(&idp, "/token");
    let nonces: Vec<Option<Value>> = exchanges
        .iter()
        .map(|request| proof_of(request).1.get("nonce").cloned())
        .collect();
    assert_eq!(nonces, [None, Some(Value::from(idp.dpop_nonce()))]);
    for request in &exchanges {
        let (header, claims) = proof_of(request);
        assert_eq!(
            Value::Object(key.public_jwk().clone()),
            header["jwk"],
            "every proof is the login's key"
        );
        assert_eq!(
            (&claims["htm"], &claims["htu"]),
            (&Value::from("POST"), &Value::from(idp.token_endpoint()))
        );
    }

    // The dev IdP bound both tokens to that key.
    let access = secret(tokens.access_token());
    let introspection = introspect(&rt, &idp, &access).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["token_type"], "DPoP", "{introspection}");
    assert_eq!(introspection["cnf"]["jkt"], jkt, "{introspection}");
    let introspection = introspect(&rt, &idp, &refresh_token(&tokens)).await;
    assert_eq!(
        introspection["cnf"]["jkt"], jkt,
        "a public client's refresh token is bound too: {introspection}"
    );

    // The application's own request: a proof from the token set, with the server's nonce.
    let ring = latchkey_io::crypto::ring();
    let userinfo_uri = idp.userinfo_endpoint();
    let nonce = idp.dpop_nonce();
    let proof = tokens
        .dpop_proof(
            ring.clone(),
            "GET",
            &userinfo_uri,
            Some(&nonce),
            SystemTime::now(),
        )
        .expect("DPoP-bound tokens")
        .expect("a proof");
    let proofs_before = idp.stats().dpop_proofs;
    let (status, _, claims) = userinfo(
        &rt,
        &idp,
        vec![("Authorization", format!("DPoP {access}")), ("DPoP", proof)],
    )
    .await;
    assert_eq!(
        (status, &claims["sub"]),
        (200, &Value::from(USER)),
        "{claims}"
    );
    assert_eq!(idp.stats().dpop_proofs, proofs_before + 1);
    // Without the nonce: refused, with the nonce to use.
    let stale = tokens
        .dpop_proof(ring.clone(), "GET", &userinfo_uri, None, SystemTime::now())
        .expect("DPoP-bound tokens")
        .expect("a proof");
    let (status, fields, _) = userinfo(
        &rt,
        &idp,
        vec![("Authorization", format!("DPoP {access}")), ("DPoP", stale)],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(field(&fields, "dpop-nonce"), Some(nonce.as_str()));
    // A thief presenting it as a bearer token is refused.
    let (status, _, _) = userinfo(
        &rt,
        &idp,
        vec![("Authorization", format!("Bearer {access}"))],
    )
    .await;
    assert_eq!(status, 401, "a DPoP-bound token used as a bearer token");

    // A new nonce: the refresh's first proof is refused once, the retry carries the new one.
    let rotated = idp.rotate_dpop_nonce().expect("a new nonce");
    assert_ne!(rotated, nonce);
    let before = idp.stats();
    let source = fx.source(&rt);
    let fresh = within(&rt, STEP, "the refresh", source.refresh())
        .await
        .expect("a refresh with a proof");
    let after = idp.stats();
    assert_eq!(
        (
            after.token_requests - before.token_requests,
            after.tokens_issued - before.tokens_issued,
            after.dpop_nonce_challenges - before.dpop_nonce_challenges
        ),
        (2, 1, 1),
        "one use_dpop_nonce and one retry: {after:?}"
    );
    let last = idp.last_token_request().expect("the refresh's retry");
    assert_eq!(value(&body_pairs(&last), "grant_type"), "refresh_token");
    let (header, claims) = proof_of(&last);
    assert_eq!(claims["nonce"], rotated);
    assert_eq!(header["jwk"], Value::Object(key.public_jwk().clone()));
    assert_eq!(*fresh.token_type(), TokenType::DPoP);
    assert_eq!(
        signer(fresh.dpop_key().expect("still bound")).thumbprint(),
        jkt,
        "the refreshed tokens keep the login's key"
    );
    let fresh_access = secret(fresh.access_token());
    assert_ne!(fresh_access, access);
    let introspection = introspect(&rt, &idp, &fresh_access).await;
    assert_eq!(
        (&introspection["active"], &introspection["cnf"]["jkt"]),
        (&Value::Bool(true), &Value::from(jkt.as_str())),
        "{introspection}"
    );
    // The token source's proof for the refreshed token works as the token set's did.
    let proof = source
        .dpop_proof(&fresh, "GET", &userinfo_uri, Some(&rotated))
        .expect("DPoP-bound tokens")
        .expect("a proof");
    let (status, _, claims) = userinfo(
        &rt,
        &idp,
        vec![
            ("Authorization", format!("DPoP {fresh_access}")),
            ("DPoP", proof),
        ],
    )
    .await;
    assert_eq!(status, 200, "{claims}");

    // The logout: each revocation carries a proof of the key, and the tokens are dead.
    let before = idp.stats();
    let report = within(&rt, STEP, "the logout", source.logout())
        .await
        .expect("a logout");
    assert!(report.fully_revoked(), "{report:?}");
    let after = idp.stats();
    let revocations = requests_to(&idp, "/revoke");
    let mut with_the_nonce = 0;
    for request in &revocations {
        let (header, claims) = proof_of(request);
        assert_eq!(header["jwk"], Value::Object(key.public_jwk().clone()));
        assert_eq!(
            (&claims["htm"], &claims["htu"]),
            (
                &Value::from("POST"),
                &Value::from(idp.revocation_endpoint())
            )
        );
        if claims.get("nonce") == Some(&Value::from(rotated.as_str())) {
            with_the_nonce += 1;
        }
    }
    // Two revocations, each accepted with the current nonce (after a retry, if asked).
    assert_eq!(with_the_nonce, 2, "{revocations:?}");
    assert_eq!(
        revocations.len() - 2,
        after.dpop_nonce_challenges - before.dpop_nonce_challenges,
        "{revocations:?}"
    );
    assert_eq!(after.dpop_proofs - before.dpop_proofs, 2, "{after:?}");
    for token in [fresh_access, refresh_token(&fresh)] {
        let introspection = introspect(&rt, &idp, &token).await;
        assert_eq!(introspection["active"], false, "revoked: {introspection}");
    }
    fx.shutdown(&rt).await;
}

// ----- 3. pushed authorization requests (RFC 9126) -----

async fn par_required_the_browser_carries_only_client_id_and_request_uri<R: Runtime>(rt: R) {
    const ID: &str = "par-app";
    const SECRET: &str = "par-app-secret";
    let idp = start_idp(
        vec![client(ID, latchkey_devidp::ClientAuth::Basic, Some(SECRET))],
        |config| config.require_pushed_authorization_requests = true,
    );
    // The metadata requires pushing: discovery turns it on.
    let provider = discovered(&rt, &idp, ID)
        .await
        .client_secret(SecretString::from(SECRET))
        .client_auth(ClientAuth::SecretBasic)
        .build()
        .expect("a provider");
    assert!(provider.pushes_authorization_requests());
    assert_eq!(
        provider
            .pushed_authorization_request_endpoint()
            .map(ToString::to_string),
        Some(idp.pushed_authorization_request_endpoint())
    );
    let fx = Fixture::new(&rt, provider);
    let (url, hops, result) = fx.log_in(&rt).await;
    let query = query_pairs(&url);
    let names: Vec<&str> = query.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["client_id", "request_uri"], "{url}");
    assert_eq!(value(&query, "client_id"), ID);
    let request_uri = value(&query, "request_uri");
    assert!(request_uri.starts_with(REQUEST_URI_PREFIX), "{url}");
    let tokens = succeeded(&hops, result);
    assert_eq!(tokens.identity().map(|identity| identity.sub()), Some(USER));

    // The dev IdP's side: one push, authenticated as the token request is, with the whole
    // authorization request; the browser's request carried only its reference.
    let stats = idp.stats();
    assert_eq!(
        (
            stats.pushed_authorizations,
            stats.authorize_requests,
            stats.codes_issued,
            stats.tokens_issued
        ),
        (1, 1, 1, 1),
        "{stats:?}"
    );
    let pushes = requests_to(&idp, "/par");
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let push = &pushes[0];
    assert_eq!(push.method, "POST");
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", form_encode(ID), form_encode(SECRET)))
    );
    assert_eq!(push.header("authorization"), Some(basic.as_str()));
    let pushed = body_pairs(push);
    assert_eq!(value(&pushed, "response_type"), "code");
    assert_eq!(value(&pushed, "code_challenge_method"), "S256");
    assert_eq!(value(&pushed, "redirect_uri"), fx.service.redirect_uri());
    assert_eq!(value(&pushed, "scope"), SCOPES.join(" "));
    assert!(!value(&pushed, "state").is_empty());
    let authorizations = requests_to(&idp, "/authorize");
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        query_pairs(&authorizations[0].target),
        query,
        "the browser sent the URL latchkey gave it"
    );

    // The same request, not pushed, is refused: pushing is required.
    let mut unpushed = pushed.clone();
    if values(&unpushed, "client_id").is_empty() {
        unpushed.insert(0, ("client_id".into(), ID.into()));
    }
    let unpushed = unpushed
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let unpushed = format!("{}?{unpushed}", idp.authorization_endpoint());
    let (status, _, page) = blocking(&rt, "an unpushed request", move || {
        agent::get(&unpushed, &[])
    })
    .await
    .expect("the answer");
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&page).contains("pushed authorization requests only"),
        "{}",
        String::from_utf8_lossy(&page)
    );
    assert_eq!(idp.stats().codes_issued, 1);
    fx.shutdown(&rt).await;
}

/// Runs blocking `work` on a thread of its own and hands its answer to latchkey.
fn on_a_thread(
    work: impl FnOnce() -> TokenResult + Send + 'static,
) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
    let (answer, answered) = smol::channel::bounded(1);
    thread::spawn(move || {
        let _ = answer.send_blocking(work());
    });
    Box::pin(async move {
        answered.recv().await.unwrap_or_else(|_| {
            Err(TransportError::new(
                TransportErrorKind::Other,
                "transport thread ended",
            ))
        })
    })
}

/// A copy of `request` (`http::Request` is not `Clone`).
fn copy(request: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// An attacker who intercepted the code exchange (code and PKCE verifier) but not the DPoP
/// key: redeems the code first with a proof of a key of its own, then lets latchkey's
/// request through. The dev IdP's answer to the theft is kept.
struct Thief {
    client: latchkey_io::http::HttpClient,
    key: Signer,
    /// The status and body of the attacker's redemption.
    answer: Arc<Mutex<Option<(u16, Value)>>>,
}

impl TokenTransport for Thief {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = TokenResult> + Send>> {
        let client = self.client.clone();
        let exchange = std::str::from_utf8(request.body())
            .is_ok_and(|body| body.contains("grant_type=authorization_code"));
        if !exchange {
            return on_a_thread(move || support::send_blocking(&client, &request));
        }
        let mut stolen = copy(&request);
        let uri = request.uri().to_string();
        let proof = Proof::new("POST", &uri)
            .and_then(|proof| proof.sign(&self.key, SystemTime::now()))
            .expect("the thief's proof");
        stolen
            .headers_mut()
            .insert("dpop", proof.parse().expect("a header value"));
        let answer = Arc::clone(&self.answer);
        on_a_thread(move || {
            let response = support::send_blocking(&client, &stolen)?;
            let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            *answer.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((response.status().as_u16(), body));
            support::send_blocking(&client, &request)
        })
    }
}

async fn par_with_dpop_binds_the_pushed_request_to_the_proofs_key<R: Runtime>(rt: R) {
    const ID: &str = "par-dpop-app";
    let idp = start_idp(
        vec![client(ID, latchkey_devidp::ClientAuth::None, None)],
        |config| config.require_pushed_authorization_requests = true,
    );
    // Configured by hand, with the PAR endpoint named explicitly.
    let provider = Provider::builder(idp.authorization_endpoint(), idp.token_endpoint(), ID)
        .scopes(SCOPES)
        .issuer(idp.issuer())
        .require_iss(true)
        .jwks_uri(idp.jwks_uri())
        .revocation_endpoint(idp.revocation_endpoint())
        .crypto(latchkey_io::crypto::ring())
        .pushed_authorization_request_endpoint(idp.pushed_authorization_request_endpoint())
        .push_authorization_requests(true)
        .dpop(Algorithm::ES256)
        .build()
        .expect("a pushing DPoP provider");
    let answer = Arc::new(Mutex::new(None));
    let thief = Thief {
        client: latchkey_io::http::HttpClient::new(latchkey_io::http::HttpOptions {
            proxy: latchkey_io::proxy::Proxy::none(),
            timeout: STEP,
            ..latchkey_io::http::HttpOptions::default()
        })
        .expect("HTTP client"),
        key: Signer::generate(Algorithm::ES256, latchkey_io::crypto::ring())
            .expect("the thief's key"),
        answer: Arc::clone(&answer),
    };
    let fx = Fixture::with(&rt, provider, Transport::Custom(Arc::new(thief)));
    let (url, hops, result) = fx.log_in(&rt).await;
    let query = query_pairs(&url);
    let names: Vec<&str> = query.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["client_id", "request_uri"],
        "no dpop_jkt in the browser's URL: {url}"
    );
    let tokens = succeeded(&hops, result);
    assert_eq!(*tokens.token_type(), TokenType::DPoP);
    let key = signer(tokens.dpop_key().expect("the login's DPoP key"));

    // The push named the login's key (RFC 9449 §10.1): by `dpop_jkt`, or by a proof made
    // with it, and nothing else.
    let pushes = requests_to(&idp, "/par");
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let pushed = body_pairs(&pushes[0]);
    let named = values(&pushed, "dpop_jkt");
    for jkt in &named {
        assert_eq!(*jkt, key.thumbprint(), "{pushed:?}");
    }
    let proved = pushes[0].header("dpop").is_some();
    if proved {
        let (header, claims) = proof_of(&pushes[0]);
        assert_eq!(header["jwk"], Value::Object(key.public_jwk().clone()));
        assert_eq!(
            (&claims["htm"], &claims["htu"]),
            (
                &Value::from("POST"),
                &Value::from(idp.pushed_authorization_request_endpoint())
            )
        );
    }
    assert!(
        proved || !named.is_empty(),
        "the push named no DPoP key: {pushed:?}"
    );

    // So the code went to the login's key only: the thief's redemption, with the right
    // verifier and a valid proof of another key, was refused, and latchkey's succeeded.
    let stolen = answer
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .expect("the thief tried");
    assert_eq!(stolen.0, 400, "{}", stolen.1);
    assert_eq!(stolen.1["error"], "invalid_grant", "{}", stolen.1);
    assert_eq!(
        stolen.1["error_description"],
        "the DPoP proof's key is not the authorization request's dpop_jkt",
        "{}",
        stolen.1
    );
    let stats = idp.stats();
    assert_eq!(
        (
            stats.pushed_authorizations,
            stats.token_requests,
            stats.tokens_issued
        ),
        (1, 2, 1),
        "{stats:?}"
    );
    let introspection = introspect(&rt, &idp, &secret(tokens.access_token())).await;
    assert_eq!(
        (&introspection["token_type"], &introspection["cnf"]["jkt"]),
        (&Value::from("DPoP"), &Value::from(key.thumbprint())),
        "{introspection}"
    );
    fx.shutdown(&rt).await;
}

// ----- 4. resource indicators (RFC 8707) -----

async fn resource_indicators_are_the_access_tokens_audience<R: Runtime>(rt: R) {
    const ID: &str = "resource-app";
    const SECRET: &str = "resource-app-secret";
    const ORDERS: &str = "https://orders.api.example/";
    const BILLING: &str = "https://billing.api.example/v2";
    let idp = start_idp(
        vec![client(ID, latchkey_devidp::ClientAuth::Post, Some(SECRET))],
        |_| {},
    );
    let provider = discovered(&rt, &idp, ID)
        .await
        .client_secret(SecretString::from(SECRET))
        .client_auth(ClientAuth::SecretPost)
        .resource(ORDERS)
        .resource(BILLING)
        .build()
        .expect("a provider");
    let fx = Fixture::new(&rt, provider);
    let (url, hops, result) = fx.log_in(&rt).await;
    assert_eq!(values(&query_pairs(&url), "resource"), [ORDERS, BILLING]);
    let tokens = succeeded(&hops, result);

    // Both resources reached the dev IdP, in the authorization and the token request, and
    // are the access token's audience.
    let authorizations = requests_to(&idp, "/authorize");
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        values(&query_pairs(&authorizations[0].target), "resource"),
        [ORDERS, BILLING]
    );
    let exchange = idp.last_token_request().expect("the code exchange");
    assert_eq!(
        values(&body_pairs(&exchange), "resource"),
        [ORDERS, BILLING]
    );
    let introspection = introspect(&rt, &idp, &secret(tokens.access_token())).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(
        introspection["aud"],
        serde_json::json!([ORDERS, BILLING]),
        "{introspection}"
    );
    assert_eq!(tokens.audience(), [ORDERS, BILLING]);

    // A refresh asks for both again, and the fresh token is for both.
    let fresh = within(&rt, STEP, "the refresh", fx.source(&rt).refresh())
        .await
        .expect("a refresh");
    let refresh = idp.last_token_request().expect("the refresh");
    assert_eq!(value(&body_pairs(&refresh), "grant_type"), "refresh_token");
    assert_eq!(values(&body_pairs(&refresh), "resource"), [ORDERS, BILLING]);
    let introspection = introspect(&rt, &idp, &secret(fresh.access_token())).await;
    assert_eq!(
        introspection["aud"],
        serde_json::json!([ORDERS, BILLING]),
        "{introspection}"
    );
    assert_eq!(fresh.audience(), [ORDERS, BILLING]);
    fx.shutdown(&rt).await;
}
