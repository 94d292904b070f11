//! What a user sees of the command: exit statuses (2 for bad usage), `--json` on failure, no
//! colour off a terminal, the pipeline file's errors in the user's words, one rule for relative
//! paths, Ctrl-C, progress and the final summary, `drop`, `schema --json`, `info` and `prune`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

mod support;

use support::{event, events, events_pipeline, events_pipeline_with, ok, stderr, Project};

fn into_duckdb() -> Project {
    Project::new(&events_pipeline("duckdb:out.duckdb"))
}

#[test]
fn bad_usage_exits_2_and_a_failed_run_1() {
    let p = into_duckdb();
    p.write_data("a.jsonl", &events(1..=2, "a"));
    for args in [
        vec!["run", "pipeline.toml", "--no-such-flag"],
        vec!["frobnicate"],
        vec!["state"],
        vec!["run", "missing.toml"],
        vec!["run", "pipeline.toml", "--resource", "nope"],
        vec!["drop", "pipeline.toml", "--resource", "nope"],
        vec!["state", "pipeline.toml", "--resource", "nope"],
        vec![
            "run",
            "pipeline.toml",
            "--interval-start",
            "2024-01-01T00:00:00Z",
            "--interval-end",
            "2024-01-02T00:00:00Z",
        ],
        vec!["schema", "pipeline.toml", "--format", "xml"],
    ] {
        let out = p.command(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(!p.path("out.duckdb").exists(), "bad usage changes nothing");
    p.write_data("b.jsonl", &["{\"id\": 3, \"ts\": ".to_string()]);
    let out = p.run(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_failed_run_with_json_prints_the_error_as_json_on_stdout() {
    let p = into_duckdb();
    p.write_data("a.jsonl", &["{\"id\": 1, \"ts\": ".to_string()]);
    let out = p.run(&["--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout));
    assert_eq!(json["pipeline"], "events");
    assert_eq!(json["dataset"], "raw");
    assert_eq!(json["load_ids"], json!([]));
    assert!(
        json["error"].as_str().unwrap().contains("a.jsonl:1"),
        "{json}"
    );
    // The same shape on success, with no error.
    p.write_data("a.jsonl", &events(1..=2, "a"));
    let json = ok(&p.run(&["--json"], &[]));
    assert_eq!(json["error"], Value::Null);
    assert_eq!(json["tables"]["events"], 2);
    // Errors before the pipeline is known, and of the other commands, are JSON too.
    let out = p
        .command(&["info", "missing.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["error"].as_str().unwrap().contains("missing.toml"));
}

#[test]
fn no_colour_off_a_terminal_and_with_no_color() {
    // A glob that matches nothing gives a warning.
    let p = Project::new(&events_pipeline("duckdb:out.duckdb").replace("*.jsonl", "*.none"));
    let out = p.run(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("WARN"), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));

    // On a terminal (util-linux `script` gives the command one): colour, unless NO_COLOR.
    let on_a_terminal = |no_color: Option<&str>| {
        let line = format!(
            "{} run pipeline.toml --progress none",
            env!("CARGO_BIN_EXE_highwater")
        );
        let mut cmd = Command::new("script");
        cmd.current_dir(p.dir.path())
            .args(["-qec", &line, "/dev/null"])
            .env("RUST_LOG", "warn")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(value) = no_color {
            cmd.env("NO_COLOR", value);
        }
        let out = cmd
            .output()
            .expect("util-linux `script` runs the command on a terminal");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_a_terminal(None);
    assert!(
        coloured.contains("WARN") && coloured.contains('\u{1b}'),
        "{coloured:?}"
    );
    let plain = on_a_terminal(Some("1"));
    assert!(
        plain.contains("WARN") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}

#[test]
fn pipeline_file_type_errors_name_key_line_and_an_example() {
    for (from, to, line, expected) in [
        (
            "primary_key = \"id\"",
            "primary_key = 5",
            10,
            "primary_key = 5: expected a column name, or a list of column names, e.g.",
        ),
        (
            "[[resources]]",
            "[resources]",
            7,
            "[[resources]] (two brackets)",
        ),
        (
            "initial_value = 0",
            "initial_value = 0\nlag = \"1h\"",
            19,
            "lag = \"1h\": expected a number without quotes",
        ),
        (
            "primary_key = \"id\"",
            "primary_key = \"id\"\nmax_table_nesting = \"2\"",
            11,
            "max_table_nesting = \"2\": expected a whole number, without quotes, e.g. max_table_nesting = 2",
        ),
    ] {
        let text = events_pipeline("duckdb:out.duckdb").replace(from, to);
        let p = Project::new(&text);
        let out = p.run(&[], &[]);
        assert_eq!(out.status.code(), Some(1), "{to}");
        let err = stderr(&out);
        if !to.starts_with('[') {
            assert!(
                err.contains(&format!("pipeline.toml:{line}: {expected}")),
                "{to}: {err}"
            );
        } else {
            assert!(err.contains("pipeline.toml:") && err.contains(expected), "{err}");
        }
        assert!(!err.contains("invalid type"), "{err}");
    }
}

#[test]
fn an_initial_value_of_the_wrong_type_is_a_config_error_naming_key_and_line() {
    let hinted = |initial: &str| {
        events_pipeline_with(
            "destination = \"duckdb:out.duckdb\"\ndataset = \"raw\"\nworking_dir = \"work\"",
            "\n[resources.columns.ts]\ndata_type = \"timestamp\"\n",
        )
        .replace("initial_value = 0", &format!("initial_value = {initial}"))
    };
    let p = Project::new(&hinted("\"yesterday\""));
    p.write_data(
        "a.jsonl",
        &[r#"{"id": 1, "ts": "2024-01-02T00:00:00Z"}"#.to_string()],
    );
    for initial in ["\"yesterday\"", "20240101"] {
        p.write("pipeline.toml", &hinted(initial));
        let err = support::failed(&p.run(&[], &[]));
        assert!(
            err.contains(&format!(
                "pipeline.toml:18: resource events: initial_value = {initial} is not a timestamp"
            )) && err.contains("e.g. initial_value = 2024-01-01T00:00:00Z"),
            "{err}"
        );
        assert!(!p.path("work/state.json").exists());
    }
    p.write("pipeline.toml", &hinted("2024-01-01T00:00:00Z"));
    assert_eq!(ok(&p.run(&["--json"], &[]))["tables"]["events"], 1);

    // Without a hint the values tell the cursor's type: the same error, found by the run.
    let p = into_duckdb();
    p.write(
        "pipeline.toml",
        &events_pipeline("duckdb:out.duckdb")
            .replace("initial_value = 0", "initial_value = 20240101"),
    );
    p.write_data(
        "a.jsonl",
        &[r#"{"id": 1, "ts": "2024-01-02T00:00:00Z"}"#.to_string()],
    );
    let err = support::failed(&p.run(&[], &[]));
    assert!(
        err.contains(
            "pipeline.toml:18: resource events: initial_value = 20240101 is not a timestamp"
        ),
        "{err}"
    );
    assert!(!p.path("work/state.json").exists());
}

/// Every relative path of the file, and the defaults (a bare `duckdb`, the working directory),
/// are beside the pipeline file: run from another folder, the same file finds the same
/// database and state.
#[test]
fn the_same_file_from_another_folder_uses_the_same_database_and_state() {
    let outer = tempfile::tempdir().unwrap();
    let project = outer.path().join("project");
    std::fs::create_dir_all(project.join("data")).unwrap();
    std::fs::write(
        project.join("pipeline.toml"),
        events_pipeline_with("destination = \"duckdb\"", ""),
    )
    .unwrap();
    std::fs::write(
        project.join("data/a.jsonl"),
        events(1..=3, "a").join("\n") + "\n",
    )
    .unwrap();
    let run_from = |dir: &std::path::Path, file: &str| {
        ok(&support::highwater()
            .current_dir(dir)
            .args(["run", file, "--json", "--progress", "none"])
            .output()
            .unwrap())
    };
    assert_eq!(run_from(&project, "pipeline.toml")["tables"]["events"], 3);
    assert!(project.join("events.duckdb").exists());
    assert!(project.join(".highwater/events/state.json").exists());
    let again = run_from(outer.path(), "project/pipeline.toml");
    assert_eq!(
        again["load_ids"],
        json!([]),
        "nothing is loaded twice: {again}"
    );
    assert!(!outer.path().join("events.duckdb").exists());
    assert!(!outer.path().join(".highwater").exists());
}

/// Ctrl-C during a load: exit status 130 and one line saying what the next run does; `info`
/// shows the package as new; the next run says it finishes it, and loads it once.
#[test]
fn ctrl_c_exits_130_and_the_next_run_finishes_the_package() {
    let p = into_duckdb();
    p.write_data("a.jsonl", &events(1..=50, "a"));
    let mut child = p
        .command(&["run", "pipeline.toml", "--progress", "none", "--json"])
        .env("HIGHWATER_TEST_PAUSE", "before-load")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("test pause at before-load") {
            break;
        }
    }
    // Ctrl-C is SIGINT (the shell's own `kill` sends it).
    let sent = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(sent.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{rest:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"].as_str(), rest.first().map(String::as_str));
    assert_eq!(rest.len(), 1, "one line: {rest:?}");
    assert!(
        rest[0].contains("interrupted while loading") && rest[0].contains("the next run loads it"),
        "{rest:?}"
    );

    let info = ok(&p
        .command(&["info", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(info["new_packages"].as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info["new_packages"][0]["stage"], "normalized", "{info}");
    let text = String::from_utf8_lossy(
        &p.command(&["info", "pipeline.toml"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(text.contains("the next run loads it"), "{text}");

    let out = p.run(&["--json"], &[]);
    let json = ok(&out);
    assert!(
        stderr(&out).contains("which an interrupted run left unfinished"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json["tables"]["events"], 50);
    let info = ok(&p
        .command(&["info", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(info["tables"]["events"], 50);
    assert_eq!(info["new_packages"], json!([]));
    // No lock file is left behind, neither the pipeline's, the package's nor the database's.
    let mut locks = Vec::new();
    for entry in walk(p.dir.path()) {
        if entry.extension().is_some_and(|e| e == "lock") {
            locks.push(entry);
        }
    }
    assert!(locks.is_empty(), "{locks:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn progress_log_lines_and_a_summary_naming_destination_dataset_and_tables() {
    let p = into_duckdb();
    p.write_data("a.jsonl", &events(1..=10_000, "a"));
    let out = p
        .command(&["run", "pipeline.toml", "--progress", "log"])
        .env("HIGHWATER_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("normalize ") && err.contains("4096/10000 items (40%, about"),
        "{err}"
    );
    assert!(err.contains("/30000 rows ("), "{err}");
    let last = err.lines().last().unwrap();
    let destination = format!("duckdb:{}", p.path("out.duckdb").display());
    assert!(
        last.contains(&format!("loaded to destination {destination}, dataset raw"))
            && last.contains("events 10000")
            && last.contains("events__tags 20000"),
        "{last}"
    );
    let out = p.run(&[], &[]);
    assert!(
        stderr(&out).contains("nothing new to load"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn drop_lists_what_it_dropped_and_says_when_there_was_nothing() {
    let p = into_duckdb();
    let drop = |json: bool| {
        let mut args = vec!["drop", "pipeline.toml", "--resource", "events"];
        if json {
            args.push("--json");
        }
        p.command(&args).output().unwrap()
    };
    let out = drop(false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to drop"), "{}", stderr(&out));

    p.write_data("a.jsonl", &events(1..=2, "a"));
    ok(&p.run(&["--json"], &[]));
    let out = drop(false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tables events, events__tags in dataset raw"),
        "{}",
        stderr(&out)
    );
    ok(&p.run(&["--json"], &[]));
    let json = ok(&drop(true));
    assert_eq!(json["dropped_tables"], json!(["events", "events__tags"]));
}

#[test]
fn schema_takes_json_and_prune_keeps_the_newest_packages() {
    let p = Project::new(&events_pipeline_with(
        "destination = \"duckdb:out.duckdb\"\ndataset = \"raw\"\nworking_dir = \"work\"\nkeep_loaded_packages = 2",
        "",
    ));
    for i in 1..=4 {
        p.write_data(&format!("{i}.jsonl"), &[event(i, i, "a")]);
        ok(&p.run(&["--json"], &[]));
    }
    let schema = ok(&p
        .command(&["schema", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(
        schema["tables"]["events"]["columns"]["id"]["data_type"],
        "bigint"
    );
    let loaded = || {
        std::fs::read_dir(p.path("work/packages/loaded"))
            .unwrap()
            .count()
    };
    assert_eq!(loaded(), 2, "keep_loaded_packages");
    let pruned = ok(&p
        .command(&["prune", "pipeline.toml", "--keep", "1", "--json"])
        .output()
        .unwrap());
    assert_eq!(
        pruned["pruned_loaded_packages"].as_array().unwrap().len(),
        1
    );
    assert_eq!(loaded(), 1);
    let out = p.command(&["prune", "pipeline.toml"]).output().unwrap();
    assert!(
        stderr(&out).contains("nothing to prune"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn info_lists_failed_packages_and_prune_deletes_them() {
    let p = Project::new(&events_pipeline_with(
        "destination = \"duckdb:out.duckdb\"\ndataset = \"raw\"\nworking_dir = \"work\"",
        "\n[resources.columns.name]\ndata_type = \"bigint\"\n",
    ));
    p.write_data("a.jsonl", &[event(1, 1, "not a number")]);
    support::failed(&p.run(&[], &[]));
    let info = ok(&p
        .command(&["info", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    let failed = info["failed_packages"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{info}");
    let kept = failed[0]["kept_in"].as_str().unwrap();
    assert!(std::path::Path::new(kept).is_dir(), "{info}");
    let text = String::from_utf8_lossy(
        &p.command(&["info", "pipeline.toml"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        text.contains("failed packages") && text.contains(kept),
        "{text}"
    );

    let pruned = ok(&p
        .command(&["prune", "pipeline.toml", "--failed", "--json"])
        .output()
        .unwrap());
    assert_eq!(
        pruned["pruned_failed_packages"],
        info["failed_packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["load_id"].clone())
            .collect::<Value>()
    );
    assert!(!std::path::Path::new(kept).exists());
    let info = ok(&p
        .command(&["info", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(info["failed_packages"], json!([]));
}
