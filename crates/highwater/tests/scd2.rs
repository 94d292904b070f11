//! The `scd2` merge strategy on every destination that carries it out (DuckDB, PostgreSQL):
//! versions with exact validity intervals over inserts, updates, deletes and re-inserts, child
//! rows of each version, dlt's options, merge keys with an incremental, and the refusals (bad
//! options, Arrow items without a version column, the filesystem destination).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use highwater::destination::sql::load_time;
use highwater::{Incremental, Item, MergeStrategy, Resource, Scd2Options, WriteDisposition};
use serde_json::{json, Value};

use common::destinations::{Kind, TestDestination};
use common::timestamp_micros;

on!(four_runs_keep_every_version_with_exact_intervals: duckdb, postgres);
on!(active_record_and_boundary_timestamps_date_the_versions: duckdb, postgres);
on!(a_version_column_makes_versions_only_when_it_changes: duckdb, postgres);
on!(a_merge_key_retires_only_the_keys_an_incremental_load_holds: duckdb, postgres);
on!(bad_options_are_refused_before_anything_is_extracted: duckdb, postgres);

fn setup(kind: Kind, dir: &std::path::Path) -> (TestDestination, highwater::Pipeline) {
    let destination = TestDestination::new(kind, dir);
    let pipeline = destination.pipeline(dir, "history");
    (destination, pipeline)
}

fn customers(items: Vec<Value>, options: Scd2Options) -> Resource {
    Resource::from_items("customers", items).scd2(options)
}

/// How many columns named `column` table `data.table` has (0 or 1).
fn column_count(d: &TestDestination, table: &str, column: &str) -> i64 {
    d.count(&format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'data' AND table_name = '{table}' AND column_name = '{column}'"
    ))
}

/// Microseconds of a load's boundary: its creation time, which its load id names.
fn boundary_of(load_id: &str) -> i64 {
    load_time(load_id).unwrap().timestamp_micros()
}

/// Microseconds of a timestamp read as text, `None` for NULL.
fn micros(value: &Value) -> Option<i64> {
    value.as_str().map(timestamp_micros)
}

/// The root rows as (id, name, `_dlt_id`, valid from, valid to), ordered by id and start.
fn versions(
    d: &TestDestination,
    from: &str,
    to: &str,
) -> Vec<(String, String, String, i64, Option<i64>)> {
    d.rows(&format!(
        "SELECT CAST(id AS VARCHAR), name, _dlt_id, CAST({from} AS VARCHAR), CAST({to} AS VARCHAR) FROM data.customers ORDER BY id, {from}, name"
    ))
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().unwrap().to_string(),
            r[1].as_str().unwrap().to_string(),
            r[2].as_str().unwrap().to_string(),
            micros(&r[3]).unwrap(),
            micros(&r[4]),
        )
    })
    .collect()
}

