//! The config, checked and compiled: what the filter does to one message.

use serde_json::Value;
use tessera_sdk::Headers;

use crate::path::{FieldPath, Projection};

/// Everything the filter does, ready to run.
#[derive(Debug, Default)]
pub struct Plan {
    /// What happens to requests.
    pub request: Direction,
    /// What happens to responses.
    pub response: Direction,
    /// Which response statuses get the response's body operations.
    pub body_statuses: Vec<StatusPattern>,
    /// Status remapping, `(from, to)`.
    pub status: Vec<(u16, u16)>,
}

impl Plan {
    /// Whether any body operation is configured, so the route entry must buffer bodies.
    pub fn needs_bodies(&self) -> bool {
        self.request.body.is_some() || self.response.body.is_some()
    }

    /// Whether the response's body operations apply to a response of `status`.
    pub fn transforms_status(&self, status: u16) -> bool {
        self.body_statuses.iter().any(|p| p.matches(status))
    }

    /// The status a response of `status` leaves with.
    pub fn remap(&self, status: u16) -> u16 {
        self.status
            .iter()
            .find(|(from, _)| *from == status)
            .map_or(status, |(_, to)| *to)
    }
}

/// What happens to the messages of one direction.
#[derive(Debug, Default)]
pub struct Direction {
    /// Body operations; `None` when there are none.
    pub body: Option<BodyPlan>,
    /// Header changes.
    pub headers: HeaderPlan,
    /// What to do with a JSON body that cannot be transformed.
    pub invalid_body: InvalidBody,
}

/// What happens to a body that says it is JSON but cannot be transformed (it does not parse, it
/// is compressed, or it is only part of the representation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidBody {
    /// Refuse the message: a request is answered 400 (415 for a compressed body), a response
    /// becomes a 502. Nothing the operations were meant to remove gets through.
    #[default]
    Reject,
    /// Pass it on untouched, with a warning in the log.
    Pass,
}

/// A status or a class of statuses (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPattern {
    /// Exactly this status.
    Exact(u16),
    /// Every status of this hundred: `2` is `2xx`.
    Class(u16),
}

impl StatusPattern {
    fn matches(self, status: u16) -> bool {
        match self {
            Self::Exact(s) => s == status,
            Self::Class(c) => status / 100 == c,
        }
    }
}

/// The body operations of one direction, applied in this order: unwrap, allow, deny, rename,
/// move, set, wrap.
#[derive(Debug, Default)]
pub struct BodyPlan {
    /// Replace the document by the value at this path.
    pub unwrap: Option<FieldPath>,
    /// Keep only what these paths reach.
    pub allow: Option<Projection>,
    /// Remove these fields.
    pub deny: Vec<FieldPath>,
    /// Rename these fields.
    pub rename: Vec<(FieldPath, String)>,
    /// Move these fields.
    pub moves: Vec<(FieldPath, FieldPath)>,
    /// Set these fields to constants.
    pub set: Vec<(FieldPath, Value)>,
    /// Put the document inside objects along this path.
    pub wrap: Option<FieldPath>,
}

impl BodyPlan {
    /// Transforms a parsed document. Returns it with whether anything changed.
    ///
    /// `unwrap` and the field operations work on objects. A document that is an array has them
    /// applied to each of its elements; a document that is a string, number, boolean or null has
    /// no fields and only `wrap` applies to it.
    pub fn apply(&self, document: Value) -> (Value, bool) {
        let mut changed = false;
        let mut document = document;
        if let Some(path) = &self.unwrap {
            document = for_each_document(document, &mut |d| unwrap(d, path, &mut changed));
        }
        document = for_each_document(document, &mut |d| self.fields(d, &mut changed));
        if let Some(path) = &self.wrap {
            document = path.wrap(document);
            changed = true;
        }
        (document, changed)
    }

    /// The field operations on one object; other values are returned as they are.
    fn fields(&self, document: Value, changed: &mut bool) -> Value {
        let Value::Object(mut object) = document else {
            return document;
        };
        if let Some(allow) = &self.allow {
            object = allow.apply(object, changed);
        }
        for path in &self.deny {
            *changed |= path.remove(&mut object);
        }
        for (path, name) in &self.rename {
            *changed |= path.rename(&mut object, name);
        }
        for (from, to) in &self.moves {
            *changed |= from.move_to(&mut object, to);
        }
        for (path, value) in &self.set {
            *changed |= path.set(&mut object, value);
        }
        Value::Object(object)
    }
}

