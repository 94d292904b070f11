//! The PostgreSQL destination: package files streamed in with binary `COPY`, every load (DDL,
//! data, merges, state and `_dlt_loads` row) in one transaction.
//!
//! Loads into one dataset take turns through a transaction-scoped advisory lock, so runs from
//! several machines (parallel backfills in an Airflow pool) never race on DDL, and a
//! state-writing run that was overtaken by another run of the same pipeline sees the newer
//! state and refuses instead of overwriting it.

mod copy;
pub mod tls;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, GenericClient};
use serde::Deserialize;

use self::tls::SslMode;
use super::plan::{LoadPlan, MergeMode};
use super::sql::{
    self, column_list, first_line, BulkFile, Dialect, Outcome, Param, RowOrder, SqlClient, SqlValue,
};
use super::{Capabilities, Destination, LoadJob, LoadRecord, Restored, TableCount};
use crate::error::{Error, Result};
use crate::schema::{Column, DataType, MergeStrategy, ReplaceStrategy, Table};

/// What PostgreSQL supports (as dlt's `postgres` destination).
pub const CAPABILITIES: Capabilities = Capabilities {
    kind: "postgres",
    max_identifier_length: 63,
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

/// How long a load waits for another load into the same dataset.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// `[destination] kind = "postgres"`, or `destination = "postgres://…"`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`; the query may hold `sslmode` and
    /// `sslrootcert` (and libpq's other keys the driver knows, such as `connect_timeout`).
    /// Without a password in it, `PGPASSWORD` is used.
    pub credentials: String,
    /// `disable` | `prefer` (default) | `require` | `verify-ca` | `verify-full`; overrides the
    /// URL's.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// PEM file of the certificates to trust (relative to the pipeline file's folder).
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Seconds a load waits for another load into the same dataset (default 300).
    #[serde(default)]
    pub lock_timeout: Option<f64>,
}

impl std::fmt::Debug for PostgresConfig {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("credentials", &public_url(&self.credentials))
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

/// A URL split into what the driver takes and the TLS settings highwater handles itself.
struct Parsed {
    driver: postgres::Config,
    sslmode: SslMode,
    sslrootcert: Option<PathBuf>,
}

impl PostgresConfig {
    /// A config from a `postgres://` URL; a relative `sslrootcert` is taken relative to `base`.
    pub fn from_url(url: &str, base: &Path) -> Result<Self> {
        let mut config = PostgresConfig {
            credentials: url.to_string(),
            sslmode: None,
            sslrootcert: None,
            lock_timeout: None,
        };
        config.rebase(base);
        config.parse()?;
        Ok(config)
    }

    /// Makes a relative `sslrootcert` (here or in the URL) relative to `base`.
    pub fn rebase(&mut self, base: &Path) {
        if let Some(path) = &self.sslrootcert {
            self.sslrootcert = Some(base.join(path));
        } else if let Some(path) = query_value(&self.credentials, "sslrootcert") {
            self.sslrootcert = Some(base.join(path));
        }
    }

    /// Checks the URL and the TLS settings; errors never show the password.
    pub fn validate(&self) -> Result<()> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<Parsed> {
        let public = public_url(&self.credentials);
        let bad =
            |detail: String| Error::Config(format!("postgres destination {public}: {detail}"));
        let (base, query) = split_query(&self.credentials);
        if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
            return Err(bad(
                "expected a URL postgres://USER:PASSWORD@HOST:PORT/DATABASE".into(),
            ));
        }
        let mut sslmode = self.sslmode.clone();
        let mut sslrootcert = self.sslrootcert.clone();
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    sslmode.get_or_insert_with(|| percent_decode(value));
                }
                "sslrootcert" => {
                    sslrootcert.get_or_insert_with(|| PathBuf::from(percent_decode(value)));
                }
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut driver: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| bad(e.to_string()))?;
        if driver.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                driver.password(password);
            }
        }
        if driver.get_connect_timeout().is_none() {
            driver.connect_timeout(Duration::from_secs(30));
        }
        let sslmode = match sslmode.as_deref() {
            None => SslMode::Prefer,
            Some(text) => SslMode::parse(text).ok_or_else(|| {
                bad(format!(
                    "sslmode {text:?} is not one of \"disable\", \"prefer\", \"require\", \"verify-ca\", \"verify-full\""
                ))
            })?,
        };
        Ok(Parsed {
            driver,
            sslmode,
            sslrootcert,
        })
    }

    /// The URL as it may be shown: no password, no query.
    pub fn describe(&self) -> String {
        public_url(&self.credentials)
    }

    fn lock_timeout(&self) -> Duration {
        self.lock_timeout
            .or_else(|| {
                std::env::var("HIGHWATER_LOCK_TIMEOUT")
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
            })
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_LOCK_TIMEOUT)
    }

    fn connect(&self) -> Result<Client> {
        let parsed = self.parse()?;
        tls::connect(parsed.driver, parsed.sslmode, parsed.sslrootcert.as_deref()).map_err(|e| {
            Error::Destination {
                destination: self.describe(),
                context: "connecting".into(),
                source: e,
            }
        })
    }
}

