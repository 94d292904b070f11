//! ISO-8601 parsing as dlt's `iso_timestamp` detection accepts it, fast enough for every string
//! value the normalizer sees (a non-date string is rejected after looking at a few bytes).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// `YYYY-MM-DD` exactly.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 {
        return None;
    }
    date_prefix(b)
}

/// A timestamp with a time part: `YYYY-MM-DD[T ]HH[:MM[:SS[.fffffffff]]][Z|±HH[:MM]|±HHMM]`.
/// A missing offset means UTC. Returns the instant in UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 13 || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let date = date_prefix(b)?;
    let mut i = 11;
    let hour = two_digits(b, i)?;
    i += 2;
    let (mut minute, mut second, mut nanos) = (0, 0, 0u32);
    if b.get(i) == Some(&b':') {
        minute = two_digits(b, i + 1)?;
        i += 3;
        if b.get(i) == Some(&b':') {
            second = two_digits(b, i + 1)?;
            i += 3;
            if matches!(b.get(i), Some(b'.') | Some(b',')) {
                i += 1;
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    if i - start < 9 {
                        nanos = nanos * 10 + u32::from(b[i] - b'0');
                    }
                    i += 1;
                }
                let digits = i - start;
                if digits == 0 {
                    return None;
                }
                for _ in digits..9 {
                    nanos *= 10;
                }
            }
        }
    }
    let offset_seconds: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = two_digits(b, i + 1)?;
            let mut j = i + 3;
            let mut om = 0;
            if b.get(j) == Some(&b':') {
                om = two_digits(b, j + 1)?;
                j += 3;
            } else if j < b.len() {
                om = two_digits(b, j)?;
                j += 2;
            }
            if j != b.len() || oh > 23 || om > 59 {
                return None;
            }
            let total = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                total
            } else {
                -total
            }
        }
        _ => return None,
    };
    let (second, leap) = if second == 60 {
        (59, true)
    } else {
        (second, false)
    };
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let naive = NaiveDateTime::new(date, time);
    let mut utc = naive.and_utc();
    if offset_seconds != 0 {
        utc -= chrono::Duration::seconds(offset_seconds);
    }
    if leap {
        utc += chrono::Duration::seconds(1);
    }
    Some(utc)
}

/// A timestamp as [`parse_timestamp`], or a bare date taken as midnight UTC.
pub fn parse_timestamp_or_date(s: &str) -> Option<DateTime<Utc>> {
    parse_timestamp(s).or_else(|| parse_date(s).map(|d| d.and_time(NaiveTime::MIN).and_utc()))
}

/// The date-only forms dlt's parser (pendulum) takes besides `YYYY-MM-DD`: `YYYY`, `YYYY-MM`,
/// `YYYYMMDD`, `YYYY/MM/DD` and `YYYY:MM:DD`, from year 1 (Python's first).
pub fn parse_bare_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let (year, month, day) = match b.len() {
        4 => (four_digits(b, 0)?, 1, 1),
        7 if b[4] == b'-' => (four_digits(b, 0)?, two_digits(b, 5)?, 1),
        8 => (four_digits(b, 0)?, two_digits(b, 4)?, two_digits(b, 6)?),
        10 if (b[4] == b'/' && b[7] == b'/') || (b[4] == b':' && b[7] == b':') => {
            (four_digits(b, 0)?, two_digits(b, 5)?, two_digits(b, 8)?)
        }
        _ => return None,
    };
    NaiveDate::from_ymd_opt(year as i32, month, day).filter(|_| year >= 1)
}

fn date_prefix(b: &[u8]) -> Option<NaiveDate> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = four_digits(b, 0)?;
    let month = two_digits(b, 5)?;
    let day = two_digits(b, 8)?;
    NaiveDate::from_ymd_opt(year as i32, month, day)
}

fn two_digits(b: &[u8], i: usize) -> Option<u32> {
    let (x, y) = (*b.get(i)?, *b.get(i + 1)?);
    if x.is_ascii_digit() && y.is_ascii_digit() {
        Some(u32::from(x - b'0') * 10 + u32::from(y - b'0'))
    } else {
        None
    }
}

fn four_digits(b: &[u8], i: usize) -> Option<u32> {
    Some(two_digits(b, i)? * 100 + two_digits(b, i + 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<String> {
        parse_timestamp(s).map(|t| t.to_rfc3339())
    }

    #[test]
    fn accepts_iso_timestamps() {
        assert_eq!(
            ts("2024-01-01T00:00:00Z").unwrap(),
            "2024-01-01T00:00:00+00:00"
        );
        assert_eq!(
            ts("2024-01-01 10:00:00+02:00").unwrap(),
            "2024-01-01T08:00:00+00:00"
        );
        assert_eq!(
            ts("2024-01-01T10:00:00-0130").unwrap(),
            "2024-01-01T11:30:00+00:00"
        );
        assert_eq!(ts("2024-01-01T10:00").unwrap(), "2024-01-01T10:00:00+00:00");
        assert_eq!(
            ts("2024-01-01T10:00:00.123456789Z").unwrap(),
            "2024-01-01T10:00:00.123456789+00:00"
        );
    }

    #[test]
    fn rejects_everything_else() {
        for s in [
            "2024-01-01",
            "hello",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00Zx",
            "",
            "12:00:00",
        ] {
            assert_eq!(ts(s), None, "{s:?}");
        }
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("2023-02-29").is_none());
    }
}
