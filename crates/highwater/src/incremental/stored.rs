//! How an incremental's values and boundary hashes are stored in the state, in dlt's formats,
//! so that dlt and highwater continue each other's incrementals.
//!
//! - A cursor value is stored as the row held it: the text of a string cursor as it was (dlt
//!   compares string cursors as text, so a value rendered another way would move its range), a
//!   number as a number. A state whose last value dlt stored as a typed datetime, date or decimal
//!   (see [`crate::typed_json`]) gets its new last value in the same type, with the row's own
//!   offset as dlt's `isoformat()` writes it.
//! - A boundary hash is dlt 1.31's: 12 characters of shake_128 over the key's JSON. A state
//!   written before dlt 1.29 holds 20-character hashes; they are matched in their own format,
//!   and hashes added next to them take it too, until a new last value starts the set afresh.
//! - dlt hashes a one-column key given as a string (`primary_key="id"`) as the value and one
//!   given as a list (`["id"]`) as a one-element list; both forms are checked and stored, so
//!   either dlt resource dedups against highwater's boundary set.

use std::borrow::Cow;

use serde_json::Value;

use super::{CursorKind, CursorValue};
use crate::hash::shake128_b64;
use crate::timeparse;
use crate::typed_json::{self, Marker};

/// Characters of a boundary hash written before dlt 1.29 (a 15-byte digest).
const LEGACY_HASH_LEN: usize = 20;

/// How a state holds its cursor values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredForm {
    /// As the rows hold them: strings and numbers.
    Plain,
    /// dlt's typed JSON: a datetime (naive when `naive`), a date or a decimal.
    Typed { marker: Marker, naive: bool },
}

impl StoredForm {
    /// The form of a stored last value.
    pub(crate) fn of(value: Option<&Value>) -> StoredForm {
        let Some(Value::String(text)) = value else {
            return StoredForm::Plain;
        };
        match typed_json::decode(text) {
            Some((
                marker @ (Marker::DateTime | Marker::Date | Marker::Decimal | Marker::Wei),
                text,
            )) => StoredForm::Typed {
                marker,
                naive: marker == Marker::DateTime && timeparse::offset_seconds(text).is_none(),
            },
            _ => StoredForm::Plain,
        }
    }

    /// `value` (the newest row's, whose string text was `text`) as this form stores it.
    pub(crate) fn render(self, value: &CursorValue, text: Option<&str>) -> Value {
        match self {
            StoredForm::Plain => match text {
                Some(text) => Value::String(text.to_string()),
                None => value.to_json(),
            },
            StoredForm::Typed { marker, naive } => match (marker, value) {
                (Marker::DateTime, CursorValue::Timestamp(t)) => {
                    let offset = if naive {
                        None
                    } else {
                        Some(text.and_then(timeparse::offset_seconds).unwrap_or(0))
                    };
                    Value::String(typed_json::datetime_at(t, offset))
                }
                (Marker::Date, CursorValue::Date(d)) => Value::String(typed_json::date(d)),
                (Marker::Decimal | Marker::Wei, CursorValue::Int(_) | CursorValue::Float(_)) => {
                    let digits = match text {
                        Some(text) => text.to_string(),
                        None => value.to_json().to_string(),
                    };
                    Value::String(marker.encode(&digits))
                }
                // A value of another kind than the stored one: as the row held it.
                _ => StoredForm::Plain.render(value, text),
            },
        }
    }
}

/// `value` without its typed-JSON marker (a plain string for a typed one), to be parsed or
/// shown as text.
pub(crate) fn untyped(value: &Value) -> Cow<'_, Value> {
    match value {
        Value::String(text) => match typed_json::decode(text) {
            Some((_, plain)) => Cow::Owned(Value::String(plain.to_string())),
            None => Cow::Borrowed(value),
        },
        other => Cow::Borrowed(other),
    }
}

/// The kind of a stored value: a typed decimal is a number, a typed date a date.
pub(crate) fn kind_of(value: &Value) -> Option<CursorKind> {
    if let Value::String(text) = value {
        match typed_json::decode(text) {
            Some((Marker::Decimal | Marker::Wei, _)) => return Some(CursorKind::Number),
            Some((Marker::Date, _)) => return Some(CursorKind::Date),
            Some((Marker::DateTime, _)) => return Some(CursorKind::Timestamp),
            _ => {}
        }
    }
    CursorKind::infer(&untyped(value))
}

