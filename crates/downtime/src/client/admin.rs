//! Server-wide commands over the existing API: `reset`, `populate FILE`, `webhook ...`,
//! `history` (events) and `uptime` (components and their daily uptime).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::api::Api;
use super::render::table;
use super::{LocalOptions, Output};

/// Arguments of `populate`.
#[derive(Debug, Args)]
pub struct PopulateArgs {
    /// Our TOML (`[[proxy]]` tables) or Toxiproxy's JSON array; `${VAR}` and
    /// `${VAR:-default}` are replaced from the environment first.
    pub file: PathBuf,
    #[command(flatten)]
    pub options: LocalOptions,
}

/// `webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe URL to status events (every event unless --event is given).
    Add(WebhookAddArgs),
    /// List the webhooks.
    #[command(visible_alias = "ls")]
    List(WebhookListArgs),
    /// Remove a webhook.
    #[command(visible_aliases = ["rm", "delete"])]
    Remove(WebhookIdArgs),
    /// Show a webhook's latest deliveries, newest first.
    Deliveries(WebhookIdArgs),
}

impl WebhookCommand {
    pub fn options(&self) -> &LocalOptions {
        match self {
            WebhookCommand::Add(a) => &a.options,
            WebhookCommand::List(a) => &a.options,
            WebhookCommand::Remove(a) | WebhookCommand::Deliveries(a) => &a.options,
        }
    }
}

/// Arguments of `webhook add`.
#[derive(Debug, Args)]
pub struct WebhookAddArgs {
    /// Receiver (http://...).
    pub url: String,
    /// Secret the deliveries are signed with (HMAC-SHA256).
    #[arg(long)]
    pub secret: Option<String>,
    /// Event to subscribe to, repeatable (e.g. incident.created); default: all.
    #[arg(long = "event", value_name = "EVENT")]
    pub events: Vec<String>,
    #[command(flatten)]
    pub options: LocalOptions,
}

/// Arguments of `webhook list`.
#[derive(Debug, Args)]
pub struct WebhookListArgs {
    #[command(flatten)]
    pub options: LocalOptions,
}

/// A webhook's id.
#[derive(Debug, Args)]
pub struct WebhookIdArgs {
    /// Id of the webhook (see `webhook list`).
    pub id: String,
    #[command(flatten)]
    pub options: LocalOptions,
}

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only events of this proxy.
    #[arg(long)]
    pub proxy: Option<String>,
    /// At most this many events, newest first (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub options: LocalOptions,
}

/// Arguments of `uptime`.
#[derive(Debug, Args)]
pub struct UptimeArgs {
    /// Component id (e.g. proxy:redis, see `uptime` without one): its day-by-day uptime.
    pub component: Option<String>,
    /// Days to show (1 to 365).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: u32,
    #[command(flatten)]
    pub options: LocalOptions,
}

/// `reset`: `POST /reset`.
pub async fn reset(api: &Api) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::POST, &["reset"], None)
        .await
        .context("reset")?;
    Ok(Output::new(
        "Reset: every proxy enabled, every toxic and fault removed\n".to_owned(),
        &answer,
    ))
}

/// `populate FILE`: the file's proxies as one `POST /populate`.
pub async fn populate(api: &Api, args: &PopulateArgs) -> anyhow::Result<Output> {
    let what = || format!("populate from {}", args.file.display());
    let body = populate_body(&args.file).with_context(what)?;
    let answer = api
        .send(Method::POST, &["populate"], Some(&body))
        .await
        .with_context(what)?;
    let value: Value = answer.parse().with_context(what)?;
    let proxies = value
        .get("proxies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut human = format!(
        "Populated {} prox{}\n",
        proxies.len(),
        if proxies.len() == 1 { "y" } else { "ies" }
    );
    for p in &proxies {
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let upstream = text("upstream");
        human.push_str(&format!(
            "  {} on {} -> {}\n",
            text("name"),
            text("listen"),
            if upstream.is_empty() {
                "(stand-in)".to_owned()
            } else {
                upstream
            }
        ));
    }
    Ok(Output::new(human, &answer))
}

/// The `/populate` body of a file: validated as `serve --config` validates it, then sent
/// as the JSON array of its proxies in the API's own shape (toxics and HTTP options
/// included), whichever format the file is in.
fn populate_body(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = downtime_server::config::read(path)?;
    let extension = path.extension().and_then(|e| e.to_str());
    let proxies = downtime_server::config::parse(&text, extension)
        .map_err(|detail| anyhow::anyhow!("{}: {detail}", path.display()))?;
    let views: Vec<downtime_model::ProxyView> = proxies
        .into_iter()
        .map(|(config, toxics)| downtime_model::ProxyView { config, toxics })
        .collect();
    Ok(serde_json::to_value(views)?)
}

