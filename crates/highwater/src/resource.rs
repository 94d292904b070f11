//! Resources (named streams of items), sources (groups of resources) and their hints.

use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::incremental::{Incremental, IncrementalView};
use crate::schema::{DataType, MergeStrategy, ReplaceStrategy, SortOrder, WriteDisposition};

/// One thing a resource yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// One JSON value (normally an object; anything else is wrapped as `{"value": …}`).
    Json(Value),
    /// A page of JSON values.
    Page(Vec<Value>),
    /// A batch of rows in Arrow's columnar form; loaded without a detour through JSON.
    Arrow(arrow::record_batch::RecordBatch),
    /// The text of one JSON value, not parsed yet, with its place (`PATH:LINE`). Extract passes
    /// it through untouched unless it must look inside (incremental, table-name dispatch).
    RawJson {
        /// The JSON text (one line of a JSON Lines file).
        bytes: Vec<u8>,
        /// The file it was read from.
        file: Arc<str>,
        /// The 1-based line in that file.
        line: u64,
    },
    /// Whole lines of a JSON Lines file, each one JSON value, not parsed yet: `RawJson` for many
    /// lines at once, so a large file costs no allocation per line. Blank lines are skipped but
    /// counted. [`Item::json_lines`] makes one.
    RawJsonLines {
        /// The text: complete lines, each ending in `\n` (the last one may lack it).
        bytes: Vec<u8>,
        /// Where each line of `bytes` ends (one past its `\n`), found by whoever made the item:
        /// a source reading on its own thread then takes that scan off extract's. Empty to
        /// leave it to extract.
        line_ends: Vec<usize>,
        /// The file it was read from.
        file: Arc<str>,
        /// The 1-based line in that file of the first line of `bytes`.
        first_line: u64,
    },
    /// A JSON value with the place it came from, for error messages (`PATH:LINE`).
    Located {
        /// The value.
        value: Value,
        /// The file it was read from.
        file: Arc<str>,
        /// The 1-based line in that file.
        line: u64,
    },
}

impl Item {
    /// A block of whole JSON Lines (see [`Item::RawJsonLines`]), its line ends found here.
    pub fn json_lines(bytes: Vec<u8>, file: Arc<str>, first_line: u64) -> Item {
        Item::RawJsonLines {
            line_ends: line_ends(&bytes),
            bytes,
            file,
            first_line,
        }
    }
}

/// Where each line of `bytes` ends: one past each `\n`, and the end of a last line without one.
pub(crate) fn line_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends: Vec<usize> = memchr::memchr_iter(b'\n', bytes).map(|i| i + 1).collect();
    if ends.last().copied().unwrap_or(0) < bytes.len() {
        ends.push(bytes.len());
    }
    ends
}

impl From<Value> for Item {
    fn from(value: Value) -> Self {
        match value {
            Value::Array(values) => Item::Page(values),
            value => Item::Json(value),
        }
    }
}

/// A function from an item to the name of its table.
pub type TableNameFn = Arc<dyn Fn(&Value) -> Result<String> + Send + Sync>;

/// The table an item goes to: fixed, or computed from the item (dispatch).
#[derive(Clone)]
pub enum TableName {
    /// Every item goes to this table.
    Static(String),
    /// The table is a function of the item, e.g. one table per event type.
    Dynamic(TableNameFn),
}

impl std::fmt::Debug for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableName::Static(name) => write!(f, "Static({name:?})"),
            TableName::Dynamic(_) => write!(f, "Dynamic(<fn>)"),
        }
    }
}

impl TableName {
    /// Dispatches on the value of `field` in each item (the pipeline file's `"{field}"`).
    pub fn from_field(field: impl Into<String>) -> Self {
        let field = field.into();
        TableName::Dynamic(Arc::new(move |item: &Value| match item.get(&field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            _ => Err(Error::Config(format!(
                "table_name: item has no non-empty field {field:?} to take the table name from"
            ))),
        }))
    }

    /// Parses the pipeline file's form: `"{field}"` dispatches, anything else is a fixed name.
    pub fn parse(spec: &str) -> Self {
        match spec.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(field) if !field.is_empty() && !field.contains(['{', '}']) => {
                TableName::from_field(field)
            }
            _ => TableName::Static(spec.to_string()),
        }
    }
}

/// Hints for one column.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ColumnHint {
    /// The column's type; values that do not fit are errors.
    pub data_type: Option<DataType>,
    /// `Some(false)` makes the column NOT NULL.
    pub nullable: Option<bool>,
    /// Decimal digits, or fractional digits of a timestamp.
    pub precision: Option<u32>,
    /// Decimal scale.
    pub scale: Option<u32>,
    /// `Some(false)` for a timestamp without time zone (`TIMESTAMP` rather than `TIMESTAMPTZ`).
    pub timezone: Option<bool>,
    /// On merge, rows with a true (or non-null) value are deleted.
    pub hard_delete: bool,
    /// On merge, which duplicate of a key survives.
    pub dedup_sort: Option<SortOrder>,
}

