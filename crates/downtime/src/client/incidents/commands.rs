//! The `incident` subcommands that act on incidents and maintenances alike: `list`,
//! `show`, `open`, `update`, `resolve` and `edit`. Each is one request to the server's
//! `/incidents` endpoints (`resolve` reads the incident first to learn its kind), with a
//! body that carries only the flags given so the server's defaults apply to the rest.
//! Kept apart from the clap definitions in `mod.rs`, which only say what may be typed.

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::view::{
    IncidentView, UpdateView, capitalized, incident_details, incident_table, printable, time_of,
    window_text,
};
use super::{EditArgs, ListArgs, OpenArgs, ResolveArgs, Status, UpdateArgs};
use crate::client::Output;
use crate::client::api::Api;

/// The text `resolve` posts when no `--message` is given, worded like the update the server
/// posts itself when a maintenance window ends.
const RESOLVED_TEXT: &str = "This incident has been resolved.";

/// The same for a maintenance, which is closed as `completed`.
const COMPLETED_TEXT: &str = "The scheduled maintenance has been completed.";

/// `incident list`: `GET /incidents` with the filters given.
pub(super) async fn list(api: &Api, args: &ListArgs) -> anyhow::Result<Output> {
    let mut query = Vec::new();
    if let Some(which) = args.status {
        query.push(("status", which.as_str().to_owned()));
    }
    if let Some(kind) = args.kind {
        query.push(("kind", kind.as_str().to_owned()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let answer = api.get_with_query(&["incidents"], &query).await?;
    let incidents: Vec<IncidentView> = answer.parse()?;
    Ok(Output::new(
        incident_table(&incidents, args.status, args.kind),
        &answer,
    ))
}

/// `incident show`: `GET /incidents/{id}`.
pub(super) async fn show(api: &Api, id: i64) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::GET, &["incidents", &id.to_string()], None)
        .await?;
    let incident: IncidentView = answer.parse()?;
    Ok(Output::new(incident_details(&incident), &answer))
}

/// The body of `POST /incidents` for `open`: only what was given, so the server's
/// defaults (investigating, minor) apply to the rest.
fn open_body(args: &OpenArgs) -> Value {
    let mut body = Map::new();
    body.insert("title".to_owned(), json!(args.title));
    put(&mut body, "status", args.status.map(|s| json!(s.as_str())));
    put(&mut body, "impact", args.impact.map(|i| json!(i.as_str())));
    if !args.components.is_empty() {
        body.insert("components".to_owned(), json!(args.components));
    }
    put(&mut body, "body", args.message.as_ref().map(|m| json!(m)));
    Value::Object(body)
}

/// `incident open`: `POST /incidents`.
pub(super) async fn open(api: &Api, args: &OpenArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::POST, &["incidents"], Some(&open_body(args)))
        .await?;
    let incident: IncidentView = answer.parse()?;
    let human = format!(
        "Opened incident {}: {} ({}, impact {})\n",
        incident.id,
        printable(&incident.title),
        incident.status,
        incident.impact
    );
    Ok(Output::new(human, &answer))
}

/// The body of `POST /incidents/{id}/updates`.
fn update_body(args: &UpdateArgs) -> Value {
    let mut body = Map::new();
    put(&mut body, "status", args.status.map(|s| json!(s.as_str())));
    put(&mut body, "body", args.message.as_ref().map(|m| json!(m)));
    Value::Object(body)
}

/// `incident update`: `POST /incidents/{id}/updates`.
pub(super) async fn update(api: &Api, args: &UpdateArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(
            Method::POST,
            &["incidents", &args.id.to_string(), "updates"],
            Some(&update_body(args)),
        )
        .await?;
    let posted: UpdateView = answer.parse()?;
    let human = format!(
        "Posted an update to incident {} (status {})\n",
        args.id, posted.status
    );
    Ok(Output::new(human, &answer))
}

