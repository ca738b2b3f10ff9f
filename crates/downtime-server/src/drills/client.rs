//! The HTTP client of the downtime API the drill runner uses ([`Api`]), and the
//! percent-encoding of path segments ([`enc`]).
//!
//! Apart from the runner so its steps read as API calls rather than HTTP plumbing: who makes
//! a change (the User-Agent), the API token and how an error answer becomes a message are all
//! decided here. [`Api`] stays reachable as `drills::runner::Api`.

use std::time::Duration;

use serde_json::Value;

/// User-Agent of a drill started by hand (`downtime drill run`).
pub(super) const DRILL_AGENT: &str = concat!("downtime-drill/", env!("CARGO_PKG_VERSION"));
/// User-Agent of a drill started by a `[[schedule]]`: history records it as `schedule`.
pub(super) const SCHEDULE_AGENT: &str = concat!("downtime-schedule/", env!("CARGO_PKG_VERSION"));

/// An HTTP client of the downtime API: `agent` as User-Agent, and the API token (if any)
/// on every request, never in a URL (URLs end up in error messages and logs).
pub(super) fn api_client(
    agent: &'static str,
    timeout: Duration,
    token: Option<&str>,
) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .user_agent(agent)
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// A small client of the downtime API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    /// The User-Agent sent, which tells the server who makes the changes.
    pub(super) agent: &'static str,
}

impl Api {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8474`), as a drill run by hand.
    pub fn new(base: &str) -> Self {
        Api::as_agent(base, DRILL_AGENT)
    }

    /// A client sending `agent` as its User-Agent: the server records who made each change
    /// from it (`downtime-drill/` is a drill, `downtime-schedule/` a scheduled one).
    fn as_agent(base: &str, agent: &'static str) -> Self {
        Api::with_token(base, agent, None)
    }

    /// As [`Api::as_agent`], sending `Authorization: Bearer TOKEN` when the API needs one.
    pub(super) fn with_token(base: &str, agent: &'static str, token: Option<&str>) -> Self {
        let client = api_client(agent, Duration::from_secs(10), token);
        Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: cannot reach {}: {e}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(format!(
                "{method} {path}: HTTP {}: {}",
                status.as_u16(),
                detail.trim()
            ));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub(super) async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub(super) async fn delete(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// The halt counter; a change means `downtime halt` was called.
    pub(super) async fn halts(&self) -> Option<u64> {
        self.get("/halt").await.ok()?.get("halts")?.as_u64()
    }
}

/// Percent-encodes one path segment (a proxy or fault name): every byte but the unreserved
/// characters of RFC 3986.
pub(super) fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
