//! The statements of an `scd2` merge (dlt's `gen_scd2_sql`): the root table keeps every
//! version of a row with its validity interval, its child tables keep the rows of each version.
//!
//! A load is a snapshot of the source (or of the merge keys it holds): active versions whose
//! row version is not in it are closed at the boundary time, versions not active yet are
//! inserted, opened at the same time. Child rows are inserted only with a new version.
//!
//! Where this differs from dlt, on purpose: rows are matched with `NOT EXISTS` (an anti-join
//! whatever the size) rather than `NOT IN`; a compound merge key is compared column by column
//! (dlt concatenates the columns, so `(1, "23")` retires `(12, "3")`); and with a user row
//! version column, the child rows of a load row that makes no new version are not inserted
//! (dlt inserts them, parentless).

use chrono::{DateTime, Utc};

use super::merge::ChainTable;
use super::{column_list, qualified, quote, Dialect, Param};
use crate::error::{Error, Result};
use crate::schema::{Column, DataType, Table};

/// The values an scd2 merge binds: its boundary time and the end of active versions, as text
/// for their column's type, and the load id.
#[derive(Debug, Clone, PartialEq)]
pub struct Scd2Values<'a> {
    /// Closes retired versions and opens new ones.
    pub boundary: String,
    /// Ends active versions; `None` for `NULL`.
    pub active: Option<String>,
    /// The load.
    pub load_id: &'a str,
}

impl<'a> Scd2Values<'a> {
    /// The values for `root` loaded by `load_id`: the `boundary_timestamp` hint or the load's
    /// creation time (dlt reads it from the load id, a Unix timestamp), and the
    /// `active_record_timestamp` of the `valid_to` column.
    pub fn for_load(root: &Table, load_id: &'a str) -> Result<Self> {
        let (_, to) = validity_columns(root)?;
        let boundary = match &root.boundary_timestamp {
            Some(text) => parse_time(root, "boundary_timestamp", text)?,
            None => load_time(load_id).ok_or_else(|| Error::Corrupt {
                what: format!("package {load_id}"),
                detail: "the load id is not a Unix timestamp".into(),
            })?,
        };
        let active = match &to.active_record_timestamp {
            Some(text) => Some(literal(
                to,
                parse_time(root, "active_record_timestamp", text)?,
            )),
            None => None,
        };
        Ok(Scd2Values {
            boundary: literal(to, boundary),
            active,
            load_id,
        })
    }
}

