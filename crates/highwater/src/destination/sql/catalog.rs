//! What the database holds, read from `information_schema` (both DuckDB and PostgreSQL have
//! it): the columns a table really has, which tables exist, their row counts.

use super::{qualified, Param, SqlClient, SqlValue};
use crate::destination::TableCount;
use crate::error::Result;

/// Columns of `schema.table` in the database, in order; `None` when the table does not exist.
pub fn existing_columns(
    client: &mut dyn SqlClient,
    schema: &str,
    table: &str,
) -> Result<Option<Vec<String>>> {
    let rows = client.query(
        "SELECT CAST(column_name AS VARCHAR) FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        &[Param::Text(schema), Param::Text(table)],
        "reading the catalog",
    )?;
    let names: Vec<String> = rows.into_iter().filter_map(text_of_first).collect();
    Ok((!names.is_empty()).then_some(names))
}

/// Whether `schema.table` exists.
pub fn table_exists(client: &mut dyn SqlClient, schema: &str, table: &str) -> Result<bool> {
    Ok(existing_columns(client, schema, table)?.is_some())
}

/// Data tables of `dataset` (system tables left out) with their row counts, by name.
pub fn table_counts(client: &mut dyn SqlClient, dataset: &str) -> Result<Vec<TableCount>> {
    let rows = client.query(
        "SELECT CAST(table_name AS VARCHAR) FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
        &[Param::Text(dataset)],
        "listing tables",
    )?;
    let mut counts = Vec::new();
    for name in rows.into_iter().filter_map(text_of_first) {
        if name.starts_with("_dlt_") {
            continue;
        }
        let rows = client.query(
            &format!("SELECT count(*) FROM {}", qualified(dataset, &name)),
            &[],
            &format!("counting rows of {name}"),
        )?;
        let n = rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_i64)
            .unwrap_or(0);
        counts.push(TableCount {
            table: name,
            rows: n.max(0) as u64,
        });
    }
    Ok(counts)
}

fn text_of_first(row: Vec<SqlValue>) -> Option<String> {
    match row.into_iter().next() {
        Some(SqlValue::Text(s)) => Some(s),
        _ => None,
    }
}
