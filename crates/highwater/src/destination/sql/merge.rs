//! The statements of merges: `delete-insert` (through staging, or the deletes of a direct
//! merge) and `upsert` / `insert-only`, as dlt writes them, with the dialect's temporary tables
//! and load order.

use super::{column_list, qualified, quote, Dialect};
use crate::schema::{Column, DataType, MergeStrategy, SortOrder, Table};

/// `s."a", s."b"`: the staging side of a MERGE insert.
fn staged_values(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("s.{}", quote(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"a" = s."a", …`: the update of a MERGE.
fn update_set(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("{0} = s.{0}", quote(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The condition that keeps rows not flagged deleted by the `hard_delete` column.
fn not_deleted(table: &Table, alias: &str) -> Option<String> {
    let column = table.columns.values().find(|c| c.hard_delete)?;
    let col = format!("{alias}{}", quote(&column.name));
    Some(if column.data_type == DataType::Bool {
        format!("({col} IS NULL OR {col} = FALSE)")
    } else {
        format!("{col} IS NULL")
    })
}

/// `(d."a" = s."a" AND …) OR (d."m" = s."m")`: rows `d` and `s` share the primary or the merge
/// key; `None` without keys.
fn key_condition(table: &Table) -> Option<String> {
    let key_match = |keys: Vec<&Column>| -> Option<String> {
        (!keys.is_empty()).then(|| {
            let parts: Vec<String> = keys
                .iter()
                .map(|c| format!("d.{0} = s.{0}", quote(&c.name)))
                .collect();
            format!("({})", parts.join(" AND "))
        })
    };
    let parts: Vec<String> = [key_match(table.primary_key()), key_match(table.merge_key())]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join(" OR "))
}

/// The column of `child` that points at its root's `_dlt_id`: the root key, or the parent key
/// of a direct child; `None` when the child has neither.
fn root_link(child: &Table, root: &str) -> Option<&'static str> {
    if child.columns.contains_key("_dlt_root_id") {
        Some("_dlt_root_id")
    } else if child.parent.as_deref() == Some(root) {
        Some("_dlt_parent_id")
    } else {
        None
    }
}

/// A statement and whether it takes the load id as parameter `$1`.
pub type Statement = (String, bool);

/// The deletes of a `delete-insert` merge whose root rows were loaded straight into the final
/// table (`$1` is their load id): the older rows sharing a key with the load, and their child
/// rows. Runs before the load's child rows are inserted, so a root `_dlt_id` that repeats an
/// older one cannot take the new children with it.
pub fn direct_merge_deletes(
    dialect: &dyn Dialect,
    dataset: &str,
    root: &Table,
    children: &[&Table],
    temp_name: &str,
) -> Vec<Statement> {
    let Some(condition) = key_condition(root) else {
        return Vec::new();
    };
    let final_root = qualified(dataset, &root.name);
    let row_key = quote("_dlt_id");
    let load_id = quote("_dlt_load_id");
    let delete_tmp = quote(temp_name);
    let mut sql = vec![(
        dialect.create_temp_table_as(
            &delete_tmp,
            &format!(
                "SELECT d.{row_key} FROM {final_root} AS d WHERE d.{load_id} IS DISTINCT FROM $1 AND EXISTS (SELECT 1 FROM {final_root} AS s WHERE s.{load_id} = $1 AND ({condition}))"
            ),
        ),
        true,
    )];
    for child in children {
        if let Some(link) = root_link(child, &root.name) {
            sql.push((
                format!(
                    "DELETE FROM {} WHERE {} IN (SELECT * FROM {delete_tmp})",
                    qualified(dataset, &child.name),
                    quote(link)
                ),
                false,
            ));
        }
    }
    sql.push((
        format!(
            "DELETE FROM {final_root} WHERE {row_key} IN (SELECT * FROM {delete_tmp}) AND {load_id} IS DISTINCT FROM $1"
        ),
        true,
    ));
    sql.push((format!("DROP TABLE IF EXISTS {delete_tmp}"), false));
    sql
}

/// A table of the merged chain and the columns it has in the destination.
pub struct ChainTable<'a> {
    /// The schema table.
    pub table: &'a Table,
    /// Columns both in the staging and final table (those the staging load filled).
    pub columns: Vec<String>,
    /// Whether staging has rows for it in this load.
    pub staged: bool,
}

/// The statements of a `delete-insert` merge of one root table and its children.
///
/// Staging is deduplicated by the primary key keeping the last row in load order (or the one
/// `dedup_sort` picks); rows matching the primary or merge key are deleted from the final tables
/// with their child rows (via `_dlt_root_id`); then the surviving staging rows are inserted.
pub fn delete_insert(
    dialect: &dyn Dialect,
    dataset: &str,
    staging: &str,
    root: &ChainTable<'_>,
    children: &[ChainTable<'_>],
    temp_prefix: &str,
) -> Vec<String> {
    let mut sql = Vec::new();
    let root_name = &root.table.name;
    let final_root = qualified(dataset, root_name);
    let stage_root = qualified(staging, root_name);
    let pk: Vec<&Column> = root.table.primary_key();
    let mk: Vec<&Column> = root.table.merge_key();
    let deleted = not_deleted(root.table, "");

    if pk.is_empty() && mk.is_empty() {
        // No key: append everything, as dlt does.
        for t in std::iter::once(root)
            .chain(children.iter())
            .filter(|t| t.staged)
        {
            let cols = column_list(t.columns.iter().map(String::as_str));
            sql.push(format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
                qualified(dataset, &t.table.name),
                qualified(staging, &t.table.name)
            ));
        }
        return sql;
    }

    let condition = key_condition(root.table).unwrap_or_default();
    let keep = deleted.clone().unwrap_or_else(|| "1 = 1".to_string());
    let load_order = dialect.load_order();
    let dedup_order = match root.table.columns.values().find(|c| c.dedup_sort.is_some()) {
        Some(c) => format!(
            "{} {}, {load_order} DESC",
            quote(&c.name),
            if c.dedup_sort == Some(SortOrder::Asc) {
                "ASC"
            } else {
                "DESC"
            }
        ),
        None => format!("{load_order} DESC"),
    };

    if children.is_empty() {
        // A table without children (e.g. Arrow items, which have no `_dlt_id`): dlt's simple form.
        sql.push(format!(
            "DELETE FROM {final_root} AS d WHERE EXISTS (SELECT 1 FROM {stage_root} AS s WHERE {condition})"
        ));
        let cols = column_list(root.columns.iter().map(String::as_str));
        let source = if pk.is_empty() {
            format!("SELECT {cols} FROM {stage_root} WHERE {keep}")
        } else {
            let partition = column_list(pk.iter().map(|c| c.name.as_str()));
            format!(
                "SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {dedup_order}) AS _dlt_dedup_rn FROM {stage_root}) AS _dlt_dedup_numbered WHERE _dlt_dedup_rn = 1 AND {keep}"
            )
        };
        sql.push(format!("INSERT INTO {final_root} ({cols}) {source}"));
        return sql;
    }

    let row_key = quote("_dlt_id");
    let delete_tmp = quote(&format!("{temp_prefix}_delete"));
    let insert_tmp = quote(&format!("{temp_prefix}_insert"));

    // Delete phase: root rows matching any staged key, and their children.
    sql.push(dialect.create_temp_table_as(
        &delete_tmp,
        &format!(
            "SELECT d.{row_key} FROM {final_root} AS d WHERE EXISTS (SELECT 1 FROM {stage_root} AS s WHERE {condition})"
        ),
    ));
    for child in children {
        if let Some(link) = root_link(child.table, root_name) {
            sql.push(format!(
                "DELETE FROM {} WHERE {} IN (SELECT * FROM {delete_tmp})",
                qualified(dataset, &child.table.name),
                quote(link)
            ));
        }
    }
    sql.push(format!(
        "DELETE FROM {final_root} WHERE {row_key} IN (SELECT * FROM {delete_tmp})"
    ));

    // Insert phase: surviving staging rows (deduplicated by the primary key), not deleted.
    let survivors = if pk.is_empty() {
        format!("SELECT {row_key} FROM {stage_root} WHERE {keep}")
    } else {
        let partition = column_list(pk.iter().map(|c| c.name.as_str()));
        format!(
            "SELECT {row_key} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {dedup_order}) AS _dlt_dedup_rn FROM {stage_root}) AS _dlt_dedup_numbered WHERE _dlt_dedup_rn = 1 AND {keep}"
        )
    };
    sql.push(dialect.create_temp_table_as(&insert_tmp, &survivors));
    let cols = column_list(root.columns.iter().map(String::as_str));
    sql.push(format!(
        "INSERT INTO {final_root} ({cols}) SELECT {cols} FROM {stage_root} WHERE {row_key} IN (SELECT * FROM {insert_tmp})"
    ));
    for child in children.iter().filter(|t| t.staged) {
        let cols = column_list(child.columns.iter().map(String::as_str));
        let link = if child.table.columns.contains_key("_dlt_root_id") {
            "_dlt_root_id"
        } else {
            "_dlt_parent_id"
        };
        sql.push(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {} WHERE {} IN (SELECT * FROM {insert_tmp})",
            qualified(dataset, &child.table.name),
            qualified(staging, &child.table.name),
            quote(link)
        ));
    }
    sql.push(format!("DROP TABLE IF EXISTS {delete_tmp}"));
    sql.push(format!("DROP TABLE IF EXISTS {insert_tmp}"));
    sql
}

/// The statements of an `upsert` or `insert-only` merge (requires a primary key; the root
/// `_dlt_id` is a hash of the key, so child row ids are stable across loads).
pub fn upsert(
    dataset: &str,
    staging: &str,
    root: &ChainTable<'_>,
    children: &[ChainTable<'_>],
    strategy: MergeStrategy,
) -> Vec<String> {
    let mut sql = Vec::new();
    let final_root = qualified(dataset, &root.table.name);
    let stage_root = qualified(staging, &root.table.name);
    let pk: Vec<&Column> = root.table.primary_key();
    let on = pk
        .iter()
        .map(|c| format!("d.{0} = s.{0}", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let cols = column_list(root.columns.iter().map(String::as_str));
    let values = staged_values(&root.columns);
    let deleted_col = root.table.columns.values().find(|c| c.hard_delete);
    let is_deleted = deleted_col.map(|c| {
        if c.data_type == DataType::Bool {
            format!("s.{} = TRUE", quote(&c.name))
        } else {
            format!("s.{} IS NOT NULL", quote(&c.name))
        }
    });
    let insert_only = strategy == MergeStrategy::InsertOnly;
    let mut merge = format!("MERGE INTO {final_root} AS d USING {stage_root} AS s ON {on}");
    if !insert_only {
        if let Some(deleted) = &is_deleted {
            merge.push_str(&format!(" WHEN MATCHED AND {deleted} THEN DELETE"));
        }
        let set = update_set(&root.columns);
        merge.push_str(&format!(" WHEN MATCHED THEN UPDATE SET {set}"));
    }
    // As dlt: insert-only leaves out flagged rows; upsert inserts a flagged row it does not
    // find (only a matching row is deleted), and deletes its child rows after.
    let insert_cond = match &is_deleted {
        Some(deleted) if insert_only => format!(" AND NOT ({deleted})"),
        _ => String::new(),
    };
    merge.push_str(&format!(
        " WHEN NOT MATCHED{insert_cond} THEN INSERT ({cols}) VALUES ({values})"
    ));
    sql.push(merge);
    for child in children.iter().filter(|t| t.staged) {
        let final_child = qualified(dataset, &child.table.name);
        let stage_child = qualified(staging, &child.table.name);
        let cols = column_list(child.columns.iter().map(String::as_str));
        let values = staged_values(&child.columns);
        let mut merge = format!("MERGE INTO {final_child} AS d USING {stage_child} AS s ON d.\"_dlt_id\" = s.\"_dlt_id\"");
        if !insert_only {
            let set = update_set(&child.columns);
            merge.push_str(&format!(" WHEN MATCHED THEN UPDATE SET {set}"));
        }
        merge.push_str(&format!(
            " WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
        ));
        sql.push(merge);
    }
    if !insert_only {
        for child in children
            .iter()
            .filter(|t| t.table.columns.contains_key("_dlt_root_id"))
        {
            let final_child = qualified(dataset, &child.table.name);
            let stage_child = qualified(staging, &child.table.name);
            let kept = if child.staged {
                format!(" AND \"_dlt_id\" NOT IN (SELECT \"_dlt_id\" FROM {stage_child})")
            } else {
                String::new()
            };
            sql.push(format!(
                "DELETE FROM {final_child} WHERE \"_dlt_root_id\" IN (SELECT \"_dlt_id\" FROM {stage_root}){kept}"
            ));
            if let Some(deleted) = &is_deleted {
                sql.push(format!(
                    "DELETE FROM {final_child} WHERE \"_dlt_root_id\" IN (SELECT \"_dlt_id\" FROM {stage_root} AS s WHERE {deleted})"
                ));
            }
        }
    }
    sql
}
