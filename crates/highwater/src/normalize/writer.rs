//! Column builders per table, flushed in bounded chunks to Parquet files in the load package.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float64Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType as ArrowType, Field, Schema as ArrowSchema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::coerce::{Cell, DECIMAL_SCALE};
use super::CHUNK_ROWS;

/// The most values a chunk holds: [`CHUNK_ROWS`] rows of 80 columns.
const MAX_CHUNK_CELLS: usize = CHUNK_ROWS * 80;
use crate::error::{Error, Result};
use crate::integrity::CheckedWriter;
use crate::package::TableFile;
use crate::schema::DataType;

/// The Arrow type a column of `data_type` is written as.
pub fn arrow_type(data_type: DataType) -> ArrowType {
    match data_type {
        DataType::Text | DataType::Json => ArrowType::Utf8,
        DataType::Bigint => ArrowType::Int64,
        DataType::Double => ArrowType::Float64,
        DataType::Bool => ArrowType::Boolean,
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        DataType::Date => ArrowType::Date32,
        DataType::Time => ArrowType::Time64(TimeUnit::Microsecond),
        DataType::Decimal => ArrowType::Decimal128(38, DECIMAL_SCALE as i8),
        DataType::Binary => ArrowType::Binary,
    }
}

enum Builder {
    Text(StringBuilder),
    Bigint(Int64Builder),
    Double(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Decimal(Decimal128Builder),
    Binary(BinaryBuilder),
}

impl Builder {
    fn new(data_type: DataType) -> Self {
        match data_type {
            DataType::Text | DataType::Json => Builder::Text(StringBuilder::new()),
            DataType::Bigint => Builder::Bigint(Int64Builder::new()),
            DataType::Double => Builder::Double(Float64Builder::new()),
            DataType::Bool => Builder::Bool(BooleanBuilder::new()),
            DataType::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("+00:00"))
            }
            DataType::Date => Builder::Date(Date32Builder::new()),
            DataType::Time => Builder::Time(Time64MicrosecondBuilder::new()),
            DataType::Decimal => Builder::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(38, DECIMAL_SCALE as i8)
                    .unwrap_or_default(),
            ),
            DataType::Binary => Builder::Binary(BinaryBuilder::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Text(b) => b.len(),
            Builder::Bigint(b) => b.len(),
            Builder::Double(b) => b.len(),
            Builder::Bool(b) => b.len(),
            Builder::Timestamp(b) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Time(b) => b.len(),
            Builder::Decimal(b) => b.len(),
            Builder::Binary(b) => b.len(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Text(b) => b.append_null(),
            Builder::Bigint(b) => b.append_null(),
            Builder::Double(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
        }
    }

    /// Appends a cell; the cell was coerced to this column's type, so kinds always match.
    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (Builder::Text(b), Cell::Text(s)) => b.append_value(s),
            (Builder::Bigint(b), Cell::Bigint(v)) => b.append_value(v),
            (Builder::Double(b), Cell::Double(v)) => b.append_value(v),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Timestamp(b), Cell::Timestamp(v)) => b.append_value(v),
            (Builder::Date(b), Cell::Date(v)) => b.append_value(v),
            (Builder::Time(b), Cell::Time(v)) => b.append_value(v),
            (Builder::Decimal(b), Cell::Decimal(v)) => b.append_value(v),
            (Builder::Binary(b), Cell::Binary(v)) => b.append_value(v),
            (builder, _) => builder.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bigint(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Decimal(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
        }
    }
}

struct OpenFile {
    writer: ArrowWriter<CheckedWriter<File>>,
    file: TableFile,
    arrow_schema: Arc<ArrowSchema>,
}

/// The rows of one table being built: a builder per column plus the file being written.
pub struct TableWriter {
    table: String,
    names: Vec<String>,
    index: foldhash::HashMap<String, usize>,
    /// The column [`Self::lookup`] tries first.
    next_guess: std::cell::Cell<usize>,
    types: Vec<DataType>,
    hinted: Vec<bool>,
    not_null: Vec<usize>,
    builders: Vec<Builder>,
    rows: usize,
    open: Option<OpenFile>,
    files: Vec<TableFile>,
    next_file: usize,
    file_prefix: String,
    dir: PathBuf,
}

