//! Type inference and coercion of JSON values, following dlt's type map and coercion table.

use base64::Engine;
use serde_json::Value;

use super::node::Node;

use crate::schema::DataType;
use crate::timeparse::{parse_bare_date, parse_date, parse_timestamp, parse_timestamp_or_date};

/// A value converted to a column's type, ready for a column builder.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text (also JSON text for json columns).
    Text(String),
    /// A 64-bit integer.
    Bigint(i64),
    /// A float.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Days since the Unix epoch.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// A decimal scaled by 10^9.
    Decimal(i128),
    /// Bytes.
    Binary(Vec<u8>),
}

/// The type dlt gives a value by its Python type alone (no detection): the name in variant columns.
pub fn python_type(value: &Value) -> Option<DataType> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(DataType::Bool),
        Value::Number(n) if n.is_f64() => Some(DataType::Double),
        Value::Number(_) => Some(DataType::Bigint),
        Value::String(_) => Some(DataType::Text),
        Value::Array(_) | Value::Object(_) => Some(DataType::Json),
    }
}

/// The type of a new column: `iso_timestamp` detection, then the type map.
pub fn infer_type(value: &Value) -> Option<DataType> {
    match value {
        Value::String(s) if looks_like_timestamp(s) => Some(DataType::Timestamp),
        other => python_type(other),
    }
}

fn looks_like_timestamp(s: &str) -> bool {
    s.len() >= 13 && s.as_bytes()[0].is_ascii_digit() && parse_timestamp(s).is_some()
}

/// Converts `value` to `target`, or `None` when dlt's coercion table has no rule that works.
pub fn coerce(value: &Value, target: DataType) -> Option<Cell> {
    if let Value::String(s) = value {
        return coerce_str(s, target);
    }
    // Strings are handled above: the helpers below see numbers, booleans, arrays and objects.
    match target {
        DataType::Text => to_text(value).map(Cell::Text),
        DataType::Bigint => to_bigint(value).map(Cell::Bigint),
        DataType::Double => to_double(value).map(Cell::Double),
        DataType::Bool => to_bool(value).map(Cell::Bool),
        DataType::Timestamp => to_timestamp(value).map(Cell::Timestamp),
        DataType::Date => to_date(value).map(Cell::Date),
        DataType::Time => None,
        DataType::Decimal => to_decimal(value).map(Cell::Decimal),
        DataType::Json => match value {
            Value::Object(_) | Value::Array(_) => Some(Cell::Text(value.to_string())),
            _ => None,
        },
        DataType::Binary => match value {
            Value::Number(n) => n.as_i64().map(|i| Cell::Binary(i.to_be_bytes().to_vec())),
            _ => None,
        },
    }
}

/// [`coerce`] of a JSON string.
pub fn coerce_str(s: &str, target: DataType) -> Option<Cell> {
    match target {
        DataType::Text => Some(Cell::Text(s.to_string())),
        DataType::Bigint => bigint_from_str(s).map(Cell::Bigint),
        DataType::Double => double_from_str(s).map(Cell::Double),
        DataType::Bool => bool_from_str(s).map(Cell::Bool),
        DataType::Timestamp => timestamp_from_str(s).map(Cell::Timestamp),
        DataType::Date => date_from_str(s).map(Cell::Date),
        DataType::Time => chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
            .ok()
            .map(|t| Cell::Time(micros_of_day(t))),
        DataType::Decimal => parse_decimal(s.trim(), DECIMAL_SCALE).map(Cell::Decimal),
        DataType::Json => serde_json::from_str::<Value>(s)
            .ok()
            .map(|v| Cell::Text(v.to_string())),
        DataType::Binary => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .or_else(|| decode_hex(s))
            .map(Cell::Binary),
    }
}

/// [`coerce`] of a node of a parsed item, without copying it into a `Value` when it is a string
/// or a scalar already of the column's type.
pub fn coerce_node(node: &Node<'_>, target: DataType) -> Option<Cell> {
    match (target, node) {
        (_, Node::Null) => None,
        (_, Node::Str(s)) => coerce_str(s, target),
        (DataType::Bigint, Node::Int(i)) => Some(Cell::Bigint(*i)),
        (DataType::Double, Node::Int(i)) => Some(Cell::Double(*i as f64)),
        (DataType::Double, Node::Float(f)) => Some(Cell::Double(*f)),
        (DataType::Bool, Node::Bool(b)) => Some(Cell::Bool(*b)),
        (DataType::Json | DataType::Text, Node::Array(_) | Node::Object(_)) => {
            Some(Cell::Text(node.to_json()))
        }
        (_, Node::Array(_) | Node::Object(_)) => None,
        _ => coerce(&node.to_value(), target),
    }
}