impl ColumnHint {
    /// `self` with the fields it leaves unset taken from `base` (as dlt merges column hints).
    pub fn merged_over(&self, base: &ColumnHint) -> ColumnHint {
        ColumnHint {
            data_type: self.data_type.or(base.data_type),
            nullable: self.nullable.or(base.nullable),
            precision: self.precision.or(base.precision),
            scale: self.scale.or(base.scale),
            timezone: self.timezone.or(base.timezone),
            hard_delete: self.hard_delete || base.hard_delete,
            dedup_sort: self.dedup_sort.or(base.dedup_sort),
        }
    }
}

/// The options of the `scd2` merge strategy, with dlt's names. Unset options take dlt's
/// defaults: validity columns `_dlt_valid_from` / `_dlt_valid_to`, active versions marked by a
/// `NULL` end, the load's creation time as boundary, the row hash in `_dlt_id` as version.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Scd2Options {
    /// The columns holding the start and the end of each version's validity.
    pub validity_column_names: Option<(String, String)>,
    /// The end of validity that marks active versions instead of `NULL` (ISO-8601, e.g.
    /// `9999-12-31`): queries can then use `BETWEEN` without a `NULL` case.
    pub active_record_timestamp: Option<String>,
    /// The time a load closes the versions it retires and opens the ones it inserts (ISO-8601);
    /// the load's creation time when unset. Lets a backfill date the versions it writes.
    pub boundary_timestamp: Option<String>,
    /// A column of the data that tells versions apart, instead of the hash of the whole item
    /// in `_dlt_id` (a change elsewhere in the item then makes no new version).
    pub row_version_column_name: Option<String>,
}

impl Scd2Options {
    /// Names the validity columns (default `_dlt_valid_from`, `_dlt_valid_to`).
    pub fn validity_column_names(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.validity_column_names = Some((from.into(), to.into()));
        self
    }

    /// Marks active versions with this end of validity instead of `NULL`.
    pub fn active_record_timestamp(mut self, timestamp: impl Into<String>) -> Self {
        self.active_record_timestamp = Some(timestamp.into());
        self
    }

    /// Closes and opens versions at this time instead of the load's creation time.
    pub fn boundary_timestamp(mut self, timestamp: impl Into<String>) -> Self {
        self.boundary_timestamp = Some(timestamp.into());
        self
    }

    /// Tells versions apart by this column of the data instead of the row hash.
    pub fn row_version_column_name(mut self, column: impl Into<String>) -> Self {
        self.row_version_column_name = Some(column.into());
        self
    }

    /// The validity column names as given (not normalized yet).
    pub fn validity_names(&self) -> (&str, &str) {
        match &self.validity_column_names {
            Some((from, to)) => (from, to),
            None => ("_dlt_valid_from", "_dlt_valid_to"),
        }
    }

    /// Checks the options; errors name the resource and the option.
    pub fn validate(&self, resource: &str) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("resource {resource}: {what}")));
        for (option, value) in [
            ("active_record_timestamp", &self.active_record_timestamp),
            ("boundary_timestamp", &self.boundary_timestamp),
        ] {
            if let Some(text) = value {
                if crate::timeparse::parse_timestamp_or_date(text.trim()).is_none() {
                    return bad(format!(
                        "scd2 {option} {text:?} is not an ISO-8601 date or timestamp such as \"9999-12-31\" or \"2024-01-01T00:00:00Z\""
                    ));
                }
            }
        }
        let (from, to) = self.validity_names();
        if from.trim().is_empty() || to.trim().is_empty() || from == to {
            return bad(format!(
                "scd2 validity_column_names [{from:?}, {to:?}] must be two different, non-empty names"
            ));
        }
        if let Some(version) = &self.row_version_column_name {
            if version.trim().is_empty() || version == from || version == to {
                return bad(format!(
                    "scd2 row_version_column_name {version:?} must name a column of the data, not a validity column"
                ));
            }
        }
        Ok(())
    }
}

/// Hints of a resource; `None` means "not set" so run-time hints can override resource hints.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Table name; the resource name when unset.
    pub table_name: Option<TableName>,
    /// Write disposition; `append` when unset.
    pub write_disposition: Option<WriteDisposition>,
    /// Merge strategy; `delete-insert` when unset.
    pub merge_strategy: Option<MergeStrategy>,
    /// Primary key columns (names as in the data; normalized like any key).
    pub primary_key: Option<Vec<String>>,
    /// Merge key columns.
    pub merge_key: Option<Vec<String>>,
    /// Column hints by column name.
    pub columns: IndexMap<String, ColumnHint>,
    /// Nesting levels that become child tables or flattened columns.
    pub max_table_nesting: Option<usize>,
    /// How a `replace` swaps the rows; the pipeline's strategy when unset.
    pub replace_strategy: Option<ReplaceStrategy>,
    /// Options of the `scd2` merge strategy.
    pub scd2: Option<Scd2Options>,
}

