//! Parsers for the values users type on the command line: the server URL, a toxicity,
//! `key=value` toxic attributes, and the values of the HTTP fault flags (durations, status
//! codes, header and query pairs, counts).
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

/// How durations are written, for error messages.
const DURATION_EXAMPLE: &str = "expected a whole number with a unit, e.g. 250ms, 2s, 1m or 1h";

/// Parses a duration such as `250ms`, `2s`, `1m` or `1h` into milliseconds.
///
/// A bare number is refused (is `30` seconds or milliseconds?), except `0`, which means the
/// same in every unit. Only whole numbers: the API counts in whole milliseconds or seconds.
/// The conversion is checked, so a huge value is an error rather than a wrapped number.
pub fn parse_duration_ms(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(DURATION_EXAMPLE.to_owned());
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| "the number is too large".to_owned())?;
    let factor: u64 = match unit.trim() {
        "" if number == 0 => 1,
        "" => return Err(format!("missing unit; {DURATION_EXAMPLE}")),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("unknown unit '{other}'; {DURATION_EXAMPLE}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "the duration is too large".to_owned())
}

/// A duration that must be at least a millisecond (`--ttl`, `--period`).
pub fn parse_positive_duration_ms(raw: &str) -> Result<u64, String> {
    match parse_duration_ms(raw)? {
        0 => Err("must be at least 1ms".into()),
        ms => Ok(ms),
    }
}

/// A duration in whole seconds, at least 1 s (`router_timeout`'s `--timeout` and `--idle`,
/// which the server counts in seconds).
pub fn parse_seconds(raw: &str) -> Result<u64, String> {
    let ms = parse_duration_ms(raw)?;
    if ms == 0 {
        return Err("must be at least 1s".into());
    }
    if !ms.is_multiple_of(1_000) {
        return Err("must be a whole number of seconds, e.g. 30s or 1m".into());
    }
    Ok(ms / 1_000)
}

/// `--retry-after`: seconds as a bare number (the header's own unit) or a duration of whole
/// seconds such as `2m`.
pub fn parse_retry_after(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| "the number of seconds is too large".to_owned());
    }
    let ms = parse_duration_ms(text)?;
    if !ms.is_multiple_of(1_000) {
        return Err("must be a whole number of seconds, e.g. 120 or 2m".into());
    }
    Ok(ms / 1_000)
}

/// A count of at least 1 (`--first-n`, `--every-nth`, `--limit`, `--burst`).
pub fn parse_count(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number of at least 1".into()),
    }
}

/// An HTTP status code the server can send (100..=599).
pub fn parse_status(raw: &str) -> Result<u16, String> {
    match raw.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err("expected an HTTP status code between 100 and 599".into()),
    }
}

/// `--rate` of `slow_body`: KB/s (1 KB = 1000 B), optionally written with the unit.
pub fn parse_rate(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    let number = text
        .strip_suffix("KB/s")
        .or_else(|| text.strip_suffix("kB/s"))
        .or_else(|| text.strip_suffix("kb/s"))
        .unwrap_or(text)
        .trim();
    match number.parse::<u64>() {
        Ok(0) => Err("must be at least 1 KB/s".into()),
        Ok(rate) => Ok(rate),
        Err(_) => Err("expected a whole number of KB/s, e.g. 100 or 100KB/s".into()),
    }
}

/// Whether `name` is a valid HTTP header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name alone (`--key-header`).
pub fn parse_header_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if is_header_name(name) {
        Ok(name.to_owned())
    } else {
        Err("not a valid header name".into())
    }
}

