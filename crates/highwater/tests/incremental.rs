//! Incremental loading over several runs of real pipelines into DuckDB: the behaviours of dlt's
//! incremental documentation (pushing the range into a request, stopping early on sorted APIs,
//! boundary dedup, backfills, lag, external schedulers, refresh).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use highwater::{
    Hints, Incremental, Interval, Item, OnCursorMissing, Pipeline, Refresh, Resource, RowOrder,
    RunOptions, WriteDisposition,
};
use serde_json::{json, Value};

fn pipeline(dir: &Path) -> Pipeline {
    common::pipeline(dir, "inc")
}

fn count(dir: &Path, sql: &str) -> i64 {
    common::count(&common::open(&dir.join("db.duckdb")), sql)
}

fn loaded(info: &highwater::LoadInfo, table: &str) -> u64 {
    info.tables.get(table).copied().unwrap_or(0)
}

/// A paged API over `rows`; counts the pages it serves.
fn paged(
    name: &str,
    rows: Vec<Value>,
    page_size: usize,
    pages_served: Arc<AtomicUsize>,
) -> Resource {
    Resource::new(name, move |_| {
        let pages: Vec<Vec<Value>> = rows.chunks(page_size).map(<[Value]>::to_vec).collect();
        let served = pages_served.clone();
        Ok(pages.into_iter().map(move |page| {
            served.fetch_add(1, Ordering::SeqCst);
            Ok(Item::Page(page))
        }))
    })
}

#[test]
fn an_api_that_ignores_the_cursor_loads_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let rows = |n: i64| {
        (1..=n)
            .map(|i| json!({"id": i, "updated": 100 + i / 3}))
            .collect::<Vec<_>>()
    };
    let make = |n| {
        paged("ev", rows(n), 4, Arc::new(AtomicUsize::new(0)))
            .primary_key(["id"])
            .incremental(Incremental::new("updated").unwrap().initial_value(0))
    };
    assert_eq!(loaded(&p.run(make(10)).unwrap(), "ev"), 10);
    assert!(
        p.run(make(10)).unwrap().load_ids.is_empty(),
        "same pages again: nothing new"
    );
    // Two new rows, one sharing the boundary value with rows already loaded.
    assert_eq!(loaded(&p.run(make(12)).unwrap(), "ev"), 2);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 12);
    assert_eq!(
        count(dir.path(), "SELECT count(DISTINCT id) FROM data.ev"),
        12
    );
}

#[test]
fn a_descending_api_stops_once_the_start_is_passed() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let rows: Vec<Value> = (1..=30).rev().map(|i| json!({"id": i, "ts": i})).collect();
    let pages = Arc::new(AtomicUsize::new(0));
    let make = |pages: Arc<AtomicUsize>| {
        paged("ev", rows.clone(), 10, pages)
            .primary_key(["id"])
            .incremental(
                Incremental::new("ts")
                    .unwrap()
                    .initial_value(15)
                    .row_order(RowOrder::Desc),
            )
    };
    let info = p.run(make(pages.clone())).unwrap();
    assert_eq!(loaded(&info, "ev"), 16, "15..=30");
    assert_eq!(
        pages.load(Ordering::SeqCst),
        2,
        "the page holding the start value is the last one pulled"
    );
    let pages = Arc::new(AtomicUsize::new(0));
    assert!(p.run(make(pages.clone())).unwrap().load_ids.is_empty());
    assert_eq!(pages.load(Ordering::SeqCst), 1);
}

#[test]
fn the_resource_reads_its_range_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let make = |n: i64, seen: Arc<std::sync::Mutex<Vec<Value>>>| {
        Resource::new("ev", move |ctx| {
            let inc = ctx.incremental().expect("bound incremental").clone();
            // Push the start into the "request": serve only rows from it on.
            let since = inc.start_value().and_then(|v| v.as_i64()).unwrap_or(0);
            seen.lock().unwrap().push(json!(since));
            let rows: Vec<Value> = (1..=n)
                .filter(|i| *i >= since)
                .map(|i| json!({"id": i, "ts": i}))
                .collect();
            Ok(rows.into_iter().map(move |r| {
                let out = Ok(Item::Json(r));
                // last_value moves with every kept item.
                let _ = inc.last_value();
                out
            }))
        })
        .primary_key(["id"])
        .incremental(Incremental::new("ts").unwrap().initial_value(1))
    };
    p.run(make(5, seen.clone())).unwrap();
    p.run(make(8, seen.clone())).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![json!(1), json!(5)]);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 8);
}

