//! End-to-end behaviour of the library: dispositions, strategies, children, state, restore,
//! locks. The tests about what reaches the destination run on every destination that carries
//! them out (`<test>::duckdb`, `<test>::postgres`, `<test>::filesystem`, `<test>::s3`); merges
//! skip the filesystem, which appends them (its own test says so); tests of the working
//! directory alone run once, on DuckDB.

#[macro_use]
mod common;

use std::sync::mpsc;

use highwater::{Error, Hints, Incremental, Item, Resource, RunOptions, Source, WriteDisposition};
use serde_json::{json, Value};

use common::destinations::{Kind, TestDestination};
use common::pipeline;

/// A fresh destination of `kind` and its pipeline `name` (dataset `data`), in `dir`.
fn setup(kind: Kind, dir: &std::path::Path, name: &str) -> (TestDestination, highwater::Pipeline) {
    let destination = TestDestination::new(kind, dir);
    let pipeline = destination.pipeline(dir, name);
    (destination, pipeline)
}

on!(duplicate_keys_in_one_load_keep_the_last: duckdb, postgres);
fn duplicate_keys_in_one_load_keep_the_last(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "dups");
    let items = vec![
        json!({"id": 1, "v": "first", "kids": [1, 2]}),
        json!({"id": 2, "v": "only"}),
        json!({"id": 1, "v": "last", "kids": [3]}),
    ];
    let r = Resource::from_items("t", items)
        .write_disposition(WriteDisposition::Merge)
        .primary_key(["id"]);
    p.run(r).unwrap();
    assert_eq!(
        d.rows("SELECT CAST(id AS VARCHAR), v FROM data.t ORDER BY id"),
        vec![
            vec![json!("1"), json!("last")],
            vec![json!("2"), json!("only")]
        ]
    );
    // Children of the dropped duplicate are gone too.
    assert_eq!(
        d.rows("SELECT CAST(value AS VARCHAR) FROM data.t__kids"),
        vec![vec![json!("3")]]
    );
}

on!(merge_skips_staging_unless_a_key_repeats_in_the_load: duckdb, postgres);
fn merge_skips_staging_unless_a_key_repeats_in_the_load(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "direct");
    let merge = |items: Vec<Value>| {
        Resource::from_items("t", items)
            .write_disposition(WriteDisposition::Merge)
            .primary_key(["a", "b"])
    };
    let staging_exists = || {
        !d.rows("SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'data_staging'",
        )
        .is_empty()
    };
    let table = || {
        d.rows(
            "SELECT CAST(t.a AS VARCHAR), CAST(t.b AS VARCHAR), t.v, \
             '[' || COALESCE(string_agg(CAST(k.value AS VARCHAR), ', ' ORDER BY k.value), 'NULL') || ']' \
             FROM data.t LEFT JOIN data.t__kids AS k ON k._dlt_root_id = t._dlt_id \
             GROUP BY t.a, t.b, t.v, t._dlt_id ORDER BY 1, 2",
        )
    };
    // (1, 1) and (1, 2) share only part of the key: no repeat.
    p.run(merge(vec![
        json!({"a": 1, "b": 1, "v": "x", "kids": [1, 2]}),
        json!({"a": 1, "b": 2, "v": "y", "kids": [5]}),
    ]))
    .unwrap();
    // The older (1, 1) and its children are replaced; (1, 2) stays with its child.
    p.run(merge(vec![json!({"a": 1, "b": 1, "v": "z", "kids": [3]})]))
        .unwrap();
    assert!(
        !staging_exists(),
        "merges without repeated keys skip staging"
    );
    assert_eq!(
        table(),
        vec![
            vec![json!("1"), json!("1"), json!("z"), json!("[3]")],
            vec![json!("1"), json!("2"), json!("y"), json!("[5]")]
        ]
    );
    // A row id given by the item, the same as the older row's, keeps only the new children.
    p.run(merge(vec![
        json!({"a": 2, "b": 1, "v": "u", "_dlt_id": "fixed", "kids": [7]}),
    ]))
    .unwrap();
    p.run(merge(vec![
        json!({"a": 2, "b": 1, "v": "w", "_dlt_id": "fixed", "kids": [8, 9]}),
    ]))
    .unwrap();
    assert!(!staging_exists());
    assert_eq!(
        table()[2],
        vec![json!("2"), json!("1"), json!("w"), json!("[8, 9]")]
    );
    // A key repeated inside one load goes through staging, which keeps the last row.
    p.run(merge(vec![
        json!({"a": 1, "b": 2, "v": "first", "kids": [6]}),
        json!({"a": 1, "b": 2, "v": "last"}),
    ]))
    .unwrap();
    assert!(staging_exists());
    assert_eq!(
        table()[1],
        vec![json!("1"), json!("2"), json!("last"), json!("[NULL]")]
    );
}

