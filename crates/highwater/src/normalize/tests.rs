use std::fs::File;

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

use super::*;
use crate::package::TableSpec;

fn spec(disposition: WriteDisposition, pk: &[&str]) -> TableSpec {
    TableSpec {
        resource: "events".into(),
        write_disposition: disposition,
        merge_strategy: None,
        primary_key: pk.iter().map(|s| s.to_string()).collect(),
        merge_key: vec![],
        columns: IndexMap::new(),
        max_table_nesting: None,
        root_key: false,
        appends_merges: false,
        replace_strategy: None,
        scd2: None,
    }
}

/// Reads a table's files back as rows of `column -> text`.
fn read_rows(
    dir: &Path,
    files: &[TableFile],
    table: &str,
) -> Vec<IndexMap<String, Option<String>>> {
    let mut rows = Vec::new();
    for file in files.iter().filter(|f| f.table == table) {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(dir.join(&file.file)).unwrap())
                .unwrap()
                .build()
                .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for i in 0..batch.num_rows() {
                let mut row = IndexMap::new();
                for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                    let value = if column.is_null(i) {
                        None
                    } else if let Some(s) = column.as_string_opt::<i32>() {
                        Some(s.value(i).to_string())
                    } else {
                        Some(arrow::util::display::array_value_to_string(column, i).unwrap())
                    };
                    row.insert(field.name().clone(), value);
                }
                rows.push(row);
            }
        }
    }
    rows
}

/// Normalizes items of an append table `t`; returns the files' folder, the schema and files.
fn normalize_append(items: Vec<Value>) -> (tempfile::TempDir, Schema, Vec<TableFile>) {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("p");
    let mut n = Normalizer::new(&mut schema, Naming::default(), "1", dir.path());
    let root = n
        .prepare_root("t", &spec(WriteDisposition::Append, &[]))
        .unwrap();
    for item in items {
        n.push_item(&root, item, "").unwrap();
    }
    let files = n.finish().unwrap();
    (dir, schema, files)
}

fn columns(schema: &Schema, table: &str) -> Vec<String> {
    schema.tables[table].columns.keys().cloned().collect()
}

#[test]
fn dlt_full_example() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("p");
    let mut n = Normalizer::new(&mut schema, Naming::default(), "1700000000.1", dir.path());
    let root = n
        .prepare_root("events", &spec(WriteDisposition::Merge, &["id"]))
        .unwrap();
    let item = json!({"id": 1, "type": "PushEvent", "actor": {"id": 7, "login": "octo"},
        "payload": {"commits": [{"sha": "a1", "author": {"name": "X"}}, {"sha": "b2", "author": {"name": "Y"}}], "ref": "main"},
        "labels": ["bug", "ui"], "createdAt": "2024-01-01T00:00:00Z"});
    n.push_item(&root, item, "").unwrap();
    let files = n.finish().unwrap();

    assert_eq!(
        columns(&schema, "events"),
        [
            "id",
            "type",
            "created_at",
            "payload__ref",
            "actor__id",
            "actor__login",
            "_dlt_load_id",
            "_dlt_id"
        ]
    );
    assert_eq!(
        schema.tables["events"].columns["created_at"].data_type,
        DataType::Timestamp
    );
    assert!(schema.tables["events"].columns["id"].primary_key);
    assert!(!schema.tables["events"].columns["id"].nullable);
    assert_eq!(
        columns(&schema, "events__payload__commits"),
        [
            "sha",
            "author__name",
            "_dlt_root_id",
            "_dlt_parent_id",
            "_dlt_list_idx",
            "_dlt_id"
        ]
    );
    assert_eq!(
        columns(&schema, "events__labels"),
        [
            "value",
            "_dlt_root_id",
            "_dlt_parent_id",
            "_dlt_list_idx",
            "_dlt_id"
        ]
    );
    assert_eq!(
        schema.tables["events__labels"].parent.as_deref(),
        Some("events")
    );

    let root_rows = read_rows(dir.path(), &files, "events");
    let root_id = root_rows[0]["_dlt_id"].clone().unwrap();
    assert_eq!(root_id.len(), 14);
    assert_eq!(
        root_rows[0]["_dlt_load_id"].as_deref(),
        Some("1700000000.1")
    );
    let commits = read_rows(dir.path(), &files, "events__payload__commits");
    assert_eq!(commits.len(), 2);
    assert_eq!(
        commits[1]["_dlt_id"].clone().unwrap(),
        digest128(&format!("{root_id}_events__payload__commits_1"))
    );
    assert_eq!(
        commits[1]["_dlt_parent_id"].as_deref(),
        Some(root_id.as_str())
    );
    assert_eq!(
        commits[1]["_dlt_root_id"].as_deref(),
        Some(root_id.as_str())
    );
    assert_eq!(commits[1]["_dlt_list_idx"].as_deref(), Some("1"));
    assert_eq!(commits[1]["author__name"].as_deref(), Some("Y"));
}

