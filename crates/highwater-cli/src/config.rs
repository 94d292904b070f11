//! The pipeline file (`PIPELINE.toml`): these structs are exactly what a user writes, so unknown
//! keys are errors naming the key and its line.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

/// The whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// `[pipeline]`.
    pub pipeline: PipelineSection,
    /// `[destination]`: the destination as a table (`kind` plus its own keys), instead of
    /// `[pipeline] destination`.
    #[serde(default)]
    pub destination: Option<Spanned<toml::Table>>,
    /// `[[resources]]`.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
}

/// `[pipeline]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Pipeline name.
    pub name: String,
    /// `duckdb` (default), `duckdb:PATH`, `postgres://…`, `filesystem:PATH` or `s3://…`.
    #[serde(default)]
    pub destination: Option<Spanned<String>>,
    /// Dataset; default `<name>_dataset`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Working directory; default `$HIGHWATER_HOME/<name>`, else `.highwater/<name>` beside the
    /// pipeline file.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Loaded packages kept in the working directory, newest first (default 3); `prune` deletes
    /// older ones at any time.
    #[serde(default)]
    pub keep_loaded_packages: Option<usize>,
    /// How `replace` resources swap their rows: `truncate-and-insert` (default) |
    /// `insert-from-staging` | `staging-optimized`.
    #[serde(default)]
    pub replace_strategy: Option<Spanned<String>>,
}

/// A key given as one string or a list of strings (`primary_key`, `merge_key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One column.
    One(String),
    /// Several columns.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The columns.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[[resources]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Resource name (and default table name).
    pub name: String,
    /// `append` (default) | `replace` | `merge`.
    #[serde(default)]
    pub write_disposition: Option<Spanned<String>>,
    /// `delete-insert` (default) | `upsert` | `insert-only` | `scd2`.
    #[serde(default)]
    pub merge_strategy: Option<Spanned<String>>,
    /// Primary key.
    #[serde(default)]
    pub primary_key: Option<OneOrMany>,
    /// Merge key.
    #[serde(default)]
    pub merge_key: Option<OneOrMany>,
    /// Table name; `"{field}"` dispatches on an item field.
    #[serde(default)]
    pub table_name: Option<String>,
    /// Nesting levels that become child tables or flattened columns.
    #[serde(default)]
    pub max_table_nesting: Option<usize>,
    /// replace: this resource's replace strategy, instead of the pipeline's.
    #[serde(default)]
    pub replace_strategy: Option<Spanned<String>>,
    /// scd2: the two validity columns (default `["_dlt_valid_from", "_dlt_valid_to"]`).
    #[serde(default)]
    pub validity_column_names: Option<Spanned<Vec<String>>>,
    /// scd2: the end of validity of active versions instead of NULL, e.g. `"9999-12-31"`.
    #[serde(default)]
    pub active_record_timestamp: Option<Spanned<String>>,
    /// scd2: the time versions are closed and opened at, instead of the load's creation time.
    #[serde(default)]
    pub boundary_timestamp: Option<Spanned<String>>,
    /// scd2: a column of the data that tells versions apart, instead of the row hash.
    #[serde(default)]
    pub row_version_column_name: Option<Spanned<String>>,
    /// `[resources.source]`.
    pub source: SourceConfig,
    /// `[resources.incremental]`.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// `[resources.columns.NAME]`.
    #[serde(default)]
    pub columns: IndexMap<String, ColumnConfig>,
}

/// `[resources.source]`: the keys of every kind; each kind says which it uses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `jsonl` | `json` | `csv` | `parquet` | `rest_api` | `sql`.
    pub kind: Spanned<String>,
    /// Files: a glob or a plain path, relative to the pipeline file. A plain path must exist.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Files: skip files already loaded (same path and modification time).
    #[serde(default)]
    pub skip_loaded_files: bool,
    /// Files: a glob that matches no file fails the run (default: a warning, and no load).
    #[serde(default)]
    pub require_files: bool,
    /// csv: `false` keeps every cell as text (default `true`: integers, floats and booleans are
    /// recognised in columns without a `data_type` hint).
    #[serde(default)]
    pub infer_types: Option<bool>,
    /// REST: the first URL.
    #[serde(default)]
    pub url: Option<String>,
    /// REST: query parameters (`{incremental.start_value}`, `{incremental.end_value}`).
    #[serde(default)]
    pub params: IndexMap<String, toml::Value>,
    /// REST: request headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// REST: `{ type = "bearer", token = "{secrets.NAME}" }`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// REST: JSONPath to the records.
    #[serde(default)]
    pub data_selector: Option<String>,
    /// REST: how to find the next page.
    #[serde(default)]
    pub paginator: Option<PaginatorConfig>,
    /// SQL: `postgres://USER@HOST:PORT/DB` or `sqlite:PATH`.
    #[serde(default)]
    pub connection: Option<String>,
    /// SQL: the table to read (`table` or `schema.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// SQL: a `SELECT` statement to read instead of a table.
    #[serde(default)]
    pub query: Option<String>,
    /// SQL: rows per chunk (default 50,000).
    #[serde(default)]
    pub chunk_size: Option<usize>,
}

