//! What a load does, destination-neutral: which tables are dropped, emptied, created or given
//! new columns, where each file goes (final table or staging), and which merges run how.
//!
//! A SQL destination carries the plan out in one transaction (see [`super::sql::load`]); the
//! plan itself touches no database, so every decision is unit-tested here.

use std::collections::HashSet;

use super::LoadJob;
use crate::error::{Error, Result};
use crate::package::TableFile;
use crate::schema::{MergeStrategy, ReplaceStrategy, Schema, Table, WriteDisposition};

/// How merge roots are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    /// `delete-insert` roots that allow it load straight into the final table (see
    /// [`merges_directly`]); other merges go through staging.
    Direct,
    /// Every merge goes through staging, as dlt's does.
    Staged,
    /// Merges load as appends (a destination without merge support).
    Append,
}

/// Where a file's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The table in the dataset.
    Final,
    /// The table of the same name in `<dataset>_staging`, for a merge.
    Staging,
    /// The final table, after the deletes of a direct merge (child rows of a direct merge: a
    /// root `_dlt_id` that repeats an older one must not take the new children with it).
    FinalAfterDeletes,
}

/// A file of the package and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct FileLoad<'a> {
    /// The file.
    pub file: &'a TableFile,
    /// Where its rows go.
    pub target: Target,
}

/// A merge of one root table and its child tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge<'a> {
    /// The root table.
    pub root: &'a Table,
    /// How it merges.
    pub strategy: MergeStrategy,
    /// Its child tables (all descendants) in schema order.
    pub children: Vec<&'a Table>,
}

impl<'a> Merge<'a> {
    /// The root and its children, root first.
    pub fn chain(&self) -> impl Iterator<Item = &'a Table> + '_ {
        std::iter::once(self.root).chain(self.children.iter().copied())
    }
}

/// A `replace` of one root table and its child tables through staging: the new rows are
/// loaded into `<dataset>_staging`, then swapped in (see [`ReplaceStrategy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedReplace<'a> {
    /// The root table.
    pub root: &'a Table,
    /// How the rows are swapped in.
    pub strategy: ReplaceStrategy,
    /// Its child tables (all descendants) in schema order.
    pub children: Vec<&'a Table>,
}

impl<'a> StagedReplace<'a> {
    /// The root and its children, root first.
    pub fn chain(&self) -> impl Iterator<Item = &'a Table> + '_ {
        std::iter::once(self.root).chain(self.children.iter().copied())
    }
}

/// What one load does, in the order it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan<'a> {
    /// 1. Tables dropped first (refresh), child tables included.
    pub drop_tables: &'a [String],
    /// 2. Tables with rows in this load, in the order of their first file (roots come before
    ///    their children): created, or given the columns they lack.
    pub tables: Vec<&'a Table>,
    /// 3. Tables emptied (replace, refresh): each root named by the package with its child
    ///    tables in the schema, except those of staged replaces.
    pub truncate: Vec<&'a str>,
    /// 4. Files in load order, each with its target.
    pub files: Vec<FileLoad<'a>>,
    /// 5. Merges whose root rows went straight into the final table: delete the older rows
    ///    sharing a key (and their children), then load the deferred child files.
    pub direct_merges: Vec<Merge<'a>>,
    /// 6. Merges through staging.
    pub staged_merges: Vec<Merge<'a>>,
    /// 7. Replaces through staging, swapped in last.
    pub staged_replaces: Vec<StagedReplace<'a>>,
}

