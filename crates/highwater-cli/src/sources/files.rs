//! File sources: `jsonl` (one JSON value per line) and `json` (one document: an array of
//! objects or one object), from a glob read in byte order of the full path; `.gz` files are
//! decompressed. Every item carries its `PATH:LINE` so errors can name it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use highwater::{Error, Item, Resource};

use super::read_ahead::ReadAhead;
use serde_json::Value;

/// The format of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// JSON Lines.
    Jsonl,
    /// One JSON document per file.
    Json,
    /// Comma-separated values with a header line; values typed as numbers, booleans or text.
    Csv,
    /// Parquet, read as Arrow batches.
    Parquet,
}

/// How CSV cells become values.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// Keep every cell as the text it is (`infer_types = false`).
    pub all_text: bool,
    /// Columns with a `data_type` hint: their cells stay text, and the hint converts them, so
    /// `01234` in a `text` column stays `01234`. Matched with the header after dlt's naming.
    pub hinted_columns: Vec<String>,
}

impl CsvOptions {
    /// For each header, whether its cells stay text.
    fn raw_text(&self, headers: &[String]) -> Vec<bool> {
        let naming = highwater::naming::Naming::default();
        let hinted: Vec<String> = self
            .hinted_columns
            .iter()
            .map(|c| naming.normalize_path(c))
            .collect();
        headers
            .iter()
            .map(|h| self.all_text || hinted.contains(&naming.normalize_path(h)))
            .collect()
    }
}

/// Whether a source path is a glob (else a plain path, which must exist).
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Rows per Arrow batch read from Parquet files.
const PARQUET_BATCH_ROWS: usize = 50_000;

/// The files a glob (or plain path) matches, sorted by full path.
pub fn matching_files(pattern: &Path) -> Result<Vec<PathBuf>, Error> {
    let text = pattern.to_string_lossy();
    let paths = glob::glob(&text)
        .map_err(|e| Error::Config(format!("path {text:?} is not a valid glob: {e}")))?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .collect();
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(files)
}

fn open(path: &Path) -> Result<Box<dyn Read + Send>, Error> {
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Where a file source keeps the files it loaded (`skip_loaded_files`): path → modification time.
const LOADED_FILES_KEY: &str = "loaded_files";

/// A resource named `name` reading the files `pattern` matches. With `skip_loaded_files`, files
/// whose path and modification time are in the resource state are skipped, and the files read
/// are added to it (committed with the data).
pub fn file_resource(
    name: &str,
    pattern: PathBuf,
    format: FileFormat,
    skip_loaded_files: bool,
    csv: CsvOptions,
) -> Resource {
    Resource::new(name, move |ctx| {
        let mut files = matching_files(&pattern)?;
        if files.is_empty() {
            tracing::warn!(path = %pattern.display(), "no file matches the source path");
        }
        if skip_loaded_files {
            files = ctx.with_resource_state(|state| {
                let loaded = state
                    .entry(LOADED_FILES_KEY)
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                let mut unread = Vec::new();
                for path in files {
                    let key = path.display().to_string();
                    let modified = modified_time(&path);
                    if loaded.get(&key).and_then(Value::as_str) == Some(modified.as_str()) {
                        continue;
                    }
                    loaded[key.as_str()] = Value::String(modified);
                    unread.push(path);
                }
                unread
            });
        }
        let csv = csv.clone();
        let iter = files.into_iter().flat_map(
            move |path| -> Box<dyn Iterator<Item = Result<Item, Error>> + Send> {
                match format {
                    FileFormat::Jsonl => match JsonLines::open(&path) {
                        Ok(lines) => Box::new(ReadAhead::spawn(lines)),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    },
                    FileFormat::Json => match read_json_document(&path) {
                        Ok(items) => Box::new(items.into_iter().map(Ok)),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    },
                    FileFormat::Csv => match csv_rows(&path, &csv) {
                        Ok(rows) => Box::new(rows),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    },
                    FileFormat::Parquet => match parquet_batches(&path) {
                        Ok(batches) => Box::new(batches),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    },
                }
            },
        );
        Ok(iter)
    })
}

/// A file's modification time as text (nanoseconds since the epoch), empty when unknown.
fn modified_time(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default()
}

/// Bytes of a JSON Lines file per item: whole lines, so about this much text at a time.
const JSON_LINES_BLOCK: usize = 1 << 20;

/// Reads a JSON Lines file as blocks of whole lines (`Item::RawJsonLines`).
struct JsonLines {
    reader: Box<dyn Read + Send>,
    path: Arc<str>,
    /// The 1-based line number of the next block's first line.
    next_line: u64,
    /// The start of a line the last read cut off, carried into the next block.
    carry: Vec<u8>,
    done: bool,
}

impl JsonLines {
    fn open(path: &Path) -> Result<Self, Error> {
        Ok(JsonLines {
            reader: open(path)?,
            path: Arc::from(path.display().to_string()),
            next_line: 1,
            carry: Vec::new(),
            done: false,
        })
    }

    /// The next block: at least one whole line (the last line of the file may lack its line
    /// break); `None` at the end.
    fn read_block(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut block = std::mem::take(&mut self.carry);
        block.reserve(JSON_LINES_BLOCK);
        loop {
            let start = block.len();
            let read = (&mut self.reader)
                .take(JSON_LINES_BLOCK as u64)
                .read_to_end(&mut block)?;
            if read == 0 {
                self.done = true;
                return Ok((!block.is_empty()).then_some(block));
            }
            // A line longer than a block makes the block grow until the line ends.
            if let Some(end) = memchr::memrchr(b'\n', &block[start..]) {
                let end = start + end + 1;
                self.carry = block[end..].to_vec();
                block.truncate(end);
                return Ok(Some(block));
            }
        }
    }
}

impl Iterator for JsonLines {
    type Item = Result<Item, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_block() {
            Ok(Some(bytes)) if self.next_line == 1 && bytes.starts_with(UTF8_BOM) => {
                self.done = true;
                Some(Err(byte_order_mark(&self.path)))
            }
            Ok(Some(bytes)) => {
                // Parsed later, only where needed (extract passes lines through when it can).
                // The line ends are found here, on the reading thread.
                let item = Item::json_lines(bytes, self.path.clone(), self.next_line);
                if let Item::RawJsonLines { line_ends, .. } = &item {
                    self.next_line += line_ends.len() as u64;
                }
                Some(Ok(item))
            }
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(Error::io("reading", self.path.as_ref(), e)))
            }
        }
    }
}

