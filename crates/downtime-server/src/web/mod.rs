//! The public, read-only status interfaces: the HTML status page, server-sent events for
//! open pages, the Atom feed of incidents and Statuspage-style JSON.
//!
//! # Layout
//! - [`model`]: the snapshot every interface renders (components, incidents, drills);
//! - [`source`]: builds snapshots from the live faults and the recorded history;
//! - [`page`]: the askama views and templates (`templates/*.html`);
//! - [`live`]: the change monitor, shared by server-sent events and webhooks;
//! - [`json`], [`atom`]: the machine interfaces; [`clock`]: UTC time formatting.
//!
//! # Why a separate router, on the API listener and on its own
//! The Toxiproxy-compatible API refuses `Mozilla/` user agents (CSRF protection, as in
//! Toxiproxy), so a browser could not open the status page through it. These routes form
//! their own router, without that layer, merged into the API listener by [`crate::run`]:
//! the `maintenance` fault's default link `http://<api address>/status` then works without
//! any other setting. Every route here is a `GET` that changes nothing, so the browser check
//! has nothing to protect on them. The same router alone is what `serve --status-listen`
//! serves: a listener with no control route, which can be published while the control API
//! stays on loopback.

pub mod atom;
pub mod clock;
pub mod json;
pub mod live;
pub mod model;
pub mod page;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use model::StatusSnapshot;
pub use source::Source;

use crate::webhooks::Webhooks;

/// Settings of the status interfaces.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Name in the page header.
    pub title: String,
    /// Absolute URL of the page, used in links of the feed, JSON and webhooks.
    pub status_url: String,
    /// How often the monitor looks for changes.
    pub poll: Duration,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            title: "downtime".to_owned(),
            status_url: "http://127.0.0.1:8474/status".to_owned(),
            poll: Duration::from_secs(1),
        }
    }
}

/// What the handlers reach; cheap to clone.
#[derive(Clone)]
pub struct WebState {
    source: Source,
    options: Arc<WebOptions>,
    live: watch::Receiver<live::Published>,
    stop: CancellationToken,
    /// The runtime `start` ran on (the server's main one): snapshots and renders run there,
    /// not on the API's own thread, so page views never delay a control API answer.
    runtime: tokio::runtime::Handle,
}

impl WebState {
    /// Starts the change monitor (which also feeds `webhooks`) and returns the state of the
    /// router. Everything stops when `stop` is cancelled, including open event streams.
    pub fn start(
        source: Source,
        options: WebOptions,
        webhooks: Option<Webhooks>,
        stop: CancellationToken,
    ) -> Self {
        let live = live::spawn_monitor(
            source.clone(),
            options.title.clone(),
            options.status_url.clone(),
            options.poll,
            webhooks,
            stop.clone(),
        );
        WebState {
            source,
            options: Arc::new(options),
            live,
            stop,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// The status routes (all `GET`).
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/status", get(status_page))
        .route("/status/", get(|| async { Redirect::permanent("/status") }))
        .route("/status/events", get(live::events))
        .route("/status/feed.atom", get(feed))
        .route("/status/drills/{id}", get(drill))
        .route("/status/assets/status.css", get(css))
        .route("/status/assets/status.js", get(js))
        .route("/api/v2/summary.json", get(summary))
        .route("/api/v2/status.json", get(status_json))
        .route("/api/v2/components.json", get(components))
        .route("/api/v2/incidents.json", get(incidents))
        .route("/api/v2/incidents/unresolved.json", get(unresolved))
        .route(
            "/api/v2/scheduled-maintenances.json",
            get(|s| maintenances(s, json::MaintenanceFilter::All)),
        )
        .route(
            "/api/v2/scheduled-maintenances/upcoming.json",
            get(|s| maintenances(s, json::MaintenanceFilter::Upcoming)),
        )
        .route(
            "/api/v2/scheduled-maintenances/active.json",
            get(|s| maintenances(s, json::MaintenanceFilter::Active)),
        )
        // The page is mostly repetitive bar markup (~0.5 MB for 50 components): gzip makes
        // it a small download on a phone. Event streams are never compressed (the default
        // predicate skips text/event-stream), so updates are not held back in a buffer.
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// Headers of every page answer: no caching, no sniffing, a strict content policy (only
/// our own stylesheet, script and event stream), no framing.
fn page_headers(content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h
}

/// Takes a snapshot and builds the answer from it on the main runtime (see
/// [`WebState`]'s `runtime`).
async fn with_snapshot(
    state: WebState,
    answer: impl FnOnce(&WebState, StatusSnapshot) -> Response + Send + 'static,
) -> Response {
    let runtime = state.runtime.clone();
    let job = runtime.spawn(async move {
        let snapshot = state.source.snapshot().await;
        answer(&state, snapshot)
    });
    job.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "status answer failed");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

async fn status_page(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, snapshot| {
        match page::render(&state.options.title, &snapshot) {
            Ok(html) => (page_headers("text/html; charset=utf-8"), html).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "could not render the status page");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    })
    .await
}

async fn feed(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, snapshot| {
        let xml = atom::render(&snapshot, &state.options.status_url);
        (page_headers("application/atom+xml; charset=utf-8"), xml).into_response()
    })
    .await
}

async fn css() -> Response {
    let mut h = page_headers("text/css; charset=utf-8");
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    (h, include_str!("assets/status.css")).into_response()
}

async fn js() -> Response {
    let mut h = page_headers("text/javascript; charset=utf-8");
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    (h, include_str!("assets/status.js")).into_response()
}

fn json_response(value: &serde_json::Value) -> Response {
    let mut h = page_headers("application/json");
    // Public read-only data, as Statuspage's: widgets on other sites may read it.
    h.insert(
        HeaderName::from_static("access-control-allow-origin"),
        HeaderValue::from_static("*"),
    );
    (h, json::to_inert_string(value)).into_response()
}

async fn summary(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, s| {
        json_response(&json::summary(&s, &state.options.status_url))
    })
    .await
}

