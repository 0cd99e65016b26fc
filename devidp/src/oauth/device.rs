//! The device authorization grant (RFC 8628): the device authorization endpoint (§3.1,
//! §3.2), the device code grant at the token endpoint (§3.4, §3.5) and the verification
//! page where the user approves or denies a user code (§3.3).
//!
//! Each device code is one [`Status`], changed only here:
//!
//! ```text
//!   POST /device_authorization
//!              │
//!              ▼       approve (page or DevIdp::approve_device)
//!           Pending ────────────────────────────────────────────► Approved ──poll──► Redeemed
//!              │
//!              └──────► Denied     (page or DevIdp::deny_device)
//!
//!   Pending, Approved, Denied ──(expires_in passed)──► polls get expired_token
//! ```
//!
//! A poll of a `Pending` or `Approved` code sooner than its interval after the previous
//! poll (or while [`crate::DevIdp::slow_down_next`] has polls left) gets `slow_down`
//! instead, and the interval of that code grows by 5 s (§3.5). A `Redeemed` code, one of
//! another client and an unknown one get `invalid_grant`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    Binding, Failure, Server, Tokens, accepts_json, github_body, invalid_grant, invalid_request,
    invalid_scope, is_form, narrowed_resources, parse_scope, random_token, server_error,
    token_failure,
};
use crate::form::Params;
use crate::http::Response;
use crate::idtoken::{self, Subject};
use crate::{Client, RecordedRequest};

/// The `grant_type` of a device access token request (RFC 8628 §3.4).
pub(super) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The device authorization endpoint.
pub(super) const AUTHORIZATION_PATH: &str = "/device_authorization";
/// GitHub's device authorization endpoint, served in the GitHub quirk modes too.
pub(super) const GITHUB_AUTHORIZATION_PATH: &str = "/login/device/code";
/// The verification page.
pub(super) const VERIFICATION_PATH: &str = "/device";
/// GitHub's verification page, served in the GitHub quirk modes too.
pub(super) const GITHUB_VERIFICATION_PATH: &str = "/login/device";

/// User code characters: consonants only, so no words form, and none that look alike
/// (RFC 8628 §6.1).
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// User code length, shown as two groups of four (`WDJB-MJHT`).
const USER_CODE_LEN: usize = 8;
/// How much each `slow_down` adds to a device code's interval (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The user who approves when the page (or the caller) names nobody.
const DEFAULT_USER: &str = "dev-user";
/// The longest user name accepted, in characters.
const MAX_USER_LEN: usize = 64;

/// The device codes issued, indexed by device code and by user code.
#[derive(Default)]
pub(super) struct Devices {
    grants: HashMap<String, DeviceGrant>,
    /// Normalized user code → device code.
    user_codes: HashMap<String, String>,
    /// Polls still to be answered `slow_down` whatever their timing.
    forced_slow_downs: usize,
}

struct DeviceGrant {
    client_id: String,
    scope: Vec<String>,
    /// The resources asked for (RFC 8707).
    resources: Vec<String>,
    /// Normalized: [`USER_CODE_LEN`] characters of [`USER_CODE_ALPHABET`], no dash.
    user_code: String,
    issued: Instant,
    /// The current minimum time between polls; grows with each `slow_down`.
    interval: Duration,
    last_poll: Option<Instant>,
    status: Status,
}

/// Where the user is with a device code.
enum Status {
    Pending,
    /// Approved by this user; the next poll in time gets the tokens.
    Approved(Subject),
    Denied,
    /// The tokens were handed out.
    Redeemed,
}

/// Why a user code could not be approved or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecideError {
    Unknown,
    Expired,
    Decided,
    BadUser,
}

impl DecideError {
    fn message(self) -> &'static str {
        match self {
            DecideError::Unknown => "There is no such code.",
            DecideError::Expired => "This code has expired; start again on your device.",
            DecideError::Decided => "This code was already approved or denied.",
            DecideError::BadUser => {
                "The user name must be 1 to 64 characters without control characters."
            }
        }
    }
}

/// Whole seconds, rounded up, so that a client that waits that long waits long enough.
pub(super) fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

fn device_error(error: &'static str, description: &'static str) -> Failure {
    Failure::new(400, error, description)
}

impl Server {
    /// `{base}/device`, or GitHub's `{base}/login/device` in the GitHub quirk modes.
    pub(crate) fn verification_uri(&self) -> String {
        let path = if self.config.quirk.is_github() {
            GITHUB_VERIFICATION_PATH
        } else {
            VERIFICATION_PATH
        };
        format!("{}{path}", self.base_url)
    }