/// UTF-8's byte order mark: JSON text must not start with one (RFC 8259, section 8.1), and dlt's
/// JSON reader refuses it.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The refusal of a JSON or JSON Lines file that starts with a byte order mark.
fn byte_order_mark(file: &str) -> Error {
    Error::InvalidJson {
        location: format!("{file}:1"),
        message: "the file starts with a UTF-8 byte order mark (BOM), which JSON does not allow \
                  (dlt refuses it too): save it as UTF-8 without a BOM"
            .into(),
    }
}

/// Reads a JSON document: an array's elements are items (each with its line), or the one object.
fn read_json_document(path: &Path) -> Result<Vec<Item>, Error> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading", path, e))?;
    let file: Arc<str> = Arc::from(path.display().to_string());
    if bytes.starts_with(UTF8_BOM) {
        return Err(byte_order_mark(&file));
    }
    let invalid = |offset: usize, message: String| Error::InvalidJson {
        location: format!("{}:{}", file, line_at(&bytes, offset)),
        message,
    };
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes.get(start) != Some(&b'[') {
        let value: Value = highwater::json::from_slice(&bytes).map_err(|e| Error::InvalidJson {
            location: format!("{}:{}", file, e.line()),
            message: e.to_string(),
        })?;
        return Ok(vec![Item::Located {
            value,
            file: file.clone(),
            line: line_at(&bytes, start),
        }]);
    }
    // Walk the array element by element so each item knows its line.
    let mut items = Vec::new();
    let mut pos = start + 1;
    loop {
        pos += bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        match bytes.get(pos) {
            Some(b']') => break,
            None => return Err(invalid(pos, "unterminated array".into())),
            _ => {}
        }
        let (value, used) = match highwater::json::next_value::<Value>(&bytes[pos..]) {
            Some((Ok(value), used)) => (value, used),
            Some((Err(e), used)) => return Err(invalid(pos + used, e.to_string())),
            None => return Err(invalid(pos, "expected a value".into())),
        };
        items.push(Item::Located {
            value,
            file: file.clone(),
            line: line_at(&bytes, pos),
        });
        pos += used;
        pos += bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => break,
            _ => {
                return Err(invalid(
                    pos,
                    "expected ',' or ']' after an array element".into(),
                ))
            }
        }
    }
    Ok(items)
}

