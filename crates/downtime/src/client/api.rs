//! A thin HTTP client for the Toxiproxy-compatible control API.
//!
//! It knows nothing about proxies or toxics: it sends a method, path and JSON body and turns
//! every failure into one user-facing sentence. Commands add what they were doing as context,
//! which gives the `<what failed>: HTTP <code>: <error text>` shape toxiproxy clients use.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long to wait for the TCP connection: a local server answers at once, so a long wait
/// means a firewall or a wrong host, and the user should hear about it quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for one request. The server gives up on a stuck handler after 25 s (503), so
/// this only fires when the server is wedged entirely; it keeps scripts from hanging forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// User-Agent sent with every request. It must not start with `Mozilla/`: the API refuses
/// browsers (CSRF protection), and identifying ourselves helps when reading server logs.
pub const USER_AGENT: &str = concat!("downtime-cli/", env!("CARGO_PKG_VERSION"));

/// A successful answer's body, kept as text so `--json` can print it verbatim.
#[derive(Debug)]
pub struct Answer {
    /// Body as sent by the server; empty for 204.
    pub body: String,
}

impl Answer {
    /// Decodes the body into the shape a command expects, saying what was wrong if it fails
    /// (a different program on that port, or an incompatible server version).
    pub fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            anyhow!(
                "the server answered with unexpected JSON ({e}): {}",
                excerpt(&self.body)
            )
        })
    }
}

/// A non-2xx answer: shown as `HTTP <code>: <message>`, and kept structured so a command can
/// react to one case (e.g. a 409 for a fault that already exists) with `downcast_ref`.
#[derive(Debug)]
pub struct HttpError {
    /// Status of the answer.
    pub status: StatusCode,
    /// The API's error text (see `error_text`).
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// Whether `error` is a refusal with this status and, if given, this exact message.
    pub fn is(error: &anyhow::Error, status: StatusCode, message: Option<&str>) -> bool {
        error
            .downcast_ref::<HttpError>()
            .is_some_and(|e| e.status == status && message.is_none_or(|text| e.message == text))
    }
}

/// Handle on one control API; cheap to create once per command run.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
}

impl Api {
    /// Builds the client for the server at `base` (already validated by the `--host` parser).
    pub fn new(base: Url) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("could not set up the http client")?;
        Ok(Self { http, base })
    }

    /// Server address as users typed it, for messages (no trailing slash).
    pub fn base_display(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Sends one request to `segments` (each percent-encoded, so proxy names with spaces or
    /// slashes stay one path segment) and returns the body of a 2xx answer.
    pub async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let url = self.url(segments)?;
        self.send_to(method, url, body).await
    }

    /// `GET` of `segments` with query parameters, e.g. `?limit=20`.
    pub async fn get_with_query(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Answer> {
        let mut url = self.url(segments)?;
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        self.send_to(Method::GET, url, None).await
    }

    /// Sends one request to a full URL and returns the body of a 2xx answer.
    async fn send_to(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            Ok(Answer { body })
        } else {
            Err(HttpError {
                status,
                message: error_text(status, &body),
            }
            .into())
        }
    }

    /// Joins path segments onto the base URL, keeping any path prefix the base has.
    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow!("server address {} cannot take a path", self.base))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    /// Explains a failure below HTTP: most often nothing listens at the address, so say
    /// which address was tried and how to fix it, instead of reqwest's nested wording.
    fn transport_error(&self, error: &reqwest::Error) -> anyhow::Error {
        let base = self.base_display();
        let cause = root_cause(error);
        if error.is_timeout() {
            anyhow!("the server at {base} did not answer in time ({cause})")
        } else if error.is_connect() {
            anyhow!(
                "could not reach the server at {base}: {cause}; start one with `downtime serve` \
                 or point --host/TOXIPROXY_URL at it"
            )
        } else {
            anyhow!("talking to the server at {base} failed: {cause}")
        }
    }
}

/// Innermost error of a chain, lowercased at the start: the OS text (`connection refused`)
/// is what tells the user something, the layers above it only repeat the URL.
fn root_cause(error: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let text = innermost.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_owned(),
    }
}

/// The message to show for a non-2xx answer: the `error` field of the API's JSON error body,
/// else the body itself (router-level 404s are plain text), else the status reason (405 and
/// 503 come with an empty body).
fn error_text(status: StatusCode, body: &str) -> String {
    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(body)
        && let Some(Value::String(message)) = fields.get("error")
    {
        return message.clone();
    }
    let trimmed = body.trim();
    if !trimmed.is_empty() {
        return excerpt(trimmed);
    }
    status
        .canonical_reason()
        .map_or_else(|| "no error message".to_owned(), str::to_lowercase)
}

/// First part of a body for error messages, so an HTML page does not flood the terminal.
fn excerpt(body: &str) -> String {
    const LIMIT: usize = 200;
    let body = body.trim();
    match body.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

    fn api(base: &str) -> Api {
        Api::new(Url::parse(base).unwrap()).unwrap()
    }

    #[test]
    fn user_agent_is_not_a_browser() {
        assert!(USER_AGENT.starts_with("downtime-cli/"));
        assert!(!USER_AGENT.starts_with("Mozilla/"));
    }

    #[test]
    fn segments_are_encoded_and_joined_after_the_base_path() {
        let root = api("http://localhost:8474/");
        assert_eq!(
            root.url(&["proxies", "a b/c"]).unwrap().as_str(),
            "http://localhost:8474/proxies/a%20b%2Fc"
        );
        let prefixed = api("http://localhost:8474/tp/");
        assert_eq!(
            prefixed.url(&["proxies"]).unwrap().as_str(),
            "http://localhost:8474/tp/proxies"
        );
        assert_eq!(prefixed.base_display(), "http://localhost:8474/tp");
    }

    #[test]
    fn error_text_prefers_the_api_error_field() {
        let body = "{\"error\":\"proxy already exists\",\"status\":409}\n";
        assert_eq!(
            error_text(StatusCode::CONFLICT, body),
            "proxy already exists"
        );
        assert_eq!(
            error_text(StatusCode::NOT_FOUND, "404 page not found\n"),
            "404 page not found"
        );
        assert_eq!(
            error_text(StatusCode::METHOD_NOT_ALLOWED, ""),
            "method not allowed"
        );
        assert_eq!(
            error_text(StatusCode::BAD_REQUEST, "{\"status\":400}"),
            "{\"status\":400}"
        );
    }

    #[test]
    fn excerpt_cuts_long_bodies_on_a_char_boundary() {
        let long = "é".repeat(500);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("  short \n"), "short");
    }

    #[tokio::test]
    async fn unreachable_server_names_the_address_and_the_fix() {
        // Bind then drop to get a port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = api(&format!("http://127.0.0.1:{port}"));
        let error = api
            .send(Method::GET, &["proxies"], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!(
                "could not reach the server at http://127.0.0.1:{port}:"
            )),
            "{error}"
        );
        assert!(error.contains("downtime serve"), "{error}");
        assert!(error.contains("TOXIPROXY_URL"), "{error}");
    }
}
