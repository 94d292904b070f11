//! Data files as dlt writes them: every column of the table in schema order (nulls where the
//! load had none), dlt's Arrow types (`timestamp[us, tz=UTC]`, naive timestamps without a
//! zone, `decimal128(p, s)`, JSON as text), NOT NULL where the schema says so, snappy, with
//! statistics for readers to prune by. Streamed from the package file to the store, a row group
//! at a time.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::{DataType as ArrowType, Field, Schema as ArrowSchema, TimeUnit};
use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

use crate::error::Error;
use crate::schema::{Column, DataType, Table};

/// A failure of the store (the caller names the destination) or of anything else.
pub enum WriteError {
    Store(object_store::Error),
    Other(Error),
}

impl From<object_store::Error> for WriteError {
    fn from(e: object_store::Error) -> Self {
        WriteError::Store(e)
    }
}

/// The Arrow type dlt writes a column of this type as.
fn lake_type(column: &Column) -> ArrowType {
    match column.data_type {
        DataType::Text | DataType::Json => ArrowType::Utf8,
        DataType::Bigint => ArrowType::Int64,
        DataType::Double => ArrowType::Float64,
        DataType::Bool => ArrowType::Boolean,
        DataType::Timestamp if column.timezone == Some(false) => {
            ArrowType::Timestamp(TimeUnit::Microsecond, None)
        }
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Date => ArrowType::Date32,
        DataType::Time => ArrowType::Time64(TimeUnit::Microsecond),
        DataType::Decimal => ArrowType::Decimal128(
            column.precision.unwrap_or(38).min(38) as u8,
            column
                .scale
                .unwrap_or(crate::normalize::coerce::DECIMAL_SCALE) as i8,
        ),
        DataType::Binary => ArrowType::Binary,
    }
}

/// The Arrow schema of `table`'s files.
pub fn lake_schema(table: &Table) -> Arc<ArrowSchema> {
    Arc::new(ArrowSchema::new(
        table
            .columns
            .values()
            .map(|c| Field::new(&c.name, lake_type(c), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Writes the package file `source` (holding `columns` of `table`) to `target`; with no source,
/// a file of no rows (dlt's mark of a replaced table that received none: readers see the
/// table, empty, instead of no table).
pub async fn write_table_file(
    store: Arc<dyn ObjectStore>,
    target: &ObjectPath,
    table: &Table,
    columns: &[String],
    source: Option<&Path>,
) -> Result<(), WriteError> {
    let columnar = |message: String| {
        WriteError::Other(Error::Columnar {
            path: source.map_or_else(|| target.as_ref().into(), Path::to_path_buf),
            message,
        })
    };
    let reader = match source {
        Some(source) => {
            let file = File::open(source)
                .map_err(|e| WriteError::Other(Error::io("opening", source, e)))?;
            Some(
                ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| columnar(e.to_string()))?
                    .build()
                    .map_err(|e| columnar(e.to_string()))?,
            )
        }
        None => None,
    };
    let schema = lake_schema(table);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = AsyncArrowWriter::try_new(
        BufWriter::new(store, target.clone()),
        schema.clone(),
        Some(props),
    )
    .map_err(|e| columnar(e.to_string()))?;
    for batch in reader.into_iter().flatten() {
        let batch = batch.map_err(|e| columnar(e.to_string()))?;
        let batch = to_lake_batch(&batch, table, columns, &schema).map_err(columnar)?;
        writer
            .write(&batch)
            .await
            .map_err(|e| columnar(format!("writing {target}: {e}")))?;
    }
    // The object appears only now (a completed upload, or a renamed local file).
    writer
        .close()
        .await
        .map_err(|e| columnar(format!("writing {target}: {e}")))?;
    Ok(())
}

/// A package batch as a batch of the table's full schema.
fn to_lake_batch(
    batch: &RecordBatch,
    table: &Table,
    columns: &[String],
    schema: &Arc<ArrowSchema>,
) -> Result<RecordBatch, String> {
    let rows = batch.num_rows();
    let arrays: Vec<ArrayRef> = table
        .columns
        .values()
        .zip(schema.fields())
        .map(
            |(column, field)| match columns.iter().position(|c| *c == column.name) {
                Some(i) if i < batch.num_columns() => {
                    let array = batch.column(i);
                    if array.data_type() == field.data_type() {
                        Ok(array.clone())
                    } else {
                        cast(array, field.data_type())
                            .map_err(|e| format!("column {}: {e}", column.name))
                    }
                }
                _ => Ok(new_null_array(field.data_type(), rows)),
            },
        )
        .collect::<Result<_, String>>()?;
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| format!("table {}: {e}", table.name))
}

/// Rows of a data file, from its footer.
pub async fn row_count(
    store: Arc<dyn ObjectStore>,
    object: &ObjectMeta,
) -> Result<u64, WriteError> {
    let size = object.size;
    let corrupt = |detail: String| {
        WriteError::Other(Error::Corrupt {
            what: format!("data file {}", object.location),
            detail,
        })
    };
    if size < 8 {
        return Err(corrupt("too short for Parquet".into()));
    }
    let tail = store.get_range(&object.location, size - 8..size).await?;
    let tail: [u8; 8] = tail[..]
        .try_into()
        .map_err(|_| corrupt("short read".into()))?;
    let footer = FooterTail::try_new(&tail).map_err(|e| corrupt(e.to_string()))?;
    let len = footer.metadata_length() as u64;
    if len + 8 > size {
        return Err(corrupt("footer longer than the file".into()));
    }
    let metadata = store
        .get_range(&object.location, size - 8 - len..size - 8)
        .await?;
    let metadata =
        ParquetMetaDataReader::decode_metadata(&metadata).map_err(|e| corrupt(e.to_string()))?;
    Ok(metadata.file_metadata().num_rows().max(0) as u64)
}
