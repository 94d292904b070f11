//! What the filesystem destination writes: dlt's layout and file contents, merges appended,
//! replace and state restore by the commit markers, and errors of S3 named.

mod common;

use std::path::{Path, PathBuf};

use highwater::{ColumnHint, DataType, Incremental, Resource, WriteDisposition};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use common::destinations::{Kind, TestDestination};

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn events(ids: std::ops::RangeInclusive<i64>) -> Vec<Value> {
    ids.map(|i| {
        json!({
            "id": i,
            "at": format!("2024-01-0{}T10:00:00+02:00", 1 + i % 5),
            "local": "2024-01-01T08:00:00",
            "price": "1.25",
            "doc": {"nested": [i]},
            "tags": ["a", "b"],
        })
    })
    .collect()
}

fn resource(ids: std::ops::RangeInclusive<i64>) -> Resource {
    let hint = |data_type, timezone| ColumnHint {
        data_type: Some(data_type),
        timezone,
        ..ColumnHint::default()
    };
    Resource::from_items("events", events(ids))
        .column("local", hint(DataType::Timestamp, Some(false)))
        .column("price", hint(DataType::Decimal, None))
        .column("doc", hint(DataType::Json, None))
        .incremental(Incremental::new("id").unwrap().initial_value(0))
}

#[test]
fn a_load_writes_dlts_layout_and_file_contents() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(Kind::Filesystem, dir.path());
    let p = d.pipeline(dir.path(), "lake_pipe");
    let info = p.run(resource(1..=3)).unwrap();
    let load_id = &info.load_ids[0];
    let ds = dir.path().join("lake/data");

    assert_eq!(
        std::fs::read_to_string(ds.join("init")).unwrap(),
        r#"{"initial_version":2,"current_version":2}"#
    );
    // One file per package file: one here, more when the parallel normalizer splits the work.
    for table in ["events", "events__tags"] {
        let data = files(&ds.join(table));
        assert!(!data.is_empty(), "{table}: no file");
        for name in &data {
            let (id, file_id) = name
                .strip_suffix(".parquet")
                .and_then(|stem| stem.rsplit_once('.'))
                .unwrap_or_else(|| panic!("{table}: {name} is not <load_id>.<file_id>.parquet"));
            assert_eq!(id, load_id.as_str(), "{data:?}");
            assert!(
                file_id.len() == 10 && file_id.chars().all(|c| c.is_ascii_hexdigit()),
                "{data:?}"
            );
        }
    }

    let marker = read_json(&ds.join(format!("_dlt_loads/lake_pipe__{load_id}.jsonl")));
    assert_eq!(marker["load_id"], json!(load_id));
    assert_eq!(marker["schema_name"], "lake_pipe");
    assert_eq!(marker["status"], 0);
    assert!(marker["inserted_at"].as_str().unwrap().ends_with("+00:00"));
    let schema_hash = marker["schema_version_hash"].as_str().unwrap().to_string();

    let states = files(&ds.join("_dlt_pipeline_state"));
    assert_eq!(states.len(), 1);
    assert!(states[0].starts_with(&format!("lake_pipe__{load_id}__")));
    let state = read_json(&ds.join("_dlt_pipeline_state").join(&states[0]));
    assert_eq!(state["pipeline_name"], "lake_pipe");
    assert_eq!(state["_dlt_load_id"], json!(load_id));
    let decoded =
        highwater::state::decode_from_destination(state["state"].as_str().unwrap()).unwrap();
    assert_eq!(
        decoded["sources"]["lake_pipe"]["resources"]["events"]["incremental"]["id"]["last_value"],
        3
    );
    let versions = files(&ds.join("_dlt_version"));
    assert_eq!(versions.len(), 1);
    let version = read_json(&ds.join("_dlt_version").join(&versions[0]));
    assert_eq!(version["version_hash"], json!(schema_hash));
    let stored =
        highwater::schema::Schema::from_stored_json(version["schema"].as_str().unwrap()).unwrap();
    assert!(stored.tables.contains_key("events__tags"));

    // dlt's Arrow types, every column of the table, NOT NULL where the schema says so.
    let data = files(&ds.join("events"));
    let file = std::fs::File::open(ds.join("events").join(&data[0])).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let field = |name: &str| schema.field_with_name(name).unwrap().clone();
    assert_eq!(
        field("at").data_type().to_string(),
        "Timestamp(µs, \"UTC\")"
    );
    assert_eq!(field("local").data_type().to_string(), "Timestamp(µs)");
    assert_eq!(field("price").data_type().to_string(), "Decimal128(38, 9)");
    assert_eq!(field("doc").data_type().to_string(), "Utf8");
    assert!(!field("_dlt_id").is_nullable() && field("id").is_nullable());
    let rows: usize = data
        .iter()
        .map(|name| {
            let file = std::fs::File::open(ds.join("events").join(name)).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|batch| batch.unwrap().num_rows())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(rows, 3);

    // What a lakehouse engine reads: the instant in UTC, the naive time as given, JSON text.
    assert_eq!(
        d.rows(
            "SELECT CAST(\"at\" AS VARCHAR), CAST(\"local\" AS VARCHAR), CAST(price AS VARCHAR), doc FROM data.events WHERE id = 1"
        ),
        vec![vec![
            json!("2024-01-02 08:00:00+00"),
            json!("2024-01-01 08:00:00"),
            json!("1.250000000"),
            json!("{\"nested\":[1]}")
        ]]
    );
}

