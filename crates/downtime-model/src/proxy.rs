//! Proxy configuration and the JSON bodies that create or change one.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::http_options::{HttpOptions, HttpOptionsRequest};
use crate::tls_options::{TlsOptions, TlsOptionsRequest};
use crate::toxic::{Toxic, ToxicRequest};

/// The stored configuration of a proxy, without its live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyConfig {
    /// Unique, immutable name.
    pub name: String,
    /// Address to listen on; rewritten to the bound address once started.
    pub listen: String,
    /// `host:port` dialled for each client; host names are resolved on every dial.
    pub upstream: String,
    /// Whether the proxy accepts connections.
    pub enabled: bool,
    /// `tcp` (Toxiproxy's kind) or `http`; rendered only for HTTP proxies so stock clients
    /// see the objects they know.
    #[serde(skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// How an HTTP proxy forwards; `None` for TCP proxies (and then not rendered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOptions>,
    /// Most client connections open at once; `None` means [`DEFAULT_MAX_CONNECTIONS`]
    /// (rendered only when set). Past it a TCP proxy stops accepting (clients wait in the
    /// backlog) and an HTTP proxy answers 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// TLS termination (HTTP proxies only); rendered only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// `forward`: an `HTTPS_PROXY` for apps (rendered only then); absent: a reverse proxy
    /// in front of `upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProxyMode>,
    /// Forward mode: host patterns whose HTTPS is intercepted (TLS terminated with a leaf
    /// from the local CA, HTTP faults applied); others are tunnelled untouched. `None`
    /// intercepts every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intercept: Option<Vec<String>>,
}

/// How an HTTP proxy finds where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// In front of one upstream (the default).
    Reverse,
    /// A forward proxy (`HTTP_PROXY`/`HTTPS_PROXY`): plain requests in absolute form and
    /// `CONNECT` tunnels, to any host.
    Forward,
}

/// Connections a proxy keeps open at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16_384;
/// Largest accepted `max_connections`.
pub const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;

impl ProxyConfig {
    /// The connection cap in effect.
    pub fn connection_cap(&self) -> u32 {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }
}

/// What a proxy speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Bytes: TCP toxics only.
    #[default]
    Tcp,
    /// HTTP/1.1 and HTTP/2: TCP toxics plus HTTP faults; the upstream is optional
    /// (stand-in mode).
    Http,
}

impl Protocol {
    /// Whether this is plain TCP (the default, left out of JSON).
    pub fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }

    fn parse(text: &str) -> Result<Self, Error> {
        match text.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Protocol::Tcp),
            "http" => Ok(Protocol::Http),
            _ => Err(Error::invalid(
                "protocol",
                format!("expected \"tcp\" or \"http\", got {text:?}"),
            )),
        }
    }
}

/// A proxy as the API shows it: its configuration followed by its toxics, upstream first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyView {
    /// Name, listen, upstream and enabled, in Toxiproxy's field order.
    #[serde(flatten)]
    pub config: ProxyConfig,
    /// Upstream-direction toxics then downstream ones, each in insertion order.
    pub toxics: Vec<Toxic>,
}

/// Checks the upstream of a proxy speaking `protocol`: `host:port`, or empty for an HTTP
/// proxy (a stand-in).
pub fn check_upstream_for(protocol: Protocol, upstream: &str) -> Result<(), Error> {
    if protocol == Protocol::Http {
        if upstream.is_empty() {
            return Ok(());
        }
        let (_, address) = split_scheme(upstream);
        return check_upstream("upstream", address);
    }
    check_upstream("upstream", upstream)
}

/// Whether `pattern` is a host glob: letters, digits, `-`, `.` and `*`.
pub fn valid_host_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 253
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
}

/// An HTTP proxy's upstream as (uses TLS, `host:port`): `https://host:port` means TLS,
/// `http://host:port` or a bare `host:port` plain HTTP.
pub fn split_scheme(upstream: &str) -> (bool, &str) {
    if let Some(rest) = upstream.strip_prefix("https://") {
        (true, rest.trim_end_matches('/'))
    } else if let Some(rest) = upstream.strip_prefix("http://") {
        (false, rest.trim_end_matches('/'))
    } else {
        (false, upstream)
    }
}

/// Checks that `upstream` looks like `host:port` with a numeric port.
pub fn check_upstream(field: &str, upstream: &str) -> Result<(), Error> {
    let bad = || Error::invalid(field, format!("expected host:port, got {upstream:?}"));
    let (host, port) = upstream.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// The body of `POST /proxies` and one element of `POST /populate`.
///
/// Beyond Toxiproxy, `toxics` may list toxics created atomically with the proxy.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyRequest {
    /// Proxy name (required).
    #[serde(default)]
    pub name: Option<String>,
    /// Listen address; empty means all interfaces on a random port.
    #[serde(default)]
    pub listen: Option<String>,
    /// Upstream `host:port` (required).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Defaults to true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Toxics to create with the proxy, in order.
    #[serde(default)]
    pub toxics: Option<Vec<ToxicRequest>>,
    /// `tcp` (default) or `http`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// HTTP options (HTTP proxies only).
    #[serde(default)]
    pub http: Option<HttpOptionsRequest>,
    /// Most client connections at once (1 to [`MAX_CONNECTIONS_LIMIT`]).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// TLS termination (HTTP proxies only).
    #[serde(default)]
    pub tls: Option<TlsOptionsRequest>,
    /// `reverse` (default) or `forward`.
    #[serde(default)]
    pub mode: Option<ProxyMode>,
    /// Forward mode: host patterns to intercept (default all).
    #[serde(default)]
    pub intercept: Option<Vec<String>>,
}

