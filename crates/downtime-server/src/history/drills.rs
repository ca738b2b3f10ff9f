//! Drill runs as the history sees them, and the incidents they drive: opened when a drill
//! starts faulting a dependency, updated at each phase, resolved with the verdict.
//!
//! The drill runner reports through the API (`/history/drills...`), so a drill run against
//! a remote server is recorded there, and one run against plain Toxiproxy just gets 404s.

use std::sync::Arc;
use std::time::Duration;

use downtime_model::ToxicRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};

use super::incidents::{self, Impact, IncidentKind, IncidentPatch, IncidentSource, IncidentStatus};
use super::state::{ComponentState, fault_state};
use super::types::{Actor, Event, EventKind, Timestamp, proxy_component};
use super::{History, HistoryError, Incident, NewIncident, Notice};

/// Longest drill name, in characters.
const MAX_NAME: usize = 200;
/// Longest phase text, in characters.
const MAX_TEXT: usize = 2_000;
/// A running drill without a heartbeat (or any report) for this long is abandoned: its
/// runner reports every [`super::client::HEARTBEAT_EVERY`].
pub const ABANDON_AFTER: Duration = Duration::from_secs(15);
/// How often the server looks for abandoned drills.
pub const ABANDON_CHECK: Duration = Duration::from_secs(2);

/// How a drill ended (the runner's outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillOutcome {
    /// Every phase met its thresholds.
    Pass,
    /// A threshold was missed.
    Fail,
    /// Interrupted or halted.
    Aborted,
    /// Its runner stopped reporting (killed, or the server restarted under it).
    Abandoned,
}

impl DrillOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillOutcome::Pass => "pass",
            DrillOutcome::Fail => "fail",
            DrillOutcome::Aborted => "aborted",
            DrillOutcome::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(DrillOutcome::Pass),
            "fail" => Some(DrillOutcome::Fail),
            "aborted" => Some(DrillOutcome::Aborted),
            "abandoned" => Some(DrillOutcome::Abandoned),
            _ => None,
        }
    }
}

/// Body of `POST /history/drills`: a drill run starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillStart {
    /// Drill name.
    pub name: String,
    /// Its seed, for the record.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// One fault live during a phase: the proxy and the toxic body the runner sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseFault {
    /// Proxy name.
    pub proxy: String,
    /// The toxic as created (`POST /proxies/{proxy}/toxics` body).
    pub toxic: Value,
}

/// Body of `POST /history/drills/{id}/phases`: the drill entered a phase, or (with
/// `heartbeat`) its runner is still alive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillPhase {
    /// Phase name (a step name, `recovery`); required unless `heartbeat`.
    #[serde(default)]
    pub phase: String,
    /// Only a sign of life: nothing is recorded but the time.
    #[serde(default)]
    pub heartbeat: bool,
    /// What happened, for the timeline.
    #[serde(default)]
    pub text: String,
    /// Faults live from now on; empty when the faults are gone.
    #[serde(default)]
    pub faults: Vec<PhaseFault>,
}

/// Body of `POST /history/drills/{id}/end`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillEnd {
    /// `pass`, `fail` or `aborted`.
    pub outcome: String,
    /// Why it did not pass.
    #[serde(default)]
    pub reason: Option<String>,
    /// The runner's JSON report.
    #[serde(default)]
    pub report: Option<Value>,
}

/// A drill run, without its report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillSummary {
    /// Id.
    pub id: i64,
    /// Drill name.
    pub name: String,
    /// Seed (as text: it may exceed what JSON numbers carry exactly).
    pub seed: Option<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End, once ended.
    pub ended_at: Option<Timestamp>,
    /// Verdict, once ended.
    pub outcome: Option<DrillOutcome>,
    /// Why it did not pass.
    pub reason: Option<String>,
    /// The incident it opened, if it faulted anything.
    pub incident: Option<i64>,
}

/// A drill run with its report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillRecord {
    /// The run.
    #[serde(flatten)]
    pub summary: DrillSummary,
    /// The runner's JSON report, once ended.
    pub report: Option<Value>,
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), HistoryError> {
    let len = text.chars().count();
    if len > max {
        return Err(HistoryError::invalid(
            field,
            format!("must be at most {max} characters, got {len}"),
        ));
    }
    Ok(())
}

/// The impact a set of faults has: major when one of them is an outage at full strength,
/// minor otherwise (none when nothing is active).
pub fn faults_impact(states: &[ComponentState]) -> Impact {
    match states.iter().max() {
        Some(ComponentState::MajorOutage) => Impact::Major,
        Some(ComponentState::Operational) | None => Impact::None,
        Some(_) => Impact::Minor,
    }
}

