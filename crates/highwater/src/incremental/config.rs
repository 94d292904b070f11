//! How a resource asks for incremental loading: the cursor, the range, the last-value function
//! (dlt's `dlt.sources.incremental` arguments).

use std::sync::Arc;

use serde_json::Value;

use super::{CursorKind, CursorPath, Interval};
use crate::error::Result;

/// A custom last-value function: folds the cursor values given (one or two: the item's and the
/// running last value) into the new last value, as dlt's `last_value_func` callables do.
pub type CustomLastValue = Arc<dyn Fn(&[&Value]) -> Value + Send + Sync>;

/// Which of two cursor values is the better (newer) one.
#[derive(Clone, Default)]
pub enum LastValueFunc {
    /// The highest value is the newest (default).
    #[default]
    Max,
    /// The lowest value is the newest.
    Min,
    /// A function over raw JSON values (e.g. a map of last values per event type).
    Custom(CustomLastValue),
}

impl std::fmt::Debug for LastValueFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastValueFunc::Max => write!(f, "Max"),
            LastValueFunc::Min => write!(f, "Min"),
            LastValueFunc::Custom(_) => write!(f, "Custom(<fn>)"),
        }
    }
}

/// Whether a range bound includes values equal to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Equal values are in range.
    Closed,
    /// Equal values are out of range.
    Open,
}

/// The order the resource yields cursor values in, so the run can stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// Ascending cursor values.
    Asc,
    /// Descending cursor values.
    Desc,
}

/// What to do with an item that has no cursor value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCursorMissing {
    /// Fail the run, naming the item (default).
    #[default]
    Raise,
    /// Keep the item; it does not move the cursor.
    Include,
    /// Drop the item.
    Exclude,
}

/// The configuration of an incremental (dlt's `dlt.sources.incremental`).
#[derive(Debug, Clone)]
pub struct Incremental {
    pub(crate) cursor_path: CursorPath,
    pub(crate) initial_value: Option<Value>,
    pub(crate) end_value: Option<Value>,
    pub(crate) last_value_func: LastValueFunc,
    pub(crate) primary_key: Option<Vec<String>>,
    pub(crate) range_start: Bound,
    pub(crate) range_end: Bound,
    pub(crate) row_order: Option<RowOrder>,
    pub(crate) on_cursor_value_missing: OnCursorMissing,
    pub(crate) lag: Option<f64>,
    pub(crate) allow_external_schedulers: bool,
}

impl Incremental {
    /// An incremental over `cursor_path` (a field name or JSONPath such as `$.item.ts`).
    pub fn new(cursor_path: &str) -> Result<Self> {
        Ok(Incremental {
            cursor_path: CursorPath::parse(cursor_path)?,
            initial_value: None,
            end_value: None,
            last_value_func: LastValueFunc::Max,
            primary_key: None,
            range_start: Bound::Closed,
            range_end: Bound::Open,
            row_order: None,
            on_cursor_value_missing: OnCursorMissing::Raise,
            lag: None,
            allow_external_schedulers: false,
        })
    }

    /// The value to start from on the first run.
    pub fn initial_value(mut self, value: impl Into<Value>) -> Self {
        self.initial_value = Some(value.into());
        self
    }

    /// The end of the range; makes the run a stateless backfill.
    pub fn end_value(mut self, value: impl Into<Value>) -> Self {
        self.end_value = Some(value.into());
        self
    }

    /// `max` (default), `min`, or a custom function.
    pub fn last_value_func(mut self, func: LastValueFunc) -> Self {
        self.last_value_func = func;
        self
    }

    /// The dedup key; an empty list disables boundary dedup. Defaults to the resource's key.
    pub fn primary_key<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.primary_key = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the start value itself is in range (closed, default) or not (open).
    pub fn range_start(mut self, bound: Bound) -> Self {
        self.range_start = bound;
        self
    }

    /// Whether the end value itself is in range (closed) or not (open, default).
    pub fn range_end(mut self, bound: Bound) -> Self {
        self.range_end = bound;
        self
    }

    /// The order of cursor values in the resource, to stop pulling once out of range. The stop
    /// comes after the item that left the range: a page (`Item::Page`) is filtered whole first,
    /// as dlt does with a yielded page; JSON Lines stop after the line, as dlt does for a resource
    /// yielding rows one by one.
    pub fn row_order(mut self, order: RowOrder) -> Self {
        self.row_order = Some(order);
        self
    }

    /// What to do when an item has no cursor value.
    pub fn on_cursor_value_missing(mut self, mode: OnCursorMissing) -> Self {
        self.on_cursor_value_missing = mode;
        self
    }

    /// Re-reads a window behind the last value: seconds, days or cursor units.
    pub fn lag(mut self, lag: f64) -> Self {
        self.lag = Some(lag);
        self
    }

    /// Lets an external scheduler's interval set the range.
    pub fn allow_external_schedulers(mut self, allow: bool) -> Self {
        self.allow_external_schedulers = allow;
        self
    }

    /// The key of this incremental in the resource state (`incremental.<cursor_path>`).
    pub(crate) fn state_key(&self) -> &str {
        self.cursor_path.as_str()
    }

    /// The cursor path as given.
    pub fn cursor_path(&self) -> &str {
        self.cursor_path.as_str()
    }

    /// Whether this incremental neither reads nor writes state (an `end_value` is set).
    pub fn is_stateless(&self) -> bool {
        self.end_value.is_some()
    }

    /// Takes the range from an external scheduler's interval (when allowed), converted to the
    /// cursor's type: a number cursor gets Unix seconds, a date cursor dates, others ISO strings.
    pub(crate) fn join_interval(&mut self, interval: &Interval, hinted: Option<CursorKind>) {
        if !self.allow_external_schedulers {
            return;
        }
        let kind = hinted
            .or_else(|| self.initial_value.as_ref().and_then(CursorKind::infer))
            .unwrap_or(CursorKind::Timestamp);
        let convert = |t: &chrono::DateTime<chrono::Utc>| -> Value {
            match kind {
                CursorKind::Number => {
                    if t.timestamp_subsec_micros() == 0 {
                        Value::from(t.timestamp())
                    } else {
                        Value::from(t.timestamp_micros() as f64 / 1e6)
                    }
                }
                CursorKind::Date => Value::String(t.format("%Y-%m-%d").to_string()),
                _ => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            }
        };
        self.initial_value = Some(convert(&interval.start));
        self.end_value = Some(convert(&interval.end));
    }
}
