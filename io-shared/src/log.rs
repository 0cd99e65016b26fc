//! What the drivers tell `tracing`: a span per login, refresh, logout and discovery, an event
//! per step, with ids, providers, statuses, outcomes and durations. Never a secret (S41):
//! no URL with a `state`, no request or response body, no token, no header.

use std::fmt;

use latchkey::Provider;

/// A provider as logs name it: its issuer, or else its token endpoint's authority.
pub(crate) struct ProviderName<'a>(pub &'a Provider);

impl fmt::Display for ProviderName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.issuer() {
            Some(issuer) => f.write_str(issuer),
            None => match self.0.token_endpoint().authority() {
                Some(authority) => f.write_str(authority.as_str()),
                None => f.write_str("(unnamed provider)"),
            },
        }
    }
}
