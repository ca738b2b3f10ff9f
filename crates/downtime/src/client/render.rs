//! What the API returns, as the CLI reads it, and how it is shown to people.
//!
//! The structs are deliberately lenient (missing fields take defaults, unknown fields are
//! ignored) so the CLI keeps working against real Toxiproxy and older or newer servers.
//! Rendering is pure string building so it is unit-tested without a server.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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
    /// Toxics of both directions, upstream first.
    #[serde(default)]
    pub toxics: Vec<Toxic>,
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
    let mut rows = vec![["NAME", "LISTEN", "UPSTREAM", "ENABLED", "TOXICS"].map(str::to_owned)];
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
            proxy.upstream.clone(),
            yes_no(proxy.enabled).to_owned(),
            proxy.toxics.len().to_string(),
        ]);
    }
    table(&rows, "")
}

/// The `inspect` output: the proxy's fields, then its toxics split by direction, because
/// "which way does the latency apply" is the usual question when a drill misbehaves.
pub fn proxy_details(proxy: &Proxy) -> String {
    let mut out = table(
        &[
            ["Name:".to_owned(), proxy.name.clone()],
            ["Listen:".to_owned(), proxy.listen.clone()],
            ["Upstream:".to_owned(), proxy.upstream.clone()],
            ["Enabled:".to_owned(), yes_no(proxy.enabled).to_owned()],
        ],
        "",
    );
    let (upstream, downstream): (Vec<&Toxic>, Vec<&Toxic>) =
        proxy.toxics.iter().partition(|toxic| toxic.is_upstream());
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
            [
                toxic.name.clone(),
                toxic.kind.clone(),
                toxic.toxicity.to_string(),
                attributes(&toxic.attributes),
            ]
        }));
        out.push_str(&table(&rows, "  "));
    }
    out
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
/// not padded so lines carry no trailing spaces.
fn table<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
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
            "NAME   LISTEN           UPSTREAM         ENABLED  TOXICS\n\
             api    127.0.0.1:8080   example.test:80  no       0\n\
             redis  127.0.0.1:26379  localhost:6379   yes      1\n"
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
            "NAME  LISTEN  UPSTREAM  ENABLED  TOXICS\nbare                    no       0\n"
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
                 "attributes": {"timeout": 0}},
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
             \x20 cut      timeout  1         timeout=0\n\
             \x20 nothing  noop     1         -\n"
        );
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
}