#[test]
fn end_value_makes_a_stateless_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let rows: Vec<Value> = (1..=20).map(|i| json!({"id": i, "ts": i})).collect();
    let backfill = |start: i64, end: i64| {
        Resource::from_items("ev", rows.clone()).incremental(
            Incremental::new("ts")
                .unwrap()
                .initial_value(start)
                .end_value(end),
        )
    };
    assert_eq!(loaded(&p.run(backfill(1, 11)).unwrap(), "ev"), 10);
    assert_eq!(loaded(&p.run(backfill(11, 21)).unwrap(), "ev"), 10);
    assert!(
        p.local_state().unwrap().is_none(),
        "a backfill writes no state"
    );
    assert_eq!(
        count(dir.path(), "SELECT count(DISTINCT ts) FROM data.ev"),
        20
    );
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM data._dlt_pipeline_state"),
        0
    );
}

#[test]
fn missing_cursor_values_in_each_mode() {
    let rows = vec![
        json!({"id": 1, "ts": 5}),
        json!({"id": 2}),
        json!({"id": 3, "ts": null}),
    ];
    for (mode, expected) in [
        (OnCursorMissing::Include, Some(3)),
        (OnCursorMissing::Exclude, Some(1)),
        (OnCursorMissing::Raise, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = Resource::from_items("ev", rows.clone()).incremental(
            Incremental::new("ts")
                .unwrap()
                .on_cursor_value_missing(mode),
        );
        match (pipeline(dir.path()).run(r), expected) {
            (Ok(info), Some(n)) => assert_eq!(loaded(&info, "ev"), n, "{mode:?}"),
            (Err(e), None) => assert!(e.to_string().contains("cursor ts"), "{e}"),
            (other, _) => panic!("{mode:?}: {other:?}"),
        }
    }
}

#[test]
fn timestamps_with_mixed_offsets_compare_as_instants() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let make = |rows: Vec<Value>| {
        Resource::from_items("ev", rows)
            .primary_key(["id"])
            .incremental(
                Incremental::new("at")
                    .unwrap()
                    .initial_value("2024-01-01T00:00:00Z"),
            )
    };
    p.run(make(vec![
        json!({"id": 1, "at": "2024-01-01T12:00:00+02:00"}),
    ]))
    .unwrap();
    // 10:00Z is the same instant as 12:00+02:00: boundary row, deduped; 09:59:59Z is older; 10:00:00.5Z is newer.
    let info = p
        .run(make(vec![
            json!({"id": 1, "at": "2024-01-01T10:00:00Z"}),
            json!({"id": 2, "at": "2024-01-01T09:59:59Z"}),
            json!({"id": 3, "at": "2024-01-01T10:00:00.5Z"}),
            json!({"id": 4, "at": "2024-01-01T05:00:00-05:00"}),
        ]))
        .unwrap();
    assert_eq!(
        loaded(&info, "ev"),
        2,
        "ids 3 and 4 (10:00Z, a new key at the boundary)"
    );
    let state = p.local_state().unwrap().unwrap();
    assert_eq!(
        state["sources"]["inc"]["resources"]["ev"]["incremental"]["at"]["last_value"],
        "2024-01-01T10:00:00.5Z",
        "stored as the row wrote it, as dlt stores a string cursor"
    );
}

#[test]
fn lag_rereads_a_window_and_merge_keeps_rows_unique() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let make = |rows: Vec<Value>| {
        Resource::from_items("ev", rows)
            .write_disposition(WriteDisposition::Merge)
            .primary_key(["id"])
            .incremental(Incremental::new("ts").unwrap().initial_value(0).lag(10.0))
    };
    p.run(make(
        (1..=100)
            .map(|i| json!({"id": i, "ts": i, "v": 1}))
            .collect(),
    ))
    .unwrap();
    let info = p
        .run(make(
            (1..=100)
                .map(|i| json!({"id": i, "ts": i, "v": 2}))
                .collect(),
        ))
        .unwrap();
    assert_eq!(loaded(&info, "ev"), 11, "ts 90..=100 are read again");
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 100);
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM data.ev WHERE v = 2"),
        11
    );
    let state = p.local_state().unwrap().unwrap();
    assert_eq!(
        state["sources"]["inc"]["resources"]["ev"]["incremental"]["ts"]["last_value"],
        100
    );
}

