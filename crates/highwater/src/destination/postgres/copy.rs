//! PostgreSQL's binary `COPY` format, written straight from the package's Arrow batches: no
//! per-row SQL, no text parsing on the server.
//!
//! The format: a header, then per row a 16-bit field count and per field a 32-bit length (-1 for
//! NULL) and the value in the type's binary wire form; a trailer of -1 ends the data.

use std::io::Write;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float64Array, Int64Array, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType as ArrowType, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::schema::{Column, DataType};

/// The start of every binary COPY stream: signature, flags, header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of the stream.
pub const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// One column of a batch, in the Arrow type its PostgreSQL column is encoded from.
enum Encoder {
    Text(StringArray),
    Json(StringArray),
    /// The values and the byte width of the column (`smallint`, `integer` or `bigint`).
    Bigint(Int64Array, usize),
    Double(Float64Array),
    Bool(BooleanArray),
    Timestamp(TimestampMicrosecondArray),
    Date(Date32Array),
    Time(Time64MicrosecondArray),
    Decimal(Decimal128Array, u16),
    Binary(BinaryArray),
}

/// The Arrow type a column of `data_type` is encoded from (package files hold these already;
/// Arrow items from a Parquet source are cast).
fn wire_type(data_type: DataType, array: &ArrowType) -> ArrowType {
    match data_type {
        DataType::Text | DataType::Json => ArrowType::Utf8,
        DataType::Bigint => ArrowType::Int64,
        DataType::Double => ArrowType::Float64,
        DataType::Bool => ArrowType::Boolean,
        DataType::Timestamp => match array {
            ArrowType::Timestamp(_, tz) => ArrowType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            _ => ArrowType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        },
        DataType::Date => ArrowType::Date32,
        DataType::Time => ArrowType::Time64(TimeUnit::Microsecond),
        DataType::Decimal => match array {
            ArrowType::Decimal128(p, s) => ArrowType::Decimal128(*p, *s),
            _ => ArrowType::Decimal128(38, crate::normalize::coerce::DECIMAL_SCALE as i8),
        },
        DataType::Binary => ArrowType::Binary,
    }
}

impl Encoder {
    fn new(column: &Column, array: &ArrayRef) -> Result<Encoder, String> {
        let wanted = wire_type(column.data_type, array.data_type());
        let array = if array.data_type() == &wanted {
            array.clone()
        } else {
            cast(array, &wanted).map_err(|e| {
                format!(
                    "column {}: cannot encode Arrow {} as {}: {e}",
                    column.name,
                    array.data_type(),
                    column.data_type.name()
                )
            })?
        };
        Ok(match column.data_type {
            DataType::Text => Encoder::Text(array.as_string::<i32>().clone()),
            DataType::Json => Encoder::Json(array.as_string::<i32>().clone()),
            DataType::Bigint => Encoder::Bigint(array.as_primitive().clone(), int_width(column)),
            DataType::Double => Encoder::Double(array.as_primitive().clone()),
            DataType::Bool => Encoder::Bool(array.as_boolean().clone()),
            DataType::Timestamp => Encoder::Timestamp(array.as_primitive().clone()),
            DataType::Date => Encoder::Date(array.as_primitive().clone()),
            DataType::Time => Encoder::Time(array.as_primitive().clone()),
            DataType::Decimal => {
                let scale = match array.data_type() {
                    ArrowType::Decimal128(_, s) => (*s).max(0) as u16,
                    _ => 0,
                };
                Encoder::Decimal(array.as_primitive().clone(), scale)
            }
            DataType::Binary => Encoder::Binary(array.as_binary::<i32>().clone()),
        })
    }

