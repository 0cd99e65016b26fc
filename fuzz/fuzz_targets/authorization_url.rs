//! Arbitrary configuration values: either the builders refuse them, or the authorization URL
//! the engine emits is well-formed and says exactly what was configured.
//!
//! Input: decoded with `arbitrary` into [`Input`]; endpoints and hosts are often built from a
//! plausible prefix plus arbitrary text so that many inputs pass validation.
//!
//! Checks, for every configuration the builders accept with a non-zero port:
//! - the URL parses as an `http::Uri`;
//! - it starts with the configured authorization endpoint up to its query, then `?`;
//! - it has no `#`, whitespace, control or non-ASCII characters;
//! - its query decodes strictly to pairs whose names each appear once, with
//!   `response_type=code`, `client_id`, `code_challenge_method=S256`, `code_challenge`,
//!   `state` and `redirect_uri`; `client_id`, `scope`, the extra parameters and the endpoint's
//!   own query round-trip to the configured values.
//!
//! A zero port must be refused by `Engine::new`.
#![no_main]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Instant;

use arbitrary::Arbitrary;
use latchkey::{Config, Engine, Provider};
use latchkey_tests::harness::entropy_from;
use libfuzzer_sys::fuzz_target;

/// A string that is often a valid URL: one of a few prefixes followed by arbitrary text.
#[derive(Debug, Arbitrary)]
struct Url {
    prefix: u8,
    rest: String,
}

impl Url {
    fn render(&self) -> String {
        const PREFIXES: [&str; 7] = [
            "https://idp.example/authorize",
            "https://idp.example",
            "http://127.0.0.1:9000/oauth2/auth",
            "https://[::1]:8443/",
            "http://localhost/a?b=c",
            "https://login.example.com/tenant/oauth2/v2.0/authorize?",
            "",
        ];
        format!(
            "{}{}",
            PREFIXES[usize::from(self.prefix) % PREFIXES.len()],
            self.rest
        )
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    authorization_endpoint: Url,
    token_endpoint: Url,
    client_id: String,
    scopes: Vec<String>,
    params: Vec<(String, String)>,
    issuer: Option<Url>,
    host: u8,
    other_host: String,
    port: u16,
    path: String,
}

/// Strict `application/x-www-form-urlencoded` decoding of one component.
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .expect("`%` followed by two characters");
                let hex = std::str::from_utf8(hex).expect("ASCII escape");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("decodes to UTF-8")
}

fuzz_target!(|input: Input| {
    let authorize = input.authorization_endpoint.render();
    let mut builder = Provider::builder(
        authorize.as_str(),
        input.token_endpoint.render(),
        input.client_id.as_str(),
    )
    .scopes(input.scopes.iter().take(4));
    for (name, value) in input.params.iter().take(4) {
        builder = builder.param(name.as_str(), value.as_str());
    }
    if let Some(issuer) = &input.issuer {
        builder = builder.issuer(issuer.render());
    }
    let Ok(provider) = builder.build() else {
        return;
    };
    let host = match input.host % 5 {
        0 => "127.0.0.1",
        1 => "localhost",
        2 => "::1",
        3 => "[::1]",
        _ => input.other_host.as_str(),
    };
    let Ok(config) = Config::builder(provider)
        .redirect_uri(host, input.port, input.path.as_str())
        .build()
    else {
        return;
    };
    let mut engine = Engine::new(config).expect("an engine for every built configuration");
    if input.port == 0 {
        // Device logins only: a browser login needs the port in its redirect URI.
        assert_eq!(
            engine.start(Instant::now(), entropy_from(1)).unwrap_err(),
            latchkey::StartError::UnresolvedRedirectPort
        );
        assert!(engine.poll_action().is_none(), "a refused start acts");
        return;
    }
    engine
        .start(Instant::now(), entropy_from(1))
        .expect("first start");
    let Some(latchkey::Action::OpenBrowser { url, .. }) = engine.poll_action() else {
        panic!("start emits OpenBrowser");
    };

    url.parse::<http::Uri>()
        .unwrap_or_else(|e| panic!("authorization URL {url:?} is not a URI: {e}"));
    let base = authorize.split('?').next().unwrap_or_default();
    assert!(
        url.strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('?')),
        "{url:?} does not start with {base:?}?"
    );
    assert!(
        url.bytes().all(|b| b.is_ascii_graphic() && b != b'#'),
        "{url:?} has a fragment, whitespace, control or non-ASCII characters"
    );

    let query = &url[base.len() + 1..];
    let mut pairs = BTreeMap::new();
    for segment in query.split('&').filter(|s| !s.is_empty()) {
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        let (name, value) = (decode(name), decode(value));
        assert!(
            !pairs.contains_key(&name),
            "parameter {name:?} twice in {url:?}"
        );
        pairs.insert(name, value);
    }
    let get = |name: &str| pairs.get(name).map(String::as_str);
    assert_eq!(get("response_type"), Some("code"));
    assert_eq!(get("client_id"), Some(input.client_id.as_str()));
    assert_eq!(get("code_challenge_method"), Some("S256"));
    assert!(
        get("code_challenge").is_some_and(|c| c.len() == 43),
        "code_challenge"
    );
    assert!(get("state").is_some_and(|s| !s.is_empty()), "state");
    assert_eq!(get("redirect_uri"), Some(engine.redirect_uri()));
    let scopes: Vec<&String> = input.scopes.iter().take(4).collect();
    if scopes.is_empty() {
        assert_eq!(get("scope"), None);
    } else {
        let joined = scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(get("scope"), Some(joined.as_str()));
    }
    for (name, value) in input.params.iter().take(4) {
        assert_eq!(get(name), Some(value.as_str()), "parameter {name:?}");
    }
    if let Some((_, own)) = authorize.split_once('?') {
        for segment in own.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            assert_eq!(
                get(&decode(name)),
                Some(decode(value).as_str()),
                "endpoint's {name:?}"
            );
        }
    }
    let expected = 6 + usize::from(!scopes.is_empty()) + input.params.iter().take(4).count();
    let own = pairs.len().saturating_sub(expected);
    assert!(
        own <= authorize.matches('&').count() + 1,
        "unexpected parameters in {url:?}"
    );
});
