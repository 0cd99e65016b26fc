//! The endpoints: authorization (RFC 6749 §4.1.1–4.1.2, RFC 7636, RFC 9207), token
//! (RFC 6749 §4.1.3–4.1.4, §5, §6, §2.3.1), revocation (RFC 7009), introspection
//! (RFC 7662) and metadata (RFC 8414), with resource indicators (RFC 8707). The device
//! authorization grant (RFC 8628) lives in [`device`], pushed authorization requests
//! (RFC 9126) in [`par`], DPoP (RFC 9449) in [`dpop`] and `private_key_jwt` client
//! authentication (RFC 7523) in [`assertion`].

mod assertion;
mod device;
mod dpop;
mod par;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::form::{self, Params};
use crate::http::Response;
use crate::idtoken::{self, Forgery, Grant, Keys, Subject};
use crate::jws;
use crate::{Client, ClientAuth, Config, Quirk, RecordedRequest, Stats};

/// How many recent requests [`crate::DevIdp::requests`] keeps.
const LOG_CAPACITY: usize = 1024;

/// Everything the connection threads share.
pub(crate) struct Server {
    pub(crate) config: Config,
    pub(crate) base_url: String,
    pub(crate) issuer: String,
    pub(crate) deny_all: AtomicBool,
    metadata_paths: Vec<String>,
    state: Mutex<State>,
    pub(crate) keys: Mutex<Keys>,
    pub(crate) forgery: Mutex<Option<Forgery>>,
}

#[derive(Default)]
pub(crate) struct State {
    codes: HashMap<String, Code>,
    access: HashMap<String, Issued>,
    refresh: HashMap<String, Refresh>,
    /// Rotated-out refresh tokens and the grant they belonged to (reuse detection).
    retired: HashMap<String, u64>,
    /// Who each grant is for.
    subjects: HashMap<u64, Subject>,
    /// Device codes and their user codes (RFC 8628).
    devices: device::Devices,
    /// The nonce DPoP proofs carry when [`Config::dpop_nonce`] is set.
    pub(crate) dpop_nonce: String,
    /// The `jti`s of recent DPoP proofs (RFC 9449 §11.1).
    proof_jtis: jws::Seen,
    /// The `client id` + `jti` of unexpired client assertions (RFC 7523 §3).
    assertion_jtis: jws::Seen,
    /// Pushed authorization requests by `request_uri` (RFC 9126).
    pushed: par::PushedRequests,
    next_grant: u64,
    pub(crate) log: VecDeque<RecordedRequest>,
    pub(crate) last_token_request: Option<RecordedRequest>,
    pub(crate) stats: Stats,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: Vec<String>,
    issued: Instant,
    /// The grant created when the code was redeemed.
    redeemed: Option<u64>,
    /// The authorization request's `nonce`, for the ID token.
    nonce: Option<String>,
    subject: Subject,
    /// The DPoP key the code's tokens must be bound to (RFC 9449 §10).
    dpop_jkt: Option<String>,
    /// The resources the request named (RFC 8707).
    resources: Vec<String>,
}

/// An access token.
struct Issued {
    grant: u64,
    issued: Instant,
    client_id: String,
    scope: Vec<String>,
    binding: Binding,
}

/// What an access token is bound to (RFC 9449) and for (RFC 8707).
#[derive(Clone, Debug, Default)]
struct Binding {
    /// The thumbprint of the DPoP key it is bound to; `None` for a bearer token.
    jkt: Option<String>,
    /// The resources it is for: its audience.
    resources: Vec<String>,
}

struct Refresh {
    grant: u64,
    client_id: String,
    scope: Vec<String>,
    /// Every resource of the grant; a refresh may ask for fewer.
    resources: Vec<String>,
    /// The DPoP key a public client's refresh token is bound to (RFC 9449 §5).
    jkt: Option<String>,
}

/// A token endpoint error (RFC 6749 §5.2).
struct Failure {
    status: u16,
    error: &'static str,
    description: &'static str,
    /// The polling interval in seconds, which GitHub sends with `slow_down`.
    interval: Option<u64>,
    /// The DPoP nonce to use, sent with `use_dpop_nonce` (RFC 9449 §8).
    nonce: Option<String>,
}

impl Failure {
    /// An error without an `interval` or a nonce.
    fn new(status: u16, error: &'static str, description: &'static str) -> Failure {
        Failure {
            status,
            error,
            description,
            interval: None,
            nonce: None,
        }
    }
}

fn invalid_request(description: &'static str) -> Failure {
    Failure::new(400, "invalid_request", description)
}
fn invalid_client(description: &'static str) -> Failure {
    Failure::new(401, "invalid_client", description)
}
fn invalid_grant(description: &'static str) -> Failure {
    Failure::new(400, "invalid_grant", description)
}
fn server_error() -> Failure {
    Failure::new(500, "server_error", "no randomness available")
}

/// What GitHub Apps report as `refresh_token_expires_in` (184 days); the dev IdP does not
/// expire refresh tokens, it only says so.
const GITHUB_REFRESH_TOKEN_LIFETIME: u64 = 15_897_600;

/// The grant a token request asked for; GitHub names the same error differently for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrantType {
    AuthorizationCode,
    RefreshToken,
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4).
    DeviceCode,
    /// Missing, unsupported, or the request was not read that far.
    Other,
}

/// What a successful token request hands out.
struct Tokens {
    access: String,
    refresh: Option<String>,
    scope: Vec<String>,
    /// With `openid` in the scope.
    id_token: Option<String>,
    /// Whether the access token is DPoP-bound (`token_type` `DPoP`).
    dpop: bool,
}

