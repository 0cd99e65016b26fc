//! Why a flow ended without tokens, and the errors drivers report back to the engine.
//!
//! Only [`FlowError`] ends a flow. Garbage from the browser side never does: it gets an HTTP
//! answer and the flow keeps waiting for its real callback.

use std::fmt;

/// Why a flow finished without tokens. Every flow finishes exactly once, with either a
/// [`TokenSet`](crate::TokenSet) or one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowError {
    /// The provider answered the authorization request with an error. A user who pressed
    /// "deny" gives `access_denied`.
    Denied(ProviderError),
    /// The callback's `iss` was missing although required, or named another issuer
    /// (RFC 9207): the code may come from a different provider (a mix-up attack).
    IssuerMismatch {
        /// The issuer the flow was started with.
        expected: String,
        /// The `iss` the callback carried.
        received: Option<String>,
    },
    /// The callback carried the flow's `state` but was otherwise unusable.
    InvalidCallback(CallbackDefect),
    /// The token endpoint refused the code (RFC 6749 §5.2). A code exchange is never
    /// retried.
    TokenRejected {
        /// HTTP status of the token response (providers such as GitHub use 200).
        status: u16,
        /// The provider's error.
        error: ProviderError,
    },
    /// The token endpoint answered something that is not a token response.
    BadTokenResponse {
        /// HTTP status of the token response.
        status: u16,
        /// What was wrong with it.
        reason: BadTokenResponse,
    },
    /// The pushed authorization request endpoint refused the request (RFC 9126 §2.3):
    /// the client's authentication or the authorization parameters. No browser was sent
    /// anywhere.
    PushRejected {
        /// HTTP status of the answer.
        status: u16,
        /// The provider's error.
        error: ProviderError,
    },
    /// The pushed authorization request endpoint answered without a usable `request_uri`
    /// and `expires_in` (RFC 9126 §2.2).
    BadPushResponse {
        /// HTTP status of the answer.
        status: u16,
        /// What was wrong with it.
        reason: BadTokenResponse,
    },
    /// The token request could not be completed (connection, TLS, I/O).
    Transport(TransportError),
    /// A deadline passed.
    TimedOut(Step),
    /// The application cancelled the flow.
    Cancelled,
    /// A newer flow for the same owner replaced this one (S20).
    Superseded,
    /// The tokens could not be stored; the browser was shown the failure page.
    Storage(StoreError),
    /// The ID token failed verification (S46–S48): nothing was stored.
    IdToken(crate::oidc::IdTokenError),
    /// The device authorization grant (RFC 8628) ended without tokens: the device code
    /// expired, or the device authorization endpoint refused the request or answered
    /// nonsense. (A user who declines is [`FlowError::Denied`].)
    Device(DeviceError),
    /// A shared flow ([`crate::directory`]) could not be stored in, or adopted from, the
    /// flow directory.
    Directory(crate::directory::DirectoryError),
    /// Another replica adopted this flow (its callback landed there) and it failed there,
    /// for this reason.
    FailedElsewhere(String),
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::Denied(error) => write!(f, "authorization denied: {error}"),
            FlowError::IssuerMismatch { expected, received } => match received {
                Some(received) => write!(
                    f,
                    "issuer mismatch: expected {:?}, callback named {:?}",
                    expected, received
                ),
                None => write!(
                    f,
                    "issuer mismatch: callback lacks the required `iss` for {expected:?}"
                ),
            },
            FlowError::InvalidCallback(defect) => write!(f, "invalid callback: {defect}"),
            FlowError::TokenRejected { status, error } => {
                write!(
                    f,
                    "token endpoint rejected the code (HTTP {status}): {error}"
                )
            }
            FlowError::BadTokenResponse { status, reason } => {
                write!(f, "unusable token response (HTTP {status}): {reason}")
            }
            FlowError::PushRejected { status, error } => write!(
                f,
                "pushed authorization request endpoint refused the request (HTTP {status}): \
                 {error}"
            ),
            FlowError::BadPushResponse { status, reason } => write!(
                f,
                "unusable answer of the pushed authorization request endpoint (HTTP \
                 {status}): {reason}"
            ),
            FlowError::Transport(error) => write!(f, "token request failed: {error}"),
            FlowError::TimedOut(step) => write!(f, "timed out {step}"),
            FlowError::Cancelled => f.write_str("cancelled"),
            FlowError::Superseded => f.write_str("superseded by a newer login for the same owner"),
            FlowError::Storage(error) => write!(f, "storing the tokens failed: {error}"),
            FlowError::IdToken(error) => error.fmt(f),
            FlowError::Device(error) => error.fmt(f),
            FlowError::Directory(error) => error.fmt(f),
            FlowError::FailedElsewhere(reason) => {
                write!(f, "the login failed on another replica: {reason}")
            }
        }
    }
}