/// `url` split where the driver splits it: before the query, and the query (empty if none).
/// The driver takes the user info up to the first `@`, so a password may hold `/`, `?`, `:`
/// or `&`: the query starts at the first `?` after that `@`.
fn split_query(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let host_start = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    match url[host_start..].find('?') {
        Some(i) => (&url[..host_start + i], &url[host_start + i + 1..]),
        None => (url, ""),
    }
}

/// `scheme://user:***@host/db`: the password of the user info masked, the query dropped.
///
/// Everything between the user name and the last `@` before the query is hidden, so a password
/// holding `/`, `?`, `:` or even an unescaped `@` never shows, however the URL is written.
pub fn public_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: shown as it is unless it could hold a user info.
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("…@{}", host.split('?').next().unwrap_or("")),
            None => url.to_string(),
        };
    };
    let Some(first_at) = rest.find('@') else {
        let end = rest.find('?').unwrap_or(rest.len());
        return format!("{scheme}://{}", &rest[..end]);
    };
    let query = rest[first_at..]
        .find('?')
        .map_or(rest.len(), |i| first_at + i);
    let last_at = rest[..query].rfind('@').unwrap_or(first_at);
    let user_info = &rest[..first_at];
    let user = match user_info.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if last_at != first_at => format!("{user_info}:***"),
        None => user_info.to_string(),
    };
    format!("{scheme}://{user}@{}", &rest[last_at + 1..query])
}