on!(state_is_restored_from_the_destination_when_the_working_dir_is_gone: duckdb, postgres, filesystem, s3);
fn state_is_restored_from_the_destination_when_the_working_dir_is_gone(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let make = || {
        Resource::from_items("ev", (1..=5).map(|i| json!({"id": i, "ts": i})).collect())
            .primary_key(["id"])
            .incremental(Incremental::new("ts").unwrap().initial_value(0))
    };
    let (d, p) = setup(kind, dir.path(), "restore");
    assert_eq!(p.run(make()).unwrap().load_ids.len(), 1);
    std::fs::remove_dir_all(dir.path().join("work")).unwrap();
    let again = d.pipeline(dir.path(), "restore").run(make()).unwrap();
    assert!(
        again.load_ids.is_empty(),
        "restored cursor filters everything: {again:?}"
    );
    assert_eq!(
        d.rows("SELECT CAST(count(*) AS VARCHAR) FROM data.ev"),
        vec![vec![json!("5")]]
    );
    let state = p.local_state().unwrap().unwrap();
    assert_eq!(
        state["sources"]["restore"]["resources"]["ev"]["incremental"]["ts"]["last_value"],
        5
    );
}

#[test]
fn a_second_state_writing_run_is_refused_while_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocking = Resource::new("slow", move |_| {
        let _ = started_tx.send(());
        let _ = release_rx.recv();
        Ok(std::iter::once(Ok(Item::Json(json!({"a": 1})))))
    });
    let path = dir.path().to_path_buf();
    let handle = std::thread::spawn(move || pipeline(&path, "locked").run(blocking));
    started_rx.recv().unwrap();
    let err = pipeline(dir.path(), "locked")
        .run(Resource::from_items("other", vec![json!({"b": 1})]))
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("already running"), "{err}");
    release_tx.send(()).unwrap();
    handle.join().unwrap().unwrap();
    // Once the first run ended, the lock is free again.
    pipeline(dir.path(), "locked")
        .run(Resource::from_items("other", vec![json!({"b": 1})]))
        .unwrap();
}

on!(resource_and_source_state_are_committed_with_the_data: duckdb, postgres, filesystem, s3);
fn resource_and_source_state_are_committed_with_the_data(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "counter");
    let counting = || {
        Resource::new("c", |ctx| {
            let n = ctx.with_resource_state(|s| {
                let n = s.get("runs").and_then(Value::as_i64).unwrap_or(0) + 1;
                s.insert("runs".into(), json!(n));
                n
            });
            ctx.with_source_state(|s| s.insert("last".into(), json!(n)));
            Ok(std::iter::empty())
        })
    };
    // No rows but a changed state: one load holding only the state row, as dlt.
    assert_eq!(p.run(counting()).unwrap().load_ids.len(), 1);
    assert_eq!(p.run(counting()).unwrap().load_ids.len(), 1);
    let state = p.local_state().unwrap().unwrap();
    assert_eq!(state["sources"]["counter"]["resources"]["c"]["runs"], 2);
    assert_eq!(state["sources"]["counter"]["last"], 2);
    assert_eq!(
        d.rows("SELECT CAST(count(*) AS VARCHAR) FROM data._dlt_pipeline_state"),
        vec![vec![json!("2")]]
    );
}

on!(run_time_replace_is_a_full_refresh: duckdb, postgres, filesystem, s3);
fn run_time_replace_is_a_full_refresh(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "refresh");
    let make = |n: i64| {
        Resource::from_items("ev", (1..=n).map(|i| json!({"id": i, "ts": i})).collect())
            .incremental(Incremental::new("ts").unwrap().initial_value(0))
    };
    p.run(make(3)).unwrap();
    assert!(p.run(make(3)).unwrap().load_ids.is_empty());
    let options = RunOptions {
        hints: Hints {
            write_disposition: Some(WriteDisposition::Replace),
            ..Hints::default()
        },
        ..RunOptions::default()
    };
    let info = p.run_with(make(2), &options).unwrap();
    assert_eq!(
        info.tables["ev"], 2,
        "state reset to initial_value: rows 1 and 2 load again"
    );
    assert_eq!(
        d.rows("SELECT CAST(count(*) AS VARCHAR) FROM data.ev"),
        vec![vec![json!("2")]]
    );
}