impl std::error::Error for FlowError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FlowError::Transport(error) => Some(error),
            FlowError::Storage(error) => Some(error),
            FlowError::IdToken(error) => Some(error),
            FlowError::Device(error) => Some(error),
            FlowError::Directory(error) => Some(error),
            _ => None,
        }
    }
}

/// An OAuth error as a provider reports it (RFC 6749 §4.1.2.1 and §5.2).
///
/// The values come from the provider (through the browser, for the authorization response).
/// They are kept for the application and its logs and are never shown on a browser page
/// (S16); `uri` is never followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The error code, such as `access_denied` or `invalid_grant`.
    pub code: String,
    /// `error_description`, if sent.
    pub description: Option<String>,
    /// `error_uri`, if sent.
    pub uri: Option<String>,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug formatting escapes control characters a hostile value might carry.
        write!(f, "{:?}", self.code)?;
        if let Some(description) = &self.description {
            write!(f, " ({description:?})")?;
        }
        Ok(())
    }
}

/// Why a device authorization grant (RFC 8628) ended without tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device code expired before the user approved: the provider answered
    /// `expired_token`, or its `expires_in` passed (S51). Start again for a new code.
    Expired,
    /// The device authorization endpoint refused the request with this OAuth error
    /// (`invalid_client`, `invalid_scope`, `unauthorized_client`; GitHub's
    /// `device_flow_disabled`), at this HTTP status.
    Refused {
        /// The HTTP status (GitHub's errors come with 200).
        status: u16,
        /// The provider's error.
        error: ProviderError,
    },
    /// The device authorization request could not be completed (the endpoint is down or
    /// unreachable). Its polls, later, are retried instead.
    Unreachable(TransportError),
    /// The device authorization endpoint's answer cannot be used: not JSON or a form, a
    /// required member missing, a verification URI that is not an `https` URL (S52), a user
    /// code with characters a terminal would interpret.
    BadResponse {
        /// The HTTP status.
        status: u16,
        /// What is wrong.
        reason: BadTokenResponse,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Expired => f.write_str("the device code expired before it was approved"),
            DeviceError::Refused { status, error } => write!(
                f,
                "the device authorization endpoint refused the request (HTTP {status}): {error}"
            ),
            DeviceError::Unreachable(error) => {
                write!(f, "the device authorization request failed: {error}")
            }
            DeviceError::BadResponse { status, reason } => write!(
                f,
                "unusable device authorization response (HTTP {status}): {reason}"
            ),
        }
    }
}

impl std::error::Error for DeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeviceError::Unreachable(error) => Some(error),
            _ => None,
        }
    }
}

/// What was wrong with a callback that carried the flow's `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallbackDefect {
    /// A parameter that must appear at most once appeared more often (S14).
    RepeatedParameter(&'static str),
    /// An implicit-flow parameter such as `access_token` was present (S15).
    ImplicitFlowArtifact(&'static str),
    /// Neither `code` nor `error` (S17).
    NeitherCodeNorError,
    /// Both `code` and `error`.
    BothCodeAndError,
    /// A value was empty or held characters outside the printable range.
    InvalidValue(&'static str),
}

impl fmt::Display for CallbackDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallbackDefect::RepeatedParameter(name) => write!(f, "`{name}` appears more than once"),
            CallbackDefect::ImplicitFlowArtifact(name) => {
                write!(
                    f,
                    "implicit-flow parameter `{name}` in an authorization-code callback"
                )
            }
            CallbackDefect::NeitherCodeNorError => f.write_str("neither `code` nor `error`"),
            CallbackDefect::BothCodeAndError => f.write_str("both `code` and `error`"),
            CallbackDefect::InvalidValue(name) => write!(f, "`{name}` has an invalid value"),
        }
    }
}

