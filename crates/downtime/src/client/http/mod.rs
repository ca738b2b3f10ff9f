//! The HTTP commands: `maintenance on|off`, `fault add|list|remove` and `requests`.
//!
//! HTTP faults are toxics with their own `type` names, so these commands are sugar over the
//! same toxics endpoints: typed flags instead of `--attribute key=value`, durations with
//! units, and tables that say what each fault does. Everything is checked before anything
//! is sent: a bad value or a flag that does not fit the fault type is a usage error (exit 2)
//! naming the flag, and the server is not touched.
//!
//! Layout:
//! - `mod.rs`: what `fault add` and `maintenance on` share: the answer and targeting flags,
//!   the toxic body built from them, create-or-replace, and the one-line description of a
//!   created fault; plus the URL helpers the proxy commands print;
//! - `fault`: `fault add|list|remove`, the fault types and their own flags (checked
//!   against the type, then turned into the fault's attributes);
//! - `maintenance`: `maintenance on|off`, the fault named `maintenance`;
//! - `requests`: `requests`, the request journal of an HTTP proxy.

mod fault;
mod maintenance;
mod requests;

use std::fmt::Write as _;

use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::api::{Api, HttpError};
use super::render::{self, Toxic};
use super::values;
use fault::FaultType;

pub use fault::{FaultCommand, fault};
pub use maintenance::{MaintenanceCommand, maintenance};
pub use requests::{RequestsArgs, requests};

/// Settings of the maintenance and status answers, shared by `maintenance on` and
/// `fault add`.
#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// Status code of the answer [default: 503 for maintenance, 500 for status].
    #[arg(long, value_name = "CODE", value_parser = values::parse_status,
          help_heading = "Answer (maintenance, status)")]
    status: Option<u16>,
    /// Response header NAME=VALUE, repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = values::parse_header_pair,
          help_heading = "Answer (maintenance, status)")]
    headers: Vec<(String, String)>,
    /// Whole maintenance message [default: "<API> is temporarily unavailable.\nFor more
    /// information, visit: <STATUS PAGE>"].
    #[arg(
        long,
        value_name = "TEXT",
        help_heading = "Answer (maintenance, status)"
    )]
    message: Option<String>,
    /// API name in the default maintenance message [default: the proxy name].
    #[arg(long, value_name = "NAME", value_parser = values::parse_non_empty,
          help_heading = "Answer (maintenance, status)")]
    api: Option<String>,
    /// Status page link in the default maintenance message.
    #[arg(long, value_name = "URL", value_parser = values::parse_non_empty,
          help_heading = "Answer (maintenance, status)")]
    status_page: Option<String>,
    /// `Retry-After` of the maintenance answer: seconds, or a duration such as 2m.
    #[arg(long, value_name = "SECS", value_parser = values::parse_retry_after,
          help_heading = "Answer (maintenance, status)")]
    retry_after: Option<u64>,
}

/// Which requests a fault applies to and for how long; shared by `fault add` and
/// `maintenance on`. Without any, the fault acts on every request until removed.
#[derive(Debug, Args)]
pub struct Targeting {
    /// Only requests with this method; repeat for several.
    #[arg(long = "method", value_name = "METHOD", value_parser = values::parse_method,
          help_heading = "Which requests")]
    methods: Vec<String>,
    /// Only requests (or TLS handshakes) for this host; `*` wildcards, e.g. '*.stripe.com'.
    #[arg(
        long = "match-host",
        value_name = "PATTERN",
        help_heading = "Which requests"
    )]
    match_host: Option<String>,
    /// Only requests whose path matches; `*` matches any run of characters, e.g. '/apps/*'.
    #[arg(long, value_name = "PATTERN", value_parser = values::parse_path_pattern,
          help_heading = "Which requests")]
    path: Option<String>,
    /// Only requests carrying this header with a matching value (`*` wildcards); repeatable.
    #[arg(long = "match-header", value_name = "NAME=PATTERN",
          value_parser = values::parse_header_pair, help_heading = "Which requests")]
    match_headers: Vec<(String, String)>,
    /// Only requests with this query parameter matching (`*` wildcards); repeatable.
    #[arg(long = "query", value_name = "KEY=PATTERN", value_parser = values::parse_query_pair,
          help_heading = "Which requests")]
    query: Vec<(String, String)>,
    /// Act on the first N matching requests only, then let them pass (retry tests).
    #[arg(long, value_name = "N", value_parser = values::parse_count,
          help_heading = "Which requests")]
    first_n: Option<u64>,
    /// Act on every N-th matching request only.
    #[arg(long, value_name = "N", value_parser = values::parse_count,
          help_heading = "Which requests")]
    every_nth: Option<u64>,
    /// Probability, 0 to 1, that a matching request gets the fault [default: 1].
    #[arg(long, visible_alias = "tox", value_name = "P", allow_hyphen_values = true,
          value_parser = values::parse_toxicity, help_heading = "Which requests")]
    toxicity: Option<f64>,
    /// Remove the fault by itself after this long, e.g. 30s or 5m.
    #[arg(long, value_name = "DURATION", value_parser = values::parse_positive_duration_ms,
          help_heading = "Which requests")]
    ttl: Option<u64>,
}

