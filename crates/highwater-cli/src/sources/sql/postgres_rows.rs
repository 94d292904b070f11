//! PostgreSQL: types from the prepared statement and the catalog, rows through a portal in a
//! read-only transaction, values decoded from the binary protocol into JSON.
//!
//! Types without a decoder here (intervals, network addresses, ranges …) are read as text, as
//! dlt's reflection leaves them without a data type.

use std::error::Error as StdError;
use std::sync::mpsc::SyncSender;

use base64::Engine as _;
use bytes::BytesMut;
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Timelike};
use highwater::DataType;
use postgres::types::{to_sql_checked, Format, FromSql, IsNull, Kind, ToSql, Type};
use postgres::{Client, NoTls};
use serde_json::Value;

use super::{
    inner_query, quote_ident, quote_table, row_object, send_chunk, where_clause, Chunk, Pushdown,
    Range, ReflectedColumn, Reflection, Selection, SqlSource,
};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn connect(url: &str) -> Result<Client, String> {
    Client::connect(url, NoTls).map_err(|e| describe(&e))
}

/// The server's message for database errors, else the client's (never the connection string).
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

pub(super) fn reflect(url: &str, selection: &Selection) -> Result<Reflection, String> {
    let mut client = connect(url)?;
    let statement = client
        .prepare(&inner_query(selection))
        .map_err(|e| describe(&e))?;
    let mut columns = Vec::new();
    for column in statement.columns() {
        let nullable = match (column.table_oid(), column.column_id()) {
            (Some(table), Some(attnum)) if table != 0 => {
                let row = client
                    .query_opt(
                        "SELECT attnotnull FROM pg_catalog.pg_attribute \
                         WHERE attrelid = $1 AND attnum = $2",
                        &[&table, &attnum],
                    )
                    .map_err(|e| describe(&e))?;
                match row {
                    Some(row) => !row.try_get::<_, bool>(0).map_err(|e| describe(&e))?,
                    None => true,
                }
            }
            _ => true,
        };
        let (data_type, precision, scale, timezone) = if native(column.type_()) {
            type_hint(column.type_(), column.type_modifier())
        } else {
            (None, None, None, None)
        };
        columns.push(ReflectedColumn {
            name: column.name().to_string(),
            data_type,
            nullable,
            precision,
            scale,
            timezone,
        });
    }
    let primary_key = match selection {
        Selection::Table(table) => primary_key(&mut client, table)?,
        Selection::Query(_) => Vec::new(),
    };
    Ok(Reflection {
        columns,
        primary_key,
    })
}

fn primary_key(client: &mut Client, table: &str) -> Result<Vec<String>, String> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_attribute a \
               ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&quote_table(table)],
        )
        .map_err(|e| describe(&e))?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(|e| describe(&e)))
        .collect()
}

/// The dlt type of a column (dlt's `sqla_col_to_column_schema` at reflection level "full"):
/// data type, decimal precision and scale, and `timezone = false` for naive timestamps.
fn type_hint(
    ty: &Type,
    modifier: i32,
) -> (Option<DataType>, Option<u32>, Option<u32>, Option<bool>) {
    match ty.kind() {
        Kind::Array(_) => return (Some(DataType::Json), None, None, None),
        Kind::Enum(_) => return (Some(DataType::Text), None, None, None),
        Kind::Domain(base) => return type_hint(base, -1),
        _ => {}
    }
    let data_type = match ty.name() {
        "int2" | "int4" | "int8" => DataType::Bigint,
        "float4" | "float8" => DataType::Double,
        "numeric" => {
            // typmod = ((precision << 16) | scale) + 4, or -1 when unconstrained.
            if modifier >= 4 {
                let packed = (modifier - 4) as u32;
                return (
                    Some(DataType::Decimal),
                    Some(packed >> 16),
                    Some(packed & 0xffff),
                    None,
                );
            }
            DataType::Decimal
        }
        "text" | "varchar" | "bpchar" | "name" | "char" | "uuid" => DataType::Text,
        "bool" => DataType::Bool,
        "timestamp" => return (Some(DataType::Timestamp), None, None, Some(false)),
        "timestamptz" => return (Some(DataType::Timestamp), None, None, Some(true)),
        "date" => DataType::Date,
        "time" | "timetz" => DataType::Time,
        "json" | "jsonb" => DataType::Json,
        "bytea" => DataType::Binary,
        _ => return (None, None, None, None),
    };
    (Some(data_type), None, None, None)
}

