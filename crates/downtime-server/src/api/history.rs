//! History endpoints (`/history/...`): events, components, uptime, probe samples and the
//! drill runner's reports; plus what every history handler shares: the actor extractor and
//! the error answer (the API's `{"error": ..., "status": N}` shape).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::error::decode_object;
use super::{ApiError, AppState, incidents, json};
use crate::history::{
    Actor, DrillEnd, DrillPhase, DrillStart, EventKind, EventQuery, HistoryError, ProbeSample,
    Timestamp,
};

/// Most probe samples in one `POST /history/probes`.
const MAX_SAMPLES: usize = 10_000;

/// Adds the history and incident routes.
pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/incidents", get(incidents::list).post(incidents::create))
        .route(
            "/incidents/{id}",
            get(incidents::show).patch(incidents::update),
        )
        .route("/incidents/{id}/updates", post(incidents::add_update))
        .route("/history/events", get(events))
        .route("/history/components", get(components))
        .route("/history/uptime", get(uptime))
        .route("/history/stats", get(stats))
        .route("/history/probes", post(probes))
        .route("/history/drills", get(drills).post(drill_start))
        .route("/history/drills/{id}", get(drill))
        .route("/history/drills/{id}/phases", post(drill_phase))
        .route("/history/drills/{id}/end", post(drill_end))
}

/// Who sent the request, from its `User-Agent`.
pub(crate) struct Who(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        Ok(Who(Actor::from_user_agent(ua)))
    }
}

/// A failed history request: a body the API refused, or a store error.
pub(super) enum HistoryApiError {
    Api(ApiError),
    Store(HistoryError),
}

impl From<downtime_model::Error> for HistoryApiError {
    fn from(e: downtime_model::Error) -> Self {
        HistoryApiError::Api(e.into())
    }
}

impl From<HistoryError> for HistoryApiError {
    fn from(e: HistoryError) -> Self {
        match e {
            // Same text and shape as every other invalid value of the API.
            HistoryError::Invalid { field, detail } => {
                HistoryApiError::Api(downtime_model::Error::invalid(field, detail).into())
            }
            other => HistoryApiError::Store(other),
        }
    }
}

impl IntoResponse for HistoryApiError {
    fn into_response(self) -> Response {
        let e = match self {
            HistoryApiError::Api(e) => return e.into_response(),
            HistoryApiError::Store(e) => e,
        };
        let status = e.status();
        let text = if status >= 500 {
            tracing::warn!(error = %e, "history request failed");
            "history store unavailable".to_owned()
        } else {
            e.to_string()
        };
        super::error_answer(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &text,
        )
    }
}

/// Query parameters as given; parsed one by one so errors name the parameter.
pub(super) type Params = Query<HashMap<String, String>>;

/// Parses an id from the path; anything else is a 404 naming it.
pub(super) fn id_of(what: &str, text: &str) -> Result<i64, HistoryApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| HistoryApiError::Store(HistoryError::NotFound(format!("{what} {text:?}"))))
}

/// A whole number parameter within `1..=max`.
pub(super) fn number(
    params: &HashMap<String, String>,
    name: &str,
    max: u32,
) -> Result<Option<u32>, HistoryApiError> {
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(HistoryError::invalid(
            name,
            format!("expected a whole number from 1 to {max}, got {text:?}"),
        )
        .into()),
    }
}

/// A time parameter: RFC 3339 or Unix milliseconds.
pub(super) fn time(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<Timestamp>, HistoryApiError> {
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    let parsed = text
        .parse::<i64>()
        .ok()
        .map(Timestamp)
        .or_else(|| Timestamp::parse_rfc3339(text));
    parsed.map(Some).ok_or_else(|| {
        HistoryError::invalid(
            name,
            format!("expected an RFC 3339 time or Unix milliseconds, got {text:?}"),
        )
        .into()
    })
}

/// `GET /history/events?since=&until=&proxy=&kind=&drill=&limit=`: newest first.
async fn events(
    State(state): State<AppState>,
    Query(params): Params,
) -> Result<Response, HistoryApiError> {
    let kind =
        match params.get("kind") {
            None => None,
            Some(k) => Some(EventKind::parse(k).ok_or_else(|| {
                HistoryError::invalid("kind", format!("unknown event kind {k:?}"))
            })?),
        };
    let drill = match params.get("drill") {
        None => None,
        Some(d) => Some(d.parse::<i64>().map_err(|_| {
            HistoryError::invalid("drill", format!("expected a drill id, got {d:?}"))
        })?),
    };
    let query = EventQuery {
        since: time(&params, "since")?,
        until: time(&params, "until")?,
        proxy: params.get("proxy").cloned(),
        kind,
        drill,
        limit: number(&params, "limit", 1000)?,
    };
    let events = state.history.events(&query).await?;
    Ok(json(StatusCode::OK, &events))
}

/// `GET /history/components`: every component seen, with its latest sampled state.
async fn components(State(state): State<AppState>) -> Result<Response, HistoryApiError> {
    let components = state.history.components().await?;
    Ok(json(StatusCode::OK, &components))
}

/// `GET /history/uptime?component=proxy:db&days=90`: one entry per day, oldest first.
async fn uptime(
    State(state): State<AppState>,
    Query(params): Params,
) -> Result<Response, HistoryApiError> {
    let component = params
        .get("component")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| HistoryError::invalid("component", "is required"))?;
    let days = number(&params, "days", 365)?.unwrap_or(90);
    let stats = state.history.daily_uptime(component, days).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "component": component, "days": stats }),
    ))
}

