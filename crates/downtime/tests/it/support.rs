//! What the CLI tests share: the binary with a clean environment, one run's output, and a
//! real `downtime serve` on a free 127.0.0.1 port, killed (only that child) on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Blocks this thread for `d`. These tests drive processes from plain threads (no async
/// runtime), the one place a blocking sleep is right; clippy bans it everywhere else.
#[allow(
    clippy::disallowed_methods,
    reason = "synchronous tests, no runtime to block"
)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// How long `downtime serve` may take to answer `GET /version`.
pub const STARTUP: Duration = Duration::from_secs(30);

// --- helpers -------------------------------------------------------------------------

/// A port nothing listens on right now (bound, read back, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one CLI run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// The CLI with a clean environment for the variables it reads.
pub fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_downtime"));
    command.env_remove("TOXIPROXY_URL").stdin(Stdio::null());
    command
}

/// Runs the CLI against `host` (`--host` before the command, as toxiproxy-cli wants).
pub fn run(host: &str, args: &[&str]) -> Run {
    cli()
        .arg("--host")
        .arg(host)
        .args(args)
        .output()
        .unwrap()
        .into()
}

// --- the real server -----------------------------------------------------------------

/// `downtime serve` on a free port, killed (only this child, by its handle) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[], &[])
    }

    /// Starts the server with extra environment variables set.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Server::start_with(env, &[])
    }

    /// Starts the server with extra environment variables and `serve` flags.
    pub fn start_with(env: &[(&str, &str)], flags: &[&str]) -> Server {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cli-serve-{}-{}.log",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = cli();
        command.env("LOG_LEVEL", "warn").envs(env.iter().copied());
        match spawn_serve(command, flags, &log) {
            Ok((child, port)) => Server { child, port, log },
            Err(e) => panic!("{e}"),
        }
    }

    /// The API address as a URL, the way TOXIPROXY_URL is usually written.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run(&self.url(), args)
    }

    /// `inspect --json`, parsed: the ground truth for what a command changed.
    pub fn proxy(&self, name: &str) -> Value {
        self.run(&["inspect", "--json", name]).ok().json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Numbers the servers one test process starts, so their logs never collide.
static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// Spawns `command serve --host 127.0.0.1 --port 0 [flags]` with stdout and stderr in `log`, reads
/// the bound port from the line the server prints, and waits until `GET /version` answers.
///
/// Port 0 lets the kernel pick: no other test can take the port between choosing and
/// binding it, and a readiness probe can never reach another test's server.
pub fn spawn_serve(
    mut command: Command,
    flags: &[&str],
    log: &Path,
) -> Result<(Child, u16), String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    command.args(["serve", "--host", "127.0.0.1", "--port", "0"]);
    // A server started in the crate's directory without `--db` would leave a history file
    // in the source tree: keep its history in memory instead.
    if command.get_current_dir().is_none() && !flags.contains(&"--db") {
        command.args(["--db", ":memory:"]);
    }
    let mut child = command
        .args(flags)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("spawning downtime serve: {e}"))?;
    let deadline = Instant::now() + STARTUP;
    let mut port = None;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if port.is_none() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            port = text.lines().find_map(|line| {
                line.strip_prefix("downtime API listening on http://127.0.0.1:")
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
        }
        if let Some(port) = port.filter(|&p| version_answers(p)) {
            return Ok((child, port));
        }
        pause(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "downtime serve did not answer GET /version within {STARTUP:?}; log:\n{text}"
    ))
}

/// Whether `GET /version` answers 200 on the port (raw HTTP/1.1, bounded by timeouts).
pub fn version_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).is_ok() && status_line.contains(" 200 ")
}