on!(replace_empties_every_table_the_resource_filled_before: duckdb, postgres, filesystem, s3);
fn replace_empties_every_table_the_resource_filled_before(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "replace_dynamic");
    let make = |items: Vec<Value>| {
        Resource::from_items("events", items)
            .write_disposition(WriteDisposition::Replace)
            .table_name_fn(|item| Ok(item["kind"].as_str().unwrap_or("other").to_string()))
    };
    p.run(make(vec![
        json!({"kind": "push", "id": 1, "tags": ["a"]}),
        json!({"kind": "issue", "id": 2}),
    ]))
    .unwrap();
    // The second run brings no `issue` rows: as in dlt, replace still empties that table.
    p.run(make(vec![json!({"kind": "push", "id": 3})])).unwrap();
    // A lake keeps no files for an emptied table: it has no rows either way.
    assert_eq!(d.row_count("data", "push"), 1);
    assert_eq!(d.row_count("data", "issue"), 0);
    assert_eq!(d.row_count("data", "push__tags"), 0);
}

on!(plain_data_with_run_time_hints: duckdb, postgres);
fn plain_data_with_run_time_hints(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "plain");
    let options = RunOptions {
        hints: Hints {
            write_disposition: Some(WriteDisposition::Merge),
            primary_key: Some(vec!["Key".into()]),
            table_name: Some(highwater::TableName::Static("Target Table".into())),
            ..Hints::default()
        },
        ..RunOptions::default()
    };
    p.run_with(
        Resource::from_items("x", vec![json!({"Key": 1, "v": 1})]),
        &options,
    )
    .unwrap();
    p.run_with(
        Resource::from_items("x", vec![json!({"Key": 1, "v": 2})]),
        &options,
    )
    .unwrap();
    assert_eq!(
        d.rows("SELECT CAST(key AS VARCHAR), CAST(v AS VARCHAR) FROM data.target_table"),
        vec![vec![json!("1"), json!("2")]]
    );
}

#[test]
fn with_resources_selects_and_unknown_names_are_errors() {
    let source = Source::new(
        "s",
        vec![
            Resource::from_items("a", vec![]),
            Resource::from_items("b", vec![]),
        ],
    );
    let err = source.with_resources(&["c"]).unwrap_err().to_string();
    assert!(err.contains("no resource named \"c\""), "{err}");
}

on!(arrow_batches_load_and_filter_with_the_incremental: duckdb, postgres, filesystem, s3);
fn arrow_batches_load_and_filter_with_the_incremental(kind: Kind) {
    use highwater::arrow::array::{Int64Array, StringArray};
    use highwater::arrow::datatypes::{DataType as ArrowType, Field, Schema};
    use highwater::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path(), "arrow");
    let schema = Arc::new(Schema::new(vec![
        Field::new("Id", ArrowType::Int64, false),
        Field::new("Name", ArrowType::Utf8, true),
    ]));
    let batch = |ids: Vec<i64>| {
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    };
    let make = |batches: Vec<RecordBatch>| {
        Resource::new("arr", move |_| {
            Ok(batches.clone().into_iter().map(|b| Ok(Item::Arrow(b))))
        })
        .primary_key(["Id"])
        .incremental(Incremental::new("Id").unwrap().initial_value(2))
    };
    let info = p
        .run(make(vec![batch(vec![1, 2, 3]), batch(vec![4])]))
        .unwrap();
    assert_eq!(info.tables["arr"], 3, "id 1 is before the start");
    let info = p.run(make(vec![batch(vec![3, 4, 5])])).unwrap();
    assert_eq!(
        info.tables["arr"], 1,
        "4 is the boundary and was loaded; only 5 is new"
    );
    assert_eq!(
        d.rows("SELECT CAST(id AS VARCHAR), name FROM data.arr ORDER BY id"),
        (2..=5)
            .map(|i| vec![json!(i.to_string()), json!(format!("n{i}"))])
            .collect::<Vec<_>>()
    );
}

