//! URL templates: `http://users/users/{order.user_id}?lang={query.lang}`.
//!
//! A placeholder is `{name}` (a route parameter), `{query.name}` (a query parameter of the
//! client's request), `{each}` (the value a fan-out backend is called for) or
//! `{backend.path}` (a field of an earlier backend's answer). Values are percent-encoded for
//! where they stand: in the path everything but unreserved characters (`A-Z a-z 0-9 - _ ~`) is
//! encoded, `.` and `/` included, so no value can add a path segment or climb with `..`; in the
//! query `&`, `=`, `#` and `+` are encoded too. Placeholders may not stand in the scheme or host.

use serde_json::Value;

use crate::path::Path;

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A route parameter.
    Param(String),
    /// A query parameter of the client's request.
    Query(String),
    /// The fan-out value.
    Each,
    /// A field of an earlier backend's answer.
    Field {
        /// The backend.
        backend: String,
        /// The field in its answer.
        path: Path,
    },
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Value { source: Source, in_query: bool },
}

/// A parsed URL template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

/// Names a placeholder may not use as a backend name.
pub const RESERVED: [&str; 2] = ["query", "each"];

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
            .ok_or_else(|| format!("`{text}` must start with http:// or https://"))?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if rest[..authority_end].contains(['{', '}']) {
            return Err(format!(
                "`{text}`: placeholders may stand in the path and query, not the host"
            ));
        }
        if rest[..authority_end].is_empty() {
            return Err(format!("`{text}` names no upstream or host"));
        }
        if text.contains('#') {
            return Err(format!("`{text}`: a URL sent upstream has no fragment"));
        }
        let mut parts = Vec::new();
        let mut in_query = false;
        let mut literal = String::new();
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' => {
                    let close = text[i..]
                        .find('}')
                        .ok_or_else(|| format!("`{text}` has an unclosed `{{`"))?;
                    let inner = &text[i + 1..i + close];
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value {
                        source: source(inner).map_err(|e| format!("`{text}`: {e}"))?,
                        in_query,
                    });
                    for _ in 0..inner.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => return Err(format!("`{text}` has a `}}` without `{{`")),
                c if c.is_whitespace() || c.is_control() => {
                    return Err(format!("`{text}` holds whitespace or a control character"));
                }
                c => {
                    if c == '?' {
                        in_query = true;
                    }
                    literal.push(c);
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// The placeholders, in order.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|p| match p {
            Part::Value { source, .. } => Some(source),
            Part::Text(_) => None,
        })
    }

    /// The URL with every placeholder filled by `value`; the error names the first placeholder
    /// that has no usable value (absent, `null`, an object or an array).
    pub fn render(
        &self,
        value: &mut dyn FnMut(&Source) -> Option<String>,
    ) -> Result<String, Source> {
        let mut url = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => url.push_str(t),
                Part::Value { source, in_query } => {
                    let v = value(source).ok_or_else(|| source.clone())?;
                    encode_into(&mut url, &v, *in_query);
                }
            }
        }
        Ok(url)
    }
}

fn source(inner: &str) -> Result<Source, String> {
    if inner == "each" {
        return Ok(Source::Each);
    }
    if let Some(name) = inner.strip_prefix("query.") {
        if name.is_empty() || name.contains(['{', '}']) {
            return Err(format!("`{{{inner}}}` names no query parameter"));
        }
        return Ok(Source::Query(name.to_owned()));
    }
    match inner.split_once('.') {
        None => {
            if inner.is_empty() || !inner.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(format!("`{{{inner}}}` is not a route parameter name"));
            }
            Ok(Source::Param(inner.to_owned()))
        }
        Some((backend, field)) => {
            let path = Path::parse(field).map_err(|e| format!("`{{{inner}}}`: {e}"))?;
            if path.has_each() {
                return Err(format!(
                    "`{{{inner}}}` selects many values; a placeholder takes one (use for_each)"
                ));
            }
            Ok(Source::Field {
                backend: backend.to_owned(),
                path,
            })
        }
    }
}

/// A JSON value as placeholder text: strings as they are, numbers and booleans as JSON writes
/// them; anything else has no text.
pub fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn encode_into(out: &mut String, value: &str, in_query: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'~')
            || (in_query && matches!(b, b'.' | b'/' | b':' | b'@' | b',' | b';'));
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Param(n) => write!(f, "{{{n}}}"),
            Self::Query(n) => write!(f, "{{query.{n}}}"),
            Self::Each => f.write_str("{each}"),
            Self::Field { backend, path } => write!(f, "{{{backend}.{path}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
        let t = Template::parse(template)?;
        t.render(&mut |s| {
            values
                .iter()
                .find(|(k, _)| *k == s.to_string())
                .map(|(_, v)| (*v).to_owned())
        })
        .map_err(|s| s.to_string())
    }

    #[test]
    fn placeholders_are_filled_and_encoded_for_where_they_stand() {
        assert_eq!(
            fill(
                "http://users/users/{order.user_id}",
                &[("{order.user_id}", "7")]
            )
            .unwrap(),
            "http://users/users/7"
        );
        assert_eq!(
            fill(
                "http://s/a/{id}?q={query.q}&x=1",
                &[("{id}", "../admin"), ("{query.q}", "a&b=c d/e.f")]
            )
            .unwrap(),
            "http://s/a/%2E%2E%2Fadmin?q=a%26b%3Dc%20d/e.f&x=1"
        );
        assert_eq!(
            fill("https://h:8443/p/{each}", &[("{each}", "ü")]).unwrap(),
            "https://h:8443/p/%C3%BC"
        );
        assert_eq!(fill("http://s/{id}", &[]).unwrap_err(), "{id}");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        for (bad, says) in [
            ("/relative/{id}", "must start with"),
            ("http://{host}/x", "not the host"),
            ("http:///x", "names no upstream"),
            ("http://s/{id", "unclosed"),
            ("http://s/id}", "without"),
            ("http://s/{a.items[*].id}", "many values"),
            ("http://s/{a b}", "not a route parameter"),
            ("http://s/a b", "whitespace"),
            ("http://s/{query.}", "names no query"),
            ("http://s/{-x}", "not a route parameter"),
            ("http://s/x#frag", "fragment"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn sources_are_told_apart() {
        let t = Template::parse("http://s/{id}/{each}/{o.user.id}?l={query.lang}").unwrap();
        let sources: Vec<String> = t.sources().map(ToString::to_string).collect();
        assert_eq!(sources, ["{id}", "{each}", "{o.user.id}", "{query.lang}"]);
        assert_eq!(text_of(&serde_json::json!(12.5)).as_deref(), Some("12.5"));
        assert_eq!(text_of(&serde_json::json!(null)), None);
        assert_eq!(text_of(&serde_json::json!([1])), None);
    }
}
