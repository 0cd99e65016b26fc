//! A scripted user agent for `oidc-provider`'s development interaction pages: the user's
//! browser in the interop tests.
//!
//! [`sign_in`] starts at an authorization URL and does what a person would: it follows
//! redirects, signs in on the login page (any login is accepted; it uses [`LOGIN`]), then
//! approves or cancels on the consent page, and follows the provider's redirect back to the
//! application's redirect URI, and the application's answer from there, until a response
//! that is not a redirect or a `Location` it cannot follow (`docker-desktop://…`).
//!
//! What the pages look like (oidc-provider 9, `devInteractions`): `GET /auth?…` answers
//! `303 /interaction/UID`; that page holds one `<form action="{issuer}/interaction/UID"
//! method="post">` with a hidden `prompt=login` and the inputs `login` and `password`, and a
//! `[ Cancel ]` link to `{issuer}/interaction/UID/abort`. Posting the form answers
//! `303 {issuer}/auth/UID`, which answers `303` to a new interaction, the consent page: the
//! same form with a hidden `prompt=consent` and no inputs, and the same cancel link. Either
//! way the interaction ends with `303 {issuer}/auth/UID`, whose answer is the `303` to
//! `redirect_uri?code=…&state=…&iss=…` (or `?error=access_denied&…` after a cancel).
//!
//! [`device`] (and [`approve_device`], [`deny_device`]) plays the user of a device login
//! (RFC 8628 §3.3) on a second device: the code input and confirmation pages of
//! `features.deviceFlow`, then the same login and consent pages, until "Sign-in Success"
//! (or, after an abort or a cancel, the code input page saying the request was
//! interrupted). The device's side, the authorization request and the polls, is the
//! caller's.
//!
//! The agent sends every request with [`latchkey_devidp::agent`] (HTTP/1.1 with
//! `Connection: close`, plain `http://` to loopback addresses only, a cap on each response)
//! and checks a deadline for the whole sign-in between requests. Its cookie jar keeps cookies by host (ports ignored, as browsers do), name
//! and path, honours `Path`, `Max-Age` and `Expires` (a past date deletes), and sends them
//! like a browser would, to the application's loopback listener too.

use std::fmt;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey_devidp::agent::{self, Response};

/// The longest a whole [`sign_in`] may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// The login the agent signs in with; oidc-provider's development account is named after
/// it (the `sub` of the tokens it issues).
pub const LOGIN: &str = "alice";
/// The password it types; the development login page accepts any.
const PASSWORD: &str = "correct horse battery staple";
/// Requests in one sign-in, redirects included.
const MAX_HOPS: usize = 30;
/// Pages the agent acts on (a login page and a consent page, normally).
const MAX_PAGES: usize = 6;
/// Pages of one device login: code input, confirmation, login, consent, and the end.
const MAX_DEVICE_PAGES: usize = 8;

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/138.0.0.0 Safari/537.36";
const ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// What the user does on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Presses "Continue".
    Approve,
    /// Presses "Cancel": the provider answers `error=access_denied`.
    Deny,
}

/// One request and its response.
#[derive(Clone, PartialEq, Eq)]
pub struct Hop {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The URL requested.
    pub url: String,
    /// The response status.
    pub status: u16,
    /// For a redirect (301, 302, 303, 307, 308): the `Location`, resolved against `url`.
    pub location: Option<String>,
}

impl fmt::Debug for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.url, self.status)?;
        if let Some(location) = &self.location {
            write!(f, " {location}")?;
        }
        Ok(())
    }
}

/// The hop that requested `redirect_uri` with a query: the provider's redirect back to the
/// application.
pub fn callback<'a>(hops: &'a [Hop], redirect_uri: &str) -> Option<&'a Hop> {
    let prefix = format!("{redirect_uri}?");
    hops.iter().find(|hop| hop.url.starts_with(&prefix))
}

/// Signs in at the authorization URL with a fresh browser (no cookies), choosing `choice`
/// on the consent page, and returns every request made, in order.
///
/// It stops at the first response that is not a redirect and not one of the provider's
/// interaction pages (the application's own page, for instance), or at a `Location` that is
/// not `http://` (recorded in the last hop, not fetched).
///
/// # Errors
///
/// Any I/O failure; a URL that is not `http://` to loopback; the deadline ([`TIMEOUT`]);
/// and a provider page the agent does not understand (an error page, say), described with
/// the hops so far and the page's text.
pub fn sign_in(authorization_url: &str, choice: Choice) -> io::Result<Vec<Hop>> {
    Agent::new().sign_in(authorization_url, choice)
}

/// What the user does with a device's login request (RFC 8628) on the provider's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Confirms the code, signs in and approves the consent page: the provider shows
    /// "Sign-in Success", and the device's next poll gets tokens.
    Approve,
    /// Presses `[ Abort ]` on the confirmation page, before signing in (as a person does
    /// whose device shows another code): the device's next poll gets `access_denied`.
    Abort,
    /// Confirms the code and signs in, then presses `[ Cancel ]` on the consent page: the
    /// device's next poll gets `access_denied`.
    CancelConsent,
}

