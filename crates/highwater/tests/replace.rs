//! The replace strategies (`truncate-and-insert`, `insert-from-staging`, `staging-optimized`)
//! on every destination that carries them out (DuckDB, PostgreSQL): each replaces a table and
//! all its child tables, and a reader on another connection never sees an empty or half-filled
//! table while the load stands where the old rows are gone from its own view: it sees the old
//! rows, or (waiting for the swap's lock) the new ones.

#[macro_use]
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use highwater::destination::DuckDbConfig;
use highwater::{DestinationConfig, Pipeline, ReplaceStrategy, Resource, WriteDisposition};
use serde_json::{json, Value};

use common::destinations::{Kind, TestDestination};

on!(truncate_and_insert: duckdb, postgres);
on!(insert_from_staging: duckdb, postgres);
on!(staging_optimized: duckdb, postgres);
on!(a_resource_strategy_overrides_the_pipelines: duckdb, postgres);

/// A connection of its own to the destination's database, as another application has.
enum Reader {
    DuckDb(duckdb::Connection),
    Postgres(postgres::Client),
}

impl Reader {
    fn count(&mut self, sql: &str) -> i64 {
        match self {
            Reader::DuckDb(conn) => conn
                .query_row(sql, [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Reader::Postgres(client) => client
                .query_one(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0),
        }
    }

    fn exists(&mut self, schema: &str, table: &str) -> bool {
        self.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = '{table}'"
        )) > 0
    }

    /// Rows of the table and of its child table.
    fn counts(&mut self) -> (i64, i64) {
        (
            self.count("SELECT count(*) FROM data.t"),
            self.count("SELECT count(*) FROM data.t__kids"),
        )
    }
}

/// The destination, a pipeline loading into it with `strategy`, and a reader on another
/// connection. DuckDB allows one process per file, so the pipeline loads through the
/// application's open database (`DuckDbConfig::shared`) and the reader is another connection
/// to it.
fn setup(
    kind: Kind,
    dir: &std::path::Path,
    strategy: Option<ReplaceStrategy>,
) -> (TestDestination, Pipeline, Reader) {
    let d = TestDestination::new(kind, dir);
    let (config, reader) = match kind {
        Kind::DuckDb => {
            let conn = duckdb::Connection::open(d.duckdb_path()).unwrap();
            let config = DuckDbConfig::shared(&conn).unwrap();
            (DestinationConfig::DuckDb(config), Reader::DuckDb(conn))
        }
        _ => (d.config(), Reader::Postgres(d.pg())),
    };
    let mut builder = Pipeline::builder("replace")
        .dataset("data")
        .destination(config)
        .working_dir(dir.join("work"));
    if let Some(strategy) = strategy {
        builder = builder.replace_strategy(strategy);
    }
    (d, builder.build().unwrap(), reader)
}

/// `rows` items, each with `kids` child rows.
fn snapshot(rows: i64, kids: i64) -> Resource {
    let items: Vec<Value> = (0..rows)
        .map(|i| json!({"id": i, "kids": (0..kids).map(|k| json!({"k": k})).collect::<Vec<_>>()}))
        .collect();
    Resource::from_items("t", items).write_disposition(WriteDisposition::Replace)
}

/// What a reader saw at the point where the load's own view of the tables is empty.
type Seen = Rc<RefCell<Vec<(i64, i64)>>>;

