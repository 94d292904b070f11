//! dlt's filesystem layout: where each file of a dataset goes, what its name says, and the JSON
//! of the system files.
//!
//! ```text
//! <root>/<dataset>/init                                              {"initial_version":2,"current_version":2}
//! <root>/<dataset>/<table>/<load_id>.<file_id>.parquet               data
//! <root>/<dataset>/_dlt_loads/<schema>__<load_id>.jsonl              the commit marker, written last
//! <root>/<dataset>/_dlt_pipeline_state/<pipeline>__<load_id>__<schema hash hex>.jsonl
//! <root>/<dataset>/_dlt_version/<schema>__<time>__<schema hash hex>.jsonl
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use object_store::path::Path;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::destination::{LoadJob, StateRow};
use crate::schema::{Schema, SCHEMA_ENGINE_VERSION};

/// The `init` marker's content.
pub const INIT: &str = r#"{"initial_version":2,"current_version":2}"#;

/// The folders of system tables.
pub const LOADS: &str = "_dlt_loads";
pub const STATE: &str = "_dlt_pipeline_state";
pub const VERSION: &str = "_dlt_version";

/// The paths of one dataset under the destination's root.
#[derive(Debug, Clone)]
pub struct Layout {
    dataset: Path,
}

impl Layout {
    /// The dataset `dataset` under `root` (a prefix inside the bucket, or empty).
    pub fn new(root: &Path, dataset: &str) -> Self {
        Layout {
            dataset: root.clone().join(dataset),
        }
    }

    /// The dataset's folder.
    pub fn dataset(&self) -> &Path {
        &self.dataset
    }

    /// `<dataset>/init`.
    pub fn init(&self) -> Path {
        self.dataset.clone().join("init")
    }

    /// The folder of a table (data or system).
    pub fn table(&self, table: &str) -> Path {
        self.dataset.clone().join(table)
    }

    /// `<table>/<load_id>.<file_id>.parquet`; the file id is derived from the package file's
    /// name, so loading a package again writes the same names (and overwrites, never adds).
    pub fn data_file(&self, table: &str, load_id: &str, package_file: &str) -> Path {
        let digest = Sha256::digest(package_file.as_bytes());
        let file_id: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
        self.table(table)
            .join(format!("{load_id}.{file_id}.parquet").as_str())
    }

    /// `_dlt_loads/<schema>__<load_id>.jsonl`.
    pub fn load_marker(&self, schema: &str, load_id: &str) -> Path {
        self.table(LOADS)
            .join(format!("{schema}__{load_id}.jsonl").as_str())
    }

    /// `_dlt_pipeline_state/<pipeline>__<load_id>__<schema hash hex>.jsonl`.
    pub fn state_file(&self, pipeline: &str, load_id: &str, schema_hash: &str) -> Path {
        self.table(STATE)
            .join(format!("{pipeline}__{load_id}__{}.jsonl", hash_hex(schema_hash)).as_str())
    }

    /// `_dlt_version/<schema>__<time>__<schema hash hex>.jsonl`.
    pub fn version_file(&self, schema: &str, time: &str, schema_hash: &str) -> Path {
        self.table(VERSION)
            .join(format!("{schema}__{time}__{}.jsonl", hash_hex(schema_hash)).as_str())
    }
}

/// `<first>__<second>__<third>.jsonl` split as dlt splits it (from the right, so the first part
/// may hold `__`): state and version files.
pub fn name_parts(file_name: &str) -> Option<(&str, &str, &str)> {
    let stem = file_name.strip_suffix(".jsonl")?;
    let mut parts = stem.rsplitn(3, "__");
    let third = parts.next()?;
    let second = parts.next()?;
    let first = parts.next()?;
    Some((first, second, third))
}

/// `<schema>__<load_id>.jsonl` split: a `_dlt_loads` file's schema and load id.
pub fn marker_parts(file_name: &str) -> Option<(&str, &str)> {
    file_name.strip_suffix(".jsonl")?.rsplit_once("__")
}

