//! The schema: tables, their columns and hints, evolved by the normalizer and versioned by a hash.
//!
//! The schema is plain data. The normalizer adds tables and columns as it sees values; the
//! destination turns it into DDL. Column order is the order of first appearance, as in dlt.
//! The destination stores it in dlt's format with dlt's version hash ([`dlt_format`]), so dlt
//! and highwater read each other's schemas; the working directory keeps it in this module's
//! serde form.

pub mod dlt_format;

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Result;

/// Tables or columns by name, in order of first appearance. The normalizer looks names up for
/// every value, so the map hashes with foldhash (seeded per process) rather than SipHash.
pub type NameMap<V> = IndexMap<String, V, foldhash::fast::RandomState>;

/// dlt's schema engine version, written to `_dlt_version.engine_version`.
pub const SCHEMA_ENGINE_VERSION: i64 = 11;

/// The data types a column can have (dlt's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Bigint,
    /// 64-bit float.
    Double,
    /// Boolean.
    Bool,
    /// An instant, stored in UTC with microsecond precision.
    Timestamp,
    /// A calendar date.
    Date,
    /// A time of day.
    Time,
    /// Fixed-point decimal, DECIMAL(38,9) unless precision and scale are given.
    Decimal,
    /// Any JSON value kept whole.
    Json,
    /// Bytes.
    Binary,
}

impl DataType {
    /// dlt's name of the type (`bigint`, `text`, …), used in variant column names.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Text => "text",
            DataType::Bigint => "bigint",
            DataType::Double => "double",
            DataType::Bool => "bool",
            DataType::Timestamp => "timestamp",
            DataType::Date => "date",
            DataType::Time => "time",
            DataType::Decimal => "decimal",
            DataType::Json => "json",
            DataType::Binary => "binary",
        }
    }

    /// Parses dlt's name of a type, as written in a pipeline file.
    pub fn parse(name: &str) -> Option<DataType> {
        Some(match name {
            "text" => DataType::Text,
            "bigint" => DataType::Bigint,
            "double" => DataType::Double,
            "bool" => DataType::Bool,
            "timestamp" => DataType::Timestamp,
            "date" => DataType::Date,
            "time" => DataType::Time,
            "decimal" => DataType::Decimal,
            "json" => DataType::Json,
            "binary" => DataType::Binary,
            _ => return None,
        })
    }
}

/// How the rows of a load reach the destination table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteDisposition {
    /// Insert the rows.
    #[default]
    Append,
    /// The table holds exactly this load's rows afterwards.
    Replace,
    /// Rows replace those with the same key (see [`MergeStrategy`]).
    Merge,
}

impl WriteDisposition {
    /// Parses `append`, `replace` or `merge`.
    pub fn parse(name: &str) -> Option<WriteDisposition> {
        match name {
            "append" => Some(WriteDisposition::Append),
            "replace" => Some(WriteDisposition::Replace),
            "merge" => Some(WriteDisposition::Merge),
            _ => None,
        }
    }
}

/// How a `merge` is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeStrategy {
    /// Delete rows matching the keys of the load, then insert the load (dlt's default).
    #[default]
    DeleteInsert,
    /// Update rows whose primary key exists, insert the others.
    Upsert,
    /// Insert only rows whose primary key does not exist yet.
    InsertOnly,
    /// Keep every version of a row with validity columns.
    Scd2,
}

impl MergeStrategy {
    /// The strategy's name as written in a pipeline file (`delete-insert`, …).
    pub fn name(self) -> &'static str {
        match self {
            MergeStrategy::DeleteInsert => "delete-insert",
            MergeStrategy::Upsert => "upsert",
            MergeStrategy::InsertOnly => "insert-only",
            MergeStrategy::Scd2 => "scd2",
        }
    }

    /// Parses `delete-insert`, `upsert`, `insert-only` or `scd2`.
    pub fn parse(name: &str) -> Option<MergeStrategy> {
        match name {
            "delete-insert" => Some(MergeStrategy::DeleteInsert),
            "upsert" => Some(MergeStrategy::Upsert),
            "insert-only" => Some(MergeStrategy::InsertOnly),
            "scd2" => Some(MergeStrategy::Scd2),
            _ => None,
        }
    }
}