#[test]
fn append_has_no_root_key_and_nulls_make_no_columns() {
    let (_dir, schema, _files) = normalize_append(vec![
        json!({"a": null, "b": 1, "l": [{"x": 1}]}),
        json!("scalar"),
    ]);
    assert_eq!(
        columns(&schema, "t"),
        ["b", "_dlt_load_id", "_dlt_id", "value"]
    );
    assert_eq!(
        columns(&schema, "t__l"),
        ["x", "_dlt_parent_id", "_dlt_list_idx", "_dlt_id"]
    );
}

#[test]
fn variants_and_hinted_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("p");
    let mut table_spec = spec(WriteDisposition::Append, &[]);
    table_spec.columns.insert(
        "n".into(),
        crate::resource::ColumnHint {
            data_type: Some(DataType::Bigint),
            ..Default::default()
        },
    );
    let mut n = Normalizer::new(&mut schema, Naming::default(), "1", dir.path());
    let root = n.prepare_root("t", &table_spec).unwrap();
    n.push_item(&root, json!({"a": 1, "n": "7"}), "").unwrap();
    n.push_item(&root, json!({"a": "abc"}), "").unwrap();
    let err = n
        .push_item(&root, json!({"n": "seven"}), "f.jsonl:3: ")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.jsonl:3: table t, column n: cannot store \"seven\" as bigint"),
        "{err}"
    );
    drop(n);
    assert!(schema.tables["t"].columns.contains_key("a__v_text"));
    assert_eq!(
        schema.tables["t"].columns["a__v_text"].data_type,
        DataType::Text
    );
    assert!(schema.tables["t"].columns["a__v_text"].variant);
}

#[test]
fn lists_of_lists_and_nesting_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("p");
    let mut table_spec = spec(WriteDisposition::Append, &[]);
    table_spec.max_table_nesting = Some(1);
    let mut n = Normalizer::new(&mut schema, Naming::default(), "1", dir.path());
    let root = n.prepare_root("deep", &table_spec).unwrap();
    n.push_item(
        &root,
        json!({"a": {"b": {"c": 1}, "s": "x"}, "lists": [[1, 2]]}),
        "",
    )
    .unwrap();
    n.finish().unwrap();
    assert_eq!(
        schema.tables["deep"].columns["a__b"].data_type,
        DataType::Json
    );
    assert_eq!(
        schema.tables["deep__lists"].columns["list"].data_type,
        DataType::Json
    );
}

#[test]
fn keys_with_one_name_keep_the_last_value_like_a_python_dict() {
    let (dir, schema, files) = normalize_append(vec![
        json!({"userId": 1, "x": 0, "user_id": 2, "tagList": [1], "tag_list": [2, 3]}),
    ]);
    assert_eq!(
        columns(&schema, "t"),
        ["user_id", "x", "_dlt_load_id", "_dlt_id"]
    );
    let rows = read_rows(dir.path(), &files, "t");
    assert_eq!(rows[0]["user_id"].as_deref(), Some("2"));
    assert_eq!(
        read_rows(dir.path(), &files, "t__tag_list").len(),
        2,
        "the later list wins"
    );

    // A later null overwrites too: the row has no value and, alone, makes no column (dlt 1.31.0
    // gives `[(1, None), (2, True)]` for these two items).
    let (dir, schema, files) = normalize_append(vec![
        json!({"id": 1, "a-b": false, "aB": null}),
        json!({"id": 2, "aB": null, "a-b": true}),
    ]);
    assert_eq!(
        columns(&schema, "t"),
        ["id", "_dlt_load_id", "_dlt_id", "a_b"]
    );
    let rows = read_rows(dir.path(), &files, "t");
    let a_b: Vec<Option<&str>> = rows.iter().map(|r| r["a_b"].as_deref()).collect();
    assert_eq!(a_b, [None, Some("true")]);
}

/// A key with no name (`__`) holding an object puts its keys beside the object's own; a key in
/// both keeps the last value whether or not the schema already knows the column (dlt 1.31.0,
/// `max_table_nesting = 1`, stores `[null]` on both runs).
#[test]
fn an_unnamed_objects_keys_join_the_enclosing_object_last_value_first() {
    let item = json!({"kk": [], "__": {"kk": [null]}});
    let mut schema = Schema::new("p");
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(WriteDisposition::Append, &[]);
        spec.max_table_nesting = Some(1);
        let mut n = Normalizer::new(&mut schema, Naming::default(), "1", dir.path());
        let root = n.prepare_root("t", &spec).unwrap();
        n.push_item(&root, item.clone(), "").unwrap();
        let files = n.finish().unwrap();
        let rows = read_rows(dir.path(), &files, "t");
        assert_eq!(rows[0]["kk"].as_deref(), Some("[null]"), "{files:?}");
    }
}

