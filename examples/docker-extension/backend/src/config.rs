//! The extension's settings: one JSON file in the image (or mounted over it), naming the
//! provider, the redirect, the socket, the token file and the APIs the UI may call. The client
//! secret is never in it: `client_secret_file` names the file that holds it.
//!
//! ```json
//! {
//!   "issuer": "https://accounts.google.com",
//!   "client_id": "1234.apps.googleusercontent.com",
//!   "client_secret_file": "/etc/latchkey/client_secret",
//!   "scopes": ["openid", "email"],
//!   "authorization_params": {"access_type": "offline"},
//!   "redirect_uri": "http://127.0.0.1/callback",
//!   "landing": "docker-desktop://dashboard/open",
//!   "socket": "/run/guest-services/latchkey.sock",
//!   "token_file": "/data/tokens.json",
//!   "sample_api": "https://openidconnect.googleapis.com/v1/userinfo",
//!   "api_origins": ["https://openidconnect.googleapis.com"],
//!   "ca_file": "/etc/latchkey/ca.pem"
//! }
//! ```
//!
//! Without `authorization_endpoint` and `token_endpoint` the provider is discovered from
//! `issuer`. The redirect URI is one of two kinds ([`Redirect`]): a loopback URI
//! (`http://127.0.0.1/callback`, the default), where the extension's host binary receives the
//! browser on whatever port is free on the user's machine, or an application URI such as
//! Docker Desktop's `docker-desktop://dashboard/extension-tab?extensionId=…`, whose query the
//! UI forwards.

use std::fmt;
use std::path::{Path, PathBuf};

use latchkey::{ClientAuth, Config, DiscoveryError, Provider, ProviderBuilder};
use latchkey_io::discovery::discover;
use latchkey_io::tls::Roots;
use latchkey_io::transport::Transport;
use secrecy::SecretString;
use serde_json::Value;

/// Where the API socket is when the settings do not say.
pub const DEFAULT_SOCKET: &str = "/run/guest-services/latchkey.sock";
/// Where the tokens are kept when the settings do not say: on the extension's volume.
pub const DEFAULT_TOKEN_FILE: &str = "/data/tokens.json";

/// The settings file, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    /// Where the provider's ID token signing keys are, with endpoints given by hand.
    pub jwks_uri: Option<String>,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub client_auth: Option<ClientAuth>,
    pub scopes: Vec<String>,
    pub authorization_params: Vec<(String, String)>,
    pub redirect: Redirect,
    /// Where the browser goes after its callback.
    pub landing: String,
    pub socket: PathBuf,
    pub token_file: PathBuf,
    /// The API the UI's "Call the API" button asks the backend to call.
    pub sample_api: Option<String>,
    /// The origins (`https://host[:port]`) the backend calls APIs on for the UI, with the
    /// access token; any other is refused. Default: the origin of `sample_api`.
    pub api_origins: Vec<String>,
    /// A company CA (PEM), trusted alongside the public roots.
    pub ca_file: Option<PathBuf>,
}

/// Where the provider sends the browser back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// A loopback URI, `http://HOST[:PORT]/PATH`: the extension's host binary listens there
    /// on the user's machine. Without a port (or with port 0) it takes whatever port is
    /// free, which RFC 8252 §7.3 requires providers to accept; with one, exactly that port.
    Loopback {
        /// `127.0.0.1`, `[::1]` or `localhost`, as configured.
        host: String,
        /// 0: any port.
        port: u16,
        /// The path, from `/`.
        path: String,
    },
    /// Any other scheme: a deep link into Docker Desktop whose query the UI forwards.
    App(String),
}

