//! dlt's fixture scenarios as highwater resources (`tests/dlt_fixtures`): a run's files, hints
//! and incremental, and the comparison of highwater's tables with dlt's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use highwater::{
    Bound, ColumnHint, DataType, Incremental, Item, LastValueFunc, MergeStrategy, OnCursorMissing,
    Resource, RowOrder, Scd2Options, SortOrder, TableName, WriteDisposition,
};
use serde_json::Value;

use super::{canonical_trees, TableDump};

pub fn read_json(path: &Path) -> Value {
    // Fixtures hold JSON columns nested deeper than serde_json's default limit.
    highwater::json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// How a scenario's items reach the pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feed {
    /// Parsed JSON values, as a library user passes them.
    Values,
    /// JSON Lines text in blocks of a few lines, as the command's file source reads it. With
    /// `row_order`, the run stops after the line that left the range (as dlt does for a resource
    /// yielding rows one by one), so scenarios with `row_order` go in as values.
    Lines,
}

/// The items of `files` as `feed` sends them. Values go as one page, as `generate.py` yields
/// them to dlt: with `row_order`, the run stops after the page that left the range.
pub fn items_for(dir: &Path, files: &[String], feed: Feed) -> Vec<Item> {
    let mut items = Vec::new();
    let mut values = Vec::new();
    for file in files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        match feed {
            Feed::Values => values.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| highwater::json::from_slice::<Value>(l.as_bytes()).unwrap()),
            ),
            Feed::Lines => {
                let name: Arc<str> = Arc::from(path.display().to_string());
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                for (i, block) in lines.chunks(3).enumerate() {
                    items.push(Item::json_lines(
                        block.concat().into_bytes(),
                        name.clone(),
                        1 + 3 * i as u64,
                    ));
                }
            }
        }
    }
    if !values.is_empty() {
        items.push(Item::Page(values));
    }
    items
}

pub fn resource_for(dir: &Path, run: &Value, feed: Feed) -> Resource {
    let items = items_for(dir, &strings(&run["files"]), feed);
    let mut resource = Resource::new(run["resource"].as_str().unwrap(), move |_| {
        Ok(items.clone().into_iter().map(Ok))
    });
    let disposition =
        WriteDisposition::parse(run["write_disposition"].as_str().unwrap_or("append")).unwrap();
    resource = resource.write_disposition(disposition);
    let pk = strings(&run["primary_key"]);
    if !pk.is_empty() {
        resource = resource.primary_key(pk);
    }
    let mk = strings(&run["merge_key"]);
    if !mk.is_empty() {
        resource = resource.merge_key(mk);
    }
    if let Some(s) = run["merge_strategy"].as_str() {
        resource = resource.merge_strategy(MergeStrategy::parse(s).unwrap());
    }
    if run["merge_strategy"].as_str() == Some("scd2") {
        let names = strings(&run["validity_column_names"]);
        let text = |key: &str| run[key].as_str().map(str::to_string);
        resource = resource.scd2(Scd2Options {
            validity_column_names: (names.len() == 2).then(|| (names[0].clone(), names[1].clone())),
            active_record_timestamp: text("active_record_timestamp"),
            boundary_timestamp: text("boundary_timestamp"),
            row_version_column_name: text("row_version_column_name"),
        });
    }
    if let Some(t) = run["table_name"].as_str() {
        resource = match TableName::parse(t) {
            TableName::Static(name) => resource.table_name(name),
            TableName::Dynamic(f) => resource.table_name_fn(move |item| f(item)),
        };
    }
    if let Some(n) = run["max_table_nesting"].as_u64() {
        resource = resource.max_table_nesting(n as usize);
    }
    if let Some(columns) = run["columns"].as_object() {
        for (name, hint) in columns {
            resource = resource.column(
                name.clone(),
                ColumnHint {
                    data_type: hint["data_type"].as_str().and_then(DataType::parse),
                    nullable: hint["nullable"].as_bool(),
                    hard_delete: hint["hard_delete"].as_bool().unwrap_or(false),
                    dedup_sort: hint["dedup_sort"].as_str().map(|s| {
                        if s == "asc" {
                            SortOrder::Asc
                        } else {
                            SortOrder::Desc
                        }
                    }),
                    ..ColumnHint::default()
                },
            );
        }
    }
    if let Some(inc) = run["incremental"].as_object() {
        let mut incremental = Incremental::new(inc["cursor_path"].as_str().unwrap()).unwrap();
        if let Some(v) = inc.get("initial_value").filter(|v| !v.is_null()) {
            incremental = incremental.initial_value(v.clone());
        }
        if let Some(v) = inc.get("end_value").filter(|v| !v.is_null()) {
            incremental = incremental.end_value(v.clone());
        }
        if inc.get("last_value_func").and_then(Value::as_str) == Some("min") {
            incremental = incremental.last_value_func(LastValueFunc::Min);
        }
        if let Some(pk) = inc.get("primary_key").filter(|v| !v.is_null()) {
            incremental = incremental.primary_key(strings(pk));
        }
        if inc.get("range_start").and_then(Value::as_str) == Some("open") {
            incremental = incremental.range_start(Bound::Open);
        }
        if inc.get("range_end").and_then(Value::as_str) == Some("closed") {
            incremental = incremental.range_end(Bound::Closed);
        }
        match inc.get("on_cursor_value_missing").and_then(Value::as_str) {
            Some("include") => {
                incremental = incremental.on_cursor_value_missing(OnCursorMissing::Include)
            }
            Some("exclude") => {
                incremental = incremental.on_cursor_value_missing(OnCursorMissing::Exclude)
            }
            _ => {}
        }
        if let Some(lag) = inc.get("lag").and_then(Value::as_f64) {
            incremental = incremental.lag(lag);
        }
        match inc.get("row_order").and_then(Value::as_str) {
            Some("asc") => incremental = incremental.row_order(RowOrder::Asc),
            Some("desc") => incremental = incremental.row_order(RowOrder::Desc),
            _ => {}
        }
        resource = resource.incremental(incremental);
    }
    resource
}

