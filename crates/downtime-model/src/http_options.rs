//! How an HTTP proxy treats the requests it forwards: headers, upstream protocol, limits.
//!
//! The defaults are what a reverse proxy in front of an app should do without being told:
//! keep the client's `Host`, say who the client was in `X-Forwarded-*`/`Forwarded`, bring
//! redirects that point at the upstream back through the proxy, and accept heads as large
//! as the servers behind it accept.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Default and hard maximum of the request target (path and query) in bytes. The maximum
/// is hyper's parser ceiling; longer targets get a bodiless 414 from hyper itself.
pub const DEFAULT_MAX_URI_BYTES: u32 = 65_534;
/// Default size of the request head (request line and header lines) in bytes.
pub const DEFAULT_MAX_HEAD_BYTES: u32 = 64 * 1024;
/// Largest accepted `max_head_bytes` (the per-connection read buffer of a head).
pub const MAX_HEAD_BYTES_LIMIT: u32 = 1024 * 1024;
/// Default number of header lines in a request.
pub const DEFAULT_MAX_HEADERS: u32 = 200;
/// Largest accepted `max_headers`.
pub const MAX_HEADERS_LIMIT: u32 = 1000;

/// Default time a client has to send a whole request head, from accept and again after
/// each answer (so it is also the idle keep-alive timeout), like nginx's
/// `client_header_timeout` order.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default time a request body may go without a byte before the request gets a 408.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
/// Largest accepted header and body timeout (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// Which `Host` the upstream sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostHeader {
    /// The client's own `Host` (what a reverse proxy normally does).
    #[default]
    Client,
    /// The upstream's `host:port` (for upstreams that route by their own name).
    Upstream,
}

/// Which HTTP version requests to the upstream use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/2 with prior knowledge for gRPC calls that arrived over HTTP/2 (gRPC needs it
    /// end to end), HTTP/1.1 for everything else (which every server speaks).
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 with prior knowledge.
    Http2,
}

/// The HTTP options of a proxy, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpOptions {
    /// Which `Host` the upstream sees.
    pub host: HostHeader,
    /// Whether `X-Forwarded-For/-Proto/-Host` and `Forwarded` are added.
    pub forwarded: bool,
    /// Whether `Location`/`Content-Location` naming the upstream are rewritten to the proxy.
    pub rewrite_location: bool,
    /// Which version requests to the upstream use.
    pub upstream_protocol: UpstreamProtocol,
    /// Longest request target accepted (414 beyond).
    pub max_uri_bytes: u32,
    /// Largest request head accepted (431 beyond).
    pub max_head_bytes: u32,
    /// Most header lines accepted (431 beyond).
    pub max_headers: u32,
    /// Milliseconds a client has to send a request head (connection closed after).
    pub header_timeout_ms: u64,
    /// Milliseconds a request body may go without a byte (408 after).
    pub body_timeout_ms: u64,
    /// TLS to the upstream (also implied by an `https://` upstream).
    pub upstream_tls: bool,
    /// A CA file (PEM) trusted for this proxy's upstream, besides the system's roots and
    /// the server's `--extra-ca` files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<String>,
    /// Do not verify the upstream's certificate (shown here and logged at start, since it
    /// makes the proxy trust anyone on the path).
    pub upstream_insecure: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            host: HostHeader::Client,
            forwarded: true,
            rewrite_location: true,
            upstream_protocol: UpstreamProtocol::Auto,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT_MS,
            upstream_tls: false,
            upstream_ca: None,
            upstream_insecure: false,
        }
    }
}

/// The `http` object of a proxy request: absent fields take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptionsRequest {
    /// `client` (default) or `upstream`.
    #[serde(default)]
    pub host: Option<HostHeader>,
    /// Defaults to true.
    #[serde(default)]
    pub forwarded: Option<bool>,
    /// Defaults to true.
    #[serde(default)]
    pub rewrite_location: Option<bool>,
    /// `auto` (default), `http1` or `http2`.
    #[serde(default)]
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// At most [`DEFAULT_MAX_URI_BYTES`].
    #[serde(default)]
    pub max_uri_bytes: Option<u32>,
    /// At most [`MAX_HEAD_BYTES_LIMIT`].
    #[serde(default)]
    pub max_head_bytes: Option<u32>,
    /// At most [`MAX_HEADERS_LIMIT`].
    #[serde(default)]
    pub max_headers: Option<u32>,
    /// 100 ms to [`MAX_TIMEOUT_MS`].
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    /// 100 ms to [`MAX_TIMEOUT_MS`].
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    /// Defaults to false (true for an `https://` upstream).
    #[serde(default)]
    pub upstream_tls: Option<bool>,
    /// A PEM file.
    #[serde(default)]
    pub upstream_ca: Option<String>,
    /// Defaults to false.
    #[serde(default)]
    pub upstream_insecure: Option<bool>,
}

