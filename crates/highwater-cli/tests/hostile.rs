//! Hostile and odd input as real exports have it, through the `highwater` command into DuckDB:
//! each file either loads as dlt 1.31.0 loads it, or is refused with an error naming the file
//! and line, leaving tables and state as they were and the next run unaffected.

#[path = "../../highwater/tests/common/mod.rs"]
mod common;
mod support;

use common::destinations::{Kind, TestDestination};
use support::{failed, ok, on_every_destination, Project};

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

/// What highwater does with a case of `tests/hostile/cases` (README, "Hostile and odd input"),
/// decided against what dlt 1.31.0 did with it (`tests/hostile/dlt_outcomes.json`).
enum Decision {
    /// Loads the tables dlt loaded: same columns and types, same rows.
    AsDlt,
    /// Refused with an error naming the file and this line, as dlt refuses it.
    Refused { line: u32, says: &'static str },
    /// Loads, where dlt fails or loads otherwise: these rows of `items`, `id` and `column`
    /// joined by a space.
    Differs {
        column: &'static str,
        rows: &'static [&'static str],
    },
}

use Decision::*;

const CASES: &[(&str, Decision)] = &[
    (
        "blank_lines",
        Differs {
            column: "id",
            rows: &["1 1", "2 2"],
        },
    ),
    ("crlf", AsDlt),
    ("duplicate_keys", AsDlt),
    ("empty_file", AsDlt),
    (
        "float_overflow",
        Refused {
            line: 2,
            says: "number out of range",
        },
    ),
    (
        "int_beyond_64_bits",
        Refused {
            line: 2,
            says: "cannot store 1.8446744073709552e+19 as bigint",
        },
    ),
    ("int_beyond_64_bits_first", AsDlt),
    (
        "invalid_utf8",
        Refused {
            line: 2,
            says: "invalid unicode",
        },
    ),
    (
        "lone_surrogate",
        Refused {
            line: 2,
            says: "hex escape",
        },
    ),
    ("megabyte_strings", AsDlt),
    (
        "missing_cursor",
        Refused {
            line: 2,
            says: "no cursor value",
        },
    ),
    (
        "missing_primary_key",
        Refused {
            line: 2,
            says: "column id: value is missing or null",
        },
    ),
    (
        "nan_literal",
        Refused {
            line: 2,
            says: "expected value",
        },
    ),
    (
        "nul_escaped",
        Differs {
            column: "s",
            rows: &["1 a\0b", "2 ok"],
        },
    ),
    (
        "nul_raw",
        Refused {
            line: 2,
            says: "control character",
        },
    ),
    (
        "null_primary_key",
        Refused {
            line: 2,
            says: "column id: value is missing or null",
        },
    ),
    ("scalar_line", AsDlt),
    ("sql_keys", AsDlt),
    (
        "truncated_last_line",
        Refused {
            line: 2,
            says: "EOF while parsing",
        },
    ),
    (
        "two_values_on_a_line",
        Refused {
            line: 2,
            says: "trailing characters",
        },
    ),
    ("type_changes", AsDlt),
    (
        "utf8_bom",
        Refused {
            line: 1,
            says: "byte order mark",
        },
    ),
    (
        "wrong_cursor_type",
        Refused {
            line: 2,
            says: "does not match the cursor's type",
        },
    ),
];

fn hostile_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hostile")
}

/// The bytes of a case; the one of megabytes is made here, as `make_cases.py` makes it.
fn case_bytes(name: &str) -> Vec<u8> {
    if name == "megabyte_strings" {
        let mut out = b"{\"id\": 1, \"s\": \"".to_vec();
        out.extend(std::iter::repeat_n(b'x', 5 << 20));
        out.extend(b"\"}\n{\"id\": 2, \"s\": \"");
        out.extend("é".repeat(1 << 20).into_bytes());
        out.extend(b"\"}\n");
        return out;
    }
    std::fs::read(hostile_dir().join("cases").join(format!("{name}.jsonl"))).unwrap()
}

