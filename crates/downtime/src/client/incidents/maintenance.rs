//! Scheduled maintenance: `incident schedule`, and the window it takes. `--start` and
//! `--end` (also given to `edit` to move a window) are RFC 3339, `now` or `+DURATION`
//! counted from now, parsed here into Unix milliseconds and checked to end after they
//! start, so a bad window is a usage error before anything is sent. What makes an
//! incident a maintenance is only this window, so it lives apart from the other commands.

use std::time::{SystemTime, UNIX_EPOCH};

use downtime_server::history::Timestamp;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::commands::put;
use super::view::{IncidentView, printable, time_text, window_text};
use super::{ScheduleArgs, TimeArg};
use crate::client::Output;
use crate::client::api::Api;

/// Refuses a window whose end is not after its start.
pub(super) fn check_window(start: &TimeArg, end: &TimeArg) -> Result<(), String> {
    if end.ms > start.ms {
        return Ok(());
    }
    Err(format!(
        "invalid value '{}' for --end: must be after --start '{}' ({} is not after {})",
        end.raw,
        start.raw,
        time_text(end.ms, false),
        time_text(start.ms, false)
    ))
}

/// The body of `POST /incidents` for `schedule`: the `scheduled` window makes it a
/// maintenance, with the server's maintenance defaults (scheduled, impact maintenance).
fn schedule_body(args: &ScheduleArgs) -> Value {
    let mut body = Map::new();
    body.insert("title".to_owned(), json!(args.title));
    body.insert(
        "scheduled".to_owned(),
        json!({"start": args.start.ms, "end": args.end.ms}),
    );
    put(&mut body, "impact", args.impact.map(|i| json!(i.as_str())));
    if !args.components.is_empty() {
        body.insert("components".to_owned(), json!(args.components));
    }
    put(&mut body, "body", args.message.as_ref().map(|m| json!(m)));
    Value::Object(body)
}

/// `incident schedule`: `POST /incidents` with a window.
pub(super) async fn schedule(api: &Api, args: &ScheduleArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::POST, &["incidents"], Some(&schedule_body(args)))
        .await?;
    let incident: IncidentView = answer.parse()?;
    let human = format!(
        "Scheduled maintenance {}: {}, {}\n",
        incident.id,
        printable(&incident.title),
        window_text(&incident).unwrap_or_else(|| "no window".to_owned())
    );
    Ok(Output::new(human, &answer))
}

/// How times are written, for error messages.
const TIME_EXAMPLE: &str = "expected an RFC 3339 time such as 2030-01-01T09:00:00Z, `now`, \
                            or a time from now such as +30m, +2h or +1d";

/// `--start`/`--end`, relative to the current wall-clock time.
pub(super) fn parse_time(raw: &str) -> Result<TimeArg, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    parse_time_at(raw, now)
}

/// Parses `raw` as RFC 3339 (any offset), `now`, or `+N` with a unit `s`, `m`, `h` or `d`
/// counted from `now` (Unix milliseconds). Arithmetic is checked: a huge value is an error.
fn parse_time_at(raw: &str, now: i64) -> Result<TimeArg, String> {
    let text = raw.trim();
    let ms = if text.eq_ignore_ascii_case("now") {
        now
    } else if let Some(offset) = text.strip_prefix('+') {
        now.checked_add(offset_ms(offset)?)
            .ok_or_else(|| "the time is too far in the future".to_owned())?
    } else {
        Timestamp::parse_rfc3339(text)
            .map(Timestamp::millis)
            .ok_or_else(|| TIME_EXAMPLE.to_owned())?
    };
    Ok(TimeArg {
        raw: raw.to_owned(),
        ms,
    })
}

/// The `N<unit>` after `+`: whole seconds, minutes, hours or days, in milliseconds.
fn offset_ms(text: &str) -> Result<i64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(TIME_EXAMPLE.to_owned()),
    };
    if digits.is_empty() {
        return Err(TIME_EXAMPLE.to_owned());
    }
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| "the time is too far in the future".to_owned())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::super::LocalOptions;
    use super::*;

    /// 2030-01-01T00:00:00Z.
    const T2030: i64 = 1_893_456_000_000;

    fn options() -> LocalOptions {
        LocalOptions {
            host: None,
            json: false,
        }
    }

    #[test]
    fn times_are_rfc3339_now_or_from_now() {
        let now = T2030;
        assert_eq!(parse_time_at("now", now).unwrap().ms, now);
        assert_eq!(parse_time_at("+30m", now).unwrap().ms, now + 1_800_000);
        assert_eq!(parse_time_at("+2h", now).unwrap().ms, now + 7_200_000);
        assert_eq!(parse_time_at("+1d", now).unwrap().ms, now + 86_400_000);
        assert_eq!(parse_time_at("+45s", now).unwrap().ms, now + 45_000);
        assert_eq!(parse_time_at("+0m", now).unwrap().ms, now);
        assert_eq!(
            parse_time_at("2030-01-01T02:00:00+02:00", 0).unwrap().ms,
            T2030
        );
        let parsed = parse_time_at(" 2030-01-01T00:00:00Z ", 0).unwrap();
        assert_eq!(parsed.ms, T2030);
        assert_eq!(parsed.raw, " 2030-01-01T00:00:00Z ");
    }

    #[test]
    fn bad_times_say_what_is_expected() {
        for bad in [
            "",
            "tomorrow",
            "+",
            "+30",
            "+30x",
            "+-5m",
            "+1.5h",
            "-30m",
            "2030-01-01",
            "2030-13-01T00:00:00Z",
            "1893456000000",
        ] {
            let error = parse_time_at(bad, T2030).unwrap_err();
            assert_eq!(error, TIME_EXAMPLE, "{bad:?}");
        }
        for huge in ["+99999999999999999999d", "+9223372036854775807s"] {
            let error = parse_time_at(huge, T2030).unwrap_err();
            assert_eq!(error, "the time is too far in the future", "{huge:?}");
        }
        assert_eq!(
            parse_time_at("+100000d", i64::MAX - 1).unwrap_err(),
            "the time is too far in the future"
        );
    }

    #[test]
    fn window_must_end_after_it_starts() {
        let start = parse_time_at("+2h", T2030).unwrap();
        let end = parse_time_at("+1h", T2030).unwrap();
        let error = check_window(&start, &end).unwrap_err();
        assert_eq!(
            error,
            "invalid value '+1h' for --end: must be after --start '+2h' \
             (2030-01-01 01:00 UTC is not after 2030-01-01 02:00 UTC)"
        );
        assert!(check_window(&start, &start).is_err());
        assert!(check_window(&end, &start).is_ok());
    }

    #[test]
    fn schedule_body_carries_only_what_was_given() {
        let args = ScheduleArgs {
            title: "upgrade".into(),
            start: parse_time_at("now", T2030).unwrap(),
            end: parse_time_at("+1h", T2030).unwrap(),
            components: vec!["db".into()],
            message: None,
            impact: None,
            options: options(),
        };
        assert_eq!(
            schedule_body(&args),
            json!({"title": "upgrade", "components": ["db"],
                   "scheduled": {"start": T2030, "end": T2030 + 3_600_000}})
        );
    }
}