/// How a `replace` swaps a table's rows (dlt's replace strategies). On DuckDB and PostgreSQL
/// every strategy runs inside the load's transaction, so readers see the old rows until the new
/// ones are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceStrategy {
    /// Empty the tables, then load the new rows into them (dlt's default).
    #[default]
    TruncateAndInsert,
    /// Load into `<dataset>_staging`, then empty the tables and copy the staged rows in.
    InsertFromStaging,
    /// Load into `<dataset>_staging`, then put the staging tables in place of the tables
    /// (PostgreSQL moves them; DuckDB, which cannot move a table between schemas, copies).
    StagingOptimized,
}

impl ReplaceStrategy {
    /// The strategy's name as written in a pipeline file (`truncate-and-insert`, …).
    pub fn name(self) -> &'static str {
        match self {
            ReplaceStrategy::TruncateAndInsert => "truncate-and-insert",
            ReplaceStrategy::InsertFromStaging => "insert-from-staging",
            ReplaceStrategy::StagingOptimized => "staging-optimized",
        }
    }

    /// Parses `truncate-and-insert`, `insert-from-staging` or `staging-optimized`.
    pub fn parse(name: &str) -> Option<ReplaceStrategy> {
        match name {
            "truncate-and-insert" => Some(ReplaceStrategy::TruncateAndInsert),
            "insert-from-staging" => Some(ReplaceStrategy::InsertFromStaging),
            "staging-optimized" => Some(ReplaceStrategy::StagingOptimized),
            _ => None,
        }
    }

    /// Whether the new rows are loaded into staging first.
    pub fn stages(self) -> bool {
        self != ReplaceStrategy::TruncateAndInsert
    }
}

/// Which duplicate of a key survives a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// The lowest value wins.
    Asc,
    /// The highest value wins.
    Desc,
}

