//! Golden tests: each scenario under `tests/dlt_fixtures/scenarios` was run through real dlt
//! 1.31.0 (see `tests/dlt_fixtures/generate.py`); highwater runs the same inputs with the same
//! hints and must produce the same tables, columns, types and rows (ids compared by structure),
//! on every destination: PostgreSQL's types are read back under DuckDB's names.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use highwater::{
    Bound, ColumnHint, DataType, Incremental, Item, LastValueFunc, MergeStrategy, OnCursorMissing,
    Resource, RowOrder, SortOrder, Source, TableName, WriteDisposition,
};
use serde_json::Value;

use common::destinations::{Kind, TestDestination};
use common::{canonical_trees, expected_tables};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dlt_fixtures/scenarios")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
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
enum Feed {
    /// Parsed JSON values, as a library user passes them.
    Values,
    /// JSON Lines text in blocks of a few lines, as the command's file source reads it. With
    /// `row_order`, the run stops after the line that left the range (as dlt does for a resource
    /// yielding rows one by one), so scenarios with `row_order` go in as values.
    Lines,
}

/// The items of `files` as `feed` sends them. Values go as one page, as `generate.py` yields
/// them to dlt: with `row_order`, the run stops after the page that left the range.
fn items_for(dir: &Path, files: &[String], feed: Feed) -> Vec<Item> {
    let mut items = Vec::new();
    let mut values = Vec::new();
    for file in files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        match feed {
            Feed::Values => values.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
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

fn resource_for(dir: &Path, run: &Value, feed: Feed) -> Resource {
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

fn run_scenario(name: &str, kind: Kind) {
    run_scenario_in(&scenarios_dir().join(name), name, Feed::Values, kind);
}

fn run_scenario_in(dir: &Path, name: &str, feed: Feed, kind: Kind) {
    let dir = dir.to_path_buf();
    let scenario = read_json(&dir.join("scenario.json"));
    // dlt's own result on this destination when one was recorded (PostgreSQL shortens long
    // names, the filesystem appends merges), else its DuckDB result, which every destination
    // must reproduce. `huge_int` has no filesystem result: dlt's Parquet writer refuses integers
    // over 64 bits at extract, where highwater keeps them as dlt does on DuckDB.
    let recorded = dir.join(match kind {
        Kind::DuckDb => "expected.json",
        Kind::Postgres => "expected.postgres.json",
        Kind::Filesystem | Kind::S3 => "expected.filesystem.json",
    });
    let lake_fallback = matches!(kind, Kind::Filesystem | Kind::S3) && !recorded.is_file();
    let expected = read_json(&if recorded.is_file() {
        recorded
    } else {
        dir.join("expected.json")
    });
    let tmp = tempfile::tempdir().unwrap();
    let destination = TestDestination::new(kind, tmp.path());
    let pipeline_name = scenario["pipeline"].as_str().unwrap();
    let dataset = scenario["dataset"].as_str().unwrap();
    let pipeline = destination.pipeline_with(tmp.path(), pipeline_name, dataset);
    let expected_loads = expected["run_load_ids"].as_array().unwrap();
    for (i, run) in scenario["runs"].as_array().unwrap().iter().enumerate() {
        let resource = resource_for(&dir, run, feed);
        let source = Source::new(pipeline_name, vec![resource])
            .root_key(run["root_key"].as_bool().unwrap_or(false));
        let result = pipeline.run(source);
        match (&expected_loads[i], result) {
            (Value::Object(err), Ok(info)) => panic!(
                "{name} run {i}: dlt failed with {:?} but highwater loaded {:?}",
                err.get("error"),
                info
            ),
            (Value::Object(_), Err(_)) => {}
            (n, Ok(info)) => assert_eq!(
                info.load_ids.len() as u64,
                n.as_u64().unwrap(),
                "{name} run {i}: number of loads"
            ),
            (_, Err(e)) => panic!("{name} run {i} failed: {e}"),
        }
    }
    let actual = destination.dump_dataset(dataset);
    let mut wanted = expected_tables(&expected);
    if lake_fallback {
        // A Parquet reader reports every column nullable, whatever the file says.
        for table in wanted.values_mut() {
            for column in &mut table.columns {
                column.2 = true;
            }
        }
    }
    let actual_names: Vec<&String> = actual.keys().collect();
    let wanted_names: Vec<&String> = wanted.keys().collect();
    assert_eq!(actual_names, wanted_names, "{name}: tables");
    for (table, want) in &wanted {
        let got = &actual[table];
        assert_eq!(got.columns, want.columns, "{name}: columns of {table}");
        assert_eq!(
            got.rows.len(),
            want.rows.len(),
            "{name}: row count of {table}"
        );
    }
    let got_trees = canonical_trees(&actual);
    let want_trees = canonical_trees(&wanted);
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

/// Each scenario once per destination: `duckdb::nested_append`, `postgres::nested_append`, …
macro_rules! golden {
    ($($name:ident),* $(,)?) => {
        golden!(@kind duckdb, DuckDb, $($name),*);
        golden!(@kind postgres, Postgres, $($name),*);
        golden!(@kind filesystem, Filesystem, $($name),*);
        golden!(@kind s3, S3, $($name),*);
    };
    (@kind $module:ident, $kind:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::run_scenario(stringify!($name), super::Kind::$kind);
                }
            )*
        }
    };
}

golden!(
    nested_append,
    merge_children,
    merge_compound_key,
    merge_key_only,
    merge_no_key,
    replace,
    awkward_keys,
    variants,
    huge_int,
    schema_evolution,
    dynamic_tables,
    max_nesting,
    hard_delete_dedup_sort,
    dedup_sort,
    incremental_merge,
    incremental_append_int,
    root_key,
    list_in_list_nesting,
    sticky_max_nesting,
    text_to_timestamp,
    user_row_ids,
    incremental_lag_min,
);

#[test]
fn every_scenario_has_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        22,
        "a new scenario needs a line in golden!(...): {names:?}"
    );
}

