//! Incident requests and their checks: the lenient-typed JSON bodies ([`IncidentRequest`],
//! [`ScheduleRequest`], [`UpdateRequest`]) and the checked values they become
//! ([`NewIncident`], [`IncidentPatch`], [`NewUpdate`]). Kept apart from the storage so every
//! limit and every error message (naming the field and the value) lives in one place.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use super::model::{Impact, IncidentKind, IncidentSource, IncidentStatus};
use crate::history::HistoryError;
use crate::history::types::{Timestamp, parse_component, proxy_component};

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest update text, in characters.
pub const MAX_BODY: usize = 10_000;
/// Most components one incident affects.
pub const MAX_COMPONENTS: usize = 100;
/// Longest component id, in characters.
pub const MAX_COMPONENT: usize = 200;

/// Body of `POST /incidents` and `PATCH /incidents/{id}`; every field optional here, the
/// checks say which are required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentRequest {
    /// Title (required to create).
    #[serde(default)]
    pub title: Option<String>,
    /// Status name.
    #[serde(default)]
    pub status: Option<String>,
    /// Impact name.
    #[serde(default)]
    pub impact: Option<String>,
    /// Affected components; a bare name means `proxy:<name>`.
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// Text of the update that goes with this change (the first one on creation).
    #[serde(default, alias = "message")]
    pub body: Option<String>,
    /// Makes it a scheduled maintenance.
    #[serde(default)]
    pub scheduled: Option<ScheduleRequest>,
}

/// The `scheduled` object: start and end as RFC 3339 or Unix milliseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Window start.
    #[serde(default)]
    pub start: Option<Value>,
    /// Window end.
    #[serde(default)]
    pub end: Option<Value>,
}

/// Body of `POST /incidents/{id}/updates`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// New status (default: unchanged).
    #[serde(default)]
    pub status: Option<String>,
    /// Text (required unless the status changes).
    #[serde(default, alias = "message")]
    pub body: Option<String>,
}

/// A checked incident to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    /// Incident or maintenance (maintenance when a schedule is given).
    pub kind: IncidentKind,
    /// Title.
    pub title: String,
    /// Initial status.
    pub status: IncidentStatus,
    /// Impact.
    pub impact: Impact,
    /// Affected components.
    pub components: Vec<String>,
    /// Text of the first update.
    pub body: String,
    /// Maintenance window.
    pub scheduled: Option<(Timestamp, Timestamp)>,
    /// Manual or drill.
    pub source: IncidentSource,
    /// The drill, for drill incidents.
    pub drill: Option<i64>,
}

/// A checked change to an incident.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentPatch {
    /// New title.
    pub title: Option<String>,
    /// New status (adds an update).
    pub status: Option<IncidentStatus>,
    /// New impact.
    pub impact: Option<Impact>,
    /// New component list (replaces the old one).
    pub components: Option<Vec<String>>,
    /// Text of an update to add.
    pub body: Option<String>,
    /// New maintenance window.
    pub scheduled: Option<(Timestamp, Timestamp)>,
}

/// A checked update to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUpdate {
    /// New status, or the current one.
    pub status: Option<IncidentStatus>,
    /// Text.
    pub body: String,
}