/// Each version's tags in list order, by the version's `_dlt_id`.
fn tags_by_version(d: &TestDestination) -> Vec<(String, String)> {
    d.rows(
        "SELECT _dlt_parent_id, string_agg(value, ',' ORDER BY _dlt_list_idx) FROM data.customers__tags GROUP BY _dlt_parent_id ORDER BY 1",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().unwrap().to_string(),
            r[1].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

/// Insert, update (a field and a child list), delete, re-insert: every interval exact, child
/// rows once per version, unchanged rows untouched, the row hash dlt's.
fn four_runs_keep_every_version_with_exact_intervals(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path());
    let c1 = json!({"id": 1, "name": "a", "tags": ["x", "y"]});
    let c2 = json!({"id": 2, "name": "b", "tags": ["z"]});
    let c3 = json!({"id": 3, "name": "c"});
    let c1_renamed = json!({"id": 1, "name": "a2", "tags": ["x", "y"]});
    let c2_more_tags = json!({"id": 2, "name": "b", "tags": ["z", "w"]});
    let runs = [
        vec![c1.clone(), c2.clone(), c3.clone()],
        vec![c1_renamed.clone(), c2_more_tags, c3.clone()],
        vec![c1_renamed.clone(), c3.clone()],
        vec![c1_renamed, c2, c3],
    ];
    let mut t = Vec::new();
    for (i, items) in runs.into_iter().enumerate() {
        if i == 2 {
            // A lost working directory: schema and state come back from the destination.
            std::fs::remove_dir_all(dir.path().join("work")).unwrap();
        }
        let info = p.run(customers(items, Scd2Options::default())).unwrap();
        assert_eq!(info.load_ids.len(), 1);
        t.push(boundary_of(&info.load_ids[0]));
    }
    // Row hashes as dlt 1.31.0 computes them for the same items.
    let (a, a2, b, b_zw, c) = (
        "vyO6DMrO2p4mGQ",
        "7Kheu3ndSDIIgQ",
        "ZZ0KBv005EOz2g",
        "xKFIFFhrGz3vzA",
        "8t8rbQ1lW6OyXg",
    );
    let v = |id: &str, name: &str, hash: &str, from: i64, to: Option<i64>| {
        (id.to_string(), name.to_string(), hash.to_string(), from, to)
    };
    assert_eq!(
        versions(&d, "_dlt_valid_from", "_dlt_valid_to"),
        vec![
            v("1", "a", a, t[0], Some(t[1])),
            v("1", "a2", a2, t[1], None),
            v("2", "b", b, t[0], Some(t[1])),
            v("2", "b", b_zw, t[1], Some(t[2])),
            // Re-inserted: a new version with the first one's hash.
            v("2", "b", b, t[3], None),
            v("3", "c", c, t[0], None),
        ]
    );
    // Child rows came only with new versions, once each; the re-inserted version shares its
    // rows with the first one (their ids derive from the same hash).
    let tags = tags_by_version(&d);
    let mut expected = vec![
        (a.to_string(), "x,y".to_string()),
        (a2.to_string(), "x,y".to_string()),
        (b.to_string(), "z".to_string()),
        (b_zw.to_string(), "z,w".to_string()),
    ];
    expected.sort();
    assert_eq!(tags, expected);
    assert_eq!(
        d.count("SELECT count(*) - count(DISTINCT _dlt_id) FROM data.customers__tags"),
        0
    );
    // As dlt: scd2 propagates no root key.
    assert_eq!(column_count(&d, "customers__tags", "_dlt_root_id"), 0);

    // The same snapshot again changes nothing but adds a load.
    let before = versions(&d, "_dlt_valid_from", "_dlt_valid_to");
    let again = vec![
        json!({"id": 1, "name": "a2", "tags": ["x", "y"]}),
        json!({"id": 2, "name": "b", "tags": ["z"]}),
        json!({"id": 3, "name": "c"}),
    ];
    p.run(customers(again, Scd2Options::default())).unwrap();
    assert_eq!(versions(&d, "_dlt_valid_from", "_dlt_valid_to"), before);
    assert_eq!(d.count("SELECT count(*) FROM data.customers__tags"), 7);
}

/// `active_record_timestamp` ends active versions instead of NULL; `boundary_timestamp` dates
/// each load's closes and opens; custom validity column names.
fn active_record_and_boundary_timestamps_date_the_versions(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path());
    let options = |boundary: &str| {
        Scd2Options::default()
            .validity_column_names("valid_from", "valid_to")
            .active_record_timestamp("9999-12-31")
            .boundary_timestamp(boundary)
    };
    let runs = [
        (
            "2024-01-01",
            vec![json!({"id": 1, "name": "a"}), json!({"id": 2, "name": "b"})],
        ),
        (
            "2024-02-01T12:00:00+02:00",
            vec![
                json!({"id": 1, "name": "a2"}),
                json!({"id": 2, "name": "b"}),
            ],
        ),
        ("2024-03-01T00:00:00Z", vec![json!({"id": 1, "name": "a2"})]),
        (
            "2024-04-01",
            vec![
                json!({"id": 1, "name": "a2"}),
                json!({"id": 2, "name": "b"}),
            ],
        ),
    ];
    for (boundary, items) in runs {
        p.run(customers(items, options(boundary))).unwrap();
    }
    let at = |s: &str| timestamp_micros(s);
    let end = Some(at("9999-12-31T00:00:00Z"));
    let rows: Vec<(String, String, i64, Option<i64>)> = versions(&d, "valid_from", "valid_to")
        .into_iter()
        .map(|(id, name, _, from, to)| (id, name, from, to))
        .collect();
    let v = |id: &str, name: &str, from: &str, to: Option<i64>| {
        (id.to_string(), name.to_string(), at(from), to)
    };
    assert_eq!(
        rows,
        vec![
            v(
                "1",
                "a",
                "2024-01-01T00:00:00Z",
                Some(at("2024-02-01T10:00:00Z"))
            ),
            v("1", "a2", "2024-02-01T10:00:00Z", end),
            v(
                "2",
                "b",
                "2024-01-01T00:00:00Z",
                Some(at("2024-03-01T00:00:00Z"))
            ),
            v("2", "b", "2024-04-01T00:00:00Z", end),
        ]
    );
    assert_eq!(column_count(&d, "customers", "_dlt_valid_from"), 0);
    // The schema keeps dlt's hints.
    let schema = p.local_schema().unwrap().unwrap();
    let table = &schema.tables["customers"];
    assert_eq!(table.boundary_timestamp.as_deref(), Some("2024-04-01"));
    assert_eq!(
        table.columns["valid_to"].active_record_timestamp.as_deref(),
        Some("9999-12-31")
    );
}