impl<'a> LoadPlan<'a> {
    /// Plans `job`.
    pub fn new(job: &'a LoadJob<'a>, mode: MergeMode) -> Result<Self> {
        let schema = job.schema;
        let mut tables: Vec<&Table> = Vec::new();
        for file in job.files {
            let table = schema
                .tables
                .get(&file.table)
                .ok_or_else(|| Error::Corrupt {
                    what: format!("package {}", job.load_id),
                    detail: format!("table {} is not in the schema", file.table),
                })?;
            if !tables.iter().any(|t| t.name == table.name) {
                tables.push(table);
            }
        }

        // A replace root with a staging strategy is emptied when its staged rows are swapped
        // in; other roots named by the package (and their children) are emptied first.
        let staged_replaces: Vec<StagedReplace<'_>> = job
            .truncate_tables
            .iter()
            .filter_map(|root| schema.tables.get(root))
            .filter(|root| mode != MergeMode::Append && root.parent.is_none())
            .filter(|root| root.write_disposition == WriteDisposition::Replace)
            .filter_map(|root| {
                let strategy = root.replace_strategy.filter(|s| s.stages())?;
                Some(StagedReplace {
                    root,
                    strategy,
                    children: schema.descendants(&root.name),
                })
            })
            .collect();
        let truncate = job
            .truncate_tables
            .iter()
            .filter(|root| !staged_replaces.iter().any(|r| &r.root.name == *root))
            .flat_map(|root| chain_names(schema, root))
            .collect();

        let mut merges: Vec<Merge<'_>> = Vec::new();
        if mode != MergeMode::Append {
            for table in &tables {
                let Some(root) = schema.tables.get(schema.root_of(&table.name)) else {
                    continue;
                };
                if root.write_disposition != WriteDisposition::Merge
                    || merges.iter().any(|m| m.root.name == root.name)
                {
                    continue;
                }
                merges.push(Merge {
                    root,
                    strategy: effective_strategy(root),
                    children: schema.descendants(&root.name),
                });
            }
        }
        let (direct_merges, staged_merges): (Vec<_>, Vec<_>) = merges
            .into_iter()
            .partition(|m| mode == MergeMode::Direct && merges_directly(m.root));

        let direct_children: HashSet<&str> = direct_merges
            .iter()
            .flat_map(|m| m.children.iter().map(|t| t.name.as_str()))
            .collect();
        let staged: HashSet<&str> = staged_merges
            .iter()
            .flat_map(|m| m.chain().map(|t| t.name.as_str()))
            .chain(
                staged_replaces
                    .iter()
                    .flat_map(|r| r.chain().map(|t| t.name.as_str())),
            )
            .collect();
        let files = job
            .files
            .iter()
            .map(|file| FileLoad {
                file,
                target: if staged.contains(file.table.as_str()) {
                    Target::Staging
                } else if direct_children.contains(file.table.as_str()) {
                    Target::FinalAfterDeletes
                } else {
                    Target::Final
                },
            })
            .collect();
        Ok(LoadPlan {
            drop_tables: job.drop_tables,
            tables,
            truncate,
            files,
            direct_merges,
            staged_merges,
            staged_replaces,
        })
    }

    /// Whether the load deletes or updates rows (a merge), rather than only inserting.
    pub fn merges(&self) -> bool {
        !self.direct_merges.is_empty() || !self.staged_merges.is_empty()
    }

    /// Whether anything goes through staging.
    pub fn stages(&self) -> bool {
        !self.staged_merges.is_empty() || !self.staged_replaces.is_empty()
    }

    /// Tables of the staged merges' and replaces' chains (their staging tables are cleared
    /// before and after).
    pub fn staging_tables(&self) -> Vec<&'a str> {
        self.staged_merges
            .iter()
            .flat_map(|m| m.chain().map(|t| t.name.as_str()))
            .chain(
                self.staged_replaces
                    .iter()
                    .flat_map(|r| r.chain().map(|t| t.name.as_str())),
            )
            .collect()
    }
}

/// The strategy a merge root is carried out with: upsert and insert-only need a primary key,
/// without one the root merges by delete-insert (which appends without any key, as dlt does).
fn effective_strategy(root: &Table) -> MergeStrategy {
    match root.merge_strategy.unwrap_or_default() {
        s @ (MergeStrategy::Upsert | MergeStrategy::InsertOnly)
            if !root.primary_key().is_empty() =>
        {
            s
        }
        MergeStrategy::Scd2 => MergeStrategy::Scd2,
        _ => MergeStrategy::DeleteInsert,
    }
}

/// Whether `root` can merge without staging: delete-insert, no hard-delete column (whose
/// flagged rows staging filters out), and the `_dlt_id` and `_dlt_load_id` columns that tell
/// this load's rows from older ones. The load still falls back to staging when it repeats a
/// primary key (staging keeps only the last row).
pub fn merges_directly(root: &Table) -> bool {
    effective_strategy(root) == MergeStrategy::DeleteInsert
        && !root.columns.values().any(|c| c.hard_delete)
        && root.columns.contains_key("_dlt_id")
        && root.columns.contains_key("_dlt_load_id")
}

