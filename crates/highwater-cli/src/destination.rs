//! The pipeline file's destination: `[pipeline] destination = "..."` (the short forms) or a
//! `[destination]` table whose `kind` picks the destination and whose other keys are that
//! destination's config (the library's config structs, unknown keys refused).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use highwater::destination::DuckDbConfig;
use highwater::DestinationConfig;
use serde::de::DeserializeOwned;

use crate::config::LoadedConfig;

/// The destination the pipeline file declares; DuckDB `<name>.duckdb` when it declares none.
pub fn destination_of(config: &LoadedConfig) -> Result<DestinationConfig> {
    let section = &config.file.pipeline;
    let default_db = PathBuf::from(format!("{}.duckdb", section.name));
    match (&section.destination, &config.file.destination) {
        (Some(_), Some(table)) => bail!(
            "{}: the destination is given twice: keep either [pipeline] destination or the [destination] table",
            config.at(table)
        ),
        (Some(spec), None) => {
            let spec_text = config.resolve_secrets(spec.get_ref())?;
            DestinationConfig::parse(&spec_text, default_db, &config.base)
                .map_err(|e| anyhow!("{}: {e}", config.at(spec)))
        }
        (None, Some(table)) => from_table(config, table),
        (None, None) => Ok(DestinationConfig::duckdb(default_db)),
    }
}

/// A `[destination]` table: `kind` plus the keys of that destination's config.
fn from_table(
    config: &LoadedConfig,
    table: &toml::Spanned<toml::Table>,
) -> Result<DestinationConfig> {
    let at = config.at(table);
    let mut keys = table.get_ref().clone();
    let kind = match keys.remove("kind") {
        Some(toml::Value::String(kind)) => kind,
        Some(other) => {
            bail!("{at}: [destination] kind = {other} is not a string such as \"duckdb\"")
        }
        None => bail!("{at}: [destination] needs a kind: \"duckdb\""),
    };
    let keys = resolve_secrets_in(config, keys)?;
    match kind.as_str() {
        "duckdb" => {
            let mut duckdb: DuckDbConfig = parse_keys(&at, &kind, keys)?;
            duckdb.path = config.base.join(&duckdb.path);
            duckdb
                .resolved()
                .map_err(|e| anyhow!("{at}: [destination]: {e}"))?;
            Ok(DestinationConfig::DuckDb(duckdb))
        }
        other => bail!("{at}: [destination] kind = {other:?} is not one of \"duckdb\""),
    }
}

/// `{secrets.NAME}` resolved in every string of the table.
fn resolve_secrets_in(config: &LoadedConfig, keys: toml::Table) -> Result<toml::Table> {
    fn resolve(config: &LoadedConfig, value: toml::Value) -> Result<toml::Value> {
        Ok(match value {
            toml::Value::String(s) => toml::Value::String(config.resolve_secrets(&s)?),
            toml::Value::Array(items) => toml::Value::Array(
                items
                    .into_iter()
                    .map(|v| resolve(config, v))
                    .collect::<Result<_>>()?,
            ),
            toml::Value::Table(t) => toml::Value::Table(resolve_secrets_in(config, t)?),
            other => other,
        })
    }
    keys.into_iter()
        .map(|(k, v)| Ok((k, resolve(config, v)?)))
        .collect()
}

/// The keys of a `[destination]` table as the config struct of `kind`.
fn parse_keys<T: DeserializeOwned>(at: &str, kind: &str, keys: toml::Table) -> Result<T> {
    toml::Value::Table(keys)
        .try_into()
        .map_err(|e: toml::de::Error| {
            anyhow!(
                "{at}: [destination] of kind {kind:?}: {}",
                e.message().trim()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, LoadedConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = LoadedConfig::load(&path).unwrap();
        (dir, loaded)
    }

    #[test]
    fn a_destination_table_takes_the_keys_of_its_kind() {
        let (dir, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"duckdb\"\npath = \"out/x.duckdb\"\nmemory_limit = \"1GB\"\nthreads = 2\n",
        );
        let DestinationConfig::DuckDb(duckdb) = destination_of(&c).unwrap() else {
            panic!("not duckdb")
        };
        assert_eq!(duckdb.path, dir.path().join("out/x.duckdb"));
        assert_eq!(duckdb.memory_limit.as_deref(), Some("1GB"));
        assert_eq!(duckdb.threads, Some(2));
    }

    #[test]
    fn unknown_keys_kinds_and_a_second_destination_are_errors_naming_the_line() {
        let (_d, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"duckdb\"\npath = \"x.duckdb\"\nbogus = 1\n",
        );
        let err = destination_of(&c).unwrap_err().to_string();
        assert!(err.contains("p.toml:4") && err.contains("bogus"), "{err}");

        let (_d, c) = config("[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"oracle\"\n");
        let err = destination_of(&c).unwrap_err().to_string();
        assert!(err.contains("oracle") && err.contains("p.toml:4"), "{err}");

        let (_d, c) = config(
            "[pipeline]\nname = \"p\"\ndestination = \"duckdb\"\n\n[destination]\nkind = \"duckdb\"\npath = \"x.duckdb\"\n",
        );
        let err = destination_of(&c).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn the_short_forms_keep_working() {
        let (dir, c) = config("[pipeline]\nname = \"p\"\ndestination = \"duckdb:db/out.duckdb\"\n");
        assert_eq!(
            destination_of(&c).unwrap(),
            DestinationConfig::duckdb(dir.path().join("db/out.duckdb"))
        );
        let (_d, c) = config("[pipeline]\nname = \"p\"\n");
        assert_eq!(
            destination_of(&c).unwrap(),
            DestinationConfig::duckdb("p.duckdb")
        );
    }
}
