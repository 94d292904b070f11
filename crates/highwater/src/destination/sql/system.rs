//! dlt's system tables in a SQL dataset: `_dlt_loads`, `_dlt_version`, `_dlt_pipeline_state`
//! (same names, columns and types as dlt's), the rows a load commits, and what a later run
//! reads back from them.

use super::catalog::table_exists;
use super::load::column_definition;
use super::{qualified, quote, Param, SqlClient, SqlValue};
use crate::destination::{LoadJob, LoadRecord, Restored};
use crate::error::{Error, Result};
use crate::schema::{Column, DataType, Schema, SCHEMA_ENGINE_VERSION};
use crate::state::decode_from_destination;

/// The columns of each system table, as dlt declares them.
fn system_tables() -> [(&'static str, Vec<Column>); 3] {
    let text = |name: &str| Column::new(name, DataType::Text).not_null();
    // Load ids are `varchar(64)` in dlt's system tables.
    let load_id = |name: &str| {
        let mut column = text(name);
        column.precision = Some(64);
        column
    };

    let bigint = |name: &str| Column::new(name, DataType::Bigint).not_null();
    let timestamp = |name: &str| Column::new(name, DataType::Timestamp).not_null();
    let nullable_text = |name: &str| Column::new(name, DataType::Text);
    [
        (
            "_dlt_loads",
            vec![
                load_id("load_id"),
                nullable_text("schema_name"),
                bigint("status"),
                timestamp("inserted_at"),
                nullable_text("schema_version_hash"),
            ],
        ),
        (
            "_dlt_version",
            vec![
                bigint("version"),
                bigint("engine_version"),
                timestamp("inserted_at"),
                text("schema_name"),
                text("version_hash"),
                text("schema"),
            ],
        ),
        (
            "_dlt_pipeline_state",
            vec![
                bigint("version"),
                bigint("engine_version"),
                text("pipeline_name"),
                text("state"),
                timestamp("created_at"),
                nullable_text("version_hash"),
                load_id("_dlt_load_id"),
                text("_dlt_id"),
            ],
        ),
    ]
}

/// Creates the dataset and its system tables where missing.
pub fn ensure_system_tables(client: &mut dyn SqlClient, dataset: &str) -> Result<()> {
    client.execute(
        &format!("CREATE SCHEMA IF NOT EXISTS {}", quote(dataset)),
        &[],
        "creating the dataset",
    )?;
    for (table, columns) in system_tables() {
        let defs: Vec<String> = columns
            .iter()
            .map(|c| column_definition(client.dialect(), c, true))
            .collect();
        client.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                qualified(dataset, table),
                defs.join(", ")
            ),
            &[],
            &format!("creating {table}"),
        )?;
    }
    Ok(())
}

/// Refuses a load whose state would overwrite a newer one: the newest committed state of the
/// pipeline must be the one the run started from (or older).
pub fn check_state_base(
    client: &mut dyn SqlClient,
    dataset: &str,
    destination: &str,
    job: &LoadJob<'_>,
) -> Result<()> {
    let Some(base) = job.state.as_ref().and_then(|s| s.base_version) else {
        return Ok(());
    };
    let rows = client.query(
        &format!(
            "SELECT max(s.version) FROM {} AS s JOIN {} AS l ON l.load_id = s._dlt_load_id WHERE s.pipeline_name = $1 AND l.status = 0",
            qualified(dataset, "_dlt_pipeline_state"),
            qualified(dataset, "_dlt_loads")
        ),
        &[Param::Text(job.pipeline)],
        "reading the committed state version",
    )?;
    let committed = rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64);
    match committed {
        Some(committed) if committed > base => Err(Error::StateConflict {
            pipeline: job.pipeline.to_string(),
            destination: destination.to_string(),
            committed,
            base,
        }),
        _ => Ok(()),
    }
}

