//! The extract stage: run each resource, filter by its incremental, dispatch items to tables,
//! and write them with the pending state into a new load package.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use serde_json::Value;

use crate::destination::Capabilities;
use crate::error::{Error, Result};
use crate::incremental::{IncrementalRun, IncrementalView, Verdict};
use crate::package::{
    ArrowItemsWriter, ExtractedTable, ItemsFormat, ItemsWriter, Manifest, Package, TableSpec,
};
use crate::progress::ProgressEvent;
use crate::resource::{Hints, Item, Resource, ResourceContext, TableName};
use crate::schema::{MergeStrategy, ReplaceStrategy, WriteDisposition};
use crate::state;

/// What the extract stage needs besides the resources.
pub(crate) struct ExtractContext<'a> {
    pub pipeline: &'a str,
    pub source: &'a str,
    pub root_key: bool,
    pub run_hints: &'a Hints,
    pub state: &'a mut Value,
    pub progress: &'a dyn Fn(ProgressEvent),
    pub normalize_table: &'a dyn Fn(&str) -> String,
    /// The root tables each resource has loaded into so far (from the stored schema).
    pub resource_tables: &'a HashMap<String, Vec<String>>,
    /// What the destination supports: merge strategies it cannot carry out are refused here,
    /// before anything is pulled.
    pub capabilities: Capabilities,
    /// The pipeline's replace strategy, for resources that name none.
    pub replace_strategy: Option<ReplaceStrategy>,
}

/// The outcome of extracting into a package.
pub(crate) struct Extracted {
    pub manifest: Manifest,
    pub items: u64,
}

/// Whether the resource goes on, or its incremental left the range and no more is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    Stop,
}

impl Flow {
    /// Whether the resource goes on after `run` filtered an item.
    fn after(run: &IncrementalRun) -> Flow {
        if run.should_stop() {
            Flow::Stop
        } else {
            Flow::Next
        }
    }
}

/// The items files of the package being written, and what its manifest says about them.
struct PackageWriter<'a> {
    dir: std::path::PathBuf,
    normalize_table: &'a dyn Fn(&str) -> String,
    tables: Vec<ExtractedTable>,
    json_outs: HashMap<String, JsonOut>,
    arrow_outs: HashMap<String, (ArrowItemsWriter, usize)>,
    sources: Vec<String>,
    source_index: HashMap<Arc<str>, usize>,
    truncate_tables: Vec<String>,
}

/// An open JSON items file and its table's index in the manifest.
struct JsonOut {
    writer: ItemsWriter,
    index: usize,
}

impl<'a> PackageWriter<'a> {
    fn create(package: &Package, normalize_table: &'a dyn Fn(&str) -> String) -> Result<Self> {
        let dir = package.dir();
        crate::disk::create_dir_all(&dir.join("items"))?;
        Ok(PackageWriter {
            dir,
            normalize_table,
            tables: Vec::new(),
            json_outs: HashMap::new(),
            arrow_outs: HashMap::new(),
            sources: Vec::new(),
            source_index: HashMap::new(),
            truncate_tables: Vec::new(),
        })
    }

    /// Lists a new table in the manifest (emptied first when its resource replaces); returns
    /// its index and the path of its items file.
    fn add_table(
        &mut self,
        raw_table: &str,
        spec: &TableSpec,
        format: ItemsFormat,
    ) -> (usize, std::path::PathBuf) {
        let index = self.tables.len();
        let file = match format {
            ItemsFormat::Jsonl => format!("{index}.jsonl"),
            ItemsFormat::Parquet => format!("{index}.parquet"),
        };
        let path = self.dir.join("items").join(&file);
        self.tables.push(ExtractedTable {
            raw_name: raw_table.to_string(),
            file,
            format,
            items: 0,
            spec: spec.clone(),
            check: None,
        });
        replace_truncates(
            &mut self.truncate_tables,
            spec.write_disposition,
            (self.normalize_table)(raw_table),
        );
        (index, path)
    }

    /// The items file of JSON table `raw_table`, started on its first item.
    fn json_out(&mut self, raw_table: &str, spec: &TableSpec) -> Result<&mut JsonOut> {
        if !self.json_outs.contains_key(raw_table) {
            let (index, path) = self.add_table(raw_table, spec, ItemsFormat::Jsonl);
            let writer = ItemsWriter::create(&path)?;
            self.json_outs
                .insert(raw_table.to_string(), JsonOut { writer, index });
        }
        self.json_outs
            .get_mut(raw_table)
            .ok_or_else(|| Error::Config(format!("items file of table {raw_table} missing")))
    }

