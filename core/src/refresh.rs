//! Refreshing an access token (RFC 6749 §6): the request and the reading of its answer.
//! [`Session`](crate::Session) sends it, stores the result, and only then hands the new
//! access token out.

use std::fmt;
use std::time::SystemTime;

use secrecy::ExposeSecret;

use crate::config::Provider;
use crate::crypto::SignatureError;
use crate::error::{BadTokenResponse, FlowError, ProviderError};
use crate::exchange::{self, Grant};
use crate::keys::{KeyError, Signer};
use crate::oidc::IdTokenError;
use crate::outgoing::ProviderRequest;
use crate::token::{self, TokenSet, TokenType};

/// Error codes that say the refresh token itself is dead (expired, revoked, already used):
/// RFC 6749's `invalid_grant`, and GitHub's `bad_refresh_token` (sent with HTTP 200, S36).
/// The codes are reported as the provider sent them, as for the code exchange
/// (`bad_verification_code` stays `bad_verification_code`).
const DEAD_REFRESH_TOKEN: [&str; 2] = ["invalid_grant", "bad_refresh_token"];

/// One refresh of a token set at its provider: the request, and the reading of its answer.
/// [`Session`](crate::Session) runs it; this is the protocol part alone.
#[derive(Clone)]
pub(crate) struct Refresh {
    provider: Provider,
    previous: TokenSet,
    /// The key DPoP-bound tokens are refreshed with (RFC 9449 §5).
    dpop: Option<Signer>,
}

impl Refresh {
    /// A refresh of `tokens` at `provider`, which must be the provider that issued them.
    ///
    /// # Errors
    ///
    /// [`RefreshError::NoRefreshToken`] when `tokens` have no refresh token: only a new
    /// login can get fresh tokens.
    pub(crate) fn new(provider: &Provider, tokens: &TokenSet) -> Result<Refresh, RefreshError> {
        if tokens.refresh_token().is_none() {
            return Err(RefreshError::NoRefreshToken);
        }
        Ok(Refresh {
            provider: provider.clone(),
            previous: tokens.clone(),
            dpop: dpop_signer(provider, tokens)
                .transpose()
                .map_err(RefreshError::DpopKey)?,
        })
    }

    /// The tokens being refreshed.
    pub(crate) fn previous(&self) -> &TokenSet {
        &self.previous
    }

    /// The token request: `grant_type=refresh_token` with the refresh token, authenticated
    /// exactly as the provider's code exchange is (S33). No `scope`: the refreshed tokens
    /// keep the scope originally granted. Send it without following redirects (S34).
    pub(crate) fn request(&self) -> ProviderRequest {
        let refresh_token = self
            .previous
            .refresh_token()
            .map(ExposeSecret::expose_secret)
            .unwrap_or_default(); // `new` made sure there is one
        let request = exchange::token_request(&self.provider, Grant::Refresh { refresh_token });
        match &self.dpop {
            Some(signer) => request.with_dpop(signer.clone(), None),
            None => request,
        }
    }

