//! Incremental loading: a cursor over the items, a range of cursor values to keep, and boundary
//! dedup so that rows at the boundary value are loaded once — dlt's `Incremental`, with typed
//! comparisons and a compact boundary set.
//!
//! [`config`] is what a resource asks for, [`run`] applies it to the items of one run (and
//! [`arrow_filter`] to Arrow batches), [`stored`] reads and writes it in dlt's state, and
//! [`view`] is what the resource sees meanwhile.

mod arrow_filter;
mod config;
mod cursor;
mod interval;
mod path;
mod probe;
mod run;
mod stored;
mod view;

pub use config::{Bound, CustomLastValue, Incremental, LastValueFunc, OnCursorMissing, RowOrder};
pub use cursor::{CursorKind, CursorValue};
pub use interval::Interval;
pub use path::CursorPath;
pub(crate) use run::{IncrementalRun, Verdict};
pub use view::IncrementalView;
