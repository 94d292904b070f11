//! dlt's stored schema format (`_dlt_version.schema`, schema engine 11): reading it into a
//! [`Schema`] and writing a [`Schema`] in it, with dlt's version hash.
//!
//! highwater interprets what it acts on (tables, parents, resources, write dispositions, merge
//! strategies, nesting limits, columns with their types and hints). Everything else dlt writes —
//! its system tables, `settings`, `normalizers`, `previous_hashes`, descriptions, `x-` hints,
//! `table_format`, references, incomplete columns, hints set to `false` — is kept in the
//! `extra` maps and written back as it was, so that a schema read from dlt and not changed is
//! written back with the same version hash.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::{Column, DataType, MergeStrategy, Schema, SortOrder, Table, WriteDisposition};
use crate::error::{Error, Result};
use crate::typed_json;

/// The schema engine versions read: 9 and 10 are brought up to 11 as dlt does.
const OLDEST_ENGINE: i64 = 9;

/// dlt's system tables, kept in `Schema::dlt` rather than among highwater's tables.
pub const SYSTEM_TABLES: [&str; 3] = ["_dlt_version", "_dlt_loads", "_dlt_pipeline_state"];

/// Reads `_dlt_version.schema` (or the schema file of a lake): dlt's stored schema, zlib and
/// base64 compressed when dlt found it too long, or the format highwater wrote before it wrote
/// dlt's.
pub fn from_stored(text: &str) -> Result<Schema> {
    let value = parse_text(text)?;
    let is_dlt = ["settings", "normalizers", "previous_hashes"]
        .iter()
        .any(|key| value.get(key).is_some());
    if !is_dlt {
        return serde_json::from_value(value).map_err(|e| corrupt("?", e.to_string()));
    }
    from_dlt(value)
}

fn parse_text(text: &str) -> Result<Value> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        // dlt compresses a schema longer than the destination's longest text.
        if let Ok(bytes) = STANDARD.decode(trimmed.trim_end()) {
            use std::io::Read;
            let mut json = String::new();
            if flate2::read::ZlibDecoder::new(&bytes[..])
                .read_to_string(&mut json)
                .is_ok()
            {
                return serde_json::from_str(&json).map_err(|e| corrupt("?", e.to_string()));
            }
        }
    }
    serde_json::from_str(text).map_err(|e| corrupt("?", e.to_string()))
}

fn corrupt(schema: &str, detail: String) -> Error {
    Error::Corrupt {
        what: format!("schema {schema} in _dlt_version"),
        detail,
    }
}

/// A stored dlt schema as a [`Schema`].
fn from_dlt(value: Value) -> Result<Schema> {
    let Value::Object(mut doc) = value else {
        return Err(corrupt("?", "it is not a JSON object".into()));
    };
    let name = doc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let engine = doc
        .get("engine_version")
        .and_then(Value::as_i64)
        .ok_or_else(|| corrupt(&name, "it has no engine_version".into()))?;
    if !(OLDEST_ENGINE..=super::SCHEMA_ENGINE_VERSION).contains(&engine) {
        return Err(Error::UnsupportedVersion {
            document: format!("schema {name} in _dlt_version"),
            kind: "schema engine",
            found: engine,
            supported: format!(
                "{OLDEST_ENGINE} to {} (dlt 1.0 to 1.31)",
                super::SCHEMA_ENGINE_VERSION
            ),
        });
    }
    migrate(&mut doc, engine);
    check_normalizers(&name, &doc)?;

    let version = doc.remove("version").and_then(|v| v.as_u64()).unwrap_or(1);
    let version_hash = match doc.remove("version_hash") {
        Some(Value::String(hash)) => hash,
        _ => String::new(),
    };
    doc.remove("name");
    doc.remove("engine_version");
    let Some(Value::Object(stored_tables)) = doc.remove("tables") else {
        return Err(corrupt(&name, "it has no tables".into()));
    };
    let mut schema = Schema {
        name: name.clone(),
        version,
        version_hash,
        engine_version: super::SCHEMA_ENGINE_VERSION,
        tables: Default::default(),
        dlt: Map::new(),
    };
    let mut system = Map::new();
    for (table_name, table) in stored_tables {
        if SYSTEM_TABLES.contains(&table_name.as_str()) {
            system.insert(table_name, table);
            continue;
        }
        let table = table_from_dlt(&name, &table_name, table)?;
        schema.tables.insert(table_name, table);
    }
    doc.insert("tables".into(), Value::Object(system));
    schema.dlt = doc;
    Ok(schema)
}

