//! TLS faults: what a TLS listener of downtime (an HTTPS proxy or stand-in, or the forward
//! proxy's interception) does to a handshake, so that broken certificates and stalled
//! handshakes can be rehearsed like any other outage.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Type names of TLS faults.
pub const TLS_FAULT_TYPES: &[&str] = &[
    "tls_expired",
    "tls_wrong_host",
    "tls_untrusted",
    "tls_handshake_timeout",
    "tls_alert",
];

/// What a TLS fault does to a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFaultKind {
    /// Serve a certificate whose validity ended yesterday.
    Expired,
    /// Serve a certificate for another name.
    WrongHost,
    /// Serve a self-signed certificate no client trusts.
    Untrusted,
    /// Accept the connection and never answer the client's hello.
    HandshakeTimeout,
    /// Answer the client's hello with a fatal alert.
    Alert,
}

/// A TLS fault with its attributes (only `tls_alert` has one: `alert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFault {
    /// What it does.
    #[serde(skip)]
    pub kind: TlsFaultKind,
    /// `tls_alert`: the alert's name (see [`alert_code`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoAttributes {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertAttributes {
    #[serde(default)]
    alert: Option<String>,
}

/// TLS alert names accepted by `tls_alert` and their codes (RFC 8446 §6).
const ALERTS: &[(&str, u8)] = &[
    ("handshake_failure", 40),
    ("bad_certificate", 42),
    ("certificate_expired", 45),
    ("unknown_ca", 48),
    ("access_denied", 49),
    ("protocol_version", 70),
    ("insufficient_security", 71),
    ("internal_error", 80),
    ("unrecognized_name", 112),
];

/// The code of alert `name`.
pub fn alert_code(name: &str) -> Option<u8> {
    ALERTS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// The attributes as an object (`null` is an empty one).
fn object(attributes: &serde_json::Value) -> serde_json::Value {
    if attributes.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        attributes.clone()
    }
}

impl TlsFault {
    /// Parses a TLS fault of type `type_name`; `None` if it is not one.
    pub fn parse(type_name: &str, attributes: &serde_json::Value) -> Option<Result<Self, Error>> {
        let kind = match type_name {
            "tls_expired" => TlsFaultKind::Expired,
            "tls_wrong_host" => TlsFaultKind::WrongHost,
            "tls_untrusted" => TlsFaultKind::Untrusted,
            "tls_handshake_timeout" => TlsFaultKind::HandshakeTimeout,
            "tls_alert" => TlsFaultKind::Alert,
            _ => return None,
        };
        let bad = |e: serde_json::Error| Error::BadBody(format!("attributes: {e}"));
        if kind != TlsFaultKind::Alert {
            return Some(
                serde_json::from_value::<NoAttributes>(object(attributes))
                    .map(|_| TlsFault { kind, alert: None })
                    .map_err(bad),
            );
        }
        let parsed = serde_json::from_value::<AlertAttributes>(object(attributes)).map_err(bad);
        Some(parsed.and_then(|a| {
            let alert = a.alert.unwrap_or_else(|| "handshake_failure".to_owned());
            if alert_code(&alert).is_none() {
                let names: Vec<&str> = ALERTS.iter().map(|(n, _)| *n).collect();
                return Err(Error::invalid(
                    "attributes.alert",
                    format!(
                        "unknown alert {alert:?}; expected one of {}",
                        names.join(", ")
                    ),
                ));
            }
            Ok(TlsFault {
                kind,
                alert: Some(alert),
            })
        }))
    }

    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            TlsFaultKind::Expired => "tls_expired",
            TlsFaultKind::WrongHost => "tls_wrong_host",
            TlsFaultKind::Untrusted => "tls_untrusted",
            TlsFaultKind::HandshakeTimeout => "tls_handshake_timeout",
            TlsFaultKind::Alert => "tls_alert",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_parse_and_bad_attributes_are_refused() {
        let f = TlsFault::parse("tls_expired", &serde_json::Value::Null)
            .unwrap()
            .unwrap();
        assert_eq!(f.kind, TlsFaultKind::Expired);
        assert!(
            TlsFault::parse("tls_expired", &json!({"x": 1}))
                .unwrap()
                .is_err()
        );
        let a = TlsFault::parse("tls_alert", &json!({})).unwrap().unwrap();
        assert_eq!(a.alert.as_deref(), Some("handshake_failure"));
        let err = TlsFault::parse("tls_alert", &json!({"alert": "nope"}))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("attributes.alert"), "{err}");
        assert!(TlsFault::parse("latency", &json!({})).is_none());
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"alert": "handshake_failure"})
        );
    }
}