    /// The device authorization endpoint (RFC 8628 §3.1, §3.2): the client authenticates as
    /// at the token endpoint and gets a device code, a user code and where to enter it.
    pub(super) fn device_authorization(&self, request: &RecordedRequest) -> Response {
        let github = self.config.quirk.is_github();
        let json = !github || accepts_json(request);
        let path = match github {
            true => GITHUB_AUTHORIZATION_PATH,
            false => AUTHORIZATION_PATH,
        };
        let outcome = self.form_params(request).and_then(|params| {
            let client = self.authenticate(request, &params, path)?;
            let resources = narrowed_resources(&params, &[])?;
            let mut scope = match params.get("scope") {
                Some(s) => parse_scope(s).ok_or_else(invalid_scope)?,
                None => Vec::new(),
            };
            for added in &self.config.scopes_added {
                if !scope.contains(added) {
                    scope.push(added.clone());
                }
            }
            self.issue_device_code(client, scope, resources)
        });
        let mut response = match outcome {
            Ok((device_code, user_code)) => {
                let user_code = display_user_code(&user_code);
                let verification_uri = self.verification_uri();
                let expires_in = ceil_secs(self.config.device_expires_in);
                let interval = ceil_secs(self.config.device_interval);
                if github {
                    // GitHub's members, in its (alphabetical) order, without
                    // `verification_uri_complete`.
                    let fields = [
                        ("device_code", json!(device_code)),
                        ("expires_in", json!(expires_in)),
                        ("interval", json!(interval)),
                        ("user_code", json!(user_code)),
                        ("verification_uri", json!(verification_uri)),
                    ];
                    github_body(&fields, json)
                } else {
                    let body = json!({
                        "device_code": device_code,
                        "user_code": user_code,
                        "verification_uri": verification_uri,
                        "verification_uri_complete":
                            format!("{verification_uri}?user_code={user_code}"),
                        "expires_in": expires_in,
                        "interval": interval,
                    });
                    Response::new(200, "application/json", body.to_string())
                }
            }
            Err(failure) if github => token_failure(
                failure.in_github_words(super::GrantType::DeviceCode),
                true,
                json,
            ),
            Err(failure) => token_failure(failure, false, json),
        };
        response.headers.push(("Pragma", "no-cache".to_owned()));
        response
    }

    /// Records a new device code for `client`; returns it and its normalized user code.
    fn issue_device_code(
        &self,
        client: &Client,
        scope: Vec<String>,
        resources: Vec<String>,
    ) -> Result<(String, String), Failure> {
        let device_code = random_token().ok_or_else(server_error)?;
        let mut st = self.lock();
        let devices = &mut st.devices;
        // Expired codes still answer `expired_token` for a while, then are forgotten.
        let keep = self
            .config
            .device_expires_in
            .saturating_add(self.config.token_lifetime);
        devices.grants.retain(|_, g| g.issued.elapsed() < keep);
        let grants = &devices.grants;
        devices
            .user_codes
            .retain(|_, code| grants.contains_key(code));
        // 20^8 codes make a collision rare; a few draws make it practically impossible.
        let user_code = (0..8)
            .filter_map(|_| new_user_code())
            .find(|code| !devices.user_codes.contains_key(code))
            .ok_or_else(server_error)?;
        devices
            .user_codes
            .insert(user_code.clone(), device_code.clone());
        devices.grants.insert(
            device_code.clone(),
            DeviceGrant {
                client_id: client.id.clone(),
                scope,
                resources,
                user_code: user_code.clone(),
                issued: Instant::now(),
                interval: self.config.device_interval,
                last_poll: None,
                status: Status::Pending,
            },
        );
        st.stats.device_authorizations += 1;
        Ok((device_code, user_code))
    }