/// dlt's migrations from schema engine 9 and 10 (`dlt/common/schema/migrations.py`).
fn migrate(doc: &mut Map<String, Value>, engine: i64) {
    if engine <= 9 {
        if let Some(Value::Object(tables)) = doc.get_mut("tables") {
            for table in tables.values_mut() {
                let Some(Value::Object(columns)) = table.get_mut("columns") else {
                    continue;
                };
                for column in columns.values_mut() {
                    let Value::Object(column) = column else {
                        continue;
                    };
                    if column.get("data_type").and_then(Value::as_str) == Some("complex") {
                        column.insert("data_type".into(), json!("json"));
                    }
                    let name = column
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if name == "_dlt_id" {
                        let unique = column.get("unique").cloned().unwrap_or(json!(false));
                        column.insert("row_key".into(), unique);
                    }
                    if name == "_dlt_parent_id" {
                        let foreign = column.get("foreign_key").cloned().unwrap_or(json!(false));
                        column.insert("parent_key".into(), foreign);
                    }
                    column.remove("foreign_key");
                }
            }
        }
        if let Some(Value::Object(settings)) = doc.get_mut("settings") {
            if let Some(Value::Object(types)) = settings.get_mut("preferred_types") {
                for data_type in types.values_mut() {
                    if data_type == "complex" {
                        *data_type = json!("json");
                    }
                }
            }
            if let Some(Value::Object(hints)) = settings.get_mut("default_hints") {
                hints.remove("foreign_key");
                hints.insert("row_key".into(), json!(["_dlt_id"]));
                hints.insert("parent_key".into(), json!(["_dlt_parent_id"]));
            }
        }
        if let Some(Value::Object(config)) = doc
            .get_mut("normalizers")
            .and_then(|n| n.get_mut("json"))
            .and_then(|j| j.get_mut("config"))
        {
            config.remove("generate_dlt_id");
        }
    }
    if engine <= 10 {
        if let Some(Value::Object(normalizers)) = doc.get_mut("normalizers") {
            normalizers.insert("use_break_path_on_normalize".into(), json!(false));
        }
    }
    doc.insert("engine_version".into(), json!(super::SCHEMA_ENGINE_VERSION));
}

/// highwater names as dlt's default naming convention does (`snake_case`, with or without nested
/// keys broken into paths); a schema named by another convention would get other names, so it
/// is refused.
fn check_normalizers(name: &str, doc: &Map<String, Value>) -> Result<()> {
    let Some(normalizers) = doc.get("normalizers") else {
        return Ok(());
    };
    let naming = normalizers
        .get("names")
        .and_then(Value::as_str)
        .unwrap_or("snake_case");
    if !matches!(
        naming,
        "snake_case" | "dlt.common.normalizers.naming.snake_case"
    ) {
        return Err(Error::Config(format!(
            "schema {name} in _dlt_version names tables and columns with the naming convention {naming:?}; highwater names them only as dlt's default snake_case does, so it cannot take this dataset over"
        )));
    }
    Ok(())
}

