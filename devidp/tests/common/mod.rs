//! Helpers shared by the integration tests: form encoding, the registered clients, raw
//! token requests, and the checks of an ID token against the published keys.
// Each test crate uses its own subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_devidp::{Client, ClientAuth, Config, DevIdp, IdTokenAlg, agent};
use ring::signature;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// A private-use scheme: `browse` records the redirect but does not follow it.
pub const REDIRECT: &str = "com.example.app:/callback";

pub const OTHER_REDIRECT: &str = "http://127.0.0.1/other";

/// Exercises the form-encoding of Basic credentials (RFC 6749 §2.3.1).
pub const ODD_SECRET: &str = "+/:%&= ~!";

pub const POST_SECRET: &str = "post-secret";

/// RFC 3986 unreserved characters stay, everything else is `%XX` (unlike the server's
/// WHATWG serializer, so the server must accept either).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    pairs.join("&")
}

pub fn dec(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).unwrap()
}

/// The decoded query parameters of `url`.
pub fn query(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (dec(k), dec(v))
        })
        .collect()
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn clients() -> Vec<Client> {
    let client = |id: &str, secret: Option<&str>, auth| Client {
        id: id.into(),
        secret: secret.map(Into::into),
        auth,
        redirect_uris: vec![REDIRECT.into(), OTHER_REDIRECT.into()],
    };
    vec![
        client("basic-app", Some(ODD_SECRET), ClientAuth::Basic),
        client("post-app", Some(POST_SECRET), ClientAuth::Post),
        client("public-app", None, ClientAuth::None),
    ]
}

