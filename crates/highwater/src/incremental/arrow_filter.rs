//! The incremental filter on Arrow batches: range comparisons with Arrow kernels on the cursor
//! column; only rows at the boundary value are looked at one by one (for boundary dedup).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, Scalar, StringArray};
use arrow::compute::kernels::cmp;
use arrow::compute::{and, cast, filter_record_batch, is_not_null, or};
use arrow::datatypes::{DataType as ArrowType, TimeUnit};
use arrow::record_batch::RecordBatch;

use serde_json::Value;

use super::stored::StoredForm;
use super::{Bound, CursorKind, CursorValue, IncrementalRun, LastValueFunc, OnCursorMissing};
use crate::error::Result;
use crate::typed_json::{self, Marker};

/// The cursor column in a comparable form, and its kind.
enum Comparable {
    Int(Int64Array),
    Float(Float64Array),
    Text(StringArray),
}

impl Comparable {
    fn array(&self) -> &dyn Array {
        match self {
            Comparable::Int(a) => a,
            Comparable::Float(a) => a,
            Comparable::Text(a) => a,
        }
    }

    /// A scalar of `value` in this column's representation.
    fn scalar(&self, value: &CursorValue) -> Option<Scalar<ArrayRef>> {
        let array: ArrayRef = match (self, value) {
            (Comparable::Int(_), CursorValue::Int(i)) => Arc::new(Int64Array::from(vec![*i])),
            (Comparable::Int(_), CursorValue::Timestamp(t)) => {
                Arc::new(Int64Array::from(vec![t.timestamp_micros()]))
            }
            (Comparable::Int(_), CursorValue::Date(d)) => {
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
                Arc::new(Int64Array::from(vec![(*d - epoch).num_days()]))
            }
            (Comparable::Float(_), CursorValue::Int(i)) => {
                Arc::new(Float64Array::from(vec![*i as f64]))
            }
            (Comparable::Float(_), CursorValue::Float(f)) => Arc::new(Float64Array::from(vec![*f])),
            (Comparable::Int(_), CursorValue::Float(f)) => Arc::new(Float64Array::from(vec![*f])),
            (Comparable::Text(_), CursorValue::Text(s)) => {
                Arc::new(StringArray::from(vec![s.as_str()]))
            }
            _ => return None,
        };
        Some(Scalar::new(array))
    }

    /// The typed value of row `i`.
    fn value(&self, i: usize, kind: CursorKind) -> Option<CursorValue> {
        if self.array().is_null(i) {
            return None;
        }
        Some(match (self, kind) {
            (Comparable::Int(a), CursorKind::Timestamp) => {
                CursorValue::Timestamp(chrono::DateTime::from_timestamp_micros(a.value(i))?)
            }
            (Comparable::Int(a), CursorKind::Date) => CursorValue::Date(
                chrono::NaiveDate::from_ymd_opt(1970, 1, 1)? + chrono::Duration::days(a.value(i)),
            ),
            (Comparable::Int(a), _) => CursorValue::Int(a.value(i)),
            (Comparable::Float(a), _) => CursorValue::Float(a.value(i)),
            (Comparable::Text(a), _) => CursorValue::Text(a.value(i).to_string()),
        })
    }
}

fn comparable(column: &ArrayRef) -> Result<(Comparable, CursorKind), String> {
    let fail = |e: arrow::error::ArrowError| e.to_string();
    Ok(match column.data_type() {
        ArrowType::Timestamp(_, _) => {
            let micros =
                cast(column, &ArrowType::Timestamp(TimeUnit::Microsecond, None)).map_err(fail)?;
            let ints = cast(&micros, &ArrowType::Int64).map_err(fail)?;
            (
                Comparable::Int(
                    ints.as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or("cast")?,
                ),
                CursorKind::Timestamp,
            )
        }
        ArrowType::Date32 | ArrowType::Date64 => {
            let days = cast(
                &cast(column, &ArrowType::Date32).map_err(fail)?,
                &ArrowType::Int32,
            )
            .map_err(fail)?;
            let ints = cast(&days, &ArrowType::Int64).map_err(fail)?;
            (
                Comparable::Int(
                    ints.as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or("cast")?,
                ),
                CursorKind::Date,
            )
        }
        t if t.is_integer() => {
            let ints = cast(column, &ArrowType::Int64).map_err(fail)?;
            (
                Comparable::Int(
                    ints.as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or("cast")?,
                ),
                CursorKind::Number,
            )
        }
        t if t.is_floating() || matches!(t, ArrowType::Decimal128(_, _)) => {
            let floats = cast(column, &ArrowType::Float64).map_err(fail)?;
            (
                Comparable::Float(
                    floats
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .cloned()
                        .ok_or("cast")?,
                ),
                CursorKind::Number,
            )
        }
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => {
            let strings = cast(column, &ArrowType::Utf8).map_err(fail)?;
            (
                Comparable::Text(
                    strings
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .cloned()
                        .ok_or("cast")?,
                ),
                CursorKind::Text,
            )
        }
        other => return Err(format!("Arrow type {other} cannot be a cursor")),
    })
}

