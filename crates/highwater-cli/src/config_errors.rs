//! The pipeline file's parse errors in the user's words: which key, on which line, what it
//! should hold, and an example, instead of serde's `invalid type: string "1h", expected f64`.
//! The key list here is only about wording; the keys themselves are the structs of `config.rs`.

use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// What a key holds and an example, for the keys whose type users get wrong.
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "primary_key",
        "a column name, or a list of column names",
        "primary_key = \"id\" or primary_key = [\"id\", \"day\"]",
    ),
    (
        "merge_key",
        "a column name, or a list of column names",
        "merge_key = \"day\" or merge_key = [\"day\", \"region\"]",
    ),
    (
        "max_table_nesting",
        "a whole number, without quotes",
        "max_table_nesting = 2",
    ),
    (
        "lag",
        "a number without quotes: seconds for a timestamp cursor, days for a date cursor, \
         cursor units for a number cursor",
        "lag = 3600",
    ),
    (
        "chunk_size",
        "a whole number, without quotes",
        "chunk_size = 50000",
    ),
    (
        "keep_loaded_packages",
        "a whole number, without quotes",
        "keep_loaded_packages = 3",
    ),
    (
        "precision",
        "a whole number, without quotes",
        "precision = 6",
    ),
    ("scale", "a whole number, without quotes", "scale = 2"),
    ("limit", "a whole number, without quotes", "limit = 100"),
    ("offset", "a whole number, without quotes", "offset = 0"),
    (
        "base_page",
        "a whole number, without quotes",
        "base_page = 1",
    ),
    (
        "nullable",
        "true or false, without quotes",
        "nullable = false",
    ),
    (
        "timezone",
        "true or false, without quotes",
        "timezone = false",
    ),
    (
        "hard_delete",
        "true or false, without quotes",
        "hard_delete = true",
    ),
    (
        "skip_loaded_files",
        "true or false, without quotes",
        "skip_loaded_files = true",
    ),
    (
        "require_files",
        "true or false, without quotes",
        "require_files = true",
    ),
    (
        "infer_types",
        "true or false, without quotes",
        "infer_types = false",
    ),
    (
        "allow_external_schedulers",
        "true or false, without quotes",
        "allow_external_schedulers = true",
    ),
    (
        "params",
        "a table of query parameters",
        "params = { per_page = 100 }",
    ),
    (
        "headers",
        "a table of header names and string values",
        "headers = { Accept = \"application/json\" }",
    ),
    (
        "auth",
        "a table with type and token",
        "auth = { type = \"bearer\", token = \"{secrets.api_token}\" }",
    ),
    (
        "paginator",
        "a table with the paginator's type and settings",
        "paginator = { type = \"json_link\", next_url_path = \"next\" }",
    ),
    (
        "resources",
        "a list of tables, each one starting with [[resources]] (two brackets)",
        "[[resources]] then name = \"events\" on the next line",
    ),
    (
        "pipeline",
        "a table: [pipeline] with name = \"...\"",
        "[pipeline] then name = \"events\" on the next line",
    ),
    (
        "source",
        "a table: [resources.source] with a kind",
        "[resources.source] then kind = \"jsonl\" on the next line",
    ),
    (
        "incremental",
        "a table: [resources.incremental] with a cursor_path",
        "[resources.incremental] then cursor_path = \"updated_at\" on the next line",
    ),
    (
        "columns",
        "a table per column: [resources.columns.NAME]",
        "[resources.columns.created_at] then data_type = \"timestamp\" on the next line",
    ),
    (
        "cursor_path",
        "a field name or JSONPath, in quotes",
        "cursor_path = \"updated_at\"",
    ),
];

/// Keys whose value is a string in quotes.
const STRINGS: &[&str] = &[
    "name",
    "dataset",
    "working_dir",
    "destination",
    "write_disposition",
    "merge_strategy",
    "table_name",
    "kind",
    "path",
    "url",
    "data_selector",
    "connection",
    "table",
    "query",
    "last_value_func",
    "range_start",
    "range_end",
    "row_order",
    "on_cursor_value_missing",
    "data_type",
    "dedup_sort",
    "type",
    "token",
    "next_url_path",
    "offset_param",
    "limit_param",
    "total_path",
    "page_param",
    "cursor_param",
];

