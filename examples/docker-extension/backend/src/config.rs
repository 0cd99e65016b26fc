//! The extension's settings: one JSON file, mounted into the container (never baked into the
//! image's defaults), naming the provider, the redirect, the socket and the token file. The
//! client secret is never in it: `client_secret_file` names the file that holds it.
//!
//! ```json
//! {
//!   "issuer": "https://accounts.google.com",
//!   "client_id": "1234.apps.googleusercontent.com",
//!   "client_secret_file": "/etc/latchkey/client_secret",
//!   "scopes": ["openid", "email"],
//!   "authorization_params": {"access_type": "offline"},
//!   "redirect_uri": "http://localhost:8080/callback",
//!   "listen": "0.0.0.0:8080",
//!   "landing": "docker-desktop://dashboard/open",
//!   "socket": "/run/guest-services/latchkey.sock",
//!   "token_file": "/data/tokens.json",
//!   "sample_api": "https://openidconnect.googleapis.com/v1/userinfo"
//! }
//! ```
//!
//! Without `authorization_endpoint` and `token_endpoint` the provider is discovered from
//! `issuer`. A `redirect_uri` that is not `http://` is an application redirect (Docker
//! Desktop's `docker-desktop://dashboard/extension-tab?extensionId=…`): the UI forwards the
//! deep link to `POST /callback` and nothing listens on a port.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use latchkey::{ClientAuth, Config, Landing, Provider, ProviderBuilder};
use latchkey_io::discovery::discover;
use latchkey_io::transport::Transport;
use secrecy::SecretString;
use serde_json::Value;

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
    pub redirect_uri: String,
    pub listen: Vec<SocketAddr>,
    pub landing: String,
    pub socket: PathBuf,
    pub token_file: PathBuf,
    pub sample_api: Option<String>,
}

/// Why the extension cannot start.
#[derive(Debug)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
            redirect_uri: optional_string(take("redirect_uri"), "redirect_uri")?
                .unwrap_or_else(|| "http://localhost:8080/callback".into()),
            listen: strings(take("listen").map(one_or_many), "listen")?
                .iter()
                .map(|address| {
                    address.parse().map_err(|_| {
                        SetupError(format!("listen: {address:?} is not an IP address and port"))
                    })
                })
                .collect::<Result<_, _>>()?,
            landing: optional_string(take("landing"), "landing")?
                .unwrap_or_else(|| "docker-desktop://dashboard/open".into()),
            socket: optional_string(take("socket"), "socket")?
                .map_or_else(|| "/run/guest-services/latchkey.sock".into(), PathBuf::from),
            token_file: optional_string(take("token_file"), "token_file")?
                .map_or_else(|| "/data/tokens.json".into(), PathBuf::from),
            sample_api: optional_string(take("sample_api"), "sample_api")?,
        };
        if let Some(unknown) = members.keys().next() {
            return fail(format!("unknown setting {unknown:?}"));
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
    pub async fn provider(&self, transport: &Transport) -> Result<Provider, SetupError> {
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
                    .map_err(|error| SetupError(error.to_string()))?
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
        build(builder)
    }

    /// The engine's configuration for `provider`.
    pub fn config(&self, provider: Provider) -> Result<Config, SetupError> {
        let config = Config::builder(provider);
        // An http:// URI is the loopback listener's; any other scheme the application's own.
        let config = if self.redirect_uri.starts_with("http://") {
            config.loopback_redirect_uri(&self.redirect_uri)
        } else {
            config.app_redirect_uri(&self.redirect_uri)
        };
        config
            .on_success(Landing::Redirect(self.landing.clone()))
            .build()
            .map_err(|error| SetupError(format!("configuration: {error}")))
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

/// `"a"` as `["a"]`.
fn one_or_many(value: Value) -> Value {
    match value {
        Value::String(_) => Value::Array(vec![value]),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: Value) -> Result<Settings, String> {
        Settings::from_json(value).map_err(|SetupError(reason)| reason)
    }

    #[test]
    fn defaults_fit_the_container() {
        let settings =
            settings(json!({"issuer": "https://idp.example", "client_id": "c"})).expect("valid");
        assert_eq!(settings.redirect_uri, "http://localhost:8080/callback");
        assert_eq!(settings.landing, "docker-desktop://dashboard/open");
        assert_eq!(
            settings.socket,
            Path::new("/run/guest-services/latchkey.sock")
        );
        assert_eq!(settings.token_file, Path::new("/data/tokens.json"));
        assert!(settings.listen.is_empty());
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
            "listen": "0.0.0.0:8080",
            "landing": "docker-desktop://dashboard/extension-tab?extensionId=a/b",
            "socket": "/tmp/s.sock",
            "token_file": "/tmp/t.json",
            "sample_api": "https://idp.example/me"
        }))
        .expect("valid");
        assert_eq!(settings.client_auth, Some(ClientAuth::SecretPost));
        assert_eq!(settings.scopes, ["openid", "email"]);
        assert_eq!(
            settings.authorization_params,
            [("access_type".to_owned(), "offline".to_owned())]
        );
        assert_eq!(settings.listen, ["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(
            settings.sample_api.as_deref(),
            Some("https://idp.example/me")
        );
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
                json!({"issuer": "https://i", "client_id": "c", "listen": "localhost"}),
                "listen",
            ),
            (
                json!({"issuer": "https://i", "client_id": "c", "client_auth": "basic"}),
                "client_auth",
            ),
            (
                json!({"issuer": 1, "client_id": "c"}),
                "issuer is not a string",
            ),
        ] {
            let error = settings(document.clone()).expect_err(&document.to_string());
            assert!(error.contains(says), "{document}: {error}");
        }
    }
}
