//! Taking over a dataset dlt created, and handing it back (`tests/dlt_fixtures/takeover.py`).
//!
//! Each scenario's first run was loaded by real dlt 1.31.0 and its whole destination recorded
//! (system tables included). The test recreates that destination, lets highwater load the second
//! run with no working directory of its own, and compares with dlt's own two-run result: the
//! same tables and rows, and the same incremental state as dlt's after its second run (dlt's
//! typed values and boundary hashes), in a state and schema dlt reads.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use highwater::schema::Schema;
use highwater::{Error, Source};
use serde_json::Value;

use common::destinations::{Kind, TestDestination};
use common::expected_tables;
use common::scenario::{
    assert_system_rows_match, assert_tables_match, read_json, resource_for, Feed,
};

fn takeover_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dlt_fixtures/takeover")
}

/// The fixture file of `kind`'s destination (`run1.duckdb.json`, `expected.duckdb.json`).
fn fixture(dir: &Path, what: &str, kind: Kind) -> Value {
    let suffix = match kind {
        Kind::DuckDb => "duckdb",
        Kind::Postgres => "postgres",
        Kind::Filesystem | Kind::S3 => "filesystem",
    };
    read_json(&dir.join(format!("{what}.{suffix}.json")))
}

/// The column definitions of a recorded table: name, type, NOT NULL and UNIQUE as dlt made them
/// (DuckDB's dumps record no `unique`).
fn column_defs(columns: &[Value]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            let not_null = if c["nullable"].as_bool().unwrap() {
                ""
            } else {
                " NOT NULL"
            };
            let unique = if c["unique"].as_bool() == Some(true) {
                " UNIQUE"
            } else {
                ""
            };
            format!(
                "\"{}\" {}{not_null}{unique}",
                c["name"].as_str().unwrap(),
                c["type"].as_str().unwrap()
            )
        })
        .collect()
}

