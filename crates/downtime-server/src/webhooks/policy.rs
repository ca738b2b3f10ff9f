//! Which receivers hooks may target: `--webhook-allow` rules, the default refusals
//! (link-local, unspecified, this server's own control API), the check of `POST /webhooks`
//! and the resolver every delivery connects through.
//!
//! The rules themselves are described in the `# Targets` section of the
//! [`webhooks`](super) module documentation. Kept in one file so that the check made when
//! a hook is created and the one made on every delivery cannot drift apart.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use downtime_model::Error;

use super::CONNECT_FAILED;

/// One `--webhook-allow` entry: a network (`10.0.0.0/8`, `fe80::1/128`, a bare IP) or a
/// host name as written in hook URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// Addresses in `ip/prefix`.
    Net {
        /// The network's address.
        ip: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
    /// A host name (lowercase, compared with the URL's host).
    Host(String),
}

impl std::str::FromStr for AllowRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("prefix length must be 0 to {max}, got {p:?}")),
                },
            };
            return Ok(AllowRule::Net { ip, prefix });
        }
        let name_ok = prefix.is_none()
            && !addr.is_empty()
            && addr.len() <= 253
            && addr
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if name_ok {
            Ok(AllowRule::Host(addr.to_ascii_lowercase()))
        } else {
            Err(format!(
                "expected a CIDR (10.0.0.0/8), an IP or a host name, got {text:?}"
            ))
        }
    }
}

impl AllowRule {
    fn matches(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            AllowRule::Host(name) => name.eq_ignore_ascii_case(host.trim_end_matches('.')),
            AllowRule::Net { ip: net, prefix } => in_net(ip, *net, *prefix),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip.to_canonical(), net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Which receiver addresses hooks may target; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Targets permitted even though refused by default (`--webhook-allow`).
    pub allow: Vec<AllowRule>,
    /// This server's control API addresses (refused by default).
    pub own_api: Vec<SocketAddr>,
}

impl TargetPolicy {
    /// Why `addr` (reached through the URL host `host`) may not be targeted, if it may not.
    pub fn refusal(&self, host: &str, addr: SocketAddr) -> Option<String> {
        let ip = addr.ip().to_canonical();
        if self.allow.iter().any(|r| r.matches(host, ip)) {
            return None;
        }
        if ip.is_unspecified() {
            return Some(format!("{ip} is an unspecified address"));
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        };
        if link_local {
            return Some(format!(
                "{ip} is a link-local address (169.254.0.0/16, fe80::/10)"
            ));
        }
        let own = self.own_api.iter().any(|api| {
            let api_ip = api.ip().to_canonical();
            api.port() == addr.port()
                && (api_ip == ip
                    || ((api_ip.is_unspecified() || api_ip.is_loopback()) && ip.is_loopback()))
        });
        if own {
            return Some(format!("{addr} is this server's own control API"));
        }
        None
    }

    /// Checks a hook URL for `POST /webhooks`: an IP host directly, a name after resolving
    /// it (a name that does not resolve now is accepted; deliveries check again).
    pub async fn check_url(&self, url: &str) -> Result<(), Error> {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let Some(host) = parsed.host_str() else {
            return Ok(());
        };
        let addrs = match ip_host(host) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                let lookup = tokio::net::lookup_host((host, port));
                match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                    Ok(Ok(addrs)) => addrs.collect(),
                    _ => Vec::new(),
                }
            }
        };
        for addr in addrs {
            if let Some(why) = self.refusal(host, addr) {
                return Err(Error::invalid(
                    "url",
                    format!(
                        "refused target: {why}; start the server with --webhook-allow to \
                         permit it, got {url:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Resolves hook host names for reqwest and drops the addresses the policy refuses, so that
/// what is checked is what is connected to.
pub struct PolicyResolver {
    pub(super) policy: Arc<TargetPolicy>,
    pub(super) port: u16,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), port)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|addr| match policy.refusal(&host, *addr) {
                    None => true,
                    Some(why) => {
                        tracing::warn!(host = ?host, reason = ?why, "webhook target refused");
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(CONNECT_FAILED.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why a hook URL with an IP host may not be delivered to (names are checked by
/// [`PolicyResolver`]).
pub(super) fn literal_refusal(policy: &TargetPolicy, url: &reqwest::Url) -> Option<String> {
    let port = url.port_or_known_default().unwrap_or(80);
    let host = url.host_str()?;
    let ip = ip_host(host)?;
    policy.refusal(host, SocketAddr::new(ip, port))
}

/// The IP of a URL host written as one (`10.0.0.1`, `[fe80::1]`).
fn ip_host(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use crate::webhooks::{EventKind, WebhookOptions, Webhooks, lock, routes::parse_new};

    #[tokio::test]
    async fn a_refused_target_reads_as_a_closed_port_in_the_delivery_log() {
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        // Stands for this server's API: it listens, so only the policy keeps hooks off it.
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let stop = CancellationToken::new();
        let options = WebhookOptions {
            attempts: 1,
            timeout: Duration::from_secs(3),
            policy: TargetPolicy {
                allow: Vec::new(),
                own_api: vec![api_addr],
            },
            ..WebhookOptions::default()
        };
        let hooks = Webhooks::open(options, stop.clone(), None).await.unwrap();
        let mut ids = Vec::new();
        for url in [
            format!("http://127.0.0.1:{}/h", closed.port()),
            "http://169.254.1.1:9/h".to_owned(),
            format!("http://127.0.0.1:{}/halt", api_addr.port()),
            format!("http://localhost:{}/halt", api_addr.port()),
        ] {
            // Straight to `create`: as if the target had changed since the API's check.
            let body = json!({"url": url, "secret": "k", "events": ["ping"]}).to_string();
            let info = hooks
                .create(parse_new(body.as_bytes()).unwrap())
                .await
                .unwrap();
            ids.push((url, info.id));
        }
        hooks.publish(EventKind::Ping, json!({}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for (url, id) in &ids {
            let log = lock(&hooks.inner.hooks)[id].log.clone();
            let attempt = loop {
                let done = lock(&log)
                    .back()
                    .and_then(|d| (d.state == "failed").then(|| d.attempts[0].clone()));
                if let Some(a) = done {
                    break a;
                }
                assert!(tokio::time::Instant::now() < deadline, "{url}: no attempt");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(
                (attempt.status, attempt.error.as_deref()),
                (None, Some(CONNECT_FAILED)),
                "{url}"
            );
        }
        let reached = tokio::time::timeout(Duration::from_millis(300), api.accept()).await;
        assert!(reached.is_err(), "a hook reached the API address");
        stop.cancel();
    }

    #[test]
    fn allow_rules_parse_and_match() {
        let net: AllowRule = "10.0.0.0/8".parse().unwrap();
        assert!(net.matches("x", "10.200.0.1".parse().unwrap()));
        assert!(!net.matches("x", "11.0.0.1".parse().unwrap()));
        let one: AllowRule = "fe80::1".parse().unwrap();
        assert!(one.matches("x", "fe80::1".parse().unwrap()));
        assert!(!one.matches("x", "fe80::2".parse().unwrap()));
        let host: AllowRule = "Hooks.Internal".parse().unwrap();
        assert!(host.matches("hooks.internal", "169.254.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "a b", "", "x/8"] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }
    }
}