impl IncrementalRun {
    /// Keeps the rows of `batch` in range and moves the last value, as [`Self::filter`] does for
    /// JSON items (only `max` and `min` are supported on Arrow, as in dlt).
    pub(crate) fn filter_batch(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        if matches!(self.config.last_value_func, LastValueFunc::Custom(_)) {
            return Err(self.error(
                "",
                "a custom last_value_func cannot filter Arrow batches (use max or min)".into(),
            ));
        }
        let Some(field) = self.config.cursor_path.single_field().map(str::to_string) else {
            return Err(self.error("", "Arrow batches need a top-level column as cursor".into()));
        };
        let Some(column) = batch.column_by_name(&field).cloned() else {
            return match self.config.on_cursor_value_missing {
                OnCursorMissing::Include => Ok(batch.clone()),
                OnCursorMissing::Exclude => Ok(batch.slice(0, 0)),
                OnCursorMissing::Raise => {
                    Err(self.error("", format!("Arrow batch has no column {field:?}")))
                }
            };
        };
        let (values, kind) = comparable(&column).map_err(|e| self.error("", e))?;
        if self.kind.is_none() {
            self.resolve(kind, &"")?;
        } else if self.kind != Some(kind)
            && !(self.kind == Some(CursorKind::Number) && kind == CursorKind::Number)
        {
            return Err(self.error(
                "",
                format!(
                    "Arrow column {field:?} holds {} values but the cursor is {}",
                    kind.name(),
                    self.kind.map_or("?", CursorKind::name)
                ),
            ));
        }
        let max = !matches!(self.config.last_value_func, LastValueFunc::Min);
        let kernel_error = |e: arrow::error::ArrowError| e.to_string();
        let array = values.array();
        let present = is_not_null(array).map_err(|e| self.error("", kernel_error(e)))?;
        let mut mask = present.clone();
        if let Some(start) = &self.start {
            let scalar = values.scalar(start).ok_or_else(|| {
                self.error("", "start value does not match the column type".into())
            })?;
            let keep = match (max, self.config.range_start) {
                (true, Bound::Closed) => cmp::gt_eq(&array, &scalar),
                (true, Bound::Open) => cmp::gt(&array, &scalar),
                (false, Bound::Closed) => cmp::lt_eq(&array, &scalar),
                (false, Bound::Open) => cmp::lt(&array, &scalar),
            }
            .map_err(|e| self.error("", kernel_error(e)))?;
            mask = and(&mask, &keep).map_err(|e| self.error("", kernel_error(e)))?;
        }
        if let Some(end) = &self.end {
            let scalar = values
                .scalar(end)
                .ok_or_else(|| self.error("", "end value does not match the column type".into()))?;
            let keep = match (max, self.config.range_end) {
                (true, Bound::Open) => cmp::lt(&array, &scalar),
                (true, Bound::Closed) => cmp::lt_eq(&array, &scalar),
                (false, Bound::Open) => cmp::gt(&array, &scalar),
                (false, Bound::Closed) => cmp::gt_eq(&array, &scalar),
            }
            .map_err(|e| self.error("", kernel_error(e)))?;
            self.end_out_of_range = keep.false_count() > present.false_count();
            mask = and(&mask, &keep).map_err(|e| self.error("", kernel_error(e)))?;
        }
        self.start_out_of_range =
            mask.true_count() < present.true_count() && !self.end_out_of_range;
        if self.config.on_cursor_value_missing == OnCursorMissing::Include {
            let missing =
                arrow::compute::not(&present).map_err(|e| self.error("", kernel_error(e)))?;
            mask = or(&mask, &missing).map_err(|e| self.error("", kernel_error(e)))?;
        } else if self.config.on_cursor_value_missing == OnCursorMissing::Raise
            && present.false_count() > 0
        {
            return Err(self.error("", format!("Arrow column {field:?} has null cursor values")));
        }

        // Boundary rows, one by one: dedup against the previous run and track the new last value.
        let mut keep: Vec<bool> = (0..mask.len())
            .map(|i| mask.value(i) && !mask.is_null(i))
            .collect();
        if self.fresh && matches!(kind, CursorKind::Timestamp | CursorKind::Date) {
            // As dlt: Arrow cursors are datetimes and dates, stored in typed JSON.
            self.form = StoredForm::Typed {
                marker: if kind == CursorKind::Date {
                    Marker::Date
                } else {
                    Marker::DateTime
                },
                naive: matches!(column.data_type(), ArrowType::Timestamp(_, None)),
            };
        }
        let key_columns: Vec<(String, ArrayRef)> = match &self.dedup_key {
            Some(key) => key
                .iter()
                .filter_map(|k| batch.column_by_name(k).map(|c| (k.clone(), c.clone())))
                .collect(),
            None => batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| (f.name().clone(), c.clone()))
                .collect(),
        };
        let whole_row = self.dedup_key.is_none();
        let row_key = |i: usize| -> String {
            let value = if whole_row {
                Value::Object(
                    key_columns
                        .iter()
                        .map(|(name, c)| (name.clone(), key_value(c, i)))
                        .collect(),
                )
            } else if let [(_, c)] = key_columns.as_slice() {
                key_value(c, i)
            } else {
                Value::Array(key_columns.iter().map(|(_, c)| key_value(c, i)).collect())
            };
            String::from_utf8_lossy(&typed_json::canonical(&value)).into_owned()
        };
        for (i, kept) in keep.iter_mut().enumerate() {
            if !*kept {
                continue;
            }
            let Some(value) = values.value(i, kind) else {
                continue;
            };
            let is_new_best = self
                .last
                .as_ref()
                .is_none_or(|last| self.better(&value, last).is_gt());
            if is_new_best {
                self.last = Some(value);
                self.set_last_text(None);
                if self.dedup {
                    self.hashes.clear();
                    self.hashes_legacy = false;
                    self.best_key = Some(row_key(i));
                }
            } else if self.dedup {
                let at_start = self
                    .start
                    .as_ref()
                    .is_some_and(|s| value.compare(s).is_eq());
                if at_start && self.was_loaded(&row_key(i)) {
                    *kept = false;
                    self.start_out_of_range = true;
                    continue;
                }
                if self.last.as_ref().is_some_and(|l| value.compare(l).is_eq()) {
                    self.add_boundary_row(&row_key(i));
                }
            }
            self.kept_rows += 1;
        }
        filter_record_batch(batch, &BooleanArray::from(keep))
            .map_err(|e| self.error("", e.to_string()))
    }
}

