//! Statuspage-style JSON (`/api/v2/*.json`) and the webhook payloads built from the same
//! objects, so a client written for Statuspage's public API reads ours.
//!
//! Field names and status values follow Statuspage's v2 API; ids are downtime's (proxy
//! names, incident ids). Text is sent as entered: JSON escaping by serde keeps it data, and
//! `<`, `>` and `&` are additionally written as `\u003c`-style escapes so the JSON stays
//! inert even if someone embeds it in a page.

use serde_json::{Value, json};

use super::clock;
use super::model::{Component, ComponentState, Incident, IncidentKind, StatusSnapshot};

/// The page object of every answer.
pub fn page(snapshot: &StatusSnapshot, status_url: &str) -> Value {
    json!({
        "id": "downtime",
        "name": "downtime",
        "url": status_url,
        "time_zone": "Etc/UTC",
        "updated_at": clock::rfc3339(snapshot.now),
    })
}

/// Statuspage's `status` object.
pub fn status(snapshot: &StatusSnapshot) -> Value {
    json!({
        "indicator": snapshot.indicator(),
        "description": snapshot.overall_label(),
    })
}

/// One component.
pub fn component(c: &Component, position: usize) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        // No data (a proxy that is gone): no status rather than a guess.
        "status": c.state.map(ComponentState::as_str),
        "removed": c.state.is_none() && c.kind == super::model::ComponentKind::Dependency,
        "description": if c.reason.is_empty() { Value::Null } else { Value::String(c.reason.clone()) },
        "created_at": clock::rfc3339(c.created_at),
        "updated_at": clock::rfc3339(c.updated_at),
        "position": position + 1,
        "showcase": true,
        "start_date": clock::date(clock::day_of(c.created_at)),
        "group_id": null,
        "group": false,
        "only_show_if_degraded": false,
        "page_id": "downtime",
        "kind": c.kind,
        "uptime_90d": c.uptime(),
    })
}

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |t| Value::String(clock::rfc3339(t)))
}

/// One incident or maintenance, with its updates.
pub fn incident(snapshot: &StatusSnapshot, status_url: &str, i: &Incident) -> Value {
    let components: Vec<Value> = i
        .components
        .iter()
        .map(
            |id| match snapshot.components.iter().position(|c| &c.id == id) {
                Some(p) => component(&snapshot.components[p], p),
                None => json!({ "id": id, "name": id, "status": null }),
            },
        )
        .collect();
    let affected: Vec<Value> = i
        .components
        .iter()
        .map(|id| json!({ "code": id, "name": snapshot.component_name(id) }))
        .collect();
    let monitoring_at = i
        .updates
        .iter()
        .filter(|u| u.status == "monitoring")
        .map(|u| u.at)
        .min();
    let mut value = json!({
        "id": i.id,
        "name": i.title,
        "status": i.status,
        "impact": i.impact.as_str(),
        "created_at": clock::rfc3339(i.created_at),
        "updated_at": clock::rfc3339(i.updated_at),
        "started_at": clock::rfc3339(i.created_at),
        "monitoring_at": time(monitoring_at),
        "resolved_at": time(i.resolved_at),
        "shortlink": format!("{status_url}#incident-{}", i.id),
        "page_id": "downtime",
        "incident_updates": i.updates.iter().map(|u| json!({
            "id": u.id,
            "status": u.status,
            "body": u.body,
            "incident_id": i.id,
            "created_at": clock::rfc3339(u.at),
            "updated_at": clock::rfc3339(u.at),
            "display_at": clock::rfc3339(u.at),
            "affected_components": affected,
        })).collect::<Vec<_>>(),
        "components": components,
    });
    if i.kind == IncidentKind::Maintenance
        && let Some(map) = value.as_object_mut()
    {
        map.insert("scheduled_for".into(), time(i.scheduled_for));
        map.insert("scheduled_until".into(), time(i.scheduled_until));
    }
    value
}

fn incidents(snapshot: &StatusSnapshot, kind: IncidentKind) -> impl Iterator<Item = &Incident> {
    snapshot.incidents.iter().filter(move |i| i.kind == kind)
}