/// A root table and all its descendants in the schema, root first.
fn chain_names<'a>(schema: &'a Schema, root: &'a str) -> Vec<&'a str> {
    std::iter::once(root)
        .chain(
            schema
                .descendants(root)
                .into_iter()
                .map(|t| t.name.as_str()),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::schema::{Column, DataType};

    fn table(name: &str, parent: Option<&str>, disposition: WriteDisposition) -> Table {
        let mut t = Table::new(name);
        t.parent = parent.map(str::to_string);
        t.write_disposition = disposition;
        for c in ["_dlt_id", "_dlt_load_id"] {
            t.columns
                .insert(c.into(), Column::new(c, DataType::Text).not_null());
        }
        t
    }

    fn keyed(mut t: Table) -> Table {
        let mut id = Column::new("id", DataType::Bigint);
        id.primary_key = true;
        t.columns.insert("id".into(), id);
        t
    }

    fn schema(tables: Vec<Table>) -> Schema {
        let mut schema = Schema::new("p");
        for t in tables {
            schema.tables.insert(t.name.clone(), t);
        }
        schema
    }

    fn file(table: &str) -> TableFile {
        TableFile {
            table: table.into(),
            file: format!("{table}.parquet"),
            columns: vec!["_dlt_id".into()],
            rows: 1,
            check: None,
        }
    }

    fn job<'a>(schema: &'a Schema, files: &'a [TableFile], truncate: &'a [String]) -> LoadJob<'a> {
        LoadJob {
            load_id: "1",
            pipeline: "p",
            schema,
            files_dir: PathBuf::new(),
            files,
            truncate_tables: truncate,
            drop_tables: &[],
            state: None,
            on_file_loaded: &|_| {},
        }
    }

    fn targets<'a>(plan: &'a LoadPlan<'a>) -> Vec<(&'a str, Target)> {
        plan.files
            .iter()
            .map(|f| (f.file.table.as_str(), f.target))
            .collect()
    }

    #[test]
    fn appends_go_to_the_final_tables_and_a_replace_empties_the_whole_chain() {
        let s = schema(vec![
            table("a", None, WriteDisposition::Replace),
            table("a__b", Some("a"), WriteDisposition::Replace),
            table("a__b__c", Some("a__b"), WriteDisposition::Replace),
            table("x", None, WriteDisposition::Append),
        ]);
        let files = [file("a"), file("x")];
        let truncate = ["a".to_string()];
        let job = job(&s, &files, &truncate);
        let plan = LoadPlan::new(&job, MergeMode::Direct).unwrap();
        assert_eq!(plan.truncate, ["a", "a__b", "a__b__c"]);
        assert_eq!(targets(&plan), [("a", Target::Final), ("x", Target::Final)]);
        assert!(!plan.merges());
        let names: Vec<&str> = plan.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "x"]);
    }

    #[test]
    fn a_delete_insert_merge_loads_directly_with_its_children_deferred() {
        let s = schema(vec![
            keyed(table("m", None, WriteDisposition::Merge)),
            table("m__c", Some("m"), WriteDisposition::Merge),
        ]);
        let files = [file("m"), file("m__c")];
        let job = job(&s, &files, &[]);
        let plan = LoadPlan::new(&job, MergeMode::Direct).unwrap();
        assert_eq!(
            targets(&plan),
            [("m", Target::Final), ("m__c", Target::FinalAfterDeletes)]
        );
        assert_eq!(plan.direct_merges.len(), 1);
        assert!(plan.staged_merges.is_empty());
        assert!(plan.merges() && !plan.stages());

        let plan = LoadPlan::new(&job, MergeMode::Staged).unwrap();
        assert_eq!(
            targets(&plan),
            [("m", Target::Staging), ("m__c", Target::Staging)]
        );
        assert_eq!(plan.staging_tables(), ["m", "m__c"]);
    }

    #[test]
    fn hard_deletes_and_upserts_go_through_staging_and_append_mode_merges_nothing() {
        let mut hard = keyed(table("h", None, WriteDisposition::Merge));
        let mut deleted = Column::new("deleted", DataType::Bool);
        deleted.hard_delete = true;
        hard.columns.insert("deleted".into(), deleted);
        let mut up = keyed(table("u", None, WriteDisposition::Merge));
        up.merge_strategy = Some(MergeStrategy::Upsert);
        // Upsert without a primary key merges by delete-insert.
        let mut keyless = table("k", None, WriteDisposition::Merge);
        keyless.merge_strategy = Some(MergeStrategy::Upsert);
        let s = schema(vec![hard, up, keyless]);
        let files = [file("h"), file("u"), file("k")];
        let job = job(&s, &files, &[]);
        let plan = LoadPlan::new(&job, MergeMode::Direct).unwrap();
        assert_eq!(
            targets(&plan),
            [
                ("h", Target::Staging),
                ("u", Target::Staging),
                ("k", Target::Final)
            ]
        );
        let strategies: Vec<(&str, MergeStrategy)> = plan
            .staged_merges
            .iter()
            .chain(&plan.direct_merges)
            .map(|m| (m.root.name.as_str(), m.strategy))
            .collect();
        assert_eq!(
            strategies,
            [
                ("h", MergeStrategy::DeleteInsert),
                ("u", MergeStrategy::Upsert),
                ("k", MergeStrategy::DeleteInsert)
            ]
        );

        let plan = LoadPlan::new(&job, MergeMode::Append).unwrap();
        assert!(plan.files.iter().all(|f| f.target == Target::Final));
        assert!(!plan.merges());
    }

    #[test]
    fn scd2_merges_through_staging() {
        let mut root = keyed(table("h", None, WriteDisposition::Merge));
        root.merge_strategy = Some(MergeStrategy::Scd2);
        let s = schema(vec![
            root,
            table("h__c", Some("h"), WriteDisposition::Merge),
        ]);
        let files = [file("h"), file("h__c")];
        let job = job(&s, &files, &[]);
        let plan = LoadPlan::new(&job, MergeMode::Direct).unwrap();
        assert_eq!(
            targets(&plan),
            [("h", Target::Staging), ("h__c", Target::Staging)]
        );
        assert_eq!(plan.staged_merges[0].strategy, MergeStrategy::Scd2);
        assert!(plan.direct_merges.is_empty());
    }

    #[test]
    fn a_staging_replace_stages_its_chain_and_empties_it_at_the_swap() {
        let mut staged = table("s", None, WriteDisposition::Replace);
        staged.replace_strategy = Some(ReplaceStrategy::InsertFromStaging);
        let mut plain = table("p", None, WriteDisposition::Replace);
        plain.replace_strategy = Some(ReplaceStrategy::TruncateAndInsert);
        let s = schema(vec![
            staged,
            table("s__c", Some("s"), WriteDisposition::Replace),
            plain,
            table("p__c", Some("p"), WriteDisposition::Replace),
        ]);
        let files = [file("s"), file("p")];
        let truncate = ["s".to_string(), "p".to_string()];
        let job = job(&s, &files, &truncate);
        let plan = LoadPlan::new(&job, MergeMode::Direct).unwrap();
        assert_eq!(plan.truncate, ["p", "p__c"]);
        assert_eq!(
            targets(&plan),
            [("s", Target::Staging), ("p", Target::Final)]
        );
        assert_eq!(plan.staged_replaces.len(), 1);
        assert_eq!(plan.staging_tables(), ["s", "s__c"]);
        assert!(plan.stages() && !plan.merges());

        // A destination without staging (append mode) empties and loads directly.
        let plan = LoadPlan::new(&job, MergeMode::Append).unwrap();
        assert!(plan.staged_replaces.is_empty());
        assert_eq!(plan.truncate, ["s", "s__c", "p", "p__c"]);
    }

    #[test]
    fn a_file_of_a_table_missing_from_the_schema_is_a_corrupt_package() {
        let s = schema(vec![]);
        let files = [file("ghost")];
        let job = job(&s, &files, &[]);
        let err = LoadPlan::new(&job, MergeMode::Direct).unwrap_err();
        assert!(err.to_string().contains("ghost"), "{err}");
    }
}