    /// Reads the token endpoint's answer, received at `received_at` (the base of
    /// `expires_in`). The new token set keeps what the answer left out: the refresh token
    /// when it was not rotated, the scope, the ID token. A rotated refresh token replaces
    /// the old one. Its audience is the answer's `resource`, else the resources the refresh
    /// asked for (the provider's).
    ///
    /// Store the result before using it (S42): with rotation, the old refresh token is
    /// dead once this answer has been given.
    ///
    /// # Errors
    ///
    /// [`RefreshError::LoginRequired`] for `invalid_grant`, or GitHub's `bad_refresh_token`,
    /// at any HTTP status (the refresh token expired, was revoked, or was already used):
    /// delete the stored tokens (S42) and log in again. Other refusals are
    /// [`RefreshError::Rejected`], answers that are not token responses
    /// [`RefreshError::BadResponse`].
    pub(crate) fn handle_response(
        &self,
        received_at: SystemTime,
        response: &http::Response<Vec<u8>>,
    ) -> Result<TokenSet, RefreshError> {
        let provider = &self.provider;
        match token::parse_token_response(
            response,
            provider.scopes(),
            provider.resources(),
            received_at,
        ) {
            // S61: DPoP-bound tokens must come back bound, not as bearer tokens.
            Ok(fresh) if self.dpop.is_some() && *fresh.token_type() != TokenType::DPoP => {
                Err(RefreshError::BadResponse {
                    status: response.status().as_u16(),
                    reason: BadTokenResponse::NotDpopBound,
                })
            }
            Ok(fresh) => Ok(fresh.carry_over(&self.previous)),
            Err(FlowError::TokenRejected { error, .. })
                if DEAD_REFRESH_TOKEN.contains(&error.code.as_str()) =>
            {
                Err(RefreshError::LoginRequired(error))
            }
            Err(FlowError::TokenRejected { status, error }) => {
                Err(RefreshError::Rejected { status, error })
            }
            Err(FlowError::BadTokenResponse { status, reason }) => {
                Err(RefreshError::BadResponse { status, reason })
            }
            Err(other) => {
                debug_assert!(false, "the token parser produced {other:?}");
                Err(RefreshError::BadResponse {
                    status: response.status().as_u16(),
                    reason: BadTokenResponse::Unparseable,
                })
            }
        }
    }
}

/// The key `tokens` are bound to, loaded by `provider`'s crypto provider; `None` for bearer
/// tokens.
pub(crate) fn dpop_signer(
    provider: &Provider,
    tokens: &TokenSet,
) -> Option<Result<Signer, KeyError>> {
    let key = tokens.dpop_key()?.clone();
    Some(match provider.inner().crypto.clone() {
        Some(crypto) => Signer::new(key, crypto),
        None => Err(KeyError::Provider(SignatureError::Unsupported)),
    })
}

/// Names the provider and whether a refresh token is held; never a token (S41).
impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("token_endpoint", self.provider.token_endpoint())
            .field("client_id", &self.provider.client_id())
            .finish_non_exhaustive()
    }
}

/// Why a refresh gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshError {
    /// The token set has no refresh token.
    NoRefreshToken,
    /// The provider refused the refresh token (`invalid_grant`, GitHub's
    /// `bad_refresh_token`): it expired, was revoked, or was already used (rotation). The
    /// stored tokens are dead; delete them (S42). The error is the provider's, code as sent.
    LoginRequired(ProviderError),
    /// The provider refused the request for another reason (`invalid_client`, GitHub's
    /// `incorrect_client_credentials`, …): a new login would not help.
    Rejected {
        /// HTTP status of the answer.
        status: u16,
        /// The provider's error.
        error: ProviderError,
    },
    /// The answer was not a token response.
    BadResponse {
        /// HTTP status of the answer.
        status: u16,
        /// What was wrong with it.
        reason: BadTokenResponse,
    },
    /// The refreshed ID token failed verification (S49): a different user, issuer or
    /// audience, or a token the provider did not sign. The stored tokens were deleted.
    IdToken(IdTokenError),
    /// The DPoP key the tokens are bound to cannot be loaded (by this crypto provider):
    /// no proof, so no refresh; only a new login helps.
    DpopKey(KeyError),
}