/// The rows of a CSV file as JSON objects keyed by the header; empty cells are left out (null).
fn csv_rows(
    path: &Path,
    options: &CsvOptions,
) -> Result<impl Iterator<Item = Result<Item, Error>> + Send, Error> {
    let file: Arc<str> = Arc::from(path.display().to_string());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(open(path)?);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| Error::InvalidJson {
            location: format!("{file}:1"),
            message: format!("CSV header: {e}"),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    let raw_text = options.raw_text(&headers);
    let mut failed = false;
    Ok(reader.into_records().map_while(move |record| {
        if failed {
            return None;
        }
        Some(match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                let mut object = serde_json::Map::new();
                for ((key, cell), raw) in headers.iter().zip(record.iter()).zip(&raw_text) {
                    if cell.is_empty() {
                        continue;
                    }
                    let value = if *raw {
                        Value::String(cell.to_string())
                    } else {
                        csv_value(cell)
                    };
                    object.insert(key.clone(), value);
                }
                Ok(Item::Located {
                    value: Value::Object(object),
                    file: file.clone(),
                    line,
                })
            }
            Err(e) => {
                failed = true;
                let line = e.position().map_or(0, |p| p.line());
                Err(Error::InvalidJson {
                    location: format!("{file}:{line}"),
                    message: format!("CSV: {e}"),
                })
            }
        })
    }))
}

/// A CSV cell as the most specific JSON value it reads as: integer, float, boolean or text.
fn csv_value(cell: &str) -> Value {
    if let Ok(i) = cell.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = cell.parse::<f64>() {
        if f.is_finite() {
            return Value::from(f);
        }
    }
    match cell {
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => Value::String(cell.to_string()),
    }
}