/// The statements of an scd2 merge, in order, each with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Scd2Statements<'v> {
    /// Closes the active versions the load no longer holds.
    pub retire: Vec<(String, Vec<Param<'v>>)>,
    /// Inserts the new versions and their child rows, then drops the temporary table.
    pub insert: Vec<(String, Vec<Param<'v>>)>,
}

/// The statements of an scd2 merge of `root` (staged) and its `children` from `staging` into
/// `dataset`; `temp` names the temporary table of the new versions.
pub fn scd2<'v>(
    dialect: &dyn Dialect,
    dataset: &str,
    staging: &str,
    root: &ChainTable<'_>,
    children: &[ChainTable<'_>],
    values: &'v Scd2Values<'_>,
    temp: &str,
) -> Result<Scd2Statements<'v>> {
    let table = root.table;
    let (from, to) = validity_columns(table)?;
    let version = table
        .row_version_column()
        .ok_or_else(|| Error::Config(format!(
            "table {}: merge strategy scd2 needs a row version column (_dlt_id, or the column named by row_version_column_name)",
            table.name
        )))?;
    let final_root = qualified(dataset, &table.name);
    let stage_root = qualified(staging, &table.name);
    let version = quote(&version.name);
    let (from_name, to_name) = (quote(&from.name), quote(&to.name));
    let time = |n: usize| format!("CAST(CAST(${n} AS VARCHAR) AS {})", dialect.type_name(to));

    // Active versions: a `NULL` end, or the end given by active_record_timestamp, bound as
    // parameter `$n` of the statement.
    let is_active = |n: usize| match &values.active {
        None => format!("d.{to_name} IS NULL"),
        Some(_) => format!("d.{to_name} = {}", time(n)),
    };
    let active_value = |n: usize| match &values.active {
        None => "NULL".to_string(),
        Some(_) => time(n),
    };
    let with_active = |mut params: Vec<Param<'v>>| {
        if let Some(active) = &values.active {
            params.push(Param::Text(active));
        }
        params
    };
    let boundary = Param::Text(&values.boundary);

    // 1. Retire: active versions absent from the load (only those sharing a merge key with
    // the load when there is one: an incremental load is not a full snapshot).
    let mut retire = format!(
        "UPDATE {final_root} AS d SET {to_name} = {} WHERE {} AND NOT EXISTS (SELECT 1 FROM {stage_root} AS s WHERE s.{version} = d.{version})",
        time(1),
        is_active(2)
    );
    let merge_key = table.merge_key();
    if !merge_key.is_empty() {
        let same_key: Vec<String> = merge_key
            .iter()
            .map(|c| format!("m.{0} = d.{0}", quote(&c.name)))
            .collect();
        retire.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM {stage_root} AS m WHERE {})",
            same_key.join(" AND ")
        ));
    }

    // 2. The new versions: those of the load not active (after the retire) in the table.
    let new_versions = quote(temp);
    let mut insert = vec![(
        dialect.create_temp_table_as(
            &new_versions,
            &format!(
                "SELECT DISTINCT s.{version} FROM {stage_root} AS s WHERE NOT EXISTS (SELECT 1 FROM {final_root} AS d WHERE d.{version} = s.{version} AND {})",
                is_active(1)
            ),
        ),
        with_active(Vec::new()),
    )];
    let data_columns: Vec<&str> = root
        .columns
        .iter()
        .map(String::as_str)
        .filter(|c| *c != from.name && *c != to.name)
        .collect();
    let cols = column_list(data_columns.iter().copied());
    let staged_cols = data_columns
        .iter()
        .map(|c| format!("s.{}", quote(c)))
        .collect::<Vec<_>>()
        .join(", ");
    insert.push((
        format!(
            "INSERT INTO {final_root} ({cols}, {from_name}, {to_name}) SELECT {staged_cols}, {}, {} FROM {stage_root} AS s WHERE s.{version} IN (SELECT * FROM {new_versions})",
            time(1),
            active_value(2)
        ),
        with_active(vec![boundary]),
    ));

    // 3. Child rows of the new versions, parents before children, each row once: a version
    // that comes back keeps the rows its first insert brought (their ids derive from the row
    // hash, so they are the same rows).
    if root.columns.iter().any(|c| c == "_dlt_id") {
        let row_key = quote("_dlt_id");
        let parent_key = quote("_dlt_parent_id");
        // For each table, the ids of its staged rows that belong to a new version.
        let new_roots = format!(
            "SELECT r.{row_key} FROM {stage_root} AS r WHERE r.{version} IN (SELECT * FROM {new_versions})"
        );
        let mut kept: Vec<(&str, String)> = vec![(table.name.as_str(), new_roots)];
        for (level, child) in children.iter().filter(|c| c.staged).enumerate() {
            let Some(parent) = child.table.parent.as_deref() else {
                continue;
            };
            let Some((_, parents)) = kept.iter().find(|(name, _)| *name == parent) else {
                continue;
            };
            let final_child = qualified(dataset, &child.table.name);
            let stage_child = qualified(staging, &child.table.name);
            let cols = column_list(child.columns.iter().map(String::as_str));
            insert.push((
                format!(
                    "INSERT INTO {final_child} ({cols}) SELECT {cols} FROM {stage_child} AS s WHERE s.{parent_key} IN ({parents}) AND NOT EXISTS (SELECT 1 FROM {final_child} AS d WHERE d.{row_key} = s.{row_key})"
                ),
                Vec::new(),
            ));
            let alias = format!("k{level}");
            let rows = format!(
                "SELECT {alias}.{row_key} FROM {stage_child} AS {alias} WHERE {alias}.{parent_key} IN ({parents})"
            );
            kept.push((child.table.name.as_str(), rows));
        }
    }
    insert.push((format!("DROP TABLE IF EXISTS {new_versions}"), Vec::new()));

    Ok(Scd2Statements {
        retire: vec![(retire, with_active(vec![boundary]))],
        insert,
    })
}

