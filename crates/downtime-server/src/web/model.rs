//! What the status page, the JSON API, the feed and the webhooks show: one snapshot of
//! components, incidents and drills, built by [`super::source`] and rendered by the others.
//! Nothing here does I/O, so rendering is tested and benchmarked on made-up snapshots.

use serde::Serialize;

pub use crate::history::ComponentState;

/// How the page names and colours a [`ComponentState`] (its `Ord` is severity: the worst
/// of several states is their `max`).
pub trait StateView {
    /// Words on the page (`Partial outage`).
    fn title(self) -> &'static str;
    /// CSS class suffix and `data-state` value (`partial`).
    fn slug(self) -> &'static str;
}

impl StateView for ComponentState {
    fn title(self) -> &'static str {
        match self {
            ComponentState::Operational => "Operational",
            ComponentState::DegradedPerformance => "Degraded performance",
            ComponentState::PartialOutage => "Partial outage",
            ComponentState::MajorOutage => "Major outage",
            ComponentState::UnderMaintenance => "Under maintenance",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ComponentState::Operational => "operational",
            ComponentState::DegradedPerformance => "degraded",
            ComponentState::PartialOutage => "partial",
            ComponentState::MajorOutage => "major",
            ComponentState::UnderMaintenance => "maintenance",
        }
    }
}

/// What a component stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A dependency behind a proxy.
    Dependency,
    /// An endpoint of the app under test, probed by drills.
    Endpoint,
}

/// One day of a component's uptime bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// Day number (days since 1970-01-01 UTC).
    pub day: i64,
    /// Fraction of the day's full length the component was up (0..=1): unobserved time is
    /// not up; `None`: nothing recorded.
    pub uptime: Option<f64>,
    /// The day's full length in minutes (1,440; today: the minutes begun so far).
    pub length_minutes: u32,
    /// Minutes of that length something was recorded; the rest is "no data".
    pub observed_minutes: u32,
    /// The worst state seen that day.
    pub worst: ComponentState,
    /// Minutes spent in a partial or major outage.
    pub outage_minutes: u32,
    /// Minutes spent degraded.
    pub degraded_minutes: u32,
    /// Minutes under maintenance.
    pub maintenance_minutes: u32,
    /// Titles of incidents touching this component that day.
    pub incidents: Vec<String>,
    /// Today only: the live state, laid over what was recorded (`None`: operational or no
    /// data).
    pub live: Option<ComponentState>,
}

impl Day {
    /// A day with nothing recorded.
    pub fn empty(day: i64) -> Self {
        Day {
            day,
            uptime: None,
            length_minutes: 1_440,
            observed_minutes: 0,
            worst: ComponentState::Operational,
            outage_minutes: 0,
            degraded_minutes: 0,
            maintenance_minutes: 0,
            incidents: Vec::new(),
            live: None,
        }
    }
}

/// A component with its current state and history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// Stable identifier (the proxy or endpoint name, prefixed by kind for endpoints).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it is.
    pub kind: ComponentKind,
    /// Current state; `None`: no data (a proxy that is gone, an endpoint not probed lately).
    pub state: Option<ComponentState>,
    /// Why, in a few words (the active faults, the last probe); empty when operational.
    pub reason: String,
    /// The last [`DAYS`] days, oldest first, today last.
    pub days: Vec<Day>,
    /// When the component was first seen (unix ms).
    pub created_at: i64,
    /// When its state last changed, as far as known (unix ms).
    pub updated_at: i64,
}

/// Days shown on each uptime bar.
pub const DAYS: usize = 90;

impl Component {
    /// Uptime as a fraction of the whole time from the first day with data to now: days
    /// and minutes without data in between count as not up; `None` when no day has data.
    pub fn uptime(&self) -> Option<f64> {
        let first = self.days.iter().position(|d| d.uptime.is_some())?;
        let (up, length) = self.days[first..]
            .iter()
            .fold((0.0, 0u64), |(up, length), d| {
                let len = d.length_minutes.max(d.observed_minutes);
                (
                    up + d.uptime.unwrap_or(0.0) * f64::from(len),
                    length + u64::from(len),
                )
            });
        #[allow(clippy::cast_precision_loss)]
        let total = length as f64;
        (length > 0).then(|| up / total)
    }

    /// The fraction of that time with no data.
    pub fn no_data(&self) -> Option<f64> {
        let first = self.days.iter().position(|d| d.uptime.is_some())?;
        let (missing, length) =
            self.days[first..]
                .iter()
                .fold((0u64, 0u64), |(missing, length), d| {
                    let len = d.length_minutes.max(d.observed_minutes);
                    (
                        missing + u64::from(len - d.observed_minutes.min(len)),
                        length + u64::from(len),
                    )
                });
        #[allow(clippy::cast_precision_loss)]
        let share = missing as f64 / length.max(1) as f64;
        (length > 0).then_some(share)
    }
}