/// A Parquet file as Arrow batches of bounded size (no detour through JSON).
fn parquet_batches(path: &Path) -> Result<impl Iterator<Item = Result<Item, Error>> + Send, Error> {
    if path.extension().is_some_and(|e| e == "gz") {
        return Err(Error::Config(format!("{}: gzip-compressed Parquet files are not supported (Parquet compresses its own pages)", path.display())));
    }
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let columnar = |e: parquet::errors::ParquetError| Error::Columnar {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(columnar)?
        .with_batch_size(PARQUET_BATCH_ROWS)
        .build()
        .map_err(columnar)?;
    let path = path.to_path_buf();
    Ok(reader.map(move |batch| {
        batch.map(Item::Arrow).map_err(|e| Error::Columnar {
            path: path.clone(),
            message: e.to_string(),
        })
    }))
}

fn line_at(bytes: &[u8], offset: usize) -> u64 {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(mut resource: Resource) -> Result<Vec<(Value, String)>, Error> {
        let mut out = Vec::new();
        for item in resource.items()? {
            match item? {
                Item::Located { value, file, line } => out.push((value, format!("{file}:{line}"))),
                Item::RawJsonLines {
                    bytes,
                    file,
                    first_line,
                    ..
                } => {
                    for (i, text) in bytes.split(|&b| b == b'\n').enumerate() {
                        let line = first_line + i as u64;
                        if text.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let value =
                            highwater::json::from_slice(text).map_err(|e| Error::InvalidJson {
                                location: format!("{file}:{line}"),
                                message: e.to_string(),
                            })?;
                        out.push((value, format!("{file}:{line}")));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        Ok(out)
    }

    #[test]
    fn jsonl_lines_keep_their_numbers_across_blocks() {
        // Lines of many lengths, one longer than a block, blank lines, and no final line break:
        // every value comes once, in order, with its own line number.
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut line = 0u64;
        for i in 0..6000u64 {
            line += 1;
            if i % 997 == 0 {
                text.push_str("  \n");
                continue;
            }
            let pad = if i == 3000 {
                "y".repeat(JSON_LINES_BLOCK + JSON_LINES_BLOCK / 2)
            } else {
                "x".repeat((i * 37 % 1500) as usize)
            };
            text.push_str(&format!("{{\"i\": {i}, \"pad\": \"{pad}\"}}\n"));
            expected.push((i, line));
        }
        text.push_str("{\"i\": 6000}");
        expected.push((6000, line + 1));
        assert!(text.len() > 3 * JSON_LINES_BLOCK);
        std::fs::write(dir.path().join("a.jsonl"), &text).unwrap();
        // (value of "i", line number) of every item read from `path`.
        let numbered = |path: PathBuf| -> Vec<(u64, u64)> {
            let items = values(file_resource(
                "r",
                path,
                FileFormat::Jsonl,
                false,
                CsvOptions::default(),
            ))
            .unwrap();
            items
                .iter()
                .map(|(v, at)| {
                    let line = at.rsplit(':').next().unwrap().parse().unwrap();
                    (v["i"].as_u64().unwrap(), line)
                })
                .collect()
        };
        assert_eq!(numbered(dir.path().join("a.jsonl")), expected);

        // The same file compressed reads the same.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        std::fs::write(dir.path().join("b.jsonl.gz"), gz.finish().unwrap()).unwrap();
        assert_eq!(numbered(dir.path().join("b.jsonl.gz")), expected);
    }

    #[test]
    fn reads_jsonl_and_json_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "{\"a\": 1}\n\n{\"a\": 2}\n").unwrap();
        std::fs::write(dir.path().join("b.json"), "[\n {\"a\": 3},\n {\"a\": 4}\n]").unwrap();
        let jsonl = values(file_resource(
            "r",
            dir.path().join("*.jsonl"),
            FileFormat::Jsonl,
            false,
            CsvOptions::default(),
        ))
        .unwrap();
        assert_eq!(jsonl.len(), 2);
        assert!(jsonl[1].1.ends_with("a.jsonl:3"));
        let json = values(file_resource(
            "r",
            dir.path().join("*.json"),
            FileFormat::Json,
            false,
            CsvOptions::default(),
        ))
        .unwrap();
        assert_eq!(json[1].0["a"], 4);
        assert!(json[1].1.ends_with("b.json:3"));
    }

    #[test]
    fn reads_csv_with_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.csv"),
            "id,name,score,ok\n1,ann,1.5,true\n2,,x,false\n",
        )
        .unwrap();
        let rows = values(file_resource(
            "r",
            dir.path().join("a.csv"),
            FileFormat::Csv,
            false,
            CsvOptions::default(),
        ))
        .unwrap();
        assert_eq!(
            rows[0].0,
            serde_json::json!({"id": 1, "name": "ann", "score": 1.5, "ok": true})
        );
        assert_eq!(
            rows[1].0,
            serde_json::json!({"id": 2, "score": "x", "ok": false})
        );
        assert!(rows[1].1.ends_with("a.csv:3"), "{}", rows[1].1);
    }

    #[test]
    fn csv_cells_of_hinted_columns_and_without_inference_stay_as_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "Zip Code,n,ok\n01234,007,true\n").unwrap();
        let read = |csv: CsvOptions| {
            let path = dir.path().join("a.csv");
            values(file_resource("r", path, FileFormat::Csv, false, csv)).unwrap()[0]
                .0
                .clone()
        };
        assert_eq!(
            read(CsvOptions::default()),
            serde_json::json!({"Zip Code": 1234, "n": 7, "ok": true})
        );
        let hinted = CsvOptions {
            all_text: false,
            hinted_columns: vec!["zip_code".into()],
        };
        assert_eq!(
            read(hinted),
            serde_json::json!({"Zip Code": "01234", "n": 7, "ok": true})
        );
        let all_text = CsvOptions {
            all_text: true,
            hinted_columns: Vec::new(),
        };
        assert_eq!(
            read(all_text),
            serde_json::json!({"Zip Code": "01234", "n": "007", "ok": "true"})
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "{\"a\": 1}\n{\"a\": \n").unwrap();
        let err = values(file_resource(
            "r",
            dir.path().join("a.jsonl"),
            FileFormat::Jsonl,
            false,
            CsvOptions::default(),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("a.jsonl:2: invalid JSON"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_is_refused_in_json_and_skipped_in_csv() {
        let dir = tempfile::tempdir().unwrap();
        for (name, format) in [("a.jsonl", FileFormat::Jsonl), ("b.json", FileFormat::Json)] {
            std::fs::write(dir.path().join(name), b"\xEF\xBB\xBF{\"a\": 1}\n").unwrap();
            let err = values(file_resource(
                "r",
                dir.path().join(name),
                format,
                false,
                CsvOptions::default(),
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("{name}:1: invalid JSON")), "{err}");
            assert!(err.contains("byte order mark"), "{err}");
        }
        // A CSV file's is skipped, as pandas (under dlt's read_csv) skips it.
        std::fs::write(dir.path().join("c.csv"), b"\xEF\xBB\xBFid,name\n1,a\n").unwrap();
        let rows = values(file_resource(
            "r",
            dir.path().join("c.csv"),
            FileFormat::Csv,
            false,
            CsvOptions::default(),
        ))
        .unwrap();
        assert_eq!(rows[0].0, serde_json::json!({"id": 1, "name": "a"}));
    }
}