impl RefreshError {
    /// Whether only a new login can get tokens now ([`NoRefreshToken`], [`LoginRequired`],
    /// [`IdToken`] and [`DpopKey`]).
    ///
    /// [`NoRefreshToken`]: RefreshError::NoRefreshToken
    /// [`LoginRequired`]: RefreshError::LoginRequired
    /// [`IdToken`]: RefreshError::IdToken
    /// [`DpopKey`]: RefreshError::DpopKey
    pub fn login_required(&self) -> bool {
        matches!(
            self,
            RefreshError::NoRefreshToken
                | RefreshError::LoginRequired(_)
                | RefreshError::IdToken(_)
                | RefreshError::DpopKey(_)
        )
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshError::NoRefreshToken => {
                f.write_str("login required: the tokens have no refresh token")
            }
            RefreshError::LoginRequired(error) => {
                write!(f, "login required: the refresh token was refused ({error})")
            }
            RefreshError::Rejected { status, error } => write!(
                f,
                "token endpoint rejected the refresh (HTTP {status}): {error}"
            ),
            RefreshError::BadResponse { status, reason } => write!(
                f,
                "token endpoint gave no usable answer to the refresh (HTTP {status}): {reason}"
            ),
            RefreshError::IdToken(error) => write!(f, "login required: refreshed {error}"),
            RefreshError::DpopKey(error) => {
                write!(
                    f,
                    "login required: the tokens' DPoP key cannot be used ({error})"
                )
            }
        }
    }
}

