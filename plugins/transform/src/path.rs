//! Dotted paths into JSON documents, and the changes made through them.
//!
//! A path names fields from a document's root object: `user.address.city`. `[*]` after a field
//! steps into every element of the array it holds: `items[*].price` is the `price` of each
//! element of `items`, `rows[*][*].v` reaches into arrays of arrays. A field name may hold any
//! character; `.`, `[`, `]` and `\` are written `\.`, `\[`, `\]` and `\\` (`"a\\.b"` in a TOML
//! basic string, `'a\.b'` in a literal one, names the single field `a.b`).
//!
//! What the module offers, each a plain function of a path and a document so other filters can
//! use it:
//!
//! - [`Path::parse`]: syntax, checked once when the config is read;
//! - [`FieldPath`]: a path that ends in a field name, and the changes made at it: remove, rename,
//!   set, move ([`FieldPath::remove`], ...);
//! - [`Projection`]: the part of a document that a list of paths reaches (an allow list).
//!
//! Nothing here recurses deeper than a path is long (at most [`MAX_SEGMENTS`]), whatever the
//! document's nesting, and nothing panics on any document.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// Most segments (field names and `[*]`) one path may have.
pub const MAX_SEGMENTS: usize = 32;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// The field of this name.
    Key(String),
    /// Every element of an array (`[*]`).
    Each,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<Segment>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// Nothing at all.
    Empty,
    /// `a..b`, `.a`, `a.`, `a.[*]`: no name at this byte.
    MissingName(usize),
    /// `[*]` with no field before it.
    LeadingEach,
    /// `[0]`, `[name]`, `[` at this byte.
    Selector(usize),
    /// `]` outside `[*]`, at this byte.
    StrayBracket(usize),
    /// `a[*]b`: something other than `.` or `[` at this byte.
    AfterEach(usize),
    /// `\x` at this byte.
    Escape(usize, char),
    /// A `\` at the end.
    TrailingEscape,
    /// Longer than [`MAX_SEGMENTS`].
    TooLong,
    /// `items[*]` where a field is needed.
    EndsWithEach,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the path is empty"),
            Self::MissingName(at) => write!(f, "a field name is missing at byte {at}"),
            Self::LeadingEach => f.write_str(
                "a path starts with a field name, not `[*]` (a root array's elements are handled one by one already)",
            ),
            Self::Selector(at) => write!(
                f,
                "`[` at byte {at}: only `[*]` (every element of an array) is supported"
            ),
            Self::StrayBracket(at) => write!(
                f,
                "`]` at byte {at} has no `[`; write `\\]` for a `]` in a field name"
            ),
            Self::AfterEach(at) => write!(
                f,
                "byte {at}: `[*]` must be followed by `.`, `[*]` or the end"
            ),
            Self::Escape(at, c) => write!(
                f,
                "`\\{c}` at byte {at} is not an escape (`\\.`, `\\[`, `\\]` and `\\\\` are)"
            ),
            Self::TrailingEscape => f.write_str("the path ends with a lone `\\`"),
            Self::TooLong => write!(f, "more than {MAX_SEGMENTS} segments"),
            Self::EndsWithEach => f.write_str("the path must end with a field name, not `[*]`"),
        }
    }
}

impl std::error::Error for PathError {}

/// Where the parser is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    InName,
    AfterDot,
    AfterEach,
}

