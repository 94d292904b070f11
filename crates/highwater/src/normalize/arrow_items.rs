//! Arrow items: batches pass through with their columns named by the naming convention and typed
//! by their Arrow types (no per-row JSON). As in dlt, no `_dlt_*` columns are added to them.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType as ArrowType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::writer::arrow_type;
use super::Normalizer;
use crate::error::{Error, Result};
use crate::schema::{DataType, MergeStrategy};

/// The schema type of an Arrow column, or `None` when highwater cannot store it.
pub fn data_type_of(arrow: &ArrowType) -> Option<DataType> {
    Some(match arrow {
        ArrowType::Boolean => DataType::Bool,
        ArrowType::Int8
        | ArrowType::Int16
        | ArrowType::Int32
        | ArrowType::Int64
        | ArrowType::UInt8
        | ArrowType::UInt16
        | ArrowType::UInt32 => DataType::Bigint,
        ArrowType::UInt64 => DataType::Decimal,
        ArrowType::Float16 | ArrowType::Float32 | ArrowType::Float64 => DataType::Double,
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => DataType::Text,
        ArrowType::Timestamp(_, _) => DataType::Timestamp,
        ArrowType::Date32 | ArrowType::Date64 => DataType::Date,
        ArrowType::Time32(_) | ArrowType::Time64(_) => DataType::Time,
        ArrowType::Decimal128(_, _) | ArrowType::Decimal256(_, _) => DataType::Decimal,
        ArrowType::Binary
        | ArrowType::LargeBinary
        | ArrowType::BinaryView
        | ArrowType::FixedSizeBinary(_) => DataType::Binary,
        _ => return None,
    })
}

impl Normalizer<'_> {
    /// Normalizes the Arrow items of `root` stored in the Parquet file at `path`.
    pub fn push_arrow_file(&mut self, root: &str, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let columnar = |e: parquet::errors::ParquetError| Error::Columnar {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(columnar)?
            .build()
            .map_err(columnar)?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::Columnar {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            self.push_arrow_batch(root, &batch)?;
        }
        Ok(())
    }

    fn push_arrow_batch(&mut self, root: &str, batch: &RecordBatch) -> Result<()> {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            // As dlt: Arrow column names are normalized as paths whatever the schema says.
            let name = self.normalize_path_key(field.name());
            let table = self
                .schema
                .tables
                .get(root)
                .ok_or_else(|| Error::Config(format!("table {root} was not prepared")))?;
            let data_type = match table.columns.get(&name) {
                Some(column) => column.data_type,
                None => {
                    let data_type = data_type_of(field.data_type()).ok_or_else(|| {
                        Error::Config(format!(
                            "table {root}, column {name}: Arrow type {} is not supported",
                            field.data_type()
                        ))
                    })?;
                    // The table's hints (keys, scd2 version) apply as to any new column.
                    self.add_column(root, &name, data_type, false);
                    if let (ArrowType::Decimal128(p, s), Some(column)) = (
                        field.data_type(),
                        self.schema
                            .tables
                            .get_mut(root)
                            .and_then(|t| t.columns.get_mut(&name)),
                    ) {
                        column.precision = Some(u32::from(*p));
                        column.scale = Some((*s).max(0) as u32);
                    }
                    data_type
                }
            };
            let target = match (data_type, field.data_type()) {
                (DataType::Decimal, ArrowType::Decimal128(p, s)) => ArrowType::Decimal128(*p, *s),
                (t, _) => arrow_type(t),
            };
            let converted = cast(array, &target).map_err(|e| Error::CannotCoerce {
                location: String::new(),
                table: root.to_string(),
                column: name.clone(),
                data_type: data_type.name(),
                value: format!("Arrow column of type {} ({e})", field.data_type()),
            })?;
            fields.push(Field::new(name, target, true));
            arrays.push(converted);
        }
        if let Some(table) = self.schema.tables.get(root) {
            if table.merge_strategy == Some(MergeStrategy::Scd2)
                && table.row_version_column().is_none()
            {
                return Err(Error::Config(format!(
                    "table {root}: merge strategy scd2 tells versions apart by the hash of each item in _dlt_id, which Arrow batches do not have: add a column holding a hash of the row and name it in row_version_column_name"
                )));
            }
        }
        let out = RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), arrays)
            .map_err(|e| Error::Config(format!("table {root}: {e}")))?;
        let dir = self.dir.clone();
        let writer = self
            .writers
            .entry(root.to_string())
            .or_insert_with(|| super::writer::TableWriter::new(root, &dir));
        writer.write_batch(&out)
    }
}
