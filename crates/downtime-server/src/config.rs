//! The startup file: our TOML, or Toxiproxy's JSON (the `/populate` body), both with toxics.
//!
//! Unlike Toxiproxy, which logs a bad file and starts without it, a bad file stops the
//! start-up with a message naming the file, the proxy and the field: a fault rehearsal that
//! silently runs without its faults is worse than one that does not run.

use std::path::Path;

use downtime_model::{ProxyConfig, ProxyRequest, Toxic, ToxicRequest};
use serde::Deserialize;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {detail}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong, with line, proxy or field where known.
    pub detail: String,
}

/// Our TOML format: `[[proxy]]` tables with optional `[[proxy.toxics]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    proxy: Vec<TomlProxy>,
    /// Scheduled drills, read by [`crate::drills::schedule::load`].
    #[serde(default, rename = "schedule")]
    _schedule: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlProxy {
    name: String,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    http: Option<downtime_model::http_options::HttpOptionsRequest>,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default)]
    tls: Option<downtime_model::tls_options::TlsOptionsRequest>,
    #[serde(default)]
    mode: Option<downtime_model::proxy::ProxyMode>,
    #[serde(default)]
    intercept: Option<Vec<String>>,
    #[serde(default)]
    toxics: Vec<TomlToxic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlToxic {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    toxicity: Option<f32>,
    #[serde(default)]
    attributes: Option<toml::Table>,
    #[serde(default, rename = "match")]
    matcher: Option<toml::Table>,
    #[serde(default)]
    first_n: Option<u64>,
    #[serde(default)]
    every_nth: Option<u64>,
    #[serde(default)]
    ttl: Option<u64>,
}

/// Reads and validates a config file into proxies with their toxics, after `${VAR}`
/// substitution (see [`read`]).
pub fn load(path: &Path) -> Result<Vec<(ProxyConfig, Vec<Toxic>)>, ConfigError> {
    let text = read(path)?;
    parse(&text, path.extension().and_then(|e| e.to_str())).map_err(|detail| ConfigError {
        path: path.display().to_string(),
        detail,
    })
}

/// The text of a config file with `${VAR}` and `${VAR:-default}` replaced from the
/// environment ([`downtime_model::substitute`]); an unset variable without a default is an
/// error naming it and its line.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let fail = |detail: String| ConfigError {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    downtime_model::substitute::substitute_env(&text).map_err(|e| fail(e.to_string()))
}

/// Parses config text; `extension` picks the format, else the first character does.
pub fn parse(
    text: &str,
    extension: Option<&str>,
) -> Result<Vec<(ProxyConfig, Vec<Toxic>)>, String> {
    let json = match extension {
        Some("json") => true,
        Some("toml") => false,
        _ => looks_like_json(text),
    };
    let requests = if json {
        serde_json::from_str::<Vec<ProxyRequest>>(text)
            .map_err(|e| format!("invalid JSON (expected an array of proxies): {e}"))?
    } else {
        let file: TomlFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.proxy
            .into_iter()
            .map(toml_to_request)
            .collect::<Result<_, _>>()?
    };
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        let label = request.name.clone().unwrap_or_default();
        let (config, toxics) = request
            .validate(Some(i + 1))
            .map_err(|e| format!("proxy {} ({label:?}): {e}", i + 1))?;
        if !names.insert(config.name.clone()) {
            return Err(format!("proxy {} ({label:?}): name is used twice", i + 1));
        }
        out.push((config, toxics));
    }
    Ok(out)
}

/// JSON starts with `{` or with `[` followed by `{` or `]`; TOML's `[table]` and `[[array]]`
/// headers start with `[` followed by a name or another `[`.
fn looks_like_json(text: &str) -> bool {
    let mut rest = text.trim_start();
    if rest.starts_with('{') {
        return true;
    }
    if let Some(after) = rest.strip_prefix('[') {
        rest = after.trim_start();
        return rest.starts_with(['{', ']']);
    }
    false
}

