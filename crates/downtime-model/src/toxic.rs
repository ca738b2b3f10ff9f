//! Toxics: what each kind does to a stream, its attributes, and the JSON clients exchange.
//!
//! Attribute values are non-negative integers (milliseconds, bytes, KB/s, microseconds) held
//! as `u64`, so no arithmetic downstream has to handle a negative duration or rate.

use std::time::Instant;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::Error;
use crate::http_fault::{Distribution, HttpAction, HttpMatch};

/// Which direction of a connection a toxic applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Bytes from the client to the upstream server.
    Upstream,
    /// Bytes from the upstream server back to the client.
    Downstream,
}

impl Stream {
    /// Parses a stream name case-insensitively, as Toxiproxy does; empty means downstream.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.is_empty() || text.eq_ignore_ascii_case("downstream") {
            Ok(Stream::Downstream)
        } else if text.eq_ignore_ascii_case("upstream") {
            Ok(Stream::Upstream)
        } else {
            Err(Error::InvalidStream)
        }
    }

    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// A toxic kind with its attributes; every attribute defaults to 0 like Toxiproxy's.
#[derive(Debug, Clone, PartialEq)]
pub enum ToxicKind {
    /// Delays each chunk by `latency` ms ± `jitter` ms.
    Latency {
        /// Base delay in milliseconds.
        latency: u64,
        /// Uniform spread in milliseconds around the base delay.
        jitter: u64,
    },
    /// Limits the stream to `rate` KB/s (1 KB = 1000 bytes); 0 stalls the stream.
    Bandwidth {
        /// Rate in KB/s.
        rate: u64,
    },
    /// Delays the close of the stream by `delay` ms.
    SlowClose {
        /// Delay in milliseconds.
        delay: u64,
    },
    /// Swallows data; closes after `timeout` ms without data (0: never closes).
    Timeout {
        /// Inactivity timeout in milliseconds.
        timeout: u64,
    },
    /// Drops the first chunk, then resets the connection after `timeout` ms.
    ResetPeer {
        /// Delay before the reset in milliseconds.
        timeout: u64,
    },
    /// Cuts chunks into pieces of about `average_size` bytes, `delay` µs apart.
    Slicer {
        /// Mean piece size in bytes.
        average_size: u64,
        /// Maximum deviation from the mean in bytes.
        size_variation: u64,
        /// Pause after each piece in microseconds.
        delay: u64,
    },
    /// Closes the connection once `bytes` bytes have passed in this direction.
    LimitData {
        /// Byte budget of one link.
        bytes: u64,
    },
    /// Passes data unchanged.
    Noop,
    /// An HTTP fault (HTTP proxies only): acts on requests, not bytes.
    Http(HttpAction),
}

impl ToxicKind {
    /// The kind named `type_name` with every attribute at 0.
    pub fn with_defaults(type_name: &str) -> Option<Self> {
        Some(match type_name {
            "latency" => ToxicKind::Latency {
                latency: 0,
                jitter: 0,
            },
            "bandwidth" => ToxicKind::Bandwidth { rate: 0 },
            "slow_close" => ToxicKind::SlowClose { delay: 0 },
            "timeout" => ToxicKind::Timeout { timeout: 0 },
            "reset_peer" => ToxicKind::ResetPeer { timeout: 0 },
            "slicer" => ToxicKind::Slicer {
                average_size: 0,
                size_variation: 0,
                delay: 0,
            },
            "limit_data" => ToxicKind::LimitData { bytes: 0 },
            "noop" => ToxicKind::Noop,
            _ => return None,
            // HTTP faults have required, structured attributes: see `ToxicKind::parse`.
        })
    }