#[test]
fn objects_with_one_name_share_their_columns_like_dlt() {
    // dlt flattens the last nested object first, so the first one's value is written last.
    let (dir, schema, files) = normalize_append(vec![
        json!({"userName": {"_x": 0.5}, "user_name": {"_x": true}}),
    ]);
    assert_eq!(
        schema.tables["t"].columns["user_name___x"].data_type,
        DataType::Double
    );
    let rows = read_rows(dir.path(), &files, "t");
    assert_eq!(rows[0]["user_name___x"].as_deref(), Some("0.5"));
}

/// The parallel normalizer with an uneven first split, so the first worker runs out early and
/// usually takes tails of the other's segment, and with columns, variants and child tables appearing
/// late, so workers stop and the rest of their segments is split again: the same schema (column
/// order) and the same rows, in the same order, as one pass.
#[test]
fn parallel_normalize_with_steals_and_stops_gives_the_single_pass_result() {
    let dir = tempfile::tempdir().unwrap();
    let items_path = dir.path().join("items.jsonl");
    let mut text = String::new();
    for i in 1..=4000 {
        let item = match i {
            i if i % 700 == 0 => {
                json!({"id": i, "name": "late", format!("late_{i}"): i, "tags": ["a"], "extra": [{"k": i}]})
            }
            i if i % 900 == 0 => json!({"id": i, "name": i, "tags": []}),
            i => json!({"id": i, "name": "n", "tags": ["x", "y"]}),
        };
        text.push('\t');
        text.push_str(&item.to_string());
        text.push('\n');
    }
    std::fs::write(&items_path, &text).unwrap();
    let len = text.len() as u64;
    let at = |offset: u64| crate::package::next_line_start(&items_path, offset).unwrap();

    let run = |plan: parallel::Plan| {
        let out = tempfile::tempdir().unwrap();
        let mut schema = Schema::new("p");
        let mut files = Vec::new();
        {
            let mut n = Normalizer::new(&mut schema, Naming::default(), "1", out.path());
            let spec = spec(WriteDisposition::Append, &[]);
            let root = n.prepare_root("t", &spec).unwrap();
            parallel::normalize_in_parallel(
                &mut n,
                &root,
                &spec,
                &items_path,
                &[],
                plan,
                &mut files,
                &mut || {},
            )
            .unwrap();
            files.extend(n.finish().unwrap());
        }
        let tables: Vec<(String, Vec<String>)> = schema
            .tables
            .keys()
            .map(|t| (t.clone(), columns(&schema, t)))
            .collect();
        let mut rows = Vec::new();
        for table in ["t", "t__tags", "t__extra"] {
            let table_rows = read_rows(out.path(), &files, table);
            let parents: std::collections::HashSet<_> = read_rows(out.path(), &files, "t")
                .into_iter()
                .filter_map(|r| r.get("_dlt_id").cloned().flatten())
                .collect();
            for mut row in table_rows {
                if let Some(parent) = row.shift_remove("_dlt_parent_id") {
                    assert!(parents.contains(&parent.unwrap()), "orphan row in {table}");
                }
                row.shift_remove("_dlt_id");
                // Files written before a column appeared lack it; compare values, not nulls.
                row.retain(|_, v| v.is_some());
                row.sort_keys();
                rows.push((table, row));
            }
        }
        let steals = files.iter().filter(|f| f.file.contains(".w2.")).count();
        // `t.w1s0.0.parquet`: a worker's file after the rest of segment 1 was split again.
        let resplits = files.iter().filter(|f| f.file.contains("s0.")).count();
        (tables, rows, steals, resplits)
    };

    let single = run(parallel::Plan {
        start: 0,
        end: len,
        head_end: len,
        middle: len,
        min_split: 1,
        min_rest: 2,
        round: 0,
        names: "w".into(),
    });
    // 4000 items; 3991 with two tags, 5 with one, 4 with none; 5 with one `extra`.
    assert_eq!(single.1.len(), 4000 + 3991 * 2 + 5 + 5);
    // Whether the first worker takes a tail of the second's segment depends on the threads'
    // timing (`take_tail` itself is tested in `parallel`); every interleaving must give the
    // single pass's result.
    for _ in 0..5 {
        let parallel = run(parallel::Plan {
            start: 0,
            end: len,
            head_end: at(len / 100),
            middle: at(len / 20),
            min_split: 1,
            min_rest: 2,
            round: 0,
            names: "w".into(),
        });
        assert_eq!(parallel.0, single.0, "tables and column order");
        assert_eq!(parallel.1.len(), single.1.len(), "row count");
        for (i, (p, s)) in parallel.1.iter().zip(&single.1).enumerate() {
            assert_eq!(p, s, "row {i} (steals: {})", parallel.2);
        }
        assert!(
            parallel.3 > 0,
            "late columns stop workers; the rest is split again"
        );
    }
}

