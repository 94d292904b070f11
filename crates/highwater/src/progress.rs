//! What a run reports as it goes: events the pipeline and its stages send to a progress
//! callback (the command turns them into bars or log lines).

/// What a run reports as it goes, for progress bars and log lines.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// A stage started (`extract`, `normalize`, `load`) for a load id.
    Stage {
        /// Stage name.
        stage: &'static str,
        /// The load id.
        load_id: String,
    },
    /// Items pulled from a resource so far.
    Items {
        /// The resource.
        resource: String,
        /// Items so far.
        items: u64,
    },
    /// How far the current stage is: items normalized, or rows loaded.
    Rows {
        /// Stage name (`normalize`, `load`).
        stage: &'static str,
        /// Done so far.
        done: u64,
        /// All there is to do, when known.
        total: Option<u64>,
    },
    /// A package an earlier, interrupted run left behind is being finished.
    Resuming {
        /// The package's load id.
        load_id: String,
        /// The stage it resumes at (`normalize` or `load`).
        stage: &'static str,
    },
    /// A stage finished, with a one-line summary.
    StageDone {
        /// Stage name.
        stage: &'static str,
        /// What it did.
        summary: String,
    },
}