impl Redirect {
    /// Reads the `redirect_uri` setting.
    fn parse(uri: &str) -> Result<Redirect, SetupError> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return fail(format!("redirect_uri {uri:?} is not an absolute URI"));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return fail(
                "redirect_uri: an https redirect needs a web server; use a loopback URI such as \
                 http://127.0.0.1/callback, or Docker Desktop's deep link",
            );
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Ok(Redirect::App(uri.to_owned()));
        }
        let (host, port, path) = split_loopback(rest).ok_or_else(|| {
            SetupError(format!(
                "redirect_uri {uri:?}: a loopback redirect is http://127.0.0.1/PATH, \
                 http://[::1]/PATH or http://localhost/PATH, with an optional port"
            ))
        })?;
        Ok(Redirect::Loopback {
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_owned(),
        })
    }

    /// The setting as written back: `http://127.0.0.1/callback`, or the deep link.
    pub fn uri(&self) -> String {
        match self {
            Redirect::Loopback {
                host,
                port: 0,
                path,
            } => format!("http://{host}{path}"),
            Redirect::Loopback { host, port, path } => format!("http://{host}:{port}{path}"),
            Redirect::App(uri) => uri.clone(),
        }
    }

    /// Whether `actual`, the URI the host binary reported listening on, fits this loopback
    /// redirect: the same host and path, and the configured port if there is one.
    pub fn accepts(&self, actual: &str) -> bool {
        let Redirect::Loopback { host, port, path } = self else {
            return false;
        };
        let Some(rest) = actual.strip_prefix("http://") else {
            return false;
        };
        match split_loopback(rest) {
            Some((h, p, q)) => {
                h.eq_ignore_ascii_case(host) && q == path && p != 0 && (*port == 0 || p == *port)
            }
            None => false,
        }
    }
}

/// `HOST[:PORT]/PATH` of a loopback URI (after `http://`): the host as written (IPv6 in
/// brackets), the port (0 when absent), the path. `None` for anything else, including a
/// query, a fragment or user information.
fn split_loopback(rest: &str) -> Option<(&str, u16, &str)> {
    let at = rest.find('/')?;
    let (authority, path) = rest.split_at(at);
    if path.contains(['?', '#']) || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let end = bracketed.find(']')?;
            let port = &bracketed[end + 1..];
            (
                &authority[..end + 2],
                port.strip_prefix(':').unwrap_or(port),
            )
        }
        None => authority
            .split_once(':')
            .map_or((authority, ""), |(host, port)| (host, port)),
    };
    let port = match port {
        "" => 0,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
        _ => return None,
    };
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || unbracketed
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then_some((host, port, path))
}

/// Why the extension cannot start.
#[derive(Debug)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the provider is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// Its metadata could not be fetched (offline, DNS, TLS, a timeout): tried again later.
    Unreachable(String),
    /// It answered with metadata that cannot be used: tried again later, as a proxy's
    /// error page or a provider mid-deployment may be the cause.
    BadMetadata(String),
    /// The settings cannot work (a missing secret file, an endpoint that is not https):
    /// only new settings help.
    Misconfigured(String),
}

impl From<SetupError> for ProviderError {
    fn from(SetupError(message): SetupError) -> ProviderError {
        ProviderError::Misconfigured(message)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, SetupError> {
    Err(SetupError(message.into()))
}

impl Settings {
    /// Reads the settings file at `path`.
    pub fn read(path: &Path) -> Result<Settings, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            SetupError(format!("reading the settings {}: {error}", path.display()))
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|error| {
            SetupError(format!(
                "the settings {} are not JSON (line {}, column {})",
                path.display(),
                error.line(),
                error.column()
            ))
        })?;
        Settings::from_json(value).map_err(|SetupError(reason)| {
            SetupError(format!("the settings {}: {reason}", path.display()))
        })
    }

    /// Where the socket goes when the settings at `path` cannot be used: their `socket`
    /// if it can be read at all, so that the UI can still be told what is wrong.
    pub fn socket_hint(path: &Path) -> PathBuf {
        std::fs::read(path)
            .ok()
            .and_then(|text| serde_json::from_slice::<Value>(&text).ok())
            .and_then(|value| value.get("socket")?.as_str().map(PathBuf::from))
            .unwrap_or_else(|| DEFAULT_SOCKET.into())
    }

