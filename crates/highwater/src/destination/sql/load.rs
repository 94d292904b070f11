//! A load plan carried out as statements inside the destination's open transaction.

use std::collections::{HashMap, HashSet};

use super::catalog::{existing_columns, table_exists};
use super::merge::{delete_insert, direct_merge_deletes, upsert, ChainTable};
use super::replace::{moves_staging_tables, swap};
use super::scd2::{scd2, Scd2Values};
use super::system::{check_state_base, ensure_system_tables, write_load_rows};
use super::{
    column_list, qualified, quote, staging_dataset, Dialect, Param, RowOrder, SqlClient, SqlValue,
};
use crate::destination::plan::{LoadPlan, Merge, Target};
use crate::destination::LoadJob;
use crate::error::{Error, Result};
use crate::schema::{Column, MergeStrategy, Table};

/// How a load ended; the caller commits or rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is in place: commit.
    Loaded,
    /// A direct merge found a primary key repeated within the load: roll back and load again
    /// with every merge through staging, which keeps only the last row of each key.
    RepeatsPrimaryKey,
}

/// Carries out `plan` for `job` in `dataset`: drops, DDL, files, merges and the system rows.
/// `destination` names the destination in errors.
pub fn load(
    client: &mut dyn SqlClient,
    dataset: &str,
    destination: &str,
    plan: &LoadPlan<'_>,
    job: &LoadJob<'_>,
) -> Result<Outcome> {
    let staging = staging_dataset(dataset);
    ensure_system_tables(client, dataset)?;
    check_state_base(client, dataset, destination, job)?;

    for table in plan.drop_tables {
        client.execute(
            &format!("DROP TABLE IF EXISTS {}", qualified(dataset, table)),
            &[],
            &format!("dropping table {table}"),
        )?;
    }
    let mut final_columns: HashMap<String, Vec<String>> = HashMap::new();
    // Final tables this load creates: filled in any row order (see `RowOrder::Free`).
    let mut created: HashSet<&str> = HashSet::new();
    for table in &plan.tables {
        let (columns, new) = ensure_table(client, dataset, table, true)?;
        final_columns.insert(table.name.clone(), columns);
        if new {
            created.insert(table.name.as_str());
        }
    }
    for table in &plan.truncate {
        if table_exists(client, dataset, table)? {
            client.execute(
                &format!("DELETE FROM {}", qualified(dataset, table)),
                &[],
                &format!("emptying table {table} for replace"),
            )?;
        }
    }
    if !plan.truncate.is_empty() {
        crate::crash::point("replace-emptied");
    }
    if plan.stages() {
        client.execute(
            &format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&staging)),
            &[],
            "creating the staging dataset",
        )?;
        for table in plan.staging_tables() {
            drop_staging_table(client, &staging, table)?;
        }
    }
    // Staging tables that become final tables as they are carry the final tables' NOT NULL.
    let moved: HashSet<&str> = plan
        .staged_replaces
        .iter()
        .filter(|r| moves_staging_tables(client.dialect(), r.strategy))
        .flat_map(|r| r.chain().map(|t| t.name.as_str()))
        .collect();

    // Rows keep load order everywhere: staging needs it (a merge keeps the last duplicate).
    let mut staged_columns: HashMap<String, Vec<String>> = HashMap::new();
    for load in plan
        .files
        .iter()
        .filter(|f| f.target != Target::FinalAfterDeletes)
    {
        let table = table_of(job, &load.file.table)?;
        let path = job.files_dir.join(&load.file.file);
        if load.target == Target::Staging {
            if !staged_columns.contains_key(&table.name) {
                let constraints = moved.contains(table.name.as_str());
                let (columns, _) = ensure_table(client, &staging, table, constraints)?;
                staged_columns.insert(table.name.clone(), columns);
            }
            client.bulk_insert(&staging, table, &load.file.columns, &path, RowOrder::Kept)?;
        } else {
            let order = final_order(&created, &table.name);
            client.bulk_insert(dataset, table, &load.file.columns, &path, order)?;
        }
        (job.on_file_loaded)(load.file.rows);
    }

    for (i, merge) in plan.direct_merges.iter().enumerate() {
        if repeats_primary_key(client, dataset, merge.root, job.load_id)? {
            tracing::debug!(table = %merge.root.name, "the load repeats a primary key: merging through staging");
            return Ok(Outcome::RepeatsPrimaryKey);
        }
        let children = existing_children(client, dataset, merge, &final_columns)?;
        let temp = format!("_hw_direct_{i}_delete");
        let statements =
            direct_merge_deletes(client.dialect(), dataset, merge.root, &children, &temp);
        for (statement, takes_load_id) in statements {
            let params: &[Param<'_>] = if takes_load_id {
                &[Param::Text(job.load_id)]
            } else {
                &[]
            };
            client.execute(&statement, params, &format!("merging {}", merge.root.name))?;
        }
    }
    for load in plan
        .files
        .iter()
        .filter(|f| f.target == Target::FinalAfterDeletes)
    {
        let table = table_of(job, &load.file.table)?;
        let path = job.files_dir.join(&load.file.file);
        let order = final_order(&created, &table.name);
        client.bulk_insert(dataset, table, &load.file.columns, &path, order)?;
        (job.on_file_loaded)(load.file.rows);
    }

    for (i, merge) in plan.staged_merges.iter().enumerate() {
        if !staged_columns.contains_key(&merge.root.name) {
            continue;
        }
        let columns = |name: &str| {
            staged_columns
                .get(name)
                .or_else(|| final_columns.get(name))
                .cloned()
                .unwrap_or_default()
        };
        let root = ChainTable {
            table: merge.root,
            columns: columns(&merge.root.name),
            staged: true,
        };
        let children: Vec<ChainTable<'_>> =
            existing_children(client, dataset, merge, &final_columns)?
                .into_iter()
                .map(|t| ChainTable {
                    table: t,
                    columns: columns(&t.name),
                    staged: staged_columns.contains_key(&t.name),
                })
                .collect();
        let statements = match merge.strategy {
            MergeStrategy::Upsert | MergeStrategy::InsertOnly => {
                upsert(dataset, &staging, &root, &children, merge.strategy)
            }
            MergeStrategy::DeleteInsert => delete_insert(
                client.dialect(),
                dataset,
                &staging,
                &root,
                &children,
                &format!("_hw_merge_{i}"),
            ),
            MergeStrategy::Scd2 => {
                let values = Scd2Values::for_load(merge.root, job.load_id)?;
                let statements = scd2(
                    client.dialect(),
                    dataset,
                    &staging,
                    &root,
                    &children,
                    &values,
                    &format!("_hw_scd2_{i}_new"),
                )?;
                let context = format!("merging {} (scd2)", merge.root.name);
                for (statement, params) in &statements.retire {
                    client.execute(statement, params, &context)?;
                }
                crate::crash::point("scd2-retired");
                for (statement, params) in &statements.insert {
                    client.execute(statement, params, &context)?;
                }
                continue;
            }
        };
        for statement in statements {
            client.execute(&statement, &[], &format!("merging {}", merge.root.name))?;
        }
    }

    // Replaces through staging: every final table is emptied, then every one is filled.
    let mut swaps = Vec::new();
    for replace in &plan.staged_replaces {
        let mut chain = Vec::new();
        for table in replace.chain() {
            let staged = staged_columns.contains_key(&table.name);
            if !staged
                && !final_columns.contains_key(&table.name)
                && !table_exists(client, dataset, &table.name)?
            {
                continue;
            }
            chain.push(ChainTable {
                table,
                columns: staged_columns.get(&table.name).cloned().unwrap_or_default(),
                staged,
            });
        }
        let swap = swap(
            client.dialect(),
            dataset,
            &staging,
            &chain,
            replace.strategy,
        );
        swaps.push((replace.root.name.as_str(), swap));
    }
    for (root, swap) in &swaps {
        for statement in &swap.empty {
            client.execute(statement, &[], &format!("replacing {root}"))?;
        }
    }
    if !swaps.is_empty() {
        crate::crash::point("replace-emptied");
    }
    for (root, swap) in &swaps {
        for statement in &swap.fill {
            client.execute(statement, &[], &format!("replacing {root}"))?;
        }
    }
    for table in plan.staging_tables() {
        if staged_columns.contains_key(table) {
            drop_staging_table(client, &staging, table)?;
        }
    }

    write_load_rows(client, dataset, job)?;
    Ok(Outcome::Loaded)
}

