//! Keeps web pages away from the control API.
//!
//! A page in a browser can reach `127.0.0.1:8474` in two ways: a cross-site request
//! (`fetch` from another origin) and DNS rebinding (a name of the attacker's that first
//! resolves to their server, then to `127.0.0.1`, so the page is "same-origin" with the
//! API). Toxiproxy's only defence is refusing `User-Agent: Mozilla/...`, which some
//! browsers let `fetch` override. Every control route (matched routes only, as in
//! Toxiproxy; the status routes are another router and stay readable by browsers) is
//! checked, in this order:
//!
//! 1. a `User-Agent` starting with `Mozilla/`, in any case, gets Toxiproxy's exact
//!    `403 User agent not allowed` (plain text);
//! 2. a `Host` (or absolute request URI) whose host is not a loopback name or address
//!    (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`), the address the API is bound to,
//!    or a name given with `--api-allow-host` gets a 403 JSON error naming the host and the
//!    flag: a rebinding page always sends its own name;
//! 3. a request carrying `Origin` or a `Sec-Fetch-*` header gets a 403 JSON error:
//!    browsers add them to requests made by pages (and cannot be told not to), while API
//!    clients do not. The one exception is `Sec-Fetch-Mode` on its own: Node's built-in
//!    `fetch` sends `sec-fetch-mode: cors` on every request (and no `Origin`, no
//!    `Sec-Fetch-Site`), while a browser never sends `Sec-Fetch-Mode` without
//!    `Sec-Fetch-Site`, so refusing on the others loses nothing and keeps Node clients.
//!
//! A request without `Host` (HTTP/1.0 tools) passes the host check: browsers always send
//! one.
//!
//! 4. With an API token (`--api-token`, [`Guard::with_token`]), a request must carry it as
//!    `Authorization: Bearer TOKEN` or as the password of HTTP basic auth (any user name,
//!    so `http://:TOKEN@host:8474` works with clients that send URL credentials); without
//!    it, or with another, the answer is a 401 JSON error with `WWW-Authenticate`. The
//!    token is kept as its SHA-256 digest and compared with the candidate's digest in
//!    constant time (so neither its bytes nor its length leak through timing), and it is
//!    never logged or shown. Without a token nothing changes: Toxiproxy has none.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The control API's token: only its digest is kept, and it never shows in `Debug`.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// The token `secret`.
    pub fn new(secret: &str) -> Self {
        ApiToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Whether `candidate` is the token, in time independent of both (digests compared).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// The token a request presents: a bearer token, or the password of basic auth.
pub fn presented_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// Who may use the control API, by `Host`.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The API listener's address; its IP (unless a wildcard) is an allowed host.
    bound: Option<SocketAddr>,
    /// Lowercased host names or IPs given with `--api-allow-host`.
    allowed: Vec<String>,
    /// The token every control request must carry, if any.
    token: Option<ApiToken>,
}

impl Guard {
    /// A guard for an API bound to `bound`, also allowing the hosts in `allowed`.
    pub fn new(bound: Option<SocketAddr>, allowed: &[String]) -> Self {
        Guard {
            bound,
            allowed: allowed
                .iter()
                .map(|h| normalize(h.trim()).to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            token: None,
        }
    }

    /// This guard, also requiring `token` (when given) on every control request.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(ApiToken::new);
        self
    }

    /// Whether control requests need a token.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `host` (the host part of a `Host` header, port removed) may address the API.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize(host);
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        if self.allowed.iter().any(|a| a == &host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                is_loopback(ip)
                    || self
                        .bound
                        .is_some_and(|b| !b.ip().is_unspecified() && same_ip(b.ip(), ip))
            }
            Err(_) => false,
        }
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(None, &[])
    }
}

/// Lowercase, without brackets or one trailing dot (`LocalHost.` is `localhost`).
fn normalize(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `ip` is loopback (`127.0.0.0/8`, `::1`, or IPv4-mapped loopback).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The host part of a `Host` value (`name:port`, `[v6]:port`, `v4`, `name`).
pub fn host_part(value: &str) -> &str {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &value[..end + 2],
            None => value,
        };
    }
    match value.rsplit_once(':') {
        // One colon: a port follows. More than one without brackets: a bare IPv6.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => value,
    }
}

/// Whether a user agent is a browser's, as Toxiproxy sees it (`Mozilla/` prefix), but in
/// any case.
pub fn is_browser_agent(ua: &[u8]) -> bool {
    ua.len() >= 8 && ua[..8].eq_ignore_ascii_case(b"Mozilla/")
}

