//! dlt's typed JSON and the canonical JSON text dlt hashes.
//!
//! dlt stores values JSON has no type for (datetimes, dates, times, decimals, bytes, UUIDs) as
//! strings that start with a marker character from Unicode's private use area (`U+F026` …):
//! `"\u{f027}2024-01-03T00:00:00+00:00"` is a datetime. The state document keeps these strings
//! as they are, so a state read from dlt is written back with its types, and a dlt run after a
//! highwater run reads the same Python values it wrote.
//!
//! dlt hashes documents (state and schema version hashes) over `orjson.dumps(doc, sort_keys=True)`;
//! [`canonical`] writes exactly that text.

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use serde_json::Value;

/// The type a typed-JSON string carries (dlt's `custom_pua_encode` markers, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `Decimal`, as its decimal text.
    Decimal,
    /// `datetime`, as `isoformat()` (with an offset unless naive).
    DateTime,
    /// `date`, as `YYYY-MM-DD`.
    Date,
    /// `UUID`.
    Uuid,
    /// `HexBytes`, as hex.
    HexBytes,
    /// `bytes`, as base64.
    Bytes,
    /// `Wei` (a decimal).
    Wei,
    /// `time`, as `isoformat()`.
    Time,
}

const MARKERS: [Marker; 8] = [
    Marker::Decimal,
    Marker::DateTime,
    Marker::Date,
    Marker::Uuid,
    Marker::HexBytes,
    Marker::Bytes,
    Marker::Wei,
    Marker::Time,
];

/// The first marker character (dlt's `PUA_START`).
const PUA_START: u32 = 0xf026;

impl Marker {
    /// The marker character.
    pub fn char(self) -> char {
        let index = MARKERS.iter().position(|m| *m == self).unwrap_or(0) as u32;
        char::from_u32(PUA_START + index).unwrap_or('\u{f026}')
    }

    /// `text` with this marker in front.
    pub fn encode(self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        out.push(self.char());
        out.push_str(text);
        out
    }
}

/// The marker and the text of a typed-JSON string; `None` for a plain string (as dlt's decoder,
/// a lone marker with no text is plain).
pub fn decode(s: &str) -> Option<(Marker, &str)> {
    let mut chars = s.chars();
    let first = chars.next()? as u32;
    let index = first.checked_sub(PUA_START)? as usize;
    let marker = *MARKERS.get(index)?;
    let rest = chars.as_str();
    (!rest.is_empty()).then_some((marker, rest))
}

/// The text of a string with its typed-JSON marker removed (dlt's `custom_pua_remove`).
pub fn plain_text(s: &str) -> &str {
    decode(s).map_or(s, |(_, text)| text)
}

/// `value` with every typed-JSON string as its plain text (a datetime as its ISO text), for
/// people to read.
pub fn untyped(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(plain_text(s).to_string()),
        Value::Array(items) => Value::Array(items.iter().map(untyped).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), untyped(item)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A datetime as dlt's typed JSON holds it: `isoformat()` of a UTC datetime (`+00:00`), or of a
/// naive one (no offset) when `naive`.
pub fn datetime(t: &DateTime<Utc>, naive: bool) -> String {
    datetime_at(t, if naive { None } else { Some(0) })
}

/// A datetime as dlt's typed JSON holds it, at the offset (seconds east of UTC) it carried, or
/// naive (no offset) for `None`: Python's `isoformat()`.
pub fn datetime_at(t: &DateTime<Utc>, offset: Option<i32>) -> String {
    let Some(offset) = offset else {
        return Marker::DateTime.encode(&isoformat(&t.naive_utc()));
    };
    let local = t.naive_utc() + chrono::Duration::seconds(i64::from(offset));
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    let mut text = isoformat(&local);
    text.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60));
    if abs % 60 != 0 {
        text.push_str(&format!(":{:02}", abs % 60));
    }
    Marker::DateTime.encode(&text)
}

/// A date as dlt's typed JSON holds it.
pub fn date(d: &chrono::NaiveDate) -> String {
    Marker::Date.encode(&d.format("%Y-%m-%d").to_string())
}

/// Python's `datetime.isoformat()` without offset: microseconds only when not zero.
fn isoformat(t: &NaiveDateTime) -> String {
    let micros = t.nanosecond() / 1_000 % 1_000_000;
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// `value` as `orjson.dumps(value, option=OPT_SORT_KEYS)` writes it: compact, object keys
/// sorted, floats as Python's `repr` (`1e+16`), only `"`, `\` and control characters escaped.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    // serde_json writes floats as Python's repr does (`1e+16`, `1e-7`, `0.00001`), as orjson.
    out.extend_from_slice(n.to_string().as_bytes());
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// dlt's hash of a document: base64 (with padding) of sha3-256 over `content`.
pub fn sha3_b64(content: &[u8]) -> String {
    use base64::Engine;
    use sha3::{Digest, Sha3_256};
    base64::engine::general_purpose::STANDARD.encode(Sha3_256::digest(content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_text_is_orjsons() {
        // Expected texts from orjson.dumps(..., option=OPT_SORT_KEYS) (dlt 1.31.0's venv).
        let value: Value = serde_json::from_str(
            r#"{"b":1,"a":"\u0000\u001f\u007f\u2028\"\\/é","c":[1.0,1e16,1e-7,0.1,1.2345678901234568e17,1.5e300,-0.0,9223372036854775808,3.14159,1e15,0.00001,1e-6,5e-324]}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical(&value)).unwrap(),
            "{\"a\":\"\\u0000\\u001f\u{7f}\u{2028}\\\"\\\\/é\",\"b\":1,\"c\":[1.0,1e+16,1e-7,0.1,1.2345678901234568e+17,1.5e+300,-0.0,9223372036854775808,3.14159,1000000000000000.0,0.00001,1e-6,5e-324]}"
        );
    }

    #[test]
    fn typed_strings_round_trip() {
        let t = DateTime::parse_from_rfc3339("2024-01-03T10:00:00.25+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let text = datetime(&t, false);
        assert_eq!(text, "\u{f027}2024-01-03T08:00:00.250000+00:00");
        assert_eq!(
            decode(&text),
            Some((Marker::DateTime, "2024-01-03T08:00:00.250000+00:00"))
        );
        assert_eq!(
            datetime(&t.with_nanosecond(0).unwrap(), true),
            "\u{f027}2024-01-03T08:00:00"
        );
        assert_eq!(decode("plain"), None);
        assert_eq!(decode("\u{f026}"), None, "a lone marker is plain text");
        assert_eq!(decode("\u{f02e}x"), None, "past dlt's markers");
        assert_eq!(decode("\u{f026}1.5"), Some((Marker::Decimal, "1.5")));
        assert_eq!(Marker::Time.char(), '\u{f02d}');
        assert_eq!(plain_text("\u{f028}2024-01-01"), "2024-01-01");
        assert_eq!(
            untyped(&json!({"a": ["\u{f026}1.5", {"b": "\u{f027}2024-01-01T00:00:00"}], "c": 1})),
            json!({"a": ["1.5", {"b": "2024-01-01T00:00:00"}], "c": 1})
        );
        assert_eq!(
            json!(date(&chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap())),
            json!("\u{f028}2024-01-01")
        );
    }
}
