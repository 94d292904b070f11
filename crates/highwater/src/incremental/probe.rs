//! Reading only the cursor out of a JSON text: rows outside the range are dropped without
//! building them, so rows already loaded cost a scan, not a parse into a value tree.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// A top-level field read from JSON text.
#[derive(Debug, PartialEq)]
pub(crate) enum Probed<'a> {
    /// The bytes of a string without escapes, borrowed from the text (most cursors): no value
    /// is built, and the bytes are checked to be UTF-8 only where they are read as text.
    Plain(&'a [u8]),
    /// Anything else, parsed.
    Value(Value),
}

impl Probed<'_> {
    /// The field as a value; `None` for bytes that are not UTF-8 (the full parse reports them).
    pub(crate) fn into_value(self) -> Option<Value> {
        match self {
            Probed::Plain(text) => std::str::from_utf8(text)
                .ok()
                .map(|text| Value::String(text.to_string())),
            Probed::Value(value) => Some(value),
        }
    }
}

/// Top-level `field` of the JSON object `json`, from one scan; `None` when absent or not an
/// object (or malformed: the full parse reports that).
pub(crate) fn probe<'a>(json: &'a [u8], field: &str) -> Option<Probed<'a>> {
    // A byte scan for `"field":` at depth one, then a look at just its value. Anything unusual
    // (escapes in keys, a missing field) is left to the serde path.
    if let Some(start) = value_start(json, field.as_bytes()) {
        if let Some(text) = plain_str(&json[start..]) {
            return Some(Probed::Plain(text));
        }
        let mut stream = serde_json::Deserializer::from_slice(&json[start..]).into_iter::<Value>();
        if let Some(Ok(value)) = stream.next() {
            return Some(Probed::Value(value));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    ObjectProbe { field }
        .deserialize(&mut de)
        .ok()
        .flatten()
        .map(Probed::Value)
}

/// [`probe`] as a value.
pub(crate) fn probe_field(json: &[u8], field: &str) -> Option<Value> {
    probe(json, field).and_then(Probed::into_value)
}

/// The bytes of the string at the start of `text` when it has no escapes, borrowed.
fn plain_str(text: &[u8]) -> Option<&[u8]> {
    let rest = text.strip_prefix(b"\"")?;
    let end = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if rest[end] != b'"' {
        return None;
    }
    Some(&rest[..end])
}

/// Where the value of `"field":` at depth one starts (after blanks); `None` on anything
/// unusual: escapes in keys, a missing field, malformed text.
fn value_start(json: &[u8], field: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    let n = json.len();
    while i < n {
        match json[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                while j < n && json[j] != b'"' {
                    if json[j] == b'\\' {
                        escaped = true;
                        j += 1;
                    }
                    j += 1;
                }
                if j >= n {
                    return None;
                }
                if depth == 1 && !escaped && &json[start..j] == field {
                    let mut k = j + 1;
                    while k < n && json[k].is_ascii_whitespace() {
                        k += 1;
                    }
                    if k < n && json[k] == b':' {
                        k += 1;
                        while k < n && json[k].is_ascii_whitespace() {
                            k += 1;
                        }
                        return Some(k);
                    }
                }
                i = j + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

struct ObjectProbe<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for ObjectProbe<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectProbe<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_field) = map.next_key_seed(KeyIs { field: self.field })? {
            if is_field && found.is_none() {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a key with the field without allocating.
struct KeyIs<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_only_the_field() {
        let text =
            br#"{"a": {"created_at": 1}, "created_at": "2024-01-01T00:00:00Z", "b": [1, 2]}"#;
        assert_eq!(
            probe_field(text, "created_at"),
            Some(json!("2024-01-01T00:00:00Z"))
        );
        assert_eq!(probe_field(text, "missing"), None);
        assert_eq!(probe_field(b"[1, 2]", "a"), None);
        assert_eq!(probe_field(b"{\"a\": ", "a"), None);
        let tricky = br#"{"s": "x\"created_at\": 5", "created_at": 7}"#;
        assert_eq!(probe_field(tricky, "created_at"), Some(json!(7)));
    }

    #[test]
    fn plain_strings_are_borrowed_and_anything_else_is_left_to_the_parse() {
        let text = br#"{"a": {"ts": "inner"}, "ts" :  "2024-01-01T00:00:00Z", "n": 5}"#;
        assert_eq!(
            probe(text, "ts"),
            Some(Probed::Plain(b"2024-01-01T00:00:00Z"))
        );
        assert_eq!(probe(text, "n"), Some(Probed::Value(json!(5))));
        assert_eq!(probe(text, "missing"), None);
        assert_eq!(
            probe(br#"{"ts": "a\"b"}"#, "ts"),
            Some(Probed::Value(json!("a\"b")))
        );
        assert_eq!(probe(br#"{"ts": "unterminated"#, "ts"), None);
        assert_eq!(probe(br#"{"ts": ""}"#, "ts"), Some(Probed::Plain(b"")));
    }
}