/// Recreates dlt's run-1 destination of a scenario, as recorded.
fn recreate(destination: &TestDestination, run1: &Value) {
    let dataset = run1["dataset"].as_str().unwrap();
    match destination.kind {
        Kind::DuckDb => {
            let conn = common::open(destination.duckdb_path());
            conn.execute_batch(&format!("CREATE SCHEMA \"{dataset}\""))
                .unwrap();
            for (table, dump) in run1["tables"].as_object().unwrap() {
                let columns = dump["columns"].as_array().unwrap();
                let defs = column_defs(columns);
                conn.execute_batch(&format!(
                    "CREATE TABLE \"{dataset}\".\"{table}\" ({})",
                    defs.join(", ")
                ))
                .unwrap();
                let casts: Vec<String> = columns
                    .iter()
                    .map(|c| format!("CAST(? AS {})", c["type"].as_str().unwrap()))
                    .collect();
                let sql = format!(
                    "INSERT INTO \"{dataset}\".\"{table}\" VALUES ({})",
                    casts.join(", ")
                );
                for row in dump["rows"].as_array().unwrap() {
                    let params: Vec<Option<String>> =
                        row.as_array().unwrap().iter().map(param_text).collect();
                    conn.execute(&sql, ::duckdb::params_from_iter(params))
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
            }
        }
        Kind::Postgres => {
            let mut client = destination.pg();
            client
                .batch_execute(&format!("CREATE SCHEMA \"{dataset}\""))
                .unwrap();
            for (table, dump) in run1["tables"].as_object().unwrap() {
                let columns = dump["columns"].as_array().unwrap();
                let defs = column_defs(columns);
                client
                    .batch_execute(&format!(
                        "CREATE TABLE \"{dataset}\".\"{table}\" ({})",
                        defs.join(", ")
                    ))
                    .unwrap();
                let casts: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        format!("CAST(${}::text AS {})", i + 1, c["type"].as_str().unwrap())
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO \"{dataset}\".\"{table}\" VALUES ({})",
                    casts.join(", ")
                );
                for row in dump["rows"].as_array().unwrap() {
                    let params: Vec<Option<String>> =
                        row.as_array().unwrap().iter().map(param_text).collect();
                    let refs: Vec<&(dyn ::postgres::types::ToSql + Sync)> = params
                        .iter()
                        .map(|p| p as &(dyn ::postgres::types::ToSql + Sync))
                        .collect();
                    client
                        .execute(&sql, &refs)
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
            }
        }
        Kind::Filesystem => {
            use base64::Engine;
            for (path, content) in run1["files"].as_object().unwrap() {
                let path = destination.lake_path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(content.as_str().unwrap())
                    .unwrap();
                std::fs::write(path, bytes).unwrap();
            }
        }
        other => panic!("no recreated run-1 destination for {other:?}"),
    }
}

/// A recorded value as the text SQL casts to the column's type.
fn param_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Runs scenario `name`'s second run with highwater on dlt's run-1 destination and compares.
fn take_over(name: &str, kind: Kind, feed: Feed) {
    let dir = takeover_dir().join(name);
    let scenario = read_json(&dir.join("scenario.json"));
    let run1 = fixture(&dir, "run1", kind);
    let expected = fixture(&dir, "expected", kind);
    let tmp = tempfile::tempdir().unwrap();
    let destination = TestDestination::new(kind, tmp.path());
    recreate(&destination, &run1);

    let pipeline_name = scenario["pipeline"].as_str().unwrap();
    let dataset = scenario["dataset"].as_str().unwrap();
    let pipeline = destination.pipeline_with(tmp.path(), pipeline_name, dataset);
    assert!(
        !pipeline.working_dir().exists(),
        "the takeover starts without a working directory"
    );
    let run = &scenario["runs"][1];
    // The resource runs in the pipeline's default source, as a pipeline file's resources do.
    let info = pipeline
        .run(resource_for(&dir, run, feed))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        info.load_ids.len() as u64,
        expected["run_load_ids"][0].as_u64().unwrap(),
        "{name}: loads"
    );
    assert_tables_match(
        name,
        &destination.dump_dataset(dataset),
        &expected_tables(&expected),
    );
    assert_system_rows_match(name, &destination, dataset, &expected);
    let ds = format!("\"{dataset}\"");

    // The state: dlt's incremental state after its own second run, in dlt's typed JSON.
    let state = pipeline.local_state().unwrap().unwrap();
    let want = &expected["state"];
    assert_eq!(
        state["_state_version"], want["_state_version"],
        "{name}: state version"
    );
    let resource = run["resource"].as_str().unwrap();
    let cursor = run["incremental"]["cursor_path"].as_str().unwrap();
    // dlt names the source state after the source (the pipeline for a lone resource).
    let source_name = scenario["source_name"].as_str().unwrap_or(pipeline_name);
    assert_eq!(
        want["default_schema_name"].as_str(),
        Some(source_name),
        "{name}: dlt's schema is named after its source"
    );
    let path = |s: &Value| -> Value {
        s["sources"][source_name]["resources"][resource]["incremental"][cursor].clone()
    };
    let (got, want_inc) = (path(&state), path(want));
    for key in ["initial_value", "last_value", "start_value"] {
        assert_eq!(got[key], want_inc[key], "{name}: incremental {key}");
    }
    assert_eq!(
        pipeline.resource_state(resource).unwrap().unwrap()["incremental"][cursor],
        got,
        "{name}: the resource's state as `highwater state --resource` shows it"
    );
    let got_hashes = hashes(&got);
    let want_hashes = hashes(&want_inc);
    assert!(
        want_hashes.is_subset(&got_hashes) && got_hashes.len() <= 2 * want_hashes.len(),
        "{name}: boundary hashes {got_hashes:?}, dlt's {want_hashes:?}"
    );
    // Everything else of the source's state (what a resource keeps itself) as dlt has it.
    let without_hashes = |s: &Value| -> Value {
        let mut sources = s["sources"].clone();
        sources[source_name]["resources"][resource]["incremental"][cursor]
            .as_object_mut()
            .unwrap()
            .remove("unique_hashes");
        sources
    };
    assert_eq!(
        without_hashes(&state),
        without_hashes(want),
        "{name}: source state"
    );
    // What highwater committed is what dlt reads back: the newest state row decodes to it.
    let committed = destination.rows(&format!(
        "SELECT CAST(s.state AS VARCHAR) FROM {ds}._dlt_pipeline_state AS s JOIN {ds}._dlt_loads AS l ON l.load_id = s._dlt_load_id ORDER BY s._dlt_load_id DESC LIMIT 1"
    ));
    let committed =
        highwater::state::decode_from_destination(committed[0][0].as_str().unwrap()).unwrap();
    assert_eq!(path(&committed), got, "{name}: committed state");
    assert_eq!(
        committed["_version_hash"].as_str(),
        Some(highwater::state::version_hash(&committed).as_str()),
        "{name}: the committed state carries dlt's hash of itself"
    );

    // Every load and schema version is recorded under dlt's schema name (its source's), where
    // dlt's next run looks for them.
    let schema_name = expected["schema"]["name"].as_str().unwrap();
    for table in ["_dlt_loads", "_dlt_version"] {
        let names = destination.rows(&format!(
            "SELECT DISTINCT CAST(schema_name AS VARCHAR) FROM {ds}.{table}"
        ));
        assert_eq!(
            names,
            vec![vec![Value::from(schema_name)]],
            "{name}: schema names in {table}"
        );
    }

    // The schema: dlt's stored schema after its second run, read and hashed as dlt does, and
    // highwater's tables and columns as dlt's.
    let dlt_schema = Schema::from_stored_json(&expected["schema"].to_string()).unwrap();
    assert_eq!(
        dlt_schema.content_hash(),
        expected["schema_version_hash"].as_str().unwrap(),
        "{name}: dlt's schema read and written back unchanged"
    );
    let schema = pipeline.local_schema().unwrap().unwrap();
    for (table, want) in &dlt_schema.tables {
        let got = schema
            .tables
            .get(table)
            .unwrap_or_else(|| panic!("{name}: table {table}"));
        assert_eq!(got.parent, want.parent, "{name}: parent of {table}");
        assert_eq!(
            got.write_disposition, want.write_disposition,
            "{name}: disposition of {table}"
        );
        let columns = |t: &highwater::schema::Table| -> Vec<Value> {
            t.columns
                .values()
                .map(|c| {
                    let mut c = c.clone();
                    c.extra.clear();
                    c.hinted = false;
                    serde_json::to_value(c).unwrap()
                })
                .collect()
        };
        assert_eq!(columns(got), columns(want), "{name}: columns of {table}");
    }
    let stored = destination.rows(&format!(
        "SELECT CAST(schema AS VARCHAR) FROM {ds}._dlt_version ORDER BY inserted_at DESC LIMIT 1"
    ));
    let stored = Schema::from_stored_json(stored[0][0].as_str().unwrap()).unwrap();
    assert_eq!(
        stored.version_hash, schema.version_hash,
        "{name}: stored schema"
    );
    assert_eq!(
        stored.content_hash(),
        schema.version_hash,
        "{name}: schema hash"
    );
}

