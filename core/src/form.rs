//! `application/x-www-form-urlencoded`: the encoding of query strings, token request bodies
//! and some providers' token responses (WHATWG URL §5, RFC 6749 Appendix B).
//!
//! Decoding is strict: a `%` not followed by two hex digits, or bytes that are not UTF-8 once
//! decoded, are errors rather than being passed through, because a callback that cannot be
//! decoded exactly must be rejected, never guessed at (S25).

use std::borrow::Cow;
use std::fmt;

/// Why a form-encoded string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hexadecimal digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormError::BadEscape => "malformed percent-encoding",
            FormError::NotUtf8 => "percent-decoded bytes are not UTF-8",
        })
    }
}

impl std::error::Error for FormError {}

/// Splits `input` into decoded `(name, value)` pairs, in order, duplicates kept.
///
/// Empty segments (`a=1&&b=2`) are skipped; a segment without `=` has an empty value.
pub fn pairs(input: &str) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), FormError>> {
    input
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            Ok((decode(name)?, decode(value)?))
        })
}

/// Decodes one form-encoded component: `+` is a space, `%XX` a byte.
pub fn decode(input: &str) -> Result<Cow<'_, str>, FormError> {
    if memchr::memchr2(b'%', b'+', input.as_bytes()).is_none() {
        return Ok(Cow::Borrowed(input));
    }
    let mut bytes = Vec::with_capacity(input.len());
    let mut rest = input.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => match rest {
                [hi, lo, tail @ ..] => {
                    let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo)) else {
                        return Err(FormError::BadEscape);
                    };
                    bytes.push((hi << 4) | lo);
                    rest = tail;
                }
                _ => return Err(FormError::BadEscape),
            },
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Bytes that form encoding leaves as they are: ASCII alphanumerics and `*-._`.
const UNESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = matches!(
            byte as u8,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_'
        );
        byte += 1;
    }
    table
};

/// Appends `value` form-encoded: ASCII alphanumerics and `*-._` stay, a space becomes `+`,
/// every other byte of its UTF-8 becomes `%XX`.
pub fn encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        // A run of bytes that stay is copied whole. It starts and ends next to ASCII bytes,
        // so its bounds are character boundaries.
        let run = bytes[at..]
            .iter()
            .position(|&byte| !UNESCAPED[usize::from(byte)])
            .unwrap_or(bytes.len() - at);
        if run > 0 {
            out.push_str(&value[at..at + run]);
            at += run;
        }
        let Some(&byte) = bytes.get(at) else {
            break;
        };
        if byte == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        at += 1;
    }
}

/// `value` form-encoded.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_into(&mut out, value);
    out
}

/// Builds a form-encoded string pair by pair.
#[derive(Debug, Default)]
pub struct Serializer {
    out: String,
}

impl Serializer {
    /// Continues an existing form-encoded string: a query (possibly empty), or a URL that
    /// ends in one.
    pub fn continuing(existing: &str) -> Serializer {
        Serializer {
            out: existing.to_owned(),
        }
    }

    /// Continues `existing`, with room for `additional` more bytes before reallocating.
    pub fn continuing_with_room(existing: &str, additional: usize) -> Serializer {
        let mut out = String::with_capacity(existing.len() + additional);
        out.push_str(existing);
        Serializer { out }
    }

    /// Appends `name=value`, both encoded.
    pub fn append(&mut self, name: &str, value: &str) -> &mut Serializer {
        if !self.out.is_empty() {
            self.out.push('&');
        }
        encode_into(&mut self.out, name);
        self.out.push('=');
        encode_into(&mut self.out, value);
        self
    }

    /// Appends `name=value` where `value` is already form-encoded.
    pub fn append_encoded(&mut self, name: &str, value: &str) -> &mut Serializer {
        debug_assert!(decode(value).is_ok(), "{name} is not form-encoded");
        if !self.out.is_empty() {
            self.out.push('&');
        }
        encode_into(&mut self.out, name);
        self.out.push('=');
        self.out.push_str(value);
        self
    }

    /// The encoded string.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(input: &str) -> Vec<(String, String)> {
        pairs(input)
            .map(|pair| {
                let (name, value) = pair.expect("valid form input");
                (name.into_owned(), value.into_owned())
            })
            .collect()
    }

    #[test]
    fn decodes_plus_and_escapes_and_keeps_duplicates_in_order() {
        assert_eq!(
            decoded("a=1+2&b=%E2%9C%93&&a=x%3Dy&flag"),
            [
                ("a".into(), "1 2".into()),
                ("b".into(), "✓".into()),
                ("a".into(), "x=y".into()),
                ("flag".into(), String::new()),
            ]
        );
    }

    #[test]
    fn rejects_truncated_or_non_hex_escapes() {
        for bad in ["%", "%4", "%G1", "a%zz", "%%41"] {
            assert_eq!(decode(bad), Err(FormError::BadEscape), "{bad:?}");
        }
    }

    #[test]
    fn rejects_escapes_that_decode_to_invalid_utf8() {
        assert_eq!(decode("%FF"), Err(FormError::NotUtf8));
        assert_eq!(decode("%C3"), Err(FormError::NotUtf8));
    }

    #[test]
    fn decoding_without_escapes_borrows() {
        assert!(matches!(decode("plain"), Ok(Cow::Borrowed("plain"))));
    }

    #[test]
    fn encodes_everything_but_the_unreserved_set() {
        let mut out = String::new();
        encode_into(&mut out, "aaa/;& ~*-._é");
        assert_eq!(out, "aaa%2F%3B%26+%7E*-._%C3%A9");
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        let original = "s3cr3t+/:%&= ~!\u{1F511}";
        let mut encoded = String::new();
        encode_into(&mut encoded, original);
        assert_eq!(decode(&encoded).as_deref(), Ok(original));
    }

    #[test]
    fn serializer_continues_an_existing_query() {
        let mut query = Serializer::continuing("tenant=x");
        query.append("scope", "openid email");
        assert_eq!(query.finish(), "tenant=x&scope=openid+email");
        let mut fresh = Serializer::default();
        fresh.append("a", "b");
        assert_eq!(fresh.finish(), "a=b");
    }
}