/// The pipeline of a case: its hints from `cases.json`, over `data/*.jsonl`.
fn case_pipeline(hints: &serde_json::Value) -> String {
    let mut extra = String::new();
    if let Some(d) = hints["write_disposition"].as_str() {
        extra += &format!("write_disposition = \"{d}\"\n");
    }
    if let Some(k) = hints["primary_key"].as_str() {
        extra += &format!("primary_key = \"{k}\"\n");
    }
    let mut pipeline = items_pipeline(&extra);
    if let Some(inc) = hints["incremental"].as_object() {
        pipeline += &format!(
            "\n[resources.incremental]\ncursor_path = \"{}\"\ninitial_value = {}\n",
            inc["cursor_path"].as_str().unwrap(),
            inc["initial_value"]
        );
    }
    pipeline
}

/// A DuckDB value as `dlt_outcomes.py` renders it.
fn render(value: duckdb::types::Value) -> serde_json::Value {
    use duckdb::types::Value as V;
    match value {
        V::Null => serde_json::Value::Null,
        V::Boolean(b) => b.into(),
        V::BigInt(i) => i.into(),
        V::Int(i) => i.into(),
        V::Double(f) => f.into(),
        V::Text(s) if s.chars().count() > 60 => {
            format!("<text of {} characters>", s.chars().count()).into()
        }
        V::Text(s) => s.into(),
        other => format!("{other:?}").into(),
    }
}

