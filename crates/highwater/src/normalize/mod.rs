//! The relational normalizer: nested JSON items → rows of parent and child tables, exactly as
//! dlt's relational normalizer makes them, with types inferred and the schema evolved on the way.
//!
//! Rows go straight into per-table column builders ([`writer`]) and leave as Parquet files, so
//! memory is bounded by the chunk size whatever the input size.

mod arrow_items;
pub mod coerce;
pub mod node;
mod parallel;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::error::{preview, Error, Result};
use crate::hash::{digest128, random_row_id};
use crate::naming::Naming;
use crate::package::TableFile;
use crate::package::TableSpec;
use crate::resource::Scd2Options;
use crate::schema::{Column, DataType, MergeStrategy, Schema, Table, WriteDisposition};
use coerce::{coerce, coerce_node, infer_type, python_type, Cell};
pub use node::{Entry, Node};
pub(crate) use parallel::normalize_items_file;
use writer::TableWriter;

/// Default nesting depth: effectively unlimited, as in dlt.
pub const DEFAULT_MAX_NESTING: usize = 1000;

/// Rows per table buffered before they are written out.
pub const CHUNK_ROWS: usize = 50_000;

const EMPTY_KEY: &str = "_empty";

/// How a root table's rows get their `_dlt_id`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowIdKind {
    Random,
    KeyHash,
    ContentHash,
}

/// A root table's settings resolved for this package.
#[derive(Debug, Clone)]
struct RootSettings {
    /// The root table's name, shared by its rows.
    name: Arc<str>,
    max_nesting: usize,
    propagate_root_key: bool,
    row_id: RowIdKind,
    primary_key: Vec<String>,
}

/// Normalizes the items of one load package into Parquet files.
pub struct Normalizer<'a> {
    schema: &'a mut Schema,
    naming: Naming,
    load_id: String,
    dir: PathBuf,
    writers: IndexMap<String, TableWriter, foldhash::fast::RandomState>,
    roots: HashMap<String, Arc<RootSettings>>,
    specs: HashMap<String, TableSpec>,
    /// Column names by (prefix, raw key): each key is normalized once per package.
    names: foldhash::HashMap<Arc<str>, foldhash::HashMap<String, Arc<str>>>,
    root_prefix: Arc<str>,
    /// Which key first gave each column name, to notice two keys sharing one name.
    name_sources: foldhash::HashMap<Arc<str>, (Arc<str>, String)>,
    /// Column names given by more than one key.
    collisions: foldhash::HashSet<Arc<str>>,
    /// Each of those once: the name and the first two keys that gave it.
    name_collisions: Vec<(String, String, String)>,
    /// A worker on a copy of the schema: items that would change it are left to the main one.
    frozen: bool,
    /// A parallel worker (frozen or not): the main normalizer already said what it had to say.
    frozen_copy: bool,
    /// Prefix of this normalizer's file names, so parallel workers never share a file.
    file_prefix: String,
    /// Child table names given by more than one list.
    shared_tables: foldhash::HashSet<Arc<str>>,
    /// The (table, list column) that first gave each child table name, to notice a second.
    child_sources: foldhash::HashMap<Arc<str>, (Arc<str>, Arc<str>)>,
    /// Child table names by (table, list column).
    child_names: foldhash::HashMap<Arc<str>, foldhash::HashMap<Arc<str>, Arc<str>>>,
    /// The unshortened paths (fragments joined by `__`) of the column and table names that were
    /// shortened: dlt shortens a nested name from its whole path, not from a shortened parent.
    full_paths: foldhash::HashMap<Arc<str>, Arc<str>>,
    system_names: SystemNames,
    /// The most values a flattened row had so far, plus [`SYSTEM_COLUMNS`] (at most
    /// [`MAX_ROW_CAPACITY`]): the capacity each row starts with.
    widest_row: usize,
    /// Whether the schema has a JSON column; without one, only depth makes a value JSON.
    has_json_columns: bool,
}

/// One row of an item, assembled before it is written.
struct PendingRow<'n> {
    table: Arc<str>,
    parent: Option<Arc<str>>,
    values: RowValues<'n>,
}

/// A value of a row: a node of the item, or one the normalizer adds.
#[derive(Clone)]
enum RowValue<'n> {
    Item(&'n Node<'n>),
    /// A row id: shared, since a row's id is also its children's parent (and root) id.
    Text(Arc<str>),
    Int(i64),
    /// The package's load id.
    LoadId,
}

impl RowValue<'_> {
    /// The value as JSON, for the paths that coerce or infer from a `Value`.
    fn to_json(&self, load_id: &str) -> Value {
        match self {
            RowValue::Item(node) => node.to_value(),
            RowValue::Text(s) => Value::String(s.to_string()),
            RowValue::Int(i) => Value::from(*i),
            RowValue::LoadId => Value::String(load_id.to_string()),
        }
    }
}

