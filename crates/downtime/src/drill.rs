//! `downtime drill run|check FILE`: run an outage scenario and give a verdict, or validate it
//! and show its planned timeline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use downtime_model::drill::{DrillPlan, ServerTarget};
use downtime_server::drills::{self, runner, timeline};
use tokio_util::sync::CancellationToken;

use crate::drill_preflight;

/// Drill commands.
#[derive(Debug, clap::Subcommand)]
pub enum DrillCommand {
    /// Run a drill: exit 0 when it passes, 1 when it fails, 2 for an invalid file or setup.
    Run(RunArgs),
    /// Validate a drill file, check its proxies against the server it names (or the
    /// embedded one), and print its planned timeline without running it.
    Check(CheckArgs),
    /// List the server's scheduled drill runs, or show one with its report.
    Runs(RunsArgs),
}

/// The server's API token, for the commands that talk to it.
#[derive(Debug, clap::Args)]
pub struct ApiToken {
    /// The server's API token (`serve --api-token`), sent as `Authorization: Bearer`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DOWNTIME_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
}

/// Flags of `drill check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The drill file (TOML).
    pub file: PathBuf,
    /// Check the proxies against this API instead of the file's `server`. `-h` is this
    /// flag, as everywhere in the client.
    #[arg(short = 'h', long, visible_alias = "host", value_name = "URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub token: ApiToken,
}

