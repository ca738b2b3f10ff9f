//! `fault add|list|remove`: the HTTP fault types and the flags of each. `fault add` checks
//! that every type-specific flag given fits the chosen `--type` (a usage error naming the
//! flag otherwise), turns the flags into the fault's `attributes`, and creates it through
//! the body and create logic it shares with `maintenance on` (in `mod.rs`). Listing and
//! removing are single toxics requests, shown with the fault table of `render`.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::{AnswerArgs, Targeting, answer_attributes, create_fault, describe, fault_body, put};
use crate::client::api::{Api, HttpError};
use crate::client::render::{self, Toxic};
use crate::client::{LocalOptions, Output, ProxyArgs, values};

/// `fault` subcommands.
#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Add an HTTP fault to an HTTP proxy.
    #[command(visible_alias = "a")]
    Add(Box<FaultAddArgs>),
    /// List the HTTP faults of a proxy: what each does, to which requests, how long.
    #[command(visible_aliases = ["l", "ls"])]
    List(ProxyArgs),
    /// Remove a fault from a proxy.
    #[command(visible_aliases = ["r", "rm", "delete", "d"])]
    Remove(FaultRemoveArgs),
}

/// HTTP fault types, named as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultType {
    /// The maintenance answer (503 and a JSON message).
    Maintenance,
    /// Any status with headers and body.
    Status,
    /// A delay before the response starts.
    #[value(name = "http_latency", alias = "http-latency")]
    HttpLatency,
    /// A broken exchange (reset, empty reply, cut answer).
    Abort,
    /// A token bucket per client: 429 with Retry-After and RateLimit-* headers.
    #[value(name = "rate_limit", alias = "rate-limit")]
    RateLimit,
    /// Heroku's router deadlines: H12 (no answer in time) and H15 (idle body).
    #[value(name = "router_timeout", alias = "router-timeout")]
    RouterTimeout,
    /// A response body bandwidth limit.
    #[value(name = "slow_body", alias = "slow-body")]
    SlowBody,
    /// TLS proxies: serve a certificate that expired yesterday.
    #[value(name = "tls_expired", alias = "tls-expired")]
    TlsExpired,
    /// TLS proxies: serve a certificate for another name.
    #[value(name = "tls_wrong_host", alias = "tls-wrong-host")]
    TlsWrongHost,
    /// TLS proxies: serve a self-signed certificate.
    #[value(name = "tls_untrusted", alias = "tls-untrusted")]
    TlsUntrusted,
    /// TLS proxies: never answer the client's hello.
    #[value(name = "tls_handshake_timeout", alias = "tls-handshake-timeout")]
    TlsHandshakeTimeout,
    /// TLS proxies: answer the hello with a fatal alert.
    #[value(name = "tls_alert", alias = "tls-alert")]
    TlsAlert,
}

impl FaultType {
    /// The API's `type` name.
    pub fn name(self) -> &'static str {
        match self {
            FaultType::Maintenance => "maintenance",
            FaultType::Status => "status",
            FaultType::HttpLatency => "http_latency",
            FaultType::Abort => "abort",
            FaultType::RateLimit => "rate_limit",
            FaultType::RouterTimeout => "router_timeout",
            FaultType::SlowBody => "slow_body",
            FaultType::TlsExpired => "tls_expired",
            FaultType::TlsWrongHost => "tls_wrong_host",
            FaultType::TlsUntrusted => "tls_untrusted",
            FaultType::TlsHandshakeTimeout => "tls_handshake_timeout",
            FaultType::TlsAlert => "tls_alert",
        }
    }
}

/// Shape of an `http_latency` delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Always the latency.
    Fixed,
    /// Uniform within latency ± jitter.
    Uniform,
    /// Normal around the latency with the jitter as standard deviation.
    Normal,
}

/// How an `abort` fault breaks the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AbortMode {
    /// TCP reset before any response byte.
    Reset,
    /// Close the connection without answering.
    #[value(name = "empty_reply", alias = "empty-reply")]
    EmptyReply,
    /// Send the status line and headers, then close.
    #[value(name = "close_after_headers", alias = "close-after-headers")]
    CloseAfterHeaders,
    /// Send the headers and part of the body, then close.
    #[value(name = "close_mid_body", alias = "close-mid-body")]
    CloseMidBody,
}