/// `auth = { type = "bearer", token = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Only `bearer`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// The token, usually `{secrets.NAME}`.
    pub token: String,
}

/// `paginator = { type = "...", ... }` (dlt's names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginatorConfig {
    /// json_link | header_link | offset | page_number | cursor | single_page.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// json_link: JSONPath of the next URL.
    #[serde(default)]
    pub next_url_path: Option<String>,
    /// offset: page size.
    #[serde(default)]
    pub limit: Option<u64>,
    /// offset: first offset.
    #[serde(default)]
    pub offset: Option<u64>,
    /// offset: name of the offset parameter.
    #[serde(default)]
    pub offset_param: Option<String>,
    /// offset: name of the limit parameter.
    #[serde(default)]
    pub limit_param: Option<String>,
    /// offset / page_number: JSONPath of the total (items / pages).
    #[serde(default)]
    pub total_path: Option<String>,
    /// page_number: first page.
    #[serde(default)]
    pub base_page: Option<u64>,
    /// page_number: name of the page parameter.
    #[serde(default)]
    pub page_param: Option<String>,
    /// cursor: JSONPath of the next cursor.
    #[serde(default)]
    pub cursor_path: Option<String>,
    /// cursor: name of the cursor parameter.
    #[serde(default)]
    pub cursor_param: Option<String>,
}

/// `[resources.incremental]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Field name or JSONPath of the cursor.
    pub cursor_path: String,
    /// First start value.
    #[serde(default)]
    pub initial_value: Option<Spanned<toml::Value>>,
    /// End value: makes a stateless backfill.
    #[serde(default)]
    pub end_value: Option<Spanned<toml::Value>>,
    /// `max` (default) | `min`.
    #[serde(default)]
    pub last_value_func: Option<Spanned<String>>,
    /// Dedup key; `[]` disables dedup.
    #[serde(default)]
    pub primary_key: Option<Vec<String>>,
    /// `closed` (default) | `open`.
    #[serde(default)]
    pub range_start: Option<Spanned<String>>,
    /// `open` (default) | `closed`.
    #[serde(default)]
    pub range_end: Option<Spanned<String>>,
    /// `asc` | `desc`.
    #[serde(default)]
    pub row_order: Option<Spanned<String>>,
    /// `raise` (default) | `include` | `exclude`.
    #[serde(default)]
    pub on_cursor_value_missing: Option<Spanned<String>>,
    /// Seconds (timestamps), days (dates) or units (numbers).
    #[serde(default)]
    pub lag: Option<f64>,
    /// Take the range from `--interval-start/--interval-end` or the environment.
    #[serde(default)]
    pub allow_external_schedulers: bool,
}

/// `[resources.columns.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// bigint | double | bool | text | timestamp | date | decimal | json | binary.
    #[serde(default)]
    pub data_type: Option<Spanned<String>>,
    /// `false` makes the column NOT NULL.
    #[serde(default)]
    pub nullable: Option<bool>,
    /// Precision.
    #[serde(default)]
    pub precision: Option<u32>,
    /// Scale.
    #[serde(default)]
    pub scale: Option<u32>,
    /// Timestamps: `false` stores them without time zone.
    #[serde(default)]
    pub timezone: Option<bool>,
    /// Merge: rows with a true value are deleted.
    #[serde(default)]
    pub hard_delete: bool,
    /// Merge: `asc` | `desc`, which duplicate of a key wins.
    #[serde(default)]
    pub dedup_sort: Option<Spanned<String>>,
}