impl Server {
    pub(crate) fn new(config: Config, base_url: String) -> std::io::Result<Server> {
        let issuer = config.issuer.clone().unwrap_or_else(|| base_url.clone());
        let mut metadata_paths = vec![
            "/.well-known/oauth-authorization-server".to_owned(),
            "/.well-known/openid-configuration".to_owned(),
        ];
        // RFC 8414 §3.1 and OpenID Connect Discovery §4 for an issuer with a path.
        let issuer_path = issuer
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .map(|p| p.trim_end_matches('/'))
            .unwrap_or_default();
        if !issuer_path.is_empty() {
            metadata_paths.push(format!(
                "/.well-known/oauth-authorization-server{issuer_path}"
            ));
            metadata_paths.push(format!("{issuer_path}/.well-known/openid-configuration"));
        }
        let state = State {
            dpop_nonce: random_token().ok_or_else(|| std::io::Error::other("no randomness"))?,
            ..State::default()
        };
        Ok(Server {
            config,
            base_url,
            issuer,
            deny_all: AtomicBool::new(false),
            metadata_paths,
            state: Mutex::new(state),
            keys: Mutex::new(Keys::new()?),
            forgery: Mutex::new(None),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client(&self, id: &str) -> Option<&Client> {
        self.config.clients.iter().find(|c| c.id == id)
    }

    /// Routes and records one request.
    pub(crate) fn handle(&self, request: RecordedRequest) -> Response {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        let github = self.config.quirk.is_github();
        let allowed: &[&str] = match path {
            "/authorize" | "/jwks" | "/userinfo" => &["GET"],
            "/token" | "/revoke" | "/introspect" | device::AUTHORIZATION_PATH => &["POST"],
            par::PATH if !github => &["POST"],
            device::GITHUB_AUTHORIZATION_PATH if github => &["POST"],
            device::VERIFICATION_PATH => &["GET", "POST"],
            device::GITHUB_VERIFICATION_PATH if github => &["GET", "POST"],
            p if self.metadata_paths.iter().any(|m| m == p) => &["GET"],
            _ => &[],
        };
        let response = match path {
            _ if allowed.is_empty() => Response::page(404, "Nothing here."),
            _ if !allowed.contains(&request.method.as_str()) => {
                Response::page(405, "Method not allowed.").with("Allow", allowed.join(", "))
            }
            "/authorize" => self.authorize(query),
            "/jwks" => self.jwks(),
            "/userinfo" => self.userinfo(&request),
            "/token" => self.token(&request),
            "/revoke" => self.revoke(&request),
            "/introspect" => self.introspect(&request),
            par::PATH => self.push_authorization(&request),
            device::AUTHORIZATION_PATH | device::GITHUB_AUTHORIZATION_PATH => {
                self.device_authorization(&request)
            }
            device::VERIFICATION_PATH | device::GITHUB_VERIFICATION_PATH => {
                self.device_page(&request, path, query)
            }
            _ => self.metadata(path),
        };
        let mut state = self.lock();
        state.stats.requests += 1;
        match path {
            "/authorize" => state.stats.authorize_requests += 1,
            "/token" => {
                state.stats.token_requests += 1;
                state.last_token_request = Some(request.clone());
            }
            _ => {}
        }
        if state.log.len() == LOG_CAPACITY {
            state.log.pop_front();
        }
        state.log.push_back(request);
        response
    }

    /// Whether `token` is an access token that is issued, unexpired and not revoked.
    pub(crate) fn access_token_active(&self, token: &str) -> bool {
        let lifetime = self.config.token_lifetime;
        self.lock()
            .access
            .get(token)
            .is_some_and(|t| t.issued.elapsed() < lifetime)
    }

    /// The metadata document at `path`: RFC 8414's and OpenID Connect's are the same,
    /// unless [`Config::revocation_only_in_oauth_metadata`] leaves the revocation endpoint
    /// out of the OpenID Connect one.
    fn metadata(&self, path: &str) -> Response {
        let mut doc = json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{}/authorize", self.base_url),
            "token_endpoint": format!("{}/token", self.base_url),
            "revocation_endpoint": format!("{}/revoke", self.base_url),
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_signing_alg_values_supported": jws::ALGS,
            "introspection_endpoint": format!("{}/introspect", self.base_url),
            "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
            "introspection_endpoint_auth_signing_alg_values_supported": jws::ALGS,
            "pushed_authorization_request_endpoint": format!("{}{}", self.base_url, par::PATH),
            "require_pushed_authorization_requests": self.config.require_pushed_authorization_requests,
            "dpop_signing_alg_values_supported": jws::ALGS,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": jws::ALGS,
            "authorization_response_iss_parameter_supported": self.config.send_iss,
            "jwks_uri": format!("{}/jwks", self.base_url),
            "userinfo_endpoint": format!("{}/userinfo", self.base_url),
            "id_token_signing_alg_values_supported": [match self.config.id_token_alg {
                idtoken::IdTokenAlg::RS256 => "RS256",
                idtoken::IdTokenAlg::ES256 => "ES256",
            }],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "email", "profile", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "email", "email_verified", "name", "preferred_username"],
        });
        // GitHub publishes no metadata, so its imitation does not advertise the device
        // flow it serves.
        if !self.config.quirk.is_github() {
            if let Some(members) = doc.as_object_mut() {
                members.insert(
                    "device_authorization_endpoint".into(),
                    json!(format!("{}{}", self.base_url, device::AUTHORIZATION_PATH)),
                );
                members.insert(
                    "grant_types_supported".into(),
                    json!(["authorization_code", "refresh_token", device::GRANT_TYPE]),
                );
            }
        }
        // GitHub has no OpenID Connect (no key set, no ID tokens, no UserInfo), nor any of
        // the newer RFCs.
        if self.config.quirk.is_github() {
            if let Some(members) = doc.as_object_mut() {
                for member in [
                    "introspection_endpoint",
                    "introspection_endpoint_auth_methods_supported",
                    "introspection_endpoint_auth_signing_alg_values_supported",
                    "pushed_authorization_request_endpoint",
                    "require_pushed_authorization_requests",
                    "dpop_signing_alg_values_supported",
                    "jwks_uri",
                    "userinfo_endpoint",
                    "id_token_signing_alg_values_supported",
                    "subject_types_supported",
                    "claims_supported",
                ] {
                    members.remove(member);
                }
            }
        }
        if self.config.revocation_only_in_oauth_metadata && path.contains("openid-configuration") {
            if let Some(members) = doc.as_object_mut() {
                members.remove("revocation_endpoint");
                members.remove("revocation_endpoint_auth_methods_supported");
            }
        }
        Response::new(200, "application/json", doc.to_string())
    }

    /// The key set: the current and the previous key of each algorithm.
    fn jwks(&self) -> Response {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .jwks();
        Response::new(200, "application/jwk-set+json", keys.to_string())
    }