/// Arguments of `fault add`. Each type's flags are listed under its own heading; a flag of
/// another type is refused rather than silently ignored.
#[derive(Debug, Args)]
pub struct FaultAddArgs {
    /// Name of the HTTP proxy.
    proxy: String,
    /// Fault type.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    kind: FaultType,
    /// Name of the fault [default: the type, e.g. status].
    #[arg(short = 'n', long, value_name = "NAME", value_parser = values::parse_non_empty)]
    fault_name: Option<String>,
    #[command(flatten)]
    answer: AnswerArgs,
    /// Body of the status answer: JSON when it is a JSON object or array (sent as
    /// application/json), text otherwise.
    #[arg(
        long,
        value_name = "BODY",
        help_heading = "Answer (maintenance, status)"
    )]
    body: Option<String>,
    /// Delay before the response starts, e.g. 200ms.
    #[arg(long, value_name = "DURATION", value_parser = values::parse_duration_ms,
          help_heading = "http_latency")]
    latency: Option<u64>,
    /// Spread of the delay, e.g. 50ms.
    #[arg(long, value_name = "DURATION", value_parser = values::parse_duration_ms,
          help_heading = "http_latency")]
    jitter: Option<u64>,
    /// How the delay is drawn [default: fixed].
    #[arg(long, value_name = "SHAPE", help_heading = "http_latency")]
    distribution: Option<Distribution>,
    /// The alert a tls_alert answers with [default: handshake_failure].
    #[arg(long, value_name = "NAME", help_heading = "tls_alert")]
    alert: Option<String>,
    /// How the exchange breaks [default: reset].
    #[arg(long, value_name = "MODE", help_heading = "abort")]
    mode: Option<AbortMode>,
    /// Requests allowed per period.
    #[arg(long, value_name = "N", value_parser = values::parse_count,
          required_if_eq("kind", "rate_limit"), help_heading = "rate_limit")]
    limit: Option<u64>,
    /// Length of the period, e.g. 1s or 1m [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = values::parse_positive_duration_ms,
          help_heading = "rate_limit")]
    period: Option<u64>,
    /// Requests a client may send at once [default: the limit].
    #[arg(long, value_name = "N", value_parser = values::parse_count,
          help_heading = "rate_limit")]
    burst: Option<u64>,
    /// Count per value of this header instead of per client IP.
    #[arg(long, value_name = "HEADER", value_parser = values::parse_header_name,
          help_heading = "rate_limit")]
    key_header: Option<String>,
    /// No response start within this long → 503 and an H12 log line [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = values::parse_seconds,
          help_heading = "router_timeout")]
    timeout: Option<u64>,
    /// No body data for this long → connection cut and an H15 log line [default: 55s].
    #[arg(long, value_name = "DURATION", value_parser = values::parse_seconds,
          help_heading = "router_timeout")]
    idle: Option<u64>,
    /// Response body rate in KB/s (1 KB = 1000 bytes).
    #[arg(long, value_name = "KB/s", value_parser = values::parse_rate,
          required_if_eq("kind", "slow_body"), help_heading = "slow_body")]
    rate: Option<u64>,
    #[command(flatten)]
    targeting: Targeting,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `fault remove`.
#[derive(Debug, Args)]
pub struct FaultRemoveArgs {
    /// Name of the proxy.
    proxy: String,
    /// Name of the fault, as `fault list` shows it.
    fault: String,
    #[command(flatten)]
    options: LocalOptions,
}

impl FaultCommand {
    /// The options given after the command.
    pub fn options(&self) -> &LocalOptions {
        match self {
            FaultCommand::Add(args) => &args.options,
            FaultCommand::List(args) => &args.options,
            FaultCommand::Remove(args) => &args.options,
        }
    }

    /// Refuses flags that do not belong to the chosen type, before anything is sent.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            FaultCommand::Add(args) => check_flags_fit_type(args),
            FaultCommand::List(_) | FaultCommand::Remove(_) => Ok(()),
        }
    }
}

