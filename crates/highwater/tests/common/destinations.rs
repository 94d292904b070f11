//! The destinations the shared suites run over, each really started: DuckDB files, a PostgreSQL
//! database on the test process's server, a local lake folder and a bucket on the test process's
//! S3 server. Tables are read back the same way from each, as [`TableDump`]s with DuckDB's type
//! names: a lake through DuckDB views over its Parquet and JSON files (an S3 bucket is copied to
//! a folder first), as a lakehouse engine reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use highwater::{DestinationConfig, Pipeline};
use serde_json::{Map, Value};

use super::{canonical_from_text, dump_dataset, pg, s3, TableDump};

/// A kind of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DuckDb,
    Postgres,
    Filesystem,
    S3,
}

/// One destination of a test: where it is and how to read it back.
pub struct TestDestination {
    pub kind: Kind,
    duckdb: PathBuf,
    postgres: Option<String>,
    /// The lake folder (filesystem), or where a bucket is copied to be read (S3).
    lake: PathBuf,
    bucket: Option<String>,
}

impl TestDestination {
    /// A fresh destination of `kind` for files under `dir`.
    pub fn new(kind: Kind, dir: &Path) -> Self {
        let postgres = (kind == Kind::Postgres).then(|| pg::server().new_database());
        let bucket = (kind == Kind::S3).then(|| s3::server().new_bucket());
        TestDestination {
            kind,
            duckdb: dir.join("db.duckdb"),
            postgres,
            lake: dir.join("lake"),
            bucket,
        }
    }

    /// The DuckDB file (of a DuckDB destination).
    pub fn duckdb_path(&self) -> &Path {
        &self.duckdb
    }

    /// The lake folder (of a filesystem destination).
    pub fn lake_path(&self) -> &Path {
        &self.lake
    }