    /// UserInfo (OpenID Connect Core §5.3): the claims of the user an active access token
    /// was issued to, for a token in the `Authorization` header only (S43): `Bearer`, or
    /// `DPoP` with a proof of the key the token is bound to (RFC 9449 §7).
    fn userinfo(&self, request: &RecordedRequest) -> Response {
        let unauthorized = |scheme: &str| {
            Response::new(
                401,
                "application/json",
                r#"{"error":"invalid_token"}"#.to_owned(),
            )
            .with(
                "WWW-Authenticate",
                format!("{scheme} error=\"invalid_token\""),
            )
        };
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let presented = request.header("authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            let dpop = scheme.eq_ignore_ascii_case("dpop");
            (dpop || scheme.eq_ignore_ascii_case("bearer")).then_some((dpop, token))
        });
        let Some((dpop, token)) = presented else {
            return unauthorized("Bearer");
        };
        if !self.access_token_active(token) {
            return unauthorized(if dpop { "DPoP" } else { "Bearer" });
        }
        let proof = if dpop {
            match self.dpop_proof(request, "/userinfo", Some(token)) {
                Ok(Some(jkt)) => Some(jkt),
                Ok(None) => return dpop::challenge("invalid_dpop_proof"),
                Err(error) => return error.at_resource(),
            }
        } else {
            None
        };
        let state = self.lock();
        let Some(issued) = state.access.get(token) else {
            return unauthorized("Bearer");
        };
        // A bound token needs its key's proof; a bearer token is not presented as DPoP.
        if issued.binding.jkt != proof {
            return match issued.binding.jkt {
                Some(_) => dpop::challenge("invalid_token"),
                None => unauthorized("Bearer"),
            };
        }
        let Some(subject) = state.subjects.get(&issued.grant) else {
            return unauthorized("Bearer");
        };
        let mut claims = subject.claims();
        if *self.forgery.lock().unwrap_or_else(PoisonError::into_inner)
            == Some(Forgery::UserInfoSubject)
        {
            claims.insert("sub".into(), json!(format!("not-{}", subject.sub)));
        }
        Response::new(200, "application/json", Value::Object(claims).to_string())
    }

    /// An ID token for `grant`, when its scope asks for one.
    fn id_token(
        &self,
        client_id: &str,
        subject: &Subject,
        nonce: Option<&str>,
        tokens: &Tokens,
        refresh: bool,
    ) -> Option<String> {
        if !tokens.scope.iter().any(|scope| scope == "openid") {
            return None;
        }
        let forgery = *self.forgery.lock().unwrap_or_else(PoisonError::into_inner);
        let grant = Grant {
            issuer: &self.issuer,
            client_id,
            subject,
            nonce,
            access_token: &tokens.access,
            lifetime: self.config.token_lifetime.as_secs(),
            refresh,
        };
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.id_token(self.config.id_token_alg, &grant, forgery)
    }

    // ---- authorization endpoint -------------------------------------------------------

    fn authorize(&self, query: &str) -> Response {
        // Until client and redirect URI are known good, errors go to the user, never to a
        // redirect (RFC 6749 §4.1.2.1).
        let Ok(params) = Params::parse(query.as_bytes()) else {
            return Response::page(
                400,
                "The authorization request is not a valid query string.",
            );
        };
        let Some(client) = params.get("client_id").and_then(|id| self.client(id)) else {
            return Response::page(400, "The client_id is missing or unknown.");
        };
        // RFC 9126 §4: a pushed request's parameters are the pushed ones only.
        let (params, pushed_jkt) = match params.get("request_uri") {
            Some(uri) => match self.take_pushed(&client.id, uri) {
                Some(pushed) => pushed,
                None => {
                    return Response::page(
                        400,
                        "The request_uri is unknown, expired, used, or of another client.",
                    );
                }
            },
            None if self.config.require_pushed_authorization_requests => {
                return Response::page(
                    400,
                    "This server takes pushed authorization requests only (RFC 9126).",
                );
            }
            None => (params, None),
        };
        let Some(redirect_uri) = params.get("redirect_uri").filter(|uri| {
            client
                .redirect_uris
                .iter()
                .any(|r| redirect_matches(r, uri))
        }) else {
            return Response::page(
                400,
                "The redirect_uri is missing or not registered for this client.",
            );
        };
        let state = params.get("state");
        let reply = |fields: &[(&str, &str)]| self.redirect(redirect_uri, fields, state);

        let checked = check_authorization(&params, &self.config.scopes_added);
        let (challenge, scope) = match checked {
            Ok(ok) => ok,
            Err((error, description)) => {
                return reply(&[("error", error), ("error_description", description)]);
            }
        };
        let dpop_jkt = pushed_jkt.or_else(|| params.get("dpop_jkt").map(str::to_owned));
        if self.deny_all.load(Ordering::SeqCst) || params.get("login_hint") == Some("deny") {
            return reply(&[
                ("error", "access_denied"),
                ("error_description", "The user denied the request."),
            ]);
        }
        let Some(code) = random_token() else {
            return reply(&[
                ("error", "server_error"),
                ("error_description", "no randomness"),
            ]);
        };
        let mut st = self.lock();
        let keep = self.config.code_lifetime + self.config.token_lifetime;
        st.codes.retain(|_, c| c.issued.elapsed() < keep);
        st.codes.insert(
            code.clone(),
            Code {
                client_id: client.id.clone(),
                redirect_uri: redirect_uri.to_owned(),
                challenge: challenge.to_owned(),
                scope,
                issued: Instant::now(),
                redeemed: None,
                nonce: params.get("nonce").map(str::to_owned),
                subject: Subject {
                    sub: params
                        .get("login_hint")
                        .filter(|hint| !hint.is_empty())
                        .unwrap_or("dev-user")
                        .to_owned(),
                    auth_time: idtoken::unix_now(),
                },
                dpop_jkt,
                resources: params.all("resource").map(str::to_owned).collect(),
            },
        );
        st.stats.codes_issued += 1;
        drop(st);
        reply(&[("code", &code)])
    }

    /// A 303 to the client's redirect URI with `fields`, `state` and `iss` in the query.
    fn redirect(
        &self,
        redirect_uri: &str,
        fields: &[(&str, &str)],
        state: Option<&str>,
    ) -> Response {
        let mut fields = fields.to_vec();
        fields.extend(state.map(|s| ("state", s)));
        if self.config.send_iss {
            fields.push(("iss", &self.issuer));
        }
        let separator = match redirect_uri.chars().last() {
            _ if !redirect_uri.contains('?') => "?",
            Some('?' | '&') => "",
            _ => "&",
        };
        let location = format!("{redirect_uri}{separator}{}", form::serialize(&fields));
        Response::new(303, "text/plain; charset=utf-8", "").with("Location", location)
    }

    // ---- token endpoint ---------------------------------------------------------------

    fn token(&self, request: &RecordedRequest) -> Response {
        let github = self.config.quirk.is_github();
        let json = !github || accepts_json(request);
        let (grant, outcome) = self.token_outcome(request);
        {
            let mut st = self.lock();
            if grant == GrantType::DeviceCode {
                st.stats.device_polls += 1;
            }
            if outcome.is_ok() {
                st.stats.tokens_issued += 1;
            }
        }
        let mut response = match outcome {
            Ok(tokens) => self.token_success(tokens, json),
            Err(failure) if github => token_failure(failure.in_github_words(grant), true, json),
            Err(failure) => token_failure(failure, false, json),
        };
        response.headers.push(("Pragma", "no-cache".to_owned()));
        // RFC 9449 §8.2: the nonce to use next, with every answer.
        if self.config.dpop_nonce && !github && !response.has("DPoP-Nonce") {
            response = response.with("DPoP-Nonce", self.lock().dpop_nonce.clone());
        }
        response
    }

    /// The revocation endpoint (RFC 7009): the client authenticates as at the token
    /// endpoint (a DPoP proof, if sent, is checked as there); a refresh token ends its
    /// whole grant, an access token only itself; an unknown token, or one of another
    /// client, is answered 200 like a revoked one.
    fn revoke(&self, request: &RecordedRequest) -> Response {
        let outcome = self.form_params(request).and_then(|params| {
            let client = self.authenticate(request, &params, "/revoke")?;
            self.dpop_proof(request, "/revoke", None)
                .map_err(dpop::ProofError::at_token_endpoint)?;
            let token = params
                .get("token")
                .ok_or(invalid_request("token is missing"))?;
            let mut state = self.lock();
            let grant = match state.refresh.get(token) {
                Some(entry) if entry.client_id == client.id => Some(entry.grant),
                _ => None,
            };
            match grant {
                Some(grant) => state.revoke(grant),
                None => {
                    state.access.remove(token);
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Response::new(200, "application/json", String::new()),
            Err(failure) => token_failure(failure, false, true),
        }
    }

    /// The introspection endpoint (RFC 7662): for an authenticated client, whether a token
    /// is active, and for an access token whose it is, its scope, audience (RFC 8707) and
    /// the DPoP key it is bound to (`cnf.jkt`, RFC 9449 §6.2).
    fn introspect(&self, request: &RecordedRequest) -> Response {
        let outcome = self.form_params(request).and_then(|params| {
            self.authenticate(request, &params, "/introspect")?;
            let token = params
                .get("token")
                .ok_or(invalid_request("token is missing"))?;
            let lifetime = self.config.token_lifetime;
            let st = self.lock();
            let mut answer = Map::new();
            if let Some(issued) = st
                .access
                .get(token)
                .filter(|t| t.issued.elapsed() < lifetime)
            {
                let iat = idtoken::unix_now().saturating_sub(issued.issued.elapsed().as_secs());
                answer.insert("active".into(), json!(true));
                answer.insert("client_id".into(), json!(issued.client_id));
                answer.insert("scope".into(), json!(issued.scope.join(" ")));
                answer.insert("iss".into(), json!(self.issuer));
                answer.insert("iat".into(), json!(iat));
                answer.insert("exp".into(), json!(iat + lifetime.as_secs()));
                if let Some(subject) = st.subjects.get(&issued.grant) {
                    answer.insert("sub".into(), json!(subject.sub));
                }
                let token_type = if issued.binding.jkt.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                };
                answer.insert("token_type".into(), json!(token_type));
                if !issued.binding.resources.is_empty() {
                    answer.insert("aud".into(), json!(issued.binding.resources));
                }
                if let Some(jkt) = &issued.binding.jkt {
                    answer.insert("cnf".into(), json!({ "jkt": jkt }));
                }
            } else if let Some(refresh) = st.refresh.get(token) {
                answer.insert("active".into(), json!(true));
                answer.insert("client_id".into(), json!(refresh.client_id));
                answer.insert("scope".into(), json!(refresh.scope.join(" ")));
                answer.insert("token_type".into(), json!("refresh_token"));
                if let Some(jkt) = &refresh.jkt {
                    answer.insert("cnf".into(), json!({ "jkt": jkt }));
                }
            } else {
                answer.insert("active".into(), json!(false));
            }
            Ok(Value::Object(answer))
        });
        match outcome {
            Ok(answer) => Response::new(200, "application/json", answer.to_string()),
            Err(failure) => token_failure(failure, false, true),
        }
    }

    /// The form body of a POST to the token, revocation or device authorization endpoint,
    /// strictly decoded.
    fn form_params(&self, request: &RecordedRequest) -> Result<Params, Failure> {
        if !is_form(request) {
            return Err(invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        Params::parse(&request.body).map_err(invalid_request)
    }

    /// The grant asked for (as far as the request was read) and the answer to it.
    fn token_outcome(&self, request: &RecordedRequest) -> (GrantType, Result<Tokens, Failure>) {
        let params = match self.form_params(request) {
            Ok(params) => params,
            Err(failure) => return (GrantType::Other, Err(failure)),
        };
        let grant = match params.get("grant_type") {
            Some("authorization_code") => GrantType::AuthorizationCode,
            Some("refresh_token") => GrantType::RefreshToken,
            Some(device::GRANT_TYPE) => GrantType::DeviceCode,
            _ => GrantType::Other,
        };
        let outcome = self
            .authenticate(request, &params, "/token")
            .and_then(|client| {
                // GitHub knows nothing of DPoP: the header is ignored there.
                if self.config.quirk.is_github() {
                    return Ok((client, None));
                }
                let proof = self.dpop_proof(request, "/token", None);
                Ok((client, proof.map_err(dpop::ProofError::at_token_endpoint)?))
            })
            .and_then(|(client, jkt)| match grant {
                GrantType::AuthorizationCode => self.redeem_code(client, &params, jkt),
                GrantType::RefreshToken => self.refresh(client, &params, jkt),
                GrantType::DeviceCode => self.redeem_device_code(client, &params, jkt),
                GrantType::Other if params.get("grant_type").is_some() => Err(Failure::new(
                    400,
                    "unsupported_grant_type",
                    "only authorization_code, refresh_token and the device code grant are supported",
                )),
                GrantType::Other => Err(invalid_request("grant_type is missing")),
            });
        (grant, outcome)
    }

    /// Client authentication for a request to `path`, exactly by the registered method
    /// (RFC 6749 §2.3.1, RFC 7523 §2.2).
    fn authenticate(
        &self,
        request: &RecordedRequest,
        params: &Params,
        path: &str,
    ) -> Result<&Client, Failure> {
        if request.headers_named("authorization").count() > 1 {
            return Err(invalid_client("more than one Authorization header"));
        }
        let basic = match request.header("authorization") {
            Some(value) => {
                Some(parse_basic(value).ok_or(invalid_client("malformed Basic credentials"))?)
            }
            None => None,
        };
        let assertion = params.get("client_assertion");
        let methods = [
            basic.is_some(),
            params.get("client_secret").is_some(),
            assertion.is_some(),
        ];
        if methods.iter().filter(|used| **used).count() > 1 {
            return Err(invalid_client("more than one client authentication method"));
        }
        if let Some(assertion) = assertion {
            return self.assertion_client(params, assertion, path);
        }
        let body_id = params.get("client_id");
        let (id, secret, method) = match (basic, params.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(invalid_client("more than one client authentication method"));
            }
            (Some((id, secret)), None) => {
                if body_id.is_some_and(|b| b != id) {
                    return Err(invalid_client("client_id in the body differs from Basic"));
                }
                (id, Some(secret), ClientAuth::Basic)
            }
            (None, Some(secret)) => (
                body_id
                    .ok_or(invalid_client("client_id is missing"))?
                    .to_owned(),
                Some(secret.to_owned()),
                ClientAuth::Post,
            ),
            (None, None) => (
                body_id
                    .ok_or(invalid_client("client_id is missing"))?
                    .to_owned(),
                None,
                ClientAuth::None,
            ),
        };
        let client = self.client(&id).ok_or(invalid_client("unknown client"))?;
        if client.auth != method {
            return Err(wrong_method(client));
        }
        let matches = match (&client.secret, &secret) {
            (Some(expected), Some(given)) => {
                constant_time_eq(expected.as_bytes(), given.as_bytes())
            }
            (None, None) => true,
            _ => false,
        };
        if !matches {
            return Err(invalid_client("wrong client secret"));
        }
        Ok(client)
    }

    fn redeem_code(
        &self,
        client: &Client,
        params: &Params,
        jkt: Option<String>,
    ) -> Result<Tokens, Failure> {
        let code = params
            .get("code")
            .ok_or(invalid_request("code is missing"))?;
        let redirect_uri = params
            .get("redirect_uri")
            .ok_or(invalid_request("redirect_uri is missing"))?;
        let verifier = params
            .get("code_verifier")
            .ok_or(invalid_request("code_verifier is missing"))?;
        let mut st = self.lock();
        let entry = st
            .codes
            .get(code)
            .ok_or(invalid_grant("unknown authorization code"))?;
        if let Some(grant) = entry.redeemed {
            // RFC 6749 §4.1.2: deny, and revoke what the code produced.
            st.revoke(grant);
            return Err(invalid_grant(
                "authorization code already used; its tokens are revoked",
            ));
        }
        if entry.issued.elapsed() >= self.config.code_lifetime {
            return Err(invalid_grant("authorization code expired"));
        }
        if entry.client_id != client.id {
            return Err(invalid_grant(
                "authorization code was issued to another client",
            ));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !is_pkce_string(verifier) || s256(verifier) != entry.challenge {
            return Err(invalid_grant("PKCE verification failed"));
        }
        // RFC 9449 §10: a code asked for with `dpop_jkt` goes to that key's proof only.
        if entry.dpop_jkt.is_some() && entry.dpop_jkt != jkt {
            return Err(invalid_grant(
                "the DPoP proof's key is not the authorization request's dpop_jkt",
            ));
        }
        let resources = narrowed_resources(params, &entry.resources)?;
        let grant_resources = entry.resources.clone();
        let scope = entry.scope.clone();
        let (nonce, subject) = (entry.nonce.clone(), entry.subject.clone());
        let grant = st.next_grant;
        st.next_grant += 1;
        if let Some(entry) = st.codes.get_mut(code) {
            entry.redeemed = Some(grant);
        }
        st.subjects.insert(grant, subject.clone());
        let binding = Binding { jkt, resources };
        let refresh = self.issues_refresh_tokens().then_some(grant_resources);
        let mut tokens = st
            .issue(grant, client, scope, binding, refresh)
            .ok_or_else(server_error)?;
        drop(st);
        tokens.id_token = self.id_token(&client.id, &subject, nonce.as_deref(), &tokens, false);
        Ok(tokens)
    }

    fn refresh(
        &self,
        client: &Client,
        params: &Params,
        jkt: Option<String>,
    ) -> Result<Tokens, Failure> {
        let old = params
            .get("refresh_token")
            .ok_or(invalid_request("refresh_token is missing"))?;
        let requested = match params.get("scope") {
            Some(s) => Some(parse_scope(s).ok_or(invalid_scope())?),
            None => None,
        };
        let mut st = self.lock();
        let Some(entry) = st.refresh.get(old) else {
            if let Some(&grant) = st.retired.get(old) {
                st.revoke(grant);
                return Err(invalid_grant(
                    "refresh token already rotated; the grant is revoked",
                ));
            }
            return Err(invalid_grant("unknown refresh token"));
        };
        if entry.client_id != client.id {
            return Err(invalid_grant("refresh token was issued to another client"));
        }
        if requested
            .as_ref()
            .is_some_and(|r| r.iter().any(|s| !entry.scope.contains(s)))
        {
            return Err(invalid_scope());
        }
        // RFC 9449 §5: a public client's bound refresh token needs its key's proof.
        if entry.jkt.is_some() && entry.jkt != jkt {
            return Err(invalid_grant(
                "the refresh token is bound to another DPoP key than the proof's",
            ));
        }
        let resources = narrowed_resources(params, &entry.resources)?;
        let (grant, scope) = (entry.grant, entry.scope.clone());
        let grant_resources = entry.resources.clone();
        st.refresh.remove(old);
        st.retired.insert(old.to_owned(), grant);
        let binding = Binding { jkt, resources };
        let mut tokens = st
            .issue(grant, client, scope, binding, Some(grant_resources))
            .ok_or_else(server_error)?;
        if let Some(narrower) = requested {
            tokens.scope = narrower;
        }
        let subject = st.subjects.get(&grant).cloned();
        drop(st);
        // OpenID Connect Core §12.2: a new ID token for the same user, without a nonce.
        if let Some(subject) = subject {
            tokens.id_token = self.id_token(&client.id, &subject, None, &tokens, true);
        }
        Ok(tokens)
    }

    /// Whether a login (code exchange or device code) yields a refresh token: always, but
    /// for a GitHub OAuth App.
    fn issues_refresh_tokens(&self) -> bool {
        !matches!(self.config.quirk, Quirk::GitHub)
    }

    fn token_success(&self, tokens: Tokens, json: bool) -> Response {
        let seconds = self.config.token_lifetime.as_secs();
        match self.config.quirk {
            Quirk::GitHub => {
                let fields = [
                    ("access_token", json!(tokens.access)),
                    ("scope", json!(tokens.scope.join(","))),
                    ("token_type", json!("bearer")),
                ];
                return github_body(&fields, json);
            }
            Quirk::GitHubApp => {
                let mut fields = vec![
                    ("access_token", json!(tokens.access)),
                    ("expires_in", json!(seconds)),
                ];
                if let Some(refresh) = tokens.refresh {
                    fields.push(("refresh_token", json!(refresh)));
                    fields.push((
                        "refresh_token_expires_in",
                        json!(GITHUB_REFRESH_TOKEN_LIFETIME),
                    ));
                }
                fields.push(("scope", json!("")));
                fields.push(("token_type", json!("bearer")));
                return github_body(&fields, json);
            }
            Quirk::None | Quirk::EntraStringExpiry | Quirk::NoTokenType => {}
        }
        let mut body = Map::new();
        body.insert("access_token".into(), json!(tokens.access));
        if tokens.dpop {
            body.insert("token_type".into(), json!("DPoP"));
        } else if !matches!(self.config.quirk, Quirk::NoTokenType) {
            body.insert("token_type".into(), json!("Bearer"));
        }
        if let Quirk::EntraStringExpiry = self.config.quirk {
            body.insert("expires_in".into(), json!(seconds.to_string()));
            body.insert("ext_expires_in".into(), json!(seconds.to_string()));
        } else {
            body.insert("expires_in".into(), json!(seconds));
        }
        if let Some(refresh) = tokens.refresh {
            body.insert("refresh_token".into(), json!(refresh));
        }
        if !tokens.scope.is_empty() {
            body.insert("scope".into(), json!(tokens.scope.join(" ")));
        }
        if let Some(id_token) = tokens.id_token {
            body.insert("id_token".into(), json!(id_token));
        }
        Response::new(200, "application/json", Value::Object(body).to_string())
    }
}

impl State {
    /// Issues an access token bound as `binding` says for `grant`, and a refresh token for
    /// the grant's resources when `refresh` has them; `None` without randomness. A public
    /// client's refresh token is bound to the same DPoP key as the access token (RFC 9449
    /// §5).
    fn issue(
        &mut self,
        grant: u64,
        client: &Client,
        scope: Vec<String>,
        binding: Binding,
        refresh: Option<Vec<String>>,
    ) -> Option<Tokens> {
        let access = random_token()?;
        let refresh = match refresh {
            Some(resources) => Some((random_token()?, resources)),
            None => None,
        };
        let dpop = binding.jkt.is_some();
        if let Some((token, resources)) = &refresh {
            let public = client.auth == ClientAuth::None;
            let entry = Refresh {
                grant,
                client_id: client.id.clone(),
                scope: scope.clone(),
                resources: resources.clone(),
                jkt: binding.jkt.clone().filter(|_| public),
            };
            self.refresh.insert(token.clone(), entry);
        }
        self.access.insert(
            access.clone(),
            Issued {
                grant,
                issued: Instant::now(),
                client_id: client.id.clone(),
                scope: scope.clone(),
                binding,
            },
        );
        Some(Tokens {
            access,
            refresh: refresh.map(|(token, _)| token),
            scope,
            id_token: None,
            dpop,
        })
    }

    fn revoke(&mut self, grant: u64) {
        self.access.retain(|_, t| t.grant != grant);
        self.refresh.retain(|_, t| t.grant != grant);
        self.subjects.remove(&grant);
    }
}

impl Failure {
    /// The same failure with GitHub's error code for it: `invalid_grant` is
    /// `bad_verification_code` for a code, `bad_refresh_token` for a refresh token and
    /// `incorrect_device_code` for a device code; `invalid_client` is
    /// `incorrect_client_credentials`.
    fn in_github_words(self, grant: GrantType) -> Failure {
        let error = match (self.error, grant) {
            ("invalid_grant", GrantType::RefreshToken) => "bad_refresh_token",
            ("invalid_grant", GrantType::DeviceCode) => "incorrect_device_code",
            ("invalid_grant", _) => "bad_verification_code",
            ("invalid_client", _) => "incorrect_client_credentials",
            (other, _) => other,
        };
        Failure { error, ..self }
    }
}

/// A GitHub token answer: HTTP 200, a JSON object when `json`, else form-encoded (numbers
/// written as digits).
fn github_body(fields: &[(&str, Value)], json: bool) -> Response {
    if json {
        let body: Map<String, Value> = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        return Response::new(
            200,
            "application/json; charset=utf-8",
            Value::Object(body).to_string(),
        );
    }
    let texts: Vec<(&str, String)> = fields
        .iter()
        .map(|(name, value)| match value {
            Value::String(text) => (*name, text.clone()),
            other => (*name, other.to_string()),
        })
        .collect();
    let pairs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(name, text)| (*name, text.as_str()))
        .collect();
    Response::new(
        200,
        "application/x-www-form-urlencoded; charset=utf-8",
        form::serialize(&pairs),
    )
}

/// An error answer: RFC 6749 §5.2 JSON with the failure's status, or, for `github`, GitHub's
/// way (HTTP 200, form-encoded unless `json`) with the failure's code as it is and its
/// `interval`, if any.
fn token_failure(failure: Failure, github: bool, json: bool) -> Response {
    if !github {
        let body = json!({"error": failure.error, "error_description": failure.description});
        let mut response = Response::new(failure.status, "application/json", body.to_string());
        if let Some(nonce) = failure.nonce {
            response = response.with("DPoP-Nonce", nonce);
        }
        return match failure.status {
            401 => response.with("WWW-Authenticate", "Basic realm=\"devidp\""),
            _ => response,
        };
    }
    let mut fields = vec![
        ("error", json!(failure.error)),
        ("error_description", json!(failure.description)),
    ];
    if let Some(interval) = failure.interval {
        fields.push(("interval", json!(interval)));
    }
    github_body(&fields, json)
}

/// Exact string comparison (RFC 6749 §3.1.2.3), except that a registered loopback IP
/// URI without a port (`http://127.0.0.1/cb`, `http://[::1]/cb`) matches any port
/// (RFC 8252 §7.3), so native apps can listen on an ephemeral port.
fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    ["http://127.0.0.1", "http://[::1]"].iter().any(|host| {
        let (Some(rest), Some(port_and_rest)) =
            (registered.strip_prefix(host), requested.strip_prefix(host))
        else {
            return false;
        };
        let Some(port_and_rest) = port_and_rest.strip_prefix(':') else {
            return false;
        };
        let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
        let portless = rest.is_empty() || rest.starts_with(['/', '?']);
        portless && (1..=5).contains(&digits) && port_and_rest[digits..] == *rest
    })
}

/// Validates the parts of an authorization request that are answered by redirect;
/// returns the code challenge and the granted scope.
fn check_authorization<'a>(
    params: &'a Params,
    scopes_added: &[String],
) -> Result<(&'a str, Vec<String>), (&'static str, &'static str)> {
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        None => return Err(("invalid_request", "response_type is missing")),
    }
    match params.get("code_challenge_method") {
        Some("S256") => {}
        Some("plain") | None => {
            return Err((
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            ));
        }
        Some(_) => return Err(("invalid_request", "unsupported code_challenge_method")),
    }
    let challenge = params
        .get("code_challenge")
        .ok_or(("invalid_request", "code_challenge is missing"))?;
    let is_s256_value = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !is_s256_value {
        return Err((
            "invalid_request",
            "code_challenge is not a BASE64URL SHA-256 value",
        ));
    }
    if params.all("resource").any(|uri| !is_resource(uri)) {
        return Err((
            "invalid_target",
            "a resource is not an absolute URI without fragment",
        ));
    }
    if params
        .get("dpop_jkt")
        .is_some_and(|jkt| !is_thumbprint(jkt))
    {
        return Err((
            "invalid_request",
            "dpop_jkt is not a SHA-256 JWK thumbprint",
        ));
    }
    let mut scope = match params.get("scope") {
        Some(s) => parse_scope(s).ok_or(("invalid_scope", "scope is malformed"))?,
        None => Vec::new(),
    };
    for added in scopes_added {
        if !scope.contains(added) {
            scope.push(added.clone());
        }
    }
    Ok((challenge, scope))
}