/// Inserts the rows a load commits with its data: the schema version (when new), the state row
/// (when the state changed) and the `_dlt_loads` row.
pub fn write_load_rows(client: &mut dyn SqlClient, dataset: &str, job: &LoadJob<'_>) -> Result<()> {
    let schema = job.schema;
    let known = client.query(
        &format!(
            "SELECT count(*) FROM {} WHERE version_hash = $1 AND schema_name = $2",
            qualified(dataset, "_dlt_version")
        ),
        &[Param::Text(&schema.version_hash), Param::Text(&schema.name)],
        "reading _dlt_version",
    )?;
    if known
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
        == Some(0)
    {
        client.execute(
            &format!(
                "INSERT INTO {} (version, engine_version, inserted_at, schema_name, version_hash, schema) VALUES ($1, $2, now(), $3, $4, $5)",
                qualified(dataset, "_dlt_version")
            ),
            &[
                Param::Int(schema.version as i64),
                Param::Int(SCHEMA_ENGINE_VERSION),
                Param::Text(&schema.name),
                Param::Text(&schema.version_hash),
                Param::Text(&schema.to_stored_json()),
            ],
            "writing _dlt_version",
        )?;
    }
    if let Some(state) = &job.state {
        client.execute(
            &format!(
                "INSERT INTO {} (version, engine_version, pipeline_name, state, created_at, version_hash, _dlt_load_id, _dlt_id) VALUES ($1, $2, $3, $4, now(), $5, $6, $7)",
                qualified(dataset, "_dlt_pipeline_state")
            ),
            &[
                Param::Int(state.version),
                Param::Int(state.engine_version),
                Param::Text(job.pipeline),
                Param::Text(&state.state),
                Param::Text(&state.version_hash),
                Param::Text(job.load_id),
                Param::Text(&crate::hash::random_row_id()),
            ],
            "writing _dlt_pipeline_state",
        )?;
    }
    client.execute(
        &format!(
            "INSERT INTO {} (load_id, schema_name, status, inserted_at, schema_version_hash) VALUES ($1, $2, 0, now(), $3)",
            qualified(dataset, "_dlt_loads")
        ),
        &[
            Param::Text(job.load_id),
            Param::Text(&schema.name),
            Param::Text(&schema.version_hash),
        ],
        "writing _dlt_loads",
    )?;
    Ok(())
}

/// The newest committed state of `pipeline` (joined with a completed load, as dlt's restore
/// does) and the newest stored version of the schema that state names (`default_schema_name`;
/// dlt names it after the source), else of the schema named after the pipeline.
pub fn restore(client: &mut dyn SqlClient, dataset: &str, pipeline: &str) -> Result<Restored> {
    let mut restored = Restored::default();
    if table_exists(client, dataset, "_dlt_pipeline_state")?
        && table_exists(client, dataset, "_dlt_loads")?
    {
        let rows = client.query(
            &format!(
                "SELECT s.state FROM {} AS s JOIN {} AS l ON l.load_id = s._dlt_load_id WHERE s.pipeline_name = $1 AND l.status = 0 ORDER BY l.load_id DESC LIMIT 1",
                qualified(dataset, "_dlt_pipeline_state"),
                qualified(dataset, "_dlt_loads")
            ),
            &[Param::Text(pipeline)],
            "reading state",
        )?;
        if let Some(text) = rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_str)
        {
            restored.state = Some(decode_from_destination(text)?);
        }
    }
    let schema_name = restored.schema_name(pipeline);
    if table_exists(client, dataset, "_dlt_version")? {
        let rows = client.query(
            &format!(
                "SELECT schema FROM {} WHERE schema_name = $1 ORDER BY inserted_at DESC, version DESC LIMIT 1",
                qualified(dataset, "_dlt_version")
            ),
            &[Param::Text(&schema_name)],
            "reading schema",
        )?;
        if let Some(text) = rows
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_str)
        {
            restored.schema = Some(Schema::from_stored_json(text)?);
        }
    }
    Ok(restored)
}

/// Whether `load_id` is in `_dlt_loads`.
pub fn is_loaded(client: &mut dyn SqlClient, dataset: &str, load_id: &str) -> Result<bool> {
    if !table_exists(client, dataset, "_dlt_loads")? {
        return Ok(false);
    }
    let rows = client.query(
        &format!(
            "SELECT count(*) FROM {} WHERE load_id = $1",
            qualified(dataset, "_dlt_loads")
        ),
        &[Param::Text(load_id)],
        "reading _dlt_loads",
    )?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
        > Some(0))
}

/// The newest `limit` loads, newest first.
pub fn recent_loads(
    client: &mut dyn SqlClient,
    dataset: &str,
    limit: usize,
) -> Result<Vec<LoadRecord>> {
    if !table_exists(client, dataset, "_dlt_loads")? {
        return Ok(Vec::new());
    }
    let inserted_at = client.dialect().timestamp_text("inserted_at");
    let rows = client.query(
        &format!(
            "SELECT load_id, status, {inserted_at} FROM {} ORDER BY load_id DESC LIMIT $1",
            qualified(dataset, "_dlt_loads")
        ),
        &[Param::Int(limit as i64)],
        "reading _dlt_loads",
    )?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut row = row.into_iter();
            let mut next = || row.next().unwrap_or(SqlValue::Null);
            let load_id = next().as_str().unwrap_or_default().to_string();
            let status = next().as_i64().unwrap_or_default();
            let inserted_at = next().as_str().unwrap_or_default().to_string();
            LoadRecord {
                load_id,
                status,
                inserted_at,
            }
        })
        .collect())
}
