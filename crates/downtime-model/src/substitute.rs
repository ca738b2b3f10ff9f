//! `${VAR}` and `${VAR:-default}` in config and drill files, replaced before they are
//! parsed, so one file serves several machines (`listen = "127.0.0.1:${API_PORT:-5080}"`).
//!
//! - `${VAR}` is the variable's value; a variable that is not set is an error naming it
//!   and its line (an empty value is a value);
//! - `${VAR:-default}` is the value, or `default` when the variable is unset or empty (as
//!   in a POSIX shell); the default is taken as written, up to the first `}`;
//! - `$${` writes a literal `${`; a `$` not followed by `{` stays as it is;
//! - lines whose first non-blank character is `#` (TOML comments) are left untouched, so a
//!   comment may show `${VAR}` without the variable being set.
//!
//! Values are inserted as written, before the file is parsed: a value is part of the text
//! of the file, so it should not contain quotes where it lands inside a string.

/// Why a file's text could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// `${VAR}` without a default, and `VAR` is not set.
    #[error(
        "line {line}: environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
    )]
    Unset {
        /// 1-based line of the reference.
        line: usize,
        /// The variable.
        name: String,
    },
    /// `${` without its `}`, or a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line of the reference.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

impl SubstituteError {
    /// The 1-based line of the problem.
    pub fn line(&self) -> usize {
        match self {
            SubstituteError::Unset { line, .. } | SubstituteError::Malformed { line, .. } => *line,
        }
    }
}

/// `text` with every reference replaced through the process environment.
pub fn substitute_env(text: &str) -> Result<String, SubstituteError> {
    substitute(text, |name| std::env::var(name).ok())
}

/// `text` with every reference replaced through `lookup` (a variable's value, `None` when
/// it is not set); see the module documentation for the syntax.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, SubstituteError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains('$') {
            out.push_str(line);
        } else {
            substitute_line(line, index + 1, &lookup, &mut out)?;
        }
    }
    Ok(out)
}

fn substitute_line(
    line: &str,
    number: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), SubstituteError> {
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(inner_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = inner_start.find('}') else {
            return Err(SubstituteError::Malformed {
                line: number,
                problem: "`${` without its closing `}`".to_owned(),
            });
        };
        let inner = &inner_start[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if !is_name(name) {
            return Err(SubstituteError::Malformed {
                line: number,
                problem: format!(
                    "`${{{inner}}}`: expected ${{NAME}} or ${{NAME:-default}}, NAME made of letters, digits and _"
                ),
            });
        }
        let value = match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
            (Some(v), _) => v,
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(SubstituteError::Unset {
                    line: number,
                    name: name.to_owned(),
                });
            }
        };
        out.push_str(&value);
        rest = &inner_start[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the names a shell exports.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("6000".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn values_defaults_and_escapes() {
        let text = "a = \"127.0.0.1:${PORT}\"\nb = \"${MISSING:-5080}\"\nc = \"${EMPTY:-x}${EMPTY}\"\nd = \"$${PORT} $HOME cost$5\"\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "a = \"127.0.0.1:6000\"\nb = \"5080\"\nc = \"x\"\nd = \"${PORT} $HOME cost$5\"\n"
        );
        assert_eq!(substitute("${PORT:-}", env).unwrap(), "6000");
        assert_eq!(substitute("${MISSING:-}", env).unwrap(), "");
        assert_eq!(substitute("no dollars", env).unwrap(), "no dollars");
    }

    #[test]
    fn comments_are_left_alone() {
        let text = "# listen = \"${UNSET}\"\n  # ${UNSET}\nx = 1 # ${PORT}\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "# listen = \"${UNSET}\"\n  # ${UNSET}\nx = 1 # 6000\n"
        );
    }

    #[test]
    fn errors_name_the_variable_and_the_line() {
        let err = substitute("a = 1\nb = \"${API_PORT}\"\n", env).unwrap_err();
        assert_eq!(
            err,
            SubstituteError::Unset {
                line: 2,
                name: "API_PORT".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            "line 2: environment variable API_PORT is not set (write ${API_PORT:-default} to give a default)"
        );
        let err = substitute("\n\nx = \"${PORT\"\n", env).unwrap_err();
        assert_eq!(err.line(), 3);
        assert!(err.to_string().contains("closing"), "{err}");
        let err = substitute("x = \"${1X}\"", env).unwrap_err();
        assert!(err.to_string().contains("${1X}"), "{err}");
        assert!(substitute("${}", env).is_err());
    }
}
