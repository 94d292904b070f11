//! The embedded DuckDB destination: Parquet files bulk-loaded with `read_parquet`, every load in
//! one transaction.
//!
//! DuckDB lets one process write a database file at a time. Opening waits while another process
//! holds the file (parallel backfills), up to a timeout, and the connection is kept only for the
//! few seconds a load needs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duckdb::{params, Connection};

use super::sql::{
    column_list, delete_insert, direct_merge_deletes, qualified, quote, upsert, ChainTable,
};
use super::{Destination, LoadJob, LoadRecord, Restored, TableCount};
use crate::error::{Error, Result};
use crate::schema::{
    Column, DataType, MergeStrategy, Schema, Table, WriteDisposition, SCHEMA_ENGINE_VERSION,
};
use crate::state::decode_from_destination;

/// How long opening waits for another process to release the file, unless
/// `HIGHWATER_LOCK_TIMEOUT` (seconds) says otherwise.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// DuckDB's memory limit for loads that only insert, and for loads that merge (the window and
/// joins of a merge spill less with more), unless `HIGHWATER_DUCKDB_MEMORY_LIMIT` says otherwise.
/// Bounded limits keep a large load within a few hundred MB: DuckDB writes the rows of a big
/// transaction to the file (or spills) instead of holding them all.
const INSERT_MEMORY_LIMIT: &str = "128MB";
const MERGE_MEMORY_LIMIT: &str = "160MB";

/// DuckDB threads for a load on a machine with `cores` cores, unless `HIGHWATER_DUCKDB_THREADS`
/// says otherwise. On two cores one thread loads faster than two: in 8 alternating pairs of the
/// benchmark's 10 % second run the load took 1.56 s against 1.75 s, and the 1,000,000-event first
/// run's load 11.1–11.4 s against 12.0–13.1 s. The second thread mostly waits for work (a package
/// file of one row group is read by one thread) and takes CPU from the one that has it. Larger
/// machines keep DuckDB's default, a thread per core.
fn load_threads(cores: usize) -> usize {
    if cores <= 2 {
        1
    } else {
        cores
    }
}

/// A DuckDB database file and the dataset (DuckDB schema) the pipeline loads into.
pub struct DuckDbDestination {
    path: PathBuf,
    dataset: String,
    conn: Connection,
    /// Held while the connection is open: highwater processes take turns on the file (DuckDB
    /// allows one writing process), and a new file is never opened half-created by another.
    _file_lock: std::fs::File,
}

