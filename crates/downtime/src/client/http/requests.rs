//! `requests`: the request journal an HTTP proxy keeps of its latest requests, read from
//! `GET /proxies/{proxy}/requests` and shown as a table. Not a fault, so it is kept apart
//! from the fault commands; a TCP proxy (which keeps no journal) is named as the reason
//! when the journal comes back empty.

use anyhow::Context as _;
use clap::Args;
use reqwest::Method;

use crate::client::api::Api;
use crate::client::render::{self, JournalEntry, Proxy};
use crate::client::{LocalOptions, Output, values};

/// Arguments of `requests`.
#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Name of the HTTP proxy.
    proxy: String,
    /// How many of the latest requests to show, 1 to 1000 [default: the server's, 100].
    #[arg(long, value_name = "N", value_parser = values::parse_journal_limit)]
    limit: Option<usize>,
    #[command(flatten)]
    options: LocalOptions,
}

impl RequestsArgs {
    /// The options given after the command.
    pub fn options(&self) -> &LocalOptions {
        &self.options
    }
}

/// Runs `requests`, naming what failed in the error.
pub async fn requests(api: &Api, args: &RequestsArgs) -> anyhow::Result<Output> {
    request_journal(api, args)
        .await
        .with_context(|| format!("read the request journal of proxy {}", args.proxy))
}

/// `requests`: `GET /proxies/{proxy}/requests[?limit=N]`, as a table.
async fn request_journal(api: &Api, args: &RequestsArgs) -> anyhow::Result<Output> {
    let query: Vec<(&str, String)> = args
        .limit
        .map(|n| ("limit", n.to_string()))
        .into_iter()
        .collect();
    let answer = api
        .get_with_query(&["proxies", &args.proxy, "requests"], &query)
        .await?;
    let entries: Vec<JournalEntry> = answer.parse()?;
    let human = render::journal_table(&args.proxy, &entries);
    if entries.is_empty() {
        // Only HTTP proxies keep a journal: an empty one on a TCP proxy is no surprise.
        let tcp = api
            .send(Method::GET, &["proxies", &args.proxy], None)
            .await
            .and_then(|a| a.parse::<Proxy>())
            .is_ok_and(|p| !p.is_http());
        if tcp {
            anyhow::bail!(
                "proxy {} is a tcp proxy: only HTTP proxies (create --protocol http) record requests",
                args.proxy
            );
        }
    }
    Ok(Output::new(human, &answer))
}
