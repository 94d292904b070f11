//! The embedded DuckDB destination: Parquet files bulk-loaded with `read_parquet`, every load in
//! one transaction.
//!
//! DuckDB lets one process write a database file at a time. Opening waits while another process
//! holds the file (parallel backfills), up to a timeout, and the connection is kept only for the
//! few seconds a load needs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duckdb::types::{ToSqlOutput, ValueRef};
use duckdb::Connection;
use serde::Deserialize;

use super::plan::{LoadPlan, MergeMode};
use super::sql::{
    self, column_list, first_line, BulkFile, Dialect, Outcome, Param, RowOrder, SqlClient, SqlValue,
};
use super::{Capabilities, Destination, LoadJob, LoadRecord, Restored, TableCount};
use crate::error::{Error, Result};
use crate::schema::{Column, DataType, MergeStrategy, ReplaceStrategy, Table};

/// What DuckDB supports.
pub const CAPABILITIES: Capabilities = Capabilities {
    kind: "duckdb",
    // DuckDB's limit (65536) never shortens in practice; it is what dlt uses for DuckDB.
    max_identifier_length: 65536,
    merge_strategies: &[
        MergeStrategy::DeleteInsert,
        MergeStrategy::Upsert,
        MergeStrategy::InsertOnly,
        MergeStrategy::Scd2,
    ],
    replace_strategies: &[
        ReplaceStrategy::TruncateAndInsert,
        ReplaceStrategy::InsertFromStaging,
        ReplaceStrategy::StagingOptimized,
    ],
};

/// The path a shared in-memory database is described by.
const IN_MEMORY: &str = ":memory:";

/// How long opening waits for another process to release the file.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// DuckDB's memory limit (MiB) for loads that only insert, and for loads that merge through
/// staging (the window and joins of a merge spill less with more). Bounded limits keep a large
/// load within a few hundred MB: DuckDB writes the rows of a big transaction to the file (or
/// spills) instead of holding them all.
const INSERT_MEMORY_MIB: u64 = 128;
const MERGE_MEMORY_MIB: u64 = 160;

/// What DuckDB holds per column of a wide table a load appends to (open segments of the table
/// and of the transaction's local storage, the Parquet reader's buffers), and the rest of a
/// load. Measured on text columns: 1 row of 2,500, 5,000 and 10,000 columns needs 188, 358 and
/// 699 MB; 2,000 rows of 3,000 columns 473 MB (merged); 10,000 rows of 3,000 columns 1 GB,
/// which the first retry gives.
const PER_COLUMN_KIB: u64 = 192;
const WIDE_BASE_MIB: u64 = 64;

/// `[destination] kind = "duckdb"`: a database file and the settings of its loads. Fields left
/// out take the environment's `HIGHWATER_DUCKDB_MEMORY_LIMIT`, `HIGHWATER_DUCKDB_THREADS` and
/// `HIGHWATER_LOCK_TIMEOUT`, else the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuckDbConfig {
    /// The database file (relative to the pipeline file's folder).
    pub path: PathBuf,
    /// DuckDB's `memory_limit` during loads, e.g. `"512MB"`; default 128MB for loads that only
    /// insert, 160MB for merges through staging, more for tables of thousands of columns (see
    /// [`DuckDbConfig::load_memory_mib`]).
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// DuckDB's threads during loads; default one per core, but one on a machine with two cores
    /// or fewer, where one thread loads faster in load order (a table the load creates and no
    /// load merges into is filled on every core, see [`RowOrder::Free`]).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Seconds a run waits for another process to release the file (default 300).
    #[serde(default)]
    pub lock_timeout: Option<f64>,
    /// A database the application holds open, loaded through instead of opening `path`
    /// (see [`DuckDbConfig::shared`]).
    #[serde(skip)]
    pub shared: Option<SharedDuckDb>,
}

/// A DuckDB database the application holds open, shared with highwater: each load works on a
/// new connection to it ([`Connection::try_clone`]).
#[derive(Clone)]
pub struct SharedDuckDb(Arc<Mutex<Connection>>);

impl SharedDuckDb {
    fn connect(&self) -> duckdb::Result<Connection> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .try_clone()
    }
}

impl std::fmt::Debug for SharedDuckDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedDuckDb(..)")
    }
}