/// Row `i` of a key column as dlt's dedup hash sees it (`to_pylist()` of the column, dumped as
/// JSON): numbers and booleans as such, datetimes as microseconds since the epoch (dlt 1.31),
/// dates and decimals as their text, the rest as text.
fn key_value(column: &ArrayRef, i: usize) -> Value {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float32Type, Float64Type};
    if column.is_null(i) {
        return Value::Null;
    }
    let data_type = column.data_type();
    if data_type.is_integer() {
        if let Ok(ints) = cast(&column.slice(i, 1), &ArrowType::Int64) {
            return Value::from(ints.as_primitive::<arrow::datatypes::Int64Type>().value(0));
        }
    }
    match data_type {
        ArrowType::Boolean => Value::Bool(column.as_boolean().value(i)),
        ArrowType::Float64 => Value::from(column.as_primitive::<Float64Type>().value(i)),
        ArrowType::Float32 => Value::from(f64::from(column.as_primitive::<Float32Type>().value(i))),
        ArrowType::Timestamp(_, _) => {
            match cast(
                &column.slice(i, 1),
                &ArrowType::Timestamp(TimeUnit::Microsecond, None),
            )
            .and_then(|micros| cast(&micros, &ArrowType::Int64))
            {
                Ok(micros) => Value::from(
                    micros
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(0),
                ),
                Err(_) => Value::Null,
            }
        }
        _ => Value::String(
            arrow::util::display::array_value_to_string(column, i).unwrap_or_default(),
        ),
    }
}