/// `GET /history/stats`: the write queue's health.
async fn stats(State(state): State<AppState>) -> Response {
    let h = &state.history;
    json(
        StatusCode::OK,
        &json!({ "dropped": h.dropped(), "failed": h.failed(), "queued": h.queued() }),
    )
}

/// Body of `POST /history/probes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Probes {
    samples: Vec<ProbeSample>,
}

/// `POST /history/probes`: raw probe samples, rolled up per endpoint and minute by the
/// store (queued; 202).
async fn probes(State(state): State<AppState>, body: Bytes) -> Result<Response, HistoryApiError> {
    let probes: Probes = decode_object(&body)?;
    if probes.samples.len() > MAX_SAMPLES {
        return Err(HistoryError::invalid(
            "samples",
            format!(
                "at most {MAX_SAMPLES} samples per request, got {}",
                probes.samples.len()
            ),
        )
        .into());
    }
    for (i, s) in probes.samples.iter().enumerate() {
        if s.endpoint.trim().is_empty() || s.endpoint.chars().count() > 200 {
            return Err(HistoryError::invalid(
                format!("samples[{i}].endpoint"),
                format!("must be 1 to 200 characters, got {:?}", s.endpoint),
            )
            .into());
        }
    }
    let accepted = probes.samples.len();
    state.history.record_probes(probes.samples);
    Ok(json(StatusCode::ACCEPTED, &json!({ "accepted": accepted })))
}

/// `GET /history/drills?limit=`: drill runs, newest first.
async fn drills(
    State(state): State<AppState>,
    Query(params): Params,
) -> Result<Response, HistoryApiError> {
    let limit = number(&params, "limit", 500)?.unwrap_or(50);
    let drills = state.history.drills(limit).await?;
    Ok(json(StatusCode::OK, &drills))
}

/// `GET /history/drills/{id}`: one run with its report.
async fn drill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HistoryApiError> {
    let drill = state.history.drill(id_of("drill", &id)?).await?;
    Ok(json(StatusCode::OK, &drill))
}

/// `POST /history/drills`: a drill run starts (201 with its id).
async fn drill_start(
    State(state): State<AppState>,
    Who(actor): Who,
    body: Bytes,
) -> Result<Response, HistoryApiError> {
    let start: DrillStart = decode_object(&body)?;
    let drill = state.history.drill_started(start, actor).await?;
    Ok(json(StatusCode::CREATED, &drill))
}

/// `POST /history/drills/{id}/phases`: the drill entered a phase; answers with the drill's
/// incident (or `null` while it faults nothing).
async fn drill_phase(
    State(state): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HistoryApiError> {
    let id = id_of("drill", &id)?;
    let phase: DrillPhase = decode_object(&body)?;
    // The incident's impact must match what the page shows for these proxies now (a
    // stand-in is a major outage whatever the drill's fault), so read their live state.
    let mut live = Vec::new();
    for fault in &phase.faults {
        if let Ok(view) = state.registry.get(&fault.proxy).await {
            live.push(crate::history::component_state(&view));
        }
    }
    let incident = state.history.drill_phase(id, phase, &live, actor).await?;
    Ok(json(StatusCode::OK, &json!({ "incident": incident })))
}

/// `POST /history/drills/{id}/end`: verdict and report; resolves the drill's incident.
async fn drill_end(
    State(state): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HistoryApiError> {
    let id = id_of("drill", &id)?;
    let end: DrillEnd = decode_object(&body)?;
    let drill = state.history.drill_ended(id, end, actor).await?;
    Ok(json(StatusCode::OK, &drill))
}
