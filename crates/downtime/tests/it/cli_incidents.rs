//! The `incident` commands (open, update, show, resolve, edit, list, schedule), run as the
//! real binary against a real `downtime serve` on a free 127.0.0.1 port with its history in
//! a SQLite file of its own, under the target's temporary directory.
//!
//! Every wait is bounded: server start-up by `STARTUP`, each CLI run by the CLI's own
//! request timeout. The only processes killed are the servers these tests start, through
//! their own handles.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Run, Server, cli, run};

/// A server whose history lives in its own SQLite file; the file goes with it.
struct Stored {
    server: Option<Server>,
    dir: PathBuf,
}

impl Stored {
    /// Starts a server on a fresh database named after the test.
    fn start(test: &str) -> Stored {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cli-incidents-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("history.db");
        let server = Server::start_with(&[], &["--db", db.to_str().unwrap()]);
        Stored {
            server: Some(server),
            dir,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        self.server().run(args)
    }

    /// `incident show --json ID`, parsed.
    fn incident(&self, id: &str) -> Value {
        self.run(&["incident", "show", "--json", id]).ok().json()
    }

    /// `incident open ...`, returning the new id from the human output.
    fn open(&self, args: &[&str]) -> String {
        let mut full = vec!["incident", "open"];
        full.extend_from_slice(args);
        let out = self.run(&full).ok();
        let rest = out
            .stdout
            .strip_prefix("Opened incident ")
            .unwrap_or_else(|| panic!("{}", out.stdout));
        rest.split(':').next().unwrap().to_owned()
    }

    /// A raw `GET` on the API, returning the body: the ground truth for `--json`.
    fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.server().port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: cli-incidents-test\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        body.to_owned()
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        // Stop the server before removing the database it has open.
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The row of `list` output for incident `id`, if any.
fn row<'a>(list: &'a str, id: &str) -> Option<&'a str> {
    list.lines()
        .find(|line| line.split_whitespace().next() == Some(id))
}

/// Position of `needle` in `haystack`, failing the test with the whole text if absent.
fn at(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
}

#[test]
fn open_update_show_resolve_and_list() {
    let stored = Stored::start("lifecycle");
    let empty = stored.run(&["incident", "list"]).ok();
    assert!(
        empty.stdout.starts_with("no incidents or maintenances; "),
        "{}",
        empty.stdout
    );

    let id = stored.open(&[
        "Payments API errors",
        "--impact",
        "major",
        "--component",
        "payments",
        "-c",
        "endpoint:checkout",
        "--message",
        "We are looking into it.",
    ]);
    let other = stored.open(&["Search is slow"]);

    let list = stored.run(&["incident", "list"]).ok().stdout;
    assert!(list.starts_with("ID  KIND "), "{list}");
    let line = row(&list, &id).unwrap_or_else(|| panic!("{list}"));
    for cell in [
        "incident",
        "investigating",
        "major",
        "Payments API errors",
        "proxy:payments, endpoint:checkout",
    ] {
        assert!(line.contains(cell), "{cell:?} not in {line:?}");
    }
    // Newest first; the created column is a UTC date and minute.
    assert!(at(&list, "Search is slow") < at(&list, "Payments API errors"));
    let created = line.split_whitespace().rev().take(2).collect::<Vec<_>>();
    assert_eq!(created[0].len(), 5, "{line}");
    assert_eq!(created[1].len(), 10, "{line}");
    let other_line = row(&list, &other).unwrap();
    assert!(
        other_line.contains("investigating") && other_line.contains("minor"),
        "{other_line}"
    );

    let updated = stored
        .run(&[
            "incident",
            "update",
            &id,
            "--status",
            "identified",
            "--message",
            "A bad deploy; rolling back.",
        ])
        .ok();
    assert_eq!(
        updated.stdout,
        format!("Posted an update to incident {id} (status identified)\n")
    );
    stored
        .run(&["incident", "update", &id, "-m", "Rollback at 50%."])
        .ok();

    let show = stored.run(&["incident", "show", &id]).ok().stdout;
    assert!(
        show.contains("Title:       Payments API errors\n"),
        "{show}"
    );
    assert!(show.contains("Status:      identified\n"), "{show}");
    assert!(show.contains("Impact:      major\n"), "{show}");
    let timeline = &show[at(&show, "Timeline (oldest first):\n")..];
    let first = at(timeline, "investigating");
    let first_text = at(timeline, "We are looking into it.");
    let second = at(timeline, "identified");
    let second_text = at(timeline, "A bad deploy; rolling back.");
    let third_text = at(timeline, "Rollback at 50%.");
    assert!(
        first < first_text
            && first_text < second
            && second < second_text
            && second_text < third_text,
        "{show}"
    );

    let resolved = stored.run(&["incident", "resolve", &id]).ok();
    assert_eq!(
        resolved.stdout,
        format!("Incident {id} is now resolved: Payments API errors\n")
    );
    let incident = stored.incident(&id);
    assert_eq!(incident["status"], "resolved");
    assert!(incident["resolved_at"].is_string(), "{incident}");
    assert_eq!(incident["updates"].as_array().unwrap().len(), 4);
    assert_eq!(
        incident["updates"][0]["body"],
        "This incident has been resolved."
    );
    // Resolving twice changes nothing.
    let again = stored.run(&["incident", "resolve", &id]).ok();
    assert!(
        again
            .stdout
            .starts_with(&format!("Incident {id} is already resolved since ")),
        "{}",
        again.stdout
    );
    assert_eq!(stored.incident(&id)["updates"].as_array().unwrap().len(), 4);

    let open = stored
        .run(&["incident", "list", "--status", "open"])
        .ok()
        .stdout;
    assert!(row(&open, &id).is_none(), "{open}");
    assert!(row(&open, &other).is_some(), "{open}");
    let closed = stored
        .run(&["incident", "list", "--status", "closed"])
        .ok()
        .stdout;
    assert!(row(&closed, &id).is_some(), "{closed}");
    assert!(row(&closed, &other).is_none(), "{closed}");
    let limited = stored
        .run(&["incident", "list", "--limit", "1"])
        .ok()
        .stdout;
    assert_eq!(limited.lines().count(), 2, "{limited}");
    assert!(row(&limited, &other).is_some(), "{limited}");

    // A custom closing message, on the other incident.
    stored
        .run(&["incident", "resolve", &other, "-m", "Index rebuilt."])
        .ok();
    assert_eq!(
        stored.incident(&other)["updates"][0]["body"],
        "Index rebuilt."
    );
    let none_open = stored
        .run(&["incident", "list", "--status", "open"])
        .ok()
        .stdout;
    assert!(
        none_open.starts_with("no open incidents or maintenances; "),
        "{none_open}"
    );
}