/// Whether a stored boundary set was written before dlt 1.29.
pub(crate) fn is_legacy<'a>(hashes: impl IntoIterator<Item = &'a String>) -> bool {
    hashes.into_iter().any(|h| h.len() == LEGACY_HASH_LEN)
}

/// dlt's boundary hash of a key's canonical JSON text (`digest_dedup_value`).
pub(crate) fn key_hash(key: &str, legacy: bool) -> String {
    shake128_b64(key.as_bytes(), if legacy { 15 } else { 9 })
}

/// The texts a row's boundary hash is taken over: a one-column key as a value and as a list.
pub(crate) fn key_forms(key: &str, one_column: bool) -> impl Iterator<Item = Cow<'_, str>> {
    let list = one_column.then(|| Cow::Owned(format!("[{key}]")));
    std::iter::once(Cow::Borrowed(key)).chain(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hashes_are_dlts() {
        // dlt 1.31.0: digest_dedup_value(6), digest_dedup_value([6]).
        assert_eq!(key_hash("6", false), "Idkwk/6E20TE");
        assert_eq!(key_hash("[6]", false), "CVTLOf50nwka");
        let forms: Vec<_> = key_forms("6", true).collect();
        assert_eq!(forms, ["6", "[6]"]);
        assert_eq!(key_forms("[1,\"a\"]", false).count(), 1);
        assert!(is_legacy(&["a".repeat(20)]));
        assert!(!is_legacy(&["a".repeat(12)]));
        assert_eq!(key_hash("1", true).len(), 20);
    }

    #[test]
    fn boundary_hashes_match_dlts_recorded_ones() {
        // dlt 1.31.0's digest_dedup_value(key) and digest_dedup_value(key, legacy=True).
        let fixture: Value = serde_json::from_str(include_str!(
            "../../../../tests/dlt_fixtures/takeover/typed_json.json"
        ))
        .unwrap();
        let cases = fixture["dedup_hashes"].as_array().unwrap();
        assert!(cases.len() >= 9);
        for case in cases {
            let key = String::from_utf8(typed_json::canonical(&case["key"])).unwrap();
            assert_eq!(key_hash(&key, false), case["hash"], "{key}");
            assert_eq!(key_hash(&key, true), case["legacy_hash"], "{key}");
        }
    }

    #[test]
    fn typed_values_keep_their_type_and_offset() {
        let stored = json!("\u{f027}2024-01-02T03:30:00.250000-05:00");
        let form = StoredForm::of(Some(&stored));
        assert_eq!(
            form,
            StoredForm::Typed {
                marker: Marker::DateTime,
                naive: false
            }
        );
        let text = "2024-01-03T00:00:00-01:00";
        let value = CursorValue::parse(&json!(text), CursorKind::Timestamp).unwrap();
        assert_eq!(
            form.render(&value, Some(text)),
            json!("\u{f027}2024-01-03T00:00:00-01:00")
        );
        assert_eq!(
            form.render(&value, None),
            json!("\u{f027}2024-01-03T01:00:00+00:00")
        );
        let naive = StoredForm::of(Some(&json!("\u{f027}2024-01-01T12:00:00")));
        assert_eq!(
            naive.render(&value, Some(text)),
            json!("\u{f027}2024-01-03T01:00:00")
        );
        let date = StoredForm::of(Some(&json!("\u{f028}2024-01-02")));
        let day = CursorValue::parse(&json!("2024-01-03"), CursorKind::Date).unwrap();
        assert_eq!(
            date.render(&day, Some("2024-01-03")),
            json!("\u{f028}2024-01-03")
        );
        assert_eq!(
            StoredForm::Plain.render(&value, Some(text)),
            json!(text),
            "a string cursor is stored as the row wrote it"
        );
        assert_eq!(kind_of(&json!("\u{f026}12.5")), Some(CursorKind::Number));
        assert_eq!(kind_of(&stored), Some(CursorKind::Timestamp));
        assert_eq!(
            untyped(&json!("\u{f028}2024-01-02")).as_ref(),
            &json!("2024-01-02")
        );
    }
}
