//! Runs the suites that drive `downtime serve` with the real Toxiproxy client libraries from
//! PyPI (`toxiproxy-python`) and npm (`toxiproxy-node-client`), so `cargo test` covers them.
//!
//! They need `tests/compat/install.sh` to have run. Without it the test says so and passes,
//! unless `DOWNTIME_REQUIRE_COMPAT=1` (set by `.ci/run`), where a missing library fails.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn real_python_and_node_clients_pass() {
    let root = repo();
    let python = root.join("tests/compat/python/.venv/bin/python");
    let node = root.join("tests/compat/node/node_modules/toxiproxy-node-client");
    let required = std::env::var("DOWNTIME_REQUIRE_COMPAT").is_ok_and(|v| v == "1");
    let mut suites = Vec::new();
    if python.exists() {
        suites.push("python");
    }
    if node.exists() {
        suites.push("node");
    }
    if suites.len() < 2 {
        assert!(
            !required,
            "client libraries missing (python: {}, node: {}); run tests/compat/install.sh",
            python.exists(),
            node.exists()
        );
        eprintln!("skipping client-library suites: run tests/compat/install.sh to enable them");
        if suites.is_empty() {
            return;
        }
    }
    let status = Command::new("bash")
        .arg(root.join("tests/compat/run.sh"))
        .args(&suites)
        .env("DOWNTIME_BIN", env!("CARGO_BIN_EXE_downtime"))
        .status()
        .expect("run tests/compat/run.sh");
    assert!(status.success(), "client-library suites failed: {status}");
}
