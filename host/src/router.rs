//! Method + path → route.
//!
//! Patterns are split into `/`-separated segments: literal (`orders`), parameter (`{id}`, one
//! whole segment) and catch-all (`{*rest}`, the rest of the path, last segment only). At each
//! segment a literal beats a parameter, which beats a catch-all; when the best match for the path
//! does not allow the method, less specific matches that do are tried before answering 405.
//!
//! Two patterns of the same shape (same literals, parameters in the same places) whose methods
//! overlap are a conflict and rejected when the table is built.

use std::collections::HashMap;

use http::Method;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is malformed.
    #[error("invalid path pattern `{pattern}`: {reason}")]
    Invalid {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another route already serves the same paths and methods.
    #[error(
        "`{pattern}` conflicts with route #{other} (`{other_pattern}`): same paths and overlapping methods"
    )]
    Conflict {
        /// The pattern being added.
        pattern: String,
        /// Index of the route already there.
        other: usize,
        /// Its pattern.
        other_pattern: String,
    },
}

/// A successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<T> {
    /// The value stored for the route (in the gateway: an index into the route list).
    pub value: T,
    /// The route's pattern.
    pub pattern: String,
    /// Path parameters, decoded, in pattern order.
    pub params: Vec<(String, String)>,
}

/// A failed lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// No route has a pattern matching the path.
    NotFound,
    /// Some route matches the path but none allows the method.
    MethodNotAllowed(Vec<Method>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    Param(String),
    CatchAll(String),
}

#[derive(Debug, Clone)]
struct Entry<T> {
    /// Empty means any method.
    methods: Vec<Method>,
    pattern: String,
    param_names: Vec<String>,
    value: T,
}

#[derive(Debug, Clone)]
struct Node<T> {
    literals: HashMap<String, Node<T>>,
    param: Option<Box<Node<T>>>,
    catch_all: Vec<Entry<T>>,
    entries: Vec<Entry<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literals: HashMap::new(),
            param: None,
            catch_all: Vec::new(),
            entries: Vec::new(),
        }
    }
}

/// Builds a [`Router`]; insertion checks patterns and conflicts.
#[derive(Debug, Clone)]
pub struct RouterBuilder<T> {
    root: Node<T>,
}

impl<T> Default for RouterBuilder<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Router<T> {
    root: Node<T>,
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, PatternError> {
    let invalid = |reason| PatternError::Invalid {
        pattern: pattern.to_owned(),
        reason,
    };
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(invalid("must start with '/'"));
    };
    if pattern.contains(['?', '#']) {
        return Err(invalid("must not contain '?' or '#'"));
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut names = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let segment = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
        {
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid("parameter names use letters, digits and '_'"));
            }
            if names.contains(&name) {
                return Err(invalid("parameter name used twice"));
            }
            names.push(name);
            if catch_all {
                if i + 1 != parts.len() {
                    return Err(invalid("a catch-all `{*name}` must be the last segment"));
                }
                Segment::CatchAll(name.to_owned())
            } else {
                Segment::Param(name.to_owned())
            }
        } else if part.contains(['{', '}']) {
            return Err(invalid("a parameter must be a whole segment, like `/{id}`"));
        } else if part.is_empty() && i + 1 != parts.len() {
            return Err(invalid("empty segment ('//')"));
        } else {
            Segment::Literal((*part).to_owned())
        };
        segments.push(segment);
    }
    Ok(segments)
}

fn methods_overlap(a: &[Method], b: &[Method]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
}