    /// The `type` string of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::Noop => "noop",
            ToxicKind::Http(action) => action.type_name(),
        }
    }

    /// Attribute names in the order Toxiproxy renders them.
    pub fn attribute_names(&self) -> &'static [&'static str] {
        match self {
            ToxicKind::Latency { .. } => &["latency", "jitter"],
            ToxicKind::Bandwidth { .. } => &["rate"],
            ToxicKind::SlowClose { .. } => &["delay"],
            ToxicKind::Timeout { .. } | ToxicKind::ResetPeer { .. } => &["timeout"],
            ToxicKind::Slicer { .. } => &["average_size", "size_variation", "delay"],
            ToxicKind::LimitData { .. } => &["bytes"],
            ToxicKind::Noop | ToxicKind::Http(_) => &[],
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut u64> {
        match (self, name) {
            (ToxicKind::Latency { latency, .. }, "latency") => Some(latency),
            (ToxicKind::Latency { jitter, .. }, "jitter") => Some(jitter),
            (ToxicKind::Bandwidth { rate }, "rate") => Some(rate),
            (ToxicKind::SlowClose { delay }, "delay") => Some(delay),
            (ToxicKind::Timeout { timeout }, "timeout") => Some(timeout),
            (ToxicKind::ResetPeer { timeout }, "timeout") => Some(timeout),
            (ToxicKind::Slicer { average_size, .. }, "average_size") => Some(average_size),
            (ToxicKind::Slicer { size_variation, .. }, "size_variation") => Some(size_variation),
            (ToxicKind::Slicer { delay, .. }, "delay") => Some(delay),
            (ToxicKind::LimitData { bytes }, "bytes") => Some(bytes),
            _ => None,
        }
    }

    /// The value of attribute `name` (0 for an unknown name).
    pub fn attribute(&self, name: &str) -> u64 {
        match (self, name) {
            (ToxicKind::Latency { latency, .. }, "latency") => *latency,
            (ToxicKind::Latency { jitter, .. }, "jitter") => *jitter,
            (ToxicKind::Bandwidth { rate }, "rate") => *rate,
            (ToxicKind::SlowClose { delay }, "delay") => *delay,
            (ToxicKind::Timeout { timeout }, "timeout") => *timeout,
            (ToxicKind::ResetPeer { timeout }, "timeout") => *timeout,
            (ToxicKind::Slicer { average_size, .. }, "average_size") => *average_size,
            (ToxicKind::Slicer { size_variation, .. }, "size_variation") => *size_variation,
            (ToxicKind::Slicer { delay, .. }, "delay") => *delay,
            (ToxicKind::LimitData { bytes }, "bytes") => *bytes,
            _ => 0,
        }
    }

    /// Whether `type_name` names a TCP toxic or an HTTP fault.
    pub fn is_known_type(type_name: &str) -> bool {
        ToxicKind::with_defaults(type_name).is_some()
            || crate::http_fault::HTTP_FAULT_TYPES.contains(&type_name)
    }

    /// Builds the kind named `type_name` from its JSON attributes.
    pub fn parse(type_name: &str, attributes: Option<&Value>) -> Result<Self, Error> {
        if let Some(parsed) = HttpAction::parse(type_name, attributes.unwrap_or(&Value::Null)) {
            let action = parsed?;
            check_required(&action, attributes)?;
            check_http(&action)?;
            return Ok(ToxicKind::Http(action));
        }
        let mut kind = ToxicKind::with_defaults(type_name).ok_or(Error::InvalidToxicType)?;
        if let Some(attributes) = attributes {
            kind.merge_attributes(attributes)?;
        }
        Ok(kind)
    }

    /// Whether this is an HTTP fault (which needs an HTTP proxy).
    pub fn is_http(&self) -> bool {
        matches!(self, ToxicKind::Http(_))
    }

    /// Merges a JSON `attributes` object into this kind: known keys are replaced, absent ones
    /// keep their value, and each value must be a non-negative integer (`null` keeps the
    /// value). An unknown key is refused, naming it and the valid ones: Toxiproxy ignores
    /// it, so a typo (`latncy`) silently made a toxic that does nothing. HTTP faults check
    /// their attributes strictly through their own types.
    pub fn merge_attributes(&mut self, attributes: &Value) -> Result<(), Error> {
        if let ToxicKind::Http(action) = self {
            let merged = action.merged(attributes)?;
            check_http(&merged)?;
            *action = merged;
            return Ok(());
        }
        let map = match attributes {
            Value::Null => return Ok(()),
            Value::Object(map) => map,
            other => {
                return Err(Error::BadBody(format!(
                    "attributes must be an object, got {other}"
                )));
            }
        };
        let (type_name, names) = (self.type_name(), self.attribute_names());
        for (key, value) in map {
            let Some(slot) = self.slot(key) else {
                return Err(unknown_attribute(type_name, names, key));
            };
            match value {
                Value::Null => {}
                Value::Number(n) => {
                    if let Some(v) = n.as_u64().filter(|v| i64::try_from(*v).is_ok()) {
                        *slot = v;
                    } else if n.as_i64().is_some_and(|v| v < 0) {
                        return Err(Error::invalid(
                            format!("attributes.{key}"),
                            format!("must not be negative, got {n}"),
                        ));
                    } else {
                        return Err(Error::BadBody(format!(
                            "attributes.{key} must be an integer between 0 and {}, got {n}",
                            i64::MAX
                        )));
                    }
                }
                other => {
                    return Err(Error::BadBody(format!(
                        "attributes.{key} must be an integer, got {other}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The refusal of attribute `key`, which `type_name` does not have.
fn unknown_attribute(type_name: &str, names: &[&str], key: &str) -> Error {
    let valid = if names.is_empty() {
        format!("{type_name} takes no attributes")
    } else {
        format!("valid attributes of {type_name}: {}", names.join(", "))
    };
    Error::BadBody(format!(
        "attributes.{key}: unknown attribute {key:?}; {valid}"
    ))
}

/// Values an HTTP fault cannot do without even though its type gives them a default:
/// `http_latency` without a `latency` would delay nothing.
fn check_required(action: &HttpAction, attributes: Option<&Value>) -> Result<(), Error> {
    let given = |name: &str| {
        attributes
            .and_then(|a| a.get(name))
            .is_some_and(|v| !v.is_null())
    };
    if matches!(action, HttpAction::Latency(_)) && !given("latency") {
        return Err(Error::MissingField("attributes.latency"));
    }
    Ok(())
}

/// Combinations of HTTP fault settings that would be accepted and then ignored.
fn check_http(action: &HttpAction) -> Result<(), Error> {
    if let HttpAction::Latency(l) = action
        && l.jitter > 0
        && l.distribution == Distribution::Fixed
    {
        return Err(Error::invalid(
            "attributes.jitter",
            format!(
                "{} ms of jitter has no effect with distribution fixed; set distribution to uniform or normal, or jitter to 0",
                l.jitter
            ),
        ));
    }
    Ok(())
}

/// A toxic attached to one direction of a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    /// Unique name within the proxy (both directions).
    pub name: String,
    /// What it does.
    pub kind: ToxicKind,
    /// The direction it applies to.
    pub stream: Stream,
    /// The stream as the client spelled it; Toxiproxy echoes it verbatim.
    pub stream_text: String,
    /// Probability, rolled per link, that the toxic is active (≤0 never, ≥1 always).
    /// For HTTP faults it is rolled per request.
    pub toxicity: f32,
    /// Targeting and bounds: HTTP request matching, first-N, every-Nth, time to live.
    pub bounds: Bounds,
}

/// Optional targeting and lifetime of a toxic; rendered in JSON only when set, so stock
/// Toxiproxy clients see exactly the objects they know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Which HTTP requests an HTTP fault applies to.
    pub matcher: Option<HttpMatch>,
    /// Apply to the first N matching requests only, then pass.
    pub first_n: Option<u64>,
    /// Apply to every N-th matching request.
    pub every_nth: Option<u64>,
    /// Remove the toxic by itself this many ms after it was created or updated.
    pub ttl: Option<u64>,
    /// When the ttl runs out: set by the registry as it arms the timer, never read from a
    /// request. Rendered as `ttl_left` (ms) so a listing shows the time left, not only the
    /// ttl it was given.
    pub expires: Option<Instant>,
}

impl Bounds {
    fn check(&self, kind: &ToxicKind) -> Result<(), Error> {
        for (field, value) in [
            ("first_n", self.first_n),
            ("every_nth", self.every_nth),
            ("ttl", self.ttl),
        ] {
            if value == Some(0) {
                return Err(Error::invalid(field, "must be at least 1, got 0"));
            }
        }
        if !kind.is_http()
            && (self.matcher.is_some() || self.first_n.is_some() || self.every_nth.is_some())
        {
            return Err(Error::invalid(
                "match",
                format!(
                    "request targeting (match, first_n, every_nth) applies to HTTP faults only, not to {}",
                    kind.type_name()
                ),
            ));
        }
        Ok(())
    }
}

impl Toxic {
    /// Whether a random draw `roll` in `[0, 1)` makes this toxic active on a link.
    pub fn is_active_for(&self, roll: f32) -> bool {
        roll < self.toxicity
    }
}

/// Toxiproxy accepts any toxicity on its own toxics (≤0 never, ≥1 always) and clients rely
/// on it; our HTTP faults, which it never had, take a probability strictly.
fn check_toxicity(kind: &ToxicKind, toxicity: f32) -> Result<(), Error> {
    if !toxicity.is_finite() {
        return Err(Error::invalid(
            "toxicity",
            format!("{toxicity} is not a number"),
        ));
    }
    if kind.is_http() && !(0.0..=1.0).contains(&toxicity) {
        return Err(Error::invalid(
            "toxicity",
            format!("must be a probability within 0..1, got {toxicity}"),
        ));
    }
    Ok(())
}

/// Renders a float32 the way Go does in JSON: integral values without a fraction.
fn serialize_toxicity<S: Serializer>(value: f32, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        // Integral and small enough to be exact as i64.
        #[allow(clippy::cast_possible_truncation)]
        serializer.serialize_i64(value as i64)
    } else {
        serializer.serialize_f32(value)
    }
}

struct Attributes<'a>(&'a ToxicKind);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let ToxicKind::Http(action) = self.0 {
            return action.serialize(serializer);
        }
        let names = self.0.attribute_names();
        let mut map = serializer.serialize_map(Some(names.len()))?;
        for name in names {
            map.serialize_entry(name, &self.0.attribute(name))?;
        }
        map.end()
    }
}

struct Toxicity(f32);

impl Serialize for Toxicity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_toxicity(self.0, serializer)
    }
}

impl Serialize for Toxic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Toxic", 10)?;
        s.serialize_field("attributes", &Attributes(&self.kind))?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("type", self.kind.type_name())?;
        s.serialize_field("stream", &self.stream_text)?;
        s.serialize_field("toxicity", &Toxicity(self.toxicity))?;
        if let Some(m) = &self.bounds.matcher {
            s.serialize_field("match", m)?;
        }
        if let Some(n) = self.bounds.first_n {
            s.serialize_field("first_n", &n)?;
        }
        if let Some(n) = self.bounds.every_nth {
            s.serialize_field("every_nth", &n)?;
        }
        if let Some(ttl) = self.bounds.ttl {
            s.serialize_field("ttl", &ttl)?;
        }
        if let Some(at) = self.bounds.expires {
            let left = at.saturating_duration_since(Instant::now()).as_millis();
            s.serialize_field("ttl_left", &u64::try_from(left).unwrap_or(u64::MAX))?;
        }
        s.end()
    }
}