/// Whether [`decode`] reads the type; other columns are selected as `::text`.
fn native(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Enum(_) => true,
        Kind::Array(member) => native(member),
        Kind::Domain(base) => native(base),
        _ => ty.schema() == "pg_catalog" && type_hint(ty, -1).0.is_some(),
    }
}

pub(super) fn read(
    url: &str,
    source: &SqlSource,
    reflection: &Reflection,
    pushdown: Option<&Pushdown>,
    range: &Range,
    sender: &SyncSender<Chunk>,
) -> Result<(), String> {
    let mut client = connect(url)?;
    let inner = inner_query(&source.selection);
    let described = client.prepare(&inner).map_err(|e| describe(&e))?;
    let list: Vec<String> = described
        .columns()
        .iter()
        .map(|c| {
            let name = quote_ident(c.name());
            if native(c.type_()) {
                format!("q.{name}")
            } else {
                format!("q.{name}::text AS {name}")
            }
        })
        .collect();
    let mut sql = format!("SELECT {} FROM ({inner}) AS q", list.join(", "));
    let mut params = Vec::new();
    if let Some(pushdown) = pushdown {
        // Only types PostgreSQL compares the way the incremental does: numbers and instants.
        let comparable = reflection
            .column(&pushdown.column)
            .and_then(|c| c.data_type)
            .is_some_and(|t| {
                matches!(
                    t,
                    DataType::Bigint
                        | DataType::Double
                        | DataType::Decimal
                        | DataType::Timestamp
                        | DataType::Date
                )
            });
        let column = format!("q.{}", quote_ident(&pushdown.column));
        let range = if comparable {
            range.clone()
        } else {
            Range::default()
        };
        let (tail, values) = where_clause(pushdown, &range, &column, |n| format!("${n}"));
        sql.push_str(&tail);
        params = values.iter().map(TextParam::from_json).collect();
    }
    tracing::debug!(%sql, "reading PostgreSQL rows");
    let names: Vec<String> = described
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let mut transaction = client
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(|e| describe(&e))?;
    let statement = transaction.prepare(&sql).map_err(|e| describe(&e))?;
    let portal = transaction
        .bind(&statement, &refs)
        .map_err(|e| describe(&e))?;
    let chunk_size = i32::try_from(source.chunk_size.max(1)).unwrap_or(i32::MAX);
    loop {
        let rows = transaction
            .query_portal(&portal, chunk_size)
            .map_err(|e| describe(&e))?;
        let count = rows.len();
        let mut chunk = Vec::with_capacity(count);
        for row in &rows {
            let mut values = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let cell: Cell = row
                    .try_get(i)
                    .map_err(|e| format!("column {name}: {}", error_chain(&e)))?;
                values.push(cell.0);
            }
            chunk.push(row_object(&names, values));
        }
        drop(rows);
        if !chunk.is_empty() && !send_chunk(sender, &mut chunk) {
            return Ok(());
        }
        if count < chunk_size as usize {
            return Ok(());
        }
    }
}

fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A query parameter sent in text form, so PostgreSQL parses it as the cursor column's type
/// (an ISO-8601 start value becomes a `timestamptz`, a number a `bigint` or `numeric`).
#[derive(Debug)]
struct TextParam(String);

