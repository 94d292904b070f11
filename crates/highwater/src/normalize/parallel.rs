//! Normalizing a large items file on both cores without changing the result.
//!
//! The main normalizer takes the first tenth of the file (a fiftieth for a table loaded before),
//! which settles the schema. The rest is split in two byte ranges (segments), each normalized by
//! a worker on a copy of the schema that never changes it: an item that would need a new column,
//! table or variant stops the worker there. A worker that finishes early takes the second half of
//! what is left of the other's segment. The main normalizer then goes on from each stop, in
//! order: it takes the item that stopped the worker (changing the schema) and a short head, and
//! the rest of the segment, when it is at least a sixteenth of the file, goes to two new workers
//! on the new schema. So columns appear in the schema in the order a single pass would add them,
//! and files are listed in item order.

use std::path::Path;
use std::sync::Mutex;

use super::Node;
use super::Normalizer;
use crate::error::Result;
use crate::package::TableFile;
use crate::package::{next_line_start, read_item_lines, TableSpec};

/// Items files smaller than this are normalized in one pass (`HIGHWATER_PARALLEL_MIN_ITEMS`).
const PARALLEL_MIN_ITEMS: u64 = 50_000;

fn parallel_min_items() -> u64 {
    std::env::var("HIGHWATER_PARALLEL_MIN_ITEMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(PARALLEL_MIN_ITEMS)
}

/// Less work than this many bytes is not split between workers: neither the tail of a segment
/// an idle worker could take, nor the rest of a segment after a worker stopped.
const MIN_SPLIT_BYTES: u64 = 4 << 20;

/// How many times the rest after a stop is split again before it goes sequentially.
const MAX_ROUNDS: u32 = 4;

/// A byte range of the items file, normalized by one worker at a time. A worker that runs out
/// of work takes the second half of what is left of the busiest segment, so both cores stay busy
/// to the end even when one runs slower.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u64,
    /// Where the segment ends; lowered when another worker takes its tail.
    end: u64,
    /// Offset of the item being normalized (items before it are done).
    cursor: u64,
    /// No worker will take more from it: finished, or stopped for a schema change.
    closed: bool,
}

/// `HIGHWATER_PARALLEL_MIN_SPLIT_BYTES`, else [`MIN_SPLIT_BYTES`]; tests set it to 1 so that
/// small files take every parallel path too.
fn min_split_bytes() -> u64 {
    std::env::var("HIGHWATER_PARALLEL_MIN_SPLIT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MIN_SPLIT_BYTES)
}

/// What a worker did with one segment: its files and, if it stopped early, where.
struct SegmentResult {
    /// The segment's index, which names its files.
    index: usize,
    start: u64,
    end: u64,
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
    let (head_end, middle) = split_points(path, 0, len, if known { len / 50 } else { len / 10 })?;
    let plan = Plan {
        start: 0,
        end: len,
        head_end,
        middle,
        min_split: min_split_bytes(),
        // At most about sixteen rests are split again, so a file whose schema keeps changing
        // does not end up as hundreds of small files.
        min_rest: min_split_bytes().saturating_mul(2).max(len / 16),
        round: 0,
        names: "w".into(),
    };
    normalize_in_parallel(normalizer, root, spec, path, sources, plan, files, on_item)
}

/// How a byte range is normalized: its head, the two workers' segments, and when to split.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Start of the range (a line start).
    pub start: u64,
    /// End of the range.
    pub end: u64,
    /// End of the head, normalized first by the main normalizer (a line start).
    pub head_end: u64,
    /// Where the second worker starts (a line start).
    pub middle: u64,
    /// The least work split between workers (see [`MIN_SPLIT_BYTES`]).
    pub min_split: u64,
    /// The least rest after a stop that is split between new workers.
    pub min_rest: u64,
    /// How many stops led to this range.
    pub round: u32,
    /// Start of the workers' file names (`w`, then one more step for each stop), so that no
    /// two segments share a file.
    pub names: String,
}