/// Whether a record is an incident or a (scheduled) maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Something broke (or a drill broke it on purpose).
    Incident,
    /// Planned work.
    Maintenance,
}

/// Statuspage's incident impact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// No visible impact.
    None,
    /// Degraded.
    Minor,
    /// Partial outage.
    Major,
    /// Major outage.
    Critical,
    /// Maintenance.
    Maintenance,
}

impl Impact {
    /// Statuspage's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::None => "none",
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
            Impact::Maintenance => "maintenance",
        }
    }
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentUpdate {
    /// Identifier.
    pub id: String,
    /// When (unix ms).
    pub at: i64,
    /// The incident status this update set (`investigating`, `resolved`, ...).
    pub status: String,
    /// What happened, as entered.
    pub body: String,
}

/// An incident or maintenance with its timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Identifier.
    pub id: String,
    /// Incident or maintenance.
    pub kind: IncidentKind,
    /// Title, as entered.
    pub title: String,
    /// Current status: `investigating`, `identified`, `monitoring`, `resolved` for incidents;
    /// `scheduled`, `in_progress`, `verifying`, `completed` for maintenances.
    pub status: String,
    /// How bad.
    pub impact: Impact,
    /// Ids of affected components.
    pub components: Vec<String>,
    /// Opened (unix ms).
    pub created_at: i64,
    /// Last changed (unix ms).
    pub updated_at: i64,
    /// Resolved or completed (unix ms).
    pub resolved_at: Option<i64>,
    /// Planned start of a maintenance (unix ms).
    pub scheduled_for: Option<i64>,
    /// Planned end of a maintenance (unix ms).
    pub scheduled_until: Option<i64>,
    /// Timeline, newest first.
    pub updates: Vec<IncidentUpdate>,
}

impl Incident {
    /// Whether it is still open (not resolved or completed).
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }

    /// Whether this is a maintenance that has not started yet.
    pub fn is_upcoming(&self, now: i64) -> bool {
        self.kind == IncidentKind::Maintenance
            && self.is_open()
            && self.status == "scheduled"
            && self.scheduled_for.is_some_and(|t| t > now)
    }
}

/// One drill run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillRun {
    /// Identifier.
    pub id: String,
    /// Drill name, as written in the drill file.
    pub name: String,
    /// Started (unix ms).
    pub started_at: i64,
    /// Ended (unix ms), `None` while running.
    pub ended_at: Option<i64>,
    /// `pass`, `fail`, `aborted`, ... ; `None` while running.
    pub verdict: Option<String>,
    /// Where its report can be read, if stored.
    pub report_url: Option<String>,
}

/// Everything shown at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusSnapshot {
    /// When it was taken (unix ms).
    pub now: i64,
    /// Every component, dependencies first, by name.
    pub components: Vec<Component>,
    /// Incidents and maintenances of the last 90 days and every open one, newest first.
    pub incidents: Vec<Incident>,
    /// Recent drill runs, newest first.
    pub drills: Vec<DrillRun>,
}

impl StatusSnapshot {
    /// The state the banner shows: the worst state of any component (those without data
    /// do not count).
    pub fn overall(&self) -> ComponentState {
        self.components
            .iter()
            .filter_map(|c| c.state)
            .max()
            .unwrap_or(ComponentState::Operational)
    }

    /// The banner text.
    pub fn overall_label(&self) -> &'static str {
        match self.overall() {
            ComponentState::Operational => "All systems operational",
            ComponentState::UnderMaintenance => "Under maintenance",
            ComponentState::DegradedPerformance => "Degraded performance",
            ComponentState::PartialOutage => "Partial outage",
            ComponentState::MajorOutage => "Major outage",
        }
    }

    /// Statuspage's page `status.indicator`.
    pub fn indicator(&self) -> &'static str {
        match self.overall() {
            ComponentState::Operational => "none",
            ComponentState::UnderMaintenance => "maintenance",
            ComponentState::DegradedPerformance => "minor",
            ComponentState::PartialOutage => "major",
            ComponentState::MajorOutage => "critical",
        }
    }

    /// A component's display name, or its id when it is gone.
    pub fn component_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.components
            .iter()
            .find(|c| c.id == id)
            .map_or(id, |c| c.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_distinct_words_and_classes() {
        let slugs: std::collections::HashSet<_> =
            ComponentState::ALL.iter().map(|s| s.slug()).collect();
        let titles: std::collections::HashSet<_> =
            ComponentState::ALL.iter().map(|s| s.title()).collect();
        assert_eq!((slugs.len(), titles.len()), (5, 5));
    }
}
