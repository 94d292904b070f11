//! Progress on stderr: a spinner with items and items/s on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use highwater::ProgressEvent;
use indicatif::{ProgressBar, ProgressStyle};

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

struct Reporter {
    bar: Option<ProgressBar>,
    started: Instant,
    stage_started: Instant,
    last_line: Instant,
}

/// A progress callback for [`highwater::Pipeline::on_progress`].
pub fn reporter(mode: ProgressMode) -> impl Fn(ProgressEvent) + Send + Sync + 'static {
    let use_bar = match mode {
        ProgressMode::Auto => std::io::stderr().is_terminal(),
        ProgressMode::Bar => true,
        ProgressMode::Log | ProgressMode::None => false,
    };
    let quiet = mode == ProgressMode::None;
    let state = Mutex::new(Reporter {
        bar: None,
        started: Instant::now(),
        stage_started: Instant::now(),
        last_line: Instant::now(),
    });
    move |event| {
        if quiet {
            return;
        }
        let mut r = state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            ProgressEvent::Stage { stage, load_id } => {
                r.stage_started = Instant::now();
                if use_bar {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar.set_message(format!("{stage} {load_id}"));
                    r.bar = Some(bar);
                }
            }
            ProgressEvent::Items { resource, items } => {
                let secs = r.stage_started.elapsed().as_secs_f64().max(1e-3);
                let rate = items as f64 / secs;
                if let Some(bar) = &r.bar {
                    bar.set_message(format!(
                        "extract {resource}: {items} items ({rate:.0} items/s)"
                    ));
                } else if r.last_line.elapsed() >= Duration::from_secs(5) {
                    eprintln!("extract {resource}: {items} items ({rate:.0} items/s)");
                    r.last_line = Instant::now();
                }
            }
            ProgressEvent::StageDone { stage, summary } => {
                let secs = r.stage_started.elapsed().as_secs_f64();
                if let Some(bar) = r.bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!(
                    "{stage}: {summary} ({secs:.2} s, {:.2} s total)",
                    r.started.elapsed().as_secs_f64()
                );
            }
        }
    }
}