impl HttpOptionsRequest {
    /// Merges the request over `base`, checking every limit against its maximum.
    pub fn apply(&self, base: HttpOptions) -> Result<HttpOptions, Error> {
        let base = &base;
        let limit = |field: &str, value: Option<u32>, current: u32, min: u32, max: u32| {
            let v = value.unwrap_or(current);
            if v < min || v > max {
                return Err(Error::invalid(
                    format!("http.{field}"),
                    format!("expected {min} to {max}, got {v}"),
                ));
            }
            Ok(v)
        };
        let timeout = |field: &str, value: Option<u64>, current: u64| {
            let v = value.unwrap_or(current);
            if !(100..=MAX_TIMEOUT_MS).contains(&v) {
                return Err(Error::invalid(
                    format!("http.{field}"),
                    format!("expected 100 to {MAX_TIMEOUT_MS} (ms), got {v}"),
                ));
            }
            Ok(v)
        };
        Ok(HttpOptions {
            header_timeout_ms: timeout(
                "header_timeout_ms",
                self.header_timeout_ms,
                base.header_timeout_ms,
            )?,
            body_timeout_ms: timeout(
                "body_timeout_ms",
                self.body_timeout_ms,
                base.body_timeout_ms,
            )?,
            upstream_tls: self.upstream_tls.unwrap_or(base.upstream_tls),
            upstream_ca: match &self.upstream_ca {
                Some(path) if path.is_empty() => {
                    return Err(Error::invalid(
                        "http.upstream_ca",
                        "expected a PEM file, got \"\"",
                    ));
                }
                Some(path) => Some(path.clone()),
                None => base.upstream_ca.clone(),
            },
            upstream_insecure: self.upstream_insecure.unwrap_or(base.upstream_insecure),
            host: self.host.unwrap_or(base.host),
            forwarded: self.forwarded.unwrap_or(base.forwarded),
            rewrite_location: self.rewrite_location.unwrap_or(base.rewrite_location),
            upstream_protocol: self.upstream_protocol.unwrap_or(base.upstream_protocol),
            max_uri_bytes: limit(
                "max_uri_bytes",
                self.max_uri_bytes,
                base.max_uri_bytes,
                1,
                DEFAULT_MAX_URI_BYTES,
            )?,
            max_head_bytes: limit(
                "max_head_bytes",
                self.max_head_bytes,
                base.max_head_bytes,
                1024,
                MAX_HEAD_BYTES_LIMIT,
            )?,
            max_headers: limit(
                "max_headers",
                self.max_headers,
                base.max_headers,
                1,
                MAX_HEADERS_LIMIT,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_keep_the_client_host_and_add_forwarded_headers() {
        let o = HttpOptionsRequest::default()
            .apply(HttpOptions::default())
            .unwrap();
        assert_eq!(o.host, HostHeader::Client);
        assert!(o.forwarded && o.rewrite_location);
        assert_eq!(o.max_headers, 200);
    }

    #[test]
    fn unknown_fields_and_bad_enums_are_refused() {
        assert!(serde_json::from_str::<HttpOptionsRequest>(r#"{"hots": "client"}"#).is_err());
        assert!(serde_json::from_str::<HttpOptionsRequest>(r#"{"host": "server"}"#).is_err());
        let r: HttpOptionsRequest =
            serde_json::from_str(r#"{"host": "upstream", "upstream_protocol": "http2"}"#).unwrap();
        let o = r.apply(HttpOptions::default()).unwrap();
        assert_eq!(o.upstream_protocol, UpstreamProtocol::Http2);
    }

    proptest! {
        #[test]
        fn limits_outside_their_range_name_the_field(v in any::<u32>()) {
            let r = HttpOptionsRequest { max_headers: Some(v), ..Default::default() };
            match r.apply(HttpOptions::default()) {
                Ok(o) => prop_assert!((1..=MAX_HEADERS_LIMIT).contains(&o.max_headers)),
                Err(e) => prop_assert!(e.to_string().contains("http.max_headers"), "{}", e),
            }
            let r = HttpOptionsRequest { max_uri_bytes: Some(v), ..Default::default() };
            match r.apply(HttpOptions::default()) {
                Ok(o) => prop_assert!(o.max_uri_bytes <= DEFAULT_MAX_URI_BYTES && o.max_uri_bytes >= 1),
                Err(e) => prop_assert!(e.to_string().contains("http.max_uri_bytes"), "{}", e),
            }
        }
    }
}
