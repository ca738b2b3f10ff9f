//! `maintenance on|off`: the maintenance answer as a fault named `maintenance`, so `off`
//! finds what `on` created. `on` builds the same body as `fault add --type maintenance`
//! (through `mod.rs`) but replaces a fault of that name already there; `off` treats an
//! absent fault as already off, and says when a stand-in keeps answering with its default
//! maintenance response anyway.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::Map;

use super::fault::FaultType;
use super::{AnswerArgs, Targeting, answer_attributes, create_fault, describe, fault_body};
use crate::client::api::{Api, HttpError};
use crate::client::render::{Proxy, Toxic};
use crate::client::{LocalOptions, Output, ProxyArgs};

/// The name `maintenance on|off` gives its fault, so `off` finds what `on` created.
pub const MAINTENANCE_FAULT: &str = "maintenance";

/// `maintenance` subcommands.
#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Answer requests with the maintenance response (the fault `maintenance`).
    ///
    /// The answer is 503 with `{"id": "maintenance", "message": "<API> is temporarily
    /// unavailable.\nFor more information, visit: <status page>"}`. A `maintenance` fault
    /// already on the proxy is replaced (removed, then created again, so it moves to the
    /// end of the fault order).
    On(Box<MaintenanceOnArgs>),
    /// Remove the fault `maintenance` (already off is not an error).
    ///
    /// A stand-in without upstream keeps answering with its default maintenance response.
    Off(ProxyArgs),
}

/// Arguments of `maintenance on`.
#[derive(Debug, Args)]
pub struct MaintenanceOnArgs {
    /// Name of the HTTP proxy.
    proxy: String,
    #[command(flatten)]
    answer: AnswerArgs,
    #[command(flatten)]
    targeting: Targeting,
    #[command(flatten)]
    options: LocalOptions,
}

impl MaintenanceCommand {
    /// The options given after the command.
    pub fn options(&self) -> &LocalOptions {
        match self {
            MaintenanceCommand::On(args) => &args.options,
            MaintenanceCommand::Off(args) => &args.options,
        }
    }
}

/// Runs a `maintenance` subcommand, naming what failed in the error.
pub async fn maintenance(api: &Api, command: &MaintenanceCommand) -> anyhow::Result<Output> {
    match command {
        MaintenanceCommand::On(args) => maintenance_on(api, args)
            .await
            .with_context(|| format!("turn maintenance on for proxy {}", args.proxy)),
        MaintenanceCommand::Off(args) => maintenance_off(api, &args.proxy)
            .await
            .with_context(|| format!("turn maintenance off for proxy {}", args.proxy)),
    }
}

/// `maintenance on`: creates (or replaces) the fault `maintenance`.
async fn maintenance_on(api: &Api, args: &MaintenanceOnArgs) -> anyhow::Result<Output> {
    let mut attributes = Map::new();
    answer_attributes(&args.answer, &mut attributes);
    let body = fault_body(
        MAINTENANCE_FAULT,
        FaultType::Maintenance,
        attributes,
        &args.targeting,
    );
    let (answer, replaced) = create_fault(api, &args.proxy, MAINTENANCE_FAULT, &body, true).await?;
    let mut human = format!("Maintenance on for proxy {}", args.proxy);
    if let Ok(fault) = answer.parse::<Toxic>() {
        let _ = write!(human, ": {}", describe(&fault));
    }
    if replaced {
        human.push_str(" (replaced the previous maintenance fault)");
    }
    human.push('\n');
    Ok(Output::new(human, &answer))
}

/// `maintenance off`: removes the fault `maintenance`; already off is not an error.
async fn maintenance_off(api: &Api, proxy: &str) -> anyhow::Result<Output> {
    let removed = api
        .send(
            Method::DELETE,
            &["proxies", proxy, "toxics", MAINTENANCE_FAULT],
            None,
        )
        .await;
    let (mut human, answer) = match removed {
        Ok(answer) => (format!("Maintenance off for proxy {proxy}"), answer),
        Err(error) if HttpError::is(&error, StatusCode::NOT_FOUND, Some("toxic not found")) => (
            format!("Maintenance was already off for proxy {proxy}"),
            crate::client::api::Answer {
                body: String::new(),
            },
        ),
        Err(error) => return Err(error),
    };
    // A stand-in has nothing to forward to: say so, or "off" looks broken.
    let stand_in = api
        .send(Method::GET, &["proxies", proxy], None)
        .await
        .and_then(|a| a.parse::<Proxy>())
        .is_ok_and(|p| p.is_stand_in());
    if stand_in {
        human.push_str(
            "; it has no upstream, so it still answers with its default maintenance response",
        );
    }
    human.push('\n');
    Ok(Output::new(human, &answer))
}