impl TextParam {
    fn from_json(value: &Value) -> TextParam {
        TextParam(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One value of a row as JSON, decoded from PostgreSQL's binary format.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        decode(ty, raw).map(Cell).map_err(Into::into)
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("expected {N} bytes, got {}", raw.len()))
}

fn text(raw: &[u8]) -> Result<String, String> {
    String::from_utf8(raw.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, String> {
    match ty.kind() {
        Kind::Enum(_) => return text(raw).map(Value::String),
        Kind::Array(member) => return decode_array(member, raw),
        Kind::Domain(base) => return decode(base, raw),
        _ => {}
    }
    Ok(match ty.name() {
        "bool" => Value::Bool(fixed::<1>(raw)?[0] != 0),
        "int2" => Value::from(i16::from_be_bytes(fixed(raw)?)),
        "int4" => Value::from(i32::from_be_bytes(fixed(raw)?)),
        "int8" => Value::from(i64::from_be_bytes(fixed(raw)?)),
        // Through the shortest text of the f32, as psycopg2 reads `real` for dlt: 0.1, not
        // 0.10000000149011612.
        "float4" => float(
            f32::from_be_bytes(fixed(raw)?)
                .to_string()
                .parse()
                .unwrap_or(f64::NAN),
        ),
        "float8" => float(f64::from_be_bytes(fixed(raw)?)),
        "numeric" => Value::String(decode_numeric(raw)?),
        "text" | "varchar" | "bpchar" | "name" | "char" => Value::String(text(raw)?),
        "uuid" => Value::String(format_uuid(&fixed::<16>(raw)?)),
        "json" => parse_json(raw)?,
        "jsonb" => parse_json(raw.get(1..).unwrap_or_default())?,
        "bytea" => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        "timestamp" => Value::String(format_timestamp(i64::from_be_bytes(fixed(raw)?), "")?),
        "timestamptz" => {
            Value::String(format_timestamp(i64::from_be_bytes(fixed(raw)?), "+00:00")?)
        }
        "date" => {
            let days = i32::from_be_bytes(fixed(raw)?);
            let date = NaiveDate::from_ymd_opt(2000, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(TimeDelta::days(days.into())))
                .ok_or_else(|| format!("date out of range ({days} days from 2000-01-01)"))?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        "time" | "timetz" => {
            let micros = i64::from_be_bytes(fixed(raw)?);
            let time = u32::try_from(micros.div_euclid(1_000_000))
                .ok()
                .and_then(|secs| {
                    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
                    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
                })
                .ok_or_else(|| format!("time out of range ({micros} µs)"))?;
            Value::String(time.format("%H:%M:%S%.f").to_string())
        }
        other => return Err(format!("no decoder for type {other}")),
    })
}

fn parse_json(raw: &[u8]) -> Result<Value, String> {
    highwater::json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))
}

fn format_timestamp(pg_micros: i64, offset: &str) -> Result<String, String> {
    let instant = pg_micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| "timestamp out of range (infinity?)".to_string())?;
    // By hand rather than through a strftime pattern, which is parsed again for every value.
    let (date, time) = (instant.date_naive(), instant.time());
    let micros = time.nanosecond() / 1000;
    let fraction = match micros {
        0 => String::new(),
        m if m % 1000 == 0 => format!(".{:03}", m / 1000),
        m => format!(".{m:06}"),
    };
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{offset}",
        date.year(),
        date.month(),
        date.day(),
        time.hour(),
        time.minute(),
        time.second()
    ))
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// NUMERIC's binary form (base-10000 digits, a weight and a display scale) as decimal text.
fn decode_numeric(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<u16, String> {
        Ok(u16::from_be_bytes(fixed(
            raw.get(i * 2..).unwrap_or_default(),
        )?))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        other => return Err(format!("bad numeric sign {other:#x}")),
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, String>>()?;
    let mut integer = String::new();
    let mut fraction = String::new();
    // Digit i is worth 10000^(weight - i).
    for power in (0..=weight).rev() {
        let i = (weight - power) as usize;
        let digit = digits.get(i).copied().unwrap_or(0);
        if integer.is_empty() {
            if digit != 0 {
                integer = digit.to_string();
            }
        } else {
            integer.push_str(&format!("{digit:04}"));
        }
    }
    if integer.is_empty() {
        integer.push('0');
    }
    let mut power = -1;
    while fraction.len() < dscale {
        let index = weight - power;
        let digit = usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0);
        fraction.push_str(&format!("{digit:04}"));
        power -= 1;
    }
    fraction.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if fraction.is_empty() {
        format!("{sign}{integer}")
    } else {
        format!("{sign}{integer}.{fraction}")
    })
}