fn micros_of_day(t: chrono::NaiveTime) -> i64 {
    use chrono::Timelike;
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
}

fn to_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => python_float_repr(f),
            _ => n.to_string(),
        },
        Value::Object(_) | Value::Array(_) => value.to_string(),
        Value::Null | Value::String(_) => return None,
    })
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, exponent past 1e16.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust's `{:e}` gives the shortest digits; Python writes `1e+16` and `1.5e-05`.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

fn to_bigint(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
        }),
        _ => None,
    }
}

fn bigint_from_str(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else {
        t.replace('_', "").parse::<i64>().ok()
    }
}

fn to_double(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn double_from_str(s: &str) -> Option<f64> {
    let t = s.trim().to_ascii_lowercase();
    match t.as_str() {
        "inf" | "+inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => t.parse::<f64>().ok(),
    }
}

fn to_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        _ => None,
    }
}

fn bool_from_str(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "t" | "y" | "1" => Some(true),
        "no" | "false" | "f" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn to_timestamp(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => micros_from_unix_seconds(n.as_f64()?),
        _ => None,
    }
}

/// A unix time in seconds as microseconds, when it is a finite instant in years 1 to 9999
/// (the range Python's datetime takes; dlt leaves anything else to a variant column).
fn micros_from_unix_seconds(secs: f64) -> Option<i64> {
    const FIRST: f64 = -62_135_596_800.0; // 0001-01-01T00:00:00Z
    const END: f64 = 253_402_300_800.0; // 10000-01-01T00:00:00Z
    (secs.is_finite() && (FIRST..END).contains(&secs)).then(|| (secs * 1_000_000.0).round() as i64)
}

/// dlt's text to timestamp: an ISO 8601 timestamp or date, the bare forms `YYYY`, `YYYY-MM`,
/// `YYYYMMDD`, `YYYY/MM/DD` and `YYYY:MM:DD` its parser also takes, else a number of seconds
/// since the epoch as Python's `float()` reads it ("47", " 1e3 ", "1_000").
fn timestamp_from_str(s: &str) -> Option<i64> {
    if let Some(t) = parse_timestamp_or_date(s) {
        return Some(t.timestamp_micros());
    }
    if let Some(date) = parse_bare_date(s) {
        return Some(
            date.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros(),
        );
    }
    micros_from_unix_seconds(python_float(s)?)
}

/// A string as Python's `float()` reads it: surrounding whitespace, a sign, underscores between
/// digits. Infinities and NaN are refused, as no date can be made of them.
fn python_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let b = t.as_bytes();
    let underscores_between_digits = b.iter().enumerate().all(|(i, c)| {
        *c != b'_'
            || (i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit))
    });
    if !underscores_between_digits {
        return None;
    }
    t.replace('_', "")
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
}

fn to_date(value: &Value) -> Option<i32> {
    let date = match value {
        Value::Number(n) => {
            let secs = n.as_f64()?;
            chrono::DateTime::from_timestamp(secs.floor() as i64, 0)?.date_naive()
        }
        _ => return None,
    };
    days_since_epoch(date)
}

/// dlt's text to date: an ISO date, else the UTC day of [`timestamp_from_str`].
fn date_from_str(s: &str) -> Option<i32> {
    if let Some(date) = parse_date(s) {
        return days_since_epoch(date);
    }
    let micros = timestamp_from_str(s)?;
    i32::try_from(micros.div_euclid(86_400_000_000)).ok()
}

fn days_since_epoch(date: chrono::NaiveDate) -> Option<i32> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// Scale of decimals as stored (DECIMAL(38,9)).
pub const DECIMAL_SCALE: u32 = 9;

fn to_decimal(value: &Value) -> Option<i128> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    parse_decimal(&text, DECIMAL_SCALE)
}

