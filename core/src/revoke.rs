//! Revoking a token (RFC 7009): the request and the reading of its answer.
//! [`Session`](crate::Session) logs out with it: the refresh token first (which ends the
//! grant at most providers), then the access token, and the stored tokens are deleted
//! whatever the answers (S44).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::config::Provider;
use crate::error::{ProviderError, TransportError};
use crate::exchange;
use crate::keys::Signer;
use crate::outgoing::ProviderRequest;
use crate::token::TokenSet;

/// Which token a revocation names (`token_type_hint`, RFC 7009 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The access token.
    AccessToken,
    /// The refresh token.
    RefreshToken,
}

impl TokenKind {
    /// The `token_type_hint` value.
    pub fn hint(self) -> &'static str {
        match self {
            TokenKind::AccessToken => "access_token",
            TokenKind::RefreshToken => "refresh_token",
        }
    }
}

/// One token revocation at a provider's revocation endpoint.
#[derive(Clone)]
pub(crate) struct Revocation {
    provider: Provider,
    token: SecretString,
    kind: TokenKind,
    /// The key DPoP-bound tokens are revoked with a proof of.
    dpop: Option<Signer>,
}

impl Revocation {
    /// A revocation of `token` (of `kind`) at `provider`, the provider that issued it.
    ///
    /// # Errors
    ///
    /// [`RevocationError::NotSupported`] when the provider has no revocation endpoint:
    /// the caller can still delete its copy of the token.
    pub(crate) fn new(
        provider: &Provider,
        token: &SecretString,
        kind: TokenKind,
    ) -> Result<Revocation, RevocationError> {
        if provider.revocation_endpoint().is_none() {
            return Err(RevocationError::NotSupported);
        }
        Ok(Revocation {
            provider: provider.clone(),
            token: token.clone(),
            kind,
            dpop: None,
        })
    }

    /// The revocations logging out needs for `tokens`, the refresh token first.
    ///
    /// # Errors
    ///
    /// As [`new`](Revocation::new).
    pub(crate) fn for_tokens(
        provider: &Provider,
        tokens: &TokenSet,
    ) -> Result<Vec<Revocation>, RevocationError> {
        let refresh = tokens
            .refresh_token()
            .map(|token| Revocation::new(provider, token, TokenKind::RefreshToken));
        let access = Revocation::new(provider, tokens.access_token(), TokenKind::AccessToken);
        let mut revocations: Vec<Revocation> = refresh
            .into_iter()
            .chain([access])
            .collect::<Result<_, _>>()?;
        // DPoP-bound tokens are revoked with a proof; a key that cannot be loaded does not
        // stop the logout, which revokes without one.
        if let Some(Ok(signer)) = crate::refresh::dpop_signer(provider, tokens) {
            for revocation in &mut revocations {
                revocation.dpop = Some(signer.clone());
            }
        }
        Ok(revocations)
    }

    /// What is revoked.
    pub(crate) fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The request: `token` and `token_type_hint`, POSTed to the revocation endpoint with
    /// the client authenticated as at the token endpoint (RFC 7009 §2.1, S33). The token
    /// travels only in the body (S43).
    pub(crate) fn request(&self) -> ProviderRequest {
        let provider = self.provider.inner();
        let token = self.token.expose_secret();
        let mut body = exchange::form_body(provider, token.len());
        body.append("token", token)
            .append("token_type_hint", self.kind.hint());
        let endpoint = provider
            .revocation_endpoint
            .as_ref()
            .unwrap_or(&provider.token_endpoint); // `new` made sure there is one
        let request = exchange::client_request(&self.provider, endpoint, body);
        match &self.dpop {
            Some(signer) => request.with_dpop(signer.clone(), None),
            None => request,
        }
    }

    /// Reads the answer. 200 means the token is no longer valid, including when it already
    /// was not (RFC 7009 §2.2).
    ///
    /// # Errors
    ///
    /// [`RevocationError::Unavailable`] for 503 (the token may still be valid; try again
    /// later), [`RevocationError::Rejected`] for an OAuth error response, and
    /// [`RevocationError::UnexpectedStatus`] for anything else.
    pub(crate) fn handle_response(
        &self,
        response: &http::Response<Vec<u8>>,
    ) -> Result<(), RevocationError> {
        let status = response.status().as_u16();
        match status {
            200 => Ok(()),
            503 => Err(RevocationError::Unavailable),
            _ => match provider_error(response.body()) {
                Some(error) => Err(RevocationError::Rejected { status, error }),
                None => Err(RevocationError::UnexpectedStatus(status)),
            },
        }
    }
}

/// The OAuth error in a JSON error body, if that is what it is.
fn provider_error(body: &[u8]) -> Option<ProviderError> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| value.get(name)?.as_str().map(str::to_owned);
    Some(ProviderError {
        code: text("error").filter(|code| crate::grammar::is_error_code(code))?,
        description: text("error_description"),
        uri: text("error_uri"),
    })
}