/// Inserts `value` under `key` when present.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

/// Repeated `NAME=VALUE` flags as a JSON object; a name given twice keeps its last value.
fn pairs(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Attributes of the maintenance and status answers.
fn answer_attributes(answer: &AnswerArgs, map: &mut Map<String, Value>) {
    put(map, "status", answer.status.map(Value::from));
    if !answer.headers.is_empty() {
        map.insert("headers".to_owned(), Value::Object(pairs(&answer.headers)));
    }
    put(map, "message", answer.message.clone().map(Value::String));
    put(map, "api", answer.api.clone().map(Value::String));
    put(
        map,
        "status_page",
        answer.status_page.clone().map(Value::String),
    );
    put(map, "retry_after", answer.retry_after.map(Value::from));
}

/// The body of `POST /proxies/{proxy}/toxics` for an HTTP fault: name, type, attributes,
/// and the targeting fields only when given.
fn fault_body(
    name: &str,
    kind: FaultType,
    attributes: Map<String, Value>,
    targeting: &Targeting,
) -> Value {
    let mut body = Map::new();
    body.insert("name".to_owned(), json!(name));
    body.insert("type".to_owned(), json!(kind.name()));
    body.insert("attributes".to_owned(), Value::Object(attributes));
    let mut matcher = Map::new();
    if !targeting.methods.is_empty() {
        matcher.insert("method".to_owned(), json!(targeting.methods));
    }
    put(
        &mut matcher,
        "path",
        targeting.path.clone().map(Value::String),
    );
    put(
        &mut matcher,
        "host",
        targeting.match_host.clone().map(Value::String),
    );
    if !targeting.match_headers.is_empty() {
        matcher.insert(
            "headers".to_owned(),
            Value::Object(pairs(&targeting.match_headers)),
        );
    }
    if !targeting.query.is_empty() {
        matcher.insert("query".to_owned(), Value::Object(pairs(&targeting.query)));
    }
    if !matcher.is_empty() {
        body.insert("match".to_owned(), Value::Object(matcher));
    }
    put(&mut body, "first_n", targeting.first_n.map(Value::from));
    put(&mut body, "every_nth", targeting.every_nth.map(Value::from));
    put(&mut body, "toxicity", targeting.toxicity.map(Value::from));
    put(&mut body, "ttl", targeting.ttl.map(Value::from));
    Value::Object(body)
}

/// One line saying what a created fault does, from the server's answer (defaults filled).
fn describe(fault: &Toxic) -> String {
    let mut text = render::fault_effect(fault);
    let target = render::fault_target(fault);
    if target == "all" {
        text.push_str("; every request");
    } else {
        let _ = write!(text, "; requests matching {target}");
    }
    // Just created: the whole ttl is left, so only listings print the time left.
    let bounds = render::fault_bounds(&Toxic {
        ttl_left: None,
        ..fault.clone()
    });
    if bounds != "-" {
        let _ = write!(text, ", {bounds}");
    }
    text
}

/// Creates the fault; `replace` first removes a fault of the same name when the server
/// says one exists (a delete then a create: the API has no atomic replace). If the server
/// then refuses the new fault, the old one is put back, so a failed command changes nothing
/// (bar restarting the old fault's ttl and counters).
async fn create_fault(
    api: &Api,
    proxy: &str,
    name: &str,
    body: &Value,
    replace: bool,
) -> anyhow::Result<(super::api::Answer, bool)> {
    let path = ["proxies", proxy, "toxics"];
    match api.send(Method::POST, &path, Some(body)).await {
        Ok(answer) => Ok((answer, false)),
        Err(error) if replace && HttpError::is(&error, StatusCode::CONFLICT, None) => {
            let existing = ["proxies", proxy, "toxics", name];
            let old = api.send(Method::GET, &existing, None).await?;
            api.send(Method::DELETE, &existing, None).await?;
            match api.send(Method::POST, &path, Some(body)).await {
                Ok(answer) => Ok((answer, true)),
                Err(refused) => {
                    // The server renders a toxic in the shape it accepts for creation.
                    if let Ok(old) = old.parse::<Value>() {
                        let _ = api.send(Method::POST, &path, Some(&old)).await;
                    }
                    Err(refused)
                }
            }
        }
        Err(error) => Err(error),
    }
}

/// The variable an app reads the proxy's URL from: `platform-api` → `PLATFORM_API_URL`
/// (the same rule `downtime serve` uses for its `export` lines).
pub fn env_var_name(proxy: &str) -> String {
    let mut name: String = proxy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name.push_str("_URL");
    name
}

/// The URL an app on this machine uses to reach a listen address: a wildcard host
/// (`0.0.0.0`, `[::]`) is reached through loopback.
pub fn local_url(listen: &str) -> String {
    let address = if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_owned()
    };
    format!("http://{address}")
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_local_urls() {
        assert_eq!(env_var_name("platform-api"), "PLATFORM_API_URL");
        assert_eq!(env_var_name("3ds"), "_3DS_URL");
        assert_eq!(local_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(local_url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(local_url("[::]:8080"), "http://[::1]:8080");
    }
}