/// A resource indicator (RFC 8707 §2): an absolute URI (a scheme, then `:`) without a
/// fragment, of visible ASCII.
fn is_resource(uri: &str) -> bool {
    let scheme = uri.split(':').next().unwrap_or_default();
    uri.len() > scheme.len() + 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !uri.contains('#')
        && uri.bytes().all(|b| b.is_ascii_graphic())
}

/// A SHA-256 JWK thumbprint: 43 BASE64URL characters.
fn is_thumbprint(jkt: &str) -> bool {
    jkt.len() == 43
        && jkt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The resources a token request names (RFC 8707 §2.2): each must be one of the grant's
/// (when the grant has any); none means all of the grant's.
fn narrowed_resources(params: &Params, granted: &[String]) -> Result<Vec<String>, Failure> {
    let asked: Vec<String> = params.all("resource").map(str::to_owned).collect();
    if asked.iter().any(|uri| !is_resource(uri)) {
        return Err(invalid_target(
            "a resource is not an absolute URI without fragment",
        ));
    }
    if asked.is_empty() {
        return Ok(granted.to_vec());
    }
    if !granted.is_empty() && asked.iter().any(|uri| !granted.contains(uri)) {
        return Err(invalid_target("a resource was not part of the grant"));
    }
    Ok(asked)
}

fn invalid_target(description: &'static str) -> Failure {
    Failure::new(400, "invalid_target", description)
}

/// The metadata name of every client authentication method the server knows.
const AUTH_METHODS: [&str; 4] = [
    "client_secret_basic",
    "client_secret_post",
    "none",
    "private_key_jwt",
];

/// `invalid_client` for a client that used another method than its registered one.
fn wrong_method(client: &Client) -> Failure {
    invalid_client(match client.auth {
        ClientAuth::Basic => "this client must authenticate with HTTP Basic",
        ClientAuth::Post => "this client must send client_secret in the body",
        ClientAuth::None => "this public client must not authenticate",
        ClientAuth::PrivateKeyJwt { .. } => {
            "this client must authenticate with a private_key_jwt client assertion"
        }
    })
}

fn invalid_scope() -> Failure {
    Failure::new(
        400,
        "invalid_scope",
        "scope is malformed or exceeds the grant",
    )
}

/// Splits a scope by single spaces (RFC 6749 §3.3), dropping repeats.
fn parse_scope(s: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for token in s.split(' ') {
        let valid = !token.is_empty()
            && token
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
        if !valid {
            return None;
        }
        if !out.iter().any(|t| t == token) {
            out.push(token.to_owned());
        }
    }
    Some(out)
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL(SHA256(ASCII(verifier)))` (RFC 7636 §4.2).
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// 32 random bytes, BASE64URL.
fn random_token() -> Option<String> {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// `Basic base64(form-encoded id ":" form-encoded secret)` → decoded (id, secret).
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(credentials.trim_start_matches(' ')).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((
        form::decode(id.as_bytes()).ok()?,
        form::decode(secret.as_bytes()).ok()?,
    ))
}

#[cfg(test)]
#[test]
fn loopback_redirects_match_any_port() {
    let any = "http://127.0.0.1/cb";
    assert!(redirect_matches(any, "http://127.0.0.1:5000/cb"));
    assert!(redirect_matches("http://[::1]", "http://[::1]:1"));
    assert!(redirect_matches(
        "http://127.0.0.1?x",
        "http://127.0.0.1:1?x"
    ));
    for no in [
        "http://127.0.0.1:/cb",
        "http://127.0.0.1:5000/cb/",
        "http://127.0.0.1:123456/cb",
        "http://127.0.0.10/cb",
        "http://127.0.0.1:50x/cb",
        "http://localhost:5000/cb",
    ] {
        assert!(!redirect_matches(any, no), "{no}");
    }
    assert!(!redirect_matches(
        "http://127.0.0.1:4000/cb",
        "http://127.0.0.1:5000/cb"
    ));
    assert!(!redirect_matches(
        "http://127.0.0.10/cb",
        "http://127.0.0.1:5/0/cb"
    ));
    assert!(!redirect_matches(
        "http://localhost/cb",
        "http://localhost:5/cb"
    ));
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request says its body is `application/x-www-form-urlencoded`.
fn is_form(request: &RecordedRequest) -> bool {
    request
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Whether the `Accept` header lists `application/json`.
fn accepts_json(request: &RecordedRequest) -> bool {
    request
        .headers_named("accept")
        .flat_map(|v| v.split(','))
        .any(|range| {
            let media = range.split(';').next().unwrap_or_default();
            media.trim().eq_ignore_ascii_case("application/json")
        })
}

/// The quirks in the answers to both grants, read straight from [`Server::handle`].
#[cfg(test)]
mod quirk_tests {
    use super::*;

    const REDIRECT: &str = "http://127.0.0.1/cb";
    const SECRET: &str = "app-secret";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn server(quirk: Quirk) -> Server {
        let client = Client {
            id: "app".into(),
            secret: Some(SECRET.into()),
            auth: ClientAuth::Post,
            redirect_uris: vec![REDIRECT.into()],
        };
        let mut config = Config::new(vec![client]);
        config.quirk = quirk;
        Server::new(config, "http://127.0.0.1:9".into()).expect("keys")
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A form body's pairs in order, empty values kept (GitHub's `scope=`).
    fn pairs(body: &[u8]) -> Vec<(String, String)> {
        body.split(|b| *b == b'&')
            .map(|pair| {
                let eq = pair.iter().position(|b| *b == b'=').expect("name=value");
                let name = form::decode(&pair[..eq]).expect("encoded name");
                (name, form::decode(&pair[eq + 1..]).expect("encoded value"))
            })
            .collect()
    }

    struct Answer {
        status: u16,
        form: bool,
        /// Member names in the order sent (JSON: the object's order).
        names: Vec<String>,
        members: Map<String, Value>,
    }

    impl Answer {
        fn text(&self, name: &str) -> &str {
            self.members[name].as_str().expect("a string member")
        }
    }

    fn answer(response: &Response) -> Answer {
        let content_type = header(response, "content-type").expect("a content type");
        let form = content_type.starts_with("application/x-www-form-urlencoded");
        let members: Map<String, Value> = if form {
            pairs(&response.body)
                .into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect()
        } else {
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
            serde_json::from_slice(&response.body).expect("a JSON object")
        };
        let names = if form {
            pairs(&response.body).into_iter().map(|(n, _)| n).collect()
        } else {
            members.keys().cloned().collect()
        };
        Answer {
            status: response.status,
            form,
            names,
            members,
        }
    }

    fn code(server: &Server) -> String {
        let query = form::serialize(&[
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &s256(VERIFIER)),
            ("code_challenge_method", "S256"),
        ]);
        let response = server.handle(RecordedRequest {
            method: "GET".into(),
            target: format!("/authorize?{query}"),
            headers: Vec::new(),
            body: Vec::new(),
        });
        let location = header(&response, "location").expect("a redirect");
        let (_, query) = location.split_once('?').expect("a query");
        pairs(query.as_bytes())
            .into_iter()
            .find(|(name, _)| name == "code")
            .map(|(_, code)| code)
            .expect("a code")
    }

    fn token(server: &Server, accept_json: bool, params: &[(&str, &str)]) -> Answer {
        token_as(server, SECRET, accept_json, params)
    }

    /// A token request authenticated with `secret` in the body.
    fn token_as(
        server: &Server,
        secret: &str,
        accept_json: bool,
        params: &[(&str, &str)],
    ) -> Answer {
        let mut headers = vec![(
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )];
        if accept_json {
            headers.push(("Accept".to_owned(), "application/json".to_owned()));
        }
        let mut params = params.to_vec();
        params.extend([("client_id", "app"), ("client_secret", secret)]);
        answer(&server.handle(RecordedRequest {
            method: "POST".into(),
            target: "/token".into(),
            headers,
            body: form::serialize(&params).into_bytes(),
        }))
    }

    fn login(server: &Server, accept_json: bool) -> Answer {
        let code = code(server);
        token(
            server,
            accept_json,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
    }

    fn refresh(server: &Server, accept_json: bool, refresh_token: &str) -> Answer {
        token(
            server,
            accept_json,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    const GITHUB_APP_NAMES: [&str; 6] = [
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "scope",
        "token_type",
    ];

    #[test]
    fn github_app_refresh_rotates_and_answers_in_form_bodies_like_the_code_exchange() {
        let server = server(Quirk::GitHubApp);
        let first = login(&server, false);
        assert!(first.form && first.status == 200);
        assert_eq!(first.names, GITHUB_APP_NAMES);
        let second = refresh(&server, false, first.text("refresh_token"));
        assert!(second.form && second.status == 200);
        assert_eq!(second.names, GITHUB_APP_NAMES);
        assert_eq!(
            (
                second.text("expires_in"),
                second.text("refresh_token_expires_in")
            ),
            ("3600", "15897600")
        );
        assert_eq!(
            (second.text("scope"), second.text("token_type")),
            ("", "bearer")
        );
        assert_ne!(second.text("refresh_token"), first.text("refresh_token"));
        assert_ne!(second.text("access_token"), first.text("access_token"));

        let third = refresh(&server, true, second.text("refresh_token"));
        assert!(!third.form && third.status == 200);
        assert_eq!(third.names, GITHUB_APP_NAMES);
        assert_eq!(third.members["expires_in"], 3600);
        assert_eq!(third.members["refresh_token_expires_in"], 15_897_600);
        assert!(server.access_token_active(third.text("access_token")));
    }

    #[test]
    fn github_app_replayed_refresh_token_is_bad_refresh_token_with_200() {
        let server = server(Quirk::GitHubApp);
        let first = login(&server, true);
        let rotated_out = first.text("refresh_token");
        let second = refresh(&server, true, rotated_out);
        assert_eq!(second.status, 200);
        for accept_json in [false, true] {
            let replay = refresh(&server, accept_json, rotated_out);
            assert_eq!((replay.status, replay.form), (200, !accept_json));
            assert_eq!(replay.names, ["error", "error_description"]);
            assert_eq!(replay.text("error"), "bad_refresh_token");
        }
        // The replay revoked the grant, so the newest refresh token is dead too.
        let after = refresh(&server, true, second.text("refresh_token"));
        assert_eq!(after.text("error"), "bad_refresh_token");
    }

    #[test]
    fn github_errors_use_the_code_of_the_grant_that_failed() {
        for quirk in [Quirk::GitHub, Quirk::GitHubApp] {
            let server = server(quirk);
            let unknown = refresh(&server, true, "no-such-token");
            assert_eq!(
                (unknown.status, unknown.text("error")),
                (200, "bad_refresh_token"),
                "{quirk:?}"
            );
            let reused = token(
                &server,
                true,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", "no-such-code"),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", VERIFIER),
                ],
            );
            assert_eq!(
                (reused.status, reused.text("error")),
                (200, "bad_verification_code"),
                "{quirk:?}"
            );
            let refused = token_as(
                &server,
                "wrong",
                true,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "no-such-token"),
                ],
            );
            assert_eq!(
                (refused.status, refused.text("error")),
                (200, "incorrect_client_credentials"),
                "{quirk:?}"
            );
        }
    }

    #[test]
    fn entra_refresh_answers_have_string_expiry_and_rotate() {
        let server = server(Quirk::EntraStringExpiry);
        let first = login(&server, true);
        let second = refresh(&server, true, first.text("refresh_token"));
        assert_eq!(second.status, 200);
        assert_eq!(second.members["expires_in"], "3600");
        assert_eq!(second.members["ext_expires_in"], "3600");
        assert_eq!(second.members["token_type"], "Bearer");
        assert_ne!(second.text("refresh_token"), first.text("refresh_token"));
    }

    #[test]
    fn no_token_type_refresh_answers_have_no_token_type() {
        let server = server(Quirk::NoTokenType);
        let first = login(&server, true);
        assert!(!first.members.contains_key("token_type"));
        let second = refresh(&server, true, first.text("refresh_token"));
        assert_eq!(second.status, 200);
        assert!(
            !second.members.contains_key("token_type"),
            "{:?}",
            second.names
        );
        assert_eq!(second.members["expires_in"], 3600);
        assert_ne!(second.text("refresh_token"), first.text("refresh_token"));
    }
}
