//! The commands besides `run` — `info`, `state`, `schema`, `drop` — and `run --refresh`, and a
//! working directory lost between runs (state and schema restored from the destination), on
//! every destination: DuckDB, PostgreSQL, a local lake folder and an S3 bucket.

#[path = "../../highwater/tests/common/mod.rs"]
mod common;
mod support;

use common::destinations::{Kind, TestDestination};
use serde_json::json;
use support::{events, events_pipeline, ok, on_every_destination, Project};

on_every_destination!(info_state_drop_refresh_and_state_restore);

fn info_state_drop_refresh_and_state_restore(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(kind, dir.path());
    let p = Project::new(&events_pipeline(&d.spec())).with_env(d.env());
    p.write_data("a.jsonl", &events(1..=3, "a"));
    let cmd = |args: &[&str]| p.command(args).output().unwrap();
    let state_of_events = || ok(&cmd(&["state", "pipeline.toml", "--resource", "events"]));

    let info = ok(&cmd(&["info", "pipeline.toml", "--json"]));
    assert_eq!(info["tables"], json!({}), "{kind:?}: nothing loaded yet");
    assert!(
        !d.table_exists("raw", "_dlt_loads"),
        "{kind:?}: info does not create the dataset"
    );

    assert_eq!(p.run_ok(&[])["tables"]["events"], 3);
    let info = ok(&cmd(&["info", "pipeline.toml", "--json"]));
    assert_eq!(info["dataset"], "raw");
    assert_eq!(info["tables"]["events"], 3, "{kind:?}: {info}");
    assert_eq!(info["tables"]["events__tags"], 6, "{kind:?}: {info}");
    assert!(info["tables"].get("_dlt_loads").is_none(), "{info}");
    assert_eq!(info["loads"].as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info["loads"][0]["status"], 0);
    assert!(
        info["loads"][0]["inserted_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{kind:?}: {info}"
    );
    assert_eq!(info["pending_packages"], json!([]));
    let destination = info["destination"].as_str().unwrap().to_string();
    let text = String::from_utf8_lossy(&cmd(&["info", "pipeline.toml"]).stdout).into_owned();
    assert!(
        text.contains("events__tags") && text.contains(&destination),
        "{kind:?}: {text}"
    );
    assert_eq!(state_of_events()["incremental"]["ts"]["last_value"], 3);

    // The working dir is lost: state and schema come back from the destination, nothing loads
    // twice, and new rows load once.
    std::fs::remove_dir_all(p.path("work")).unwrap();
    let out = p.run_ok(&[]);
    assert_eq!(out["load_ids"], json!([]), "{kind:?}: {out}");
    let state = state_of_events();
    assert_eq!(
        state["incremental"]["ts"]["last_value"], 3,
        "{kind:?}: restored: {state}"
    );
    let schema = String::from_utf8_lossy(&cmd(&["schema", "pipeline.toml"]).stdout).into_owned();
    assert!(
        schema.contains("events__tags:"),
        "{kind:?}: schema restored: {schema}"
    );
    p.write_data("b.jsonl", &events(4..=5, "b"));
    assert_eq!(p.run_ok(&[])["tables"]["events"], 2);
    assert_eq!(d.row_count("raw", "events"), 5, "{kind:?}");
    assert_eq!(d.row_count("raw", "events__tags"), 10, "{kind:?}");

    // drop: the tables go and the state is reset, committed as a load.
    let dropped = ok(&cmd(&[
        "drop",
        "pipeline.toml",
        "--resource",
        "events",
        "--json",
    ]));
    assert_eq!(dropped["dropped_resource"], "events");
    assert_eq!(
        dropped["dropped_tables"],
        json!(["events", "events__tags"]),
        "{kind:?}"
    );
    assert_eq!(d.row_count("raw", "events"), 0, "{kind:?}: dropped");
    assert_eq!(d.row_count("raw", "events__tags"), 0, "{kind:?}: dropped");
    assert_eq!(state_of_events(), json!({}), "{kind:?}");
    let out = cmd(&["drop", "pipeline.toml", "--resource", "nope"]);
    assert_eq!(out.status.code(), Some(2), "bad usage");
    assert!(
        support::stderr(&out).contains("no resource named \"nope\""),
        "{}",
        support::stderr(&out)
    );
    // ... and a restore after the drop starts from the reset state.
    std::fs::remove_dir_all(p.path("work")).unwrap();
    let out = p.run_ok(&[]);
    assert_eq!(
        out["tables"]["events"], 5,
        "{kind:?}: everything again after the drop: {out}"
    );
    assert_eq!(d.row_count("raw", "events"), 5, "{kind:?}");

    // --refresh drop_sources: the tables are dropped and loaded anew from the initial value.
    let out = p.run_ok(&[]);
    assert_eq!(out["load_ids"], json!([]));
    let out = ok(&p.run(&["--json", "--refresh", "drop_sources"], &[]));
    assert_eq!(out["tables"]["events"], 5, "{kind:?}: {out}");
    let load_id = out["load_ids"][0].as_str().unwrap().to_string();
    assert_eq!(
        d.rows(
            "SELECT CAST(count(*) AS VARCHAR), CAST(count(DISTINCT id) AS VARCHAR), \
             min(_dlt_load_id), max(_dlt_load_id) FROM raw.events"
        ),
        [[json!("5"), json!("5"), json!(load_id), json!(load_id)]],
        "{kind:?}: only the refresh's rows"
    );
    assert_eq!(d.row_count("raw", "events__tags"), 10, "{kind:?}");

    // Restored once more: nothing twice.
    std::fs::remove_dir_all(p.path("work")).unwrap();
    assert_eq!(p.run_ok(&[])["load_ids"], json!([]), "{kind:?}");
    assert_eq!(d.row_count("raw", "events"), 5, "{kind:?}");
}