fn table_of<'a>(job: &'a LoadJob<'_>, name: &str) -> Result<&'a Table> {
    job.schema.tables.get(name).ok_or_else(|| Error::Corrupt {
        what: format!("package {}", job.load_id),
        detail: format!("table {name} is not in the schema"),
    })
}

/// The row order of a bulk insert into the final table `table`: free when this load created
/// the table.
fn final_order(created: &HashSet<&str>, table: &str) -> RowOrder {
    if created.contains(table) {
        RowOrder::Free
    } else {
        RowOrder::Kept
    }
}

fn drop_staging_table(client: &mut dyn SqlClient, staging: &str, table: &str) -> Result<()> {
    client.execute(
        &format!("DROP TABLE IF EXISTS {}", qualified(staging, table)),
        &[],
        "clearing staging",
    )?;
    Ok(())
}

/// Creates `table` in `schema`, or adds the columns it lacks (compared with the database's
/// catalog, not only the local schema). Returns the columns it has and whether it was created.
/// `constraints` puts NOT NULL on the columns that are not nullable (final tables; staging
/// takes any row).
fn ensure_table(
    client: &mut dyn SqlClient,
    schema: &str,
    table: &Table,
    constraints: bool,
) -> Result<(Vec<String>, bool)> {
    match existing_columns(client, schema, &table.name)? {
        None => {
            let defs: Vec<String> = table
                .columns
                .values()
                .map(|c| column_definition(client.dialect(), c, constraints))
                .collect();
            client.execute(
                &format!(
                    "CREATE TABLE {} ({})",
                    qualified(schema, &table.name),
                    defs.join(", ")
                ),
                &[],
                &format!("creating table {}", table.name),
            )?;
            Ok((table.columns.keys().cloned().collect(), true))
        }
        Some(mut existing) => {
            for column in table.columns.values() {
                if existing.contains(&column.name) {
                    continue;
                }
                client.execute(
                    &format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        qualified(schema, &table.name),
                        quote(&column.name),
                        client.dialect().type_name(column)
                    ),
                    &[],
                    &format!("adding column {} to {}", column.name, table.name),
                )?;
                existing.push(column.name.clone());
            }
            Ok((existing, false))
        }
    }
}

