//! The pipeline file's destination: `[pipeline] destination = "..."` (the short forms) or a
//! `[destination]` table whose `kind` picks the destination and whose other keys are that
//! destination's config (the library's config structs, unknown keys refused).

use anyhow::{anyhow, bail, Result};
use highwater::destination::{DuckDbConfig, FilesystemConfig, PostgresConfig};
use highwater::DestinationConfig;
use serde::de::DeserializeOwned;

use crate::config::LoadedConfig;

/// The destination the pipeline file declares; DuckDB `<name>.duckdb` beside the file when it
/// declares none or a bare `duckdb`.
pub fn destination_of(config: &LoadedConfig) -> Result<DestinationConfig> {
    let section = &config.file.pipeline;
    let default_db = config.base.join(format!("{}.duckdb", section.name));
    match (&section.destination, &config.file.destination) {
        (Some(_), Some(table)) => bail!(
            "{}: the destination is given twice: keep either [pipeline] destination or the [destination] table",
            config.at(table)
        ),
        (Some(spec), None) => {
            let spec_text = config.resolve_secrets(spec.get_ref())?;
            crate::redact::register_credentials(Some(&spec_text));
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
        None => {
            bail!("{at}: [destination] needs a kind: \"duckdb\", \"postgres\" or \"filesystem\"")
        }
    };
    let keys = resolve_secrets_in(config, keys)?;
    crate::redact::register_credentials(keys.get("credentials").and_then(toml::Value::as_str));
    match kind.as_str() {
        "duckdb" => {
            let mut duckdb: DuckDbConfig = parse_keys(&at, &kind, keys)?;
            duckdb.path = config.base.join(&duckdb.path);
            duckdb
                .resolved()
                .map_err(|e| anyhow!("{at}: [destination]: {e}"))?;
            Ok(DestinationConfig::DuckDb(duckdb))
        }
        "postgres" => {
            let mut postgres: PostgresConfig = parse_keys(&at, &kind, keys)?;
            postgres.rebase(&config.base);
            postgres
                .validate()
                .map_err(|e| anyhow!("{at}: [destination]: {e}"))?;
            Ok(DestinationConfig::Postgres(postgres))
        }
        "filesystem" => {
            let mut filesystem: FilesystemConfig = parse_keys(&at, &kind, keys)?;
            filesystem.rebase(&config.base);
            filesystem
                .validate()
                .map_err(|e| anyhow!("{at}: [destination]: {e}"))?;
            Ok(DestinationConfig::Filesystem(filesystem))
        }
        other => bail!(
            "{at}: [destination] kind = {other:?} is not one of \"duckdb\", \"postgres\", \"filesystem\""
        ),
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
    fn a_postgres_table_takes_credentials_tls_and_lock_timeout() {
        let (dir, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"postgres\"\ncredentials = \"postgres://loader:{secrets.pw}@db.example:5433/shop\"\nsslmode = \"verify-full\"\nsslrootcert = \"certs/ca.pem\"\nlock_timeout = 5\n",
        );
        std::fs::write(dir.path().join("secrets.toml"), "pw = \"s3cret\"\n").unwrap();
        let DestinationConfig::Postgres(postgres) = destination_of(&c).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(
            postgres.credentials,
            "postgres://loader:s3cret@db.example:5433/shop"
        );
        assert_eq!(postgres.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(
            postgres.sslrootcert,
            Some(dir.path().join("certs/ca.pem")),
            "relative to the pipeline file's folder"
        );
        assert_eq!(postgres.lock_timeout, Some(5.0));
        assert!(!format!("{postgres:?}").contains("s3cret"));

        let (_d, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"postgres\"\ncredentials = \"postgres://u:pw@h/db\"\nsslmode = \"sometimes\"\n",
        );
        let err = destination_of(&c).unwrap_err().to_string();
        assert!(
            err.contains("p.toml:4") && err.contains("sometimes") && !err.contains("pw@"),
            "{err}"
        );
        let (_d, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"postgres\"\ncredentials = \"postgres://u@h/db\"\nport = 5432\n",
        );
        let err = destination_of(&c).unwrap_err().to_string();
        assert!(err.contains("p.toml:4") && err.contains("port"), "{err}");
    }

    #[test]
    fn a_filesystem_table_takes_a_folder_or_a_bucket_with_its_keys() {
        let (dir, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"filesystem\"\nbucket_url = \"lake\"\n",
        );
        let DestinationConfig::Filesystem(fs) = destination_of(&c).unwrap() else {
            panic!("not filesystem")
        };
        assert_eq!(fs.bucket_url, dir.path().join("lake").display().to_string());

        let (dir, c) = config(
            "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"filesystem\"\nbucket_url = \"s3://raw/events\"\nendpoint_url = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\naccess_key_id = \"AK\"\nsecret_access_key = \"{secrets.s3}\"\n",
        );
        std::fs::write(dir.path().join("secrets.toml"), "s3 = \"sup3rsecret\"\n").unwrap();
        let DestinationConfig::Filesystem(fs) = destination_of(&c).unwrap() else {
            panic!("not filesystem")
        };
        assert_eq!(fs.bucket_url, "s3://raw/events");
        assert_eq!(fs.secret_access_key.as_deref(), Some("sup3rsecret"));
        assert_eq!(fs.region.as_deref(), Some("eu-west-1"));
        assert!(!format!("{fs:?}").contains("sup3rsecret"));

        for (bad, named) in [
            ("bucket_url = \"gs://b/p\"", "gs://"),
            ("bucket_url = \"s3://\"", "no bucket"),
            ("bucket_url = \"lake\"\npath = \"x\"", "path"),
        ] {
            let (_d, c) = config(&format!(
                "[pipeline]\nname = \"p\"\n\n[destination]\nkind = \"filesystem\"\n{bad}\n"
            ));
            let err = destination_of(&c).unwrap_err().to_string();
            assert!(err.contains("p.toml:4") && err.contains(named), "{err}");
        }
    }

    #[test]
    fn the_short_forms_keep_working() {
        let (dir, c) = config("[pipeline]\nname = \"p\"\ndestination = \"duckdb:db/out.duckdb\"\n");
        assert_eq!(
            destination_of(&c).unwrap(),
            DestinationConfig::duckdb(dir.path().join("db/out.duckdb"))
        );
        // No destination, or a bare "duckdb": <name>.duckdb beside the pipeline file.
        for text in [
            "[pipeline]\nname = \"p\"\n",
            "[pipeline]\nname = \"p\"\ndestination = \"duckdb\"\n",
        ] {
            let (dir, c) = config(text);
            assert_eq!(
                destination_of(&c).unwrap(),
                DestinationConfig::duckdb(dir.path().join("p.duckdb"))
            );
        }
    }
}
