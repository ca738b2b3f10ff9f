//! The answers an HTTP proxy gives itself instead of the upstream: the maintenance stand-in,
//! status faults, Heroku router errors, rate-limit refusals, and the JSON errors for
//! requests it will not forward (limits, `CONNECT`, an upstream that failed).

use std::collections::BTreeMap;

use bytes::Bytes;
use downtime_model::http_fault::{Maintenance, StatusReply, maintenance_body};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::HttpShared;
use super::body::{ResponseBody, full};
use super::faults::RateDecision;

/// A JSON answer with `Content-Type: application/json`.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"id": id, "message": message}`, the shape of Heroku's API errors, which the stand-in
/// and every refusal of the proxy use.
pub(crate) fn error_response(
    status: StatusCode,
    id: &str,
    message: &str,
) -> Response<ResponseBody> {
    let body = serde_json::json!({ "id": id, "message": message }).to_string();
    json_response(status, body)
}

/// The same answer closing the connection afterwards (the request was not read whole, or
/// its framing cannot be trusted).
pub(crate) fn closing(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The rate-limit refusal, Heroku's text.
pub(crate) fn rate_limited() -> Response<ResponseBody> {
    error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit",
        "Your account reached the API rate limit. Please wait a few minutes before making new requests.",
    )
}

/// The `RateLimit-*` headers (and `Retry-After` when refused).
pub(crate) fn add_rate_headers(headers: &mut HeaderMap, d: RateDecision, limited: bool) {
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
    if limited {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(d.reset_secs));
    }
}

fn insert_headers(target: &mut HeaderMap, extra: &BTreeMap<String, String>) {
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            target.insert(n, v);
        }
    }
}

/// The stand-in's answer when no fault says otherwise.
pub(crate) fn default_maintenance() -> Maintenance {
    Maintenance {
        status: 503,
        api: String::new(),
        message: String::new(),
        status_page: String::new(),
        headers: Default::default(),
        retry_after: None,
    }
}

/// A maintenance answer: Heroku's 503 body naming the API and the status page.
pub(crate) fn maintenance(m: &Maintenance, shared: &HttpShared) -> Response<ResponseBody> {
    let message = if m.message.is_empty() {
        let api = if m.api.is_empty() {
            &*shared.name
        } else {
            m.api.as_str()
        };
        let link = if m.status_page.is_empty() {
            &*shared.status_page
        } else {
            m.status_page.as_str()
        };
        format!("{api} is temporarily unavailable.\nFor more information, visit: {link}")
    } else {
        m.message.clone()
    };
    let status = StatusCode::from_u16(m.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = json_response(status, maintenance_body(&message));
    if let Some(secs) = m.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    insert_headers(response.headers_mut(), &m.headers);
    response
}

/// A `status` fault's answer: its status, body (JSON, text or none) and headers.
pub(crate) fn status_reply(s: &StatusReply) -> Response<ResponseBody> {
    let (body, content_type) = match &s.body {
        serde_json::Value::Null => (String::new(), None),
        serde_json::Value::String(text) => (text.clone(), Some("text/plain; charset=utf-8")),
        other => (other.to_string(), Some("application/json")),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() =
        StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    insert_headers(response.headers_mut(), &s.headers);
    response
}

/// A status fault on a gRPC request: HTTP 200 with the error in `grpc-status` and
/// `grpc-message`, as a gRPC server reports it (a "trailers-only" answer), so the client
/// library raises a real status instead of a transport error.
pub(crate) fn grpc_status_reply(http_status: u16) -> Response<ResponseBody> {
    let (code, text) = match http_status {
        400 => (13, "bad request"),
        401 => (16, "unauthenticated"),
        403 => (7, "permission denied"),
        404 => (12, "unimplemented"),
        429 => (14, "rate limited"),
        502..=504 => (14, "unavailable"),
        _ => (2, "unknown error"),
    };
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::from_str(&format!(
        "downtime status fault: HTTP {http_status} ({text})"
    )) {
        headers.insert("grpc-message", message);
    }
    response
}

/// Heroku's H12 page: no response started within the router's deadline.
pub(crate) fn h12_response() -> Response<ResponseBody> {
    let page = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Application Error</title></head>\
<body><h1>Application error</h1><p>An error occurred in the application and your page could not be served. \
The request timed out (H12) waiting for the application to answer.</p></body></html>\n";
    let mut response = Response::new(full(page));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A head over one of the proxy's limits: 414 for the target, 431 for the headers, naming
/// the limit and the setting that raises it.
pub(crate) fn over_limit(
    status: StatusCode,
    what: &str,
    actual: usize,
    setting: &str,
    limit: u32,
) -> Response<ResponseBody> {
    let message = format!(
        "the request {what} is {actual} bytes or lines, over this proxy's limit of {limit}; raise it with the proxy option http.{setting}"
    );
    closing(error_response(status, "request_too_large", &message))
}

/// `CONNECT` to a reverse proxy: say what this proxy is and where tunnelling lives.
pub(crate) fn connect_refused(target: &str) -> Response<ResponseBody> {
    let message = format!(
        "this is a downtime HTTP proxy in front of one upstream, not a forward proxy: CONNECT {target} is not supported here (a forward-proxy mode for HTTPS_PROXY is planned)"
    );
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "connect_not_supported",
        &message,
    );
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    closing(response)
}