/// The head `[start, head_end)` on `normalizer`, then two workers on `[head_end, middle)` and
/// `[middle, end)`. What is left of a segment after its worker stopped is normalized the same
/// way, after a head that takes the item the worker left (up to [`MAX_ROUNDS`] times), so one
/// new column early in a segment does not leave the rest of it to one core.
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_in_parallel(
    normalizer: &mut Normalizer<'_>,
    root: &str,
    spec: &TableSpec,
    path: &Path,
    sources: &[String],
    plan: Plan,
    files: &mut Vec<TableFile>,
    on_item: &mut dyn FnMut(),
) -> Result<()> {
    let Plan {
        start,
        end,
        head_end,
        middle,
        min_split,
        min_rest,
        round,
        names,
    } = plan;
    sequential(normalizer, root, path, sources, start, head_end, on_item)?;
    files.extend(normalizer.end_segment()?);

    let base = normalizer.schema.clone();
    let (naming, load_id, dir) = (
        normalizer.naming,
        normalizer.load_id.clone(),
        normalizer.dir.clone(),
    );
    let segments = Mutex::new(
        [(head_end, middle), (middle, end)]
            .into_iter()
            .filter(|(start, end)| start < end)
            .map(|(start, end)| Segment {
                start,
                end,
                cursor: start,
                closed: false,
            })
            .collect::<Vec<_>>(),
    );
    let first_segments = lock(&segments).len();
    let worker_results: Vec<Result<Vec<SegmentResult>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..first_segments)
            .map(|first| {
                let mut schema = base.clone();
                let (load_id, dir, segments, names) =
                    (load_id.clone(), dir.clone(), &segments, names.as_str());
                scope.spawn(move || -> Result<Vec<SegmentResult>> {
                    crate::json::with_deep_stack(|| {
                        let mut worker =
                            Normalizer::frozen_worker(&mut schema, naming, &load_id, &dir, "w");
                        let root = worker.prepare_root_frozen(root, spec)?;
                        let mut done = Vec::new();
                        let mut next = Some(first);
                        while let Some(index) = next {
                            done.push(normalize_segment(
                                &mut worker,
                                &root,
                                path,
                                sources,
                                segments,
                                index,
                                names,
                            )?);
                            next = take_tail(segments, path, min_split)?;
                        }
                        Ok(done)
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
    let mut results = Vec::new();
    for worker in worker_results {
        results.extend(worker?);
    }
    results.sort_by_key(|r| r.start);
    for result in results {
        tracing::debug!(
            items = result.items,
            stopped_at = ?result.stopped_at,
            range = ?(result.start, result.end),
            "normalize segment finished"
        );
        (0..result.items).for_each(|_| on_item());
        files.extend(result.files);
        if let Some(offset) = result.stopped_at {
            let rest = (offset, result.end);
            if round >= MAX_ROUNDS || rest.1 - rest.0 < min_rest.max(2) {
                sequential(normalizer, root, path, sources, rest.0, rest.1, on_item)?;
                files.extend(normalizer.end_segment()?);
                continue;
            }
            // The head takes at least the item that stopped the worker.
            let (head_end, middle) =
                split_points(path, rest.0, rest.1, 1 + (rest.1 - rest.0) / 50)?;
            let plan = Plan {
                start: rest.0,
                end: rest.1,
                head_end,
                middle,
                min_split,
                min_rest,
                round: round + 1,
                names: format!("{names}{}s", result.index),
            };
            normalize_in_parallel(normalizer, root, spec, path, sources, plan, files, on_item)?;
        }
    }
    Ok(())
}

/// The line starts ending a head of about `head_bytes` from `start`, and halving the rest up to
/// `end`.
fn split_points(path: &Path, start: u64, end: u64, head_bytes: u64) -> Result<(u64, u64)> {
    let head_end = next_line_start(path, start + head_bytes)?.min(end);
    let middle = next_line_start(path, head_end + (end - head_end) / 2)?.min(end);
    Ok((head_end, middle))
}

/// Normalizes segment `index` until its (possibly lowered) end, or until an item would change
/// the frozen schema.
fn normalize_segment(
    worker: &mut Normalizer<'_>,
    root: &str,
    path: &Path,
    sources: &[String],
    segments: &Mutex<Vec<Segment>>,
    index: usize,
    names: &str,
) -> Result<SegmentResult> {
    let start = lock(segments)[index].start;
    worker.set_file_prefix(&format!("{names}{index}."));
    let mut stopped_at = None;
    let mut items = 0;
    for line in read_item_lines(path, sources, start, u64::MAX)? {
        let line = line?;
        {
            let mut segments = lock(segments);
            let segment = &mut segments[index];
            if line.offset >= segment.end {
                break;
            }
            segment.cursor = line.offset;
        }
        let item = Node::parse(line.json()).map_err(|e| line.parse_error(e))?;
        if !worker.push_node(root, &item, &line.location())? {
            stopped_at = Some(line.offset);
            break;
        }
        items += 1;
    }
    let end = {
        let mut segments = lock(segments);
        segments[index].closed = true;
        segments[index].end
    };
    Ok(SegmentResult {
        index,
        start,
        end,
        files: worker.end_segment()?,
        stopped_at,
        items,
    })
}

/// Splits the open segment with the most left to do and returns the index of its second half,
/// or `None` when nothing is worth splitting.
fn take_tail(segments: &Mutex<Vec<Segment>>, path: &Path, min_split: u64) -> Result<Option<usize>> {
    let mut segments = lock(segments);
    let Some(victim) = segments
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.closed)
        .max_by_key(|(_, s)| s.end - s.cursor)
        .map(|(i, _)| i)
    else {
        return Ok(None);
    };
    let Segment { cursor, end, .. } = segments[victim];
    if end - cursor < min_split.max(1) {
        return Ok(None);
    }
    // The owner checks the end under this lock before each item, so every item before the
    // split is its, and every item from the split on is the new segment's.
    let split = next_line_start(path, cursor + (end - cursor) / 2)?;
    if split <= cursor || split >= end {
        return Ok(None);
    }
    segments[victim].end = split;
    segments.push(Segment {
        start: split,
        end,
        cursor: split,
        closed: false,
    });
    Ok(Some(segments.len() - 1))
}

fn lock(segments: &Mutex<Vec<Segment>>) -> std::sync::MutexGuard<'_, Vec<Segment>> {
    segments.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: u64, end: u64) -> Segment {
        Segment {
            start,
            end,
            cursor: start,
            closed: false,
        }
    }

    #[test]
    fn the_tail_is_split_at_a_line_start_and_never_from_a_closed_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.jsonl");
        let lines: String = (0..100).map(|i| format!("\t{{\"id\": {i}}}\n")).collect();
        std::fs::write(&path, &lines).unwrap();
        let len = lines.len() as u64;

        let segments = Mutex::new(vec![segment(0, 40), segment(40, len)]);
        lock(&segments)[1].cursor = 60;
        let taken = take_tail(&segments, &path, 1).unwrap();
        assert_eq!(taken, Some(2));
        let s = lock(&segments).clone();
        let split = s[1].end;
        assert!(split > 60 && split < len, "{split}");
        assert_eq!(&lines.as_bytes()[split as usize - 1..split as usize], b"\n");
        assert_eq!((s[2].start, s[2].end, s[2].cursor), (split, len, split));
        assert_eq!(s[0].end, 40, "the smaller segment is left alone");

        // Too little left, or nothing open: nothing to take.
        assert_eq!(take_tail(&segments, &path, len).unwrap(), None);
        for s in lock(&segments).iter_mut() {
            s.closed = true;
        }
        assert_eq!(take_tail(&segments, &path, 1).unwrap(), None);
    }
}