/// What [`Normalizer::resolve`] makes of a row in a frozen worker.
enum Resolved<'r> {
    /// Column index and value of each non-null value.
    Cells(Vec<(usize, ReadyCell<'r>)>),
    /// The row fits the schema but needs the general path ([`Normalizer::write_row`]).
    Fits,
    /// The row would change the schema.
    DoesNotFit,
}

/// A value ready for its column.
enum ReadyCell<'r> {
    Str(&'r str),
    LoadId,
    Cell(Cell),
}

/// `value` as a cell of a column of `data_type`, when it is one already or coerces to it without
/// the general path (which also adds columns and variants).
fn ready_cell<'r>(data_type: DataType, value: &'r RowValue<'_>) -> Option<ReadyCell<'r>> {
    match (data_type, value) {
        (DataType::Text, RowValue::Item(Node::Str(s))) => Some(ReadyCell::Str(s)),
        (DataType::Text, RowValue::Text(s)) => Some(ReadyCell::Str(s)),
        (DataType::Text, RowValue::LoadId) => Some(ReadyCell::LoadId),
        (DataType::Bigint, RowValue::Int(i)) => Some(ReadyCell::Cell(Cell::Bigint(*i))),
        (_, RowValue::Item(node)) => coerce_node(node, data_type).map(ReadyCell::Cell),
        _ => None,
    }
}

/// Sets column `index` of the writer's current row.
fn set_cell(writer: &mut TableWriter, index: usize, cell: ReadyCell<'_>, load_id: &str) {
    match cell {
        ReadyCell::Str(s) => writer.set_str(index, s),
        ReadyCell::LoadId => writer.set_str(index, load_id),
        ReadyCell::Cell(cell) => writer.set(index, cell),
    }
}

/// Ends the row being written to `table`, unless a NOT NULL column has no value in it.
fn end_row(writer: &mut TableWriter, table: &str, location: &str) -> Result<()> {
    if let Some(missing) = writer.missing_not_null() {
        return Err(Error::NullInNotNull {
            location: location.to_string(),
            table: table.to_string(),
            column: missing.to_string(),
        });
    }
    writer.end_row();
    Ok(())
}

/// Whether any table of `schema` has a JSON column.
fn has_json_columns(schema: &Schema) -> bool {
    schema
        .tables
        .values()
        .any(|t| t.columns.values().any(|c| c.data_type == DataType::Json))
}

/// A row being assembled: column name and value, in emission order.
type RowValues<'n> = Vec<(Arc<str>, RowValue<'n>)>;

/// What flattening an object produces, and the nested objects still to flatten (entries,
/// column prefix, nesting levels left).
struct Flattened<'n> {
    values: RowValues<'n>,
    lists: ChildLists<'n>,
    nested: Vec<(&'n [Entry<'n>], Arc<str>, i64)>,
}

/// The largest capacity a row starts with (see `Normalizer::widest_row`).
const MAX_ROW_CAPACITY: usize = 128;

/// Room in a new row for the system columns added after flattening (`_dlt_load_id`, `_dlt_id`,
/// `_dlt_parent_id`, `_dlt_list_idx`, `_dlt_root_id`).
const SYSTEM_COLUMNS: usize = 5;

