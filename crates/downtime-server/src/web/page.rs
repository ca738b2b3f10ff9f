//! The HTML status page and the fragments pushed to open pages, rendered with askama.
//!
//! Views hold ready-made strings so the templates stay free of logic; askama escapes every
//! value it prints (text and attributes), so names, titles and updates entered by users
//! cannot inject markup.

use askama::Template;

use super::clock;
use super::model::StateView;
use super::model::{
    Component, ComponentKind, ComponentState, Day, DrillRun, Incident, IncidentKind, StatusSnapshot,
};

/// Everything the page templates print.
pub struct PageView {
    /// Product name in the header and title.
    pub title: String,
    /// Banner state (CSS slug).
    pub overall_slug: &'static str,
    /// Banner text.
    pub overall_label: &'static str,
    /// Components not operational.
    pub affected: usize,
    /// Number of components.
    pub component_count: usize,
    /// Component ids joined, so the page can tell when the set changed.
    pub component_key: String,
    /// `1 May 2024 12:34 UTC`.
    pub updated: String,
    /// RFC 3339 of the same instant.
    pub updated_iso: String,
    /// The same instant in unix ms.
    pub updated_ms: i64,
    /// Whether any component is a probed endpoint.
    pub has_probes: bool,
    /// Components in display order.
    pub components: Vec<ComponentView>,
    /// Open incidents and maintenances in progress.
    pub active: Vec<IncidentView>,
    /// Maintenances not started yet.
    pub upcoming: Vec<IncidentView>,
    /// Closed recently.
    pub past: Vec<IncidentView>,
    /// Drill runs, newest first.
    pub drills: Vec<DrillView>,
}

/// One component row.
pub struct ComponentView {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `dependency` or `endpoint`.
    pub kind_label: &'static str,
    /// State CSS slug.
    pub state_slug: &'static str,
    /// State words.
    pub state_label: &'static str,
    /// Why it is in that state.
    pub reason: String,
    /// `99.95 % uptime` or `no data yet`.
    pub uptime: String,
    /// One bar per day, oldest first.
    pub bars: Vec<BarView>,
}

/// One day of an uptime bar.
pub struct BarView {
    /// CSS class suffix (`operational`, `degraded`, `partial`, `major`, `maintenance`, `none`).
    pub class: &'static str,
    /// Per-day detail shown on hover and focus (the bar's `aria-label`).
    pub tip: String,
    /// The class from recorded history alone, without the live state laid over today.
    pub base: &'static str,
}

/// One incident or maintenance with its timeline.
pub struct IncidentView {
    /// Id (also the fragment `#incident-<id>`).
    pub id: String,
    /// Title as entered.
    pub title: String,
    /// `Incident` or `Maintenance`.
    pub kind_label: &'static str,
    /// `Investigating`, `Resolved`, ...
    pub status_label: String,
    /// Impact (CSS class suffix).
    pub impact: &'static str,
    /// When: `since 1 May 2024 12:00 UTC (35 min)` or a maintenance window.
    pub window: String,
    /// Affected component names, joined.
    pub components: String,
    /// Whether the timeline starts unfolded.
    pub open: bool,
    /// Timeline, newest first.
    pub updates: Vec<UpdateView>,
}

/// One timeline entry.
pub struct UpdateView {
    /// Status words.
    pub status_label: String,
    /// Body as entered.
    pub body: String,
    /// Readable time.
    pub at: String,
    /// RFC 3339.
    pub at_iso: String,
}

/// One drill run row.
pub struct DrillView {
    /// Drill name.
    pub name: String,
    /// Readable start.
    pub started: String,
    /// RFC 3339 start.
    pub started_iso: String,
    /// `3 min` or `running`.
    pub duration: String,
    /// Verdict words.
    pub verdict: String,
    /// CSS class suffix: `pass`, `fail`, `running`, `other`.
    pub verdict_class: &'static str,
    /// Link to the report (same-origin or http(s) only).
    pub report_url: Option<String>,
}

