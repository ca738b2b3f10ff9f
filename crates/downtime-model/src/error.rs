//! Errors of the control plane, each with the status code and text of Toxiproxy's catalogue.
//!
//! Clients (the Go client's tests in particular) compare these texts byte for byte, so they
//! live in one place and every variant is tested against the catalogue.

/// A refused request or a failed operation; `Display` is the text the API returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body is not valid JSON or has a wrong type; the detail names the field.
    #[error("bad request body: {0}")]
    BadBody(String),
    /// A required field of a proxy is missing or empty.
    #[error("missing required field: {0}")]
    MissingField(&'static str),
    /// A required field of the N-th (1-based) proxy of a populate body is missing.
    #[error("missing required field: {field} at proxy {index}")]
    MissingFieldAt {
        /// The missing field.
        field: &'static str,
        /// 1-based position in the populate array.
        index: usize,
    },
    /// No proxy has this name.
    #[error("proxy not found")]
    ProxyNotFound,
    /// The proxy has no toxic of this name.
    #[error("toxic not found")]
    ToxicNotFound,
    /// A proxy of this name exists already.
    #[error("proxy already exists")]
    ProxyExists,
    /// A toxic of this name exists already on the proxy (in either direction).
    #[error("toxic already exists")]
    ToxicExists,
    /// `stream` is neither upstream nor downstream.
    #[error("stream was invalid, can be either upstream or downstream")]
    InvalidStream,
    /// `type` is missing or names no toxic.
    #[error("invalid toxic type")]
    InvalidToxicType,
    /// A value is out of range; the message names the field and the value.
    #[error("invalid value for {field}: {detail}")]
    InvalidValue {
        /// Path of the field, e.g. `attributes.latency`.
        field: String,
        /// What is wrong, naming the value.
        detail: String,
    },
    /// Binding or resolving a listen address failed (Toxiproxy answers 500 here).
    #[error("{0}")]
    Listen(String),
}

impl Error {
    /// The HTTP status Toxiproxy answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadBody(_)
            | Error::MissingField(_)
            | Error::MissingFieldAt { .. }
            | Error::InvalidStream
            | Error::InvalidToxicType
            | Error::InvalidValue { .. } => 400,
            Error::ProxyNotFound | Error::ToxicNotFound => 404,
            Error::ProxyExists | Error::ToxicExists => 409,
            Error::Listen(_) => 500,
        }
    }

    /// Shorthand for an out-of-range value.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::InvalidValue {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_texts_and_statuses() {
        let cases: Vec<(Error, &str, u16)> = vec![
            (Error::BadBody("x".into()), "bad request body: x", 400),
            (
                Error::MissingField("name"),
                "missing required field: name",
                400,
            ),
            (
                Error::MissingFieldAt {
                    field: "upstream",
                    index: 2,
                },
                "missing required field: upstream at proxy 2",
                400,
            ),
            (Error::ProxyNotFound, "proxy not found", 404),
            (Error::ToxicNotFound, "toxic not found", 404),
            (Error::ProxyExists, "proxy already exists", 409),
            (Error::ToxicExists, "toxic already exists", 409),
            (
                Error::InvalidStream,
                "stream was invalid, can be either upstream or downstream",
                400,
            ),
            (Error::InvalidToxicType, "invalid toxic type", 400),
            (
                Error::Listen("listen tcp 127.0.0.1:1: bind: permission denied".into()),
                "listen tcp 127.0.0.1:1: bind: permission denied",
                500,
            ),
        ];
        for (err, text, status) in cases {
            assert_eq!(err.to_string(), text);
            assert_eq!(err.status(), status, "{text}");
        }
    }
}