/// Every type-specific flag of `fault add`, whether it was given, and the types it fits.
fn type_flags(args: &FaultAddArgs) -> Vec<(&'static str, bool, &'static [FaultType])> {
    use FaultType::{Abort, HttpLatency, Maintenance, RateLimit, RouterTimeout, SlowBody, Status};
    let a = &args.answer;
    vec![
        ("--status", a.status.is_some(), &[Maintenance, Status]),
        ("--header", !a.headers.is_empty(), &[Maintenance, Status]),
        ("--message", a.message.is_some(), &[Maintenance]),
        ("--api", a.api.is_some(), &[Maintenance]),
        ("--status-page", a.status_page.is_some(), &[Maintenance]),
        ("--retry-after", a.retry_after.is_some(), &[Maintenance]),
        ("--body", args.body.is_some(), &[Status]),
        ("--latency", args.latency.is_some(), &[HttpLatency]),
        ("--jitter", args.jitter.is_some(), &[HttpLatency]),
        (
            "--distribution",
            args.distribution.is_some(),
            &[HttpLatency],
        ),
        ("--mode", args.mode.is_some(), &[Abort]),
        ("--limit", args.limit.is_some(), &[RateLimit]),
        ("--period", args.period.is_some(), &[RateLimit]),
        ("--burst", args.burst.is_some(), &[RateLimit]),
        ("--key-header", args.key_header.is_some(), &[RateLimit]),
        ("--timeout", args.timeout.is_some(), &[RouterTimeout]),
        ("--idle", args.idle.is_some(), &[RouterTimeout]),
        ("--rate", args.rate.is_some(), &[SlowBody]),
        ("--alert", args.alert.is_some(), &[FaultType::TlsAlert]),
    ]
}

/// The first flag given that the chosen type does not use, as a usage error.
fn check_flags_fit_type(args: &FaultAddArgs) -> Result<(), String> {
    for (flag, given, types) in type_flags(args) {
        if given && !types.contains(&args.kind) {
            let fits: Vec<&str> = types.iter().map(|t| t.name()).collect();
            return Err(format!(
                "{flag} does not apply to --type {}; it is for {}",
                args.kind.name(),
                fits.join(" and ")
            ));
        }
    }
    Ok(())
}

/// A `--body` value: JSON objects and arrays go as JSON, anything else as text.
fn body_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(json @ (Value::Object(_) | Value::Array(_))) => json,
        _ => Value::String(raw.to_owned()),
    }
}

/// The `attributes` object of `fault add`: only what was given, so the server's defaults
/// apply to the rest.
fn fault_attributes(args: &FaultAddArgs) -> Map<String, Value> {
    let mut map = Map::new();
    put(&mut map, "alert", args.alert.clone().map(Value::String));
    answer_attributes(&args.answer, &mut map);
    put(&mut map, "body", args.body.as_deref().map(body_value));
    put(&mut map, "latency", args.latency.map(Value::from));
    put(&mut map, "jitter", args.jitter.map(Value::from));
    put(
        &mut map,
        "distribution",
        args.distribution
            .and_then(|d| d.to_possible_value())
            .map(|v| Value::String(v.get_name().to_owned())),
    );
    put(
        &mut map,
        "mode",
        args.mode
            .and_then(|m| m.to_possible_value())
            .map(|v| Value::String(v.get_name().to_owned())),
    );
    put(&mut map, "limit", args.limit.map(Value::from));
    put(&mut map, "period_ms", args.period.map(Value::from));
    put(&mut map, "burst", args.burst.map(Value::from));
    put(
        &mut map,
        "key_header",
        args.key_header.clone().map(Value::String),
    );
    put(&mut map, "timeout", args.timeout.map(Value::from));
    put(&mut map, "idle", args.idle.map(Value::from));
    put(&mut map, "rate", args.rate.map(Value::from));
    map
}

