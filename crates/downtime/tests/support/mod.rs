//! What the CLI tests share: the binary with a clean environment, one run's output, and a
//! real `downtime serve` on a free 127.0.0.1 port, killed (only that child) on drop.

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

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
        let mut last_log = String::new();
        // A freed port can be taken again before the server binds it: retry a few times.
        for attempt in 0..3 {
            let port = free_port();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "cli-serve-{}-{port}-{attempt}.log",
                std::process::id()
            ));
            let file = std::fs::File::create(&log).unwrap();
            let mut child = cli()
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(flags)
                .env("LOG_LEVEL", "warn")
                .envs(env.iter().copied())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + STARTUP;
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if version_answers(port) {
                    return Server { child, port, log };
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("downtime serve did not answer GET /version within {STARTUP:?}; log:\n{last_log}");
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