/// Parses a decimal number into an integer scaled by 10^scale (extra digits are rounded half up).
pub fn parse_decimal(text: &str, scale: u32) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (digits, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all: String = format!("{int_part}{frac_part}");
    // value = all * 10^(exponent - frac_len); scaled = value * 10^scale
    let shift = exponent - frac_part.len() as i32 + scale as i32;
    let mut n: i128 = 0;
    for b in all.bytes() {
        n = n.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    if shift >= 0 {
        n = n.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let div = 10i128.checked_pow((-shift) as u32)?;
        let rem = n % div;
        n /= div;
        if rem * 2 >= div {
            n += 1;
        }
    }
    Some(if negative { -n } else { n })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercions_follow_dlt_table() {
        assert_eq!(
            coerce(&json!("12"), DataType::Bigint),
            Some(Cell::Bigint(12))
        );
        assert_eq!(coerce(&json!("abc"), DataType::Bigint), None);
        assert_eq!(coerce(&json!(3.0), DataType::Bigint), Some(Cell::Bigint(3)));
        assert_eq!(coerce(&json!(2.5), DataType::Bigint), None);
        assert_eq!(
            coerce(&json!("yes"), DataType::Bool),
            Some(Cell::Bool(true))
        );
        assert_eq!(coerce(&json!(0), DataType::Bool), Some(Cell::Bool(false)));
        assert_eq!(
            coerce(&json!("2.25"), DataType::Double),
            Some(Cell::Double(2.25))
        );
        assert_eq!(
            coerce(&json!(42), DataType::Text),
            Some(Cell::Text("42".into()))
        );
        assert_eq!(
            coerce(&json!(1.5), DataType::Text),
            Some(Cell::Text("1.5".into()))
        );
        assert_eq!(
            coerce(&json!(true), DataType::Text),
            Some(Cell::Text("True".into()))
        );
        assert_eq!(
            coerce(&json!(1700000000), DataType::Timestamp),
            Some(Cell::Timestamp(1_700_000_000_000_000))
        );
        assert_eq!(coerce(&json!("not a date"), DataType::Timestamp), None);
    }

    /// Expected values from dlt 1.31.0's `coerce_value("timestamp", "text", s)` and
    /// `coerce_value("date", "text", s)`.
    #[test]
    fn text_to_timestamp_and_date_as_dlt() {
        let ts = |s: &str| match coerce(&json!(s), DataType::Timestamp) {
            Some(Cell::Timestamp(t)) => chrono::DateTime::from_timestamp_micros(t)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            _ => None,
        };
        let cases = [
            ("47", Some("1970-01-01T00:00:47")),
            ("-12.5", Some("1969-12-31T23:59:47.500")),
            (" 3 ", Some("1970-01-01T00:00:03")),
            ("1e3", Some("1970-01-01T00:16:40")),
            ("1_000", Some("1970-01-01T00:16:40")),
            ("+5", Some("1970-01-01T00:00:05")),
            ("0000", Some("1970-01-01T00:00:00")),
            ("0001", Some("0001-01-01T00:00:00")),
            ("2024", Some("2024-01-01T00:00:00")),
            ("2024-01", Some("2024-01-01T00:00:00")),
            ("20240115", Some("2024-01-15T00:00:00")),
            ("20241301", Some("1970-08-23T06:35:01")),
            ("2024/01/15", Some("2024-01-15T00:00:00")),
            ("2024:01:15", Some("2024-01-15T00:00:00")),
            ("2024-01-15T10:00:00+02:00", Some("2024-01-15T08:00:00")),
            ("inf", None),
            ("nan", None),
            ("17e308", None),
            ("1e12", None),
            ("1__0", None),
            ("_1", None),
            ("0x10", None),
            ("2024-13", None),
            ("2024/1/15", None),
            ("x", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(ts(text).as_deref(), want, "timestamp from {text:?}");
        }
        let day = |s: &str| match coerce(&json!(s), DataType::Date) {
            Some(Cell::Date(d)) => Some(d),
            _ => None,
        };
        assert_eq!(day("47"), Some(0));
        assert_eq!(day("-12.5"), Some(-1));
        assert_eq!(day("2024-01-15T01:00:00+02:00"), Some(19736));
        assert_eq!(day("1970-01-02"), Some(1));
        assert_eq!(day("x"), None);
    }

    #[test]
    fn detection_only_finds_full_timestamps() {
        assert_eq!(
            infer_type(&json!("2024-01-01T00:00:00Z")),
            Some(DataType::Timestamp)
        );
        assert_eq!(infer_type(&json!("2024-01-01")), Some(DataType::Text));
        assert_eq!(infer_type(&json!(1.0)), Some(DataType::Double));
        assert_eq!(infer_type(&json!(null)), None);
    }

    #[test]
    fn floats_render_like_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1.5e-5), "1.5e-05");
    }

    #[test]
    fn decimals_parse_scaled() {
        assert_eq!(parse_decimal("1.5", 2), Some(150));
        assert_eq!(parse_decimal("-0.005", 2), Some(-1));
        assert_eq!(parse_decimal("1e3", 0), Some(1000));
        assert_eq!(parse_decimal("x", 2), None);
    }
}
