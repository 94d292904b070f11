//! Golden tests: each scenario under `tests/dlt_fixtures/scenarios` was run through real dlt
//! 1.31.0 (see `tests/dlt_fixtures/generate.py`); highwater runs the same inputs with the same
//! hints and must produce the same tables, columns, types and rows (ids compared by structure),
//! on every destination: PostgreSQL's types are read back under DuckDB's names.

mod common;

use std::path::{Path, PathBuf};

use highwater::Source;
use serde_json::Value;

use common::destinations::{Kind, TestDestination};
use common::expected_tables;
use common::scenario::{
    assert_row_ids_match, assert_system_rows_match, assert_tables_match, rank_times, read_json,
    resource_for, strings, Feed,
};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dlt_fixtures/scenarios")
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
    let mut wanted = expected_tables(&expected);
    if lake_fallback {
        // A Parquet reader reports every column nullable, whatever the file says.
        for table in wanted.values_mut() {
            for column in &mut table.columns {
                column.2 = true;
            }
        }
    }
    let mut actual = destination.dump_dataset(dataset);
    // Row ids that are hashes of the content (scd2) must be dlt's, byte for byte.
    if scenario["exact_row_ids"].as_bool() == Some(true) {
        assert_row_ids_match(name, &actual, &wanted);
    }
    // Times a load takes from its own clock (scd2 validity) are compared by their order.
    let rank_columns = strings(&scenario["rank_columns"]);
    rank_times(&mut actual, &rank_columns);
    rank_times(&mut wanted, &rank_columns);
    assert_tables_match(name, &actual, &wanted);
    assert_system_rows_match(name, &destination, dataset, &expected);
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
    deep_nesting,
);

/// scd2 scenarios: on the SQL destinations (the filesystem refuses scd2).
macro_rules! golden_sql {
    ($($name:ident),* $(,)?) => {
        golden!(@kind duckdb_scd2, DuckDb, $($name),*);
        golden!(@kind postgres_scd2, Postgres, $($name),*);
    };
}

golden_sql!(scd2_history, scd2_options, scd2_merge_key);

#[test]
fn every_scenario_has_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        26,
        "a new scenario needs a line in golden!(...) or golden_sql!(...): {names:?}"
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
