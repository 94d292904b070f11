//! The `highwater` command run as a process: exit codes, `--json`, error texts, bad input that
//! must leave the destination and the state unchanged. Runs killed at every stage: `kills.rs`.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod support;

use support::{event, events_pipeline, failed, highwater, ok, stderr, Project};

/// The events pipeline (merged by id, incremental on `ts`) into `out.duckdb`.
fn events_into_duckdb() -> String {
    events_pipeline("duckdb:out.duckdb")
}

/// The runs of this suite: `run pipeline.toml ARGS` as given, optionally crashing at a point.
impl Project {
    fn run_crashing(&self, args: &[&str], crash: Option<&str>) -> Output {
        let mut cmd = self.command(&["run", "pipeline.toml"]);
        cmd.args(args);
        if let Some(point) = crash {
            cmd.env("HIGHWATER_TEST_CRASH", point);
        }
        cmd.output().unwrap()
    }

    /// A project whose first run loaded events 1 to 3, and its `state.json` after that run.
    fn with_three_events_loaded() -> (Self, Vec<u8>) {
        let p = Project::new(&events_into_duckdb());
        p.write_data(
            "a.jsonl",
            &(1..=3).map(|i| event(i, i, "a")).collect::<Vec<_>>(),
        );
        assert!(p
            .run_crashing(&["--progress", "none"], None)
            .status
            .success());
        let state = std::fs::read(p.path("work/state.json")).unwrap();
        (p, state)
    }

    /// `run` with one environment variable set.
    fn run_with_env(&self, variable: &str, value: &str) -> Output {
        self.run(&[], &[(variable, value)])
    }

    fn query_i64(&self, sql: &str) -> i64 {
        let conn = duckdb::Connection::open(self.path("out.duckdb")).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

#[test]
fn run_prints_json_and_second_run_loads_nothing() {
    let p = Project::new(&events_into_duckdb());
    p.write_data(
        "a.jsonl",
        &(1..=5).map(|i| event(i, i * 10, "a")).collect::<Vec<_>>(),
    );
    let out = p.run_crashing(&["--json", "--progress", "none"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(json["pipeline"], "events");
    assert_eq!(json["dataset"], "raw");
    assert_eq!(json["load_ids"].as_array().unwrap().len(), 1);
    assert_eq!(json["tables"]["events"], 5);
    assert_eq!(json["tables"]["events__tags"], 10);
    assert_eq!(
        json["state"]["events"]["resources"]["events"]["incremental"]["ts"]["last_value"],
        50
    );

    let again = p.run_crashing(&["--json", "--progress", "none"], None);
    assert!(again.status.success(), "{}", stderr(&again));
    let json: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["load_ids"].as_array().unwrap().len(), 0);
    assert_eq!(p.query_i64("SELECT count(*) FROM raw._dlt_loads"), 1);
}

#[test]
fn malformed_line_names_file_and_line_and_changes_nothing() {
    let (p, state_before) = Project::with_three_events_loaded();
    // Far enough into the file (about 1.4 MB) that the line is past the first block read.
    let mut lines: Vec<String> = (4..=20_003).map(|i| event(i, i, "b")).collect();
    lines.insert(17_999, r#"{"id": 99, "ts": "#.to_string());
    p.write_data("b.jsonl", &lines);
    let out = p.run_crashing(&["--progress", "none"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("b.jsonl:18000: invalid JSON"), "{err}");
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 3);
    assert_eq!(p.query_i64("SELECT count(*) FROM raw._dlt_loads"), 1);
    assert_eq!(
        std::fs::read(p.path("work/state.json")).unwrap(),
        state_before
    );
}

#[test]
fn bad_duckdb_settings_are_named_errors_and_the_next_run_loads() {
    let (p, state_before) = Project::with_three_events_loaded();
    p.write_data(
        "b.jsonl",
        &(4..=6).map(|i| event(i, i, "b")).collect::<Vec<_>>(),
    );
    for (variable, value) in [
        ("HIGHWATER_DUCKDB_THREADS", "0"),
        ("HIGHWATER_DUCKDB_THREADS", "two"),
        ("HIGHWATER_DUCKDB_MEMORY_LIMIT", "1GB; DROP"),
    ] {
        let out = p.run_with_env(variable, value);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(&format!("{variable}={value:?}")), "{err}");
        assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 3);
        assert_eq!(
            std::fs::read(p.path("work/state.json")).unwrap(),
            state_before
        );
    }
    // An explicit thread count is used as given; the package left pending loads.
    let out = p.run_with_env("HIGHWATER_DUCKDB_THREADS", "2");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 6);
    assert_eq!(p.query_i64("SELECT count(*) FROM raw._dlt_loads"), 2);
}

#[test]
fn bad_pipeline_files_are_named_errors() {
    let p = Project::new(
        &events_into_duckdb().replace("dataset = \"raw\"", "dataset = \"raw\"\nbogus_key = 1"),
    );
    let out = p.run_crashing(&[], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pipeline.toml:5:") && stderr(&out).contains("bogus_key"),
        "{}",
        stderr(&out)
    );

    let p = Project::new(&events_into_duckdb().replace("duckdb:out.duckdb", "oracle://db"));
    let out = p.run_crashing(&[], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown destination \"oracle://db\""),
        "{}",
        stderr(&out)
    );
    assert!(!p.path("out.duckdb").exists());