impl Path {
    /// Parses `text` (see the [module docs](self) for the syntax).
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let mut segments = Vec::new();
        let mut name = String::new();
        let mut state = State::Start;
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    if state == State::AfterEach {
                        return Err(PathError::AfterEach(at));
                    }
                    match chars.next() {
                        Some((_, e @ ('.' | '[' | ']' | '\\'))) => name.push(e),
                        Some((_, other)) => return Err(PathError::Escape(at, other)),
                        None => return Err(PathError::TrailingEscape),
                    }
                    state = State::InName;
                }
                '.' => match state {
                    State::InName => {
                        segments.push(Segment::Key(std::mem::take(&mut name)));
                        state = State::AfterDot;
                    }
                    State::AfterEach => state = State::AfterDot,
                    State::Start | State::AfterDot => return Err(PathError::MissingName(at)),
                },
                '[' => {
                    match state {
                        State::Start => return Err(PathError::LeadingEach),
                        State::AfterDot => return Err(PathError::MissingName(at)),
                        State::InName => segments.push(Segment::Key(std::mem::take(&mut name))),
                        State::AfterEach => {}
                    }
                    match (chars.next(), chars.next()) {
                        (Some((_, '*')), Some((_, ']'))) => segments.push(Segment::Each),
                        _ => return Err(PathError::Selector(at)),
                    }
                    state = State::AfterEach;
                }
                ']' => return Err(PathError::StrayBracket(at)),
                c => {
                    if state == State::AfterEach {
                        return Err(PathError::AfterEach(at));
                    }
                    name.push(c);
                    state = State::InName;
                }
            }
            if segments.len() > MAX_SEGMENTS {
                return Err(PathError::TooLong);
            }
        }
        match state {
            State::Start => return Err(PathError::Empty),
            State::AfterDot => return Err(PathError::MissingName(text.len())),
            State::InName => segments.push(Segment::Key(name)),
            State::AfterEach => {}
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(PathError::TooLong);
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The steps, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The text the path was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path holds `[*]`.
    pub fn has_each(&self) -> bool {
        self.segments.contains(&Segment::Each)
    }

    /// Whether one of the two paths is the other or lies inside it (`a` and `a.b`): changing
    /// one may change what the other names.
    pub fn overlaps(&self, other: &Path) -> bool {
        let n = self.segments.len().min(other.segments.len());
        self.segments[..n] == other.segments[..n]
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Writes `name` as one path segment, escaping what the syntax reserves.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '.' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A path that ends in a field name: where a field is removed, renamed, set or moved.
///
/// It splits at its last `[*]`: the *scope* before it picks the objects to change (the root
/// object, or each element an `[*]` reaches), the field names after it lead, within each of
/// those, to the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    path: Path,
    /// How many leading segments are the scope (0, or up to and including the last `[*]`).
    scope_len: usize,
    /// The field names between the scope and the field.
    parents: Vec<String>,
    /// The field.
    name: String,
}

impl FieldPath {
    /// Parses `text`, which must end with a field name.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        Self::new(Path::parse(text)?)
    }

    /// A field path from a parsed path.
    pub fn new(path: Path) -> Result<Self, PathError> {
        let scope_len = path
            .segments
            .iter()
            .rposition(|s| *s == Segment::Each)
            .map_or(0, |i| i + 1);
        // Past the last `[*]` there are only names.
        let mut names: Vec<String> = path.segments[scope_len..]
            .iter()
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.clone()),
                Segment::Each => None,
            })
            .collect();
        let Some(name) = names.pop() else {
            return Err(PathError::EndsWithEach);
        };
        let parents = names;
        Ok(Self {
            path,
            scope_len,
            parents,
            name,
        })
    }

    /// The whole path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The segments up to and including the last `[*]` (empty without one).
    pub fn scope(&self) -> &[Segment] {
        &self.path.segments[..self.scope_len]
    }

    /// The field's name (the last segment).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path of the field `new_name` next to this one (what a rename produces).
    pub fn sibling(&self, new_name: &str) -> FieldPath {
        let mut segments = self.path.segments.clone();
        if let Some(last) = segments.last_mut() {
            *last = Segment::Key(new_name.to_owned());
        }
        let cut = self.path.text.len() - escaped_len(&self.name);
        let text = format!("{}{}", &self.path.text[..cut], escape(new_name));
        FieldPath {
            path: Path { text, segments },
            scope_len: self.scope_len,
            parents: self.parents.clone(),
            name: new_name.to_owned(),
        }
    }

    /// Removes the field wherever the path reaches it. Returns whether anything was removed.
    pub fn remove(&self, root: &mut Map<String, Value>) -> bool {
        let mut changed = false;
        each_scope(root, self.scope(), &mut |object| {
            if let Some(parent) = walk(object, &self.parents) {
                changed |= parent.shift_remove(&self.name).is_some();
            }
        });
        changed
    }

    /// Renames the field to `new_name` in place (same position among its siblings); a field
    /// already called `new_name` there is replaced. Returns whether anything changed.
    pub fn rename(&self, root: &mut Map<String, Value>, new_name: &str) -> bool {
        let mut changed = false;
        each_scope(root, self.scope(), &mut |object| {
            if let Some(parent) = walk(object, &self.parents) {
                changed |= rename_field(parent, &self.name, new_name);
            }
        });
        changed
    }

    /// Sets the field to `value`, creating missing objects on the way. Where the way is blocked
    /// by a value that is not an object, nothing is set. Returns whether anything changed.
    pub fn set(&self, root: &mut Map<String, Value>, value: &Value) -> bool {
        let mut changed = false;
        each_scope(root, self.scope(), &mut |object| {
            if let Some(parent) = walk_or_create(object, &self.parents)
                && parent.get(&self.name) != Some(value)
            {
                parent.insert(self.name.clone(), value.clone());
                changed = true;
            }
        });
        changed
    }

    /// Moves the field to `to`, which must have the same scope (checked by
    /// [`FieldPath::can_move_to`]; otherwise nothing happens). A field already at `to` is
    /// replaced; missing objects on the way to `to` are created; when a value that is not an
    /// object blocks the way, the field stays where it was. Returns whether anything changed.
    pub fn move_to(&self, root: &mut Map<String, Value>, to: &FieldPath) -> bool {
        if !self.can_move_to(to) {
            return false;
        }
        let mut changed = false;
        each_scope(root, self.scope(), &mut |object| {
            let Some(parent) = walk(object, &self.parents) else {
                return;
            };
            let Some(index) = parent.keys().position(|k| *k == self.name) else {
                return;
            };
            let Some(value) = parent.shift_remove(&self.name) else {
                return;
            };
            match walk_or_create(object, &to.parents) {
                Some(target) => {
                    target.insert(to.name.clone(), value);
                    changed = true;
                }
                // Back where it was: the way there is unchanged, since a blocked walk creates
                // nothing (objects are only created past the last existing step).
                None => {
                    if let Some(parent) = walk(object, &self.parents) {
                        parent.shift_insert(index, self.name.clone(), value);
                    }
                }
            }
        });
        changed
    }

    /// Whether [`FieldPath::move_to`] can move this field to `to`: both must pick the same
    /// objects, so the field moves within each of them.
    pub fn can_move_to(&self, to: &FieldPath) -> bool {
        self.scope() == to.scope()
    }

    /// The value of the field, for a path without `[*]`.
    pub fn get<'a>(&self, root: &'a Map<String, Value>) -> Option<&'a Value> {
        if self.scope_len > 0 {
            return None;
        }
        let mut object = root;
        for key in &self.parents {
            object = object.get(key)?.as_object()?;
        }
        object.get(&self.name)
    }

    /// Takes the field out of the document, for a path without `[*]`.
    pub fn take(&self, root: &mut Map<String, Value>) -> Option<Value> {
        if self.scope_len > 0 {
            return None;
        }
        walk(root, &self.parents)?.shift_remove(&self.name)
    }

    /// `value` inside objects along the path (`data.items` gives `{"data":{"items":value}}`),
    /// for a path without `[*]`; with one, `value` as it is.
    pub fn wrap(&self, value: Value) -> Value {
        if self.scope_len > 0 {
            return value;
        }
        let mut wrapped = value;
        for key in self.parents.iter().chain([&self.name]).rev() {
            let mut object = Map::with_capacity(1);
            object.insert(key.clone(), wrapped);
            wrapped = Value::Object(object);
        }
        wrapped
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.fmt(f)
    }
}