/// Does what a person does on a second device with a fresh browser (no cookies) for a
/// device login (RFC 8628 §3.3): opens `verification_uri`, types `user_code` when the page
/// asks for it, checks that the confirmation page shows that code, then acts on `choice`,
/// signing in as `user` (the `sub` of the tokens; any login is accepted). Returns every
/// request made, in order.
///
/// `verification_uri` may be the plain `verification_uri` (the agent types the code) or
/// `verification_uri_complete` (the provider's page posts the code itself, which the agent
/// does in place of the page's script); either way the code shown for confirmation must
/// match `user_code` (compared as oidc-provider compares codes: case and punctuation
/// ignored).
///
/// What the pages look like (oidc-provider 9, `features.deviceFlow` with its default
/// pages): `GET /device` answers a form `op.deviceInputForm` posting a hidden `xsrf` and the
/// text input `user_code` to `/device`; `GET /device?user_code=…` answers instead a form of
/// both as hidden inputs that the page's script submits. Posting the code answers the
/// confirmation page: the form `op.deviceConfirmForm` with hidden `xsrf`, `user_code` and
/// `confirm=yes`, the code in a `<code>`, a "Continue" button and a button `name="abort"
/// value="yes"` outside the form (`form="op.deviceConfirmForm"`). Posting it with `confirm`
/// answers `303 /interaction/UID`, the login and consent pages [`sign_in`] knows, each ending
/// with `303 {issuer}/device/UID`; the last of those answers "Sign-in Success" (200, no
/// form). Posting `abort=yes`, or cancelling an interaction, answers the code input page
/// again with "The Sign-in request was interrupted".
///
/// # Errors
///
/// Any I/O failure; a URL that is not `http://` to loopback; an empty `user_code` or
/// `user`; the deadline ([`TIMEOUT`]); a confirmation page showing another code; the
/// provider refusing the code ("The code you entered is incorrect", for an unknown,
/// expired or already used code); an outcome other than `choice`'s; and any page the agent
/// does not understand, described with the hops so far and the page's text.
pub fn device(
    verification_uri: &str,
    user_code: &str,
    user: &str,
    choice: DeviceChoice,
) -> io::Result<Vec<Hop>> {
    Agent::new().device(verification_uri, user_code, user, choice)
}