/// The body of `POST /proxies/{proxy}/toxics`, decoded leniently (unknown keys ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToxicRequest {
    /// Name; defaults to `<type>_<stream>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Toxic type.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `upstream` or `downstream` (any case); default downstream.
    #[serde(default)]
    pub stream: Option<String>,
    /// Probability per link; default 1.
    #[serde(default)]
    pub toxicity: Option<f32>,
    /// Attribute values; absent ones are 0.
    #[serde(default)]
    pub attributes: Option<Value>,
    /// HTTP faults: which requests to target.
    #[serde(default, rename = "match")]
    pub matcher: Option<HttpMatch>,
    /// HTTP faults: apply to the first N matching requests only.
    #[serde(default)]
    pub first_n: Option<u64>,
    /// HTTP faults: apply to every N-th matching request.
    #[serde(default)]
    pub every_nth: Option<u64>,
    /// Remove the toxic by itself after this many ms.
    #[serde(default)]
    pub ttl: Option<u64>,
}

impl ToxicRequest {
    /// Validates in Toxiproxy's order: stream, type, duplicate name (`exists`), attributes.
    pub fn into_toxic(self, exists: impl Fn(&str) -> bool) -> Result<Toxic, Error> {
        let stream_text = self
            .stream
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "downstream".to_owned());
        let stream = Stream::parse(&stream_text)?;
        let type_name = self.kind.unwrap_or_default();
        let name = self
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{type_name}_{stream_text}"));
        if !ToxicKind::is_known_type(&type_name) {
            return Err(Error::InvalidToxicType);
        }
        if exists(&name) {
            return Err(Error::ToxicExists);
        }
        let kind = ToxicKind::parse(&type_name, self.attributes.as_ref())?;
        let bounds = Bounds {
            matcher: self.matcher,
            first_n: self.first_n,
            every_nth: self.every_nth,
            ttl: self.ttl,
            expires: None,
        };
        bounds.check(&kind)?;
        let toxicity = self.toxicity.unwrap_or(1.0);
        check_toxicity(&kind, toxicity)?;
        Ok(Toxic {
            name,
            kind,
            stream,
            stream_text,
            toxicity,
            bounds,
        })
    }
}