/// `f` applied to the document, or to each element when the document is an array.
fn for_each_document(document: Value, f: &mut dyn FnMut(Value) -> Value) -> Value {
    match document {
        Value::Array(items) => Value::Array(items.into_iter().map(f).collect()),
        other => f(other),
    }
}

/// The value at `path` in an object document; the document as it is when there is none.
fn unwrap(document: Value, path: &FieldPath, changed: &mut bool) -> Value {
    let Value::Object(mut object) = document else {
        return document;
    };
    match path.take(&mut object) {
        Some(inner) => {
            *changed = true;
            inner
        }
        None => Value::Object(object),
    }
}

/// Header changes of one direction: `remove` first, then `set`.
#[derive(Debug, Default)]
pub struct HeaderPlan {
    /// Names to remove, lower-case.
    pub remove: Vec<String>,
    /// Names (lower-case) and the value each is set to, replacing every earlier value.
    pub set: Vec<(String, String)>,
}

impl HeaderPlan {
    /// Applies the changes.
    pub fn apply(&self, headers: &mut Headers) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.set(name, value.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::path::Path;

    fn field(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    #[test]
    fn operations_run_in_the_documented_order() {
        let plan = BodyPlan {
            unwrap: Some(field("data")),
            allow: Some(Projection::new(&[
                Path::parse("id").unwrap(),
                Path::parse("name").unwrap(),
                Path::parse("address").unwrap(),
                Path::parse("token").unwrap(),
            ])),
            deny: vec![field("token")],
            rename: vec![(field("name"), "full_name".to_owned())],
            moves: vec![(field("address.city"), field("city"))],
            set: vec![(field("source"), json!("gateway"))],
            wrap: Some(field("result")),
        };
        let (out, changed) = plan.apply(json!({ "data": {
            "id": 1, "name": "Ada", "token": "t", "internal": true,
            "address": { "city": "Paris", "zip": "75001" },
        }, "meta": {} }));
        assert!(changed);
        assert_eq!(
            out,
            json!({ "result": {
                "id": 1, "full_name": "Ada", "address": { "zip": "75001" },
                "city": "Paris", "source": "gateway",
            } })
        );
    }

    #[test]
    fn arrays_at_the_root_are_handled_element_by_element() {
        let plan = BodyPlan {
            deny: vec![field("secret")],
            set: vec![(field("seen"), json!(true))],
            ..BodyPlan::default()
        };
        let (out, changed) = plan.apply(json!([{ "secret": 1, "a": 1 }, 2, [{ "secret": 3 }]]));
        assert!(changed);
        assert_eq!(out, json!([{ "a": 1, "seen": true }, 2, [{ "secret": 3 }]]));
        // After an unwrap that yields an array, too.
        let plan = BodyPlan {
            unwrap: Some(field("data")),
            deny: vec![field("secret")],
            ..BodyPlan::default()
        };
        let (out, _) = plan.apply(json!({ "data": [{ "secret": 1, "id": 1 }] }));
        assert_eq!(out, json!([{ "id": 1 }]));
    }

    #[test]
    fn scalars_only_get_wrapped_and_nothing_is_reported_when_nothing_changes() {
        let plan = BodyPlan {
            deny: vec![field("a")],
            allow: Some(Projection::new(&[Path::parse("b").unwrap()])),
            ..BodyPlan::default()
        };
        assert_eq!(plan.apply(json!("text")), (json!("text"), false));
        assert_eq!(plan.apply(json!({ "b": 1 })), (json!({ "b": 1 }), false));
        assert_eq!(plan.apply(json!({})), (json!({}), false));
        let wrap = BodyPlan {
            wrap: Some(field("data")),
            ..BodyPlan::default()
        };
        assert_eq!(wrap.apply(json!(null)), (json!({ "data": null }), true));
        let unwrap = BodyPlan {
            unwrap: Some(field("data")),
            ..BodyPlan::default()
        };
        assert_eq!(unwrap.apply(json!({ "x": 1 })), (json!({ "x": 1 }), false));
    }

    #[test]
    fn statuses_and_remaps() {
        let plan = Plan {
            body_statuses: vec![StatusPattern::Class(2), StatusPattern::Exact(404)],
            status: vec![(404, 200), (200, 204)],
            ..Plan::default()
        };
        assert!(plan.transforms_status(204));
        assert!(plan.transforms_status(404));
        assert!(!plan.transforms_status(400));
        assert_eq!(plan.remap(404), 200, "applied once, not chained");
        assert_eq!(plan.remap(200), 204);
        assert_eq!(plan.remap(500), 500);
    }
}
