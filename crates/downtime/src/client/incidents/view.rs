//! What the server answers about incidents, and how it is shown: the lenient
//! [`IncidentView`] and [`UpdateView`] types, the `incident list` table, the `incident show`
//! details with the timeline oldest first, and the time and text helpers they share. Text
//! from the server is shown as stored, bar control characters, so a stored title cannot
//! drive the terminal. The commands only choose what to print; the wording lives here.

use std::fmt::Write as _;

use downtime_server::history::Timestamp;
use serde::Deserialize;

use super::{Kind, Which};
use crate::client::render::table;

/// An incident as the API returns it; lenient (defaults for missing fields) so an older or
/// newer server still lists.
#[derive(Debug, Clone, Deserialize)]
pub struct IncidentView {
    /// Id.
    #[serde(default)]
    pub id: i64,
    /// `incident` or `maintenance`.
    #[serde(default)]
    pub kind: String,
    /// Title as entered.
    #[serde(default)]
    pub title: String,
    /// Current status.
    #[serde(default)]
    pub status: String,
    /// Current impact.
    #[serde(default)]
    pub impact: String,
    /// `manual` or `drill`.
    #[serde(default)]
    pub source: String,
    /// The drill that opened it.
    #[serde(default)]
    pub drill: Option<i64>,
    /// Affected component ids.
    #[serde(default)]
    pub components: Vec<String>,
    /// Maintenance window start (RFC 3339).
    #[serde(default)]
    pub scheduled_start: Option<String>,
    /// Maintenance window end (RFC 3339).
    #[serde(default)]
    pub scheduled_end: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// Last change (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
    /// When it was resolved or completed (RFC 3339).
    #[serde(default)]
    pub resolved_at: Option<String>,
    /// The timeline, in the server's order (newest first).
    #[serde(default)]
    pub updates: Vec<UpdateView>,
}

impl IncidentView {
    /// "incident" or "maintenance", for sentences.
    pub(super) fn noun(&self) -> &'static str {
        if self.kind == "maintenance" {
            "maintenance"
        } else {
            "incident"
        }
    }

    /// Whether it is over: the server sets `resolved_at` when it is resolved or completed.
    pub(super) fn is_closed(&self) -> bool {
        self.resolved_at.is_some() || matches!(self.status.as_str(), "resolved" | "completed")
    }
}

/// One entry of a timeline.
#[derive(Debug, Clone, Deserialize)]
pub struct UpdateView {
    /// Id (increasing).
    #[serde(default)]
    pub id: i64,
    /// When it was posted (RFC 3339).
    #[serde(default)]
    pub at: String,
    /// The status from this update on.
    #[serde(default)]
    pub status: String,
    /// Text as entered; empty when only the status changed.
    #[serde(default)]
    pub body: String,
}

/// `Major` from `major`, for the start of a sentence.
pub(super) fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Text from the server with control characters (other than tabs) replaced, so a stored
/// title or update cannot move the cursor or recolour the terminal. Everything else,
/// HTML included, is shown exactly as stored.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM` (or with `:SS`) in UTC.
pub(super) fn time_text(ms: i64, seconds: bool) -> String {
    let rfc = Timestamp(ms).rfc3339();
    let end = if seconds { 19 } else { 16 };
    match (rfc.get(..10), rfc.get(11..end)) {
        (Some(date), Some(clock)) if rfc.as_bytes().get(10) == Some(&b'T') => {
            format!("{date} {clock} UTC")
        }
        _ => rfc,
    }
}

/// An RFC 3339 time from the server, shown as [`time_text`] does; kept as given when it
/// does not parse.
pub(super) fn time_of(rfc3339: &str, seconds: bool) -> String {
    match Timestamp::parse_rfc3339(rfc3339) {
        Some(at) => time_text(at.millis(), seconds),
        None => printable(rfc3339),
    }
}

/// The maintenance window as `START to END`, when there is one.
pub(super) fn window_text(incident: &IncidentView) -> Option<String> {
    match (&incident.scheduled_start, &incident.scheduled_end) {
        (Some(start), Some(end)) => Some(format!(
            "{} to {}",
            time_of(start, false),
            time_of(end, false)
        )),
        _ => None,
    }
}

