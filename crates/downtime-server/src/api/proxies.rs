//! Proxy endpoints: list, create, populate, show, update, delete, reset.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use downtime_model::{ProxyPatch, ProxyRequest, ProxyView};
use serde::Serialize;

use super::error::{decode, decode_object};
use super::history::Who;
use super::{ApiError, AppState, json};
use crate::history::{Event, EventKind};

pub(super) async fn list(State(state): State<AppState>) -> Response {
    let proxies: BTreeMap<String, ProxyView> = state
        .registry
        .list()
        .await
        .into_iter()
        .map(|p| (p.config.name.clone(), p))
        .collect();
    json(StatusCode::OK, &proxies)
}

pub(super) async fn create(
    State(state): State<AppState>,
    Who(actor): Who,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ProxyRequest = decode_object(&body)?;
    let (config, toxics) = request.validate(None)?;
    let view = state.registry.create(config, toxics).await?;
    state
        .history
        .record(Event::proxy(EventKind::ProxyCreated, actor, &view));
    Ok(json(StatusCode::CREATED, &view))
}

pub(super) async fn populate(
    State(state): State<AppState>,
    Who(actor): Who,
    body: Bytes,
) -> Result<Response, ApiError> {
    let requests: Vec<ProxyRequest> = decode(&body).map_err(|e| ApiError::with_proxies(e, None))?;
    let mut items = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        let item = request
            .validate(Some(i + 1))
            .map_err(|e| ApiError::with_proxies(e, None))?;
        items.push(item);
    }
    match state.registry.populate(items).await {
        // A struct, not `json!`: a `serde_json::Value` would sort the proxies' keys.
        Ok(proxies) => {
            for view in &proxies {
                let event = Event::proxy(EventKind::ProxyPopulated, actor, view);
                state.history.record(event);
            }
            Ok(json(StatusCode::CREATED, &Populated { proxies }))
        }
        Err(failed) => Err(ApiError::with_proxies(failed.error, Some(failed.proxies))),
    }
}

/// The success body of populate: `{"proxies": [...]}` in input order.
#[derive(Serialize)]
struct Populated {
    proxies: Vec<ProxyView>,
}

pub(super) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = state.registry.get(&name).await?;
    Ok(json(StatusCode::OK, &view))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Who(actor): Who,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Toxiproxy looks the proxy up before it decodes the body.
    state.registry.get(&name).await?;
    let patch: ProxyPatch = decode_object(&body)?;
    let view = state.registry.update(&name, patch).await?;
    state
        .history
        .record(Event::proxy(EventKind::ProxyChanged, actor, &view));
    Ok(json(StatusCode::OK, &view))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Who(actor): Who,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete(&name).await?;
    state.history.record(Event::proxy_removed(actor, &name));
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn reset(
    State(state): State<AppState>,
    Who(actor): Who,
) -> Result<StatusCode, ApiError> {
    state.registry.reset().await?;
    state.history.record(Event::new(EventKind::Reset, actor));
    Ok(StatusCode::NO_CONTENT)
}

/// `?limit=N` of the request journal.
#[derive(Debug, serde::Deserialize)]
pub(super) struct JournalQuery {
    limit: Option<String>,
}

/// The last requests an HTTP proxy served (`limit`, default 100, at most 1000).
pub(super) async fn journal(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<JournalQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(text) => text.parse::<usize>().map_err(|_| {
            downtime_model::Error::invalid(
                "limit",
                format!("expected a whole number, got {text:?}"),
            )
        })?,
    };
    let entries = state.registry.journal(&name, limit.min(1000)).await?;
    Ok(json(StatusCode::OK, &entries))
}

/// `POST /halt`: stop every running drill and remove every fault at once.
pub(super) async fn halt(State(state): State<AppState>, Who(actor): Who) -> Response {
    let removed = state.registry.halt().await;
    let event = Event::new(EventKind::Halt, actor);
    state
        .history
        .record(event.with_detail(serde_json::json!({ "removed": removed })));
    tracing::warn!(removed, "halt: every fault removed");
    json(
        StatusCode::OK,
        &serde_json::json!({ "halts": state.registry.halts(), "removed": removed }),
    )
}

/// `GET /halt`: the halt counter drill runners watch.
pub(super) async fn halts(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({ "halts": state.registry.halts() }),
    )
}