/// Flags of `drill runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Show this run with its full report (JSON).
    pub id: Option<u64>,
    /// The server's API (default: the --host given before the command, TOXIPROXY_URL, or
    /// http://localhost:8474). `-h` is this flag, as everywhere in the client.
    #[arg(short = 'h', long, visible_alias = "host", value_name = "URL")]
    pub server: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `drill run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The drill file (TOML).
    pub file: PathBuf,
    /// Write the full report as JSON here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report here (one test case per phase).
    #[arg(long, value_name = "FILE.xml")]
    pub junit: Option<PathBuf>,
    /// Drive this API instead of the file's `server`. `-h` is this flag, as everywhere in
    /// the client.
    #[arg(short = 'h', long, visible_alias = "host", value_name = "URL")]
    pub server: Option<String>,
    /// No live progress, and only errors in the log.
    #[arg(long)]
    pub quiet: bool,
    /// Also trust the CA certificates in FILE (PEM) when probing https:// endpoints, besides
    /// the system's roots. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub extra_ca: Vec<PathBuf>,
    #[command(flatten)]
    pub token: ApiToken,
}

fn load(file: &Path) -> Result<DrillPlan, ExitCode> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("downtime: drill file {}: cannot read: {e}", file.display());
            return Err(ExitCode::from(2));
        }
    };
    // `${VAR}` / `${VAR:-default}`, as in config files; the line is the file's line.
    let text = match downtime_model::substitute::substitute_env(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("downtime: drill file {}: {e}", file.display());
            return Err(ExitCode::from(2));
        }
    };
    DrillPlan::parse(&text).map_err(|problems| {
        eprintln!(
            "downtime: drill file {} is invalid ({} problem{}):",
            file.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in problems {
            eprintln!("  {}:{}: {}: {}", file.display(), p.line, p.key, p.message);
        }
        ExitCode::from(2)
    })
}

/// Runs a drill command; `host` is the client's --host (or TOXIPROXY_URL, or the default),
/// used by `drill runs` when it is given no server of its own.
pub async fn run(command: DrillCommand, host: &str) -> ExitCode {
    match command {
        DrillCommand::Check(args) => check(args).await,
        DrillCommand::Run(args) => run_drill(args).await,
        DrillCommand::Runs(args) => runs(args, host).await,
    }
}

/// `drill check`: the file, then its proxies on the server it would drive.
async fn check(args: CheckArgs) -> ExitCode {
    let plan = match load(&args.file) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let target = match args.server {
        Some(url) => ServerTarget::Url(url.trim_end_matches('/').to_owned()),
        None => plan.server.clone(),
    };
    let (problems, checked) = match &target {
        ServerTarget::Embedded => (
            drill_preflight::embedded_problems(&plan),
            "proxies: checked against the embedded server (it starts with the file's proxies only)"
                .to_owned(),
        ),
        ServerTarget::Url(url) => {
            match drill_preflight::server_problems(&plan, url, args.token.api_token.as_deref())
                .await
            {
                Ok(problems) => (problems, format!("proxies: checked against {url}")),
                Err(e) => (Vec::new(), format!("proxies: NOT checked ({e})")),
            }
        }
    };
    if !problems.is_empty() {
        report_problems(&args.file, &problems);
        return ExitCode::from(2);
    }
    print!("{}", plan_text(&plan));
    println!("{checked}");
    ExitCode::SUCCESS
}

fn report_problems(file: &Path, problems: &[String]) {
    eprintln!(
        "downtime: drill file {} cannot run ({} problem{}):",
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        eprintln!("  {p}");
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The planned timeline, as `drill check` prints it.
pub fn plan_text(plan: &DrillPlan) -> String {
    let mut out = format!(
        "drill {:?}: valid. seed {}, {} probe(s), {} step(s); baseline {}, faults {}, recovery {}, total {}\n",
        plan.name,
        plan.seed,
        plan.probes.len(),
        plan.steps.len(),
        secs(plan.baseline),
        secs(plan.fault_window()),
        secs(plan.recovery),
        secs(plan.total())
    );
    out.push_str(&format!(
        "server: {}\n",
        match &plan.server {
            ServerTarget::Embedded => "embedded (started by the runner)".to_owned(),
            ServerTarget::Url(u) => u.clone(),
        }
    ));
    for p in &plan.probes {
        out.push_str(&format!(
            "probe {:?}: {} {} every {}, timeout {}\n",
            p.name,
            p.method,
            p.url,
            secs(p.interval),
            secs(p.timeout)
        ));
    }
    out.push_str(&format!(
        "{:>8}  baseline and steady-state check\n",
        secs(std::time::Duration::ZERO)
    ));
    for planned in timeline::timeline(plan) {
        out.push_str(&format!(
            "{:>8}  {}\n",
            secs(planned.at),
            timeline::describe(plan, &planned.action)
        ));
    }
    let recovery = plan.baseline.saturating_add(plan.fault_window());
    out.push_str(&format!("{:>8}  recovery\n", secs(recovery)));
    out.push_str(&format!("{:>8}  end\n", secs(plan.total())));
    out
}

/// Checks before anything runs that each report file can be written, so that a bad path
/// is a setup error (exit 2) at once, not found after the whole drill, hiding its verdict.
/// A file that did not exist is removed again.
fn check_writable(path: &Path, what: &str) -> Result<(), ExitCode> {
    let existed = path.exists();
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("downtime: {what} {}: cannot write: {e}", path.display());
            Err(ExitCode::from(2))
        }
    }
}

async fn run_drill(args: RunArgs) -> ExitCode {
    let plan = match load(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for (path, what) in [(&args.report, "--report"), (&args.junit, "--junit")] {
        if let Some(path) = path
            && let Err(code) = check_writable(path, what)
        {
            return code;
        }
    }
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        on_signal.cancel();
    });
    let target = match args.server {
        Some(url) => ServerTarget::Url(url),
        None => plan.server.clone(),
    };
    // The proxies, before anything starts: an HTTP fault on a TCP proxy would otherwise
    // only be refused after the baseline. An unreachable server is the runner's to report.
    let problems = match &target {
        ServerTarget::Embedded => drill_preflight::embedded_problems(&plan),
        ServerTarget::Url(url) => {
            drill_preflight::server_problems(&plan, url, args.token.api_token.as_deref())
                .await
                .unwrap_or_default()
        }
    };
    if !problems.is_empty() {
        report_problems(&args.file, &problems);
        return ExitCode::from(2);
    }
    let mut embedded = None;
    let base = match target {
        ServerTarget::Url(url) => url,
        ServerTarget::Embedded => match drills::embedded(plan.seed).await {
            Ok(e) => {
                let base = e.base.clone();
                embedded = Some(e);
                base
            }
            Err(e) => {
                eprintln!("downtime: cannot start the embedded server: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let options = runner::RunOptions {
        quiet: args.quiet,
        extra_ca: args.extra_ca.clone(),
        api_token: args.token.api_token.clone(),
        ..runner::RunOptions::default()
    };
    let result = runner::run(&plan, &base, interrupt, options).await;
    if let Some(e) = embedded {
        e.shutdown().await;
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("downtime: drill {:?} did not start: {e}", plan.name);
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &args.report {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json + "\n") {
                    eprintln!("downtime: cannot write report {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            Err(e) => eprintln!("downtime: cannot encode the report: {e}"),
        }
    }
    if let Some(path) = &args.junit
        && let Err(e) = std::fs::write(path, report.junit())
    {
        eprintln!(
            "downtime: cannot write JUnit report {}: {e}",
            path.display()
        );
        return ExitCode::from(2);
    }
    ExitCode::from(report.exit_code())
}

/// `drill runs [ID]`: `GET /drills/runs` (a table) or `GET /drills/runs/{id}`.
async fn runs(args: RunsArgs, host: &str) -> ExitCode {
    let server = match args.server.as_deref() {
        Some(s) => s,
        None if host.trim().is_empty() => crate::client::DEFAULT_SERVER_URL,
        None => host,
    };
    let base = if server.contains("://") {
        server.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", server.trim_end_matches('/'))
    };
    let url = match args.id {
        Some(id) => format!("{base}/drills/runs/{id}"),
        None => format!("{base}/drills/runs"),
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("downtime-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    let answer = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("downtime: cannot reach {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        eprintln!(
            "downtime: GET {url}: HTTP {}: {}",
            status.as_u16(),
            body.trim()
        );
        return ExitCode::FAILURE;
    }
    let mut out = String::new();
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if args.json {
        out.push_str(body.trim_end());
        out.push('\n');
    } else if args.id.is_some() {
        out.push_str(&run_text(&value));
        if let Some(report) = value.get("report") {
            out.push_str(&serde_json::to_string_pretty(report).unwrap_or_default());
            out.push('\n');
        }
    } else {
        let list = value.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            out.push_str("no scheduled drill runs\n");
        }
        for run in &list {
            out.push_str(&run_text(run));
        }
    }
    // A closed pipe (`| head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, out.as_bytes());
    let _ = std::io::Write::flush(&mut stdout);
    ExitCode::SUCCESS
}

/// One line per run: id, due time, schedule, drill, status and reason.
fn run_text(run: &serde_json::Value) -> String {
    let field = |k: &str| {
        run.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-")
    };
    let id = run
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let mut line = format!(
        "#{id:<4} {}  {:<20} {:<24} {}",
        field("due_at"),
        field("schedule"),
        field("drill"),
        field("status")
    );
    if let Some(reason) = run.get("reason").and_then(serde_json::Value::as_str) {
        line.push_str(&format!("  ({reason})"));
    }
    line.push('\n');
    line
}
