//! Runs of the `highwater` command killed at every stage, on every destination (DuckDB,
//! PostgreSQL, a local lake folder, an S3 bucket): the next run must end with exactly the rows of
//! an uninterrupted run on the same destination, each load committed once, nothing more to load.
//!
//! On a lake, merge appends (as dlt's filesystem destination does), so the reference run appends
//! too: the comparison is always against an uninterrupted run on the same kind of destination.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[path = "../../highwater/tests/common/mod.rs"]
mod common;
mod support;

use common::destinations::{Kind, TestDestination};
use support::{event, events_pipeline, on_every_destination, stderr, CRASH_POINTS};

/// The events pipeline (`support::events_pipeline`) into one destination of the test.
struct Project {
    project: support::Project,
    destination: TestDestination,
}

impl Project {
    fn new(kind: Kind) -> Self {
        let project = support::Project::new("");
        // The destination's files live in the project folder, and go with it.
        let destination = TestDestination::new(kind, project.dir.path());
        project.write("pipeline.toml", &events_pipeline(&destination.spec()));
        Project {
            project: project.with_env(destination.env()),
            destination,
        }
    }

    fn write_data(&self, name: &str, lines: &[String]) {
        self.project.write_data(name, lines);
    }

    /// `highwater run pipeline.toml --progress none ARGS`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self
            .project
            .command(&["run", "pipeline.toml", "--progress", "none"]);
        cmd.args(args);
        cmd
    }

    /// An uninterrupted run, which must succeed.
    fn run_to_end(&self) {
        let out = self.run(None);
        assert!(
            out.status.success(),
            "{:?}: {}",
            self.destination.kind,
            stderr(&out)
        );
    }

    fn run(&self, crash: Option<&str>) -> Output {
        let mut cmd = self.command(&[]);
        if let Some(point) = crash {
            cmd.env("HIGHWATER_TEST_CRASH", point);
        }
        cmd.output().unwrap()
    }

    /// The load ids a further run loads (must be none once the work is finished).
    fn loads_of_another_run(&self) -> serde_json::Value {
        let out = self.command(&["--json"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["load_ids"].clone()
    }

    /// The events and their tags without random ids, sorted: equal for equal content. Tags
    /// whose parent or root is not a loaded event are counted as orphans.
    fn content(&self) -> Vec<String> {
        let d = &self.destination;
        let text = |rows: Vec<Vec<serde_json::Value>>, table: &str| -> Vec<String> {
            rows.into_iter()
                .map(|r| {
                    let cells: Vec<String> = r
                        .iter()
                        .map(|v| v.as_str().unwrap_or("NULL").to_string())
                        .collect();
                    format!("{table}|{}", cells.join("|"))
                })
                .collect()
        };
        let mut out = text(
            d.rows(
                "SELECT CAST(id AS VARCHAR), CAST(ts AS VARCHAR), name FROM raw.events ORDER BY id, ts, name",
            ),
            "events",
        );
        // On a lake the merge appends, and appended children carry no `_dlt_root_id`.
        let lake = matches!(d.kind, Kind::Filesystem | Kind::S3);
        let root = if lake {
            ""
        } else {
            " AND t._dlt_root_id = e._dlt_id"
        };
        out.extend(text(
            d.rows(&format!(
                "SELECT CAST(e.id AS VARCHAR), t.value, CAST(t._dlt_list_idx AS VARCHAR)
                 FROM raw.events__tags t JOIN raw.events e ON t._dlt_parent_id = e._dlt_id{root}
                 ORDER BY e.id, t._dlt_list_idx, t.value"
            )),
            "tags",
        ));
        let orphans = d.count(&format!(
            "SELECT count(*) FROM raw.events__tags t WHERE NOT EXISTS (SELECT 1 FROM raw.events e WHERE e._dlt_id = t._dlt_parent_id{root})"
        ));
        out.push(format!("orphan tags|{orphans}"));
        out
    }

    /// Loads recorded in `_dlt_loads` more than once.
    fn loads_committed_twice(&self) -> i64 {
        self.destination
            .count("SELECT count(*) - count(DISTINCT load_id) FROM raw._dlt_loads")
    }
}

/// Asserts equal contents, showing the first rows that differ rather than thousands of rows.
fn assert_same(got: &[String], expected: &[String], what: &str) {
    if got == expected {
        return;
    }
    let first = got
        .iter()
        .zip(expected)
        .position(|(g, e)| g != e)
        .unwrap_or(got.len().min(expected.len()));
    let around = |rows: &[String]| rows.iter().skip(first).take(5).cloned().collect::<Vec<_>>();
    panic!(
        "{what}: {} rows, {} expected; from row {first}: {:?} instead of {:?}",
        got.len(),
        expected.len(),
        around(got),
        around(expected)
    );
}

on_every_destination!(runs_killed_at_every_stage_are_finished_by_the_next_run);
on_every_destination!(sigkills_at_random_moments_lose_and_duplicate_nothing);

/// Kills the first or the second of two runs at each crash point; a third run finishes the work.
fn runs_killed_at_every_stage_are_finished_by_the_next_run(kind: Kind) {
    let batch1: Vec<String> = (1..=1500).map(|i| event(i, i, "first")).collect();
    // Batch 2 updates ids 1000..1500 (same ts as the boundary: dedup and merge) and adds new ones.
    let batch2: Vec<String> = (1000..=3000)
        .map(|i| event(i, i.max(1500), "second"))
        .collect();

    let reference = Project::new(kind);
    reference.write_data("a.jsonl", &batch1);
    reference.run_to_end();
    reference.write_data("b.jsonl", &batch2);
    reference.run_to_end();
    let expected = reference.content();
    assert!(expected.len() > 3000, "{}", expected.len());
    // A run killed before its extract is committed leaves nothing: the next run extracts both
    // files in one load, whose content is that of one run over both (on a lake, where merge
    // appends, that differs from two runs; elsewhere it may differ in which of two versions
    // of a key in one load wins, which dlt leaves arbitrary).
    let together = Project::new(kind);
    together.write_data("a.jsonl", &batch1);
    together.write_data("b.jsonl", &batch2);
    together.run_to_end();
    let expected_together = together.content();

    for point in CRASH_POINTS {
        for crash_in_run in [1, 2] {
            let p = Project::new(kind);
            let crash = |run| (run == crash_in_run).then_some(point);
            p.write_data("a.jsonl", &batch1);
            let first = p.run(crash(1));
            assert_eq!(
                first.status.success(),
                crash_in_run != 1,
                "{kind:?} {point}: {}",
                stderr(&first)
            );
            p.write_data("b.jsonl", &batch2);
            let second = p.run(crash(2));
            assert_eq!(
                second.status.success(),
                crash_in_run != 2,
                "{kind:?} {point}: {}",
                stderr(&second)
            );
            let last = p.run(None);
            assert!(last.status.success(), "{kind:?} {point}: {}", stderr(&last));
            let extract_abandoned = point == "after-extract" && crash_in_run == 1;
            assert_same(
                &p.content(),
                if extract_abandoned {
                    &expected_together
                } else {
                    &expected
                },
                &format!("{kind:?}: crash {point} in run {crash_in_run}"),
            );
            assert_eq!(
                p.loads_committed_twice(),
                0,
                "{kind:?} {point}: no load committed twice"
            );
            assert_eq!(
                p.loads_of_another_run(),
                serde_json::json!([]),
                "{kind:?} {point} in run {crash_in_run}: a finished pipeline loads nothing more"
            );
        }
    }
}

/// Real SIGKILLs at arbitrary moments of a larger load (the parallel normalizer and the bulk
/// load included): the next run loads every row exactly once.
fn sigkills_at_random_moments_lose_and_duplicate_nothing(kind: Kind) {
    let batch: Vec<String> = (1..=20_000).map(|i| event(i, i / 3, "n")).collect();
    let reference = Project::new(kind);
    reference.write_data("a.jsonl", &batch);
    reference.run_to_end();
    let expected = reference.content();

    let p = Project::new(kind);
    p.write_data("a.jsonl", &batch);
    for delay_ms in [30u64, 90, 180, 300, 450, 700] {
        let mut child = p
            .command(&[])
            .env("HIGHWATER_PARALLEL_MIN_ITEMS", "1000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = p.run(None);
    assert!(out.status.success(), "{kind:?}: {}", stderr(&out));
    assert_same(&p.content(), &expected, &format!("{kind:?}"));
    assert_eq!(p.loads_committed_twice(), 0, "{kind:?}");
    assert_eq!(p.loads_of_another_run(), serde_json::json!([]), "{kind:?}");
}

/// A pipeline of snapshots (`data/*.jsonl`, each file read once) into `destination`, with the
/// disposition keys `keys` (and `pipeline_keys` in `[pipeline]`).
fn snapshots_pipeline(destination: &str, pipeline_keys: &str, keys: &str) -> String {
    format!(
        r#"[pipeline]
name = "snapshots"
destination = "{destination}"
dataset = "raw"
working_dir = "work"
{pipeline_keys}

[[resources]]
name = "customers"
{keys}

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"
skip_loaded_files = true
"#
    )
}

/// A snapshot of customers `ids`, each with tags; `tag` changes their content.
fn customers(ids: std::ops::RangeInclusive<i64>, tag: &str) -> Vec<String> {
    ids.map(|i| {
        format!(
            r#"{{"id": {i}, "name": "c{i}", "tags": ["{tag}", "t{}"]}}"#,
            i % 7
        )
    })
    .collect()
}

/// The customers, their versions' validity (as ranks of the times: two runs load at different
/// times) and their tags, sorted; tags without a customer are counted.
fn snapshot_content(d: &TestDestination, history: bool) -> Vec<String> {
    let validity = if history {
        "CAST(c._dlt_valid_from AS VARCHAR), CAST(c._dlt_valid_to AS VARCHAR)"
    } else {
        "'', ''"
    };
    let rows = d.rows(&format!(
        "SELECT CAST(c.id AS VARCHAR), c.name, {validity}, (SELECT string_agg(t.value, ',' ORDER BY t._dlt_list_idx) FROM raw.customers__tags AS t WHERE t._dlt_parent_id = c._dlt_id) FROM raw.customers AS c"
    ));
    let mut times: Vec<i64> = rows
        .iter()
        .flat_map(|r| [&r[2], &r[3]])
        .filter_map(|v| {
            v.as_str()
                .filter(|s| !s.is_empty())
                .map(common::timestamp_micros)
        })
        .collect();
    times.sort_unstable();
    times.dedup();
    let rank = |v: &serde_json::Value| match v.as_str() {
        Some("") => String::new(),
        Some(s) => {
            let t = common::timestamp_micros(s);
            format!(
                "#{}",
                times.iter().position(|x| *x == t).unwrap_or(usize::MAX)
            )
        }
        None => "open".into(),
    };
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}",
                r[0].as_str().unwrap_or(""),
                r[1].as_str().unwrap_or(""),
                rank(&r[2]),
                rank(&r[3]),
                r[4].as_str().unwrap_or("")
            )
        })
        .collect();
    out.sort();
    let orphans = d.count(
        "SELECT count(*) FROM raw.customers__tags AS t WHERE NOT EXISTS (SELECT 1 FROM raw.customers AS c WHERE c._dlt_id = t._dlt_parent_id)",
    );
    out.push(format!("orphan tags|{orphans}"));
    out
}