/// With `row_version_column_name`, only a change of that column makes a new version, and a
/// load row that makes none brings no child rows.
fn a_version_column_makes_versions_only_when_it_changes(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path());
    let options = Scd2Options::default().row_version_column_name("version");
    let runs = [
        vec![json!({"id": 1, "version": 1, "name": "a", "tags": ["x"]})],
        // Name and tags change, the version does not: nothing happens.
        vec![json!({"id": 1, "version": 1, "name": "other", "tags": ["y", "z"]})],
        vec![json!({"id": 1, "version": 2, "name": "a2", "tags": ["w"]})],
    ];
    let mut t = Vec::new();
    for items in runs {
        let info = p.run(customers(items, options.clone())).unwrap();
        t.push(boundary_of(&info.load_ids[0]));
    }
    let rows: Vec<(String, String, i64, Option<i64>)> =
        versions(&d, "_dlt_valid_from", "_dlt_valid_to")
            .into_iter()
            .map(|(id, name, _, from, to)| (id, name, from, to))
            .collect();
    assert_eq!(
        rows,
        vec![
            ("1".into(), "a".into(), t[0], Some(t[2])),
            ("1".into(), "a2".into(), t[2], None),
        ]
    );
    let tags = d.rows(
        "SELECT c.name, t.value FROM data.customers__tags AS t JOIN data.customers AS c ON c._dlt_id = t._dlt_parent_id ORDER BY 1, 2",
    );
    assert_eq!(
        tags,
        vec![vec![json!("a"), json!("x")], vec![json!("a2"), json!("w")]]
    );
    assert_eq!(d.count("SELECT count(*) FROM data.customers__tags"), 2);
    // A row without the version column is an error naming it; nothing changes.
    let err = p
        .run(customers(vec![json!({"id": 1, "name": "a3"})], options))
        .unwrap_err()
        .to_string();
    assert!(err.contains("version"), "{err}");
    assert_eq!(d.count("SELECT count(*) FROM data.customers"), 2);
}

/// An incremental scd2 load with a merge key: only versions whose key is in the load are
/// retired; a compound key is compared column by column (dlt concatenates: `(12, "")` and
/// `(1, "2")` would be one key).
fn a_merge_key_retires_only_the_keys_an_incremental_load_holds(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path());
    let snapshot = |rows: Vec<Value>| {
        Resource::from_items("customers", rows)
            .scd2(Scd2Options::default())
            .merge_key(["id", "name"])
            .incremental(Incremental::new("updated").unwrap())
    };
    let first = vec![
        json!({"id": 1, "name": "a", "updated": 1, "v": 1}),
        json!({"id": 12, "name": "", "updated": 1, "v": 1}),
        json!({"id": 3, "name": "c", "updated": 1, "v": 1}),
    ];
    let l1 = p.run(snapshot(first)).unwrap().load_ids[0].clone();
    // The source returns every row; the cursor lets only the changed ones through.
    let second = vec![
        json!({"id": 1, "name": "a", "updated": 1, "v": 1}),
        json!({"id": 12, "name": "", "updated": 1, "v": 1}),
        json!({"id": 3, "name": "c", "updated": 2, "v": 2}),
        json!({"id": 1, "name": "2", "updated": 2, "v": 1}),
    ];
    let l2 = p.run(snapshot(second)).unwrap().load_ids[0].clone();
    let (t1, t2) = (boundary_of(&l1), boundary_of(&l2));
    let rows: Vec<Vec<Value>> = d.rows(
        "SELECT CAST(id AS VARCHAR), name, CAST(v AS VARCHAR), CAST(_dlt_valid_from AS VARCHAR), CAST(_dlt_valid_to AS VARCHAR) FROM data.customers ORDER BY id, name, v",
    );
    let mut got: Vec<(String, String, String, i64, Option<i64>)> = rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().into(),
                r[1].as_str().unwrap().into(),
                r[2].as_str().unwrap().into(),
                micros(&r[3]).unwrap(),
                micros(&r[4]),
            )
        })
        .collect();
    // By number (PostgreSQL orders by the text the query casts the id to).
    got.sort_by_key(|r| (r.0.parse::<i64>().unwrap(), r.1.clone(), r.2.clone()));
    let v = |id: &str, name: &str, val: &str, from: i64, to: Option<i64>| {
        (id.to_string(), name.to_string(), val.to_string(), from, to)
    };
    assert_eq!(
        got,
        vec![
            v("1", "2", "1", t2, None),
            v("1", "a", "1", t1, None),
            v("3", "c", "1", t1, Some(t2)),
            v("3", "c", "2", t2, None),
            v("12", "", "1", t1, None),
        ]
    );
}