/// `fault add`: `POST /proxies/{proxy}/toxics` with the typed flags as attributes.
async fn fault_add(api: &Api, args: &FaultAddArgs) -> anyhow::Result<Output> {
    let name = args
        .fault_name
        .clone()
        .unwrap_or_else(|| args.kind.name().to_owned());
    let body = fault_body(&name, args.kind, fault_attributes(args), &args.targeting);
    let answer = match create_fault(api, &args.proxy, &name, &body, false).await {
        Ok((answer, _)) => answer,
        Err(error)
            if args.fault_name.is_none() && HttpError::is(&error, StatusCode::CONFLICT, None) =>
        {
            return Err(anyhow::anyhow!(
                "{error}; the proxy has a fault named {name} already, so give this one \
                 another name with --fault-name"
            ));
        }
        Err(error) => return Err(error),
    };
    let mut human = format!(
        "Added {} fault {name} to proxy {}",
        args.kind.name(),
        args.proxy
    );
    if let Ok(fault) = answer.parse::<Toxic>() {
        let _ = write!(human, ": {}", describe(&fault));
    }
    human.push('\n');
    Ok(Output::new(human, &answer))
}

/// `fault list`: `GET /proxies/{proxy}/toxics`, HTTP faults only.
async fn fault_list(api: &Api, proxy: &str) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::GET, &["proxies", proxy, "toxics"], None)
        .await?;
    let toxics: Vec<Toxic> = answer.parse()?;
    Ok(Output::new(render::fault_table(proxy, &toxics), &answer))
}

/// `fault remove`: `DELETE /proxies/{proxy}/toxics/{fault}`.
async fn fault_remove(api: &Api, args: &FaultRemoveArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(
            Method::DELETE,
            &["proxies", &args.proxy, "toxics", &args.fault],
            None,
        )
        .await?;
    Ok(Output::new(
        format!("Removed fault {} from proxy {}\n", args.fault, args.proxy),
        &answer,
    ))
}