pub fn start(config: Config) -> DevIdp {
    DevIdp::start(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn token_request(idp: &DevIdp, headers: &[(&str, &str)], body: &str) -> Reply {
    post_form(&idp.token_endpoint(), headers, body)
}

/// A POST of the form `body` to `url`, with extra `headers`.
pub fn post_form(url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let (status, headers, body) = agent::post(url, &all, body.as_bytes()).unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// A token request authenticated as `client` is registered; `fields` is the grant.
pub fn authenticated(idp: &DevIdp, client: &str, fields: &[(&str, &str)]) -> Reply {
    authenticated_at(&idp.token_endpoint(), client, &[], fields)
}

/// A form POST to `url` (the token or device authorization endpoint) authenticated as
/// `client` is registered, with extra `headers`; `fields` is the rest of the body.
pub fn authenticated_at(
    url: &str,
    client: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Reply {
    let mut fields = fields.to_vec();
    let mut headers = headers.to_vec();
    let auth = basic(client, ODD_SECRET);
    match client {
        "basic-app" => headers.push(("Authorization", auth.as_str())),
        "post-app" => fields.extend([("client_id", client), ("client_secret", POST_SECRET)]),
        _ => fields.push(("client_id", client)),
    }
    post_form(url, &headers, &form(&fields))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn alg_name(alg: IdTokenAlg) -> &'static str {
    match alg {
        IdTokenAlg::RS256 => "RS256",
        IdTokenAlg::ES256 => "ES256",
    }
}

/// A decoded compact JWS.
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    /// `header.payload`, the signing input.
    pub input: String,
    pub signature: Vec<u8>,
}

pub fn parse_jwt(token: &str) -> Jwt {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let json = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    Jwt {
        header: json(parts[0]),
        claims: json(parts[1]),
        input: format!("{}.{}", parts[0], parts[1]),
        signature: URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    }
}

pub fn get_reply(url: &str, headers: &[(&str, &str)]) -> Reply {
    let (status, headers, body) = agent::get(url, headers).unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// The published keys.
pub fn jwks(idp: &DevIdp) -> Vec<Value> {
    let reply = get_reply(&idp.jwks_uri(), &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    reply.json()["keys"].as_array().unwrap().clone()
}

pub fn b64(value: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(value.as_str().unwrap_or_else(|| panic!("{value}")))
        .unwrap()
}

/// Whether `jwk` verifies `signature` over `input`: RS256 with (n, e), ES256 with the
/// uncompressed point 04 || x || y.
pub fn verifies(jwk: &Value, input: &[u8], signature: &[u8]) -> bool {
    match jwk["kty"].as_str() {
        Some("RSA") => {
            assert_eq!(jwk["alg"], "RS256", "{jwk}");
            let key = signature::RsaPublicKeyComponents {
                n: b64(&jwk["n"]),
                e: b64(&jwk["e"]),
            };
            key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, signature)
                .is_ok()
        }
        Some("EC") => {
            assert_eq!(
                (jwk["alg"].as_str(), jwk["crv"].as_str()),
                (Some("ES256"), Some("P-256")),
                "{jwk}"
            );
            let (x, y) = (b64(&jwk["x"]), b64(&jwk["y"]));
            assert_eq!((x.len(), y.len()), (32, 32), "{jwk}");
            let point = [&[0x04][..], &x, &y].concat();
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(input, signature)
                .is_ok()
        }
        _ => panic!("unexpected key {jwk}"),
    }
}

/// The `at_hash` of `access_token`: the left half of its SHA-256, base64url.
pub fn at_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

/// The standard claims of `sub`, as the ID token and UserInfo carry them.
pub fn profile(sub: &str) -> Value {
    json!({
        "sub": sub,
        "email": format!("{sub}@example.com"),
        "email_verified": true,
        "name": format!("Dev User {sub}"),
        "preferred_username": sub,
    })
}

/// What an honest ID token must say.
pub struct Expected<'a> {
    pub alg: IdTokenAlg,
    pub client: &'a str,
    pub sub: &'a str,
    /// The login's nonce; `None` for a refresh (or a login without one).
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
    /// The login's `auth_time`, once known.
    pub auth_time: Option<u64>,
}

/// The rules of OpenID Connect Core §3.1.3.7 that `token` breaks: `alg`, `kid`,
/// `signature`, `iss`, `aud`, `exp`, `iat`, `nbf`, `nonce`, `at_hash`, `sub`, `profile`,
/// `auth_time`, `claims` (missing or unexpected members). Empty for an honest token.
pub fn broken_rules(idp: &DevIdp, token: &str, expected: &Expected<'_>) -> Vec<&'static str> {
    let jwt = parse_jwt(token);
    let now = unix_now();
    let claims = jwt.claims.as_object().unwrap();
    let mut broken = Vec::new();
    if jwt.header["alg"] != alg_name(expected.alg) || jwt.header["typ"] != "JWT" {
        broken.push("alg");
    } else {
        let keys = jwks(idp);
        let key = keys.iter().find(|k| k["kid"] == jwt.header["kid"]);
        let kty = match expected.alg {
            IdTokenAlg::RS256 => "RSA",
            IdTokenAlg::ES256 => "EC",
        };
        match key {
            Some(key) if key["kty"] == kty => {
                if !verifies(key, jwt.input.as_bytes(), &jwt.signature) {
                    broken.push("signature");
                }
            }
            _ => broken.push("kid"),
        }
    }
    if jwt.claims["iss"] != idp.issuer() {
        broken.push("iss");
    }
    if jwt.claims["aud"] != expected.client {
        broken.push("aud");
    }
    let time = |name: &str| jwt.claims[name].as_u64();
    if time("exp").is_none_or(|exp| exp <= now) {
        broken.push("exp");
    }
    if time("iat").is_none_or(|iat| iat > now + 1) {
        broken.push("iat");
    }
    if claims.contains_key("nbf") && time("nbf").is_none_or(|nbf| nbf > now + 1) {
        broken.push("nbf");
    }
    if jwt.claims.get("nonce").map(|n| n.as_str()) != expected.nonce.map(Some) {
        broken.push("nonce");
    }
    if jwt.claims["at_hash"] != at_hash(expected.access_token) {
        broken.push("at_hash");
    }
    if jwt.claims["sub"] != expected.sub {
        broken.push("sub");
    }
    let wanted = profile(expected.sub);
    let wanted = wanted.as_object().unwrap();
    if wanted
        .iter()
        .any(|(name, value)| name != "sub" && jwt.claims[name] != *value)
    {
        broken.push("profile");
    }
    let auth_time_ok = time("auth_time").is_some_and(|t| match expected.auth_time {
        Some(expected) => t == expected,
        None => t <= now + 1 && now - t < 600,
    });
    if !auth_time_ok {
        broken.push("auth_time");
    }
    let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
    names.retain(|n| *n != "nbf");
    names.sort_unstable();
    let mut allowed = vec![
        "at_hash",
        "aud",
        "auth_time",
        "email",
        "email_verified",
        "exp",
        "iat",
        "iss",
        "name",
        "preferred_username",
        "sub",
    ];
    if expected.nonce.is_some() {
        allowed.push("nonce");
    }
    allowed.sort_unstable();
    if names != allowed {
        broken.push("claims");
    }
    broken
}

// ---- garbage ----------------------------------------------------------------------------

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

pub fn random_below(n: usize) -> usize {
    random_bytes(4)
        .iter()
        .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
        % n.max(1)
}

/// Replaces a few bytes of `input` with random ones, biased towards syntax characters.
pub fn mutate(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=random_below(4) {
        let pos = random_below(out.len());
        let special = b"%&=+?:/\r\n \0\xff";
        out[pos] = match random_below(2) {
            0 => special[random_below(special.len())],
            _ => random_bytes(1)[0],
        };
    }
    out
}

/// Sends raw bytes and reads whatever comes back.
pub fn raw_exchange(idp: &DevIdp, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(idp.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

/// Panics of the server's connection threads so far: a panic only ends its connection,
/// so it would go unseen otherwise. The first call installs the panic hook that counts.
pub fn server_panics() -> usize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if thread::current().name() == Some("devidp-conn") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}
