//! SQLite: types from the declared column types (as SQLAlchemy's SQLite dialect reads them for
//! dlt), rows stepped from one statement on a read-only connection.

use std::path::Path;
use std::sync::mpsc::SyncSender;

use base64::Engine as _;
use highwater::DataType;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params_from_iter, Connection, OpenFlags};
use serde_json::Value;

use super::{
    inner_query, row_object, send_chunk, where_clause, Chunk, Pushdown, Range, ReflectedColumn,
    Reflection, Selection, SqlSource,
};

fn open(path: &Path) -> Result<Connection, String> {
    if !path.is_file() {
        return Err("no such database file".into());
    }
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())
}

pub(super) fn reflect(path: &Path, selection: &Selection) -> Result<Reflection, String> {
    let connection = open(path)?;
    let statement = connection
        .prepare(&inner_query(selection))
        .map_err(|e| e.to_string())?;
    let declared: Vec<(String, Option<String>)> = statement
        .columns()
        .map(|c| (c.name().to_string(), c.decl_type().map(str::to_string)))
        .collect();
    let (not_null, primary_key) = match selection {
        Selection::Table(table) => table_info(&connection, table)?,
        Selection::Query(_) => (Vec::new(), Vec::new()),
    };
    let columns = declared
        .into_iter()
        .map(|(name, decl)| {
            let (data_type, precision, scale, timezone) = type_hint(decl.as_deref());
            ReflectedColumn {
                nullable: !not_null.contains(&name),
                name,
                data_type,
                precision,
                scale,
                timezone,
            }
        })
        .collect();
    Ok(Reflection {
        columns,
        primary_key,
    })
}