/// Columns (name, DuckDB type) and rows (all but dlt's columns, in `order`, sorted) of a table.
fn table_of(
    p: &Project,
    table: &str,
    order: &[String],
) -> (Vec<(String, String)>, Vec<serde_json::Value>) {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    let conn = duckdb::Connection::open_with_flags(p.path("out.duckdb"), config).unwrap();
    let mut stmt = conn
        .prepare("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ? ORDER BY ordinal_position")
        .unwrap();
    let mut columns: Vec<(String, String)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    columns.sort();
    let select: Vec<String> = order
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM raw.\"{table}\" ORDER BY ALL",
            select.join(", ")
        ))
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(serde_json::Value::Array(
                (0..order.len())
                    .map(|i| render(r.get(i).unwrap()))
                    .collect(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (columns, rows)
}

#[test]
fn hostile_inputs_load_as_dlt_loads_them_or_are_refused_naming_file_and_line() {
    let outcomes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hostile_dir().join("dlt_outcomes.json")).unwrap())
            .unwrap();
    let hints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hostile_dir().join("cases/cases.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
    let mut recorded: Vec<&str> = hints
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    recorded.sort();
    assert_eq!(
        names, recorded,
        "every case of cases.json has a decision, in name order"
    );

    for (name, decision) in CASES {
        let dlt = &outcomes[*name];
        let p = Project::new(&case_pipeline(&hints[*name]));
        match decision {
            AsDlt => {
                assert!(dlt.get("error").is_none(), "{name}: dlt failed: {dlt}");
                std::fs::write(p.path(&format!("data/{name}.jsonl")), case_bytes(name)).unwrap();
                ok(&p.run(&["--json"], &[]));
                let tables = query(
                    &p,
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw' AND table_name NOT LIKE '_dlt%' ORDER BY 1",
                );
                let dlt_tables: Vec<&String> = dlt["tables"].as_object().unwrap().keys().collect();
                assert_eq!(
                    tables.iter().map(|r| &r[0]).collect::<Vec<_>>(),
                    dlt_tables,
                    "{name}: tables"
                );
                for (table, expected) in dlt["tables"].as_object().unwrap() {
                    let mut columns: Vec<(String, String)> = expected["columns"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| {
                            (
                                c[0].as_str().unwrap().to_string(),
                                c[1].as_str().unwrap().to_string(),
                            )
                        })
                        .collect();
                    columns.sort();
                    let order: Vec<String> = expected["columns"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c[0].as_str().unwrap().to_string())
                        .filter(|c| !c.starts_with("_dlt_"))
                        .collect();
                    let (got_columns, got_rows) = table_of(&p, table, &order);
                    assert_eq!(got_columns, columns, "{name}: columns of {table}");
                    assert_eq!(
                        serde_json::Value::Array(got_rows),
                        expected["rows"],
                        "{name}: rows of {table}"
                    );
                }
            }
            Refused { line, says } => {
                assert!(dlt.get("error").is_some(), "{name}: dlt loaded it: {dlt}");
                // A good load first: the refusal must leave its tables and state as they were.
                // Its file is taken away after, so that a later run has nothing else to load.
                p.write_data("good.jsonl", &[r#"{"id": 100, "ts": 1}"#.to_string()]);
                ok(&p.run(&["--json"], &[]));
                std::fs::remove_file(p.path("data/good.jsonl")).unwrap();
                let state = p.state_file("work");
                let rows = query(&p, "SELECT CAST(count(*) AS VARCHAR) FROM raw.items");
                std::fs::write(p.path(&format!("data/{name}.jsonl")), case_bytes(name)).unwrap();
                let err = failed(&p.run(&[], &[]));
                assert!(
                    err.contains(&format!("{name}.jsonl:{line}")),
                    "{name}: {err}"
                );
                assert!(err.contains(says), "{name}: {err}");
                assert_eq!(p.state_file("work"), state, "{name}: state unchanged");
                assert_eq!(
                    query(&p, "SELECT CAST(count(*) AS VARCHAR) FROM raw.items"),
                    rows,
                    "{name}"
                );
                // The file taken away, the next run is unaffected: it finishes with nothing new.
                std::fs::remove_file(p.path(&format!("data/{name}.jsonl"))).unwrap();
                ok(&p.run(&["--json"], &[]));
                assert_eq!(
                    query(&p, "SELECT CAST(count(*) AS VARCHAR) FROM raw.items"),
                    rows,
                    "{name}"
                );
            }
            Differs { column, rows } => {
                std::fs::write(p.path(&format!("data/{name}.jsonl")), case_bytes(name)).unwrap();
                ok(&p.run(&["--json"], &[]));
                let got: Vec<String> = query(
                    &p,
                    &format!("SELECT concat_ws(' ', id, {column}) FROM raw.items ORDER BY id"),
                )
                .into_iter()
                .map(|r| r[0].clone())
                .collect();
                assert_eq!(got, *rows, "{name}");
            }
        }
    }
}

on_every_destination!(what_a_destination_stores_of_odd_strings_and_keys);

/// The cases whose outcome is the destination's: a NUL in a string (PostgreSQL text cannot hold
/// one: dropped there, as dlt drops it; kept elsewhere), keys that look like SQL (named and quoted
/// as dlt names them), a string of 5 MB.
fn what_a_destination_stores_of_odd_strings_and_keys(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDestination::new(kind, dir.path());
    let p =
        Project::new(&items_pipeline("").replace("duckdb:out.duckdb", &d.spec())).with_env(d.env());
    let mut text = String::from(r#"{"id": 1, "s": "a\u0000b"}"#);
    text += "\n";
    text += r#"{"id": 2, "select": 1, "a\"; DROP TABLE items; --": 2}"#;
    text += "\n";
    text += &format!(r#"{{"id": 3, "s": "{}"}}"#, "x".repeat(5 << 20));
    text += "\n";
    p.write("data/odd.jsonl", &text);
    ok(&p.run(&["--json"], &[]));
    let nul = if kind == Kind::Postgres { "ab" } else { "a\0b" };
    assert_eq!(
        d.rows(
            "SELECT CAST(id AS VARCHAR), CAST(\"select\" AS VARCHAR), \
             CAST(a_drop_table_itemsxxx AS VARCHAR), CAST(length(s) AS VARCHAR) \
             FROM raw.items ORDER BY id"
        ),
        vec![
            serde_json::json!(["1", null, null, nul.len().to_string()]),
            serde_json::json!(["2", "1", "2", null]),
            serde_json::json!(["3", null, null, (5 << 20).to_string()]),
        ]
        .into_iter()
        .map(|r| r.as_array().unwrap().clone())
        .collect::<Vec<_>>(),
        "{kind:?}"
    );
    assert_eq!(
        d.rows("SELECT s FROM raw.items WHERE id = 1"),
        vec![vec![serde_json::json!(nul)]],
        "{kind:?}"
    );
}