fn hashes(incremental: &Value) -> BTreeSet<String> {
    incremental["unique_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

/// Each scenario once per destination (dlt's run-1 destination recreated in a DuckDB file, a
/// PostgreSQL database, or as a lake folder of dlt's own files), with items as values and as
/// JSON Lines text.
macro_rules! takeover {
    ($($name:ident),* ; lake: $($lake:ident),* $(,)?) => {
        takeover!(@kind duckdb, DuckDb, $($name),*);
        takeover!(@kind postgres, Postgres, $($lake),*);
        takeover!(@kind filesystem, Filesystem, $($lake),*);
    };
    (@kind $module:ident, $kind:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::take_over(stringify!($name), super::Kind::$kind, super::Feed::Values);
                    super::take_over(stringify!($name), super::Kind::$kind, super::Feed::Lines);
                }
            )*
        }
    };
}

// `legacy_hashes` rewrites dlt's state in DuckDB only: it has no PostgreSQL or lake fixture.
takeover!(
    merge_children,
    compound_key,
    append_boundary,
    legacy_hashes,
    min_cursor,
    nested_cursor,
    mixed_offsets,
    date_cursor,
    float_cursor,
    old_naming,
    named_source;
    lake: merge_children,
    compound_key,
    append_boundary,
    min_cursor,
    nested_cursor,
    mixed_offsets,
    date_cursor,
    float_cursor,
    old_naming,
    named_source,
);