/// The error for `error`, which toml gave when reading the pipeline file at `path` (text
/// `text`): `PATH:LINE: key ...: what it should be, e.g. ...` where the key is known.
pub fn explain(path: &Path, text: &str, error: &toml::de::Error) -> anyhow::Error {
    let message = error.message().trim();
    let Some(span) = error.span() else {
        return anyhow::anyhow!("{}: {message}", path.display());
    };
    let at = format!(
        "{}:{}",
        path.display(),
        crate::config::line_of(text, span.start)
    );
    let found = DeTable::parse(text)
        .ok()
        .and_then(|doc| find_key(doc.get_ref(), span.start, &mut Vec::new()));
    let Some((keys, value)) = found else {
        return anyhow::anyhow!("{at}: {message}");
    };
    let key = keys.last().map(String::as_str).unwrap_or("");
    let written = text
        .get(value.clone())
        .map(|s| s.trim())
        .filter(|s| !s.contains('\n') && s.len() <= 80);
    let shown = match written {
        Some(w) => format!("{key} = {w}"),
        None => keys.join("."),
    };
    let is_type_error = message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.contains("did not match any variant");
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        return anyhow::anyhow!("{at}: {} needs the key {field}", section_name(&keys));
    }
    if !is_type_error {
        return anyhow::anyhow!("{at}: {}: {message}", keys.join("."));
    }
    if let Some((_, expected, example)) = EXPECTED.iter().find(|(k, _, _)| *k == key) {
        return anyhow::anyhow!("{at}: {shown}: expected {expected}, e.g. {example}");
    }
    if STRINGS.contains(&key) {
        return anyhow::anyhow!("{at}: {shown}: expected a string in quotes, e.g. {key} = \"...\"");
    }
    anyhow::anyhow!("{at}: {}: {message}", keys.join("."))
}

/// `[pipeline]`, `[[resources]]`, `[resources.source]`... for the keys leading to a table.
fn section_name(keys: &[String]) -> String {
    match keys {
        [] => "the file".to_string(),
        [one] if one == "resources" => "[[resources]]".to_string(),
        keys => format!("[{}]", keys.join(".")),
    }
}

/// The keys leading to the innermost value whose span (or whose key's span) holds `offset`,
/// and that value's span. Every entry is looked at: a table given by a `[header]` spans only its
/// header, so containers do not tell where their entries are.
fn find_key(
    table: &DeTable<'_>,
    offset: usize,
    keys: &mut Vec<String>,
) -> Option<(Vec<String>, std::ops::Range<usize>)> {
    let mut best: Option<(Vec<String>, std::ops::Range<usize>)> = None;
    for (key, value) in table.iter() {
        keys.push(key.get_ref().to_string());
        if value.span().contains(&offset) || key.span().contains(&offset) {
            let narrower = best
                .as_ref()
                .is_none_or(|(_, span)| value.span().len() < span.len());
            if narrower {
                best = Some((keys.clone(), value.span()));
            }
        }
        if let Some(inner) = find_in_value(value, offset, keys) {
            if best
                .as_ref()
                .is_none_or(|(_, span)| inner.1.len() <= span.len())
            {
                best = Some(inner);
            }
        }
        keys.pop();
    }
    best
}

fn find_in_value(
    value: &Spanned<DeValue<'_>>,
    offset: usize,
    keys: &mut Vec<String>,
) -> Option<(Vec<String>, std::ops::Range<usize>)> {
    match value.get_ref() {
        DeValue::Table(inner) => find_key(inner, offset, keys),
        DeValue::Array(items) => items
            .iter()
            .filter_map(|item| find_in_value(item, offset, keys))
            .min_by_key(|(_, span)| span.len()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::LoadedConfig;

    /// The error of a pipeline file with `resource_keys` in its one resource (and `head` in
    /// place of its `[pipeline]` table when given).
    fn error_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        LoadedConfig::load(&path).unwrap_err().to_string()
    }

    fn with_resource_keys(keys: &str) -> String {
        format!(
            "[pipeline]\nname = \"p\"\n\n[[resources]]\nname = \"r\"\n{keys}\n\n[resources.source]\nkind = \"jsonl\"\npath = \"x.jsonl\"\n"
        )
    }

    #[test]
    fn type_errors_name_key_line_expectation_and_example() {
        for (keys, line, named) in [
            (
                "primary_key = 5",
                6,
                "primary_key = 5: expected a column name, or a list of column names, e.g. primary_key = \"id\"",
            ),
            (
                "max_table_nesting = \"2\"",
                6,
                "max_table_nesting = \"2\": expected a whole number, without quotes, e.g. max_table_nesting = 2",
            ),
            (
                "table_name = 3",
                6,
                "table_name = 3: expected a string in quotes",
            ),
        ] {
            let err = error_of(&with_resource_keys(keys));
            assert!(err.contains(&format!("p.toml:{line}: {named}")), "{keys}: {err}");
            assert!(!err.contains("invalid type"), "{err}");
        }
        let err = error_of(&format!(
            "{}\n[resources.incremental]\ncursor_path = \"ts\"\nlag = \"1h\"\n",
            with_resource_keys("")
        ));
        assert!(
            err.contains("p.toml:14: lag = \"1h\": expected a number without quotes")
                && err.contains("e.g. lag = 3600"),
            "{err}"
        );
    }

    #[test]
    fn a_single_resources_table_asks_for_two_brackets() {
        let err = error_of(
            "[pipeline]\nname = \"p\"\n\n[resources]\nname = \"r\"\n\n[resources.source]\nkind = \"jsonl\"\n",
        );
        assert!(err.contains("p.toml:"), "{err}");
        assert!(err.contains("[[resources]] (two brackets)"), "{err}");
    }

    #[test]
    fn missing_keys_name_their_table() {
        let err = error_of("[pipeline]\ndataset = \"d\"\n");
        assert!(
            err.contains("p.toml:1: [pipeline] needs the key name"),
            "{err}"
        );
    }
}