/// The body of a toxic update: only `attributes` (merged) and `toxicity` are read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToxicPatch {
    /// Attributes to replace; absent keys keep their value.
    #[serde(default)]
    pub attributes: Option<Value>,
    /// New toxicity; absent keeps the current one.
    #[serde(default)]
    pub toxicity: Option<f32>,
    /// New request targeting (HTTP faults).
    #[serde(default, rename = "match")]
    pub matcher: Option<HttpMatch>,
    /// New first-N bound.
    #[serde(default)]
    pub first_n: Option<u64>,
    /// New every-Nth bound.
    #[serde(default)]
    pub every_nth: Option<u64>,
    /// New time to live in ms, counted from this update.
    #[serde(default)]
    pub ttl: Option<u64>,
}

impl ToxicPatch {
    /// Returns `toxic` with this patch applied, or an error leaving it untouched.
    pub fn apply(&self, toxic: &Toxic) -> Result<Toxic, Error> {
        let mut next = toxic.clone();
        if let Some(attributes) = &self.attributes {
            next.kind.merge_attributes(attributes)?;
        }
        if let Some(t) = self.toxicity {
            check_toxicity(&next.kind, t)?;
            next.toxicity = t;
        }
        if self.matcher.is_some() {
            next.bounds.matcher.clone_from(&self.matcher);
        }
        next.bounds.first_n = self.first_n.or(next.bounds.first_n);
        next.bounds.every_nth = self.every_nth.or(next.bounds.every_nth);
        next.bounds.ttl = self.ttl.or(next.bounds.ttl);
        next.bounds.check(&next.kind)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> Result<Toxic, Error> {
        serde_json::from_value::<ToxicRequest>(body)
            .map_err(|e| Error::BadBody(e.to_string()))?
            .into_toxic(|_| false)
    }

    #[test]
    fn defaults_fill_every_attribute_and_name() {
        let t = create(json!({"type": "latency"})).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"attributes":{"latency":0,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}"#
        );
    }