#[test]
fn every_takeover_scenario_has_a_test() {
    let names: Vec<String> = std::fs::read_dir(takeover_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("scenario.json").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names.len(),
        11,
        "a new scenario needs a line in takeover!(...): {names:?}"
    );
}

/// A state or schema of a dlt newer than highwater knows is refused before anything is loaded,
/// naming the version; the destination is left as it was.
#[test]
fn unknown_versions_are_refused_before_loading() {
    let dir = takeover_dir().join("merge_children");
    let scenario = read_json(&dir.join("scenario.json"));
    let run1 = fixture(&dir, "run1", Kind::DuckDb);
    for (table, kind, version) in [
        ("_dlt_pipeline_state", "state engine", 5),
        ("_dlt_version", "schema engine", 12),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let destination = TestDestination::new(Kind::DuckDb, tmp.path());
        recreate(&destination, &run1);
        let conn = common::open(destination.duckdb_path());
        if table == "_dlt_pipeline_state" {
            let text: String = conn
                .query_row("SELECT state FROM data._dlt_pipeline_state", [], |r| {
                    r.get(0)
                })
                .unwrap();
            let mut state = highwater::state::decode_from_destination(&text).unwrap();
            state["_state_engine_version"] = Value::from(version);
            let encoded = highwater::state::encode_for_destination(&state).unwrap();
            conn.execute("UPDATE data._dlt_pipeline_state SET state = ?", [encoded])
                .unwrap();
        } else {
            let text: String = conn
                .query_row("SELECT schema FROM data._dlt_version", [], |r| r.get(0))
                .unwrap();
            let mut schema: Value = serde_json::from_str(&text).unwrap();
            schema["engine_version"] = Value::from(version);
            conn.execute(
                "UPDATE data._dlt_version SET schema = ?",
                [schema.to_string()],
            )
            .unwrap();
        }
        drop(conn);
        let before = destination.dump_dataset("data");
        let pipeline = destination.pipeline_with(tmp.path(), "p_takeover_merge", "data");
        let run = &scenario["runs"][1];
        let source = Source::new(
            "p_takeover_merge",
            vec![resource_for(&dir, run, Feed::Values)],
        );
        let err = pipeline.run(source).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { found, .. } if found == version),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(kind)
                && message.contains(&version.to_string())
                && message.contains("upgrade highwater"),
            "{message}"
        );
        let after = destination.dump_dataset("data");
        assert_eq!(
            format!("{before:?}"),
            format!("{after:?}"),
            "{table}: nothing loaded"
        );
        assert_eq!(destination.count("SELECT count(*) FROM data._dlt_loads"), 1);
    }
}