fn table_from_dlt(schema: &str, table_name: &str, value: Value) -> Result<Table> {
    let Value::Object(mut stored) = value else {
        return Err(corrupt(
            schema,
            format!("table {table_name} is not an object"),
        ));
    };
    let mut table = Table::new(table_name);
    stored.remove("name");
    table.parent = take_string(&mut stored, "parent");
    let is_root = table.parent.is_none();
    if is_root {
        table.resource = take_string(&mut stored, "resource");
        // `skip` (or a disposition highwater does not know) stays in `extra` as it is.
        if let Some(disposition) = stored
            .get("write_disposition")
            .and_then(Value::as_str)
            .and_then(WriteDisposition::parse)
        {
            table.write_disposition = disposition;
            stored.remove("write_disposition");
        }
    }
    if let Some(strategy) = stored
        .get("x-merge-strategy")
        .and_then(Value::as_str)
        .and_then(MergeStrategy::parse)
    {
        table.merge_strategy = Some(strategy);
        if strategy != MergeStrategy::DeleteInsert {
            stored.remove("x-merge-strategy");
        }
    }
    table.boundary_timestamp = take_string(&mut stored, "x-boundary-timestamp");
    if let Some(Value::Object(normalizer)) = stored.get_mut("x-normalizer") {
        if let Some(nesting) = normalizer.get("max_nesting").and_then(Value::as_u64) {
            table.max_nesting = Some(nesting as usize);
            normalizer.remove("max_nesting");
        }
    }
    let columns = match stored.remove("columns") {
        Some(Value::Object(columns)) => columns,
        Some(_) => return Err(corrupt(schema, format!("columns of {table_name}"))),
        None => Map::new(),
    };
    let mut incomplete = Map::new();
    for (column_name, column) in columns {
        match column_from_dlt(schema, table_name, &column_name, column)? {
            Ok(column) => {
                table.columns.insert(column_name, column);
            }
            Err(raw) => {
                incomplete.insert(column_name, raw);
            }
        }
    }
    if !incomplete.is_empty() {
        // Hints on columns no data has reached yet: written back first, where dlt keeps them.
        stored.insert("columns".into(), Value::Object(incomplete));
    }
    table.extra = stored;
    Ok(table)
}

fn take_string(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::String(_)) => match map.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// A complete column (one with a data type); `Err(raw)` for an incomplete one, kept as it is.
fn column_from_dlt(
    schema: &str,
    table: &str,
    name: &str,
    value: Value,
) -> Result<std::result::Result<Column, Value>> {
    let Value::Object(mut stored) = value else {
        return Err(corrupt(
            schema,
            format!("column {table}.{name} is not an object"),
        ));
    };
    let Some(type_name) = stored.get("data_type").and_then(Value::as_str) else {
        return Ok(Err(Value::Object(stored)));
    };
    let data_type = match type_name {
        // A 256-bit integer: a decimal of 78 digits for highwater, written back as `wei`.
        "wei" => DataType::Decimal,
        other => DataType::parse(other).ok_or_else(|| {
            corrupt(
                schema,
                format!("column {table}.{name} has the unknown data type {other:?}"),
            )
        })?,
    };
    let mut column = Column::new(name, data_type);
    if type_name != "wei" {
        stored.remove("data_type");
    }
    stored.remove("name");
    column.nullable = stored
        .remove("nullable")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let mut flag = |key: &str| -> bool {
        // A hint set to `false` stays in `extra`, to be written back as dlt wrote it.
        if stored.get(key) == Some(&Value::Bool(true)) {
            stored.remove(key);
            true
        } else {
            false
        }
    };
    column.primary_key = flag("primary_key");
    column.merge_key = flag("merge_key");
    column.unique = flag("unique");
    column.row_key = flag("row_key");
    column.parent_key = flag("parent_key");
    column.root_key = flag("root_key");
    column.hard_delete = flag("hard_delete");
    column.variant = flag("variant");
    column.valid_from = flag("x-valid-from");
    column.valid_to = flag("x-valid-to");
    column.row_version = flag("x-row-version");
    if column.valid_to {
        // dlt writes it on every valid-to column, `null` for a NULL end of active versions.
        match stored.remove("x-active-record-timestamp") {
            Some(Value::String(end)) => column.active_record_timestamp = Some(end),
            Some(Value::Null) | None => {}
            Some(other) => column.active_record_timestamp = Some(other.to_string()),
        }
    }
    column.dedup_sort = match stored.get("dedup_sort").and_then(Value::as_str) {
        Some("asc") => Some(SortOrder::Asc),
        Some("desc") => Some(SortOrder::Desc),
        _ => None,
    };
    if column.dedup_sort.is_some() {
        stored.remove("dedup_sort");
    }
    let mut number = |key: &str| -> Option<u32> {
        let n = stored.get(key)?.as_u64()?;
        stored.remove(key);
        u32::try_from(n).ok()
    };
    column.precision = number("precision");
    column.scale = number("scale");
    if let Some(Value::Bool(timezone)) = stored.get("timezone") {
        column.timezone = Some(*timezone);
        stored.remove("timezone");
    }
    column.extra = stored;
    Ok(Ok(column))
}