impl Hints {
    /// `self` with every hint set in `overrides` replaced by it.
    pub fn overridden_by(&self, overrides: &Hints) -> Hints {
        let mut columns = self.columns.clone();
        for (name, hint) in &overrides.columns {
            columns.insert(name.clone(), hint.clone());
        }
        Hints {
            table_name: overrides
                .table_name
                .clone()
                .or_else(|| self.table_name.clone()),
            write_disposition: overrides.write_disposition.or(self.write_disposition),
            merge_strategy: overrides.merge_strategy.or(self.merge_strategy),
            primary_key: overrides
                .primary_key
                .clone()
                .or_else(|| self.primary_key.clone()),
            merge_key: overrides
                .merge_key
                .clone()
                .or_else(|| self.merge_key.clone()),
            columns,
            max_table_nesting: overrides.max_table_nesting.or(self.max_table_nesting),
            replace_strategy: overrides.replace_strategy.or(self.replace_strategy),
            scd2: overrides.scd2.clone().or_else(|| self.scd2.clone()),
        }
    }
}

/// What a running resource can see and change: its incremental and its state.
///
/// Cloning is cheap; clones share the same state, so an iterator can keep one.
#[derive(Clone)]
pub struct ResourceContext {
    pub(crate) resource: String,
    pub(crate) incremental: Option<IncrementalView>,
    pub(crate) resource_state: Arc<Mutex<Value>>,
    pub(crate) source_state: Arc<Mutex<Value>>,
}

impl ResourceContext {
    /// The resource's name.
    pub fn resource_name(&self) -> &str {
        &self.resource
    }

    /// The live incremental of the resource, if it has one.
    pub fn incremental(&self) -> Option<&IncrementalView> {
        self.incremental.as_ref()
    }

    /// Reads or changes the resource-scoped state (a JSON object committed with the data).
    pub fn with_resource_state<T>(
        &self,
        f: impl FnOnce(&mut serde_json::Map<String, Value>) -> T,
    ) -> T {
        with_object(&self.resource_state, f)
    }

    /// Reads or changes the source-scoped state (a JSON object committed with the data).
    pub fn with_source_state<T>(
        &self,
        f: impl FnOnce(&mut serde_json::Map<String, Value>) -> T,
    ) -> T {
        with_object(&self.source_state, f)
    }
}

fn with_object<T>(
    cell: &Mutex<Value>,
    f: impl FnOnce(&mut serde_json::Map<String, Value>) -> T,
) -> T {
    let mut guard = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !guard.is_object() {
        *guard = Value::Object(serde_json::Map::new());
    }
    match &mut *guard {
        Value::Object(map) => f(map),
        _ => unreachable!("replaced by an object above"),
    }
}

/// The stream of items a resource produces.
pub type ItemIter = Box<dyn Iterator<Item = Result<Item>> + Send>;

type Producer = Box<dyn FnMut(ResourceContext) -> Result<ItemIter> + Send>;

/// A named stream of items with hints.
pub struct Resource {
    pub(crate) name: String,
    pub(crate) hints: Hints,
    pub(crate) incremental: Option<Incremental>,
    pub(crate) producer: Producer,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("hints", &self.hints)
            .field("incremental", &self.incremental)
            .finish_non_exhaustive()
    }
}

impl Resource {
    /// A resource whose items come from `producer`, called once per run with the resource's context.
    pub fn new<F, I>(name: impl Into<String>, mut producer: F) -> Self
    where
        F: FnMut(ResourceContext) -> Result<I> + Send + 'static,
        I: Iterator<Item = Result<Item>> + Send + 'static,
    {
        Resource {
            name: name.into(),
            hints: Hints::default(),
            incremental: None,
            producer: Box::new(move |ctx| Ok(Box::new(producer(ctx)?) as ItemIter)),
        }
    }

