//! Incremental loading: a cursor over the items, a range of cursor values to keep, and boundary
//! dedup so that rows at the boundary value are loaded once — dlt's `Incremental`, with typed
//! comparisons and a compact boundary set.

mod arrow_filter;
mod cursor;
mod path;
mod probe;
mod stored;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Display;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

pub use cursor::{CursorKind, CursorValue};
pub use path::CursorPath;

use crate::error::{Error, Result};
use crate::timeparse;
use probe::Probed;
use stored::StoredForm;

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

/// An interval given by an external scheduler (Airflow's data interval, a cron wrapper).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Start (inclusive by default).
    pub start: chrono::DateTime<chrono::Utc>,
    /// End (exclusive by default).
    pub end: chrono::DateTime<chrono::Utc>,
}

impl Interval {
    /// Parses two ISO-8601 timestamps (or dates); the end must not be before the start.
    pub fn parse(start: &str, end: &str) -> Result<Interval> {
        let parse = |what: &str, s: &str| {
            crate::timeparse::parse_timestamp_or_date(s.trim()).ok_or_else(|| {
                Error::Config(format!(
                    "interval {what} {s:?} is not an ISO-8601 timestamp"
                ))
            })
        };
        let interval = Interval {
            start: parse("start", start)?,
            end: parse("end", end)?,
        };
        if interval.end < interval.start {
            return Err(Error::Config(format!(
                "interval end {end} is before its start {start}"
            )));
        }
        Ok(interval)
    }