/// The hex of a base64 schema hash (dlt's `hex(b64decode(hash))`); the text itself if it is
/// not base64.
pub fn hash_hex(hash: &str) -> String {
    match STANDARD.decode(hash) {
        Ok(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => hash.replace(['/', '+', '='], "_"),
    }
}

/// Orders load ids (Unix times with a fraction) as numbers, whatever their digit counts.
pub fn load_id_key(load_id: &str) -> (u64, String) {
    let (secs, frac) = load_id.split_once('.').unwrap_or((load_id, ""));
    let mut frac = frac.to_string();
    while frac.len() < 12 {
        frac.push('0');
    }
    (secs.parse().unwrap_or(0), frac)
}

/// dlt's time format in system files: `2024-01-01T00:00:00.000000+00:00`.
pub fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// A load-id-like precise time (`<secs>.<7 digits>`), the middle of `_dlt_version` names.
pub fn precise_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:07}", now.as_secs(), now.subsec_nanos() / 100)
}

/// `_dlt_loads/…jsonl`.
pub fn load_record(job: &LoadJob<'_>) -> String {
    json!({
        "load_id": job.load_id,
        "schema_name": job.schema.name,
        "status": 0,
        "inserted_at": now_text(),
        "schema_version_hash": job.schema.version_hash,
    })
    .to_string()
}

/// `_dlt_pipeline_state/…jsonl`.
pub fn state_record(job: &LoadJob<'_>, state: &StateRow) -> String {
    json!({
        "version": state.version,
        "engine_version": state.engine_version,
        "pipeline_name": job.pipeline,
        "state": state.state,
        "created_at": now_text(),
        "version_hash": state.version_hash,
        "_dlt_load_id": job.load_id,
    })
    .to_string()
}

/// `_dlt_version/…jsonl`: the schema as a JSON string inside the record.
pub fn version_record(schema: &Schema) -> String {
    json!({
        "version_hash": schema.version_hash,
        "schema_name": schema.name,
        "version": schema.version,
        "engine_version": SCHEMA_ENGINE_VERSION,
        "inserted_at": now_text(),
        "schema": Value::String(schema.to_stored_json()),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dlt() {
        let layout = Layout::new(&Path::from("lake"), "ds");
        assert_eq!(layout.init().as_ref(), "lake/ds/init");
        assert_eq!(
            layout.load_marker("p", "1700000000.1234567").as_ref(),
            "lake/ds/_dlt_loads/p__1700000000.1234567.jsonl"
        );
        let data = layout.data_file("events", "1700000000.1", "events.0.parquet");
        let name = data.filename().unwrap();
        assert!(name.starts_with("1700000000.1.") && name.ends_with(".parquet"));
        assert_eq!(name.len(), "1700000000.1.".len() + 10 + ".parquet".len());
        assert_eq!(
            data,
            layout.data_file("events", "1700000000.1", "events.0.parquet"),
            "a package file always gets the same name"
        );
        assert_eq!(hash_hex("AAEC"), "000102");
        assert_eq!(
            layout.state_file("p", "1.5", "AAEC").as_ref(),
            "lake/ds/_dlt_pipeline_state/p__1.5__000102.jsonl"
        );
    }

    #[test]
    fn system_names_split_and_load_ids_order_as_numbers() {
        assert_eq!(name_parts("p__1.5.jsonl"), None);
        assert_eq!(
            marker_parts("my__pipe__1.5.jsonl"),
            Some(("my__pipe", "1.5"))
        );
        assert_eq!(
            name_parts("my__pipe__1.5__abc.jsonl"),
            Some(("my__pipe", "1.5", "abc"))
        );
        assert_eq!(name_parts("init"), None);
        assert!(load_id_key("1700000000.9") > load_id_key("1700000000.1234567"));
        assert!(load_id_key("1700000001.0") > load_id_key("1700000000.9999999"));
    }
}
