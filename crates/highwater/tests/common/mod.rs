//! Helpers shared by the integration tests: the destinations they run over (real servers) and
//! reading tables back as canonical JSON.

#![allow(dead_code)]

/// `on!(test: duckdb, postgres)`: `mod test { #[test] fn duckdb() … }` — the test function
/// `test(kind)` once per listed destination (`duckdb`, `postgres`, `filesystem`, `s3`).
#[allow(unused_macros)] // not every suite runs over destinations
macro_rules! on {
    ($test:ident: $($kind:ident),+ $(,)?) => {
        mod $test {
            $(
                #[test]
                fn $kind() {
                    super::$test(on!(@kind $kind));
                }
            )+
        }
    };
    (@kind duckdb) => { super::Kind::DuckDb };
    (@kind postgres) => { super::Kind::Postgres };
    (@kind filesystem) => { super::Kind::Filesystem };
    (@kind s3) => { super::Kind::S3 };
}

pub mod destinations;
pub mod pg;
pub mod s3;
pub mod scenario;

use std::collections::BTreeMap;
use std::path::Path;

use duckdb::Connection;
use serde_json::{Map, Value};

/// A table read back: columns (name, type, nullable) in order and rows as JSON objects.
#[derive(Debug, Clone)]
pub struct TableDump {
    pub columns: Vec<(String, String, bool)>,
    pub rows: Vec<Map<String, Value>>,
}

/// A pipeline named `name` loading into `dir/db.duckdb` (dataset `data`), working in `dir/work`.
pub fn pipeline(dir: &Path, name: &str) -> highwater::Pipeline {
    highwater::Pipeline::builder(name)
        .dataset("data")
        .destination(highwater::DestinationConfig::duckdb(dir.join("db.duckdb")))
        .working_dir(dir.join("work"))
        .build()
        .unwrap()
}

/// Opens a DuckDB file read-only.
pub fn open(path: &Path) -> Connection {
    Connection::open(path).expect("open duckdb")
}