    let p = Project::new(&events_into_duckdb());
    let out = p.run_crashing(&["--no-such-flag"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = highwater().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn wrong_type_for_hinted_column_fails_cleanly() {
    let p = Project::new(
        &(events_into_duckdb() + "\n[resources.columns.ts]\ndata_type = \"bigint\"\n"),
    );
    p.write_data(
        "a.jsonl",
        &[
            event(1, 1, "a"),
            r#"{"id": 2, "ts": "soon", "tags": []}"#.to_string(),
        ],
    );
    let out = p.run_crashing(&["--progress", "none"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("column ts") || err.contains("cursor ts"),
        "{err}"
    );
    assert!(err.contains("a.jsonl:2"), "{err}");
    assert!(!p.path("work/state.json").exists());
}

#[test]
fn example_pipeline_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/github_events");
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("github_events");
    std::fs::create_dir_all(example.join("data")).unwrap();
    for entry in std::fs::read_dir(root.join("data")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), example.join("data").join(entry.file_name())).unwrap();
    }
    std::fs::copy(root.join("pipeline.toml"), example.join("pipeline.toml")).unwrap();
    let out = highwater()
        .current_dir(dir.path())
        .args([
            "run",
            "github_events/pipeline.toml",
            "--json",
            "--progress",
            "log",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["tables"]["events"].as_u64().unwrap() >= 1000);
    assert!(json["tables"]["events__payload__commits"].as_u64().unwrap() > 0);
    assert!(
        stderr(&out).contains("load:"),
        "one progress line per stage: {}",
        stderr(&out)
    );
    // 151 ids appear more than once in the example's one load: the last line of each wins (see
    // README: dlt 1.31.0 keeps the first on DuckDB and an arbitrary one on PostgreSQL).
    let conn = duckdb::Connection::open(example.join("github_events.duckdb")).unwrap();
    let one = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        one("SELECT CAST(count(*) AS VARCHAR) || '/' || CAST(count(DISTINCT id) AS VARCHAR) FROM github_data.events"),
        "1343/1343"
    );
    // id 2: a PullRequestEvent on 2024-01-01's line 2, a PushEvent on 2024-01-02's line 342.
    assert_eq!(
        one("SELECT type FROM github_data.events WHERE id = 2"),
        "PushEvent"
    );
}

#[test]
fn missing_paths_fail_and_empty_globs_warn_and_load_nothing() {
    let p = Project::new(&events_into_duckdb().replace("data/*.jsonl", "data/events.jsonl"));
    let err = failed(&p.run(&[], &[]));
    assert!(
        err.contains(
            "pipeline.toml:14: resource events: path \"data/events.jsonl\" does not exist"
        ),
        "{err}"
    );

    // A glob that matches nothing: a warning, success, and no load at all, not even a state.
    let p = Project::new(&events_into_duckdb());
    let out = p.run(&["--json"], &[]);
    assert_eq!(ok(&out)["load_ids"], serde_json::json!([]));
    assert!(
        stderr(&out)
            .contains("pipeline.toml:14: resource events: no file matches path \"data/*.jsonl\""),
        "{}",
        stderr(&out)
    );
    assert!(!p.path("work/state.json").exists());
    assert!(!p.path("out.duckdb").exists());

    // ... a failure with require_files = true.
    let p = Project::new(&events_into_duckdb().replace(
        "path = \"data/*.jsonl\"",
        "path = \"data/*.jsonl\"\nrequire_files = true",
    ));
    let err = failed(&p.run(&[], &[]));
    assert!(
        err.contains("no file matches path") && err.contains("require_files = true"),
        "{err}"
    );
}

/// A CSV pipeline of places, with `source_keys` in its source and `tail` at the end.
fn places(source_keys: &str, tail: &str) -> String {
    format!(
        "[pipeline]\nname = \"places\"\ndestination = \"duckdb:out.duckdb\"\ndataset = \"raw\"\nworking_dir = \"work\"\n\n[[resources]]\nname = \"places\"\n\n[resources.source]\nkind = \"csv\"\npath = \"data/*.csv\"\n{source_keys}\n{tail}"
    )
}

#[test]
fn csv_text_hints_keep_the_text_and_inference_can_be_off() {
    let zip_text = "\n[resources.columns.zip]\ndata_type = \"text\"\n";
    let p = Project::new(&places("", zip_text));
    p.write("data/a.csv", "zip,n\n01234,007\n");
    ok(&p.run(&["--json"], &[]));
    let conn = duckdb::Connection::open(p.path("out.duckdb")).unwrap();
    let (zip, n): (String, i64) = conn
        .query_row("SELECT zip, n FROM raw.places", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((zip.as_str(), n), ("01234", 7));
    drop(conn);

    let p = Project::new(&places("infer_types = false", ""));
    p.write("data/a.csv", "zip,n\n01234,007\n");
    ok(&p.run(&["--json"], &[]));
    let conn = duckdb::Connection::open(p.path("out.duckdb")).unwrap();
    let (zip, n): (String, String) = conn
        .query_row("SELECT zip, n FROM raw.places", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((zip.as_str(), n.as_str()), ("01234", "007"));
    drop(conn);

    let p = Project::new(&places("infer_types = false", "").replace("csv", "jsonl"));
    assert!(failed(&p.run(&[], &[])).contains("infer_types is a csv setting"));
}

/// A hint given once the column exists with another type: an error when storing the values in
/// the existing type would change them, else a warning; the column keeps its type.
#[test]
fn a_type_hint_that_cannot_apply_to_an_existing_column_is_said() {
    let p = Project::new(&places("", ""));
    p.write("data/a.csv", "zip,n\n01234,1.5\n");
    ok(&p.run(&["--json"], &[]));
    p.write(
        "pipeline.toml",
        &places("", "\n[resources.columns.zip]\ndata_type = \"text\"\n"),
    );
    p.write("data/b.csv", "zip,n\n05678,2.5\n");
    let err = failed(&p.run(&[], &[]));
    assert!(
        err.contains("table places, column zip: the hint data_type = \"text\" cannot apply: the column exists as bigint"),
        "{err}"
    );
    p.write(
        "pipeline.toml",
        &places("", "\n[resources.columns.n]\ndata_type = \"bigint\"\n"),
    );
    std::fs::remove_file(p.path("data/a.csv")).unwrap();
    let out = p.run(&["--json"], &[]);
    assert_eq!(ok(&out)["tables"]["places"], 1);
    assert!(
        stderr(&out).contains("table places, column n: the hint data_type = \"bigint\" does not apply: the column exists as double"),
        "{}",
        stderr(&out)
    );
}

/// Adjacent half-open ranges run as separate processes of one pipeline at the same time load every
/// row exactly once (stateless backfills take no pipeline lock; DuckDB loads wait for the file).
#[test]
fn parallel_backfills_load_every_row_once() {
    let backfill = |start: i64, end: i64| {
        events_into_duckdb().replace(
            "initial_value = 0",
            &format!("initial_value = {start}\nend_value = {end}"),
        )
    };
    let p = Project::new(&backfill(0, 1));
    p.write_data(
        "a.jsonl",
        &(0..6000).map(|i| event(i, i, "b")).collect::<Vec<_>>(),
    );
    for (name, start, end) in [
        ("w1.toml", 0, 2000),
        ("w2.toml", 2000, 4000),
        ("w3.toml", 4000, 6000),
    ] {
        std::fs::write(p.path(name), backfill(start, end)).unwrap();
    }
    let children: Vec<_> = ["w1.toml", "w2.toml", "w3.toml"]
        .iter()
        .map(|file| {
            highwater()
                .current_dir(p.dir.path())
                .args(["run", file, "--progress", "none", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["tables"]["events"], 2000);
    }
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 6000);
    assert_eq!(
        p.query_i64("SELECT count(DISTINCT id) FROM raw.events"),
        6000
    );
    assert_eq!(p.query_i64("SELECT count(*) FROM raw._dlt_loads"), 3);
    assert!(
        !p.path("work/state.json").exists(),
        "backfills write no state"
    );
}

/// `--interval-start/--interval-end` (or the environment, as Airflow passes its data interval)
/// become the range of incrementals that allow external schedulers.
#[test]
fn scheduler_intervals_from_flags_and_environment() {
    let pipeline = events_into_duckdb().replace(
        "cursor_path = \"ts\"\ninitial_value = 0",
        "cursor_path = \"at\"\ninitial_value = \"2020-01-01T00:00:00Z\"\nallow_external_schedulers = true",
    );
    let p = Project::new(&pipeline);
    let lines: Vec<String> = (0..48)
        .map(|h| {
            format!(
                r#"{{"id": {h}, "at": "2024-01-0{}T{:02}:00:00Z"}}"#,
                1 + h / 24,
                h % 24
            )
        })
        .collect();
    p.write_data("a.jsonl", &lines);
    let out = p.run_crashing(
        &[
            "--json",
            "--progress",
            "none",
            "--interval-start",
            "2024-01-01T00:00:00Z",
            "--interval-end",
            "2024-01-01T12:00:00Z",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tables"]["events"], 12);
    let out = highwater()
        .current_dir(p.dir.path())
        .args(["run", "pipeline.toml", "--json", "--progress", "none"])
        .env("DLT_INTERVAL_START", "2024-01-02T00:00:00+00:00")
        .env("DLT_INTERVAL_END", "2024-01-03T00:00:00+00:00")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tables"]["events"], 24);
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 36);
    let bad = p.run_crashing(
        &[
            "--interval-start",
            "yesterday",
            "--interval-end",
            "2024-01-01T00:00:00Z",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2), "bad usage");
    assert!(
        stderr(&bad).contains("interval start \"yesterday\""),
        "{}",
        stderr(&bad)
    );

    // An interval no resource takes is an error, not a silent incremental run.
    let plain = Project::new(&events_into_duckdb());
    let out = plain.run_crashing(
        &[
            "--interval-start",
            "2024-01-01T00:00:00Z",
            "--interval-end",
            "2024-01-02T00:00:00Z",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "bad usage");
    assert!(
        stderr(&out).contains(
            "need a resource with [resources.incremental] allow_external_schedulers = true"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!plain.path("out.duckdb").exists());
}

#[test]
fn refresh_and_full_refresh_from_the_command() {
    let p = Project::new(&events_into_duckdb());
    p.write_data(
        "a.jsonl",
        &(1..=4).map(|i| event(i, i, "a")).collect::<Vec<_>>(),
    );
    assert!(p
        .run_crashing(&["--progress", "none"], None)
        .status
        .success());
    let out = p.run_crashing(
        &[
            "--progress",
            "none",
            "--json",
            "--write-disposition",
            "replace",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["tables"]["events"], 4,
        "full refresh: state reset, data replaced"
    );
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 4);
    let out = p.run_crashing(
        &[
            "--progress",
            "none",
            "--json",
            "--refresh",
            "drop_resources",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 4);
    assert_eq!(
        p.run_crashing(&["--refresh", "drop_everything"], None)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn info_state_schema_and_drop_commands() {
    let p = Project::new(&events_into_duckdb());
    p.write_data(
        "a.jsonl",
        &(1..=3).map(|i| event(i, i, "a")).collect::<Vec<_>>(),
    );
    let cmd = |args: &[&str]| {
        highwater()
            .current_dir(p.dir.path())
            .args(args)
            .output()
            .unwrap()
    };

    let out = cmd(&["info", "pipeline.toml", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tables"], serde_json::json!({}), "nothing loaded yet");
    assert!(
        !p.path("out.duckdb").exists(),
        "info does not create the destination"
    );

    assert!(p
        .run_crashing(&["--progress", "none"], None)
        .status
        .success());
    let json: Value =
        serde_json::from_slice(&cmd(&["info", "pipeline.toml", "--json"]).stdout).unwrap();
    assert_eq!(json["dataset"], "raw");
    assert_eq!(json["tables"]["events"], 3);
    assert_eq!(json["tables"]["events__tags"], 6);
    assert_eq!(json["loads"].as_array().unwrap().len(), 1);
    assert_eq!(json["pending_packages"].as_array().unwrap().len(), 0);
    assert!(
        String::from_utf8_lossy(&cmd(&["info", "pipeline.toml"]).stdout).contains("events__tags")
    );

    let state: Value =
        serde_json::from_slice(&cmd(&["state", "pipeline.toml", "--resource", "events"]).stdout)
            .unwrap();
    assert_eq!(state["incremental"]["ts"]["last_value"], 3);

    let schema = String::from_utf8_lossy(&cmd(&["schema", "pipeline.toml"]).stdout).to_string();
    assert!(
        schema.contains("events__tags:") && schema.contains("data_type: bigint"),
        "{schema}"
    );
    let schema: Value =
        serde_json::from_slice(&cmd(&["schema", "pipeline.toml", "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(
        schema["tables"]["events"]["columns"]["id"]["primary_key"],
        true
    );

    let out = cmd(&["state", "reset", "pipeline.toml", "--resource", "events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let state: Value =
        serde_json::from_slice(&cmd(&["state", "pipeline.toml", "--resource", "events"]).stdout)
            .unwrap();
    assert_eq!(state, serde_json::json!({}));
    assert_eq!(
        p.query_i64("SELECT count(*) FROM raw.events"),
        3,
        "reset keeps the data"
    );
    // The cursor starts again: merge on id keeps rows unique.
    assert!(p
        .run_crashing(&["--progress", "none"], None)
        .status
        .success());
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 3);

    let out = cmd(&["drop", "pipeline.toml", "--resource", "events", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        p.query_i64(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'events%'"
        ),
        0
    );
    let out = cmd(&["drop", "pipeline.toml", "--resource", "nope"]);
    assert_eq!(out.status.code(), Some(2), "bad usage");
    assert!(
        stderr(&out).contains("no resource named \"nope\""),
        "{}",
        stderr(&out)
    );
    // Restored after a drop, the pipeline loads everything again.
    assert!(p
        .run_crashing(&["--progress", "none"], None)
        .status
        .success());
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 3);
}

#[test]
fn csv_parquet_and_gzip_sources() {
    let csv = events_into_duckdb().replace(
        "kind = \"jsonl\"\npath = \"data/*.jsonl\"",
        "kind = \"csv\"\npath = \"data/*.csv.gz\"",
    );
    let p = Project::new(&csv);
    let text = "id,ts,name\n1,1,a\n2,2,b\n3,3,\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    std::fs::write(p.path("data/a.csv.gz"), gz.finish().unwrap()).unwrap();
    let out = p.run_crashing(&["--progress", "none", "--json"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 3);
    assert_eq!(
        p.query_i64("SELECT count(*) FROM raw.events WHERE name IS NULL"),
        1
    );

    // The DuckDB table written above, exported as Parquet, read back by a parquet source.
    let conn = duckdb::Connection::open(p.path("out.duckdb")).unwrap();
    let export = p.path("data/events.parquet");
    conn.execute(
        &format!(
            "COPY (SELECT id, ts, name FROM raw.events) TO '{}' (FORMAT parquet)",
            export.display()
        ),
        [],
    )
    .unwrap();
    drop(conn);
    let parquet = events_into_duckdb()
        .replace(
            "kind = \"jsonl\"\npath = \"data/*.jsonl\"",
            "kind = \"parquet\"\npath = \"data/*.parquet\"",
        )
        .replace(
            "name = \"events\"\ndestination",
            "name = \"from_parquet\"\ndestination",
        )
        .replace("working_dir = \"work\"", "working_dir = \"work2\"")
        .replace("dataset = \"raw\"", "dataset = \"raw_parquet\"");
    std::fs::write(p.path("parquet.toml"), parquet).unwrap();
    let out = highwater()
        .current_dir(p.dir.path())
        .args(["run", "parquet.toml", "--json", "--progress", "none"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tables"]["events"], 3);
    assert_eq!(
        json["state"]["from_parquet"]["resources"]["events"]["incremental"]["ts"]["last_value"],
        3
    );
    // A full refresh reloads the same rows: merge by id without `_dlt_id` columns keeps them once.
    let out = highwater()
        .current_dir(p.dir.path())
        .args([
            "run",
            "parquet.toml",
            "--refresh",
            "drop_data",
            "--progress",
            "none",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.query_i64("SELECT count(*) FROM raw_parquet.events"), 3);
}

#[test]
fn skip_loaded_files_reads_each_file_once() {
    let pipeline = events_into_duckdb()
        .replace(
            "path = \"data/*.jsonl\"",
            "path = \"data/*.jsonl\"\nskip_loaded_files = true",
        )
        .replace(
            "write_disposition = \"merge\"",
            "write_disposition = \"append\"",
        )
        .replace(
            "[resources.incremental]\ncursor_path = \"ts\"\ninitial_value = 0\n",
            "",
        );
    let p = Project::new(&pipeline);
    p.write_data(
        "a.jsonl",
        &(1..=3).map(|i| event(i, i, "a")).collect::<Vec<_>>(),
    );
    assert!(p
        .run_crashing(&["--progress", "none"], None)
        .status
        .success());
    p.write_data(
        "b.jsonl",
        &(4..=5).map(|i| event(i, i, "b")).collect::<Vec<_>>(),
    );
    let out = p.run_crashing(&["--progress", "none", "--json"], None);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["tables"]["events"],
        2,
        "only the new file: {}",
        stderr(&out)
    );
    assert_eq!(p.query_i64("SELECT count(*) FROM raw.events"), 5);
    let out = p.run_crashing(&["--progress", "none", "--json"], None);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["load_ids"].as_array().unwrap().len(), 0);
}

/// Large items files are normalized by two workers; the tables, their column order and the rows
/// must be exactly those of a single pass, also when columns, variants and child tables appear
/// late in the file.
#[test]
fn parallel_normalize_gives_the_single_pass_result() {
    let lines: Vec<String> = (1..=3000)
        .map(|i| match i {
            i if i % 700 == 0 => format!(r#"{{"id": {i}, "ts": {i}, "name": "late", "late_{i}": {i}, "tags": ["a"], "extra": [{{"k": {i}}}]}}"#),
            i if i % 900 == 0 => format!(r#"{{"id": {i}, "ts": {i}, "name": {i}, "tags": []}}"#),
            i => event(i, i, "n"),
        })
        .collect();
    let outcome = |parallel: bool| {
        let p = Project::new(&events_into_duckdb());
        p.write_data("a.jsonl", &lines);
        let mut cmd = highwater();
        cmd.current_dir(p.dir.path())
            .args(["run", "pipeline.toml", "--progress", "none"]);
        cmd.env(
            "HIGHWATER_PARALLEL_MIN_ITEMS",
            if parallel { "1" } else { "100000000" },
        );
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let schema = highwater()
            .current_dir(p.dir.path())
            .args(["schema", "pipeline.toml", "--format", "json"])
            .output()
            .unwrap();
        let schema: Value = serde_json::from_slice(&schema.stdout).unwrap();
        let columns: Vec<(String, Vec<String>)> = schema["tables"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(t, v)| {
                (
                    t.clone(),
                    v["columns"].as_object().unwrap().keys().cloned().collect(),
                )
            })
            .collect();
        let conn = duckdb::Connection::open(p.path("out.duckdb")).unwrap();
        let rows: Vec<String> = conn
            .prepare("SELECT CAST(COLUMNS(* EXCLUDE (_dlt_id, _dlt_load_id)) AS VARCHAR) FROM raw.events ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                let n = r.as_ref().column_count();
                Ok((0..n).map(|i| format!("{:?}", r.get::<_, Option<String>>(i).unwrap())).collect::<Vec<_>>().join("|"))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let extra = p.query_i64("SELECT count(*) FROM raw.events__extra");
        (columns, rows, extra)
    };
    let single = outcome(false);
    let parallel = outcome(true);
    assert_eq!(parallel.0, single.0, "tables and column order");
    assert_eq!(parallel.2, single.2);
    assert_eq!(parallel.1.len(), 3000);
    assert_eq!(parallel.1, single.1, "rows");
}

/// The incremental golden scenarios (real dlt 1.31.0 results) replayed through the command over
/// JSON Lines files, where extract reads only cursors and keys: same loads, same row counts.
#[test]
fn incremental_golden_scenarios_through_json_lines_files() {
    let scenarios =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dlt_fixtures/scenarios");
    for (name, extra) in [
        (
            "incremental_merge",
            "write_disposition = \"merge\"\nprimary_key = \"id\"\n",
        ),
        ("incremental_append_int", ""),
    ] {
        let dir = scenarios.join(name);
        let scenario: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("scenario.json")).unwrap())
                .unwrap();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let inc = &scenario["runs"][0]["incremental"];
        let resource = scenario["runs"][0]["resource"].as_str().unwrap();
        let pipeline = format!(
            "[pipeline]\nname = {}\ndestination = \"duckdb:out.duckdb\"\ndataset = \"data\"\nworking_dir = \"work\"\n\n[[resources]]\nname = \"{resource}\"\n{extra}\n[resources.source]\nkind = \"jsonl\"\npath = \"current.jsonl\"\n\n[resources.incremental]\ncursor_path = {}\ninitial_value = {}\n",
            scenario["pipeline"], inc["cursor_path"], inc["initial_value"]
        );
        let p = Project::new(&pipeline);
        for (i, run) in scenario["runs"].as_array().unwrap().iter().enumerate() {
            let file = run["files"][0].as_str().unwrap();
            std::fs::copy(dir.join(file), p.path("current.jsonl")).unwrap();
            let out = p.run_crashing(&["--json", "--progress", "none"], None);
            assert!(out.status.success(), "{name} run {i}: {}", stderr(&out));
            let json: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                json["load_ids"].as_array().unwrap().len() as u64,
                expected["run_load_ids"][i].as_u64().unwrap(),
                "{name} run {i}"
            );
        }
        for (table, content) in expected["tables"].as_object().unwrap() {
            let rows = content["rows"].as_array().unwrap().len() as i64;
            assert_eq!(
                p.query_i64(&format!("SELECT count(*) FROM data.\"{table}\"")),
                rows,
                "{name}: {table}"
            );
        }
    }
}

/// The scd2 and replace keys of a pipeline file reach the load; misplaced or malformed ones are
/// errors naming the key and its line, before anything is loaded.
#[test]
fn scd2_and_replace_keys_from_the_pipeline_file() {
    let file = |resource_keys: &str| {
        format!(
            r#"[pipeline]
name = "history"
destination = "duckdb:out.duckdb"
dataset = "raw"
working_dir = "work"
replace_strategy = "insert-from-staging"

[[resources]]
name = "customers"
{resource_keys}

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"
"#
        )
    };
    let p = Project::new(&file(
        r#"write_disposition = "merge"
merge_strategy = "scd2"
validity_column_names = ["valid_from", "valid_to"]
active_record_timestamp = "9999-12-31"
boundary_timestamp = "2024-01-01T00:00:00Z""#,
    ));
    p.write_data("a.jsonl", &[r#"{"id": 1, "name": "a"}"#.to_string()]);
    let out = p.run_crashing(&["--progress", "none"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        p.query_i64("SELECT count(*) FROM raw.customers WHERE valid_from = TIMESTAMPTZ '2024-01-01 00:00:00+00' AND valid_to = TIMESTAMPTZ '9999-12-31 00:00:00+00'"),
        1
    );

    for (keys, line, named) in [
        (
            "write_disposition = \"merge\"\nactive_record_timestamp = \"9999-12-31\"",
            11,
            "active_record_timestamp is an option of merge_strategy = \"scd2\"",
        ),
        (
            "write_disposition = \"merge\"\nmerge_strategy = \"scd2\"\nvalidity_column_names = [\"from\"]",
            12,
            "validity_column_names needs two names",
        ),
        (
            "write_disposition = \"replace\"\nreplace_strategy = \"swap\"",
            11,
            "replace_strategy = \"swap\" is not one of",
        ),
    ] {
        let p = Project::new(&file(keys));
        p.write_data("a.jsonl", &[r#"{"id": 1}"#.to_string()]);
        let out = p.run_crashing(&["--progress", "none"], None);
        assert_eq!(out.status.code(), Some(1), "{keys}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("pipeline.toml:{line}:")) && err.contains(named),
            "{keys}: {err}"
        );
        assert!(!p.path("out.duckdb").exists(), "{keys}");
    }

    // A bad timestamp names the resource and the option.
    let p = Project::new(&file(
        "write_disposition = \"merge\"\nmerge_strategy = \"scd2\"\nboundary_timestamp = \"soon\"",
    ));
    p.write_data("a.jsonl", &[r#"{"id": 1}"#.to_string()]);
    let err = stderr(&p.run_crashing(&["--progress", "none"], None));
    assert!(
        err.contains("resource customers") && err.contains("boundary_timestamp \"soon\""),
        "{err}"
    );
}
