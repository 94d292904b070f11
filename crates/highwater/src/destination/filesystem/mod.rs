//! The filesystem destination: Parquet datasets in dlt's layout (see [`layout`]) on a local
//! folder or on S3 (and S3-compatible stores), through `object_store`, for lakehouse engines
//! (Spark, Trino, Athena, DuckDB) and dlt's own readers.
//!
//! There are no transactions on a filesystem, so a load is made safe by its order and names:
//! - data files are named by the load id and the package file, so loading a package again
//!   overwrites its files and never adds any;
//! - every file appears whole (a temporary file renamed locally; a single PUT, or a multipart
//!   upload completed at the end, on S3);
//! - a replace deletes the table's older files only after the new ones are written;
//! - the `_dlt_loads` file is written last: it is the commit point. A load without it is not
//!   committed; its state file is not restored and the pipeline finishes its package.
//!
//! `append` and `replace` are carried out; `merge` appends (as dlt's plain filesystem does),
//! with a warning when the run starts.

mod layout;
mod parquet_files;

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Deserialize;

use self::layout::{load_id_key, marker_parts, name_parts, Layout, LOADS, STATE, VERSION};
use super::plan::{LoadPlan, MergeMode};
use super::{Capabilities, Destination, LoadJob, LoadRecord, Restored, TableCount};
use crate::error::{Error, Result};
use crate::schema::{ReplaceStrategy, Schema};
use crate::state::decode_from_destination;

/// What the filesystem supports: no merge (loads append), names as long as DuckDB's.
pub const CAPABILITIES: Capabilities = Capabilities {
    kind: "filesystem",
    max_identifier_length: 65536,
    merge_strategies: &[],
    // A replace writes the new files, then deletes the old ones: there is no staging.
    replace_strategies: &[ReplaceStrategy::TruncateAndInsert],
};