/// The child lists of a row: child table name and the list's elements.
type ChildLists<'n> = Vec<(Arc<str>, &'n [Node<'n>])>;

impl<'a> Normalizer<'a> {
    /// A normalizer that evolves `schema` and writes files into `dir`.
    pub fn new(schema: &'a mut Schema, naming: Naming, load_id: &str, dir: &Path) -> Self {
        let has_json_columns = has_json_columns(schema);
        Normalizer {
            schema,
            naming,
            load_id: load_id.to_string(),
            dir: dir.to_path_buf(),
            writers: IndexMap::default(),
            roots: HashMap::new(),
            specs: HashMap::new(),
            names: foldhash::HashMap::default(),
            root_prefix: Arc::from(""),
            name_sources: foldhash::HashMap::default(),
            collisions: foldhash::HashSet::default(),
            name_collisions: Vec::new(),
            frozen: false,
            frozen_copy: false,
            file_prefix: String::new(),
            child_names: foldhash::HashMap::default(),
            child_sources: foldhash::HashMap::default(),
            shared_tables: foldhash::HashSet::default(),
            full_paths: foldhash::HashMap::default(),
            system_names: SystemNames::default(),
            widest_row: 0,
            has_json_columns,
        }
    }

    /// A worker that writes files named `<table>.<worker>.<n>.parquet` and never changes
    /// `schema` (a copy of the main one): [`Self::push_item`] returns `false` instead.
    pub fn frozen_worker(
        schema: &'a mut Schema,
        naming: Naming,
        load_id: &str,
        dir: &Path,
        worker: &str,
    ) -> Self {
        let mut normalizer = Normalizer::new(schema, naming, load_id, dir);
        normalizer.frozen = true;
        normalizer.frozen_copy = true;
        normalizer.file_prefix = format!("{worker}.");
        normalizer
    }

    /// Names the files this normalizer opens from now on `<table>.<prefix><n>.parquet`.
    pub fn set_file_prefix(&mut self, prefix: &str) {
        self.file_prefix = prefix.to_string();
        for writer in self.writers.values_mut() {
            writer.set_file_prefix(prefix);
        }
    }

    /// Registers a root table already in the (copied) schema, for a frozen worker.
    fn prepare_root_frozen(&mut self, root: &str, spec: &TableSpec) -> Result<String> {
        let frozen = std::mem::replace(&mut self.frozen, false);
        let name = self.prepare_root(root, spec);
        self.frozen = frozen;
        name
    }

    /// Closes the files written so far and returns them; later rows go to new files. Lets the
    /// main normalizer interleave its files with workers' in item order.
    pub fn end_segment(&mut self) -> Result<Vec<TableFile>> {
        let mut files = Vec::new();
        for writer in self.writers.values_mut() {
            files.extend(writer.end_segment()?);
        }
        Ok(files)
    }

    /// Column names that two different keys gave (`userId` and `user_id`), each with the first
    /// two such keys (nested keys as `parent_column.key`): a row with both keeps the last value;
    /// and child table names that two different lists gave (as `parent_table.column`).
    pub fn name_collisions(&self) -> &[(String, String, String)] {
        &self.name_collisions
    }

    /// The normalized name of a root table given by a resource or its `table_name` hint.
    pub fn table_name(&self, raw: &str) -> String {
        self.naming.normalize_key(raw)
    }

    /// Registers a root table and its hints before its items are normalized.
    pub fn prepare_root(&mut self, raw_table: &str, spec: &TableSpec) -> Result<String> {
        let name = self.table_name(raw_table);
        if self.roots.contains_key(&name) {
            return Ok(name);
        }
        let naming = self.naming;
        let table = self
            .schema
            .tables
            .entry(name.clone())
            .or_insert_with(|| Table::new(name.clone()));
        table.resource = Some(spec.resource.clone());
        table.write_disposition = spec.write_disposition;
        table.merge_strategy = (spec.write_disposition == WriteDisposition::Merge)
            .then(|| spec.merge_strategy.unwrap_or_default());
        // Like dlt's `x-normalizer` table hint: a run without the hint keeps the stored one.
        if spec.max_table_nesting.is_some() {
            table.max_nesting = spec.max_table_nesting;
        }
        let max_nesting = table.max_nesting.unwrap_or(DEFAULT_MAX_NESTING);
        let primary_key: Vec<String> = spec
            .primary_key
            .iter()
            .map(|k| naming.normalize_path(k))
            .collect();
        let merge_key: Vec<String> = spec
            .merge_key
            .iter()
            .map(|k| naming.normalize_path(k))
            .collect();
        // Typed column hints become columns up front; the other hints wait for the column.
        for (raw, hint) in &spec.columns {
            let col = naming.normalize_path(raw);
            if let Some(data_type) = hint.data_type {
                let column = table
                    .columns
                    .entry(col.clone())
                    .or_insert_with(|| Column::new(col.clone(), data_type));
                if column.data_type != data_type {
                    // The column exists in the destination with its type: it keeps it.
                    type_hint_on_existing_column(&name, column, data_type, self.frozen_copy)?;
                }
                column.hinted = true;
            }
        }
        table.replace_strategy = spec.replace_strategy;
        let scd2 = spec
            .scd2
            .as_ref()
            .filter(|_| table.merge_strategy == Some(MergeStrategy::Scd2));
        if let Some(options) = scd2 {
            add_validity_columns(table, options, &naming);
            table.boundary_timestamp = options.boundary_timestamp.clone();
        }
        for column in table.columns.values_mut() {
            apply_hints(column, spec, &primary_key, &merge_key, &naming);
        }
        let strategy = table.merge_strategy;
        let merge = spec.write_disposition == WriteDisposition::Merge && !spec.appends_merges;
        // scd2 hashes the item into `_dlt_id` unless a column of the data is the version.
        let hashes_rows = scd2.is_some_and(|o| o.row_version_column_name.is_none());
        self.has_json_columns = has_json_columns(self.schema);
        let has_root_key_children = self
            .schema
            .descendants(&name)
            .iter()
            .any(|t| t.columns.contains_key("_dlt_root_id"));
        let settings = RootSettings {
            name: Arc::from(name.as_str()),
            max_nesting,
            // As dlt: merged tables, `root_key`, or child tables that already carry the root key.
            propagate_root_key: spec.root_key
                || (merge && strategy != Some(MergeStrategy::Scd2))
                || has_root_key_children,
            row_id: match strategy {
                Some(MergeStrategy::Upsert) | Some(MergeStrategy::InsertOnly) if merge => {
                    RowIdKind::KeyHash
                }
                Some(MergeStrategy::Scd2) if merge && hashes_rows => RowIdKind::ContentHash,
                _ => RowIdKind::Random,
            },
            primary_key,
        };
        if settings.propagate_root_key {
            crate::schema::dlt_format::record_root_key_propagation(self.schema, &name);
        }
        self.roots.insert(name.clone(), Arc::new(settings));
        self.specs.insert(name.clone(), spec.clone());
        Ok(name)
    }

    /// Normalizes one item of root table `root` (a name returned by [`Self::prepare_root`]).
    /// Returns `false`, writing nothing, when a frozen normalizer would have to change the schema.
    pub fn push_item(&mut self, root: &str, item: Value, location: &str) -> Result<bool> {
        self.push_node(root, &Node::from_value(&item), location)
    }

    /// [`Self::push_item`] for an item parsed as a [`Node`].
    pub fn push_node(&mut self, root: &str, item: &Node<'_>, location: &str) -> Result<bool> {
        let settings = self
            .roots
            .get(root)
            .cloned()
            .ok_or_else(|| Error::Config(format!("table {root} was not prepared")))?;
        let entries = match item {
            Node::Object(entries) => Entries::Object(entries),
            other => Entries::One("value", other),
        };
        let content_hash = (settings.row_id == RowIdKind::ContentHash).then(|| row_hash(item));
        let root_name = settings.name.clone();
        let (mut values, lists) = self.flatten(&root_name, entries, settings.max_nesting as i64);
        if values.iter().any(|(name, _)| name.is_empty()) {
            return Err(self.empty_name_error(&root_name, location));
        }
        let (user_id, id_place) = user_row_id(&values);
        let row_id: Arc<str> = match user_id {
            Some(id) => id,
            None => match settings.row_id {
                RowIdKind::Random => random_row_id(),
                RowIdKind::ContentHash => content_hash.unwrap_or_else(random_row_id),
                RowIdKind::KeyHash => key_hash(&values, &settings.primary_key, &self.load_id).ok_or_else(|| {
                    Error::Config(format!(
                        "{location}table {root}: primary key {:?} missing in item (needed for the row id of upsert/insert-only)",
                        settings.primary_key
                    ))
                })?,
            },
        }
        .into();
        // As dlt assigns the load id into the row: an item's own `_dlt_load_id` is replaced in
        // its place.
        match values.iter().position(|(k, _)| &**k == "_dlt_load_id") {
            Some(place) => values[place].1 = RowValue::LoadId,
            None => values.push((self.system_names.load_id.clone(), RowValue::LoadId)),
        }
        set_row_id(&mut values, id_place, &self.system_names.row_id, &row_id);
        // Room for a few child rows, so most items never grow the vector.
        let mut rows = Vec::with_capacity(8);
        rows.push(PendingRow {
            table: root_name.clone(),
            parent: None,
            values,
        });
        let root_id = settings.propagate_root_key.then_some(&row_id);
        for (child, list) in lists {
            self.collect_list(
                &mut rows,
                &root_name,
                &child,
                list,
                &row_id,
                root_id,
                settings.max_nesting as i64 - 1,
                location,
            )?;
        }
        if self.frozen {
            return self.write_frozen(rows, location);
        }
        for row in rows {
            self.write_row(&row.table, row.parent.as_deref(), row.values, location)?;
        }
        self.flush_full()?;
        Ok(true)
    }

    /// Writes an item's rows in a frozen worker, or nothing (`false`) when one would change the
    /// schema. Every value is looked up and coerced once, before any row is written.
    fn write_frozen(&mut self, rows: Vec<PendingRow<'_>>, location: &str) -> Result<bool> {
        let mut resolved = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.resolve(row) {
                Resolved::Cells(cells) => resolved.push(Some(cells)),
                Resolved::Fits => resolved.push(None),
                Resolved::DoesNotFit => return Ok(false),
            }
        }
        for (row, cells) in rows.iter().zip(resolved) {
            match cells {
                Some(cells) => self.write_cells(&row.table, cells, location)?,
                None => self.write_row(
                    &row.table,
                    row.parent.as_deref(),
                    row.values.clone(),
                    location,
                )?,
            }
        }
        self.flush_full()?;
        Ok(true)
    }

    /// A row's values as cells of the columns its table's writer already has; when some value
    /// needs more than that (a column the writer has not seen, a coercion to JSON text), whether
    /// the row fits the schema at all.
    fn resolve<'r>(&self, row: &'r PendingRow<'_>) -> Resolved<'r> {
        let slow = || {
            if self.fits(row) {
                Resolved::Fits
            } else {
                Resolved::DoesNotFit
            }
        };
        let Some(writer) = self.writers.get(&*row.table) else {
            return slow();
        };
        let mut cells = Vec::with_capacity(row.values.len());
        for (column, value) in &row.values {
            if matches!(value, RowValue::Item(Node::Null)) {
                continue;
            }
            let Some((index, data_type, _)) = writer.lookup(column) else {
                return slow();
            };
            match ready_cell(data_type, value) {
                Some(cell) => cells.push((index, cell)),
                // As in `fits`: an item value the column's type cannot take needs a variant.
                None if matches!(value, RowValue::Item(_)) => return Resolved::DoesNotFit,
                None => return slow(),
            }
        }
        Resolved::Cells(cells)
    }

    /// Writes a row resolved by [`Self::resolve`].
    fn write_cells(
        &mut self,
        table: &str,
        cells: Vec<(usize, ReadyCell<'_>)>,
        location: &str,
    ) -> Result<()> {
        let writer = self
            .writers
            .get_mut(table)
            .ok_or_else(|| Error::Config(format!("no writer for table {table}")))?;
        for (index, cell) in cells {
            set_cell(writer, index, cell, &self.load_id);
        }
        end_row(writer, table, location)
    }

    /// The rows of a list's elements (and of their own lists), parents before children.
    #[allow(clippy::too_many_arguments)]
    fn collect_list<'n>(
        &mut self,
        rows: &mut Vec<PendingRow<'n>>,
        parent: &Arc<str>,
        table: &Arc<str>,
        list: &'n [Node<'n>],
        parent_id: &Arc<str>,
        root_id: Option<&Arc<str>>,
        lvl: i64,
        location: &str,
    ) -> Result<()> {
        if table == parent {
            // A list under a key that normalizes to nothing (`"__": [...]`): dlt puts its rows
            // in the parent table itself, and its load fails on their missing load id.
            return Err(self.empty_name_error(parent, location));
        }
        let mut id_source = String::with_capacity(64);
        for (idx, element) in list.iter().enumerate() {
            // A list inside a list becomes a row `{"list": inner}` one level deeper, as in dlt.
            let (entries, row_lvl) = match element {
                Node::Object(entries) => (Entries::Object(entries), lvl),
                Node::Array(_) => (Entries::One("list", element), lvl - 1),
                scalar => (Entries::One("value", scalar), lvl),
            };
            let (mut values, lists) = self.flatten(table, entries, row_lvl);
            if values.iter().any(|(name, _)| name.is_empty()) {
                return Err(self.empty_name_error(table, location));
            }
            let names = &self.system_names;
            let (user_id, id_place) = user_row_id(&values);
            // The root key is propagated to every child row, also one with its own `_dlt_id`.
            if let Some(root_id) = root_id {
                values.push((names.root_id.clone(), RowValue::Text(root_id.clone())));
            }
            let row_id: Arc<str> = match user_id {
                Some(id) => id.into(),
                None => {
                    use std::fmt::Write;
                    id_source.clear();
                    let _ = write!(id_source, "{parent_id}_{table}_{idx}");
                    values.push((names.parent_id.clone(), RowValue::Text(parent_id.clone())));
                    values.push((names.list_idx.clone(), RowValue::Int(idx as i64)));
                    digest128(&id_source).into()
                }
            };
            set_row_id(&mut values, id_place, &names.row_id, &row_id);
            rows.push(PendingRow {
                table: table.clone(),
                parent: Some(parent.clone()),
                values,
            });
            for (child, list) in lists {
                self.collect_list(
                    rows,
                    table,
                    &child,
                    list,
                    &row_id,
                    root_id,
                    row_lvl - 1,
                    location,
                )?;
            }
        }
        Ok(())
    }

    /// The error for a key that normalizes to an empty name (`"__"`), which dlt fails on too
    /// (a column without a name, or a list whose rows would go into its own table).
    fn empty_name_error(&self, table: &str, location: &str) -> Error {
        let root = self.schema.root_of(table);
        let resource = self
            .schema
            .tables
            .get(root)
            .and_then(|t| t.resource.clone());
        Error::Resource {
            resource: resource.unwrap_or_else(|| root.to_string()),
            message: format!(
                "{location}table {table}: a key that normalizes to an empty name (such as \"__\") names no column and no child table; rename the key"
            ),
        }
    }

    /// Whether a row can be written without changing the schema: its table and every column
    /// exist and every value has the column's type (no new column, no variant).
    fn fits(&self, row: &PendingRow<'_>) -> bool {
        let writer = self.writers.get(&*row.table);
        let table = self.schema.tables.get(&*row.table);
        if writer.is_none() && table.is_none() {
            return false;
        }
        row.values.iter().all(|(column, value)| {
            if matches!(value, RowValue::Item(Node::Null)) {
                return true;
            }
            let data_type = writer
                .and_then(|w| w.lookup(column))
                .map(|(_, t, _)| t)
                .or_else(|| {
                    table
                        .and_then(|t| t.columns.get(&**column))
                        .map(|c| c.data_type)
                });
            match (data_type, value) {
                (None, _) => false,
                (Some(DataType::Text), RowValue::Text(_) | RowValue::LoadId) => true,
                (Some(DataType::Bigint), RowValue::Int(_)) => true,
                (Some(t), RowValue::Item(node)) => {
                    matches!((t, node), (DataType::Text, Node::Str(_)))
                        || coerce_node(node, t).is_some()
                }
                (Some(t), other) => coerce(&other.to_json(&self.load_id), t).is_some(),
            }
        })
    }

    /// Flattens an object into columns (nested objects joined with `__`) and child lists,
    /// in dlt's order: the object's own values first, then nested objects, last seen first.
    fn flatten<'n>(
        &mut self,
        table: &Arc<str>,
        entries: Entries<'n>,
        lvl: i64,
    ) -> (RowValues<'n>, ChildLists<'n>) {
        let mut out = Flattened {
            // Nested objects add columns: start from the widest row seen, not this object's size.
            values: Vec::with_capacity(self.widest_row.max(entries.len() + SYSTEM_COLUMNS)),
            lists: Vec::new(),
            nested: Vec::new(),
        };
        let root_prefix = self.root_prefix.clone();
        match entries {
            Entries::Object(object) => out.nested.push((object, root_prefix, lvl)),
            Entries::One(key, node) => {
                self.flatten_entry(table, &root_prefix, key, node, lvl, &mut out)
            }
        }
        while let Some((object, prefix, lvl)) = out.nested.pop() {
            for (key, node) in object {
                self.flatten_entry(table, &prefix, key, node, lvl, &mut out);
            }
        }
        let Flattened {
            mut values,
            mut lists,
            ..
        } = out;
        // Capped, so one very wide item does not make every later row (child rows too)
        // allocate that much.
        self.widest_row = self
            .widest_row
            .max((values.len() + SYSTEM_COLUMNS).min(MAX_ROW_CAPACITY));
        if !self.collisions.is_empty() {
            keep_last_of_each_name(&mut values, |name| self.collisions.contains(name));
            keep_last_of_each_name(&mut lists, |_| true);
        }
        (values, lists)
    }

    /// One entry of an object being flattened: a value, a nested object for later, or a list.
    fn flatten_entry<'n>(
        &mut self,
        table: &Arc<str>,
        prefix: &Arc<str>,
        key: &str,
        node: &'n Node<'n>,
        lvl: i64,
        out: &mut Flattened<'n>,
    ) {
        let name = self.column_name(prefix, key);
        match node {
            Node::Object(child) if !self.is_json_column(table, &name, lvl) => {
                if name == *prefix {
                    // A key with no name (`__`) opens an object whose keys join the enclosing
                    // one's: a key in both keeps the last value, as in dlt's dict.
                    self.collisions.insert(name.clone());
                }
                out.nested.push((child, name, lvl - 1));
            }
            Node::Array(list) if !self.is_json_column(table, &name, lvl) => {
                out.lists.push((self.child_table_name(table, &name), list));
            }
            node => out.values.push((name, RowValue::Item(node))),
        }
    }

    /// The name of the child table holding list `column` of `table`.
    fn child_table_name(&mut self, table: &Arc<str>, column: &Arc<str>) -> Arc<str> {
        if let Some(name) = self
            .child_names
            .get(table)
            .and_then(|per_table| per_table.get(column))
        {
            return name.clone();
        }
        let name = self.shortened(&[table, column]);
        self.note_child_table(&name, table, column);
        let per_table = self.child_names.entry(table.clone()).or_default();
        if per_table.len() < 10_000 {
            per_table.insert(column.clone(), name.clone());
        }
        name
    }

    /// Reports a child table name that two different lists give (`@: [[…]]` and `a: {list:
    /// […]}` both make `<root>__a__list`): its rows then have parents in two tables, as in dlt.
    fn note_child_table(&mut self, name: &Arc<str>, table: &Arc<str>, column: &Arc<str>) {
        let schema_parent = self
            .schema
            .tables
            .get(&**name)
            .and_then(|t| t.parent.as_deref())
            .filter(|p| *p != &**table);
        let first = match self.child_sources.get(name) {
            Some((t, c)) if !(t == table && c == column) => dotted_key(t, c),
            Some(_) => return,
            None => match schema_parent {
                Some(parent) => format!("a list of {parent}"),
                None => {
                    self.child_sources
                        .insert(name.clone(), (table.clone(), column.clone()));
                    return;
                }
            },
        };
        if self.shared_tables.insert(name.clone()) {
            let second = dotted_key(table, column);
            tracing::warn!(
                "lists {first:?} and {second:?} both become table {name:?}: its rows have parents in two tables, as in dlt"
            );
            self.name_collisions.push((name.to_string(), first, second));
        }
    }

    /// The full column name of `key` inside the object at `prefix` ("" at the top).
    fn column_name(&mut self, prefix: &Arc<str>, key: &str) -> Arc<str> {
        let name = self.column_name_of(prefix, key);
        // Inside two objects that share a name (`userName: {x}`, `user_name: {x}`), the
        // columns share names too.
        if !self.collisions.is_empty()
            && self.collisions.contains(prefix)
            && !self.collisions.contains(&name)
        {
            self.collisions.insert(name.clone());
        }
        name
    }

    fn column_name_of(&mut self, prefix: &Arc<str>, key: &str) -> Arc<str> {
        if let Some(name) = self.names.get(prefix).and_then(|m| m.get(key)) {
            return name.clone();
        }
        let norm_key = self.normalize_key(key);
        let name: Arc<str> = if prefix.is_empty() {
            Arc::from(norm_key)
        } else {
            self.shortened(&[prefix, &norm_key])
        };
        // Two different keys with one name (`userId`, `user_id`): the row keeps the last value,
        // as dlt's does, and the user is told.
        match self.name_sources.get(&name) {
            Some((p, k)) if !(self.collisions.contains(&name) || p == prefix && k == key) => {
                let (first, second) = (dotted_key(p, k), dotted_key(prefix, key));
                tracing::warn!(
                    "keys {first:?} and {second:?} both become column {name:?}: a row with both keeps the value of the last, as dlt does"
                );
                self.collisions.insert(name.clone());
                self.name_collisions.push((name.to_string(), first, second));
            }
            Some(_) => {}
            None if self.name_sources.len() < 100_000 => {
                self.name_sources
                    .insert(name.clone(), (prefix.clone(), key.to_string()));
            }
            None => {}
        }
        let per_prefix = self.names.entry(prefix.clone()).or_default();
        if per_prefix.len() < 10_000 {
            per_prefix.insert(key.to_string(), name.clone());
        }
        name
    }

    /// The name of the path `fragments` (names this normalizer gave, and a new fragment):
    /// the fragments' unshortened paths joined and shortened once, as dlt's
    /// `shorten_fragments(*path, key)` does.
    fn shortened(&mut self, fragments: &[&str]) -> Arc<str> {
        let full: Vec<&str> = fragments
            .iter()
            .map(|f| self.full_paths.get(*f).map_or(*f, |p| p.as_ref()))
            .collect();
        let joined = full
            .iter()
            .filter(|f| !f.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(crate::naming::PATH_SEPARATOR);
        let name: Arc<str> = Arc::from(self.naming.shorten_fragments(&full));
        if *name != *joined && self.full_paths.len() < 100_000 {
            self.full_paths.insert(name.clone(), Arc::from(joined));
        }
        name
    }

    fn normalize_key(&self, key: &str) -> String {
        if key.trim().is_empty() {
            EMPTY_KEY.to_string()
        } else {
            self.naming.normalize_key(key)
        }
    }

    /// [`Self::normalize_key`], always breaking the key into a path.
    fn normalize_path_key(&self, key: &str) -> String {
        if key.trim().is_empty() {
            EMPTY_KEY.to_string()
        } else {
            self.naming.normalize_path(key)
        }
    }

    /// dlt's `is_nested_type`: too deep, or the column is already JSON.
    fn is_json_column(&self, table: &str, column: &str, lvl: i64) -> bool {
        if lvl <= 0 {
            return true;
        }
        if !self.has_json_columns {
            return false;
        }
        if let Some((_, data_type, _)) = self.writers.get(table).and_then(|w| w.lookup(column)) {
            return data_type == DataType::Json;
        }
        self.schema
            .tables
            .get(table)
            .and_then(|t| t.columns.get(column))
            .is_some_and(|c| c.data_type == DataType::Json)
    }

    fn write_row(
        &mut self,
        table: &str,
        parent: Option<&str>,
        values: RowValues<'_>,
        location: &str,
    ) -> Result<()> {
        if !self.writers.contains_key(table) {
            self.open_writer(table, parent);
        }
        // Fast path: columns this package already wrote, values of their type; the rest (new
        // columns, variants) after, in order.
        let mut slow: Vec<(Arc<str>, Value)> = Vec::new();
        let load_id = self.load_id.as_str();
        if let Some(writer) = self.writers.get_mut(table) {
            for (column, value) in values {
                if matches!(value, RowValue::Item(Node::Null)) {
                    continue;
                }
                if slow.is_empty() {
                    let ready = writer.lookup(&column).and_then(|(index, data_type, _)| {
                        Some((index, ready_cell(data_type, &value)?))
                    });
                    if let Some((index, cell)) = ready {
                        set_cell(writer, index, cell, load_id);
                        continue;
                    }
                }
                slow.push((column, value.to_json(load_id)));
            }
        }
        for (column, value) in slow {
            self.write_value(table, &column, value, false, location)?;
        }
        match self.writers.get_mut(table) {
            Some(writer) => end_row(writer, table, location),
            None => Ok(()),
        }
    }

    /// Starts writing `table` in this package (creating it in the schema when new); its NOT NULL
    /// columns are registered up front so every row is checked against them.
    fn open_writer(&mut self, table: &str, parent: Option<&str>) {
        if !self.schema.tables.contains_key(table) {
            let mut new_table = Table::new(table);
            new_table.parent = parent.map(str::to_string);
            if let Some(parent_table) = parent.and_then(|p| self.schema.tables.get(p)) {
                new_table.write_disposition = parent_table.write_disposition;
            }
            self.schema.tables.insert(table.to_string(), new_table);
        }
        let mut writer = TableWriter::new(table, &self.dir);
        writer.set_file_prefix(&self.file_prefix);
        if let Some(t) = self.schema.tables.get(table) {
            for column in t.columns.values().filter(|c| !c.nullable) {
                writer.column_index(&column.name, column.data_type, column.hinted, true);
            }
        }
        self.writers.insert(table.to_string(), writer);
    }

    fn write_value(
        &mut self,
        table: &str,
        column: &str,
        value: Value,
        is_variant: bool,
        location: &str,
    ) -> Result<()> {
        let existing = self
            .schema
            .tables
            .get(table)
            .and_then(|t| t.columns.get(column))
            .map(|c| (c.data_type, c.hinted, c.nullable));
        let (data_type, cell, hinted, nullable) = match existing {
            Some((data_type, hinted, nullable)) => match coerce(&value, data_type) {
                Some(cell) => (data_type, cell, hinted, nullable),
                None if hinted || is_variant || beyond_64_bits(&value, data_type) => {
                    return Err(Error::CannotCoerce {
                        location: location.to_string(),
                        table: table.to_string(),
                        column: column.to_string(),
                        data_type: data_type.name(),
                        value: preview(&value),
                    });
                }
                None => {
                    let python = python_type(&value).unwrap_or(DataType::Text);
                    let variant = self
                        .naming
                        .shorten_fragments(&[column, &format!("v_{}", python.name())]);
                    return self.write_value(table, &variant, value, true, location);
                }
            },
            None => {
                let data_type = infer_type(&value).unwrap_or(DataType::Text);
                let cell = coerce(&value, data_type).ok_or_else(|| Error::CannotCoerce {
                    location: location.to_string(),
                    table: table.to_string(),
                    column: column.to_string(),
                    data_type: data_type.name(),
                    value: preview(&value),
                })?;
                let nullable = self.add_column(table, column, data_type, is_variant);
                (data_type, cell, false, nullable)
            }
        };
        let writer = self
            .writers
            .get_mut(table)
            .ok_or_else(|| Error::Config(format!("no writer for table {table}")))?;
        let index = writer.column_index(column, data_type, hinted, !nullable);
        writer.set(index, cell);
        Ok(())
    }

    /// Adds a column to the schema with the hints that apply to it; returns whether it is nullable.
    fn add_column(
        &mut self,
        table: &str,
        column: &str,
        data_type: DataType,
        variant: bool,
    ) -> bool {
        let root = self.schema.root_of(table).to_string();
        let spec = self.specs.get(&root).cloned();
        let naming = self.naming;
        let Some(t) = self.schema.tables.get_mut(table) else {
            return true;
        };
        let mut col = Column::new(column, data_type);
        col.variant = variant;
        match column {
            "_dlt_id" => {
                col.nullable = false;
                col.unique = true;
                col.row_key = true;
            }
            "_dlt_load_id" | "_dlt_list_idx" => col.nullable = false,
            "_dlt_parent_id" => {
                col.nullable = false;
                col.parent_key = true;
            }
            "_dlt_root_id" => {
                col.nullable = false;
                col.root_key = true;
            }
            _ => {}
        }
        if !t.is_child() {
            if let (Some(spec), Some(settings)) = (&spec, self.roots.get(table)) {
                let merge_key: Vec<String> = spec
                    .merge_key
                    .iter()
                    .map(|k| naming.normalize_path(k))
                    .collect();
                apply_hints(&mut col, spec, &settings.primary_key, &merge_key, &naming);
            }
        }
        let nullable = col.nullable;
        self.has_json_columns |= data_type == DataType::Json;
        t.columns.insert(column.to_string(), col);
        nullable
    }

    fn flush_full(&mut self) -> Result<()> {
        for writer in self.writers.values_mut() {
            if writer.buffered_rows() >= writer.chunk_rows() {
                writer.flush_chunk()?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and returns the files of every table, in table order.
    pub fn finish(self) -> Result<Vec<TableFile>> {
        let mut files = Vec::new();
        for (_, writer) in self.writers {
            files.extend(writer.finish()?);
        }
        Ok(files)
    }
}

/// dlt's scd2 row hash: `digest128` of the item as JSON with keys sorted at every level,
/// leaving out top-level keys starting with `_dlt`. The whole item counts, nested lists
/// included, so a change in a child list makes a new version.
fn row_hash(item: &Node<'_>) -> String {
    let filtered = match item {
        Node::Object(entries) => Node::Object(
            entries
                .iter()
                .filter(|(k, _)| !k.starts_with("_dlt"))
                .cloned()
                .collect(),
        ),
        other => Node::Object(vec![("value".into(), other.clone())]),
    };
    digest128(&filtered.to_sorted_json())
}

/// Adds the scd2 validity columns to a root table (after the typed column hints, as dlt
/// orders them), or marks them when the table has them already.
fn add_validity_columns(table: &mut Table, options: &Scd2Options, naming: &Naming) {
    let (from, to) = options.validity_names();
    for (raw, is_from) in [(from, true), (to, false)] {
        let name = naming.normalize_path(raw);
        let column = table
            .columns
            .entry(name.clone())
            .or_insert_with(|| Column::new(name, DataType::Timestamp));
        if is_from {
            column.valid_from = true;
        } else {
            column.valid_to = true;
            column.active_record_timestamp = options.active_record_timestamp.clone();
        }
    }
}

/// Applies a root table's hints to one of its columns.
fn apply_hints(
    column: &mut Column,
    spec: &TableSpec,
    primary_key: &[String],
    merge_key: &[String],
    naming: &Naming,
) {
    if primary_key.contains(&column.name) {
        column.primary_key = true;
        column.nullable = false;
    }
    if merge_key.contains(&column.name) {
        column.merge_key = true;
        column.nullable = false;
    }
    for (raw, hint) in &spec.columns {
        if naming.normalize_path(raw) != column.name {
            continue;
        }
        if let Some(nullable) = hint.nullable {
            column.nullable = nullable;
        }
        column.hard_delete |= hint.hard_delete;
        if hint.dedup_sort.is_some() {
            column.dedup_sort = hint.dedup_sort;
        }
        if hint.precision.is_some() {
            column.precision = hint.precision;
        }
        if hint.scale.is_some() {
            column.scale = hint.scale;
        }
        if hint.timezone.is_some() {
            column.timezone = hint.timezone;
        }
    }
    if let Some(options) = spec
        .scd2
        .as_ref()
        .filter(|_| spec.merge_strategy == Some(MergeStrategy::Scd2))
    {
        let version = options
            .row_version_column_name
            .as_deref()
            .map_or_else(|| "_dlt_id".to_string(), |c| naming.normalize_path(c));
        if column.name == version {
            // As dlt: the version repeats when a deleted row comes back, so it is no key.
            column.row_version = true;
            column.nullable = false;
            column.unique = false;
            column.row_key = false;
        }
    }
}

/// A `data_type` hint for a column that already exists with another type: the column keeps its
/// type. When that type holds every value of the hinted one as it is (text holds anything, a
/// double or a decimal holds integers) a warning says so; otherwise converting would change the
/// values the hint is there to keep (`01234` in a bigint column is `1234`): an error. A parallel
/// worker's copy (`quiet`) repeats neither.
fn type_hint_on_existing_column(
    table: &str,
    column: &Column,
    hinted: DataType,
    quiet: bool,
) -> Result<()> {
    let holds_as_is = matches!(
        (column.data_type, hinted),
        (DataType::Text | DataType::Json, _)
            | (DataType::Double | DataType::Decimal, DataType::Bigint)
    );
    if holds_as_is {
        if !quiet {
            tracing::warn!(
                "table {table}, column {}: the hint data_type = {:?} does not apply: the column \
                 exists as {} and keeps that type (drop the table to re-create it with the hint)",
                column.name,
                hinted.name(),
                column.data_type.name()
            );
        }
        return Ok(());
    }
    Err(Error::Config(format!(
        "table {table}, column {}: the hint data_type = {:?} cannot apply: the column exists as \
         {}, and storing the values as {} would change them; drop the table to re-create it with \
         the hint (`highwater run --refresh drop_resources`), or remove the hint",
        column.name,
        hinted.name(),
        column.data_type.name(),
        column.data_type.name()
    )))
}

/// An integer too large for 64 bits (JSON parses it as a float): dlt fails the run on these
/// rather than storing a rounded value, and so do we.
fn beyond_64_bits(value: &Value, column_type: DataType) -> bool {
    column_type == DataType::Bigint
        && match value {
            Value::Number(n) => {
                n.as_i64().is_none()
                    && n.as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.abs() >= 9.2e18)
            }
            _ => false,
        }
}

/// A key inside the object at column prefix `prefix` ("" at the top), for messages.
fn dotted_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// As a Python dict does when a key is assigned twice: the first position, the last value.
fn keep_last_of_each_name<K: AsRef<str>, V>(
    entries: &mut Vec<(K, V)>,
    may_repeat: impl Fn(&str) -> bool,
) {
    let mut i = 0;
    while i < entries.len() {
        if may_repeat(entries[i].0.as_ref()) {
            let mut j = i + 1;
            while j < entries.len() {
                if entries[j].0.as_ref() == entries[i].0.as_ref() {
                    let (_, later) = entries.remove(j);
                    entries[i].1 = later;
                } else {
                    j += 1;
                }
            }
        }
        i += 1;
    }
}

/// The item's own `_dlt_id`, if truthy, which dlt keeps (then adding no id columns of its own),
/// and the place of a `_dlt_id` entry in the row: dlt writes its generated id there when the
/// item's value is empty, so the column keeps the item's order.
fn user_row_id(values: &RowValues<'_>) -> (Option<String>, Option<usize>) {
    let Some(place) = values.iter().position(|(k, _)| &**k == "_dlt_id") else {
        return (None, None);
    };
    let id = match &values[place].1 {
        RowValue::Item(node) if !is_truthy(node) => None,
        RowValue::Item(Node::Str(s)) => Some(s.to_string()),
        RowValue::Item(other) => Some(other.to_json()),
        _ => None,
    };
    (id, Some(place))
}

/// Puts the row id at `place` (the item's own `_dlt_id` entry) or at the end of the row.
fn set_row_id(values: &mut RowValues<'_>, place: Option<usize>, column: &Arc<str>, id: &Arc<str>) {
    match place {
        Some(place) => values[place].1 = RowValue::Text(id.clone()),
        None => values.push((column.clone(), RowValue::Text(id.clone()))),
    }
}

fn is_truthy(node: &Node<'_>) -> bool {
    match node {
        Node::Null => false,
        Node::Bool(b) => *b,
        Node::Str(s) => !s.is_empty(),
        Node::Int(i) => *i != 0,
        Node::UInt(_) => true,
        Node::Float(f) => *f != 0.0,
        Node::Array(a) => !a.is_empty(),
        Node::Object(o) => !o.is_empty(),
    }
}

/// dlt's key hash: digest of `{"pk": value, …}` with sorted keys, compact.
fn key_hash(values: &RowValues<'_>, primary_key: &[String], load_id: &str) -> Option<String> {
    let mut keys: Vec<&String> = primary_key.iter().collect();
    keys.sort();
    let mut map = Map::new();
    for key in keys {
        let (_, value) = values.iter().find(|(k, _)| **k == **key)?;
        map.insert(key.clone(), value.to_json(load_id));
    }
    Some(digest128(&Value::Object(map).to_string()))
}

/// The entries of what becomes one row: an object's, or a single value under a fixed key
/// (`value` for scalars, `list` for a list inside a list).
#[derive(Clone, Copy)]
enum Entries<'n> {
    Object(&'n [Entry<'n>]),
    One(&'static str, &'n Node<'n>),
}

impl Entries<'_> {
    fn len(&self) -> usize {
        match self {
            Entries::Object(entries) => entries.len(),
            Entries::One(..) => 1,
        }
    }
}

/// The `_dlt_*` column names, shared by every row instead of allocated for each.
struct SystemNames {
    load_id: Arc<str>,
    row_id: Arc<str>,
    root_id: Arc<str>,
    parent_id: Arc<str>,
    list_idx: Arc<str>,
}

impl Default for SystemNames {
    fn default() -> Self {
        SystemNames {
            load_id: Arc::from("_dlt_load_id"),
            row_id: Arc::from("_dlt_id"),
            root_id: Arc::from("_dlt_root_id"),
            parent_id: Arc::from("_dlt_parent_id"),
            list_idx: Arc::from("_dlt_list_idx"),
        }
    }
}

#[cfg(test)]
mod tests;
