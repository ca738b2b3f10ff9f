//! What the API returns, as the CLI reads it, and how it is shown to people.
//!
//! The structs are deliberately lenient (missing fields take defaults, unknown fields are
//! ignored) so the CLI keeps working against real Toxiproxy and older or newer servers.
//! Rendering is pure string building so it is unit-tested without a server.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use downtime_model::http_fault::HTTP_FAULT_TYPES;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A proxy as returned by `GET /proxies` and `GET /proxies/{name}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Proxy {
    /// Unique name, the key for every other call.
    #[serde(default)]
    pub name: String,
    /// Address clients connect to (the bound address once the proxy runs).
    #[serde(default)]
    pub listen: String,
    /// Address the proxy dials for each client.
    #[serde(default)]
    pub upstream: String,
    /// Whether the proxy accepts connections.
    #[serde(default)]
    pub enabled: bool,
    /// `http` for HTTP proxies; absent for TCP ones (and on stock Toxiproxy).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Toxics of both directions, upstream first.
    #[serde(default)]
    pub toxics: Vec<Toxic>,
}

impl Proxy {
    /// Whether this is an HTTP proxy.
    pub fn is_http(&self) -> bool {
        self.protocol
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("http"))
    }

    /// Whether this is an HTTP stand-in: no upstream, every answer comes from its faults.
    pub fn is_stand_in(&self) -> bool {
        self.is_http() && self.upstream.is_empty()
    }

    /// The upstream as tables show it: a stand-in has none.
    fn upstream_display(&self) -> String {
        if self.is_stand_in() {
            "(stand-in)".to_owned()
        } else {
            self.upstream.clone()
        }
    }
}

/// A toxic as returned inside a proxy or by the toxic endpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct Toxic {
    /// Name, unique per proxy.
    #[serde(default)]
    pub name: String,
    /// Toxic type, e.g. `latency`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `upstream` or `downstream`, echoed as the client sent it (any case).
    #[serde(default)]
    pub stream: String,
    /// Probability that a connection is affected.
    #[serde(default = "always")]
    pub toxicity: f64,
    /// Every attribute of the type with its current value.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// HTTP faults: which requests it applies to.
    #[serde(default, rename = "match")]
    pub matcher: Option<Match>,
    /// HTTP faults: only the first N matching requests.
    #[serde(default)]
    pub first_n: Option<u64>,
    /// HTTP faults: only every N-th matching request.
    #[serde(default)]
    pub every_nth: Option<u64>,
    /// Milliseconds after which the toxic removes itself.
    #[serde(default)]
    pub ttl: Option<u64>,
    /// Milliseconds left of the ttl when the server answered.
    #[serde(default)]
    pub ttl_left: Option<u64>,
}

/// The `match` of an HTTP fault.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Match {
    /// Methods, any of which matches (one string or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub method: Vec<String>,
    /// Path pattern with `*` wildcards.
    #[serde(default)]
    pub path: Option<String>,
    /// Header name → value pattern.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → value pattern.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Host pattern (requests, or TLS handshakes by SNI).
    #[serde(default)]
    pub host: Option<String>,
}

/// Reads a method list the way the server accepts it: one string or several.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(one) => vec![one],
        Value::Array(many) => many
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
}

/// One entry of `GET /proxies/{proxy}/requests`.
#[derive(Debug, Clone, Deserialize)]
pub struct JournalEntry {
    /// Milliseconds since the Unix epoch when the request arrived.
    #[serde(default)]
    pub at_ms: u64,
    /// Request method.
    #[serde(default)]
    pub method: String,
    /// Path and query.
    #[serde(default)]
    pub path: String,
    /// Status sent; 0 when the connection was cut without an answer.
    #[serde(default)]
    pub status: u16,
    /// The fault that answered or altered the request.
    #[serde(default)]
    pub fault: Option<String>,
    /// Milliseconds from arrival to the response head.
    #[serde(default)]
    pub duration_ms: u64,
}

/// Toxiproxy's default toxicity, used when a server leaves the field out.
fn always() -> f64 {
    1.0
}

impl Toxic {
    /// Whether the toxic acts on client → server bytes. The server stores the stream as
    /// sent, so compare without case.
    pub fn is_upstream(&self) -> bool {
        self.stream.eq_ignore_ascii_case("upstream")
    }