/// The NOT NULL columns and the primary key (in key order) of a table.
fn table_info(connection: &Connection, table: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let (schema, name) = match table.split_once('.') {
        Some((schema, name)) => (schema, name),
        None => ("main", table),
    };
    let mut statement = connection
        .prepare("SELECT name, \"notnull\", pk FROM pragma_table_info(?1, ?2)")
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([name, schema], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let not_null = rows
        .iter()
        .filter(|(_, nn, _)| *nn != 0)
        .map(|(n, _, _)| n.clone())
        .collect();
    let mut key: Vec<_> = rows.iter().filter(|(_, _, pk)| *pk > 0).collect();
    key.sort_by_key(|(_, _, pk)| *pk);
    Ok((
        not_null,
        key.into_iter().map(|(n, _, _)| n.clone()).collect(),
    ))
}

/// The dlt type of a declared SQLite type: SQLAlchemy's names first, then SQLite's affinity
/// rules (a name with INT is an integer, CHAR/CLOB/TEXT text, REAL/FLOA/DOUB a double, anything
/// else NUMERIC). A column declared without a type gets no type: it is inferred from the values.
fn type_hint(declared: Option<&str>) -> (Option<DataType>, Option<u32>, Option<u32>, Option<bool>) {
    let Some(declared) = declared.map(str::trim).filter(|d| !d.is_empty()) else {
        return (None, None, None, None);
    };
    let upper = declared.to_ascii_uppercase();
    let (base, args) = match upper.split_once('(') {
        Some((base, args)) => (base.trim(), args.trim_end_matches(')')),
        None => (upper.as_str(), ""),
    };
    let numbers: Vec<u32> = args
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    let data_type = match base {
        "BIGINT" | "INT" | "INTEGER" | "SMALLINT" => DataType::Bigint,
        "BOOL" | "BOOLEAN" => DataType::Bool,
        "CHAR" | "VARCHAR" | "NVARCHAR" | "NCHAR" | "TEXT" => DataType::Text,
        "DATE" => DataType::Date,
        "DATETIME" | "TIMESTAMP" => return (Some(DataType::Timestamp), None, None, Some(false)),
        "TIME" => DataType::Time,
        "DOUBLE" | "FLOAT" | "REAL" => DataType::Double,
        "JSON" => DataType::Json,
        "BLOB" => DataType::Binary,
        "DECIMAL" | "NUMERIC" => {
            return match numbers.as_slice() {
                [p, s, ..] => (Some(DataType::Decimal), Some(*p), Some(*s), None),
                [p] => (Some(DataType::Decimal), Some(*p), Some(0), None),
                [] => (Some(DataType::Decimal), None, None, None),
            }
        }
        other if other.contains("INT") => DataType::Bigint,
        other if ["CHAR", "CLOB", "TEXT"].iter().any(|t| other.contains(t)) => DataType::Text,
        other if other.contains("BLOB") => return (None, None, None, None),
        other if ["REAL", "FLOA", "DOUB"].iter().any(|t| other.contains(t)) => DataType::Double,
        _ => DataType::Decimal,
    };
    (Some(data_type), None, None, None)
}

pub(super) fn read(
    path: &Path,
    source: &SqlSource,
    reflection: &Reflection,
    pushdown: Option<&Pushdown>,
    range: &Range,
    sender: &SyncSender<Chunk>,
) -> Result<(), String> {
    let connection = open(path)?;
    let mut sql = format!("SELECT * FROM ({}) AS q", inner_query(&source.selection));
    let mut params = Vec::new();
    if let Some(pushdown) = pushdown {
        // SQLite compares text byte by byte, not as instants: only numeric cursors go into the
        // WHERE; the incremental filters the others.
        let numeric = reflection
            .column(&pushdown.column)
            .and_then(|c| c.data_type)
            .is_some_and(|t| matches!(t, DataType::Bigint | DataType::Double));
        let range = if numeric && bounds_are_numbers(range) {
            range.clone()
        } else {
            Range::default()
        };
        let column = format!("q.{}", super::quote_ident(&pushdown.column));
        let (tail, values) = where_clause(pushdown, &range, &column, |n| format!("?{n}"));
        sql.push_str(&tail);
        params = values.iter().map(sql_value).collect();
    }
    tracing::debug!(%sql, "reading SQLite rows");
    let mut statement = connection.prepare(&sql).map_err(|e| e.to_string())?;
    let names: Vec<String> = statement.column_names().map(str::to_string).collect();
    let mut rows = statement
        .query(params_from_iter(params))
        .map_err(|e| e.to_string())?;
    let chunk_size = source.chunk_size.max(1);
    let mut chunk = Vec::with_capacity(chunk_size.min(10_000));
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut values = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let cell = row.get_ref(i).map_err(|e| format!("column {name}: {e}"))?;
            values.push(json_value(cell).map_err(|e| format!("column {name}: {e}"))?);
        }
        chunk.push(row_object(&names, values));
        if chunk.len() >= chunk_size && !send_chunk(sender, &mut chunk) {
            return Ok(());
        }
    }
    if !chunk.is_empty() {
        send_chunk(sender, &mut chunk);
    }
    Ok(())
}

fn bounds_are_numbers(range: &Range) -> bool {
    [&range.start, &range.end]
        .into_iter()
        .flatten()
        .all(Value::is_number)
}

fn sql_value(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn json_value(cell: ValueRef<'_>) -> Result<Value, String> {
    Ok(match cell {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(
            std::str::from_utf8(t)
                .map_err(|e| format!("invalid UTF-8: {e}"))?
                .to_string(),
        ),
        ValueRef::Blob(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_like_sqlalchemy() {
        let t = |d: &str| type_hint(Some(d));
        assert_eq!(t("INTEGER").0, Some(DataType::Bigint));
        assert_eq!(t("unsigned big int").0, Some(DataType::Bigint));
        assert_eq!(t("VARCHAR(20)").0, Some(DataType::Text));
        assert_eq!(t("CLOB").0, Some(DataType::Text));
        assert_eq!(t("REAL").0, Some(DataType::Double));
        assert_eq!(t("DOUBLE PRECISION").0, Some(DataType::Double));
        assert_eq!(
            t("DECIMAL(10,2)"),
            (Some(DataType::Decimal), Some(10), Some(2), None)
        );
        assert_eq!(
            t("DATETIME"),
            (Some(DataType::Timestamp), None, None, Some(false))
        );
        assert_eq!(t("BOOLEAN").0, Some(DataType::Bool));
        assert_eq!(t("BLOB").0, Some(DataType::Binary));
        assert_eq!(t("WEIRDTYPE").0, Some(DataType::Decimal));
        assert_eq!(type_hint(None).0, None);
    }
}