#[test]
fn many_rows_at_one_cursor_value_keep_a_bounded_state_and_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let rows: Vec<Value> = (0..200_000)
        .map(|i| json!({"id": i, "day": "2024-01-01"}))
        .collect();
    let make = |rows: Vec<Value>| {
        Resource::from_items("ev", rows)
            .primary_key(["id"])
            .incremental(Incremental::new("day").unwrap().initial_value("2023-12-31"))
    };
    assert_eq!(loaded(&p.run(make(rows.clone())).unwrap(), "ev"), 200_000);
    let state = p.local_state().unwrap().unwrap();
    let hashes = state["sources"]["inc"]["resources"]["ev"]["incremental"]["day"]["unique_hashes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        hashes.len(),
        400_000,
        "fixed-size hashes of each key at the boundary value, in dlt's two forms of a one-column key"
    );
    assert!(hashes.iter().all(|h| h.as_str().unwrap().len() == 12));
    let stored = highwater::state::encode_for_destination(&state)
        .unwrap()
        .len();
    eprintln!(
        "state with 200000 boundary keys: {} bytes as JSON, {stored} bytes in _dlt_pipeline_state",
        state.to_string().len()
    );
    // 9 bytes of digest per hash, two hashes per key: about 25 bytes per key once compressed.
    assert!(stored < 5_200_000, "{stored}");
    let mut again = rows;
    again.push(json!({"id": 200_000, "day": "2024-01-01"}));
    assert_eq!(
        loaded(&p.run(make(again)).unwrap(), "ev"),
        1,
        "only the new key at the boundary loads"
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 200_001);
}

#[test]
fn an_external_scheduler_interval_sets_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let rows: Vec<Value> = (0..48)
        .map(|h| json!({"id": h, "at": format!("2024-01-0{}T{:02}:30:00Z", 1 + h / 24, h % 24)}))
        .collect();
    let make = || {
        Resource::from_items("ev", rows.clone()).incremental(
            Incremental::new("at")
                .unwrap()
                .initial_value("2020-01-01T00:00:00Z")
                .allow_external_schedulers(true),
        )
    };
    let day = |d: u32| RunOptions {
        interval: Some(
            Interval::parse(
                &format!("2024-01-0{d}T00:00:00Z"),
                &format!("2024-01-0{}T00:00:00Z", d + 1),
            )
            .unwrap(),
        ),
        ..RunOptions::default()
    };
    assert_eq!(loaded(&p.run_with(make(), &day(2)).unwrap(), "ev"), 24);
    assert_eq!(loaded(&p.run_with(make(), &day(1)).unwrap(), "ev"), 24);
    assert!(
        p.local_state().unwrap().is_none(),
        "scheduled intervals are stateless"
    );
    assert_eq!(
        count(dir.path(), "SELECT count(DISTINCT id) FROM data.ev"),
        48
    );
    // A unix-seconds cursor gets the interval as integers.
    let unix = Resource::from_items(
        "unix",
        (0..10)
            .map(|i| json!({"t": 1_704_067_200 + i * 3600}))
            .collect(),
    )
    .incremental(
        Incremental::new("t")
            .unwrap()
            .initial_value(0)
            .allow_external_schedulers(true),
    );
    let options = RunOptions {
        interval: Some(Interval::parse("2024-01-01T02:00:00Z", "2024-01-01T05:00:00Z").unwrap()),
        ..RunOptions::default()
    };
    assert_eq!(loaded(&p.run_with(unix, &options).unwrap(), "unix"), 3);
}

#[test]
fn refresh_modes_reset_state_and_drop_or_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let make = || {
        Resource::from_items(
            "ev",
            (1..=5)
                .map(|i| json!({"id": i, "ts": i, "kids": [i]}))
                .collect(),
        )
        .incremental(Incremental::new("ts").unwrap().initial_value(0))
    };
    p.run(make()).unwrap();
    assert!(p.run(make()).unwrap().load_ids.is_empty());
    let refresh = |mode| RunOptions {
        refresh: Some(mode),
        ..RunOptions::default()
    };
    // drop_data: tables emptied, state reset, so the rows load again once.
    assert_eq!(
        loaded(
            &p.run_with(make(), &refresh(Refresh::DropData)).unwrap(),
            "ev"
        ),
        5
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 5);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev__kids"), 5);
    // drop_resources: tables dropped and created anew.
    let only_ids = Resource::from_items("ev", (1..=3).map(|i| json!({"id": i, "ts": i})).collect())
        .incremental(Incremental::new("ts").unwrap().initial_value(0));
    assert_eq!(
        loaded(
            &p.run_with(only_ids, &refresh(Refresh::DropResources))
                .unwrap(),
            "ev"
        ),
        3
    );
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'ev__kids'"
        ),
        0
    );
    // drop_sources: the whole source state goes.
    let info = p.run_with(make(), &refresh(Refresh::DropSources)).unwrap();
    assert_eq!(loaded(&info, "ev"), 5);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 5);
}

#[test]
fn run_time_hints_override_and_replace_resets_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let make = || {
        Resource::from_items("ev", (1..=4).map(|i| json!({"id": i, "ts": i})).collect())
            .incremental(Incremental::new("ts").unwrap().initial_value(0))
    };
    p.run(make()).unwrap();
    let replace = RunOptions {
        hints: Hints {
            write_disposition: Some(WriteDisposition::Replace),
            ..Hints::default()
        },
        ..RunOptions::default()
    };
    assert_eq!(loaded(&p.run_with(make(), &replace).unwrap(), "ev"), 4);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM data.ev"), 4);
}
