//! Provider descriptions from authorization server metadata (RFC 8414, OpenID Connect
//! Discovery 1.0): the document at `{issuer}/.well-known/oauth-authorization-server` or
//! `{issuer}/.well-known/openid-configuration`.
//!
//! Fetching the document is the driver's job; this module only decides whether a document
//! may be trusted for an issuer, and what it says.

use std::fmt;

use serde_json::{Map, Value};

use crate::config::{Provider, ProviderBuilder};

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
        }
    }
}

impl std::error::Error for MetadataError {}

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