fn summary_of(row: &sqlx::sqlite::SqliteRow) -> Result<DrillSummary, sqlx::Error> {
    let outcome: Option<String> = row.try_get("outcome")?;
    Ok(DrillSummary {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        seed: row.try_get("seed")?,
        started_at: Timestamp(row.try_get("started_ms")?),
        ended_at: row.try_get::<Option<i64>, _>("ended_ms")?.map(Timestamp),
        outcome: outcome.as_deref().and_then(DrillOutcome::parse),
        reason: row.try_get("reason")?,
        incident: row.try_get("incident_id")?,
    })
}

async fn load(conn: &mut SqliteConnection, id: i64) -> Result<Option<DrillRecord>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT id, name, seed, started_ms, ended_ms, outcome, reason, report, incident_id \
         FROM drills WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    let report: Option<String> = row.try_get("report")?;
    Ok(Some(DrillRecord {
        summary: summary_of(&row)?,
        report: report.and_then(|r| serde_json::from_str(&r).ok()),
    }))
}

impl History {
    /// Records the start of a drill run; returns its id.
    pub async fn drill_started(
        &self,
        start: DrillStart,
        actor: Actor,
    ) -> Result<DrillSummary, HistoryError> {
        if start.name.trim().is_empty() {
            return Err(HistoryError::invalid("name", "must not be empty"));
        }
        check_text("name", &start.name, MAX_NAME)?;
        let now = Timestamp::now();
        let mut conn = self.pool().acquire().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO drills (name, seed, started_ms) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(&start.name)
        .bind(start.seed.map(|s| s.to_string()))
        .bind(now.millis())
        .fetch_one(&mut *conn)
        .await?;
        let record = load(&mut conn, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("drill {id}")))?;
        drop(conn);
        let mut event = Event::new(EventKind::DrillStarted, actor)
            .with_drill(id)
            .with_detail(json!({ "name": start.name, "seed": record.summary.seed }));
        event.at = now;
        self.record(event);
        self.notify(Notice::Drill(Arc::new(record.summary.clone())));
        Ok(record.summary)
    }

    /// Records a phase; opens the drill's incident when it first faults a dependency,
    /// otherwise adds an update (`identified` while faults are live, `monitoring` once they
    /// are gone). `live` are the states the faulted proxies are in now (as the status page
    /// shows them): the incident's impact is the worst of those and the faults'. Returns
    /// the incident, if any.
    pub async fn drill_phase(
        &self,
        id: i64,
        phase: DrillPhase,
        live: &[ComponentState],
        actor: Actor,
    ) -> Result<Option<Incident>, HistoryError> {
        if phase.heartbeat {
            return self.drill_heartbeat(id).await;
        }
        if phase.phase.trim().is_empty() {
            return Err(HistoryError::invalid("phase", "must not be empty"));
        }
        check_text("phase", &phase.phase, MAX_NAME)?;
        check_text("text", &phase.text, MAX_TEXT)?;
        let mut states = Vec::with_capacity(phase.faults.len());
        let mut proxies: Vec<String> = Vec::new();
        for (i, f) in phase.faults.iter().enumerate() {
            if f.proxy.trim().is_empty() {
                return Err(HistoryError::invalid(
                    format!("faults[{i}].proxy"),
                    "must not be empty",
                ));
            }
            let request: ToxicRequest = serde_json::from_value(f.toxic.clone())
                .map_err(|e| HistoryError::invalid(format!("faults[{i}].toxic"), e.to_string()))?;
            let toxic = request
                .into_toxic(|_| false)
                .map_err(|e| HistoryError::invalid(format!("faults[{i}].toxic"), e.to_string()))?;
            states.push(fault_state(&toxic));
            if !proxies.contains(&f.proxy) {
                proxies.push(f.proxy.clone());
            }
        }
        let now = Timestamp::now();
        let mut tx = super::store::begin_write(self.pool()).await?;
        let record = load(&mut tx, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("drill {id}")))?;
        if record.summary.ended_at.is_some() {
            return Err(HistoryError::Conflict(format!("drill {id} has ended")));
        }
        let name = &record.summary.name;
        let components: Vec<String> = proxies.iter().map(|p| proxy_component(p)).collect();
        let faulting = states.iter().any(|s| *s != ComponentState::Operational);
        let impact = faults_impact(&[states.as_slice(), live].concat());
        let incident = match record.summary.incident {
            None if faulting => {
                let new = NewIncident {
                    kind: IncidentKind::Incident,
                    title: format!("Drill \"{name}\": {} faulted", proxies.join(", ")),
                    status: IncidentStatus::Identified,
                    impact,
                    components,
                    body: if phase.text.trim().is_empty() {
                        format!(
                            "Drill \"{name}\" started faulting {} ({}).",
                            proxies.join(", "),
                            phase.phase
                        )
                    } else {
                        phase.text.clone()
                    },
                    scheduled: None,
                    source: IncidentSource::Drill,
                    drill: Some(id),
                };
                let incident_id = incidents::insert(&mut tx, &new, now).await?;
                sqlx::query("UPDATE drills SET incident_id = $2 WHERE id = $1")
                    .bind(id)
                    .bind(incident_id)
                    .execute(&mut *tx)
                    .await?;
                incidents::load(&mut tx, incident_id).await?
            }
            None => None,
            Some(incident_id) => {
                let current = incidents::load(&mut tx, incident_id).await?;
                sqlx::query("UPDATE drills SET heartbeat_ms = $2 WHERE id = $1")
                    .bind(id)
                    .bind(now.millis())
                    .execute(&mut *tx)
                    .await?;
                let status = if faulting {
                    IncidentStatus::Identified
                } else {
                    IncidentStatus::Monitoring
                };
                let body = if phase.text.trim().is_empty() {
                    format!("Drill \"{name}\": {}.", phase.phase)
                } else {
                    phase.text.clone()
                };
                let mut patch = IncidentPatch {
                    // One status per phase: an unchanged status is not repeated.
                    status: current
                        .as_ref()
                        .is_none_or(|c| c.status != status)
                        .then_some(status),
                    body: Some(body),
                    ..IncidentPatch::default()
                };
                if let Some(current) = &current {
                    let mut all = current.components.clone();
                    for c in components {
                        if !all.contains(&c) {
                            all.push(c);
                        }
                    }
                    if all != current.components {
                        patch.components = Some(all);
                    }
                    if faulting && impact > current.impact {
                        patch.impact = Some(impact);
                    }
                }
                incidents::apply_patch(&mut tx, incident_id, &patch, now).await?
            }
        };
        tx.commit().await?;
        let faults: Vec<Value> = phase
            .faults
            .iter()
            .map(|f| json!({"proxy": f.proxy, "toxic": f.toxic}))
            .collect();
        let mut event = Event::new(EventKind::DrillPhase, actor)
            .with_drill(id)
            .with_detail(json!({"phase": phase.phase, "text": phase.text, "faults": faults}));
        event.at = now;
        self.record(event);
        if let Some(incident) = &incident {
            self.notify(Notice::Incident(Arc::new(incident.clone())));
        }
        Ok(incident)
    }

    /// Records the end of a drill with its verdict and report, and resolves its incident.
    pub async fn drill_ended(
        &self,
        id: i64,
        end: DrillEnd,
        actor: Actor,
    ) -> Result<DrillRecord, HistoryError> {
        let outcome = DrillOutcome::parse(&end.outcome).ok_or_else(|| {
            HistoryError::invalid(
                "outcome",
                format!(
                    "expected pass, fail, aborted or abandoned, got {:?}",
                    end.outcome
                ),
            )
        })?;
        if let Some(reason) = &end.reason {
            check_text("reason", reason, MAX_TEXT)?;
        }
        let report = end
            .report
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| HistoryError::invalid("report", e.to_string()))?;
        let now = Timestamp::now();
        let mut tx = super::store::begin_write(self.pool()).await?;
        let record = load(&mut tx, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("drill {id}")))?;
        if record.summary.ended_at.is_some() {
            return Err(HistoryError::Conflict(format!("drill {id} has ended")));
        }
        sqlx::query(
            "UPDATE drills SET ended_ms = $2, outcome = $3, reason = $4, report = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now.millis())
        .bind(outcome.as_str())
        .bind(end.reason.as_deref())
        .bind(report)
        .execute(&mut *tx)
        .await?;
        let mut incident = None;
        if let Some(incident_id) = record.summary.incident {
            let name = &record.summary.name;
            let verdict = match (outcome, &end.reason) {
                (DrillOutcome::Abandoned, Some(r)) => {
                    format!("Drill \"{name}\" was {r}.")
                }
                (_, Some(r)) => format!("Drill \"{name}\" ended: {}: {r}.", outcome.as_str()),
                (_, None) => format!("Drill \"{name}\" ended: {}.", outcome.as_str()),
            };
            let patch = IncidentPatch {
                status: Some(IncidentStatus::Resolved),
                body: Some(verdict),
                ..IncidentPatch::default()
            };
            incident = incidents::apply_patch(&mut tx, incident_id, &patch, now).await?;
        }
        let record = load(&mut tx, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("drill {id}")))?;
        tx.commit().await?;
        let mut event = Event::new(EventKind::DrillEnded, actor)
            .with_drill(id)
            .with_detail(json!({"outcome": outcome.as_str(), "reason": end.reason}));
        event.at = now;
        self.record(event);
        if let Some(incident) = incident {
            self.notify(Notice::Incident(Arc::new(incident)));
        }
        self.notify(Notice::Drill(Arc::new(record.summary.clone())));
        Ok(record)
    }

    /// A sign of life from drill `id`'s runner; returns its incident.
    async fn drill_heartbeat(&self, id: i64) -> Result<Option<Incident>, HistoryError> {
        let now = Timestamp::now();
        let mut conn = self.pool().acquire().await?;
        let record = load(&mut conn, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("drill {id}")))?;
        if record.summary.ended_at.is_some() {
            return Err(HistoryError::Conflict(format!("drill {id} has ended")));
        }
        sqlx::query("UPDATE drills SET heartbeat_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(now.millis())
            .execute(&mut *conn)
            .await?;
        match record.summary.incident {
            Some(incident) => Ok(incidents::load(&mut conn, incident).await?),
            None => Ok(None),
        }
    }

    /// Marks abandoned every running drill whose last sign of life (start, phase or
    /// heartbeat) is older than `silent_for` (zero: every running drill, as at start-up,
    /// when no runner can still be driving this server's faults), and resolves their
    /// incidents saying so. Returns the drills it ended.
    pub async fn abandon_silent_drills(
        &self,
        silent_for: Duration,
    ) -> Result<Vec<DrillSummary>, HistoryError> {
        let now = Timestamp::now();
        let limit = now
            .millis()
            .saturating_sub(i64::try_from(silent_for.as_millis()).unwrap_or(i64::MAX));
        let ids: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, COALESCE(heartbeat_ms, started_ms) FROM drills \
             WHERE ended_ms IS NULL AND COALESCE(heartbeat_ms, started_ms) <= $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut ended = Vec::new();
        for (id, last) in ids {
            let silent = Duration::from_millis(u64::try_from(now.millis() - last).unwrap_or(0));
            let reason = if silent_for.is_zero() {
                "abandoned: the server restarted while the drill was running; its faults are gone"
                    .to_owned()
            } else {
                format!(
                    "abandoned: the drill's runner stopped reporting (no heartbeat for {}s); its faults expire by their TTL",
                    silent.as_secs()
                )
            };
            let end = DrillEnd {
                outcome: DrillOutcome::Abandoned.as_str().to_owned(),
                reason: Some(reason),
                report: None,
            };
            match self.drill_ended(id, end, Actor::System).await {
                Ok(record) => ended.push(record.summary),
                // Ended meanwhile by its runner: nothing to do.
                Err(HistoryError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// Drill runs, newest first (at most `limit`, capped at 500).
    pub async fn drills(&self, limit: u32) -> Result<Vec<DrillSummary>, HistoryError> {
        let rows = sqlx::query(
            "SELECT id, name, seed, started_ms, ended_ms, outcome, reason, incident_id \
             FROM drills ORDER BY started_ms DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit.clamp(1, 500)))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(summary_of)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(HistoryError::from)
    }

    /// One drill run with its report.
    pub async fn drill(&self, id: i64) -> Result<DrillRecord, HistoryError> {
        let mut conn = self.pool().acquire().await?;
        load(&mut conn, id)
            .await?
            .ok_or_else(|| HistoryError::NotFound(format!("drill {id}")))
    }
}

/// Watches for drills whose runner went silent until `cancel`: at start every drill left
/// "running" by a previous server is abandoned (no runner can still hold this server's
/// faults), then every [`ABANDON_CHECK`] those silent for [`ABANDON_AFTER`].
pub async fn watch_abandoned(history: History, cancel: tokio_util::sync::CancellationToken) {
    let mut silent_for = Duration::ZERO;
    loop {
        match history.abandon_silent_drills(silent_for).await {
            Ok(ended) => {
                for d in ended {
                    tracing::info!(drill = d.id, name = %d.name, "drill abandoned");
                }
            }
            Err(e) => tracing::debug!(error = %e, "history: cannot look for abandoned drills"),
        }
        silent_for = ABANDON_AFTER;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(ABANDON_CHECK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impact_of_faults() {
        assert_eq!(faults_impact(&[]), Impact::None);
        assert_eq!(
            faults_impact(&[ComponentState::DegradedPerformance]),
            Impact::Minor
        );
        assert_eq!(
            faults_impact(&[ComponentState::PartialOutage, ComponentState::MajorOutage]),
            Impact::Major
        );
    }
}