impl<T: Clone> RouterBuilder<T> {
    /// Adds a route; `methods` empty means any method.
    pub fn insert(
        &mut self,
        pattern: &str,
        methods: &[Method],
        value: T,
    ) -> Result<(), PatternError>
    where
        T: RouteIndex,
    {
        let segments = parse_pattern(pattern)?;
        let mut node = &mut self.root;
        let mut param_names = Vec::new();
        let mut catch_all = false;
        for segment in segments {
            match segment {
                Segment::Literal(l) => node = node.literals.entry(l).or_default(),
                Segment::Param(p) => {
                    param_names.push(p);
                    node = node.param.get_or_insert_with(Default::default);
                }
                Segment::CatchAll(p) => {
                    param_names.push(p);
                    catch_all = true;
                }
            }
        }
        let list = if catch_all {
            &mut node.catch_all
        } else {
            &mut node.entries
        };
        if let Some(other) = list.iter().find(|e| methods_overlap(&e.methods, methods)) {
            return Err(PatternError::Conflict {
                pattern: pattern.to_owned(),
                other: other.value.index(),
                other_pattern: other.pattern.clone(),
            });
        }
        list.push(Entry {
            methods: methods.to_vec(),
            pattern: pattern.to_owned(),
            param_names,
            value,
        });
        Ok(())
    }

    /// Finishes the table.
    pub fn build(self) -> Router<T> {
        Router { root: self.root }
    }
}

/// Values stored in the router can say which route they are, for conflict messages.
pub trait RouteIndex {
    /// The route's position in the config.
    fn index(&self) -> usize;
}

impl RouteIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

impl<T: Clone> Router<T> {
    /// Finds the route for a method and a percent-encoded path (no query).
    pub fn lookup(&self, method: &Method, path: &str) -> Result<RouteMatch<T>, RouteMiss> {
        let rest = path.strip_prefix('/').unwrap_or(path);
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut allowed: Vec<Method> = Vec::new();
        let mut any_path_match = false;
        let mut values = Vec::new();
        let found = walk(
            &self.root,
            rest,
            &segments,
            0,
            &mut values,
            &mut |entries, values, tail| {
                for e in entries {
                    any_path_match = true;
                    if e.methods.is_empty()
                        || e.methods.contains(method)
                        || (method == Method::HEAD && e.methods.contains(&Method::GET))
                    {
                        let mut params: Vec<(String, String)> = e
                            .param_names
                            .iter()
                            .zip(values.iter())
                            .map(|(n, v)| (n.clone(), decode_param(v)))
                            .collect();
                        if let Some(tail) = tail
                            && let Some(name) = e.param_names.last()
                        {
                            params.push((name.clone(), percent_decode(tail)));
                        }
                        return Some(RouteMatch {
                            value: e.value.clone(),
                            pattern: e.pattern.clone(),
                            params,
                        });
                    }
                    for m in &e.methods {
                        if !allowed.contains(m) {
                            allowed.push(m.clone());
                        }
                    }
                }
                None
            },
        );
        match found {
            Some(m) => Ok(m),
            None if any_path_match => {
                if allowed.contains(&Method::GET) && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
                Err(RouteMiss::MethodNotAllowed(allowed))
            }
            None => Err(RouteMiss::NotFound),
        }
    }
}

type Visit<'v, T> =
    dyn FnMut(&[Entry<T>], &[&'v str], Option<&'v str>) -> Option<RouteMatch<T>> + 'v;

/// Depth-first, most specific first. `values` holds the segments matched by parameters so far.
fn walk<'v, T: Clone>(
    node: &Node<T>,
    rest: &'v str,
    segments: &[&'v str],
    depth: usize,
    values: &mut Vec<&'v str>,
    visit: &mut Visit<'v, T>,
) -> Option<RouteMatch<T>> {
    if depth == segments.len() {
        if let Some(m) = visit(&node.entries, values, None) {
            return Some(m);
        }
    } else {
        let seg = segments[depth];
        if let Some(child) = node.literals.get(seg)
            && let Some(m) = walk(child, rest, segments, depth + 1, values, visit)
        {
            return Some(m);
        }
        if let Some(child) = &node.param
            && !seg.is_empty()
        {
            values.push(seg);
            let m = walk(child, rest, segments, depth + 1, values, visit);
            values.pop();
            if m.is_some() {
                return m;
            }
        }
    }
    if !node.catch_all.is_empty() {
        // The tail is everything from this depth on; segments are consecutive slices of `rest`.
        let tail_start: usize = segments[..depth].iter().map(|s| s.len() + 1).sum();
        let tail = rest.get(tail_start..).unwrap_or("");
        return visit(&node.catch_all, values, Some(tail));
    }
    None
}

/// Decodes a `{param}` segment like [`percent_decode`], except that `%2F` and `%5C` stay
/// encoded: a one-segment parameter never holds a slash or backslash a plugin could use to
/// build a path outside the route (only a catch-all's tail spans segments).
pub fn decode_param(s: &str) -> String {
    let decoded = percent_decode(s);
    if decoded.contains(['/', '\\']) && s.contains('%') {
        let mut out = String::with_capacity(s.len());
        for piece in split_keeping_slashes(s) {
            match piece {
                Ok(escape) => out.push_str(escape),
                Err(text) => out.push_str(&percent_decode(text)),
            }
        }
        return out;
    }
    decoded
}

/// Whether `bytes` starts with an encoded slash or backslash (`%2F`, `%5C`, any case).
pub fn starts_with_escaped_slash(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..]
    )
}