/// The schema in dlt's stored format, with its `version` and `version_hash`.
pub fn to_stored(schema: &Schema) -> Value {
    let mut doc = Map::new();
    doc.insert("version".into(), json!(schema.version));
    doc.insert("version_hash".into(), json!(schema.version_hash));
    doc.insert("engine_version".into(), json!(super::SCHEMA_ENGINE_VERSION));
    doc.insert("name".into(), json!(schema.name));
    let mut system = match schema.dlt.get("tables") {
        Some(Value::Object(tables)) => tables.clone(),
        _ => Map::new(),
    };
    let defaults = default_system_tables();
    let mut tables = Map::new();
    for name in ["_dlt_version", "_dlt_loads"] {
        let table = system
            .remove(name)
            .unwrap_or_else(|| defaults[name].clone());
        tables.insert(name.into(), table);
    }
    for table in schema.tables.values() {
        tables.insert(table.name.clone(), table_to_dlt(table));
    }
    let state = system
        .remove("_dlt_pipeline_state")
        .unwrap_or_else(|| defaults["_dlt_pipeline_state"].clone());
    tables.insert("_dlt_pipeline_state".into(), state);
    tables.extend(system);
    doc.insert("tables".into(), Value::Object(tables));
    for (key, value) in &schema.dlt {
        if key != "tables" {
            doc.insert(key.clone(), value.clone());
        }
    }
    for (key, value) in default_sections() {
        doc.entry(key).or_insert(value);
    }
    Value::Object(doc)
}

/// dlt's version hash of a stored schema (`generate_version_hash`): sha3-256 over the schema
/// without its versions and previous hashes, keys sorted, then each table's name (sorted) and
/// its column names in order.
pub fn version_hash(stored: &Value) -> String {
    use sha3::{Digest, Sha3_256};
    let mut content = stored.clone();
    if let Value::Object(map) = &mut content {
        for key in [
            "version",
            "version_hash",
            "imported_version_hash",
            "previous_hashes",
        ] {
            map.remove(key);
        }
    }
    let mut hasher = Sha3_256::new();
    hasher.update(typed_json::canonical(&content));
    if let Some(Value::Object(tables)) = content.get("tables") {
        let mut names: Vec<&String> = tables.keys().collect();
        names.sort();
        for name in names {
            hasher.update(name.as_bytes());
            if let Some(Value::Object(columns)) = tables[name].get("columns") {
                for column in columns.keys() {
                    hasher.update(column.as_bytes());
                }
            }
        }
    }
    STANDARD.encode(hasher.finalize())
}

fn table_to_dlt(table: &Table) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(table.name));
    // What highwater does not interpret first, then what it does over it.
    for (key, value) in &table.extra {
        if key != "columns" {
            out.insert(key.clone(), value.clone());
        }
    }
    let mut columns = match table.extra.get("columns") {
        Some(Value::Object(incomplete)) => incomplete
            .iter()
            .filter(|(name, _)| !table.columns.contains_key(*name))
            .map(|(name, column)| (name.clone(), column.clone()))
            .collect(),
        _ => Map::new(),
    };
    for column in table.columns.values() {
        columns.insert(column.name.clone(), column_to_dlt(column));
    }
    out.insert("columns".into(), Value::Object(columns));
    if let Some(parent) = &table.parent {
        out.insert("parent".into(), json!(parent));
    } else {
        // A disposition highwater does not know (`skip`) stays until highwater sets another.
        if !(out.contains_key("write_disposition")
            && table.write_disposition == WriteDisposition::Append)
        {
            out.insert(
                "write_disposition".into(),
                json!(disposition_name(table.write_disposition)),
            );
        }
        if let Some(resource) = &table.resource {
            out.insert("resource".into(), json!(resource));
        }
    }
    match table.merge_strategy {
        // dlt writes a strategy only when one was chosen: delete-insert is the default.
        Some(strategy)
            if strategy != MergeStrategy::DeleteInsert || out.contains_key("x-merge-strategy") =>
        {
            out.insert("x-merge-strategy".into(), json!(strategy.name()));
        }
        _ => {}
    }
    if let Some(boundary) = &table.boundary_timestamp {
        out.insert("x-boundary-timestamp".into(), json!(boundary));
    }
    // (`replace_strategy` is not written: dlt takes it from the destination's configuration.)
    if let Some(nesting) = table.max_nesting {
        let normalizer = out
            .entry("x-normalizer")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(normalizer) = normalizer {
            normalizer.insert("max_nesting".into(), json!(nesting));
        }
    }
    Value::Object(out)
}