impl PartialEq for SharedDuckDb {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl DuckDbConfig {
    /// The file at `path`, with the settings of the environment.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DuckDbConfig {
            path: path.into(),
            memory_limit: None,
            threads: None,
            lock_timeout: None,
            shared: None,
        }
    }

    /// Loads into the database `connection` belongs to, which the application keeps open
    /// (DuckDB lets one process open a file for writing, so a running application could not
    /// otherwise load into its own database). Each load takes a new connection to it: the
    /// application's other connections see the old rows until the load commits. The
    /// database's settings stay the application's: `memory_limit` and `threads` are not set.
    pub fn shared(connection: &Connection) -> Result<DuckDbConfig> {
        let fail = |e: duckdb::Error| Error::Destination {
            destination: "duckdb (shared connection)".into(),
            context: "reading the database's file".into(),
            source: Box::new(e),
        };
        let path: Option<String> = connection
            .query_row(
                "SELECT path FROM duckdb_databases() WHERE database_name = current_database()",
                [],
                |row| row.get(0),
            )
            .map_err(fail)?;
        let mut config = DuckDbConfig::new(
            path.filter(|p| !p.is_empty())
                .unwrap_or_else(|| IN_MEMORY.into()),
        );
        config.shared = Some(SharedDuckDb(Arc::new(Mutex::new(
            connection.try_clone().map_err(fail)?,
        ))));
        Ok(config)
    }

    /// Fills the fields left out from the environment and checks them; errors name where the
    /// bad value came from (the key, or `VARIABLE="value"`).
    pub fn resolved(&self) -> Result<DuckDbConfig> {
        let (memory_limit, limit_from) = match &self.memory_limit {
            Some(limit) => (Some(limit.clone()), "memory_limit = "),
            None => (
                std::env::var("HIGHWATER_DUCKDB_MEMORY_LIMIT").ok(),
                "HIGHWATER_DUCKDB_MEMORY_LIMIT=",
            ),
        };
        if let Some(limit) = &memory_limit {
            // SET takes no parameters: the setting must be a plain size like "192MB".
            if limit.is_empty()
                || !limit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ' ')
            {
                return Err(Error::Config(format!(
                    "DuckDB {limit_from}{limit:?} is not a size such as \"512MB\""
                )));
            }
        }
        let threads = match self.threads {
            Some(0) => {
                return Err(Error::Config(
                    "DuckDB threads = 0: give at least 1 thread".into(),
                ))
            }
            Some(n) => Some(n),
            None => match std::env::var("HIGHWATER_DUCKDB_THREADS") {
                Ok(value) => Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "HIGHWATER_DUCKDB_THREADS={value:?} is not a number of threads such as \"2\""
                            ))
                        })?,
                ),
                Err(_) => None,
            },
        };
        let lock_timeout = self.lock_timeout.or_else(|| {
            std::env::var("HIGHWATER_LOCK_TIMEOUT")
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
        });
        Ok(DuckDbConfig {
            path: self.path.clone(),
            memory_limit,
            threads,
            lock_timeout,
            shared: self.shared.clone(),
        })
    }

    /// DuckDB's `memory_limit` (MiB) for a load whose widest table has `widest_table` columns,
    /// unless one is configured: the default of the load's kind (`merges` through staging or
    /// not), raised for wide tables by [`PER_COLUMN_KIB`] a column, so a table of thousands
    /// of columns loads instead of failing with DuckDB's out-of-memory error; never above 80 %
    /// of the machine's memory (DuckDB's own default). A load that still runs out of memory is
    /// retried with twice the limit, up to that ceiling ([`grown_memory_mib`]).
    pub fn load_memory_mib(&self, merges: bool, widest_table: usize) -> Option<u64> {
        if self.memory_limit.is_some() {
            return None;
        }
        let default = if merges {
            MERGE_MEMORY_MIB
        } else {
            INSERT_MEMORY_MIB
        };
        Some(sized_memory_mib(
            default,
            widest_table,
            machine_memory_mib(),
        ))
    }

    fn lock_timeout(&self) -> Duration {
        self.lock_timeout
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_LOCK_TIMEOUT)
    }
}

