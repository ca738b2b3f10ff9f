//! The client half of the `downtime` binary: toxiproxy-cli compatible commands that drive a
//! running server (ours or Toxiproxy) through its HTTP API.
//!
//! Layout:
//! - `mod.rs`: the clap definitions and one function per toxiproxy-cli proxy command;
//! - `toxic`: `toxic add|update|remove`;
//! - `admin`: server-wide commands (`reset`, `populate`, `webhook`, `history`, `uptime`);
//! - `http`: the HTTP proxy commands (`maintenance`, `fault`, `requests`);
//! - `incidents`: `incident` and its subcommands (incidents and scheduled maintenance);
//! - `api`: HTTP transport and error wording;
//! - `render`: response types and the human-readable tables;
//! - `values`: parsers for `--host`, `--toxicity`, `--attribute` and the fault flags.
//!
//! Names, aliases and short flags follow toxiproxy-cli so existing scripts keep working;
//! the camelCase `--toxicName` is kept for the same reason.

mod admin;
mod api;
mod http;
mod incidents;
mod render;
mod toxic;
mod values;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use api::{Answer, Api};
use render::Proxy;

pub use toxic::ToxicCommand;
pub use values::DEFAULT_SERVER_URL;

/// Where to find the server and how to print, given before the command
/// (`downtime --host URL list`), as toxiproxy-cli expects.
#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Control API of the server to talk to: http://HOST:PORT or just HOST:PORT.
    /// `-h` is this flag, as in toxiproxy-cli; use `--help` for help.
    // Kept as text and parsed only by client commands, so a stray TOXIPROXY_URL cannot stop
    // `downtime serve` from starting.
    #[arg(
        short = 'h',
        long = "host",
        value_name = "URL",
        env = "TOXIPROXY_URL",
        default_value = DEFAULT_SERVER_URL,
    )]
    pub host: String,
    /// Print the server's raw JSON answers instead of tables and messages, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// The same options accepted after the command too (`downtime list --json`), because
/// people add flags at the end of a command line; these take precedence over the global ones.
#[derive(Debug, Args)]
pub struct LocalOptions {
    /// Control API of the server to talk to (overrides the one given before the command).
    #[arg(short = 'h', long = "host", value_name = "URL", value_parser = values::parse_server_url)]
    host: Option<Url>,
    /// Print the server's raw JSON answers instead of tables and messages.
    #[arg(long)]
    json: bool,
}

/// Names a proxy for the commands that take nothing else.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Name of the proxy.
    proxy: String,
    #[command(flatten)]
    options: LocalOptions,
}

/// `list` takes no argument, only the shared options.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    options: LocalOptions,
}

/// What a proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Bytes, as Toxiproxy: TCP toxics only.
    Tcp,
    /// HTTP/1.1: TCP toxics plus HTTP faults; the upstream is optional.
    Http,
}

/// Arguments of `create`: both addresses are required for a TCP proxy, as in toxiproxy-cli,
/// because a TCP proxy without an upstream cannot do anything and an implicit listen port
/// is easy to lose. An HTTP proxy without upstream is a stand-in answering from its faults.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Address the proxy listens on, e.g. 127.0.0.1:26379 (port 0 picks a free one).
    #[arg(short = 'l', long, value_name = "ADDR")]
    listen: String,
    /// Address of the real service, e.g. localhost:6379 (optional with --protocol http).
    #[arg(
        short = 'u',
        long,
        value_name = "ADDR",
        required_unless_present_any = ["protocol", "forward", "tls"],
        required_if_eq("protocol", "tcp"),
        conflicts_with = "forward"
    )]
    upstream: Option<String>,
    /// What the proxy speaks [default: tcp].
    #[arg(long, value_name = "PROTOCOL")]
    protocol: Option<Protocol>,
    /// Terminate TLS (an HTTP proxy or stand-in at https://), with a certificate from the
    /// server's local CA for localhost, 127.0.0.1, ::1 and the listen host.
    #[arg(long)]
    tls: bool,
    /// A forward proxy for HTTP_PROXY/HTTPS_PROXY instead of a reverse proxy (no upstream:
    /// each request names its host).
    #[arg(long)]
    forward: bool,
    /// With --forward: intercept HTTPS only for hosts matching PATTERN (e.g. '*.stripe.com';
    /// repeatable); others are tunnelled untouched. Default: every host.
    #[arg(long, value_name = "PATTERN", requires = "forward")]
    intercept: Vec<String>,
    /// Name of the new proxy.
    proxy: String,
    #[command(flatten)]
    options: LocalOptions,
}