/// Runs `resource` while a reader thread counts the tables each time the load reaches
/// `replace-emptied`; returns the counts it saw. The load waits for the reader a while, then
/// goes on: a reader waiting for a lock answers after the commit.
fn run_watched(p: &Pipeline, resource: Resource, reader: Reader) -> (Vec<(i64, i64)>, Reader) {
    let (ask, asked) = mpsc::channel::<bool>();
    let (tell, told) = mpsc::channel::<(i64, i64)>();
    let thread = std::thread::spawn(move || {
        let mut reader = reader;
        while let Ok(true) = asked.recv() {
            tell.send(reader.counts()).unwrap();
        }
        reader
    });
    let seen: Seen = Rc::default();
    let waiting = Rc::new(RefCell::new(0));
    let (seen_in, waiting_in, ask_in) = (seen.clone(), waiting.clone(), ask.clone());
    let told = Rc::new(told);
    let told_in = told.clone();
    highwater::observe_points(
        move |point| {
            if point != "replace-emptied" {
                return;
            }
            ask_in.send(true).unwrap();
            match told_in.recv_timeout(Duration::from_secs(3)) {
                Ok(counts) => seen_in.borrow_mut().push(counts),
                Err(_) => *waiting_in.borrow_mut() += 1,
            }
        },
        || p.run(resource).unwrap(),
    );
    for _ in 0..*waiting.borrow() {
        seen.borrow_mut().push(told.recv().unwrap());
    }
    ask.send(false).unwrap();
    let reader = thread.join().unwrap();
    let seen = seen.borrow().clone();
    (seen, reader)
}

/// Three loads: a table with children, a bigger one, one without children (the child table is
/// emptied too); the reader sees old or new rows, never fewer, never a mix.
fn replaces_watched(kind: Kind, strategy: ReplaceStrategy) {
    let dir = tempfile::tempdir().unwrap();
    let (_d, p, mut reader) = setup(kind, dir.path(), Some(strategy));
    p.run(snapshot(3, 2)).unwrap();
    assert_eq!(reader.counts(), (3, 6));
    let (seen, back) = run_watched(&p, snapshot(5, 1), reader);
    reader = back;
    assert_eq!(
        seen.len(),
        1,
        "{strategy:?}: the load reached replace-emptied once"
    );
    assert!(
        seen[0] == (3, 6) || seen[0] == (5, 5),
        "{strategy:?}: a reader saw {:?} mid-load",
        seen[0]
    );
    assert_eq!(reader.counts(), (5, 5));
    let (seen, back) = run_watched(&p, snapshot(2, 0), reader);
    reader = back;
    assert!(
        seen == [(5, 5)] || seen == [(2, 0)],
        "{strategy:?}: a reader saw {seen:?} mid-load"
    );
    assert_eq!(reader.counts(), (2, 0));

    // The staging strategies went through `data_staging` and left no table there.
    let staged = reader.count(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'data_staging'",
    ) > 0;
    assert_eq!(staged, strategy.stages(), "{strategy:?}");
    assert!(!reader.exists("data_staging", "t") && !reader.exists("data_staging", "t__kids"));
    // A table moved in from staging keeps the final table's NOT NULL columns.
    assert_eq!(
        reader.count(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'data' AND table_name = 't' AND column_name IN ('_dlt_id', '_dlt_load_id') AND is_nullable = 'NO'"
        ),
        2,
        "{strategy:?}"
    );
}

fn truncate_and_insert(kind: Kind) {
    replaces_watched(kind, ReplaceStrategy::TruncateAndInsert);
}

fn insert_from_staging(kind: Kind) {
    replaces_watched(kind, ReplaceStrategy::InsertFromStaging);
}

fn staging_optimized(kind: Kind) {
    replaces_watched(kind, ReplaceStrategy::StagingOptimized);
}

/// A resource's own strategy wins over the pipeline's: here it loads without staging.
fn a_resource_strategy_overrides_the_pipelines(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (_d, p, mut reader) = setup(kind, dir.path(), Some(ReplaceStrategy::StagingOptimized));
    for rows in [3, 4] {
        p.run(snapshot(rows, 1).replace_strategy(ReplaceStrategy::TruncateAndInsert))
            .unwrap();
    }
    assert_eq!(reader.counts(), (4, 4));
    assert_eq!(
        reader.count(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'data_staging'"
        ),
        0
    );
    let schema = p.local_schema().unwrap().unwrap();
    assert_eq!(
        schema.tables["t"].replace_strategy,
        Some(ReplaceStrategy::TruncateAndInsert)
    );
}
