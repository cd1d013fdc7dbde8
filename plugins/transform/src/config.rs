//! The config as written in `tessera.toml`, and the check that turns it into a [`Plan`].
//!
//! Every rule the types cannot say is checked here, once, when the gateway loads the config;
//! each message starts with the key it is about (`response.rename["a.b"]: ...`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::path::{FieldPath, Path, Projection, Segment};
use crate::plan::{BodyPlan, Direction, HeaderPlan, InvalidBody, Plan, StatusPattern};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What happens to requests on their way to the route's target. Default: nothing.
    pub request: Section,
    /// What happens to responses on their way to the client. Default: nothing.
    pub response: Section,
}

/// The changes to one direction. The body operations run in the order of the fields here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    /// Path whose value replaces the whole document. Default: none.
    pub unwrap: Option<String>,
    /// Paths to keep; everything else goes. Default: keep everything.
    pub allow: Option<Vec<String>>,
    /// Paths to remove. Default: none.
    pub deny: Vec<String>,
    /// Path → the field's new name. Default: none.
    pub rename: BTreeMap<String, String>,
    /// Path → path to move the field to. Default: none.
    #[serde(rename = "move")]
    pub moves: BTreeMap<String, String>,
    /// Path → the constant it is set to. Default: none.
    pub set: BTreeMap<String, Value>,
    /// Path inside which the whole document is put. Default: none.
    pub wrap: Option<String>,
    /// `"reject"` or `"pass"`: what happens to a JSON body that cannot be transformed.
    /// Default: `"reject"`.
    pub invalid_body: InvalidBody,
    /// Header changes. Default: none.
    pub headers: HeadersConfig,
    /// Responses only: statuses (`200`) and classes (`"2xx"`) whose bodies the body operations
    /// change. Default: `["2xx"]`.
    pub body_statuses: Option<Vec<Value>>,
    /// Responses only: status → the status it is answered with (`{ 404 = 200 }`).
    /// Default: none.
    pub status: BTreeMap<String, u16>,
}

/// Header changes of one direction: `remove` runs first, then `set`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Name → value, replacing every value of the name. Default: none.
    pub set: BTreeMap<String, String>,
    /// Names to remove. Default: none.
    pub remove: Vec<String>,
}

/// Headers that are the gateway's: framing, hop-by-hop and `host`. A plugin's changes to them
/// are dropped, so a config that names them is refused instead of silently doing nothing.
const GATEWAY_HEADERS: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

impl Config {
    /// Checks the config and compiles it. The error names the key.
    pub fn plan(&self) -> Result<Plan, String> {
        let request = &self.request;
        let response = &self.response;
        if request.body_statuses.is_some() {
            return Err(
                "request.body_statuses: requests have no status; this belongs in `response`"
                    .to_owned(),
            );
        }
        if !request.status.is_empty() {
            return Err(
                "request.status: requests have no status; this belongs in `response`".to_owned(),
            );
        }
        Ok(Plan {
            request: Direction {
                body: body_plan("request", request)?,
                headers: header_plan("request.headers", &request.headers)?,
                invalid_body: request.invalid_body,
            },
            response: Direction {
                body: body_plan("response", response)?,
                headers: header_plan("response.headers", &response.headers)?,
                invalid_body: response.invalid_body,
            },
            body_statuses: body_statuses(response.body_statuses.as_deref())?,
            status: status_map(&response.status)?,
        })
    }
}

fn has_body_ops(body: &Section) -> bool {
    body.unwrap.is_some()
        || body.allow.is_some()
        || !body.deny.is_empty()
        || !body.rename.is_empty()
        || !body.moves.is_empty()
        || !body.set.is_empty()
        || body.wrap.is_some()
}

/// A path that ends in a field name; `key` is the config key it was written under.
fn field_path(key: &str, text: &str) -> Result<FieldPath, String> {
    FieldPath::parse(text).map_err(|e| format!("{key}: {text:?}: {e}"))
}

