//! The range an external scheduler (Airflow, a cron wrapper) hands a run.

use crate::error::{Error, Result};

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