/// The `incident list` output: one row per incident, in the server's order (newest
/// first), or a hint when there is none.
pub fn incident_table(
    incidents: &[IncidentView],
    which: Option<Which>,
    kind: Option<Kind>,
) -> String {
    if incidents.is_empty() {
        let state = match which {
            Some(Which::Open) => "open ",
            Some(Which::Closed) => "closed ",
            Some(Which::All) | None => "",
        };
        let what = match kind {
            Some(Kind::Incident) => "incidents",
            Some(Kind::Maintenance) => "maintenances",
            None => "incidents or maintenances",
        };
        return format!(
            "no {state}{what}; open one with `downtime incident open TITLE` or \
             `downtime incident schedule TITLE --start TIME --end TIME`\n"
        );
    }
    let mut rows = vec![
        [
            "ID",
            "KIND",
            "STATUS",
            "IMPACT",
            "TITLE",
            "COMPONENTS",
            "CREATED (UTC)",
        ]
        .map(str::to_owned),
    ];
    rows.extend(incidents.iter().map(|incident| {
        [
            incident.id.to_string(),
            printable(&incident.kind),
            printable(&incident.status),
            printable(&incident.impact),
            printable(&incident.title),
            if incident.components.is_empty() {
                "-".to_owned()
            } else {
                printable(&incident.components.join(", "))
            },
            time_of(&incident.created_at, false)
                .trim_end_matches(" UTC")
                .to_owned(),
        ]
    }));
    table(&rows, "")
}

