//! Provider descriptions from authorization server metadata (RFC 8414, OpenID Connect
//! Discovery 1.0): the document at `{issuer}/.well-known/oauth-authorization-server` or
//! `{issuer}/.well-known/openid-configuration`.
//!
//! [`Discovery`] names the requests to make (the driver makes them, as it sends token
//! requests); [`Provider::from_metadata`] decides whether a document may be trusted for an
//! issuer, and what it says.

use std::fmt;

use http::header::ACCEPT;
use http::{HeaderValue, Method, Request};
use serde_json::{Map, Value};

use crate::config::{ConfigError, Provider, ProviderBuilder};
use crate::url::{self, UrlError};

/// Why a metadata document cannot describe the expected issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// The document is not a JSON object.
    NotJson,
    /// The document's `issuer` is not exactly the issuer it was fetched for (S9; RFC 8414
    /// §3.3): it may come from another server, or from a proxy rewriting hostnames.
    IssuerMismatch {
        /// The issuer the document was fetched for.
        expected: String,
        /// What the document says, if anything.
        found: Option<String>,
    },
    /// A required member is missing or not a string (named).
    Missing(&'static str),
    /// `code_challenge_methods_supported` is present and lacks `S256`.
    NoS256,
    /// A metadata location answered with this HTTP status.
    Status(u16),
    /// No metadata location had a document.
    NotFound,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::NotJson => f.write_str("metadata is not a JSON object"),
            MetadataError::IssuerMismatch { expected, found } => write!(
                f,
                "metadata issuer {found:?} is not exactly the expected {expected:?}"
            ),
            MetadataError::Missing(name) => write!(f, "metadata lacks `{name}`"),
            MetadataError::NoS256 => f.write_str("provider does not support PKCE S256"),
            MetadataError::Status(status) => write!(f, "metadata request answered HTTP {status}"),
            MetadataError::NotFound => {
                f.write_str("no metadata at the issuer's well-known locations")
            }
        }
    }
}

impl std::error::Error for MetadataError {}

/// Finding `issuer`'s metadata: the OpenID Connect location
/// (`{issuer}/.well-known/openid-configuration`) first, then the OAuth 2.0 one (RFC 8414
/// §3.1: `/.well-known/oauth-authorization-server` inserted before the issuer's path).
#[derive(Debug, Clone)]
pub struct Discovery {
    issuer: String,
    locations: [http::Uri; 2],
    next: usize,
}

impl Discovery {
    /// Discovery for `issuer`, an `https` URL (or `http` on loopback) without query or
    /// fragment.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidUrl`] for any other issuer.
    pub fn new(issuer: impl Into<String>) -> Result<Discovery, ConfigError> {
        let issuer = issuer.into();
        let invalid = |reason| ConfigError::InvalidUrl {
            field: "issuer",
            reason,
        };
        let parsed = url::parse(&issuer).map_err(invalid)?;
        if parsed.query.is_some() {
            return Err(invalid(UrlError::Fragment));
        }
        let authority_start = issuer.find("://").map_or(0, |at| at + 3);
        let path_start = issuer[authority_start..]
            .find('/')
            .map_or(issuer.len(), |at| authority_start + at);
        let (origin, path) = issuer.split_at(path_start);
        let path = path.trim_end_matches('/');
        let location = |text: String| {
            text.parse::<http::Uri>()
                .map_err(|_| invalid(UrlError::Host))
        };
        let locations = [
            location(format!("{origin}{path}/.well-known/openid-configuration"))?,
            location(format!(
                "{origin}/.well-known/oauth-authorization-server{path}"
            ))?,
        ];
        Ok(Discovery {
            issuer,
            locations,
            next: 0,
        })
    }

