//! Incidents and scheduled maintenances, each with a timeline of updates.
//!
//! The vocabulary is Statuspage's (statuses, impacts), so its readers and clients know it.
//! Requests arrive as lenient-typed JSON ([`IncidentRequest`], [`UpdateRequest`]) and are
//! turned into checked values ([`NewIncident`], [`IncidentPatch`], [`NewUpdate`]) whose errors
//! name the field and the value. Text is stored exactly as given: whoever shows it escapes it.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::types::{Timestamp, parse_component, proxy_component};
use super::{History, HistoryError, Notice};

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest update text, in characters.
pub const MAX_BODY: usize = 10_000;
/// Most components one incident affects.
pub const MAX_COMPONENTS: usize = 100;
/// Longest component id, in characters.
pub const MAX_COMPONENT: usize = 200;

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

    fn names(kind: IncidentKind) -> &'static str {
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

fn status_of(text: &str) -> IncidentStatus {
    IncidentStatus::parse(text).unwrap_or(IncidentStatus::Investigating)
}

pub(super) async fn insert(
    conn: &mut SqliteConnection,
    new: &NewIncident,
    now: Timestamp,
) -> Result<i64, sqlx::Error> {
    let resolved = new.status.is_closed().then_some(now.millis());
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO incidents (kind, title, status, impact, source, drill_id, \
           scheduled_start_ms, scheduled_end_ms, created_ms, updated_ms, resolved_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING id",
    )
    .bind(new.kind.as_str())
    .bind(&new.title)
    .bind(new.status.as_str())
    .bind(new.impact.as_str())
    .bind(new.source.as_str())
    .bind(new.drill)
    .bind(new.scheduled.map(|(s, _)| s.millis()))
    .bind(new.scheduled.map(|(_, e)| e.millis()))
    .bind(now.millis())
    .bind(resolved)
    .fetch_one(&mut *conn)
    .await?;
    set_components(conn, id, &new.components).await?;
    insert_update(conn, id, now, new.status, &new.body).await?;
    Ok(id)
}

