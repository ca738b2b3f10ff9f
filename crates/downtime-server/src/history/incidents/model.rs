//! The incident vocabulary: kinds, statuses, impacts and sources (Statuspage's names, so its
//! readers and clients know them), the stored [`Incident`] with its timeline of
//! [`IncidentUpdate`]s, and the [`IncidentFilter`] for listing. Plain data, with no checks and
//! no SQL, so the request checks, the storage and the readers share one definition.

use serde::{Deserialize, Serialize};

use crate::history::types::Timestamp;

/// An unplanned incident or a planned maintenance (which has a schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Something broke (or a drill broke it on purpose).
    Incident,
    /// Planned work with a start and an end.
    Maintenance,
}

impl IncidentKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Incident => "incident",
            IncidentKind::Maintenance => "maintenance",
        }
    }
}

/// Where an incident stands; the first four belong to incidents, the last four to
/// maintenances (Statuspage's two vocabularies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Looking into it.
    Investigating,
    /// The cause is known.
    Identified,
    /// A fix is in; watching.
    Monitoring,
    /// Over.
    Resolved,
    /// Maintenance not started yet.
    Scheduled,
    /// Maintenance under way.
    InProgress,
    /// Maintenance done, checking.
    Verifying,
    /// Maintenance over.
    Completed,
}

impl IncidentStatus {
    const ALL: [IncidentStatus; 8] = [
        IncidentStatus::Investigating,
        IncidentStatus::Identified,
        IncidentStatus::Monitoring,
        IncidentStatus::Resolved,
        IncidentStatus::Scheduled,
        IncidentStatus::InProgress,
        IncidentStatus::Verifying,
        IncidentStatus::Completed,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "investigating",
            IncidentStatus::Identified => "identified",
            IncidentStatus::Monitoring => "monitoring",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Scheduled => "scheduled",
            IncidentStatus::InProgress => "in_progress",
            IncidentStatus::Verifying => "verifying",
            IncidentStatus::Completed => "completed",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<Self> {
        IncidentStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Which kind of incident uses this status.
    pub fn kind(self) -> IncidentKind {
        match self {
            IncidentStatus::Investigating
            | IncidentStatus::Identified
            | IncidentStatus::Monitoring
            | IncidentStatus::Resolved => IncidentKind::Incident,
            _ => IncidentKind::Maintenance,
        }
    }

    /// Whether the incident is over (resolved or completed).
    pub fn is_closed(self) -> bool {
        matches!(self, IncidentStatus::Resolved | IncidentStatus::Completed)
    }

    pub(super) fn names(kind: IncidentKind) -> &'static str {
        match kind {
            IncidentKind::Incident => "investigating, identified, monitoring or resolved",
            IncidentKind::Maintenance => "scheduled, in_progress, verifying or completed",
        }
    }
}

/// How bad it is for users (Statuspage's impact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// No visible effect.
    None,
    /// Some users notice.
    Minor,
    /// Many users are affected.
    Major,
    /// Everything is down.
    Critical,
    /// Planned maintenance.
    Maintenance,
}

impl Impact {
    const ALL: [Impact; 5] = [
        Impact::None,
        Impact::Minor,
        Impact::Major,
        Impact::Critical,
        Impact::Maintenance,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::None => "none",
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
            Impact::Maintenance => "maintenance",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<Self> {
        Impact::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Who opened the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentSource {
    /// A person, through the API or the CLI.
    Manual,
    /// A drill, when it started faulting a dependency.
    Drill,
}

impl IncidentSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentSource::Manual => "manual",
            IncidentSource::Drill => "drill",
        }
    }
}

/// An incident or maintenance with its timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Id (stable, increasing).
    pub id: i64,
    /// Incident or maintenance.
    pub kind: IncidentKind,
    /// Title as entered (unescaped).
    pub title: String,
    /// Current status.
    pub status: IncidentStatus,
    /// Current impact.
    pub impact: Impact,
    /// Manual or drill.
    pub source: IncidentSource,
    /// The drill that opened it.
    pub drill: Option<i64>,
    /// Affected component ids (`proxy:<name>`, `endpoint:<probe>`), in the given order.
    pub components: Vec<String>,
    /// Maintenance window start.
    pub scheduled_start: Option<Timestamp>,
    /// Maintenance window end.
    pub scheduled_end: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it was resolved or completed (cleared if reopened).
    pub resolved_at: Option<Timestamp>,
    /// The timeline, newest first.
    pub updates: Vec<IncidentUpdate>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentUpdate {
    /// Id.
    pub id: i64,
    /// The incident.
    pub incident: i64,
    /// When it was posted.
    pub at: Timestamp,
    /// The incident's status from this update on.
    pub status: IncidentStatus,
    /// Text as entered (unescaped; may be empty when only the status changed).
    pub body: String,
}

/// Which incidents to list.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// `Some(true)`: only open ones; `Some(false)`: only closed ones.
    pub open: Option<bool>,
    /// Only this kind.
    pub kind: Option<IncidentKind>,
    /// Only those created, updated or resolved since then.
    pub since: Option<Timestamp>,
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<u32>,
}