    /// The interval from the environment: `HIGHWATER_INTERVAL_START/END`, else dlt's
    /// `DLT_INTERVAL_START/END`; `None` when neither pair is set.
    pub fn from_env() -> Result<Option<Interval>> {
        for (start, end) in [
            ("HIGHWATER_INTERVAL_START", "HIGHWATER_INTERVAL_END"),
            ("DLT_INTERVAL_START", "DLT_INTERVAL_END"),
        ] {
            match (std::env::var(start), std::env::var(end)) {
                (Ok(s), Ok(e)) => return Interval::parse(&s, &e).map(Some),
                (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
                    return Err(Error::Config(format!(
                        "set both {start} and {end}, or neither"
                    )));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// Whether an item is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    Drop,
}

/// The incremental while its resource runs: the range, the moving last value, the boundary set.
#[derive(Debug)]
pub(crate) struct IncrementalRun {
    config: Incremental,
    resource: String,
    kind: Option<CursorKind>,
    initial_raw: Option<Value>,
    start_raw: Option<Value>,
    start: Option<CursorValue>,
    /// The start as [`timeparse::utc_second`] numbers it, when rows can be checked against it by
    /// that number alone: a timestamp cursor, the `max` function, no end value.
    start_second: Option<u64>,
    end: Option<CursorValue>,
    last: Option<CursorValue>,
    dedup_key: Option<Vec<String>>,
    dedup: bool,
    start_hashes: HashSet<String>,
    /// The stored boundary set was written before dlt 1.29 (and is matched in its format).
    start_legacy: bool,
    hashes: HashSet<String>,
    /// Hashes added to `hashes` take the old format while it holds the stored set.
    hashes_legacy: bool,
    /// The key text of the newest best row, hashed only when the run ends: with an ascending
    /// cursor every row is a new best, and most never stay at the boundary.
    best_key: Option<String>,
    /// How the state holds cursor values (as the rows did, or dlt's typed JSON).
    form: StoredForm,
    /// Whether no last value was stored (a first run): the form may follow the rows' type.
    fresh: bool,
    /// Whether a row set a new last value in this run.
    moved: bool,
    /// The text of the newest best row's cursor when it was a string, stored as it was.
    last_text: Option<String>,
    start_out_of_range: bool,
    end_out_of_range: bool,
    kept_rows: u64,
    custom_last: Option<Value>,
    /// Whether a column hint gave the cursor's type (else the values or the stored state do).
    hinted: bool,
}

impl IncrementalRun {
    /// Binds `config` to a resource and its stored incremental state (`None` when stateless).
    pub(crate) fn bind(
        config: Incremental,
        resource: &str,
        resource_key: Option<&[String]>,
        hinted_kind: Option<CursorKind>,
        stored: Option<&Value>,
    ) -> Result<Self> {
        let dedup_key = match &config.primary_key {
            Some(key) => Some(key.clone()),
            None => resource_key.map(<[String]>::to_vec),
        };
        let dedup = config.range_start == Bound::Closed
            && config.end_value.is_none()
            && config.lag.is_none()
            && dedup_key.as_ref().is_none_or(|k| !k.is_empty());
        let stored = if config.is_stateless() { None } else { stored };
        let stored_last = stored
            .and_then(|s| s.get("last_value"))
            .filter(|v| !v.is_null());
        let form = StoredForm::of(stored_last);
        let start_hashes: HashSet<String> = stored
            .and_then(|s| s.get("unique_hashes"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let start_raw = stored_last
            .cloned()
            .or_else(|| config.initial_value.clone());
        let mut run = IncrementalRun {
            initial_raw: config.initial_value.clone(),
            start_raw,
            config,
            resource: resource.to_string(),
            kind: hinted_kind,
            start: None,
            start_second: None,
            end: None,
            last: None,
            dedup_key,
            dedup,
            hashes: start_hashes.clone(),
            best_key: None,
            start_legacy: stored::is_legacy(&start_hashes),
            hashes_legacy: stored::is_legacy(&start_hashes),
            start_hashes,
            form,
            fresh: stored_last.is_none(),
            moved: false,
            last_text: None,
            start_out_of_range: false,
            end_out_of_range: false,
            kept_rows: 0,
            custom_last: None,
            hinted: hinted_kind.is_some(),
        };
        if matches!(run.config.last_value_func, LastValueFunc::Custom(_)) {
            // Custom functions compare raw values; the range is not parsed.
            run.custom_last = run.start_raw.clone();
            return Ok(run);
        }
        if run.kind.is_none() {
            // A stored last value came from the data, so it tells the cursor's kind best.
            run.kind = stored_last.and_then(stored::kind_of);
        }
        if let Some(kind) = run.kind {
            run.resolve(kind, &"")?;
        }
        Ok(run)
    }

    /// Parses the range once the cursor's kind is known.
    fn resolve(&mut self, kind: CursorKind, location: &dyn Display) -> Result<()> {
        for (key, raw) in [
            ("initial_value", &self.initial_raw),
            ("end_value", &self.config.end_value),
        ] {
            if let Some(raw) = raw {
                self.check_bound_type(key, raw, kind)?;
            }
        }
        self.kind = Some(kind);
        let mut start = match &self.start_raw {
            Some(raw) => Some(self.parse_bound(raw, kind, "start value", location)?),
            None => None,
        };
        let lag = match self.config.last_value_func {
            LastValueFunc::Custom(_) => None,
            _ => self.config.lag,
        };
        if let (Some(lag), Some(value)) = (lag, &start) {
            let sign = match self.config.last_value_func {
                LastValueFunc::Min => 1.0,
                _ => -1.0,
            };
            let mut lagged = value.shifted(lag, sign);
            if let Some(initial) = &self.initial_raw {
                let initial = self.parse_bound(initial, kind, "initial_value", location)?;
                if self.better(&lagged, &initial) == std::cmp::Ordering::Less {
                    lagged = initial;
                }
            }
            start = Some(lagged);
        }
        self.end = match &self.config.end_value {
            Some(raw) => Some(self.parse_bound(raw, kind, "end_value", location)?),
            None => None,
        };
        self.start_second = match (&start, &self.config.last_value_func, &self.end) {
            (Some(CursorValue::Timestamp(t)), LastValueFunc::Max, None) => {
                timeparse::utc_second_of(t)
            }
            _ => None,
        };
        self.last = start.clone();
        self.start = start;
        Ok(())
    }

    /// A bound given in the configuration must be of the cursor's type as written: text that
    /// parses as it, or a number for a number cursor (and for a timestamp cursor a hint
    /// declares, whose values may be Unix seconds). A number for a timestamp cursor read from
    /// ISO strings (`20240101`) would otherwise compare as 1970-08-23.
    fn check_bound_type(&self, key: &'static str, raw: &Value, kind: CursorKind) -> Result<()> {
        let fits = match raw {
            Value::Number(_) => {
                kind == CursorKind::Number || (self.hinted && kind == CursorKind::Timestamp)
            }
            Value::String(s) => CursorValue::parse_str(s, kind).is_some(),
            _ => false,
        };
        if fits {
            return Ok(());
        }
        Err(Error::BoundType {
            resource: self.resource.clone(),
            cursor_path: self.config.cursor_path.as_str().to_string(),
            key,
            value: raw.to_string(),
            expected: kind.name(),
        })
    }

    fn parse_bound(
        &self,
        raw: &Value,
        kind: CursorKind,
        what: &str,
        location: &dyn Display,
    ) -> Result<CursorValue> {
        CursorValue::parse(&stored::untyped(raw), kind).ok_or_else(|| {
            self.error(
                location,
                format!(
                    "{what} {raw} cannot be compared with cursor values of type {}",
                    kind.name()
                ),
            )
        })
    }

    fn error(&self, location: impl Display, message: String) -> Error {
        Error::Incremental {
            location: location.to_string(),
            resource: self.resource.clone(),
            cursor_path: self.config.cursor_path.as_str().to_string(),
            message,
        }
    }

    /// `Greater` when `a` is newer than `b` under the last-value function.
    fn better(&self, a: &CursorValue, b: &CursorValue) -> std::cmp::Ordering {
        match self.config.last_value_func {
            LastValueFunc::Min => b.compare(a),
            _ => a.compare(b),
        }
    }

    /// Decides whether `item` is kept and moves the last value (dlt's per-row filter).
    pub(crate) fn filter(&mut self, item: &Value, location: &dyn Display) -> Result<Verdict> {
        if let LastValueFunc::Custom(f) = &self.config.last_value_func {
            let f = f.clone();
            return self.filter_custom(&f, item, location);
        }
        let raw = match self.config.cursor_path.find(item) {
            Some(v) if !v.is_null() => v,
            found => {
                return match self.config.on_cursor_value_missing {
                    OnCursorMissing::Raise => Err(self.error(
                        location,
                        if found.is_some() {
                            "cursor value is null".to_string()
                        } else {
                            "item has no cursor value".to_string()
                        },
                    )),
                    OnCursorMissing::Include => {
                        self.start_out_of_range = false;
                        self.end_out_of_range = false;
                        self.kept_rows += 1;
                        Ok(Verdict::Keep)
                    }
                    OnCursorMissing::Exclude => {
                        self.start_out_of_range = false;
                        self.end_out_of_range = false;
                        Ok(Verdict::Drop)
                    }
                };
            }
        };
        let kind = match self.kind {
            Some(kind) => kind,
            None => {
                let kind = CursorKind::infer(raw).ok_or_else(|| {
                    self.error(
                        location,
                        format!("cursor value {raw} is not a number, text, date or timestamp"),
                    )
                })?;
                self.resolve(kind, location)?;
                kind
            }
        };
        let value = CursorValue::parse(raw, kind).ok_or_else(|| {
            self.error(
                location,
                format!(
                    "cursor value {} does not match the cursor's type {}",
                    crate::error::preview(raw),
                    kind.name()
                ),
            )
        })?;
        self.judge(value, raw.as_str(), &mut |run| run.row_key(item, location))
    }

    /// The range and boundary checks of [`Self::filter`] for a row's cursor value. `key` gives
    /// the row's dedup text, asked for only when the row is the newest or at a boundary.
    fn judge(
        &mut self,
        value: CursorValue,
        text: Option<&str>,
        key: &mut dyn FnMut(&Self) -> Result<String>,
    ) -> Result<Verdict> {
        use std::cmp::Ordering::*;
        self.start_out_of_range = false;
        self.end_out_of_range = false;
        if let Some(end) = &self.end {
            let order = self.better(&value, end);
            if order == Greater || (order == Equal && self.config.range_end == Bound::Open) {
                self.end_out_of_range = true;
                return Ok(Verdict::Drop);
            }
        }
        let is_new_best = match &self.last {
            None => true,
            Some(last) => self.better(&value, last) == Greater,
        };
        if is_new_best {
            self.last = Some(value);
            self.set_last_text(text);
            if self.dedup {
                self.best_key = Some(key(self)?);
                self.hashes.clear();
                self.hashes_legacy = false;
            }
            self.kept_rows += 1;
            return Ok(Verdict::Keep);
        }
        let mut row_key = None;
        if let Some(start) = &self.start {
            let order = self.better(&value, start);
            if order == Equal && self.config.range_start == Bound::Open {
                self.start_out_of_range = true;
                return Ok(Verdict::Drop);
            }
            if order == Less {
                self.start_out_of_range = true;
                return Ok(Verdict::Drop);
            }
            if order == Equal && self.dedup {
                let text = key(self)?;
                if self.was_loaded(&text) {
                    self.start_out_of_range = true;
                    return Ok(Verdict::Drop);
                }
                row_key = Some(text);
            }
        }
        if self.dedup
            && self
                .last
                .as_ref()
                .is_some_and(|last| value.compare(last) == Equal)
        {
            let text = match row_key {
                Some(text) => text,
                None => key(self)?,
            };
            self.add_boundary_row(&text);
        }
        self.kept_rows += 1;
        Ok(Verdict::Keep)
    }

    /// dlt's equality-based filter for a custom last-value function over raw JSON values.
    fn filter_custom(
        &mut self,
        f: &CustomLastValue,
        item: &Value,
        location: &dyn Display,
    ) -> Result<Verdict> {
        let Some(v) = self.config.cursor_path.find(item).filter(|v| !v.is_null()) else {
            return match self.config.on_cursor_value_missing {
                OnCursorMissing::Raise => {
                    Err(self.error(location, "item has no cursor value".to_string()))
                }
                OnCursorMissing::Include => {
                    self.kept_rows += 1;
                    Ok(Verdict::Keep)
                }
                OnCursorMissing::Exclude => Ok(Verdict::Drop),
            };
        };
        self.start_out_of_range = false;
        self.end_out_of_range = false;
        let alone = f(&[v]);
        if let Some(end) = self.config.end_value.clone() {
            if f(&[v, &end]) != end || (self.config.range_end == Bound::Open && alone == end) {
                self.end_out_of_range = true;
                return Ok(Verdict::Drop);
            }
        }
        let new = match &self.custom_last {
            Some(last) => f(&[v, last]),
            None => alone.clone(),
        };
        if self.custom_last.as_ref() != Some(&new) {
            self.custom_last = Some(new);
            self.moved = true;
            if self.dedup {
                self.best_key = Some(self.row_key(item, location)?);
                self.hashes.clear();
                self.hashes_legacy = false;
            }
            self.kept_rows += 1;
            return Ok(Verdict::Keep);
        }
        if let Some(start) = self.start_raw.clone() {
            if self.config.range_start == Bound::Open && alone == start {
                self.start_out_of_range = true;
                return Ok(Verdict::Drop);
            }
            if f(&[v, &start]) == start {
                if alone != start {
                    self.start_out_of_range = true;
                    return Ok(Verdict::Drop);
                }
                if self.dedup && self.was_loaded(&self.row_key(item, location)?) {
                    self.start_out_of_range = true;
                    return Ok(Verdict::Drop);
                }
            }
        }
        if self.dedup && self.custom_last.as_ref() == Some(&alone) {
            let text = self.row_key(item, location)?;
            self.add_boundary_row(&text);
        }
        self.kept_rows += 1;
        Ok(Verdict::Keep)
    }

    /// Drops a row from the text of its cursor alone when it is plainly out of range (before
    /// the start or past the end); rows in range or at a boundary go through [`Self::filter`].
    /// Sets the out-of-range flags as [`Self::filter`] would for a dropped row.
    pub(crate) fn prefilter(&mut self, json: &[u8]) -> bool {
        use std::cmp::Ordering::*;
        if matches!(self.config.last_value_func, LastValueFunc::Custom(_)) {
            return false;
        }
        let Some(field) = self.config.cursor_path.single_field() else {
            return false;
        };
        let value = match (self.kind, probe::probe(json, field)) {
            (_, None) => return false,
            // The common case, a string cursor of a known kind: no value is built.
            (Some(kind), Some(Probed::Plain(text))) => {
                if let Some(before) = self.before_start_by_second(text) {
                    return before;
                }
                std::str::from_utf8(text)
                    .ok()
                    .and_then(|text| CursorValue::parse_str(text, kind))
            }
            (_, Some(probed)) => {
                let Some(raw) = probed.into_value() else {
                    return false;
                };
                if raw.is_null() {
                    return false;
                }
                let kind = match self.kind {
                    Some(kind) => kind,
                    None => match CursorKind::infer(&raw) {
                        Some(kind) if self.resolve(kind, &"").is_ok() => kind,
                        _ => return false,
                    },
                };
                CursorValue::parse(&raw, kind)
            }
        };
        let Some(value) = value else {
            return false;
        };
        if let Some(end) = &self.end {
            let order = self.better(&value, end);
            if order == Greater || (order == Equal && self.config.range_end == Bound::Open) {
                self.start_out_of_range = false;
                self.end_out_of_range = true;
                return true;
            }
        }
        if let Some(start) = &self.start {
            let order = self.better(&value, start);
            if order == Less || (order == Equal && self.config.range_start == Bound::Open) {
                self.start_out_of_range = true;
                self.end_out_of_range = false;
                return true;
            }
        }
        false
    }

    /// Whether a timestamp cursor's text lies before the start, read from its digits alone
    /// (most rows of a second run): `None` when the text is not a plain UTC timestamp or falls in
    /// the start's own second, and parsing decides. A row before the start sets the
    /// out-of-range flags as [`Self::filter`] would for it.
    fn before_start_by_second(&mut self, text: &[u8]) -> Option<bool> {
        let start = self.start_second?;
        match timeparse::utc_second(text)?.cmp(&start) {
            std::cmp::Ordering::Less => {
                self.start_out_of_range = true;
                self.end_out_of_range = false;
                Some(true)
            }
            std::cmp::Ordering::Greater => Some(false),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// [`Self::filter`] for a row still in JSON text, reading its cursor and dedup key from the
    /// text alone: rows before the start cost a scan, kept rows no parse into a value tree.
    /// `None` when the text cannot be read that way (nested cursor, whole-row hashing, custom
    /// function, cursor kind not known yet, cursor not found or malformed text), and the caller
    /// parses the row.
    pub(crate) fn filter_text(
        &mut self,
        json: &[u8],
        location: &dyn Display,
    ) -> Option<Result<Verdict>> {
        if matches!(self.config.last_value_func, LastValueFunc::Custom(_)) {
            return None;
        }
        let field = self.config.cursor_path.single_field()?;
        let kind = self.kind?;
        if self.dedup && self.dedup_key.is_none() {
            return None;
        }
        let probed = probe::probe(json, field)?;
        let (value, text) = match &probed {
            Probed::Plain(text) => {
                if self.before_start_by_second(text) == Some(true) {
                    return Some(Ok(Verdict::Drop));
                }
                let text = std::str::from_utf8(text).ok()?;
                (CursorValue::parse_str(text, kind)?, Some(text))
            }
            Probed::Value(raw) if !raw.is_null() => (CursorValue::parse(raw, kind)?, raw.as_str()),
            Probed::Value(_) => return None,
        };
        // Asked for only with dedup on, so with a key.
        Some(self.judge(value, text, &mut |run| {
            let key = run.dedup_key.as_deref().unwrap_or_default();
            run.key_text(
                key,
                |k| probe::probe_field(json, k).map(Cow::Owned),
                location,
            )
        }))
    }

    /// Records the string text of a new last value's cursor (stored as it was).
    fn set_last_text(&mut self, text: Option<&str>) {
        self.moved = true;
        match (text, &mut self.last_text) {
            (Some(text), Some(buffer)) => {
                buffer.clear();
                buffer.push_str(text);
            }
            (Some(text), slot) => *slot = Some(text.to_string()),
            (None, slot) => *slot = None,
        }
    }

    /// Whether a row at the start value with this key text was loaded by the previous run (its
    /// hash is in the stored boundary set, in either of dlt's forms of a one-column key).
    fn was_loaded(&self, key_text: &str) -> bool {
        stored::key_forms(key_text, self.one_column_key()).any(|form| {
            self.start_hashes
                .contains(&stored::key_hash(&form, self.start_legacy))
        })
    }

    /// Adds a row at the last value to the boundary set.
    fn add_boundary_row(&mut self, key_text: &str) {
        for form in stored::key_forms(key_text, self.one_column_key()) {
            let hash = stored::key_hash(&form, self.hashes_legacy);
            self.hashes.insert(hash);
        }
    }

    /// Whether the dedup key is one column (whose hash dlt takes in two forms).
    fn one_column_key(&self) -> bool {
        self.dedup_key.as_ref().is_some_and(|k| k.len() == 1)
    }

    /// The canonical text a row's boundary hash is made from: its dedup key, or its whole
    /// content without a key.
    fn row_key(&self, item: &Value, location: &dyn Display) -> Result<String> {
        match &self.dedup_key {
            Some(key) => self.key_text(key, |k| item.get(k).map(Cow::Borrowed), location),
            None => {
                let mut canonical = String::new();
                write_canonical(item, &mut canonical);
                Ok(canonical)
            }
        }
    }

    /// The canonical text of the dedup `key`, its fields read by `field`.
    fn key_text<'v>(
        &self,
        key: &[String],
        mut field: impl FnMut(&str) -> Option<Cow<'v, Value>>,
        location: &dyn Display,
    ) -> Result<String> {
        let missing = |k: &str| {
            self.error(
                location,
                format!("item has no primary key field {k:?} for boundary dedup"),
            )
        };
        let mut canonical = String::new();
        if let [k] = key {
            let value = field(k).ok_or_else(|| missing(k))?;
            write_canonical(&value, &mut canonical);
        } else {
            let values = key
                .iter()
                .map(|k| field(k).map(Cow::into_owned).ok_or_else(|| missing(k)))
                .collect::<Result<Vec<_>>>()?;
            write_canonical(&Value::Array(values), &mut canonical);
        }
        Ok(canonical)
    }

    /// Whether the resource should stop being pulled (row order known and range left).
    pub(crate) fn should_stop(&self) -> bool {
        match self.config.row_order {
            Some(RowOrder::Asc) => self.end_out_of_range,
            Some(RowOrder::Desc) => self.start_out_of_range,
            None => false,
        }
    }

    /// Whether state is neither read nor written.
    pub(crate) fn is_stateless(&self) -> bool {
        self.config.is_stateless()
    }

    /// The key of this incremental in the resource state (`incremental.<cursor_path>`).
    pub(crate) fn state_key(&self) -> &str {
        self.config.cursor_path.as_str()
    }

    /// The state to store after the run: `{initial_value, last_value, unique_hashes, start_value}`,
    /// in dlt's formats (see [`stored`]).
    pub(crate) fn to_state(&self, previous: Option<&Value>) -> Value {
        let previous_last = previous
            .and_then(|p| p.get("last_value"))
            .filter(|v| !v.is_null());
        let last = match (&self.config.last_value_func, &self.last) {
            (LastValueFunc::Custom(_), _) => self.custom_last.clone(),
            (_, Some(last)) if self.moved => {
                // With lag the stored value never moves backwards.
                let stays = self.config.lag.is_some()
                    && previous_last.is_some_and(|prev| {
                        self.kind
                            .and_then(|kind| CursorValue::parse(&stored::untyped(prev), kind))
                            .is_some_and(|p| self.better(&p, last) == std::cmp::Ordering::Greater)
                    });
                if stays {
                    previous_last.cloned()
                } else {
                    Some(self.form.render(last, self.last_text.as_deref()))
                }
            }
            // No row moved it: the value as it was stored.
            _ => None,
        };
        let mut hashes: Vec<String> = self.hashes.iter().cloned().collect();
        if let Some(best) = &self.best_key {
            hashes.extend(
                stored::key_forms(best, self.one_column_key())
                    .map(|form| stored::key_hash(&form, self.hashes_legacy)),
            );
        }
        hashes.sort();
        hashes.dedup();
        let mut state = Map::new();
        // As dlt: the initial value the state was created with stays.
        let initial = match previous.and_then(|p| p.get("initial_value")) {
            Some(stored) => Some(stored.clone()),
            None => self.initial_raw.clone(),
        };
        state.insert("initial_value".into(), initial.unwrap_or(Value::Null));
        state.insert(
            "last_value".into(),
            last.or_else(|| self.start_raw.clone())
                .unwrap_or(Value::Null),
        );
        state.insert(
            "unique_hashes".into(),
            Value::Array(if self.dedup {
                hashes.into_iter().map(Value::String).collect()
            } else {
                Vec::new()
            }),
        );
        // As dlt: once a row is kept, the stored `start_value` becomes the last value the run
        // started from (as stored, before any lag).
        let start_value = if self.kept_rows > 0 {
            self.start_raw.clone()
        } else {
            previous
                .and_then(|p| p.get("start_value"))
                .cloned()
                .or_else(|| self.start_raw.clone())
        };
        state.insert("start_value".into(), start_value.unwrap_or(Value::Null));
        Value::Object(state)
    }

    fn view_snapshot(&self) -> ViewSnapshot {
        ViewSnapshot {
            start_value: self.start.as_ref().map(CursorValue::to_json).or_else(|| {
                self.start_raw
                    .as_ref()
                    .map(|v| stored::untyped(v).into_owned())
            }),
            last_value: self
                .custom_last
                .clone()
                .or_else(|| self.last.as_ref().map(CursorValue::to_json))
                .or_else(|| {
                    self.start_raw
                        .as_ref()
                        .map(|v| stored::untyped(v).into_owned())
                }),
            end_value: self.config.end_value.clone(),
            start_out_of_range: self.start_out_of_range,
            end_out_of_range: self.end_out_of_range,
        }
    }
}

struct ViewSnapshot {
    start_value: Option<Value>,
    last_value: Option<Value>,
    end_value: Option<Value>,
    start_out_of_range: bool,
    end_out_of_range: bool,
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

/// JSON with object keys sorted, as dlt's dedup hash takes it (`orjson`, sorted keys).
fn write_canonical(value: &Value, out: &mut String) {
    // The canonical writer produces UTF-8 from UTF-8 strings.
    out.push_str(&String::from_utf8_lossy(&crate::typed_json::canonical(
        value,
    )));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_over(
        inc: Incremental,
        key: Option<&[String]>,
        stored: Option<&Value>,
        items: &[Value],
    ) -> (Vec<Value>, Value) {
        let mut run = IncrementalRun::bind(inc, "r", key, None, stored).unwrap();
        let kept = items
            .iter()
            .filter(|item| run.filter(item, &"").unwrap() == Verdict::Keep)
            .cloned()
            .collect();
        (kept, run.to_state(stored))
    }

    #[test]
    fn keeps_range_and_dedups_boundary_by_key() {
        let key = vec!["id".to_string()];
        let inc = Incremental::new("ts").unwrap().initial_value(10);
        let items: Vec<Value> = vec![
            json!({"id": 1, "ts": 9}),
            json!({"id": 2, "ts": 10}),
            json!({"id": 3, "ts": 12}),
            json!({"id": 4, "ts": 12}),
        ];
        let (kept, state) = run_over(inc.clone(), Some(&key), None, &items);
        assert_eq!(kept.len(), 3);
        assert_eq!(state["last_value"], json!(12));
        // Two rows at the boundary, each hashed as dlt hashes `primary_key="id"` and `["id"]`.
        assert_eq!(state["unique_hashes"].as_array().unwrap().len(), 4);
        // Next run: ids 3 and 4 at the boundary are skipped, id 5 at the boundary is new.
        let items2 = vec![
            json!({"id": 3, "ts": 12}),
            json!({"id": 4, "ts": 12}),
            json!({"id": 5, "ts": 12}),
            json!({"id": 6, "ts": 13}),
        ];
        let (kept2, state2) = run_over(inc, Some(&key), Some(&state), &items2);
        let ids: Vec<_> = kept2.iter().map(|v| v["id"].clone()).collect();
        assert_eq!(ids, vec![json!(5), json!(6)]);
        assert_eq!(state2["last_value"], json!(13));
    }

    #[test]
    fn rows_judged_from_their_text_fare_as_parsed_rows() {
        // Two runs over the same rows, one reading the text, one the parsed values: the same
        // rows kept, the same state and the same errors, for one key, two keys and no dedup.
        let rows = [
            r#"{"id":1,"k":"a","ts":"2024-01-04T11:20:02Z"}"#,
            r#"{"id":2,"k":"a","ts":"2024-01-04T11:20:03.5Z"}"#,
            r#"{"id":3,"k":"b","ts":"2024-01-04T11:20:03.5Z"}"#,
            r#"{"id":4,"k":"a","ts":"2024-01-04T11:20:03.4Z"}"#,
            r#"{"id":5,"k":"a","ts":"2024-01-04T12:20:03.5+01:00"}"#,
            r#"{"id":6,"k":"a","ts":"2024-01-04T11:20:04Z"}"#,
            r#"{"id":7,"k":"a","ts":"2024-01-04T11:20:04Z"}"#,
            r#"{"id":8,"k":"a","ts":"2024-01-04T11:20:04.000001Z"}"#,
        ];
        let stored = json!({
            "initial_value": "2024-01-01T00:00:00Z",
            "last_value": "2024-01-04T11:20:03.5Z",
            "unique_hashes": [stored::key_hash("2", false)],
        });
        let keys: [Option<Vec<String>>; 3] = [
            Some(vec!["id".into()]),
            Some(vec!["id".into(), "k".into()]),
            Some(vec![]),
        ];
        for key in keys {
            let inc = Incremental::new("ts").unwrap();
            let bind = || {
                let kind = Some(CursorKind::Timestamp);
                IncrementalRun::bind(inc.clone(), "r", key.as_deref(), kind, Some(&stored)).unwrap()
            };
            let (mut from_text, mut parsed) = (bind(), bind());
            let mut kept = Vec::new();
            for row in rows {
                let by_text = from_text.filter_text(row.as_bytes(), &"").unwrap().unwrap();
                let value: Value = serde_json::from_str(row).unwrap();
                assert_eq!(
                    by_text,
                    parsed.filter(&value, &"").unwrap(),
                    "{key:?} {row}"
                );
                if by_text == Verdict::Keep {
                    kept.push(value["id"].as_i64().unwrap());
                }
            }
            if key == Some(vec!["id".to_string()]) {
                // Id 2 was loaded at the start value; ids 3 and 5 share it but are new.
                assert_eq!(kept, [3, 5, 6, 7, 8]);
            }
            assert_eq!(
                from_text.to_state(Some(&stored)),
                parsed.to_state(Some(&stored)),
                "{key:?}"
            );
        }
        // A row without its key field is refused either way, with its place.
        let key = vec!["id".to_string()];
        let inc = Incremental::new("ts").unwrap();
        let mut run = IncrementalRun::bind(inc, "r", Some(&key), None, Some(&stored)).unwrap();
        let row = r#"{"ts":"2024-01-04T11:20:03.5Z"}"#;
        let err = run.filter_text(row.as_bytes(), &"f.jsonl:3: ");
        let err = err.unwrap().unwrap_err().to_string();
        assert!(err.contains("f.jsonl:3") && err.contains("\"id\""), "{err}");
    }

    #[test]
    fn prefilter_decides_by_the_second_as_parsing_does() {
        let start = "2024-01-04T11:20:03.5Z";
        let bind = |inc: Incremental| {
            IncrementalRun::bind(inc, "r", None, Some(CursorKind::Timestamp), None).unwrap()
        };
        let inc = Incremental::new("ts").unwrap().initial_value(start);
        let mut by_second = bind(inc.clone());
        // An end value turns the shortcut off, and lies after every cursor below.
        let mut parsed = bind(inc.end_value("9999-12-31T23:59:59Z"));
        assert!(by_second.start_second.is_some() && parsed.start_second.is_none());
        let texts: Vec<&[u8]> = vec![
            b"2024-01-04T11:20:02Z",
            b"2024-01-04T11:20:02.999999Z",
            b"2024-01-04T11:20:03Z",
            b"2024-01-04T11:20:03.4Z",
            b"2024-01-04T11:20:03.5Z",
            b"2024-01-04T11:20:03.6+00:00",
            b"2024-01-04T11:20:04Z",
            b"2023-12-31 23:59:59",
            b"2024-01-04T12:20:02+01:00",
            b"2024-01-04T10:20:04-01:00",
            b"2024-01-04T11:20:60Z",
            b"2024-01-04",
            b"2023-02-29T00:00:00Z",
            b"2024-01-0\xff",
            b"later",
        ];
        for text in texts {
            let mut line = br#"{"id":1,"ts":""#.to_vec();
            line.extend_from_slice(text);
            line.extend_from_slice(br#""}"#);
            let shown = String::from_utf8_lossy(text);
            assert_eq!(
                by_second.prefilter(&line),
                parsed.prefilter(&line),
                "{shown}"
            );
            assert_eq!(
                (by_second.start_out_of_range, by_second.end_out_of_range),
                (parsed.start_out_of_range, parsed.end_out_of_range),
                "{shown}"
            );
        }
    }

    #[test]
    fn end_value_is_open_and_missing_cursor_raises() {
        let inc = Incremental::new("ts")
            .unwrap()
            .initial_value(1)
            .end_value(3);
        let (kept, _) = run_over(
            inc.clone(),
            None,
            None,
            &[json!({"ts": 1}), json!({"ts": 2}), json!({"ts": 3})],
        );
        assert_eq!(kept.len(), 2);
        let mut run = IncrementalRun::bind(inc, "r", None, None, None).unwrap();
        let err = run
            .filter(&json!({"other": 1}), &"f.jsonl:7: ")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.jsonl:7") && err.contains("cursor ts"),
            "{err}"
        );
    }

    #[test]
    fn min_keeps_older_values() {
        let inc = Incremental::new("ts")
            .unwrap()
            .initial_value(10)
            .last_value_func(LastValueFunc::Min);
        let (kept, state) = run_over(
            inc,
            None,
            None,
            &[json!({"ts": 11}), json!({"ts": 9}), json!({"ts": 10})],
        );
        assert_eq!(kept, vec![json!({"ts": 9}), json!({"ts": 10})]);
        assert_eq!(state["last_value"], json!(9));
    }

    /// dlt's documentation example: one last value per event type, in a map.
    #[test]
    fn custom_last_value_func_keeps_a_map_per_event_type() {
        let by_type: CustomLastValue = Arc::new(|values: &[&Value]| {
            let item = values[0];
            let mut last = values
                .get(1)
                .and_then(|v| v.as_object())
                .cloned()
                .unwrap_or_default();
            let t = item["type"].as_str().unwrap_or("").to_string();
            let ts = item["ts"].as_i64().unwrap_or(0);
            let best = last
                .get(&t)
                .and_then(Value::as_i64)
                .map_or(ts, |old| old.max(ts));
            last.insert(t, json!(best));
            Value::Object(last)
        });
        let inc = Incremental::new("$")
            .unwrap()
            .last_value_func(LastValueFunc::Custom(by_type))
            .primary_key(Vec::<String>::new());
        let run1 = [
            json!({"type": "A", "ts": 1}),
            json!({"type": "B", "ts": 5}),
            json!({"type": "A", "ts": 3}),
        ];
        let (kept, state) = run_over(inc.clone(), None, None, &run1);
        assert_eq!(kept.len(), 3);
        assert_eq!(state["last_value"], json!({"A": 3, "B": 5}));
        let run2 = [
            json!({"type": "A", "ts": 2}),
            json!({"type": "A", "ts": 4}),
            json!({"type": "B", "ts": 5}),
            json!({"type": "C", "ts": 1}),
        ];
        let (kept, state) = run_over(inc, None, Some(&state), &run2);
        assert_eq!(
            kept,
            vec![json!({"type": "A", "ts": 4}), json!({"type": "C", "ts": 1})]
        );
        assert_eq!(state["last_value"], json!({"A": 4, "B": 5, "C": 1}));
    }
}