/// Takes the lock `<database>.lock` beside the database file, waiting up to `timeout`.
fn lock_beside(path: &Path, timeout: Duration) -> Result<std::fs::File> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let started = Instant::now();
    loop {
        if let Some(file) = crate::lock::try_lock_file(&lock_path)? {
            return Ok(file);
        }
        if started.elapsed() >= timeout {
            return Err(Error::Destination {
                destination: path.display().to_string(),
                context: format!(
                    "another highwater process kept the database busy for {:.0} s (HIGHWATER_LOCK_TIMEOUT)",
                    timeout.as_secs_f64()
                ),
                source: "lock timeout".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The DuckDB type of a column.
pub fn duckdb_type(column: &Column) -> String {
    match column.data_type {
        DataType::Text => "VARCHAR".into(),
        DataType::Bigint => "BIGINT".into(),
        DataType::Double => "DOUBLE".into(),
        DataType::Bool => "BOOLEAN".into(),
        DataType::Timestamp if column.timezone == Some(false) => "TIMESTAMP".into(),
        DataType::Timestamp => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Date => "DATE".into(),
        DataType::Time => "TIME".into(),
        DataType::Decimal => format!(
            "DECIMAL({},{})",
            column.precision.unwrap_or(38),
            column
                .scale
                .unwrap_or(crate::normalize::coerce::DECIMAL_SCALE)
        ),
        DataType::Json => "JSON".into(),
        DataType::Binary => "BLOB".into(),
    }
}

fn lock_timeout() -> Duration {
    std::env::var("HIGHWATER_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_LOCK_TIMEOUT)
}

impl DuckDbDestination {
    /// Opens (creating if needed) the database file, waiting while another process holds it.
    pub fn open(path: &Path, dataset: &str) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::package::create_dir_all(dir)?;
        }
        let timeout = lock_timeout();
        let started = Instant::now();
        let file_lock = lock_beside(path, timeout)?;
        let mut announced = false;
        let conn = loop {
            match Connection::open(path) {
                Ok(conn) => break conn,
                Err(e) if is_lock_conflict(&e) => {
                    if started.elapsed() >= timeout {
                        return Err(Error::Destination {
                            destination: path.display().to_string(),
                            context: format!(
                                "another process kept the database file locked for {:.0} s (HIGHWATER_LOCK_TIMEOUT)",
                                timeout.as_secs_f64()
                            ),
                            source: Box::new(e),
                        });
                    }
                    if !announced {
                        tracing::info!(file = %path.display(), "waiting for another process to release the DuckDB file");
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(Error::Destination {
                        destination: path.display().to_string(),
                        context: "opening the database".into(),
                        source: Box::new(e),
                    })
                }
            }
        };
        let dest = DuckDbDestination {
            path: path.to_path_buf(),
            dataset: dataset.to_string(),
            conn,
            _file_lock: file_lock,
        };
        // Without the ICU extension (not bundled) DuckDB keeps TIMESTAMPTZ in UTC, as we want.
        Ok(dest)
    }

    fn err(&self, context: impl Into<String>, e: duckdb::Error) -> Error {
        Error::Destination {
            destination: self.path.display().to_string(),
            context: context.into(),
            source: Box::new(e),
        }
    }

    fn exec(&self, sql: &str, context: &str) -> Result<()> {
        let started = std::time::Instant::now();
        self.conn
            .execute_batch(sql)
            .map_err(|e| self.err(format!("{context} ({})", first_line(sql)), e))?;
        tracing::debug!(elapsed = ?started.elapsed(), "{}", first_line(sql));
        Ok(())
    }

    /// [`Self::exec`] of one statement whose parameter `$1` is `load_id`.
    fn exec_with_load_id(&self, sql: &str, load_id: &str, context: &str) -> Result<()> {
        let started = std::time::Instant::now();
        self.conn
            .execute(sql, params![load_id])
            .map_err(|e| self.err(format!("{context} ({})", first_line(sql)), e))?;
        tracing::debug!(elapsed = ?started.elapsed(), "{}", first_line(sql));
        Ok(())
    }

    fn set_memory_limit(&self, default: &str) -> Result<()> {
        let limit =
            std::env::var("HIGHWATER_DUCKDB_MEMORY_LIMIT").unwrap_or_else(|_| default.into());
        // SET takes no parameters: the setting is checked to be a plain size like "192MB".
        if limit.is_empty()
            || !limit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ' ')
        {
            return Err(Error::Config(format!(
                "HIGHWATER_DUCKDB_MEMORY_LIMIT={limit:?} is not a size such as \"512MB\""
            )));
        }
        self.exec(
            &format!("SET memory_limit = '{limit}'"),
            "setting memory_limit",
        )
    }

    fn set_threads(&self) -> Result<()> {
        let threads = match std::env::var("HIGHWATER_DUCKDB_THREADS") {
            Ok(value) => value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    Error::Config(format!(
                    "HIGHWATER_DUCKDB_THREADS={value:?} is not a number of threads such as \"2\""
                ))
                })?,
            Err(_) => load_threads(std::thread::available_parallelism().map_or(1, |n| n.get())),
        };
        // SET takes no parameters: the value is a number checked above.
        self.exec(&format!("SET threads = {threads}"), "setting threads")
    }

    fn staging(&self) -> String {
        format!("{}_staging", self.dataset)
    }

    /// Columns of `schema.table` in the database, in order; `None` when the table does not exist.
    fn existing_columns(&self, schema: &str, table: &str) -> Result<Option<Vec<String>>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            )
            .map_err(|e| self.err("reading the catalog", e))?;
        let names: Vec<String> = stmt
            .query_map(params![schema, table], |row| row.get(0))
            .map_err(|e| self.err("reading the catalog", e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err("reading the catalog", e))?;
        Ok((!names.is_empty()).then_some(names))
    }

    fn table_exists(&self, schema: &str, table: &str) -> Result<bool> {
        Ok(self.existing_columns(schema, table)?.is_some())
    }

    fn ensure_system_tables(&self) -> Result<()> {
        let ds = &self.dataset;
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {loads} (load_id VARCHAR NOT NULL, schema_name VARCHAR, status BIGINT NOT NULL, inserted_at TIMESTAMP WITH TIME ZONE NOT NULL, schema_version_hash VARCHAR);
             CREATE TABLE IF NOT EXISTS {version} (version BIGINT NOT NULL, engine_version BIGINT NOT NULL, inserted_at TIMESTAMP WITH TIME ZONE NOT NULL, schema_name VARCHAR NOT NULL, version_hash VARCHAR NOT NULL, schema VARCHAR NOT NULL);
             CREATE TABLE IF NOT EXISTS {state} (version BIGINT NOT NULL, engine_version BIGINT NOT NULL, pipeline_name VARCHAR NOT NULL, state VARCHAR NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL, version_hash VARCHAR, _dlt_load_id VARCHAR NOT NULL, _dlt_id VARCHAR NOT NULL);",
            schema = quote(ds),
            loads = qualified(ds, "_dlt_loads"),
            version = qualified(ds, "_dlt_version"),
            state = qualified(ds, "_dlt_pipeline_state"),
        );
        self.exec(&sql, "creating system tables")
    }

    /// Creates `table` in `schema`, or adds the columns it lacks. Returns the columns it has.
    fn ensure_table(&self, schema: &str, table: &Table, constraints: bool) -> Result<Vec<String>> {
        match self.existing_columns(schema, &table.name)? {
            None => {
                let defs: Vec<String> = table
                    .columns
                    .values()
                    .map(|c| {
                        let not_null = if constraints && !c.nullable {
                            " NOT NULL"
                        } else {
                            ""
                        };
                        format!("{} {}{not_null}", quote(&c.name), duckdb_type(c))
                    })
                    .collect();
                self.exec(
                    &format!(
                        "CREATE TABLE {} ({})",
                        qualified(schema, &table.name),
                        defs.join(", ")
                    ),
                    &format!("creating table {}", table.name),
                )?;
                Ok(table.columns.keys().cloned().collect())
            }
            Some(mut existing) => {
                let have: HashSet<String> = existing.iter().cloned().collect();
                for column in table.columns.values().filter(|c| !have.contains(&c.name)) {
                    self.exec(
                        &format!(
                            "ALTER TABLE {} ADD COLUMN {} {}",
                            qualified(schema, &table.name),
                            quote(&column.name),
                            duckdb_type(column)
                        ),
                        &format!("adding column {} to {}", column.name, table.name),
                    )?;
                    existing.push(column.name.clone());
                }
                Ok(existing)
            }
        }
    }

    fn insert_file(&self, target: &str, columns: &[String], file: &Path) -> Result<()> {
        let cols = column_list(columns.iter().map(String::as_str));
        let sql = format!("INSERT INTO {target} ({cols}) SELECT {cols} FROM read_parquet(?)");
        let path = file.to_string_lossy().to_string();
        let started = std::time::Instant::now();
        self.conn
            .execute(&sql, params![path])
            .map_err(|e| self.err(format!("loading {} into {target}", file.display()), e))?;
        tracing::debug!(elapsed = ?started.elapsed(), file = %file.display(), "inserted into {target}");
        Ok(())
    }

    /// Loads the package inside the open transaction.
    ///
    /// With `direct_merge`, a delete-insert merge skips staging: its root rows load straight into
    /// the final table, the older rows sharing a key with them are deleted with their children,
    /// and then the child rows load. That is dlt's result as long as the load does not repeat a
    /// primary key (staging would keep only the last row). Returns `false` when it does: the
    /// caller rolls back and loads again through staging.
    fn load_in_transaction(&self, job: &LoadJob<'_>, direct_merge: bool) -> Result<bool> {
        let ds = self.dataset.clone();
        let staging = self.staging();
        let schema = job.schema;
        self.ensure_system_tables()?;

        // Refresh: drop and truncate before anything is loaded.
        for table in job.drop_tables {
            self.exec(
                &format!("DROP TABLE IF EXISTS {}", qualified(&ds, table)),
                "dropping table",
            )?;
        }

        // Tables with rows in this load, root tables first.
        let mut loaded_tables: Vec<&str> = Vec::new();
        for file in job.files {
            if !loaded_tables.contains(&file.table.as_str()) {
                loaded_tables.push(&file.table);
            }
        }
        let mut final_columns: std::collections::HashMap<String, Vec<String>> = Default::default();
        for name in &loaded_tables {
            let table = schema.tables.get(*name).ok_or_else(|| Error::Corrupt {
                what: format!("package {}", job.load_id),
                detail: format!("table {name} is not in the schema"),
            })?;
            final_columns.insert(name.to_string(), self.ensure_table(&ds, table, true)?);
        }

        for root in job.truncate_tables {
            for table in chain_names(schema, root) {
                if self.table_exists(&ds, &table)? {
                    self.exec(
                        &format!("DELETE FROM {}", qualified(&ds, &table)),
                        "emptying table for replace",
                    )?;
                }
            }
        }

        // Merge roots load into staging; everything else straight into the final tables.
        let merge_roots: Vec<&Table> = loaded_tables
            .iter()
            .map(|t| schema.root_of(t))
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|root| schema.tables.get(root))
            .filter(|t| t.write_disposition == WriteDisposition::Merge)
            .fold(Vec::new(), |mut acc: Vec<&Table>, t| {
                if !acc.iter().any(|a| a.name == t.name) {
                    acc.push(t);
                }
                acc
            });
        let direct_roots: Vec<&Table> = merge_roots
            .iter()
            .copied()
            .filter(|root| direct_merge && merges_directly(root))
            .collect();
        let direct_children: HashSet<&str> = direct_roots
            .iter()
            .flat_map(|root| schema.descendants(&root.name))
            .map(|t| t.name.as_str())
            .collect();
        let merge_roots: Vec<&Table> = merge_roots
            .into_iter()
            .filter(|root| !direct_roots.iter().any(|d| d.name == root.name))
            .collect();
        if merge_roots.is_empty() && !direct_roots.is_empty() {
            // Nothing left to merge: this load inserts as an append does.
            self.set_memory_limit(INSERT_MEMORY_LIMIT)?;
        }
        let merged: HashSet<&str> = merge_roots
            .iter()
            .flat_map(|root| {
                std::iter::once(root.name.as_str()).chain(
                    schema
                        .descendants(&root.name)
                        .into_iter()
                        .map(|t| t.name.as_str()),
                )
            })
            .collect();
        if !merge_roots.is_empty() {
            self.exec(
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&staging)),
                "creating staging schema",
            )?;
            for name in &merged {
                self.exec(
                    &format!("DROP TABLE IF EXISTS {}", qualified(&staging, name)),
                    "clearing staging",
                )?;
            }
        }
        let mut staged_columns: std::collections::HashMap<String, Vec<String>> = Default::default();
        // Rows keep load order everywhere (DuckDB's default): staging needs it (merge keeps the
        // last duplicate), and a table filled in order takes later loads with a far cheaper
        // commit than one filled by parallel, unordered inserts.
        // Child rows of direct merges wait until the older rows are deleted.
        let (deferred, first): (Vec<_>, Vec<_>) = job
            .files
            .iter()
            .partition(|f| direct_children.contains(f.table.as_str()));
        for file in first {
            let path = job.files_dir.join(&file.file);
            let staged = merged.contains(file.table.as_str());
            if staged {
                if !staged_columns.contains_key(&file.table) {
                    let table = &schema.tables[&file.table];
                    let cols = self.ensure_table(&staging, table, false)?;
                    staged_columns.insert(file.table.clone(), cols);
                }
                self.insert_file(&qualified(&staging, &file.table), &file.columns, &path)?;
            } else {
                self.insert_file(&qualified(&ds, &file.table), &file.columns, &path)?;
            }
        }

        for (i, root) in direct_roots.iter().enumerate() {
            if self.repeats_primary_key(&ds, root, job.load_id)? {
                tracing::debug!(table = %root.name, "the load repeats a primary key: merging through staging");
                return Ok(false);
            }
            let children: Vec<&Table> = schema
                .descendants(&root.name)
                .into_iter()
                .filter(|t| {
                    final_columns.contains_key(&t.name)
                        || self.table_exists(&ds, &t.name).unwrap_or(false)
                })
                .collect();
            let temp = format!("_hw_direct_{i}_delete");
            for (statement, takes_load_id) in direct_merge_deletes(&ds, root, &children, &temp) {
                let context = format!("merging {}", root.name);
                if takes_load_id {
                    self.exec_with_load_id(&statement, job.load_id, &context)?;
                } else {
                    self.exec(&statement, &context)?;
                }
            }
        }
        for file in deferred {
            let path = job.files_dir.join(&file.file);
            self.insert_file(&qualified(&ds, &file.table), &file.columns, &path)?;
        }

        for (i, root) in merge_roots.iter().enumerate() {
            let root_chain = ChainTable {
                table: root,
                columns: staged_or_final(&staged_columns, &final_columns, &root.name),
                staged: staged_columns.contains_key(&root.name),
            };
            let children: Vec<ChainTable<'_>> = schema
                .descendants(&root.name)
                .into_iter()
                .filter(|t| {
                    final_columns.contains_key(&t.name)
                        || self.table_exists(&ds, &t.name).unwrap_or(false)
                })
                .map(|t| ChainTable {
                    table: t,
                    columns: staged_or_final(&staged_columns, &final_columns, &t.name),
                    staged: staged_columns.contains_key(&t.name),
                })
                .collect();
            if !root_chain.staged {
                continue;
            }
            let statements = match root.merge_strategy.unwrap_or_default() {
                MergeStrategy::Upsert | MergeStrategy::InsertOnly
                    if !root.primary_key().is_empty() =>
                {
                    upsert(
                        &ds,
                        &staging,
                        &root_chain,
                        &children,
                        root.merge_strategy.unwrap_or_default(),
                    )
                }
                _ => delete_insert(
                    &ds,
                    &staging,
                    &root_chain,
                    &children,
                    &format!("_hw_merge_{i}"),
                ),
            };
            for statement in statements {
                self.exec(&statement, &format!("merging {}", root.name))?;
            }
        }
        for name in &merged {
            if staged_columns.contains_key(*name) {
                self.exec(
                    &format!("DROP TABLE IF EXISTS {}", qualified(&staging, name)),
                    "clearing staging",
                )?;
            }
        }

        // Schema version, state and the load record commit with the data.
        let known: i64 = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE version_hash = ? AND schema_name = ?",
                    qualified(&ds, "_dlt_version")
                ),
                params![schema.version_hash, job.pipeline],
                |row| row.get(0),
            )
            .map_err(|e| self.err("reading _dlt_version", e))?;
        if known == 0 {
            self.conn
                .execute(
                    &format!(
                        "INSERT INTO {} (version, engine_version, inserted_at, schema_name, version_hash, schema) VALUES (?, ?, now(), ?, ?, ?)",
                        qualified(&ds, "_dlt_version")
                    ),
                    params![schema.version as i64, SCHEMA_ENGINE_VERSION, job.pipeline, schema.version_hash, schema.to_json()],
                )
                .map_err(|e| self.err("writing _dlt_version", e))?;
        }
        if let Some(state) = &job.state {
            self.conn
                .execute(
                    &format!(
                        "INSERT INTO {} (version, engine_version, pipeline_name, state, created_at, version_hash, _dlt_load_id, _dlt_id) VALUES (?, ?, ?, ?, now(), ?, ?, ?)",
                        qualified(&ds, "_dlt_pipeline_state")
                    ),
                    params![
                        state.version,
                        state.engine_version,
                        job.pipeline,
                        state.state,
                        state.version_hash,
                        job.load_id,
                        crate::hash::random_row_id()
                    ],
                )
                .map_err(|e| self.err("writing _dlt_pipeline_state", e))?;
        }
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {} (load_id, schema_name, status, inserted_at, schema_version_hash) VALUES (?, ?, 0, now(), ?)",
                    qualified(&ds, "_dlt_loads")
                ),
                params![job.load_id, job.pipeline, schema.version_hash],
            )
            .map_err(|e| self.err("writing _dlt_loads", e))?;
        Ok(true)
    }

    /// Whether two rows of `root` loaded by `load_id` share a primary key.
    fn repeats_primary_key(&self, dataset: &str, root: &Table, load_id: &str) -> Result<bool> {
        let pk: Vec<&str> = root.primary_key().iter().map(|c| c.name.as_str()).collect();
        if pk.is_empty() {
            return Ok(false);
        }
        self.conn
            .query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE {} = ? GROUP BY {} HAVING count(*) > 1)",
                    qualified(dataset, &root.name),
                    quote("_dlt_load_id"),
                    column_list(pk.into_iter())
                ),
                params![load_id],
                |row| row.get(0),
            )
            .map_err(|e| self.err(format!("checking primary keys of {}", root.name), e))
    }
}

