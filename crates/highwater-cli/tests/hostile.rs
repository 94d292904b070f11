//! Hostile and odd input as real exports have it, through the `highwater` command into DuckDB:
//! each file either loads as dlt 1.31.0 loads it, or is refused with an error naming the file
//! and line, leaving tables and state as they were and the next run unaffected.

mod support;

use support::{failed, ok, Project};

/// A pipeline appending `data/*.jsonl` to `raw.items` in `out.duckdb`, working dir `work`.
fn items_pipeline(extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "items"
destination = "duckdb:out.duckdb"
dataset = "raw"
working_dir = "work"

[[resources]]
name = "items"
{extra}

[resources.source]
kind = "jsonl"
path = "data/*.jsonl"
"#
    )
}

fn query(p: &Project, sql: &str) -> Vec<Vec<String>> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    let conn = duckdb::Connection::open_with_flags(p.path("out.duckdb"), config).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let width = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..width)
            .map(|i| {
                row.get::<_, Option<String>>(i)
                    .unwrap_or_default()
                    .unwrap_or_else(|| "NULL".into())
            })
            .collect())
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn an_object_of_thousands_of_keys_loads_under_the_default_memory_limit() {
    let p = Project::new(&items_pipeline(""));
    let keys: Vec<String> = (0..5000)
        .map(|i| format!(r#""field_number_{i}": "value {i}""#))
        .collect();
    p.write_data("a.jsonl", &[format!("{{\"id\": 1, {}}}", keys.join(", "))]);
    ok(&p.run(&["--json"], &[]));
    let columns = query(
        &p,
        "SELECT CAST(count(*) AS VARCHAR) FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = 'items'",
    );
    assert_eq!(
        columns[0][0], "5003",
        "5,000 keys, id, _dlt_load_id, _dlt_id"
    );
    assert_eq!(
        query(&p, "SELECT field_number_4999 FROM raw.items")[0][0],
        "value 4999"
    );
}

fn nested(levels: usize) -> String {
    format!(
        r#"{{"id": 1, "d": {}1{}}}"#,
        r#"{"a": "#.repeat(levels),
        "}".repeat(levels)
    )
}

#[test]
fn nesting_past_serde_jsons_limit_loads_and_past_highwaters_is_refused_naming_file_and_line() {
    let p = Project::new(&items_pipeline(""));
    p.write_data("a.jsonl", &[nested(300)]);
    ok(&p.run(&["--json"], &[]));
    let column = format!("d{}", "__a".repeat(300));
    assert_eq!(
        query(
            &p,
            &format!("SELECT CAST(\"{column}\" AS VARCHAR) FROM raw.items")
        )[0][0],
        "1"
    );

    // Deeper than the 10,000 levels highwater reads: refused, nothing changes.
    let state = p.state_file("work");
    std::fs::remove_file(p.path("data/a.jsonl")).unwrap();
    p.write_data("b.jsonl", &[nested(10), nested(10_001)]);
    let err = failed(&p.run(&[], &[]));
    assert!(err.contains("b.jsonl:2"), "{err}");
    assert!(err.contains("nested 10002 levels deep"), "{err}");
    assert_eq!(p.state_file("work"), state);
    assert_eq!(
        query(&p, "SELECT CAST(count(*) AS VARCHAR) FROM raw.items")[0][0],
        "1"
    );
    // The file fixed, the next run loads it.
    p.write_data("b.jsonl", &[nested(10), nested(9_000)]);
    ok(&p.run(&["--json"], &[]));
    assert_eq!(
        query(&p, "SELECT CAST(count(*) AS VARCHAR) FROM raw.items")[0][0],
        "3"
    );
}
