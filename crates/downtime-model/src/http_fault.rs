//! HTTP faults: what an HTTP proxy does to matching requests instead of (or on top of)
//! forwarding them.
//!
//! They are created through the toxics endpoints with their own `type` names, so the
//! Toxiproxy API stays the one way to change a proxy. Their `attributes` are structured
//! (strings, objects) and strictly checked: an unknown key or impossible value is refused
//! with the field's path.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Type names of HTTP faults (the per-request latency is `http_latency`, because `latency`
/// is Toxiproxy's per-chunk TCP toxic and keeps its meaning on HTTP proxies too).
pub const HTTP_FAULT_TYPES: &[&str] = &[
    "maintenance",
    "status",
    "http_latency",
    "abort",
    "rate_limit",
    "router_timeout",
    "slow_body",
    "tls_expired",
    "tls_wrong_host",
    "tls_untrusted",
    "tls_handshake_timeout",
    "tls_alert",
];

/// Which requests a fault applies to; every present condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// Methods (any case); empty matches every method.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "methods"
    )]
    pub method: Vec<String>,
    /// Path pattern; `*` matches any run of characters (including `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Header name → value pattern; the header must be present and match.
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "header_patterns"
    )]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Query parameter → value pattern.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub query: std::collections::BTreeMap<String, String>,
    /// Host pattern (`*.stripe.com`), compared without port and in lower case with the
    /// host the request is for: its `Host`, or a forward proxy's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Whether `s` is an HTTP token (a valid method or header name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Methods to match, each a valid HTTP method; an impossible one is refused, not ignored.
fn methods<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let methods = one_or_many(d)?;
    if let Some(bad) = methods.iter().find(|m| !is_token(m)) {
        return Err(serde::de::Error::custom(format!("invalid method {bad:?}")));
    }
    Ok(methods)
}

/// Header patterns to match, keyed by valid header names.
fn header_patterns<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let map = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    if let Some(bad) = map.keys().find(|name| !is_token(name)) {
        return Err(serde::de::Error::custom(format!(
            "invalid header name {bad:?}"
        )));
    }
    Ok(map)
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// How a per-request delay is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Always `latency` ms.
    #[default]
    Fixed,
    /// Uniform in `latency ± jitter` ms.
    Uniform,
    /// Normal with mean `latency` and standard deviation `jitter` ms (clamped at 0).
    Normal,
}

/// How an `abort` fault breaks the exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortMode {
    /// TCP reset before any response byte.
    #[default]
    Reset,
    /// Close the connection without answering.
    EmptyReply,
    /// Send the status line and headers, then close.
    CloseAfterHeaders,
    /// Send headers and part of the body, then close.
    CloseMidBody,
}

/// The action of an HTTP fault with its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HttpAction {
    /// Heroku-style maintenance answer.
    Maintenance(Maintenance),
    /// A fixed response.
    Status(StatusReply),
    /// A delay before the response starts.
    Latency(RequestLatency),
    /// A broken exchange.
    Abort(Abort),
    /// A token bucket per client key.
    RateLimit(RateLimit),
    /// Heroku router deadlines (H12, H15).
    RouterTimeout(RouterTimeout),
    /// Response body bandwidth limit.
    SlowBody(SlowBody),
    /// A broken TLS handshake (TLS listeners only: an HTTPS proxy or the forward proxy's
    /// interception).
    Tls(crate::tls_fault::TlsFault),
}

/// Settings of `maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Status code (default 503).
    #[serde(default = "default_503")]
    pub status: u16,
    /// Name of the API in the message; defaults to the proxy name.
    #[serde(default)]
    pub api: String,
    /// Whole message; when empty it is `<api> is temporarily unavailable.` plus the link.
    #[serde(default)]
    pub message: String,
    /// Status page link; defaults to downtime's own status page.
    #[serde(default)]
    pub status_page: String,
    /// Extra response headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `Retry-After` seconds, if any.
    #[serde(default)]
    pub retry_after: Option<u64>,
}

/// Settings of `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReply {
    /// Status code (default 500).
    #[serde(default = "default_500")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Body: a string is sent as text, anything else as JSON.
    #[serde(default)]
    pub body: Value,
}

