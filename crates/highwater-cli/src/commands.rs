//! The subcommands besides `run`: `info`, `state`, `state reset`, `schema`, `drop` and
//! `drop-pending`.

use anyhow::{bail, Context, Result};
use highwater::Pipeline;
use serde_json::{json, Value};

use crate::config::LoadedConfig;

/// `highwater info`: destination, dataset, tables with row counts, last loads, pending packages.
pub fn info(pipeline: &Pipeline, as_json: bool) -> Result<()> {
    let (tables, loads) = if pipeline.destination().exists(pipeline.dataset())? {
        let mut destination = pipeline.open_destination()?;
        (destination.table_counts()?, destination.recent_loads(10)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let pending = pipeline.pending_package_stages()?;
    let failed = pipeline.failed_packages()?;
    if as_json {
        let out = json!({
            "pipeline": pipeline.name(),
            "destination": pipeline.destination().describe(),
            "dataset": pipeline.dataset(),
            "working_dir": pipeline.working_dir().display().to_string(),
            "tables": tables.iter().map(|t| (t.table.clone(), json!(t.rows))).collect::<serde_json::Map<_, _>>(),
            "loads": loads.iter().map(|l| json!({"load_id": l.load_id, "status": l.status, "inserted_at": l.inserted_at})).collect::<Vec<_>>(),
            "pending_packages": pending.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "new_packages": pending.iter().map(|(id, stage)| json!({"load_id": id, "stage": stage})).collect::<Vec<_>>(),
            "failed_packages": failed.iter().map(|(id, dir)| json!({"load_id": id, "kept_in": dir.display().to_string()})).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("pipeline     {}", pipeline.name());
    println!("destination  {}", pipeline.destination().describe());
    println!("dataset      {}", pipeline.dataset());
    println!("working dir  {}", pipeline.working_dir().display());
    println!("tables");
    if tables.is_empty() {
        println!("  (none)");
    }
    for t in &tables {
        println!("  {:<40} {:>12} rows", t.table, t.rows);
    }
    println!("last loads");
    if loads.is_empty() {
        println!("  (none)");
    }
    for l in &loads {
        println!("  {}  status {}  {}", l.load_id, l.status, l.inserted_at);
    }
    println!("new packages (not loaded yet)");
    if pending.is_empty() {
        println!("  (none)");
    }
    for (id, stage) in &pending {
        let next = if *stage == "normalized" {
            "the next run loads it"
        } else {
            "the next run normalizes and loads it"
        };
        println!("  {id}  {stage}: {next}");
    }
    println!("failed packages (set aside, never loaded)");
    if failed.is_empty() {
        println!("  (none)");
    }
    for (id, dir) in &failed {
        println!("  {id}  kept in {}", dir.display());
    }
    Ok(())
}

/// `highwater state`: the state document, or one resource's section of it.
pub fn show_state(
    config: &LoadedConfig,
    pipeline: &Pipeline,
    resource: Option<&str>,
) -> Result<()> {
    // Typed values (a datetime dlt stored as one) as their text.
    let out = match resource {
        Some(name) => {
            check_resource(config, name)?;
            pipeline
                .resource_state(name)?
                .map(|s| highwater::typed_json::untyped(&s))
                .unwrap_or(json!({}))
        }
        None => pipeline
            .local_state()?
            .and_then(|state| state.get("sources").map(highwater::typed_json::untyped))
            .unwrap_or(json!({})),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `highwater state reset --resource NAME`.
pub fn reset_state(config: &LoadedConfig, pipeline: &Pipeline, resource: &str) -> Result<()> {
    check_resource(config, resource)?;
    let info = pipeline
        .reset_resource_state(&[resource])
        .with_context(|| format!("resetting the state of resource {resource}"))?;
    eprintln!(
        "state of resource {resource} reset (load {})",
        info.load_ids.join(", ")
    );
    Ok(())
}

/// `highwater drop --resource NAME`: its tables and its state.
pub fn drop(
    config: &LoadedConfig,
    pipeline: &Pipeline,
    resource: &str,
    as_json: bool,
) -> Result<()> {
    check_resource(config, resource)?;
    let info = pipeline
        .drop_resources(&[resource])
        .with_context(|| format!("dropping resource {resource}"))?;
    if as_json {
        println!(
            "{}",
            json!({
                "pipeline": info.pipeline,
                "dataset": info.dataset,
                "load_ids": info.load_ids,
                "dropped_resource": resource,
                "dropped_tables": info.dropped_tables,
            })
        );
    } else if info.load_ids.is_empty() {
        eprintln!("nothing to drop: resource {resource} has no tables and no state");
    } else if info.dropped_tables.is_empty() {
        eprintln!(
            "resource {resource} had no tables; its state was reset (load {})",
            info.load_ids.join(", ")
        );
    } else {
        eprintln!(
            "dropped resource {resource}: tables {} in dataset {}, and its state (load {})",
            info.dropped_tables.join(", "),
            info.dataset,
            info.load_ids.join(", ")
        );
    }
    Ok(())
}

/// `highwater prune`: loaded packages beyond the newest `keep` (default: the pipeline's
/// setting), and with `failed` the failed packages, deleted from the working directory.
pub fn prune(pipeline: &Pipeline, keep: Option<usize>, failed: bool, as_json: bool) -> Result<()> {
    let keep = keep.unwrap_or_else(|| pipeline.kept_loaded_packages());
    let (loaded, failed) = pipeline.prune_packages(keep, failed)?;
    if as_json {
        println!(
            "{}",
            json!({
                "pipeline": pipeline.name(),
                "working_dir": pipeline.working_dir().display().to_string(),
                "kept_loaded_packages": keep,
                "pruned_loaded_packages": loaded,
                "pruned_failed_packages": failed,
            })
        );
        return Ok(());
    }
    if loaded.is_empty() && failed.is_empty() {
        eprintln!(
            "nothing to prune in {} (at most {keep} loaded packages are kept)",
            pipeline.working_dir().display()
        );
    }
    for id in &loaded {
        eprintln!("deleted loaded package {id}");
    }
    for id in &failed {
        eprintln!("deleted failed package {id}");
    }
    Ok(())
}

/// `highwater drop-pending`: deletes the load packages not loaded yet (a damaged package
/// refuses every run until it is dropped); the next run restores the state from the
/// destination and extracts their rows again.
pub fn drop_pending(pipeline: &Pipeline, as_json: bool) -> Result<()> {
    let dropped = pipeline
        .drop_pending_packages()
        .context("dropping the pending packages")?;
    if as_json {
        println!(
            "{}",
            json!({"pipeline": pipeline.name(), "dropped_packages": dropped})
        );
    } else if dropped.is_empty() {
        eprintln!("no pending packages");
    } else {
        eprintln!(
            "dropped {} pending package(s): {}; the next run extracts their rows again",
            dropped.len(),
            dropped.join(", ")
        );
    }
    Ok(())
}

/// `highwater schema`: the stored schema as YAML (default) or JSON.
pub fn schema(pipeline: &Pipeline, format: &str) -> Result<()> {
    let Some(schema) = pipeline.local_schema()? else {
        bail!(
            "pipeline {} has no schema yet: run it first",
            pipeline.name()
        );
    };
    let value = serde_json::to_value(&schema)?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let mut out = String::new();
        write_yaml(&value, 0, &mut out);
        print!("{out}");
    }
    Ok(())
}

/// An error naming the file and the resources it has, unless it has one called `name`.
pub(crate) fn check_resource(config: &LoadedConfig, name: &str) -> Result<()> {
    if config.file.resources.iter().any(|r| r.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = config
        .file
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    Err(crate::usage(format!(
        "{}: no resource named {name:?} (resources: {})",
        config.path.display(),
        names.join(", ")
    )))
}

/// A small YAML writer for JSON values (maps, lists, scalars), enough for the schema.
fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!(
                            "{pad}{}:\n",
                            yaml_scalar(&Value::String(key.clone()))
                        ));
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!(
                            "{pad}{}:\n",
                            yaml_scalar(&Value::String(key.clone()))
                        ));
                        write_yaml(v, indent + 2, out);
                    }
                    _ => out.push_str(&format!(
                        "{pad}{}: {}\n",
                        yaml_scalar(&Value::String(key.clone())),
                        yaml_scalar(v)
                    )),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}-\n"));
                        write_yaml(item, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", yaml_scalar(item))),
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", yaml_scalar(scalar))),
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !s.starts_with('-')
                && !matches!(s.as_str(), "true" | "false" | "null" | "yes" | "no")
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}
