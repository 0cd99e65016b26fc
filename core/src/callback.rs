//! The authorization response (RFC 6749 §4.1.2), however it arrives: as the query of the
//! browser's request on the loopback port, or forwarded by an application's UI.
//!
//! Validation happens in two stages. [`Callback::parse`] decides whether the query can be
//! read exactly and names one `state`; failures are [`Rejection`]s that never touch a flow
//! (S10, S11, S25). Once the state has found its flow, [`Callback::judge`] reads the rest
//! against that flow's provider and decides how the flow goes on (S13–S17).

use std::borrow::Cow;
use std::fmt;

use crate::config::ProviderInner;
use crate::error::{CallbackDefect, FlowError, ProviderError};
use crate::form;
use crate::grammar::{all_bytes, is_error_code, is_vschar_text};

/// Why a callback was turned away without touching any flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The query cannot be decoded exactly: bad percent-encoding, bytes that are not UTF-8,
    /// control characters, or longer than the head limit (S25).
    Malformed,
    /// `state` is missing, empty or repeated (S10, S14).
    BadState,
    /// No pending flow has this `state` (S10, S11).
    UnknownState,
    /// No flow is in progress at all (S31).
    NoPendingFlow,
    /// The state belonged to a flow whose callback was already accepted (S18).
    AlreadyUsed,
    /// The state belonged to a flow that expired or was cancelled (S19).
    Expired,
    /// The flow directory that would know the state cannot be asked now: it is
    /// unreachable, or too many callbacks wait for it (S58). Nothing was taken; the same
    /// callback works later.
    Unavailable,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::Malformed => "malformed callback query",
            Rejection::BadState => "callback must carry exactly one non-empty `state`",
            Rejection::UnknownState => "callback `state` matches no pending login",
            Rejection::NoPendingFlow => "no login is in progress",
            Rejection::AlreadyUsed => "this callback was already used",
            Rejection::Expired => "the login this callback belongs to has expired or was cancelled",
            Rejection::Unavailable => "the sign-in directory cannot be reached; try again",
        })
    }
}

impl std::error::Error for Rejection {}

/// Parameters whose repetition makes a callback ambiguous (S14).
const SINGLE: [&str; 4] = ["code", "state", "iss", "error"];
/// Implicit-grant artifacts that never belong in a code callback (S15).
const IMPLICIT: [&str; 3] = ["access_token", "id_token", "token"];

/// A decoded callback query: the parameters validation reads, each at its first
/// occurrence; the others were checked to decode exactly, then dropped.
#[derive(Default)]
pub(crate) struct Callback<'q> {
    /// `code`, `state`, `iss`, `error`: by position in [`SINGLE`].
    single: [Option<Cow<'q, str>>; SINGLE.len()],
    /// Which of [`SINGLE`] appeared more than once.
    repeated: [bool; SINGLE.len()],
    /// Which of [`IMPLICIT`] appeared.
    implicit: [bool; IMPLICIT.len()],
    error_description: Option<Cow<'q, str>>,
    error_uri: Option<Cow<'q, str>>,
}

impl<'q> Callback<'q> {
    /// Decodes `query` exactly, or rejects it.
    pub fn parse(query: &'q str, max_len: usize) -> Result<Callback<'q>, Rejection> {
        if query.len() > max_len {
            return Err(Rejection::Malformed);
        }
        let mut callback = Callback::default();
        for pair in form::pairs(query) {
            let (name, value) = match pair {
                Ok((name, value)) if !has_control(&name) && !has_control(&value) => (name, value),
                _ => return Err(Rejection::Malformed),
            };
            if let Some(index) = SINGLE.iter().position(|single| *single == name) {
                match &callback.single[index] {
                    None => callback.single[index] = Some(value),
                    Some(_) => callback.repeated[index] = true,
                }
            } else if let Some(index) = IMPLICIT.iter().position(|artifact| *artifact == name) {
                callback.implicit[index] = true;
            } else if name == "error_description" {
                callback.error_description.get_or_insert(value);
            } else if name == "error_uri" {
                callback.error_uri.get_or_insert(value);
            }
        }
        Ok(callback)
    }

    /// The one non-empty `state`.
    pub fn state(&self) -> Result<&str, Rejection> {
        match self.single("state") {
            Ok(Some(state)) if !state.is_empty() => Ok(state),
            _ => Err(Rejection::BadState),
        }
    }

    /// Reads the callback for a flow of `provider`: the code to exchange, or why the flow
    /// ends here.
    pub fn judge(&self, provider: &ProviderInner) -> Result<&str, FlowError> {
        let invalid = FlowError::InvalidCallback;
        for name in SINGLE {
            self.single(name).map_err(invalid)?;
        }
        if let Some((artifact, _)) = IMPLICIT
            .into_iter()
            .zip(self.implicit)
            .find(|(_, present)| *present)
        {
            return Err(invalid(CallbackDefect::ImplicitFlowArtifact(artifact)));
        }
        // RFC 9207 §2.4: check `iss` before anything else, error responses included.
        if let Some(expected) = &provider.issuer {
            let received = self.get("iss");
            let mismatch = match received {
                Some(iss) => {
                    !crate::oidc::issuer_matches(expected, provider.tenant_issuer, iss, None)
                }
                None => provider.require_iss,
            };
            if mismatch {
                return Err(FlowError::IssuerMismatch {
                    expected: expected.clone(),
                    received: received.map(str::to_owned),
                });
            }
        }
        match (self.get("code"), self.get("error")) {
            (Some(_), Some(_)) => Err(invalid(CallbackDefect::BothCodeAndError)),
            (Some(code), None) if is_vschar_text(code) => Ok(code),
            (Some(_), None) => Err(invalid(CallbackDefect::InvalidValue("code"))),
            (None, Some(code)) if is_error_code(code) => Err(FlowError::Denied(ProviderError {
                code: code.to_owned(),
                description: self.error_description.as_deref().map(str::to_owned),
                uri: self.error_uri.as_deref().map(str::to_owned),
            })),
            (None, Some(_)) => Err(invalid(CallbackDefect::InvalidValue("error"))),
            (None, None) => Err(invalid(CallbackDefect::NeitherCodeNorError)),
        }
    }

    /// The first value of `name`, one of [`SINGLE`].
    fn get(&self, name: &str) -> Option<&str> {
        let index = SINGLE.iter().position(|single| *single == name)?;
        self.single[index].as_deref()
    }

    /// The value of `name`, one of [`SINGLE`], if it appears at most once.
    fn single(&self, name: &'static str) -> Result<Option<&str>, CallbackDefect> {
        match SINGLE.iter().position(|single| *single == name) {
            Some(index) if self.repeated[index] => Err(CallbackDefect::RepeatedParameter(name)),
            Some(index) => Ok(self.single[index].as_deref()),
            None => Ok(None),
        }
    }
}

fn has_control(value: &str) -> bool {
    if value.is_ascii() {
        !all_bytes(value.as_bytes(), |byte| !byte.is_ascii_control())
    } else {
        value.chars().any(char::is_control)
    }
}