/// Bad options are errors naming the option, before the resource is called; so is an Arrow
/// resource without a version column. Nothing reaches the destination.
fn bad_options_are_refused_before_anything_is_extracted(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(kind, dir.path());
    for (options, named) in [
        (
            Scd2Options::default().boundary_timestamp("last tuesday"),
            "boundary_timestamp",
        ),
        (
            Scd2Options::default().active_record_timestamp("never"),
            "active_record_timestamp",
        ),
        (
            Scd2Options::default().validity_column_names("same", "same"),
            "validity_column_names",
        ),
        (
            Scd2Options::default()
                .validity_column_names("from", "to")
                .row_version_column_name("to"),
            "row_version_column_name",
        ),
    ] {
        let called = Arc::new(AtomicBool::new(false));
        let flag = called.clone();
        let resource = Resource::new("customers", move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(vec![Ok(Item::Json(json!({"id": 1})))].into_iter())
        })
        .scd2(options);
        let err = p.run(resource).unwrap_err().to_string();
        assert!(err.contains(named) && err.contains("customers"), "{err}");
        assert!(
            !called.load(Ordering::SeqCst),
            "{named}: the resource was called"
        );
    }

    use highwater::arrow::array::{ArrayRef, Int64Array};
    use highwater::arrow::record_batch::RecordBatch;
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
    let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
    let arrow = Resource::new("customers", move |_| {
        Ok(vec![Ok(Item::Arrow(batch.clone()))].into_iter())
    })
    .scd2(Scd2Options::default());
    let err = p.run(arrow).unwrap_err().to_string();
    assert!(err.contains("row_version_column_name"), "{err}");
    assert!(!d.table_exists("data", "customers"));
}

/// The filesystem destination cannot update rows: scd2 is refused before the resource runs,
/// naming what to use instead; so are the replace strategies that stage.
#[test]
fn the_filesystem_refuses_scd2_and_staging_replaces_before_extracting() {
    let dir = tempfile::tempdir().unwrap();
    let (d, p) = setup(Kind::Filesystem, dir.path());
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    let resource = move |name: &str| {
        let flag = flag.clone();
        Resource::new(name, move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(vec![Ok(Item::Json(json!({"id": 1})))].into_iter())
        })
    };
    let err = p
        .run(resource("customers").scd2(Scd2Options::default()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scd2")
            && err.contains("filesystem")
            && err.contains("duckdb or postgres")
            && err.contains("append"),
        "{err}"
    );
    let err = p
        .run(
            resource("snapshot")
                .write_disposition(WriteDisposition::Replace)
                .replace_strategy(highwater::ReplaceStrategy::InsertFromStaging),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("insert-from-staging") && err.contains("truncate-and-insert"),
        "{err}"
    );
    assert!(!called.load(Ordering::SeqCst));
    assert_eq!(d.row_count("data", "customers"), 0);
    // A merge with another strategy still appends there, as on dlt's filesystem.
    p.run(
        resource("events")
            .write_disposition(WriteDisposition::Merge)
            .merge_strategy(MergeStrategy::DeleteInsert),
    )
    .unwrap();
    assert_eq!(d.row_count("data", "events"), 1);
}
