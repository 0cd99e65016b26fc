//! Pushed authorization requests (RFC 9126): the client posts the authorization
//! request's parameters, authenticated as at the token endpoint, and gets a `request_uri`
//! that the browser's authorization URL carries instead, with `client_id`.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;

use super::{
    Failure, Server, check_authorization, invalid_request, random_token, redirect_matches,
    server_error, token_failure,
};
use crate::RecordedRequest;
use crate::form::Params;
use crate::http::Response;

/// The endpoint.
pub(super) const PATH: &str = "/par";
/// How a `request_uri` begins (RFC 9126 §2.2).
const URN_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// A pushed request waiting for the browser.
pub(super) struct Pushed {
    client_id: String,
    params: Params,
    /// The thumbprint of the DPoP key that pushed it (RFC 9449 §10.1), or its `dpop_jkt`.
    jkt: Option<String>,
    issued: Instant,
}

/// The pushed requests by `request_uri`.
pub(crate) type PushedRequests = HashMap<String, Pushed>;

impl Server {
    /// The pushed authorization request endpoint (RFC 9126 §2): `201` with `request_uri`
    /// and `expires_in`, or a §2.3 error as JSON.
    pub(super) fn push_authorization(&self, request: &RecordedRequest) -> Response {
        let outcome = self.form_params(request).and_then(|params| {
            let client = self.authenticate(request, &params, PATH)?;
            if params.get("request_uri").is_some() {
                return Err(invalid_request("request_uri cannot be pushed"));
            }
            let registered = params.get("redirect_uri").is_some_and(|uri| {
                client
                    .redirect_uris
                    .iter()
                    .any(|r| redirect_matches(r, uri))
            });
            if !registered {
                return Err(invalid_request(
                    "redirect_uri is missing or not registered for this client",
                ));
            }
            if let Err((error, description)) =
                check_authorization(&params, &self.config.scopes_added)
            {
                return Err(Failure::new(400, error, description));
            }
            let proof = self
                .dpop_proof(request, PATH, None)
                .map_err(super::dpop::ProofError::at_token_endpoint)?;
            let jkt = match (proof, params.get("dpop_jkt")) {
                (Some(proof), Some(asked)) if proof != asked => {
                    return Err(invalid_request(
                        "dpop_jkt is not the thumbprint of the proof's key",
                    ));
                }
                (proof, asked) => proof.or(asked.map(str::to_owned)),
            };
            let id = random_token().ok_or_else(server_error)?;
            let request_uri = format!("{URN_PREFIX}{id}");
            let mut st = self.lock();
            let lifetime = self.config.request_uri_lifetime;
            st.pushed.retain(|_, p| p.issued.elapsed() < lifetime);
            st.pushed.insert(
                request_uri.clone(),
                Pushed {
                    client_id: client.id.clone(),
                    params,
                    jkt,
                    issued: Instant::now(),
                },
            );
            st.stats.pushed_authorizations += 1;
            Ok(request_uri)
        });
        match outcome {
            Ok(request_uri) => {
                let expires_in = super::device::ceil_secs(self.config.request_uri_lifetime);
                let body = json!({"request_uri": request_uri, "expires_in": expires_in});
                Response::new(201, "application/json", body.to_string())
            }
            Err(failure) => token_failure(failure, false, true),
        }
    }

    /// The pushed request behind `request_uri`, used up: its parameters and DPoP key
    /// thumbprint, if it is unexpired and was pushed by `client_id`.
    pub(super) fn take_pushed(
        &self,
        client_id: &str,
        request_uri: &str,
    ) -> Option<(Params, Option<String>)> {
        let mut st = self.lock();
        let pushed = st.pushed.get(request_uri)?;
        if pushed.client_id != client_id {
            return None;
        }
        let pushed = st.pushed.remove(request_uri)?;
        let fresh = pushed.issued.elapsed() < self.config.request_uri_lifetime;
        fresh.then_some((pushed.params, pushed.jkt))
    }
}
