//! The pipeline: a working directory, a destination and a dataset; `run` = recover pending
//! packages → extract → normalize → load, each stage leaving its output on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::destination::{Destination, DestinationConfig, LoadJob, StateRow};
use crate::disk::{self, write_json_atomic};
use crate::error::{Error, Result};
use crate::extract::{extract, ExtractContext};
use crate::incremental::Interval;
use crate::naming::Naming;
use crate::normalize::{normalize_items_file, Normalizer};
use crate::package::{ItemsFormat, Package, PackageStore, Stage, TableFile};
use crate::progress::ProgressEvent;
use crate::resource::{Hints, Resource, Source};
use crate::schema::{ReplaceStrategy, Schema};
use crate::state;

/// Items normalized between two progress events.
const NORMALIZE_PROGRESS_EVERY: u64 = 4096;

/// Loaded packages kept in the working directory by default, for inspection.
pub const DEFAULT_KEEP_LOADED_PACKAGES: usize = 3;

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadInfo {
    /// The pipeline name.
    pub pipeline: String,
    /// The dataset.
    pub dataset: String,
    /// Load ids committed by this run (finished pending packages first).
    pub load_ids: Vec<String>,
    /// Rows loaded per table.
    pub tables: IndexMap<String, u64>,
    /// Tables dropped by the committed loads (a refresh or a drop of resources).
    pub dropped_tables: Vec<String>,
}

/// What a refresh wipes before the run extracts (dlt's `refresh` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Drop every table of the pipeline's schema and wipe the whole source state.
    DropSources,
    /// Drop the tables of the selected resources and reset their state.
    DropResources,
    /// Empty the tables of the selected resources and reset their state.
    DropData,
}

impl Refresh {
    /// Parses `drop_sources`, `drop_resources` or `drop_data`.
    pub fn parse(name: &str) -> Option<Refresh> {
        match name {
            "drop_sources" => Some(Refresh::DropSources),
            "drop_resources" => Some(Refresh::DropResources),
            "drop_data" => Some(Refresh::DropData),
            _ => None,
        }
    }
}

/// Options of one run that override the resources' own settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Hints that override every resource's hints for this run (`write_disposition = replace`
    /// is a full refresh: state reset, data replaced).
    pub hints: Hints,
    /// Resource names to run; all when empty.
    pub resources: Vec<String>,
    /// Wipe tables and state before extracting.
    pub refresh: Option<Refresh>,
    /// Reset the state of the run's resources (keeping their tables) before extracting.
    pub reset_state: bool,
    /// An external scheduler's interval for incrementals that allow it; when `None`, taken from
    /// the environment (`HIGHWATER_INTERVAL_START/END`, `DLT_INTERVAL_START/END`).
    pub interval: Option<Interval>,
}

type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// A pipeline: where data goes and where its working files live.
pub struct Pipeline {
    name: String,
    dataset: String,
    destination: DestinationConfig,
    working_dir: PathBuf,
    naming: Naming,
    replace_strategy: Option<ReplaceStrategy>,
    progress: ProgressFn,
    keep_loaded_packages: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("dataset", &self.dataset)
            .field("destination", &self.destination)
            .field("working_dir", &self.working_dir)
            .finish()
    }
}

/// Builds a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    name: String,
    dataset: Option<String>,
    destination: Option<DestinationConfig>,
    working_dir: Option<PathBuf>,
    keep_loaded_packages: usize,
    replace_strategy: Option<ReplaceStrategy>,
}