/// A column and its hints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Normalized column name.
    pub name: String,
    /// Data type; fixed once the column exists.
    pub data_type: DataType,
    /// Whether NULL is allowed.
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Part of the primary key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub primary_key: bool,
    /// Part of the merge key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub merge_key: bool,
    /// Values are unique (`_dlt_id`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    /// The row's own id (`_dlt_id`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub row_key: bool,
    /// Points at the parent row (`_dlt_parent_id`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub parent_key: bool,
    /// Points at the root row (`_dlt_root_id`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub root_key: bool,
    /// A true (or non-null) value deletes the row on merge.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hard_delete: bool,
    /// Picks the surviving duplicate of a key on merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_sort: Option<SortOrder>,
    /// A variant column holding values that did not fit the column's type.
    #[serde(default, skip_serializing_if = "is_false")]
    pub variant: bool,
    /// Declared by the user rather than inferred: values that do not fit are errors.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hinted: bool,
    /// Precision for decimals (digits) and timestamps (fractional digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u32>,
    /// Scale for decimals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    /// `Some(false)` for a timestamp stored without time zone (dlt's `timezone: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<bool>,
    /// Properties of dlt's stored column highwater does not interpret (`description`, `x-`
    /// hints, `incremental`, hints set to `false`, …), written back as they were.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    /// scd2: the start of a version's validity (dlt's `x-valid-from`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub valid_from: bool,
    /// scd2: the end of a version's validity, `NULL` (or [`Column::active_record_timestamp`])
    /// while it is the active one (dlt's `x-valid-to`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub valid_to: bool,
    /// scd2, on the `valid_to` column: the value that marks active versions instead of `NULL`,
    /// as the user gave it, e.g. `9999-12-31` (dlt's `x-active-record-timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_record_timestamp: Option<String>,
    /// scd2: the column that tells versions apart, `_dlt_id` (the row hash) unless the user
    /// names one (dlt's `x-row-version`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub row_version: bool,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Column {
    /// A nullable column of `data_type` with no hints.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        Column {
            name: name.into(),
            data_type,
            nullable: true,
            primary_key: false,
            merge_key: false,
            unique: false,
            row_key: false,
            parent_key: false,
            root_key: false,
            hard_delete: false,
            dedup_sort: None,
            variant: false,
            hinted: false,
            precision: None,
            scale: None,
            timezone: None,
            extra: Map::new(),
            valid_from: false,
            valid_to: false,
            active_record_timestamp: None,
            row_version: false,
        }
    }

    /// The same column, NOT NULL.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// A table: a root table of a resource, or a child table of nested lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Normalized table name.
    pub name: String,
    /// The parent table of a child table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The resource whose items fill this table (root tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// How loads reach the table (root tables; children follow their root).
    #[serde(default)]
    pub write_disposition: WriteDisposition,
    /// How merges are carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_strategy: Option<MergeStrategy>,
    /// Levels of nesting that become child tables or flattened columns (`max_table_nesting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nesting: Option<usize>,
    /// How a `replace` swaps the rows; the destination's default (truncate-and-insert) when
    /// unset. Not in dlt's stored schema: dlt takes it from the destination's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_strategy: Option<ReplaceStrategy>,
    /// scd2: the time that closes retired versions and opens new ones, as the user gave it
    /// (dlt's `x-boundary-timestamp`); the load's creation time when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary_timestamp: Option<String>,
    /// Columns in order of first appearance.
    pub columns: NameMap<Column>,
    /// Properties of dlt's stored table highwater does not interpret (`x-normalizer`,
    /// `table_format`, `references`, `description`, columns without a data type, …), written
    /// back as they were.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Table {
    /// An empty root table.
    pub fn new(name: impl Into<String>) -> Self {
        Table {
            name: name.into(),
            parent: None,
            resource: None,
            write_disposition: WriteDisposition::Append,
            merge_strategy: None,
            max_nesting: None,
            replace_strategy: None,
            boundary_timestamp: None,
            columns: NameMap::default(),
            extra: Map::new(),
        }
    }

    /// Columns that are part of the primary key, in order.
    pub fn primary_key(&self) -> Vec<&Column> {
        self.columns.values().filter(|c| c.primary_key).collect()
    }

    /// Columns that are part of the merge key, in order.
    pub fn merge_key(&self) -> Vec<&Column> {
        self.columns.values().filter(|c| c.merge_key).collect()
    }

    /// Records that rows reached the table (dlt's `x-normalizer.seen-data`): dlt empties only
    /// such tables on a replace, and creates only those in a destination.
    pub fn mark_seen_data(&mut self) {
        let normalizer = self
            .extra
            .entry("x-normalizer")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(normalizer) = normalizer {
            normalizer.insert("seen-data".into(), Value::Bool(true));
        }
    }

    /// The scd2 validity columns (`valid_from`, `valid_to`), when the table has them.
    pub fn validity_columns(&self) -> Option<(&Column, &Column)> {
        let from = self.columns.values().find(|c| c.valid_from)?;
        let to = self.columns.values().find(|c| c.valid_to)?;
        Some((from, to))
    }

    /// The scd2 row-version column.
    pub fn row_version_column(&self) -> Option<&Column> {
        self.columns.values().find(|c| c.row_version)
    }

    /// Whether the table is a child table.
    pub fn is_child(&self) -> bool {
        self.parent.is_some()
    }
}

/// A named, versioned set of tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Schema name (the pipeline name).
    pub name: String,
    /// Increases by one each time the content changes.
    pub version: u64,
    /// dlt's hash of the content, to detect changes.
    pub version_hash: String,
    /// Engine version of the stored format.
    pub engine_version: i64,
    /// Tables in order of first appearance (dlt's system tables are not among them).
    pub tables: NameMap<Table>,
    /// The parts of dlt's stored schema highwater does not interpret: `settings`,
    /// `normalizers`, `previous_hashes`, and under `tables` dlt's own system tables.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub dlt: Map<String, Value>,
}

/// How many earlier version hashes a schema keeps (dlt's `previous_hashes`).
const PREVIOUS_HASHES_KEPT: usize = 10;

impl Schema {
    /// An empty schema.
    pub fn new(name: impl Into<String>) -> Self {
        let mut schema = Schema {
            name: name.into(),
            version: 0,
            version_hash: String::new(),
            engine_version: SCHEMA_ENGINE_VERSION,
            tables: NameMap::default(),
            dlt: Map::new(),
        };
        schema.version_hash = schema.content_hash();
        schema.version = 1;
        schema
    }