    /// The request to make now: a `GET` of the current location.
    pub fn request(&self) -> Request<Vec<u8>> {
        let mut request = Request::new(Vec::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = self.locations[self.next.min(self.locations.len() - 1)].clone();
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        request
    }

    /// Reads the answer to [`request`](Discovery::request). `Ok(Some(builder))`: the
    /// provider, described (see [`Provider::from_metadata`]); `Ok(None)`: no document at
    /// that location (404 or 410), make the next [`request`](Discovery::request).
    ///
    /// # Errors
    ///
    /// [`MetadataError::NotFound`] when no location is left, [`MetadataError::Status`] for
    /// another status, and what [`Provider::from_metadata`] refuses (S9).
    pub fn handle_response(
        &mut self,
        response: &http::Response<Vec<u8>>,
        client_id: impl Into<String>,
    ) -> Result<Option<ProviderBuilder>, MetadataError> {
        match response.status().as_u16() {
            200 => Provider::from_metadata(&self.issuer, response.body(), client_id).map(Some),
            404 | 410 if self.next + 1 < self.locations.len() => {
                self.next += 1;
                Ok(None)
            }
            404 | 410 => Err(MetadataError::NotFound),
            status => Err(MetadataError::Status(status)),
        }
    }
}

impl Provider {
    /// Starts a provider description from `issuer`'s metadata document: endpoints (the
    /// revocation endpoint too, when listed) and issuer filled in, `iss` required when the document says the provider sends it
    /// (`authorization_response_iss_parameter_supported`, RFC 9207). Continue with the
    /// client's settings, then [`build`](ProviderBuilder::build), which validates the
    /// endpoints like any others.
    pub fn from_metadata(
        issuer: &str,
        document: &[u8],
        client_id: impl Into<String>,
    ) -> Result<ProviderBuilder, MetadataError> {
        let metadata: Map<String, Value> =
            serde_json::from_slice(document).map_err(|_| MetadataError::NotJson)?;
        let string = |name: &'static str| metadata.get(name).and_then(Value::as_str);
        let found = string("issuer");
        if found != Some(issuer) {
            return Err(MetadataError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: found.map(str::to_owned),
            });
        }
        let authorization = string("authorization_endpoint")
            .ok_or(MetadataError::Missing("authorization_endpoint"))?;
        let token = string("token_endpoint").ok_or(MetadataError::Missing("token_endpoint"))?;
        if let Some(methods) = metadata.get("code_challenge_methods_supported") {
            let listed = methods
                .as_array()
                .is_some_and(|methods| methods.iter().any(|m| m.as_str() == Some("S256")));
            if !listed {
                return Err(MetadataError::NoS256);
            }
        }
        let sends_iss = metadata
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let builder = Provider::builder(authorization, token, client_id)
            .issuer(issuer)
            .require_iss(sends_iss);
        Ok(match string("revocation_endpoint") {
            Some(revocation) => builder.revocation_endpoint(revocation),
            None => builder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like oidc-provider's `/.well-known/openid-configuration`, abridged.
    const OIDC_PROVIDER: &str = r#"{
        "issuer": "http://localhost:3000",
        "authorization_endpoint": "http://localhost:3000/auth",
        "token_endpoint": "http://localhost:3000/token",
        "revocation_endpoint": "http://localhost:3000/token/revocation",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"]
    }"#;

    fn answer(status: u16, body: &str) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(body.as_bytes().to_vec())
            .expect("a valid response")
    }

    #[test]
    fn the_well_known_locations_follow_oidc_then_rfc8414() {
        for (issuer, oidc, oauth) in [
            (
                "https://idp.example",
                "https://idp.example/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server",
            ),
            (
                "https://idp.example/realms/dev/",
                "https://idp.example/realms/dev/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server/realms/dev",
            ),
            (
                "http://127.0.0.1:3000",
                "http://127.0.0.1:3000/.well-known/openid-configuration",
                "http://127.0.0.1:3000/.well-known/oauth-authorization-server",
            ),
        ] {
            let mut discovery = Discovery::new(issuer).expect(issuer);
            let first = discovery.request();
            assert_eq!(first.method(), Method::GET);
            assert_eq!(first.uri(), oidc);
            assert_eq!(first.headers()[ACCEPT], "application/json");
            assert!(matches!(
                discovery.handle_response(&answer(404, ""), "app"),
                Ok(None)
            ));
            assert_eq!(discovery.request().uri(), oauth);
            assert_eq!(
                discovery
                    .handle_response(&answer(404, ""), "app")
                    .map(|_| ()),
                Err(MetadataError::NotFound)
            );
        }
    }

