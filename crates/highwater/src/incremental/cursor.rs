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
                s.parse::<i64>().map(CursorValue::Int).ok().or_else(|| {
                    // "NaN" and "inf" are no position in a range.
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(CursorValue::Float)
                })
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

    /// Compares two values of the same kind: a total order that agrees with the values
    /// (integers and floats by their exact values, `-0.0` equal to `0.0`).
    pub fn compare(&self, other: &CursorValue) -> Ordering {
        use CursorValue::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Int(a), Float(b)) => int_cmp_float(*a, *b),
            (Float(a), Int(b)) => int_cmp_float(*b, *a).reverse(),
            (Float(a), Float(b)) => a
                .partial_cmp(b)
                .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan())),
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

/// `i` against `f` by their exact values (`i as f64` rounds above 2^53); NaN after every number.
fn int_cmp_float(i: i64, f: f64) -> Ordering {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() || f >= TWO_POW_63 {
        return Ordering::Less;
    }
    if f < -TWO_POW_63 {
        return Ordering::Greater;
    }
    // Within i64's range the whole part is exact; the fraction decides a tie.
    let whole = f.trunc();
    i.cmp(&(whole as i64))
        .then_with(|| 0.0f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal))
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

#[cfg(test)]
mod proptests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};
    use proptest::prelude::*;
    use serde_json::json;

    /// The laws of a total order on three values, and that it agrees with `expected`.
    fn assert_total_order(
        values: &[CursorValue; 3],
        expected: impl Fn(usize, usize) -> Ordering,
    ) -> Result<(), TestCaseError> {
        for i in 0..3 {
            prop_assert_eq!(values[i].compare(&values[i]), Ordering::Equal);
            for j in 0..3 {
                let ij = values[i].compare(&values[j]);
                prop_assert_eq!(ij, values[j].compare(&values[i]).reverse(), "antisymmetry");
                prop_assert_eq!(
                    ij,
                    expected(i, j),
                    "{:?} against {:?}",
                    values[i],
                    values[j]
                );
                for k in 0..3 {
                    let jk = values[j].compare(&values[k]);
                    if ij == jk && ij != Ordering::Equal {
                        prop_assert_eq!(values[i].compare(&values[k]), ij, "transitivity");
                    }
                }
            }
        }
        Ok(())
    }

    /// An exact decimal rendering, to compare integers and floats without the code under test.
    fn exact_decimal(value: &Value) -> (bool, String, String) {
        let text = match value {
            Value::Number(n) if n.is_i64() => n.to_string(),
            Value::Number(n) => format!("{:.1100}", n.as_f64().unwrap()),
            Value::String(s) => s.trim().to_string(),
            other => unreachable!("{other}"),
        };
        let negative = text.starts_with('-');
        let digits = text.trim_start_matches('-');
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let whole = whole.trim_start_matches('0').to_string();
        let frac = frac.trim_end_matches('0').to_string();
        let zero = whole.is_empty() && frac.is_empty();
        (negative && !zero, whole, frac)
    }

    fn exact_cmp(a: &Value, b: &Value) -> Ordering {
        let (na, wa, fa) = exact_decimal(a);
        let (nb, wb, fb) = exact_decimal(b);
        let magnitude = wa.len().cmp(&wb.len()).then(wa.cmp(&wb)).then(fa.cmp(&fb));
        match (na, nb) {
            (false, false) => magnitude,
            (true, true) => magnitude.reverse(),
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
        }
    }

    /// Numbers as JSON numbers or strings: integers, floats, and the places where converting one
    /// into the other rounds.
    fn number() -> impl Strategy<Value = Value> {
        let int = prop_oneof![
            any::<i64>(),
            prop::sample::select(vec![0, 1, -1, 1 << 53, (1 << 53) + 1, i64::MAX, i64::MIN]),
        ];
        let float = prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            prop::sample::select(vec![
                0.0,
                -0.0,
                0.5,
                -0.5,
                9_007_199_254_740_992.0,
                9_223_372_036_854_775_808.0,
                -9_223_372_036_854_775_808.0,
                1e300,
            ]),
        ];
        prop_oneof![
            int.clone().prop_map(Value::from),
            float.clone().prop_map(Value::from),
            int.prop_map(|i| Value::from(i.to_string())),
        ]
    }

    /// An instant between 1900 and 2200 written with an offset and a precision.
    fn timestamp() -> impl Strategy<Value = (i64, String)> {
        (
            -2_208_988_800_000_000i64..7_258_118_400_000_000,
            -14 * 60..=14 * 60i32,
            0..3usize,
        )
            .prop_map(|(micros, offset_minutes, precision)| {
                let micros = match precision {
                    0 => micros - micros.rem_euclid(1_000_000),
                    1 => micros - micros.rem_euclid(1_000),
                    _ => micros,
                };
                let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
                let local = offset.timestamp_micros(micros).unwrap();
                let format = [
                    "%Y-%m-%dT%H:%M:%S%:z",
                    "%Y-%m-%dT%H:%M:%S%.3f%:z",
                    "%Y-%m-%d %H:%M:%S%.6f%:z",
                ];
                (micros, local.format(format[precision]).to_string())
            })
    }

    proptest! {
        #[test]
        fn numbers_are_totally_ordered_by_their_exact_values(values in [number(), number(), number()]) {
            let parsed = values.clone().map(|v| CursorValue::parse(&v, CursorKind::Number).unwrap());
            assert_total_order(&parsed, |i, j| exact_cmp(&values[i], &values[j]))?;
        }

        #[test]
        fn timestamps_are_ordered_as_instants_whatever_their_offset(values in [timestamp(), timestamp(), timestamp()]) {
            let parsed = values.clone().map(|(_, text)| {
                CursorValue::parse(&json!(text), CursorKind::Timestamp).unwrap()
            });
            assert_total_order(&parsed, |i, j| values[i].0.cmp(&values[j].0))?;
        }

        #[test]
        fn dates_and_text_are_ordered_as_dates_and_bytes(
            days in [-40_000i64..80_000, -40_000i64..80_000, -40_000i64..80_000],
            texts in [".{0,8}", ".{0,8}", ".{0,8}"],
        ) {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
            let dates = days.map(|d| epoch + chrono::Duration::days(d));
            let parsed = dates.map(|d| {
                CursorValue::parse(&json!(d.format("%Y-%m-%d").to_string()), CursorKind::Date).unwrap()
            });
            assert_total_order(&parsed, |i, j| dates[i].cmp(&dates[j]))?;
            let parsed = texts.clone().map(|t| CursorValue::parse(&json!(t), CursorKind::Text).unwrap());
            assert_total_order(&parsed, |i, j| texts[i].as_bytes().cmp(texts[j].as_bytes()))?;
        }
    }

    #[test]
    fn not_a_number_is_no_cursor_value() {
        for text in ["NaN", "inf", "-infinity"] {
            assert_eq!(
                CursorValue::parse(&json!(text), CursorKind::Number),
                None,
                "{text}"
            );
        }
    }
}