impl ProxyRequest {
    /// Validates the request; `index` is the 1-based position in a populate body.
    pub fn validate(self, index: Option<usize>) -> Result<(ProxyConfig, Vec<Toxic>), Error> {
        let missing = |field| match index {
            Some(index) => Error::MissingFieldAt { field, index },
            None => Error::MissingField(field),
        };
        let name = self
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| missing("name"))?;
        let forward = self.mode == Some(ProxyMode::Forward);
        // A forward proxy speaks HTTP whatever `protocol` says (unless it says tcp).
        let protocol = match (forward, self.protocol.as_deref()) {
            (true, None | Some("")) => Protocol::Http,
            (_, text) => Protocol::parse(text.unwrap_or_default())?,
        };
        if forward {
            if protocol != Protocol::Http {
                return Err(Error::invalid(
                    "mode",
                    "a forward proxy speaks HTTP; drop \"protocol\": \"tcp\"",
                ));
            }
            if self.upstream.as_deref().is_some_and(|u| !u.is_empty()) {
                return Err(Error::invalid(
                    "upstream",
                    "a forward proxy has no upstream: each request names its host",
                ));
            }
        } else if self.intercept.is_some() {
            return Err(Error::invalid(
                "intercept",
                "only a forward proxy intercepts (\"mode\": \"forward\")",
            ));
        }
        if let Some(patterns) = &self.intercept
            && let Some(bad) = patterns.iter().find(|p| !valid_host_pattern(p))
        {
            return Err(Error::invalid(
                "intercept",
                format!("{bad:?} is not a host pattern (letters, digits, '-', '.', '*')"),
            ));
        }
        let upstream = match self.upstream.filter(|u| !u.is_empty()) {
            Some(u) => {
                check_upstream_for(protocol, &u)?;
                u
            }
            // An HTTP proxy without upstream is a stand-in answering from its faults.
            None if protocol == Protocol::Http => String::new(),
            None => return Err(missing("upstream")),
        };
        let http = match (protocol, self.http) {
            (Protocol::Http, options) => {
                Some(options.unwrap_or_default().apply(HttpOptions::default())?)
            }
            (Protocol::Tcp, Some(_)) => {
                return Err(Error::invalid(
                    "http",
                    "HTTP options need \"protocol\": \"http\"",
                ));
            }
            (Protocol::Tcp, None) => None,
        };
        let listen = self.listen.unwrap_or_default();
        let tls = match (protocol, self.tls) {
            (_, None) => None,
            (Protocol::Http, Some(t)) => Some(t.validate(&listen)?),
            (Protocol::Tcp, Some(_)) => {
                return Err(Error::invalid("tls", "TLS needs \"protocol\": \"http\""));
            }
        };
        if let Some(n) = self.max_connections
            && !(1..=MAX_CONNECTIONS_LIMIT).contains(&n)
        {
            return Err(Error::invalid(
                "max_connections",
                format!("expected 1 to {MAX_CONNECTIONS_LIMIT}, got {n}"),
            ));
        }
        let mut toxics: Vec<Toxic> = Vec::new();
        for (i, request) in self.toxics.unwrap_or_default().into_iter().enumerate() {
            let toxic = request
                .into_toxic(|n| toxics.iter().any(|t| t.name == n))
                .map_err(|e| match e {
                    Error::InvalidValue { field, detail } => Error::InvalidValue {
                        field: format!("toxics[{i}].{field}"),
                        detail,
                    },
                    other => other,
                })?;
            if toxic.kind.is_http() && protocol != Protocol::Http {
                return Err(Error::invalid(
                    format!("toxics[{i}].type"),
                    format!(
                        "{} is an HTTP fault; the proxy needs \"protocol\": \"http\"",
                        toxic.kind.type_name()
                    ),
                ));
            }
            toxics.push(toxic);
        }
        Ok((
            ProxyConfig {
                name,
                listen,
                upstream,
                enabled: self.enabled.unwrap_or(true),
                protocol,
                http,
                max_connections: self.max_connections,
                tls,
                mode: forward.then_some(ProxyMode::Forward),
                intercept: self.intercept,
            },
            toxics,
        ))
    }
}

/// The body of a proxy update: absent fields keep their value; `name` is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyPatch {
    /// New listen address.
    #[serde(default)]
    pub listen: Option<String>,
    /// New upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> ProxyRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn missing_fields_use_catalogue_texts() {
        assert_eq!(
            req(json!({"upstream": "a:1"})).validate(None).unwrap_err(),
            Error::MissingField("name")
        );
        assert_eq!(
            req(json!({"name": "x", "upstream": ""}))
                .validate(Some(3))
                .unwrap_err()
                .to_string(),
            "missing required field: upstream at proxy 3"
        );
    }

    #[test]
    fn enabled_defaults_to_true_and_toxics_are_validated() {
        let (cfg, toxics) = req(json!({"name": "x", "upstream": "localhost:6379",
            "toxics": [{"type": "latency", "attributes": {"latency": 5}}]}))
        .validate(None)
        .unwrap();
        assert!(cfg.enabled);
        assert_eq!(toxics.len(), 1);
        let err = req(json!({"name": "x", "upstream": "a:1",
            "toxics": [{"type": "noop"}, {"type": "noop"}]}))
        .validate(None)
        .unwrap_err();
        assert_eq!(err, Error::ToxicExists);
    }

    #[test]
    fn upstream_must_be_host_and_port() {
        for bad in ["nonsense", "host:", ":80", "host:99999", "host:http"] {
            let err = req(json!({"name": "x", "upstream": bad}))
                .validate(None)
                .unwrap_err();
            assert!(err.to_string().contains("upstream"), "{bad}: {err}");
            assert_eq!(err.status(), 400);
        }
        assert!(check_upstream("upstream", "[::1]:80").is_ok());
    }
}
