//! Incident endpoints: `POST/GET /incidents`, `GET/PATCH /incidents/{id}`,
//! `POST /incidents/{id}/updates`. A `scheduled` window makes a maintenance.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::error::decode_object;
use super::history::{HistoryApiError, Params, id_of, number, time};
use super::{AppState, json};
use crate::history::{HistoryError, IncidentFilter, IncidentKind, IncidentRequest, UpdateRequest};

/// `POST /incidents`: 201 with the incident and its first update.
pub(super) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, HistoryApiError> {
    let request: IncidentRequest = decode_object(&body)?;
    let incident = state.history.create_incident(request.into_new()?).await?;
    Ok(json(StatusCode::CREATED, &incident))
}

/// `GET /incidents?status=open|closed|all&kind=incident|maintenance&since=&limit=`:
/// newest first, each with its timeline.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(params): Params,
) -> Result<Response, HistoryApiError> {
    let open = match params.get("status").map(String::as_str) {
        None | Some("all") => None,
        Some("open") => Some(true),
        Some("closed") => Some(false),
        Some(other) => {
            return Err(HistoryError::invalid(
                "status",
                format!("expected open, closed or all, got {other:?}"),
            )
            .into());
        }
    };
    let kind = match params.get("kind").map(String::as_str) {
        None => None,
        Some("incident") => Some(IncidentKind::Incident),
        Some("maintenance") => Some(IncidentKind::Maintenance),
        Some(other) => {
            return Err(HistoryError::invalid(
                "kind",
                format!("expected incident or maintenance, got {other:?}"),
            )
            .into());
        }
    };
    let filter = IncidentFilter {
        open,
        kind,
        since: time(&params, "since")?,
        limit: number(&params, "limit", 500)?,
    };
    let incidents = state.history.incidents(&filter).await?;
    Ok(json(StatusCode::OK, &incidents))
}

/// `GET /incidents/{id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HistoryApiError> {
    let incident = state.history.incident(id_of("incident", &id)?).await?;
    Ok(json(StatusCode::OK, &incident))
}

/// `PATCH /incidents/{id}`: title, status, impact, components, schedule; a status change or
/// a `body` adds an update.
pub(super) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HistoryApiError> {
    let id = id_of("incident", &id)?;
    let request: IncidentRequest = decode_object(&body)?;
    let incident = state
        .history
        .update_incident(id, request.into_patch()?)
        .await?;
    Ok(json(StatusCode::OK, &incident))
}

/// `POST /incidents/{id}/updates`: 201 with the new update.
pub(super) async fn add_update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HistoryApiError> {
    let id = id_of("incident", &id)?;
    let request: UpdateRequest = decode_object(&body)?;
    let (update, _) = state
        .history
        .add_incident_update(id, request.into_update()?)
        .await?;
    Ok(json(StatusCode::CREATED, &update))
}
