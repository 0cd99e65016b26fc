//! Checks shared by the targets that see browser-facing responses.
#![allow(dead_code)]

use latchkey::Action;
use latchkey_tests::harness::Response;

/// Checks one `Respond`: the bytes parse as an HTTP/1.1 response whose status is the one
/// reported, with every header S28 requires and an exact `Content-Length`.
pub fn check_respond(action: &Action) {
    let Action::Respond { status, bytes, .. } = action else {
        return;
    };
    // Panics if the bytes are not a complete response or a header is repeated.
    let response = Response::parse(bytes);
    assert_eq!(
        response.status,
        status.as_u16(),
        "status field and bytes disagree"
    );
    let expect = |name: &str, value: Option<&str>| {
        let actual = response.header(name);
        match value {
            Some(value) => assert_eq!(actual, Some(value), "header {name}"),
            None => assert!(
                actual.is_some_and(|v| !v.is_empty()),
                "header {name} missing"
            ),
        }
    };
    expect("cache-control", Some("no-store"));
    expect("pragma", Some("no-cache"));
    expect("referrer-policy", Some("no-referrer"));
    expect("content-security-policy", None);
    expect("x-content-type-options", Some("nosniff"));
    expect("x-frame-options", Some("DENY"));
    expect("content-type", None);
    expect("connection", Some("close"));
    let length = response.body.len().to_string();
    expect("content-length", Some(length.as_str()));
}

/// `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `%XX` decoded wherever it appears and `+` as a space; anything else kept as is.
pub fn percent_decode_lossy(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A small, stable hash (FNV-1a) to derive split points from the input itself.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