impl TableWriter {
    /// A writer for `table` that writes files into `dir`.
    pub fn new(table: &str, dir: &Path) -> Self {
        TableWriter {
            table: table.to_string(),
            names: Vec::new(),
            index: foldhash::HashMap::default(),
            next_guess: std::cell::Cell::new(0),
            types: Vec::new(),
            hinted: Vec::new(),
            not_null: Vec::new(),
            builders: Vec::new(),
            rows: 0,
            open: None,
            files: Vec::new(),
            next_file: 0,
            file_prefix: String::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Rows buffered and not yet flushed.
    pub fn buffered_rows(&self) -> usize {
        self.rows
    }

    /// Rows a chunk of this table holds: [`CHUNK_ROWS`], fewer for a table so wide that a
    /// chunk would hold more than [`MAX_CHUNK_CELLS`] values. What buffers a chunk (these
    /// builders, the Parquet writer, DuckDB's reader of the row group) then stays bounded
    /// whatever the width.
    pub fn chunk_rows(&self) -> usize {
        (MAX_CHUNK_CELLS / self.names.len().max(1)).clamp(1, CHUNK_ROWS)
    }

    /// Writes a full chunk as a row group of its own.
    pub fn flush_chunk(&mut self) -> Result<()> {
        self.flush()?;
        if let Some(open) = &mut self.open {
            open.writer
                .flush()
                .map_err(|e| columnar_error(&self.dir.join(&open.file.file), e))?;
        }
        Ok(())
    }

    /// Index, type and whether the type was declared, of a column this writer has.
    ///
    /// Rows of a table mostly list their columns in the same order, so the column after the one
    /// looked up last is tried first: one comparison instead of hashing the name.
    pub fn lookup(&self, column: &str) -> Option<(usize, DataType, bool)> {
        let guess = self.next_guess.get();
        let i = match self.names.get(guess) {
            Some(name) if name == column => guess,
            _ => *self.index.get(column)?,
        };
        self.next_guess.set(i + 1);
        Some((i, self.types[i], self.hinted[i]))
    }

    /// The first NOT NULL column without a value in the current row.
    pub fn missing_not_null(&self) -> Option<&str> {
        self.not_null
            .iter()
            .find(|&&i| self.builders[i].len() <= self.rows)
            .map(|&i| self.names[i].as_str())
    }

    /// Index of `column`, adding it (null for the rows buffered so far) when new.
    pub fn column_index(
        &mut self,
        column: &str,
        data_type: DataType,
        hinted: bool,
        not_null: bool,
    ) -> usize {
        if let Some(&i) = self.index.get(column) {
            return i;
        }
        let mut builder = Builder::new(data_type);
        for _ in 0..self.rows {
            builder.append_null();
        }
        self.names.push(column.to_string());
        self.index.insert(column.to_string(), self.names.len() - 1);
        self.types.push(data_type);
        self.hinted.push(hinted);
        self.builders.push(builder);
        let i = self.names.len() - 1;
        if not_null {
            self.not_null.push(i);
        }
        i
    }

    /// Index of `column` if the writer has it.
    pub fn index_of(&self, column: &str) -> Option<usize> {
        self.index.get(column).copied()
    }

    /// Sets a cell of the current row.
    pub fn set(&mut self, index: usize, cell: Cell) {
        let builder = &mut self.builders[index];
        if builder.len() > self.rows {
            // A second value for the same column in one row cannot happen: names are unique.
            return;
        }
        builder.append(cell);
    }

    /// Sets a text cell of the current row without an intermediate copy.
    pub fn set_str(&mut self, index: usize, text: &str) {
        let rows = self.rows;
        if let Builder::Text(b) = &mut self.builders[index] {
            if b.len() <= rows {
                b.append_value(text);
            }
        }
    }

    /// Whether the current row already has a value for column `index`.
    pub fn is_set(&self, index: usize) -> bool {
        self.builders[index].len() > self.rows
    }

    /// Ends the current row: columns without a value get NULL.
    pub fn end_row(&mut self) {
        self.rows += 1;
        for builder in &mut self.builders {
            if builder.len() < self.rows {
                builder.append_null();
            }
        }
    }

    /// Writes the buffered rows to the table's current file (a new file when columns changed).
    pub fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let fields: Vec<Field> = self
            .names
            .iter()
            .zip(&self.types)
            .map(|(name, t)| Field::new(name, arrow_type(*t), true))
            .collect();
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), arrays)
            .map_err(|e| columnar_error(&self.dir, e))?;
        self.rows = 0;
        self.append(&batch)
    }

    /// Writes a ready batch (Arrow items): buffered rows go first, then the batch, in order.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.flush()?;
        self.append(batch)
    }

    /// Appends a batch to the current file, starting a new file when the columns differ.
    fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        let arrow_schema = batch.schema();
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.arrow_schema != arrow_schema)
        {
            self.close_file()?;
        }
        if self.open.is_none() {
            let columns = arrow_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            self.open_file(arrow_schema, columns)?;
        }
        if let Some(open) = &mut self.open {
            open.writer
                .write(batch)
                .map_err(|e| columnar_error(&self.dir.join(&open.file.file), e))?;
            open.file.rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    fn open_file(&mut self, arrow_schema: Arc<ArrowSchema>, columns: Vec<String>) -> Result<()> {
        let name = format!(
            "{}.{}{}.parquet",
            file_stem(&self.table),
            self.file_prefix,
            self.next_file
        );
        self.next_file += 1;
        let path = self.dir.join(&name);
        let file = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            // The load reads these files whole: min/max statistics would cost a comparison per
            // value and skip nothing.
            .set_statistics_enabled(EnabledStatistics::None)
            // One row group per chunk, so DuckDB reads a file with all its threads.
            .set_max_row_group_row_count(Some(CHUNK_ROWS))
            .build();
        let writer =
            ArrowWriter::try_new(CheckedWriter::new(file), arrow_schema.clone(), Some(props))
                .map_err(|e| columnar_error(&path, e))?;
        self.open = Some(OpenFile {
            writer,
            file: TableFile {
                table: self.table.clone(),
                file: name,
                columns,
                rows: 0,
                check: None,
            },
            arrow_schema,
        });
        Ok(())
    }

    fn close_file(&mut self) -> Result<()> {
        if let Some(mut open) = self.open.take() {
            let path = self.dir.join(&open.file.file);
            let (file, check) = open
                .writer
                .into_inner()
                .map_err(|e| columnar_error(&path, e))?
                .into_parts();
            file.sync_all()
                .map_err(|e| Error::io("syncing", &path, e))?;
            open.file.check = Some(check);
            self.files.push(open.file);
        }
        Ok(())
    }

    /// Names files `<table>.<prefix><n>.parquet`.
    pub fn set_file_prefix(&mut self, prefix: &str) {
        self.file_prefix = prefix.to_string();
    }

    /// Flushes, closes the current file and hands over the files written so far.
    pub fn end_segment(&mut self) -> Result<Vec<TableFile>> {
        self.flush()?;
        self.close_file()?;
        Ok(std::mem::take(&mut self.files))
    }

    /// Flushes and closes; returns the files written, in order.
    pub fn finish(mut self) -> Result<Vec<TableFile>> {
        self.flush()?;
        self.close_file()?;
        Ok(self.files)
    }
}

/// Table names longer than this are shortened in file names: a file name has at most 255 bytes,
/// and a table of lists nested a few dozen levels deep has a longer name (dlt fails on those).
const MAX_FILE_STEM: usize = 120;

/// The start of a file's name for `table`: the name itself, or when too long, its head and a
/// hash of the whole name (names are ASCII, as the naming convention makes them).
fn file_stem(table: &str) -> std::borrow::Cow<'_, str> {
    if table.len() <= MAX_FILE_STEM || !table.is_ascii() {
        return table.into();
    }
    let tag = crate::hash::shake128_b64(table.as_bytes(), 12).replace(['/', '+'], "_");
    format!("{}~{tag}", &table[..MAX_FILE_STEM - 20]).into()
}

fn columnar_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Columnar {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