/// Every data table of `dataset` (system tables excluded).
pub fn dump_dataset(conn: &Connection, dataset: &str) -> BTreeMap<String, TableDump> {
    let mut stmt = conn
        .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name")
        .unwrap();
    let names: Vec<String> = stmt
        .query_map([dataset], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    names
        .into_iter()
        .filter(|n| !n.starts_with("_dlt_"))
        .map(|n| {
            let dump = dump_table(conn, dataset, &n);
            (n, dump)
        })
        .collect()
}

/// One table, values rendered canonically by column type.
pub fn dump_table(conn: &Connection, dataset: &str, table: &str) -> TableDump {
    let mut stmt = conn
        .prepare("SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position")
        .unwrap();
    let columns: Vec<(String, String, bool)> = stmt
        .query_map([dataset, table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)? == "YES",
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let select = columns
        .iter()
        .map(|(c, _, _)| format!("CAST(\"{}\" AS VARCHAR)", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {select} FROM \"{dataset}\".\"{table}\"");
    let mut stmt = conn.prepare(&sql).unwrap();
    let mut rows = Vec::new();
    let mut result = stmt.query([]).unwrap();
    while let Some(row) = result.next().unwrap() {
        let mut map = Map::new();
        for (i, (name, ty, _)) in columns.iter().enumerate() {
            let text: Option<String> = row.get(i).unwrap();
            map.insert(name.clone(), canonical_from_text(text, ty));
        }
        rows.push(map);
    }
    TableDump { columns, rows }
}

/// A value read as text from DuckDB, in the canonical form for its column type.
pub fn canonical_from_text(text: Option<String>, ty: &str) -> Value {
    let Some(text) = text else { return Value::Null };
    match ty {
        "BIGINT" | "INTEGER" => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        "DOUBLE" => text
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        "BOOLEAN" => Value::Bool(text == "true"),
        "JSON" => highwater::json::from_slice(text.as_bytes()).unwrap_or(Value::String(text)),
        t if t.starts_with("TIMESTAMP") => Value::from(timestamp_micros(&text)),
        "BLOB" => Value::String(blob_base64(&text)),
        t if t.starts_with("DECIMAL") => text
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(Value::String(text)),
        _ => Value::String(text),
    }
}

/// A value as the fixture generator rendered it, in the canonical form for its column type.
pub fn canonical_from_fixture(value: &Value, ty: &str) -> Value {
    match (value, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Number(n), "DOUBLE") => Value::from(n.as_f64().unwrap()),
        (Value::String(s), t) if t.starts_with("TIMESTAMP") => Value::from(timestamp_micros(s)),
        (Value::String(s), t) if t.starts_with("DECIMAL") => {
            s.parse::<f64>().map(Value::from).unwrap_or(value.clone())
        }
        _ => value.clone(),
    }
}

/// DuckDB's text form of a BLOB (`\x0A` escapes, printable ASCII as is) in base64, the
/// fixture generator's form.
pub fn blob_base64(text: &str) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'\\' && tail.first() == Some(&b'x') && tail.len() >= 3 {
            let hex = std::str::from_utf8(&tail[1..3]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).unwrap());
            rest = &tail[3..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Microseconds since the epoch of `2024-01-01T00:00:00+00:00` or DuckDB's `2024-01-01 00:00:00+00`;
/// a time without offset (a naive `TIMESTAMP`) counts as UTC.
pub fn timestamp_micros(text: &str) -> i64 {
    let mut s = text.replace(' ', "T");
    if s.ends_with("+00") {
        s.push_str(":00");
    }
    let time = s.split_once('T').map_or("", |(_, t)| t);
    if !time.contains(['+', '-', 'Z']) {
        s.push_str("+00:00");
    }
    chrono::DateTime::parse_from_rfc3339(&s)
        .map(|t| t.timestamp_micros())
        .unwrap_or_else(|e| panic!("bad timestamp {text:?}: {e}"))
}

const ID_COLUMNS: [&str; 4] = ["_dlt_id", "_dlt_parent_id", "_dlt_root_id", "_dlt_load_id"];

/// Rows of every root table as canonical trees: ids replaced by structure (children nested under
/// their parent in list order, root ids checked), load ids replaced by their rank. Sorted, so two
/// datasets with the same content give equal output whatever their random ids.
pub fn canonical_trees(tables: &BTreeMap<String, TableDump>) -> BTreeMap<String, Vec<String>> {
    let mut load_ids: Vec<String> = tables
        .values()
        .flat_map(|t| t.rows.iter())
        .filter_map(|r| {
            r.get("_dlt_load_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    load_ids.sort();
    load_ids.dedup();
    let parent_of = |name: &str| -> Option<String> {
        let mut best: Option<&String> = None;
        for candidate in tables.keys() {
            if name.starts_with(&format!("{candidate}__"))
                && best.is_none_or(|b| candidate.len() > b.len())
            {
                best = Some(candidate);
            }
        }
        best.cloned()
    };
    let is_child = |t: &TableDump| t.columns.iter().any(|(c, _, _)| c == "_dlt_parent_id");
    let mut out = BTreeMap::new();
    for (name, table) in tables {
        if is_child(table) {
            continue;
        }
        let mut trees: Vec<String> = table
            .rows
            .iter()
            .map(|row| {
                let root_id = row
                    .get("_dlt_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                canonical_row(tables, name, row, &root_id, &load_ids, &parent_of).to_string()
            })
            .collect();
        trees.sort();
        out.insert(name.clone(), trees);
    }
    out
}

fn canonical_row(
    tables: &BTreeMap<String, TableDump>,
    table: &str,
    row: &Map<String, Value>,
    root_id: &str,
    load_ids: &[String],
    parent_of: &dyn Fn(&str) -> Option<String>,
) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in row {
        if !ID_COLUMNS.contains(&k.as_str()) && !v.is_null() {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(load) = row.get("_dlt_load_id").and_then(Value::as_str) {
        out.insert(
            "#load".into(),
            Value::from(
                load_ids
                    .iter()
                    .position(|l| l == load)
                    .unwrap_or(usize::MAX),
            ),
        );
    }
    if let Some(r) = row.get("_dlt_root_id") {
        out.insert("#root_ok".into(), Value::Bool(r.as_str() == Some(root_id)));
    }
    let id = row.get("_dlt_id").and_then(Value::as_str).unwrap_or("");
    let mut children = serde_json::Map::new();
    for (child_name, child) in tables {
        if parent_of(child_name).as_deref() != Some(table) {
            continue;
        }
        let mut rows: Vec<&Map<String, Value>> = child
            .rows
            .iter()
            .filter(|r| r.get("_dlt_parent_id").and_then(Value::as_str) == Some(id))
            .collect();
        rows.sort_by_key(|r| r.get("_dlt_list_idx").and_then(Value::as_i64).unwrap_or(0));
        if !rows.is_empty() {
            children.insert(
                child_name.clone(),
                Value::Array(
                    rows.into_iter()
                        .map(|r| canonical_row(tables, child_name, r, root_id, load_ids, parent_of))
                        .collect(),
                ),
            );
        }
    }
    if !children.is_empty() {
        out.insert("#children".into(), Value::Object(children));
    }
    Value::Object(out)
}

/// Runs a SQL query returning one integer.
pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Expected tables from the fixture, values made canonical by column type.
pub fn expected_tables(expected: &Value) -> BTreeMap<String, TableDump> {
    let mut out = BTreeMap::new();
    for (name, table) in expected["tables"].as_object().unwrap() {
        let columns: Vec<(String, String, bool)> = table["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["type"].as_str().unwrap().to_string(),
                    c["nullable"].as_bool().unwrap(),
                )
            })
            .collect();
        let rows = table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let obj = r.as_object().unwrap();
                columns
                    .iter()
                    .map(|(c, ty, _)| {
                        (
                            c.clone(),
                            canonical_from_fixture(obj.get(c).unwrap_or(&Value::Null), ty),
                        )
                    })
                    .collect()
            })
            .collect();
        out.insert(name.clone(), TableDump { columns, rows });
    }
    out
}
