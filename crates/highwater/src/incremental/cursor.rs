//! Cursor values and their ordering: numbers by value, timestamps as instants, dates, text.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::schema::DataType;
use crate::timeparse::{parse_date, parse_timestamp, parse_timestamp_or_date};

/// The kind of a cursor; values of different kinds do not compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// Integers and floats, compared by value.
    Number,
    /// Text, compared byte-wise.
    Text,
    /// Calendar dates.
    Date,
    /// Instants (any offset or precision).
    Timestamp,
}

impl CursorKind {
    /// The kind a column hint asks for, if it is one a cursor can have.
    pub fn from_data_type(data_type: DataType) -> Option<CursorKind> {
        match data_type {
            DataType::Bigint | DataType::Double | DataType::Decimal => Some(CursorKind::Number),
            DataType::Text => Some(CursorKind::Text),
            DataType::Date => Some(CursorKind::Date),
            DataType::Timestamp => Some(CursorKind::Timestamp),
            _ => None,
        }
    }

    /// The kind of a raw value when nothing else says: ISO strings are timestamps or dates.
    pub fn infer(value: &Value) -> Option<CursorKind> {
        match value {
            Value::Number(_) => Some(CursorKind::Number),
            Value::String(s) => Some(if parse_timestamp(s).is_some() {
                CursorKind::Timestamp
            } else if parse_date(s).is_some() {
                CursorKind::Date
            } else {
                CursorKind::Text
            }),
            _ => None,
        }
    }

    /// A short name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            CursorKind::Number => "number",
            CursorKind::Text => "text",
            CursorKind::Date => "date",
            CursorKind::Timestamp => "timestamp",
        }
    }
}

/// A typed cursor value.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// A date.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
}

impl CursorValue {
    /// Parses the text of a JSON string as `kind`; `None` when it cannot be one.
    pub fn parse_str(s: &str, kind: CursorKind) -> Option<CursorValue> {
        match kind {
            CursorKind::Number => {
                let s = s.trim();
                s.parse::<i64>()
                    .map(CursorValue::Int)
                    .ok()
                    .or_else(|| s.parse::<f64>().ok().map(CursorValue::Float))
            }
            CursorKind::Text => Some(CursorValue::Text(s.to_string())),
            CursorKind::Date => parse_date(s)
                .or_else(|| parse_timestamp(s).map(|t| t.date_naive()))
                .map(CursorValue::Date),
            CursorKind::Timestamp => parse_timestamp_or_date(s).map(CursorValue::Timestamp),
        }
    }

    /// Parses a raw value as `kind`; `None` when it cannot be one.
    pub fn parse(value: &Value, kind: CursorKind) -> Option<CursorValue> {
        match (kind, value) {
            (CursorKind::Number, Value::Number(n)) => Some(match n.as_i64() {
                Some(i) => CursorValue::Int(i),
                None => CursorValue::Float(n.as_f64()?),
            }),
            (kind, Value::String(s)) => CursorValue::parse_str(s, kind),
            (CursorKind::Timestamp, Value::Number(n)) => {
                // Unix seconds, as dlt coerces numbers to timestamps.
                let secs = n.as_f64()?;
                let micros = (secs * 1_000_000.0).round() as i64;
                DateTime::from_timestamp_micros(micros).map(CursorValue::Timestamp)
            }
            _ => None,
        }
    }

    /// Compares two values of the same kind.
    pub fn compare(&self, other: &CursorValue) -> Ordering {
        use CursorValue::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Text(a), Text(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            // Parsing with one kind never yields values of two kinds.
            _ => Ordering::Equal,
        }
    }

    /// The value as JSON for the state document and `{incremental.*}` placeholders.
    pub fn to_json(&self) -> Value {
        match self {
            CursorValue::Int(i) => Value::from(*i),
            CursorValue::Float(f) => Value::from(*f),
            CursorValue::Text(s) => Value::String(s.clone()),
            CursorValue::Date(d) => Value::String(d.format("%Y-%m-%d").to_string()),
            CursorValue::Timestamp(t) => {
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
        }
    }

    /// Moves the value back (`sign` = -1) or forward (+1) by `lag`: seconds, days or units.
    pub fn shifted(&self, lag: f64, sign: f64) -> CursorValue {
        match self {
            CursorValue::Int(i) if lag.fract() == 0.0 => CursorValue::Int(i + (sign * lag) as i64),
            CursorValue::Int(i) => CursorValue::Float(*i as f64 + sign * lag),
            CursorValue::Float(f) => CursorValue::Float(f + sign * lag),
            CursorValue::Date(d) => {
                CursorValue::Date(*d + chrono::Duration::days((sign * lag) as i64))
            }
            CursorValue::Timestamp(t) => CursorValue::Timestamp(
                *t + chrono::Duration::microseconds((sign * lag * 1_000_000.0) as i64),
            ),
            CursorValue::Text(_) => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_with_offsets_compare_as_instants() {
        let a =
            CursorValue::parse(&json!("2024-01-01T10:00:00+02:00"), CursorKind::Timestamp).unwrap();
        let b = CursorValue::parse(&json!("2024-01-01T08:00:00Z"), CursorKind::Timestamp).unwrap();
        let c = CursorValue::parse(&json!("2024-01-01T08:00:00.000001Z"), CursorKind::Timestamp)
            .unwrap();
        assert_eq!(a.compare(&b), Ordering::Equal);
        assert_eq!(c.compare(&a), Ordering::Greater);
    }

    #[test]
    fn numbers_compare_by_value() {
        let a = CursorValue::parse(&json!(10), CursorKind::Number).unwrap();
        let b = CursorValue::parse(&json!(9.5), CursorKind::Number).unwrap();
        let c = CursorValue::parse(&json!("10"), CursorKind::Number).unwrap();
        assert_eq!(a.compare(&b), Ordering::Greater);
        assert_eq!(a.compare(&c), Ordering::Equal);
    }

    #[test]
    fn kinds_are_inferred_from_values() {
        assert_eq!(
            CursorKind::infer(&json!("2024-01-01T00:00:00Z")),
            Some(CursorKind::Timestamp)
        );
        assert_eq!(
            CursorKind::infer(&json!("2024-01-01")),
            Some(CursorKind::Date)
        );
        assert_eq!(CursorKind::infer(&json!("abc")), Some(CursorKind::Text));
        assert_eq!(CursorKind::infer(&json!(1)), Some(CursorKind::Number));
        assert_eq!(CursorKind::infer(&json!(null)), None);
    }
}