impl std::error::Error for RefreshError {}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use secrecy::SecretString;

    use super::*;
    use crate::config::ClientAuth;
    use crate::token::TokenType;

    const TOKEN_ENDPOINT: &str = "https://idp.example/token";

    fn provider(auth: ClientAuth) -> Provider {
        // The ID tokens here are opaque placeholders: the session's tests verify real ones.
        let builder = Provider::builder("https://idp.example/authorize", TOKEN_ENDPOINT, "cli")
            .scopes(["openid", "email"])
            .verify_id_token(false);
        let builder = match auth {
            ClientAuth::None => builder,
            auth => builder
                .client_secret(SecretString::from("s3cr3t"))
                .client_auth(auth),
        };
        builder.build().expect("a valid provider")
    }

    fn stored() -> TokenSet {
        let body = br#"{"access_token":"old-access","token_type":"Bearer","expires_in":60,"refresh_token":"refresh-1","scope":"openid email","id_token":"id-1"}"#;
        token::parse_token_response(&answer(200, body), &[], &[], received_at())
            .expect("a valid token response")
    }

    fn received_at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    const JSON: &str = "application/json";
    /// What GitHub sends without `Accept: application/json`.
    const GITHUB_FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

    fn answer(status: u16, body: &[u8]) -> http::Response<Vec<u8>> {
        answer_as(status, JSON, body)
    }

    fn answer_as(status: u16, content_type: &str, body: &[u8]) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(body.to_vec())
            .expect("a valid response")
    }

    fn refreshed(auth: ClientAuth, status: u16, body: &[u8]) -> Result<TokenSet, RefreshError> {
        refreshed_as(auth, status, JSON, body)
    }

    /// The stored tokens refreshed with `body`, received 30 s after they were.
    fn refreshed_as(
        auth: ClientAuth,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<TokenSet, RefreshError> {
        Refresh::new(&provider(auth), &stored())
            .expect("a refresh token is stored")
            .handle_response(
                received_at() + Duration::from_secs(30),
                &answer_as(status, content_type, body),
            )
    }

    /// `received_at() + 30 s + seconds`: the expiry of an answer to [`refreshed_as`].
    fn expiry_after(seconds: u64) -> Option<SystemTime> {
        Some(received_at() + Duration::from_secs(30 + seconds))
    }

    fn exposed(secret: Option<&SecretString>) -> Option<&str> {
        secret.map(ExposeSecret::expose_secret)
    }

    #[test]
    fn rfc8707_a_refresh_asks_for_the_same_resources() {
        let provider = Provider::builder("https://idp.example/authorize", TOKEN_ENDPOINT, "cli")
            .resource("https://api.example/")
            .build()
            .expect("a valid provider");
        let request = Refresh::new(&provider, &stored())
            .expect("refreshable")
            .request()
            .finish(received_at())
            .expect("nothing to sign");
        assert_eq!(
            request.body(),
            b"grant_type=refresh_token&refresh_token=refresh-1&resource=https%3A%2F%2Fapi.example%2F&client_id=cli"
        );
    }

    #[test]
    fn rfc8707_refreshed_tokens_are_for_the_answers_resource_else_the_requested_ones() {
        let provider = Provider::builder("https://idp.example/authorize", TOKEN_ENDPOINT, "cli")
            .resource("https://api.example/")
            .build()
            .expect("a valid provider");
        let refresh = Refresh::new(&provider, &stored()).expect("refreshable");
        let fresh = |body: &[u8]| {
            refresh
                .handle_response(received_at(), &answer(200, body))
                .expect("fresh tokens")
        };
        let asked = fresh(br#"{"access_token":"new-access"}"#);
        assert_eq!(asked.audience(), ["https://api.example/"]);
        let named =
            fresh(br#"{"access_token":"new-access","resource":"https://graph.microsoft.com"}"#);
        assert_eq!(named.audience(), ["https://graph.microsoft.com"]);
        let junk = fresh(br#"{"access_token":"new-access","resource":{"a":1}}"#);
        assert_eq!(junk.audience(), ["https://api.example/"]);
        // No resource configured, none named: nothing known.
        let none = refreshed(
            ClientAuth::SecretBasic,
            200,
            br#"{"access_token":"new-access"}"#,
        )
        .expect("fresh tokens");
        assert!(none.audience().is_empty());
    }

    #[test]
    fn s33_s43_the_request_is_a_refresh_grant_authenticated_like_the_code_exchange() {
        let request = Refresh::new(&provider(ClientAuth::SecretBasic), &stored())
            .expect("refreshable")
            .request()
            .finish(received_at())
            .expect("nothing to sign");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri(), TOKEN_ENDPOINT);
        assert_eq!(
            request.body(),
            b"grant_type=refresh_token&refresh_token=refresh-1"
        );
        // base64("cli:s3cr3t")
        assert_eq!(request.headers()["authorization"], "Basic Y2xpOnMzY3IzdA==");
        assert_eq!(
            request.headers()["content-type"],
            "application/x-www-form-urlencoded"
        );

        let post = Refresh::new(&provider(ClientAuth::SecretPost), &stored())
            .expect("refreshable")
            .request()
            .finish(received_at())
            .expect("nothing to sign");
        assert_eq!(
            post.body(),
            b"grant_type=refresh_token&refresh_token=refresh-1&client_id=cli&client_secret=s3cr3t"
        );
        assert!(!post.headers().contains_key("authorization"));

        let public = Refresh::new(&provider(ClientAuth::None), &stored())
            .expect("refreshable")
            .request()
            .finish(received_at())
            .expect("nothing to sign");
        assert_eq!(
            public.body(),
            b"grant_type=refresh_token&refresh_token=refresh-1&client_id=cli"
        );
        for request in [&request, &post, &public] {
            assert!(!request.uri().to_string().contains("refresh-1"));
        }
    }

    #[test]
    fn s42_a_rotated_refresh_token_replaces_the_old_one() {
        let fresh = refreshed(
            ClientAuth::SecretBasic,
            200,
            br#"{"access_token":"new-access","token_type":"Bearer","expires_in":3600,"refresh_token":"refresh-2"}"#,
        )
        .expect("fresh tokens");
        assert_eq!(fresh.access_token().expose_secret(), "new-access");
        assert_eq!(exposed(fresh.refresh_token()), Some("refresh-2"));
        assert_eq!(
            fresh.expires_at(),
            Some(received_at() + Duration::from_secs(30 + 3600))
        );
    }

    #[test]
    fn what_the_answer_leaves_out_is_kept() {
        let fresh = refreshed(
            ClientAuth::SecretBasic,
            200,
            br#"{"access_token":"new-access","token_type":"bearer","expires_in":"3599"}"#,
        )
        .expect("fresh tokens");
        assert_eq!(fresh.access_token().expose_secret(), "new-access");
        assert_eq!(exposed(fresh.refresh_token()), Some("refresh-1"));
        assert_eq!(fresh.scope(), Some("openid email"));
        assert_eq!(exposed(fresh.id_token()), Some("id-1"));
    }

    #[test]
    fn what_the_answer_says_wins() {
        let fresh = refreshed(
            ClientAuth::SecretBasic,
            200,
            br#"{"access_token":"new-access","token_type":"Bearer","scope":"openid","id_token":"id-2"}"#,
        )
        .expect("fresh tokens");
        assert_eq!(fresh.scope(), Some("openid"));
        let change = fresh.scope_change().expect("a narrower scope is reported");
        assert_eq!(change.removed, ["email"]);
        assert_eq!(exposed(fresh.id_token()), Some("id-2"));
        assert_eq!(fresh.expires_at(), None);
    }

    #[test]
    fn s42_invalid_grant_means_login_required_at_any_status() {
        for status in [400, 200] {
            let error = refreshed(
                ClientAuth::SecretBasic,
                status,
                br#"{"error":"invalid_grant","error_description":"Refresh token expired"}"#,
            )
            .expect_err("refused");
            assert!(error.login_required(), "{error}");
            match error {
                RefreshError::LoginRequired(error) => {
                    assert_eq!(error.code, "invalid_grant");
                    assert_eq!(error.description.as_deref(), Some("Refresh token expired"));
                }
                other => panic!("expected LoginRequired, got {other:?}"),
            }
        }
    }

    #[test]
    fn github_app_refresh_in_a_form_or_json_body_rotates_and_sets_the_expiry() {
        let form = b"access_token=ghu_R3fr35h3dT0k3n4f1nfP0d1ea8&expires_in=28800&refresh_token=ghr_R0t4t3d1B4a2e77838347a7E4d&refresh_token_expires_in=15897600&scope=&token_type=bearer";
        let json = br#"{"access_token":"ghu_R3fr35h3dT0k3n4f1nfP0d1ea8","expires_in":28800,"refresh_token":"ghr_R0t4t3d1B4a2e77838347a7E4d","refresh_token_expires_in":15897600,"scope":"","token_type":"bearer"}"#;
        for (content_type, body) in [(GITHUB_FORM, &form[..]), (JSON, &json[..])] {
            let fresh = refreshed_as(ClientAuth::SecretPost, 200, content_type, body)
                .expect("GitHub's refresh answer");
            assert_eq!(
                fresh.access_token().expose_secret(),
                "ghu_R3fr35h3dT0k3n4f1nfP0d1ea8"
            );
            assert_eq!(
                exposed(fresh.refresh_token()),
                Some("ghr_R0t4t3d1B4a2e77838347a7E4d"),
                "rotated"
            );
            assert_eq!(fresh.expires_at(), expiry_after(28800));
            assert_eq!(fresh.token_type(), &TokenType::Bearer);
            assert!(!fresh.token_type_defaulted());
            assert!(
                fresh.extra().contains_key("refresh_token_expires_in"),
                "{fresh:?}"
            );
        }
    }

    #[test]
    fn s36_s42_github_bad_refresh_token_at_http_200_means_login_required() {
        let form = b"error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect+or+expired.";
        let json = br#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#;
        for (content_type, body) in [(GITHUB_FORM, &form[..]), (JSON, &json[..])] {
            let error =
                refreshed_as(ClientAuth::SecretPost, 200, content_type, body).expect_err("refused");
            assert!(error.login_required(), "{error}");
            match error {
                RefreshError::LoginRequired(error) => {
                    assert_eq!(error.code, "bad_refresh_token", "reported as sent");
                    assert_eq!(
                        error.description.as_deref(),
                        Some("The refresh token passed is incorrect or expired.")
                    );
                }
                other => panic!("expected LoginRequired, got {other:?}"),
            }
        }
    }

    #[test]
    fn s36_github_incorrect_client_credentials_at_http_200_is_no_reason_to_log_in_again() {
        let body = b"error=incorrect_client_credentials&error_description=The+client_id+and%2For+client_secret+passed+are+incorrect.";
        let error =
            refreshed_as(ClientAuth::SecretPost, 200, GITHUB_FORM, body).expect_err("refused");
        assert!(!error.login_required(), "{error}");
        assert!(
            matches!(&error, RefreshError::Rejected { status: 200, error }
                if error.code == "incorrect_client_credentials"),
            "{error:?}"
        );
    }

    #[test]
    fn entra_refresh_with_string_expiry_rotates_and_sets_the_expiry() {
        let body = br#"{"token_type":"Bearer","scope":"openid email","expires_in":"3599","ext_expires_in":"3599","access_token":"eyJ0eXAiOiJKV1QiLCJub25jZSI6IkFRQUJBQUFBQUFCIn0.eyJhdWQiOiIwMDAwMDAwMyJ9.sig2","refresh_token":"0.AAAAbWQ2dXNlcmVmcmVzaHRva2Vu-rotated"}"#;
        let fresh = refreshed(ClientAuth::SecretBasic, 200, body).expect("Entra's refresh answer");
        assert_eq!(fresh.expires_at(), expiry_after(3599));
        assert_eq!(
            exposed(fresh.refresh_token()),
            Some("0.AAAAbWQ2dXNlcmVmcmVzaHRva2Vu-rotated")
        );
        assert_eq!(
            fresh.extra().get("ext_expires_in"),
            Some(&serde_json::Value::from("3599"))
        );
        assert!(!fresh.token_type_defaulted());
    }

    #[test]
    fn refresh_without_token_type_defaults_to_bearer_and_rotates() {
        // LinkedIn's shape: no token_type, a rotated refresh token with its own lifetime.
        let body = br#"{"access_token":"AQV8-refreshed","expires_in":5183999,"refresh_token":"AQWm-rotated","refresh_token_expires_in":31535999}"#;
        let fresh = refreshed(ClientAuth::SecretPost, 200, body).expect("an answer");
        assert_eq!(fresh.token_type(), &TokenType::Bearer);
        assert!(fresh.token_type_defaulted(), "the answer named no type");
        assert_eq!(exposed(fresh.refresh_token()), Some("AQWm-rotated"));
        assert_eq!(fresh.expires_at(), expiry_after(5_183_999));
    }

    #[test]
    fn other_refusals_and_non_answers_are_told_apart() {
        let error = refreshed(
            ClientAuth::SecretBasic,
            401,
            br#"{"error":"invalid_client"}"#,
        )
        .expect_err("refused");
        assert!(!error.login_required());
        assert!(
            matches!(&error, RefreshError::Rejected { status: 401, error } if error.code == "invalid_client"),
            "{error:?}"
        );
        let error = refreshed(ClientAuth::SecretBasic, 502, b"<html>Bad Gateway</html>")
            .expect_err("not a token response");
        assert_eq!(
            error,
            RefreshError::BadResponse {
                status: 502,
                reason: BadTokenResponse::UnexpectedStatus
            }
        );
        let error = refreshed(ClientAuth::SecretBasic, 200, br#"{"token_type":"Bearer"}"#)
            .expect_err("no access token");
        assert_eq!(
            error,
            RefreshError::BadResponse {
                status: 200,
                reason: BadTokenResponse::MissingAccessToken
            }
        );
    }

    #[test]
    fn tokens_without_a_refresh_token_need_a_login() {
        let tokens = TokenSet::new(SecretString::from("access-only"));
        let error =
            Refresh::new(&provider(ClientAuth::None), &tokens).expect_err("nothing to refresh");
        assert_eq!(error, RefreshError::NoRefreshToken);
        assert!(error.login_required());
    }

    #[test]
    fn s41_debug_and_errors_name_no_token() {
        let refresh =
            Refresh::new(&provider(ClientAuth::SecretBasic), &stored()).expect("refreshable");
        let debug = format!("{refresh:?}");
        for secret in ["refresh-1", "old-access", "id-1", "s3cr3t"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let error = refreshed(
            ClientAuth::SecretBasic,
            400,
            br#"{"error":"invalid_grant"}"#,
        )
        .expect_err("refused");
        assert!(!error.to_string().contains("refresh-1"), "{error}");
    }
}
