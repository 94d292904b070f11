//! ISO-8601 parsing as dlt's `iso_timestamp` detection accepts it, fast enough for every string
//! value the normalizer sees (a non-date string is rejected after looking at a few bytes).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// The offset of an ISO timestamp's text in seconds east of UTC (`Z` is 0); `None` when the
/// text carries none (a naive timestamp) or is not a timestamp.
pub fn offset_seconds(s: &str) -> Option<i32> {
    parse_timestamp(s)?;
    let b = s.as_bytes();
    if matches!(b.last(), Some(b'Z' | b'z')) {
        return Some(0);
    }
    // The offset's sign comes after the time (the date's own dashes come before position 11).
    let sign_at = b[11..].iter().rposition(|c| matches!(c, b'+' | b'-'))? + 11;
    let digits: Vec<u32> = s[sign_at + 1..]
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|c| u32::from(c - b'0'))
        .collect();
    let (hours, minutes) = match digits.as_slice() {
        [h1, h2] => (h1 * 10 + h2, 0),
        [h1, h2, m1, m2] => (h1 * 10 + h2, m1 * 10 + m2),
        _ => return None,
    };
    let seconds = (hours * 3600 + minutes * 60) as i32;
    Some(if b[sign_at] == b'-' {
        -seconds
    } else {
        seconds
    })
}

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

/// The second of a UTC timestamp text as the number `YYYYMMDDhhmmss`, read without building a
/// date: numbers of two texts compare as their instants do, to the second. Only for
/// `YYYY-MM-DD[T ]hh:mm:ss[.fff…]` with no offset, `Z` or a zero offset, and fields in range
/// (no leap second); `None` for anything else, which [`parse_timestamp`] then decides.
pub fn utc_second(b: &[u8]) -> Option<u64> {
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (four_digits(b, 0)?, two_digits(b, 5)?, two_digits(b, 8)?);
    let (hour, minute, second) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    if matches!(b.get(i), Some(b'.' | b',')) {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        i += 1 + digits;
    }
    if !matches!(
        &b[i..],
        b"" | b"Z" | b"z" | b"+00:00" | b"-00:00" | b"+0000" | b"-0000" | b"+00" | b"-00"
    ) {
        return None;
    }
    Some(second_number(year, month, day, hour, minute, second))
}

/// [`utc_second`] of an instant; `None` outside years 0 to 9999.
pub fn utc_second_of(t: &DateTime<Utc>) -> Option<u64> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(t.year()).ok().filter(|&y| y <= 9999)?;
    Some(second_number(
        year,
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}

fn second_number(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> u64 {
    [month, day, hour, minute, second]
        .into_iter()
        .fold(u64::from(year), |n, part| n * 100 + u64::from(part))
}

/// Days in `month` of `year` in the proleptic Gregorian calendar, as chrono counts them.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
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
    use chrono::Datelike;

    #[test]
    fn offsets_are_read_from_the_text() {
        assert_eq!(offset_seconds("2024-01-02T10:00:00Z"), Some(0));
        assert_eq!(
            offset_seconds("2024-01-02T10:00:00.25-05:00"),
            Some(-5 * 3600)
        );
        assert_eq!(
            offset_seconds("2024-01-02T10:00:00+0530"),
            Some(5 * 3600 + 1800)
        );
        assert_eq!(offset_seconds("2024-01-02T10:00:00+01"), Some(3600));
        assert_eq!(offset_seconds("2024-01-02T10:00:00"), None);
        assert_eq!(offset_seconds("2024-01-02"), None);
    }

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

    #[test]
    fn utc_second_agrees_with_parse_timestamp() {
        let taken = [
            ("2024-01-04T11:20:03Z", 20240104112003),
            ("2024-01-04 11:20:03", 20240104112003),
            ("2024-01-04t11:20:03.999999999z", 20240104112003),
            ("2024-02-29T23:59:59,5+00:00", 20240229235959),
            ("2000-02-29T00:00:00-0000", 20000229000000),
            ("0000-02-29T00:00:00+00", 229000000),
            ("9999-12-31T23:59:59Z", 99991231235959),
        ];
        for (text, number) in taken {
            assert_eq!(utc_second(text.as_bytes()), Some(number), "{text}");
            let parsed = parse_timestamp(text).unwrap();
            assert_eq!(utc_second_of(&parsed), Some(number), "{text}");
        }
        // Left to the parser: other offsets, leap seconds, short forms, and anything invalid.
        for text in [
            "2024-01-04T11:20:03+01:00",
            "2024-01-04T11:20:60Z",
            "2024-01-04T11:20Z",
            "2024-01-04",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zx",
            "2024-01-01X00:00:00Z",
            "2024-01-01T00:00:0aZ",
        ] {
            assert_eq!(utc_second(text.as_bytes()), None, "{text}");
        }
        // Every text it takes, the parser takes as the same second, across every day of two
        // years (one leap) and the edges of each day.
        let mut day = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
        while day.year_ce().1 < 2025 {
            for time in ["00:00:00", "23:59:59.999Z", "12:34:56+00:00"] {
                let text = format!("{}T{time}", day.format("%Y-%m-%d"));
                let number = utc_second(text.as_bytes()).unwrap();
                assert_eq!(
                    utc_second_of(&parse_timestamp(&text).unwrap()),
                    Some(number)
                );
            }
            day = day.succ_opt().unwrap();
        }
    }
}
