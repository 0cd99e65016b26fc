//! Every response the browser-facing port can send, rendered once when the engine is built.
//!
//! Pages are static per outcome (S29): no request value is ever reflected, nothing is loaded
//! from elsewhere, and every response carries the same protective headers (S28) and
//! `Connection: close` (S26).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::callback::Rejection;
use crate::config::Landing;

const STYLE: &str = "body{font:16px system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;color:#222}h1{font-size:1.4em}";

/// Why a request was answered with something other than a flow outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400: unparseable request, bad target, a body, missing or repeated `Host`.
    BadRequest,
    /// 403: Fetch-Metadata says this is not a top-level navigation (S23).
    NotNavigation,
    /// 404: any path but the callback's (S24).
    NotFound,
    /// 405: any method but GET (S23, S24).
    MethodNotAllowed,
    /// 421: a `Host` that is not ours (S22).
    MisdirectedHost,
    /// 431: head over the limit or too many headers (S26).
    HeadTooLarge,
    /// The callback itself was turned away.
    Callback(Rejection),
}

/// One rendered response and its status, kept side by side so that nobody has to read the
/// status back out of the bytes.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub status: StatusCode,
    pub bytes: Bytes,
}

/// The rendered responses.
#[derive(Debug, Clone)]
pub(crate) struct Pages {
    success: Page,
    failure: Page,
    bad_request: Page,
    not_navigation: Page,
    not_found: Page,
    method_not_allowed: Page,
    misdirected: Page,
    too_large: Page,
    unknown_state: Page,
    no_flow: Page,
    used: Page,
    expired: Page,
    unavailable: Page,
}

impl Pages {
    pub fn new(on_success: &Landing, on_failure: &Landing) -> Pages {
        let csp = format!(
            "default-src 'none'; style-src 'sha256-{}'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            STANDARD.encode(Sha256::digest(STYLE.as_bytes()))
        );
        let page = |status, title: &str, text: &str| render(status, &csp, None, title, text);
        let landing = |landing: &Landing, title: &str, text: &str| match landing {
            Landing::Redirect(target) => render(StatusCode::SEE_OTHER, &csp, Some(target), "", ""),
            Landing::BuiltInPage => page(StatusCode::OK, title, text),
        };
        Pages {
            success: landing(
                on_success,
                "Signed in",
                "You are signed in. You can close this tab and return to the application.",
            ),
            failure: landing(
                on_failure,
                "Sign-in failed",
                "Sign-in did not complete. Return to the application to try again.",
            ),
            bad_request: page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "This request cannot be served.",
            ),
            not_navigation: page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "This address only accepts a browser's navigation.",
            ),
            not_found: page(StatusCode::NOT_FOUND, "Not found", "There is nothing here."),
            method_not_allowed: page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "Only GET is served here.",
            ),
            misdirected: page(
                StatusCode::MISDIRECTED_REQUEST,
                "Misdirected request",
                "This server does not answer for that host.",
            ),
            too_large: page(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request too large",
                "The request's headers are too large.",
            ),
            unknown_state: page(
                StatusCode::BAD_REQUEST,
                "Sign-in not recognised",
                "This sign-in response does not belong to a sign-in in progress.",
            ),
            no_flow: page(
                StatusCode::NOT_FOUND,
                "No sign-in in progress",
                "No sign-in is waiting for this response.",
            ),
            used: page(
                StatusCode::BAD_REQUEST,
                "Already used",
                "This sign-in response was already used. Return to the application.",
            ),
            expired: page(
                StatusCode::GONE,
                "Sign-in expired",
                "This sign-in has expired or was cancelled. Return to the application to start again.",
            ),
            unavailable: page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "This sign-in cannot be completed right now. Reload this page in a moment.",
            ),
        }
    }

    /// The end of a flow, as configured.
    pub fn landing(&self, success: bool) -> &Page {
        if success {
            &self.success
        } else {
            &self.failure
        }
    }

    pub fn refusal(&self, refusal: Refusal) -> &Page {
        match refusal {
            Refusal::BadRequest | Refusal::Callback(Rejection::Malformed | Rejection::BadState) => {
                &self.bad_request
            }
            Refusal::NotNavigation => &self.not_navigation,
            Refusal::NotFound => &self.not_found,
            Refusal::MethodNotAllowed => &self.method_not_allowed,
            Refusal::MisdirectedHost => &self.misdirected,
            Refusal::HeadTooLarge => &self.too_large,
            Refusal::Callback(Rejection::UnknownState) => &self.unknown_state,
            Refusal::Callback(Rejection::NoPendingFlow) => &self.no_flow,
            Refusal::Callback(Rejection::AlreadyUsed) => &self.used,
            Refusal::Callback(Rejection::Expired) => &self.expired,
            Refusal::Callback(Rejection::Unavailable) => &self.unavailable,
        }
    }
}

fn render(status: StatusCode, csp: &str, location: Option<&str>, title: &str, text: &str) -> Page {
    let (content_type, body) = match location {
        Some(_) => ("text/plain; charset=utf-8", String::new()),
        None => (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
            ),
        ),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(location) = location {
        head.push_str(&format!("Location: {location}\r\n"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str(&format!(
        "Cache-Control: no-store\r\n\
         Pragma: no-cache\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: {csp}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         X-Frame-Options: DENY\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    ));
    head.push_str(&body);
    Page {
        status,
        bytes: Bytes::from(head),
    }
}