/// The whole page.
#[derive(Template)]
#[template(path = "status.html")]
pub struct StatusPage<'a> {
    /// What to print.
    pub page: &'a PageView,
}

/// The banner alone, pushed to open pages.
#[derive(Template)]
#[template(path = "_banner.html")]
pub struct BannerFragment<'a> {
    /// What to print.
    pub page: &'a PageView,
}

/// The component list alone, pushed to open pages when the set of components changes.
#[derive(Template)]
#[template(path = "_components.html")]
pub struct ComponentsFragment<'a> {
    /// What to print.
    pub page: &'a PageView,
}

/// The incident sections alone, pushed to open pages.
#[derive(Template)]
#[template(path = "_incidents.html")]
pub struct IncidentsFragment<'a> {
    /// What to print.
    pub page: &'a PageView,
}

/// One probe row of a drill report.
pub struct ProbeRow {
    /// Probe name.
    pub name: String,
    /// Probed URL.
    pub url: String,
    /// `9 of 10`.
    pub passed: String,
    /// `timeout (3), status 503 (1)`.
    pub failures: String,
}

/// A drill run with its report.
pub struct DrillDetail {
    /// Product name.
    pub title: String,
    /// Drill run id.
    pub id: String,
    /// Drill name.
    pub name: String,
    /// Readable start.
    pub started: String,
    /// RFC 3339 start.
    pub started_iso: String,
    /// Duration or `running for ...`.
    pub duration: String,
    /// Verdict words.
    pub verdict: String,
    /// CSS class suffix of the verdict.
    pub verdict_class: &'static str,
    /// Why it did not pass.
    pub reason: Option<String>,
    /// Incident the drill opened.
    pub incident: Option<String>,
    /// Probe summaries from the report.
    pub probes: Vec<ProbeRow>,
    /// The runner's timeline: (offset, what).
    pub events: Vec<(String, String)>,
    /// The whole report, pretty-printed JSON.
    pub report: String,
}

/// The drill report page.
#[derive(Template)]
#[template(path = "drill.html")]
pub struct DrillPage<'a> {
    /// What to print.
    pub d: &'a DrillDetail,
}

