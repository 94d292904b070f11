//! Faults around a run, each with real `highwater` processes and real files: the disk filling up
//! during extract, normalize and load (a small tmpfs the test mounts: the suite runs as root, as
//! CI does, and fails, never skips, when it cannot mount); a package damaged on disk; a read-only
//! working directory; the DuckDB file held by a reader; the clock going back between runs. Each
//! must end in a clear error naming what and where, leave the destination as it was, and the
//! next run (fault removed) must load every row exactly once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use support::{failed, ok, stderr};

/// Events with a kilobyte of text each, so that a few thousand fill megabytes.
fn big_events(ids: std::ops::RangeInclusive<i64>) -> Vec<String> {
    ids.map(|i| {
        // Hex of a cheap hash: text that compression barely shrinks.
        let pad: String = (0..64)
            .map(|k| {
                format!(
                    "{:016x}",
                    ((i * 1_000_003 + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                )
            })
            .collect();
        format!(
            r#"{{"id": {i}, "ts": {i}, "name": "n{i}", "pad": "{pad}", "tags": ["t{i}", "x"]}}"#
        )
    })
    .collect()
}

/// The events pipeline into a DuckDB file, its working directory at `work` (relative to the
/// project) and the file at `db`.
struct Project {
    project: support::Project,
    db: PathBuf,
}

impl Project {
    fn new(work: &str, db: Option<&Path>) -> Self {
        let project = support::Project::new("");
        let db = db.map_or_else(|| project.path("out.duckdb"), Path::to_path_buf);
        let keys = format!(
            "destination = \"duckdb:{}\"\ndataset = \"raw\"\nworking_dir = \"{work}\"",
            db.display()
        );
        project.write("pipeline.toml", &support::events_pipeline_with(&keys, ""));
        Project { project, db }
    }

    fn run(&self) -> Output {
        self.project.run(&[], &[])
    }

    /// (events, distinct ids, tags) in the destination; zeros before the first load.
    fn counts(&self) -> (i64, i64, i64) {
        if !self.db.exists() {
            return (0, 0, 0);
        }
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        let conn = duckdb::Connection::open_with_flags(&self.db, config).unwrap();
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0) };
        let exists = one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = 'events'");
        if exists == 0 {
            return (0, 0, 0);
        }
        (
            one("SELECT count(*) FROM raw.events"),
            one("SELECT count(DISTINCT id) FROM raw.events"),
            one("SELECT count(*) FROM raw.events__tags"),
        )
    }

    /// Every one of `n` events once, with its two tags, and nothing left to load.
    fn assert_every_row_once(&self, n: i64) {
        assert_eq!(self.counts(), (n, n, 2 * n), "every row exactly once");
        let again = ok(&self.project.run(&["--json"], &[]));
        assert_eq!(
            again["load_ids"],
            serde_json::json!([]),
            "nothing left to load"
        );
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_kib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("running mount: {e}"));
        assert!(
            out.status.success(),
            "the disk-full tests mount a small tmpfs, which needs root (CI runs as root): mount said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the filesystem more room: space freed.
    fn grow(&self, size_kib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size_kib}k")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A read-only bind mount of a folder over itself, for one test.
struct ReadOnly {
    dir: PathBuf,
}

impl ReadOnly {
    fn mount(dir: &Path) -> ReadOnly {
        for args in [
            vec![
                "--bind".to_string(),
                dir.display().to_string(),
                dir.display().to_string(),
            ],
            vec![
                "-o".into(),
                "remount,bind,ro".into(),
                dir.display().to_string(),
            ],
        ] {
            let out = Command::new("mount").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "making the working directory read-only needs a bind mount, and root (CI runs as root): mount said {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnly {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

const ENOSPC: &str = "No space left on device";

#[test]
fn a_disk_full_during_extract_names_the_path_and_the_next_run_loads_every_row_once() {
    let p = Project::new("work", None);
    let tmpfs = Tmpfs::mount(&p.project.path("work"), 1024);
    p.project.write_data("a.jsonl", &big_events(1..=3000));
    let err = failed(&p.run());
    assert!(err.contains(ENOSPC), "{err}");
    assert!(
        err.contains(&p.project.path("work").display().to_string()),
        "{err}"
    );
    assert_eq!(p.counts(), (0, 0, 0), "nothing loaded");
    tmpfs.grow(64 * 1024);
    ok(&p.project.run(&["--json"], &[]));
    p.assert_every_row_once(3000);
}

#[test]
fn a_disk_full_during_normalize_keeps_the_package_for_the_next_run() {
    let p = Project::new("work", None);
    // Room for the items (about 3.4 MB) and not for their Parquet files as well.
    let tmpfs = Tmpfs::mount(&p.project.path("work"), 5 * 1024);
    p.project.write_data("a.jsonl", &big_events(1..=3000));
    let err = failed(&p.run());
    assert!(err.contains(ENOSPC), "{err}");
    assert!(
        err.contains("normalizing"),
        "the error names the package being normalized: {err}"
    );
    assert_eq!(p.counts(), (0, 0, 0), "nothing loaded");
    assert_eq!(
        std::fs::read_dir(p.project.path("work/packages/extracted"))
            .unwrap()
            .count(),
        1,
        "the extracted package stays pending"
    );
    tmpfs.grow(64 * 1024);
    ok(&p.project.run(&["--json"], &[]));
    p.assert_every_row_once(3000);
}

#[test]
fn a_disk_full_during_load_rolls_back_and_the_next_run_loads_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(&dir.path().join("db"), 6 * 1024);
    let p = Project::new("work", Some(&dir.path().join("db/out.duckdb")));
    p.project.write_data("a.jsonl", &big_events(1..=10));
    ok(&p.project.run(&["--json"], &[]));
    p.project.write_data("b.jsonl", &big_events(11..=12_000));
    let err = failed(&p.run());
    assert!(
        err.contains(&p.db.display().to_string()),
        "the error names the database: {err}"
    );
    assert_eq!(
        p.counts(),
        (10, 10, 20),
        "the failed load left nothing behind"
    );
    tmpfs.grow(256 * 1024);
    ok(&p.project.run(&["--json"], &[]));
    p.assert_every_row_once(12_000);
}

/// The one package pending in `stage`.
fn pending_package(p: &Project, stage: &str) -> PathBuf {
    let dir = p.project.path(&format!("work/packages/{stage}"));
    let mut packages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(packages.len(), 1, "{packages:?}");
    packages.remove(0)
}

/// The first file in `dir`.
fn first_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.remove(0)
}

#[test]
fn a_damaged_package_is_refused_naming_it_until_drop_pending() {
    for (stage, crash, damage) in [
        ("normalized", "before-load", "truncate"),
        ("normalized", "before-load", "alter"),
        ("extracted", "after-extract-commit", "alter"),
    ] {
        let p = Project::new("work", None);
        p.project
            .write_data("a.jsonl", &support::events(1..=500, "a"));
        let crashed = p.project.run(&[], &[("HIGHWATER_TEST_CRASH", crash)]);
        assert!(!crashed.status.success());
        let package = pending_package(&p, stage);
        let load_id = package.file_name().unwrap().to_string_lossy().to_string();
        let file = first_file(&package.join(if stage == "extracted" {
            "items"
        } else {
            "tables"
        }));
        let mut bytes = std::fs::read(&file).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x20;
            }
        }
        std::fs::write(&file, &bytes).unwrap();

        for _ in 0..2 {
            let err = failed(&p.run());
            for expected in [
                format!("load package {load_id} is damaged"),
                file.file_name().unwrap().to_string_lossy().to_string(),
                "highwater drop-pending".to_string(),
            ] {
                assert!(
                    err.contains(&expected),
                    "{stage} {damage}: no {expected:?} in {err}"
                );
            }
            assert_eq!(p.counts(), (0, 0, 0), "{stage} {damage}: nothing loaded");
        }
        let dropped = ok(&p
            .project
            .command(&["drop-pending", "pipeline.toml", "--json"])
            .output()
            .unwrap());
        assert_eq!(dropped["dropped_packages"], serde_json::json!([load_id]));
        ok(&p.project.run(&["--json"], &[]));
        p.assert_every_row_once(500);
    }
}

#[test]
fn drop_pending_after_a_load_committed_before_the_crash_loads_nothing_twice() {
    let p = Project::new("work", None);
    p.project
        .write_data("a.jsonl", &support::events(1..=300, "a"));
    let crashed = p
        .project
        .run(&[], &[("HIGHWATER_TEST_CRASH", "after-commit")]);
    assert!(!crashed.status.success());
    let dropped = ok(&p
        .project
        .command(&["drop-pending", "pipeline.toml", "--json"])
        .output()
        .unwrap());
    assert_eq!(dropped["dropped_packages"].as_array().unwrap().len(), 1);
    // The state comes back from the destination, which has the load: nothing is extracted again.
    p.project
        .write_data("b.jsonl", &support::events(301..=400, "b"));
    ok(&p.project.run(&["--json"], &[]));
    p.assert_every_row_once(400);
}

#[test]
fn a_read_only_working_directory_is_an_error_naming_it_and_changes_nothing() {
    let p = Project::new("work", None);
    p.project
        .write_data("a.jsonl", &support::events(1..=100, "a"));
    ok(&p.project.run(&["--json"], &[]));
    p.project
        .write_data("b.jsonl", &support::events(101..=200, "b"));
    let state_before = p.project.state_file("work");
    {
        let _ro = ReadOnly::mount(&p.project.path("work"));
        let err = failed(&p.run());
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(
            err.contains(&p.project.path("work").display().to_string()),
            "{err}"
        );
        assert_eq!(p.counts(), (100, 100, 200), "destination unchanged");
    }
    assert_eq!(
        p.project.state_file("work"),
        state_before,
        "state unchanged"
    );
    ok(&p.project.run(&["--json"], &[]));
    p.assert_every_row_once(200);
}

/// A reader holding the DuckDB file (another process, as DuckDB's file lock is per process).
fn hold_read_only(db: &Path) -> duckdb::Connection {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    duckdb::Connection::open_with_flags(db, config).unwrap()
}

#[test]
fn a_duckdb_file_held_by_a_reader_times_out_naming_it_or_waits_for_it() {
    let p = Project::new("work", None);
    p.project
        .write_data("a.jsonl", &support::events(1..=100, "a"));
    ok(&p.project.run(&["--json"], &[]));
    p.project
        .write_data("b.jsonl", &support::events(101..=200, "b"));

    let reader = hold_read_only(&p.db);
    let out = p.project.run(&[], &[("HIGHWATER_LOCK_TIMEOUT", "1")]);
    let err = failed(&out);
    assert!(err.contains(&p.db.display().to_string()), "{err}");
    assert!(err.contains("locked"), "{err}");
    drop(reader);
    assert_eq!(p.counts(), (100, 100, 200), "destination unchanged");

    // A run that starts while the reader holds the file waits for it and then loads.
    let reader = hold_read_only(&p.db);
    let run = p
        .project
        .command(&["run", "pipeline.toml", "--progress", "none", "--json"])
        .env("HIGHWATER_LOCK_TIMEOUT", "60")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(reader);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    p.assert_every_row_once(200);
}

/// libfaketime, which makes a process see a shifted clock (Debian's `faketime` package; CI
/// installs it).
fn libfaketime() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("the clock test needs libfaketime (apt-get install faketime; .ci/run installs it): none of {candidates:?}")
        })
}

