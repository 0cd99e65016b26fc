//! Strict reading of the JSON objects in tokens and key sets.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON object whose member names are all distinct. A repeated name
/// is an error: two readers of the same token must never see different claims (a plain
/// `Map` silently keeps the last).
pub(crate) fn unique_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let object = de::Deserializer::deserialize_map(&mut deserializer, UniqueVisitor).ok()?;
    deserializer.end().ok()?;
    Some(object)
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object without repeated members")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            let value: Value = access.next_value()?;
            if object.insert(name, value).is_some() {
                return Err(de::Error::custom("repeated member"));
            }
        }
        Ok(object)
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch as a JSON number, fractions
/// allowed and rounded down. `None` for anything else, negative or not finite.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                // Saturates at u64::MAX, which is far beyond any real date.
                .map(|seconds| seconds as u64)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_members_and_trailing_bytes_are_refused() {
        assert!(unique_object(br#"{"a":1,"b":{"a":2}}"#).is_some());
        assert!(unique_object(br#"{"a":1,"a":1}"#).is_none());
        assert!(unique_object(br#"{"a":1}x"#).is_none());
        assert!(unique_object(br#"[1]"#).is_none());
        assert!(unique_object(b"").is_none());
    }

    #[test]
    fn numeric_dates() {
        let date = |json: &str| numeric_date(&serde_json::from_str(json).unwrap());
        assert_eq!(date("1767225600"), Some(1767225600));
        assert_eq!(date("1767225600.9"), Some(1767225600));
        assert_eq!(date("1e300"), Some(u64::MAX));
        for bad in ["-1", "-0.5", "\"1767225600\"", "null", "true"] {
            assert_eq!(date(bad), None, "{bad}");
        }
    }
}
