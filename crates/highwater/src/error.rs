//! The library's error type: one enum whose messages name what went wrong and where.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can make a run fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "creating directory", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// Input data is not valid JSON.
    #[error("{location}: invalid JSON: {message}")]
    InvalidJson {
        /// `PATH:LINE` or the resource that yielded the item.
        location: String,
        /// What the parser said.
        message: String,
    },

    /// A resource failed while producing items.
    #[error("resource {resource}: {message}")]
    Resource {
        /// The resource's name.
        resource: String,
        /// What went wrong.
        message: String,
    },

    /// A hint, option or argument is not usable.
    #[error("{0}")]
    Config(String),

    /// Another run of the same pipeline holds the lock.
    #[error("pipeline {pipeline} is already running (lock held on {path}); wait for it to finish")]
    Locked {
        /// The pipeline's name.
        pipeline: String,
        /// The lock file.
        path: PathBuf,
    },

    /// A value does not fit the declared type of its column.
    #[error("{location}table {table}, column {column}: cannot store {value} as {data_type}")]
    CannotCoerce {
        /// `PATH:LINE: ` when known.
        location: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The declared type.
        data_type: &'static str,
        /// The offending value (shortened).
        value: String,
    },

    /// A NOT NULL column got no value.
    #[error("{location}table {table}, column {column}: value is missing or null but the column is not nullable")]
    NullInNotNull {
        /// `PATH:LINE: ` when known.
        location: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },

    /// The incremental could not be applied to an item.
    #[error("{location}resource {resource}, cursor {cursor_path}: {message}")]
    Incremental {
        /// `PATH:LINE: ` when known.
        location: String,
        /// The resource.
        resource: String,
        /// The cursor path.
        cursor_path: String,
        /// What went wrong.
        message: String,
    },

    /// An `initial_value` or `end_value` that is not of the cursor's type as written (a number
    /// such as `20240101` for a timestamp cursor, a word for a date cursor).
    #[error("resource {resource}, cursor {cursor_path}: {key} {value} is not a {expected}, the type of the cursor's values")]
    BoundType {
        /// The resource.
        resource: String,
        /// The cursor path.
        cursor_path: String,
        /// `initial_value` or `end_value`.
        key: &'static str,
        /// The value as given (JSON).
        value: String,
        /// The cursor's type: `number`, `text`, `date` or `timestamp`.
        expected: &'static str,
    },

    /// The destination refused an operation.
    #[error("destination {destination}: {context}: {source}")]
    Destination {
        /// Which destination (e.g. the DuckDB file).
        destination: String,
        /// What was being done.
        context: String,
        /// The driver's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Another run of the pipeline committed a newer state to the destination since this run
    /// started from its state: loading would overwrite that run's progress.
    #[error("destination {destination}: the state of pipeline {pipeline} there is at version {committed}, newer than version {base} this run started from: another run (from another working directory) committed in between, so nothing was loaded; the next run takes the newer state from the destination and loads what is still missing")]
    StateConflict {
        /// The pipeline.
        pipeline: String,
        /// Which destination.
        destination: String,
        /// The newest committed state version.
        committed: i64,
        /// The version the run started from.
        base: i64,
    },

    /// A file the pipeline wrote itself cannot be read back.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which file or document.
        what: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A state or schema in the destination was written by a dlt (or highwater) whose format
    /// this highwater does not know; nothing is loaded.
    #[error("{document} has {kind} version {found}, which this highwater does not read (it reads {supported}); it was written by a newer dlt or highwater: upgrade highwater, or run this pipeline with the tool that wrote it. Nothing was loaded")]
    UnsupportedVersion {
        /// Which document, and where (`the state of pipeline p in _dlt_pipeline_state`).
        document: String,
        /// `state engine` or `schema engine`.
        kind: &'static str,
        /// The version found.
        found: i64,
        /// The versions this highwater reads.
        supported: String,
    },

    /// A file of a load package that is not loaded yet is not what was written: truncated or
    /// altered on disk. The run refuses the package until it is dropped.
    #[error("load package {load_id} is damaged: {path}: {detail}; nothing was loaded from it. Drop the pending packages with `highwater drop-pending PIPELINE.toml` (Pipeline::drop_pending_packages in the library): the next run extracts their rows again from the last committed state")]
    DamagedPackage {
        /// The package's load id.
        load_id: String,
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// Writing or reading a columnar file failed.
    #[error("columnar file {path}: {message}")]
    Columnar {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Whether the error comes from the data itself (a value, a line, a hint), so that
    /// normalizing the same package again would fail again; otherwise (I/O, a damaged file) it
    /// may pass once the cause is removed.
    pub fn is_in_the_data(&self) -> bool {
        matches!(
            self,
            Error::InvalidJson { .. }
                | Error::Resource { .. }
                | Error::Config(_)
                | Error::CannotCoerce { .. }
                | Error::NullInNotNull { .. }
                | Error::Incremental { .. }
        )
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Shortens a value for an error message, so a huge value does not flood the terminal.
pub(crate) fn preview(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}