fn scd2_spec(options: crate::resource::Scd2Options) -> TableSpec {
    let mut spec = spec(WriteDisposition::Merge, &["id"]);
    spec.merge_strategy = Some(MergeStrategy::Scd2);
    spec.scd2 = Some(options);
    spec
}

#[test]
fn scd2_rows_are_named_by_dlts_row_hash_and_carry_no_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("p");
    let mut n = Normalizer::new(&mut schema, Naming::default(), "1", dir.path());
    let root = n
        .prepare_root("customers", &scd2_spec(Default::default()))
        .unwrap();
    // Hashes dlt 1.31.0 gives (`get_row_hash`): keys sorted at every level, top-level `_dlt`
    // keys left out, lists included.
    n.push_item(&root, json!({"name": "a", "tags": ["x", "y"], "id": 1}), "")
        .unwrap();
    n.push_item(
        &root,
        json!({"id": 1, "_dlt_load_id": "ignored", "name": "a", "tags": ["x", "y"]}),
        "",
    )
    .unwrap();
    n.push_item(
        &root,
        json!({"id": 2, "z": {"y": 1, "x": [{"b": 2, "a": 1.5}]}, "a": "é", "n": null, "f": 1e20, "t": true}),
        "",
    )
    .unwrap();
    let files = n.finish().unwrap();
    let rows = read_rows(dir.path(), &files, "customers");
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["_dlt_id"].as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["vyO6DMrO2p4mGQ", "vyO6DMrO2p4mGQ", "emuyVkGymM6rYw"]);
    let tags = read_rows(dir.path(), &files, "customers__tags");
    assert_eq!(tags[0]["_dlt_id"].as_deref(), Some("auRb/VqUJclafg"));
    assert!(!tags[0].contains_key("_dlt_root_id"));

    // As dlt's schema: validity columns first, the row hash is no unique key.
    let table = &schema.tables["customers"];
    assert_eq!(
        columns(&schema, "customers")[..2],
        ["_dlt_valid_from", "_dlt_valid_to"]
    );
    let (from, to) = table.validity_columns().unwrap();
    assert_eq!((from.data_type, from.nullable), (DataType::Timestamp, true));
    assert_eq!(to.active_record_timestamp, None);
    let id = &table.columns["_dlt_id"];
    assert!(id.row_version && !id.unique && !id.row_key && !id.nullable);
    assert!(!schema.tables["customers__tags"]
        .columns
        .contains_key("_dlt_root_id"));
}

#[test]
fn scd2_with_a_version_column_keeps_random_row_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = Schema::new("p");
    let mut n = Normalizer::new(&mut schema, Naming::default(), "1", dir.path());
    let options = crate::resource::Scd2Options::default()
        .validity_column_names("ValidFrom", "valid_until")
        .active_record_timestamp("9999-12-31")
        .boundary_timestamp("2024-01-01")
        .row_version_column_name("Version");
    let root = n.prepare_root("t", &scd2_spec(options)).unwrap();
    n.push_item(&root, json!({"id": 1, "Version": "v1"}), "")
        .unwrap();
    n.push_item(&root, json!({"id": 1, "Version": "v1"}), "")
        .unwrap();
    let files = n.finish().unwrap();
    let rows = read_rows(dir.path(), &files, "t");
    assert_ne!(rows[0]["_dlt_id"], rows[1]["_dlt_id"]);
    let table = &schema.tables["t"];
    assert_eq!(
        columns(&schema, "t"),
        [
            "valid_from",
            "valid_until",
            "id",
            "version",
            "_dlt_load_id",
            "_dlt_id"
        ]
    );
    assert!(table.columns["version"].row_version && !table.columns["version"].nullable);
    assert!(table.columns["_dlt_id"].unique && !table.columns["_dlt_id"].row_version);
    assert_eq!(
        table.columns["valid_until"]
            .active_record_timestamp
            .as_deref(),
        Some("9999-12-31")
    );
    assert_eq!(table.boundary_timestamp.as_deref(), Some("2024-01-01"));
}

mod proptests;