/// How many bytes `name` takes in path syntax.
fn escaped_len(name: &str) -> usize {
    name.len()
        + name
            .bytes()
            .filter(|b| matches!(b, b'.' | b'[' | b']' | b'\\'))
            .count()
}

/// Calls `f` with every object `scope` reaches from `root` (`root` itself for an empty scope).
/// Recurses once per segment of `scope`, never deeper.
fn each_scope(
    root: &mut Map<String, Value>,
    scope: &[Segment],
    f: &mut dyn FnMut(&mut Map<String, Value>),
) {
    match scope.split_first() {
        None => f(root),
        Some((Segment::Key(key), rest)) => {
            if let Some(value) = root.get_mut(key) {
                each_value(value, rest, f);
            }
        }
        // A path never starts with `[*]`: an object has no elements.
        Some((Segment::Each, _)) => {}
    }
}

fn each_value(value: &mut Value, scope: &[Segment], f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match (scope.split_first(), value) {
        (None, Value::Object(object)) => f(object),
        (Some((Segment::Key(key), rest)), Value::Object(object)) => {
            if let Some(value) = object.get_mut(key) {
                each_value(value, rest, f);
            }
        }
        (Some((Segment::Each, rest)), Value::Array(items)) => {
            for item in items {
                each_value(item, rest, f);
            }
        }
        _ => {}
    }
}