/// Why a token endpoint's answer is not a token response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadTokenResponse {
    /// The body is neither a JSON object nor a form-encoded body.
    Unparseable,
    /// A non-2xx status without an OAuth `error` member.
    UnexpectedStatus,
    /// A success without an `access_token`.
    MissingAccessToken,
    /// A member that matters has the wrong type or characters (named).
    InvalidMember(&'static str),
    /// A member appears twice in a form-encoded body (named).
    RepeatedMember(&'static str),
    /// A member the answer must have is missing (named): a device authorization response's
    /// `device_code`, `user_code` or `verification_uri`.
    MissingMember(&'static str),
    /// A DPoP login's tokens came back with a `token_type` other than `DPoP`: the provider
    /// did not bind them to the login's key, and a bearer token is not what was asked for
    /// (S61).
    NotDpopBound,
}

impl fmt::Display for BadTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadTokenResponse::Unparseable => f.write_str("body is neither JSON nor form-encoded"),
            BadTokenResponse::UnexpectedStatus => {
                f.write_str("error status without an OAuth error")
            }
            BadTokenResponse::MissingAccessToken => f.write_str("no `access_token`"),
            BadTokenResponse::InvalidMember(name) => write!(f, "`{name}` is invalid"),
            BadTokenResponse::RepeatedMember(name) => write!(f, "`{name}` appears more than once"),
            BadTokenResponse::MissingMember(name) => write!(f, "no `{name}`"),
            BadTokenResponse::NotDpopBound => {
                f.write_str("`token_type` is not DPoP: the tokens are not bound to the key")
            }
        }
    }
}

/// The step of a flow that a deadline interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Waiting for the browser to come back with the callback (the flow's lifetime).
    Callback,
    /// Waiting for the token endpoint.
    TokenExchange,
    /// Waiting for the tokens to be stored.
    Storage,
    /// Waiting for the provider's key set, to verify the ID token.
    KeySet,
    /// Waiting for the device authorization endpoint's user code (RFC 8628 §3.1).
    DeviceAuthorization,
    /// Waiting for the user to approve on another device, polling the token endpoint.
    Approval,
    /// Waiting for the flow directory to store or hand over a shared flow's record.
    Directory,
    /// Waiting for the provider to take the pushed authorization request (RFC 9126).
    AuthorizationPush,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Callback => "waiting for the browser's callback",
            Step::TokenExchange => "waiting for the token endpoint",
            Step::AuthorizationPush => "waiting for the pushed authorization request endpoint",
            Step::Storage => "waiting for token storage",
            Step::KeySet => "waiting for the provider's key set",
            Step::DeviceAuthorization => "waiting for the device authorization endpoint",
            Step::Approval => "waiting for the user to approve on another device",
            Step::Directory => "waiting for the flow directory",
        })
    }
}

/// A driver's report that the token request could not be completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    kind: TransportErrorKind,
    detail: String,
}

/// The broad class of a [`TransportError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Name resolution or TCP connect failed.
    Connect,
    /// The TLS handshake failed (including certificate verification).
    Tls,
    /// Reading or writing failed, or the peer closed early.
    Io,
    /// The driver's own connect or read timeout fired.
    TimedOut,
    /// The peer's bytes were not a well-formed HTTP/1.1 response.
    Protocol,
    /// The response exceeded the size cap.
    TooLarge,
    /// The endpoint answered with a redirect, which is never followed (S34).
    Redirect,
    /// Anything else.
    Other,
}

impl TransportError {
    /// A transport error of `kind`; `detail` is for humans and must not contain secrets.
    pub fn new(kind: TransportErrorKind, detail: impl Into<String>) -> TransportError {
        TransportError {
            kind,
            detail: detail.into(),
        }
    }

    /// The class of failure.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for TransportError {}

/// A driver's report that storing tokens failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    detail: String,
}

impl StoreError {
    /// A storage error; `detail` is for humans and must not contain secrets.
    pub fn new(detail: impl Into<String>) -> StoreError {
        StoreError {
            detail: detail.into(),
        }
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for StoreError {}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> StoreError {
        StoreError::new(error.to_string())
    }
}
