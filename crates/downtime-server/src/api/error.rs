//! The one error type of the API and its wire shape.
//!
//! Toxiproxy sends errors as `{"error": "...", "status": N}` plus a newline, labelled
//! `text/plain; charset=utf-8` with `X-Content-Type-Options: nosniff` (a side effect of Go's
//! `http.Error`). Clients look at the status and sometimes the text, so both are reproduced.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use downtime_model::{Error, ProxyView};
use serde::Serialize;

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    error: Error,
    /// Populate answers carry the proxies already processed (or `null`), kept as views so
    /// they render in Toxiproxy's field order.
    proxies: Option<Option<Vec<ProxyView>>>,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError {
            error,
            proxies: None,
        }
    }
}

impl ApiError {
    /// An error for populate, whose body also has a `proxies` field.
    pub fn with_proxies(error: Error, proxies: Option<Vec<ProxyView>>) -> Self {
        ApiError {
            error,
            proxies: Some(proxies),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxies: Option<&'a Option<Vec<ProxyView>>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        if status >= 500 {
            tracing::warn!(error = %self.error, "api request failed");
        }
        let body = Body {
            error: self.error.to_string(),
            status,
            proxies: self.proxies.as_ref(),
        };
        super::plain(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            serde_json::to_string(&body).unwrap_or_default(),
        )
    }
}

/// Decodes a body that must be a JSON object (every endpoint but populate). Go's decoder
/// refuses an array, string, number or boolean there, while serde would accept an array for
/// a struct, mapping its elements onto the fields by position (`[null, null, false]` would
/// disable a proxy).
pub fn decode_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        // Syntax errors are reported as usual; only well-formed non-objects get here.
        let kind = match decode::<serde_json::Value>(body)? {
            serde_json::Value::Array(_) => "array",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::Bool(_) => "boolean",
            serde_json::Value::Null | serde_json::Value::Object(_) => return decode(body),
        };
        return Err(Error::BadBody(format!(
            "invalid type: {kind}, expected a JSON object"
        )));
    }
    decode(body)
}

/// Decodes a JSON body leniently (no Content-Type check, unknown fields ignored); a syntax or
/// type error becomes `bad request body: <field>: <problem>`.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            Error::BadBody(inner.to_string())
        } else {
            Error::BadBody(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| Error::BadBody(e.to_string()))?;
    Ok(value)
}