#[test]
fn edit_changes_fields_without_adding_an_update() {
    let stored = Stored::start("edit");
    let id = stored.open(&["DB slow", "-c", "db", "-m", "Looking."]);
    let out = stored
        .run(&[
            "incident",
            "edit",
            &id,
            "--title",
            "Database slow",
            "--impact",
            "critical",
            "-c",
            "db",
            "-c",
            "cache",
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!("Edited incident {id}: Database slow (impact critical, proxy:db, proxy:cache)\n")
    );
    let incident = stored.incident(&id);
    assert_eq!(incident["title"], "Database slow");
    assert_eq!(incident["impact"], "critical");
    assert_eq!(incident["components"][1], "proxy:cache");
    assert_eq!(incident["updates"].as_array().unwrap().len(), 1);

    stored
        .run(&["incident", "edit", &id, "--clear-components"])
        .ok();
    assert_eq!(
        stored.incident(&id)["components"].as_array().unwrap().len(),
        0
    );

    // Nothing to change is a usage error; a window only fits a maintenance.
    let out = stored.run(&["incident", "edit", &id]).fails(2);
    assert!(out.stderr.contains("required arguments"), "{}", out.stderr);
    let out = stored
        .run(&["incident", "edit", &id, "--start", "+1h", "--end", "+2h"])
        .fails(1);
    assert!(
        out.stderr.starts_with(&format!(
            "downtime: edit incident {id}: HTTP 400: invalid value for scheduled: "
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn schedule_a_maintenance_and_filter_by_kind() {
    let stored = Stored::start("maintenance");
    let incident = stored.open(&["Unrelated incident"]);
    let out = stored
        .run(&[
            "incident",
            "schedule",
            "Database upgrade",
            "--start",
            "2030-01-01T09:00:00Z",
            "--end",
            "2030-01-01T13:00:00+02:00",
            "--component",
            "db",
            "--message",
            "Writes pause for ten minutes.",
        ])
        .ok();
    assert!(
        out.stdout.starts_with("Scheduled maintenance "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with(": Database upgrade, 2030-01-01 09:00 UTC to 2030-01-01 11:00 UTC\n"),
        "{}",
        out.stdout
    );
    let id = out.stdout["Scheduled maintenance ".len()..]
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let maintenance = stored.incident(&id);
    assert_eq!(maintenance["kind"], "maintenance");
    assert_eq!(maintenance["status"], "scheduled");
    assert_eq!(maintenance["impact"], "maintenance");
    assert_eq!(maintenance["components"][0], "proxy:db");
    assert_eq!(maintenance["scheduled_start"], "2030-01-01T09:00:00.000Z");
    assert_eq!(maintenance["scheduled_end"], "2030-01-01T11:00:00.000Z");
    assert_eq!(
        maintenance["updates"][0]["body"],
        "Writes pause for ten minutes."
    );

    let only = stored
        .run(&["incident", "list", "--kind", "maintenance"])
        .ok()
        .stdout;
    let line = row(&only, &id).unwrap_or_else(|| panic!("{only}"));
    assert!(line.contains("maintenance  scheduled"), "{line}");
    assert!(row(&only, &incident).is_none(), "{only}");
    let incidents = stored
        .run(&["incident", "list", "--kind", "incident"])
        .ok()
        .stdout;
    assert!(row(&incidents, &id).is_none(), "{incidents}");
    assert!(row(&incidents, &incident).is_some(), "{incidents}");

    let show = stored.run(&["incident", "show", &id]).ok().stdout;
    assert!(
        show.contains("Window:      2030-01-01 09:00 UTC to 2030-01-01 11:00 UTC\n"),
        "{show}"
    );

    // Relative times, counted from now.
    let out = stored
        .run(&[
            "incident",
            "schedule",
            "Cache flush",
            "--start",
            "+1h",
            "--end",
            "+2h",
        ])
        .ok();
    let soon = out.stdout["Scheduled maintenance ".len()..]
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let soon = stored.incident(&soon);
    assert_eq!(soon["status"], "scheduled");
    assert!(soon["scheduled_start"].as_str().unwrap() > soon["created_at"].as_str().unwrap());

    // A maintenance is closed as completed, not resolved.
    let done = stored.run(&["incident", "resolve", &id]).ok();
    assert_eq!(
        done.stdout,
        format!("Maintenance {id} is now completed: Database upgrade\n")
    );
    let maintenance = stored.incident(&id);
    assert_eq!(maintenance["status"], "completed");
    assert_eq!(
        maintenance["updates"][0]["body"],
        "The scheduled maintenance has been completed."
    );
    // Statuses are the maintenance vocabulary: the server says which ones fit.
    let out = stored
        .run(&["incident", "update", &incident, "--status", "in_progress"])
        .fails(1);
    assert!(
        out.stderr.starts_with(&format!(
            "downtime: update incident {incident}: HTTP 400: invalid value for status: "
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn json_prints_the_servers_answers() {
    let stored = Stored::start("json");
    // --json after the command.
    let opened = stored
        .run(&["incident", "open", "Queue backlog", "--json"])
        .ok();
    let incident = opened.json();
    let id = incident["id"].as_i64().unwrap().to_string();
    assert_eq!(incident["title"], "Queue backlog");
    assert_eq!(incident["status"], "investigating");
    assert_eq!(incident["updates"].as_array().unwrap().len(), 1);

    // --json before the command, and show is byte for byte the API's answer.
    let show = stored.run(&["--json", "incident", "show", &id]).ok();
    assert_eq!(
        show.stdout.trim_end(),
        stored.get(&format!("/incidents/{id}")).trim_end()
    );
    let list = stored.run(&["--json", "incident", "list"]).ok();
    assert_eq!(list.stdout.trim_end(), stored.get("/incidents").trim_end());
    assert!(list.json().is_array());
    let filtered = stored
        .run(&["incident", "list", "--kind", "maintenance", "--json"])
        .ok();
    assert_eq!(filtered.json(), Value::Array(vec![]));

    // update answers with the new update; resolve with the incident.
    let update = stored
        .run(&["incident", "update", &id, "-m", "Draining.", "--json"])
        .ok()
        .json();
    assert_eq!(update["body"], "Draining.");
    assert_eq!(update["status"], "investigating");
    let resolved = stored
        .run(&["incident", "resolve", &id, "--json"])
        .ok()
        .json();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["updates"].as_array().unwrap().len(), 3);

    // A local --host wins over the global one (which points nowhere).
    let out = Run::from(
        cli()
            .args(["--host", "127.0.0.1:1", "incident", "show", &id, "--json"])
            .args(["--host", &stored.server().url()])
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(out.json()["id"].as_i64().unwrap().to_string(), id);
}

#[test]
fn html_in_a_title_and_message_is_kept_verbatim() {
    let stored = Stored::start("html");
    let title = r#"<script>alert(1)</script> & "quotes" <img src=x onerror=alert(2)>"#;
    let message = "<b>bold</b> &amp; <i>more</i>";
    let id = stored.open(&[title, "-m", message]);
    let incident = stored.incident(&id);
    assert_eq!(incident["title"], title);
    assert_eq!(incident["updates"][0]["body"], message);
    let list = stored.run(&["incident", "list"]).ok().stdout;
    assert!(row(&list, &id).unwrap().contains(title), "{list}");
    let show = stored.run(&["incident", "show", &id]).ok().stdout;
    assert!(show.contains(&format!("Title:       {title}\n")), "{show}");
    assert!(show.contains(&format!("    {message}\n")), "{show}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    // Usage errors: nothing is sent, so no server is needed (port 1 would refuse).
    let host = "127.0.0.1:1";
    let cases: [(&[&str], &str); 9] = [
        (
            &["incident", "open", ""],
            "error: invalid value '' for '<TITLE>': must not be empty",
        ),
        (
            &["incident", "open", "   "],
            "error: invalid value '   ' for '<TITLE>': must not be empty",
        ),
        (
            &["incident", "open", "x", "--impact", "huge"],
            "error: invalid value 'huge' for '--impact <IMPACT>'",
        ),
        (
            &["incident", "open", "x", "--status", "scheduled"],
            "error: invalid value 'scheduled' for '--status <STATUS>'",
        ),
        (
            &[
                "incident", "schedule", "x", "--start", "tomorrow", "--end", "+1h",
            ],
            "error: invalid value 'tomorrow' for '--start <TIME>': expected an RFC 3339 time",
        ),
        (
            &[
                "incident", "schedule", "x", "--start", "+1h", "--end", "+5x",
            ],
            "error: invalid value '+5x' for '--end <TIME>': expected an RFC 3339 time",
        ),
        (
            &[
                "incident", "schedule", "x", "--start", "+2h", "--end", "+1h",
            ],
            "downtime: invalid value '+1h' for --end: must be after --start '+2h' (",
        ),
        (
            &["incident", "show", "abc"],
            "error: invalid value 'abc' for '<ID>': expected an incident id",
        ),
        (
            &["incident", "list", "--limit", "0"],
            "error: invalid value '0' for '--limit <N>': expected a whole number from 1 to 500",
        ),
    ];
    for (args, expected) in cases {
        let out = run(host, args).fails(2);
        assert!(
            out.stderr.starts_with(expected),
            "{args:?}: expected {expected:?}, got:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("could not reach"), "{}", out.stderr);
    }
    let out = run(host, &["incident", "update", "3"]).fails(2);
    assert!(out.stderr.contains("--message"), "{}", out.stderr);

    // Refusals from the server: exit 1 with `<what failed>: HTTP <code>: <message>`.
    let stored = Stored::start("bad-input");
    for (args, expected) in [
        (
            vec!["incident", "show", "999"],
            "downtime: show incident 999: HTTP 404: incident 999 not found\n",
        ),
        (
            vec!["incident", "update", "999", "-m", "x"],
            "downtime: update incident 999: HTTP 404: incident 999 not found\n",
        ),
        (
            vec!["incident", "resolve", "999"],
            "downtime: resolve incident 999: HTTP 404: incident 999 not found\n",
        ),
        (
            vec!["incident", "edit", "999", "--title", "x"],
            "downtime: edit incident 999: HTTP 404: incident 999 not found\n",
        ),
    ] {
        let out = stored.run(&args).fails(1);
        assert_eq!(out.stderr, expected, "{args:?}");
    }
    let long = "x".repeat(201);
    let out = stored.run(&["incident", "open", &long]).fails(1);
    assert_eq!(
        out.stderr,
        "downtime: open incident: HTTP 400: invalid value for title: must be at most 200 \
         characters, got 201\n"
    );
    // None of the refused commands created anything.
    let list = stored.run(&["incident", "list", "--json"]).ok();
    assert_eq!(list.json(), Value::Array(vec![]));
}
