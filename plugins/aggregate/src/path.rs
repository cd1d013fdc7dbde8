//! Field paths into JSON documents: `user.address.city`, `items[*].product_id`, `items[0]`.
//!
//! A path is dot-separated keys; a key may be followed by `[*]` (every element of the array it
//! names) or `[N]` (one element). Keys are any text without `.`, `[`, `]`, `{`, `}` or
//! whitespace. Paths select; [`Tree`] keeps (allow) or drops (deny) what a set of paths selects.

use std::fmt;

use serde_json::{Map, Value};

/// Longest path accepted, in segments; deeper documents are not walked further.
pub const MAX_SEGMENTS: usize = 32;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object key.
    Key(String),
    /// Every element of an array.
    Each,
    /// One element of an array.
    Index(usize),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    steps: Vec<Step>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for step in &self.steps {
            match step {
                Step::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Step::Each => f.write_str("[*]")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

fn key_char(c: char) -> bool {
    !matches!(c, '.' | '[' | ']' | '{' | '}') && !c.is_whitespace() && !c.is_control()
}

impl Path {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a path is empty".to_owned());
        }
        let mut steps = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() {
                return Err(format!("`{text}` has an empty key"));
            }
            if let Some(bad) = key.chars().find(|c| !key_char(*c)) {
                return Err(format!("`{text}`: a key may not hold {bad:?}"));
            }
            steps.push(Step::Key(key.to_owned()));
            while !rest.is_empty() {
                let close = rest
                    .find(']')
                    .ok_or_else(|| format!("`{text}` has an unclosed `[`"))?;
                let inner = &rest[1..close];
                steps.push(match inner {
                    "*" => Step::Each,
                    n => Step::Index(n.parse().map_err(|_| {
                        format!("`{text}`: `[{n}]` is neither `[*]` nor an array index")
                    })?),
                });
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("`{text}`: `{rest}` after `]` needs a `.`"));
                }
            }
        }
        if steps.len() > MAX_SEGMENTS {
            return Err(format!("`{text}` is deeper than {MAX_SEGMENTS} steps"));
        }
        Ok(Self { steps })
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// A path of these steps.
    pub fn from_steps(steps: Vec<Step>) -> Self {
        Self { steps }
    }

    /// Whether any step is `[*]`.
    pub fn has_each(&self) -> bool {
        self.steps.contains(&Step::Each)
    }

    /// Every value the path selects, in document order.
    pub fn select<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        let mut found = Vec::new();
        select(value, &self.steps, &mut found);
        found
    }

    /// The one value the path selects, if it selects exactly one.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        let found = self.select(value);
        match found.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Sets the value at this path (no `[*]`), creating objects on the way; `false` when the
    /// way is blocked (a step into something that is not an object or a long enough array).
    pub fn set(&self, root: &mut Value, new: Value) -> bool {
        let Some((last, parents)) = self.steps.split_last() else {
            return false;
        };
        let mut at = root;
        for step in parents {
            at = match (step, at) {
                (Step::Key(k), Value::Object(map)) => map
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                (Step::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
        }
        match (last, at) {
            (Step::Key(k), Value::Object(map)) => {
                map.insert(k.clone(), new);
                true
            }
            (Step::Index(i), Value::Array(items)) if *i < items.len() => {
                items[*i] = new;
                true
            }
            _ => false,
        }
    }

    /// Calls `f` on every value the path selects, mutably.
    pub fn for_each_mut(&self, root: &mut Value, f: &mut dyn FnMut(&mut Value)) {
        for_each_mut(root, &self.steps, f);
    }
}

fn select<'a>(value: &'a Value, steps: &[Step], found: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        found.push(value);
        return;
    };
    match (step, value) {
        (Step::Key(k), Value::Object(map)) => {
            if let Some(v) = map.get(k) {
                select(v, rest, found);
            }
        }
        (Step::Each, Value::Array(items)) => {
            for v in items {
                select(v, rest, found);
            }
        }
        (Step::Index(i), Value::Array(items)) => {
            if let Some(v) = items.get(*i) {
                select(v, rest, found);
            }
        }
        _ => {}
    }
}

fn for_each_mut(value: &mut Value, steps: &[Step], f: &mut dyn FnMut(&mut Value)) {
    let Some((step, rest)) = steps.split_first() else {
        f(value);
        return;
    };
    match (step, value) {
        (Step::Key(k), Value::Object(map)) => {
            if let Some(v) = map.get_mut(k) {
                for_each_mut(v, rest, f);
            }
        }
        (Step::Each, Value::Array(items)) => {
            for v in items {
                for_each_mut(v, rest, f);
            }
        }
        (Step::Index(i), Value::Array(items)) => {
            if let Some(v) = items.get_mut(*i) {
                for_each_mut(v, rest, f);
            }
        }
        _ => {}
    }
}

/// A set of paths as a tree, for keeping or dropping what they select in one walk.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    /// Whether a path ends here (the whole subtree is selected).
    end: bool,
    children: Vec<(Step, Tree)>,
}