/// The object at `keys` below `object`, if every step is there and is an object.
fn walk<'a>(
    object: &'a mut Map<String, Value>,
    keys: &[String],
) -> Option<&'a mut Map<String, Value>> {
    let mut current = object;
    for key in keys {
        match current.get_mut(key) {
            Some(Value::Object(next)) => current = next,
            _ => return None,
        }
    }
    Some(current)
}

/// Like [`walk`], creating missing objects; `None` where a step holds something else (and
/// then nothing was created: creating starts only past the last step that exists).
fn walk_or_create<'a>(
    object: &'a mut Map<String, Value>,
    keys: &[String],
) -> Option<&'a mut Map<String, Value>> {
    let mut current = object;
    for key in keys {
        let next = current
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        match next {
            Value::Object(next) => current = next,
            _ => return None,
        }
    }
    Some(current)
}

/// Renames `old` to `new` in `object`, keeping its position; an existing `new` is replaced.
fn rename_field(object: &mut Map<String, Value>, old: &str, new: &str) -> bool {
    if old == new {
        return false;
    }
    let Some(mut index) = object.keys().position(|k| k == old) else {
        return false;
    };
    let Some(value) = object.shift_remove(old) else {
        return false;
    };
    if let Some(existing) = object.keys().position(|k| k == new) {
        object.shift_remove(new);
        if existing < index {
            index -= 1;
        }
    }
    object.shift_insert(index, new.to_owned(), value);
    true
}

/// The part of a document a set of paths reaches: what an allow list keeps.
///
/// A field a path names is kept whole. On the way there, objects keep only the fields some path
/// continues into, and arrays under `[*]` keep their elements, each cut down the same way. A
/// value whose type does not fit the path (a string where the path steps into an object, an
/// object where it expects an array) is not reached, and is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    root: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// A path ends here: the value is kept whole.
    whole: bool,
    fields: BTreeMap<String, Node>,
    each: Option<Box<Node>>,
}

impl Projection {
    /// The projection onto `paths`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Self {
        let mut root = Node::default();
        for path in paths {
            let mut node = &mut root;
            for segment in path.segments() {
                node = match segment {
                    Segment::Key(key) => node.fields.entry(key.clone()).or_default(),
                    Segment::Each => node.each.get_or_insert_with(Box::default),
                };
            }
            node.whole = true;
        }
        Self { root }
    }

    /// Cuts `object` down to what the paths reach. `changed` is set when anything was dropped.
    pub fn apply(&self, object: Map<String, Value>, changed: &mut bool) -> Map<String, Value> {
        if self.root.whole {
            return object;
        }
        project_object(object, &self.root, changed)
    }
}