/// Approves a device login as `user` with a fresh browser: [`device`] with
/// [`DeviceChoice::Approve`]. `verification_uri` is either the device authorization
/// response's `verification_uri` or its `verification_uri_complete`.
///
/// # Errors
///
/// As [`device`], as text.
pub fn approve_device(verification_uri: &str, user_code: &str, user: &str) -> Result<(), String> {
    device(verification_uri, user_code, user, DeviceChoice::Approve)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Denies a device login with a fresh browser: [`device`] with [`DeviceChoice::Abort`],
/// pressing `[ Abort ]` on the confirmation page. The user never signs in, so `user` is
/// never typed (it must not be empty all the same). The device's next poll gets
/// `access_denied`; the poll after that, `invalid_grant`.
///
/// # Errors
///
/// As [`device`], as text.
pub fn deny_device(verification_uri: &str, user_code: &str, user: &str) -> Result<(), String> {
    device(verification_uri, user_code, user, DeviceChoice::Abort)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// A browser with a cookie jar; [`sign_in`] uses a fresh one. Keeping one across sign-ins
/// keeps the provider's session, so the login page is skipped the second time.
#[derive(Debug, Default)]
pub struct Agent {
    jar: Jar,
}

/// A request the agent is about to make.
struct Request {
    method: &'static str,
    url: Url,
    /// Form-encoded, for `POST`.
    body: Vec<u8>,
    /// The URL of the page or redirect that led here (`None`: typed by the user).
    referrer: Option<Url>,
}

/// Where a navigation ended.
enum End {
    /// A response that is not a redirect.
    Page(Page),
    /// A redirect to something that is not `http://` (recorded, not followed).
    Away,
}

struct Page {
    url: Url,
    status: u16,
    body: String,
}

impl Agent {
    /// A browser with an empty cookie jar.
    pub fn new() -> Agent {
        Agent::default()
    }

    /// [`sign_in`] with this agent's cookies.
    ///
    /// # Errors
    ///
    /// As [`sign_in`].
    pub fn sign_in(&mut self, authorization_url: &str, choice: Choice) -> io::Result<Vec<Hop>> {
        let deadline = Instant::now() + TIMEOUT;
        let start = Url::split(authorization_url)?;
        let provider = start.origin();
        let mut hops = Vec::new();
        let mut next = Request {
            method: "GET",
            url: start,
            body: Vec::new(),
            referrer: None,
        };
        for _ in 0..MAX_PAGES {
            let page = match self.navigate(next, &mut hops, deadline)? {
                End::Away => return Ok(hops),
                End::Page(page) if page.url.origin() != provider => return Ok(hops),
                End::Page(page) => page,
            };
            next = self
                .act(&page, choice, LOGIN)
                .map_err(|why| unexpected(&why, &page, &hops))?;
        }
        Err(io::Error::other(format!(
            "more than {MAX_PAGES} provider pages: {hops:#?}"
        )))
    }

    /// What the user does on an interaction page, signing in as `login`.
    fn act(&self, page: &Page, choice: Choice, login: &str) -> Result<Request, String> {
        if page.status != 200 {
            return Err(format!("status {}", page.status));
        }
        let forms = forms(&page.body);
        let form = forms
            .iter()
            .find(|form| !form.action.ends_with("/abort"))
            .ok_or("no form")?;
        let prompt = form.value("prompt").unwrap_or_default();
        let cancel = || -> Result<Request, String> {
            if let Some(form) = forms.iter().find(|form| form.action.ends_with("/abort")) {
                return form.submit(&page.url, |_, value| value.to_owned());
            }
            let href = links(&page.body)
                .into_iter()
                .find(|href| href.ends_with("/abort"))
                .ok_or("no cancel link")?;
            Ok(Request {
                method: "GET",
                url: page
                    .url
                    .resolve(&href)
                    .and_then(|url| Url::split(&url))
                    .map_err(|e| e.to_string())?,
                body: Vec::new(),
                referrer: Some(page.url.clone()),
            })
        };
        match (prompt, choice) {
            ("login", _) => {
                if form.value("login").is_none() || form.value("password").is_none() {
                    return Err("a login form without login and password inputs".into());
                }
                form.submit(&page.url, |name, value| match name {
                    "login" => login.to_owned(),
                    "password" => PASSWORD.to_owned(),
                    _ => value.to_owned(),
                })
            }
            ("consent", Choice::Approve) => form.submit(&page.url, |_, value| value.to_owned()),
            ("consent", Choice::Deny) => cancel(),
            (other, _) => Err(format!("a form for prompt {other:?}")),
        }
    }

    /// [`device`] with this agent's cookies: with the provider's session from an earlier
    /// sign-in, the login page is skipped and the tokens are for that earlier login, not
    /// `user`.
    ///
    /// # Errors
    ///
    /// As [`device`].
    pub fn device(
        &mut self,
        verification_uri: &str,
        user_code: &str,
        user: &str,
        choice: DeviceChoice,
    ) -> io::Result<Vec<Hop>> {
        let deadline = Instant::now() + TIMEOUT;
        let start = Url::split(verification_uri)?;
        if normalize_user_code(user_code).is_empty() {
            return Err(invalid(format!("no user code in {user_code:?}")));
        }
        if user.trim().is_empty() {
            return Err(invalid("an empty login"));
        }
        let provider = start.origin();
        let mut hops = Vec::new();
        let mut next = Request {
            method: "GET",
            url: start,
            body: Vec::new(),
            referrer: None,
        };
        let mut entered = false;
        for _ in 0..MAX_DEVICE_PAGES {
            let page = match self.navigate(next, &mut hops, deadline)? {
                End::Page(page) if page.url.origin() == provider => page,
                End::Page(_) | End::Away => {
                    return Err(io::Error::other(format!(
                        "the device login left the provider: {hops:#?}"
                    )));
                }
            };
            let step = self
                .device_step(&page, user_code, user, choice, &mut entered)
                .map_err(|why| unexpected(&why, &page, &hops))?;
            match step {
                Some(request) => next = request,
                None => return Ok(hops),
            }
        }
        Err(io::Error::other(format!(
            "more than {MAX_DEVICE_PAGES} provider pages: {hops:#?}"
        )))
    }

    /// What the user does on a page of the device flow: the next request, or `None` once
    /// the flow has ended as `choice` wants. `entered` tells whether the code has been
    /// submitted (by the user or by the page).
    fn device_step(
        &self,
        page: &Page,
        user_code: &str,
        user: &str,
        choice: DeviceChoice,
        entered: &mut bool,
    ) -> Result<Option<Request>, String> {
        if page.status != 200 {
            return Err(format!("status {}", page.status));
        }
        let forms = forms(&page.body);
        if forms.is_empty() {
            return match (title(&page.body).as_deref(), choice) {
                (Some("Sign-in Success"), DeviceChoice::Approve) => Ok(None),
                (Some("Sign-in Success"), _) => Err("approved, though the user denied".into()),
                _ => Err("a page without a form".into()),
            };
        }
        if let Some(form) = forms.iter().find(|form| form.id == "op.deviceInputForm") {
            if let Some(message) = red_message(&page.body) {
                let denied =
                    choice != DeviceChoice::Approve && *entered && message.contains("interrupted");
                return if denied {
                    Ok(None)
                } else {
                    Err(format!("the provider says {message:?}"))
                };
            }
            if *entered {
                return Err("asked for the code again".into());
            }
            if form.value("user_code").is_none() || form.value("xsrf").is_none() {
                return Err("a code form without user_code and xsrf inputs".into());
            }
            *entered = true;
            return form
                .submit(&page.url, |name, value| match name {
                    "user_code" => user_code.to_owned(),
                    _ => value.to_owned(),
                })
                .map(Some);
        }
        if let Some(form) = forms.iter().find(|form| form.id == "op.deviceConfirmForm") {
            let shown = between(&page.body, "<code>", "</code>")
                .map(|code| normalize_user_code(&decode_entities(code)))
                .unwrap_or_default();
            if shown != normalize_user_code(user_code) {
                return Err(format!(
                    "the confirmation page shows the code {shown:?}, not {user_code:?}"
                ));
            }
            *entered = true;
            if choice != DeviceChoice::Abort {
                return form
                    .submit(&page.url, |_, value| value.to_owned())
                    .map(Some);
            }
            // The abort button submits the form with its own name and value.
            let abort = buttons(&page.body)
                .into_iter()
                .find(|button| {
                    attribute(button, "name") == Some("abort")
                        && attribute(button, "form") == Some(form.id.as_str())
                })
                .ok_or("no abort button")?;
            let mut with_abort = form.clone();
            with_abort.fields.push((
                "abort".to_owned(),
                attribute(&abort, "value").unwrap_or_default().to_owned(),
            ));
            return with_abort
                .submit(&page.url, |_, value| value.to_owned())
                .map(Some);
        }
        // `verification_uri_complete`'s page: a form of hidden inputs its script submits.
        let posted_by_script = match forms.as_slice() {
            [form] if form.value("xsrf").is_some() && form.value("user_code").is_some() => {
                Some(form)
            }
            _ => None,
        };
        if let Some(form) = posted_by_script.filter(|_| !*entered) {
            *entered = true;
            return form
                .submit(&page.url, |_, value| value.to_owned())
                .map(Some);
        }
        let interaction = match choice {
            DeviceChoice::CancelConsent => Choice::Deny,
            DeviceChoice::Approve | DeviceChoice::Abort => Choice::Approve,
        };
        self.act(page, interaction, user).map(Some)
    }

    /// Makes `request` and follows redirects, recording every hop.
    fn navigate(
        &mut self,
        mut request: Request,
        hops: &mut Vec<Hop>,
        deadline: Instant,
    ) -> io::Result<End> {
        loop {
            if hops.len() >= MAX_HOPS {
                return Err(io::Error::other(format!(
                    "more than {MAX_HOPS} requests: {hops:#?}"
                )));
            }
            let response = self.exchange(&request, deadline).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "{} {}: {error}\nhops before it: {hops:#?}",
                        request.method, request.url.text
                    ),
                )
            })?;
            let (status, headers, body) = response;
            let location = match status {
                301 | 302 | 303 | 307 | 308 => header(&headers, "location")
                    .map(|location| request.url.resolve(location))
                    .transpose()?,
                _ => None,
            };
            hops.push(Hop {
                method: request.method,
                url: request.url.text.clone(),
                status,
                location: location.clone(),
            });
            let Some(location) = location else {
                return Ok(End::Page(Page {
                    url: request.url,
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }));
            };
            let Ok(next) = Url::split(&location) else {
                return Ok(End::Away);
            };
            // 307 and 308 repeat the request; the others turn it into a GET.
            let (method, body) = match status {
                307 | 308 => (request.method, std::mem::take(&mut request.body)),
                _ => ("GET", Vec::new()),
            };
            request = Request {
                method,
                url: next,
                body,
                referrer: Some(request.url),
            };
        }
    }

    /// One request, sent with [`latchkey_devidp::agent`] once the deadline is checked;
    /// stores the cookies it sets.
    fn exchange(&mut self, request: &Request, deadline: Instant) -> io::Result<Response> {
        remaining(deadline)?;
        let url = &request.url;
        let site = match &request.referrer {
            None => "none",
            Some(from) if from.origin() == url.origin() => "same-origin",
            Some(from) if from.host == url.host => "same-site",
            Some(_) => "cross-site",
        };
        let mut headers = vec![
            ("User-Agent", USER_AGENT.to_owned()),
            ("Accept", ACCEPT.to_owned()),
            ("Accept-Language", "en-US,en;q=0.9".to_owned()),
            ("Upgrade-Insecure-Requests", "1".to_owned()),
            ("Sec-Fetch-Site", site.to_owned()),
            ("Sec-Fetch-Mode", "navigate".to_owned()),
            ("Sec-Fetch-User", "?1".to_owned()),
            ("Sec-Fetch-Dest", "document".to_owned()),
        ];
        if let Some(cookies) = self.jar.header(&url.host, url.path()) {
            headers.push(("Cookie", cookies));
        }
        if request.method == "POST" {
            let origin = request.referrer.as_ref().unwrap_or(url).origin();
            headers.push(("Origin", origin));
            headers.push((
                "Content-Type",
                "application/x-www-form-urlencoded".to_owned(),
            ));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let response = match request.method {
            "POST" => agent::post(&url.text, &headers, &request.body)?,
            _ => agent::get(&url.text, &headers)?,
        };
        let now = SystemTime::now();
        for (name, value) in &response.1 {
            if name.eq_ignore_ascii_case("set-cookie") {
                self.jar.set(&url.host, url.path(), value, now);
            }
        }
        Ok(response)
    }
}