/// A path without `[*]`, for `wrap` and `unwrap`, which work on one value.
fn plain_path(key: &str, text: &str) -> Result<FieldPath, String> {
    let path = field_path(key, text)?;
    if path.path().has_each() {
        return Err(format!(
            "{key}: {text:?}: `[*]` is not allowed here; {key} takes or builds one value"
        ));
    }
    Ok(path)
}

fn body_plan(direction: &str, body: &Section) -> Result<Option<BodyPlan>, String> {
    if !has_body_ops(body) {
        return Ok(None);
    }
    let mut plan = BodyPlan::default();
    if let Some(text) = &body.unwrap {
        plan.unwrap = Some(plain_path(&format!("{direction}.unwrap"), text)?);
    }
    if let Some(list) = &body.allow {
        if list.is_empty() {
            return Err(format!(
                "{direction}.allow: an empty list would remove every field; leave `allow` out to keep them all"
            ));
        }
        let mut paths: Vec<Path> = Vec::with_capacity(list.len());
        for (i, text) in list.iter().enumerate() {
            paths.push(
                field_path(&format!("{direction}.allow[{i}]"), text)?
                    .path()
                    .clone(),
            );
        }
        plan.allow = Some(Projection::new(&paths));
    }
    for (i, text) in body.deny.iter().enumerate() {
        plan.deny
            .push(field_path(&format!("{direction}.deny[{i}]"), text)?);
    }

    // Entries of one operation run in no particular order, so none may touch the fields of
    // another: each entry is the pair of fields it reads and writes.
    let mut touched: Vec<(String, Path, Path)> = Vec::new();
    for (from, name) in &body.rename {
        let key = format!("{direction}.rename[{from:?}]");
        let path = field_path(&key, from)?;
        let new_name = match Path::parse(name).as_ref().map(Path::segments) {
            Ok([Segment::Key(new_name)]) => new_name.clone(),
            _ => {
                return Err(format!(
                    "{key}: {name:?} is not a field name (rename changes the name only; use `move` to change the place, and write `\\.` for a dot in a name)"
                ));
            }
        };
        if new_name == path.name() {
            return Err(format!("{key}: the new name is the old one"));
        }
        let to = path.sibling(&new_name);
        check_apart(&touched, &key, path.path(), to.path())?;
        touched.push((key, path.path().clone(), to.path().clone()));
        plan.rename.push((path, new_name));
    }
    touched.clear();
    for (from, to) in &body.moves {
        let key = format!("{direction}.move[{from:?}]");
        let from_path = field_path(&key, from)?;
        let to_path = field_path(&key, to)?;
        if from_path == to_path {
            return Err(format!("{key}: the field is moved onto itself"));
        }
        if !from_path.can_move_to(&to_path) {
            return Err(format!(
                "{key}: {to:?} must pick the same objects as {from:?} (the same path up to its last `[*]`, and no `[*]` after it): a field moves within each element, not between them"
            ));
        }
        check_apart(&touched, &key, from_path.path(), to_path.path())?;
        touched.push((key, from_path.path().clone(), to_path.path().clone()));
        plan.moves.push((from_path, to_path));
    }
    touched.clear();
    for (text, value) in &body.set {
        let key = format!("{direction}.set[{text:?}]");
        let path = field_path(&key, text)?;
        check_apart(&touched, &key, path.path(), path.path())?;
        touched.push((key, path.path().clone(), path.path().clone()));
        plan.set.push((path, value.clone()));
    }
    if let Some(text) = &body.wrap {
        plan.wrap = Some(plain_path(&format!("{direction}.wrap"), text)?);
    }
    Ok(Some(plan))
}

/// Refuses an entry whose fields overlap an earlier entry's: the outcome would depend on the
/// order the entries run in.
fn check_apart(
    earlier: &[(String, Path, Path)],
    key: &str,
    a: &Path,
    b: &Path,
) -> Result<(), String> {
    for (other, c, d) in earlier {
        if [c, d].iter().any(|p| p.overlaps(a) || p.overlaps(b)) {
            return Err(format!(
                "{key}: touches the same fields as {other}; entries of one operation must stay apart (their outcome would depend on the order they run in)"
            ));
        }
    }
    Ok(())
}

