//! Load packages on disk: one directory per load id, moved between stages by atomic renames.
//!
//! ```text
//! <working dir>/packages/
//!   new/<load_id>/          extract in progress (abandoned ones are deleted)
//!   extracted/<load_id>/    manifest.json + items/<n>.jsonl
//!   normalizing/<load_id>/  normalize in progress (redone after a crash)
//!   normalized/<load_id>/   manifest.json + schema.json + files.json + tables/*.parquet
//!   loaded/<load_id>/       committed to the destination
//!   locks/<load_id>.lock    held by the process working on the package
//!   discarded/<load_id>/    items already normalized, being deleted in the background
//! ```
//! A package whose lock can be taken belongs to no running process and may be recovered.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::disk::{create_dir_all, list_dir, read_json, remove_dir_if_exists, sync_dir};
use crate::error::{Error, Result};
use crate::integrity::{verify, CheckedWriter, FileCheck};
use crate::lock::LockFile;
use crate::resource::{ColumnHint, Scd2Options};
use crate::schema::{MergeStrategy, ReplaceStrategy, WriteDisposition};

/// The hints of one extracted root table, resolved for this run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableSpec {
    /// The resource that produced the rows.
    pub resource: String,
    /// Write disposition.
    pub write_disposition: WriteDisposition,
    /// Merge strategy.
    #[serde(default)]
    pub merge_strategy: Option<MergeStrategy>,
    /// Primary key (as in the data).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Merge key (as in the data).
    #[serde(default)]
    pub merge_key: Vec<String>,
    /// Column hints (names as in the data).
    #[serde(default)]
    pub columns: IndexMap<String, ColumnHint>,
    /// Nesting limit.
    #[serde(default)]
    pub max_table_nesting: Option<usize>,
    /// Propagate `_dlt_root_id` to child tables.
    #[serde(default)]
    pub root_key: bool,
    /// The destination does not merge: a `merge` is normalized and loaded as an append, and
    /// the table keeps `merge` in the schema, as on dlt's filesystem destination.
    #[serde(default)]
    pub appends_merges: bool,
    /// How a `replace` swaps the rows (resource hint, else the pipeline's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_strategy: Option<ReplaceStrategy>,
    /// Options of the `scd2` merge strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scd2: Option<Scd2Options>,
}

/// How an extracted table's items are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemsFormat {
    /// JSON lines with locations ([`ItemsWriter`]).
    #[default]
    Jsonl,
    /// Arrow batches in a Parquet file.
    Parquet,
}

/// One extracted table: its items file and hints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractedTable {
    /// Table name as the resource gave it (normalized later).
    pub raw_name: String,
    /// Items file inside `items/`.
    pub file: String,
    /// How the items are stored.
    #[serde(default)]
    pub format: ItemsFormat,
    /// Number of items.
    pub items: u64,
    /// Hints.
    pub spec: TableSpec,
    /// Size and CRC-32 of the items file, checked before it is normalized (absent in packages
    /// of earlier versions).
    #[serde(default)]
    pub check: Option<FileCheck>,
}

/// A Parquet file of one table in the package, and the columns it holds in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableFile {
    /// The table.
    pub table: String,
    /// File name inside the package's `tables/` folder.
    pub file: String,
    /// Columns in the file, in order.
    pub columns: Vec<String>,
    /// Rows in the file.
    pub rows: u64,
    /// Size and CRC-32 of the file, checked before it is loaded (absent in packages of earlier
    /// versions).
    #[serde(default)]
    pub check: Option<FileCheck>,
}