fn unexpected(why: &str, page: &Page, hops: &[Hop]) -> io::Error {
    io::Error::other(format!(
        "unexpected provider page ({why}) at {}, status {}: {:?}\nhops: {hops:#?}",
        page.url.text,
        page.status,
        text_of(&page.body)
    ))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// An error once `deadline` has passed.
fn remaining(deadline: Instant) -> io::Result<()> {
    if deadline <= Instant::now() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the sign-in took longer than {TIMEOUT:?}"),
        ));
    }
    Ok(())
}

/// The first `name` field of `headers`, trimmed.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

// ----- URLs -----

/// An `http://` URL split into what the cookie jar and `Sec-Fetch-Site` need; whether it
/// is loopback is checked by [`latchkey_devidp::agent`] when it is requested.
#[derive(Clone, Debug)]
struct Url {
    /// The URL as given, without a fragment.
    text: String,
    /// `host[:port]`, lowercase.
    authority: String,
    /// Lowercase, IPv6 without brackets.
    host: String,
    /// The path without the query, at least `/`.
    path: String,
}

impl Url {
    /// Splits an `http://` URL; any other scheme is an error.
    fn split(url: &str) -> io::Result<Url> {
        let text = url.split('#').next().unwrap_or_default();
        let rest = text
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &text[7..])
            .ok_or_else(|| invalid(format!("not an http:// URL: {url:?}")))?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let authority = authority.to_ascii_lowercase();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        let path = match target.split('?').next().unwrap_or_default() {
            "" => "/",
            path => path,
        };
        Ok(Url {
            text: text.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            authority,
        })
    }

    /// `http://host:port`, for comparing origins.
    fn origin(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The path without the query.
    fn path(&self) -> &str {
        &self.path
    }

    /// Resolves a `Location` or `action` against this URL, with
    /// [`latchkey_devidp::agent::resolve`].
    fn resolve(&self, reference: &str) -> io::Result<String> {
        agent::resolve(&self.text, reference)
    }
}