/// Names the endpoint and the kind of token; never the token (S41).
impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("endpoint", &self.provider.revocation_endpoint())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Why a revocation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationError {
    /// The provider has no revocation endpoint.
    NotSupported,
    /// The provider answered 503: the token may still be valid.
    Unavailable,
    /// The provider refused (`unsupported_token_type`, `invalid_client`, …).
    Rejected {
        /// HTTP status of the answer.
        status: u16,
        /// The provider's error.
        error: ProviderError,
    },
    /// Another status without an OAuth error.
    UnexpectedStatus(u16),
    /// The revocation endpoint could not be reached, or did not answer in time.
    Transport(TransportError),
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevocationError::NotSupported => {
                f.write_str("the provider has no token revocation endpoint")
            }
            RevocationError::Unavailable => f.write_str(
                "the revocation endpoint is unavailable (HTTP 503); the token may still be valid",
            ),
            RevocationError::Rejected { status, error } => {
                write!(f, "the revocation was refused (HTTP {status}): {error}")
            }
            RevocationError::UnexpectedStatus(status) => {
                write!(f, "the revocation endpoint answered HTTP {status}")
            }
            RevocationError::Transport(error) => write!(f, "revoking the token: {error}"),
        }
    }
}

impl std::error::Error for RevocationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RevocationError::Transport(error) => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ClientAuth;

    /// A confidential client (`client_secret_post`, secret `s3cr3t`) of `idp.example`, with
    /// its revocation endpoint or without.
    pub(crate) fn provider(revocation: bool) -> Provider {
        let builder = Provider::builder(
            "https://idp.example/authorize",
            "https://idp.example/token",
            "cli",
        )
        .client_secret(SecretString::from("s3cr3t"))
        .client_auth(ClientAuth::SecretPost);
        let builder = if revocation {
            builder.revocation_endpoint("https://idp.example/revoke")
        } else {
            builder
        };
        builder.build().expect("a valid provider")
    }

    fn tokens() -> TokenSet {
        TokenSet::new(SecretString::from("access-1"))
            .with_refresh_token(SecretString::from("refresh-1"))
    }

    fn answer(status: u16, body: &[u8]) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(body.to_vec())
            .expect("a valid response")
    }

    #[test]
    fn s44_logout_revokes_the_refresh_token_then_the_access_token() {
        let revocations = Revocation::for_tokens(&provider(true), &tokens()).expect("supported");
        let bodies: Vec<Vec<u8>> = revocations
            .iter()
            .map(|revocation| revocation.request().request().body().clone())
            .collect();
        assert_eq!(
            bodies,
            [
                b"token=refresh-1&token_type_hint=refresh_token&client_id=cli&client_secret=s3cr3t"
                    .to_vec(),
                b"token=access-1&token_type_hint=access_token&client_id=cli&client_secret=s3cr3t"
                    .to_vec(),
            ]
        );
        for revocation in &revocations {
            let request = revocation.request();
            let request = request.request();
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(request.uri(), "https://idp.example/revoke");
            assert!(!request.uri().to_string().contains("-1"));
        }
        let access_only = TokenSet::new(SecretString::from("access-2"));
        let revocations = Revocation::for_tokens(&provider(true), &access_only).expect("supported");
        assert_eq!(revocations.len(), 1);
        assert_eq!(revocations[0].kind(), TokenKind::AccessToken);
    }

    #[test]
    fn s6_the_revocation_endpoint_is_validated_like_the_token_endpoint() {
        for endpoint in [
            "http://idp.example/revoke",
            "not a url",
            "https://idp.example/r#x",
        ] {
            let error = Provider::builder(
                "https://idp.example/authorize",
                "https://idp.example/token",
                "cli",
            )
            .revocation_endpoint(endpoint)
            .build()
            .expect_err(endpoint);
            assert!(
                matches!(
                    error,
                    crate::ConfigError::InvalidUrl {
                        field: "revocation endpoint",
                        ..
                    }
                ),
                "{endpoint}: {error:?}"
            );
        }
    }

    #[test]
    fn without_an_endpoint_nothing_is_sent() {
        assert_eq!(
            Revocation::for_tokens(&provider(false), &tokens()).expect_err("no endpoint"),
            RevocationError::NotSupported
        );
    }

    #[test]
    fn answers_follow_rfc7009() {
        let revocation = Revocation::for_tokens(&provider(true), &tokens())
            .expect("supported")
            .remove(0);
        assert_eq!(revocation.handle_response(&answer(200, b"")), Ok(()));
        assert_eq!(
            revocation.handle_response(&answer(503, b"")),
            Err(RevocationError::Unavailable)
        );
        match revocation.handle_response(&answer(400, br#"{"error":"unsupported_token_type"}"#)) {
            Err(RevocationError::Rejected { status: 400, error }) => {
                assert_eq!(error.code, "unsupported_token_type");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(
            revocation.handle_response(&answer(500, b"<html>oops</html>")),
            Err(RevocationError::UnexpectedStatus(500))
        );
    }

    #[test]
    fn s41_debug_names_no_token() {
        let revocations = Revocation::for_tokens(&provider(true), &tokens()).expect("supported");
        let debug = format!("{revocations:?}");
        for secret in ["refresh-1", "access-1", "s3cr3t"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