    /// A resource over fixed data (a list of JSON objects), e.g. for `pipeline.run` on plain data.
    pub fn from_items(name: impl Into<String>, items: Vec<Value>) -> Self {
        Resource::new(name, move |_| {
            Ok(items.clone().into_iter().map(|v| Ok(Item::Json(v))))
        })
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls the resource outside a pipeline (no incremental, empty state), e.g. to preview it.
    pub fn items(&mut self) -> Result<ItemIter> {
        let context = ResourceContext {
            resource: self.name.clone(),
            incremental: None,
            resource_state: Arc::new(Mutex::new(Value::Object(serde_json::Map::new()))),
            source_state: Arc::new(Mutex::new(Value::Object(serde_json::Map::new()))),
        };
        (self.producer)(context)
    }

    /// The resource's hints.
    pub fn hints(&self) -> &Hints {
        &self.hints
    }

    /// Replaces all hints.
    pub fn with_hints(mut self, hints: Hints) -> Self {
        self.hints = hints;
        self
    }

    /// Sets a fixed table name.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.hints.table_name = Some(TableName::Static(name.into()));
        self
    }

    /// Sets the table name as a function of the item.
    pub fn table_name_fn(
        mut self,
        f: impl Fn(&Value) -> Result<String> + Send + Sync + 'static,
    ) -> Self {
        self.hints.table_name = Some(TableName::Dynamic(Arc::new(f)));
        self
    }

    /// Sets the write disposition.
    pub fn write_disposition(mut self, disposition: WriteDisposition) -> Self {
        self.hints.write_disposition = Some(disposition);
        self
    }

    /// Sets the merge strategy.
    pub fn merge_strategy(mut self, strategy: MergeStrategy) -> Self {
        self.hints.merge_strategy = Some(strategy);
        self
    }

    /// Merges with the `scd2` strategy and these options: every load closes the versions it no
    /// longer holds and opens new ones (`Scd2Options::default()` for dlt's defaults).
    pub fn scd2(mut self, options: Scd2Options) -> Self {
        self.hints.write_disposition = Some(WriteDisposition::Merge);
        self.hints.merge_strategy = Some(MergeStrategy::Scd2);
        self.hints.scd2 = Some(options);
        self
    }

    /// Sets how a `replace` swaps this resource's rows, instead of the pipeline's strategy.
    pub fn replace_strategy(mut self, strategy: ReplaceStrategy) -> Self {
        self.hints.replace_strategy = Some(strategy);
        self
    }

    /// Sets the primary key (one or more columns).
    pub fn primary_key<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.hints.primary_key = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the merge key (one or more columns).
    pub fn merge_key<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.hints.merge_key = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a column hint.
    pub fn column(mut self, name: impl Into<String>, hint: ColumnHint) -> Self {
        self.hints.columns.insert(name.into(), hint);
        self
    }

    /// Limits nesting: deeper objects and lists are kept as JSON columns.
    pub fn max_table_nesting(mut self, levels: usize) -> Self {
        self.hints.max_table_nesting = Some(levels);
        self
    }

    /// The cursor's kind when a column hint (resource or run-time) gives its type.
    pub(crate) fn cursor_hint_kind(
        &self,
        run_hints: &Hints,
    ) -> Option<crate::incremental::CursorKind> {
        let field = self
            .incremental
            .as_ref()?
            .cursor_path
            .single_field()?
            .to_string();
        let hints = self.hints.overridden_by(run_hints);
        hints
            .columns
            .get(&field)?
            .data_type
            .and_then(crate::incremental::CursorKind::from_data_type)
    }

    /// Attaches an incremental.
    pub fn incremental(mut self, incremental: Incremental) -> Self {
        self.incremental = Some(incremental);
        self
    }
}

/// A group of resources with a source-scoped state.
#[derive(Debug)]
pub struct Source {
    pub(crate) name: String,
    pub(crate) resources: Vec<Resource>,
    pub(crate) root_key: bool,
}

impl Source {
    /// A source named `name` holding `resources`. An empty name is the pipeline's default
    /// source, named when it runs after the pipeline's schema, as dlt names it: the pipeline's
    /// name, or a dlt source's name for a dataset dlt loaded from `@dlt.source(name=…)`.
    pub fn new(name: impl Into<String>, resources: Vec<Resource>) -> Self {
        Source {
            name: name.into(),
            resources,
            root_key: false,
        }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Names of the resources, in order.
    pub fn resource_names(&self) -> Vec<&str> {
        self.resources.iter().map(|r| r.name.as_str()).collect()
    }

    /// Keeps only the named resources; an unknown name is an error.
    pub fn with_resources(mut self, names: &[&str]) -> Result<Self> {
        for name in names {
            if !self.resources.iter().any(|r| r.name == *name) {
                return Err(Error::Config(format!(
                    "source {}: no resource named {name:?} (resources: {})",
                    self.name,
                    self.resource_names().join(", ")
                )));
            }
        }
        self.resources.retain(|r| names.contains(&r.name.as_str()));
        Ok(self)
    }

    /// Propagates `_dlt_root_id` to every child table, not only those of merged tables.
    pub fn root_key(mut self, on: bool) -> Self {
        self.root_key = on;
        self
    }

    /// Adds a resource.
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resources.push(resource);
        self
    }
}