/// Every scenario under `tests/dlt_fixtures/random` (written by `random_scenarios.py`, expected
/// tables from real dlt) loads to the same tables as dlt.
fn random_scenarios_match_dlt(kind: Kind) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dlt_fixtures/random");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 52, "random scenarios missing in {root:?}");
    // Every other scenario goes in as JSON Lines text, the command's path.
    for (i, dir) in dirs.iter().enumerate() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if kind == Kind::Postgres && WITHOUT_POSTGRES_RESULT.contains(&name.as_str()) {
            // dlt 1.31.0 fails on PostgreSQL here (its UNIQUE `_dlt_id` and an insert-only key
            // repeated in a load), and its DuckDB result holds names over PostgreSQL's 63
            // characters: there is no dlt result to compare with.
            assert!(!dir.join("expected.postgres.json").exists(), "{name}");
            continue;
        }
        let scenario = read_json(&dir.join("scenario.json"));
        let row_order = scenario["runs"].as_array().unwrap().iter().any(|run| {
            run["incremental"]
                .get("row_order")
                .is_some_and(|o| !o.is_null())
        });
        let feed = if i % 2 == 0 || row_order {
            Feed::Values
        } else {
            Feed::Lines
        };
        run_scenario_in(dir, &name, feed, kind);
    }
}

/// Random scenarios for which dlt gives no PostgreSQL result (see `random_scenarios_match_dlt`).
const WITHOUT_POSTGRES_RESULT: [&str; 1] = ["random_1033"];

#[test]
fn random_scenarios_match_dlt_on_duckdb() {
    random_scenarios_match_dlt(Kind::DuckDb);
}

#[test]
fn random_scenarios_match_dlt_on_postgres() {
    random_scenarios_match_dlt(Kind::Postgres);
}

#[test]
fn random_scenarios_match_dlt_on_filesystem() {
    random_scenarios_match_dlt(Kind::Filesystem);
}
