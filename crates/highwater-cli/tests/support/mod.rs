//! What the command's suites share: the command with none of the test's own environment, a
//! project folder, the checks of a command's outcome, the events pipeline most suites load, and
//! running one test over every destination.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The command, with nothing of the test's own environment that would change a run.
pub fn highwater() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_highwater"));
    for var in [
        "HIGHWATER_TEST_CRASH",
        "HIGHWATER_HOME",
        "HIGHWATER_LOCK_TIMEOUT",
        "HIGHWATER_INTERVAL_START",
        "HIGHWATER_INTERVAL_END",
        "DLT_INTERVAL_START",
        "DLT_INTERVAL_END",
        "PGPASSWORD",
        "PG_PASSWORD",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A project folder: `pipeline.toml`, `data/`, working directories, and the environment every
/// command of the project gets (a destination's credentials).
pub struct Project {
    pub dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Project {
    pub fn new(pipeline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).unwrap();
        Project {
            dir,
            env: Vec::new(),
        }
    }

    /// The same project, its commands run with `env` set.
    pub fn with_env(mut self, env: Vec<(&'static str, String)>) -> Self {
        self.env = env;
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    pub fn write_data(&self, name: &str, lines: &[String]) {
        self.write(&format!("data/{name}"), &(lines.join("\n") + "\n"));
    }

    /// `highwater ARGS` in the project folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = highwater();
        cmd.current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args);
        cmd
    }

    /// `highwater run FILE --progress none ARGS` with `envs` set.
    pub fn run_file(&self, file: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(&["run", file, "--progress", "none"]);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// `highwater run pipeline.toml --progress none ARGS` with `envs` set.
    pub fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.run_file("pipeline.toml", args, envs)
    }

    /// A successful `run --json`: its JSON.
    pub fn run_ok(&self, envs: &[(&str, &str)]) -> Value {
        ok(&self.run(&["--json"], envs))
    }

    /// The `state.json` of working dir `work`, if there is one.
    pub fn state_file(&self, work: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(work).join("state.json")).ok()
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON on stdout of a command that must have succeeded.
pub fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout))
}

/// The stderr of a command that must have failed with exit status 1.
pub fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failed run: {}",
        stderr(out)
    );
    stderr(out)
}

/// The points a run can be told to crash at (`HIGHWATER_TEST_CRASH`), in the order a run
/// reaches them.
pub const CRASH_POINTS: [&str; 6] = [
    "after-extract",
    "after-extract-commit",
    "mid-normalize",
    "before-load",
    "before-commit",
    "after-commit",
];

/// A pipeline over `data/*.jsonl` merged by id, incremental on `ts`; `pipeline_keys` are the
/// `[pipeline]` keys besides the name, `tail` goes at the end of the file.
pub fn events_pipeline_with(pipeline_keys: &str, tail: &str) -> String {
    format!(
        r#"[pipeline]
name = "events"
{pipeline_keys}

[[resources]]
name = "events"
write_disposition = "merge"
primary_key = "id"

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"

[resources.incremental]
cursor_path = "ts"
initial_value = 0
{tail}"#
    )
}

/// The events pipeline into `destination`, dataset `raw`, working dir `work`.
pub fn events_pipeline(destination: &str) -> String {
    events_pipeline_with(
        &format!("destination = \"{destination}\"\ndataset = \"raw\"\nworking_dir = \"work\""),
        "",
    )
}

/// One event with two tags.
pub fn event(id: i64, ts: i64, name: &str) -> String {
    format!(r#"{{"id": {id}, "ts": {ts}, "name": "{name}", "tags": ["t{id}", "x"]}}"#)
}

/// Events `ids`, each with its id as cursor.
pub fn events(ids: std::ops::RangeInclusive<i64>, name: &str) -> Vec<String> {
    ids.map(|i| event(i, i, name)).collect()
}

/// Runs `fn $test(kind: Kind)` as one test per destination kind.
#[allow(unused_macros)]
macro_rules! on_every_destination {
    ($test:ident) => {
        mod $test {
            use super::*;
            #[test]
            fn duckdb() {
                super::$test(Kind::DuckDb);
            }
            #[test]
            fn postgres() {
                super::$test(Kind::Postgres);
            }
            #[test]
            fn filesystem() {
                super::$test(Kind::Filesystem);
            }
            #[test]
            fn s3() {
                super::$test(Kind::S3);
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_destination;
