//! Progress on stderr. On a terminal: indicatif bars, a spinner with items and items/s while
//! extracting, then a bar with rows, percentage and time left for normalize and load. As a log
//! (`--progress log`, or `auto` when stderr is not a terminal): a line per finished stage, and
//! for a long stage a line every few seconds with the same figures.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use highwater::ProgressEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// Always a bar.
    Bar,
    /// Plain lines.
    Log,
    /// Nothing.
    None,
}

/// Seconds between two log lines of one stage (`HIGHWATER_PROGRESS_INTERVAL` overrides).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Whether stderr may carry colour: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The bar on screen, if any: cleared before anything else is printed on an interrupt.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Clears the bar on screen.
pub fn clear() {
    if let Some(bar) = BAR.lock().unwrap_or_else(|p| p.into_inner()).take() {
        bar.finish_and_clear();
    }
}

fn show(bar: Option<ProgressBar>) {
    let mut shown = BAR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(old) = shown.take() {
        old.finish_and_clear();
    }
    *shown = bar;
}

/// What a stage has done so far, measured by a (hidden, when logging) indicatif bar.
struct Stage {
    name: &'static str,
    load_id: String,
    /// Counts items or rows, and knows rate and time left once it has a length.
    meter: ProgressBar,
    unit: &'static str,
    last_line: Instant,
}

struct Reporter {
    bars: bool,
    started: Instant,
    stage: Option<Stage>,
    log_every: Duration,
}

impl Reporter {
    /// A new meter for `stage`: a bar on screen, or a hidden one that only measures.
    fn start(&mut self, name: &'static str, load_id: String) {
        let meter = if self.bars {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(format!("{name} {load_id}"));
            bar.enable_steady_tick(Duration::from_millis(120));
            show(Some(bar.clone()));
            bar
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        };
        self.stage = Some(Stage {
            name,
            load_id,
            meter,
            unit: if name == "load" { "rows" } else { "items" },
            last_line: Instant::now(),
        });
    }

    /// `done` of `total` for the stage on now.
    fn advance(&mut self, done: u64, total: Option<u64>, what: Option<&str>) {
        let bars = self.bars;
        let log_every = self.log_every;
        let Some(stage) = &mut self.stage else {
            return;
        };
        if let Some(total) = total {
            if stage.meter.length() != Some(total) {
                stage.meter.set_length(total);
                if bars {
                    stage.meter.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {human_pos}/{human_len} {msg} ({percent}%, {eta} left)",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    stage.meter.set_message(stage.unit);
                }
            }
        }
        stage.meter.set_position(done);
        if bars {
            if let Some(what) = what {
                let rate = stage.meter.per_sec();
                stage
                    .meter
                    .set_message(format!("{what}: {done} {} ({rate:.0}/s)", stage.unit));
            }
        } else if stage.last_line.elapsed() >= log_every {
            eprintln!("{}", line(stage, what));
            stage.last_line = Instant::now();
        }
    }

    /// A line for a stage that has been quiet for a while (one big file loading).
    fn heartbeat(&mut self) {
        let log_every = self.log_every;
        if let Some(stage) = &mut self.stage {
            if stage.last_line.elapsed() >= log_every {
                eprintln!("{}", line(stage, None));
                stage.last_line = Instant::now();
            }
        }
    }
}

/// `normalize 1.2: 40960/100000 items (41%, about 3 s left)`, or with items/s while the size is
/// unknown.
fn line(stage: &Stage, what: Option<&str>) -> String {
    let done = stage.meter.position();
    let elapsed = stage.meter.elapsed().as_secs_f64();
    let head = match what {
        Some(what) => format!("{} {}: {what}", stage.name, stage.load_id),
        None => format!("{} {}", stage.name, stage.load_id),
    };
    match stage.meter.length() {
        Some(total) if total > 0 => format!(
            "{head}: {done}/{total} {} ({}%, about {} s left; {elapsed:.0} s so far)",
            stage.unit,
            done * 100 / total,
            stage.meter.eta().as_secs()
        ),
        _ => format!(
            "{head}: {done} {} ({:.0}/s; {elapsed:.0} s so far)",
            stage.unit,
            stage.meter.per_sec()
        ),
    }
}

