//! TLS on an HTTP proxy's listener: the names its certificate is valid for, or a supplied
//! certificate and key.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Most names one leaf certificate may carry.
pub const MAX_TLS_NAMES: usize = 100;

/// TLS termination of a proxy, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsOptions {
    /// Names (DNS names or IP addresses) of the leaf issued by downtime's local CA;
    /// ignored when `cert` is given.
    pub names: Vec<String>,
    /// PEM file of a supplied certificate chain (with `key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// PEM file of the supplied certificate's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The `tls` object of a proxy request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptionsRequest {
    /// Defaults to `localhost`, `127.0.0.1`, `::1` and the listen host.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// A certificate chain file; needs `key`.
    #[serde(default)]
    pub cert: Option<String>,
    /// A private key file; needs `cert`.
    #[serde(default)]
    pub key: Option<String>,
}

impl TlsOptionsRequest {
    /// Checks the request; `listen` gives the default name besides the loopback ones.
    pub fn validate(self, listen: &str) -> Result<TlsOptions, Error> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(Error::invalid("tls.key", "a cert needs its key file")),
            (None, Some(_)) => return Err(Error::invalid("tls.cert", "a key needs its cert file")),
            _ => {}
        }
        let names = match self.names {
            Some(names) => names,
            None => default_names(listen),
        };
        if names.is_empty() || names.len() > MAX_TLS_NAMES {
            return Err(Error::invalid(
                "tls.names",
                format!("expected 1 to {MAX_TLS_NAMES} names, got {}", names.len()),
            ));
        }
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            return Err(Error::invalid(
                "tls.names",
                format!("{bad:?} is not a DNS name or an IP address"),
            ));
        }
        Ok(TlsOptions {
            names,
            cert: self.cert,
            key: self.key,
        })
    }
}

fn default_names(listen: &str) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).into();
    let host = listen
        .rsplit_once(':')
        .map_or(listen, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !host.is_empty() && host != "0.0.0.0" && host != "::" && !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    names
}

fn valid_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_loopback_and_the_listen_host() {
        let o = TlsOptionsRequest::default()
            .validate("10.1.2.3:8443")
            .unwrap();
        assert_eq!(o.names, ["localhost", "127.0.0.1", "::1", "10.1.2.3"]);
        let o = TlsOptionsRequest::default()
            .validate("127.0.0.1:0")
            .unwrap();
        assert_eq!(o.names.len(), 3);
    }

    #[test]
    fn bad_names_and_half_pairs_name_the_field() {
        let r = TlsOptionsRequest {
            names: Some(vec!["bad name".into()]),
            ..Default::default()
        };
        assert!(
            r.validate("")
                .unwrap_err()
                .to_string()
                .contains("tls.names")
        );
        let r = TlsOptionsRequest {
            cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(r.validate("").unwrap_err().to_string().contains("tls.key"));
        let r = TlsOptionsRequest {
            names: Some(vec!["*.example.com".into(), "::1".into()]),
            ..Default::default()
        };
        assert!(r.validate("").is_ok());
    }
}