/// Builds the report page's view from a run and its stored JSON report.
pub fn drill_detail(
    title: &str,
    now: i64,
    run: &DrillRun,
    reason: Option<String>,
    incident: Option<String>,
    report: Option<&serde_json::Value>,
) -> DrillDetail {
    let row = drill_view(now, run);
    let list = |key: &str| {
        report
            .and_then(|r| r.get(key))
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &serde_json::Value, key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let probes = list("probes")
        .iter()
        .map(|p| ProbeRow {
            name: text(p, "name"),
            url: text(p, "url"),
            passed: format!("{} of {}", text(p, "passed"), text(p, "samples")),
            failures: p
                .get("failures")
                .and_then(serde_json::Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter_map(|pair| {
                            let pair = pair.as_array()?;
                            Some(format!(
                                "{} ({})",
                                pair.first()?.as_str().unwrap_or_default(),
                                pair.get(1)?
                            ))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        })
        .collect();
    let events = list("events")
        .iter()
        .map(|e| {
            let at = e
                .get("at_ms")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
            (format!("+{}", clock::span(at)), text(e, "what"))
        })
        .collect();
    DrillDetail {
        title: title.to_owned(),
        id: run.id.clone(),
        name: run.name.clone(),
        started: row.started,
        started_iso: row.started_iso,
        duration: row.duration,
        verdict: row.verdict,
        verdict_class: row.verdict_class,
        reason,
        incident,
        probes,
        events,
        report: report
            .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
            .unwrap_or_else(|| "no report stored".to_owned()),
    }
}

/// Capitalises `in_progress` into `In progress`.
pub fn status_words(status: &str) -> String {
    let mut words = status.replace('_', " ");
    if let Some(first) = words.get(..1) {
        let upper = first.to_ascii_uppercase();
        words.replace_range(..1, &upper);
    }
    words
}

fn bar(day: &Day) -> BarView {
    let date = clock::long_date(day.day);
    let live = day.live.filter(|s| *s != ComponentState::Operational);
    let Some(uptime) = day.uptime else {
        return match live {
            // Today before anything was recorded: the live state.
            Some(now) => BarView {
                class: now.slug(),
                tip: format!("{date}: {} now", now.label()),
                base: "none",
            },
            None => BarView {
                class: "none",
                tip: format!("{date}: no data"),
                base: "none",
            },
        };
    };
    let mut tip = format!("{date}: {} up", percent(uptime));
    let length = day.length_minutes.max(day.observed_minutes);
    if day.observed_minutes < length {
        let missing = f64::from(length - day.observed_minutes) / f64::from(length.max(1));
        tip.push_str(&format!(", {} no data", percent(missing)));
    }
    let mut parts = Vec::new();
    if day.outage_minutes > 0 {
        parts.push(format!("{} min outage", day.outage_minutes));
    }
    if day.degraded_minutes > 0 {
        parts.push(format!("{} min degraded", day.degraded_minutes));
    }
    if day.maintenance_minutes > 0 {
        parts.push(format!("{} min maintenance", day.maintenance_minutes));
    }
    if !parts.is_empty() {
        tip.push_str(", ");
        tip.push_str(&parts.join(", "));
    }
    if !day.incidents.is_empty() {
        tip.push_str("; ");
        tip.push_str(&day.incidents.join("; "));
    } else if parts.is_empty() {
        tip.push_str(", no incidents");
    }
    if let Some(now) = live {
        tip.push_str(&format!("; {} now", now.label()));
    }
    BarView {
        class: live.map_or(day.worst, |now| day.worst.max(now)).slug(),
        tip,
        base: day.worst.slug(),
    }
}

/// A fraction as a percentage, in the one format used everywhere
/// ([`crate::history::format_percent`]: `99.95 %`, `100.00 %`, rounded).
pub fn percent(fraction: f64) -> String {
    crate::history::format_percent(fraction * 100.0)
}

/// The slug and words of a state, `none`/"No data" without one.
fn state_words(state: Option<ComponentState>) -> (&'static str, &'static str) {
    state.map_or(("none", "No data"), |s| (s.slug(), s.title()))
}

fn component_view(c: &Component) -> ComponentView {
    ComponentView {
        id: c.id.clone(),
        name: c.name.clone(),
        kind_label: match c.kind {
            ComponentKind::Dependency => "dependency",
            ComponentKind::Endpoint => "endpoint",
        },
        state_slug: state_words(c.state).0,
        state_label: state_words(c.state).1,
        reason: c.reason.clone(),
        uptime: c.uptime().map_or_else(
            || "no data yet".to_owned(),
            |u| match c.no_data().filter(|n| *n > 0.0) {
                Some(n) => format!("{} uptime, {} no data", percent(u), percent(n)),
                None => format!("{} uptime", percent(u)),
            },
        ),
        bars: c.days.iter().map(bar).collect(),
    }
}

fn incident_view(snapshot: &StatusSnapshot, i: &Incident) -> IncidentView {
    let now = snapshot.now;
    let window = match (i.kind, i.scheduled_for, i.resolved_at) {
        (IncidentKind::Maintenance, Some(from), None) => match i.scheduled_until {
            Some(until) => format!(
                "scheduled {} to {}",
                clock::human(from),
                clock::human(until)
            ),
            None => format!("scheduled from {}", clock::human(from)),
        },
        (_, _, Some(end)) => format!(
            "{} to {} ({})",
            clock::human(i.created_at),
            clock::human(end),
            clock::span(end - i.created_at)
        ),
        (_, _, None) => format!(
            "since {} ({})",
            clock::human(i.created_at),
            clock::span(now - i.created_at)
        ),
    };
    IncidentView {
        id: i.id.clone(),
        title: i.title.clone(),
        kind_label: match i.kind {
            IncidentKind::Incident => "Incident",
            IncidentKind::Maintenance => "Maintenance",
        },
        status_label: status_words(&i.status),
        impact: i.impact.as_str(),
        window,
        components: i
            .components
            .iter()
            .map(|id| snapshot.component_name(id))
            .collect::<Vec<_>>()
            .join(", "),
        open: i.is_open(),
        updates: i
            .updates
            .iter()
            .map(|u| UpdateView {
                status_label: status_words(&u.status),
                body: u.body.clone(),
                at: clock::human(u.at),
                at_iso: clock::rfc3339(u.at),
            })
            .collect(),
    }
}

/// Only same-origin paths and http(s) URLs become links (no `javascript:`).
fn safe_link(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let ok = (url.starts_with('/') && !url.starts_with("//"))
        || lower.starts_with("http://")
        || lower.starts_with("https://");
    ok.then(|| url.to_owned())
}

fn drill_view(now: i64, d: &DrillRun) -> DrillView {
    let (verdict, verdict_class) = match d.verdict.as_deref() {
        None => ("running".to_owned(), "running"),
        Some(v) => {
            let class = match v.to_ascii_lowercase().as_str() {
                "pass" | "passed" => "pass",
                "fail" | "failed" => "fail",
                _ => "other",
            };
            (v.to_owned(), class)
        }
    };
    DrillView {
        name: d.name.clone(),
        started: clock::human(d.started_at),
        started_iso: clock::rfc3339(d.started_at),
        duration: match d.ended_at {
            Some(end) => clock::span(end - d.started_at),
            None => format!("running for {}", clock::span(now - d.started_at)),
        },
        verdict,
        verdict_class,
        report_url: d.report_url.as_deref().and_then(safe_link),
    }
}

/// Builds the view of a snapshot.
pub fn view(title: &str, snapshot: &StatusSnapshot) -> PageView {
    let overall = snapshot.overall();
    let mut active = Vec::new();
    let mut upcoming = Vec::new();
    let mut past = Vec::new();
    for i in &snapshot.incidents {
        let v = incident_view(snapshot, i);
        if i.is_upcoming(snapshot.now) {
            upcoming.push(v);
        } else if i.is_open() {
            active.push(v);
        } else if i
            .resolved_at
            .is_some_and(|r| snapshot.now - r <= super::source::RECENT_DAYS * clock::DAY_MS)
        {
            past.push(v);
        }
    }
    PageView {
        title: title.to_owned(),
        overall_slug: overall.slug(),
        overall_label: snapshot.overall_label(),
        affected: snapshot
            .components
            .iter()
            .filter(|c| c.state.is_some_and(|s| s != ComponentState::Operational))
            .count(),
        component_count: snapshot.components.len(),
        component_key: snapshot
            .components
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        updated: clock::human(snapshot.now),
        updated_iso: clock::rfc3339(snapshot.now),
        updated_ms: snapshot.now,
        has_probes: snapshot
            .components
            .iter()
            .any(|c| c.kind == ComponentKind::Endpoint),
        components: snapshot.components.iter().map(component_view).collect(),
        active,
        upcoming,
        past,
        drills: snapshot
            .drills
            .iter()
            .map(|d| drill_view(snapshot.now, d))
            .collect(),
    }
}

/// Renders the whole page.
pub fn render(title: &str, snapshot: &StatusSnapshot) -> Result<String, askama::Error> {
    let page = view(title, snapshot);
    StatusPage { page: &page }.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents_have_one_format() {
        assert_eq!(percent(1.0), "100.00 %");
        assert_eq!(percent(0.75), "75.00 %");
        assert_eq!(percent(0.88888), "88.89 %");
        assert_eq!(percent(0.5), "50.00 %");
        assert_eq!(percent(-1.0), "0.00 %");
    }

    #[test]
    fn status_words_are_capitalised() {
        assert_eq!(status_words("in_progress"), "In progress");
        assert_eq!(status_words(""), "");
        assert_eq!(status_words("é"), "é");
    }

    #[test]
    fn only_safe_links() {
        assert_eq!(
            safe_link("/status/drills/1"),
            Some("/status/drills/1".into())
        );
        assert_eq!(
            safe_link("https://x.test/r"),
            Some("https://x.test/r".into())
        );
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link("//evil.test/x"), None);
    }
}