/// A parsed pipeline file and where it lives.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The file's content.
    pub file: PipelineFile,
    /// The pipeline file's path.
    pub path: PathBuf,
    /// Its folder (absolute): every relative path of the file, and the default DuckDB file and
    /// working directory, are in it.
    pub base: PathBuf,
    text: String,
}

impl LoadedConfig {
    /// Reads and parses a pipeline file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline file {}", path.display()))?;
        let file: PipelineFile =
            toml::from_str(&text).map_err(|e| crate::config_errors::explain(path, &text, &e))?;
        // Absolute, so that what the file names is the same whatever the working directory.
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base)
            .with_context(|| format!("finding the folder of {}", path.display()))?;
        let names: Vec<&str> = file.resources.iter().map(|r| r.name.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                bail!("{}: resource name {name:?} is used twice", path.display());
            }
        }
        Ok(LoadedConfig {
            file,
            path: path.to_path_buf(),
            base,
            text,
        })
    }

    /// `PATH:LINE` of a spanned value, for errors about its content.
    pub fn at<T>(&self, spanned: &Spanned<T>) -> String {
        format!(
            "{}:{}",
            self.path.display(),
            line_of(&self.text, spanned.span().start)
        )
    }

    /// A path from the file, made relative to the file's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }
}

impl LoadedConfig {
    /// Replaces `{secrets.NAME}` with `NAME` from `secrets.toml` beside the pipeline file, else
    /// from the environment variable `NAME` upper-cased. Errors name the secret, never a value.
    pub fn resolve_secrets(&self, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{secrets.") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{secrets.".len()..];
            let end = after.find('}').ok_or_else(|| {
                anyhow!("{}: unclosed {{secrets. placeholder", self.path.display())
            })?;
            let name = &after[..end];
            out.push_str(&self.secret(name)?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of secret `name`, registered with the redaction layer so it is never printed.
    fn secret(&self, name: &str) -> Result<String> {
        let value = self.secret_value(name)?;
        crate::redact::register(&value);
        Ok(value)
    }

    fn secret_value(&self, name: &str) -> Result<String> {
        let file = self.base.join("secrets.toml");
        if file.exists() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| anyhow!("{}: {}", file.display(), e.message()))?;
            if let Some(value) = table.get(name).and_then(toml::Value::as_str) {
                return Ok(value.to_string());
            }
        }
        std::env::var(name.to_uppercase()).map_err(|_| {
            anyhow!(
                "{}: secret {name:?} is not set: add it to secrets.toml beside the pipeline file or set the environment variable {}",
                self.path.display(),
                name.to_uppercase()
            )
        })
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses one of `choices` from a spanned string, or errors naming the key, value and line.
pub fn choice<'a>(
    config: &LoadedConfig,
    key: &str,
    value: &'a Spanned<String>,
    choices: &[&str],
) -> Result<&'a str> {
    let v = value.get_ref().as_str();
    if choices.contains(&v) {
        Ok(v)
    } else {
        bail!(
            "{}: {key} = {v:?} is not one of {}",
            config.at(value),
            choices
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A TOML value as JSON (datetimes as ISO strings).
pub fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text)?;
        LoadedConfig::load(&path)
    }

    #[test]
    fn parses_the_spec_example() {
        let config = parse(
            r#"
[pipeline]
name = "github_events"
destination = "duckdb"
dataset = "github_data"

[[resources]]
name = "events"
write_disposition = "merge"
primary_key = "id"
table_name = "{type}"

[resources.source]
kind = "jsonl"
path = "data/events-*.jsonl"

[resources.incremental]
cursor_path = "created_at"
initial_value = "1970-01-01T00:00:00Z"

[resources.columns.created_at]
data_type = "timestamp"
"#,
        )
        .unwrap();
        let r = &config.file.resources[0];
        assert_eq!(r.name, "events");
        assert_eq!(r.primary_key.clone().unwrap().into_vec(), vec!["id"]);
        assert_eq!(r.incremental.as_ref().unwrap().cursor_path, "created_at");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[pipeline]\nname = \"p\"\n\n[[resources]]\nname = \"r\"\nbogus = 1\n[resources.source]\nkind = \"jsonl\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.toml:6:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }
}

#[cfg(test)]
mod proptests;