fn disposition_name(disposition: WriteDisposition) -> &'static str {
    match disposition {
        WriteDisposition::Append => "append",
        WriteDisposition::Replace => "replace",
        WriteDisposition::Merge => "merge",
    }
}

fn column_to_dlt(column: &Column) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(column.name));
    let wei = column.data_type == DataType::Decimal
        && column.extra.get("data_type").and_then(Value::as_str) == Some("wei");
    if !wei {
        out.insert("data_type".into(), json!(column.data_type.name()));
    }
    out.insert("nullable".into(), json!(column.nullable));
    for (key, set) in [
        ("primary_key", column.primary_key),
        ("merge_key", column.merge_key),
        ("unique", column.unique),
        ("row_key", column.row_key),
        ("parent_key", column.parent_key),
        ("root_key", column.root_key),
        ("hard_delete", column.hard_delete),
        ("variant", column.variant),
        ("x-valid-from", column.valid_from),
        ("x-valid-to", column.valid_to),
        ("x-row-version", column.row_version),
    ] {
        if set {
            out.insert(key.into(), json!(true));
        }
    }
    if column.valid_to {
        out.insert(
            "x-active-record-timestamp".into(),
            json!(column.active_record_timestamp),
        );
    }
    if column.row_version {
        // As dlt: a version repeats when a row comes back, so the column is no key.
        for key in ["unique", "row_key"] {
            out.entry(key).or_insert(json!(false));
        }
    }
    if let Some(order) = column.dedup_sort {
        out.insert(
            "dedup_sort".into(),
            json!(match order {
                SortOrder::Asc => "asc",
                SortOrder::Desc => "desc",
            }),
        );
    }
    if let Some(precision) = column.precision {
        out.insert("precision".into(), json!(precision));
    }
    if let Some(scale) = column.scale {
        out.insert("scale".into(), json!(scale));
    }
    if let Some(timezone) = column.timezone {
        out.insert("timezone".into(), json!(timezone));
    }
    for (key, value) in &column.extra {
        // A hint highwater set since takes over the `false` dlt wrote.
        if !out.contains_key(key) {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// Records that the rows of `root` carry their `_dlt_id` into their nested tables as
/// `_dlt_root_id`, where dlt's relational normalizer records it
/// (`normalizers.json.config.propagation.tables`).
pub fn record_root_key_propagation(schema: &mut Schema, root: &str) {
    let mut cursor = schema
        .dlt
        .entry("normalizers")
        .or_insert_with(|| default_sections()["normalizers"].clone());
    for key in ["json", "config", "propagation", "tables"] {
        if !cursor.is_object() {
            return;
        }
        cursor = object_entry(cursor, key);
    }
    if let Value::Object(tables) = cursor {
        if !tables.contains_key(root) {
            tables.insert(root.to_string(), json!({"_dlt_id": "_dlt_root_id"}));
        }
    }
}

fn object_entry<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    let Value::Object(map) = value else {
        unreachable!("checked by the caller")
    };
    map.entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()))
}

/// `settings` and `normalizers` of a new dlt 1.31 schema.
fn default_sections() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "settings": {
            "detections": ["iso_timestamp"],
            "default_hints": {
                "not_null": ["_dlt_id", "_dlt_root_id", "_dlt_parent_id", "_dlt_list_idx", "_dlt_load_id"],
                "parent_key": ["_dlt_parent_id"],
                "root_key": ["_dlt_root_id"],
                "unique": ["_dlt_id"],
                "row_key": ["_dlt_id"]
            }
        },
        "normalizers": {
            "names": "snake_case",
            "json": {"module": "dlt.common.normalizers.json.relational"}
        },
        "previous_hashes": []
    }) else {
        unreachable!("an object literal")
    };
    map
}