/// As on dlt's plain filesystem: a merge appends, and its tables are normalized as appended
/// ones (no `_dlt_root_id`).
fn merges_append(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(kind, dir.path());
    let p = d.pipeline(dir.path(), "merge_lake");
    let merge = |v: i64| {
        Resource::from_items("t", vec![json!({"id": 1, "v": v, "kids": [v]})])
            .write_disposition(WriteDisposition::Merge)
            .primary_key(["id"])
    };
    p.run(merge(1)).unwrap();
    p.run(merge(2)).unwrap();
    assert_eq!(
        d.rows("SELECT CAST(v AS VARCHAR) FROM data.t ORDER BY v"),
        vec![vec![json!("1")], vec![json!("2")]]
    );
    assert_eq!(d.row_count("data", "t__kids"), 2);
    let columns = d.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'data' AND table_name = 't__kids'",
    );
    assert!(
        !columns.contains(&vec![json!("_dlt_root_id")]),
        "{columns:?}"
    );
}

#[test]
fn merges_append_on_a_folder() {
    merges_append(Kind::Filesystem);
}

#[test]
fn merges_append_on_s3() {
    merges_append(Kind::S3);
}

#[test]
fn replace_keeps_only_the_new_loads_files_in_the_whole_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(Kind::Filesystem, dir.path());
    let p = d.pipeline(dir.path(), "replace_lake");
    let replace = |items: Vec<Value>| {
        Resource::from_items("t", items).write_disposition(WriteDisposition::Replace)
    };
    p.run(replace(vec![json!({"id": 1, "kids": [1, 2]})]))
        .unwrap();
    p.run(replace(vec![json!({"id": 2, "kids": [3]})])).unwrap();
    let last = p.run(replace(vec![json!({"id": 3})])).unwrap().load_ids[0].clone();
    let ds = dir.path().join("lake/data");
    let root = files(&ds.join("t"));
    assert_eq!(root.len(), 1);
    assert!(root[0].starts_with(&format!("{last}.")), "{root:?}");
    assert!(
        files(&ds.join("t__kids")).is_empty(),
        "children emptied too"
    );
    assert_eq!(
        d.rows("SELECT CAST(id AS VARCHAR) FROM data.t"),
        vec![vec![json!("3")]]
    );
}

#[test]
fn state_is_restored_only_from_committed_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(Kind::Filesystem, dir.path());
    let p = d.pipeline(dir.path(), "restore_lake");
    p.run(resource(1..=3)).unwrap();
    let second = p.run(resource(1..=5)).unwrap().load_ids[0].clone();
    // As if the second load died before its commit marker, and the working dir was lost.
    let marker: PathBuf = dir
        .path()
        .join(format!("lake/data/_dlt_loads/restore_lake__{second}.jsonl"));
    std::fs::remove_file(marker).unwrap();
    std::fs::remove_dir_all(dir.path().join("work")).unwrap();
    let again = d.pipeline(dir.path(), "restore_lake");
    again.run(resource(1..=3)).unwrap();
    let state = again.local_state().unwrap().unwrap();
    assert_eq!(
        state["sources"]["restore_lake"]["resources"]["events"]["incremental"]["id"]["last_value"],
        3,
        "the uncommitted load's state is not restored"
    );
}

#[test]
fn s3_errors_name_the_bucket_and_never_the_secret() {
    use highwater::destination::FilesystemConfig;
    use highwater::DestinationConfig;
    let dir = tempfile::tempdir().unwrap();
    let server = common::s3::server();
    let config = |bucket: &str, secret: &str| {
        let mut config = FilesystemConfig::new(&format!("s3://{bucket}/lake"));
        config.endpoint_url = Some(server.endpoint());
        config.region = Some("us-east-1".into());
        config.access_key_id = Some(common::s3::ACCESS_KEY.into());
        config.secret_access_key = Some(secret.into());
        DestinationConfig::Filesystem(config)
    };
    let run = |destination: DestinationConfig| {
        highwater::Pipeline::builder("s3_errors")
            .dataset("data")
            .destination(destination)
            .working_dir(dir.path().join(format!("work{}", rand_suffix())))
            .build()
            .unwrap()
            .run(Resource::from_items("t", vec![json!({"id": 1})]))
    };
    let err = run(config("no-such-bucket", common::s3::SECRET_KEY))
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://no-such-bucket/lake"), "{err}");
    let bucket = server.new_bucket();
    let err = run(config(&bucket, "wrong-secret-value"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("s3://{bucket}/lake")), "{err}");
    assert!(!err.contains("wrong-secret-value"), "{err}");
    // With the right key the same pipeline loads.
    run(config(&bucket, common::s3::SECRET_KEY)).unwrap();
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
