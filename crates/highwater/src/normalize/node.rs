//! A JSON tree that borrows its strings from the input line.
//!
//! Parsing items into `serde_json::Value` cost a fifth of a load: every key hashed into an
//! `IndexMap`, every key and string copied, and the whole tree freed again. A [`Node`] keeps
//! objects as vectors in document order and borrows every string without escapes, which is all
//! the normalizer needs: it walks each item once, in order.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// One JSON value; strings borrow from the parsed text where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in 64 signed bits.
    Int(i64),
    /// An integer above `i64::MAX` that fits in 64 unsigned bits.
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object's entries in document order; a repeated key keeps its first position and its
    /// last value, as `serde_json::Map` (and a Python dict) do.
    Object(Vec<Entry<'a>>),
}

/// An object entry: key and value.
pub type Entry<'a> = (Cow<'a, str>, Node<'a>);

/// Objects with more entries than this look repeated keys up in a hash map, not by a scan.
const LINEAR_KEY_SCAN: usize = 32;

impl<'a> Node<'a> {
    /// Parses one JSON document, nested up to [`crate::json::MAX_DEPTH`] levels.
    pub fn parse(json: &'a [u8]) -> serde_json::Result<Node<'a>> {
        crate::json::from_slice(json)
    }

    /// A tree over `value` that borrows its strings.
    pub fn from_value(value: &'a Value) -> Node<'a> {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Node::Int(i),
                (None, Some(u)) => Node::UInt(u),
                _ => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Node::Str(Cow::Borrowed(s)),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_value).collect()),
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// The same value as a `serde_json::Value` (copies everything; for the rare paths).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Node::Str(s) => Value::String(s.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// Compact JSON text, exactly as `serde_json::Value::to_string` writes the same value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Compact JSON text as dlt writes it to hash a row (orjson with `sort_keys`): the keys of
    /// every object sorted by code point. serde_json writes numbers and strings as orjson does.
    pub fn to_sorted_json(&self) -> String {
        serde_json::to_string(&SortedKeys(self)).unwrap_or_default()
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Int(i) => serializer.serialize_i64(*i),
            Node::UInt(u) => serializer.serialize_u64(*u),
            Node::Float(f) => serializer.serialize_f64(*f),
            Node::Str(s) => serializer.serialize_str(s),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

/// Serializes a node with the keys of every object in sorted order.
struct SortedKeys<'n, 'a>(&'n Node<'a>);

impl Serialize for SortedKeys<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&SortedKeys(item))?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut sorted: Vec<&Entry<'_>> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                let mut map = serializer.serialize_map(Some(sorted.len()))?;
                for (k, v) in sorted {
                    map.serialize_entry(k.as_ref(), &SortedKeys(v))?;
                }
                map.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Node<'de>, E> {
        Ok(Node::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Node<'de>, E> {
        Ok(i64::try_from(u).map_or(Node::UInt(u), Node::Int))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Node<'de>, E> {
        Ok(Node::Float(f))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        // Most objects have a few keys: one allocation instead of growing from 0 to 4 to 8.
        let mut entries: Vec<Entry<'de>> = Vec::with_capacity(8);
        let mut positions: Option<foldhash::HashMap<Cow<'de, str>, usize>> = None;
        while let Some(Key(key)) = map.next_key()? {
            let value: Node<'de> = map.next_value()?;
            let existing = match &positions {
                Some(index) => index.get(&key).copied(),
                None => entries.iter().position(|(k, _)| *k == key),
            };
            match existing {
                Some(i) => entries[i].1 = value,
                None => {
                    if let Some(index) = &mut positions {
                        index.insert(key.clone(), entries.len());
                    }
                    entries.push((key, value));
                    if positions.is_none() && entries.len() > LINEAR_KEY_SCAN {
                        let index = entries
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect();
                        positions = Some(index);
                    }
                }
            }
        }
        Ok(Node::Object(entries))
    }
}

/// An object key that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_json_is_the_text_orjson_writes() {
        // Each expected text is what dlt 1.31.0's `json.dumpb(..., sort_keys=True)` gives.
        let cases = [
            (
                r#"{"z":{"y":1,"x":[{"b":2,"a":1.5}]},"a":"é","n":null,"f":1e20,"t":true}"#,
                r#"{"a":"é","f":1e+20,"n":null,"t":true,"z":{"x":[{"a":1.5,"b":2}],"y":1}}"#,
            ),
            (
                r#"[1e15,1e16,1.5e16,1e-4,1e-5,1.234e-5,1e-6,2.5e-8,-0.0,100.0,0.30000000000000004]"#,
                r#"[1000000000000000.0,1e+16,1.5e+16,0.0001,0.00001,0.00001234,1e-6,2.5e-8,-0.0,100.0,0.30000000000000004]"#,
            ),
            (
                r#"["\u001f\u0000\n\t\"\\/","😀",12345678901234567890,-5]"#,
                r#"["\u001f\u0000\n\t\"\\/","😀",12345678901234567890,-5]"#,
            ),
        ];
        for (input, expected) in cases {
            let node = Node::parse(input.as_bytes()).unwrap();
            assert_eq!(node.to_sorted_json(), expected);
        }
    }

    #[test]
    fn matches_serde_json_values() {
        let text = br#"{"b":1,"a":{"x":[1,-2,3.5,18446744073709551615,1e300,-0.0]},"s":"t\"q","b":null,"n":true}"#;
        let value: Value = serde_json::from_slice(text).unwrap();
        let node = Node::parse(text).unwrap();
        assert_eq!(node.to_value(), value);
        assert_eq!(node.to_json(), value.to_string());
        assert_eq!(Node::from_value(&value), node);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let node = Node::parse(br#"{"key":"plain","esc":"a\nb"}"#).unwrap();
        let Node::Object(entries) = node else {
            panic!("not an object")
        };
        assert!(matches!(entries[0].0, Cow::Borrowed("key")));
        assert!(matches!(entries[0].1, Node::Str(Cow::Borrowed("plain"))));
        assert!(matches!(&entries[1].1, Node::Str(Cow::Owned(s)) if s == "a\nb"));
    }

    #[test]
    fn repeated_keys_keep_first_position_and_last_value_in_large_objects() {
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k3\":\"last\",\"k39\":0}");
        let value: Value = serde_json::from_str(&text).unwrap();
        let node = Node::parse(text.as_bytes()).unwrap();
        assert_eq!(node.to_value(), value);
        assert_eq!(node.to_json(), value.to_string());
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(Node::parse(b"{\"a\": }").is_err());
        assert!(Node::parse(b"{\"a\": 1} x").is_err());
        let invalid = Node::parse(b"{\"a\": \"\xff\"}").unwrap_err().to_string();
        assert!(invalid.contains("column"), "{invalid}");
    }
}