/// `[destination] kind = "filesystem"`, or `destination = "filesystem:PATH"` / `"s3://…"`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    /// A local folder (relative to the pipeline file's folder), `file://PATH`, or
    /// `s3://BUCKET/PREFIX`.
    pub bucket_url: String,
    /// S3: the endpoint of an S3-compatible store (MinIO, R2, …); default `AWS_ENDPOINT_URL`,
    /// else AWS.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// S3: the region; default `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// S3: the access key id; default `AWS_ACCESS_KEY_ID`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3: the secret access key (usually `{secrets.NAME}`); default `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for FilesystemConfig {
    /// Never shows the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesystemConfig")
            .field("bucket_url", &self.bucket_url)
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// Where the dataset lives.
enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl FilesystemConfig {
    /// A config for `bucket_url` (`s3://…`, `file://…` or a folder, relative to `base`).
    pub fn new(bucket_url: &str) -> Self {
        FilesystemConfig {
            bucket_url: bucket_url.to_string(),
            endpoint_url: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
        }
    }

    /// Makes a relative local folder relative to `base`.
    pub fn rebase(&mut self, base: &std::path::Path) {
        if let Ok(Location::Local(path)) = self.location() {
            self.bucket_url = base.join(path).display().to_string();
        }
    }

    /// Checks the URL.
    pub fn validate(&self) -> Result<()> {
        self.location().map(|_| ())
    }

    fn location(&self) -> Result<Location> {
        let url = self.bucket_url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!(
                    "filesystem destination {url:?}: no bucket in the URL (s3://BUCKET/PREFIX)"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(scheme) = url.split_once("://").map(|(s, _)| s) {
            if scheme != "file" {
                return Err(Error::Config(format!(
                    "filesystem destination {url:?}: {scheme}:// is not supported; use a folder, file://PATH or s3://BUCKET/PREFIX"
                )));
            }
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(Error::Config(
                "filesystem destination: bucket_url is empty".into(),
            ));
        }
        Ok(Location::Local(PathBuf::from(path)))
    }

    /// The destination as it may be shown.
    pub fn describe(&self) -> String {
        match self.location() {
            Ok(Location::S3 { bucket, prefix }) if prefix.is_empty() => format!("s3://{bucket}"),
            Ok(Location::S3 { bucket, prefix }) => format!("s3://{bucket}/{prefix}"),
            Ok(Location::Local(path)) => format!("filesystem:{}", path.display()),
            Err(_) => self.bucket_url.clone(),
        }
    }

    /// The store and the root prefix inside it.
    fn store(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let fail = |context: &str, e: object_store::Error| Error::Destination {
            destination: self.describe(),
            context: context.into(),
            source: Box::new(e),
        };
        match self.location()? {
            Location::Local(path) => {
                crate::disk::create_dir_all(&path)?;
                let store = LocalFileSystem::new_with_prefix(&path)
                    .map_err(|e| fail("opening the folder", e))?;
                Ok((Arc::new(store), ObjectPath::default()))
            }
            Location::S3 { bucket, prefix } => {
                install_crypto_provider();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                let endpoint = self
                    .endpoint_url
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                let region = self
                    .region
                    .clone()
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .unwrap_or_else(|| "us-east-1".into());
                builder = builder.with_region(region);
                if let Some(key) = &self.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &self.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder.build().map_err(|e| fail("configuring S3", e))?;
                Ok((Arc::new(store), ObjectPath::from(prefix)))
            }
        }
    }
}

/// rustls needs one process-wide crypto provider for S3's HTTPS client: ring (no C toolchain
/// beyond what ring needs, as for PostgreSQL's TLS).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A dataset on a filesystem or object store.
pub struct FilesystemDestination {
    described: String,
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    runtime: tokio::runtime::Runtime,
}

impl FilesystemDestination {
    /// Opens the store (nothing is written until a load).
    pub fn open(config: &FilesystemConfig, dataset: &str) -> Result<Self> {
        let (store, root) = config.store()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the I/O runtime for", config.describe(), e))?;
        Ok(FilesystemDestination {
            described: config.describe(),
            store,
            layout: Layout::new(&root, dataset),
            runtime,
        })
    }

    fn err(&self, context: impl Into<String>, e: object_store::Error) -> Error {
        Error::Destination {
            destination: self.described.clone(),
            context: context.into(),
            source: Box::new(e),
        }
    }

    /// The objects under `prefix` (any depth), sorted by path.
    fn list(&self, prefix: &ObjectPath) -> Result<Vec<object_store::ObjectMeta>> {
        let mut objects: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(prefix)).try_collect())
            .map_err(|e| self.err(format!("listing {prefix}"), e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// File names directly in a system folder.
    fn names_in(&self, folder: &str) -> Result<Vec<String>> {
        Ok(self
            .list(&self.layout.table(folder))?
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect())
    }

    fn exists(&self, path: &ObjectPath) -> Result<bool> {
        match self.runtime.block_on(self.store.head(path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(format!("looking for {path}"), e)),
        }
    }

    fn read_text(&self, path: &ObjectPath) -> Result<String> {
        let bytes = self
            .runtime
            .block_on(async { self.store.get(path).await?.bytes().await })
            .map_err(|e| self.err(format!("reading {path}"), e))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Corrupt {
            what: format!("{} {path}", self.described),
            detail: e.to_string(),
        })
    }

    fn write_text(&self, path: &ObjectPath, text: String) -> Result<()> {
        self.runtime
            .block_on(self.store.put(path, PutPayload::from(text)))
            .map_err(|e| self.err(format!("writing {path}"), e))?;
        Ok(())
    }

    fn delete(&self, path: &ObjectPath) -> Result<()> {
        match self.runtime.block_on(self.store.delete(path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("deleting {path}"), e)),
        }
    }

    /// Deletes the data files of `table`, but those of `keep_load` (`None`: all).
    fn delete_table_files(&self, table: &str, keep_load: Option<&str>) -> Result<()> {
        let keep = keep_load.map(|id| format!("{id}."));
        for object in self.list(&self.layout.table(table))? {
            let name = object.location.filename().unwrap_or("");
            if keep.as_deref().is_some_and(|k| name.starts_with(k)) {
                continue;
            }
            self.delete(&object.location)?;
        }
        Ok(())
    }

    /// Load ids with a `_dlt_loads` file (committed), for any schema.
    fn committed_loads(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .names_in(LOADS)?
            .iter()
            .filter_map(|name| marker_parts(name).map(|(_, id)| id.to_string()))
            .collect())
    }

    /// The newest committed state file of `pipeline`, if any.
    fn newest_state(&self, pipeline: &str) -> Result<Option<serde_json::Value>> {
        let committed = self.committed_loads()?;
        let newest = self
            .names_in(STATE)?
            .into_iter()
            .filter(|name| {
                name_parts(name)
                    .is_some_and(|(p, load_id, _)| p == pipeline && committed.contains(load_id))
            })
            .max_by_key(|name| name_parts(name).map(|(_, id, _)| load_id_key(id)));
        let Some(name) = newest else {
            return Ok(None);
        };
        let path = self.layout.table(STATE).join(name.as_str());
        let text = self.read_text(&path)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: format!("{} {path}", self.described),
                detail: e.to_string(),
            })
    }

    /// Refuses a state older than the newest committed one (another run committed in between).
    fn check_state_base(&self, job: &LoadJob<'_>) -> Result<()> {
        let Some(base) = job.state.as_ref().and_then(|s| s.base_version) else {
            return Ok(());
        };
        let committed = self
            .newest_state(job.pipeline)?
            .and_then(|record| record.get("version").and_then(serde_json::Value::as_i64));
        match committed {
            Some(committed) if committed > base => Err(Error::StateConflict {
                pipeline: job.pipeline.to_string(),
                destination: self.described.clone(),
                committed,
                base,
            }),
            _ => Ok(()),
        }
    }

    /// Writes the schema version file unless one with the schema's hash exists.
    /// Writes one data file of `table` for this load, named after `package_file`.
    fn write_data_file(
        &self,
        job: &LoadJob<'_>,
        table: &str,
        package_file: &str,
        columns: &[String],
        source: Option<&std::path::Path>,
    ) -> Result<()> {
        let table = job.schema.tables.get(table).ok_or_else(|| Error::Corrupt {
            what: format!("package {}", job.load_id),
            detail: format!("table {table} is not in the schema"),
        })?;
        let target = self
            .layout
            .data_file(&table.name, job.load_id, package_file);
        let started = std::time::Instant::now();
        self.runtime
            .block_on(parquet_files::write_table_file(
                self.store.clone(),
                &target,
                table,
                columns,
                source,
            ))
            .map_err(|e| match e {
                parquet_files::WriteError::Store(e) => self.err(format!("writing {target}"), e),
                parquet_files::WriteError::Other(e) => e,
            })?;
        tracing::debug!(elapsed = ?started.elapsed(), file = %target, "written");
        Ok(())
    }

    fn write_schema(&self, schema: &Schema) -> Result<()> {
        let hex = layout::hash_hex(&schema.version_hash);
        let known = self
            .names_in(VERSION)?
            .iter()
            .any(|name| name_parts(name).is_some_and(|(s, _, h)| s == schema.name && h == hex));
        if known {
            return Ok(());
        }
        let path =
            self.layout
                .version_file(&schema.name, &layout::precise_time(), &schema.version_hash);
        self.write_text(&path, layout::version_record(schema))
    }
}

