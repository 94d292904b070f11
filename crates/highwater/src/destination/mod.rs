//! Destinations: where normalized packages are loaded.
//!
//! The pipeline talks to a destination only through [`Destination`]: restore what an earlier run
//! left (state and schema), ask whether a load id is already committed, load a package. What a
//! destination can do ([`Capabilities`]) is known from its config before it is opened, so names
//! are shortened to its limit and unsupported strategies are refused before anything is extracted.
//!
//! Each destination lives in its own module with its config beside it. SQL databases share
//! [`plan`] (what a load does, destination-neutral) and [`sql`] (the statements, with a dialect
//! per database).

pub mod duckdb;
pub mod filesystem;
pub mod plan;
pub mod postgres;
pub mod sql;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::package::TableFile;
use crate::schema::{MergeStrategy, ReplaceStrategy, Schema};

pub use self::duckdb::{DuckDbConfig, SharedDuckDb};
pub use self::filesystem::FilesystemConfig;
pub use self::postgres::PostgresConfig;

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
    /// The `_state_version` the run started from. A destination holding a newer committed state
    /// of the pipeline refuses the load: another run committed in between, and this one would
    /// overwrite its progress. `None` for packages written before this was recorded.
    pub base_version: Option<i64>,
}

/// Everything one load needs, handed over by the pipeline.
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
    /// Told the rows of each file once it is loaded (for progress).
    pub on_file_loaded: &'a (dyn Fn(u64) + Sync),
}

impl std::fmt::Debug for LoadJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadJob")
            .field("load_id", &self.load_id)
            .field("pipeline", &self.pipeline)
            .field("files_dir", &self.files_dir)
            .field("files", &self.files)
            .field("truncate_tables", &self.truncate_tables)
            .field("drop_tables", &self.drop_tables)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// What a destination found of an earlier pipeline run.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The newest committed state document.
    pub state: Option<Value>,
    /// The newest stored schema.
    pub schema: Option<Schema>,
}

impl Restored {
    /// The schema the restored state names as its default (see
    /// [`crate::state::default_schema_name`]), else `pipeline`'s.
    pub fn schema_name(&self, pipeline: &str) -> String {
        match &self.state {
            Some(state) => crate::state::default_schema_name(state, pipeline).to_string(),
            None => pipeline.to_string(),
        }
    }
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

/// What a destination supports; decides naming and what a run refuses up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The destination's kind as the state document records it (`duckdb`, `postgres`, …).
    pub kind: &'static str,
    /// Longest table or column name; longer names are shortened as dlt shortens them.
    pub max_identifier_length: usize,
    /// Merge strategies the destination carries out. Empty: a merge loads as an append, as on
    /// dlt's plain filesystem destination.
    pub merge_strategies: &'static [MergeStrategy],
    /// Replace strategies the destination carries out; others are refused.
    pub replace_strategies: &'static [ReplaceStrategy],
}

impl Capabilities {
    /// Whether `merge` with `strategy` is carried out (rather than refused or appended).
    pub fn merges_with(&self, strategy: MergeStrategy) -> bool {
        self.merge_strategies.contains(&strategy)
    }

    /// `destination_type` in the state document: dlt's reference to the same destination, so
    /// a dlt run on the dataset finds the destination it expects.
    pub fn destination_type(&self) -> String {
        format!("dlt.destinations.{}", self.kind)
    }
}

/// A place packages are loaded into.
pub trait Destination {
    /// A description for messages (e.g. the file path), never with a secret in it.
    fn describe(&self) -> String;

    /// The newest committed state and schema of `pipeline`, if any.
    fn restore(&mut self, pipeline: &str) -> Result<Restored>;

    /// Whether `load_id` is already committed.
    fn is_loaded(&mut self, load_id: &str) -> Result<bool>;