#[test]
fn load_ids_keep_increasing_when_the_clock_goes_back_between_runs() {
    let p = Project::new("work", None);
    let lib = libfaketime();
    let mut load_ids = Vec::new();
    for (batch, clock) in [(1, "+0"), (2, "-1d"), (3, "-2h"), (4, "+0")] {
        let first = (batch - 1) * 100 + 1;
        p.project.write_data(
            &format!("{batch}.jsonl"),
            &support::events(first..=batch * 100, "x"),
        );
        let out = p
            .project
            .command(&["run", "pipeline.toml", "--progress", "none", "--json"])
            .env("LD_PRELOAD", &lib)
            .env("FAKETIME", clock)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .output()
            .unwrap();
        let json = ok(&out);
        let ids = json["load_ids"].as_array().unwrap().clone();
        assert_eq!(ids.len(), 1, "{json}");
        // As ten-millionths of a second: an f64 would round the last digit away.
        let (secs, frac) = ids[0].as_str().unwrap().split_once('.').unwrap();
        load_ids.push(secs.parse::<u64>().unwrap() * 10_000_000 + frac.parse::<u64>().unwrap());
    }
    assert!(
        load_ids.windows(2).all(|w| w[0] < w[1]),
        "load ids go back with the clock: {load_ids:?}"
    );
    // The clock really went back for the second run.
    assert!(load_ids[1] - load_ids[0] < 10_000_000, "{load_ids:?}");
    p.assert_every_row_once(400);
}
