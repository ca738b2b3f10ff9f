//! Parsers for the values users type on the command line: the server URL, a toxicity and
//! `key=value` toxic attributes.
//!
//! They run as clap value parsers, so a bad value is a usage error (exit 2) whose message
//! clap prefixes with the flag and the value; the texts here only say what is wrong with it.

use reqwest::Url;
use serde_json::{Number, Value};

/// Default control API address, the one `toxiproxy-server` and `downtime serve` listen on.
pub const DEFAULT_SERVER_URL: &str = "http://localhost:8474";

/// Turns `--host`/`TOXIPROXY_URL` into a base URL.
///
/// Accepts what toxiproxy-cli users already pass (`http://host:port`) and also a bare
/// `host:port`, which `Url::parse` would otherwise misread as a URL with scheme `host`.
/// Only `http` is accepted: this build has no TLS, and the API is plain HTTP anyway.
pub fn parse_server_url(raw: &str) -> Result<Url, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("the server address is empty; expected e.g. http://localhost:8474".into());
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("not a server address: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err("https is not supported; the control API speaks plain http".into());
        }
        other => {
            return Err(format!(
                "unsupported scheme '{other}'; use http://HOST:PORT"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the server address has no host; expected e.g. http://localhost:8474".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the server address must not carry a query or fragment".into());
    }
    Ok(url)
}

/// Parses a toxicity: the probability, from 0 to 1, that a connection gets the toxic.
///
/// The server accepts anything (values ≥1 mean always), but toxiproxy-cli refuses values
/// outside 0..1 and a typo like `50` for 50 % is far likelier than a deliberate 50.
pub fn parse_toxicity(raw: &str) -> Result<f64, String> {
    let value: f64 = raw
        .trim()
        .parse()
        .map_err(|_| "not a number; expected a probability between 0 and 1".to_owned())?;
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        return Err("must be between 0 and 1 (0 = never, 1 = every connection)".into());
    }
    Ok(value)
}

/// Parses one `--attribute key=value`.
///
/// The value becomes a JSON number when it reads as one, because the server's attributes
/// are integers and it rejects `"100"` where it expects `100`; anything else stays a string.
pub fn parse_attribute(raw: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err("expected key=value, e.g. latency=1000".into());
    };
    let key = key.trim();
    if key.is_empty() {
        return Err("the attribute name before '=' is empty".into());
    }
    Ok((key.to_owned(), attribute_value(value.trim())))
}

/// Picks the JSON type of an attribute value: integer, then other number, then string.
fn attribute_value(raw: &str) -> Value {
    if let Ok(int) = raw.parse::<i64>() {
        return Value::from(int);
    }
    if let Ok(int) = raw.parse::<u64>() {
        return Value::from(int);
    }
    // Only strings that look like decimal numbers: `inf` and `nan` parse as f64 too.
    let looks_numeric = !raw.is_empty()
        && raw
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if looks_numeric && let Ok(float) = raw.parse::<f64>() {
        // `1e3` means the integer 1000 to a user; servers with integer attributes reject 1000.0.
        if float.fract() == 0.0 && float.abs() < 9.0e15 {
            // Integral and well within i64, so the cast is exact.
            return Value::from(float as i64);
        }
        if let Some(number) = Number::from_f64(float) {
            return Value::Number(number);
        }
    }
    Value::String(raw.to_owned())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_url_accepts_full_and_bare_forms() {
        let full = parse_server_url("http://127.0.0.1:8474").unwrap();
        assert_eq!(full.as_str(), "http://127.0.0.1:8474/");
        let bare = parse_server_url("localhost:9000").unwrap();
        assert_eq!(bare.as_str(), "http://localhost:9000/");
        let host_only = parse_server_url("toxiproxy").unwrap();
        assert_eq!(host_only.as_str(), "http://toxiproxy/");
        let with_path = parse_server_url(" http://h:1/api/ ").unwrap();
        assert_eq!(with_path.path(), "/api/");
        assert_eq!(
            parse_server_url(DEFAULT_SERVER_URL).unwrap().as_str(),
            "http://localhost:8474/"
        );
    }

    #[test]
    fn server_url_refuses_what_cannot_work() {
        assert!(parse_server_url("").unwrap_err().contains("empty"));
        assert!(
            parse_server_url("https://h:1")
                .unwrap_err()
                .contains("https")
        );
        assert!(parse_server_url("ftp://h:1").unwrap_err().contains("'ftp'"));
        assert!(parse_server_url("http://h:99999").is_err());
        assert!(parse_server_url("http://h:1/?a=b").is_err());
    }

    #[test]
    fn toxicity_must_be_a_probability() {
        assert_eq!(parse_toxicity("0").unwrap(), 0.0);
        assert_eq!(parse_toxicity("0.25").unwrap(), 0.25);
        assert_eq!(parse_toxicity("1").unwrap(), 1.0);
        assert!(
            parse_toxicity("1.5")
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!(parse_toxicity("-0.1").is_err());
        assert!(parse_toxicity("NaN").is_err());
        assert!(parse_toxicity("inf").is_err());
        assert!(parse_toxicity("half").unwrap_err().contains("not a number"));
    }

    #[test]
    fn attributes_send_numbers_as_numbers() {
        assert_eq!(
            parse_attribute("latency=1000").unwrap(),
            ("latency".into(), json!(1000))
        );
        assert_eq!(parse_attribute("delta=-5").unwrap().1, json!(-5));
        assert_eq!(
            parse_attribute("big=18446744073709551615").unwrap().1,
            json!(u64::MAX)
        );
        assert_eq!(parse_attribute("rate=1e3").unwrap().1, json!(1000));
        assert_eq!(parse_attribute("p=0.5").unwrap().1, json!(0.5));
        assert_eq!(parse_attribute("path=/a=b").unwrap().1, json!("/a=b"));
        assert_eq!(parse_attribute("word=nan").unwrap().1, json!("nan"));
        assert_eq!(parse_attribute("word=inf").unwrap().1, json!("inf"));
        assert_eq!(parse_attribute("empty=").unwrap().1, json!(""));
        assert_eq!(parse_attribute(" k = 7 ").unwrap(), ("k".into(), json!(7)));
    }

    #[test]
    fn attributes_need_a_key_and_an_equals_sign() {
        assert!(
            parse_attribute("latency")
                .unwrap_err()
                .contains("key=value")
        );
        assert!(parse_attribute("=5").unwrap_err().contains("empty"));
    }
}