/// The default limit `default_mib`, or what `widest_table` columns need when that is more,
/// at most the ceiling of `machine_mib` and never below the default.
fn sized_memory_mib(default_mib: u64, widest_table: usize, machine_mib: Option<u64>) -> u64 {
    let for_width = WIDE_BASE_MIB + (widest_table as u64 * PER_COLUMN_KIB).div_ceil(1024);
    for_width
        .min(memory_ceiling_mib(machine_mib))
        .max(default_mib)
}

/// The limit after a load ran out of memory at `mib`: twice as much, at most the ceiling;
/// `None` when the ceiling was reached.
fn grown_memory_mib(mib: u64, machine_mib: Option<u64>) -> Option<u64> {
    let ceiling = memory_ceiling_mib(machine_mib);
    (mib < ceiling).then(|| (mib * 2).min(ceiling))
}

/// 80 % of the machine's memory, DuckDB's own default limit (32 GiB when unknown).
fn memory_ceiling_mib(machine_mib: Option<u64>) -> u64 {
    machine_mib.unwrap_or(40 << 10) / 5 * 4
}

/// Whether DuckDB failed for lack of memory.
fn is_out_of_memory(e: &Error) -> bool {
    matches!(e, Error::Destination { source, .. } if source.to_string().contains("Out of Memory"))
}

/// The memory this process may use in MiB: the machine's, or its control group's limit when
/// lower (a container); `None` when neither can be read.
fn machine_memory_mib() -> Option<u64> {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    let cgroup_bytes = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (total_kib.map(|k| k / 1024), cgroup_bytes.map(|b| b >> 20)) {
        (Some(total), Some(group)) => Some(total.min(group)),
        (total, group) => total.or(group),
    }
}

/// DuckDB threads for the inserts of a load on a machine with `cores` cores, unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoadThreads {
    /// For inserts that keep the file's row order ([`RowOrder::Kept`]) and the merges. On two
    /// cores one thread loads faster than two: in 8 alternating pairs of the benchmark's 10 %
    /// second run the load took 1.56 s against 1.75 s, and the 1,000,000-event first run's load
    /// 11.1–11.4 s against 12.0–13.1 s. The second thread mostly waits for work (a package file
    /// of one row group is read by one thread, in order) and takes CPU from the one that has it.
    /// Larger machines keep DuckDB's default, a thread per core.
    kept: usize,
    /// For inserts into a table the load created ([`RowOrder::Free`]), run without
    /// `preserve_insertion_order`: then DuckDB reads and writes a file's row groups on every
    /// core.
    free: usize,
}

impl LoadThreads {
    fn new(configured: Option<usize>, cores: usize) -> LoadThreads {
        match configured {
            Some(n) => LoadThreads { kept: n, free: n },
            None => LoadThreads {
                kept: if cores <= 2 { 1 } else { cores },
                free: cores,
            },
        }
    }
}

/// DuckDB's SQL.
struct DuckDbDialect;

impl Dialect for DuckDbDialect {
    fn type_name(&self, column: &Column) -> String {
        duckdb_type(column)
    }

    fn create_temp_table_as(&self, name: &str, select: &str) -> String {
        format!("CREATE OR REPLACE TEMPORARY TABLE {name} AS {select}")
    }

    fn load_order(&self) -> &'static str {
        "rowid"
    }

    fn moves_tables(&self) -> bool {
        // DuckDB has no `ALTER TABLE … SET SCHEMA`.
        false
    }

    fn timestamp_text(&self, expr: &str) -> String {
        // Without the ICU extension (not bundled) the cast to TIMESTAMP keeps UTC.
        format!("strftime(CAST({expr} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%fZ')")
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

impl duckdb::ToSql for Param<'_> {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Text(s) => ToSqlOutput::from(*s),
            Param::Int(i) => ToSqlOutput::from(*i),
        })
    }
}

/// A DuckDB connection (or transaction, which derefs to one) as the shared SQL code drives it.
struct DuckDbClient<'a> {
    conn: &'a Connection,
    path: &'a Path,
    /// The load's threads, which inserts in free order change and restore; `None` outside
    /// loads and on an application's shared database (its settings stay as they are).
    threads: Option<LoadThreads>,
}

