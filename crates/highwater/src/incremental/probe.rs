//! Reading only the cursor out of a JSON text: rows outside the range are dropped without
//! building them, so rows already loaded cost a scan, not a parse into a value tree.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The value of top-level `field` in the JSON object `json`; `None` when absent or not an object
/// (or malformed: the full parse reports that).
pub(crate) fn probe_field(json: &[u8], field: &str) -> Option<Value> {
    if let Some(value) = scan_top_level(json, field.as_bytes()) {
        return Some(value);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    ObjectProbe { field }.deserialize(&mut de).ok().flatten()
}

/// A byte scan for `"field":` at depth one, then a parse of just its value. Gives up (`None`,
/// so the serde path decides) on anything unusual: escapes in keys, a missing field.
fn scan_top_level(json: &[u8], field: &[u8]) -> Option<Value> {
    let start = value_start(json, field)?;
    let mut stream = serde_json::Deserializer::from_slice(&json[start..]).into_iter::<Value>();
    stream.next()?.ok()
}

/// The text of top-level `field` when it is a string without escapes, borrowed from `json`;
/// `None` otherwise (then [`probe_field`] reads it). Saves building a value for most cursors.
pub(crate) fn probe_plain_str<'a>(json: &'a [u8], field: &str) -> Option<&'a str> {
    let start = value_start(json, field.as_bytes())?;
    let rest = json[start..].strip_prefix(b"\"")?;
    let end = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
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
        assert_eq!(probe_plain_str(text, "ts"), Some("2024-01-01T00:00:00Z"));
        assert_eq!(probe_plain_str(text, "n"), None);
        assert_eq!(probe_plain_str(text, "missing"), None);
        assert_eq!(probe_plain_str(br#"{"ts": "a\"b"}"#, "ts"), None);
        assert_eq!(probe_plain_str(br#"{"ts": "unterminated"#, "ts"), None);
        assert_eq!(probe_plain_str(br#"{"ts": ""}"#, "ts"), Some(""));
    }
}