/// Recurses once per level of the projection's paths, never deeper.
fn project(value: Value, node: &Node, changed: &mut bool) -> Option<Value> {
    if node.whole {
        return Some(value);
    }
    match value {
        Value::Object(object) if !node.fields.is_empty() => {
            Some(Value::Object(project_object(object, node, changed)))
        }
        Value::Array(items) => match &node.each {
            Some(each) => {
                let before = items.len();
                let kept: Vec<Value> = items
                    .into_iter()
                    .filter_map(|item| project(item, each, changed))
                    .collect();
                *changed |= kept.len() != before;
                Some(Value::Array(kept))
            }
            None => {
                *changed = true;
                None
            }
        },
        _ => {
            *changed = true;
            None
        }
    }
}

fn project_object(
    object: Map<String, Value>,
    node: &Node,
    changed: &mut bool,
) -> Map<String, Value> {
    let mut kept = Map::new();
    for (key, value) in object {
        match node
            .fields
            .get(&key)
            .and_then(|child| project(value, child, changed))
        {
            Some(value) => {
                kept.insert(key, value);
            }
            None => *changed = true,
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }
    }

    fn field(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    #[test]
    fn paths_parse_with_each_and_escapes() {
        let key = |k: &str| Segment::Key(k.to_owned());
        assert_eq!(
            Path::parse("user.address.city").unwrap().segments(),
            [key("user"), key("address"), key("city")]
        );
        assert_eq!(
            Path::parse("items[*].price").unwrap().segments(),
            [key("items"), Segment::Each, key("price")]
        );
        assert_eq!(
            Path::parse("rows[*][*].v").unwrap().segments(),
            [key("rows"), Segment::Each, Segment::Each, key("v")]
        );
        assert_eq!(
            Path::parse(r"a\.b.c\[0\]\\").unwrap().segments(),
            [key("a.b"), key(r"c[0]\")]
        );
        assert_eq!(
            Path::parse("héllo wörld.*.$ref").unwrap().segments(),
            [key("héllo wörld"), key("*"), key("$ref")]
        );
        assert_eq!(Path::parse("items[*]").unwrap().segments().len(), 2);
    }

    #[test]
    fn malformed_paths_say_where() {
        for (text, error) in [
            ("", PathError::Empty),
            (".a", PathError::MissingName(0)),
            ("a..b", PathError::MissingName(2)),
            ("a.", PathError::MissingName(2)),
            ("a.[*]", PathError::MissingName(2)),
            ("[*].a", PathError::LeadingEach),
            ("a[0]", PathError::Selector(1)),
            ("a[", PathError::Selector(1)),
            ("a[*", PathError::Selector(1)),
            ("a]", PathError::StrayBracket(1)),
            ("a[*]b", PathError::AfterEach(4)),
            (r"a\n", PathError::Escape(1, 'n')),
            ("a\\", PathError::TrailingEscape),
        ] {
            assert_eq!(Path::parse(text), Err(error), "{text:?}");
        }
        let long = vec!["a"; MAX_SEGMENTS + 1].join(".");
        assert_eq!(Path::parse(&long), Err(PathError::TooLong));
        let each = format!("a{}", "[*]".repeat(MAX_SEGMENTS));
        assert_eq!(Path::parse(&each), Err(PathError::TooLong));
        assert!(Path::parse(&vec!["a"; MAX_SEGMENTS].join(".")).is_ok());
        assert_eq!(FieldPath::parse("a[*]"), Err(PathError::EndsWithEach));
        // A huge path fails fast on its length, not by growing without bound.
        assert_eq!(Path::parse(&"a.".repeat(100_000)), Err(PathError::TooLong));
    }

    #[test]
    fn overlap_is_one_path_inside_the_other() {
        let p = |t| Path::parse(t).unwrap();
        assert!(p("a").overlaps(&p("a.b")));
        assert!(p("a.b").overlaps(&p("a")));
        assert!(p("a.b").overlaps(&p("a.b")));
        assert!(!p("a.b").overlaps(&p("a.c")));
        assert!(!p("ab").overlaps(&p("a")));
        assert!(p("items[*].a").overlaps(&p("items")));
        assert!(!p("items[*].a").overlaps(&p("items.a")));
    }

    #[test]
    fn remove_reaches_every_element_and_skips_what_does_not_fit() {
        let mut doc = object(json!({
            "user": { "password": "x", "name": "n" },
            "items": [ { "secret": 1, "id": 1 }, "scalar", { "id": 2 }, [ { "secret": 3 } ] ],
            "other": "string",
        }));
        assert!(field("user.password").remove(&mut doc));
        assert!(field("items[*].secret").remove(&mut doc));
        assert!(!field("other.secret").remove(&mut doc));
        assert!(!field("missing.secret").remove(&mut doc));
        assert_eq!(
            Value::Object(doc),
            json!({
                "user": { "name": "n" },
                "items": [ { "id": 1 }, "scalar", { "id": 2 }, [ { "secret": 3 } ] ],
                "other": "string",
            })
        );
    }

    #[test]
    fn rename_keeps_the_position_and_replaces_an_existing_name() {
        let mut doc = object(json!({ "a": 1, "b": 2, "c": 3 }));
        assert!(field("b").rename(&mut doc, "z"));
        assert_eq!(doc.keys().collect::<Vec<_>>(), ["a", "z", "c"]);
        assert!(field("c").rename(&mut doc, "a"));
        assert_eq!(Value::Object(doc.clone()), json!({ "z": 2, "a": 3 }));
        assert_eq!(doc.keys().collect::<Vec<_>>(), ["z", "a"]);
        assert!(!field("nope").rename(&mut doc, "x"));
        let mut doc = object(json!({ "items": [ { "p": 1, "q": 0 }, { "q": 0 } ] }));
        assert!(field("items[*].p").rename(&mut doc, "price"));
        assert_eq!(
            Value::Object(doc),
            json!({ "items": [ { "price": 1, "q": 0 }, { "q": 0 } ] })
        );
    }

    #[test]
    fn set_creates_objects_but_never_overwrites_a_value_in_the_way() {
        let mut doc = object(json!({ "meta": "text", "items": [ {}, 5, { "c": "USD" } ] }));
        assert!(field("a.b.c").set(&mut doc, &json!(1)));
        assert!(!field("meta.source").set(&mut doc, &json!("gw")));
        assert!(field("items[*].c").set(&mut doc, &json!("EUR")));
        assert!(
            !field("items[*].c").set(&mut doc, &json!("EUR")),
            "already so"
        );
        assert!(!field("none[*].c").set(&mut doc, &json!(1)));
        assert_eq!(
            Value::Object(doc),
            json!({
                "meta": "text",
                "items": [ { "c": "EUR" }, 5, { "c": "EUR" } ],
                "a": { "b": { "c": 1 } },
            })
        );
    }

    #[test]
    fn move_flattens_nests_and_puts_back_what_cannot_move() {
        let mut doc = object(json!({
            "id": 1,
            "address": { "city": "Lyon", "zip": "69001" },
            "price": { "amount": 5, "currency": "EUR" },
            "blocker": 3,
        }));
        assert!(field("address.city").move_to(&mut doc, &field("city")));
        assert!(field("price.amount").move_to(&mut doc, &field("price")));
        assert!(field("id").move_to(&mut doc, &field("meta.id")));
        assert!(!field("address.zip").move_to(&mut doc, &field("blocker.zip")));
        assert_eq!(
            Value::Object(doc.clone()),
            json!({
                "address": { "zip": "69001" },
                "price": 5,
                "blocker": 3,
                "city": "Lyon",
                "meta": { "id": 1 },
            })
        );
        assert_eq!(
            doc["address"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["zip"]
        );
        // Into itself: the field becomes the inside of a new object of its own name.
        let mut doc = object(json!({ "a": 1, "b": 2 }));
        assert!(field("a").move_to(&mut doc, &field("a.value")));
        assert_eq!(Value::Object(doc), json!({ "b": 2, "a": { "value": 1 } }));
        // A blocked move leaves the field in its place among its siblings.
        let mut doc = object(json!({ "x": 1, "y": 2, "z": 3 }));
        assert!(!field("y").move_to(&mut doc, &field("x.y")));
        assert_eq!(doc.keys().collect::<Vec<_>>(), ["x", "y", "z"]);
    }

    #[test]
    fn move_within_each_element() {
        let mut doc = object(json!({ "items": [
            { "product": { "name": "tea", "sku": "T1" } },
            { "product": "unknown" },
            { "other": 1 },
        ] }));
        let from = field("items[*].product.name");
        let to = field("items[*].name");
        assert!(from.can_move_to(&to));
        assert!(from.move_to(&mut doc, &to));
        assert_eq!(
            Value::Object(doc.clone()),
            json!({ "items": [
                { "product": { "sku": "T1" }, "name": "tea" },
                { "product": "unknown" },
                { "other": 1 },
            ] })
        );
        assert!(!from.can_move_to(&field("name")));
        assert!(!field("name").move_to(&mut doc, &to), "scopes differ");
    }

    #[test]
    fn get_take_and_wrap_follow_plain_paths() {
        let mut doc = object(json!({ "data": { "result": [1, 2] }, "meta": {} }));
        assert_eq!(field("data.result").get(&doc), Some(&json!([1, 2])));
        assert_eq!(field("data.none").get(&doc), None);
        assert_eq!(field("items[*].a").get(&doc), None);
        assert_eq!(field("data.result").take(&mut doc), Some(json!([1, 2])));
        assert_eq!(Value::Object(doc), json!({ "data": {}, "meta": {} }));
        assert_eq!(
            field("result.data").wrap(json!([1])),
            json!({ "result": { "data": [1] } })
        );
    }

    #[test]
    fn sibling_renames_the_last_segment() {
        let s = field(r"items[*].a\.b").sibling("x.y");
        assert_eq!(s.path().as_str(), r"items[*].x\.y");
        assert_eq!(s.path(), &Path::parse(r"items[*].x\.y").unwrap());
        assert_eq!(s.name(), "x.y");
        assert_eq!(field("a").sibling("b").path().as_str(), "b");
    }

    #[test]
    fn projection_keeps_what_the_paths_reach() {
        let paths: Vec<Path> = ["id", "user.name", "items[*].sku", "tags", "matrix[*][*].v"]
            .iter()
            .map(|p| Path::parse(p).unwrap())
            .collect();
        let projection = Projection::new(&paths);
        let doc = object(json!({
            "id": 7,
            "secret": "s",
            "user": { "name": "n", "password": "p" },
            "items": [ { "sku": "A", "cost": 1 }, "loose", { "cost": 2 } ],
            "tags": [ "x", { "any": "thing" } ],
            "matrix": [ [ { "v": 1, "w": 2 } ], "no" ],
        }));
        let mut changed = false;
        let kept = projection.apply(doc, &mut changed);
        assert!(changed);
        assert_eq!(
            Value::Object(kept.clone()),
            json!({
                "id": 7,
                "user": { "name": "n" },
                "items": [ { "sku": "A" }, {} ],
                "tags": [ "x", { "any": "thing" } ],
                "matrix": [ [ { "v": 1 } ] ],
            })
        );
        let mut changed = false;
        assert_eq!(projection.apply(kept.clone(), &mut changed), kept);
        assert!(!changed, "a document already in shape is unchanged");
        // A value of the wrong type where the path steps in is not reached.
        let mut changed = false;
        let kept = projection.apply(
            object(json!({ "user": "admin-token", "items": { "sku": 1 } })),
            &mut changed,
        );
        assert!(changed);
        assert_eq!(Value::Object(kept), json!({}));
    }
}
