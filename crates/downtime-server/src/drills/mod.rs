//! Drills: declarative outage scenarios run against a downtime API.
//!
//! A drill is a timed sequence of operations a user could also issue through the API
//! (create a fault, change its probability, remove it), plus probes of the app under test
//! and a verdict. The runner only speaks HTTP to the API, so the same code drives a remote
//! server or one started in-process ([`embedded`]).

mod cleanup;
mod client;
mod faults;
pub mod probes;
mod progress;
pub mod report;
pub mod runner;
pub mod schedule;
mod state;
pub mod timeline;
pub mod verdict;

use std::time::Duration;

use crate::{ServeError, ServeOptions};

/// A server started inside this process for `server = "embedded"` drills.
pub struct Embedded {
    /// Base URL of its API.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Starts a server on 127.0.0.1 with a random port, seeded for reproducible faults.
pub async fn embedded(seed: u64) -> std::io::Result<Embedded> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        seed: Some(seed),
        grace: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let task = tokio::spawn(crate::run(listener, options, async move {
        let _ = stopped.await;
    }));
    Ok(Embedded {
        base,
        stop: Some(stop),
        task,
    })
}

impl Embedded {
    /// Stops the embedded server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