/// An HTTP token (RFC 9110 §5.6.2): what header names are made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value that can be sent as it is: visible ASCII, spaces and tabs inside, no control
/// characters (CR, LF and NUL among them), no whitespace around it (RFC 9110 §5.5).
fn is_header_value(value: &str) -> bool {
    value.trim_matches([' ', '\t']) == value
        && value
            .bytes()
            .all(|b| b == b'\t' || (b' '..0x7f).contains(&b))
}

fn header_name(key: &str, name: &str) -> Result<String, String> {
    if !is_token(name) {
        return Err(format!("{key}: {name:?} is not a valid header name"));
    }
    let lower = name.to_ascii_lowercase();
    if GATEWAY_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{key}: {lower} is the gateway's (it frames the message and sets the hop-by-hop headers itself); a plugin cannot change it"
        ));
    }
    Ok(lower)
}

fn header_plan(prefix: &str, headers: &HeadersConfig) -> Result<HeaderPlan, String> {
    let mut plan = HeaderPlan::default();
    for (i, name) in headers.remove.iter().enumerate() {
        plan.remove
            .push(header_name(&format!("{prefix}.remove[{i}]"), name)?);
    }
    for (name, value) in &headers.set {
        let key = format!("{prefix}.set[{name:?}]");
        let lower = header_name(&key, name)?;
        if plan.set.iter().any(|(n, _)| *n == lower) {
            return Err(format!(
                "{key}: {lower} is set twice (header names ignore case)"
            ));
        }
        if !is_header_value(value) {
            return Err(format!(
                "{key}: not a valid header value (visible ASCII, spaces and tabs; no control characters such as CR or LF, no whitespace at either end)"
            ));
        }
        plan.set.push((lower, value.clone()));
    }
    Ok(plan)
}

/// A final status: 1xx are interim answers the HTTP layer sends, never the answer itself.
fn final_status(status: u64) -> Option<u16> {
    u16::try_from(status)
        .ok()
        .filter(|s| (200..=599).contains(s))
}

fn status_map(status: &BTreeMap<String, u16>) -> Result<Vec<(u16, u16)>, String> {
    let mut map: Vec<(u16, u16)> = Vec::new();
    for (from, to) in status {
        let key = format!("response.status[{from:?}]");
        let Some(code) = from.parse::<u64>().ok().and_then(final_status) else {
            return Err(format!("{key}: {from:?} is not a final status (200-599)"));
        };
        if final_status(u64::from(*to)).is_none() {
            return Err(format!("{key}: {to} is not a final status (200-599)"));
        }
        if map.iter().any(|(f, _)| *f == code) {
            return Err(format!("{key}: {code} is remapped twice"));
        }
        map.push((code, *to));
    }
    Ok(map)
}

fn body_statuses(list: Option<&[Value]>) -> Result<Vec<StatusPattern>, String> {
    let Some(list) = list else {
        return Ok(vec![StatusPattern::Class(2)]);
    };
    if list.is_empty() {
        return Err(
            "response.body_statuses: an empty list would never transform a body; leave it out for 2xx"
                .to_owned(),
        );
    }
    let mut patterns = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let pattern = match entry {
            Value::Number(n) => n.as_u64().and_then(final_status).map(StatusPattern::Exact),
            Value::String(s) => match s.to_ascii_lowercase().as_bytes() {
                [c @ b'2'..=b'5', b'x', b'x'] => Some(StatusPattern::Class(u16::from(c - b'0'))),
                _ => None,
            },
            _ => None,
        };
        match pattern {
            Some(p) => patterns.push(p),
            None => {
                return Err(format!(
                    "response.body_statuses[{i}]: expected a status (200-599) or a class (\"2xx\" to \"5xx\"), not {entry}"
                ));
            }
        }
    }
    Ok(patterns)
}