// ----- cookies (RFC 6265, what these tests need) -----

#[derive(Debug, Default)]
struct Jar {
    /// In creation order.
    cookies: Vec<Cookie>,
}

#[derive(Debug)]
struct Cookie {
    host: String,
    name: String,
    value: String,
    path: String,
}

impl Jar {
    /// Stores (or, when expired, deletes) the cookie a `Set-Cookie` value sets for a
    /// response to `host` and `request_path`.
    fn set(&mut self, host: &str, request_path: &str, set_cookie: &str, now: SystemTime) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return;
        }
        let mut path = None;
        let mut max_age: Option<i64> = None;
        let mut expires = None;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            let (key, val) = (key.trim(), val.trim());
            if key.eq_ignore_ascii_case("path") && val.starts_with('/') {
                path = Some(val.to_owned());
            } else if key.eq_ignore_ascii_case("max-age") {
                max_age = val.parse().ok();
            } else if key.eq_ignore_ascii_case("expires") {
                expires = http_date(val);
            }
        }
        let path = path.unwrap_or_else(|| default_path(request_path));
        let expired = match (max_age, expires) {
            (Some(age), _) => age <= 0,
            (None, Some(at)) => at <= now,
            (None, None) => false,
        };
        self.cookies
            .retain(|c| !(c.host == host && c.name == name && c.path == path));
        if !expired {
            self.cookies.push(Cookie {
                host: host.to_owned(),
                name: name.to_owned(),
                value: value.to_owned(),
                path,
            });
        }
    }

    /// The `Cookie` header for a request to `host` and `path`: longer paths first, then
    /// older cookies first.
    fn header(&self, host: &str, path: &str) -> Option<String> {
        let mut matching: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| c.host == host && path_matches(&c.path, path))
            .collect();
        // Stable: creation order among equal lengths.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        let pairs: Vec<String> = matching
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

/// RFC 6265 §5.1.4.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request_path[..i].to_owned(),
    }
}

/// RFC 6265 §5.1.4.
fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || request_path
            .strip_prefix(cookie_path)
            .is_some_and(|rest| cookie_path.ends_with('/') || rest.starts_with('/'))
}

