//! Strict `application/x-www-form-urlencoded` decoding and the WHATWG serializer.
//!
//! Strict means: every pair has a `=`, no empty pairs (`a=1&&b=2`, a trailing `&`), no
//! repeated names (RFC 6749 §3.1, §3.2) but `resource` (RFC 8707 §2), no unencoded `=`
//! inside a value, no unencoded
//! space, control or non-ASCII byte, every `%` followed by two hex digits, and the result
//! must be UTF-8. A sloppy client encoder is caught here instead of in the field.

use std::fmt::Write as _;

/// Decoded parameters in their original order; names are unique, but for `resource`.
#[derive(Clone, Debug)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string or form body strictly; the error is a description.
    pub(crate) fn parse(input: &[u8]) -> Result<Params, &'static str> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if input.is_empty() {
            return Ok(Params(pairs));
        }
        for pair in input.split(|&b| b == b'&') {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => return Err("a parameter without '='"),
            };
            let name = decode(name)?;
            if name.is_empty() {
                return Err("a parameter with an empty name");
            }
            if name != "resource" && pairs.iter().any(|(n, _)| *n == name) {
                return Err("a repeated parameter");
            }
            pairs.push((name, decode(value)?));
        }
        Ok(Params(pairs))
    }

    /// The value of `name`; an empty value counts as absent (RFC 6749 §3.1).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`, in order (empty ones too).
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decodes one name or value (`+` is a space).
pub(crate) fn decode(raw: &[u8]) -> Result<String, &'static str> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => out.push(b' '),
            b'%' => match rest {
                [hi, lo, tail @ ..] => match (hex(*hi), hex(*lo)) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        rest = tail;
                    }
                    _ => return Err("a '%' not followed by two hex digits"),
                },
                _ => return Err("a '%' not followed by two hex digits"),
            },
            b'=' | b'&' => return Err("an unencoded '=' or '&' in a value"),
            0x21..=0x7e => out.push(b),
            _ => return Err("an unencoded space, control or non-ASCII byte"),
        }
    }
    String::from_utf8(out).map_err(|_| "a value that is not UTF-8")
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Encodes one name or value with the WHATWG `application/x-www-form-urlencoded`
/// serializer: `A-Z a-z 0-9 * - . _` stay, a space becomes `+`, everything else `%XX`.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Serializes pairs as `a=1&b=2`.
pub(crate) fn serialize(pairs: &[(&str, &str)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
        .collect();
    encoded.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let odd = "+/:%&= ~!é";
        let body = serialize(&[("a", odd), ("b", "")]);
        assert_eq!(body, "a=%2B%2F%3A%25%26%3D+%7E%21%C3%A9&b=");
        let params = Params::parse(body.as_bytes()).unwrap();
        assert_eq!(params.get("a"), Some(odd));
        assert_eq!(params.get("b"), None);
    }

    #[test]
    fn strictness() {
        for bad in [
            "a", "a=1&", "a=1&&b=2", "=1", "a=1&a=2", "a=b=c", "a=%2", "a=%zz", "a=%+1", "a=x y",
            "a=%FF", "a=\u{e9}",
        ] {
            assert!(Params::parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        let ok = Params::parse(b"a=~!*'()/:?&b=%7e").unwrap();
        assert_eq!(ok.get("a"), Some("~!*'()/:?"));
        assert_eq!(ok.get("b"), Some("~"));
    }
}