/// The columns a merge statement may name: those of the staging table when the load staged
/// rows for it, else those of the final table.
fn staged_or_final(
    staged: &std::collections::HashMap<String, Vec<String>>,
    finals: &std::collections::HashMap<String, Vec<String>>,
    table: &str,
) -> Vec<String> {
    staged
        .get(table)
        .or_else(|| finals.get(table))
        .cloned()
        .unwrap_or_default()
}

/// A root table and all its descendants in the schema, root first.
fn chain_names(schema: &Schema, root: &str) -> Vec<String> {
    std::iter::once(root.to_string())
        .chain(schema.descendants(root).into_iter().map(|t| t.name.clone()))
        .collect()
}

fn is_lock_conflict(e: &duckdb::Error) -> bool {
    let text = e.to_string();
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

/// Whether `root` can merge without staging (see `load_in_transaction`): delete-insert, no
/// hard-delete column (whose flagged rows staging filters out), and the `_dlt_id` and
/// `_dlt_load_id` columns that tell this load's rows from older ones.
fn merges_directly(root: &Table) -> bool {
    root.merge_strategy.unwrap_or_default() == MergeStrategy::DeleteInsert
        && !root.columns.values().any(|c| c.hard_delete)
        && root.columns.contains_key("_dlt_id")
        && root.columns.contains_key("_dlt_load_id")
}

fn first_line(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or("");
    if line.len() > 120 {
        format!(
            "{}...",
            &line[..line
                .char_indices()
                .nth(117)
                .map(|(i, _)| i)
                .unwrap_or(line.len())]
        )
    } else {
        line.to_string()
    }
}

impl Destination for DuckDbDestination {
    fn describe(&self) -> String {
        format!("duckdb:{}", self.path.display())
    }

    fn restore(&mut self, pipeline: &str) -> Result<Restored> {
        let ds = self.dataset.clone();
        let mut restored = Restored::default();
        if self.table_exists(&ds, "_dlt_pipeline_state")? && self.table_exists(&ds, "_dlt_loads")? {
            let sql = format!(
                "SELECT s.state FROM {} AS s JOIN {} AS l ON l.load_id = s._dlt_load_id WHERE s.pipeline_name = ? AND l.status = 0 ORDER BY l.load_id DESC LIMIT 1",
                qualified(&ds, "_dlt_pipeline_state"),
                qualified(&ds, "_dlt_loads")
            );
            let mut stmt = self
                .conn
                .prepare(&sql)
                .map_err(|e| self.err("reading state", e))?;
            let mut rows = stmt
                .query(params![pipeline])
                .map_err(|e| self.err("reading state", e))?;
            if let Some(row) = rows.next().map_err(|e| self.err("reading state", e))? {
                let text: String = row.get(0).map_err(|e| self.err("reading state", e))?;
                restored.state = Some(decode_from_destination(&text)?);
            }
        }
        if self.table_exists(&ds, "_dlt_version")? {
            let sql = format!(
                "SELECT schema FROM {} WHERE schema_name = ? ORDER BY version DESC, inserted_at DESC LIMIT 1",
                qualified(&ds, "_dlt_version")
            );
            let mut stmt = self
                .conn
                .prepare(&sql)
                .map_err(|e| self.err("reading schema", e))?;
            let mut rows = stmt
                .query(params![pipeline])
                .map_err(|e| self.err("reading schema", e))?;
            if let Some(row) = rows.next().map_err(|e| self.err("reading schema", e))? {
                let text: String = row.get(0).map_err(|e| self.err("reading schema", e))?;
                restored.schema = Some(Schema::from_json(&text)?);
            }
        }
        Ok(restored)
    }

    fn is_loaded(&mut self, load_id: &str) -> Result<bool> {
        let ds = self.dataset.clone();
        if !self.table_exists(&ds, "_dlt_loads")? {
            return Ok(false);
        }
        let count: i64 = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE load_id = ?",
                    qualified(&ds, "_dlt_loads")
                ),
                params![load_id],
                |row| row.get(0),
            )
            .map_err(|e| self.err("reading _dlt_loads", e))?;
        Ok(count > 0)
    }

    fn load(&mut self, job: &LoadJob<'_>) -> Result<()> {
        let merging = job.files.iter().any(|f| {
            job.schema
                .tables
                .get(job.schema.root_of(&f.table))
                .is_some_and(|t| t.write_disposition == WriteDisposition::Merge)
        });
        self.set_memory_limit(if merging {
            MERGE_MEMORY_LIMIT
        } else {
            INSERT_MEMORY_LIMIT
        })?;
        self.set_threads()?;
        self.exec("BEGIN TRANSACTION", "starting the load transaction")?;
        let mut loaded = self.load_in_transaction(job, true);
        if let Ok(false) = loaded {
            self.exec("ROLLBACK", "rolling back the direct merge")?;
            self.set_memory_limit(MERGE_MEMORY_LIMIT)?;
            self.exec("BEGIN TRANSACTION", "starting the load transaction")?;
            loaded = self.load_in_transaction(job, false);
        }
        match loaded {
            Ok(_) => {
                if std::env::var_os("HIGHWATER_TEST_CRASH").is_some_and(|v| v == "before-commit") {
                    // Test hook: die with the transaction open, as a kill at this point would.
                    std::process::abort();
                }
                self.exec("COMMIT", "committing the load")
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn table_counts(&mut self) -> Result<Vec<TableCount>> {
        let ds = self.dataset.clone();
        let mut stmt = self
            .conn
            .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name")
            .map_err(|e| self.err("listing tables", e))?;
        let names: Vec<String> = stmt
            .query_map(params![ds], |row| row.get(0))
            .map_err(|e| self.err("listing tables", e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err("listing tables", e))?;
        let mut counts = Vec::new();
        for name in names.into_iter().filter(|n| !n.starts_with("_dlt_")) {
            let rows: i64 = self
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM {}", qualified(&ds, &name)),
                    [],
                    |row| row.get(0),
                )
                .map_err(|e| self.err(format!("counting rows of {name}"), e))?;
            counts.push(TableCount {
                table: name,
                rows: rows as u64,
            });
        }
        Ok(counts)
    }

    fn recent_loads(&mut self, limit: usize) -> Result<Vec<LoadRecord>> {
        let ds = self.dataset.clone();
        if !self.table_exists(&ds, "_dlt_loads")? {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT load_id, status, strftime(CAST(inserted_at AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%fZ') FROM {} ORDER BY load_id DESC LIMIT ?",
                qualified(&ds, "_dlt_loads")
            ))
            .map_err(|e| self.err("reading _dlt_loads", e))?;
        let loads = stmt
            .query_map(params![limit as i64], |row| {
                Ok(LoadRecord {
                    load_id: row.get(0)?,
                    status: row.get(1)?,
                    inserted_at: row.get(2)?,
                })
            })
            .map_err(|e| self.err("reading _dlt_loads", e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err("reading _dlt_loads", e))?;
        Ok(loads)
    }

    fn drop_tables(&mut self, tables: &[String]) -> Result<()> {
        let ds = self.dataset.clone();
        self.exec("BEGIN TRANSACTION", "starting a transaction")?;
        for table in tables {
            if let Err(e) = self.exec(
                &format!("DROP TABLE IF EXISTS {}", qualified(&ds, table)),
                "dropping table",
            ) {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        self.exec("COMMIT", "committing")
    }
}

#[cfg(test)]
mod tests {
    use super::load_threads;

    #[test]
    fn one_load_thread_on_two_cores_else_one_per_core() {
        assert_eq!(load_threads(1), 1);
        assert_eq!(load_threads(2), 1);
        assert_eq!(load_threads(8), 8);
    }
}
