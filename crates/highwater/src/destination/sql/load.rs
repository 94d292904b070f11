//! A load plan carried out as statements inside the destination's open transaction.

use std::collections::{HashMap, HashSet};

use super::catalog::{existing_columns, table_exists};
use super::merge::{delete_insert, direct_merge_deletes, upsert, ChainTable};
use super::replace::{moves_staging_tables, swap};
use super::scd2::{scd2, Scd2Values};
use super::system::{check_state_base, ensure_system_tables, write_load_rows};
use super::{
    column_list, qualified, quote, staging_dataset, BulkFile, Dialect, Param, RowOrder, SqlClient,
    SqlValue,
};
use crate::destination::plan::{LoadPlan, Merge, Target};
use crate::destination::LoadJob;
use crate::error::{Error, Result};
use crate::package::TableFile;
use crate::schema::{Column, MergeStrategy, Table, WriteDisposition};

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
    // Tables filled in any row order (see `RowOrder::Free`).
    let mut free_order: HashSet<&str> = HashSet::new();
    for table in &plan.tables {
        let (columns, created) = ensure_table(client, dataset, table, true)?;
        final_columns.insert(table.name.clone(), columns);
        if created && !merges_later(job, &table.name) {
            free_order.insert(table.name.as_str());
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

    // Rows keep load order everywhere (unless freed): staging needs it (a merge keeps the last
    // duplicate).
    let mut staged_columns: HashMap<String, Vec<String>> = HashMap::new();
    for group in file_groups(plan, |target| target != Target::FinalAfterDeletes) {
        let table = table_of(job, group.table)?;
        if group.target == Target::Staging {
            if !staged_columns.contains_key(&table.name) {
                let constraints = moved.contains(table.name.as_str());
                let (columns, _) = ensure_table(client, &staging, table, constraints)?;
                staged_columns.insert(table.name.clone(), columns);
            }
            insert_group(client, &staging, table, &group, RowOrder::Kept, job)?;
        } else {
            let order = match free_order.contains(table.name.as_str()) {
                true => RowOrder::Free,
                false => RowOrder::Kept,
            };
            insert_group(client, dataset, table, &group, order, job)?;
        }
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
    for group in file_groups(plan, |target| target == Target::FinalAfterDeletes) {
        let table = table_of(job, group.table)?;
        insert_group(client, dataset, table, &group, RowOrder::Kept, job)?;
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

/// The files of one table that go to one target, in load order.
struct FileGroup<'a> {
    table: &'a str,
    target: Target,
    files: Vec<&'a TableFile>,
}

/// The plan's files whose target passes `wanted`, grouped by table and target in the order of
/// each group's first file: one bulk insert per group costs less than one per file (a
/// statement that fills a table in free order leaves a partly filled block per thread).
fn file_groups<'a>(plan: &LoadPlan<'a>, wanted: impl Fn(Target) -> bool) -> Vec<FileGroup<'a>> {
    let mut groups: Vec<FileGroup<'a>> = Vec::new();
    for load in plan.files.iter().filter(|f| wanted(f.target)) {
        let table = load.file.table.as_str();
        match groups
            .iter_mut()
            .find(|g| g.table == table && g.target == load.target)
        {
            Some(group) => group.files.push(load.file),
            None => groups.push(FileGroup {
                table,
                target: load.target,
                files: vec![load.file],
            }),
        }
    }
    groups
}

/// Bulk-loads `group` into `schema.table` and reports its rows as loaded.
fn insert_group(
    client: &mut dyn SqlClient,
    schema: &str,
    table: &Table,
    group: &FileGroup<'_>,
    order: RowOrder,
    job: &LoadJob<'_>,
) -> Result<()> {
    let files: Vec<BulkFile<'_>> = group
        .files
        .iter()
        .map(|file| BulkFile {
            path: job.files_dir.join(&file.file),
            columns: &file.columns,
        })
        .collect();
    client.bulk_insert(schema, table, &files, order)?;
    (job.on_file_loaded)(group.files.iter().map(|f| f.rows).sum());
    Ok(())
}

fn table_of<'a>(job: &'a LoadJob<'_>, name: &str) -> Result<&'a Table> {
    job.schema.tables.get(name).ok_or_else(|| Error::Corrupt {
        what: format!("package {}", job.load_id),
        detail: format!("table {name} is not in the schema"),
    })
}

/// Whether later loads merge into `table` (its root's write disposition is merge). A table
/// filled in free order makes those merges slower, so it keeps load order even when created:
/// DuckDB prunes the blocks of rows a merge cannot touch by their key ranges, which only stay
/// narrow in load order (a re-run of 10 % new events merged in 2.0–2.5 s into a table filled in
/// free order, against 1.3–1.4 s in load order).
fn merges_later(job: &LoadJob<'_>, table: &str) -> bool {
    let root = job.schema.root_of(table);
    job.schema
        .tables
        .get(root)
        .is_some_and(|root| root.write_disposition == WriteDisposition::Merge)
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