    /// Reads the settings from their JSON document; unknown members are errors (typos).
    pub fn from_json(value: Value) -> Result<Settings, SetupError> {
        let Value::Object(mut members) = value else {
            return fail("not a JSON object");
        };
        if members.contains_key("client_secret") {
            return fail(
                "client_secret does not belong in the settings: put the secret in a file and \
                 name that file in client_secret_file",
            );
        }
        let mut take = |name: &str| members.remove(name);
        let settings = Settings {
            issuer: optional_string(take("issuer"), "issuer")?,
            authorization_endpoint: optional_string(
                take("authorization_endpoint"),
                "authorization_endpoint",
            )?,
            token_endpoint: optional_string(take("token_endpoint"), "token_endpoint")?,
            revocation_endpoint: optional_string(
                take("revocation_endpoint"),
                "revocation_endpoint",
            )?,
            jwks_uri: optional_string(take("jwks_uri"), "jwks_uri")?,
            client_id: optional_string(take("client_id"), "client_id")?
                .ok_or_else(|| SetupError("client_id is missing".into()))?,
            client_secret_file: optional_string(take("client_secret_file"), "client_secret_file")?
                .map(PathBuf::from),
            client_auth: match optional_string(take("client_auth"), "client_auth")?.as_deref() {
                None => None,
                Some("client_secret_basic") => Some(ClientAuth::SecretBasic),
                Some("client_secret_post") => Some(ClientAuth::SecretPost),
                Some("none") => Some(ClientAuth::None),
                Some(other) => {
                    return fail(format!(
                        "client_auth is client_secret_basic, client_secret_post or none, \
                         not {other:?}"
                    ));
                }
            },
            scopes: strings(take("scopes"), "scopes")?,
            authorization_params: match take("authorization_params") {
                None => Vec::new(),
                Some(Value::Object(params)) => params
                    .into_iter()
                    .map(|(name, value)| match value {
                        Value::String(value) => Ok((name, value)),
                        _ => fail(format!("authorization_params.{name} is not a string")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return fail("authorization_params is not an object"),
            },
            redirect: Redirect::parse(
                optional_string(take("redirect_uri"), "redirect_uri")?
                    .as_deref()
                    .unwrap_or("http://127.0.0.1/callback"),
            )?,
            landing: optional_string(take("landing"), "landing")?
                .unwrap_or_else(|| "docker-desktop://dashboard/open".into()),
            socket: optional_string(take("socket"), "socket")?
                .map_or_else(|| DEFAULT_SOCKET.into(), PathBuf::from),
            token_file: optional_string(take("token_file"), "token_file")?
                .map_or_else(|| DEFAULT_TOKEN_FILE.into(), PathBuf::from),
            sample_api: optional_string(take("sample_api"), "sample_api")?,
            api_origins: strings(take("api_origins"), "api_origins")?
                .iter()
                .map(|origin| {
                    api_origin(origin).ok_or_else(|| {
                        SetupError(format!(
                            "api_origins: {origin:?} is not an origin such as \
                             https://api.example.com (https, or http on loopback; no path)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            ca_file: optional_string(take("ca_file"), "ca_file")?.map(PathBuf::from),
        };
        if members.contains_key("listen") {
            return fail(
                "listen is not a setting any more: the backend does not listen for the browser; \
                 the host binary does, on the user's machine (remove listen)",
            );
        }
        if let Some(unknown) = members.keys().next() {
            return fail(format!("unknown setting {unknown:?}"));
        }
        let mut settings = settings;
        if let Some(sample) = &settings.sample_api {
            let Some(origin) = origin_of(sample) else {
                return fail(format!(
                    "sample_api {sample:?} is not an https URL (or http on loopback)"
                ));
            };
            if settings.api_origins.is_empty() {
                settings.api_origins.push(origin);
            } else if !settings.api_origins.contains(&origin) {
                return fail(format!(
                    "sample_api's origin {origin} is not among api_origins"
                ));
            }
        }
        if let Redirect::App(uri) = &settings.redirect
            && (uri.contains('#') || !uri.bytes().all(|b| b.is_ascii_graphic()))
        {
            return fail(format!(
                "redirect_uri {uri:?}: no fragment, and visible ASCII only"
            ));
        }
        if settings.landing.contains(['\r', '\n']) || !settings.landing.contains(':') {
            return fail(format!(
                "landing {:?} is not an absolute URI",
                settings.landing
            ));
        }
        if settings.issuer.is_none()
            && (settings.authorization_endpoint.is_none() || settings.token_endpoint.is_none())
        {
            return fail(
                "name the provider: issuer (discovery), or authorization_endpoint and \
                 token_endpoint",
            );
        }
        Ok(settings)
    }

    /// The provider: the endpoints given, or discovered from the issuer; the client's
    /// secret read from its file.
    pub async fn provider(&self, transport: &Transport) -> Result<Provider, ProviderError> {
        let client_id = self.client_id.as_str();
        let mut builder = match (&self.authorization_endpoint, &self.token_endpoint) {
            (Some(authorization), Some(token)) => {
                let mut builder = Provider::builder(authorization, token, client_id);
                if let Some(issuer) = &self.issuer {
                    builder = builder.issuer(issuer);
                }
                builder
            }
            _ => {
                let issuer = self.issuer.as_deref().unwrap_or_default();
                discover(&latchkey_smol::Smol, transport, issuer, client_id)
                    .await
                    .map_err(|error| match error {
                        DiscoveryError::Transport(_) => {
                            ProviderError::Unreachable(error.to_string())
                        }
                        DiscoveryError::Metadata(_) => {
                            ProviderError::BadMetadata(error.to_string())
                        }
                        _ => ProviderError::Misconfigured(error.to_string()),
                    })?
            }
        };
        if let Some(endpoint) = &self.revocation_endpoint {
            builder = builder.revocation_endpoint(endpoint);
        }
        if let Some(uri) = &self.jwks_uri {
            builder = builder.jwks_uri(uri);
        }
        // With `openid`, who signed in is verified from the ID token.
        builder = builder
            .scopes(self.scopes.iter().cloned())
            .crypto(latchkey_io::crypto::ring());
        for (name, value) in &self.authorization_params {
            builder = builder.param(name, value);
        }
        if let Some(auth) = self.client_auth {
            builder = builder.client_auth(auth);
        }
        if let Some(path) = &self.client_secret_file {
            builder = builder.client_secret(read_secret(path)?);
        }
        Ok(build(builder)?)
    }

    /// The engine's configuration for one login with `provider`, its redirect URI
    /// `redirect_uri`: the host binary's, for a loopback redirect (nothing listens in the
    /// backend: the host binary forwards the callback through the UI), or the deep link.
    pub fn config(&self, provider: Provider, redirect_uri: &str) -> Result<Config, SetupError> {
        let config = Config::builder(provider);
        let config = match &self.redirect {
            Redirect::Loopback { .. } => config.web_redirect_uri(redirect_uri),
            Redirect::App(_) => config.app_redirect_uri(redirect_uri),
        };
        config
            .build()
            .map_err(|error| SetupError(format!("configuration: {error}")))
    }

    /// Reads the files the settings name (the client secret), so that a missing one is
    /// reported as a setting to fix rather than found only after the provider answers.
    pub fn read_files(&self) -> Result<(), SetupError> {
        if let Some(path) = &self.client_secret_file {
            read_secret(path)?;
        }
        Ok(())
    }

    /// The certificate authorities to trust: the public roots, and `ca_file`'s if given.
    pub fn roots(&self) -> Result<Roots, SetupError> {
        let Some(path) = &self.ca_file else {
            return Ok(Roots::WebPki);
        };
        let pem = std::fs::read(path)
            .map_err(|error| SetupError(format!("reading ca_file {}: {error}", path.display())))?;
        Ok(Roots::WebPkiAnd(pem))
    }
}

fn build(builder: ProviderBuilder) -> Result<Provider, SetupError> {
    builder
        .build()
        .map_err(|error| SetupError(format!("provider: {error}")))
}

/// The client secret in `path`, without the newline `echo` leaves.
fn read_secret(path: &Path) -> Result<SecretString, SetupError> {
    let secret = std::fs::read_to_string(path).map_err(|error| {
        SetupError(format!(
            "reading the client secret from {}: {error}",
            path.display()
        ))
    })?;
    Ok(SecretString::from(
        secret.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

fn optional_string(value: Option<Value>, name: &str) -> Result<Option<String>, SetupError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => fail(format!("{name} is not a string")),
    }
}

fn strings(value: Option<Value>, name: &str) -> Result<Vec<String>, SetupError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => fail(format!("{name} holds something that is not a string")),
            })
            .collect(),
        Some(_) => fail(format!("{name} is not a list of strings")),
    }
}

/// The origin of an API URL, `scheme://host[:port]` in lower case without a default
/// port: `https`, or `http` on a loopback host.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty()
        || authority.contains('@')
        || !authority.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let end = bracketed.find(']')?;
            (&authority[..end + 2], &bracketed[end + 1..])
        }
        None => authority
            .rsplit_once(':')
            .map_or((authority.as_str(), ""), |(host, port)| (host, port)),
    };
    let port = port.strip_prefix(':').unwrap_or(port);
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let default = match scheme.as_str() {
        "https" => "443",
        "http" if latchkey::is_loopback_host(host) => "80",
        _ => return None,
    };
    Some(match port {
        "" => format!("{scheme}://{host}"),
        port if port == default => format!("{scheme}://{host}"),
        port => format!("{scheme}://{host}:{port}"),
    })
}

/// An `api_origins` entry, normalised: an origin and nothing more.
fn api_origin(origin: &str) -> Option<String> {
    let (_, rest) = origin.split_once("://")?;
    let bare = !rest.trim_end_matches('/').contains(['/', '?', '#']);
    bare.then(|| origin_of(origin)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: Value) -> Result<Settings, String> {
        Settings::from_json(value).map_err(|SetupError(reason)| reason)
    }

    #[test]
    fn defaults_fit_the_container_and_any_free_port() {
        let settings =
            settings(json!({"issuer": "https://idp.example", "client_id": "c"})).expect("valid");
        assert_eq!(
            settings.redirect,
            Redirect::Loopback {
                host: "127.0.0.1".into(),
                port: 0,
                path: "/callback".into()
            }
        );
        assert_eq!(settings.redirect.uri(), "http://127.0.0.1/callback");
        assert_eq!(settings.landing, "docker-desktop://dashboard/open");
        assert_eq!(settings.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(settings.token_file, Path::new(DEFAULT_TOKEN_FILE));
        assert!(settings.api_origins.is_empty());
        assert_eq!(settings.ca_file, None);
    }

    #[test]
    fn every_setting_is_read() {
        let settings = settings(json!({
            "authorization_endpoint": "https://idp.example/authorize",
            "token_endpoint": "https://idp.example/token",
            "revocation_endpoint": "https://idp.example/revoke",
            "client_id": "c",
            "client_secret_file": "/run/secrets/s",
            "client_auth": "client_secret_post",
            "scopes": ["openid", "email"],
            "authorization_params": {"access_type": "offline"},
            "redirect_uri": "docker-desktop://dashboard/extension-tab?extensionId=a/b",
            "landing": "docker-desktop://dashboard/extension-tab?extensionId=a/b",
            "socket": "/tmp/s.sock",
            "token_file": "/tmp/t.json",
            "sample_api": "https://idp.example/me",
            "api_origins": ["https://IDP.example:443/", "https://api.example:8443"],
            "ca_file": "/etc/latchkey/ca.pem"
        }))
        .expect("valid");
        assert_eq!(settings.client_auth, Some(ClientAuth::SecretPost));
        assert_eq!(settings.scopes, ["openid", "email"]);
        assert_eq!(
            settings.authorization_params,
            [("access_type".to_owned(), "offline".to_owned())]
        );
        assert_eq!(
            settings.redirect,
            Redirect::App("docker-desktop://dashboard/extension-tab?extensionId=a/b".into())
        );
        assert_eq!(
            settings.api_origins,
            ["https://idp.example", "https://api.example:8443"]
        );
        assert_eq!(
            settings.ca_file.as_deref(),
            Some(Path::new("/etc/latchkey/ca.pem"))
        );
    }

    #[test]
    fn the_sample_apis_origin_is_allowed_by_default() {
        let settings = settings(json!({
            "issuer": "https://i", "client_id": "c",
            "sample_api": "https://api.example/v1/me?x=1"
        }))
        .expect("valid");
        assert_eq!(settings.api_origins, ["https://api.example"]);
    }

    #[test]
    fn loopback_redirects_take_any_port_or_the_one_configured() {
        let any = Redirect::parse("http://127.0.0.1/callback").expect("valid");
        assert!(any.accepts("http://127.0.0.1:53682/callback"));
        assert!(!any.accepts("http://127.0.0.1:0/callback"));
        assert!(!any.accepts("http://127.0.0.1/callback"));
        assert!(!any.accepts("http://localhost:53682/callback"));
        assert!(!any.accepts("http://127.0.0.1:53682/other"));
        assert!(!any.accepts("http://127.0.0.1:53682/callback?x"));
        assert!(!any.accepts("https://127.0.0.1:53682/callback"));
        assert!(!any.accepts("http://evil.example:53682/callback"));
        let fixed = Redirect::parse("http://localhost:8080/cb").expect("valid");
        assert!(fixed.accepts("http://localhost:8080/cb"));
        assert!(!fixed.accepts("http://localhost:8081/cb"));
        let v6 = Redirect::parse("http://[::1]:0/callback").expect("valid");
        assert_eq!(v6.uri(), "http://[::1]/callback");
        assert!(v6.accepts("http://[::1]:4000/callback"));
        let app = Redirect::parse("docker-desktop://dashboard/extension-tab?extensionId=a/b")
            .expect("valid");
        assert!(!app.accepts("http://127.0.0.1:1/callback"));
    }

    #[test]
    fn origins_are_normalised() {
        for (url, origin) in [
            ("https://Api.Example/x", Some("https://api.example")),
            ("https://api.example:443", Some("https://api.example")),
            (
                "https://api.example:8443/x?y",
                Some("https://api.example:8443"),
            ),
            ("http://127.0.0.1:9000/me", Some("http://127.0.0.1:9000")),
            ("http://localhost/me", Some("http://localhost")),
            ("http://[::1]:80/", Some("http://[::1]")),
            ("http://api.example/", None),
            ("ftp://api.example/", None),
            ("https://u@api.example/", None),
            ("https:///x", None),
            ("https://api.example:x/", None),
            ("api.example", None),
        ] {
            assert_eq!(origin_of(url).as_deref(), origin, "{url}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (document, says) in [
            (json!([]), "not a JSON object"),
            (json!({"issuer": "https://i"}), "client_id is missing"),
            (json!({"client_id": "c"}), "name the provider"),
            (
                json!({"issuer": "https://i", "client_id": "c", "scope": ["x"]}),
                "unknown setting \"scope\"",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c", "client_secret": "x"}),
                "client_secret_file",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c", "listen": "0.0.0.0:8080"}),
                "host binary",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c", "client_auth": "basic"}),
                "client_auth",
            ),
            (
                json!({"issuer": 1, "client_id": "c"}),
                "issuer is not a string",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c",
                       "redirect_uri": "http://example.com/callback"}),
                "loopback redirect",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c",
                       "redirect_uri": "https://app.example/callback"}),
                "web server",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c",
                       "redirect_uri": "http://127.0.0.1:8080/callback?x=1"}),
                "loopback redirect",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c",
                       "api_origins": ["https://api.example/v1"]}),
                "api_origins",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c",
                       "sample_api": "https://api.example/me",
                       "api_origins": ["https://other.example"]}),
                "not among api_origins",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c",
                       "sample_api": "http://api.example/me"}),
                "sample_api",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c", "landing": "nowhere"}),
                "landing",
            ),
        ] {
            let error = settings(document.clone()).expect_err(&document.to_string());
            assert!(error.contains(says), "{document}: {error}");
        }
    }

    #[test]
    fn the_socket_hint_survives_bad_settings() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"socket": "/tmp/x.sock", "client_id": 3}"#).expect("write");
        assert_eq!(Settings::socket_hint(&path), Path::new("/tmp/x.sock"));
        std::fs::write(&path, "not json").expect("write");
        assert_eq!(Settings::socket_hint(&path), Path::new(DEFAULT_SOCKET));
        assert_eq!(
            Settings::socket_hint(&dir.path().join("missing.json")),
            Path::new(DEFAULT_SOCKET)
        );
    }
}
