//! Ctrl-C: the command exits with status 130 after one line that says what the next run will do
//! with the work in hand. Nothing else is needed for safety: an interrupted run is a killed run,
//! and the next one finishes (or discards) its package.

use std::sync::Mutex;

/// Where the run is: the stage it is in and the load id, `None` between packages.
static WHERE: Mutex<Option<(&'static str, String)>> = Mutex::new(None);

/// Records that `stage` of package `load_id` started (`None`: nothing is in hand).
pub fn at(stage: Option<(&'static str, String)>) {
    *WHERE.lock().unwrap_or_else(|p| p.into_inner()) = stage;
}

/// Installs the handler: Ctrl-C clears the progress bar, prints the line (with `json`, also
/// `{"error": LINE}` on stdout, as any failed command) and exits with 130.
pub fn install(json: bool) {
    let installed = ctrlc::set_handler(move || {
        let here = WHERE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        crate::progress::clear();
        let line = what_next(here.as_ref().map(|(s, id)| (*s, id.as_str())));
        eprintln!("{line}");
        if json {
            println!("{}", serde_json::json!({ "error": line }));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        // The main thread may be inside DuckDB: `exit` would run C++ static destructors under
        // it. `_exit` leaves as a kill does, which every run survives (the next one finishes
        // the work).
        // SAFETY: `_exit` has no preconditions; it ends the process without returning.
        unsafe { libc::_exit(130) }
    });
    if let Err(e) = installed {
        tracing::debug!("no Ctrl-C handler: {e}");
    }
}

/// The line for an interrupt at `here`.
fn what_next(here: Option<(&str, &str)>) -> String {
    match here {
        Some(("extract", id)) => format!(
            "interrupted while extracting load {id}: nothing of it was committed; the next run \
             discards it and extracts again from the last committed state"
        ),
        Some(("normalize", id)) => format!(
            "interrupted before load {id} was normalized: the next run finishes it (normalize and \
             load) before it extracts anything new"
        ),
        Some((_, id)) => format!(
            "interrupted while loading load {id}: it is not committed; the next run loads it \
             (nothing twice) before it extracts anything new"
        ),
        None => "interrupted: no load was in progress; the next run starts from the last \
                 committed state"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_says_what_the_next_run_does() {
        assert!(what_next(Some(("extract", "1.2"))).contains("discards it"));
        assert!(what_next(Some(("normalize", "1.2"))).contains("finishes it"));
        assert!(what_next(Some(("load", "1.2"))).contains("loads it"));
        assert!(what_next(None).contains("no load was in progress"));
    }
}