impl DuckDbClient<'_> {
    fn err(&self, context: String, e: duckdb::Error) -> Error {
        Error::Destination {
            destination: self.path.display().to_string(),
            context,
            source: Box::new(e),
        }
    }

    /// Sets whether inserts keep the file's row order, and the threads they use.
    fn set_order(&mut self, preserve: bool, threads: usize) -> Result<()> {
        // SET takes no parameters: both values are plain numbers and booleans.
        self.execute(
            &format!("SET preserve_insertion_order = {preserve}"),
            &[],
            "setting preserve_insertion_order",
        )?;
        self.execute(&format!("SET threads = {threads}"), &[], "setting threads")?;
        Ok(())
    }
}

impl SqlClient for DuckDbClient<'_> {
    fn dialect(&self) -> &dyn Dialect {
        &DuckDbDialect
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>], context: &str) -> Result<u64> {
        let started = Instant::now();
        let params: Vec<&dyn duckdb::ToSql> =
            params.iter().map(|p| p as &dyn duckdb::ToSql).collect();
        let n = self
            .conn
            .execute(sql, params.as_slice())
            .map_err(|e| self.err(format!("{context} ({})", first_line(sql)), e))?;
        tracing::debug!(elapsed = ?started.elapsed(), "{}", first_line(sql));
        Ok(n as u64)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        context: &str,
    ) -> Result<Vec<Vec<SqlValue>>> {
        let fail = |e| self.err(format!("{context} ({})", first_line(sql)), e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(fail)?;
        let params: Vec<&dyn duckdb::ToSql> =
            params.iter().map(|p| p as &dyn duckdb::ToSql).collect();
        let mut rows = stmt.query(params.as_slice()).map_err(fail)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(fail)? {
            let width = row.as_ref().column_count();
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i).map_err(fail)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::TinyInt(v) => SqlValue::Int(v.into()),
                    ValueRef::SmallInt(v) => SqlValue::Int(v.into()),
                    ValueRef::Int(v) => SqlValue::Int(v.into()),
                    ValueRef::BigInt(v) => SqlValue::Int(v),
                    ValueRef::UInt(v) => SqlValue::Int(v.into()),
                    ValueRef::HugeInt(v) => {
                        SqlValue::Int(v.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
                    }
                    ValueRef::UBigInt(v) => SqlValue::Int(v.min(i64::MAX as u64) as i64),
                    ValueRef::Text(bytes) => {
                        SqlValue::Text(String::from_utf8_lossy(bytes).into_owned())
                    }
                    other => {
                        return Err(Error::Destination {
                            destination: self.path.display().to_string(),
                            context: format!("{context} ({})", first_line(sql)),
                            source: format!("unexpected value {other:?}").into(),
                        })
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn bulk_insert(
        &mut self,
        schema: &str,
        table: &Table,
        files: &[BulkFile<'_>],
        order: RowOrder,
    ) -> Result<()> {
        let target = sql::qualified(schema, &table.name);
        // One statement reads every file, in the list's order; files with other columns than
        // the first are matched by name (a column a file lacks is NULL in its rows).
        let mut columns: Vec<&str> = Vec::new();
        for file in files {
            for column in file.columns {
                if !columns.contains(&column.as_str()) {
                    columns.push(column);
                }
            }
        }
        let cols = column_list(columns);
        let source = match files.len() {
            1 => "read_parquet(?)".to_string(),
            n => format!(
                "read_parquet([{}], union_by_name = true)",
                vec!["?"; n].join(", ")
            ),
        };
        let statement = format!("INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}");
        let paths: Vec<String> = files
            .iter()
            .map(|f| f.path.to_string_lossy().to_string())
            .collect();
        let described = match files {
            [file] => file.path.display().to_string(),
            _ => format!("{} files", files.len()),
        };
        let started = Instant::now();
        let free = match (order, self.threads) {
            (RowOrder::Free, Some(threads)) => Some(threads),
            _ => None,
        };
        if let Some(threads) = free {
            self.set_order(false, threads.free)?;
        }
        let inserted = self
            .conn
            .execute(&statement, duckdb::params_from_iter(&paths))
            .map_err(|e| self.err(format!("loading {described} into {target}"), e));
        if let Some(threads) = free {
            self.set_order(true, threads.kept)?;
        }
        inserted?;
        tracing::debug!(elapsed = ?started.elapsed(), files = ?paths, ?order, "inserted into {target}");
        Ok(())
    }
}

/// A DuckDB database file and the dataset (DuckDB schema) the pipeline loads into.
pub struct DuckDbDestination {
    config: DuckDbConfig,
    dataset: String,
    conn: Connection,
    /// Held while the connection is open: highwater processes take turns on the file (DuckDB
    /// allows one writing process), and a new file is never opened half-created by another.
    /// None for a shared in-memory database, which has no file.
    _file_lock: Option<crate::lock::LockFile>,
}

/// Takes the lock `<database>.lock` beside the database file, waiting up to `timeout`.
fn lock_beside(path: &Path, timeout: Duration) -> Result<crate::lock::LockFile> {
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

fn is_lock_conflict(e: &duckdb::Error) -> bool {
    let text = e.to_string();
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

impl DuckDbDestination {
    /// Opens (creating if needed) the database file, waiting while another process holds it.
    pub fn open(config: &DuckDbConfig, dataset: &str) -> Result<Self> {
        let config = config.resolved()?;
        let path = &config.path;
        if let Some(shared) = &config.shared {
            // Loads of one process still take turns through the lock beside the file.
            let timeout = config.lock_timeout();
            let file_lock = match path.as_os_str() == IN_MEMORY {
                true => None,
                false => Some(lock_beside(path, timeout)?),
            };
            let conn = shared.connect().map_err(|e| Error::Destination {
                destination: path.display().to_string(),
                context: "connecting to the shared database".into(),
                source: Box::new(e),
            })?;
            return Ok(DuckDbDestination {
                dataset: dataset.to_string(),
                conn,
                _file_lock: file_lock,
                config,
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Destination {
                destination: path.display().to_string(),
                context: format!("creating its folder {}", dir.display()),
                source: Box::new(e),
            })?;
        }
        let timeout = config.lock_timeout();
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
        // Without the ICU extension (not bundled) DuckDB keeps TIMESTAMPTZ in UTC, as we want.
        Ok(DuckDbDestination {
            config,
            dataset: dataset.to_string(),
            conn,
            _file_lock: Some(file_lock),
        })
    }

    fn client(&self) -> DuckDbClient<'_> {
        DuckDbClient {
            conn: &self.conn,
            path: &self.config.path,
            threads: None,
        }
    }

    /// The threads of a load; `None` on an application's shared database, whose settings stay
    /// the application's.
    fn load_threads(&self) -> Option<LoadThreads> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.config.shared {
            Some(_) => None,
            None => Some(LoadThreads::new(self.config.threads, cores)),
        }
    }

    /// The load's settings: memory limit by load kind and table width, threads by machine,
    /// insertion order kept (inserts into tables the load creates free it for themselves).
    fn configure(&self, memory_mib: Option<u64>) -> Result<()> {
        let Some(threads) = self.load_threads() else {
            // The application's database keeps the application's settings.
            return Ok(());
        };
        let limit = match (memory_mib, &self.config.memory_limit) {
            (Some(mib), _) => format!("{mib}MB"),
            (None, Some(configured)) => configured.clone(),
            (None, None) => format!("{INSERT_MEMORY_MIB}MB"),
        };
        // SET takes no parameters: the limit was checked to be a plain size.
        let mut client = self.client();
        client.execute(
            &format!("SET memory_limit = '{limit}'"),
            &[],
            "setting memory_limit",
        )?;
        client.set_order(true, threads.kept)
    }

    /// Loads `job` with `mode` in one transaction, with the memory limit sized to it and grown
    /// while DuckDB runs out of memory (unless the limit is configured).
    fn load_sized(&mut self, job: &LoadJob<'_>, mode: MergeMode) -> Result<Outcome> {
        let plan = LoadPlan::new(job, mode)?;
        let widest = plan.tables.iter().map(|t| t.columns.len()).max();
        // An application's shared database keeps the application's memory limit.
        let mut memory = match self.config.shared {
            Some(_) => None,
            None => self
                .config
                .load_memory_mib(plan.stages(), widest.unwrap_or(0)),
        };
        loop {
            match self.load_with(job, &plan, memory) {
                Err(e) if is_out_of_memory(&e) => {
                    let Some(grown) =
                        memory.and_then(|m| grown_memory_mib(m, machine_memory_mib()))
                    else {
                        return Err(e);
                    };
                    tracing::warn!(
                        destination = %self.describe(),
                        "DuckDB ran out of memory with memory_limit {}MB; loading again with {grown}MB",
                        memory.unwrap_or_default()
                    );
                    memory = Some(grown);
                }
                other => return other,
            }
        }
    }

    /// Carries out `plan` in one transaction, rolled back unless it commits.
    fn load_with(
        &mut self,
        job: &LoadJob<'_>,
        plan: &LoadPlan<'_>,
        memory_mib: Option<u64>,
    ) -> Result<Outcome> {
        self.configure(memory_mib)?;
        let destination = self.describe();
        let path = self.config.path.clone();
        let threads = self.load_threads();
        let tx = self.conn.transaction().map_err(|e| Error::Destination {
            destination: destination.clone(),
            context: "starting the load transaction".into(),
            source: Box::new(e),
        })?;
        let mut client = DuckDbClient {
            conn: &tx,
            path: &path,
            threads,
        };
        let outcome = sql::load(&mut client, &self.dataset, &destination, plan, job)?;
        if outcome == Outcome::Loaded {
            crate::crash::point("before-commit");
            tx.commit().map_err(|e| Error::Destination {
                destination,
                context: "committing the load".into(),
                source: Box::new(e),
            })?;
        }
        Ok(outcome)
    }
}

impl Destination for DuckDbDestination {
    fn describe(&self) -> String {
        format!("duckdb:{}", self.config.path.display())
    }

    fn restore(&mut self, pipeline: &str) -> Result<Restored> {
        sql::restore(&mut self.client(), &self.dataset, pipeline)
    }

    fn is_loaded(&mut self, load_id: &str) -> Result<bool> {
        sql::is_loaded(&mut self.client(), &self.dataset, load_id)
    }

    fn load(&mut self, job: &LoadJob<'_>) -> Result<()> {
        if self.load_sized(job, MergeMode::Direct)? == Outcome::RepeatsPrimaryKey {
            self.load_sized(job, MergeMode::Staged)?;
        }
        Ok(())
    }

    fn table_counts(&mut self) -> Result<Vec<TableCount>> {
        sql::table_counts(&mut self.client(), &self.dataset)
    }

    fn recent_loads(&mut self, limit: usize) -> Result<Vec<LoadRecord>> {
        sql::recent_loads(&mut self.client(), &self.dataset, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_inserts_take_one_thread_on_two_cores_free_ones_every_core() {
        let two = LoadThreads::new(None, 2);
        assert_eq!((two.kept, two.free), (1, 2));
        assert_eq!(LoadThreads::new(None, 1), LoadThreads { kept: 1, free: 1 });
        assert_eq!(LoadThreads::new(None, 8), LoadThreads { kept: 8, free: 8 });
        // Configured threads are used for every insert.
        assert_eq!(
            LoadThreads::new(Some(3), 2),
            LoadThreads { kept: 3, free: 3 }
        );
    }

    #[test]
    fn inserts_in_free_order_use_every_thread_then_restore_the_load_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a BIGINT, b VARCHAR)")
            .unwrap();
        conn.execute(
            "COPY (SELECT range AS a FROM range(200000)) TO ? (FORMAT parquet, ROW_GROUP_SIZE 50000)",
            [file.to_string_lossy().to_string()],
        )
        .unwrap();
        let path = PathBuf::from(IN_MEMORY);
        let mut client = DuckDbClient {
            conn: &conn,
            path: &path,
            threads: Some(LoadThreads { kept: 1, free: 2 }),
        };
        client.set_order(true, 1).unwrap();
        let table = Table::new("t");
        let a = ["a".to_string()];
        let files = [BulkFile {
            path: file.clone(),
            columns: &a,
        }];
        client
            .bulk_insert("main", &table, &files, RowOrder::Free)
            .unwrap();
        let settings: (bool, i64) = conn
            .query_row(
                "SELECT current_setting('preserve_insertion_order'), current_setting('threads')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            settings,
            (true, 1),
            "the settings of ordered inserts are back"
        );
        let (rows, sum): (i64, i64) = conn
            .query_row("SELECT count(*), sum(a)::BIGINT FROM t", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((rows, sum), (200_000, 200_000 * 199_999 / 2));

        // A failed free insert restores them too.
        let missing = [BulkFile {
            path: dir.path().join("missing.parquet"),
            columns: &a,
        }];
        assert!(client
            .bulk_insert("main", &table, &missing, RowOrder::Free)
            .is_err());
        let preserved: bool = conn
            .query_row(
                "SELECT current_setting('preserve_insertion_order')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(preserved);
    }

    #[test]
    fn one_insert_loads_files_of_other_columns_in_the_order_of_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a BIGINT, b VARCHAR)")
            .unwrap();
        let first = dir.path().join("1.parquet");
        let second = dir.path().join("2.parquet");
        conn.execute(
            "COPY (SELECT range AS a FROM range(100000)) TO ? (FORMAT parquet, ROW_GROUP_SIZE 10000)",
            [first.to_string_lossy().to_string()],
        )
        .unwrap();
        conn.execute(
            "COPY (SELECT 'x' || range AS b, range + 100000 AS a FROM range(100000)) TO ? (FORMAT parquet, ROW_GROUP_SIZE 10000)",
            [second.to_string_lossy().to_string()],
        )
        .unwrap();
        let path = PathBuf::from(IN_MEMORY);
        let mut client = DuckDbClient {
            conn: &conn,
            path: &path,
            threads: Some(LoadThreads { kept: 2, free: 2 }),
        };
        client.set_order(true, 2).unwrap();
        let (a, ba) = (["a".to_string()], ["b".to_string(), "a".to_string()]);
        let files = [
            BulkFile {
                path: second,
                columns: &ba,
            },
            BulkFile {
                path: first,
                columns: &a,
            },
        ];
        client
            .bulk_insert("main", &Table::new("t"), &files, RowOrder::Kept)
            .unwrap();
        let (rows, with_b, out_of_order): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), count(b), count(*) FILTER (WHERE a <> CASE WHEN rowid < 100000 \
                 THEN rowid + 100000 ELSE rowid - 100000 END) FROM t",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!((rows, with_b, out_of_order), (200_000, 100_000, 0));
    }

    #[test]
    fn memory_limit_grows_with_the_widest_table_and_on_retries_up_to_most_of_the_machine() {
        // Ordinary tables keep the default of their load kind.
        assert_eq!(sized_memory_mib(128, 40, Some(16_000)), 128);
        assert_eq!(sized_memory_mib(160, 0, None), 160);
        // Thousands of columns get what they need...
        let wide = sized_memory_mib(128, 5000, Some(16_000));
        assert_eq!(wide, WIDE_BASE_MIB + (5000 * PER_COLUMN_KIB).div_ceil(1024));
        assert!(wide >= 358, "measured need of 5,000 text columns");
        // ...but at most 80 % of the machine, and never less than the default.
        assert_eq!(sized_memory_mib(128, 100_000, Some(4_000)), 3_200);
        assert_eq!(sized_memory_mib(128, 100_000, Some(100)), 128);
        // A load that ran out of memory gets twice as much, up to the ceiling.
        assert_eq!(grown_memory_mib(128, Some(4_000)), Some(256));
        assert_eq!(grown_memory_mib(2_000, Some(4_000)), Some(3_200));
        assert_eq!(grown_memory_mib(3_200, Some(4_000)), None);
        // A configured limit is taken as it is: no sizing, no retry.
        let mut config = DuckDbConfig::new("x.duckdb");
        assert_eq!(config.load_memory_mib(false, 10), Some(128));
        assert_eq!(config.load_memory_mib(true, 10), Some(160));
        config.memory_limit = Some("64MB".into());
        assert_eq!(config.load_memory_mib(false, 3000), None);
        assert!(machine_memory_mib().is_some_and(|m| m > 0));
    }

    #[test]
    fn settings_come_from_the_config_before_the_environment_and_are_checked() {
        let mut config = DuckDbConfig::new("x.duckdb");
        config.memory_limit = Some("512MB".into());
        config.threads = Some(3);
        let resolved = config.resolved().unwrap();
        assert_eq!(resolved.memory_limit.as_deref(), Some("512MB"));
        assert_eq!(resolved.threads, Some(3));
        config.memory_limit = Some("1GB'; DROP TABLE x; --".into());
        let err = config.resolved().unwrap_err().to_string();
        assert!(err.contains("is not a size"), "{err}");
        config.memory_limit = None;
        config.threads = Some(0);
        assert!(config.resolved().is_err());
    }
}
