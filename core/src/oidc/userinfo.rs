//! UserInfo (OpenID Connect Core §5.3): the request with the access token, and the reading
//! of its answer, which must name the user the ID token named (S50).

use std::fmt;

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::claims::Identity;
use super::json;
use crate::config::Provider;
use crate::token::TokenSet;

/// The largest UserInfo body read.
const MAX_BODY: usize = 64 * 1024;

/// Why UserInfo gave no claims.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserInfoError {
    /// The provider has no UserInfo endpoint.
    NoEndpoint,
    /// The tokens carry no verified identity to compare the answer with.
    NoIdentity,
    /// The access token cannot go into an `Authorization` header.
    BadAccessToken,
    /// The endpoint answered with this status (401: the access token was refused).
    Status(u16),
    /// The answer is a signed or encrypted JWT (`application/jwt`), which latchkey does not
    /// read.
    Signed,
    /// The answer is not a JSON object (with distinct members, at most 64 KiB).
    NotJson,
    /// The answer's `sub` is missing or not the ID token's: it is discarded (S50).
    Subject,
}

impl fmt::Display for UserInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserInfoError::NoEndpoint => f.write_str("the provider has no UserInfo endpoint"),
            UserInfoError::NoIdentity => f.write_str("the tokens carry no verified identity"),
            UserInfoError::BadAccessToken => {
                f.write_str("the access token cannot be sent in a header")
            }
            UserInfoError::Status(status) => write!(f, "UserInfo answered HTTP {status}"),
            UserInfoError::Signed => f.write_str("signed UserInfo answers are not supported"),
            UserInfoError::NotJson => f.write_str("the UserInfo answer is not a JSON object"),
            UserInfoError::Subject => {
                f.write_str("the UserInfo answer names another user than the ID token")
            }
        }
    }
}

impl std::error::Error for UserInfoError {}

/// The UserInfo request for `tokens` at `provider`: a `GET` with the access token in the
/// `Authorization` header, never in the URL (S43). Send it without following redirects.
///
/// # Errors
///
/// [`UserInfoError::NoEndpoint`] without an endpoint, [`UserInfoError::NoIdentity`] when
/// the tokens have no verified identity to check the answer against.
pub fn userinfo_request(
    provider: &Provider,
    tokens: &TokenSet,
) -> Result<Request<Vec<u8>>, UserInfoError> {
    let endpoint = provider
        .userinfo_endpoint()
        .ok_or(UserInfoError::NoEndpoint)?;
    if tokens.identity().is_none() {
        return Err(UserInfoError::NoIdentity);
    }
    let mut authorization =
        HeaderValue::try_from(format!("Bearer {}", tokens.access_token().expose_secret()))
            .map_err(|_| UserInfoError::BadAccessToken)?;
    authorization.set_sensitive(true);
    let mut request = Request::new(Vec::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = endpoint.clone();
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, authorization);
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    Ok(request)
}

/// Reads the UserInfo answer for the user `identity` names: its claims, when `sub` is the
/// ID token's (S50).
///
/// # Errors
///
/// See [`UserInfoError`]; a mismatched `sub` discards the whole answer.
pub fn read_userinfo(
    response: &http::Response<Vec<u8>>,
    identity: &Identity,
) -> Result<Map<String, Value>, UserInfoError> {
    let status = response.status().as_u16();
    if status != 200 {
        return Err(UserInfoError::Status(status));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/jwt"))
    {
        return Err(UserInfoError::Signed);
    }
    let body = response.body();
    if body.len() > MAX_BODY {
        return Err(UserInfoError::NotJson);
    }
    let claims = json::unique_object(body).ok_or(UserInfoError::NotJson)?;
    match claims.get("sub") {
        Some(Value::String(sub)) if sub == identity.sub() => Ok(claims),
        _ => Err(UserInfoError::Subject),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use secrecy::SecretString;

    use super::*;
    use crate::oidc::tests::Accept;

    fn provider(userinfo: bool) -> Provider {
        let builder = Provider::builder("https://idp.example/a", "https://idp.example/t", "cli")
            .scopes(["openid"])
            .issuer("https://idp.example")
            .jwks_uri("https://idp.example/jwks")
            .crypto(Arc::new(Accept));
        match userinfo {
            true => builder.userinfo_endpoint("https://idp.example/userinfo"),
            false => builder,
        }
        .build()
        .expect("valid")
    }

    fn identity(sub: &str) -> Identity {
        let claims = serde_json::json!({"iss": "https://idp.example", "sub": sub});
        Identity::from_claims(claims.as_object().cloned().unwrap_or_default()).expect("valid")
    }

    fn answer(status: u16, content_type: &str, body: &str) -> http::Response<Vec<u8>> {
        let mut response = http::Response::new(body.as_bytes().to_vec());
        *response.status_mut() = http::StatusCode::from_u16(status).expect("a status");
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("ASCII"),
        );
        response
    }

    #[test]
    fn s43_the_access_token_goes_in_a_sensitive_header_never_the_url() {
        let tokens =
            TokenSet::new(SecretString::from("at-SECRET")).with_identity(Some(identity("jane")));
        let request = userinfo_request(&provider(true), &tokens).expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "https://idp.example/userinfo");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer at-SECRET");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        assert!(!request.uri().to_string().contains("at-SECRET"));
        assert_eq!(
            userinfo_request(&provider(false), &tokens).err(),
            Some(UserInfoError::NoEndpoint)
        );
        let anonymous = TokenSet::new(SecretString::from("at"));
        assert_eq!(
            userinfo_request(&provider(true), &anonymous).err(),
            Some(UserInfoError::NoIdentity)
        );
    }

    #[test]
    fn s50_an_answer_about_another_user_is_discarded() {
        let jane = identity("jane");
        let read = |response| read_userinfo(&response, &jane);
        let claims = read(answer(
            200,
            "application/json",
            r#"{"sub":"jane","email":"j@x"}"#,
        ))
        .expect("jane's claims");
        assert_eq!(claims["email"], "j@x");
        let cases = [
            (
                answer(200, "application/json", r#"{"sub":"mallory"}"#),
                UserInfoError::Subject,
            ),
            (
                answer(200, "application/json", r#"{"email":"j@x"}"#),
                UserInfoError::Subject,
            ),
            (
                answer(200, "application/json", r#"{"sub":7}"#),
                UserInfoError::Subject,
            ),
            (
                answer(200, "application/json", r#"{"sub":"jane","sub":"mallory"}"#),
                UserInfoError::NotJson,
            ),
            (
                answer(200, "application/json", "[]"),
                UserInfoError::NotJson,
            ),
            (
                answer(200, "application/jwt; charset=utf-8", "eyJ.e30.sig"),
                UserInfoError::Signed,
            ),
            (
                answer(401, "application/json", "{}"),
                UserInfoError::Status(401),
            ),
        ];
        for (response, error) in cases {
            assert_eq!(read(response), Err(error));
        }
    }
}
