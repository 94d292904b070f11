//! What a resource sees of its incremental while it runs.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::IncrementalRun;

pub(super) struct ViewSnapshot {
    pub(super) start_value: Option<Value>,
    pub(super) last_value: Option<Value>,
    pub(super) end_value: Option<Value>,
    pub(super) start_out_of_range: bool,
    pub(super) end_out_of_range: bool,
}

/// What a resource sees of its incremental while it runs.
#[derive(Debug, Clone)]
pub struct IncrementalView {
    pub(crate) run: Arc<Mutex<IncrementalRun>>,
}

impl IncrementalView {
    fn snapshot(&self) -> ViewSnapshot {
        self.run
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .view_snapshot()
    }

    /// The start of the range, fixed for the run (stored last value, or `initial_value`).
    pub fn start_value(&self) -> Option<Value> {
        self.snapshot().start_value
    }

    /// The newest cursor value kept so far in this run.
    pub fn last_value(&self) -> Option<Value> {
        self.snapshot().last_value
    }

    /// The end of the range, if any.
    pub fn end_value(&self) -> Option<Value> {
        self.snapshot().end_value
    }

    /// Whether the last item looked at was before the start of the range.
    pub fn start_out_of_range(&self) -> bool {
        self.snapshot().start_out_of_range
    }

    /// Whether the last item looked at was past the end of the range.
    pub fn end_out_of_range(&self) -> bool {
        self.snapshot().end_out_of_range
    }
}
