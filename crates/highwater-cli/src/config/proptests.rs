//! The pipeline-file parser on arbitrary TOML: a parsed file or an error naming the file, a line
//! and the key at fault; never a panic.

use proptest::prelude::*;

use super::LoadedConfig;

/// A valid pipeline file, one key or header a line; (line, key) of every `key = value` line.
const VALID: &str = r#"[pipeline]
name = "events"
destination = "duckdb:out.duckdb"
dataset = "raw"
[[resources]]
name = "events"
write_disposition = "merge"
primary_key = "id"
max_table_nesting = 2
[resources.source]
kind = "jsonl"
path = "data/*.jsonl"
skip_loaded_files = true
[resources.incremental]
cursor_path = "ts"
initial_value = 0
lag = 10
[resources.columns.ts]
data_type = "bigint"
nullable = false
"#;

fn valid_lines() -> Vec<&'static str> {
    VALID.lines().collect()
}

/// Lines of `VALID` that assign a key, with the key.
fn assignments() -> Vec<(usize, &'static str)> {
    valid_lines()
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.split_once(" = ").map(|(k, _)| (i, k)))
        .collect()
}

/// Values of every TOML type, none of which fits every key.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"text\"".to_string()),
        Just("-3".to_string()),
        Just("2.5".to_string()),
        Just("true".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        "\"[a-z]{0,5}\"",
    ]
}

/// Parses `text` as the file `p.toml`.
fn parse(text: &str) -> (tempfile::TempDir, anyhow::Result<LoadedConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let result = LoadedConfig::load(&path);
    (dir, result)
}

/// The line an error names (`p.toml:LINE:`), checked to be a line of the file.
fn named_line(err: &str, lines: usize) -> Option<usize> {
    let rest = &err[err.find("p.toml:")? + "p.toml:".len()..];
    let line: usize = rest.split(':').next()?.parse().ok()?;
    (1..=lines + 1).contains(&line).then_some(line)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_unknown_key_is_named_with_its_line(
        after in 0..valid_lines().len(),
        key in "zz[a-z_]{1,8}",
        value in toml_value(),
    ) {
        prop_assume!(!VALID.contains(&format!("{key} =")) && !VALID.contains(&format!("[{key}")));
        let mut lines = valid_lines();
        let inserted = format!("{key} = {value}");
        lines.insert(after + 1, &inserted);
        let text = lines.join("\n");
        let (_dir, result) = parse(&text);
        let err = format!("{:#}", result.expect_err("an unknown key is an error"));
        prop_assert_eq!(named_line(&err, lines.len()), Some(after + 2), "{}", err);
        prop_assert!(err.contains(&key), "{}", err);
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_key_and_line(
        which in 0..assignments().len(),
        value in toml_value(),
    ) {
        let (index, key) = assignments()[which];
        let mut lines = valid_lines();
        let replaced = format!("{key} = {value}");
        lines[index] = &replaced;
        let text = lines.join("\n");
        let (_dir, result) = parse(&text);
        // Some values fit (a string for a string key); every error must say where.
        if let Err(err) = result {
            let err = format!("{err:#}");
            prop_assert_eq!(named_line(&err, lines.len()), Some(index + 1), "{}", err);
            prop_assert!(err.contains(key), "{}", err);
        }
    }

    #[test]
    fn any_text_parses_or_fails_naming_a_line(
        cut in 0..VALID.len(),
        noise in prop::collection::vec(
            prop_oneof!["[\\[\\]=\"{}.,a-z0-9 ]{0,12}", Just("\n".to_string())], 0..6),
        at in any::<prop::sample::Index>(),
    ) {
        // A file cut short, with bits of TOML syntax thrown in.
        let mut text = VALID[..cut].to_string();
        let place = at.index(text.len() + 1);
        text.insert_str(place, &noise.concat());
        let (_dir, result) = parse(&text);
        if let Err(err) = result {
            let err = format!("{err:#}");
            prop_assert!(
                named_line(&err, text.lines().count()).is_some(),
                "no line of the file named: {}", err
            );
        }
    }
}
