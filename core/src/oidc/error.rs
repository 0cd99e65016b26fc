//! Why an ID token or a key set was refused.

use std::fmt;

use crate::error::TransportError;

/// Why an ID token was refused. Nothing of a refused token is stored or handed out (S48).
///
/// [`kind`](IdTokenError::kind) is a stable one-word name for programs (the command line's
/// `error` events name it); `Display` says what was wrong for people.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdTokenError {
    /// The token response carried no `id_token` although `openid` was requested.
    Missing,
    /// Not a signed JWT latchkey can read (the reason is named).
    Malformed(&'static str),
    /// The header's `alg` is `none`, an HMAC algorithm, unknown, or not in the allow-list
    /// (S46). The name is the header's, cut to 32 characters.
    Algorithm(String),
    /// No key of the provider's key set fits the header (`kid`, key type, `use`/`key_ops`,
    /// curve), even after the key set was fetched again (S47).
    UnknownKey,
    /// Several keys fit and the header names no `kid` to choose between them (S46).
    AmbiguousKey,
    /// The signature does not verify with the provider's key (S47).
    Signature,
    /// `iss` is missing or not byte-equal to the provider's issuer (S48), or a refreshed
    /// token names another issuer than the stored one (S49).
    Issuer,
    /// `aud` is missing or does not contain the client id (S48), or a refreshed token's
    /// audience differs from the stored one's (S49).
    Audience,
    /// `azp` is missing although there are several audiences, or is not the client id.
    AuthorizedParty,
    /// `exp` is missing or passed (beyond the leeway).
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the leeway), or `iat` is missing.
    NotYetValid,
    /// `nonce` is missing or differs from the one this login sent (S48).
    Nonce,
    /// `auth_time` is missing although `max_age` was requested, or the sign-in is older
    /// than `max_age` allows.
    AuthTime,
    /// `at_hash` does not match the access token issued with the ID token.
    AccessTokenHash,
    /// `sub` is missing or empty, or a refreshed token names another subject than the
    /// stored one (S49).
    Subject,
    /// The provider's key set could not be fetched or read, and no earlier copy was at hand.
    KeySet(KeySetError),
}

impl IdTokenError {
    /// A stable one-word name: `missing`, `malformed`, `algorithm`, `key`, `signature`,
    /// `issuer`, `audience`, `azp`, `expired`, `not_yet_valid`, `nonce`, `auth_time`,
    /// `at_hash`, `subject`, `key_set`.
    pub fn kind(&self) -> &'static str {
        match self {
            IdTokenError::Missing => "missing",
            IdTokenError::Malformed(_) => "malformed",
            IdTokenError::Algorithm(_) => "algorithm",
            IdTokenError::UnknownKey | IdTokenError::AmbiguousKey => "key",
            IdTokenError::Signature => "signature",
            IdTokenError::Issuer => "issuer",
            IdTokenError::Audience => "audience",
            IdTokenError::AuthorizedParty => "azp",
            IdTokenError::Expired => "expired",
            IdTokenError::NotYetValid => "not_yet_valid",
            IdTokenError::Nonce => "nonce",
            IdTokenError::AuthTime => "auth_time",
            IdTokenError::AccessTokenHash => "at_hash",
            IdTokenError::Subject => "subject",
            IdTokenError::KeySet(_) => "key_set",
        }
    }
}

impl fmt::Display for IdTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdTokenError::Missing => f.write_str("the token response has no ID token"),
            IdTokenError::Malformed(reason) => write!(f, "ID token is malformed: {reason}"),
            IdTokenError::Algorithm(name) => {
                write!(f, "ID token algorithm {name:?} is not allowed")
            }
            IdTokenError::UnknownKey => {
                f.write_str("no key of the provider's key set fits the ID token")
            }
            IdTokenError::AmbiguousKey => {
                f.write_str("several keys fit the ID token and it names no `kid`")
            }
            IdTokenError::Signature => f.write_str("ID token signature does not verify"),
            IdTokenError::Issuer => f.write_str("ID token issuer (`iss`) is not the provider"),
            IdTokenError::Audience => {
                f.write_str("ID token audience (`aud`) does not contain this client")
            }
            IdTokenError::AuthorizedParty => {
                f.write_str("ID token authorized party (`azp`) is missing or not this client")
            }
            IdTokenError::Expired => f.write_str("ID token has expired"),
            IdTokenError::NotYetValid => f.write_str("ID token is not yet valid"),
            IdTokenError::Nonce => f.write_str("ID token `nonce` does not match this login"),
            IdTokenError::AuthTime => {
                f.write_str("ID token `auth_time` is missing or older than `max_age` allows")
            }
            IdTokenError::AccessTokenHash => {
                f.write_str("ID token `at_hash` does not match the access token")
            }
            IdTokenError::Subject => {
                f.write_str("ID token subject (`sub`) is missing or not the signed-in user")
            }
            IdTokenError::KeySet(error) => write!(f, "provider key set unavailable: {error}"),
        }
    }
}

impl std::error::Error for IdTokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdTokenError::KeySet(error) => Some(error),
            _ => None,
        }
    }
}

/// Why a key set (JWKS, RFC 7517 §5) could not be used (S47).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySetError {
    /// The request could not be completed.
    Transport(TransportError),
    /// No answer within the request timeout.
    TimedOut,
    /// The answer's status was not 200.
    Status(u16),
    /// The body is larger than the key-set cap (256 KiB).
    TooLarge,
    /// The body is not a JSON object with a `keys` array.
    NotJson,
    /// More than 100 keys.
    TooManyKeys,
    /// No key can verify a signature latchkey accepts.
    NoUsableKey,
}

impl fmt::Display for KeySetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySetError::Transport(error) => write!(f, "fetching it failed: {error}"),
            KeySetError::TimedOut => f.write_str("fetching it timed out"),
            KeySetError::Status(status) => write!(f, "it was answered with HTTP {status}"),
            KeySetError::TooLarge => f.write_str("it is larger than 256 KiB"),
            KeySetError::NotJson => f.write_str("it is not a JSON object with a `keys` array"),
            KeySetError::TooManyKeys => f.write_str("it has more than 100 keys"),
            KeySetError::NoUsableKey => f.write_str("it has no usable signing key"),
        }
    }
}

impl std::error::Error for KeySetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeySetError::Transport(error) => Some(error),
            _ => None,
        }
    }
}