/// Splits `s` around `%2F`/`%5C` escapes (any case): `Ok(escape)` or `Err(text between)`.
fn split_keeping_slashes(s: &str) -> Vec<Result<&str, &str>> {
    let bytes = s.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i + 3 <= bytes.len() {
        if starts_with_escaped_slash(&bytes[i..]) {
            pieces.push(Err(&s[start..i]));
            pieces.push(Ok(&s[i..i + 3]));
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    pieces.push(Err(&s[start..]));
    pieces
}

/// Decodes `%XX` escapes (the `percent-encoding` crate's rule, which the SDK's query parsing
/// shares); invalid escapes stay as written, and a result that is not UTF-8 keeps the raw text.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_or_else(|_| s.to_owned(), std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &[Method])]) -> Router<usize> {
        let mut b = RouterBuilder::default();
        for (i, (pattern, methods)) in routes.iter().enumerate() {
            b.insert(pattern, methods, i)
                .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        }
        b.build()
    }

    fn hit(r: &Router<usize>, method: Method, path: &str) -> (usize, Vec<(String, String)>) {
        let m = r
            .lookup(&method, path)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        (m.value, m.params)
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn literal_param_and_catch_all() {
        let r = router(&[
            ("/", &[]),
            ("/orders", &[]),
            ("/orders/{id}", &[]),
            ("/orders/{id}/items/{item}", &[]),
            ("/static/{*path}", &[]),
        ]);
        assert_eq!(hit(&r, Method::GET, "/"), (0, vec![]));
        assert_eq!(hit(&r, Method::GET, "/orders"), (1, vec![]));
        assert_eq!(hit(&r, Method::GET, "/orders/42"), (2, p(&[("id", "42")])));
        assert_eq!(
            hit(&r, Method::GET, "/orders/42/items/7"),
            (3, p(&[("id", "42"), ("item", "7")]))
        );
        assert_eq!(
            hit(&r, Method::GET, "/static/css/site.css"),
            (4, p(&[("path", "css/site.css")]))
        );
        assert_eq!(hit(&r, Method::GET, "/static/"), (4, p(&[("path", "")])));
        assert_eq!(
            r.lookup(&Method::GET, "/orders/42/items"),
            Err(RouteMiss::NotFound)
        );
        assert_eq!(r.lookup(&Method::GET, "/nope"), Err(RouteMiss::NotFound));
        assert_eq!(
            r.lookup(&Method::GET, "/orders/"),
            Err(RouteMiss::NotFound),
            "empty segment is no param"
        );
    }

    #[test]
    fn literal_beats_param_beats_catch_all() {
        let r = router(&[("/a/{x}", &[]), ("/a/b", &[]), ("/a/{*rest}", &[])]);
        assert_eq!(hit(&r, Method::GET, "/a/b").0, 1);
        assert_eq!(hit(&r, Method::GET, "/a/c").0, 0);
        assert_eq!(hit(&r, Method::GET, "/a/c/d").0, 2);
    }

    #[test]
    fn backtracks_to_a_param_when_the_literal_branch_dead_ends() {
        let r = router(&[("/a/b/c", &[]), ("/a/{x}/d", &[])]);
        assert_eq!(hit(&r, Method::GET, "/a/b/d"), (1, p(&[("x", "b")])));
    }

    #[test]
    fn methods_and_405() {
        let r = router(&[
            ("/a", &[Method::GET]),
            ("/a", &[Method::POST]),
            ("/b/{x}", &[Method::PUT]),
        ]);
        assert_eq!(hit(&r, Method::GET, "/a").0, 0);
        assert_eq!(hit(&r, Method::POST, "/a").0, 1);
        assert_eq!(
            hit(&r, Method::HEAD, "/a").0,
            0,
            "HEAD is served by GET routes"
        );
        match r.lookup(&Method::DELETE, "/a") {
            Err(RouteMiss::MethodNotAllowed(allow)) => {
                assert_eq!(allow, vec![Method::GET, Method::POST, Method::HEAD]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.lookup(&Method::GET, "/b/1"),
            Err(RouteMiss::MethodNotAllowed(vec![Method::PUT]))
        );
    }

    #[test]
    fn a_less_specific_route_with_the_method_wins_over_405() {
        let r = router(&[("/a/b", &[Method::GET]), ("/a/{x}", &[Method::POST])]);
        assert_eq!(hit(&r, Method::POST, "/a/b"), (1, p(&[("x", "b")])));
    }

    #[test]
    fn params_are_percent_decoded() {
        let r = router(&[("/u/{name}", &[])]);
        assert_eq!(
            hit(&r, Method::GET, "/u/ada%20lovelace").1,
            p(&[("name", "ada lovelace")])
        );
        assert_eq!(hit(&r, Method::GET, "/u/100%").1, p(&[("name", "100%")]));
        assert_eq!(
            hit(&r, Method::GET, "/u/%ff").1,
            p(&[("name", "%ff")]),
            "invalid UTF-8 stays raw"
        );
    }

    #[test]
    fn params_never_decode_to_a_slash() {
        let r = router(&[("/u/{name}", &[]), ("/files/{*rest}", &[])]);
        assert_eq!(
            hit(&r, Method::GET, "/u/a%2Fb%20c").1,
            p(&[("name", "a%2Fb c")])
        );
        assert_eq!(
            hit(&r, Method::GET, "/u/..%2f..%5Corders").1,
            p(&[("name", "..%2f..%5Corders")])
        );
        assert_eq!(
            hit(&r, Method::GET, "/files/a%2Fb").1,
            p(&[("rest", "a/b")]),
            "a catch-all spans segments anyway"
        );
    }

    #[test]
    fn conflicts_are_rejected() {
        let mut b = RouterBuilder::default();
        b.insert("/a/{x}", &[Method::GET], 0).unwrap();
        assert!(
            b.insert("/a/{y}", &[Method::POST], 1).is_ok(),
            "same shape, other method"
        );
        let err = b.insert("/a/{z}", &[], 2).unwrap_err();
        assert!(
            matches!(err, PatternError::Conflict { other: 0, .. }),
            "{err}"
        );
        b.insert("/s/{*rest}", &[], 3).unwrap();
        assert!(b.insert("/s/{*other}", &[Method::GET], 4).is_err());
        assert!(
            b.insert("/s/{x}", &[], 5).is_ok(),
            "a param is not a catch-all"
        );
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        let mut b = RouterBuilder::default();
        for bad in [
            "",
            "a",
            "/a//b",
            "/{}",
            "/{x",
            "/a{x}",
            "/{x}/{x}",
            "/{*r}/more",
            "/a?b",
            "/{a-b}",
        ] {
            assert!(b.insert(bad, &[], 0).is_err(), "{bad:?} accepted");
        }
    }
}
