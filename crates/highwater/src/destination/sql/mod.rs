//! SQL shared by the SQL destinations (DuckDB, PostgreSQL): a load plan carried out as
//! statements, dlt's system tables, the catalog lookups, the merge statements (`scd2` in its
//! own module) and the swaps of replaces through staging.
//!
//! A destination supplies a [`SqlClient`]: a connection (usually inside a transaction) that runs
//! statements with parameters, answers queries, bulk-loads a package file, and names its
//! [`Dialect`] (type names, temporary tables, load order). Identifiers come from the schema
//! (already normalized) and are always quoted here; values always go as parameters.

mod catalog;
mod load;
mod merge;
mod replace;
mod scd2;
mod system;

use std::path::PathBuf;

pub use catalog::{existing_columns, table_counts, table_exists};
pub use load::{load, Outcome};
pub use merge::{delete_insert, direct_merge_deletes, upsert, ChainTable, Statement};
pub use replace::{swap, Swap};
pub use scd2::{load_time, scd2, Scd2Statements, Scd2Values};
pub use system::{ensure_system_tables, is_loaded, recent_loads, restore};

use crate::error::Result;
use crate::schema::{Column, Table};

/// A statement parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    /// Text.
    Text(&'a str),
    /// A 64-bit integer.
    Int(i64),
}

/// A value of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

impl SqlValue {
    /// The integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The text, if it is some.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// What differs between SQL databases in the statements the shared code writes.
pub trait Dialect {
    /// The column type of `column` (`VARCHAR`, `TIMESTAMP WITH TIME ZONE`, `jsonb`, …).
    fn type_name(&self, column: &Column) -> String;

    /// One statement creating the temporary table `name` (quoted) from `select`, replacing one
    /// left by an earlier statement of the same session.
    fn create_temp_table_as(&self, name: &str, select: &str) -> String;

    /// An expression that orders a freshly filled table's rows in load order (`rowid`), so a
    /// merge keeps the last duplicate of a key.
    fn load_order(&self) -> &'static str;

    /// Whether a table can move between schemas (`ALTER TABLE … SET SCHEMA`), which lets a
    /// `staging-optimized` replace put its staging tables in place without copying them.
    fn moves_tables(&self) -> bool;

    /// `expr` (a `TIMESTAMP WITH TIME ZONE`) as RFC 3339 text in UTC, e.g.
    /// `2024-01-01T00:00:00.000000Z`.
    fn timestamp_text(&self, expr: &str) -> String;
}

/// A connection to a SQL database, as the shared code drives it.
pub trait SqlClient {
    /// The database's dialect.
    fn dialect(&self) -> &dyn Dialect;

    /// Runs one statement; `context` says what it is for, in errors.
    fn execute(&mut self, sql: &str, params: &[Param<'_>], context: &str) -> Result<u64>;

    /// Runs a query; integer columns come back as [`SqlValue::Int`], text as [`SqlValue::Text`].
    fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        context: &str,
    ) -> Result<Vec<Vec<SqlValue>>>;

    /// Bulk-loads the package files `files` of one table into `schema.table`, in the order of
    /// the list and of the rows in each file unless `order` frees it.
    fn bulk_insert(
        &mut self,
        schema: &str,
        table: &Table,
        files: &[BulkFile<'_>],
        order: RowOrder,
    ) -> Result<()>;
}

/// A package file to bulk-load.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkFile<'a> {
    /// The Parquet file.
    pub path: PathBuf,
    /// The columns it holds, in order.
    pub columns: &'a [String],
}

/// Whether a bulk insert must keep the rows in the file's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// In file order: staging (a merge keeps the last duplicate of a key, by load order),
    /// tables that existed before the load, and tables later loads merge into.
    Kept,
    /// In any order: a final table created by this load that no load merges into (append,
    /// replace), which nothing reads in load order, so a destination may fill it on several
    /// threads.
    Free,
}

/// The staging dataset of `dataset`, where merges load first (dlt's `<dataset>_staging`).
pub fn staging_dataset(dataset: &str) -> String {
    format!("{dataset}_staging")
}

/// Quotes an identifier: `"name"`, with inner quotes doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// A comma-separated list of quoted column names.
pub fn column_list<'a>(columns: impl IntoIterator<Item = &'a str>) -> String {
    columns
        .into_iter()
        .map(quote)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line of a statement, shortened, for messages.
pub fn first_line(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or("");
    match line.char_indices().nth(117) {
        Some((cut, _)) if line.len() > 120 => format!("{}...", &line[..cut]),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("ds", "t"), "\"ds\".\"t\"");
        assert_eq!(column_list(["a", "b"]), "\"a\", \"b\"");
    }

    #[test]
    fn first_lines_are_shortened_on_a_character_boundary() {
        assert_eq!(first_line("SELECT 1\nFROM t"), "SELECT 1");
        let long = "é".repeat(200);
        let short = first_line(&long);
        assert!(short.ends_with("...") && short.chars().count() == 120);
    }
}