    /// Loads a package: DDL, data, disposition, state and `_dlt_loads` row, committed at once.
    fn load(&mut self, job: &LoadJob<'_>) -> Result<()>;

    /// Data tables of the dataset with their row counts.
    fn table_counts(&mut self) -> Result<Vec<TableCount>>;

    /// The newest loads, newest first.
    fn recent_loads(&mut self, limit: usize) -> Result<Vec<LoadRecord>>;
}

/// Where a pipeline loads to, as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationConfig {
    /// An embedded DuckDB file.
    DuckDb(DuckDbConfig),
    /// A PostgreSQL database.
    Postgres(PostgresConfig),
    /// Parquet files in dlt's layout on a local folder or S3.
    Filesystem(FilesystemConfig),
}

impl DestinationConfig {
    /// A DuckDB file at `path`, with the settings of the environment.
    pub fn duckdb(path: impl Into<PathBuf>) -> Self {
        DestinationConfig::DuckDb(DuckDbConfig::new(path))
    }

    /// Parses the short forms `duckdb`, `duckdb:PATH`, `postgres://…`, `filesystem:PATH` and
    /// `s3://BUCKET/PREFIX`; `default_path` is used for plain `duckdb`, relative paths are taken
    /// relative to `base`.
    pub fn parse(spec: &str, default_path: PathBuf, base: &Path) -> Result<Self> {
        let spec = spec.trim();
        if spec == "duckdb" {
            return Ok(DestinationConfig::duckdb(default_path));
        }
        if let Some(path) = spec.strip_prefix("duckdb:") {
            return Ok(DestinationConfig::duckdb(base.join(path)));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(DestinationConfig::Postgres(PostgresConfig::from_url(
                spec, base,
            )?));
        }
        if let Some(path) = spec.strip_prefix("filesystem:") {
            let mut config = FilesystemConfig::new(path);
            config.rebase(base);
            config.validate()?;
            return Ok(DestinationConfig::Filesystem(config));
        }
        if spec.starts_with("s3://") {
            let config = FilesystemConfig::new(spec);
            config.validate()?;
            return Ok(DestinationConfig::Filesystem(config));
        }
        Err(Error::Config(format!(
            "unknown destination {:?}: expected \"duckdb\", \"duckdb:PATH\", \"postgres://USER@HOST:PORT/DATABASE\", \"filesystem:PATH\" or \"s3://BUCKET/PREFIX\"",
            postgres::public_url(spec)
        )))
    }

    /// What the destination supports.
    pub fn capabilities(&self) -> Capabilities {
        match self {
            DestinationConfig::DuckDb(_) => duckdb::CAPABILITIES,
            DestinationConfig::Postgres(_) => postgres::CAPABILITIES,
            DestinationConfig::Filesystem(_) => filesystem::CAPABILITIES,
        }
    }

    /// Opens the destination for `dataset`, creating it if needed.
    pub fn open(&self, dataset: &str) -> Result<Box<dyn Destination>> {
        match self {
            DestinationConfig::DuckDb(config) => {
                Ok(Box::new(duckdb::DuckDbDestination::open(config, dataset)?))
            }
            DestinationConfig::Postgres(config) => Ok(Box::new(
                postgres::PostgresDestination::open(config, dataset)?,
            )),
            DestinationConfig::Filesystem(config) => Ok(Box::new(
                filesystem::FilesystemDestination::open(config, dataset)?,
            )),
        }
    }

    /// Whether the destination holds anything yet; reading commands (`info`) do not create it.
    pub fn exists(&self, dataset: &str) -> Result<bool> {
        match self {
            DestinationConfig::DuckDb(config) => {
                Ok(config.shared.is_some() || config.path.exists())
            }
            DestinationConfig::Postgres(config) => {
                postgres::PostgresDestination::open(config, dataset)?.dataset_exists()
            }
            DestinationConfig::Filesystem(config) => filesystem::dataset_exists(config, dataset),
        }
    }

    /// A description for messages, never with a secret in it.
    pub fn describe(&self) -> String {
        match self {
            DestinationConfig::DuckDb(config) => format!("duckdb:{}", config.path.display()),
            DestinationConfig::Postgres(config) => config.describe(),
            DestinationConfig::Filesystem(config) => config.describe(),
        }
    }
}