/// scd2 and each replace strategy, killed inside the load (at its own point, where rows are
/// retired or tables emptied, and just before and after the commit): the tables are as before
/// the run until the commit, and the next run ends them as an uninterrupted run does, each load
/// committed once.
fn scd2_and_replaces_killed_mid_load_leave_the_tables_before_or_after(kind: Kind) {
    let variants = [
        (
            "",
            "write_disposition = \"merge\"\nmerge_strategy = \"scd2\"",
            "scd2-retired",
            true,
        ),
        (
            "",
            "write_disposition = \"replace\"",
            "replace-emptied",
            false,
        ),
        (
            "replace_strategy = \"insert-from-staging\"",
            "write_disposition = \"replace\"",
            "replace-emptied",
            false,
        ),
        (
            "replace_strategy = \"insert-from-staging\"",
            "write_disposition = \"replace\"\nreplace_strategy = \"staging-optimized\"",
            "replace-emptied",
            false,
        ),
    ];
    let first = customers(1..=300, "a");
    // Changed tags for some, some gone, some new.
    let mut second = customers(1..=100, "a");
    second.extend(customers(101..=200, "b"));
    second.extend(customers(301..=350, "a"));
    for (pipeline_keys, keys, own_point, history) in variants {
        let project = |kind| {
            let project = support::Project::new("");
            let destination = TestDestination::new(kind, project.dir.path());
            project.write(
                "pipeline.toml",
                &snapshots_pipeline(&destination.spec(), pipeline_keys, keys),
            );
            Project {
                project: project.with_env(destination.env()),
                destination,
            }
        };
        let reference = project(kind);
        reference.write_data("a.jsonl", &first);
        reference.run_to_end();
        reference.write_data("b.jsonl", &second);
        reference.run_to_end();
        let expected = snapshot_content(&reference.destination, history);
        assert!(expected.len() > 250, "{keys}: {}", expected.len());

        for point in [own_point, "before-commit", "after-commit"] {
            let what = format!("{kind:?} {keys} {pipeline_keys}, killed at {point}");
            let p = project(kind);
            p.write_data("a.jsonl", &first);
            p.run_to_end();
            let before = snapshot_content(&p.destination, history);
            p.write_data("b.jsonl", &second);
            let killed = p.run(Some(point));
            assert!(!killed.status.success(), "{what}: {}", stderr(&killed));
            let now = snapshot_content(&p.destination, history);
            if point == "after-commit" {
                assert_same(&now, &expected, &what);
            } else {
                assert_same(&now, &before, &what);
            }
            p.run_to_end();
            assert_same(&snapshot_content(&p.destination, history), &expected, &what);
            assert_eq!(p.loads_committed_twice(), 0, "{what}");
            if history {
                // (A replace run without rows empties its tables: it always loads.)
                assert_eq!(p.loads_of_another_run(), serde_json::json!([]), "{what}");
            }
        }
    }
}

mod scd2_and_replaces_killed_mid_load_leave_the_tables_before_or_after {
    use super::*;
    #[test]
    fn duckdb() {
        super::scd2_and_replaces_killed_mid_load_leave_the_tables_before_or_after(Kind::DuckDb);
    }
    #[test]
    fn postgres() {
        super::scd2_and_replaces_killed_mid_load_leave_the_tables_before_or_after(Kind::Postgres);
    }
}