/// Runs a `fault` subcommand, naming what failed in the error.
pub async fn fault(api: &Api, command: &FaultCommand) -> anyhow::Result<Output> {
    match command {
        FaultCommand::Add(args) => {
            let what = match &args.fault_name {
                Some(name) => format!("add fault {name} to proxy {}", args.proxy),
                None => format!("add {} fault to proxy {}", args.kind.name(), args.proxy),
            };
            fault_add(api, args).await.context(what)
        }
        FaultCommand::List(args) => fault_list(api, &args.proxy)
            .await
            .with_context(|| format!("list faults of proxy {}", args.proxy)),
        FaultCommand::Remove(args) => fault_remove(api, args)
            .await
            .with_context(|| format!("remove fault {} from proxy {}", args.fault, args.proxy)),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    /// Parses `fault add ...` as the binary would (`-h` is --host there too).
    #[derive(Debug, Parser)]
    #[command(disable_help_flag = true)]
    struct Probe {
        #[command(subcommand)]
        command: FaultCommand,
    }

    fn add(args: &[&str]) -> Result<FaultAddArgs, String> {
        let mut argv = vec!["probe", "add"];
        argv.extend_from_slice(args);
        match Probe::try_parse_from(argv) {
            Ok(Probe {
                command: FaultCommand::Add(args),
            }) => Ok(*args),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn status_fault_body_carries_targeting_only_when_given() {
        let args = add(&[
            "api",
            "--type",
            "status",
            "--status",
            "500",
            "--body",
            r#"{"id":"boom"}"#,
            "--header",
            "X-A=1",
            "--path",
            "/apps/*",
            "--method",
            "get",
            "--first-n",
            "2",
            "--match-header",
            "X-Client=test*",
            "--query",
            "page=2",
            "--ttl",
            "30s",
            "--toxicity",
            "0.5",
        ])
        .unwrap();
        check_flags_fit_type(&args).unwrap();
        let body = fault_body(
            "status",
            args.kind,
            fault_attributes(&args),
            &args.targeting,
        );
        assert_eq!(
            body,
            json!({
                "name": "status", "type": "status",
                "attributes": {"status": 500, "body": {"id": "boom"}, "headers": {"X-A": "1"}},
                "match": {"method": ["GET"], "path": "/apps/*",
                          "headers": {"X-Client": "test*"}, "query": {"page": "2"}},
                "first_n": 2, "toxicity": 0.5, "ttl": 30000
            })
        );
        let bare = add(&["api", "-t", "abort"]).unwrap();
        assert_eq!(
            fault_body("abort", bare.kind, fault_attributes(&bare), &bare.targeting),
            json!({"name": "abort", "type": "abort", "attributes": {}})
        );
    }

    #[test]
    fn type_specific_flags_become_api_attributes() {
        let a = add(&[
            "api",
            "-t",
            "http_latency",
            "--latency",
            "200ms",
            "--jitter",
            "50ms",
            "--distribution",
            "normal",
        ])
        .unwrap();
        assert_eq!(
            Value::Object(fault_attributes(&a)),
            json!({"latency": 200, "jitter": 50, "distribution": "normal"})
        );
        let a = add(&["api", "-t", "abort", "--mode", "close-mid-body"]).unwrap();
        assert_eq!(
            Value::Object(fault_attributes(&a)),
            json!({"mode": "close_mid_body"})
        );
        let a = add(&[
            "api",
            "-t",
            "rate-limit",
            "--limit",
            "10",
            "--period",
            "1m",
            "--burst",
            "20",
            "--key-header",
            "X-Api-Key",
        ])
        .unwrap();
        assert_eq!(a.kind, FaultType::RateLimit);
        assert_eq!(
            Value::Object(fault_attributes(&a)),
            json!({"limit": 10, "period_ms": 60000, "burst": 20, "key_header": "X-Api-Key"})
        );
        let a = add(&[
            "api",
            "-t",
            "router_timeout",
            "--timeout",
            "30s",
            "--idle",
            "1m",
        ])
        .unwrap();
        assert_eq!(
            Value::Object(fault_attributes(&a)),
            json!({"timeout": 30, "idle": 60})
        );
        let a = add(&["api", "-t", "slow_body", "--rate", "64KB/s"]).unwrap();
        assert_eq!(Value::Object(fault_attributes(&a)), json!({"rate": 64}));
        let a = add(&[
            "api",
            "-t",
            "maintenance",
            "--api",
            "Platform API",
            "--retry-after",
            "2m",
            "--status-page",
            "https://status.example",
        ])
        .unwrap();
        assert_eq!(
            Value::Object(fault_attributes(&a)),
            json!({"api": "Platform API", "retry_after": 120,
                   "status_page": "https://status.example"})
        );
    }

    #[test]
    fn body_is_json_only_for_objects_and_arrays() {
        assert_eq!(body_value(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(body_value("[1]"), json!([1]));
        assert_eq!(body_value("42"), json!("42"));
        assert_eq!(body_value("oops"), json!("oops"));
    }

    #[test]
    fn flags_of_another_type_are_refused_by_name() {
        let args = add(&["api", "-t", "status", "--latency", "5ms"]).unwrap();
        assert_eq!(
            check_flags_fit_type(&args).unwrap_err(),
            "--latency does not apply to --type status; it is for http_latency"
        );
        let args = add(&["api", "-t", "http_latency", "--status", "500"]).unwrap();
        assert_eq!(
            check_flags_fit_type(&args).unwrap_err(),
            "--status does not apply to --type http_latency; it is for maintenance and status"
        );
    }

    #[test]
    fn required_and_bad_values_are_usage_errors_naming_the_flag() {
        let error = add(&["api", "-t", "rate_limit"]).unwrap_err();
        assert!(error.contains("--limit"), "{error}");
        let error = add(&["api", "-t", "slow_body"]).unwrap_err();
        assert!(error.contains("--rate"), "{error}");
        let error = add(&["api", "-t", "http_latency", "--latency", "5x"]).unwrap_err();
        assert!(
            error.contains("'5x'") && error.contains("--latency"),
            "{error}"
        );
        let error = add(&["api", "-t", "status", "--ttl", "30"]).unwrap_err();
        assert!(error.contains("'30'") && error.contains("--ttl"), "{error}");
        let error = add(&["api", "-t", "nope"]).unwrap_err();
        assert!(
            error.contains("'nope'") && error.contains("--type"),
            "{error}"
        );
    }
}