/// `"name" TYPE [NOT NULL]`; NOT NULL only with `constraints`.
///
/// No `UNIQUE` on `_dlt_id`, although dlt's postgres destination declares one: with it, dlt
/// fails loads that repeat a key under `insert-only` or `upsert` (whose `_dlt_id` is the key's
/// hash) and pays for the index on every insert; without it the tables hold what dlt's DuckDB
/// destination gives.
pub(super) fn column_definition(
    dialect: &dyn Dialect,
    column: &Column,
    constraints: bool,
) -> String {
    let mut def = format!("{} {}", quote(&column.name), dialect.type_name(column));
    if constraints && !column.nullable {
        def.push_str(" NOT NULL");
    }
    def
}

/// The child tables of a merge that exist in the dataset (loaded now or earlier).
fn existing_children<'a>(
    client: &mut dyn SqlClient,
    dataset: &str,
    merge: &Merge<'a>,
    final_columns: &HashMap<String, Vec<String>>,
) -> Result<Vec<&'a Table>> {
    let mut children = Vec::new();
    for child in &merge.children {
        if final_columns.contains_key(&child.name) || table_exists(client, dataset, &child.name)? {
            children.push(*child);
        }
    }
    Ok(children)
}

/// Whether two rows of `root` loaded by `load_id` share a primary key.
fn repeats_primary_key(
    client: &mut dyn SqlClient,
    dataset: &str,
    root: &Table,
    load_id: &str,
) -> Result<bool> {
    let pk: Vec<&str> = root.primary_key().iter().map(|c| c.name.as_str()).collect();
    if pk.is_empty() {
        return Ok(false);
    }
    let rows = client.query(
        &format!(
            "SELECT count(*) FROM (SELECT 1 FROM {} WHERE {} = $1 GROUP BY {} HAVING count(*) > 1 LIMIT 1) AS repeated",
            qualified(dataset, &root.name),
            quote("_dlt_load_id"),
            column_list(pk)
        ),
        &[Param::Text(load_id)],
        &format!("checking primary keys of {}", root.name),
    )?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
        > Some(0))
}
