//! A position-keeping reader over a parsed TOML drill file: typed getters that record a
//! problem (with its line and key) instead of failing, so every problem of a file is
//! reported at once.

use std::time::Duration;

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::*;

pub(super) struct Walker<'t> {
    pub(super) text: &'t str,
    pub(super) problems: Vec<Problem>,
}

pub(super) type Table<'i> = DeTable<'i>;
pub(super) type Val<'i> = Spanned<DeValue<'i>>;

impl<'t> Walker<'t> {
    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub(super) fn problem(
        &mut self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.line(offset);
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Reports keys of `table` that are not in `allowed`.
    pub(super) fn known_keys(&mut self, table: &Table<'_>, path: &str, allowed: &[&str]) {
        for (k, _) in table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let key = join(path, k.get_ref());
                self.problem(
                    k.span().start,
                    key,
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
    }

    pub(super) fn str(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<String> {
        let v = get(table, key)?;
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                let t = v.get_ref().type_str();
                self.problem(
                    v.span().start,
                    join(path, key),
                    format!("expected a string, got {t}"),
                );
                None
            }
        }
    }

    /// A duration of at most `max`; a bare integer is seconds.
    pub(super) fn duration(
        &mut self,
        table: &Table<'_>,
        path: &str,
        key: &str,
        max: Duration,
    ) -> Option<Duration> {
        let v = get(table, key)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_duration(s).and_then(|d| {
                if d <= max {
                    Ok(d)
                } else {
                    Err(format!("must be at most {}, got {s:?}", show(max)))
                }
            }),
            DeValue::Integer(i) => {
                let text = i.as_str().replace('_', "");
                match text.parse::<i64>() {
                    Ok(n) if n < 0 => Err(format!("duration must not be negative, got {text}")),
                    Ok(n) if n.unsigned_abs() <= max.as_secs() => {
                        Ok(Duration::from_secs(n.unsigned_abs()))
                    }
                    _ => Err(format!(
                        "must be at most {} ({} seconds), got {text}",
                        show(max),
                        max.as_secs()
                    )),
                }
            }
            other => Err(format!(
                "expected a duration like \"500ms\", got {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(v.span().start, join(path, key), e);
                None
            }
        }
    }

    pub(super) fn number(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<f64> {
        let v = get(table, key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            _ => None,
        };
        if n.is_none() {
            let t = v.get_ref().type_str();
            self.problem(
                v.span().start,
                join(path, key),
                format!("expected a number, got {t}"),
            );
        }
        n
    }

    pub(super) fn percent(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<f64> {
        let n = self.number(table, path, key)?;
        if !(0.0..=100.0).contains(&n) {
            let at = get(table, key).map_or(0, |v| v.span().start);
            self.problem(
                at,
                join(path, key),
                format!("must be a percentage within 0..100, got {n}"),
            );
            return None;
        }
        Some(n)
    }

    pub(super) fn integer(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<u64> {
        let v = get(table, key)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<u64>().map_err(|_| {
                format!(
                    "must be a whole number from 0 to {}, got {}",
                    u64::MAX,
                    i.as_str()
                )
            }),
            other => Err(format!("expected an integer, got {}", other.type_str())),
        };
        match parsed {
            Ok(n) => Some(n),
            Err(e) => {
                self.problem(v.span().start, join(path, key), e);
                None
            }
        }
    }

    /// An integer of at most [`limits::MAX_COUNT`].
    pub(super) fn count(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<u64> {
        let n = self.integer(table, path, key)?;
        if n > limits::MAX_COUNT {
            let at = get(table, key).map_or(0, |v| v.span().start);
            self.problem(
                at,
                join(path, key),
                format!("must be at most {}, got {n}", limits::MAX_COUNT),
            );
            return None;
        }
        Some(n)
    }

    /// Reports more than `max` tables of an array.
    pub(super) fn at_most(&mut self, items: usize, max: usize, at: usize, key: String, what: &str) {
        if items > max {
            self.problem(at, key, format!("at most {max} {what}, got {items}"));
        }
    }

    pub(super) fn table<'a, 'i>(
        &mut self,
        table: &'a Table<'i>,
        path: &str,
        key: &str,
    ) -> Option<&'a Table<'i>> {
        let v = get(table, key)?;
        match v.get_ref().as_table() {
            Some(t) => Some(t),
            None => {
                let t = v.get_ref().type_str();
                self.problem(
                    v.span().start,
                    join(path, key),
                    format!("expected a table, got {t}"),
                );
                None
            }
        }
    }

    pub(super) fn tables<'a, 'i>(
        &mut self,
        table: &'a Table<'i>,
        path: &str,
        key: &str,
    ) -> Vec<(usize, &'a Table<'i>)> {
        let Some(v) = get(table, key) else {
            return Vec::new();
        };
        let Some(items) = v.get_ref().as_array() else {
            let t = v.get_ref().type_str();
            self.problem(
                v.span().start,
                join(path, key),
                format!("expected an array of tables ([[{key}]]), got {t}"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref().as_table() {
                Some(t) => out.push((item.span().start, t)),
                None => {
                    let t = item.get_ref().type_str();
                    self.problem(
                        item.span().start,
                        format!("{}[{i}]", join(path, key)),
                        format!("expected a table, got {t}"),
                    );
                }
            }
        }
        out
    }

    pub(super) fn string_map(
        &mut self,
        table: &Table<'_>,
        path: &str,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(t) = self.table(table, path, key) {
            let p = join(path, key);
            for (k, v) in t.iter() {
                match v.get_ref().as_str() {
                    Some(s) => {
                        out.insert(k.get_ref().to_string(), s.to_owned());
                    }
                    None => {
                        let ty = v.get_ref().type_str();
                        self.problem(
                            v.span().start,
                            join(&p, k.get_ref()),
                            format!("expected a string, got {ty}"),
                        );
                    }
                }
            }
        }
        out
    }
}

pub(super) fn get<'a, 'i>(table: &'a Table<'i>, key: &str) -> Option<&'a Val<'i>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// TOML value → JSON value (for fault attributes and match tables).
pub(super) fn to_json(v: &DeValue<'_>) -> Value {
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i
            .as_str()
            .replace('_', "")
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::Null),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(|x| serde_json::Number::from_f64(x).map(Value::Number))
            .unwrap_or(Value::Null),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect()),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        ),
    }
}
