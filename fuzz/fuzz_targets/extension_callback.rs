//! The Docker extension's host binary (`examples/docker-extension/host`, `latchkey-callback`):
//! whatever bytes reach its loopback port, from a browser or anything else on the machine.
//!
//! Input: the first byte picks the redirect URI (`127.0.0.1`, `[::1]` or `localhost`, with a
//! short or a nested path), the next two the bound port; the rest is what the connection
//! sends.
//!
//! Checks:
//! - `parse_head` never panics, and fed the bytes as they arrive (every prefix) it waits
//!   (`Ok(None)`) until its answer, which is then the answer for the whole input: a head
//!   is decided once, whatever the segmentation;
//! - a `Callback` verdict only for `GET`, a `Host` naming exactly the endpoint (the
//!   DNS-rebinding defence, re-derived here independently), the configured path, and a
//!   query holding `state` and `code` or `error`, handed on byte for byte;
//! - every refusal's answer is a complete HTTP/1.1 response with its own status, an exact
//!   `Content-Length`, `Connection: close` and `Cache-Control: no-store`.
#![no_main]
#![forbid(unsafe_code)]

use latchkey_callback::http::{HeadError, Refusal, Verdict, judge, parse_head};
use latchkey_callback::redirect::{Endpoint, RedirectUri};
use libfuzzer_sys::fuzz_target;

const URIS: [&str; 6] = [
    "http://127.0.0.1/callback",
    "http://[::1]/callback",
    "http://localhost/callback",
    "http://127.0.0.1/oauth2/cb",
    "http://LocalHost/callback",
    "http://127.0.0.2/",
];

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let (port, bytes) = match rest {
        [high, low, bytes @ ..] => (u16::from_be_bytes([*high, *low]).max(1), bytes),
        _ => (8080, rest),
    };
    let uri = URIS[usize::from(pick) % URIS.len()];
    let endpoint = RedirectUri::parse(uri)
        .expect("the fixed redirect URIs are valid")
        .bound_to(port);

    let whole = parse_head(bytes);
    // As the bytes arrive: nothing is decided before the answer the whole input gives.
    let mut decided = None;
    for end in 0..=bytes.len() {
        match parse_head(&bytes[..end]) {
            Ok(None) => {}
            answer => {
                decided = Some(answer);
                break;
            }
        }
    }
    match decided {
        Some(answer) => assert_eq!(answer, whole, "a head decided differently when split"),
        None => assert_eq!(whole, Ok(None)),
    }

    let head = match whole {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(error) => {
            assert_response(&Refusal::for_head_error(error).response(), error_status(error));
            return;
        }
    };
    match judge(&head, &endpoint) {
        Verdict::Callback(query) => {
            assert_eq!(head.method, "GET");
            let host = head.host.expect("a callback names its host");
            assert!(names_endpoint(host, &endpoint), "{host:?} is not {endpoint}");
            assert_eq!(head.target, format!("{}{query}", endpoint.path));
            let names: Vec<Vec<u8>> = query[1..]
                .split('&')
                .map(|pair| decode(pair.split('=').next().unwrap_or(pair)))
                .collect();
            let named = |name: &str| names.iter().any(|n| n == name.as_bytes());
            assert!(named("state") && (named("code") || named("error")), "{query}");
        }
        Verdict::Refuse(refusal) => assert_response(&refusal.response(), refusal.status().0),
    }
});

/// `Host` names the endpoint: its host as configured (`localhost` in any case) and its port
/// (left out only for port 80).
fn names_endpoint(host: &str, endpoint: &Endpoint) -> bool {
    let shown = endpoint.to_string();
    let authority = shown
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("an endpoint shows as http://HOST:PORT/PATH");
    let bare = authority
        .strip_suffix(":80")
        .filter(|_| endpoint.port == 80);
    host.eq_ignore_ascii_case(authority) || bare.is_some_and(|bare| host.eq_ignore_ascii_case(bare))
}

/// `%XX` escapes and `+` decoded, written here again rather than taken from the program.
fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                at += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                at += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    decoded
}

fn error_status(error: HeadError) -> u16 {
    Refusal::for_head_error(error).status().0
}

/// A complete response with `status`, its exact length, and no caching or keep-alive.
fn assert_response(response: &[u8], status: u16) {
    let text = std::str::from_utf8(response).expect("responses are text");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    assert!(
        status_line.starts_with(&format!("HTTP/1.1 {status} ")),
        "{status_line}"
    );
    let headers: Vec<(String, &str)> = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("name: value");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(get("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(get("connection"), Some("close"));
    assert_eq!(get("cache-control"), Some("no-store"));
}