/// Runs a `webhook` subcommand.
pub async fn webhook(api: &Api, command: &WebhookCommand) -> anyhow::Result<Output> {
    match command {
        WebhookCommand::Add(args) => {
            let mut body = json!({ "url": args.url });
            if let Some(secret) = &args.secret {
                body["secret"] = json!(secret);
            }
            if !args.events.is_empty() {
                body["events"] = json!(args.events);
            }
            let answer = api
                .send(Method::POST, &["webhooks"], Some(&body))
                .await
                .with_context(|| format!("add webhook {}", args.url))?;
            let id = answer
                .parse::<Value>()
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            Ok(Output::new(
                format!("Added webhook {id} for {}\n", args.url),
                &answer,
            ))
        }
        WebhookCommand::List(_) => {
            let answer = api
                .send(Method::GET, &["webhooks"], None)
                .await
                .context("list webhooks")?;
            let hooks: Vec<Value> = answer.parse()?;
            if hooks.is_empty() {
                return Ok(Output::new(
                    "no webhooks; add one with `downtime webhook add URL`\n".to_owned(),
                    &answer,
                ));
            }
            let mut rows = vec![["ID", "URL", "EVENTS", "CREATED"].map(str::to_owned)];
            for h in &hooks {
                let events = h
                    .get("events")
                    .and_then(Value::as_array)
                    .map(|e| {
                        e.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                rows.push([
                    field(h, "id"),
                    field(h, "url"),
                    events,
                    field(h, "created_at"),
                ]);
            }
            Ok(Output::new(table(&rows, ""), &answer))
        }
        WebhookCommand::Remove(args) => {
            let answer = api
                .send(Method::DELETE, &["webhooks", &args.id], None)
                .await
                .with_context(|| format!("remove webhook {}", args.id))?;
            Ok(Output::new(
                format!("Removed webhook {}\n", args.id),
                &answer,
            ))
        }
        WebhookCommand::Deliveries(args) => {
            let answer = api
                .send(Method::GET, &["webhooks", &args.id, "deliveries"], None)
                .await
                .with_context(|| format!("read the deliveries of webhook {}", args.id))?;
            let deliveries: Vec<Value> = answer.parse()?;
            if deliveries.is_empty() {
                return Ok(Output::new(
                    format!("no deliveries yet for webhook {}\n", args.id),
                    &answer,
                ));
            }
            let mut rows = vec![["ID", "EVENT", "STATE", "ATTEMPTS", "QUEUED"].map(str::to_owned)];
            for d in &deliveries {
                let attempts = d
                    .get("attempts")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                rows.push([
                    field(d, "id"),
                    field(d, "event"),
                    field(d, "state"),
                    attempts.to_string(),
                    field(d, "created_at"),
                ]);
            }
            Ok(Output::new(table(&rows, ""), &answer))
        }
    }
}

/// `history`: `GET /history/events`, newest first.
pub async fn history(api: &Api, args: &HistoryArgs) -> anyhow::Result<Output> {
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(proxy) = &args.proxy {
        query.push(("proxy", proxy.clone()));
    }
    let answer = api
        .get_with_query(&["history", "events"], &query)
        .await
        .context("read the history")?;
    let events: Vec<Value> = answer.parse()?;
    if events.is_empty() {
        return Ok(Output::new("no events recorded yet\n".to_owned(), &answer));
    }
    let mut rows = vec![["AT", "EVENT", "BY", "PROXY", "FAULT"].map(str::to_owned)];
    for e in &events {
        rows.push([
            field(e, "at"),
            field(e, "kind"),
            field(e, "actor"),
            field(e, "proxy"),
            field(e, "fault"),
        ]);
    }
    Ok(Output::new(table(&rows, ""), &answer))
}

/// `uptime`: the components with their state, or one component's days.
pub async fn uptime(api: &Api, args: &UptimeArgs) -> anyhow::Result<Output> {
    let Some(component) = &args.component else {
        let answer = api
            .send(Method::GET, &["history", "components"], None)
            .await
            .context("list components")?;
        let components: Vec<Value> = answer.parse()?;
        if components.is_empty() {
            return Ok(Output::new("no components yet\n".to_owned(), &answer));
        }
        let mut rows = vec![["COMPONENT", "KIND", "STATE", "LAST SEEN"].map(str::to_owned)];
        for c in &components {
            rows.push([
                field(c, "id"),
                field(c, "kind"),
                field(c, "last_state"),
                field(c, "last_seen"),
            ]);
        }
        let mut human = table(&rows, "");
        human.push_str("(`downtime uptime COMPONENT` shows its days)\n");
        return Ok(Output::new(human, &answer));
    };
    let answer = api
        .get_with_query(
            &["history", "uptime"],
            &[
                ("component", component.clone()),
                ("days", args.days.to_string()),
            ],
        )
        .await
        .with_context(|| format!("read the uptime of {component}"))?;
    let value: Value = answer.parse()?;
    let mut rows = vec![["DAY", "UPTIME", "WORST", "MINUTES"].map(str::to_owned)];
    for d in value
        .get("days")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let pct = d
            .get("uptime_pct")
            .and_then(Value::as_f64)
            .map_or_else(|| "no data".to_owned(), |p| format!("{p:.2} %"));
        rows.push([
            field(d, "day"),
            pct,
            field(d, "worst_state"),
            d.get("minutes")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .to_string(),
        ]);
    }
    Ok(Output::new(
        format!("{component}\n{}", table(&rows, "")),
        &answer,
    ))
}

/// A string field of a JSON object, `-` when absent or null.
fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}