fn query_value(url: &str, key: &str) -> Option<String> {
    split_query(url)
        .1
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok();
        match (bytes[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// PostgreSQL's SQL, with dlt's type names.
struct PostgresDialect;

impl Dialect for PostgresDialect {
    fn type_name(&self, column: &Column) -> String {
        postgres_type(column)
    }

    fn create_temp_table_as(&self, name: &str, select: &str) -> String {
        format!("CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS {select}")
    }

    fn load_order(&self) -> &'static str {
        // A staging table is created and filled by COPY in the load's transaction, so its rows
        // sit in the heap in load order.
        "ctid"
    }

    fn moves_tables(&self) -> bool {
        true
    }

    fn timestamp_text(&self, expr: &str) -> String {
        format!("to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    }
}

/// The PostgreSQL type of a column, as dlt's postgres destination maps it.
pub fn postgres_type(column: &Column) -> String {
    match column.data_type {
        DataType::Text => match column.precision {
            Some(n) => format!("varchar({n})"),
            None => "varchar".into(),
        },
        DataType::Bigint => match column.precision {
            Some(p) if p <= 16 => "smallint".into(),
            Some(p) if p <= 32 => "integer".into(),
            _ => "bigint".into(),
        },
        DataType::Double => "double precision".into(),
        DataType::Bool => "boolean".into(),
        DataType::Timestamp => {
            let zone = if column.timezone == Some(false) {
                "without"
            } else {
                "with"
            };
            match column.precision {
                Some(p) => format!("timestamp ({p}) {zone} time zone"),
                None => format!("timestamp {zone} time zone"),
            }
        }
        DataType::Date => "date".into(),
        DataType::Time => match column.precision {
            Some(p) => format!("time ({p}) without time zone"),
            None => "time without time zone".into(),
        },
        DataType::Decimal => format!(
            "numeric({},{})",
            column.precision.unwrap_or(38),
            column
                .scale
                .unwrap_or(crate::normalize::coerce::DECIMAL_SCALE)
        ),
        DataType::Json => "jsonb".into(),
        DataType::Binary => "bytea".into(),
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Text(s) => s.to_sql(ty, out),
            Param::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Param::Int(i) => i.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty) || <i64 as ToSql>::accepts(ty) || *ty == Type::INT4
    }

    to_sql_checked!();
}

/// A PostgreSQL client or transaction as the shared SQL code drives it.
struct PgClient<'a, C: GenericClient> {
    client: &'a mut C,
    destination: &'a str,
}

impl<C: GenericClient> PgClient<'_, C> {
    fn err(&self, context: String, e: postgres::Error) -> Error {
        Error::Destination {
            destination: self.destination.to_string(),
            context,
            source: driver_error(e),
        }
    }
}

fn params<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> SqlClient for PgClient<'_, C> {
    fn dialect(&self) -> &dyn Dialect {
        &PostgresDialect
    }

    fn execute(&mut self, sql: &str, values: &[Param<'_>], context: &str) -> Result<u64> {
        let started = Instant::now();
        let n = self
            .client
            .execute(sql, &params(values))
            .map_err(|e| self.err(format!("{context} ({})", first_line(sql)), e))?;
        tracing::debug!(elapsed = ?started.elapsed(), "{}", first_line(sql));
        Ok(n)
    }

    fn query(
        &mut self,
        sql: &str,
        values: &[Param<'_>],
        context: &str,
    ) -> Result<Vec<Vec<SqlValue>>> {
        let context = format!("{context} ({})", first_line(sql));
        let rows = self
            .client
            .query(sql, &params(values))
            .map_err(|e| self.err(context.clone(), e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row
                        .try_get::<_, Option<i64>>(i)
                        .map(|v| v.map(SqlValue::Int)),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(|v| SqlValue::Int(v.into()))),
                    Type::INT2 => row
                        .try_get::<_, Option<i16>>(i)
                        .map(|v| v.map(|v| SqlValue::Int(v.into()))),
                    _ => row
                        .try_get::<_, Option<String>>(i)
                        .map(|v| v.map(SqlValue::Text)),
                }
                .map_err(|e| self.err(context.clone(), e))?;
                values.push(value.unwrap_or(SqlValue::Null));
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
        // COPY keeps the files' order either way, at the same cost.
        _order: RowOrder,
    ) -> Result<()> {
        for file in files {
            self.copy_file(schema, table, file.columns, &file.path)?;
        }
        Ok(())
    }
}

impl<C: GenericClient> PgClient<'_, C> {
    /// Copies one package file into `schema.table`.
    fn copy_file(
        &mut self,
        schema: &str,
        table: &Table,
        columns: &[String],
        file: &Path,
    ) -> Result<()> {
        let started = Instant::now();
        let target = sql::qualified(schema, &table.name);
        let context = format!("loading {} into {target}", file.display());
        let schema_columns: Vec<&Column> = columns
            .iter()
            .map(|name| {
                table.columns.get(name).ok_or_else(|| Error::Corrupt {
                    what: format!("package file {}", file.display()),
                    detail: format!("column {name} is not in table {}", table.name),
                })
            })
            .collect::<Result<_>>()?;
        let opened = File::open(file).map_err(|e| Error::io("opening", file, e))?;
        let columnar = |e: parquet::errors::ParquetError| Error::Columnar {
            path: file.to_path_buf(),
            message: e.to_string(),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(opened)
            .map_err(columnar)?
            .with_batch_size(8192)
            .build()
            .map_err(columnar)?;
        let statement = format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            column_list(columns.iter().map(String::as_str))
        );
        let destination = self.destination;
        let mut writer =
            self.client
                .copy_in(statement.as_str())
                .map_err(|e| Error::Destination {
                    destination: destination.to_string(),
                    context: context.clone(),
                    source: driver_error(e),
                })?;
        let fail = |e: String| Error::Destination {
            destination: destination.to_string(),
            context: context.clone(),
            source: e.into(),
        };
        writer
            .write_all(copy::HEADER)
            .map_err(|e| fail(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::Columnar {
                path: file.to_path_buf(),
                message: e.to_string(),
            })?;
            if batch.num_columns() != schema_columns.len() {
                return Err(Error::Corrupt {
                    what: format!("package file {}", file.display()),
                    detail: format!(
                        "{} columns, the file list names {}",
                        batch.num_columns(),
                        schema_columns.len()
                    ),
                });
            }
            copy::write_batch(&batch, &schema_columns, &mut writer).map_err(fail)?;
        }
        writer
            .write_all(copy::TRAILER)
            .map_err(|e| fail(e.to_string()))?;
        let rows = writer.finish().map_err(|e| Error::Destination {
            destination: destination.to_string(),
            context: context.clone(),
            source: driver_error(e),
        })?;
        tracing::debug!(elapsed = ?started.elapsed(), rows, file = %file.display(), "copied into {target}");
        Ok(())
    }
}

/// A PostgreSQL database and the dataset (schema) the pipeline loads into.
pub struct PostgresDestination {
    config: PostgresConfig,
    described: String,
    dataset: String,
    client: Client,
}

impl PostgresDestination {
    /// Connects.
    pub fn open(config: &PostgresConfig, dataset: &str) -> Result<Self> {
        let client = config.connect()?;
        Ok(PostgresDestination {
            config: config.clone(),
            described: config.describe(),
            dataset: dataset.to_string(),
            client,
        })
    }

    /// Whether the dataset's schema exists.
    pub fn dataset_exists(&mut self) -> Result<bool> {
        let dataset = self.dataset.clone();
        let rows = self.client().query(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[Param::Text(&dataset)],
            "looking for the dataset",
        )?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_i64)
            > Some(0))
    }

    fn client(&mut self) -> PgClient<'_, Client> {
        PgClient {
            client: &mut self.client,
            destination: &self.described,
        }
    }

    /// Loads `job` with `mode` in one transaction, rolled back unless it commits.
    fn load_with(&mut self, job: &LoadJob<'_>, mode: MergeMode) -> Result<Outcome> {
        let plan = LoadPlan::new(job, mode)?;
        let destination = self.described.clone();
        let timeout = self.config.lock_timeout();
        let mut tx = self.client.transaction().map_err(|e| Error::Destination {
            destination: destination.clone(),
            context: "starting the load transaction".into(),
            source: driver_error(e),
        })?;
        let mut client = PgClient {
            client: &mut tx,
            destination: &destination,
        };
        take_dataset_lock(&mut client, &destination, &self.dataset, timeout)?;
        let outcome = sql::load(&mut client, &self.dataset, &destination, &plan, job)?;
        if outcome == Outcome::Loaded {
            crate::crash::point("before-commit");
            tx.commit().map_err(|e| Error::Destination {
                destination,
                context: "committing the load".into(),
                source: driver_error(e),
            })?;
        }
        Ok(outcome)
    }
}

