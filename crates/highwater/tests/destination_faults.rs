//! A destination that fails — unreachable, refusing us, missing, or holding a table someone
//! altered to a clashing type — gives an error naming it, and leaves the data, the destination's
//! state and the local state as they were; the same pipeline finishes the work once the
//! destination is back. One suite over every destination.

#[macro_use]
mod common;

use highwater::destination::FilesystemConfig;
use highwater::{DestinationConfig, Pipeline, Resource};
use serde_json::{json, Value};

use common::destinations::{Kind, TestDestination};

on!(an_unreachable_or_refusing_destination_changes_nothing: duckdb, postgres, filesystem, s3);
on!(a_table_altered_to_a_clashing_type_is_a_named_error: duckdb, postgres);
// A lake has no table to alter: each load writes new files in the schema's types, and readers
// take a changed type file by file (`union_by_name`), so there is no clash to refuse.

fn rows(ids: std::ops::RangeInclusive<i64>) -> Resource {
    Resource::from_items(
        "t",
        ids.map(|i| json!({"id": i, "v": i * 10}))
            .collect::<Vec<Value>>(),
    )
    .incremental(highwater::Incremental::new("id").unwrap().initial_value(0))
}

fn pipeline(dir: &std::path::Path, destination: DestinationConfig) -> Pipeline {
    Pipeline::builder("faults")
        .dataset("data")
        .destination(destination)
        .working_dir(dir.join("work"))
        .build()
        .unwrap()
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Ways `d` fails, each with the text its error must hold to name the destination.
fn broken(
    d: &TestDestination,
    dir: &std::path::Path,
) -> Vec<(&'static str, DestinationConfig, String)> {
    // A regular file where a folder must be: no one, not even root, can create beneath it.
    let blocker = dir.join("not-a-folder");
    std::fs::write(&blocker, "x").unwrap();
    match d.kind {
        Kind::DuckDb => {
            let path = blocker.join("db.duckdb");
            vec![(
                "a file that cannot be created",
                DestinationConfig::duckdb(&path),
                path.display().to_string(),
            )]
        }
        Kind::Postgres => {
            let url = d.spec();
            let database = url
                .rsplit('/')
                .next()
                .and_then(|tail| tail.split('?').next())
                .unwrap()
                .to_string();
            // A role that may connect but not create the dataset's schema (PostgreSQL 15 grants
            // CREATE on a database to its owner only).
            d.pg()
                .batch_execute(
                    "DO $$ BEGIN CREATE ROLE hw_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                )
                .unwrap();
            let port = url
                .split("127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap()
                .to_string();
            let parse = |url: &str| {
                DestinationConfig::parse(url, Default::default(), std::path::Path::new("."))
                    .unwrap()
            };
            vec![
                (
                    "a server that is down",
                    parse(&url.replace(&format!(":{port}/"), &format!(":{}/", closed_port()))),
                    database.clone(),
                ),
                (
                    "a role without the right to create the dataset",
                    parse(&url.replace("postgres@", "hw_reader@")),
                    "hw_reader".to_string(),
                ),
            ]
        }
        Kind::Filesystem => {
            let path = blocker.join("lake");
            vec![(
                "a folder that cannot be created",
                DestinationConfig::Filesystem(FilesystemConfig::new(&path.display().to_string())),
                path.display().to_string(),
            )]
        }
        Kind::S3 => {
            let DestinationConfig::Filesystem(good) = d.config() else {
                unreachable!("an S3 destination is a filesystem one")
            };
            let bucket = good.bucket_url.clone();
            let mut down = good.clone();
            down.endpoint_url = Some(format!("http://127.0.0.1:{}", closed_port()));
            let mut denied = good.clone();
            denied.secret_access_key = Some("not-the-secret".into());
            let mut missing = good.clone();
            missing.bucket_url = "s3://no-such-bucket-here/lake".into();
            vec![
                (
                    "a server that is down",
                    DestinationConfig::Filesystem(down),
                    bucket.clone(),
                ),
                (
                    "a wrong secret key",
                    DestinationConfig::Filesystem(denied),
                    bucket,
                ),
                (
                    "a bucket that does not exist",
                    DestinationConfig::Filesystem(missing),
                    "s3://no-such-bucket-here/lake".into(),
                ),
            ]
        }
    }
}

/// What the destination and the working dir hold: rows of `t`, committed state rows and loads,
/// and the local state.
fn snapshot(d: &TestDestination, p: &Pipeline) -> (Vec<Vec<Value>>, i64, i64, Option<Value>) {
    (
        d.rows("SELECT CAST(id AS VARCHAR), CAST(v AS VARCHAR) FROM data.t ORDER BY id"),
        d.count("SELECT count(*) FROM data._dlt_pipeline_state"),
        d.count("SELECT count(*) FROM data._dlt_loads"),
        p.local_state().unwrap(),
    )
}

fn an_unreachable_or_refusing_destination_changes_nothing(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(kind, dir.path());
    let good = pipeline(dir.path(), d.config());
    good.run(rows(1..=3)).unwrap();
    let before = snapshot(&d, &good);

    for (what, config, named) in broken(&d, dir.path()) {
        let bad = pipeline(dir.path(), config);
        let err = bad.run(rows(1..=5)).expect_err(what).to_string();
        assert!(err.contains(&named), "{kind:?}, {what}: {err}");
        assert!(
            !err.contains("not-the-secret") && !err.contains(common::s3::SECRET_KEY),
            "{kind:?}, {what}: a secret shown: {err}"
        );
        assert_eq!(
            snapshot(&d, &good),
            before,
            "{kind:?}, {what}: data and state as they were"
        );
    }

    // The destination back, the same working dir: rows 4 and 5 arrive, once.
    good.run(rows(1..=5)).unwrap();
    let ids: Vec<Vec<Value>> = d.rows("SELECT CAST(id AS VARCHAR) FROM data.t ORDER BY id");
    assert_eq!(
        ids,
        (1..=5)
            .map(|i| vec![json!(i.to_string())])
            .collect::<Vec<_>>()
    );
    assert_eq!(good.run(rows(1..=5)).unwrap().load_ids.len(), 0);
}

fn a_table_altered_to_a_clashing_type_is_a_named_error(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(kind, dir.path());
    let p = pipeline(dir.path(), d.config());
    p.run(rows(1..=3)).unwrap();
    // Someone else turns `v` into a date.
    let alter = "ALTER TABLE data.t DROP COLUMN v; ALTER TABLE data.t ADD COLUMN v DATE";
    match kind {
        Kind::DuckDb => {
            let conn = common::open(&dir.path().join("db.duckdb"));
            conn.execute_batch(alter).unwrap();
        }
        Kind::Postgres => d.pg().batch_execute(alter).unwrap(),
        _ => unreachable!("only databases have tables to alter"),
    }
    let before = snapshot(&d, &p);
    let err = p.run(rows(1..=5)).unwrap_err().to_string();
    assert!(
        err.contains("\"data\".\"t\"")
            && (err.to_lowercase().contains("date") || err.contains("column v")),
        "{kind:?}: the error names the table and the clash: {err}"
    );
    assert_eq!(
        snapshot(&d, &p),
        before,
        "{kind:?}: data and state as they were"
    );
}
