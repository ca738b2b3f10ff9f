//! Toxic endpoints: list, create, show, update, delete.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use downtime_model::{ToxicPatch, ToxicRequest};

use super::error::decode_object;
use super::history::Who;
use super::{ApiError, AppState, json};
use crate::history::{Event, EventKind};

pub(super) async fn list(
    State(state): State<AppState>,
    Path(proxy): Path<String>,
) -> Result<Response, ApiError> {
    let toxics = state.registry.toxics(&proxy).await?;
    Ok(json(StatusCode::OK, &toxics))
}

pub(super) async fn create(
    State(state): State<AppState>,
    Who(actor): Who,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Order as in Toxiproxy: unknown proxy (404) before a bad body (400).
    state.registry.get(&proxy).await?;
    let request: ToxicRequest = decode_object(&body)?;
    let toxic = state.registry.add_toxic(&proxy, request).await?;
    let event = Event::fault(EventKind::FaultCreated, actor, &proxy, &toxic);
    state.history.record(event);
    Ok(json(StatusCode::OK, &toxic))
}

pub(super) async fn show(
    State(state): State<AppState>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let toxic = state.registry.toxic(&proxy, &toxic).await?;
    Ok(json(StatusCode::OK, &toxic))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Who(actor): Who,
    Path((proxy, toxic)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.registry.toxic(&proxy, &toxic).await?;
    let patch: ToxicPatch = decode_object(&body)?;
    let toxic = state.registry.update_toxic(&proxy, &toxic, patch).await?;
    let event = Event::fault(EventKind::FaultChanged, actor, &proxy, &toxic);
    state.history.record(event);
    Ok(json(StatusCode::OK, &toxic))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Who(actor): Who,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.registry.remove_toxic(&proxy, &toxic).await?;
    let event = Event::fault_gone(EventKind::FaultRemoved, actor, &proxy, &toxic);
    state.history.record(event);
    Ok(StatusCode::NO_CONTENT)
}
