//! `toxic add|update|remove`: the toxiproxy-cli toxic commands, with their flags.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::Api;
use super::render::{self, Toxic};
use super::values;
use super::{LocalOptions, Output};

/// `toxic` subcommands.
#[derive(Debug, Subcommand)]
pub enum ToxicCommand {
    /// Add a toxic to a proxy (downstream and toxicity 1 unless told otherwise).
    #[command(visible_alias = "a")]
    Add(ToxicAddArgs),
    /// Change the attributes or toxicity of a toxic; what is not given keeps its value.
    #[command(visible_alias = "u")]
    Update(ToxicUpdateArgs),
    /// Remove a toxic from a proxy.
    #[command(visible_aliases = ["r", "delete", "d"])]
    Remove(ToxicRemoveArgs),
}

impl ToxicCommand {
    /// The options given after the command.
    pub(super) fn options(&self) -> &LocalOptions {
        match self {
            ToxicCommand::Add(args) => &args.options,
            ToxicCommand::Update(args) => &args.options,
            ToxicCommand::Remove(args) => &args.options,
        }
    }

    /// Runs the command; an error says what was being done.
    pub(super) async fn execute(self, api: &Api) -> anyhow::Result<Output> {
        match self {
            ToxicCommand::Add(args) => {
                let what = match &args.name {
                    Some(name) => format!("add toxic {name} to proxy {}", args.proxy),
                    None => format!("add {} toxic to proxy {}", args.kind, args.proxy),
                };
                toxic_add(api, &args).await.context(what)
            }
            ToxicCommand::Update(args) => toxic_update(api, &args)
                .await
                .with_context(|| format!("update toxic {} on proxy {}", args.name, args.proxy)),
            ToxicCommand::Remove(args) => toxic_remove(api, &args)
                .await
                .with_context(|| format!("remove toxic {} from proxy {}", args.name, args.proxy)),
        }
    }
}

/// Arguments of `toxic add`.
#[derive(Debug, Args)]
pub struct ToxicAddArgs {
    /// Toxic type: latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, noop.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    kind: String,
    /// Name of the toxic (default: TYPE_STREAM, e.g. latency_downstream).
    #[arg(
        short = 'n',
        long = "toxicName",
        alias = "toxic-name",
        value_name = "NAME"
    )]
    name: Option<String>,
    /// Probability, 0 to 1, that a connection gets the toxic [default: 1].
    #[arg(long, visible_alias = "tox", value_name = "P", allow_hyphen_values = true, value_parser = values::parse_toxicity)]
    toxicity: Option<f64>,
    /// Apply to client -> server bytes.
    #[arg(short = 'u', long, conflicts_with = "downstream")]
    upstream: bool,
    /// Apply to server -> client bytes (the default).
    #[arg(short = 'd', long)]
    downstream: bool,
    /// Toxic attribute as KEY=VALUE, repeatable; numbers are sent as numbers.
    #[arg(short = 'a', long = "attribute", value_name = "KEY=VALUE", value_parser = values::parse_attribute)]
    attributes: Vec<(String, Value)>,
    /// Remove the toxic by itself after this long, e.g. 30s or 5m (downtime only).
    #[arg(long, value_name = "DURATION", value_parser = values::parse_positive_duration_ms)]
    ttl: Option<u64>,
    /// Proxy to add the toxic to.
    proxy: String,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `toxic update`. Unlike toxiproxy-cli, toxicity is sent only when given, so
/// changing an attribute does not silently reset a toxicity of 0.5 to 1.
#[derive(Debug, Args)]
#[group(id = "changes", required = true, multiple = true, args = ["toxicity", "attributes", "ttl"])]
pub struct ToxicUpdateArgs {
    /// Name of the toxic to change.
    #[arg(
        short = 'n',
        long = "toxicName",
        alias = "toxic-name",
        value_name = "NAME"
    )]
    name: String,
    /// New probability, 0 to 1, that a connection gets the toxic.
    #[arg(long, visible_alias = "tox", value_name = "P", allow_hyphen_values = true, value_parser = values::parse_toxicity)]
    toxicity: Option<f64>,
    /// Attribute to change as KEY=VALUE, repeatable; others keep their value.
    #[arg(short = 'a', long = "attribute", value_name = "KEY=VALUE", value_parser = values::parse_attribute)]
    attributes: Vec<(String, Value)>,
    /// New time to live, counted from now, e.g. 30s (downtime only).
    #[arg(long, value_name = "DURATION", value_parser = values::parse_positive_duration_ms)]
    ttl: Option<u64>,
    /// Proxy the toxic belongs to.
    proxy: String,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `toxic remove`.
#[derive(Debug, Args)]
pub struct ToxicRemoveArgs {
    /// Name of the toxic to remove.
    #[arg(
        short = 'n',
        long = "toxicName",
        alias = "toxic-name",
        value_name = "NAME"
    )]
    name: String,
    /// Proxy the toxic belongs to.
    proxy: String,
    #[command(flatten)]
    options: LocalOptions,
}