    /// Whether this is an HTTP fault (acting on requests) rather than a TCP toxic.
    pub fn is_http_fault(&self) -> bool {
        HTTP_FAULT_TYPES.contains(&self.kind.as_str())
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.attributes.get(key).and_then(Value::as_u64)
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.attributes
            .get(key)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }
}

/// Shows yes/no instead of true/false: the table is for reading, `--json` is for scripts.
fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// The `list` output: one row per proxy, sorted by name, or a hint when there is none.
pub fn proxy_table(proxies: &BTreeMap<String, Proxy>) -> String {
    if proxies.is_empty() {
        return "no proxies; create one with `downtime create --listen ADDR --upstream ADDR NAME`\n"
            .to_owned();
    }
    // PROTOCOL last, so scripts reading toxiproxy-cli's columns by position keep working.
    let mut rows = vec![
        [
            "NAME", "LISTEN", "UPSTREAM", "ENABLED", "TOXICS", "PROTOCOL",
        ]
        .map(str::to_owned),
    ];
    for (key, proxy) in proxies {
        // The map key is the name; fall back to it if a server omits the field.
        let name = if proxy.name.is_empty() {
            key
        } else {
            &proxy.name
        };
        rows.push([
            name.clone(),
            proxy.listen.clone(),
            proxy.upstream_display(),
            yes_no(proxy.enabled).to_owned(),
            proxy.toxics.len().to_string(),
            proxy.protocol.clone().unwrap_or_else(|| "tcp".to_owned()),
        ]);
    }
    table(&rows, "")
}

/// The `inspect` output: the proxy's fields, then its toxics split by direction, because
/// "which way does the latency apply" is the usual question when a drill misbehaves.
///
/// HTTP proxies also show their protocol and, before the TCP toxics, their HTTP faults,
/// which act on requests and have no direction.
pub fn proxy_details(proxy: &Proxy) -> String {
    let mut fields = vec![
        ["Name:".to_owned(), proxy.name.clone()],
        ["Listen:".to_owned(), proxy.listen.clone()],
        ["Upstream:".to_owned(), proxy.upstream_display()],
        ["Enabled:".to_owned(), yes_no(proxy.enabled).to_owned()],
    ];
    if proxy.is_http() {
        fields.insert(2, ["Protocol:".to_owned(), "http".to_owned()]);
    }
    let mut out = table(&fields, "");
    let (faults, tcp): (Vec<&Toxic>, Vec<&Toxic>) =
        proxy.toxics.iter().partition(|toxic| toxic.is_http_fault());
    if proxy.is_http() || !faults.is_empty() {
        out.push('\n');
        if faults.is_empty() {
            out.push_str("HTTP faults: none\n");
        } else {
            out.push_str("HTTP faults:\n");
            out.push_str(&fault_rows(&faults, "  "));
        }
    }
    let (upstream, downstream): (Vec<&Toxic>, Vec<&Toxic>) =
        tcp.into_iter().partition(|toxic| toxic.is_upstream());
    for (title, toxics) in [
        ("Upstream toxics (client -> server)", upstream),
        ("Downstream toxics (server -> client)", downstream),
    ] {
        out.push('\n');
        if toxics.is_empty() {
            let _ = writeln!(out, "{title}: none");
            continue;
        }
        let _ = writeln!(out, "{title}:");
        let mut rows = vec![["NAME", "TYPE", "TOXICITY", "ATTRIBUTES"].map(str::to_owned)];
        rows.extend(toxics.iter().map(|toxic| {
            let mut attrs = attributes(&toxic.attributes);
            if let Some(ttl) = ttl_text(toxic) {
                attrs = format!("{attrs}, {ttl}");
            }
            [
                toxic.name.clone(),
                toxic.kind.clone(),
                toxic.toxicity.to_string(),
                attrs,
            ]
        }));
        out.push_str(&table(&rows, "  "));
    }
    out
}