/// The `incident show` output: the fields, then the timeline oldest first, so the latest
/// update ends up right above the prompt.
pub fn incident_details(incident: &IncidentView) -> String {
    let components = if incident.components.is_empty() {
        "none".to_owned()
    } else {
        printable(&incident.components.join(", "))
    };
    let source = match (incident.source.as_str(), incident.drill) {
        ("drill", Some(drill)) => format!("drill {drill}"),
        (source, _) => printable(source),
    };
    let mut fields = vec![
        ["Id:".to_owned(), incident.id.to_string()],
        ["Title:".to_owned(), printable(&incident.title)],
        ["Kind:".to_owned(), printable(&incident.kind)],
        ["Status:".to_owned(), printable(&incident.status)],
        ["Impact:".to_owned(), printable(&incident.impact)],
        ["Components:".to_owned(), components],
    ];
    if let Some(window) = window_text(incident) {
        fields.push(["Window:".to_owned(), window]);
    }
    fields.push(["Source:".to_owned(), source]);
    fields.push(["Created:".to_owned(), time_of(&incident.created_at, true)]);
    fields.push(["Updated:".to_owned(), time_of(&incident.updated_at, true)]);
    if let Some(resolved) = &incident.resolved_at {
        let label = if incident.kind == "maintenance" {
            "Completed:"
        } else {
            "Resolved:"
        };
        fields.push([label.to_owned(), time_of(resolved, true)]);
    }
    let mut out = table(&fields, "");
    out.push('\n');
    if incident.updates.is_empty() {
        out.push_str("Timeline: no updates\n");
        return out;
    }
    out.push_str("Timeline (oldest first):\n");
    let mut updates: Vec<&UpdateView> = incident.updates.iter().collect();
    updates.sort_by_key(|u| {
        (
            Timestamp::parse_rfc3339(&u.at).map_or(i64::MIN, Timestamp::millis),
            u.id,
        )
    });
    for update in updates {
        let _ = writeln!(
            out,
            "  {}  {}",
            time_of(&update.at, true),
            printable(&update.status)
        );
        for line in update.body.lines() {
            let _ = writeln!(out, "    {}", printable(line));
        }
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// 2030-01-01T00:00:00Z.
    const T2030: i64 = 1_893_456_000_000;

    fn view(value: Value) -> IncidentView {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn times_show_in_utc() {
        assert_eq!(time_text(T2030 + 61_000, false), "2030-01-01 00:01 UTC");
        assert_eq!(time_text(T2030 + 61_000, true), "2030-01-01 00:01:01 UTC");
        assert_eq!(
            time_of("2030-01-01T02:01:01+02:00", true),
            "2030-01-01 00:01:01 UTC"
        );
        assert_eq!(time_of("garbage", true), "garbage");
    }

    #[test]
    fn table_lists_newest_first_as_given() {
        let incidents = vec![
            view(
                json!({"id": 2, "kind": "maintenance", "title": "<b>upgrade</b>",
                "status": "scheduled", "impact": "maintenance", "components": ["proxy:db"],
                "created_at": "2030-01-01T00:05:00.000Z"}),
            ),
            view(json!({"id": 1, "kind": "incident", "title": "db slow",
                "status": "investigating", "impact": "minor", "components": [],
                "created_at": "2030-01-01T00:00:00.000Z"})),
        ];
        assert_eq!(
            incident_table(&incidents, None, None),
            "ID  KIND         STATUS         IMPACT       TITLE           COMPONENTS  CREATED (UTC)\n\
             2   maintenance  scheduled      maintenance  <b>upgrade</b>  proxy:db    2030-01-01 00:05\n\
             1   incident     investigating  minor        db slow         -           2030-01-01 00:00\n"
        );
        assert!(
            incident_table(&[], Some(Which::Open), Some(Kind::Maintenance))
                .starts_with("no open maintenances; ")
        );
        assert!(incident_table(&[], None, None).starts_with("no incidents or maintenances; "));
    }

    #[test]
    fn details_show_the_timeline_oldest_first() {
        let incident = view(json!({
            "id": 4, "kind": "incident", "title": "db slow", "status": "resolved",
            "impact": "major", "source": "drill", "drill": 9,
            "components": ["proxy:db", "endpoint:home"],
            "created_at": "2030-01-01T00:00:00.000Z", "updated_at": "2030-01-01T00:10:00.000Z",
            "resolved_at": "2030-01-01T00:10:00.000Z",
            "updates": [
                {"id": 3, "at": "2030-01-01T00:10:00.000Z", "status": "resolved", "body": "done"},
                {"id": 2, "at": "2030-01-01T00:05:00.000Z", "status": "identified",
                 "body": "disk\nfull\u{1b}[31m"},
                {"id": 1, "at": "2030-01-01T00:00:00.000Z", "status": "investigating", "body": ""}
            ]
        }));
        assert_eq!(
            incident_details(&incident),
            "Id:          4\n\
             Title:       db slow\n\
             Kind:        incident\n\
             Status:      resolved\n\
             Impact:      major\n\
             Components:  proxy:db, endpoint:home\n\
             Source:      drill 9\n\
             Created:     2030-01-01 00:00:00 UTC\n\
             Updated:     2030-01-01 00:10:00 UTC\n\
             Resolved:    2030-01-01 00:10:00 UTC\n\
             \n\
             Timeline (oldest first):\n\
             \x20 2030-01-01 00:00:00 UTC  investigating\n\
             \x20 2030-01-01 00:05:00 UTC  identified\n\
             \x20   disk\n\
             \x20   full\u{fffd}[31m\n\
             \x20 2030-01-01 00:10:00 UTC  resolved\n\
             \x20   done\n"
        );
    }

    #[test]
    fn maintenance_details_show_the_window() {
        let incident = view(json!({
            "id": 5, "kind": "maintenance", "title": "upgrade", "status": "scheduled",
            "impact": "maintenance", "source": "manual", "components": [],
            "scheduled_start": "2030-01-01T09:00:00.000Z",
            "scheduled_end": "2030-01-01T11:00:00.000Z",
            "created_at": "2030-01-01T00:00:00.000Z", "updated_at": "2030-01-01T00:00:00.000Z",
            "updates": []
        }));
        let text = incident_details(&incident);
        assert!(
            text.contains("Window:      2030-01-01 09:00 UTC to 2030-01-01 11:00 UTC\n"),
            "{text}"
        );
        assert!(text.contains("Components:  none\n"), "{text}");
        assert!(text.ends_with("Timeline: no updates\n"), "{text}");
    }
}