impl Destination for FilesystemDestination {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn restore(&mut self, pipeline: &str) -> Result<Restored> {
        let mut restored = Restored::default();
        if let Some(record) = self.newest_state(pipeline)? {
            if let Some(text) = record.get("state").and_then(serde_json::Value::as_str) {
                restored.state = Some(decode_from_destination(text)?);
            }
        }
        let schema_name = restored.schema_name(pipeline);
        let newest_schema = self
            .names_in(VERSION)?
            .into_iter()
            .filter(|name| name_parts(name).is_some_and(|(s, _, _)| s == schema_name))
            .max_by_key(|name| name_parts(name).map(|(_, t, _)| load_id_key(t)));
        if let Some(name) = newest_schema {
            let path = self.layout.table(VERSION).join(name.as_str());
            let record: serde_json::Value =
                serde_json::from_str(&self.read_text(&path)?).map_err(|e| Error::Corrupt {
                    what: format!("{} {path}", self.described),
                    detail: e.to_string(),
                })?;
            if let Some(text) = record.get("schema").and_then(serde_json::Value::as_str) {
                restored.schema = Some(Schema::from_stored_json(text)?);
            }
        }
        Ok(restored)
    }

    fn is_loaded(&mut self, load_id: &str) -> Result<bool> {
        Ok(self.committed_loads()?.contains(load_id))
    }