/// `NAME=VALUE` of a response header (`--header`) or of a header condition
/// (`--match-header`); the value may not hold line breaks, which would split the header.
pub fn parse_header_pair(raw: &str) -> Result<(String, String), String> {
    let Some((name, value)) = raw.split_once('=') else {
        return Err("expected NAME=VALUE, e.g. X-Request-Id=abc".into());
    };
    let name = name.trim();
    if !is_header_name(name) {
        return Err(format!("'{name}' is not a valid header name"));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err("a header value cannot contain line breaks or NUL".into());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// `KEY=PATTERN` of a query condition (`--query`); `*` in the pattern matches anything.
pub fn parse_query_pair(raw: &str) -> Result<(String, String), String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err("expected KEY=PATTERN, e.g. page=2 or page=*".into());
    };
    if key.is_empty() {
        return Err("the parameter name before '=' is empty".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--method`: an HTTP method token, sent upper-cased (the server compares without case).
pub fn parse_method(raw: &str) -> Result<String, String> {
    let method = raw.trim();
    if !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        Ok(method.to_ascii_uppercase())
    } else {
        Err("expected an HTTP method such as GET or POST".into())
    }
}

/// `--path`: a pattern for the request path, where `*` matches any run of characters.
/// It must start with `/` or `*`: `apps/*` would never match, as every path starts with `/`.
pub fn parse_path_pattern(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') || raw.starts_with('*') {
        Ok(raw.to_owned())
    } else {
        Err("a path pattern starts with '/' (or '*'), e.g. '/apps/*'".into())
    }
}

/// `--limit` of `requests`: how many journal entries to show (the server keeps 1000).
pub fn parse_journal_limit(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err("expected a whole number between 1 and 1000".into()),
    }
}

/// A text value that must not be empty (`--api`, `--status-page`, `--fault-name`).
pub fn parse_non_empty(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(raw.to_owned())
    }
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

    #[test]
    fn durations_need_a_unit_and_do_not_overflow() {
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("2s").unwrap(), 2_000);
        assert_eq!(parse_duration_ms("1m").unwrap(), 60_000);
        assert_eq!(parse_duration_ms(" 1h ").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert!(
            parse_duration_ms("30")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            parse_duration_ms("5x")
                .unwrap_err()
                .contains("unknown unit 'x'")
        );
        assert!(parse_duration_ms("-1s").is_err());
        assert!(parse_duration_ms("1.5s").is_err());
        assert!(parse_duration_ms("ms").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(
            parse_duration_ms("18446744073709551615h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration_ms("99999999999999999999ms")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(
            parse_duration_ms("18446744073709551615ms").unwrap(),
            u64::MAX
        );
    }

    #[test]
    fn bounded_durations() {
        assert_eq!(parse_positive_duration_ms("1ms").unwrap(), 1);
        assert!(
            parse_positive_duration_ms("0s")
                .unwrap_err()
                .contains("1ms")
        );
        assert_eq!(parse_seconds("30s").unwrap(), 30);
        assert_eq!(parse_seconds("2m").unwrap(), 120);
        assert_eq!(parse_seconds("3000ms").unwrap(), 3);
        assert!(
            parse_seconds("1500ms")
                .unwrap_err()
                .contains("whole number of seconds")
        );
        assert!(parse_seconds("0s").is_err());
        assert_eq!(parse_retry_after("120").unwrap(), 120);
        assert_eq!(parse_retry_after("2m").unwrap(), 120);
        assert!(parse_retry_after("10ms").is_err());
    }

    #[test]
    fn counts_statuses_and_rates() {
        assert_eq!(parse_count("3").unwrap(), 3);
        assert!(parse_count("0").unwrap_err().contains("at least 1"));
        assert!(parse_count("-1").is_err());
        assert_eq!(parse_status("503").unwrap(), 503);
        assert!(parse_status("99").is_err());
        assert!(parse_status("600").is_err());
        assert!(parse_status("abc").is_err());
        assert_eq!(parse_rate("100").unwrap(), 100);
        assert_eq!(parse_rate("64KB/s").unwrap(), 64);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_journal_limit("1000").unwrap(), 1000);
        assert!(parse_journal_limit("0").is_err());
        assert!(parse_journal_limit("1001").is_err());
    }

    #[test]
    fn headers_queries_methods_and_paths() {
        assert_eq!(
            parse_header_pair("X-Id=a=b").unwrap(),
            ("X-Id".into(), "a=b".into())
        );
        assert!(
            parse_header_pair("bad name=x")
                .unwrap_err()
                .contains("bad name")
        );
        assert!(
            parse_header_pair("X-Id")
                .unwrap_err()
                .contains("NAME=VALUE")
        );
        assert!(parse_header_pair("X-Id=a\r\nb").is_err());
        assert_eq!(parse_header_name("X-Api-Key").unwrap(), "X-Api-Key");
        assert!(parse_header_name("a b").is_err());
        assert_eq!(
            parse_query_pair("page=*").unwrap(),
            ("page".into(), "*".into())
        );
        assert!(parse_query_pair("=1").is_err());
        assert!(parse_query_pair("page").is_err());
        assert_eq!(parse_method("get").unwrap(), "GET");
        assert!(parse_method("GE T").is_err());
        assert_eq!(parse_path_pattern("/apps/*").unwrap(), "/apps/*");
        assert_eq!(parse_path_pattern("*").unwrap(), "*");
        assert!(parse_path_pattern("apps/*").is_err());
        assert!(parse_non_empty(" ").is_err());
    }
}