impl Tree {
    /// The tree of `paths`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Self {
        let mut tree = Self::default();
        for path in paths {
            let mut node = &mut tree;
            for step in &path.steps {
                let i = match node.children.iter().position(|(s, _)| s == step) {
                    Some(i) => i,
                    None => {
                        node.children.push((step.clone(), Self::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[i].1;
            }
            node.end = true;
        }
        tree
    }

    /// Only what the paths select, with the objects and arrays on the way to it. An array
    /// step keeps every element (`[*]`) or one (`[N]`), each reduced the same way.
    pub fn keep(&self, value: Value) -> Value {
        if self.end {
            return value;
        }
        match value {
            Value::Object(map) => {
                let mut kept = Map::new();
                for (k, v) in map {
                    if let Some(sub) = self.child(&Step::Key(k.clone())) {
                        kept.insert(k, sub.keep(v));
                    }
                }
                Value::Object(kept)
            }
            Value::Array(items) => {
                let each = self.child(&Step::Each);
                let kept: Vec<Value> = items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let sub = self.child(&Step::Index(i)).or(each)?;
                        Some(sub.keep(v))
                    })
                    .collect();
                Value::Array(kept)
            }
            // A path that runs past a scalar selects nothing of it.
            _ => Value::Null,
        }
    }

    /// Everything but what the paths select.
    pub fn drop_from(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (step, sub) in &self.children {
                    if let Step::Key(k) = step {
                        if sub.end {
                            map.shift_remove(k);
                        } else if let Some(v) = map.get_mut(k) {
                            sub.drop_from(v);
                        }
                    }
                }
            }
            Value::Array(items) => {
                for (step, sub) in &self.children {
                    match step {
                        Step::Each if sub.end => items.clear(),
                        Step::Each => items.iter_mut().for_each(|v| sub.drop_from(v)),
                        Step::Index(i) if !sub.end => {
                            if let Some(v) = items.get_mut(*i) {
                                sub.drop_from(v);
                            }
                        }
                        _ => {}
                    }
                }
                // Single elements are removed last, highest index first, so indices hold.
                let mut gone: Vec<usize> = self
                    .children
                    .iter()
                    .filter_map(|(s, sub)| match s {
                        Step::Index(i) if sub.end && *i < items.len() => Some(*i),
                        _ => None,
                    })
                    .collect();
                gone.sort_unstable();
                gone.dedup();
                for i in gone.into_iter().rev() {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }

    fn child(&self, step: &Step) -> Option<&Self> {
        self.children
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(text: &str) -> Path {
        Path::parse(text).unwrap()
    }

    #[test]
    fn paths_parse_and_print_back() {
        for text in ["a", "a.b", "items[*].id", "m[0][1].x", "a-b_c.d9"] {
            assert_eq!(p(text).to_string(), text);
        }
        for (bad, says) in [
            ("", "empty"),
            ("a..b", "empty key"),
            (".a", "empty key"),
            ("a[", "unclosed"),
            ("a[x]", "neither"),
            ("a[0]b", "needs a `.`"),
            ("a b", "may not hold"),
            ("{x}", "may not hold"),
        ] {
            let e = Path::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let deep = vec!["k"; MAX_SEGMENTS + 1].join(".");
        assert!(Path::parse(&deep).is_err());
    }

    #[test]
    fn select_walks_keys_elements_and_indices() {
        let doc = json!({"o": {"items": [{"id": 1}, {"id": 2}, {"x": 3}]}, "n": 5});
        assert_eq!(p("o.items[*].id").select(&doc), vec![&json!(1), &json!(2)]);
        assert_eq!(p("o.items[1].id").get(&doc), Some(&json!(2)));
        assert_eq!(p("n").get(&doc), Some(&json!(5)));
        assert!(p("n.deeper").select(&doc).is_empty());
        assert!(p("o.items[9]").get(&doc).is_none());
        assert!(
            p("o.items[*].id").get(&doc).is_none(),
            "two values are not one"
        );
    }

    #[test]
    fn set_creates_objects_on_the_way_and_refuses_a_blocked_way() {
        let mut doc = json!({"a": {"b": 1}, "s": "text", "l": [{}]});
        assert!(p("a.c.d").set(&mut doc, json!(2)));
        assert!(p("l[0].k").set(&mut doc, json!(3)));
        assert!(!p("s.x").set(&mut doc, json!(4)));
        assert!(!p("l[5].k").set(&mut doc, json!(4)));
        assert_eq!(
            doc,
            json!({"a": {"b": 1, "c": {"d": 2}}, "s": "text", "l": [{"k": 3}]})
        );
    }

    #[test]
    fn keep_retains_only_the_selected_fields_and_the_way_to_them() {
        let doc = json!({"id": 1, "secret": "x", "addr": {"city": "Oslo", "street": "y"},
                         "items": [{"id": 1, "cost": 2}, {"id": 2, "cost": 3}], "tags": ["a", "b"]});
        let tree = Tree::new(&[p("id"), p("addr.city"), p("items[*].id"), p("tags[1]")]);
        assert_eq!(
            tree.keep(doc),
            json!({"id": 1, "addr": {"city": "Oslo"}, "items": [{"id": 1}, {"id": 2}], "tags": ["b"]})
        );
    }

    #[test]
    fn drop_removes_the_selected_fields_only() {
        let mut doc = json!({"id": 1, "secret": "x", "addr": {"city": "Oslo", "street": "y"},
                             "items": [{"id": 1, "cost": 2}, {"id": 2, "cost": 3}], "tags": ["a", "b", "c"]});
        let tree = Tree::new(&[
            p("secret"),
            p("addr.street"),
            p("items[*].cost"),
            p("tags[0]"),
            p("tags[2]"),
            p("missing.x"),
        ]);
        tree.drop_from(&mut doc);
        assert_eq!(
            doc,
            json!({"id": 1, "addr": {"city": "Oslo"}, "items": [{"id": 1}, {"id": 2}], "tags": ["b"]})
        );
    }
}
