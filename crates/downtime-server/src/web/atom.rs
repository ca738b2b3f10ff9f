//! The Atom feed of incidents and maintenances (`/status/feed.atom`, RFC 4287).
//!
//! One entry per incident, updated whenever its timeline grows; the content is the timeline
//! as HTML. User text is escaped twice where it ends up inside HTML content: once as HTML,
//! then the HTML as XML text.

use std::fmt::Write;

use super::clock;
use super::model::{Incident, IncidentKind, StatusSnapshot};
use super::page::status_words;

/// Most entries in the feed (newest first).
pub const FEED_ENTRIES: usize = 50;

/// Escapes text for XML character data and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Characters XML 1.0 forbids are dropped rather than producing an unreadable feed.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn content(snapshot: &StatusSnapshot, i: &Incident) -> String {
    // HTML of the timeline, with every user text HTML-escaped.
    let mut html = String::new();
    let names: Vec<&str> = i
        .components
        .iter()
        .map(|id| snapshot.component_name(id))
        .collect();
    if !names.is_empty() {
        let _ = write!(html, "<p>Affected: {}</p>", escape(&names.join(", ")));
    }
    if let (Some(from), IncidentKind::Maintenance) = (i.scheduled_for, i.kind) {
        let _ = write!(html, "<p>Scheduled from {}", clock::human(from));
        if let Some(until) = i.scheduled_until {
            let _ = write!(html, " to {}", clock::human(until));
        }
        html.push_str("</p>");
    }
    for u in &i.updates {
        let _ = write!(
            html,
            "<p><small>{}</small><br><strong>{}</strong> - {}</p>",
            clock::human(u.at),
            escape(&status_words(&u.status)),
            escape(&u.body)
        );
    }
    html
}

/// Renders the feed; `status_url` is the page the entries link to.
pub fn render(snapshot: &StatusSnapshot, status_url: &str) -> String {
    let updated = snapshot
        .incidents
        .iter()
        .map(|i| i.updated_at)
        .max()
        .unwrap_or(snapshot.now);
    let mut xml = String::with_capacity(1024 + snapshot.incidents.len() * 1024);
    xml.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    xml.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en\">\n");
    let _ = writeln!(
        xml,
        "  <id>{}</id>\n  <title>downtime status: incidents</title>\n  <updated>{}</updated>",
        escape(&format!("{status_url}#incidents")),
        clock::rfc3339(updated)
    );
    let _ = writeln!(
        xml,
        "  <link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
        escape(status_url)
    );
    xml.push_str("  <author><name>downtime</name></author>\n");
    xml.push_str("  <generator>downtime</generator>\n");
    for i in snapshot.incidents.iter().take(FEED_ENTRIES) {
        let kind = match i.kind {
            IncidentKind::Incident => "incident",
            IncidentKind::Maintenance => "maintenance",
        };
        let _ = write!(
            xml,
            "  <entry>\n    <id>urn:downtime:{kind}:{}</id>\n    <title type=\"text\">{}</title>\n",
            escape(&i.id),
            escape(&format!("[{}] {}", status_words(&i.status), i.title))
        );
        let _ = write!(
            xml,
            "    <published>{}</published>\n    <updated>{}</updated>\n",
            clock::rfc3339(i.created_at),
            clock::rfc3339(i.updated_at)
        );
        let _ = writeln!(
            xml,
            "    <link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
            escape(&format!("{status_url}#incident-{}", i.id))
        );
        let _ = writeln!(xml, "    <category term=\"{kind}\"/>");
        let _ = write!(
            xml,
            "    <content type=\"html\">{}</content>\n  </entry>\n",
            escape(&content(snapshot, i))
        );
    }
    xml.push_str("</feed>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