/// The `fault list` output: the HTTP faults of a proxy, in the order the server keeps them,
/// with a pointer to `inspect` when the proxy also has TCP toxics.
pub fn fault_table(proxy: &str, toxics: &[Toxic]) -> String {
    let (faults, tcp): (Vec<&Toxic>, Vec<&Toxic>) =
        toxics.iter().partition(|toxic| toxic.is_http_fault());
    let mut out = if faults.is_empty() {
        format!(
            "no HTTP faults on proxy {proxy}; add one with `downtime fault add {proxy} --type TYPE`\n"
        )
    } else {
        fault_rows(&faults, "")
    };
    if !tcp.is_empty() {
        let _ = writeln!(
            out,
            "({} TCP toxic{} too: see `downtime inspect {proxy}`)",
            tcp.len(),
            if tcp.len() == 1 { "" } else { "s" }
        );
    }
    out
}

/// One row per fault: what it does, to which requests, within which bounds.
fn fault_rows(faults: &[&Toxic], indent: &str) -> String {
    let mut rows = vec![["NAME", "TYPE", "EFFECT", "REQUESTS", "BOUNDS"].map(str::to_owned)];
    rows.extend(faults.iter().map(|fault| {
        [
            fault.name.clone(),
            fault.kind.clone(),
            fault_effect(fault),
            fault_target(fault),
            fault_bounds(fault),
        ]
    }));
    table(&rows, indent)
}

/// What a fault does, in a few words, from the values the server holds (defaults included).
pub fn fault_effect(fault: &Toxic) -> String {
    let number = |key: &str| {
        fault
            .number(key)
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    };
    let duration = |key: &str| {
        fault
            .number(key)
            .map_or_else(|| "?".to_owned(), duration_text)
    };
    let seconds = |key: &str| {
        fault
            .number(key)
            .map_or_else(|| "?".to_owned(), |s| duration_text(s.saturating_mul(1000)))
    };
    match fault.kind.as_str() {
        "maintenance" => {
            let mut text = format!("{} maintenance", number("status"));
            if let Some(secs) = fault.number("retry_after") {
                let _ = write!(text, ", Retry-After {secs}");
            }
            text
        }
        "status" => {
            let has_body = fault
                .attributes
                .get("body")
                .is_some_and(|b| !b.is_null() && b.as_str() != Some(""));
            format!(
                "{} answer{}",
                number("status"),
                if has_body { " with body" } else { "" }
            )
        }
        "http_latency" => {
            let mut text = format!("delay {}", duration("latency"));
            if fault.number("jitter").unwrap_or(0) > 0 {
                let shape = fault.text("distribution").unwrap_or("fixed");
                let _ = write!(text, " ± {} ({shape})", duration("jitter"));
            }
            text
        }
        "abort" => format!("abort: {}", fault.text("mode").unwrap_or("reset")),
        "rate_limit" => {
            let mut text = format!("{} per {}", number("limit"), duration("period_ms"));
            if let Some(burst) = fault.number("burst") {
                let _ = write!(text, ", burst {burst}");
            }
            match fault.text("key_header") {
                Some(header) => {
                    let _ = write!(text, ", per {header}");
                }
                None => text.push_str(", per client IP"),
            }
            text
        }
        "router_timeout" => format!(
            "H12 after {}, H15 after {} idle",
            seconds("timeout"),
            seconds("idle")
        ),
        "slow_body" => format!("body at {} KB/s", number("rate")),
        _ => attributes(&fault.attributes),
    }
}