/// Settings of `http_latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLatency {
    /// Mean delay in ms.
    #[serde(default)]
    pub latency: u64,
    /// Spread in ms (uniform half-width or normal standard deviation).
    #[serde(default)]
    pub jitter: u64,
    /// Shape of the delay.
    #[serde(default)]
    pub distribution: Distribution,
}

/// Settings of `abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// How the exchange breaks.
    #[serde(default)]
    pub mode: AbortMode,
}

/// Settings of `rate_limit`: `limit` requests per `period_ms`, bursts up to `burst`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub limit: u64,
    /// Period in ms (default 1000).
    #[serde(default = "default_1000")]
    pub period_ms: u64,
    /// Bucket size; defaults to `limit`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Header whose value keys the bucket; absent means the client IP.
    #[serde(default)]
    pub key_header: Option<String>,
}

/// Settings of `router_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterTimeout {
    /// Seconds to start the response before H12 (default 30).
    #[serde(default = "default_30")]
    pub timeout: u64,
    /// Seconds without body data before H15 (default 55).
    #[serde(default = "default_55")]
    pub idle: u64,
}

/// Settings of `slow_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowBody {
    /// Body rate in KB/s (1 KB = 1000 B), like the bandwidth toxic; must be > 0.
    pub rate: u64,
}

fn default_503() -> u16 {
    503
}
fn default_500() -> u16 {
    500
}
fn default_1000() -> u64 {
    1000
}
fn default_30() -> u64 {
    30
}
fn default_55() -> u64 {
    55
}

fn decode<T: serde::de::DeserializeOwned>(attributes: &Value) -> Result<T, Error> {
    let empty = Value::Object(serde_json::Map::new());
    let value = if attributes.is_null() {
        &empty
    } else {
        attributes
    };
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        Error::BadBody(
            format!("attributes.{path}: {}", e.into_inner())
                .replace("attributes..: ", "attributes: "),
        )
    })
}

/// The largest value each numeric attribute accepts (documented in `docs/compatibility.md`).
///
/// Every attribute that becomes a `Duration`, a deadline or a rate is checked against one of
/// these when the fault is created or updated, so the data plane's arithmetic on them
/// (`Instant + Duration`, ms → ns, KB/s → B/s) cannot overflow, and a mistyped huge value is
/// refused with 400 naming the field instead of meaning "at once" or "never".
pub mod limits {
    /// `http_latency`'s `latency` and `jitter`, `rate_limit`'s `period_ms`: 24 h in ms.
    pub const MAX_DELAY_MS: u64 = 86_400_000;
    /// `router_timeout`'s `timeout` and `idle`: 24 h in seconds.
    pub const MAX_ROUTER_SECS: u64 = 86_400;
    /// `maintenance`'s `retry_after`: 7 days in seconds.
    pub const MAX_RETRY_AFTER_SECS: u64 = 604_800;
    /// `rate_limit`'s `limit` and `burst`: one billion requests.
    pub const MAX_REQUESTS: u64 = 1_000_000_000;
    /// `slow_body`'s `rate`: 10,000,000 KB/s (10 GB/s).
    pub const MAX_BODY_RATE: u64 = 10_000_000;
}

/// Refuses `value` outside `min..=max`, naming the field, the range and the unit.
fn check_range(field: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<(), Error> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be within {min}..{max} ({unit}), got {value}"),
        ))
    }
}

fn check_status(field: &str, status: u16) -> Result<(), Error> {
    match status {
        200..=599 => Ok(()),
        100..=199 => Err(Error::invalid(
            field,
            format!(
                "status {status} is informational (1xx) and cannot be a final answer; use 200..599"
            ),
        )),
        _ => Err(Error::invalid(
            field,
            format!("status must be within 100..599, got {status}"),
        )),
    }
}

/// Framing and hop-by-hop headers, which a fault cannot set.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn check_headers(
    field: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<(), Error> {
    for (name, value) in headers {
        if !is_token(name) {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                format!("invalid header name {name:?}"),
            ));
        }
        // A configured Content-Length that differs from the body would desynchronise the
        // connection (and trips an assertion in hyper's debug builds).
        if RESERVED_HEADERS
            .iter()
            .any(|reserved| name.eq_ignore_ascii_case(reserved))
        {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                format!("{name} is set by downtime from the body and the connection"),
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                format!("invalid header value {value:?}"),
            ));
        }
    }
    Ok(())
}