/// dlt 1.31's definitions of its system tables, as its stored schemas hold them.
fn default_system_tables() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "_dlt_version": {
            "name": "_dlt_version",
            "columns": {
                "version": {"name": "version", "data_type": "bigint", "nullable": false, "description": "Numeric version of the schema, incremented on each schema change"},
                "engine_version": {"name": "engine_version", "data_type": "bigint", "nullable": false, "description": "Version of the dlt schema engine that created this schema"},
                "inserted_at": {"name": "inserted_at", "data_type": "timestamp", "nullable": false, "description": "Timestamp when this schema version was stored"},
                "schema_name": {"name": "schema_name", "data_type": "text", "nullable": false, "description": "Name of the schema"},
                "version_hash": {"name": "version_hash", "data_type": "text", "nullable": false, "description": "Unique hash of the schema content, used to detect changes"},
                "schema": {"name": "schema", "data_type": "text", "nullable": false, "description": "JSON representation of the complete schema definition"}
            },
            "write_disposition": "skip",
            "resource": "_dlt_version",
            "description": "Created by DLT. Tracks schema updates"
        },
        "_dlt_loads": {
            "name": "_dlt_loads",
            "columns": {
                "load_id": {"name": "load_id", "data_type": "text", "nullable": false, "precision": 64, "description": "Unique identifier of the load operation"},
                "schema_name": {"name": "schema_name", "data_type": "text", "nullable": true, "description": "Name of the schema associated with this load"},
                "status": {"name": "status", "data_type": "bigint", "nullable": false, "description": "Status of the load operation (0 = success)"},
                "inserted_at": {"name": "inserted_at", "data_type": "timestamp", "nullable": false, "description": "Timestamp when the load was completed"},
                "schema_version_hash": {"name": "schema_version_hash", "data_type": "text", "nullable": true, "description": "Hash of the schema version used during this load"}
            },
            "write_disposition": "skip",
            "resource": "_dlt_loads",
            "description": "Created by DLT. Tracks completed loads"
        },
        "_dlt_pipeline_state": {
            "columns": {
                "version": {"name": "version", "data_type": "bigint", "nullable": false, "description": "Numeric version of the pipeline state"},
                "engine_version": {"name": "engine_version", "data_type": "bigint", "nullable": false, "description": "Version of the dlt state engine"},
                "pipeline_name": {"name": "pipeline_name", "data_type": "text", "nullable": false, "description": "Name of the pipeline this state belongs to"},
                "state": {"name": "state", "data_type": "text", "nullable": false, "description": "Compressed JSON representation of the pipeline state"},
                "created_at": {"name": "created_at", "data_type": "timestamp", "nullable": false, "description": "Timestamp when this state was created"},
                "version_hash": {"name": "version_hash", "data_type": "text", "nullable": true, "description": "Hash of the state content, used to detect changes"},
                "_dlt_load_id": {"name": "_dlt_load_id", "data_type": "text", "nullable": false, "precision": 64, "description": "Load identifier linking this row to its load operation"},
                "_dlt_id": {"name": "_dlt_id", "data_type": "text", "nullable": false, "unique": true, "row_key": true}
            },
            "write_disposition": "append",
            "file_format": "preferred",
            "name": "_dlt_pipeline_state",
            "resource": "_dlt_pipeline_state",
            "x-normalizer": {"seen-data": true}
        }
    }) else {
        unreachable!("an object literal")
    };
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dlt 1.31 stored schema: a merge table with a nested table, hints highwater acts on and
    /// some it carries (an incomplete column, `incremental`, a `false` hint, `x-` hints, a
    /// reference, `table_format`).
    fn stored() -> Value {
        let mut doc = json!({
            "version": 3, "version_hash": "", "engine_version": 11, "name": "p",
            "tables": {
                "events": {
                    "name": "events", "write_disposition": "merge", "resource": "events",
                    "x-merge-strategy": "upsert", "table_format": "delta",
                    "x-normalizer": {"seen-data": true, "max_nesting": 2},
                    "references": [{"columns": ["id"], "referenced_table": "users", "referenced_columns": ["id"]}],
                    "columns": {
                        "pending": {"name": "pending", "nullable": false, "merge_key": true},
                        "id": {"name": "id", "data_type": "bigint", "nullable": false, "primary_key": true},
                        "ts": {"name": "ts", "data_type": "timestamp", "nullable": true, "incremental": true, "timezone": false, "precision": 3},
                        "amount": {"name": "amount", "data_type": "wei", "nullable": true},
                        "price": {"name": "price", "data_type": "decimal", "precision": 10, "scale": 2, "nullable": true, "x-custom": {"a": 1}},
                        "flag": {"name": "flag", "data_type": "bool", "nullable": true, "unique": false, "description": "d"},
                        "_dlt_id": {"name": "_dlt_id", "data_type": "text", "nullable": false, "unique": true, "row_key": true}
                    }
                },
                "events__tags": {
                    "name": "events__tags", "parent": "events", "x-normalizer": {"seen-data": true},
                    "columns": {"value": {"name": "value", "data_type": "text", "nullable": true, "variant": true}}
                },
                "_dlt_loads": default_system_tables()["_dlt_loads"].clone(),
                "_dlt_version": default_system_tables()["_dlt_version"].clone(),
                "_dlt_pipeline_state": default_system_tables()["_dlt_pipeline_state"].clone()
            },
            "settings": {"detections": ["iso_timestamp", "iso_date"]},
            "normalizers": {"names": "snake_case", "json": {"module": "dlt.common.normalizers.json.relational",
                "config": {"propagation": {"tables": {"events": {"_dlt_id": "_dlt_root_id"}}}}}},
            "previous_hashes": ["a", "b"]
        });
        doc["version_hash"] = json!(version_hash(&doc));
        doc
    }

    #[test]
    fn a_dlt_schema_is_read_and_written_back_unchanged() {
        let doc = stored();
        let schema = from_stored(&doc.to_string()).unwrap();
        assert_eq!(schema.version, 3);
        let events = &schema.tables["events"];
        assert_eq!(events.write_disposition, WriteDisposition::Merge);
        assert_eq!(events.merge_strategy, Some(MergeStrategy::Upsert));
        assert_eq!(events.max_nesting, Some(2));
        assert_eq!(events.resource.as_deref(), Some("events"));
        let names: Vec<&String> = events.columns.keys().collect();
        assert_eq!(names, ["id", "ts", "amount", "price", "flag", "_dlt_id"]);
        assert!(events.columns["id"].primary_key && !events.columns["id"].nullable);
        assert_eq!(events.columns["ts"].timezone, Some(false));
        assert_eq!(events.columns["ts"].precision, Some(3));
        assert_eq!(events.columns["amount"].data_type, DataType::Decimal);
        assert_eq!(events.columns["price"].scale, Some(2));
        assert!(events.columns["_dlt_id"].row_key);
        assert!(schema.tables["events__tags"].columns["value"].variant);
        assert!(!schema.tables.contains_key("_dlt_loads"));
        assert_eq!(
            to_stored(&schema),
            doc,
            "written back as dlt wrote it, with the same hash"
        );
        assert_eq!(schema.content_hash(), doc["version_hash"].as_str().unwrap());
    }

    /// scd2 tables as dlt 1.31.0 stores them (`validity_column_names`, `active_record_timestamp`,
    /// `boundary_timestamp`, `row_version_column_name`, and the defaults).
    #[test]
    fn scd2_hints_are_read_from_and_written_as_dlts() {
        let mut doc = stored();
        doc["tables"]["history"] = json!({
            "name": "history", "write_disposition": "merge", "resource": "history",
            "x-merge-strategy": "scd2", "x-boundary-timestamp": "2024-01-01T12:00:00+02:00",
            "x-normalizer": {"seen-data": true},
            "columns": {
                "vf": {"name": "vf", "data_type": "timestamp", "nullable": true, "x-valid-from": true},
                "vt": {"name": "vt", "data_type": "timestamp", "nullable": true, "x-valid-to": true, "x-active-record-timestamp": "9999-12-31"},
                "name": {"name": "name", "nullable": false, "x-row-version": true, "unique": false, "row_key": false, "data_type": "text"},
                "_dlt_id": {"name": "_dlt_id", "data_type": "text", "nullable": false, "unique": true, "row_key": true}
            }
        });
        doc["tables"]["hashed"] = json!({
            "name": "hashed", "write_disposition": "merge", "resource": "hashed",
            "x-merge-strategy": "scd2",
            "columns": {
                "_dlt_valid_from": {"name": "_dlt_valid_from", "data_type": "timestamp", "nullable": true, "x-valid-from": true},
                "_dlt_valid_to": {"name": "_dlt_valid_to", "data_type": "timestamp", "nullable": true, "x-valid-to": true, "x-active-record-timestamp": null},
                "_dlt_id": {"name": "_dlt_id", "nullable": false, "x-row-version": true, "unique": false, "row_key": false, "data_type": "text"}
            }
        });
        doc["version_hash"] = json!(version_hash(&doc));
        let schema = from_stored(&doc.to_string()).unwrap();
        let history = &schema.tables["history"];
        assert_eq!(history.merge_strategy, Some(MergeStrategy::Scd2));
        assert_eq!(
            history.boundary_timestamp.as_deref(),
            Some("2024-01-01T12:00:00+02:00")
        );
        let (from, to) = history.validity_columns().unwrap();
        assert_eq!((from.name.as_str(), to.name.as_str()), ("vf", "vt"));
        assert_eq!(to.active_record_timestamp.as_deref(), Some("9999-12-31"));
        assert_eq!(history.row_version_column().unwrap().name, "name");
        let hashed = &schema.tables["hashed"];
        assert_eq!(hashed.row_version_column().unwrap().name, "_dlt_id");
        assert_eq!(
            hashed.columns["_dlt_valid_to"].active_record_timestamp,
            None
        );
        assert_eq!(to_stored(&schema), doc, "written back as dlt wrote it");

        // Made by highwater, they are written as dlt writes them.
        let mut made = schema.clone();
        for column in made.tables.get_mut("hashed").unwrap().columns.values_mut() {
            column.extra.clear();
        }
        assert_eq!(to_stored(&made), doc);
    }

    #[test]
    fn changes_highwater_makes_are_written_in_dlts_terms() {
        let mut schema = from_stored(&stored().to_string()).unwrap();
        let events = schema.tables.get_mut("events").unwrap();
        events.merge_strategy = Some(MergeStrategy::DeleteInsert);
        events.columns.get_mut("flag").unwrap().unique = true;
        events
            .columns
            .insert("pending".into(), Column::new("pending", DataType::Text));
        assert!(schema.bump_version());
        let doc = to_stored(&schema);
        let events = &doc["tables"]["events"];
        assert!(
            events.get("x-merge-strategy").is_none(),
            "delete-insert is dlt's default"
        );
        assert_eq!(events["columns"]["flag"]["unique"], json!(true));
        assert_eq!(
            events["columns"]["pending"],
            json!({"name": "pending", "data_type": "text", "nullable": true}),
            "a column with data replaces the hints dlt kept for it"
        );
        assert_eq!(doc["version"], json!(4));
        assert_eq!(doc["previous_hashes"][0], stored()["version_hash"]);
        assert_eq!(doc["version_hash"], json!(version_hash(&doc)));
    }

    #[test]
    fn unknown_engines_and_namings_are_refused() {
        for engine in [8, 12] {
            let mut doc = stored();
            doc["engine_version"] = json!(engine);
            let err = from_stored(&doc.to_string()).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedVersion { found, kind: "schema engine", .. } if found == engine),
                "{err}"
            );
        }
        let mut doc = stored();
        doc["normalizers"]["names"] = json!("direct");
        let err = from_stored(&doc.to_string()).unwrap_err().to_string();
        assert!(
            err.contains("\"direct\"") && err.contains("snake_case"),
            "{err}"
        );
        // A schema dlt brought up from engine 10 keeps nested keys' `__` unbroken.
        let mut doc = stored();
        doc["engine_version"] = json!(10);
        let schema = from_stored(&doc.to_string()).unwrap();
        assert!(!schema.breaks_paths());
        assert!(from_stored(&stored().to_string()).unwrap().breaks_paths());
    }

    #[test]
    fn compressed_schemas_and_the_previous_format_are_read() {
        use std::io::Write;
        let doc = stored();
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(doc.to_string().as_bytes()).unwrap();
        let text = STANDARD.encode(encoder.finish().unwrap());
        assert_eq!(
            from_stored(&text).unwrap().tables,
            from_stored(&doc.to_string()).unwrap().tables
        );
        let previous = json!({"name": "p", "version": 2, "version_hash": "x", "engine_version": 11,
            "tables": {"t": {"name": "t", "write_disposition": "append",
                "columns": {"a": {"name": "a", "data_type": "bigint", "nullable": true}}}}});
        let schema = from_stored(&previous.to_string()).unwrap();
        assert_eq!(schema.tables["t"].columns["a"].data_type, DataType::Bigint);
    }
}
