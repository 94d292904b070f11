//! The state document: pipeline-, source- and resource-scoped JSON committed with the data.
//!
//! The layout is dlt's (`sources.<source>.resources.<resource>.incremental.<cursor_path>`), so a
//! dlt user finds the same document in `_dlt_pipeline_state`. Values are dlt's typed JSON (see
//! [`crate::typed_json`]): a datetime dlt stored comes back as a datetime, and the version hash
//! is dlt's, so dlt and highwater can take turns on one dataset.

use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::typed_json;

/// dlt's state engine version.
pub const STATE_ENGINE_VERSION: i64 = 4;

/// A fresh state document for a pipeline loading into a destination of `destination_type`.
pub fn new_state(pipeline: &str, dataset: &str, destination_type: &str) -> Value {
    json!({
        "_state_version": 0,
        "_state_engine_version": STATE_ENGINE_VERSION,
        "_version_hash": "",
        "pipeline_name": pipeline,
        "dataset_name": dataset,
        "default_schema_name": pipeline,
        "schema_names": [pipeline],
        "destination_type": destination_type,
        "destination_name": null,
        "sources": {},
        "_local": {"first_run": true}
    })
}

/// The name of the pipeline's schema, which also names its default source (where a lone
/// resource keeps its state): the state's `default_schema_name`, else `pipeline`. A pipeline of
/// highwater's own names both after itself; dlt names them after the source a resource ran in
/// (`@dlt.source(name=…)`), so a dataset dlt loaded that way keeps its source's name.
pub fn default_schema_name<'a>(state: &'a Value, pipeline: &'a str) -> &'a str {
    state
        .get("default_schema_name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .unwrap_or(pipeline)
}

pub(crate) fn object_entry<'a>(parent: &'a mut Value, key: &str) -> &'a mut Value {
    if !parent.is_object() {
        *parent = Value::Object(Map::new());
    }
    let Value::Object(map) = parent else {
        unreachable!("made an object above")
    };
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry
}

/// The source-scoped state of `source` (created empty when missing).
pub fn source_state<'a>(state: &'a mut Value, source: &str) -> &'a mut Value {
    object_entry(object_entry(state, "sources"), source)
}

/// The resource-scoped state of `resource` in `source` (created empty when missing).
pub fn resource_state<'a>(state: &'a mut Value, source: &str, resource: &str) -> &'a mut Value {
    object_entry(
        object_entry(source_state(state, source), "resources"),
        resource,
    )
}

/// Reads the resource-scoped state without creating it.
pub fn get_resource_state<'a>(state: &'a Value, source: &str, resource: &str) -> Option<&'a Value> {
    state
        .get("sources")?
        .get(source)?
        .get("resources")?
        .get(resource)
}

/// dlt's `_version_hash` of a state: base64 of sha3-256 over the typed JSON of the state
/// without `_local` and the version fields, keys sorted (dlt's `generate_state_version_hash`).
pub fn version_hash(state: &Value) -> String {
    let content = hashed_content(state);
    typed_json::sha3_b64(&typed_json::canonical(&content))
}

/// The `_local` section's last extracted hash.
pub fn last_extracted_hash(state: &Value) -> Option<&str> {
    state.get("_local")?.get("_last_extracted_hash")?.as_str()
}

/// Marks `state` as the version to commit: bumps `_state_version` when the content changed,
/// and records the hash. Returns whether a state row must be written.
pub fn prepare_commit(state: &mut Value) -> bool {
    let hash = version_hash(state);
    let changed = last_extracted_hash(state) != Some(hash.as_str());
    if let Value::Object(map) = state {
        let previous = map
            .get("_version_hash")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if previous != hash {
            let version = map
                .get("_state_version")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            map.insert("_state_version".into(), Value::from(version + 1));
            map.insert("_version_hash".into(), Value::String(hash.clone()));
        }
        let local = map.entry("_local").or_insert_with(|| json!({}));
        if let Value::Object(local) = local {
            local.insert("_last_extracted_hash".into(), Value::String(hash));
            local.insert("first_run".into(), Value::Bool(false));
        }
    }
    changed
}

/// A state restored from the destination, ready to be the local state: marked as extracted
/// (so an unchanged run writes no state row), as dlt marks a restored state.
pub fn mark_restored(mut state: Value) -> Value {
    let hash = version_hash(&state);
    if let Value::Object(map) = &mut state {
        map.insert(
            "_local".into(),
            json!({"first_run": false, "_last_extracted_hash": hash}),
        );
    }
    state
}

/// Brings a local state written before highwater hashed states as dlt does up to date: its
/// `_version_hash` (sha-256 over highwater's own JSON text) becomes dlt's hash of the same
/// content, so the change of hash is not taken for a change of state.
pub fn migrate_local(mut state: Value) -> Value {
    let legacy = legacy_version_hash(&state);
    let hash = version_hash(&state);
    if let Value::Object(map) = &mut state {
        if map.get("_version_hash").and_then(Value::as_str) == Some(legacy.as_str()) {
            map.insert("_version_hash".into(), Value::String(hash.clone()));
        }
        if let Some(Value::Object(local)) = map.get_mut("_local") {
            if local.get("_last_extracted_hash").and_then(Value::as_str) == Some(legacy.as_str()) {
                local.insert("_last_extracted_hash".into(), Value::String(hash));
            }
        }
    }
    state
}