/// An IMF-fixdate (`Thu, 01 Jan 1970 00:00:00 GMT`), the form `Expires` takes in practice.
fn http_date(value: &str) -> Option<SystemTime> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = fields.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|n| n.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3600 + m * 60 + s;
    Some(if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    })
}

// ----- HTML, minimally -----

/// A form: where it goes and the named inputs it holds, in order.
#[derive(Debug, Clone)]
struct Form {
    /// The `id` attribute, empty without one.
    id: String,
    action: String,
    method: String,
    fields: Vec<(String, String)>,
}

impl Form {
    fn value(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The request submitting the form from `page`, each field's value chosen by `fill`.
    fn submit(&self, page: &Url, fill: impl Fn(&str, &str) -> String) -> Result<Request, String> {
        let url = page
            .resolve(&self.action)
            .and_then(|url| Url::split(&url))
            .map_err(|e| e.to_string())?;
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(name, value)| {
                format!("{}={}", form_encode(name), form_encode(&fill(name, value)))
            })
            .collect();
        let body = body.join("&");
        if self.method.eq_ignore_ascii_case("post") {
            Ok(Request {
                method: "POST",
                url,
                body: body.into_bytes(),
                referrer: Some(page.clone()),
            })
        } else {
            let base = url.text.split('?').next().unwrap_or_default();
            Ok(Request {
                method: "GET",
                url: Url::split(&format!("{base}?{body}")).map_err(|e| e.to_string())?,
                body: Vec::new(),
                referrer: Some(page.clone()),
            })
        }
    }
}

/// Every `<form>` of `html` with its `<input>`s (buttons without names are ignored, as
/// oidc-provider's have none).
fn forms(html: &str) -> Vec<Form> {
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<form").map(|i| from + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let end = lower[tag_end..]
            .find("</form")
            .map_or(html.len(), |i| tag_end + i);
        let form_attributes = attributes(&html[start + 5..tag_end]);
        let inner = &html[tag_end + 1..end];
        let inner_lower = &lower[tag_end + 1..end];
        let mut fields = Vec::new();
        let mut at = 0;
        while let Some(input) = inner_lower[at..].find("<input").map(|i| at + i) {
            let close = inner_lower[input..]
                .find('>')
                .map_or(inner.len(), |i| input + i);
            let input_attributes = attributes(&inner[input + 6..close]);
            if let Some(name) = attribute(&input_attributes, "name") {
                let value = attribute(&input_attributes, "value").unwrap_or_default();
                fields.push((name.to_owned(), value.to_owned()));
            }
            at = close;
        }
        forms.push(Form {
            id: attribute(&form_attributes, "id")
                .unwrap_or_default()
                .to_owned(),
            action: attribute(&form_attributes, "action")
                .unwrap_or_default()
                .to_owned(),
            method: attribute(&form_attributes, "method")
                .unwrap_or("get")
                .to_owned(),
            fields,
        });
        from = end;
    }
    forms
}

/// The attributes of every `<button>` of `html`, in order (a button may belong to a form
/// it is not inside of, with `form="ID"`).
fn buttons(html: &str) -> Vec<Vec<(String, String)>> {
    let lower = html.to_ascii_lowercase();
    let mut buttons = Vec::new();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<button").map(|i| from + i) {
        let end = lower[start..].find('>').map_or(html.len(), |i| start + i);
        buttons.push(attributes(&html[start + 7..end]));
        from = end;
    }
    buttons
}

/// The text between the first `open` (compared ignoring ASCII case) and the next `close`.
fn between<'a>(html: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find(&open.to_ascii_lowercase())? + open.len();
    let end = lower[start..].find(&close.to_ascii_lowercase())? + start;
    html.get(start..end)
}

/// The page's `<title>`, trimmed.
fn title(html: &str) -> Option<String> {
    between(html, "<title>", "</title>").map(|title| decode_entities(title.trim()))
}

/// What oidc-provider's code input page says went wrong: its `<p class="red">`.
fn red_message(html: &str) -> Option<String> {
    between(html, "<p class=\"red\">", "</p>").map(text_of)
}

/// A user code as oidc-provider compares them: ASCII letters uppercased, everything but
/// letters, digits and `_` dropped (`qzhf fxmj` is `QZHF-FXMJ`).
fn normalize_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Every `<a href>` of `html`.
fn links(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut links = Vec::new();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<a ").map(|i| from + i) {
        let end = lower[start..].find('>').map_or(html.len(), |i| start + i);
        if let Some(href) = attribute(&attributes(&html[start + 2..end]), "href") {
            links.push(href.to_owned());
        }
        from = end;
    }
    links
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The attributes of a tag's inside (after its name): `name="v"`, `name='v'`, `name=v` or
/// a bare `name`, entity-decoded.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut attributes = Vec::new();
    let mut rest = tag.trim_start();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/' || c == '>')
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (raw, tail) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let close = body.find(quote).unwrap_or(body.len());
                    (&body[..close], body.get(close + 1..).unwrap_or_default())
                }
                _ => {
                    let close = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..close], &after[close..])
                }
            };
            value = decode_entities(raw);
            rest = tail.trim_start();
        } else if name.is_empty() {
            // A stray `/` or `>`.
            rest = rest.get(1..).unwrap_or_default().trim_start();
            continue;
        }
        if !name.is_empty() {
            attributes.push((name.to_ascii_lowercase(), value));
        }
    }
    attributes
}