async fn set_components(
    conn: &mut SqliteConnection,
    id: i64,
    components: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM incident_components WHERE incident_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for (position, component) in components.iter().enumerate() {
        sqlx::query(
            "INSERT INTO incident_components (incident_id, position, component) \
             VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(component)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn insert_update(
    conn: &mut SqliteConnection,
    id: i64,
    now: Timestamp,
    status: IncidentStatus,
    body: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO incident_updates (incident_id, at_ms, status, body) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id)
    .bind(now.millis())
    .bind(status.as_str())
    .bind(body)
    .fetch_one(conn)
    .await
}

/// One incident with its components and timeline, or `None` when there is no such id.
pub(super) async fn load(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<Incident>, sqlx::Error> {
    Ok(load_many(conn, &[id]).await?.pop())
}

/// `SQL (id, id, ...)` with every id bound: one statement for a whole list.
fn with_ids(sql: &str, ids: &[i64], tail: &str) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::new(sql);
    query.push(" (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(") ");
    query.push(tail);
    query
}

/// The incidents with these ids, in the order given (missing ids are skipped), each with
/// its components and timeline: three queries whatever the number of incidents, so a list
/// or a status page does not pay a round trip per incident.
pub(super) async fn load_many(
    conn: &mut SqliteConnection,
    ids: &[i64],
) -> Result<Vec<Incident>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = with_ids(
        "SELECT id, kind, title, status, impact, source, drill_id, scheduled_start_ms, \
           scheduled_end_ms, created_ms, updated_ms, resolved_ms FROM incidents WHERE id IN",
        ids,
        "",
    )
    .build()
    .fetch_all(&mut *conn)
    .await?;
    let mut components: HashMap<i64, Vec<String>> = HashMap::new();
    for row in with_ids(
        "SELECT incident_id, component FROM incident_components WHERE incident_id IN",
        ids,
        "ORDER BY incident_id, position",
    )
    .build()
    .fetch_all(&mut *conn)
    .await?
    {
        components
            .entry(row.try_get("incident_id")?)
            .or_default()
            .push(row.try_get("component")?);
    }
    let mut updates: HashMap<i64, Vec<IncidentUpdate>> = HashMap::new();
    for row in with_ids(
        "SELECT id, incident_id, at_ms, status, body FROM incident_updates \
         WHERE incident_id IN",
        ids,
        "ORDER BY at_ms DESC, id DESC",
    )
    .build()
    .fetch_all(&mut *conn)
    .await?
    {
        let incident: i64 = row.try_get("incident_id")?;
        let status: String = row.try_get("status")?;
        updates.entry(incident).or_default().push(IncidentUpdate {
            id: row.try_get("id")?,
            incident,
            at: Timestamp(row.try_get("at_ms")?),
            status: status_of(&status),
            body: row.try_get("body")?,
        });
    }
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let kind: String = row.try_get("kind")?;
        let status: String = row.try_get("status")?;
        let impact: String = row.try_get("impact")?;
        let source: String = row.try_get("source")?;
        let ts = |name: &str| -> Result<Option<Timestamp>, sqlx::Error> {
            Ok(row.try_get::<Option<i64>, _>(name)?.map(Timestamp))
        };
        let incident = Incident {
            id,
            kind: if kind == "maintenance" {
                IncidentKind::Maintenance
            } else {
                IncidentKind::Incident
            },
            title: row.try_get("title")?,
            status: status_of(&status),
            impact: Impact::parse(&impact).unwrap_or(Impact::Minor),
            source: if source == "drill" {
                IncidentSource::Drill
            } else {
                IncidentSource::Manual
            },
            drill: row.try_get("drill_id")?,
            components: components.remove(&id).unwrap_or_default(),
            scheduled_start: ts("scheduled_start_ms")?,
            scheduled_end: ts("scheduled_end_ms")?,
            created_at: Timestamp(row.try_get("created_ms")?),
            updated_at: Timestamp(row.try_get("updated_ms")?),
            resolved_at: ts("resolved_ms")?,
            updates: updates.remove(&id).unwrap_or_default(),
        };
        found.insert(id, incident);
    }
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// Applies a checked patch inside a transaction; returns `None` when there is no such
/// incident.
pub(super) async fn apply_patch(
    conn: &mut SqliteConnection,
    id: i64,
    patch: &IncidentPatch,
    now: Timestamp,
) -> Result<Option<Incident>, HistoryError> {
    let Some(current) = load(conn, id).await? else {
        return Ok(None);
    };
    if let Some(status) = patch.status {
        check_status_kind(status, current.kind)?;
    }
    if patch.scheduled.is_some() && current.kind != IncidentKind::Maintenance {
        return Err(HistoryError::invalid(
            "scheduled",
            "only a scheduled maintenance has a schedule (create one with \"scheduled\")",
        ));
    }
    let status = patch.status.unwrap_or(current.status);
    let resolved = if status.is_closed() {
        Some(current.resolved_at.map_or(now.millis(), Timestamp::millis))
    } else {
        None
    };
    let title = patch.title.as_deref().unwrap_or(&current.title);
    let impact = patch.impact.unwrap_or(current.impact);
    let (start, end) = match patch.scheduled {
        Some((s, e)) => (Some(s.millis()), Some(e.millis())),
        None => (
            current.scheduled_start.map(Timestamp::millis),
            current.scheduled_end.map(Timestamp::millis),
        ),
    };
    sqlx::query(
        "UPDATE incidents SET title = $2, status = $3, impact = $4, scheduled_start_ms = $5, \
           scheduled_end_ms = $6, updated_ms = $7, resolved_ms = $8 WHERE id = $1",
    )
    .bind(id)
    .bind(title)
    .bind(status.as_str())
    .bind(impact.as_str())
    .bind(start)
    .bind(end)
    .bind(now.millis())
    .bind(resolved)
    .execute(&mut *conn)
    .await?;
    if let Some(components) = &patch.components {
        set_components(conn, id, components).await?;
    }
    let status_changed = patch.status.is_some_and(|s| s != current.status);
    if status_changed || patch.body.is_some() {
        insert_update(conn, id, now, status, patch.body.as_deref().unwrap_or("")).await?;
    }
    Ok(load(conn, id).await?)
}