    /// The environment a `highwater` process needs to reach the destination (S3 credentials).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::S3 => vec![
                ("AWS_ENDPOINT_URL", s3::server().endpoint()),
                ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY.to_string()),
                ("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY.to_string()),
                ("AWS_REGION", "us-east-1".to_string()),
            ],
            _ => Vec::new(),
        }
    }

    fn s3_url(&self) -> String {
        format!("s3://{}/lake", self.bucket.as_deref().unwrap_or("none"))
    }

    /// The destination as a pipeline configures it.
    pub fn config(&self) -> DestinationConfig {
        match self.kind {
            Kind::DuckDb => DestinationConfig::duckdb(&self.duckdb),
            Kind::Postgres => {
                DestinationConfig::parse(&self.url(), PathBuf::new(), Path::new(".")).unwrap()
            }
            Kind::Filesystem => DestinationConfig::Filesystem(
                highwater::destination::FilesystemConfig::new(&self.lake.display().to_string()),
            ),
            Kind::S3 => {
                let mut config = highwater::destination::FilesystemConfig::new(&self.s3_url());
                config.endpoint_url = Some(s3::server().endpoint());
                config.region = Some("us-east-1".into());
                config.access_key_id = Some(s3::ACCESS_KEY.into());
                config.secret_access_key = Some(s3::SECRET_KEY.into());
                DestinationConfig::Filesystem(config)
            }
        }
    }

    /// The short form a pipeline file gives (`duckdb:PATH`, `postgres://…`).
    pub fn spec(&self) -> String {
        match self.kind {
            Kind::DuckDb => format!("duckdb:{}", self.duckdb.display()),
            Kind::Postgres => self.url(),
            Kind::Filesystem => format!("filesystem:{}", self.lake.display()),
            Kind::S3 => self.s3_url(),
        }
    }

    fn url(&self) -> String {
        let db = self.postgres.as_deref().unwrap_or("postgres");
        format!("{}?sslmode=disable", pg::server().url(db))
    }

    /// A pipeline named `name` loading into dataset `data`, working in `dir/work`.
    pub fn pipeline(&self, dir: &Path, name: &str) -> Pipeline {
        self.pipeline_with(dir, name, "data")
    }

    /// A pipeline named `name` loading into `dataset`, working in `dir/work`.
    pub fn pipeline_with(&self, dir: &Path, name: &str, dataset: &str) -> Pipeline {
        Pipeline::builder(name)
            .dataset(dataset)
            .destination(self.config())
            .working_dir(dir.join("work"))
            .build()
            .unwrap()
    }

    /// Every data table of `dataset`, values canonical by type.
    pub fn dump_dataset(&self, dataset: &str) -> BTreeMap<String, TableDump> {
        match self.kind {
            Kind::DuckDb => dump_dataset(&super::open(&self.duckdb), dataset),
            Kind::Filesystem | Kind::S3 => dump_dataset(&self.lake_views(), dataset),
            Kind::Postgres => {
                let mut client = self.pg();
                let names: Vec<String> = client
                    .query(
                        "SELECT CAST(table_name AS VARCHAR) FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
                        &[&dataset],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .filter(|n: &String| !n.starts_with("_dlt_"))
                    .collect();
                names
                    .into_iter()
                    .map(|n| {
                        let dump = pg_dump_table(&mut client, dataset, &n);
                        (n, dump)
                    })
                    .collect()
            }
        }
    }

    /// Rows of a query whose columns are all cast to text (`CAST(x AS VARCHAR)`), as JSON
    /// strings or null. The SQL must read the same on every destination.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        match self.kind {
            Kind::DuckDb | Kind::Filesystem | Kind::S3 => {
                let conn = match self.kind {
                    Kind::DuckDb => super::open(&self.duckdb),
                    _ => self.lake_views(),
                };
                let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let mut out = Vec::new();
                let mut result = stmt.query([]).unwrap();
                let n = result.as_ref().map_or(0, |s| s.column_count());
                while let Some(row) = result.next().unwrap() {
                    out.push(
                        (0..n)
                            .map(|i| match row.get::<_, Option<String>>(i).unwrap() {
                                Some(s) => Value::String(s),
                                None => Value::Null,
                            })
                            .collect(),
                    );
                }
                out
            }
            Kind::Postgres => self
                .pg()
                .query(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| match row.get::<_, Option<String>>(i) {
                            Some(s) => Value::String(s),
                            None => Value::Null,
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// A query returning one integer.
    pub fn count(&self, sql: &str) -> i64 {
        match self.kind {
            Kind::DuckDb => super::count(&super::open(&self.duckdb), sql),
            Kind::Filesystem | Kind::S3 => super::count(&self.lake_views(), sql),
            Kind::Postgres => self
                .pg()
                .query_one(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0),
        }
    }

    /// Whether `schema.table` exists.
    pub fn table_exists(&self, schema: &str, table: &str) -> bool {
        self.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = '{table}'"
        )) > 0
    }

    /// Rows of `dataset.table`; 0 when it does not exist (a lake keeps no files for an emptied
    /// table).
    pub fn row_count(&self, dataset: &str, table: &str) -> i64 {
        if !self.table_exists(dataset, table) {
            return 0;
        }
        self.count(&format!("SELECT count(*) FROM \"{dataset}\".\"{table}\""))
    }

    /// An in-memory DuckDB with a schema per dataset of the lake and a view per table folder:
    /// `read_parquet(…, union_by_name)` for data, `read_json` for the system tables.
    pub fn lake_views(&self) -> duckdb::Connection {
        let root = match self.kind {
            Kind::S3 => self.copy_bucket(),
            _ => self.lake.clone(),
        };
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let Ok(datasets) = std::fs::read_dir(&root) else {
            return conn;
        };
        for dataset in datasets.flatten() {
            let ds = dataset.file_name().to_string_lossy().to_string();
            if !dataset.path().join("init").is_file() {
                continue;
            }
            conn.execute_batch(&format!("CREATE SCHEMA \"{ds}\""))
                .unwrap();
            for table in std::fs::read_dir(dataset.path()).unwrap().flatten() {
                let name = table.file_name().to_string_lossy().to_string();
                let path = table.path();
                if !path.is_dir() {
                    continue;
                }
                let files: Vec<_> = std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|f| f.file_name().to_string_lossy().to_string())
                    .collect();
                let reader = if name.starts_with("_dlt_") {
                    if !files.iter().any(|f| f.ends_with(".jsonl")) {
                        continue;
                    }
                    format!("read_json_auto('{}/*.jsonl')", path.display())
                } else {
                    if !files.iter().any(|f| f.ends_with(".parquet")) {
                        continue;
                    }
                    format!(
                        "read_parquet('{}/*.parquet', union_by_name = true)",
                        path.display()
                    )
                };
                conn.execute_batch(&format!(
                    "CREATE VIEW \"{ds}\".\"{name}\" AS SELECT * FROM {reader}"
                ))
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            }
        }
        conn
    }

    /// Copies the bucket's `lake/` prefix to a fresh local folder and returns it.
    fn copy_bucket(&self) -> PathBuf {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        // HTTPS through rustls needs a provider; the library installs the same one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(self.bucket.as_deref().unwrap())
            .with_endpoint(s3::server().endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(s3::ACCESS_KEY)
            .with_secret_access_key(s3::SECRET_KEY)
            .build()
            .unwrap();
        let _ = std::fs::remove_dir_all(&self.lake);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let prefix = object_store::path::Path::from("lake");
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            for object in objects {
                let relative: Vec<String> = object
                    .location
                    .prefix_match(&prefix)
                    .unwrap()
                    .map(|p| p.as_ref().to_string())
                    .collect();
                let local = relative
                    .iter()
                    .fold(self.lake.clone(), |p, part| p.join(part));
                std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                let bytes = store
                    .get(&object.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                std::fs::write(local, bytes).unwrap();
            }
        });
        self.lake.clone()
    }

    /// A client of the PostgreSQL database.
    pub fn pg(&self) -> postgres::Client {
        pg::server().connect(self.postgres.as_deref().expect("a PostgreSQL destination"))
    }
}