/// `incident resolve`: reads the incident to learn its kind (incidents close as
/// `resolved`, maintenances as `completed`), then `PATCH`es the status with a closing
/// message. One already closed is left alone, so running it twice adds nothing.
pub(super) async fn resolve(api: &Api, args: &ResolveArgs) -> anyhow::Result<Output> {
    let id = args.id.to_string();
    let current = api.send(Method::GET, &["incidents", &id], None).await?;
    let incident: IncidentView = current.parse()?;
    let noun = incident.noun();
    if incident.is_closed() {
        let since = incident
            .resolved_at
            .as_deref()
            .map(|at| format!(" since {}", time_of(at, false)))
            .unwrap_or_default();
        let human = format!(
            "{} {} is already {}{since}; nothing changed\n",
            capitalized(noun),
            args.id,
            incident.status
        );
        return Ok(Output::new(human, &current));
    }
    let (status, text) = if incident.kind == "maintenance" {
        (Status::Completed, COMPLETED_TEXT)
    } else {
        (Status::Resolved, RESOLVED_TEXT)
    };
    let body = json!({
        "status": status.as_str(),
        "body": args.message.as_deref().unwrap_or(text),
    });
    let answer = api
        .send(Method::PATCH, &["incidents", &id], Some(&body))
        .await?;
    let human = format!(
        "{} {} is now {}: {}\n",
        capitalized(noun),
        args.id,
        status.as_str(),
        printable(&incident.title)
    );
    Ok(Output::new(human, &answer))
}

/// The body of `PATCH /incidents/{id}` for `edit`: only the fields given, and no `body`,
/// so no update is added to the timeline.
fn edit_body(args: &EditArgs) -> Value {
    let mut body = Map::new();
    put(&mut body, "title", args.title.as_ref().map(|t| json!(t)));
    put(&mut body, "impact", args.impact.map(|i| json!(i.as_str())));
    if args.clear_components {
        body.insert("components".to_owned(), json!([]));
    } else if !args.components.is_empty() {
        body.insert("components".to_owned(), json!(args.components));
    }
    if let (Some(start), Some(end)) = (&args.start, &args.end) {
        body.insert(
            "scheduled".to_owned(),
            json!({"start": start.ms, "end": end.ms}),
        );
    }
    Value::Object(body)
}

/// `incident edit`: `PATCH /incidents/{id}`.
pub(super) async fn edit(api: &Api, args: &EditArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(
            Method::PATCH,
            &["incidents", &args.id.to_string()],
            Some(&edit_body(args)),
        )
        .await?;
    let incident: IncidentView = answer.parse()?;
    let components = if incident.components.is_empty() {
        "no components".to_owned()
    } else {
        printable(&incident.components.join(", "))
    };
    let mut human = format!(
        "Edited {} {}: {} (impact {}, {components}",
        incident.noun(),
        incident.id,
        printable(&incident.title),
        incident.impact
    );
    if let Some(window) = window_text(&incident) {
        let _ = write!(human, ", {window}");
    }
    human.push_str(")\n");
    Ok(Output::new(human, &answer))
}

/// Inserts `value` under `key` when present.
pub(super) fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::super::Impact;
    use super::super::LocalOptions;
    use super::*;

    fn options() -> LocalOptions {
        LocalOptions {
            host: None,
            json: false,
        }
    }

    #[test]
    fn bodies_carry_only_what_was_given() {
        let args = OpenArgs {
            title: "db <slow>".into(),
            impact: None,
            components: vec![],
            message: None,
            status: None,
            options: options(),
        };
        assert_eq!(open_body(&args), json!({"title": "db <slow>"}));
        let args = OpenArgs {
            title: "db".into(),
            impact: Some(Impact::Major),
            components: vec!["db".into(), "endpoint:home".into()],
            message: Some("looking".into()),
            status: Some(Status::Identified),
            options: options(),
        };
        assert_eq!(
            open_body(&args),
            json!({"title": "db", "impact": "major", "status": "identified",
                   "components": ["db", "endpoint:home"], "body": "looking"})
        );
        let args = UpdateArgs {
            id: 3,
            message: None,
            status: Some(Status::InProgress),
            options: options(),
        };
        assert_eq!(update_body(&args), json!({"status": "in_progress"}));
    }

    #[test]
    fn edit_sends_no_body_so_the_timeline_is_untouched() {
        let mut args = EditArgs {
            id: 1,
            title: Some("new".into()),
            impact: None,
            components: vec![],
            clear_components: false,
            start: None,
            end: None,
            options: options(),
        };
        assert_eq!(edit_body(&args), json!({"title": "new"}));
        args.title = None;
        args.clear_components = true;
        assert_eq!(edit_body(&args), json!({"components": []}));
    }
}