    /// dlt's version hash of the content (tables, column order, settings).
    pub fn content_hash(&self) -> String {
        dlt_format::version_hash(&dlt_format::to_stored(self))
    }

    /// Recomputes the hash; increments the version when the content changed, keeping the old
    /// hash in `previous_hashes` as dlt does. Returns whether it did.
    pub fn bump_version(&mut self) -> bool {
        let hash = self.content_hash();
        if hash == self.version_hash {
            return false;
        }
        let previous = std::mem::replace(&mut self.version_hash, hash);
        self.version += 1;
        if !previous.is_empty() {
            let hashes = self
                .dlt
                .entry("previous_hashes")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(hashes) = hashes {
                if !hashes.iter().any(|h| h.as_str() == Some(previous.as_str())) {
                    hashes.insert(0, Value::String(previous));
                    hashes.truncate(PREVIOUS_HASHES_KEPT);
                }
            }
        }
        true
    }

    /// Whether nested keys break into paths at `__` (dlt's `use_break_path_on_normalize`, off
    /// in schemas first written by a dlt before 1.4).
    pub fn breaks_paths(&self) -> bool {
        self.dlt
            .get("normalizers")
            .and_then(|n| n.get("use_break_path_on_normalize"))
            != Some(&Value::Bool(false))
    }

    /// The root table of `table` (itself for a root table).
    pub fn root_of<'a>(&'a self, table: &'a str) -> &'a str {
        let mut name = table;
        while let Some(parent) = self.tables.get(name).and_then(|t| t.parent.as_deref()) {
            name = parent;
        }
        name
    }

    /// The root tables of each resource, in schema order.
    pub fn root_tables_by_resource(&self) -> HashMap<String, Vec<String>> {
        let mut by_resource: HashMap<String, Vec<String>> = HashMap::new();
        for table in self.tables.values().filter(|t| t.parent.is_none()) {
            if let Some(resource) = &table.resource {
                by_resource
                    .entry(resource.clone())
                    .or_default()
                    .push(table.name.clone());
            }
        }
        by_resource
    }

    /// The child tables of `root` (all descendants), in schema order.
    pub fn descendants(&self, root: &str) -> Vec<&Table> {
        self.tables
            .values()
            .filter(|t| t.parent.is_some() && self.root_of(&t.name) == root)
            .collect()
    }

    /// Reads a schema stored in the destination: dlt's stored format (written by dlt or by
    /// highwater), or the format highwater stored before it wrote dlt's.
    pub fn from_stored_json(text: &str) -> Result<Schema> {
        dlt_format::from_stored(text)
    }

    /// The schema in dlt's stored format, as `_dlt_version.schema` holds it.
    pub fn to_stored_json(&self) -> String {
        dlt_format::to_stored(self).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_moves_only_when_content_changes() {
        let mut schema = Schema::new("p");
        assert_eq!(schema.version, 1);
        assert!(!schema.bump_version());
        let mut table = Table::new("events");
        table
            .columns
            .insert("id".into(), Column::new("id", DataType::Bigint));
        schema.tables.insert("events".into(), table);
        assert!(schema.bump_version());
        assert_eq!(schema.version, 2);
        let back = Schema::from_stored_json(&schema.to_stored_json()).unwrap();
        assert_eq!(back.tables, schema.tables);
        assert_eq!(back.version_hash, schema.version_hash);
        assert_eq!(back.content_hash(), schema.version_hash);
    }

    #[test]
    fn descendants_follow_parents() {
        let mut schema = Schema::new("p");
        schema.tables.insert("a".into(), Table::new("a"));
        let mut child = Table::new("a__b");
        child.parent = Some("a".into());
        schema.tables.insert("a__b".into(), child);
        let mut grandchild = Table::new("a__b__c");
        grandchild.parent = Some("a__b".into());
        schema.tables.insert("a__b__c".into(), grandchild);
        assert_eq!(schema.root_of("a__b__c"), "a");
        let names: Vec<_> = schema.descendants("a").iter().map(|t| &t.name).collect();
        assert_eq!(names, ["a__b", "a__b__c"]);
    }
}