/// The client commands; flattened into the binary's top-level command list next to `serve`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List proxies: addresses, whether enabled, number of toxics.
    #[command(visible_aliases = ["l", "li", "ls"])]
    List(ListArgs),
    /// Show one proxy and its toxics, split by direction.
    #[command(visible_aliases = ["i", "ins"])]
    Inspect(ProxyArgs),
    /// Create a proxy (enabled at once).
    #[command(visible_aliases = ["c", "new"])]
    Create(CreateArgs),
    /// Enable a disabled proxy or disable an enabled one (disabling drops its connections).
    #[command(visible_alias = "tog")]
    Toggle(ProxyArgs),
    /// Delete a proxy, its toxics and its connections.
    #[command(visible_alias = "d")]
    Delete(ProxyArgs),
    /// Add, update or remove toxics of a proxy.
    #[command(visible_alias = "t", subcommand)]
    Toxic(ToxicCommand),
    /// Turn the maintenance answer of an HTTP proxy on or off.
    #[command(subcommand)]
    Maintenance(http::MaintenanceCommand),
    /// Add, list or remove HTTP faults (errors, latency, aborts, rate limits, timeouts).
    #[command(visible_alias = "f", subcommand)]
    Fault(http::FaultCommand),
    /// Show the latest requests an HTTP proxy served: status and fault of each.
    #[command(visible_alias = "req")]
    Requests(http::RequestsArgs),
    /// Stop every running drill and remove every fault at once (`POST /halt`).
    Halt(ListArgs),
    /// Open, update, resolve and list incidents and scheduled maintenances (status page).
    #[command(visible_alias = "inc", subcommand)]
    Incident(incidents::IncidentCommand),
    /// Enable every proxy and remove every toxic and fault (`POST /reset`).
    Reset(ListArgs),
    /// Create or replace proxies from a file (our TOML or Toxiproxy's JSON), as `POST /populate`.
    Populate(admin::PopulateArgs),
    /// Add, list or remove webhooks, or show a webhook's deliveries.
    #[command(subcommand)]
    Webhook(admin::WebhookCommand),
    /// Show the latest recorded events (faults, proxies, drills), newest first.
    History(admin::HistoryArgs),
    /// Show the status page's components and their state, or one component's daily uptime.
    Uptime(admin::UptimeArgs),
}

impl Command {
    /// The options given after the command.
    fn options(&self) -> &LocalOptions {
        match self {
            Command::List(args) => &args.options,
            Command::Inspect(args) | Command::Toggle(args) | Command::Delete(args) => &args.options,
            Command::Create(args) => &args.options,
            Command::Toxic(command) => command.options(),
            Command::Maintenance(command) => command.options(),
            Command::Fault(command) => command.options(),
            Command::Requests(args) => args.options(),
            Command::Halt(args) => &args.options,
            Command::Incident(command) => command.options(),
            Command::Reset(args) => &args.options,
            Command::Populate(args) => &args.options,
            Command::Webhook(command) => command.options(),
            Command::History(args) => &args.options,
            Command::Uptime(args) => &args.options,
        }
    }

    /// Checks what clap cannot express, before anything is sent; the message names the flag.
    fn validate(&self) -> Result<(), String> {
        match self {
            Command::Fault(command) => command.validate(),
            Command::Incident(command) => command.validate(),
            _ => Ok(()),
        }
    }
}