impl History {
    /// Creates an incident or maintenance with its first update.
    pub async fn create_incident(&self, new: NewIncident) -> Result<Incident, HistoryError> {
        let now = Timestamp::now();
        let mut tx = super::store::begin_write(self.pool()).await?;
        let id = insert(&mut tx, &new, now).await?;
        let incident = load(&mut tx, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("incident {id}")))?;
        tx.commit().await?;
        self.notify(Notice::Incident(std::sync::Arc::new(incident.clone())));
        Ok(incident)
    }

    /// One incident with its timeline.
    pub async fn incident(&self, id: i64) -> Result<Incident, HistoryError> {
        let mut conn = self.pool().acquire().await?;
        load(&mut conn, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("incident {id}")))
    }

    /// Incidents newest first (by creation), each with its timeline.
    pub async fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, HistoryError> {
        let limit = i64::from(filter.limit.unwrap_or(50).clamp(1, 500));
        let open: Option<i64> = filter.open.map(i64::from);
        let mut conn = self.pool().acquire().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM incidents \
             WHERE (CAST($1 AS BIGINT) IS NULL OR ($1 = 1 AND resolved_ms IS NULL) \
                    OR ($1 = 0 AND resolved_ms IS NOT NULL)) \
               AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
               AND (CAST($3 AS BIGINT) IS NULL OR updated_ms >= $3) \
             ORDER BY created_ms DESC, id DESC LIMIT $4",
        )
        .bind(open)
        .bind(filter.kind.map(IncidentKind::as_str))
        .bind(filter.since.map(Timestamp::millis))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Ok(load_many(&mut conn, &ids).await?)
    }

    /// Changes an incident; a status change or a body adds an update to the timeline.
    pub async fn update_incident(
        &self,
        id: i64,
        patch: IncidentPatch,
    ) -> Result<Incident, HistoryError> {
        let mut tx = super::store::begin_write(self.pool()).await?;
        let incident = apply_patch(&mut tx, id, &patch, Timestamp::now())
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("incident {id}")))?;
        tx.commit().await?;
        self.notify(Notice::Incident(std::sync::Arc::new(incident.clone())));
        Ok(incident)
    }

    /// Adds an update (and possibly a new status) to an incident's timeline.
    pub async fn add_incident_update(
        &self,
        id: i64,
        update: NewUpdate,
    ) -> Result<(IncidentUpdate, Incident), HistoryError> {
        let patch = IncidentPatch {
            status: update.status,
            body: Some(update.body),
            ..IncidentPatch::default()
        };
        let incident = self.update_incident(id, patch).await?;
        let newest = incident
            .updates
            .first()
            .cloned()
            .ok_or_else(|| HistoryError::NotFound(format!("update of incident {id}")))?;
        Ok((newest, incident))
    }

    /// Component ids under a maintenance window that is in progress at `now` (scheduled
    /// window running and not completed), for the sampler and the status page.
    pub async fn maintenance_components(
        &self,
        now: Timestamp,
    ) -> Result<BTreeSet<String>, HistoryError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT c.component FROM incidents i \
             JOIN incident_components c ON c.incident_id = i.id \
             WHERE i.kind = 'maintenance' AND i.resolved_ms IS NULL \
               AND i.scheduled_start_ms <= $1 AND i.scheduled_end_ms > $1",
        )
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// The worst impact (by the state it declares) of the open manual incidents, per
    /// component they name: what [`super::decide`] lays over the observed state.
    pub async fn incident_impacts(
        &self,
    ) -> Result<std::collections::HashMap<String, Impact>, HistoryError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.component, i.impact FROM incidents i \
             JOIN incident_components c ON c.incident_id = i.id \
             WHERE i.kind = 'incident' AND i.source = 'manual' AND i.resolved_ms IS NULL",
        )
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<String, Impact> = std::collections::HashMap::new();
        for (component, impact) in rows {
            let Some(impact) = Impact::parse(&impact) else {
                continue;
            };
            let worse = out
                .get(&component)
                .is_none_or(|old| super::impact_state(*old) < super::impact_state(impact));
            if worse {
                out.insert(component, impact);
            }
        }
        Ok(out)
    }

    /// Moves maintenances along their schedule as of `now`: `scheduled` becomes
    /// `in_progress` at the start, and an unfinished one becomes `completed` at the end;
    /// each move adds an update. Returns the incidents changed.
    pub async fn advance_maintenances(
        &self,
        now: Timestamp,
    ) -> Result<Vec<Incident>, HistoryError> {
        let due: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, status, scheduled_end_ms FROM incidents \
             WHERE kind = 'maintenance' AND resolved_ms IS NULL \
               AND scheduled_start_ms <= $1",
        )
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        let mut changed = Vec::new();
        for (id, status, end) in due {
            let status = status_of(&status);
            let (next, text) = if end <= now.millis() {
                (
                    IncidentStatus::Completed,
                    "The scheduled maintenance has been completed.",
                )
            } else if status == IncidentStatus::Scheduled {
                (
                    IncidentStatus::InProgress,
                    "The scheduled maintenance is in progress.",
                )
            } else {
                continue;
            };
            let patch = IncidentPatch {
                status: Some(next),
                body: Some(text.to_owned()),
                ..IncidentPatch::default()
            };
            changed.push(self.update_incident(id, patch).await?);
        }
        Ok(changed)
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