fn toml_to_request(p: TomlProxy) -> Result<ProxyRequest, String> {
    let toxics = p
        .toxics
        .into_iter()
        .map(|t| {
            let attributes = t
                .attributes
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| format!("proxy {:?}: toxic attributes: {e}", p.name))?;
            let matcher = t
                .matcher
                .map(|m| {
                    serde_json::to_value(m)
                        .map_err(|e| e.to_string())
                        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
                })
                .transpose()
                .map_err(|e| format!("proxy {:?}: toxic match: {e}", p.name))?;
            Ok(ToxicRequest {
                name: t.name,
                kind: Some(t.kind),
                stream: t.stream,
                toxicity: t.toxicity,
                attributes,
                matcher,
                first_n: t.first_n,
                every_nth: t.every_nth,
                ttl: t.ttl,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ProxyRequest {
        name: Some(p.name),
        listen: p.listen,
        upstream: p.upstream,
        enabled: p.enabled,
        toxics: Some(toxics),
        protocol: p.protocol,
        http: p.http,
        max_connections: p.max_connections,
        tls: p.tls,
        mode: p.mode,
        intercept: p.intercept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_toxics() {
        let text = r#"
[[proxy]]
name = "redis"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:6379"

[[proxy.toxics]]
type = "latency"
attributes = { latency = 100, jitter = 5 }
"#;
        let parsed = parse(text, Some("toml")).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1[0].kind.attribute("latency"), 100);
    }

    #[test]
    fn http_stand_in_with_faults() {
        let text = r#"
[[proxy]]
name = "platform-api"
protocol = "http"
listen = "127.0.0.1:0"

[[proxy.toxics]]
type = "status"
attributes = { status = 500, body = { id = "boom" } }
match = { method = "GET", path = "/apps/*" }
first_n = 2
"#;
        let parsed = parse(text, Some("toml")).unwrap();
        assert_eq!(parsed[0].0.protocol, downtime_model::Protocol::Http);
        assert_eq!(parsed[0].0.upstream, "");
        assert_eq!(parsed[0].1[0].bounds.first_n, Some(2));
    }

    #[test]
    fn variables_are_substituted_with_their_line_in_errors() {
        let dir = std::env::temp_dir().join(format!("downtime-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vars.toml");
        std::fs::write(
            &path,
            "# ${NOT_SET_ANYWHERE} in a comment\n[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:${DOWNTIME_TEST_UNSET_PORT:-5080}\"\nupstream = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(load(&path).unwrap()[0].0.listen, "127.0.0.1:5080");
        std::fs::write(
            &path,
            "[[proxy]]\nname = \"a\"\nupstream = \"${DOWNTIME_TEST_UNSET_UPSTREAM}\"\n",
        )
        .unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("DOWNTIME_TEST_UNSET_UPSTREAM"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn toxiproxy_json_with_toxics() {
        let text = r#"[{"name":"a","listen":"127.0.0.1:0","upstream":"127.0.0.1:1",
            "toxics":[{"type":"bandwidth","attributes":{"rate":10}}]}]"#;
        let parsed = parse(text, None).unwrap();
        assert_eq!(parsed[0].1[0].name, "bandwidth_downstream");
    }

    #[test]
    fn errors_name_the_place() {
        let err = parse(
            "[[proxy]]\nname = \"a\"\nupstream = \"x:1\"\nlisen = \"oops\"\n",
            Some("toml"),
        )
        .unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        let err = parse(r#"[{"name":"a"}]"#, Some("json")).unwrap_err();
        assert_eq!(
            err,
            "proxy 1 (\"a\"): missing required field: upstream at proxy 1"
        );
        let err = parse(
            "[[proxy]]\nname = \"a\"\nupstream = \"x:1\"\n[[proxy.toxics]]\ntype = \"latency\"\nattributes = { latency = -3 }\n",
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("attributes.latency") && err.contains("-3"),
            "{err}"
        );
        let err = parse(
            "[{\"name\":\"a\",\"upstream\":\"x:1\"},{\"name\":\"a\",\"upstream\":\"x:2\"}]",
            None,
        )
        .unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