/// What a package holds besides its rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The load id.
    pub load_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// When extract started (RFC 3339).
    pub created_at: String,
    /// Input files named by item locations (`<index>:<line>`).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Extracted tables.
    pub tables: Vec<ExtractedTable>,
    /// Root tables (normalized names) to empty before loading: replace and refresh.
    #[serde(default)]
    pub truncate_tables: Vec<String>,
    /// Tables (normalized names, child tables listed too) to drop before loading (refresh).
    #[serde(default)]
    pub drop_tables: Vec<String>,
    /// The state document to commit with this load, when the run changed it.
    #[serde(default)]
    pub state: Option<Value>,
    /// Whether the state changed, so a `_dlt_pipeline_state` row is written.
    #[serde(default)]
    pub state_row: bool,
    /// Whether this run writes the local state after the commit (not for stateless backfills).
    #[serde(default)]
    pub stateful: bool,
    /// The `_state_version` the run started from: a destination holding a newer committed
    /// state refuses the load (another run committed in between).
    #[serde(default)]
    pub base_state_version: Option<i64>,
}

/// The stages a package moves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Being extracted.
    New,
    /// Items written, not normalized.
    Extracted,
    /// Being normalized.
    Normalizing,
    /// Files written, not loaded.
    Normalized,
    /// Committed to the destination.
    Loaded,
}

impl Stage {
    fn dir_name(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Extracted => "extracted",
            Stage::Normalizing => "normalizing",
            Stage::Normalized => "normalized",
            Stage::Loaded => "loaded",
        }
    }
}

/// The package directories of one working directory.
#[derive(Debug, Clone)]
pub struct PackageStore {
    root: PathBuf,
}

/// A package this process holds the lock of.
#[derive(Debug)]
pub struct Package {
    /// The load id.
    pub load_id: String,
    /// Where it is now.
    pub stage: Stage,
    store: PackageStore,
    _lock: LockFile,
}

impl PackageStore {
    /// The store under `working_dir/packages`.
    pub fn new(working_dir: &Path) -> Self {
        PackageStore {
            root: working_dir.join("packages"),
        }
    }

    fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.root.join(stage.dir_name())
    }

    /// The directory of package `load_id` in `stage`.
    pub fn dir(&self, stage: Stage, load_id: &str) -> PathBuf {
        self.stage_dir(stage).join(load_id)
    }

    fn discarded_dir(&self) -> PathBuf {
        self.root.join("discarded")
    }

    /// Takes `dir` (of package `load_id`) out of the stages with one rename and deletes it on a
    /// background thread, so deleting a large items file does not hold up the run. What the
    /// thread does not finish, the next [`Self::recover`] does.
    fn discard(&self, dir: &Path, load_id: &str) -> Result<()> {
        let to = self.discarded_dir().join(load_id);
        remove_dir_if_exists(&to)?;
        create_dir_all(&self.discarded_dir())?;
        match fs::rename(dir, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("moving package to", &to, e)),
        }
        std::thread::spawn(move || {
            if let Err(e) = remove_dir_if_exists(&to) {
                tracing::warn!("{e}");
            }
        });
        Ok(())
    }

    fn lock_path(&self, load_id: &str) -> PathBuf {
        self.root.join("locks").join(format!("{load_id}.lock"))
    }

    fn try_lock(&self, load_id: &str) -> Result<Option<LockFile>> {
        crate::lock::try_lock_file(&self.lock_path(load_id))
    }

    /// The file holding the newest load id this working directory handed out.
    fn last_load_id_path(&self) -> PathBuf {
        self.root.join("last_load_id")
    }

    /// A new, unique load id (a Unix timestamp with 7 decimals, as dlt's), and its package in
    /// `new/`. Load ids only grow: when the clock went back since the last one (a corrected
    /// clock, a restored VM), the new id follows the last one instead of the clock.
    pub fn create(&self) -> Result<Package> {
        create_dir_all(&self.stage_dir(Stage::New))?;
        let last = std::fs::read_to_string(self.last_load_id_path())
            .ok()
            .and_then(|text| load_id_ticks(text.trim()));
        let mut after = last;
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let now = now.as_secs() * TICKS_PER_SECOND + u64::from(now.subsec_nanos() / 100);
            let ticks = after.map_or(now, |a| now.max(a + 1));
            let load_id = format!(
                "{}.{:07}",
                ticks / TICKS_PER_SECOND,
                ticks % TICKS_PER_SECOND
            );
            after = Some(ticks);
            let taken = [
                Stage::New,
                Stage::Extracted,
                Stage::Normalizing,
                Stage::Normalized,
                Stage::Loaded,
            ]
            .iter()
            .any(|s| self.dir(*s, &load_id).exists());
            if taken {
                continue;
            }
            let Some(lock) = self.try_lock(&load_id)? else {
                continue;
            };
            let dir = self.dir(Stage::New, &load_id);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    if last.is_none_or(|l| ticks > l) {
                        crate::disk::write_atomic(&self.last_load_id_path(), load_id.as_bytes())?;
                    }
                    return Ok(Package {
                        load_id,
                        stage: Stage::New,
                        store: self.clone(),
                        _lock: lock,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("creating", &dir, e)),
            }
        }
    }

    /// Packages left behind by processes that have ended, oldest first, locked by this process.
    /// Half-done stages are cleaned up: an abandoned extract is deleted, an interrupted
    /// normalize is redone.
    pub fn recover(&self) -> Result<Vec<Package>> {
        // Deletions a process did not finish; nothing in there is read again.
        if let Err(e) = remove_dir_if_exists(&self.discarded_dir()) {
            tracing::warn!("{e}");
        }
        let mut ids: Vec<String> = Vec::new();
        for stage in [
            Stage::New,
            Stage::Extracted,
            Stage::Normalizing,
            Stage::Normalized,
        ] {
            for id in list_dir(&self.stage_dir(stage))? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        let mut packages = Vec::new();
        for id in ids {
            let Some(lock) = self.try_lock(&id)? else {
                continue; // another live process owns it
            };
            let normalized = self.dir(Stage::Normalized, &id);
            let extracted = self.dir(Stage::Extracted, &id);
            remove_dir_if_exists(&self.dir(Stage::New, &id))?;
            remove_dir_if_exists(&self.dir(Stage::Normalizing, &id))?;
            let stage = if normalized.exists() {
                remove_dir_if_exists(&extracted)?;
                Stage::Normalized
            } else if extracted.exists() {
                Stage::Extracted
            } else {
                continue;
            };
            packages.push(Package {
                load_id: id,
                stage,
                store: self.clone(),
                _lock: lock,
            });
        }
        self.remove_stale_locks()?;
        Ok(packages)
    }

    /// Removes the lock files of packages that are gone (a process killed as it made or finished
    /// one); a lock somebody holds stays.
    fn remove_stale_locks(&self) -> Result<()> {
        for name in list_dir(&self.root.join("locks"))? {
            let Some(id) = name.strip_suffix(".lock") else {
                continue;
            };
            let in_a_stage = [
                Stage::New,
                Stage::Extracted,
                Stage::Normalizing,
                Stage::Normalized,
            ]
            .iter()
            .any(|s| self.dir(*s, id).exists());
            if !in_a_stage {
                // Taken and given back at once: the file goes with the lock.
                drop(self.try_lock(id)?);
            }
        }
        Ok(())
    }

    /// Load ids of packages set aside because they could not be finished (`failed/<id>`, kept
    /// for inspection), oldest first.
    pub fn failed_ids(&self) -> Result<Vec<String>> {
        let mut ids = list_dir(&self.root.join("failed"))?;
        ids.sort();
        Ok(ids)
    }

    /// Where a failed package is kept.
    pub fn failed_dir(&self, load_id: &str) -> PathBuf {
        self.root.join("failed").join(load_id)
    }

    /// Keeps the newest `keep` loaded packages (whole, for inspection) and deletes the older
    /// ones (a load's data lives in the destination, not here); returns the deleted load ids.
    pub fn prune_loaded(&self, keep: usize) -> Result<Vec<String>> {
        let mut ids = list_dir(&self.stage_dir(Stage::Loaded))?;
        ids.sort();
        let old = ids.len().saturating_sub(keep);
        let pruned: Vec<String> = ids.drain(..old).collect();
        for id in &pruned {
            remove_dir_if_exists(&self.dir(Stage::Loaded, id))?;
        }
        Ok(pruned)
    }

    /// Deletes the packages set aside as failed; returns their load ids.
    pub fn prune_failed(&self) -> Result<Vec<String>> {
        let ids = self.failed_ids()?;
        for id in &ids {
            remove_dir_if_exists(&self.failed_dir(id))?;
        }
        Ok(ids)
    }

    /// Load ids of packages not yet loaded, with `extracted` or `normalized`: what the next run
    /// still has to do with them (for `info`).
    pub fn pending_stages(&self) -> Result<Vec<(String, &'static str)>> {
        let mut out: Vec<(String, &'static str)> = Vec::new();
        for (stage, name) in [
            (Stage::Normalized, "normalized"),
            (Stage::Normalizing, "extracted"),
            (Stage::Extracted, "extracted"),
        ] {
            for id in list_dir(&self.stage_dir(stage))? {
                if !out.iter().any(|(known, _)| *known == id) {
                    out.push((id, name));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Load ids of packages not yet loaded (for `info`).
    pub fn pending_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for stage in [Stage::Extracted, Stage::Normalizing, Stage::Normalized] {
            ids.extend(list_dir(&self.stage_dir(stage))?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

/// Load ids count ten-millionths of a second.
const TICKS_PER_SECOND: u64 = 10_000_000;

/// A load id (`<seconds>.<7 digits>`) as ticks, to compare and to count on from.
fn load_id_ticks(load_id: &str) -> Option<u64> {
    let (secs, frac) = load_id.split_once('.')?;
    if frac.len() != 7 {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let frac: u64 = frac.parse().ok()?;
    secs.checked_mul(TICKS_PER_SECOND)?.checked_add(frac)
}

impl Package {
    /// The package's directory in its current stage.
    pub fn dir(&self) -> PathBuf {
        self.store.dir(self.stage, &self.load_id)
    }

    /// The directory of this package in another stage.
    pub fn dir_in(&self, stage: Stage) -> PathBuf {
        self.store.dir(stage, &self.load_id)
    }

    /// Moves the package to `stage` with one atomic rename.
    pub fn move_to(&mut self, stage: Stage) -> Result<()> {
        let from = self.dir();
        let to = self.dir_in(stage);
        create_dir_all(to.parent().unwrap_or(&to))?;
        fs::rename(&from, &to).map_err(|e| Error::io("moving package to", &to, e))?;
        sync_dir(to.parent().unwrap_or(&to));
        self.stage = stage;
        Ok(())
    }

    /// Starts normalizing: a fresh `normalizing/<id>` directory.
    pub fn begin_normalize(&self) -> Result<PathBuf> {
        let dir = self.dir_in(Stage::Normalizing);
        remove_dir_if_exists(&dir)?;
        create_dir_all(&dir.join("tables"))?;
        Ok(dir)
    }

    /// Ends normalizing: `normalizing/<id>` becomes `normalized/<id>`, the extracted items go.
    pub fn commit_normalize(&mut self) -> Result<()> {
        let from = self.dir_in(Stage::Normalizing);
        let to = self.dir_in(Stage::Normalized);
        create_dir_all(to.parent().unwrap_or(&to))?;
        fs::rename(&from, &to).map_err(|e| Error::io("moving package to", &to, e))?;
        sync_dir(to.parent().unwrap_or(&to));
        self.store
            .discard(&self.dir_in(Stage::Extracted), &self.load_id)?;
        self.stage = Stage::Normalized;
        Ok(())
    }

    /// Moves a package that cannot be finished to `failed/<load_id>` (kept for inspection) and
    /// drops any half-normalized output. Returns where it went.
    pub fn set_aside(&mut self) -> Result<PathBuf> {
        remove_dir_if_exists(&self.dir_in(Stage::Normalizing))?;
        let to = self.store.root.join("failed").join(&self.load_id);
        create_dir_all(to.parent().unwrap_or(&to))?;
        let from = self.dir();
        fs::rename(&from, &to).map_err(|e| Error::io("moving package to", &to, e))?;
        Ok(to)
    }

    /// Reads the manifest from the current stage.
    pub fn manifest(&self) -> Result<Manifest> {
        self.read_own("manifest.json", "package manifest")
    }

    /// The table files of a normalized package.
    pub fn table_files(&self) -> Result<Vec<TableFile>> {
        self.read_own("files.json", "package file list")
    }

    /// The schema a normalized package is loaded with.
    pub fn schema(&self) -> Result<crate::schema::Schema> {
        self.read_own("schema.json", "package schema")
    }

    /// A JSON document of the package; one missing or unreadable makes the package damaged.
    fn read_own<T: serde::de::DeserializeOwned>(&self, name: &str, what: &str) -> Result<T> {
        let path = self.dir().join(name);
        read_json(&path, what).map_err(|e| match e {
            Error::Corrupt { detail, .. } => self.damaged(&path, detail),
            Error::Io { source, .. } => self.damaged(&path, source.to_string()),
            other => other,
        })
    }

    /// Checks the items files of an extracted package against the sizes and checksums its
    /// manifest recorded.
    pub fn check_items(&self, manifest: &Manifest) -> Result<()> {
        for table in &manifest.tables {
            if let Some(check) = &table.check {
                let path = self.dir().join("items").join(&table.file);
                verify(&path, check).map_err(|detail| self.damaged(&path, detail))?;
            }
        }
        Ok(())
    }

    /// Checks the table files of a normalized package against the sizes and checksums its file
    /// list recorded.
    pub fn check_tables(&self, files: &[TableFile]) -> Result<()> {
        for file in files {
            if let Some(check) = &file.check {
                let path = self.dir().join("tables").join(&file.file);
                verify(&path, check).map_err(|detail| self.damaged(&path, detail))?;
            }
        }
        Ok(())
    }

    fn damaged(&self, path: &Path, detail: String) -> Error {
        Error::DamagedPackage {
            load_id: self.load_id.clone(),
            path: path.to_path_buf(),
            detail,
        }
    }

    /// Deletes the package (it is never loaded): out of the stages with one rename, then
    /// deleted in the background.
    pub fn drop_unloaded(self) -> Result<()> {
        remove_dir_if_exists(&self.dir_in(Stage::Normalizing))?;
        self.store.discard(&self.dir(), &self.load_id)?;
        self.release();
        Ok(())
    }

    /// Gives the package's lock back once it is loaded (its lock file goes with it).
    pub fn release(self) {}
}

/// Writes extracted items as lines `<source>:<line>\t<json>` (location empty when unknown).
pub struct ItemsWriter {
    writer: BufWriter<CheckedWriter<File>>,
    path: PathBuf,
    /// Items written.
    pub items: u64,
}

impl ItemsWriter {
    /// A new items file at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io("creating", path, e))?;
        Ok(ItemsWriter {
            writer: BufWriter::with_capacity(1 << 20, CheckedWriter::new(file)),
            path: path.to_path_buf(),
            items: 0,
        })
    }

    /// Writes one item with its location (`source` index into the manifest's sources, `line`).
    pub fn write(&mut self, item: &Value, location: Option<(usize, u64)>) -> Result<()> {
        let io = |e| Error::io("writing", &self.path, e);
        if let Some((source, line)) = location {
            write!(self.writer, "{source}:{line}").map_err(io)?;
        }
        self.writer.write_all(b"\t").map_err(io)?;
        serde_json::to_writer(&mut self.writer, item)
            .map_err(|e| Error::io("writing", &self.path, e.into()))?;
        self.writer
            .write_all(b"\n")
            .map_err(|e| Error::io("writing", &self.path, e))?;
        self.items += 1;
        Ok(())
    }

    /// Writes the text of one JSON value as it came (its trailing line break removed).
    pub fn write_raw(&mut self, json: &[u8], location: Option<(usize, u64)>) -> Result<()> {
        let mut end = json.len();
        while end > 0 && matches!(json[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let io = |e| Error::io("writing", &self.path, e);
        if let Some((source, line)) = location {
            write!(self.writer, "{source}:{line}").map_err(io)?;
        }
        self.writer.write_all(b"\t").map_err(io)?;
        self.writer.write_all(&json[..end]).map_err(io)?;
        self.writer.write_all(b"\n").map_err(io)?;
        self.items += 1;
        Ok(())
    }

    /// Flushes and syncs the file; returns its size and CRC-32.
    pub fn finish(self) -> Result<FileCheck> {
        let path = self.path.clone();
        let (file, check) = self
            .writer
            .into_inner()
            .map_err(|e| Error::io("writing", &path, e.into_error()))?
            .into_parts();
        file.sync_all()
            .map_err(|e| Error::io("syncing", &path, e))?;
        Ok(check)
    }
}

/// Writes Arrow items of one table to a Parquet file.
pub struct ArrowItemsWriter {
    writer: parquet::arrow::ArrowWriter<CheckedWriter<File>>,
    path: PathBuf,
}

impl ArrowItemsWriter {
    /// A new file at `path` for batches of `schema`.
    pub fn create(path: &Path, schema: arrow::datatypes::SchemaRef) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io("creating", path, e))?;
        let file = CheckedWriter::new(file);
        let writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| {
            Error::Columnar {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        Ok(ArrowItemsWriter {
            writer,
            path: path.to_path_buf(),
        })
    }

    /// Appends a batch; every batch of a table must have the same columns.
    pub fn write(&mut self, batch: &arrow::record_batch::RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| Error::Columnar {
            path: self.path.clone(),
            message: format!("Arrow items of one table must share one schema: {e}"),
        })
    }

    /// Closes and syncs the file; returns its size and CRC-32.
    pub fn finish(self) -> Result<FileCheck> {
        let path = self.path.clone();
        let (file, check) = self
            .writer
            .into_inner()
            .map_err(|e| Error::Columnar {
                path: path.clone(),
                message: e.to_string(),
            })?
            .into_parts();
        file.sync_all()
            .map_err(|e| Error::io("syncing", &path, e))?;
        Ok(check)
    }
}

/// One line of an items file, not yet parsed.
pub struct ItemLine {
    /// Byte offset of the line in the items file.
    pub offset: u64,
    /// `file:line` of the item in the input, when it came from a file.
    pub place: Option<String>,
    line: Vec<u8>,
    json_start: usize,
    path: Arc<Path>,
}

impl ItemLine {
    /// The item's JSON text.
    pub fn json(&self) -> &[u8] {
        &self.line[self.json_start..]
    }

    /// The prefix error messages start with: `file:line: `, or nothing.
    pub fn location(&self) -> String {
        self.place
            .as_ref()
            .map(|p| format!("{p}: "))
            .unwrap_or_default()
    }

    /// The error for JSON text that does not parse.
    pub fn parse_error(&self, e: serde_json::Error) -> Error {
        match &self.place {
            // Items passed through unparsed are checked here, with their place in the input.
            Some(place) => Error::InvalidJson {
                location: place.clone(),
                message: e.to_string(),
            },
            None => Error::Corrupt {
                what: self.path.display().to_string(),
                detail: e.to_string(),
            },
        }
    }
}

/// The lines of an items file starting in the byte range `[start, end)`, unparsed.
pub fn read_item_lines(
    path: &Path,
    sources: &[String],
    start: u64,
    end: u64,
) -> Result<impl Iterator<Item = Result<ItemLine>>> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| Error::io("reading", path, e))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let path: Arc<Path> = Arc::from(path);
    let sources = sources.to_vec();
    let mut offset = start;
    Ok(reader
        .split(b'\n')
        .map_while(move |line| {
            let line_start = offset;
            if line_start >= end {
                return None;
            }
            Some(line.map(|l| {
                offset += l.len() as u64 + 1;
                (line_start, l)
            }))
        })
        .map(move |line| {
            let (line_start, line) = line.map_err(|e| Error::io("reading", &*path, e))?;
            let tab = line
                .iter()
                .position(|&b| b == b'\t')
                .ok_or_else(|| Error::Corrupt {
                    what: path.display().to_string(),
                    detail: "items line without a tab".into(),
                })?;
            let place = std::str::from_utf8(&line[..tab])
                .ok()
                .and_then(|s| s.split_once(':'))
                .and_then(|(source, line_no)| {
                    Some(format!(
                        "{}:{line_no}",
                        sources.get(source.parse::<usize>().ok()?)?
                    ))
                });
            Ok(ItemLine {
                offset: line_start,
                place,
                line,
                json_start: tab + 1,
                path: path.clone(),
            })
        }))
}

/// The offset just after the first line break at or after `offset` (the file length if none).
pub fn next_line_start(path: &Path, offset: u64) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    if offset == 0 || offset >= len {
        return Ok(offset.min(len));
    }
    file.seek(SeekFrom::Start(offset - 1))
        .map_err(|e| Error::io("reading", path, e))?;
    let mut reader = BufReader::new(file);
    let mut skipped = Vec::new();
    reader
        .read_until(b'\n', &mut skipped)
        .map_err(|e| Error::io("reading", path, e))?;
    let _ = reader.read(&mut []);
    Ok((offset - 1 + skipped.len() as u64).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until_gone(dir: &Path) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dir.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        !dir.exists()
    }

    #[test]
    fn load_ids_grow_even_when_the_stored_last_one_is_ahead_of_the_clock() {
        assert_eq!(
            load_id_ticks("1700000000.0000001"),
            Some(17_000_000_000_000_001)
        );
        assert_eq!(load_id_ticks("1700000000.1"), None);
        let work = tempfile::tempdir().unwrap();
        let store = PackageStore::new(work.path());
        let first = store.create().unwrap();
        // As if the clock had been an hour ahead when the last id was handed out.
        let ahead = load_id_ticks(&first.load_id).unwrap() + 3600 * TICKS_PER_SECOND;
        let ahead_id = format!(
            "{}.{:07}",
            ahead / TICKS_PER_SECOND,
            ahead % TICKS_PER_SECOND
        );
        fs::write(store.last_load_id_path(), &ahead_id).unwrap();
        let second = store.create().unwrap();
        let third = store.create().unwrap();
        assert_eq!(load_id_ticks(&second.load_id), Some(ahead + 1));
        assert_eq!(load_id_ticks(&third.load_id), Some(ahead + 2));
        assert_eq!(
            fs::read_to_string(store.last_load_id_path()).unwrap(),
            third.load_id
        );
    }

    #[test]
    fn normalized_items_are_discarded_and_leftovers_go_at_recovery() {
        let work = tempfile::tempdir().unwrap();
        let store = PackageStore::new(work.path());
        let mut package = store.create().unwrap();
        fs::create_dir_all(package.dir().join("items")).unwrap();
        fs::write(package.dir().join("items/0.jsonl"), "{}\n").unwrap();
        package.move_to(Stage::Extracted).unwrap();
        package.begin_normalize().unwrap();
        package.commit_normalize().unwrap();
        assert!(!package.dir_in(Stage::Extracted).exists());
        assert!(package.dir_in(Stage::Normalized).exists());
        let discarded = store.discarded_dir().join(&package.load_id);
        assert!(wait_until_gone(&discarded));

        // A deletion the process did not finish: the next recovery ends it, and leaves the
        // normalized package pending.
        let leftover = store.discarded_dir().join("1.0000000/items");
        fs::create_dir_all(&leftover).unwrap();
        fs::write(leftover.join("0.jsonl"), "{}\n").unwrap();
        let id = package.load_id.clone();
        package.release();
        let pending = store.recover().unwrap();
        assert!(!store.discarded_dir().exists());
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].load_id.as_str(), pending[0].stage),
            (id.as_str(), Stage::Normalized)
        );
    }
}