    #[test]
    fn stream_is_case_insensitive_and_echoed_verbatim() {
        let t = create(json!({"type": "latency", "stream": "UPSTREAM"})).unwrap();
        assert_eq!(t.stream, Stream::Upstream);
        assert_eq!(t.name, "latency_UPSTREAM");
        assert!(
            serde_json::to_string(&t)
                .unwrap()
                .contains(r#""stream":"UPSTREAM""#)
        );
    }

    #[test]
    fn toxicity_renders_like_go() {
        let t = create(json!({"type": "noop", "toxicity": 0.5})).unwrap();
        assert!(
            serde_json::to_string(&t)
                .unwrap()
                .ends_with(r#""toxicity":0.5}"#)
        );
        let t = create(json!({"type": "noop", "toxicity": 0})).unwrap();
        assert!(
            serde_json::to_string(&t)
                .unwrap()
                .ends_with(r#""toxicity":0}"#)
        );
    }

    #[test]
    fn refusals_follow_toxiproxy_order() {
        assert_eq!(
            create(json!({"type": "nope", "stream": "sideways"})),
            Err(Error::InvalidStream)
        );
        assert_eq!(create(json!({})), Err(Error::InvalidToxicType));
        let dup = serde_json::from_value::<ToxicRequest>(json!({"type": "noop"}))
            .unwrap()
            .into_toxic(|n| n == "noop_downstream");
        assert_eq!(dup, Err(Error::ToxicExists));
    }

    #[test]
    fn bad_attribute_values_name_the_field() {
        let err = create(json!({"type": "latency", "attributes": {"latency": "slow"}}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bad request body: attributes.latency"),
            "{err}"
        );
        let err = create(json!({"type": "latency", "attributes": {"jitter": -5}}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value for attributes.jitter: must not be negative, got -5"
        );
        let err = create(json!({"type": "bandwidth", "attributes": {"rate": 1.5}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("attributes.rate"), "{err}");
        assert!(create(json!({"type": "bandwidth", "attributes": {"rate": u64::MAX}})).is_err());
    }

    #[test]
    fn patch_merges_and_keeps_unchanged() {
        let t = create(json!({"type": "latency", "attributes": {"latency": 10, "jitter": 2}, "toxicity": 0.25})).unwrap();
        let p: ToxicPatch =
            serde_json::from_value(json!({"attributes": {"latency": 99}, "type": "ignored"}))
                .unwrap();
        let next = p.apply(&t).unwrap();
        assert_eq!(
            next.kind,
            ToxicKind::Latency {
                latency: 99,
                jitter: 2
            }
        );
        assert_eq!(next.toxicity, 0.25);
        let bad: ToxicPatch =
            serde_json::from_value(json!({"attributes": {"latency": -1}})).unwrap();
        assert!(bad.apply(&t).is_err());
    }

    #[test]
    fn unknown_attributes_are_refused_naming_them_and_the_valid_ones() {
        let err = create(json!({"type": "latency", "attributes": {"latncy": 100}})).unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(
            err.to_string(),
            "bad request body: attributes.latncy: unknown attribute \"latncy\"; valid attributes of latency: latency, jitter"
        );
        let err = create(json!({"type": "noop", "attributes": {"x": 1}})).unwrap_err();
        assert!(
            err.to_string().ends_with("noop takes no attributes"),
            "{err}"
        );
        // On update too, and the toxic is left untouched.
        let t = create(json!({"type": "bandwidth", "attributes": {"rate": 10}})).unwrap();
        let p: ToxicPatch = serde_json::from_value(json!({"attributes": {"rat": 5}})).unwrap();
        let err = p.apply(&t).unwrap_err().to_string();
        assert!(
            err.contains("attributes.rat") && err.contains("rate"),
            "{err}"
        );
        // What the stock clients send: an empty object, every attribute, nulls.
        assert!(create(json!({"type": "slicer", "attributes": {}})).is_ok());
        assert!(
            create(json!({"type": "latency", "attributes": {"latency": 1, "jitter": null}}))
                .is_ok()
        );
    }

    #[test]
    fn http_latency_needs_a_latency_and_jitter_needs_a_distribution() {
        let err = create(
            json!({"type": "http_latency", "attributes": {"jitter": 5, "distribution": "uniform"}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required field: attributes.latency"
        );
        assert_eq!(err.status(), 400);
        assert!(create(json!({"type": "http_latency"})).is_err());
        assert!(create(json!({"type": "http_latency", "attributes": {"latency": 0}})).is_ok());
        let err =
            create(json!({"type": "http_latency", "attributes": {"latency": 100, "jitter": 100}}))
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "invalid value for attributes.jitter: 100 ms of jitter has no effect with distribution fixed; set distribution to uniform or normal, or jitter to 0"
        );
        let t = create(json!({"type": "http_latency", "attributes": {"latency": 100, "jitter": 100, "distribution": "normal"}}))
            .unwrap();
        let p: ToxicPatch =
            serde_json::from_value(json!({"attributes": {"distribution": "fixed"}})).unwrap();
        assert!(
            p.apply(&t)
                .unwrap_err()
                .to_string()
                .contains("attributes.jitter")
        );
        let p: ToxicPatch =
            serde_json::from_value(json!({"attributes": {"distribution": "fixed", "jitter": 0}}))
                .unwrap();
        assert!(p.apply(&t).is_ok());
    }

    #[test]
    fn every_type_round_trips_its_attributes() {
        for ty in [
            "latency",
            "bandwidth",
            "slow_close",
            "timeout",
            "reset_peer",
            "slicer",
            "limit_data",
            "noop",
        ] {
            let kind = ToxicKind::with_defaults(ty).unwrap();
            assert_eq!(kind.type_name(), ty);
            let mut attrs = serde_json::Map::new();
            for (i, name) in kind.attribute_names().iter().enumerate() {
                attrs.insert((*name).to_owned(), json!(i + 7));
            }
            let t = create(json!({"type": ty, "attributes": attrs})).unwrap();
            for (i, name) in kind.attribute_names().iter().enumerate() {
                assert_eq!(t.kind.attribute(name), (i + 7) as u64);
            }
        }
    }

    const TYPES: &[&str] = &[
        "latency",
        "bandwidth",
        "slow_close",
        "timeout",
        "reset_peer",
        "slicer",
        "limit_data",
        "noop",
    ];
    const NAMES: &[&str] = &[
        "latency",
        "jitter",
        "rate",
        "delay",
        "timeout",
        "average_size",
        "size_variation",
        "bytes",
        "latncy",
        "",
        "Latency",
    ];

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z0-9]{0,4}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
    }

    proptest::proptest! {
        /// Any attributes object: accepted exactly when every key is one of the type's and
        /// every value is null or an integer in 0..=i64::MAX; then the values are set and the
        /// rest keep their defaults. Refusals are 400s naming an offending key.
        #[test]
        fn attribute_parser(
            ty in proptest::sample::select(TYPES),
            attrs in proptest::collection::btree_map(proptest::sample::select(NAMES), any_value(), 0..4),
        ) {
            let object: serde_json::Map<String, Value> =
                attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            let kind = ToxicKind::with_defaults(ty).unwrap();
            let valid_value = |v: &Value| {
                v.is_null() || v.as_u64().is_some_and(|n| i64::try_from(n).is_ok())
            };
            let bad: Vec<&str> = attrs
                .iter()
                .filter(|(k, v)| !kind.attribute_names().contains(k) || !valid_value(v))
                .map(|(k, _)| *k)
                .collect();
            let result = ToxicKind::parse(ty, Some(&Value::Object(object)));
            match result {
                Ok(parsed) => {
                    proptest::prop_assert!(bad.is_empty(), "accepted {bad:?}");
                    for name in kind.attribute_names() {
                        let want = attrs.get(name).and_then(Value::as_u64).unwrap_or(0);
                        proptest::prop_assert_eq!(parsed.attribute(name), want);
                    }
                }
                Err(e) => {
                    proptest::prop_assert_eq!(e.status(), 400);
                    let text = e.to_string();
                    proptest::prop_assert!(
                        bad.iter().any(|k| text.contains(&format!("attributes.{k}"))),
                        "{text} names none of {bad:?}"
                    );
                }
            }
        }
    }
}
