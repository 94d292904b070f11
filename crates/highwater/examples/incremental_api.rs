//! dlt's incremental-loading examples in Rust, against an in-memory "API":
//!
//! - the GitHub-events pattern: the resource reads `start_value` while it runs and pushes it into
//!   the request, and a descending API stops being paged once the start is passed;
//! - the per-event-type last values of dlt's docs, with a custom `last_value_func`;
//! - a Zendesk-style backfill with `end_value` (stateless).
//!
//! Run with `cargo build --release --workspace --all-targets && target/release/examples/incremental_api`
//! (a whole-workspace build shares the DuckDB build); it writes into a temporary folder.

use std::sync::Arc;

use highwater::{
    DestinationConfig, Incremental, Item, LastValueFunc, Pipeline, Resource, RowOrder,
    WriteDisposition,
};
use serde_json::{json, Value};

/// A fake API: events 1..=n, newest first, `per_page` per page, `since` filters nothing (as many
/// real APIs that ignore it); returns the pages it would serve.
fn api_pages(n: i64, per_page: usize) -> Vec<Vec<Value>> {
    let events: Vec<Value> = (1..=n)
        .rev()
        .map(|i| {
            let kind = if i % 3 == 0 {
                "WatchEvent"
            } else {
                "PushEvent"
            };
            json!({"id": i, "type": kind, "created_at": format!("2024-01-01T00:00:{:02}Z", i % 60)})
        })
        .collect();
    events.chunks(per_page).map(<[Value]>::to_vec).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("highwater-example-{}", std::process::id()));
    let pipeline = Pipeline::builder("github_example")
        .destination(DestinationConfig::duckdb(dir.join("example.duckdb")))
        .working_dir(dir.join("work"))
        .build()?;

    // 1. Push the start into the request, stop once the range is left (row_order = desc).
    for n in [40, 55] {
        let events = Resource::new("events", move |ctx| {
            let since = ctx.incremental().and_then(|i| i.start_value());
            println!("requesting events since {since:?}");
            Ok(api_pages(n, 10)
                .into_iter()
                .map(|page| Ok(Item::Page(page))))
        })
        .write_disposition(WriteDisposition::Merge)
        .primary_key(["id"])
        .incremental(
            Incremental::new("id")?
                .initial_value(0)
                .row_order(RowOrder::Desc),
        );
        let info = pipeline.run(events)?;
        println!("loaded {:?}", info.tables);
    }

    // 2. One last value per event type (dlt's `by_event_type`).
    let by_type: highwater::incremental::CustomLastValue = Arc::new(|values: &[&Value]| {
        let item = values[0];
        let mut last = values
            .get(1)
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        let kind = item["type"].as_str().unwrap_or_default().to_string();
        let created = item["created_at"].as_str().unwrap_or_default().to_string();
        let keep = last
            .get(&kind)
            .and_then(Value::as_str)
            .is_some_and(|old| old >= created.as_str());
        if !keep {
            last.insert(kind, Value::String(created));
        }
        Value::Object(last)
    });
    let typed = Resource::new("typed_events", |_| {
        Ok(api_pages(30, 30).into_iter().map(|p| Ok(Item::Page(p))))
    })
    .table_name_fn(|item| Ok(item["type"].as_str().unwrap_or("unknown").to_string()))
    .incremental(
        Incremental::new("$")?
            .last_value_func(LastValueFunc::Custom(by_type))
            .primary_key(Vec::<String>::new()),
    );
    println!("per type: {:?}", pipeline.run(typed)?.tables);

    // 3. A stateless backfill of a fixed range.
    let backfill = Resource::new("tickets", |_| {
        Ok(api_pages(60, 60).into_iter().map(|p| Ok(Item::Page(p))))
    })
    .incremental(Incremental::new("id")?.initial_value(10).end_value(20));
    println!("backfill [10, 20): {:?}", pipeline.run(backfill)?.tables);

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
