//! The incremental while its resource runs: judging each item against the range, moving the last
//! value, and keeping the boundary set that dedups rows at the boundary value.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Display;

use serde_json::{Map, Value};

use super::probe::{self, Probed};
use super::stored::{self, StoredForm};
use super::view::ViewSnapshot;
use super::{
    Bound, CursorKind, CursorValue, CustomLastValue, Incremental, LastValueFunc, OnCursorMissing,
    RowOrder,
};
use crate::error::{Error, Result};
use crate::timeparse;

/// Whether an item is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    Drop,
}

/// The incremental while its resource runs: the range, the moving last value, the boundary set.
#[derive(Debug)]
pub(crate) struct IncrementalRun {
    pub(super) config: Incremental,
    pub(super) resource: String,
    pub(super) kind: Option<CursorKind>,
    pub(super) initial_raw: Option<Value>,
    pub(super) start_raw: Option<Value>,
    pub(super) start: Option<CursorValue>,
    /// The start as [`timeparse::utc_second`] numbers it, when rows can be checked against it by
    /// that number alone: a timestamp cursor, the `max` function, no end value.
    pub(super) start_second: Option<u64>,
    pub(super) end: Option<CursorValue>,
    pub(super) last: Option<CursorValue>,
    pub(super) dedup_key: Option<Vec<String>>,
    pub(super) dedup: bool,
    pub(super) start_hashes: HashSet<String>,
    /// The stored boundary set was written before dlt 1.29 (and is matched in its format).
    pub(super) start_legacy: bool,
    pub(super) hashes: HashSet<String>,
    /// Hashes added to `hashes` take the old format while it holds the stored set.
    pub(super) hashes_legacy: bool,
    /// The key text of the newest best row, hashed only when the run ends: with an ascending
    /// cursor every row is a new best, and most never stay at the boundary.
    pub(super) best_key: Option<String>,
    /// How the state holds cursor values (as the rows did, or dlt's typed JSON).
    pub(super) form: StoredForm,
    /// Whether no last value was stored (a first run): the form may follow the rows' type.
    pub(super) fresh: bool,
    /// Whether a row set a new last value in this run.
    pub(super) moved: bool,
    /// The text of the newest best row's cursor when it was a string, stored as it was.
    pub(super) last_text: Option<String>,
    pub(super) start_out_of_range: bool,
    pub(super) end_out_of_range: bool,
    pub(super) kept_rows: u64,
    pub(super) custom_last: Option<Value>,
    /// Whether a column hint gave the cursor's type (else the values or the stored state do).
    pub(super) hinted: bool,
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
    pub(super) fn resolve(&mut self, kind: CursorKind, location: &dyn Display) -> Result<()> {
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
    pub(super) fn check_bound_type(
        &self,
        key: &'static str,
        raw: &Value,
        kind: CursorKind,
    ) -> Result<()> {
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

    pub(super) fn parse_bound(
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

    pub(super) fn error(&self, location: impl Display, message: String) -> Error {
        Error::Incremental {
            location: location.to_string(),
            resource: self.resource.clone(),
            cursor_path: self.config.cursor_path.as_str().to_string(),
            message,
        }
    }

    /// `Greater` when `a` is newer than `b` under the last-value function.
    pub(super) fn better(&self, a: &CursorValue, b: &CursorValue) -> std::cmp::Ordering {
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
    pub(super) fn judge(
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
    pub(super) fn filter_custom(
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
    pub(super) fn before_start_by_second(&mut self, text: &[u8]) -> Option<bool> {
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
    pub(super) fn set_last_text(&mut self, text: Option<&str>) {
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
    pub(super) fn was_loaded(&self, key_text: &str) -> bool {
        stored::key_forms(key_text, self.one_column_key()).any(|form| {
            self.start_hashes
                .contains(&stored::key_hash(&form, self.start_legacy))
        })
    }

    /// Adds a row at the last value to the boundary set.
    pub(super) fn add_boundary_row(&mut self, key_text: &str) {
        for form in stored::key_forms(key_text, self.one_column_key()) {
            let hash = stored::key_hash(&form, self.hashes_legacy);
            self.hashes.insert(hash);
        }
    }

    /// Whether the dedup key is one column (whose hash dlt takes in two forms).
    pub(super) fn one_column_key(&self) -> bool {
        self.dedup_key.as_ref().is_some_and(|k| k.len() == 1)
    }

    /// The canonical text a row's boundary hash is made from: its dedup key, or its whole
    /// content without a key.
    pub(super) fn row_key(&self, item: &Value, location: &dyn Display) -> Result<String> {
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
    pub(super) fn key_text<'v>(
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

    pub(super) fn view_snapshot(&self) -> ViewSnapshot {
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

/// JSON with object keys sorted, as dlt's dedup hash takes it (`orjson`, sorted keys).
fn write_canonical(value: &Value, out: &mut String) {
    // The canonical writer produces UTF-8 from UTF-8 strings.
    out.push_str(&String::from_utf8_lossy(&crate::typed_json::canonical(
        value,
    )));
}

#[cfg(test)]
mod tests;