    /// The index of `file` in the manifest's list of input files (added when new).
    fn source_index(&mut self, file: &Arc<str>) -> usize {
        if let Some(&i) = self.source_index.get(file) {
            return i;
        }
        self.sources.push(file.to_string());
        self.source_index
            .insert(file.clone(), self.sources.len() - 1);
        self.sources.len() - 1
    }

    /// Writes one JSON item's text as it came.
    fn write_json_text(
        &mut self,
        raw_table: &str,
        spec: &TableSpec,
        json: &[u8],
        location: Option<(&Arc<str>, u64)>,
    ) -> Result<()> {
        let location = location.map(|(file, line)| (self.source_index(file), line));
        self.json_out(raw_table, spec)?
            .writer
            .write_raw(json, location)
    }

    /// Writes one JSON item.
    fn write_json_value(
        &mut self,
        raw_table: &str,
        spec: &TableSpec,
        value: &Value,
        location: Option<(&Arc<str>, u64)>,
    ) -> Result<()> {
        let location = location.map(|(file, line)| (self.source_index(file), line));
        self.json_out(raw_table, spec)?
            .writer
            .write(value, location)
    }

    /// Writes an Arrow batch (not empty) into its table's Parquet items file.
    fn write_arrow(
        &mut self,
        raw_table: &str,
        spec: &TableSpec,
        batch: &RecordBatch,
    ) -> Result<()> {
        if !self.arrow_outs.contains_key(raw_table) {
            let (index, path) = self.add_table(raw_table, spec, ItemsFormat::Parquet);
            let writer = ArrowItemsWriter::create(&path, batch.schema())?;
            self.arrow_outs
                .insert(raw_table.to_string(), (writer, index));
        }
        if let Some((writer, index)) = self.arrow_outs.get_mut(raw_table) {
            writer.write(batch)?;
            self.tables[*index].items += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// Syncs the items files; returns the tables, input files and tables to empty.
    fn finish(mut self) -> Result<(Vec<ExtractedTable>, Vec<String>, Vec<String>)> {
        for (_, out) in self.json_outs {
            // The writer counts what it wrote.
            self.tables[out.index].items = out.writer.items;
            self.tables[out.index].check = Some(out.writer.finish()?);
        }
        for (_, (writer, index)) in self.arrow_outs {
            self.tables[index].check = Some(writer.finish()?);
        }
        Ok((self.tables, self.sources, self.truncate_tables))
    }
}

/// One resource being extracted: its hints, its incremental and what it produced so far.
struct ResourceExtract {
    name: String,
    hints: Hints,
    spec: TableSpec,
    incremental: Option<Arc<Mutex<IncrementalRun>>>,
    /// Items the resource yielded (rows of Arrow batches, lines of JSON text).
    items: u64,
    /// Items written to the package.
    kept: u64,
}

impl ResourceExtract {
    fn incremental(&self) -> Option<std::sync::MutexGuard<'_, IncrementalRun>> {
        self.incremental
            .as_ref()
            .map(|run| run.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn flow(&self) -> Flow {
        self.incremental()
            .map_or(Flow::Next, |run| Flow::after(&run))
    }

    /// The table of every item, unless it is computed from each item.
    fn static_table(&self) -> Option<&str> {
        match &self.hints.table_name {
            None => Some(&self.name),
            Some(TableName::Static(name)) => Some(name),
            Some(TableName::Dynamic(_)) => None,
        }
    }

    fn arrow(&mut self, out: &mut PackageWriter<'_>, batch: RecordBatch) -> Result<()> {
        self.items += batch.num_rows() as u64;
        let batch = match self.incremental() {
            Some(mut run) => run.filter_batch(&batch)?,
            None => batch,
        };
        let Some(table) = self.static_table() else {
            return Err(Error::Config(format!(
                "resource {}: Arrow items need a fixed table name, not a function of the item",
                self.name
            )));
        };
        if batch.num_rows() > 0 {
            out.write_arrow(table, &self.spec, &batch)?;
            self.kept += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// One JSON value as text. It is written as it came (parsed once, by normalize) without an
    /// incremental, and with one when its cursor and dedup key can be read from the text alone.
    fn json_text(
        &mut self,
        out: &mut PackageWriter<'_>,
        json: &[u8],
        file: &Arc<str>,
        line: u64,
    ) -> Result<Flow> {
        let is_static = self.static_table().is_some();
        if let Some(run) = &self.incremental {
            let mut run = run.lock().unwrap_or_else(|p| p.into_inner());
            // One table: the row is written as it came, so its text alone decides.
            let verdict = if is_static {
                run.filter_text(json, &format_args!("{file}:{line}: "))
                    .transpose()?
            } else {
                None
            };
            // Else rows plainly out of range are dropped from the text of their cursor.
            let verdict = verdict.or_else(|| run.prefilter(json).then_some(Verdict::Drop));
            if let Some(verdict) = verdict {
                let flow = Flow::after(&run);
                drop(run);
                self.items += 1;
                if verdict == Verdict::Keep {
                    self.write_text(out, json, file, line)?;
                }
                return Ok(flow);
            }
        } else if is_static {
            self.items += 1;
            self.write_text(out, json, file, line)?;
            return Ok(Flow::Next);
        }
        let value = crate::json::from_slice(json).map_err(|e| Error::InvalidJson {
            location: format!("{file}:{line}"),
            message: e.to_string(),
        })?;
        self.value(out, value, Some((file, line)))?;
        Ok(self.flow())
    }

    fn write_text(
        &mut self,
        out: &mut PackageWriter<'_>,
        json: &[u8],
        file: &Arc<str>,
        line: u64,
    ) -> Result<()> {
        let table = self.static_table().unwrap_or(&self.name);
        out.write_json_text(table, &self.spec, json, Some((file, line)))?;
        self.kept += 1;
        Ok(())
    }

    /// Every line of a block of JSON Lines, in order, until the incremental says stop. Empty
    /// `line_ends` are found here; line ends that stop short of the text are refused.
    fn json_lines(
        &mut self,
        out: &mut PackageWriter<'_>,
        bytes: &[u8],
        line_ends: Vec<usize>,
        file: &Arc<str>,
        first_line: u64,
    ) -> Result<Flow> {
        let line_ends = if line_ends.is_empty() {
            crate::resource::line_ends(bytes)
        } else if line_ends.last() != Some(&bytes.len()) {
            return Err(Error::Resource {
                resource: self.name.clone(),
                message: format!(
                    "{file}:{first_line}: a block of JSON lines whose line ends stop at {:?}, not at its end ({})",
                    line_ends.last(),
                    bytes.len()
                ),
            });
        } else {
            line_ends
        };
        let mut start = 0;
        for (line, &end) in (first_line..).zip(&line_ends) {
            let text = bytes.get(start..end).ok_or_else(|| Error::Resource {
                resource: self.name.clone(),
                message: format!("{file}:{line}: the block's line ends do not fit its text"),
            })?;
            if !text.iter().all(u8::is_ascii_whitespace)
                && self.json_text(out, text, file, line)? == Flow::Stop
            {
                return Ok(Flow::Stop);
            }
            start = end;
        }
        Ok(Flow::Next)
    }

    /// One parsed JSON value: filtered, sent to its table and written.
    fn value(
        &mut self,
        out: &mut PackageWriter<'_>,
        value: Value,
        location: Option<(&Arc<str>, u64)>,
    ) -> Result<()> {
        self.items += 1;
        let location_text = match location {
            Some((file, line)) => format!("{file}:{line}: "),
            None => String::new(),
        };
        if let Some(mut run) = self.incremental() {
            if run.filter(&value, &location_text)? == Verdict::Drop {
                return Ok(());
            }
        }
        let table = match &self.hints.table_name {
            None => self.name.clone(),
            Some(TableName::Static(name)) => name.clone(),
            Some(TableName::Dynamic(f)) => f(&value).map_err(|e| match e {
                Error::Config(message) => Error::Resource {
                    resource: self.name.clone(),
                    message: format!("{location_text}{message}"),
                },
                other => other,
            })?,
        };
        out.write_json_value(&table, &self.spec, &value, location)?;
        self.kept += 1;
        Ok(())
    }

    /// One item of the resource, whatever its kind.
    fn item(&mut self, out: &mut PackageWriter<'_>, item: Item) -> Result<Flow> {
        match item {
            Item::Arrow(batch) => self.arrow(out, batch)?,
            Item::RawJson { bytes, file, line } => return self.json_text(out, &bytes, &file, line),
            Item::RawJsonLines {
                bytes,
                line_ends,
                file,
                first_line,
            } => return self.json_lines(out, &bytes, line_ends, &file, first_line),
            Item::Json(value) => self.value(out, value, None)?,
            Item::Page(values) => {
                // A page is filtered whole: the range check drops its rows outside the range.
                for value in values {
                    self.value(out, value, None)?;
                }
            }
            Item::Located { value, file, line } => self.value(out, value, Some((&file, line)))?,
        }
        Ok(self.flow())
    }
}

/// Runs `resources` and writes their items into `package` (in `new/`).
pub(crate) fn extract(
    package: &Package,
    resources: Vec<Resource>,
    ctx: ExtractContext<'_>,
) -> Result<Extracted> {
    let mut out = PackageWriter::create(package, ctx.normalize_table)?;
    let mut total_items = 0u64;

    // Every resource's hints are checked before any resource is called: a refused strategy
    // pulls nothing.
    let mut planned = Vec::with_capacity(resources.len());
    for resource in resources {
        let hints = resource.hints.overridden_by(ctx.run_hints);
        let spec = table_spec(&resource.name, &hints, &ctx)?;
        planned.push((resource, hints, spec));
    }

    for (mut resource, hints, spec) in planned {
        let disposition = spec.write_disposition;
        // Replace (and a full refresh) starts the resource's state afresh, as dlt does.
        if disposition == WriteDisposition::Replace {
            if let Some(Value::Object(resources)) =
                state::source_state(ctx.state, ctx.source).get_mut("resources")
            {
                resources.remove(&resource.name);
            }
            if let Some(TableName::Static(name)) = &hints.table_name {
                out.truncate_tables.push((ctx.normalize_table)(name));
            } else if hints.table_name.is_none() {
                out.truncate_tables
                    .push((ctx.normalize_table)(&resource.name));
            }
            // As dlt: every root table the resource filled before is emptied too, also those
            // this run brings no rows for (table names taken from the items, a renamed table).
            for table in ctx
                .resource_tables
                .get(&resource.name)
                .into_iter()
                .flatten()
            {
                replace_truncates(&mut out.truncate_tables, disposition, table.clone());
            }
        }

        let stored_resource_state =
            state::resource_state(ctx.state, ctx.source, &resource.name).clone();
        let incremental = match resource.incremental.clone() {
            Some(config) => {
                let hinted_kind = resource.cursor_hint_kind(ctx.run_hints);
                let key = config.state_key().to_string();
                let stored = stored_resource_state
                    .get("incremental")
                    .and_then(|i| i.get(&key));
                Some(Arc::new(Mutex::new(IncrementalRun::bind(
                    config,
                    &resource.name,
                    hints.primary_key.as_deref(),
                    hinted_kind,
                    stored,
                )?)))
            }
            None => None,
        };
        let resource_state = Arc::new(Mutex::new(stored_resource_state.clone()));
        let source_state_cell = Arc::new(Mutex::new(strip_resources(state::source_state(
            ctx.state, ctx.source,
        ))));
        let context = ResourceContext {
            resource: resource.name.clone(),
            incremental: incremental.clone().map(|run| IncrementalView { run }),
            resource_state: resource_state.clone(),
            source_state: source_state_cell.clone(),
        };

        let mut run = ResourceExtract {
            name: resource.name.clone(),
            hints,
            spec,
            incremental: incremental.clone(),
            items: 0,
            kept: 0,
        };
        let mut reported = 0u64;
        for next in (resource.producer)(context)? {
            let flow = run.item(&mut out, next?)?;
            if run.items >= reported + 50_000 {
                reported = run.items;
                (ctx.progress)(ProgressEvent::Items {
                    resource: resource.name.clone(),
                    items: run.items,
                });
            }
            if flow == Flow::Stop {
                break;
            }
        }
        (ctx.progress)(ProgressEvent::Items {
            resource: resource.name.clone(),
            items: run.items,
        });
        total_items += run.kept;

        // The resource's state as it left it, with the incremental's new position.
        let mut new_resource_state = resource_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(run) = &incremental {
            let run = run.lock().unwrap_or_else(|p| p.into_inner());
            if !run.is_stateless() {
                let key = run.state_key().to_string();
                let previous = stored_resource_state
                    .get("incremental")
                    .and_then(|i| i.get(&key))
                    .cloned();
                let entry = state::object_entry(&mut new_resource_state, "incremental");
                entry[key.as_str()] = run.to_state(previous.as_ref());
            }
        }
        *state::resource_state(ctx.state, ctx.source, &resource.name) = new_resource_state;
        let new_source_state = source_state_cell
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        merge_source_state(state::source_state(ctx.state, ctx.source), new_source_state);
    }

    let (tables, sources, truncate_tables) = out.finish()?;
    let manifest = Manifest {
        load_id: package.load_id.clone(),
        pipeline: ctx.pipeline.to_string(),
        created_at: chrono::Utc::now().to_rfc3339(),
        sources,
        tables,
        truncate_tables,
        drop_tables: Vec::new(),
        state: None,
        state_row: false,
        stateful: false,
        base_state_version: None,
    };
    Ok(Extracted {
        manifest,
        items: total_items,
    })
}
/// The hints of `resource` resolved for this run, or an error naming what the destination does
/// not carry out and what to use instead.
fn table_spec(resource: &str, hints: &Hints, ctx: &ExtractContext<'_>) -> Result<TableSpec> {
    let disposition = hints.write_disposition.unwrap_or_default();
    let caps = ctx.capabilities;
    let mut spec = TableSpec {
        resource: resource.to_string(),
        write_disposition: disposition,
        merge_strategy: hints.merge_strategy,
        primary_key: hints.primary_key.clone().unwrap_or_default(),
        merge_key: hints.merge_key.clone().unwrap_or_default(),
        columns: hints.columns.clone(),
        max_table_nesting: hints.max_table_nesting,
        root_key: ctx.root_key,
        appends_merges: false,
        replace_strategy: None,
        scd2: None,
    };
    if disposition == WriteDisposition::Merge {
        let strategy = hints.merge_strategy.unwrap_or_default();
        if strategy == MergeStrategy::Scd2 && !caps.merges_with(strategy) {
            // Appended, an scd2 history would silently lose its meaning: refused.
            return Err(Error::Config(format!(
                "resource {resource}: merge strategy scd2 needs a destination that updates rows; the {} destination only adds files. Load it into duckdb or postgres, or use write_disposition = \"append\" to keep every load's rows",
                caps.kind
            )));
        }
        if caps.merge_strategies.is_empty() {
            tracing::warn!(
                resource,
                "the {} destination does not merge: the rows are appended, as dlt's filesystem destination does",
                caps.kind
            );
            // As dlt: the tables are normalized as appended ones (no `_dlt_root_id`, row
            // ids not derived from the key).
            spec.appends_merges = true;
        } else if !caps.merges_with(strategy) {
            let supported: Vec<&str> = caps.merge_strategies.iter().map(|s| s.name()).collect();
            return Err(Error::Config(format!(
                "resource {resource}: merge strategy {} is not supported by the {} destination; use {}",
                strategy.name(),
                caps.kind,
                supported.join(", ")
            )));
        }
        if strategy == MergeStrategy::Scd2 {
            let options = hints.scd2.clone().unwrap_or_default();
            options.validate(resource)?;
            spec.scd2 = Some(options);
        }
    }
    if disposition == WriteDisposition::Merge
        && spec.primary_key.is_empty()
        && spec.merge_key.is_empty()
        && matches!(
            hints.merge_strategy,
            Some(MergeStrategy::Upsert) | Some(MergeStrategy::InsertOnly)
        )
    {
        return Err(Error::Config(format!(
            "resource {resource}: merge strategy {:?} needs a primary_key",
            hints.merge_strategy.unwrap_or_default()
        )));
    }
    if disposition == WriteDisposition::Replace {
        let strategy = hints
            .replace_strategy
            .or(ctx.replace_strategy)
            .unwrap_or_default();
        if !caps.replace_strategies.contains(&strategy) {
            let supported: Vec<&str> = caps.replace_strategies.iter().map(|s| s.name()).collect();
            return Err(Error::Config(format!(
                "resource {resource}: replace strategy {} is not supported by the {} destination, which writes the new files first and deletes the old ones after; use {}",
                strategy.name(),
                caps.kind,
                supported.join(", ")
            )));
        }
        spec.replace_strategy = Some(strategy);
    }
    Ok(spec)
}

/// A table of a `replace` resource is emptied before the load, even when this run brings no rows
/// for some of its child tables.
fn replace_truncates(
    truncate_tables: &mut Vec<String>,
    disposition: WriteDisposition,
    table: String,
) {
    if disposition == WriteDisposition::Replace && !truncate_tables.contains(&table) {
        truncate_tables.push(table);
    }
}

/// The source state without its `resources` section (which resources see separately).
fn strip_resources(source_state: &Value) -> Value {
    let mut copy = source_state.clone();
    if let Value::Object(map) = &mut copy {
        map.remove("resources");
    }
    copy
}

/// Puts the source-scoped keys a resource may have changed back, keeping `resources`.
fn merge_source_state(target: &mut Value, changed: Value) {
    let resources = target.get("resources").cloned();
    *target = changed;
    if let (Value::Object(map), Some(resources)) = (target, resources) {
        map.insert("resources".into(), resources);
    }
}