fn decode_entities(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&i| i <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `application/x-www-form-urlencoded`, as browsers submit forms.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page's visible text, roughly, for error messages: tags, styles and scripts removed,
/// whitespace collapsed, at most 600 characters.
fn text_of(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut text = String::new();
    let mut at = 0;
    while at < html.len() {
        let rest = &lower[at..];
        let skip_to = if rest.starts_with("<style") {
            rest.find("</style>").map(|i| i + 8)
        } else if rest.starts_with("<script") {
            rest.find("</script>").map(|i| i + 9)
        } else if rest.starts_with('<') {
            rest.find('>').map(|i| i + 1)
        } else {
            None
        };
        match skip_to {
            Some(n) => {
                text.push(' ');
                at += n;
            }
            None if rest.starts_with('<') => break,
            None => {
                let next = rest.find('<').unwrap_or(rest.len());
                text.push_str(&html[at..at + next]);
                at += next;
            }
        }
    }
    let text = decode_entities(&text.split_whitespace().collect::<Vec<_>>().join(" "));
    text.chars().take(600).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN_PAGE: &str = r#"<div class="login-card"><h1>Sign-in</h1>
      <form autocomplete="off" action="http://127.0.0.1:46817/interaction/C6dj" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
  <input required type="password" name="password" placeholder="and password" >
  <button type="submit" class="login login-submit">Sign-in</button>
</form>      <div class="login-help">
        <a href="http://127.0.0.1:46817/interaction/C6dj/abort">[ Cancel ]</a></div>"#;

    #[test]
    fn reads_the_login_form_and_the_cancel_link() {
        let forms = forms(LOGIN_PAGE);
        assert_eq!(forms.len(), 1);
        assert_eq!(forms[0].action, "http://127.0.0.1:46817/interaction/C6dj");
        assert_eq!(forms[0].method, "post");
        assert_eq!(
            forms[0].fields,
            [
                ("prompt".to_owned(), "login".to_owned()),
                ("login".to_owned(), String::new()),
                ("password".to_owned(), String::new()),
            ]
        );
        assert_eq!(
            links(LOGIN_PAGE),
            ["http://127.0.0.1:46817/interaction/C6dj/abort"]
        );
        assert_eq!(text_of(LOGIN_PAGE), "Sign-in Sign-in [ Cancel ]");
    }

    const CONFIRM_PAGE: &str = r#"<title>Device Login Confirmation</title>
        <h1>Confirm Device</h1>
        <p><strong>public-client</strong> <code>QZHF-FXMJ</code></p>
        <form id="op.deviceConfirmForm" method="post" action="http://127.0.0.1:35379/device">
<input type="hidden" name="xsrf" value="21a7"/>
<input type="hidden" name="user_code" value="qzhf fxmj"/>
<input type="hidden" name="confirm" value="yes"/>
</form>
        <button autofocus type="submit" form="op.deviceConfirmForm">Continue</button>
        <div class="help">
          <button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">[ Abort ]</button>
        </div>"#;

    const CODE_PAGE: &str = r#"<title>Sign-in</title><h1>Sign-in</h1>
        <p class="red">The Sign-in request was interrupted</p>
        <form id="op.deviceInputForm" novalidate method="post" action="http://127.0.0.1:1/device">
  <input type="hidden" name="xsrf" value="0cd5"/>
  <input
    type="text" name="user_code" placeholder="Enter code" onfocus="this.select(); this.onfocus = undefined;" autofocus autocomplete="off"></input>
  </form>"#;

    #[test]
    fn reads_the_device_pages() {
        let confirm = forms(CONFIRM_PAGE);
        assert_eq!(confirm.len(), 1);
        assert_eq!(confirm[0].id, "op.deviceConfirmForm");
        assert_eq!(confirm[0].value("confirm"), Some("yes"));
        assert_eq!(
            between(CONFIRM_PAGE, "<CODE>", "</code>"),
            Some("QZHF-FXMJ")
        );
        assert_eq!(
            title(CONFIRM_PAGE).as_deref(),
            Some("Device Login Confirmation")
        );
        let pressable = buttons(CONFIRM_PAGE);
        assert_eq!(pressable.len(), 2);
        assert_eq!(attribute(&pressable[1], "name"), Some("abort"));
        assert_eq!(attribute(&pressable[1], "value"), Some("yes"));
        assert_eq!(
            attribute(&pressable[1], "form"),
            Some("op.deviceConfirmForm")
        );
        assert_eq!(red_message(CONFIRM_PAGE), None);

        let input = forms(CODE_PAGE);
        assert_eq!(input[0].id, "op.deviceInputForm");
        assert_eq!(
            input[0].fields,
            [
                ("xsrf".to_owned(), "0cd5".to_owned()),
                ("user_code".to_owned(), String::new()),
            ]
        );
        assert_eq!(
            red_message(CODE_PAGE).as_deref(),
            Some("The Sign-in request was interrupted")
        );
        assert_eq!(between("<code>", "<code>", "</code>"), None);
        assert_eq!(title("no title"), None);
    }

    #[test]
    fn normalizes_user_codes_as_the_provider_does() {
        assert_eq!(normalize_user_code("qzhf fxmj"), "QZHFFXMJ");
        assert_eq!(normalize_user_code(" QZHF-FXMJ\n"), "QZHFFXMJ");
        assert_eq!(normalize_user_code("ab_1é"), "AB_1");
        assert_eq!(normalize_user_code("--"), "");
    }

    #[test]
    fn decodes_attribute_values() {
        let attrs = attributes(r#" href='/a?b=1&amp;c=&#39;2&#x27;' disabled data-x=y/"#);
        assert_eq!(
            attrs,
            [
                ("href".to_owned(), "/a?b=1&c='2'".to_owned()),
                ("disabled".to_owned(), String::new()),
                ("data-x".to_owned(), "y/".to_owned()),
            ]
        );
    }

    #[test]
    fn cookies_honour_path_name_and_expiry() {
        let now = SystemTime::now();
        let mut jar = Jar::default();
        jar.set(
            "127.0.0.1",
            "/auth",
            "_i=1; path=/interaction/U; httponly",
            now,
        );
        jar.set(
            "127.0.0.1",
            "/auth",
            "_r=2; path=/auth/U; samesite=lax",
            now,
        );
        jar.set(
            "127.0.0.1",
            "/auth/U",
            "_s=3; path=/; expires=Tue, 08 Dec 2099 21:16:22 GMT",
            now,
        );
        assert_eq!(
            jar.header("127.0.0.1", "/interaction/U").as_deref(),
            Some("_i=1; _s=3")
        );
        assert_eq!(
            jar.header("127.0.0.1", "/interaction/U/abort").as_deref(),
            Some("_i=1; _s=3")
        );
        assert_eq!(
            jar.header("127.0.0.1", "/interaction/UX").as_deref(),
            Some("_s=3")
        );
        assert_eq!(
            jar.header("127.0.0.1", "/auth/U").as_deref(),
            Some("_r=2; _s=3")
        );
        assert_eq!(jar.header("[::1]", "/"), None);
        // The same name on another path is another cookie; a past date deletes.
        jar.set(
            "127.0.0.1",
            "/auth/U",
            "_r=; path=/auth/U; expires=Thu, 01 Jan 1970 00:00:00 GMT",
            now,
        );
        jar.set("127.0.0.1", "/auth/U", "_r=4; path=/auth/V", now);
        assert_eq!(jar.header("127.0.0.1", "/auth/U").as_deref(), Some("_s=3"));
        assert_eq!(
            jar.header("127.0.0.1", "/auth/V").as_deref(),
            Some("_r=4; _s=3")
        );
        jar.set("127.0.0.1", "/", "_s=; path=/; max-age=0", now);
        assert_eq!(jar.header("127.0.0.1", "/auth/V").as_deref(), Some("_r=4"));
        // Without a Path: the request path's directory.
        jar.set("127.0.0.1", "/a/b/c", "d=5", now);
        assert_eq!(jar.header("127.0.0.1", "/a/b/x").as_deref(), Some("d=5"));
        assert_eq!(jar.header("127.0.0.1", "/a/x"), None);
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            http_date("Tue, 24 Nov 2026 22:16:19 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_558_579))
        );
        assert_eq!(http_date("yesterday"), None);
    }

    #[test]
    fn splits_urls() {
        let url = Url::split("HTTP://[::1]:8?x=1#f").unwrap();
        assert_eq!(
            (
                url.text.as_str(),
                url.host.as_str(),
                url.path(),
                url.origin()
            ),
            (
                "HTTP://[::1]:8?x=1",
                "::1",
                "/",
                "http://[::1]:8".to_owned()
            )
        );
        let url = Url::split("http://LocalHost:9/auth/U?x=1").unwrap();
        assert_eq!((url.host.as_str(), url.path()), ("localhost", "/auth/U"));
        assert_eq!(url.resolve("V").unwrap(), "http://LocalHost:9/auth/V");
        assert!(Url::split("https://127.0.0.1/").is_err());
        assert!(Url::split("docker-desktop://x").is_err());
    }
}
