//! The `highwater` command: runs the pipelines declared in a pipeline file.

mod commands;
mod config;
mod destination;
mod progress;
mod sources;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use highwater::{Hints, Interval, Pipeline, Refresh, RunOptions, WriteDisposition};
use serde_json::json;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
                anyhow::bail!("state: give the pipeline file (highwater state PIPELINE.toml)");
            };
            let config = load_config(&pipeline)?;
            commands::show_state(&config, &pipeline_from(&config)?, resource.as_deref())
        }
        Command::Schema { pipeline, format } => {
            let config = load_config(&pipeline)?;
            commands::schema(&pipeline_from(&config)?, &format)
        }
        Command::Drop {
            pipeline,
            resource,
            json,
        } => {
            let config = load_config(&pipeline)?;
            commands::drop(&config, &pipeline_from(&config)?, &resource, json)
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
    if let Some(dir) = &section.working_dir {
        builder = builder.working_dir(config.resolve(dir));
    }
    Ok(builder.build()?)
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
        anyhow::bail!(
            "{}: --interval-start/--interval-end need a resource with \
             [resources.incremental] allow_external_schedulers = true",
            config.path.display()
        );
    }
    Ok(())
}

fn load_config(path: &Path) -> Result<LoadedConfig> {
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
        resources: args.resources.clone(),
        refresh: args.refresh.as_deref().and_then(Refresh::parse),
        reset_state: false,
        interval: match (&args.interval_start, &args.interval_end) {
            (Some(start), Some(end)) => Some(Interval::parse(start, end)?),
            _ => None,
        },
    };
    let info = pipeline
        .run_with(source, &options)
        .with_context(|| format!("pipeline {} failed", pipeline.name()))?;
    if args.json {
        let state = pipeline.local_state()?.unwrap_or(serde_json::Value::Null);
        let out = json!({
            "pipeline": info.pipeline,
            "dataset": info.dataset,
            "load_ids": info.load_ids,
            "tables": info.tables,
            "state": state.get("sources").cloned().unwrap_or(serde_json::Value::Null),
        });
        println!("{out}");
    } else if info.load_ids.is_empty() {
        eprintln!("nothing new to load");
    }
    Ok(())
}
