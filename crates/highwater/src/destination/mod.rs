//! Destinations: where normalized packages are loaded, each in one transaction.
//!
//! The pipeline talks to a destination only through [`Destination`]: restore what an earlier run
//! left (state and schema), ask whether a load id is already committed, load a package.

pub mod duckdb;
pub mod sql;

use std::path::PathBuf;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::normalize::TableFile;
use crate::schema::Schema;

/// The state row a load commits with its data.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// `_state_version`.
    pub version: i64,
    /// `_state_engine_version`.
    pub engine_version: i64,
    /// The state, encoded as dlt encodes it.
    pub state: String,
    /// `_version_hash`.
    pub version_hash: String,
}

/// Everything one load needs, handed over by the pipeline.
#[derive(Debug)]
pub struct LoadJob<'a> {
    /// The load id.
    pub load_id: &'a str,
    /// The pipeline name (state rows) and schema name.
    pub pipeline: &'a str,
    /// The schema after normalizing the package.
    pub schema: &'a Schema,
    /// Where the package's Parquet files are.
    pub files_dir: PathBuf,
    /// The package's files, in load order.
    pub files: &'a [TableFile],
    /// Root tables to empty first (replace, refresh), with their child tables.
    pub truncate_tables: &'a [String],
    /// Tables to drop first (refresh), child tables included.
    pub drop_tables: &'a [String],
    /// The state row, when the run changed the state.
    pub state: Option<StateRow>,
}

/// What a destination found of an earlier pipeline run.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The newest committed state document.
    pub state: Option<Value>,
    /// The newest stored schema.
    pub schema: Option<Schema>,
}

/// A table in the destination and its row count (for `info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// Table name.
    pub table: String,
    /// Rows.
    pub rows: u64,
}

/// A load from `_dlt_loads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRecord {
    /// The load id.
    pub load_id: String,
    /// 0 for a completed load.
    pub status: i64,
    /// When it was committed (RFC 3339).
    pub inserted_at: String,
}

/// A place packages are loaded into.
pub trait Destination {
    /// A description for messages (e.g. the file path).
    fn describe(&self) -> String;

    /// The newest committed state and schema of `pipeline`, if any.
    fn restore(&mut self, pipeline: &str) -> Result<Restored>;

    /// Whether `load_id` is already committed.
    fn is_loaded(&mut self, load_id: &str) -> Result<bool>;

    /// Loads a package: DDL, data, disposition, state and `_dlt_loads` row in one transaction.
    fn load(&mut self, job: &LoadJob<'_>) -> Result<()>;

    /// Data tables of the dataset with their row counts.
    fn table_counts(&mut self) -> Result<Vec<TableCount>>;

    /// The newest loads, newest first.
    fn recent_loads(&mut self, limit: usize) -> Result<Vec<LoadRecord>>;

    /// Drops tables (with their child tables as listed by the caller) in one transaction.
    fn drop_tables(&mut self, tables: &[String]) -> Result<()>;
}

/// Where a pipeline loads to, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationConfig {
    /// An embedded DuckDB file.
    DuckDb {
        /// The database file.
        path: PathBuf,
    },
}

impl DestinationConfig {
    /// Parses `duckdb` or `duckdb:PATH`; `default_path` is used for plain `duckdb`, relative
    /// paths are taken relative to `base`.
    pub fn parse(spec: &str, default_path: PathBuf, base: &std::path::Path) -> Result<Self> {
        let spec = spec.trim();
        if spec == "duckdb" {
            return Ok(DestinationConfig::DuckDb { path: default_path });
        }
        if let Some(path) = spec.strip_prefix("duckdb:") {
            let path = PathBuf::from(path);
            let path = if path.is_relative() {
                base.join(path)
            } else {
                path
            };
            return Ok(DestinationConfig::DuckDb { path });
        }
        Err(Error::Config(format!(
            "unknown destination {spec:?}: expected \"duckdb\" or \"duckdb:PATH\""
        )))
    }

    /// Opens the destination for `dataset`.
    pub fn open(&self, dataset: &str) -> Result<Box<dyn Destination>> {
        match self {
            DestinationConfig::DuckDb { path } => {
                Ok(Box::new(duckdb::DuckDbDestination::open(path, dataset)?))
            }
        }
    }

    /// A description for messages.
    pub fn describe(&self) -> String {
        match self {
            DestinationConfig::DuckDb { path } => format!("duckdb:{}", path.display()),
        }
    }
}
