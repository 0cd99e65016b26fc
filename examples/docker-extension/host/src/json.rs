//! The lines written on standard output: one flat JSON object of string fields per line.
//!
//! The objects are so small that a serializer would be all weight; [`escape_into`] writes
//! a JSON string by hand and [`object`] puts the fields together.

/// One line of the output protocol, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// `{"listening":URI}`: the redirect URI the login must use.
    Listening(&'a str),
    /// `{"callback":QUERY}`: a redirect's query, `?` included, as received.
    Callback(&'a str),
    /// `{"error":KIND,"message":TEXT}`: why the program stops.
    Error {
        /// A word for programs: `port_in_use`, `cannot_listen`, `timeout`.
        kind: &'a str,
        /// Words for a person.
        message: &'a str,
    },
}

impl Line<'_> {
    /// The JSON text of the line, without the line break.
    pub fn to_json(&self) -> String {
        match self {
            Line::Listening(uri) => object(&[("listening", uri)]),
            Line::Callback(query) => object(&[("callback", query)]),
            Line::Error { kind, message } => object(&[("error", kind), ("message", message)]),
        }
    }
}

/// A JSON object of string fields, in the order given.
pub fn object(fields: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape_into(&mut out, name);
        out.push(':');
        escape_into(&mut out, value);
    }
    out.push('}');
    out
}

/// Appends `text` to `out` as a quoted JSON string (RFC 8259 §7).
///
/// Quotes, backslashes and every control character are escaped; the rest is copied as it
/// is, which JSON allows for all other characters.
pub fn escape_into(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, text);
        out
    }

    #[test]
    fn plain_text_is_only_quoted() {
        assert_eq!(escaped("?code=a%2Fb&state=x"), r#""?code=a%2Fb&state=x""#);
        assert_eq!(escaped(""), r#""""#);
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(escaped(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
    }

    #[test]
    fn non_ascii_is_kept() {
        assert_eq!(escaped("caf\u{e9}"), "\"caf\u{e9}\"");
    }

    #[test]
    fn lines_have_the_protocol_shape() {
        assert_eq!(
            Line::Listening("http://127.0.0.1:1/cb").to_json(),
            r#"{"listening":"http://127.0.0.1:1/cb"}"#
        );
        assert_eq!(
            Line::Callback("?code=1&state=2").to_json(),
            r#"{"callback":"?code=1&state=2"}"#
        );
        assert_eq!(
            Line::Error {
                kind: "timeout",
                message: "No \"sign-in\"."
            }
            .to_json(),
            r#"{"error":"timeout","message":"No \"sign-in\"."}"#
        );
    }
}
