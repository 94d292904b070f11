//! The statements that swap a replace's staged rows in (dlt's `insert-from-staging` and
//! `staging-optimized`). They run inside the load's transaction, so readers of the tables see
//! the old rows until the commit, never an empty or half-filled table.

use super::merge::ChainTable;
use super::{column_list, qualified, quote, Dialect};
use crate::schema::ReplaceStrategy;

/// The swap of one replaced chain, in two phases so that every table is emptied before any is
/// filled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Swap {
    /// Empties (or drops) the final tables.
    pub empty: Vec<String>,
    /// Fills them from staging (or moves the staging tables in).
    pub fill: Vec<String>,
}

/// Whether the staging tables of `strategy` are moved into the dataset as they are (so they
/// are created with the final tables' NOT NULL constraints), rather than copied.
pub fn moves_staging_tables(dialect: &dyn Dialect, strategy: ReplaceStrategy) -> bool {
    strategy == ReplaceStrategy::StagingOptimized && dialect.moves_tables()
}

/// The swap of `chain` (root first; each table with the columns its staging table has, and
/// whether staging holds rows for it) from `staging` into `dataset`.
///
/// `insert-from-staging` empties each final table and copies the staged rows in.
/// `staging-optimized` drops each final table and moves its staging table into the dataset
/// (PostgreSQL's `ALTER TABLE … SET SCHEMA`, as dlt does); on a database that cannot move a
/// table between schemas (DuckDB) it copies, as `insert-from-staging`. A table without staged
/// rows is only emptied.
pub fn swap(
    dialect: &dyn Dialect,
    dataset: &str,
    staging: &str,
    chain: &[ChainTable<'_>],
    strategy: ReplaceStrategy,
) -> Swap {
    let moves = moves_staging_tables(dialect, strategy);
    let mut swap = Swap::default();
    for table in chain {
        let name = &table.table.name;
        let final_table = qualified(dataset, name);
        let staged_table = qualified(staging, name);
        if !table.staged {
            swap.empty.push(format!("DELETE FROM {final_table}"));
        } else if moves {
            swap.empty
                .push(format!("DROP TABLE IF EXISTS {final_table}"));
            swap.fill.push(format!(
                "ALTER TABLE {staged_table} SET SCHEMA {}",
                quote(dataset)
            ));
        } else {
            swap.empty.push(format!("DELETE FROM {final_table}"));
            let cols = column_list(table.columns.iter().map(String::as_str));
            swap.fill.push(format!(
                "INSERT INTO {final_table} ({cols}) SELECT {cols} FROM {staged_table}"
            ));
        }
    }
    swap
}