/// Runs one client command and maps the outcome to the exit code: 0 on success, 1 when the
/// server refused or could not be reached (clap already used 2 for usage errors).
pub async fn run(global: GlobalOptions, command: Command) -> ExitCode {
    if let Err(message) = command.validate() {
        eprintln!("downtime: {message}");
        return ExitCode::from(2);
    }
    let local = command.options();
    let base = match local.host.clone() {
        Some(url) => url,
        None => match global_server_url(&global.host) {
            Ok(url) => url,
            Err(message) => {
                eprintln!("downtime: {message}");
                return ExitCode::from(2);
            }
        },
    };
    let json = local.json || global.json;
    let result = match Api::new(base) {
        Ok(api) => execute(&api, command).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(output) => {
            let text = if json { output.json } else { output.human };
            print_stdout(&text)
        }
        Err(error) => {
            eprintln!("downtime: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the server address given before the command or through `TOXIPROXY_URL`; an empty
/// value (`TOXIPROXY_URL=`) means the default, as an unset variable would.
fn global_server_url(raw: &str) -> Result<Url, String> {
    let raw = if raw.trim().is_empty() {
        DEFAULT_SERVER_URL
    } else {
        raw
    };
    values::parse_server_url(raw)
        .map_err(|reason| format!("invalid value '{raw}' for --host/TOXIPROXY_URL: {reason}"))
}

/// What a command prints: both renderings are built and `--json` picks one, which keeps
/// each command a single code path.
struct Output {
    human: String,
    json: String,
}

impl Output {
    /// Output for a command whose JSON rendering is the server's answer, verbatim.
    fn new(human: String, answer: &Answer) -> Self {
        let json = if answer.body.trim().is_empty() {
            String::new()
        } else {
            format!("{}\n", answer.body.trim_end())
        };
        Self { human, json }
    }
}

/// Writes to stdout without panicking: a closed pipe (`downtime list | head -1`) is not an
/// error worth reporting, any other write failure is.
fn print_stdout(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("downtime: could not write the output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches to the command's function.
async fn execute(api: &Api, command: Command) -> anyhow::Result<Output> {
    match command {
        Command::List(_) => list(api).await.context("list proxies"),
        Command::Inspect(args) => inspect(api, &args.proxy)
            .await
            .with_context(|| format!("inspect proxy {}", args.proxy)),
        Command::Create(args) => create(api, &args)
            .await
            .with_context(|| format!("create proxy {}", args.proxy)),
        Command::Toggle(args) => toggle(api, &args.proxy)
            .await
            .with_context(|| format!("toggle proxy {}", args.proxy)),
        Command::Delete(args) => delete(api, &args.proxy)
            .await
            .with_context(|| format!("delete proxy {}", args.proxy)),
        Command::Toxic(command) => command.execute(api).await,
        Command::Maintenance(command) => http::maintenance(api, &command).await,
        Command::Fault(command) => http::fault(api, &command).await,
        Command::Requests(args) => http::requests(api, &args).await,
        Command::Halt(_) => halt(api).await.context("halt"),
        Command::Incident(command) => incidents::run(api, command).await,
        Command::Reset(_) => admin::reset(api).await,
        Command::Populate(args) => admin::populate(api, &args).await,
        Command::Webhook(command) => admin::webhook(api, &command).await,
        Command::History(args) => admin::history(api, &args).await,
        Command::Uptime(args) => admin::uptime(api, &args).await,
    }
}

/// `halt`: `POST /halt`; every fault goes and running drills abort and clean up.
async fn halt(api: &Api) -> anyhow::Result<Output> {
    let answer = api.send(Method::POST, &["halt"], None).await?;
    let removed = answer
        .parse::<Value>()
        .ok()
        .and_then(|v| v.get("removed").and_then(Value::as_u64))
        .unwrap_or(0);
    let plural = if removed == 1 { "" } else { "s" };
    Ok(Output::new(
        format!("Halted: {removed} fault{plural} removed; running drills will stop\n"),
        &answer,
    ))
}

/// `list`: `GET /proxies`.
async fn list(api: &Api) -> anyhow::Result<Output> {
    let answer = api.send(Method::GET, &["proxies"], None).await?;
    let proxies: BTreeMap<String, Proxy> = answer.parse()?;
    Ok(Output::new(render::proxy_table(&proxies), &answer))
}

/// `inspect`: `GET /proxies/{proxy}`.
async fn inspect(api: &Api, proxy: &str) -> anyhow::Result<Output> {
    let answer = api.send(Method::GET, &["proxies", proxy], None).await?;
    let details: Proxy = answer.parse()?;
    Ok(Output::new(render::proxy_details(&details), &answer))
}

/// The body of `create`: `protocol` only for HTTP (what stock Toxiproxy sees is unchanged),
/// `upstream` only when given.
fn create_body(args: &CreateArgs) -> Value {
    let mut body = json!({
        "name": args.proxy,
        "listen": args.listen,
        "enabled": true,
    });
    if let Value::Object(fields) = &mut body {
        if let Some(upstream) = &args.upstream {
            fields.insert("upstream".to_owned(), json!(upstream));
        }
        if args.protocol == Some(Protocol::Http) || args.tls || args.forward {
            fields.insert("protocol".to_owned(), json!("http"));
        }
        if args.tls {
            fields.insert("tls".to_owned(), json!({}));
        }
        if args.forward {
            fields.insert("mode".to_owned(), json!("forward"));
            if !args.intercept.is_empty() {
                fields.insert("intercept".to_owned(), json!(args.intercept));
            }
        }
    }
    body
}

/// `create`: `POST /proxies`, always enabled, as toxiproxy-cli does.
async fn create(api: &Api, args: &CreateArgs) -> anyhow::Result<Output> {
    let body = create_body(args);
    let answer = api.send(Method::POST, &["proxies"], Some(&body)).await?;
    // Show the bound address: with port 0 it is the only way to learn the port.
    let listen = answer
        .parse::<Proxy>()
        .map(|proxy| proxy.listen)
        .unwrap_or_else(|_| args.listen.clone());
    let upstream = args.upstream.as_deref().unwrap_or_default();
    let human = if args.forward {
        format!(
            "Created new forward proxy {} listening on {listen}\nexport HTTPS_PROXY=http://{listen} HTTP_PROXY=http://{listen}\n(trust the server's CA in the app: `downtime ca` prints how)\n",
            args.proxy
        )
    } else if args.tls {
        format!(
            "Created new https proxy {} listening on {listen}\nexport {}=https://{listen}\n",
            args.proxy,
            http::env_var_name(&args.proxy)
        )
    } else if args.protocol == Some(Protocol::Http) {
        let role = if upstream.is_empty() {
            "a stand-in answering from its faults (maintenance by default)".to_owned()
        } else {
            format!("forwarding to {upstream}")
        };
        format!(
            "Created new http proxy {} listening on {listen}, {role}\nexport {}={}\n",
            args.proxy,
            http::env_var_name(&args.proxy),
            http::local_url(&listen)
        )
    } else {
        format!(
            "Created new proxy {} listening on {listen}, forwarding to {upstream}\n",
            args.proxy
        )
    };
    Ok(Output::new(human, &answer))
}

/// `toggle`: reads the current state, then sends the opposite. Two requests, like
/// toxiproxy-cli; the API has no atomic toggle.
async fn toggle(api: &Api, proxy: &str) -> anyhow::Result<Output> {
    let current: Proxy = api
        .send(Method::GET, &["proxies", proxy], None)
        .await?
        .parse()?;
    let body = json!({ "enabled": !current.enabled });
    let answer = api
        .send(Method::POST, &["proxies", proxy], Some(&body))
        .await?;
    // Report what the server says now, not what was asked for.
    let enabled = answer
        .parse::<Proxy>()
        .map_or(!current.enabled, |updated| updated.enabled);
    let state = if enabled { "enabled" } else { "disabled" };
    Ok(Output::new(
        format!("Proxy {proxy} is now {state}\n"),
        &answer,
    ))
}

/// `delete`: `DELETE /proxies/{proxy}`.
async fn delete(api: &Api, proxy: &str) -> anyhow::Result<Output> {
    let answer = api.send(Method::DELETE, &["proxies", proxy], None).await?;
    Ok(Output::new(format!("Deleted proxy {proxy}\n"), &answer))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

    #[test]
    fn global_server_url_names_the_bad_value_and_defaults_when_empty() {
        assert_eq!(
            global_server_url("").unwrap().as_str(),
            "http://localhost:8474/"
        );
        assert_eq!(
            global_server_url("10.0.0.1:8474").unwrap().as_str(),
            "http://10.0.0.1:8474/"
        );
        let error = global_server_url("ftp://x").unwrap_err();
        assert!(
            error.starts_with("invalid value 'ftp://x' for --host/TOXIPROXY_URL: "),
            "{error}"
        );
    }
}