    /// The device code grant at the token endpoint (RFC 8628 §3.4, §3.5).
    pub(super) fn redeem_device_code(
        &self,
        client: &Client,
        params: &Params,
        jkt: Option<String>,
    ) -> Result<Tokens, Failure> {
        let device_code = params
            .get("device_code")
            .ok_or(invalid_request("device_code is missing"))?;
        let now = Instant::now();
        let mut st = self.lock();
        let devices = &mut st.devices;
        let grant = devices
            .grants
            .get_mut(device_code)
            .ok_or(invalid_grant("unknown device code"))?;
        if grant.client_id != client.id {
            return Err(invalid_grant("device code was issued to another client"));
        }
        if let Status::Redeemed = grant.status {
            return Err(invalid_grant("device code already used"));
        }
        if now.saturating_duration_since(grant.issued) >= self.config.device_expires_in {
            return Err(device_error("expired_token", "the device code has expired"));
        }
        let previous = grant.last_poll.replace(now);
        if let Status::Denied = grant.status {
            return Err(device_error("access_denied", "the user denied the request"));
        }
        let too_soon = previous.is_some_and(|p| now.saturating_duration_since(p) < grant.interval);
        if too_soon || devices.forced_slow_downs > 0 {
            if !too_soon {
                devices.forced_slow_downs -= 1;
            }
            grant.interval = grant.interval.saturating_add(SLOW_DOWN_STEP);
            return Err(Failure {
                interval: Some(ceil_secs(grant.interval)),
                ..device_error(
                    "slow_down",
                    "polling too often; the interval grew by 5 seconds",
                )
            });
        }
        let Status::Approved(subject) = &grant.status else {
            return Err(device_error(
                "authorization_pending",
                "the user has not approved or denied the request yet",
            ));
        };
        let resources = narrowed_resources(params, &grant.resources)?;
        let binding = Binding { jkt, resources };
        let refresh = self
            .issues_refresh_tokens()
            .then(|| grant.resources.clone());
        let (subject, scope) = (subject.clone(), grant.scope.clone());
        let id = st.next_grant;
        let mut tokens = st
            .issue(id, client, scope, binding, refresh)
            .ok_or_else(server_error)?;
        st.next_grant += 1;
        st.subjects.insert(id, subject.clone());
        if let Some(grant) = st.devices.grants.get_mut(device_code) {
            grant.status = Status::Redeemed;
        }
        drop(st);
        // No authorization request, so no nonce (OpenID Connect Core §2 makes it optional).
        tokens.id_token = self.id_token(&client.id, &subject, None, &tokens, false);
        Ok(tokens)
    }

    /// Approves (as `user`, `None` meaning deny) the pending device code of `user_code`;
    /// returns the client it was issued to.
    pub(crate) fn decide_device(
        &self,
        user_code: &str,
        approve_as: Option<&str>,
    ) -> Result<String, DecideError> {
        let status = match approve_as {
            Some(user) => {
                let user = if user.is_empty() { DEFAULT_USER } else { user };
                let valid =
                    user.chars().count() <= MAX_USER_LEN && !user.chars().any(char::is_control);
                if !valid {
                    return Err(DecideError::BadUser);
                }
                Status::Approved(Subject {
                    sub: user.to_owned(),
                    auth_time: idtoken::unix_now(),
                })
            }
            None => Status::Denied,
        };
        let mut st = self.lock();
        let grant = normalize_user_code(user_code)
            .and_then(|code| st.devices.user_codes.get(&code).cloned())
            .and_then(|device_code| st.devices.grants.get_mut(&device_code))
            .ok_or(DecideError::Unknown)?;
        if grant.issued.elapsed() >= self.config.device_expires_in {
            return Err(DecideError::Expired);
        }
        if !matches!(grant.status, Status::Pending) {
            return Err(DecideError::Decided);
        }
        grant.status = status;
        Ok(grant.client_id.clone())
    }

    /// The user codes (`WDJB-MJHT`) awaiting a decision and not expired, oldest first.
    pub(crate) fn pending_user_codes(&self) -> Vec<String> {
        let st = self.lock();
        let mut pending: Vec<&DeviceGrant> = st
            .devices
            .grants
            .values()
            .filter(|g| matches!(g.status, Status::Pending))
            .filter(|g| g.issued.elapsed() < self.config.device_expires_in)
            .collect();
        pending.sort_by_key(|g| g.issued);
        pending
            .iter()
            .map(|g| display_user_code(&g.user_code))
            .collect()
    }

    /// Answers the next `polls` polls of a pending or approved device code `slow_down`.
    pub(crate) fn slow_down_next(&self, polls: usize) {
        self.lock().devices.forced_slow_downs = polls;
    }

    /// The verification page at `path`: `GET` shows the form, `POST` records the decision.
    pub(super) fn device_page(
        &self,
        request: &RecordedRequest,
        path: &str,
        query: &str,
    ) -> Response {
        if request.method == "GET" {
            return match Params::parse(query.as_bytes()) {
                Ok(params) => self.device_form(path, params.get("user_code").unwrap_or("")),
                Err(_) => page(
                    400,
                    "Bad request",
                    &format!("<p>The query string is not valid.</p>\n{}", again(path)),
                ),
            };
        }
        let params = match Params::parse(&request.body) {
            Ok(params) if is_form(request) => params,
            _ => {
                let message = "<p>Send the form as application/x-www-form-urlencoded.</p>";
                return page(400, "Bad request", &format!("{message}\n{}", again(path)));
            }
        };
        let Some(user_code) = params.get("user_code") else {
            let message = "<p>Enter the code shown on your device.</p>";
            return page(400, "Bad request", &format!("{message}\n{}", again(path)));
        };
        let user = params.get("user").unwrap_or(DEFAULT_USER);
        let approve_as = match params.get("action") {
            Some("approve") => Some(user),
            Some("deny") => None,
            _ => {
                let message = "<p>Choose Approve or Deny.</p>";
                return page(400, "Bad request", &format!("{message}\n{}", again(path)));
            }
        };
        match self.decide_device(user_code, approve_as) {
            Ok(client_id) if approve_as.is_some() => page(
                200,
                "Device approved",
                &format!(
                    "<p id=\"result\">Approved: <b>{}</b> signs in as <b>{}</b>. \
                     You can close this window and return to your device.</p>",
                    escape(&client_id),
                    escape(user),
                ),
            ),
            Ok(client_id) => page(
                200,
                "Device denied",
                &format!(
                    "<p id=\"result\">Denied: <b>{}</b> will not be signed in.</p>",
                    escape(&client_id)
                ),
            ),
            Err(error) => page(
                400,
                "Code not accepted",
                &format!(
                    "<p id=\"result\">{} (code <code>{}</code>)</p>\n{}",
                    error.message(),
                    escape(user_code),
                    again(path)
                ),
            ),
        }
    }