/// A progress callback for [`highwater::Pipeline::on_progress`]; it also tells the Ctrl-C
/// handler where the run is.
pub fn reporter(mode: ProgressMode) -> impl Fn(ProgressEvent) + Send + Sync + 'static {
    let bars = match mode {
        ProgressMode::Auto => std::io::stderr().is_terminal(),
        ProgressMode::Bar => true,
        ProgressMode::Log | ProgressMode::None => false,
    };
    let quiet = mode == ProgressMode::None;
    let log_every = std::env::var("HIGHWATER_PROGRESS_INTERVAL")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(LOG_EVERY, Duration::from_secs_f64);
    let state = Arc::new(Mutex::new(Reporter {
        bars,
        started: Instant::now(),
        stage: None,
        log_every,
    }));
    if !bars && !quiet {
        let state = Arc::downgrade(&state);
        std::thread::spawn(move || loop {
            std::thread::sleep(log_every.max(Duration::from_millis(200)));
            let Some(state) = state.upgrade() else { return };
            state.lock().unwrap_or_else(|p| p.into_inner()).heartbeat();
        });
    }
    move |event| {
        let mut r = state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            ProgressEvent::Stage { stage, load_id } => {
                crate::interrupt::at(Some((stage, load_id.clone())));
                if !quiet {
                    r.start(stage, load_id);
                }
            }
            ProgressEvent::Resuming { load_id, stage } => {
                // Not progress: what the run does before anything new, said even without it.
                crate::interrupt::at(Some((stage, load_id.clone())));
                clear();
                eprintln!(
                    "finishing load {load_id}, which an interrupted run left unfinished \
                     (resuming at {stage})"
                );
            }
            ProgressEvent::Items { resource, items } if !quiet => {
                r.advance(items, None, Some(&resource));
            }
            ProgressEvent::Rows { done, total, .. } if !quiet => r.advance(done, total, None),
            ProgressEvent::StageDone { stage, summary } => {
                // After extract the package waits for normalize; after load nothing is in hand.
                let next = match (stage, &r.stage) {
                    ("extract", Some(s)) => Some(("normalize", s.load_id.clone())),
                    _ => None,
                };
                crate::interrupt::at(next);
                if quiet {
                    return;
                }
                let secs = r
                    .stage
                    .take()
                    .map_or(0.0, |s| s.meter.elapsed().as_secs_f64());
                clear();
                eprintln!(
                    "{stage}: {summary} ({secs:.2} s, {:.2} s total)",
                    r.started.elapsed().as_secs_f64()
                );
            }
            _ => {}
        }
    }
}

/// The last line of a run, as dlt's: what was loaded, to which destination and dataset.
pub fn summary(pipeline: &highwater::Pipeline, info: &highwater::LoadInfo) -> String {
    if info.load_ids.is_empty() {
        return format!(
            "pipeline {}: nothing new to load (destination {}, dataset {})",
            pipeline.name(),
            pipeline.destination().describe(),
            pipeline.dataset()
        );
    }
    let tables: Vec<String> = info
        .tables
        .iter()
        .map(|(table, rows)| format!("{table} {rows}"))
        .collect();
    format!(
        "pipeline {}: {} load package(s) loaded to destination {}, dataset {}; rows per table: {}; load id(s) {}",
        pipeline.name(),
        info.load_ids.len(),
        pipeline.destination().describe(),
        pipeline.dataset(),
        if tables.is_empty() {
            "none (state only)".to_string()
        } else {
            tables.join(", ")
        },
        info.load_ids.join(", ")
    )
}