impl HttpAction {
    /// Parses the attributes of an HTTP fault of type `type_name`; `None` if it is not one.
    pub fn parse(type_name: &str, attributes: &Value) -> Option<Result<Self, Error>> {
        let parsed = match type_name {
            "maintenance" => decode::<Maintenance>(attributes).and_then(|m| {
                check_status("attributes.status", m.status)?;
                check_headers("attributes.headers", &m.headers)?;
                if let Some(secs) = m.retry_after {
                    check_range(
                        "attributes.retry_after",
                        secs,
                        0,
                        limits::MAX_RETRY_AFTER_SECS,
                        "seconds",
                    )?;
                }
                Ok(HttpAction::Maintenance(m))
            }),
            "status" => decode::<StatusReply>(attributes).and_then(|s| {
                check_status("attributes.status", s.status)?;
                check_headers("attributes.headers", &s.headers)?;
                Ok(HttpAction::Status(s))
            }),
            "http_latency" => decode::<RequestLatency>(attributes).and_then(|l| {
                check_range(
                    "attributes.latency",
                    l.latency,
                    0,
                    limits::MAX_DELAY_MS,
                    "ms",
                )?;
                check_range("attributes.jitter", l.jitter, 0, limits::MAX_DELAY_MS, "ms")?;
                Ok(HttpAction::Latency(l))
            }),
            "abort" => decode(attributes).map(HttpAction::Abort),
            "rate_limit" => decode::<RateLimit>(attributes).and_then(|r| {
                check_range(
                    "attributes.limit",
                    r.limit,
                    1,
                    limits::MAX_REQUESTS,
                    "requests",
                )?;
                check_range(
                    "attributes.period_ms",
                    r.period_ms,
                    1,
                    limits::MAX_DELAY_MS,
                    "ms",
                )?;
                if let Some(name) = r.key_header.as_deref().filter(|h| !is_token(h)) {
                    return Err(Error::invalid(
                        "attributes.key_header",
                        format!("invalid header name {name:?}"),
                    ));
                }
                if let Some(burst) = r.burst {
                    check_range(
                        "attributes.burst",
                        burst,
                        1,
                        limits::MAX_REQUESTS,
                        "requests",
                    )?;
                }
                Ok(HttpAction::RateLimit(r))
            }),
            "router_timeout" => decode::<RouterTimeout>(attributes).and_then(|r| {
                check_range(
                    "attributes.timeout",
                    r.timeout,
                    1,
                    limits::MAX_ROUTER_SECS,
                    "seconds",
                )?;
                check_range(
                    "attributes.idle",
                    r.idle,
                    1,
                    limits::MAX_ROUTER_SECS,
                    "seconds",
                )?;
                Ok(HttpAction::RouterTimeout(r))
            }),
            "slow_body" => decode::<SlowBody>(attributes).and_then(|s| {
                check_range("attributes.rate", s.rate, 1, limits::MAX_BODY_RATE, "KB/s")?;
                Ok(HttpAction::SlowBody(s))
            }),
            other => {
                return crate::tls_fault::TlsFault::parse(other, attributes)
                    .map(|r| r.map(HttpAction::Tls));
            }
        };
        Some(parsed)
    }

    /// The `type` name of this action.
    pub fn type_name(&self) -> &'static str {
        match self {
            HttpAction::Maintenance(_) => "maintenance",
            HttpAction::Status(_) => "status",
            HttpAction::Latency(_) => "http_latency",
            HttpAction::Abort(_) => "abort",
            HttpAction::RateLimit(_) => "rate_limit",
            HttpAction::RouterTimeout(_) => "router_timeout",
            HttpAction::SlowBody(_) => "slow_body",
            HttpAction::Tls(t) => t.type_name(),
        }
    }

    /// Merges new attribute values over the current ones (absent keys keep their value).
    pub fn merged(&self, patch: &Value) -> Result<Self, Error> {
        let mut current = serde_json::to_value(self).map_err(|e| Error::BadBody(e.to_string()))?;
        if let (Value::Object(base), Value::Object(update)) = (&mut current, patch) {
            for (k, v) in update {
                base.insert(k.clone(), v.clone());
            }
        } else if !patch.is_null() {
            return Err(Error::BadBody(format!(
                "attributes must be an object, got {patch}"
            )));
        }
        match HttpAction::parse(self.type_name(), &current) {
            Some(result) => result,
            None => Err(Error::InvalidToxicType),
        }
    }
}