/// The name of a header that only browsers add to a page's request, if there is one.
fn browser_header(headers: &HeaderMap) -> Option<&str> {
    if headers.contains_key(header::ORIGIN) {
        return Some("Origin");
    }
    // `Sec-Fetch-Mode` alone is what Node's built-in `fetch` (undici) sends on every
    // request, so it is not a browser's mark; a browser's request always carries
    // `Sec-Fetch-Site` with it.
    headers
        .keys()
        .map(|k| k.as_str())
        .find(|k| k.starts_with("sec-fetch-") && *k != "sec-fetch-mode")
}

/// The middleware: see the module documentation.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers
        .get(header::USER_AGENT)
        .is_some_and(|ua| is_browser_agent(ua.as_bytes()))
    {
        return super::plain(StatusCode::FORBIDDEN, "User agent not allowed".to_owned());
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
    if let Some(host) = host {
        let name = host_part(&host);
        if !guard.allows_host(name) {
            let shown = normalize(name);
            return super::error_answer(
                StatusCode::FORBIDDEN,
                &format!(
                    "host {host:?} is not allowed on the control API (DNS rebinding \
                     protection); to allow it, start the server with --api-allow-host {shown}"
                ),
            );
        }
    }
    if let Some(name) = browser_header(headers) {
        return super::error_answer(
            StatusCode::FORBIDDEN,
            &format!(
                "requests from web pages are not allowed on the control API (the request \
                 carries the header {name}); only the status routes (/status, /api/v2/) \
                 answer web pages"
            ),
        );
    }
    if let Some(token) = &guard.token {
        let message = match presented_token(headers) {
            Some(candidate) if token.matches(&candidate) => None,
            Some(_) => Some("the API token is wrong"),
            None => Some(
                "the control API requires a token: send Authorization: Bearer TOKEN, or HTTP \
                 basic auth with the token as password (http://:TOKEN@host:port)",
            ),
        };
        if let Some(message) = message {
            return unauthorized(message);
        }
    }
    next.run(request).await
}

/// A 401 JSON error inviting bearer or basic authentication.
fn unauthorized(message: &str) -> Response {
    let mut response = super::error_answer(StatusCode::UNAUTHORIZED, message);
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"downtime\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"downtime\", charset=\"UTF-8\""),
    );
    response
}

/// `router` with the guard on each of its routes (unknown paths keep their plain 404).
pub fn protect<S>(router: axum::Router<S>, guard: Arc<Guard>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(axum::middleware::from_fn_with_state(guard, check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_drops_the_port() {
        assert_eq!(host_part("localhost:8474"), "localhost");
        assert_eq!(host_part("[::1]:8474"), "[::1]");
        assert_eq!(host_part("::1"), "::1");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_part("evil.example:80"), "evil.example");
    }

    #[test]
    fn loopback_bound_and_allowed_hosts_pass() {
        let bound: SocketAddr = "10.1.2.3:8474".parse().unwrap_or_else(|e| panic!("{e}"));
        let g = Guard::new(Some(bound), &["API.Internal".to_owned()]);
        for ok in [
            "localhost",
            "LOCALHOST.",
            "a.localhost",
            "127.0.0.1",
            "127.3.4.5",
            "[::1]",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "api.internal",
        ] {
            assert!(g.allows_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "10.1.2.4",
            "0.0.0.0",
            "localhost.evil.example",
            "",
        ] {
            assert!(!g.allows_host(bad), "{bad}");
        }
        let wildcard = Guard::new("0.0.0.0:8474".parse().ok(), &[]);
        assert!(!wildcard.allows_host("0.0.0.0"));
    }

    #[test]
    fn tokens_from_bearer_and_basic() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(presented_token(&h).as_deref(), Some(&b"s3cret"[..]));
        // ":s3cret" and "user:s3:cret" in base64: the password is after the first colon.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic OnMzY3JldA=="),
        );
        assert_eq!(presented_token(&h).as_deref(), Some(&b"s3cret"[..]));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpzMzpjcmV0"),
        );
        assert_eq!(presented_token(&h).as_deref(), Some(&b"s3:cret"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(presented_token(&h), None);
        let token = ApiToken::new("s3cret");
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "ApiToken(..)");
    }

    #[test]
    fn browser_agents_in_any_case() {
        assert!(is_browser_agent(b"Mozilla/5.0"));
        assert!(is_browser_agent(b"mozilla/5.0"));
        assert!(is_browser_agent(b"MOZILLA/"));
        assert!(!is_browser_agent(b"Mozilla"));
        assert!(!is_browser_agent(b"toxiproxy-cli/2.12"));
    }
}