/// Asserts that `dataset` holds as many `_dlt_loads` and `_dlt_pipeline_state` rows as dlt's
/// (`expected["loads"]`, `expected["state_rows"]`).
pub fn assert_system_rows_match(
    name: &str,
    destination: &super::destinations::TestDestination,
    dataset: &str,
    expected: &Value,
) {
    let ds = format!("\"{dataset}\"");
    assert_eq!(
        destination.count(&format!("SELECT count(*) FROM {ds}._dlt_loads")),
        expected["loads"].as_i64().unwrap(),
        "{name}: _dlt_loads rows"
    );
    assert_eq!(
        destination.count(&format!("SELECT count(*) FROM {ds}._dlt_pipeline_state")),
        expected["state_rows"].as_i64().unwrap(),
        "{name}: _dlt_pipeline_state rows"
    );
}

/// Asserts that `actual` (highwater's tables) equals `wanted` (dlt's): the same tables, columns
/// with types and nullability, and rows (ids compared by structure).
pub fn assert_tables_match(
    name: &str,
    actual: &BTreeMap<String, TableDump>,
    wanted: &BTreeMap<String, TableDump>,
) {
    let actual_names: Vec<&String> = actual.keys().collect();
    let wanted_names: Vec<&String> = wanted.keys().collect();
    assert_eq!(actual_names, wanted_names, "{name}: tables");
    for (table, want) in wanted {
        let got = &actual[table];
        assert_eq!(got.columns, want.columns, "{name}: columns of {table}");
        assert_eq!(
            got.rows.len(),
            want.rows.len(),
            "{name}: row count of {table}"
        );
    }
    let got_trees = canonical_trees(actual);
    let want_trees = canonical_trees(wanted);
    for (table, want) in &want_trees {
        let got = &got_trees[table];
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                g, w,
                "{name}: rows of {table} differ (left: highwater, right: dlt)"
            );
        }
        assert_eq!(got.len(), want.len(), "{name}: rows of {table}");
    }
}

/// Asserts that the `_dlt_id`s of every table are dlt's, byte for byte (where they are hashes of
/// the content, as scd2's row hash and the child ids derived from it).
pub fn assert_row_ids_match(
    name: &str,
    actual: &BTreeMap<String, TableDump>,
    wanted: &BTreeMap<String, TableDump>,
) {
    let ids = |dump: &TableDump| {
        let mut ids: Vec<String> = dump
            .rows
            .iter()
            .filter_map(|r| r.get("_dlt_id").and_then(Value::as_str).map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    for (table, want) in wanted {
        let got = actual.get(table).map(ids).unwrap_or_default();
        assert_eq!(got, ids(want), "{name}: _dlt_id of {table}");
    }
}

/// Replaces the values of `columns` by their rank among the distinct values of those columns in
/// the table (NULL stays NULL), so two runs at different times compare by the order of their
/// times and by which rows are open, as dlt's own scd2 tests compare them.
pub fn rank_times(tables: &mut BTreeMap<String, TableDump>, columns: &[String]) {
    for table in tables.values_mut() {
        let mut times: Vec<i64> = table
            .rows
            .iter()
            .flat_map(|r| {
                columns
                    .iter()
                    .filter_map(|c| r.get(c).and_then(Value::as_i64))
            })
            .collect();
        times.sort_unstable();
        times.dedup();
        for row in &mut table.rows {
            for column in columns {
                if let Some(t) = row.get(column).and_then(Value::as_i64) {
                    let rank = times.iter().position(|x| *x == t).unwrap_or(usize::MAX);
                    row.insert(column.clone(), Value::from(format!("#{rank}")));
                }
            }
        }
    }
}