/// The `valid_from` and `valid_to` columns of an scd2 root table.
fn validity_columns(table: &Table) -> Result<(&Column, &Column)> {
    table.validity_columns().ok_or_else(|| {
        Error::Config(format!(
            "table {}: merge strategy scd2 needs its validity columns (valid_from, valid_to) in the schema",
            table.name
        ))
    })
}

fn parse_time(table: &Table, option: &str, text: &str) -> Result<DateTime<Utc>> {
    crate::timeparse::parse_timestamp_or_date(text.trim()).ok_or_else(|| {
        Error::Config(format!(
            "table {}: scd2 {option} {text:?} is not an ISO-8601 date or timestamp",
            table.name
        ))
    })
}

/// The time a load id (`<seconds>.<7 decimals>`, a Unix timestamp) names, to the microsecond
/// as dlt takes a package's creation time from it.
pub fn load_time(load_id: &str) -> Option<DateTime<Utc>> {
    let (seconds, fraction) = load_id.split_once('.').unwrap_or((load_id, ""));
    let seconds: i64 = seconds.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Ten-millionths rounded to microseconds, as Python's `fromtimestamp` rounds.
    let mut digits: String = fraction.chars().take(7).collect();
    while digits.len() < 7 {
        digits.push('0');
    }
    let ten_millionths: i64 = digits.parse().ok()?;
    let micros = seconds.checked_mul(1_000_000)? + (ten_millionths + 5) / 10;
    DateTime::from_timestamp_micros(micros)
}

/// `time` as text the column's type reads: with an offset for `TIMESTAMP WITH TIME ZONE`,
/// without one for a naive timestamp (`timezone = false`).
fn literal(column: &Column, time: DateTime<Utc>) -> String {
    if column.data_type == DataType::Timestamp && column.timezone == Some(false) {
        time.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_id_names_its_creation_time_to_the_microsecond() {
        let t = load_time("1796685939.3747628").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-07T23:25:39.374763+00:00");
        assert_eq!(
            load_time("1700000000").unwrap().to_rfc3339(),
            "2023-11-14T22:13:20+00:00"
        );
        assert_eq!(load_time("17x.1"), None);
        assert_eq!(load_time("1.2a"), None);
    }

    #[test]
    fn values_come_from_the_hints_or_the_load_id() {
        let mut table = Table::new("t");
        let mut from = Column::new("_dlt_valid_from", DataType::Timestamp);
        from.valid_from = true;
        let mut to = Column::new("_dlt_valid_to", DataType::Timestamp);
        to.valid_to = true;
        table.columns.insert(from.name.clone(), from);
        table.columns.insert(to.name.clone(), to);
        let values = Scd2Values::for_load(&table, "1700000000.0000004").unwrap();
        assert_eq!(values.boundary, "2023-11-14T22:13:20.000000+00:00");
        assert_eq!(values.active, None);

        table.boundary_timestamp = Some("2024-01-01T12:00:00+02:00".into());
        if let Some(to) = table.columns.get_mut("_dlt_valid_to") {
            to.active_record_timestamp = Some("9999-12-31".into());
            to.timezone = Some(false);
        }
        let values = Scd2Values::for_load(&table, "1700000000.1").unwrap();
        assert_eq!(values.boundary, "2024-01-01 10:00:00.000000");
        assert_eq!(values.active.as_deref(), Some("9999-12-31 00:00:00.000000"));

        table.boundary_timestamp = Some("yesterday".into());
        let err = Scd2Values::for_load(&table, "1").unwrap_err().to_string();
        assert!(
            err.contains("boundary_timestamp") && err.contains("yesterday"),
            "{err}"
        );
    }
}