/// A one- or more-dimensional array as nested JSON lists.
fn decode_array(member: &Type, raw: &[u8]) -> Result<Value, String> {
    let int = |at: usize| -> Result<i32, String> {
        Ok(i32::from_be_bytes(fixed(
            raw.get(at..).unwrap_or_default(),
        )?))
    };
    let ndim = usize::try_from(int(0)?).map_err(|_| "bad array header".to_string())?;
    let mut at = 12;
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        dims.push(usize::try_from(int(at)?).map_err(|_| "bad array length".to_string())?);
        at += 8;
    }
    let total: usize = if ndim == 0 { 0 } else { dims.iter().product() };
    let mut flat = Vec::with_capacity(total);
    for _ in 0..total {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            flat.push(Value::Null);
            continue;
        }
        let end = at + len as usize;
        let bytes = raw
            .get(at..end)
            .ok_or_else(|| "truncated array element".to_string())?;
        flat.push(decode(member, bytes)?);
        at = end;
    }
    Ok(nest(&mut flat.into_iter(), &dims))
}

fn nest(values: &mut impl Iterator<Item = Value>, dims: &[usize]) -> Value {
    match dims {
        [] => Value::Array(Vec::new()),
        [n] => Value::Array(values.take(*n).collect()),
        [n, rest @ ..] => Value::Array((0..*n).map(|_| nest(values, rest)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_decode_to_their_text() {
        // 12345.678 = [1, 2345, 6780] with weight 1, scale 3
        assert_eq!(
            decode_numeric(&numeric(3, 1, 0, 3, &[1, 2345, 6780])),
            Ok("12345.678".into())
        );
        // -0.0012 = [12] with weight -1, scale 4
        assert_eq!(
            decode_numeric(&numeric(1, -1, 0x4000, 4, &[12])),
            Ok("-0.0012".into())
        );
        // 0.00000001 = [1] with weight -2, scale 8
        assert_eq!(
            decode_numeric(&numeric(1, -2, 0, 8, &[1])),
            Ok("0.00000001".into())
        );
        // 20000 = [2] with weight 1, scale 2
        assert_eq!(
            decode_numeric(&numeric(1, 1, 0, 2, &[2])),
            Ok("20000.00".into())
        );
        assert_eq!(decode_numeric(&numeric(0, 0, 0, 0, &[])), Ok("0".into()));
        assert!(decode_numeric(&[0, 1]).is_err());
    }

    #[test]
    fn reals_keep_their_shortest_decimal() {
        let real = Type::FLOAT4;
        assert_eq!(
            decode(&real, &0.1f32.to_be_bytes()),
            Ok(serde_json::json!(0.1))
        );
        assert_eq!(
            decode(&Type::INT2, &(-7i16).to_be_bytes()),
            Ok(serde_json::json!(-7))
        );
        assert!(decode(&Type::INT8, &[0, 1]).is_err());
    }

    #[test]
    fn timestamps_count_from_2000() {
        assert_eq!(
            format_timestamp(0, "+00:00"),
            Ok("2000-01-01T00:00:00+00:00".into())
        );
        assert_eq!(
            format_timestamp(1_500_000, ""),
            Ok("2000-01-01T00:00:01.500".into())
        );
        assert_eq!(
            format_timestamp(86_400_000_123, ""),
            Ok("2000-01-02T00:00:00.000123".into())
        );
        assert_eq!(
            format_timestamp(-1, "+00:00"),
            Ok("1999-12-31T23:59:59.999999+00:00".into())
        );
        assert!(format_timestamp(i64::MAX, "").is_err());
    }
}