/// `GET /api/v2/summary.json`.
pub fn summary(snapshot: &StatusSnapshot, status_url: &str) -> Value {
    json!({
        "page": page(snapshot, status_url),
        "status": status(snapshot),
        "components": components_list(snapshot),
        "incidents": incidents(snapshot, IncidentKind::Incident)
            .filter(|i| i.is_open())
            .map(|i| incident(snapshot, status_url, i))
            .collect::<Vec<_>>(),
        "scheduled_maintenances": incidents(snapshot, IncidentKind::Maintenance)
            .filter(|i| i.is_open())
            .map(|i| incident(snapshot, status_url, i))
            .collect::<Vec<_>>(),
    })
}

fn components_list(snapshot: &StatusSnapshot) -> Vec<Value> {
    snapshot
        .components
        .iter()
        .enumerate()
        .map(|(p, c)| component(c, p))
        .collect()
}

/// `GET /api/v2/status.json`.
pub fn status_doc(snapshot: &StatusSnapshot, status_url: &str) -> Value {
    json!({ "page": page(snapshot, status_url), "status": status(snapshot) })
}

/// `GET /api/v2/components.json`.
pub fn components_doc(snapshot: &StatusSnapshot, status_url: &str) -> Value {
    json!({ "page": page(snapshot, status_url), "components": components_list(snapshot) })
}

/// `GET /api/v2/incidents.json` (`unresolved_only` for `incidents/unresolved.json`).
pub fn incidents_doc(snapshot: &StatusSnapshot, status_url: &str, unresolved_only: bool) -> Value {
    json!({
        "page": page(snapshot, status_url),
        "incidents": incidents(snapshot, IncidentKind::Incident)
            .filter(|i| !unresolved_only || i.is_open())
            .take(50)
            .map(|i| incident(snapshot, status_url, i))
            .collect::<Vec<_>>(),
    })
}

/// Which maintenances a maintenance document lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceFilter {
    /// All recent ones.
    All,
    /// Not started yet.
    Upcoming,
    /// Started and not completed.
    Active,
}

/// `GET /api/v2/scheduled-maintenances.json` and its `upcoming`/`active` variants.
pub fn maintenances_doc(
    snapshot: &StatusSnapshot,
    status_url: &str,
    filter: MaintenanceFilter,
) -> Value {
    json!({
        "page": page(snapshot, status_url),
        "scheduled_maintenances": incidents(snapshot, IncidentKind::Maintenance)
            .filter(|i| match filter {
                MaintenanceFilter::All => true,
                MaintenanceFilter::Upcoming => i.is_upcoming(snapshot.now),
                MaintenanceFilter::Active => i.is_open() && !i.is_upcoming(snapshot.now),
            })
            .map(|i| incident(snapshot, status_url, i))
            .collect::<Vec<_>>(),
    })
}

/// Webhook payload for a component whose state changed.
pub fn component_event(
    snapshot: &StatusSnapshot,
    status_url: &str,
    c: &Component,
    was: Option<ComponentState>,
) -> Value {
    let position = snapshot
        .components
        .iter()
        .position(|x| x.id == c.id)
        .unwrap_or(0);
    json!({
        "page": page(snapshot, status_url),
        "component_update": {
            "created_at": clock::rfc3339(snapshot.now),
            "component_id": c.id,
            "old_status": was.map(ComponentState::as_str),
            "new_status": c.state.map(ComponentState::as_str),
        },
        "component": component(c, position),
    })
}

/// Webhook payload for an incident that was created, updated or resolved.
pub fn incident_event(snapshot: &StatusSnapshot, status_url: &str, i: &Incident) -> Value {
    json!({
        "page": page(snapshot, status_url),
        "incident": incident(snapshot, status_url, i),
    })
}

/// Serialises with `<`, `>` and `&` escaped as `\u003c`, `\u003e`, `\u0026`.
pub fn to_inert_string(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    // Those bytes only occur inside strings in JSON text, where the escapes mean the same.
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inert_json_round_trips() {
        let v = json!({"name": "<script>alert('x')</script> & co"});
        let text = to_inert_string(&v);
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