async fn status_json(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, s| {
        json_response(&json::status_doc(&s, &state.options.status_url))
    })
    .await
}

async fn components(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, s| {
        json_response(&json::components_doc(&s, &state.options.status_url))
    })
    .await
}

async fn incidents(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, s| {
        json_response(&json::incidents_doc(&s, &state.options.status_url, false))
    })
    .await
}

async fn unresolved(State(state): State<WebState>) -> Response {
    with_snapshot(state, |state, s| {
        json_response(&json::incidents_doc(&s, &state.options.status_url, true))
    })
    .await
}

async fn maintenances(State(state): State<WebState>, filter: json::MaintenanceFilter) -> Response {
    with_snapshot(state, move |state, s| {
        json_response(&json::maintenances_doc(
            &s,
            &state.options.status_url,
            filter,
        ))
    })
    .await
}

/// `GET /status/drills/{id}` (HTML) and `/status/drills/{id}.json` (the stored report).
async fn drill(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            page_headers("text/plain; charset=utf-8"),
            "drill not found\n",
        )
            .into_response()
    };
    let (number, as_json) = match id.strip_suffix(".json") {
        Some(n) => (n, true),
        None => (id.as_str(), false),
    };
    let (Ok(number), Some(history)) = (number.parse::<i64>(), state.source.history()) else {
        return not_found();
    };
    let record = match history.drill(number).await {
        Ok(r) => r,
        Err(crate::history::HistoryError::NotFound(_)) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "status page: cannot read a drill");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    if as_json {
        let value = record.report.clone().unwrap_or(serde_json::Value::Null);
        return json_response(&value);
    }
    let s = &record.summary;
    let run = model::DrillRun {
        id: s.id.to_string(),
        name: s.name.clone(),
        started_at: s.started_at.millis(),
        ended_at: s.ended_at.map(crate::history::Timestamp::millis),
        verdict: s.outcome.map(|o| o.as_str().to_owned()),
        report_url: None,
    };
    let detail = page::drill_detail(
        &state.options.title,
        clock::now_ms(),
        &run,
        s.reason.clone(),
        s.incident.map(|i| i.to_string()),
        record.report.as_ref(),
    );
    match askama::Template::render(&page::DrillPage { d: &detail }) {
        Ok(html) => (page_headers("text/html; charset=utf-8"), html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not render a drill page");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