/// Matches `text` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// The maintenance body, byte for byte in the shape Heroku's stand-in used.
pub fn maintenance_body(message: &str) -> String {
    let quoted = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_owned());
    format!("{{\"id\": \"maintenance\", \"message\": {quoted}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob() {
        assert!(glob_match("/apps/*", "/apps/1/dynos"));
        assert!(glob_match("*", ""));
        assert!(glob_match("/a*c", "/abbbc"));
        assert!(!glob_match("/apps/*", "/account"));
        assert!(glob_match("/exact", "/exact"));
        assert!(!glob_match("/exact", "/exact/more"));
    }

    #[test]
    fn maintenance_shape() {
        assert_eq!(
            maintenance_body(
                "Heroku API is temporarily unavailable.\nFor more information, visit: https://status.heroku.com"
            ),
            "{\"id\": \"maintenance\", \"message\": \"Heroku API is temporarily unavailable.\\nFor more information, visit: https://status.heroku.com\"}"
        );
    }

    #[test]
    fn impossible_values_are_refused_with_the_field() {
        let err = HttpAction::parse("status", &json!({"status": 700}))
            .unwrap()
            .unwrap_err();
        assert!(
            err.to_string().contains("attributes.status") && err.to_string().contains("700"),
            "{err}"
        );
        let err = HttpAction::parse("status", &json!({"headers": {"bad name": "x"}}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
        let err = HttpAction::parse("http_latency", &json!({"latency": -1}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("latency"), "{err}");
        let err = HttpAction::parse("abort", &json!({"mode": "explode"}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
        let err = HttpAction::parse("rate_limit", &json!({"limit": 0}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let err = HttpAction::parse("maintenance", &json!({"stauts": 503}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("stauts"), "{err}");
        assert!(HttpAction::parse("latency", &json!({})).is_none());
    }

    /// Issue 10: `idle = 18446744073709551615` used to be accepted, and the deadline
    /// `now + idle` overflowed into "cut the body at once".
    #[test]
    fn issue_10_router_timeout_huge_idle_is_refused_naming_the_field_and_the_maximum() {
        let err = HttpAction::parse("router_timeout", &json!({"idle": u64::MAX}))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.status(), 400);
        let text = err.to_string();
        assert!(
            text.contains("attributes.idle") && text.contains("86400"),
            "{text}"
        );
        let err = HttpAction::parse("router_timeout", &json!({"idle": 0}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("attributes.idle"), "{err}");
        assert!(
            HttpAction::parse("router_timeout", &json!({"idle": 86_400}))
                .unwrap()
                .is_ok()
        );
        // The other numbers have their maximum too.
        for (kind, attrs, field) in [
            (
                "http_latency",
                json!({"latency": 86_400_001u64}),
                "attributes.latency",
            ),
            (
                "http_latency",
                json!({"jitter": u64::MAX}),
                "attributes.jitter",
            ),
            (
                "rate_limit",
                json!({"limit": 1, "period_ms": u64::MAX}),
                "attributes.period_ms",
            ),
            ("rate_limit", json!({"limit": u64::MAX}), "attributes.limit"),
            (
                "rate_limit",
                json!({"limit": 1, "burst": u64::MAX}),
                "attributes.burst",
            ),
            (
                "router_timeout",
                json!({"timeout": u64::MAX}),
                "attributes.timeout",
            ),
            ("slow_body", json!({"rate": u64::MAX}), "attributes.rate"),
            (
                "maintenance",
                json!({"retry_after": u64::MAX}),
                "attributes.retry_after",
            ),
        ] {
            let err = HttpAction::parse(kind, &attrs).unwrap().unwrap_err();
            assert_eq!(err.status(), 400, "{kind} {attrs}");
            assert!(err.to_string().contains(field), "{kind} {attrs}: {err}");
        }
    }

    /// Roughly a century of uptime: a monotonic clock reading no process will exceed.
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

    /// A deadline `delay` after a clock reading of a century cannot overflow, and the delay
    /// fits in nanoseconds as a u64 (what timers store).
    fn deadline_fits(delay: std::time::Duration) -> bool {
        CENTURY.checked_add(delay).is_some() && u64::try_from(delay.as_nanos()).is_ok()
    }

    proptest::proptest! {
        #[test]
        fn any_number_validates_to_safe_arithmetic_or_is_refused_by_name(
            value in proptest::prop_oneof![
                proptest::prelude::any::<u64>(),
                0u64..100_000_000,
                proptest::prelude::Just(u64::MAX),
            ],
            which in 0usize..9,
        ) {
            let (kind, attrs, field) = match which {
                0 => ("http_latency", json!({"latency": value}), "attributes.latency"),
                1 => ("http_latency", json!({"jitter": value, "distribution": "normal"}), "attributes.jitter"),
                2 => ("rate_limit", json!({"limit": value}), "attributes.limit"),
                3 => ("rate_limit", json!({"limit": 1, "period_ms": value}), "attributes.period_ms"),
                4 => ("rate_limit", json!({"limit": 1, "burst": value}), "attributes.burst"),
                5 => ("router_timeout", json!({"timeout": value}), "attributes.timeout"),
                6 => ("router_timeout", json!({"idle": value}), "attributes.idle"),
                7 => ("slow_body", json!({"rate": value}), "attributes.rate"),
                _ => ("maintenance", json!({"retry_after": value}), "attributes.retry_after"),
            };
            match HttpAction::parse(kind, &attrs).unwrap() {
                Err(e) => {
                    proptest::prop_assert_eq!(e.status(), 400);
                    proptest::prop_assert!(e.to_string().contains(field), "{}", e);
                }
                Ok(HttpAction::Latency(l)) => {
                    let worst = std::time::Duration::from_millis(l.latency)
                        .checked_add(std::time::Duration::from_millis(l.jitter).checked_mul(10).unwrap());
                    proptest::prop_assert!(worst.is_some_and(deadline_fits));
                }
                Ok(HttpAction::RateLimit(r)) => {
                    proptest::prop_assert!(deadline_fits(std::time::Duration::from_millis(r.period_ms)));
                    let per_ms = r.limit as f64 / r.period_ms as f64;
                    proptest::prop_assert!(per_ms.is_finite() && per_ms > 0.0);
                    proptest::prop_assert!(r.burst.unwrap_or(r.limit) <= limits::MAX_REQUESTS);
                }
                Ok(HttpAction::RouterTimeout(r)) => {
                    proptest::prop_assert!(deadline_fits(std::time::Duration::from_secs(r.timeout)));
                    proptest::prop_assert!(deadline_fits(std::time::Duration::from_secs(r.idle)));
                }
                Ok(HttpAction::SlowBody(s)) => {
                    // Bytes per second, and bytes per 100 ms tick times a 64 KiB chunk.
                    let bytes = s.rate.checked_mul(1000);
                    proptest::prop_assert!(bytes.and_then(|b| b.checked_mul(65_536)).is_some());
                }
                Ok(HttpAction::Maintenance(m)) => {
                    let secs = m.retry_after.unwrap_or(0);
                    proptest::prop_assert!(deadline_fits(std::time::Duration::from_secs(secs)));
                }
                Ok(other) => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn merge_keeps_absent_keys() {
        let a = HttpAction::parse("status", &json!({"status": 502, "body": "x"}))
            .unwrap()
            .unwrap();
        let b = a.merged(&json!({"status": 504})).unwrap();
        match b {
            HttpAction::Status(s) => {
                assert_eq!(s.status, 504);
                assert_eq!(s.body, json!("x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn match_accepts_one_or_many_methods() {
        let m: HttpMatch = serde_json::from_value(json!({"method": "get", "path": "/x"})).unwrap();
        assert_eq!(m.method, vec!["get"]);
        let m: HttpMatch = serde_json::from_value(json!({"method": ["GET", "POST"]})).unwrap();
        assert_eq!(m.method.len(), 2);
    }
}
