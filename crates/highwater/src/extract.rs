//! The extract stage: run each resource, filter by its incremental, dispatch items to tables,
//! and write them with the pending state into a new load package.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::incremental::{IncrementalRun, IncrementalView, Verdict};
use crate::package::{
    ArrowItemsWriter, ExtractedTable, ItemsFormat, ItemsWriter, Manifest, Package, TableSpec,
};
use crate::pipeline::ProgressEvent;
use crate::resource::{Hints, Item, Resource, ResourceContext, TableName};
use crate::schema::WriteDisposition;
use crate::state;

/// Where an item came from: file and 1-based line.
type Location = (Arc<str>, u64);

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
}

/// The outcome of extracting into a package.
pub(crate) struct Extracted {
    pub manifest: Manifest,
    pub items: u64,
}

struct TableOut {
    writer: ItemsWriter,
    index: usize,
}

/// Runs `resources` and writes their items into `package` (in `new/`).
pub(crate) fn extract(
    package: &Package,
    resources: Vec<Resource>,
    ctx: ExtractContext<'_>,
) -> Result<Extracted> {
    let dir = package.dir();
    crate::package::create_dir_all(&dir.join("items"))?;
    let mut tables: Vec<ExtractedTable> = Vec::new();
    let mut outs: HashMap<String, TableOut> = HashMap::new();
    let mut arrow_outs: HashMap<String, (ArrowItemsWriter, usize)> = HashMap::new();
    let mut sources: Vec<String> = Vec::new();
    let mut source_index: HashMap<Arc<str>, usize> = HashMap::new();
    let mut truncate_tables: Vec<String> = Vec::new();
    let mut total_items = 0u64;

    for mut resource in resources {
        let hints = resource.hints.overridden_by(ctx.run_hints);
        let disposition = hints.write_disposition.unwrap_or_default();
        let spec_base = TableSpec {
            resource: resource.name.clone(),
            write_disposition: disposition,
            merge_strategy: hints.merge_strategy,
            primary_key: hints.primary_key.clone().unwrap_or_default(),
            merge_key: hints.merge_key.clone().unwrap_or_default(),
            columns: hints.columns.clone(),
            max_table_nesting: hints.max_table_nesting,
            root_key: ctx.root_key,
        };
        if disposition == WriteDisposition::Merge
            && hints.merge_strategy == Some(crate::schema::MergeStrategy::Scd2)
        {
            return Err(Error::Config(format!(
                "resource {}: merge strategy scd2 is not supported yet; use delete-insert, upsert or insert-only",
                resource.name
            )));
        }
        if disposition == WriteDisposition::Merge
            && spec_base.primary_key.is_empty()
            && spec_base.merge_key.is_empty()
            && matches!(
                hints.merge_strategy,
                Some(crate::schema::MergeStrategy::Upsert)
                    | Some(crate::schema::MergeStrategy::InsertOnly)
            )
        {
            return Err(Error::Config(format!(
                "resource {}: merge strategy {:?} needs a primary_key",
                resource.name,
                hints.merge_strategy.unwrap_or_default()
            )));
        }
        // Replace (and a full refresh) starts the resource's state afresh, as dlt does.
        if disposition == WriteDisposition::Replace {
            if let Some(Value::Object(resources)) =
                state::source_state(ctx.state, ctx.source).get_mut("resources")
            {
                resources.remove(&resource.name);
            }
            if let Some(TableName::Static(name)) = &hints.table_name {
                truncate_tables.push((ctx.normalize_table)(name));
            } else if hints.table_name.is_none() {
                truncate_tables.push((ctx.normalize_table)(&resource.name));
            }
            // As dlt: every root table the resource filled before is emptied too, also those
            // this run brings no rows for (table names taken from the items, a renamed table).
            for table in ctx
                .resource_tables
                .get(&resource.name)
                .into_iter()
                .flatten()
            {
                replace_truncates(&mut truncate_tables, disposition, table.clone());
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

        let mut items = 0u64;
        let mut kept = 0u64;
        let mut reported = 0u64;
        let iter = (resource.producer)(context)?;
        'pull: for next in iter {
            let values: Vec<(Value, Option<Location>)> = match next? {
                Item::Arrow(batch) => {
                    items += batch.num_rows() as u64;
                    let batch = match &incremental {
                        Some(run) => run
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .filter_batch(&batch)?,
                        None => batch,
                    };
                    let raw_table = match &hints.table_name {
                        None => resource.name.clone(),
                        Some(TableName::Static(name)) => name.clone(),
                        Some(TableName::Dynamic(_)) => {
                            return Err(Error::Config(format!(
                                "resource {}: Arrow items need a fixed table name, not a function of the item",
                                resource.name
                            )))
                        }
                    };
                    if batch.num_rows() > 0 {
                        let out = match arrow_outs.get_mut(&raw_table) {
                            Some(out) => out,
                            None => {
                                let index = tables.len();
                                let file = format!("{index}.parquet");
                                tables.push(ExtractedTable {
                                    raw_name: raw_table.clone(),
                                    file: file.clone(),
                                    format: ItemsFormat::Parquet,
                                    items: 0,
                                    spec: spec_base.clone(),
                                });
                                replace_truncates(
                                    &mut truncate_tables,
                                    disposition,
                                    (ctx.normalize_table)(&raw_table),
                                );
                                let path = dir.join("items").join(&file);
                                let writer = ArrowItemsWriter::create(&path, batch.schema())?;
                                arrow_outs
                                    .entry(raw_table.clone())
                                    .or_insert((writer, index))
                            }
                        };
                        out.0.write(&batch)?;
                        tables[out.1].items += batch.num_rows() as u64;
                        kept += batch.num_rows() as u64;
                    }
                    Vec::new()
                }
                Item::RawJson { bytes, file, line } => {
                    let dynamic = matches!(hints.table_name, Some(TableName::Dynamic(_)));
                    // Whether the row is written as it came (its text untouched, parsed once by
                    // normalize): always without an incremental, and with one when its cursor and
                    // dedup key could be read from the text alone.
                    let mut write_as_is = incremental.is_none() && !dynamic;
                    if let Some(run) = &incremental {
                        let mut run = run.lock().unwrap_or_else(|p| p.into_inner());
                        let probe = if run.prefilter(&bytes) {
                            // Only the cursor was read: rows already loaded cost a scan.
                            None
                        } else if dynamic {
                            Some(None)
                        } else {
                            Some(run.probe_row(&bytes))
                        };
                        match probe {
                            None => {
                                items += 1;
                                if run.should_stop() {
                                    break 'pull;
                                }
                                continue 'pull;
                            }
                            Some(Some(fields)) => {
                                items += 1;
                                let verdict = run.filter(&fields, &format!("{file}:{line}: "))?;
                                if verdict == Verdict::Drop {
                                    if run.should_stop() {
                                        break 'pull;
                                    }
                                    continue 'pull;
                                }
                                write_as_is = true;
                            }
                            Some(None) => {}
                        }
                    }
                    if write_as_is {
                        let raw_table = match &hints.table_name {
                            Some(TableName::Static(name)) => name.clone(),
                            _ => resource.name.clone(),
                        };
                        if incremental.is_none() {
                            items += 1;
                        }
                        if open_jsonl_table(&mut outs, &mut tables, &dir, &raw_table, &spec_base)? {
                            replace_truncates(
                                &mut truncate_tables,
                                disposition,
                                (ctx.normalize_table)(&raw_table),
                            );
                        }
                        let idx = source_index_of(&mut sources, &mut source_index, &file);
                        if let Some(out) = outs.get_mut(&raw_table) {
                            out.writer.write_raw(&bytes, Some((idx, line)))?;
                            tables[out.index].items += 1;
                        }
                        kept += 1;
                        let stop = incremental.as_ref().is_some_and(|run| {
                            run.lock().unwrap_or_else(|p| p.into_inner()).should_stop()
                        });
                        if stop {
                            break 'pull;
                        }
                        Vec::new()
                    } else {
                        let value =
                            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidJson {
                                location: format!("{file}:{line}"),
                                message: e.to_string(),
                            })?;
                        vec![(value, Some((file, line)))]
                    }
                }
                Item::Json(value) => vec![(value, None)],
                Item::Page(values) => values.into_iter().map(|v| (v, None)).collect(),
                Item::Located { value, file, line } => vec![(value, Some((file, line)))],
            };
            for (value, location) in values {
                items += 1;
                let location_text = match &location {
                    Some((file, line)) => format!("{file}:{line}: "),
                    None => String::new(),
                };
                if let Some(run) = &incremental {
                    let mut run = run.lock().unwrap_or_else(|p| p.into_inner());
                    if run.filter(&value, &location_text)? == Verdict::Drop {
                        continue;
                    }
                }
                let raw_table = match &hints.table_name {
                    None => resource.name.clone(),
                    Some(TableName::Static(name)) => name.clone(),
                    Some(TableName::Dynamic(f)) => f(&value).map_err(|e| match e {
                        Error::Config(message) => Error::Resource {
                            resource: resource.name.clone(),
                            message: format!("{location_text}{message}"),
                        },
                        other => other,
                    })?,
                };
                if open_jsonl_table(&mut outs, &mut tables, &dir, &raw_table, &spec_base)? {
                    replace_truncates(
                        &mut truncate_tables,
                        disposition,
                        (ctx.normalize_table)(&raw_table),
                    );
                }
                let loc = location.map(|(file, line)| {
                    (
                        source_index_of(&mut sources, &mut source_index, &file),
                        line,
                    )
                });
                let Some(out) = outs.get_mut(&raw_table) else {
                    continue;
                };
                out.writer.write(&value, loc)?;
                tables[out.index].items += 1;
                kept += 1;
            }
            if items >= reported + 50_000 {
                reported = items;
                (ctx.progress)(ProgressEvent::Items {
                    resource: resource.name.clone(),
                    items,
                });
            }
            if let Some(run) = &incremental {
                if run.lock().unwrap_or_else(|p| p.into_inner()).should_stop() {
                    break 'pull;
                }
            }
        }
        (ctx.progress)(ProgressEvent::Items {
            resource: resource.name.clone(),
            items,
        });
        total_items += kept;

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

    for (_, out) in outs {
        out.writer.finish()?;
    }
    for (_, (writer, _)) in arrow_outs {
        writer.finish()?;
    }
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
    };
    Ok(Extracted {
        manifest,
        items: total_items,
    })
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

/// Starts the items file of a JSON table unless it is open already; returns whether it is new.
fn open_jsonl_table(
    outs: &mut HashMap<String, TableOut>,
    tables: &mut Vec<ExtractedTable>,
    dir: &std::path::Path,
    raw_table: &str,
    spec: &TableSpec,
) -> Result<bool> {
    if outs.contains_key(raw_table) {
        return Ok(false);
    }
    let index = tables.len();
    let file = format!("{index}.jsonl");
    tables.push(ExtractedTable {
        raw_name: raw_table.to_string(),
        file: file.clone(),
        format: ItemsFormat::Jsonl,
        items: 0,
        spec: spec.clone(),
    });
    let writer = ItemsWriter::create(&dir.join("items").join(&file))?;
    outs.insert(raw_table.to_string(), TableOut { writer, index });
    Ok(true)
}

/// The index of `file` in the manifest's list of input files (added when new).
fn source_index_of(
    sources: &mut Vec<String>,
    index: &mut HashMap<Arc<str>, usize>,
    file: &Arc<str>,
) -> usize {
    if let Some(&i) = index.get(file) {
        return i;
    }
    sources.push(file.to_string());
    index.insert(file.clone(), sources.len() - 1);
    sources.len() - 1
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