    fn load(&mut self, job: &LoadJob<'_>) -> Result<()> {
        let plan = LoadPlan::new(job, MergeMode::Append)?;
        self.check_state_base(job)?;
        if !self.exists(&self.layout.init())? {
            self.write_text(&self.layout.init(), layout::INIT.to_string())?;
        }
        self.write_schema(job.schema)?;
        for table in plan.drop_tables {
            self.delete_table_files(table, None)?;
        }
        for load in &plan.files {
            let source = job.files_dir.join(&load.file.file);
            self.write_data_file(
                job,
                &load.file.table,
                &load.file.file,
                &load.file.columns,
                Some(&source),
            )?;
            (job.on_file_loaded)(load.file.rows);
        }
        // As dlt: a replaced root that received no rows gets a file of none, so readers see it
        // empty rather than gone (its children get no file).
        for root in job.truncate_tables {
            let has_rows = plan.files.iter().any(|f| f.file.table == *root);
            if !has_rows && job.schema.tables.contains_key(root) {
                self.write_data_file(job, root, &format!("{root}.empty"), &[], None)?;
            }
        }
        // A replace empties its tables only now that the new files are in place.
        for table in &plan.truncate {
            self.delete_table_files(table, Some(job.load_id))?;
        }
        if let Some(state) = &job.state {
            let path = self
                .layout
                .state_file(job.pipeline, job.load_id, &job.schema.version_hash);
            self.write_text(&path, layout::state_record(job, state))?;
        }
        crate::crash::point("before-commit");
        self.write_text(
            &self.layout.load_marker(&job.schema.name, job.load_id),
            layout::load_record(job),
        )
    }

    fn table_counts(&mut self) -> Result<Vec<TableCount>> {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let dataset = self.layout.dataset().clone();
        for object in self.list(&dataset)? {
            let mut parts = object.location.prefix_match(&dataset).into_iter().flatten();
            let (Some(table), Some(_file)) = (parts.next(), parts.next()) else {
                continue;
            };
            let table = table.as_ref().to_string();
            if table.starts_with("_dlt_") || !object.location.as_ref().ends_with(".parquet") {
                continue;
            }
            let rows = self
                .runtime
                .block_on(parquet_files::row_count(self.store.clone(), &object))
                .map_err(|e| match e {
                    parquet_files::WriteError::Store(e) => {
                        self.err(format!("reading {}", object.location), e)
                    }
                    parquet_files::WriteError::Other(e) => e,
                })?;
            *counts.entry(table).or_insert(0) += rows;
        }
        Ok(counts
            .into_iter()
            .map(|(table, rows)| TableCount { table, rows })
            .collect())
    }

    fn recent_loads(&mut self, limit: usize) -> Result<Vec<LoadRecord>> {
        let mut names = self.names_in(LOADS)?;
        names.sort_by_key(|name| marker_parts(name).map(|(_, id)| load_id_key(id)));
        names.reverse();
        let mut loads = Vec::new();
        for name in names.into_iter().take(limit) {
            let path = self.layout.table(LOADS).join(name.as_str());
            let record: serde_json::Value =
                serde_json::from_str(&self.read_text(&path)?).map_err(|e| Error::Corrupt {
                    what: format!("{} {path}", self.described),
                    detail: e.to_string(),
                })?;
            let text = |key: &str| {
                record
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            loads.push(LoadRecord {
                load_id: text("load_id"),
                status: record
                    .get("status")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or_default(),
                inserted_at: rfc3339_utc(&text("inserted_at")),
            });
        }
        Ok(loads)
    }
}

/// `inserted_at` as the SQL destinations report it (`…Z`); dlt writes `+00:00` into the lake,
/// and a text that does not parse is shown as it is.
fn rfc3339_utc(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_string(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        },
    )
}

/// Whether the dataset has been created (its `init` marker exists).
pub fn dataset_exists(config: &FilesystemConfig, dataset: &str) -> Result<bool> {
    if let Location::Local(path) = config.location()? {
        // Reading commands never create the folder.
        return Ok(path.join(dataset).join("init").is_file());
    }
    let destination = FilesystemDestination::open(config, dataset)?;
    destination.exists(&destination.layout.init())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_folder_or_a_bucket() {
        let mut local = FilesystemConfig::new("lake");
        local.rebase(std::path::Path::new("/p"));
        assert_eq!(local.describe(), "filesystem:/p/lake");
        let s3 = FilesystemConfig::new("s3://bucket/some/prefix/");
        assert_eq!(s3.describe(), "s3://bucket/some/prefix");
        assert!(FilesystemConfig::new("s3:///x").validate().is_err());
        let err = FilesystemConfig::new("gs://b/p").validate().unwrap_err();
        assert!(err.to_string().contains("gs://"), "{err}");
        let mut secret = FilesystemConfig::new("s3://b");
        secret.secret_access_key = Some("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