/// Which requests a fault applies to, e.g. `GET /apps/* header X-Id=* query page=2`.
pub fn fault_target(fault: &Toxic) -> String {
    let Some(m) = &fault.matcher else {
        return "all".to_owned();
    };
    let mut parts = Vec::new();
    if let Some(host) = &m.host {
        parts.push(format!("host {host}"));
    }
    if !m.method.is_empty() {
        parts.push(m.method.join(","));
    }
    if let Some(path) = &m.path {
        parts.push(path.clone());
    }
    parts.extend(
        m.headers
            .iter()
            .map(|(name, pattern)| format!("header {name}={pattern}")),
    );
    parts.extend(
        m.query
            .iter()
            .map(|(key, pattern)| format!("query {key}={pattern}")),
    );
    if parts.is_empty() {
        "all".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A fault's bounds, e.g. `first 2, every 3rd, 50%, ttl 30s`, or `-` when it always acts.
pub fn fault_bounds(fault: &Toxic) -> String {
    let mut parts = Vec::new();
    if let Some(n) = fault.first_n {
        parts.push(format!("first {n}"));
    }
    if let Some(n) = fault.every_nth {
        parts.push(format!("every {}", ordinal(n)));
    }
    if fault.toxicity < 1.0 {
        parts.push(format!(
            "{}%",
            (fault.toxicity.max(0.0) * 100.0 * 1000.0).round() / 1000.0
        ));
    }
    if let Some(ttl) = ttl_text(fault) {
        parts.push(ttl);
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `ttl 5m (4m12s left)`: the ttl given and the time left when the server answered.
fn ttl_text(toxic: &Toxic) -> Option<String> {
    let ttl = toxic.ttl?;
    Some(match toxic.ttl_left {
        Some(left) => format!("ttl {} ({} left)", duration_text(ttl), left_text(left)),
        None => format!("ttl {}", duration_text(ttl)),
    })
}

/// Time left, rounded up to the second: `4m12s`, `1h0m5s`, `9s`; under a second `<1s`.
fn left_text(ms: u64) -> String {
    if ms < 1000 {
        return "<1s".to_owned();
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st`…
fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Milliseconds in the largest unit that shows them exactly: `250ms`, `2s`, `5m`, `1h`.
pub fn duration_text(ms: u64) -> String {
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The `requests` output: one row per request, oldest first, times in UTC.
pub fn journal_table(proxy: &str, entries: &[JournalEntry]) -> String {
    if entries.is_empty() {
        return format!("no requests recorded on proxy {proxy} yet\n");
    }
    let mut rows =
        vec![["TIME (UTC)", "METHOD", "PATH", "STATUS", "FAULT", "MS"].map(str::to_owned)];
    rows.extend(entries.iter().map(|entry| {
        [
            clock(entry.at_ms),
            entry.method.clone(),
            entry.path.clone(),
            if entry.status == 0 {
                "cut".to_owned()
            } else {
                entry.status.to_string()
            },
            entry.fault.clone().unwrap_or_else(|| "-".to_owned()),
            entry.duration_ms.to_string(),
        ]
    }));
    table(&rows, "")
}

/// Time of day in UTC with milliseconds, from milliseconds since the Unix epoch.
fn clock(at_ms: u64) -> String {
    let millis = at_ms % 1000;
    let secs = (at_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Attributes as `key=value` pairs sorted by key; strings needing it are JSON-quoted so a
/// value with spaces cannot be misread as two attributes.
pub fn attributes(attributes: &Map<String, Value>) -> String {
    let mut pairs: Vec<String> = attributes
        .iter()
        .map(|(key, value)| match value {
            Value::String(text)
                if !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || c == '"') =>
            {
                format!("{key}={text}")
            }
            other => format!("{key}={other}"),
        })
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".to_owned()
    } else {
        pairs.join(" ")
    }
}

/// Left-aligns columns two spaces apart, each line prefixed by `indent`. The last column is
/// not padded so lines carry no trailing spaces. Shared with the incident tables, so every
/// table of the CLI lines up the same way.
pub fn table<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxies(value: Value) -> BTreeMap<String, Proxy> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn list_aligns_columns_and_sorts_by_name() {
        let list = proxies(json!({
            "redis": {"name": "redis", "listen": "127.0.0.1:26379", "upstream": "localhost:6379",
                      "enabled": true, "toxics": [
                        {"name": "l", "type": "latency", "stream": "downstream", "toxicity": 1,
                         "attributes": {"latency": 100, "jitter": 0}}]},
            "api": {"name": "api", "listen": "127.0.0.1:8080", "upstream": "example.test:80",
                    "enabled": false, "toxics": []}
        }));
        assert_eq!(
            proxy_table(&list),
            "NAME   LISTEN           UPSTREAM         ENABLED  TOXICS  PROTOCOL\n\
             api    127.0.0.1:8080   example.test:80  no       0       tcp\n\
             redis  127.0.0.1:26379  localhost:6379   yes      1       tcp\n"
        );
    }

    #[test]
    fn list_without_proxies_gives_a_hint() {
        assert!(proxy_table(&BTreeMap::new()).starts_with("no proxies; create one"));
    }

    #[test]
    fn list_tolerates_missing_fields() {
        let list = proxies(json!({"bare": {}}));
        assert_eq!(
            proxy_table(&list),
            "NAME  LISTEN  UPSTREAM  ENABLED  TOXICS  PROTOCOL\nbare                    no       0       tcp\n"
        );
    }

    #[test]
    fn inspect_splits_toxics_by_direction() {
        let proxy: Proxy = serde_json::from_value(json!({
            "name": "redis", "listen": "127.0.0.1:26379", "upstream": "localhost:6379",
            "enabled": true, "Logger": {},
            "toxics": [
                {"name": "slow_up", "type": "latency", "stream": "UPSTREAM", "toxicity": 0.5,
                 "attributes": {"latency": 100, "jitter": 0}},
                {"name": "cut", "type": "timeout", "stream": "downstream", "toxicity": 1,
                 "attributes": {"timeout": 0}, "ttl": 60000, "ttl_left": 900},
                {"name": "nothing", "type": "noop", "stream": "downstream", "toxicity": 1,
                 "attributes": {}}
            ]
        }))
        .unwrap();
        assert_eq!(
            proxy_details(&proxy),
            "Name:      redis\n\
             Listen:    127.0.0.1:26379\n\
             Upstream:  localhost:6379\n\
             Enabled:   yes\n\
             \n\
             Upstream toxics (client -> server):\n\
             \x20 NAME     TYPE     TOXICITY  ATTRIBUTES\n\
             \x20 slow_up  latency  0.5       jitter=0 latency=100\n\
             \n\
             Downstream toxics (server -> client):\n\
             \x20 NAME     TYPE     TOXICITY  ATTRIBUTES\n\
             \x20 cut      timeout  1         timeout=0, ttl 1m (<1s left)\n\
             \x20 nothing  noop     1         -\n"
        );
    }

    #[test]
    fn time_left_rounds_up_to_the_second() {
        assert_eq!(left_text(0), "<1s");
        assert_eq!(left_text(999), "<1s");
        assert_eq!(left_text(1000), "1s");
        assert_eq!(left_text(1001), "2s");
        assert_eq!(left_text(252_001), "4m13s");
        assert_eq!(left_text(3_600_000), "1h0m0s");
        assert_eq!(left_text(u64::MAX), "5124095576030h25m52s");
    }

    #[test]
    fn inspect_says_none_for_an_empty_direction() {
        let proxy: Proxy =
            serde_json::from_value(json!({"name": "p", "enabled": false, "toxics": []})).unwrap();
        let text = proxy_details(&proxy);
        assert!(
            text.contains("Upstream toxics (client -> server): none\n"),
            "{text}"
        );
        assert!(
            text.contains("Downstream toxics (server -> client): none\n"),
            "{text}"
        );
        assert!(text.contains("Enabled:   no\n"), "{text}");
    }

    #[test]
    fn attribute_values_with_spaces_are_quoted() {
        let map = json!({"b": "two words", "a": "plain", "c": 3, "d": ""});
        let Value::Object(map) = map else {
            unreachable!()
        };
        assert_eq!(attributes(&map), "a=plain b=\"two words\" c=3 d=\"\"");
    }

    fn toxics(value: Value) -> Vec<Toxic> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn fault_list_says_what_each_fault_does_to_which_requests() {
        let list = toxics(json!([
            {"name": "maintenance", "type": "maintenance", "stream": "downstream", "toxicity": 1,
             "attributes": {"status": 503, "api": "", "message": "", "status_page": "",
                            "headers": {}, "retry_after": 120}, "ttl": 300000, "ttl_left": 252001},
            {"name": "boom", "type": "status", "stream": "downstream", "toxicity": 0.5,
             "attributes": {"status": 500, "headers": {}, "body": "x"},
             "match": {"method": ["GET", "POST"], "path": "/apps/*",
                       "headers": {"X-Id": "a*"}, "query": {"page": "2"}},
             "first_n": 2, "every_nth": 3},
            {"name": "slow", "type": "http_latency", "stream": "downstream", "toxicity": 1,
             "attributes": {"latency": 1500, "jitter": 0, "distribution": "fixed"},
             "match": {"method": "get"}},
            {"name": "lat", "type": "latency", "stream": "upstream", "toxicity": 1,
             "attributes": {"latency": 5, "jitter": 0}}
        ]));
        assert_eq!(
            fault_table("api", &list),
            "NAME         TYPE          EFFECT                            REQUESTS                                      BOUNDS\n\
             maintenance  maintenance   503 maintenance, Retry-After 120  all                                           ttl 5m (4m13s left)\n\
             boom         status        500 answer with body              GET,POST /apps/* header X-Id=a* query page=2  first 2, every 3rd, 50%\n\
             slow         http_latency  delay 1500ms                      get                                           -\n\
             (1 TCP toxic too: see `downtime inspect api`)\n"
        );
        assert!(fault_table("api", &[]).starts_with("no HTTP faults on proxy api"));
    }

    #[test]
    fn every_fault_type_has_a_summary() {
        let one = |kind: &str, attributes: Value| {
            let fault: Toxic =
                serde_json::from_value(json!({"type": kind, "attributes": attributes})).unwrap();
            fault_effect(&fault)
        };
        assert_eq!(
            one(
                "http_latency",
                json!({"latency": 200, "jitter": 50, "distribution": "normal"})
            ),
            "delay 200ms ± 50ms (normal)"
        );
        assert_eq!(
            one("abort", json!({"mode": "close_mid_body"})),
            "abort: close_mid_body"
        );
        assert_eq!(
            one(
                "rate_limit",
                json!({"limit": 10, "period_ms": 1000, "burst": 20,
                                      "key_header": null})
            ),
            "10 per 1s, burst 20, per client IP"
        );
        assert_eq!(
            one("router_timeout", json!({"timeout": 30, "idle": 55})),
            "H12 after 30s, H15 after 55s idle"
        );
        assert_eq!(one("slow_body", json!({"rate": 64})), "body at 64 KB/s");
        assert_eq!(
            one("status", json!({"status": 418, "body": null})),
            "418 answer"
        );
    }

    #[test]
    fn durations_and_ordinals_read_naturally() {
        assert_eq!(duration_text(0), "0ms");
        assert_eq!(duration_text(250), "250ms");
        assert_eq!(duration_text(1500), "1500ms");
        assert_eq!(duration_text(2000), "2s");
        assert_eq!(duration_text(90_000), "90s");
        assert_eq!(duration_text(120_000), "2m");
        assert_eq!(duration_text(7_200_000), "2h");
        let ordinals: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 102, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            ordinals,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "102nd", "111th"
            ]
        );
    }

    #[test]
    fn journal_shows_time_status_and_fault() {
        let entries: Vec<JournalEntry> = serde_json::from_value(json!([
            {"seq": 1, "at_ms": 3_723_004u64, "method": "GET", "path": "/apps/1?x=1",
             "headers": {}, "status": 500, "fault": "boom", "duration_ms": 3},
            {"seq": 2, "at_ms": 86_400_000u64 + 5, "method": "POST", "path": "/",
             "headers": {}, "status": 0, "fault": null, "duration_ms": 12}
        ]))
        .unwrap();
        assert_eq!(
            journal_table("api", &entries),
            "TIME (UTC)    METHOD  PATH         STATUS  FAULT  MS\n\
             01:02:03.004  GET     /apps/1?x=1  500     boom   3\n\
             00:00:00.005  POST    /            cut     -      12\n"
        );
        assert_eq!(
            journal_table("api", &[]),
            "no requests recorded on proxy api yet\n"
        );
    }

    #[test]
    fn http_proxies_show_protocol_stand_in_and_faults() {
        let proxy: Proxy = serde_json::from_value(json!({
            "name": "api", "listen": "127.0.0.1:1", "upstream": "", "enabled": true,
            "protocol": "http",
            "toxics": [{"name": "maintenance", "type": "maintenance", "stream": "downstream",
                        "toxicity": 1, "attributes": {"status": 503}}]
        }))
        .unwrap();
        let text = proxy_details(&proxy);
        assert!(
            text.starts_with(
                "Name:      api\nListen:    127.0.0.1:1\nProtocol:  http\n\
                 Upstream:  (stand-in)\nEnabled:   yes\n\nHTTP faults:\n  NAME"
            ),
            "{text}"
        );
        assert!(
            text.contains("  maintenance  maintenance  503 maintenance  all"),
            "{text}"
        );
        assert!(
            text.contains("Downstream toxics (server -> client): none"),
            "{text}"
        );
        let mut list = BTreeMap::new();
        list.insert("api".to_owned(), proxy);
        assert!(proxy_table(&list).contains("(stand-in)"));
    }
}
