//! Wall-clock times as the status page shows them: UTC, RFC 3339 in machine interfaces,
//! a short readable form on the page. Times are unix milliseconds (`i64`) throughout.

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// The current wall-clock time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The day number (days since 1970-01-01, UTC) of a time.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The full length in minutes of `day` as of `now_ms`: 1,440 for a past day, the minutes
/// begun so far for today, 0 for a day to come.
pub fn day_length(day: i64, now_ms: i64) -> u32 {
    let now_minute = now_ms.div_euclid(60_000);
    let first = day.saturating_mul(1_440);
    let len = now_minute
        .saturating_add(1)
        .saturating_sub(first)
        .clamp(0, 1_440);
    u32::try_from(len).unwrap_or(0)
}

/// Year, month (1-12) and day (1-31) of a day number, in the proleptic Gregorian calendar.
pub fn civil(day: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that the leap day ends each 400-year era's years.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let d = day_of_year - (153 * month_index + 2) / 5 + 1;
    let m = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let y = year_of_era + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// `2024-05-01` for a day number.
pub fn date(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `1 May 2024` for a day number.
pub fn long_date(day: i64) -> String {
    let (y, m, d) = civil(day);
    let month = MONTHS[usize::try_from(m.saturating_sub(1)).unwrap_or(0) % 12];
    format!("{d} {month} {y}")
}

fn hms(ms: i64) -> (i64, i64, i64) {
    let in_day = ms.rem_euclid(DAY_MS) / 1000;
    (in_day / 3600, in_day / 60 % 60, in_day % 60)
}

/// `2024-05-01T12:34:56Z` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(ms: i64) -> String {
    let (h, mi, s) = hms(ms);
    format!("{}T{h:02}:{mi:02}:{s:02}Z", date(day_of(ms)))
}

/// `1 May 2024 12:34 UTC`, for people.
pub fn human(ms: i64) -> String {
    let (h, mi, _) = hms(ms);
    format!("{} {h:02}:{mi:02} UTC", long_date(day_of(ms)))
}

/// A duration for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86_400 {
        let (h, m) = (s / 3600, s / 60 % 60);
        if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        }
    } else {
        let (d, h) = (s / 86_400, s / 3600 % 24);
        if h == 0 {
            format!("{d} d")
        } else {
            format!("{d} d {h} h")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(19_783), "2024-03-01");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(long_date(19_844), "1 May 2024");
        assert_eq!(rfc3339(1_714_566_896_000), "2024-05-01T12:34:56Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(human(1_714_566_896_000), "1 May 2024 12:34 UTC");
    }

    #[test]
    fn civil_round_trips_every_day_for_800_years() {
        // Each day follows the previous one: same month with day + 1, or the 1st of the next.
        let mut prev = civil(-200_000);
        for day in -199_999..100_000 {
            let cur = civil(day);
            let next_day = cur.0 == prev.0 && cur.1 == prev.1 && cur.2 == prev.2 + 1;
            let next_month = cur.2 == 1
                && ((cur.0 == prev.0 && cur.1 == prev.1 + 1)
                    || (cur.0 == prev.0 + 1 && cur.1 == 1 && prev.1 == 12));
            assert!(next_day || next_month, "{prev:?} -> {cur:?}");
            prev = cur;
        }
    }

    #[test]
    fn spans() {
        assert_eq!(span(-5), "0 s");
        assert_eq!(span(59_999), "59 s");
        assert_eq!(span(60_000), "1 min");
        assert_eq!(span(3_600_000), "1 h");
        assert_eq!(span(3_900_000), "1 h 5 min");
        assert_eq!(span(90_000_000), "1 d 1 h");
    }
}