fn check_title(title: &str) -> Result<(), HistoryError> {
    if title.trim().is_empty() {
        return Err(HistoryError::invalid("title", "must not be empty"));
    }
    let len = title.chars().count();
    if len > MAX_TITLE {
        return Err(HistoryError::invalid(
            "title",
            format!("must be at most {MAX_TITLE} characters, got {len}"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(HistoryError::invalid(
            "title",
            format!("must not contain control characters, got {title:?}"),
        ));
    }
    Ok(())
}

fn check_body(field: &str, body: &str) -> Result<(), HistoryError> {
    let len = body.chars().count();
    if len > MAX_BODY {
        return Err(HistoryError::invalid(
            field,
            format!("must be at most {MAX_BODY} characters, got {len}"),
        ));
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(HistoryError::invalid(
            field,
            "must not contain control characters other than newlines and tabs",
        ));
    }
    Ok(())
}

fn parse_status(text: &str) -> Result<IncidentStatus, HistoryError> {
    IncidentStatus::parse(text).ok_or_else(|| {
        HistoryError::invalid(
            "status",
            format!(
                "expected one of investigating, identified, monitoring, resolved, scheduled, \
                 in_progress, verifying, completed; got {text:?}"
            ),
        )
    })
}

/// Checks that `status` belongs to `kind`.
pub fn check_status_kind(status: IncidentStatus, kind: IncidentKind) -> Result<(), HistoryError> {
    if status.kind() == kind {
        return Ok(());
    }
    Err(HistoryError::invalid(
        "status",
        format!(
            "{:?} is not a status of a {}: use {}",
            status.as_str(),
            kind.as_str(),
            IncidentStatus::names(kind)
        ),
    ))
}

fn parse_impact(text: &str) -> Result<Impact, HistoryError> {
    Impact::parse(text).ok_or_else(|| {
        HistoryError::invalid(
            "impact",
            format!("expected one of none, minor, major, critical, maintenance; got {text:?}"),
        )
    })
}

/// Checks component ids; a bare name becomes `proxy:<name>`; duplicates are dropped.
pub fn check_components(components: Vec<String>) -> Result<Vec<String>, HistoryError> {
    if components.len() > MAX_COMPONENTS {
        return Err(HistoryError::invalid(
            "components",
            format!(
                "at most {MAX_COMPONENTS} components, got {}",
                components.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(components.len());
    for (i, c) in components.into_iter().enumerate() {
        let field = format!("components[{i}]");
        if c.trim().is_empty() {
            return Err(HistoryError::invalid(field, "must not be empty"));
        }
        if c.chars().count() > MAX_COMPONENT || c.chars().any(char::is_control) {
            return Err(HistoryError::invalid(
                field,
                format!(
                    "must be at most {MAX_COMPONENT} characters without control characters, got {c:?}"
                ),
            ));
        }
        let id = match parse_component(&c) {
            Some(_) => c,
            None => proxy_component(&c),
        };
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

fn check_schedule(schedule: &ScheduleRequest) -> Result<(Timestamp, Timestamp), HistoryError> {
    let start = schedule
        .start
        .as_ref()
        .ok_or_else(|| HistoryError::invalid("scheduled.start", "is required"))?;
    let end = schedule
        .end
        .as_ref()
        .ok_or_else(|| HistoryError::invalid("scheduled.end", "is required"))?;
    let start = Timestamp::from_json("scheduled.start", start)?;
    let end = Timestamp::from_json("scheduled.end", end)?;
    if end <= start {
        return Err(HistoryError::invalid(
            "scheduled.end",
            format!("must be after scheduled.start ({start}), got {end}"),
        ));
    }
    Ok((start, end))
}

impl IncidentRequest {
    /// Checks a creation request: a title is required; a `scheduled` window makes it a
    /// maintenance (status `scheduled`, impact `maintenance` by default).
    pub fn into_new(self) -> Result<NewIncident, HistoryError> {
        let title = self
            .title
            .ok_or_else(|| HistoryError::invalid("title", "is required"))?;
        check_title(&title)?;
        let scheduled = self.scheduled.as_ref().map(check_schedule).transpose()?;
        let kind = if scheduled.is_some() {
            IncidentKind::Maintenance
        } else {
            IncidentKind::Incident
        };
        let status = match self.status.as_deref() {
            Some(s) => {
                let status = parse_status(s)?;
                check_status_kind(status, kind)?;
                status
            }
            None if kind == IncidentKind::Maintenance => IncidentStatus::Scheduled,
            None => IncidentStatus::Investigating,
        };
        let impact = match self.impact.as_deref() {
            Some(i) => parse_impact(i)?,
            None if kind == IncidentKind::Maintenance => Impact::Maintenance,
            None => Impact::Minor,
        };
        let body = self.body.unwrap_or_default();
        check_body("body", &body)?;
        Ok(NewIncident {
            kind,
            title,
            status,
            impact,
            components: check_components(self.components.unwrap_or_default())?,
            body,
            scheduled,
            source: IncidentSource::Manual,
            drill: None,
        })
    }

    /// Checks a change request (the status is checked against the incident's kind later).
    pub fn into_patch(self) -> Result<IncidentPatch, HistoryError> {
        if let Some(title) = &self.title {
            check_title(title)?;
        }
        if let Some(body) = &self.body {
            check_body("body", body)?;
        }
        Ok(IncidentPatch {
            status: self.status.as_deref().map(parse_status).transpose()?,
            impact: self.impact.as_deref().map(parse_impact).transpose()?,
            components: self.components.map(check_components).transpose()?,
            scheduled: self.scheduled.as_ref().map(check_schedule).transpose()?,
            title: self.title,
            body: self.body,
        })
    }
}

impl UpdateRequest {
    /// Checks an update: text is required unless the status changes.
    pub fn into_update(self) -> Result<NewUpdate, HistoryError> {
        let status = self.status.as_deref().map(parse_status).transpose()?;
        let body = match self.body {
            Some(b) => b,
            None if status.is_some() => String::new(),
            None => return Err(HistoryError::invalid("body", "is required")),
        };
        check_body("body", &body)?;
        if body.trim().is_empty() && status.is_none() {
            return Err(HistoryError::invalid(
                "body",
                "must not be empty unless status changes",
            ));
        }
        Ok(NewUpdate { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> IncidentRequest {
        serde_json::from_value(v).unwrap()
    }

    fn field_of(e: HistoryError) -> String {
        match e {
            HistoryError::Invalid { field, .. } => field,
            other => panic!("not invalid: {other}"),
        }
    }

    #[test]
    fn defaults_for_incidents_and_maintenances() {
        let i = request(json!({"title": "db slow"})).into_new().unwrap();
        assert_eq!(i.kind, IncidentKind::Incident);
        assert_eq!(i.status, IncidentStatus::Investigating);
        assert_eq!(i.impact, Impact::Minor);
        let m = request(
            json!({"title": "upgrade", "components": ["db", "endpoint:home", "db"],
            "scheduled": {"start": "2030-01-01T00:00:00Z", "end": 1_893_459_600_000_i64}}),
        )
        .into_new()
        .unwrap();
        assert_eq!(m.kind, IncidentKind::Maintenance);
        assert_eq!(m.status, IncidentStatus::Scheduled);
        assert_eq!(m.impact, Impact::Maintenance);
        assert_eq!(m.components, vec!["proxy:db", "endpoint:home"]);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (json!({}), "title"),
            (json!({"title": "  "}), "title"),
            (json!({"title": "x".repeat(201)}), "title"),
            (json!({"title": "a\u{0007}b"}), "title"),
            (json!({"title": "t", "status": "on fire"}), "status"),
            (json!({"title": "t", "status": "scheduled"}), "status"),
            (json!({"title": "t", "impact": "huge"}), "impact"),
            (json!({"title": "t", "components": [""]}), "components[0]"),
            (json!({"title": "t", "body": "x".repeat(10_001)}), "body"),
            (
                json!({"title": "t", "scheduled": {"start": "2030-01-01T00:00:00Z"}}),
                "scheduled.end",
            ),
            (
                json!({"title": "t", "scheduled": {"start": "tomorrow", "end": 1}}),
                "scheduled.start",
            ),
            (
                json!({"title": "t", "scheduled": {"start": 10, "end": 10}}),
                "scheduled.end",
            ),
        ];
        for (body, field) in cases {
            let e = request(body.clone()).into_new().unwrap_err();
            assert_eq!(field_of(e), field, "{body}");
        }
        let e = UpdateRequest::default().into_update().unwrap_err();
        assert_eq!(field_of(e), "body");
    }

    #[test]
    fn text_is_kept_as_given() {
        let i = request(json!({"title": "<script>alert(1)</script> & \"x\"",
            "body": "<b>bold</b>\nline"}))
        .into_new()
        .unwrap();
        assert_eq!(i.title, "<script>alert(1)</script> & \"x\"");
        assert_eq!(i.body, "<b>bold</b>\nline");
    }
}