/// PostgreSQL's type name as DuckDB names the same type, so one expectation serves both.
fn duckdb_name(data_type: &str, precision: Option<i32>, scale: Option<i32>) -> String {
    match data_type {
        "bigint" => "BIGINT".into(),
        "integer" => "INTEGER".into(),
        "smallint" => "SMALLINT".into(),
        "character varying" | "text" => "VARCHAR".into(),
        "double precision" => "DOUBLE".into(),
        "boolean" => "BOOLEAN".into(),
        "timestamp with time zone" => "TIMESTAMP WITH TIME ZONE".into(),
        "timestamp without time zone" => "TIMESTAMP".into(),
        "date" => "DATE".into(),
        "time without time zone" => "TIME".into(),
        "jsonb" | "json" => "JSON".into(),
        "bytea" => "BLOB".into(),
        "numeric" => format!(
            "DECIMAL({},{})",
            precision.unwrap_or(38),
            scale.unwrap_or(9)
        ),
        other => other.to_uppercase(),
    }
}

fn pg_dump_table(client: &mut postgres::Client, dataset: &str, table: &str) -> TableDump {
    let columns: Vec<(String, String, bool)> = client
        .query(
            "SELECT CAST(column_name AS VARCHAR), CAST(data_type AS VARCHAR), CAST(is_nullable AS VARCHAR), CAST(numeric_precision AS INTEGER), CAST(numeric_scale AS INTEGER) FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&dataset, &table],
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                duckdb_name(&r.get::<_, String>(1), r.get(3), r.get(4)),
                r.get::<_, String>(2) == "YES",
            )
        })
        .collect();
    let select = columns
        .iter()
        .map(|(c, ty, _)| {
            let q = format!("\"{}\"", c.replace('"', "\"\""));
            match ty.as_str() {
                // Text forms the DuckDB canonicalizer reads: `true`/`false`, `\x..` escapes.
                "BOOLEAN" => format!("CASE WHEN {q} THEN 'true' WHEN NOT {q} THEN 'false' END"),
                "BLOB" => format!("encode({q}, 'base64')"),
                _ => format!("CAST({q} AS VARCHAR)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {select} FROM \"{dataset}\".\"{table}\"");
    let rows = client.query(&sql, &[]).unwrap();
    let rows = rows
        .iter()
        .map(|row| {
            let mut map = Map::new();
            for (i, (name, ty, _)) in columns.iter().enumerate() {
                let text: Option<String> = row.get(i);
                let value = match ty.as_str() {
                    "BLOB" => text.map_or(Value::Null, |t| Value::String(t.replace('\n', ""))),
                    _ => canonical_from_text(text, ty),
                };
                map.insert(name.clone(), value);
            }
            map
        })
        .collect();
    TableDump { columns, rows }
}