/// Collects repeated `--attribute` flags into the JSON object the API takes; a key given
/// twice keeps its last value, like later flags overriding earlier ones.
fn attribute_object(attributes: &[(String, Value)]) -> Map<String, Value> {
    attributes.iter().cloned().collect()
}

/// `toxic add`: `POST /proxies/{proxy}/toxics`.
async fn toxic_add(api: &Api, args: &ToxicAddArgs) -> anyhow::Result<Output> {
    let stream = if args.upstream {
        "upstream"
    } else {
        "downstream"
    };
    let mut body = json!({
        "type": args.kind,
        "stream": stream,
        "toxicity": args.toxicity.unwrap_or(1.0),
        "attributes": attribute_object(&args.attributes),
    });
    if let Value::Object(fields) = &mut body {
        if let Some(name) = &args.name {
            fields.insert("name".to_owned(), Value::String(name.clone()));
        }
        if let Some(ttl) = args.ttl {
            fields.insert("ttl".to_owned(), json!(ttl));
        }
    }
    let answer = api
        .send(
            Method::POST,
            &["proxies", &args.proxy, "toxics"],
            Some(&body),
        )
        .await?;
    // The server picks the default name; show the one it chose.
    let name = answer.parse::<Toxic>().map_or_else(
        |_| {
            args.name
                .clone()
                .unwrap_or_else(|| format!("{}_{stream}", args.kind))
        },
        |toxic| toxic.name,
    );
    let mut human = format!(
        "Added {stream} {} toxic {name} to proxy {}",
        args.kind, args.proxy
    );
    if let Some(ttl) = args.ttl {
        human.push_str(&format!(
            "; it removes itself after {}",
            render::duration_text(ttl)
        ));
    }
    human.push('\n');
    Ok(Output::new(human, &answer))
}

/// Body of `toxic update`: only what the user gave, so the server keeps everything else.
fn update_body(args: &ToxicUpdateArgs) -> Value {
    let mut fields = Map::new();
    if !args.attributes.is_empty() {
        fields.insert(
            "attributes".to_owned(),
            Value::Object(attribute_object(&args.attributes)),
        );
    }
    if let Some(toxicity) = args.toxicity {
        fields.insert("toxicity".to_owned(), json!(toxicity));
    }
    if let Some(ttl) = args.ttl {
        fields.insert("ttl".to_owned(), json!(ttl));
    }
    Value::Object(fields)
}

/// `toxic update`: `POST /proxies/{proxy}/toxics/{toxic}` with a partial body.
async fn toxic_update(api: &Api, args: &ToxicUpdateArgs) -> anyhow::Result<Output> {
    let body = update_body(args);
    let answer = api
        .send(
            Method::POST,
            &["proxies", &args.proxy, "toxics", &args.name],
            Some(&body),
        )
        .await?;
    let mut human = format!("Updated toxic {} on proxy {}", args.name, args.proxy);
    if let Ok(toxic) = answer.parse::<Toxic>() {
        human.push_str(&format!(
            ": toxicity {}, {}",
            toxic.toxicity,
            render::attributes(&toxic.attributes)
        ));
        if let Some(ttl) = toxic.ttl {
            human.push_str(&format!(", ttl {}", render::duration_text(ttl)));
        }
    }
    human.push('\n');
    Ok(Output::new(human, &answer))
}

/// `toxic remove`: `DELETE /proxies/{proxy}/toxics/{toxic}`.
async fn toxic_remove(api: &Api, args: &ToxicRemoveArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(
            Method::DELETE,
            &["proxies", &args.proxy, "toxics", &args.name],
            None,
        )
        .await?;
    Ok(Output::new(
        format!("Removed toxic {} from proxy {}\n", args.name, args.proxy),
        &answer,
    ))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

    fn update_args(toxicity: Option<f64>, attributes: Vec<(String, Value)>) -> ToxicUpdateArgs {
        ToxicUpdateArgs {
            name: "slow".into(),
            toxicity,
            attributes,
            ttl: None,
            proxy: "db".into(),
            options: LocalOptions {
                host: None,
                json: false,
            },
        }
    }

    #[test]
    fn update_sends_only_what_was_given() {
        assert_eq!(
            update_body(&update_args(None, vec![("latency".into(), json!(5))])),
            json!({"attributes": {"latency": 5}})
        );
        assert_eq!(
            update_body(&update_args(Some(0.5), vec![])),
            json!({"toxicity": 0.5})
        );
    }

    #[test]
    fn repeated_attributes_keep_the_last_value() {
        let attributes = vec![
            ("latency".to_owned(), json!(1)),
            ("jitter".to_owned(), json!(2)),
            ("latency".to_owned(), json!(3)),
        ];
        assert_eq!(
            Value::Object(attribute_object(&attributes)),
            json!({"latency": 3, "jitter": 2})
        );
    }
}