    #[test]
    fn s6_issuers_are_checked_before_anything_is_fetched() {
        for issuer in [
            "http://idp.example",
            "https://idp.example?x=1",
            "https://idp.example#f",
            "idp.example",
        ] {
            assert!(
                matches!(
                    Discovery::new(issuer),
                    Err(ConfigError::InvalidUrl {
                        field: "issuer",
                        ..
                    })
                ),
                "{issuer}"
            );
        }
    }

    #[test]
    fn s9_discovery_trusts_only_the_issuers_own_document() {
        let mut discovery = Discovery::new("http://localhost:3000").expect("valid");
        let provider = discovery
            .handle_response(&answer(200, OIDC_PROVIDER), "app")
            .expect("trusted")
            .expect("found")
            .build()
            .expect("valid");
        assert_eq!(provider.issuer(), Some("http://localhost:3000"));
        let mut elsewhere = Discovery::new("http://localhost:4000").expect("valid");
        assert!(matches!(
            elsewhere.handle_response(&answer(200, OIDC_PROVIDER), "app"),
            Err(MetadataError::IssuerMismatch { .. })
        ));
        assert_eq!(
            elsewhere
                .handle_response(&answer(500, "oops"), "app")
                .map(|_| ()),
            Err(MetadataError::Status(500))
        );
    }

    #[test]
    fn s9_metadata_for_the_exact_issuer_describes_the_provider() {
        let provider =
            Provider::from_metadata("http://localhost:3000", OIDC_PROVIDER.as_bytes(), "app")
                .unwrap()
                .build()
                .unwrap();
        assert_eq!(provider.issuer(), Some("http://localhost:3000"));
        assert_eq!(provider.token_endpoint(), "http://localhost:3000/token");
        assert_eq!(
            provider
                .revocation_endpoint()
                .map(ToString::to_string)
                .as_deref(),
            Some("http://localhost:3000/token/revocation")
        );
        assert!(
            provider.inner().require_iss,
            "the document says `iss` is always sent"
        );
        assert!(
            provider
                .inner()
                .authorize_prefix
                .starts_with("http://localhost:3000/auth?")
        );
    }

    #[test]
    fn s9_metadata_naming_any_other_issuer_is_refused() {
        for expected in [
            "http://localhost:3000/",
            "http://LOCALHOST:3000",
            "http://127.0.0.1:3000",
            "https://localhost:3000",
            "http://localhost:3000/realms/x",
        ] {
            assert_eq!(
                Provider::from_metadata(expected, OIDC_PROVIDER.as_bytes(), "app").unwrap_err(),
                MetadataError::IssuerMismatch {
                    expected: expected.into(),
                    found: Some("http://localhost:3000".into())
                }
            );
        }
        let anonymous =
            r#"{"authorization_endpoint":"https://a/x","token_endpoint":"https://a/t"}"#;
        assert!(matches!(
            Provider::from_metadata("https://a", anonymous.as_bytes(), "app"),
            Err(MetadataError::IssuerMismatch { found: None, .. })
        ));
    }

    #[test]
    fn metadata_without_s256_or_endpoints_or_json_is_refused() {
        let plain_only = OIDC_PROVIDER.replace(r#"["S256"]"#, r#"["plain"]"#);
        let no_token = OIDC_PROVIDER.replace("token_endpoint", "x_endpoint");
        let issuer = "http://localhost:3000";
        assert_eq!(
            Provider::from_metadata(issuer, plain_only.as_bytes(), "a").unwrap_err(),
            MetadataError::NoS256
        );
        assert_eq!(
            Provider::from_metadata(issuer, no_token.as_bytes(), "a").unwrap_err(),
            MetadataError::Missing("token_endpoint")
        );
        assert_eq!(
            Provider::from_metadata(issuer, b"<html>", "a").unwrap_err(),
            MetadataError::NotJson
        );
    }

    #[test]
    fn s6_endpoints_from_metadata_are_validated_like_configured_ones() {
        let insecure = r#"{"issuer":"https://idp.example","authorization_endpoint":"http://idp.example/auth","token_endpoint":"https://idp.example/token"}"#;
        let builder =
            Provider::from_metadata("https://idp.example", insecure.as_bytes(), "a").unwrap();
        assert!(builder.build().is_err());
    }
}