/// dlt's typed JSON and hashes, recorded from dlt 1.31.0: highwater hashes the same states to
/// the same `_version_hash`, reads dlt's compressed states, and writes states dlt reads back into
/// the same values.
#[test]
fn typed_state_documents_are_dlts() {
    let fixture = read_json(&takeover_dir().join("typed_json.json"));
    for doc in fixture["documents"].as_array().unwrap() {
        let typed: Value = serde_json::from_str(doc["typed_json"].as_str().unwrap()).unwrap();
        assert_eq!(
            highwater::state::version_hash(&typed),
            doc["version_hash"].as_str().unwrap(),
            "version hash of {typed}"
        );
        let from_dlt =
            highwater::state::decode_from_destination(doc["compressed"].as_str().unwrap()).unwrap();
        assert_eq!(from_dlt, typed, "dlt's compressed state");
        let encoded = highwater::state::encode_for_destination(&typed).unwrap();
        let back = highwater::state::decode_from_destination(&encoded).unwrap();
        assert_eq!(
            highwater::typed_json::canonical(&back),
            highwater::typed_json::canonical(&typed),
            "highwater's encoding holds dlt's typed JSON"
        );
    }
}

/// A working directory written before highwater stored dlt's formats (its own schema JSON, a
/// sha-256 state hash) still loads: an unchanged run loads nothing, a run with new rows loads
/// them and stores the schema in dlt's format.
#[test]
fn working_dirs_of_the_previous_format_still_load() {
    use highwater::{Incremental, Resource};
    use serde_json::json;
    use sha2::{Digest, Sha256};

    let tmp = tempfile::tempdir().unwrap();
    let destination = TestDestination::new(Kind::DuckDb, tmp.path());
    let pipeline = destination.pipeline(tmp.path(), "old_format");
    let resource = |rows: Vec<Value>| {
        Resource::from_items("events", rows)
            .incremental(Incremental::new("ts").unwrap().initial_value(0))
    };
    let first: Vec<Value> = (1..=3).map(|i| json!({"id": i, "ts": i})).collect();
    pipeline.run(resource(first.clone())).unwrap();

    // The files as the previous highwater wrote them.
    let work = pipeline.working_dir().to_path_buf();
    let mut state: Value = read_json(&work.join("state.json"));
    let mut content = state.clone();
    for key in [
        "_local",
        "_state_version",
        "_state_engine_version",
        "_version_hash",
    ] {
        content.as_object_mut().unwrap().remove(key);
    }
    use base64::Engine;
    let legacy = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(content.to_string().as_bytes()));
    state["_version_hash"] = json!(legacy);
    state["_local"]["_last_extracted_hash"] = json!(legacy);
    std::fs::write(work.join("state.json"), state.to_string()).unwrap();
    let mut schema: Value = read_json(&work.join("schema.json"));
    schema.as_object_mut().unwrap().remove("dlt");
    for table in schema["tables"].as_object_mut().unwrap().values_mut() {
        table.as_object_mut().unwrap().remove("extra");
    }
    schema["version_hash"] = json!("sha256-of-the-previous-format");
    std::fs::write(work.join("schema.json"), schema.to_string()).unwrap();

    let info = pipeline.run(resource(first.clone())).unwrap();
    assert!(
        info.load_ids.is_empty(),
        "nothing new: no load, no state row"
    );
    let mut rows = first;
    rows.push(json!({"id": 4, "ts": 4}));
    let info = pipeline.run(resource(rows)).unwrap();
    assert_eq!(info.tables["events"], 1);
    assert_eq!(destination.row_count("data", "events"), 4);
    let stored = destination.rows(
        "SELECT CAST(schema AS VARCHAR) FROM data._dlt_version ORDER BY inserted_at DESC LIMIT 1",
    );
    let stored: Value = serde_json::from_str(stored[0][0].as_str().unwrap()).unwrap();
    assert!(
        stored["tables"]["_dlt_loads"].is_object() && stored["normalizers"].is_object(),
        "dlt's format: {stored}"
    );
    let state = pipeline.local_state().unwrap().unwrap();
    assert_eq!(state["_state_version"], json!(2));
}