/// The driver's error with the server's own words: a `postgres::Error` shows only "db error",
/// its message, code, detail and hint sit in the `DbError` behind it.
pub(crate) fn driver_error(e: postgres::Error) -> Box<dyn std::error::Error + Send + Sync> {
    let Some(db) = e.as_db_error() else {
        return Box::new(e);
    };
    let mut text = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; hint: {hint}"));
    }
    // Where in a statement or a COPY (its line and column) the server stopped.
    if let Some(place) = db.where_() {
        text.push_str(&format!("; at {place}"));
    }
    text.into()
}

/// Waits for the transaction-scoped advisory lock of `dataset`: loads into one dataset take
/// turns, whichever machine they run on.
fn take_dataset_lock(
    client: &mut dyn SqlClient,
    destination: &str,
    dataset: &str,
    timeout: Duration,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("highwater dataset {dataset}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    let key = i64::from_be_bytes(key);
    let started = Instant::now();
    let mut announced = false;
    loop {
        let rows = client.query(
            "SELECT CASE WHEN pg_try_advisory_xact_lock($1) THEN 1 ELSE 0 END",
            &[Param::Int(key)],
            "taking the dataset's load lock",
        )?;
        if rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_i64)
            == Some(1)
        {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(Error::Destination {
                destination: destination.to_string(),
                context: format!("waiting for the load lock of dataset {dataset}"),
                source: format!(
                    "another load into the dataset kept it busy for {:.0} s (lock_timeout, HIGHWATER_LOCK_TIMEOUT); nothing was loaded",
                    timeout.as_secs_f64()
                )
                .into(),
            });
        }
        if !announced {
            tracing::info!(
                dataset,
                "waiting for another load into the dataset to commit"
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Destination for PostgresDestination {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn restore(&mut self, pipeline: &str) -> Result<Restored> {
        let dataset = self.dataset.clone();
        sql::restore(&mut self.client(), &dataset, pipeline)
    }

    fn is_loaded(&mut self, load_id: &str) -> Result<bool> {
        let dataset = self.dataset.clone();
        sql::is_loaded(&mut self.client(), &dataset, load_id)
    }

    fn load(&mut self, job: &LoadJob<'_>) -> Result<()> {
        if self.load_with(job, MergeMode::Direct)? == Outcome::RepeatsPrimaryKey {
            self.load_with(job, MergeMode::Staged)?;
        }
        Ok(())
    }

    fn table_counts(&mut self) -> Result<Vec<TableCount>> {
        let dataset = self.dataset.clone();
        sql::table_counts(&mut self.client(), &dataset)
    }

    fn recent_loads(&mut self, limit: usize) -> Result<Vec<LoadRecord>> {
        let dataset = self.dataset.clone();
        sql::recent_loads(&mut self.client(), &dataset, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password_or_query() {
        assert_eq!(
            public_url("postgres://u:secret@h:5432/db?sslmode=require&password=x"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(public_url("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(
            public_url("postgres://h:5432/db?x=1"),
            "postgres://h:5432/db"
        );
        // The driver takes the password up to the first `@`: `/`, `?` and `:` are its own.
        for (url, secret) in [
            ("postgres://u:pa/ss@h:5432/db", "pa/ss"),
            ("postgres://u:pa?ss@h/db?sslmode=require", "pa?ss"),
            ("postgres://u:p:a&s=s@h/db", "p:a&s=s"),
            ("postgres://u:p@ss@h/db", "p@ss"),
        ] {
            let shown = public_url(url);
            assert!(shown.starts_with("postgres://u:***@"), "{shown}");
            assert!(!shown.contains(secret) && !shown.contains("ss"), "{shown}");
        }
        assert_eq!(
            public_url("postgres://u:pa/ss?@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(public_url("u:pw@h/db"), "…@h/db");
        assert_eq!(public_url("oracle"), "oracle");
        let config = PostgresConfig::from_url("postgres://u:secret@h/db", Path::new(".")).unwrap();
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn tls_settings_come_from_the_url_or_the_table() {
        let base = Path::new("/p");
        let config = PostgresConfig::from_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=ca%20dir/root.pem&connect_timeout=5",
            base,
        )
        .unwrap();
        let parsed = config.parse().unwrap();
        assert_eq!(parsed.sslmode, SslMode::VerifyFull);
        assert_eq!(
            parsed.sslrootcert,
            Some(PathBuf::from("/p/ca dir/root.pem"))
        );
        assert_eq!(
            parsed.driver.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );

        // A password holding `?` or `/` does not hide the query from highwater: the TLS
        // settings still apply (and nothing of the password reaches the driver's options).
        let config = PostgresConfig::from_url(
            "postgres://u:p?w/d@h/db?sslmode=verify-full&sslrootcert=ca.pem",
            base,
        )
        .unwrap();
        let parsed = config.parse().unwrap();
        assert_eq!(parsed.sslmode, SslMode::VerifyFull);
        assert_eq!(parsed.sslrootcert, Some(PathBuf::from("/p/ca.pem")));
        assert_eq!(parsed.driver.get_password(), Some(&b"p?w/d"[..]));
        assert_eq!(parsed.driver.get_dbname(), Some("db"));

        let err = PostgresConfig::from_url("postgres://u:pw@h/db?sslmode=always", base)
            .unwrap_err()
            .to_string();
        assert!(err.contains("always") && !err.contains("pw@"), "{err}");
        assert!(PostgresConfig::from_url("mysql://u@h/db", base).is_err());
    }

    #[test]
    fn types_as_dlt_maps_them() {
        let col = |t: DataType| Column::new("c", t);
        assert_eq!(postgres_type(&col(DataType::Text)), "varchar");
        assert_eq!(postgres_type(&col(DataType::Double)), "double precision");
        assert_eq!(
            postgres_type(&col(DataType::Timestamp)),
            "timestamp with time zone"
        );
        let mut naive = col(DataType::Timestamp);
        naive.timezone = Some(false);
        assert_eq!(postgres_type(&naive), "timestamp without time zone");
        assert_eq!(postgres_type(&col(DataType::Decimal)), "numeric(38,9)");
        assert_eq!(postgres_type(&col(DataType::Json)), "jsonb");
        assert_eq!(postgres_type(&col(DataType::Binary)), "bytea");
    }
}
