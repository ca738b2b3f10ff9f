//! The control API, byte-compatible with Toxiproxy 2.12 so its clients work unchanged.
//!
//! Handlers only translate HTTP to registry calls and back. Two layers apply to matched
//! routes only, as in Toxiproxy: browsers and web pages are refused ([`guard`]: a page in a
//! browser must not be able to reconfigure proxies, through a cross-site request or DNS
//! rebinding) and every answer carries a request id. [`listener`] serves the API and status
//! listeners with bounded time per connection phase and a connection cap. Unknown
//! paths get Go's plain `404 page not found`, wrong methods a bare 405.

pub mod error;
pub mod guard;
pub(crate) mod history;
mod incidents;
pub mod listener;
mod metrics;
mod proxies;
pub mod request_id;
mod toxics;

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use downtime_proxy::Registry;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The data plane.
    pub registry: Registry,
    /// Whether `/metrics` is routed, and what it includes.
    pub metrics: MetricsOptions,
    /// The history store (events, uptime, incidents).
    pub history: crate::history::History,
    /// Webhook subscriptions and their deliveries.
    pub webhooks: crate::webhooks::Webhooks,
    /// Which `Host` values the control routes answer (see [`guard`]).
    pub guard: std::sync::Arc<guard::Guard>,
}

impl axum::extract::FromRef<AppState> for crate::webhooks::Webhooks {
    fn from_ref(state: &AppState) -> Self {
        state.webhooks.clone()
    }
}

/// Which metric groups `/metrics` exposes; with none, the route does not exist (as upstream).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsOptions {
    /// Per-proxy byte and connection counters.
    pub proxy: bool,
    /// Process metrics (CPU, memory, file descriptors).
    pub runtime: bool,
}

/// Header carrying the request id on every matched route.
pub const REQUEST_ID_HEADER: &str = "x-toxiproxy-request-id";

/// Builds the API router.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/proxies", get(proxies::list).post(proxies::create))
        .route("/populate", post(proxies::populate))
        .route(
            "/proxies/{proxy}",
            get(proxies::show)
                .post(proxies::update)
                .patch(proxies::update)
                .delete(proxies::delete),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(toxics::list).post(toxics::create),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxics::show)
                .post(toxics::update)
                .patch(toxics::update)
                .delete(toxics::delete),
        )
        .route("/proxies/{proxy}/requests", get(proxies::journal))
        .route("/reset", post(proxies::reset))
        .route("/halt", get(proxies::halts).post(proxies::halt))
        .route("/version", get(version))
        .merge(crate::webhooks::routes());
    router = history::routes(router);
    if state.metrics.proxy || state.metrics.runtime {
        router = router.route("/metrics", any(metrics::render));
    }
    let guard = state.guard.clone();
    guard::protect(router, guard)
        .route_layer(middleware::from_fn(request_id))
        .route_layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(25),
        ))
        // Set after the route layers so that, as in Toxiproxy, a wrong method gets a bare 405
        // without a request id and before the browser check.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    let mut response = (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    set_plain(&mut response);
    response
}

async fn method_not_allowed() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

/// `text` (a line is added) as `text/plain`, the way Toxiproxy sends errors and 404s.
pub(crate) fn plain(status: StatusCode, mut text: String) -> Response {
    text.push('\n');
    let mut response = (status, text).into_response();
    set_plain(&mut response);
    response
}

/// The API's error answer, `{"error": message, "status": N}`, as Toxiproxy shapes it; for
/// the routes outside Toxiproxy's catalogue (history, incidents, webhooks).
pub(crate) fn error_answer(status: StatusCode, message: &str) -> Response {
    plain(
        status,
        serde_json::json!({ "error": message, "status": status.as_u16() }).to_string(),
    )
}

fn set_plain(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

async fn request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    // A wrong method is answered by the router in Toxiproxy, before any middleware.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    if let Ok(value) = HeaderValue::from_str(&request_id::next()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn version(State(_): State<AppState>) -> Response {
    let body = format!(
        "{{\"version\": \"{}\"}}\n",
        downtime_model::TOXIPROXY_API_VERSION
    );
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

/// A compact JSON success answer with `Content-Type: application/json`.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "could not encode a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