on!(upsert_and_insert_only_merge_strategies: duckdb, postgres);
fn upsert_and_insert_only_merge_strategies(kind: Kind) {
    use highwater::MergeStrategy;
    for (strategy, expected_v) in [
        (MergeStrategy::Upsert, "2"),
        (MergeStrategy::InsertOnly, "1"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (d, p) = setup(kind, dir.path(), "upsert");
        let make = |v: i64, kids: Vec<i64>| {
            Resource::from_items(
                "t",
                vec![
                    json!({"id": 1, "v": v, "kids": kids}),
                    json!({"id": v + 10, "v": v}),
                ],
            )
            .write_disposition(WriteDisposition::Merge)
            .merge_strategy(strategy)
            .primary_key(["id"])
        };
        p.run(make(1, vec![1, 2, 3])).unwrap();
        p.run(make(2, vec![4])).unwrap();
        assert_eq!(
            d.rows("SELECT CAST(v AS VARCHAR) FROM data.t WHERE id = 1"),
            vec![vec![json!(expected_v)]],
            "{strategy:?}"
        );
        assert_eq!(
            d.rows("SELECT CAST(count(*) AS VARCHAR) FROM data.t"),
            vec![vec![json!("3")]],
            "{strategy:?}"
        );
        let kids = d.rows("SELECT CAST(value AS VARCHAR) FROM data.t__kids ORDER BY value");
        let expected: Vec<Vec<Value>> = match strategy {
            MergeStrategy::Upsert => vec![vec![json!("4")]],
            _ => vec![vec![json!("1")], vec![json!("2")], vec![json!("3")]],
        };
        assert_eq!(kids, expected, "{strategy:?}");
    }
}

#[test]
fn only_the_newest_loaded_packages_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "prune");
    let loaded = dir.path().join("work/packages/loaded");
    let ids = || {
        let mut ids: Vec<String> = std::fs::read_dir(&loaded)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut all = Vec::new();
    for i in 0..5 {
        let info = p
            .run(Resource::from_items("t", vec![json!({"i": i})]))
            .unwrap();
        all.extend(info.load_ids);
    }
    // The default keeps three, whole.
    assert_eq!(ids(), all[2..].to_vec());
    for id in ids() {
        assert!(loaded.join(&id).join("tables").exists(), "{id}");
    }
    let (pruned, failed) = p.prune_packages(1, true).unwrap();
    assert_eq!(pruned, all[2..4].to_vec());
    assert!(failed.is_empty());
    assert_eq!(ids(), all[4..].to_vec());
}

#[test]
fn json_lines_blocks_load_every_line_and_wrong_line_ends_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(Kind::DuckDb, dir.path(), "blocks");
    let file: std::sync::Arc<str> = "events.jsonl".into();
    let block = |item: Item| {
        let resource = Resource::new("t", move |_| Ok(vec![Ok(item.clone())].into_iter()));
        resource.incremental(Incremental::new("id").unwrap())
    };
    // Two blocks: a blank line in the first, no line break at the end of the second.
    let first = Item::json_lines(b"{\"id\":1}\n\n{\"id\":2}\n".to_vec(), file.clone(), 1);
    p.run(block(first)).unwrap();
    let second = Item::json_lines(b"{\"id\":2}\n{\"id\":3}".to_vec(), file.clone(), 4);
    p.run(block(second)).unwrap();
    let ids = "SELECT CAST(id AS VARCHAR) FROM data.t ORDER BY id";
    let loaded = vec![vec![json!("1")], vec![json!("2")], vec![json!("3")]];
    assert_eq!(d.rows(ids), loaded);
    let state = p.local_state().unwrap();

    // Line ends that stop short of the text would drop its last line: refused, nothing loaded.
    let wrong = Item::RawJsonLines {
        bytes: b"{\"id\":4}\n{\"id\":5}\n".to_vec(),
        line_ends: vec![9],
        file,
        first_line: 6,
    };
    let err = p.run(block(wrong)).unwrap_err().to_string();
    assert!(
        err.contains("events.jsonl:6") && err.contains("line ends"),
        "{err}"
    );
    assert_eq!(d.rows(ids), loaded);
    assert_eq!(p.local_state().unwrap(), state);
}
