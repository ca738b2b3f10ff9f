//! A real headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (`/usr/bin/chromedriver`), through the `fantoccini` client.
//!
//! [`Browser::start`] returns `None` (after printing why) when either program is missing,
//! unless `DOWNTIME_REQUIRE_BROWSER=1`, where it panics: CI installs both and must not skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use tokio::process::{Child, Command};

/// A browser session; chromedriver (and with it Chromium) is killed on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: Child,
    profile: PathBuf,
}

fn program(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.is_file().then_some(path)
}

fn skip_or_fail(why: &str) -> Option<Browser> {
    if std::env::var("DOWNTIME_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "{why} (DOWNTIME_REQUIRE_BROWSER=1; install with: apt-get install chromium chromium-driver)"
        );
    }
    eprintln!(
        "SKIPPED browser test: {why}; install with `apt-get install chromium chromium-driver` \
         (set DOWNTIME_REQUIRE_BROWSER=1 to make this a failure)"
    );
    None
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium with a window of `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let Some(chromium) = program("DOWNTIME_CHROMIUM", "/usr/bin/chromium") else {
            return skip_or_fail("no Chromium at /usr/bin/chromium (or $DOWNTIME_CHROMIUM)");
        };
        let Some(driver) = program("DOWNTIME_CHROMEDRIVER", "/usr/bin/chromedriver") else {
            return skip_or_fail(
                "no chromedriver at /usr/bin/chromedriver (or $DOWNTIME_CHROMEDRIVER)",
            );
        };
        // Port 0: chromedriver binds a port the kernel picks and says which, so no other
        // test's server can take the port between choosing and binding it.
        let mut child = Command::new(&driver)
            .arg("--port=0")
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let stdout = child.stdout.take().expect("chromedriver stdout");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromedriver did not say which port it listens on in time");
        // Keep reading what it prints, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile =
            std::env::temp_dir().join(format!("downtime-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let caps = match caps {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}"));
        Some(Browser {
            client,
            _driver: child,
            profile,
        })
    }

    /// Evaluates `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns `true`, for at most `limit`.
    pub async fn wait_for(&self, limit: Duration, what: &str, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script, vec![]).await == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a PNG screenshot of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact directory");
        }
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