    /// Writes field `i` (length and value) of `column` to `out`.
    fn write(&self, i: usize, column: &Column, out: &mut Vec<u8>) -> Result<(), String> {
        let is_null = match self {
            Encoder::Text(a) | Encoder::Json(a) => a.is_null(i),
            Encoder::Bigint(a, _) => a.is_null(i),
            Encoder::Double(a) => a.is_null(i),
            Encoder::Bool(a) => a.is_null(i),
            Encoder::Timestamp(a) => a.is_null(i),
            Encoder::Date(a) => a.is_null(i),
            Encoder::Time(a) => a.is_null(i),
            Encoder::Decimal(a, _) => a.is_null(i),
            Encoder::Binary(a) => a.is_null(i),
        };
        if is_null {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        match self {
            Encoder::Text(a) => {
                let text = a.value(i).as_bytes();
                if memchr::memchr(0, text).is_some() {
                    // PostgreSQL text cannot hold NUL; dlt's postgres destination drops them.
                    let kept: Vec<u8> = text.iter().copied().filter(|&b| b != 0).collect();
                    field(out, &kept);
                } else {
                    field(out, text);
                }
            }
            Encoder::Json(a) => {
                // jsonb's binary form: a version byte, then the JSON text.
                let text = a.value(i).as_bytes();
                out.extend_from_slice(&(text.len() as i32 + 1).to_be_bytes());
                out.push(1);
                out.extend_from_slice(text);
            }
            Encoder::Bigint(a, width) => {
                let value = a.value(i);
                // The wire form is exactly as wide as the column's type.
                let out_of_range = || {
                    format!(
                        "column {}: {value} is out of range for {}",
                        column.name,
                        super::postgres_type(column)
                    )
                };
                match width {
                    2 => field(
                        out,
                        &i16::try_from(value)
                            .map_err(|_| out_of_range())?
                            .to_be_bytes(),
                    ),
                    4 => field(
                        out,
                        &i32::try_from(value)
                            .map_err(|_| out_of_range())?
                            .to_be_bytes(),
                    ),
                    _ => field(out, &value.to_be_bytes()),
                }
            }
            Encoder::Double(a) => field(out, &a.value(i).to_be_bytes()),
            Encoder::Bool(a) => field(out, &[u8::from(a.value(i))]),
            Encoder::Timestamp(a) => field(
                out,
                &a.value(i).saturating_sub(PG_EPOCH_MICROS).to_be_bytes(),
            ),
            Encoder::Date(a) => field(out, &a.value(i).saturating_sub(PG_EPOCH_DAYS).to_be_bytes()),
            Encoder::Time(a) => field(out, &a.value(i).to_be_bytes()),
            Encoder::Decimal(a, scale) => {
                let start = out.len();
                out.extend_from_slice(&0i32.to_be_bytes());
                write_numeric(a.value(i), *scale, out);
                let len = (out.len() - start - 4) as i32;
                out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            Encoder::Binary(a) => field(out, a.value(i)),
        }
        Ok(())
    }
}

/// Bytes of the integer type a `bigint` column gets: `smallint` and `integer` for a precision
/// of at most 16 and 32 bits (as [`super::postgres_type`] names them), else `bigint`.
fn int_width(column: &Column) -> usize {
    match column.precision {
        Some(p) if p <= 16 => 2,
        Some(p) if p <= 32 => 4,
        _ => 8,
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `numeric`'s binary form of `value / 10^scale`: digit count, weight (of the first base-10000
/// digit), sign, display scale, then the base-10000 digits.
pub fn write_numeric(value: i128, scale: u16, out: &mut Vec<u8>) {
    let negative = value < 0;
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let (int_part, frac_part) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("", digits.as_str())
    };
    // Integer digits grouped by four from the right, fraction digits (zero-padded to the
    // scale) by four from the left.
    let mut groups: Vec<i16> = Vec::new();
    let lead = int_part.len() % 4;
    let int_padded = format!(
        "{}{int_part}",
        "0".repeat(if lead == 0 { 0 } else { 4 - lead })
    );
    for chunk in int_padded.as_bytes().chunks(4) {
        groups.push(group(chunk));
    }
    let int_groups = groups.len() as i16;
    let mut frac = format!("{}{frac_part}", "0".repeat(scale - frac_part.len()));
    while frac.len() % 4 != 0 {
        frac.push('0');
    }
    for chunk in frac.as_bytes().chunks(4) {
        groups.push(group(chunk));
    }
    let mut weight = int_groups - 1;
    // Leading zero groups shift the weight; trailing ones carry nothing.
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

fn group(chunk: &[u8]) -> i16 {
    chunk
        .iter()
        .fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'))
}

/// Encodes the rows of `batch` (columns named by `columns`, typed by `schema_columns`) and
/// writes them to `out`, a few hundred KB at a time.
pub fn write_batch(
    batch: &RecordBatch,
    schema_columns: &[&Column],
    out: &mut impl Write,
) -> Result<(), String> {
    let encoders: Vec<Encoder> = schema_columns
        .iter()
        .zip(batch.columns())
        .map(|(column, array)| Encoder::new(column, array))
        .collect::<Result<_, _>>()?;
    let width = (encoders.len() as i16).to_be_bytes();
    let mut buf = Vec::with_capacity(1 << 19);
    for row in 0..batch.num_rows() {
        buf.extend_from_slice(&width);
        for (encoder, column) in encoders.iter().zip(schema_columns) {
            encoder.write(row, column, &mut buf)?;
        }
        if buf.len() >= 1 << 19 {
            out.write_all(&buf).map_err(|e| e.to_string())?;
            buf.clear();
        }
    }
    out.write_all(&buf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int32Array;
    use arrow::datatypes::{Field, Schema as ArrowSchema};

    use super::*;

    fn numeric(value: i128, scale: u16) -> Vec<i16> {
        let mut out = Vec::new();
        write_numeric(value, scale, &mut out);
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_in_base_10000() {
        // [ndigits, weight, sign, dscale, digits...]
        assert_eq!(numeric(0, 9), [0, 0, 0, 9]);
        assert_eq!(numeric(12_345_000_000_000, 9), [2, 1, 0, 9, 1, 2345]);
        // 1.5 at scale 9
        assert_eq!(numeric(1_500_000_000, 9), [2, 0, 0, 9, 1, 5000]);
        // -0.000000001
        assert_eq!(numeric(-1, 9), [1, -3, 0x4000, 9, 1000]);
        // 123456789.123456789
        assert_eq!(
            numeric(123_456_789_123_456_789, 9),
            [6, 2, 0, 9, 1, 2345, 6789, 1234, 5678, 9000]
        );
        // 10000 at scale 0
        assert_eq!(numeric(10_000, 0), [1, 1, 0, 0, 1]);
    }

    #[test]
    fn integers_are_as_wide_as_their_column_type() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("a", ArrowType::Int64, true),
            Field::new("b", ArrowType::Int64, true),
            Field::new("c", ArrowType::Int64, true),
        ]));
        let batch = |a: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![a])),
                    Arc::new(Int64Array::from(vec![-2])),
                    Arc::new(Int64Array::from(vec![3])),
                ],
            )
            .unwrap()
        };
        let mut small = Column::new("a", DataType::Bigint);
        small.precision = Some(16);
        let mut int = Column::new("b", DataType::Bigint);
        int.precision = Some(32);
        let big = Column::new("c", DataType::Bigint);
        let mut out = Vec::new();
        write_batch(&batch(7), &[&small, &int, &big], &mut out).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&3i16.to_be_bytes());
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&7i16.to_be_bytes());
        want.extend_from_slice(&4i32.to_be_bytes());
        want.extend_from_slice(&(-2i32).to_be_bytes());
        want.extend_from_slice(&8i32.to_be_bytes());
        want.extend_from_slice(&3i64.to_be_bytes());
        assert_eq!(out, want);

        let err = write_batch(&batch(40_000), &[&small, &int, &big], &mut Vec::new()).unwrap_err();
        assert!(
            err.contains("column a") && err.contains("40000") && err.contains("smallint"),
            "{err}"
        );
    }

    #[test]
    fn rows_are_counted_fields_with_lengths_and_nulls_as_minus_one() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("id", ArrowType::Int32, true),
            Field::new("name", ArrowType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(7), None])),
                Arc::new(StringArray::from(vec![None, Some("é")])),
            ],
        )
        .unwrap();
        let id = Column::new("id", DataType::Bigint);
        let name = Column::new("name", DataType::Text);
        let mut out = Vec::new();
        write_batch(&batch, &[&id, &name], &mut out).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&2i16.to_be_bytes());
        want.extend_from_slice(&8i32.to_be_bytes());
        want.extend_from_slice(&7i64.to_be_bytes());
        want.extend_from_slice(&(-1i32).to_be_bytes());
        want.extend_from_slice(&2i16.to_be_bytes());
        want.extend_from_slice(&(-1i32).to_be_bytes());
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice("é".as_bytes());
        assert_eq!(out, want);
    }
}