    /// The approval form, prefilled with `user_code`; it names the client and scope when
    /// the code is pending.
    fn device_form(&self, path: &str, user_code: &str) -> Response {
        let mut body = String::new();
        let about = {
            let st = self.lock();
            normalize_user_code(user_code)
                .and_then(|code| st.devices.user_codes.get(&code))
                .and_then(|device_code| st.devices.grants.get(device_code))
                .filter(|g| matches!(g.status, Status::Pending))
                .filter(|g| g.issued.elapsed() < self.config.device_expires_in)
                .map(|g| (g.client_id.clone(), g.scope.join(" ")))
        };
        if let Some((client_id, scope)) = about {
            let _ = writeln!(
                body,
                "<p id=\"request\"><b>{}</b> asks for access (scope: <code>{}</code>).</p>",
                escape(&client_id),
                escape(&scope)
            );
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{action}\">\n\
             <p><label for=\"user_code\">Code shown on your device</label>\n\
             <input id=\"user_code\" name=\"user_code\" value=\"{code}\" autocomplete=\"off\" \
             autocapitalize=\"characters\" spellcheck=\"false\" required>\n\
             <p><label for=\"user\">Sign in as</label>\n\
             <input id=\"user\" name=\"user\" value=\"{user}\">\n\
             <p><button id=\"approve\" type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\n\
             <button id=\"deny\" type=\"submit\" name=\"action\" value=\"deny\">Deny</button>\n\
             </form>\n",
            action = escape(path),
            code = escape(user_code),
            user = DEFAULT_USER,
        );
        page(200, "Connect a device", &body)
    }
}

/// An HTML page; `title` is static text, `body` is HTML whose echoed parts are escaped.
fn page(status: u16, title: &'static str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<h1>{title}</h1>\n{body}\n"
    );
    Response::new(status, "text/html; charset=utf-8", html).with(
        "Content-Security-Policy",
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
    )
}

/// A link back to the form.
fn again(path: &str) -> String {
    format!("<p><a href=\"{}\">Enter a code</a></p>", escape(path))
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A fresh user code, normalized; `None` without randomness.
fn new_user_code() -> Option<String> {
    let mut code = String::with_capacity(USER_CODE_LEN);
    while code.len() < USER_CODE_LEN {
        let mut bytes = [0; 16];
        getrandom::fill(&mut bytes).ok()?;
        // 240 = 12 × 20: dropping bytes above it keeps every letter equally likely.
        for b in bytes.into_iter().filter(|&b| b < 240) {
            if code.len() < USER_CODE_LEN {
                code.push(char::from(USER_CODE_ALPHABET[usize::from(b % 20)]));
            }
        }
    }
    Some(code)
}

/// A user code as typed (any case, with or without the dash and spaces) in normal form;
/// `None` when it cannot be one.
fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|&c| c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid =
        code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    valid.then_some(code)
}

/// `WDJBMJHT` → `WDJB-MJHT`.
fn display_user_code(code: &str) -> String {
    let (first, second) = code.split_at(code.len() / 2);
    format!("{first}-{second}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_letters_of_the_alphabet() {
        for _ in 0..100 {
            let code = new_user_code().expect("randomness");
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(shown.as_bytes()[4], b'-');
        }
    }

    #[test]
    fn typed_user_codes_ignore_case_dash_and_spaces() {
        for typed in [
            "WDJB-MJHT",
            "wdjb-mjht",
            "wdjbmjht",
            " WdJb MjHt ",
            "W-D-J-B-M-J-H-T",
        ] {
            assert_eq!(
                normalize_user_code(typed).as_deref(),
                Some("WDJBMJHT"),
                "{typed}"
            );
        }
        for bad in [
            "",
            "WDJB-MJH",
            "WDJB-MJHTX",
            "WDJB-MJHA",
            "WDJB_MJHT",
            "ẞDJB-MJHT",
        ] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn intervals_round_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(5)), 5);
        assert_eq!(ceil_secs(Duration::from_millis(5001)), 6);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