impl PipelineBuilder {
    /// The dataset (schema in the destination); default `<name>_dataset`.
    pub fn dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = Some(dataset.into());
        self
    }

    /// The destination; default DuckDB file `<name>.duckdb` in the current directory.
    pub fn destination(mut self, destination: DestinationConfig) -> Self {
        self.destination = Some(destination);
        self
    }

    /// The working directory itself (default `$HIGHWATER_HOME/<name>` or `.highwater/<name>`).
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// How many loaded packages stay in the working directory (the newest, whole, for
    /// inspection); older ones are deleted after each load. Default
    /// [`DEFAULT_KEEP_LOADED_PACKAGES`].
    pub fn keep_loaded_packages(mut self, keep: usize) -> Self {
        self.keep_loaded_packages = keep;
        self
    }

    /// How `replace` resources swap their rows, unless a resource names its own strategy;
    /// default truncate-and-insert. Refused when the destination cannot carry it out.
    pub fn replace_strategy(mut self, strategy: ReplaceStrategy) -> Self {
        self.replace_strategy = Some(strategy);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Pipeline> {
        if self.name.trim().is_empty() {
            return Err(Error::Config("pipeline name must not be empty".into()));
        }
        let destination = self
            .destination
            .unwrap_or_else(|| DestinationConfig::duckdb(format!("{}.duckdb", self.name)));
        let capabilities = destination.capabilities();
        let naming = Naming::with_max_length(capabilities.max_identifier_length);
        let dataset = naming.normalize_identifier(
            &self
                .dataset
                .unwrap_or_else(|| format!("{}_dataset", self.name)),
        );
        let working_dir = match self.working_dir {
            Some(dir) => dir,
            None => {
                let home = std::env::var_os("HIGHWATER_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(".highwater"));
                home.join(&self.name)
            }
        };
        Ok(Pipeline {
            name: self.name,
            dataset,
            destination,
            working_dir,
            naming,
            replace_strategy: self.replace_strategy,
            progress: Arc::new(|_| {}),
            keep_loaded_packages: self.keep_loaded_packages,
        })
    }
}

impl Pipeline {
    /// Starts building a pipeline named `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            dataset: None,
            destination: None,
            working_dir: None,
            keep_loaded_packages: DEFAULT_KEEP_LOADED_PACKAGES,
            replace_strategy: None,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The working directory.
    pub fn working_dir(&self) -> &Path {
        &self.working_dir
    }

    /// The destination.
    pub fn destination(&self) -> &DestinationConfig {
        &self.destination
    }

    /// Receives progress events while runs go on.
    pub fn on_progress(&mut self, f: impl Fn(ProgressEvent) + Send + Sync + 'static) {
        self.progress = Arc::new(f);
    }

    fn state_path(&self) -> PathBuf {
        self.working_dir.join("state.json")
    }

    fn schema_path(&self) -> PathBuf {
        self.working_dir.join("schema.json")
    }

    /// The naming convention for tables of `schema`: a dataset first written by a dlt before
    /// 1.4 keeps `__` in nested keys (see [`Naming::break_paths`]).
    fn naming_for(&self, schema: Option<&Schema>) -> Naming {
        self.naming
            .with_break_paths(schema.is_none_or(Schema::breaks_paths))
    }

    /// Opens the destination.
    pub fn open_destination(&self) -> Result<Box<dyn Destination>> {
        self.destination.open(&self.dataset)
    }

    /// The local state document, if there is one.
    pub fn local_state(&self) -> Result<Option<Value>> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        disk::read_json(&path, "pipeline state")
            .map(state::migrate_local)
            .map(Some)
    }

    /// The local schema, if there is one.
    pub fn local_schema(&self) -> Result<Option<Schema>> {
        let path = self.schema_path();
        if !path.exists() {
            return Ok(None);
        }
        disk::read_json(&path, "schema").map(Some)
    }

    /// What `resource` keeps in the local state, in the pipeline's default source (see
    /// [`Source::new`]); `None` before a first run or when the resource keeps nothing.
    pub fn resource_state(&self, resource: &str) -> Result<Option<Value>> {
        Ok(self.local_state()?.and_then(|doc| {
            let source = state::default_schema_name(&doc, &self.name);
            state::get_resource_state(&doc, source, resource).cloned()
        }))
    }

    /// Load ids of packages not loaded yet.
    pub fn pending_packages(&self) -> Result<Vec<String>> {
        PackageStore::new(&self.working_dir).pending_ids()
    }

    /// Packages not loaded yet, each with `extracted` or `normalized`.
    pub fn pending_package_stages(&self) -> Result<Vec<(String, &'static str)>> {
        PackageStore::new(&self.working_dir).pending_stages()
    }

    /// Deletes loaded packages beyond the newest `keep`, and with `failed` the packages set
    /// aside as failed; returns the deleted load ids (loaded, failed).
    pub fn prune_packages(&self, keep: usize, failed: bool) -> Result<(Vec<String>, Vec<String>)> {
        let store = PackageStore::new(&self.working_dir);
        let loaded = store.prune_loaded(keep)?;
        let failed = if failed {
            store.prune_failed()?
        } else {
            Vec::new()
        };
        Ok((loaded, failed))
    }

    /// How many loaded packages the pipeline keeps.
    pub fn kept_loaded_packages(&self) -> usize {
        self.keep_loaded_packages
    }

    /// Packages set aside because they could not be finished, with the folder each is kept in.
    pub fn failed_packages(&self) -> Result<Vec<(String, PathBuf)>> {
        let store = PackageStore::new(&self.working_dir);
        Ok(store
            .failed_ids()?
            .into_iter()
            .map(|id| {
                let dir = store.failed_dir(&id);
                (id, dir)
            })
            .collect())
    }

    /// Runs a source (or a single resource) with its own hints.
    pub fn run(&self, source: impl Into<Source>) -> Result<LoadInfo> {
        self.run_with(source, &RunOptions::default())
    }

    /// Runs a source with run-time options.
    pub fn run_with(&self, source: impl Into<Source>, options: &RunOptions) -> Result<LoadInfo> {
        self.run_source(source.into(), options, false)
    }

    /// A run; `by_name` runs change only tables and state of resources named by a placeholder
    /// source, and commit nothing when they find neither.
    fn run_source(&self, source: Source, options: &RunOptions, by_name: bool) -> Result<LoadInfo> {
        let mut source = source;
        if !options.resources.is_empty() {
            let names: Vec<&str> = options.resources.iter().map(String::as_str).collect();
            source = source.with_resources(&names)?;
        }
        let interval = match &options.interval {
            Some(interval) => Some(interval.clone()),
            None => Interval::from_env()?,
        };
        if let Some(interval) = &interval {
            for resource in &mut source.resources {
                let hinted = resource.cursor_hint_kind(&options.hints);
                if let Some(incremental) = &mut resource.incremental {
                    incremental.join_interval(interval, hinted);
                }
            }
        }
        disk::create_dir_all(&self.working_dir)?;
        let stateless = !source.resources.is_empty()
            && source
                .resources
                .iter()
                .all(|r| r.incremental.as_ref().is_some_and(|i| i.is_stateless()));
        let _lock = if stateless { None } else { Some(self.lock()?) };

        let mut info = LoadInfo {
            pipeline: self.name.clone(),
            dataset: self.dataset.clone(),
            ..LoadInfo::default()
        };
        self.finish_left_packages(stateless, &mut info)?;
        let store = PackageStore::new(&self.working_dir);

        let mut run_state = if stateless {
            self.new_state()
        } else {
            self.state_or_restore()?
        };
        if stateless && self.local_schema()?.is_none() {
            self.restore_schema_only()?;
        }
        // The pipeline's default source is named after its schema, as dlt's: the pipeline's
        // name, or the source's of a dataset dlt loaded from a named source.
        if source.name.is_empty() {
            source.name = self.schema_name(&run_state);
        }

        state::source_state(&mut run_state, &source.name);
        let state_before = state::version_hash(&run_state);
        let refreshed = match options.refresh {
            Some(refresh) => self.apply_refresh(refresh, &source, &mut run_state)?,
            None => RefreshPlan::default(),
        };
        if options.reset_state {
            if let Some(Value::Object(resources)) =
                state::source_state(&mut run_state, &source.name).get_mut("resources")
            {
                for resource in &source.resources {
                    resources.remove(&resource.name);
                }
            }
        }

        // A drop or reset by name that found no tables and no state has nothing to commit (not
        // even a first state).
        let wiped_state = state::version_hash(&run_state) != state_before;

        let mut package = store.create()?;
        (self.progress)(ProgressEvent::Stage {
            stage: "extract",
            load_id: package.load_id.clone(),
        });
        let local_schema = self.local_schema()?;
        let naming = self.naming_for(local_schema.as_ref());
        let normalize_table = move |raw: &str| naming.normalize_key(raw);
        let resource_tables = local_schema
            .map(|schema| schema.root_tables_by_resource())
            .unwrap_or_default();
        let progress = self.progress.clone();
        let resources = std::mem::take(&mut source.resources);
        // Items may nest as deep as `json::MAX_DEPTH`: the stage has room for that on any thread.
        let extracted = crate::json::with_deep_stack(|| {
            extract(
                &package,
                resources,
                ExtractContext {
                    pipeline: &self.name,
                    source: &source.name,
                    root_key: source.root_key,
                    run_hints: &options.hints,
                    state: &mut run_state,
                    progress: &move |e| progress(e),
                    normalize_table: &normalize_table,
                    resource_tables: &resource_tables,
                    capabilities: self.destination.capabilities(),
                    replace_strategy: self.replace_strategy,
                },
            )
        });
        let extracted = match extracted {
            Ok(extracted) => extracted,
            Err(e) => {
                let _ = std::fs::remove_dir_all(package.dir());
                package.release();
                return Err(e);
            }
        };
        let mut manifest = extracted.manifest;
        manifest.drop_tables = refreshed.drop_tables;
        for table in refreshed.truncate_tables {
            if !manifest.truncate_tables.contains(&table) {
                manifest.truncate_tables.push(table);
            }
        }
        let base_version = run_state.get("_state_version").and_then(Value::as_i64);
        let state_changed = !stateless && state::prepare_commit(&mut run_state);
        if !stateless {
            manifest.stateful = true;
            manifest.base_state_version = base_version;
            manifest.state = Some(run_state.clone());
        }
        let has_work = extracted.items > 0
            || !manifest.truncate_tables.is_empty()
            || !manifest.drop_tables.is_empty();
        if !has_work && (!state_changed || (by_name && !wiped_state)) {
            // Nothing new: no load, as dlt.
            let _ = std::fs::remove_dir_all(package.dir());
            package.release();
            (self.progress)(ProgressEvent::StageDone {
                stage: "extract",
                summary: "nothing new to load".into(),
            });
            return Ok(info);
        }
        manifest.state_row = state_changed;
        write_json_atomic(&package.dir().join("manifest.json"), &manifest)?;
        crate::crash::point("after-extract");
        package.move_to(Stage::Extracted)?;
        (self.progress)(ProgressEvent::StageDone {
            stage: "extract",
            summary: format!(
                "{} items into {} tables",
                extracted.items,
                manifest.tables.len()
            ),
        });
        crate::crash::point("after-extract-commit");
        self.finish_package(&mut package, &mut info)?;
        package.release();
        Ok(info)
    }

    /// Finishes the packages earlier runs left behind (normalizes and loads them) and extracts
    /// nothing: for a run that has nothing new to read.
    pub fn finish_pending(&self) -> Result<LoadInfo> {
        disk::create_dir_all(&self.working_dir)?;
        let _lock = self.lock()?;
        let mut info = LoadInfo {
            pipeline: self.name.clone(),
            dataset: self.dataset.clone(),
            ..LoadInfo::default()
        };
        self.finish_left_packages(false, &mut info)?;
        Ok(info)
    }

    /// Finishes the packages of processes that have ended, oldest first; a `stateless` run
    /// (holding no pipeline lock) leaves the state-writing ones to a run that holds it.
    fn finish_left_packages(&self, stateless: bool, info: &mut LoadInfo) -> Result<()> {
        let store = PackageStore::new(&self.working_dir);
        for mut pending in store.recover()? {
            let manifest = pending.manifest()?;
            if stateless && manifest.stateful {
                continue; // only a run holding the pipeline lock may advance the state
            }
            (self.progress)(ProgressEvent::Resuming {
                load_id: pending.load_id.clone(),
                stage: match pending.stage {
                    Stage::Normalized => "load",
                    _ => "normalize",
                },
            });
            self.finish_package(&mut pending, info)?;
            pending.release();
        }
        Ok(())
    }

    /// Resets state and plans the drops of a refresh; dropped tables leave the local schema so
    /// they are created afresh.
    fn apply_refresh(
        &self,
        refresh: Refresh,
        source: &Source,
        run_state: &mut Value,
    ) -> Result<RefreshPlan> {
        let mut schema = self
            .local_schema()?
            .unwrap_or_else(|| Schema::new(self.schema_name(run_state)));
        let selected: Vec<&str> = source.resources.iter().map(|r| r.name.as_str()).collect();
        let roots: Vec<String> = schema
            .tables
            .values()
            .filter(|t| t.parent.is_none())
            .filter(|t| {
                refresh == Refresh::DropSources
                    || t.resource.as_deref().is_some_and(|r| selected.contains(&r))
            })
            .map(|t| t.name.clone())
            .collect();
        match refresh {
            Refresh::DropSources => {
                *state::source_state(run_state, &source.name) = Value::Object(Default::default());
            }
            Refresh::DropResources | Refresh::DropData => {
                if let Some(Value::Object(resources)) =
                    state::source_state(run_state, &source.name).get_mut("resources")
                {
                    for name in &selected {
                        resources.remove(*name);
                    }
                }
            }
        }
        let mut plan = RefreshPlan::default();
        if refresh == Refresh::DropData {
            plan.truncate_tables = roots;
            return Ok(plan);
        }
        for root in &roots {
            plan.drop_tables.push(root.clone());
            plan.drop_tables
                .extend(schema.descendants(root).into_iter().map(|t| t.name.clone()));
        }
        schema
            .tables
            .retain(|name, _| !plan.drop_tables.contains(name));
        schema.bump_version();
        write_json_atomic(&self.schema_path(), &schema)?;
        Ok(plan)
    }

    /// Resets the state of the named resources (their incrementals start again from
    /// `initial_value`), committed to the destination like any state change; tables stay.
    pub fn reset_resource_state(&self, resources: &[&str]) -> Result<LoadInfo> {
        let options = RunOptions {
            reset_state: true,
            ..RunOptions::default()
        };
        self.run_source(self.placeholder_source(resources), &options, true)
    }

    /// Drops the tables of the named resources and resets their state, in one load.
    pub fn drop_resources(&self, resources: &[&str]) -> Result<LoadInfo> {
        let options = RunOptions {
            refresh: Some(Refresh::DropResources),
            ..RunOptions::default()
        };
        self.run_source(self.placeholder_source(resources), &options, true)
    }

    /// A source of resources that yield nothing, to change state and tables by name.
    fn placeholder_source(&self, resources: &[&str]) -> Source {
        let resources = resources
            .iter()
            .map(|name| Resource::new(*name, |_| Ok(std::iter::empty())))
            .collect();
        Source::new("", resources)
    }

    /// Deletes the load packages not loaded yet (a damaged one refuses every run until then),
    /// with the local state and schema, which the next run restores from the destination: so
    /// the rows of the dropped packages are extracted again from the last committed state, and
    /// a package the destination committed before a crash is not extracted twice. Packages of
    /// runs still going on are left alone. Returns the load ids dropped.
    pub fn drop_pending_packages(&self) -> Result<Vec<String>> {
        disk::create_dir_all(&self.working_dir)?;
        let _lock = self.lock()?;
        let mut dropped = Vec::new();
        for package in PackageStore::new(&self.working_dir).recover()? {
            dropped.push(package.load_id.clone());
            package.drop_unloaded()?;
        }
        if !dropped.is_empty() {
            self.forget_local_state()?;
        }
        Ok(dropped)
    }

    /// Removes the local state and schema: the next run restores them from the destination.
    fn forget_local_state(&self) -> Result<()> {
        for path in [self.state_path(), self.schema_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing", &path, e)),
            }
        }
        Ok(())
    }

    /// Takes the pipeline lock, refusing when another state-writing run holds it.
    fn lock(&self) -> Result<crate::lock::LockFile> {
        let path = self.working_dir.join("pipeline.lock");
        crate::lock::try_lock_file(&path)?.ok_or(Error::Locked {
            pipeline: self.name.clone(),
            path,
        })
    }

    /// The local state, restored from the destination when the working directory is new.
    fn state_or_restore(&self) -> Result<Value> {
        if let Some(local) = self.local_state()? {
            return Ok(local);
        }
        let mut destination = self.open_destination()?;
        let restored = destination.restore(&self.name)?;
        drop(destination);
        if let Some(schema) = &restored.schema {
            if self.local_schema()?.is_none() {
                write_json_atomic(&self.schema_path(), schema)?;
            }
        }
        match restored.state {
            Some(remote) => {
                tracing::info!(pipeline = %self.name, "state restored from the destination");
                let remote = state::mark_restored(remote);
                write_json_atomic(&self.state_path(), &remote)?;
                Ok(remote)
            }
            None => Ok(self.new_state()),
        }
    }

    /// The name of the pipeline's schema and of its default source in `state` (see
    /// [`state::default_schema_name`]).
    fn schema_name(&self, state: &Value) -> String {
        state::default_schema_name(state, &self.name).to_string()
    }

    /// A fresh state document.
    fn new_state(&self) -> Value {
        state::new_state(
            &self.name,
            &self.dataset,
            &self.destination.capabilities().destination_type(),
        )
    }

    /// After another run committed a newer state to the destination: this package was
    /// extracted from an older state, so it is set aside unloaded, and the local state and
    /// schema go so that the next run restores them from the destination and extracts anew.
    fn discard_stale_package(&self, package: &mut Package) -> Result<()> {
        let kept = package.set_aside()?;
        tracing::warn!(load_id = %package.load_id, kept = %kept.display(), "package extracted from an outdated state was set aside");
        self.forget_local_state()
    }

    fn restore_schema_only(&self) -> Result<()> {
        let mut destination = self.open_destination()?;
        let restored = destination.restore(&self.name)?;
        if let Some(schema) = restored.schema {
            write_json_atomic(&self.schema_path(), &schema)?;
        }
        Ok(())
    }

    /// Normalizes (if needed) and loads a package, then advances the local state.
    fn finish_package(&self, package: &mut Package, info: &mut LoadInfo) -> Result<()> {
        if package.stage == Stage::Extracted {
            if let Err(e) = crate::json::with_deep_stack(|| self.normalize_package(package)) {
                if e.is_in_the_data() {
                    // Data that cannot be normalized never will be: set the package aside (the
                    // state did not advance, so its items are extracted again once fixed).
                    let kept = package.set_aside()?;
                    tracing::warn!(load_id = %package.load_id, kept = %kept.display(), "package could not be normalized and was set aside");
                } else {
                    // A full disk, a damaged file: the package stays pending, normalized again
                    // by the next run (or dropped).
                    disk::remove_dir_if_exists(&package.dir_in(Stage::Normalizing))?;
                }
                return Err(e);
            }
        }
        let manifest = package.manifest()?;
        let files = package.table_files()?;
        let schema = package.schema()?;
        package.check_tables(&files)?;
        (self.progress)(ProgressEvent::Stage {
            stage: "load",
            load_id: package.load_id.clone(),
        });
        let mut destination = self.open_destination()?;
        if destination.is_loaded(&package.load_id)? {
            tracing::info!(load_id = %package.load_id, "package was already loaded; finishing it locally");
        } else {
            let state_row = match &manifest.state {
                Some(s) if manifest.state_row => Some(StateRow {
                    version: s.get("_state_version").and_then(Value::as_i64).unwrap_or(1),
                    engine_version: state::STATE_ENGINE_VERSION,
                    state: state::encode_for_destination(s)?,
                    version_hash: s
                        .get("_version_hash")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    base_version: manifest.base_state_version,
                }),
                _ => None,
            };
            let total: u64 = files.iter().map(|f| f.rows).sum();
            let loaded = std::sync::atomic::AtomicU64::new(0);
            let on_file_loaded = |rows: u64| {
                let done = loaded.fetch_add(rows, std::sync::atomic::Ordering::Relaxed) + rows;
                (self.progress)(ProgressEvent::Rows {
                    stage: "load",
                    // A merge retried through staging loads its files again.
                    done: done.min(total),
                    total: Some(total),
                });
            };
            let job = LoadJob {
                load_id: &package.load_id,
                pipeline: &self.name,
                schema: &schema,
                files_dir: package.dir().join("tables"),
                files: &files,
                truncate_tables: &manifest.truncate_tables,
                drop_tables: &manifest.drop_tables,
                state: state_row,
                on_file_loaded: &on_file_loaded,
            };
            crate::crash::point("before-load");
            if let Err(e) = destination.load(&job) {
                if matches!(e, Error::StateConflict { .. }) {
                    self.discard_stale_package(package)?;
                }
                return Err(e);
            }
        }
        drop(destination);
        crate::crash::point("after-commit");
        if manifest.stateful {
            if let Some(new_state) = &manifest.state {
                write_json_atomic(&self.state_path(), new_state)?;
            }
        }
        package.move_to(Stage::Loaded)?;
        PackageStore::new(&self.working_dir).prune_loaded(self.keep_loaded_packages)?;
        let mut rows = 0;
        for file in &files {
            *info.tables.entry(file.table.clone()).or_insert(0) += file.rows;
            rows += file.rows;
        }
        info.load_ids.push(package.load_id.clone());
        info.dropped_tables
            .extend(manifest.drop_tables.iter().cloned());
        (self.progress)(ProgressEvent::StageDone {
            stage: "load",
            summary: format!(
                "{rows} rows into {} tables, load id {}",
                files
                    .iter()
                    .map(|f| &f.table)
                    .collect::<std::collections::HashSet<_>>()
                    .len(),
                package.load_id
            ),
        });
        Ok(())
    }

    fn normalize_package(&self, package: &mut Package) -> Result<()> {
        (self.progress)(ProgressEvent::Stage {
            stage: "normalize",
            load_id: package.load_id.clone(),
        });
        let manifest = package.manifest()?;
        package.check_items(&manifest)?;
        let schema_name = match &manifest.state {
            Some(state) => self.schema_name(state),
            None => self.name.clone(),
        };
        let mut schema = self
            .local_schema()?
            .unwrap_or_else(|| Schema::new(schema_name));
        let out = package.begin_normalize()?;
        let tables_dir = out.join("tables");
        let naming = self.naming_for(Some(&schema));
        let files: Vec<TableFile> = {
            let mut normalizer =
                Normalizer::new(&mut schema, naming, &package.load_id, &tables_dir);
            let mut files = Vec::new();
            let mut rows_seen = 0u64;
            let total: u64 = manifest.tables.iter().map(|t| t.items).sum();
            let progress = self.progress.clone();
            let mut on_item = || {
                rows_seen += 1;
                if rows_seen == 1000 {
                    crate::crash::point("mid-normalize");
                }
                if rows_seen.is_multiple_of(NORMALIZE_PROGRESS_EVERY) {
                    progress(ProgressEvent::Rows {
                        stage: "normalize",
                        done: rows_seen,
                        total: Some(total),
                    });
                }
            };
            for table in &manifest.tables {
                let root = normalizer.prepare_root(&table.raw_name, &table.spec)?;
                let items_path = package.dir().join("items").join(&table.file);
                if table.format == ItemsFormat::Parquet {
                    normalizer.push_arrow_file(&root, &items_path)?;
                    continue;
                }
                normalize_items_file(
                    &mut normalizer,
                    &root,
                    &table.spec,
                    &items_path,
                    &manifest.sources,
                    table.items,
                    &mut files,
                    &mut on_item,
                )?;
            }
            files.extend(normalizer.finish()?);
            files
        };
        for file in &files {
            if let Some(table) = schema.tables.get_mut(&file.table) {
                table.mark_seen_data();
            }
        }
        schema.bump_version();
        let mut manifest = manifest;
        // Tables a replace empties include child tables known only now.
        manifest
            .truncate_tables
            .retain(|t| schema.tables.contains_key(t));
        write_json_atomic(&out.join("manifest.json"), &manifest)?;
        write_json_atomic(&out.join("schema.json"), &schema)?;
        write_json_atomic(&out.join("files.json"), &files)?;
        package.commit_normalize()?;
        write_json_atomic(&self.schema_path(), &schema)?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        (self.progress)(ProgressEvent::StageDone {
            stage: "normalize",
            summary: format!("{rows} rows in {} files", files.len()),
        });
        Ok(())
    }
}

/// Tables a refresh drops or empties.
#[derive(Debug, Default)]
struct RefreshPlan {
    drop_tables: Vec<String>,
    truncate_tables: Vec<String>,
}

impl From<Resource> for Source {
    /// A lone resource runs in the pipeline's default source (see [`Source::new`]), as in dlt.
    fn from(resource: Resource) -> Self {
        Source::new("", vec![resource])
    }
}
