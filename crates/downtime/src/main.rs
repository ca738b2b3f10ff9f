//! The `downtime` binary: `serve` runs the server; every other command is a client of its API.

mod ca;
mod client;
mod drill;
mod drill_preflight;
mod serve;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a proxy allocates and frees many short-lived
/// buffers on several threads, and glibc keeps what busy threads freed in per-thread
/// arenas (hundreds of MiB after a latency toxic on 1,000 streaming connections), while
/// mimalloc returns freed pages to the system and allocates small objects faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{ArgAction, Parser};

/// Rehearse third-party outages: a Toxiproxy-compatible fault proxy that also speaks HTTP.
///
/// The client commands take the same names, aliases and flags as toxiproxy-cli. As there,
/// `-h` is `--host` (the server to talk to), so help is `--help` only.
#[derive(Debug, Parser)]
#[command(name = "downtime", version, disable_help_flag = true)]
struct Cli {
    #[command(flatten)]
    global: client::GlobalOptions,
    /// Print help (in client commands `-h` is --host, as in toxiproxy-cli).
    #[arg(long, action = ArgAction::Help, global = true, display_order = 1000)]
    help: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

/// Every command of the binary: the server, then the toxiproxy-cli compatible client.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the fault proxy and its control API.
    Serve(serve::ServeArgs),
    /// Create (once) the local certificate authority and show how to trust it.
    Ca(ca::CaArgs),
    /// Run or check a drill: an outage scenario with probes and a verdict.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    #[command(flatten)]
    Client(client::Command),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `drill run --quiet` is quiet: only errors are logged (the embedded server's warnings
    // are not the drill's output), unless LOG_LEVEL asks for more.
    let quiet =
        matches!(&cli.command, Command::Drill(drill::DrillCommand::Run(args)) if args.quiet);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "error" } else { "info" })
            }),
        )
        .with_writer(|| OneLine(std::io::stderr()))
        // Colour codes only for a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Ca(args) => ca::run(args),
        Command::Drill(command) => drill::run(command, &cli.global.host).await,
        Command::Client(command) => client::run(cli.global, command).await,
    }
}

/// Writes each log event as exactly one line: the fmt layer hands over a whole formatted
/// event in one `write_all`, and any line break or other control character inside it (user
/// text such as a proxy's `listen`, shown through `%` fields or messages) is escaped, so no
/// request can start a forged log line. The event's own final newline is kept.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body
            .iter()
            .any(|b| b.is_ascii_control() && *b != b'\t' && *b != 0x1b)
        {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                // Tab is harmless; ESC is left for the colour codes of the fmt layer (which
                // escapes ESC in field values itself).
                b'\t' | 0x1b => out.push(b),
                b if b.is_ascii_control() => {
                    out.extend_from_slice(format!("\\x{b:02x}").as_bytes())
                }
                b => out.push(b),
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn log_events_stay_on_one_line() {
        use std::io::Write;
        let mut line = OneLine(Vec::new());
        line.write_all(b"WARN bad listen \"1:2\nINFO forged\r\x07\"\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(line.0).unwrap(),
            "WARN bad listen \"1:2\\nINFO forged\\r\\x07\"\n"
        );
        let mut plain = OneLine(Vec::new());
        plain.write_all(b"INFO fine\tline\n").unwrap();
        assert_eq!(plain.0, b"INFO fine\tline\n");
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
