//! The `highwater` command: runs the pipelines declared in a pipeline file.

mod commands;
mod config;
mod config_errors;
mod destination;
mod interrupt;
mod progress;
mod redact;
mod sources;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use highwater::{Hints, Interval, Pipeline, Refresh, RunOptions, WriteDisposition};
use serde_json::{json, Value};

use config::LoadedConfig;
use progress::ProgressMode;

/// Loads data from files and APIs into DuckDB, incrementally, with dlt's semantics.
#[derive(Debug, Parser)]
#[command(name = "highwater", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline: finish pending loads, then extract, normalize and load.
    Run(RunArgs),
    /// Show the destination, dataset, tables with row counts, last loads and pending packages.
    Info {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show the state document (`state PIPELINE.toml`) or reset a resource's state
    /// (`state reset PIPELINE.toml --resource NAME`).
    #[command(args_conflicts_with_subcommands = true)]
    State {
        #[command(subcommand)]
        action: Option<StateAction>,
        /// The pipeline file.
        pipeline: Option<PathBuf>,
        /// Only this resource's state.
        #[arg(long)]
        resource: Option<String>,
        /// Print JSON (the state is always printed as JSON).
        #[arg(long)]
        json: bool,
    },
    /// Print the stored schema.
    Schema {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Output format.
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
        format: String,
        /// Print JSON (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Delete loaded packages beyond the newest N from the working directory (and, with
    /// --failed, the packages set aside as failed).
    Prune {
        /// The pipeline file.
        pipeline: PathBuf,
        /// How many loaded packages to keep; default the file's keep_loaded_packages (3).
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Also delete the failed packages.
        #[arg(long)]
        failed: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Drop a resource's tables and state.
    Drop {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The resource to drop.
        #[arg(long)]
        resource: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete the load packages not loaded yet (e.g. one found damaged); the next run extracts
    /// their rows again.
    DropPending {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StateAction {
    /// Reset a resource's state: its incremental starts again from initial_value.
    Reset {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The resource whose state is reset.
        #[arg(long)]
        resource: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DispositionArg {
    Replace,
    Append,
    Merge,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Run only these resources (repeatable).
    #[arg(long = "resource", value_name = "NAME")]
    resources: Vec<String>,
    /// Drop tables and reset state before the run: drop_sources, drop_resources or drop_data.
    #[arg(long, value_parser = ["drop_sources", "drop_resources", "drop_data"])]
    refresh: Option<String>,
    /// Override every resource's write disposition; `replace` is a full refresh.
    #[arg(long, value_enum)]
    write_disposition: Option<DispositionArg>,
    /// Start of an external scheduler's interval (ISO-8601), for incrementals that allow it.
    #[arg(long, requires = "interval_end")]
    interval_start: Option<String>,
    /// End of an external scheduler's interval (ISO-8601).
    #[arg(long, requires = "interval_start")]
    interval_end: Option<String>,
    /// How to show progress on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print one JSON object with the outcome on stdout.
    #[arg(long)]
    json: bool,
}

impl Command {
    /// Whether the command was asked for JSON on stdout (then a failure is JSON there too).
    fn wants_json(&self) -> bool {
        match self {
            Command::Run(args) => args.json,
            Command::Info { json, .. }
            | Command::State { json, .. }
            | Command::Drop { json, .. }
            | Command::Prune { json, .. }
            | Command::DropPending { json, .. }
            | Command::Schema { json, .. } => *json,
        }
    }
}

/// An error in how the command was called (exit status 2), as opposed to a failed run (1).
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fails with exit status 2.
fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The pipeline and dataset of the command, once known: a failure printed as JSON names them.
static RUNNING: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    redact::register_credentials(None);
    let is_run = matches!(cli.command, Command::Run(_));
    let json = cli.command.wants_json();
    interrupt::install(json);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let message = redact::redact(&chain.join(": ")).into_owned();
            eprintln!("error: {message}");
            if json {
                let (pipeline, dataset) = match RUNNING.get() {
                    Some((p, d)) => (json!(p), json!(d)),
                    None => (Value::Null, Value::Null),
                };
                let mut out = json!({"pipeline": pipeline, "dataset": dataset, "error": message});
                if is_run {
                    out["load_ids"] = json!([]);
                    out["tables"] = json!({});
                    out["state"] = Value::Null;
                }
                println!("{out}");
            }
            let usage = e.chain().any(|c| c.downcast_ref::<UsageError>().is_some());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Logs to stderr at `RUST_LOG`'s level (default `warn`), other libraries capped at `info`,
/// every line through the redaction layer; colour only on a terminal and without `NO_COLOR`.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let cap = tracing_subscriber::filter::filter_fn(|meta| {
        !redact::third_party_capped(meta.target(), meta.level())
    });
    let output = tracing_subscriber::fmt::layer()
        .with_writer(|| redact::RedactingStderr)
        .with_ansi(progress::colour_on_stderr());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(cap)
        .with(output)
        .try_init();
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Info { pipeline, json } => {
            let config = load_config(&pipeline)?;
            commands::info(&pipeline_from(&config)?, json)
        }
        Command::State {
            action: Some(StateAction::Reset { pipeline, resource }),
            ..
        } => {
            let config = load_config(&pipeline)?;
            commands::reset_state(&config, &pipeline_from(&config)?, &resource)
        }
        Command::State {
            action: None,
            pipeline,
            resource,
            json: _,
        } => {
            let Some(pipeline) = pipeline else {
                return Err(usage(
                    "state: give the pipeline file (highwater state PIPELINE.toml)",
                ));
            };
            let config = load_config(&pipeline)?;
            commands::show_state(&config, &pipeline_from(&config)?, resource.as_deref())
        }
        Command::Schema {
            pipeline,
            format,
            json,
        } => {
            let config = load_config(&pipeline)?;
            let format = if json { "json" } else { format.as_str() };
            commands::schema(&pipeline_from(&config)?, format)
        }
        Command::Prune {
            pipeline,
            keep,
            failed,
            json,
        } => {
            let config = load_config(&pipeline)?;
            commands::prune(&pipeline_from(&config)?, keep, failed, json)
        }
        Command::Drop {
            pipeline,
            resource,
            json,
        } => {
            let config = load_config(&pipeline)?;
            commands::drop(&config, &pipeline_from(&config)?, &resource, json)
        }
        Command::DropPending { pipeline, json } => {
            let config = load_config(&pipeline)?;
            commands::drop_pending(&pipeline_from(&config)?, json)
        }
    }
}

/// Builds the pipeline a pipeline file declares.
fn pipeline_from(config: &LoadedConfig) -> Result<Pipeline> {
    let section = &config.file.pipeline;
    let destination = destination::destination_of(config)?;
    let mut builder = Pipeline::builder(section.name.clone()).destination(destination);
    if let Some(dataset) = &section.dataset {
        builder = builder.dataset(dataset.clone());
    }
    // Relative to the pipeline file, as every path of the file: the same file run from any
    // folder finds the same working directory (and so the same state).
    match &section.working_dir {
        Some(dir) => builder = builder.working_dir(config.resolve(dir)),
        None if std::env::var_os("HIGHWATER_HOME").is_none() => {
            builder = builder.working_dir(config.base.join(".highwater").join(&section.name));
        }
        None => {}
    }
    if let Some(keep) = section.keep_loaded_packages {
        builder = builder.keep_loaded_packages(keep);
    }
    if let Some(strategy) = &section.replace_strategy {
        builder = builder.replace_strategy(sources::replace_strategy(config, strategy)?);
    }
    let pipeline = builder.build()?;
    let _ = RUNNING.set((pipeline.name().to_string(), pipeline.dataset().to_string()));
    Ok(pipeline)
}

/// An explicit interval must reach a resource: one of the run's resources must take the range
/// from the scheduler, or the run would silently be an ordinary incremental run.
fn require_external_schedulers(config: &LoadedConfig, selected: &[String]) -> Result<()> {
    let accepts = config.file.resources.iter().any(|r| {
        (selected.is_empty() || selected.contains(&r.name))
            && r.incremental
                .as_ref()
                .is_some_and(|i| i.allow_external_schedulers)
    });
    if !accepts {
        return Err(usage(format!(
            "{}: --interval-start/--interval-end need a resource with \
             [resources.incremental] allow_external_schedulers = true",
            config.path.display()
        )));
    }
    Ok(())
}

/// The pipeline file; one that is not there is bad usage (exit status 2).
fn load_config(path: &Path) -> Result<LoadedConfig> {
    if !path.is_file() {
        return Err(usage(format!("{}: no such pipeline file", path.display())));
    }
    LoadedConfig::load(path)
}

fn run(args: RunArgs) -> Result<()> {
    let config = load_config(&args.pipeline)?;
    let mut pipeline = pipeline_from(&config)?;
    if args.interval_start.is_some() || args.interval_end.is_some() {
        require_external_schedulers(&config, &args.resources)?;
    }
    let source = sources::build_source(&config, &args.resources)?;
    pipeline.on_progress(progress::reporter(args.progress));
    let options = RunOptions {
        hints: Hints {
            write_disposition: args.write_disposition.map(|d| match d {
                DispositionArg::Replace => WriteDisposition::Replace,
                DispositionArg::Append => WriteDisposition::Append,
                DispositionArg::Merge => WriteDisposition::Merge,
            }),
            ..Hints::default()
        },
        // The source holds the selected resources only.
        resources: Vec::new(),
        refresh: args.refresh.as_deref().and_then(Refresh::parse),
        reset_state: false,
        interval: match (&args.interval_start, &args.interval_end) {
            (Some(start), Some(end)) => Some(
                Interval::parse(start, end)
                    .map_err(|e| usage(format!("--interval-start/--interval-end: {e}")))?,
            ),
            _ => None,
        },
    };
    let outcome = if source.resource_names().is_empty() {
        // Nothing to read (no file matched): only what earlier runs left is finished.
        pipeline.finish_pending()
    } else {
        pipeline.run_with(source, &options)
    };
    let info = outcome
        .map_err(|e| sources::explain_run_error(&config, e))
        .with_context(|| format!("pipeline {} failed", pipeline.name()))?;
    if args.json {
        let state = pipeline.local_state()?.unwrap_or(Value::Null);
        let out = json!({
            "pipeline": info.pipeline,
            "dataset": info.dataset,
            "load_ids": info.load_ids,
            "tables": info.tables,
            "state": state.get("sources").map(highwater::typed_json::untyped).unwrap_or(Value::Null),
            "error": null,
        });
        println!("{out}");
    } else {
        eprintln!("{}", progress::summary(&pipeline, &info));
    }
    Ok(())
}