/// A state without `_local` and the version fields: what its version hash covers.
fn hashed_content(state: &Value) -> Value {
    let mut content = state.clone();
    if let Value::Object(map) = &mut content {
        for key in [
            "_local",
            "_state_version",
            "_state_engine_version",
            "_version_hash",
        ] {
            map.remove(key);
        }
    }
    content
}

/// The hash highwater gave states before it used dlt's: sha-256 of serde_json's text.
fn legacy_version_hash(state: &Value) -> String {
    use sha2::{Digest, Sha256};
    let content = hashed_content(state);
    STANDARD.encode(Sha256::digest(content.to_string().as_bytes()))
}

/// The state as dlt stores it in `_dlt_pipeline_state.state`: base64(zlib(typed JSON without
/// `_local`)), which dlt's `decompress_state` reads.
pub fn encode_for_destination(state: &Value) -> Result<String> {
    let mut content = state.clone();
    if let Value::Object(map) = &mut content {
        map.remove("_local");
    }
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
    let io = |e: std::io::Error| Error::Corrupt {
        what: "state".into(),
        detail: e.to_string(),
    };
    encoder
        .write_all(content.to_string().as_bytes())
        .map_err(io)?;
    Ok(STANDARD.encode(encoder.finish().map_err(io)?))
}

/// Decodes `_dlt_pipeline_state.state` (compressed, or plain JSON as dlt's decoder also
/// accepts) and brings a state of an older state engine up to version 4 as dlt does. A state of
/// a newer engine is refused: its meaning is unknown, and nothing must be loaded from it.
pub fn decode_from_destination(text: &str) -> Result<Value> {
    let corrupt = |detail: String| Error::Corrupt {
        what: "state in _dlt_pipeline_state".into(),
        detail,
    };
    let mut decoded = None;
    if let Ok(bytes) = STANDARD.decode(text.trim()) {
        let mut json = String::new();
        if ZlibDecoder::new(&bytes[..])
            .read_to_string(&mut json)
            .is_ok()
        {
            decoded = Some(serde_json::from_str(&json).map_err(|e| corrupt(e.to_string()))?);
        }
    }
    let state: Value = match decoded {
        Some(state) => state,
        None => serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?,
    };
    migrate(state)
}

/// dlt's `migrate_pipeline_state`: engine 1 → 2 adds `_local`, 2 → 3 sets the version hash,
/// 3 → 4 renames `destination`/`staging` to `*_type` and `*_name`.
fn migrate(mut state: Value) -> Result<Value> {
    let pipeline = state
        .get("pipeline_name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let Some(engine) = state.get("_state_engine_version").and_then(Value::as_i64) else {
        return Err(Error::Corrupt {
            what: format!("state of pipeline {pipeline} in _dlt_pipeline_state"),
            detail: "it has no _state_engine_version".into(),
        });
    };
    if !(1..=STATE_ENGINE_VERSION).contains(&engine) {
        return Err(Error::UnsupportedVersion {
            document: format!("the state of pipeline {pipeline} in _dlt_pipeline_state"),
            kind: "state engine",
            found: engine,
            supported: format!("1 to {STATE_ENGINE_VERSION} (dlt up to 1.31)"),
        });
    }
    let Value::Object(map) = &mut state else {
        return Err(Error::Corrupt {
            what: format!("state of pipeline {pipeline} in _dlt_pipeline_state"),
            detail: "it is not a JSON object".into(),
        });
    };
    if engine < 2 {
        map.insert("_local".into(), json!({}));
    }
    if engine < 3 {
        let hash = version_hash(&Value::Object(map.clone()));
        map.insert("_version_hash".into(), Value::String(hash));
    }
    if engine < 4 {
        // dlt keeps a destination name only when it differs from the type's own name.
        for kind in ["destination", "staging"] {
            if let Some(reference) = map.remove(kind) {
                map.insert(format!("{kind}_type"), reference);
                map.insert(format!("{kind}_name"), Value::Null);
            }
        }
    }
    map.insert("_state_engine_version".into(), json!(STATE_ENGINE_VERSION));
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_versions() {
        let mut state = new_state("p", "d", "highwater.destinations.duckdb");
        assert!(prepare_commit(&mut state));
        assert_eq!(state["_state_version"], 1);
        assert!(
            !prepare_commit(&mut state),
            "unchanged content writes no row"
        );
        resource_state(&mut state, "src", "events")["n"] = json!(1);
        assert!(prepare_commit(&mut state));
        assert_eq!(state["_state_version"], 2);
        let encoded = encode_for_destination(&state).unwrap();
        let decoded = decode_from_destination(&encoded).unwrap();
        assert_eq!(decoded["sources"]["src"]["resources"]["events"]["n"], 1);
        assert!(decoded.get("_local").is_none());
    }
}
