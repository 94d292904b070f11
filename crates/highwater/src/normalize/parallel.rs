//! Normalizing a large items file on both cores without changing the result.
//!
//! The main normalizer takes the first tenth of the file (a fiftieth for a table loaded before),
//! which settles the schema. The rest is
//! split in two byte ranges, each normalized by a worker on a copy of the schema that never
//! changes it: an item that would need a new column, table or variant stops the worker there.
//! The main normalizer then goes on from that item, in order, so columns appear in the schema in
//! the order a single pass would add them, and files are listed in item order.

use std::path::Path;

use super::Node;
use super::{Normalizer, TableFile};
use crate::error::Result;
use crate::package::{next_line_start, read_item_lines, TableSpec};

/// Items files smaller than this are normalized in one pass (`HIGHWATER_PARALLEL_MIN_ITEMS`).
const PARALLEL_MIN_ITEMS: u64 = 50_000;

fn parallel_min_items() -> u64 {
    std::env::var("HIGHWATER_PARALLEL_MIN_ITEMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(PARALLEL_MIN_ITEMS)
}

/// What a worker did: its files and, if it stopped early, the offset of the item it left.
struct WorkerResult {
    files: Vec<TableFile>,
    stopped_at: Option<u64>,
    items: u64,
}

/// Normalizes the JSON items file at `path` (root table `root`) into `normalizer`, appending the
/// files that are complete to `files` in item order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_items_file(
    normalizer: &mut Normalizer<'_>,
    root: &str,
    spec: &TableSpec,
    path: &Path,
    sources: &[String],
    items: u64,
    files: &mut Vec<TableFile>,
    on_item: &mut dyn FnMut(),
) -> Result<()> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if items < parallel_min_items() || len == 0 {
        return sequential(normalizer, root, path, sources, 0, u64::MAX, on_item);
    }
    // The head settles the schema the workers freeze. A table loaded before already has its
    // columns, so a short head is enough and both cores start sooner.
    let known = normalizer
        .schema
        .tables
        .get(root)
        .is_some_and(|t| t.columns.values().any(|c| !c.name.starts_with("_dlt")));
    let head_end = next_line_start(path, if known { len / 50 } else { len / 10 })?;
    let middle = next_line_start(path, head_end + (len - head_end) / 2)?;
    sequential(normalizer, root, path, sources, 0, head_end, on_item)?;
    files.extend(normalizer.end_segment()?);

    let base = normalizer.schema.clone();
    let (naming, load_id, dir) = (
        normalizer.naming,
        normalizer.load_id.clone(),
        normalizer.dir.clone(),
    );
    let ranges = [(head_end, middle, "w1"), (middle, len, "w2")];
    let results: Vec<Result<WorkerResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(start, end, name)| {
                let mut schema = base.clone();
                let (load_id, dir) = (load_id.clone(), dir.clone());
                scope.spawn(move || -> Result<WorkerResult> {
                    let mut worker =
                        Normalizer::frozen_worker(&mut schema, naming, &load_id, &dir, name);
                    let root = worker.prepare_root_frozen(root, spec)?;
                    let mut stopped_at = None;
                    let mut items = 0;
                    for line in read_item_lines(path, sources, start, end)? {
                        let line = line?;
                        let item = Node::parse(line.json()).map_err(|e| line.parse_error(e))?;
                        if !worker.push_node(&root, &item, &line.location())? {
                            stopped_at = Some(line.offset);
                            break;
                        }
                        items += 1;
                    }
                    Ok(WorkerResult {
                        files: worker.finish()?,
                        stopped_at,
                        items,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::error::Error::Config(
                        "a normalize worker panicked".into(),
                    ))
                })
            })
            .collect()
    });
    for (result, &(_, end, _)) in results.into_iter().zip(&ranges) {
        let result = result?;
        tracing::debug!(
            items = result.items,
            stopped_at = ?result.stopped_at,
            range_end = end,
            "normalize worker finished"
        );
        (0..result.items).for_each(|_| on_item());
        files.extend(result.files);
        if let Some(offset) = result.stopped_at {
            sequential(normalizer, root, path, sources, offset, end, on_item)?;
            files.extend(normalizer.end_segment()?);
        }
    }
    Ok(())
}

fn sequential(
    normalizer: &mut Normalizer<'_>,
    root: &str,
    path: &Path,
    sources: &[String],
    start: u64,
    end: u64,
    on_item: &mut dyn FnMut(),
) -> Result<()> {
    for line in read_item_lines(path, sources, start, end)? {
        let line = line?;
        let item = Node::parse(line.json()).map_err(|e| line.parse_error(e))?;
        normalizer.push_node(root, &item, &line.location())?;
        on_item();
    }
    Ok(())
}
