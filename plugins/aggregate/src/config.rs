//! The route's config, and the checked plan made from it: parsed paths and templates, each
//! backend's dependencies, and the waves the backends run in.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::path::{Path, Step, Tree};
use crate::template::{RESERVED, Source, Template};

/// Most backends one route may list.
pub const MAX_BACKENDS: usize = 32;
/// Most calls one fan-out may make, whatever `max_each` says.
pub const MAX_EACH_LIMIT: usize = 1000;

/// The plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The backends, in the order their parts appear in the answer.
    pub backends: Vec<BackendConfig>,
    /// Route parameters that must have a form, by name: `integer` (ASCII digits) or `text`.
    #[serde(default)]
    pub params: BTreeMap<String, ParamKind>,
    /// Values computed from the merged answer.
    #[serde(default)]
    pub compute: Vec<ComputeConfig>,
    /// The key of the answer's list of missing parts. Default `errors`.
    #[serde(default = "default_errors_key")]
    pub errors_key: String,
    /// Client request headers copied to every backend call (e.g. `authorization`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Most distinct values one `for_each` calls for. Default 64, at most 1000.
    #[serde(default = "default_max_each")]
    pub max_each: usize,
}

fn default_errors_key() -> String {
    "errors".to_owned()
}

fn default_max_each() -> usize {
    64
}

/// The form a route parameter must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// One to 20 ASCII digits.
    Integer,
    /// Anything.
    Text,
}

/// One backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Names the backend in placeholders, `for_each`, error entries and the log.
    pub name: String,
    /// `http://<upstream>/<path>` with placeholders; see the template module.
    pub url: String,
    /// Default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers sent with the call.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A failure fails the whole answer (502, 504 on a timeout, 404 when it answers 404).
    /// Default false: the part is `null` and an entry in `errors` says why.
    #[serde(default)]
    pub required: bool,
    /// Lowers the upstream's timeout for this call.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Take only this sub-tree of the answer (`data.user`).
    #[serde(default)]
    pub target: Option<String>,
    /// Keep only these fields.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Drop these fields.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Rename fields: path → new key.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// Put the part under this key (`order`, `meta.user`) instead of merging its fields into
    /// the answer.
    #[serde(default)]
    pub group: Option<String>,
    /// Call once per distinct value this selects in an earlier backend's answer
    /// (`order.items[*].product_id`); `{each}` in the URL is the value.
    #[serde(default)]
    pub for_each: Option<String>,
    /// With `for_each` over an array of objects: put each result into the elements it was
    /// called for, under this key.
    #[serde(default)]
    pub merge_as: Option<String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// A value computed from the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    /// Where the value goes in the answer (`order.total`).
    pub set: String,
    /// Sum over the elements this selects (`order.items[*]`)...
    #[serde(default)]
    pub sum: Option<String>,
    /// ...of the product of these fields of each element (`["unit_price", "quantity"]`); without
    /// it the elements themselves are summed.
    #[serde(default)]
    pub multiply: Vec<String>,
    /// Count the values this selects.
    #[serde(default)]
    pub count: Option<String>,
    /// Round a sum to this many decimals (0 to 10).
    #[serde(default)]
    pub round: Option<u32>,
}

/// A checked backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, String)>,
    pub required: bool,
    pub timeout_ms: Option<u32>,
    pub target: Option<Path>,
    pub allow: Option<Tree>,
    pub deny: Option<Tree>,
    pub mapping: Vec<(Path, String)>,
    pub group: Option<Path>,
    pub fan: Option<Fan>,
    /// Indices of the backends it reads.
    pub deps: Vec<usize>,
}

/// A fan-out: one call per distinct value selected in another backend's answer.
#[derive(Debug, Clone)]
pub struct Fan {
    /// The backend whose answer is read.
    pub source: usize,
    /// The whole selection, within the source's answer.
    pub select: Path,
    /// The array elements (the selection up to its `[*]`), when results merge into them.
    pub elements: Path,
    /// The key within each element (the selection after its `[*]`).
    pub key: Path,
    /// Where results go in each element.
    pub merge_as: Option<String>,
}

/// A checked computation.
#[derive(Debug, Clone)]
pub enum Compute {
    Sum {
        set: Path,
        over: Path,
        multiply: Vec<Path>,
        round: Option<u32>,
    },
    Count {
        set: Path,
        over: Path,
    },
}

/// The checked config.
#[derive(Debug, Clone)]
pub struct Plan {
    pub backends: Vec<Backend>,
    /// Backends by the wave they run in: every backend of a wave starts at once, after the
    /// waves before it finished.
    pub waves: Vec<Vec<usize>>,
    pub params: BTreeMap<String, ParamKind>,
    pub compute: Vec<Compute>,
    pub errors_key: String,
    pub forward_headers: Vec<String>,
    pub max_each: usize,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_key(s: &str) -> bool {
    Path::parse(s).is_ok_and(|p| matches!(p.steps(), [Step::Key(_)]))
}

/// Headers a plugin's config may not set or forward: framing and hop-by-hop fields, which the
/// gateway decides.
const GATEWAY_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

fn check_header_name(at: &str, name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if !is_token(&lower) {
        return Err(format!("{at}: `{name}` is not a header name"));
    }
    if GATEWAY_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{at}: `{name}` is set by the gateway, not by config"
        ));
    }
    Ok(lower)
}

fn paths(at: &str, texts: &[String]) -> Result<Vec<Path>, String> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Path::parse(t).map_err(|e| format!("{at}[{i}]: {e}")))
        .collect()
}

/// The names of a route pattern's parameters (`/orders/{id}/{*rest}` → `id`, `rest`).
pub fn route_params(pattern: &str) -> Vec<String> {
    pattern
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_start_matches('*').to_owned())
        .collect()
}

impl Config {
    /// Checks everything and makes the plan. `route` is the route's pattern, when known, so
    /// placeholders naming route parameters can be checked against it.
    pub fn plan(&self, route: Option<&str>) -> Result<Plan, String> {
        if self.backends.is_empty() {
            return Err("backends: at least one backend is needed".to_owned());
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(format!(
                "backends: {} backends; at most {MAX_BACKENDS}",
                self.backends.len()
            ));
        }
        if !is_key(&self.errors_key) {
            return Err(format!("errors_key: `{}` is not a key", self.errors_key));
        }
        if !(1..=MAX_EACH_LIMIT).contains(&self.max_each) {
            return Err(format!(
                "max_each: {} is not 1 to {MAX_EACH_LIMIT}",
                self.max_each
            ));
        }
        let params = route.map(route_params);
        for name in self.params.keys() {
            if let Some(known) = &params
                && !known.contains(name)
            {
                return Err(format!(
                    "params.{name}: the route has no `{{{name}}}` parameter"
                ));
            }
        }
        let forward_headers = self
            .forward_headers
            .iter()
            .enumerate()
            .map(|(i, h)| check_header_name(&format!("forward_headers[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut backends = Vec::with_capacity(self.backends.len());
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("backends[{i}]");
            backends.push(b.check(&at, &names, i, params.as_deref())?);
        }
        for (i, b) in backends.iter().enumerate() {
            if let Some(fan) = &b.fan
                && backends[fan.source].fan.is_some()
            {
                return Err(format!(
                    "backends[{i}].for_each: `{}` is itself a fan-out; for_each reads a backend called once",
                    names[fan.source]
                ));
            }
            if b.group.is_none() && b.fan.as_ref().is_none_or(|f| f.merge_as.is_none()) {
                // Merged into the answer's top level: must not collide with the errors list.
                if b.mapping.iter().any(|(_, to)| *to == self.errors_key) {
                    return Err(format!(
                        "backends[{i}].mapping: `{}` is the errors key",
                        self.errors_key
                    ));
                }
            }
            if let Some(g) = &b.group
                && matches!(g.steps().first(), Some(Step::Key(k)) if *k == self.errors_key)
            {
                return Err(format!(
                    "backends[{i}].group: `{}` is the errors key",
                    self.errors_key
                ));
            }
        }
        let waves = waves(&backends)?;
        let compute = self
            .compute
            .iter()
            .enumerate()
            .map(|(i, c)| c.check(&format!("compute[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            backends,
            waves,
            params: self.params.clone(),
            compute,
            errors_key: self.errors_key.clone(),
            forward_headers,
            max_each: self.max_each,
        })
    }
}

impl BackendConfig {
    fn check(
        &self,
        at: &str,
        names: &[&str],
        me: usize,
        params: Option<&[String]>,
    ) -> Result<Backend, String> {
        if !is_key(&self.name)
            || !self
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_".contains(c))
        {
            return Err(format!(
                "{at}.name: `{}` is not a name (letters, digits, `-`, `_`)",
                self.name
            ));
        }
        if RESERVED.contains(&self.name.as_str()) {
            return Err(format!("{at}.name: `{}` is reserved", self.name));
        }
        if names[..me].contains(&self.name.as_str()) {
            return Err(format!("{at}.name: `{}` is used twice", self.name));
        }
        let method = self.method.to_ascii_uppercase();
        if !is_token(&method) {
            return Err(format!("{at}.method: `{}` is not a method", self.method));
        }
        let url = Template::parse(&self.url).map_err(|e| format!("{at}.url: {e}"))?;
        let mut deps = Vec::new();
        let find = |name: &str, key: &str| -> Result<usize, String> {
            let j = names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| format!("{at}.{key}: there is no backend `{name}`"))?;
            if j == me {
                return Err(format!("{at}.{key}: a backend cannot read its own answer"));
            }
            Ok(j)
        };
        let mut uses_each = false;
        for source in url.sources() {
            match source {
                Source::Param(name) => {
                    if let Some(known) = params
                        && !known.contains(name)
                    {
                        return Err(format!("{at}.url: the route has no `{{{name}}}` parameter"));
                    }
                }
                Source::Query(_) => {}
                Source::Each => uses_each = true,
                Source::Field { backend, .. } => deps.push(find(backend, "url")?),
            }
        }
        let fan = match &self.for_each {
            None => {
                if uses_each {
                    return Err(format!("{at}.url: `{{each}}` needs for_each"));
                }
                if self.merge_as.is_some() {
                    return Err(format!("{at}.merge_as: needs for_each"));
                }
                None
            }
            Some(text) => {
                let (source, rest) = text.split_once('.').ok_or_else(|| {
                    format!("{at}.for_each: `{text}` must start with a backend name and a `.`")
                })?;
                let source = find(source, "for_each")?;
                let select = Path::parse(rest).map_err(|e| format!("{at}.for_each: {e}"))?;
                let each_at: Vec<usize> = select
                    .steps()
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s == Step::Each)
                    .map(|(i, _)| i)
                    .collect();
                let [split] = each_at[..] else {
                    return Err(format!(
                        "{at}.for_each: `{text}` must hold exactly one `[*]`"
                    ));
                };
                if !uses_each {
                    return Err(format!(
                        "{at}.url: a for_each backend puts `{{each}}` in its URL"
                    ));
                }
                let elements = Path::from_steps(select.steps()[..=split].to_vec());
                let key = Path::from_steps(select.steps()[split + 1..].to_vec());
                match (&self.merge_as, &self.group) {
                    (Some(m), None) => {
                        if key.steps().is_empty() {
                            return Err(format!(
                                "{at}.merge_as: `{text}` selects plain values, not fields of objects to merge into; use group"
                            ));
                        }
                        if !is_key(m) {
                            return Err(format!("{at}.merge_as: `{m}` is not a key"));
                        }
                    }
                    (None, Some(_)) => {}
                    (Some(_), Some(_)) => {
                        return Err(format!("{at}: merge_as and group exclude each other"));
                    }
                    (None, None) => {
                        return Err(format!(
                            "{at}: a for_each backend needs merge_as (into the elements) or group (a list)"
                        ));
                    }
                }
                deps.push(source);
                Some(Fan {
                    source,
                    select,
                    elements,
                    key,
                    merge_as: self.merge_as.clone(),
                })
            }
        };
        deps.sort_unstable();
        deps.dedup();
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                let name = check_header_name(&format!("{at}.headers"), name)?;
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(format!(
                        "{at}.headers.{name}: the value holds CR, LF or NUL"
                    ));
                }
                Ok((name, value.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if !self.allow.is_empty() && !self.deny.is_empty() {
            return Err(format!("{at}: use allow or deny, not both"));
        }
        let allow = paths(&format!("{at}.allow"), &self.allow)?;
        let deny = paths(&format!("{at}.deny"), &self.deny)?;
        let mapping = self
            .mapping
            .iter()
            .map(|(from, to)| {
                let path = Path::parse(from).map_err(|e| format!("{at}.mapping: {e}"))?;
                if !matches!(path.steps().last(), Some(Step::Key(_))) {
                    return Err(format!("{at}.mapping: `{from}` must end in a key"));
                }
                if !is_key(to) {
                    return Err(format!("{at}.mapping.{from}: `{to}` is not a key"));
                }
                Ok((path, to.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let optional_path = |key: &str, text: &Option<String>, each_ok: bool| {
            text.as_deref()
                .map(|t| {
                    let p = Path::parse(t).map_err(|e| format!("{at}.{key}: {e}"))?;
                    if !each_ok && p.has_each() {
                        return Err(format!("{at}.{key}: `{t}` may not hold `[*]`"));
                    }
                    Ok(p)
                })
                .transpose()
        };
        Ok(Backend {
            name: self.name.clone(),
            method,
            url,
            headers,
            required: self.required,
            timeout_ms: self.timeout_ms,
            target: optional_path("target", &self.target, false)?,
            allow: (!allow.is_empty()).then(|| Tree::new(&allow)),
            deny: (!deny.is_empty()).then(|| Tree::new(&deny)),
            mapping,
            group: optional_path("group", &self.group, false)?,
            fan,
            deps,
        })
    }
}

impl ComputeConfig {
    fn check(&self, at: &str) -> Result<Compute, String> {
        let set = Path::parse(&self.set).map_err(|e| format!("{at}.set: {e}"))?;
        if set.has_each() {
            return Err(format!("{at}.set: `{}` may not hold `[*]`", self.set));
        }
        match (&self.sum, &self.count) {
            (Some(sum), None) => {
                let over = Path::parse(sum).map_err(|e| format!("{at}.sum: {e}"))?;
                let multiply = paths(&format!("{at}.multiply"), &self.multiply)?;
                if let Some(i) = multiply.iter().position(Path::has_each) {
                    return Err(format!("{at}.multiply[{i}]: may not hold `[*]`"));
                }
                if self.round.is_some_and(|r| r > 10) {
                    return Err(format!("{at}.round: at most 10 decimals"));
                }
                Ok(Compute::Sum {
                    set,
                    over,
                    multiply,
                    round: self.round,
                })
            }
            (None, Some(count)) => {
                if !self.multiply.is_empty() || self.round.is_some() {
                    return Err(format!("{at}: multiply and round go with sum, not count"));
                }
                let over = Path::parse(count).map_err(|e| format!("{at}.count: {e}"))?;
                Ok(Compute::Count { set, over })
            }
            _ => Err(format!("{at}: give one of sum or count")),
        }
    }
}

/// Groups backends into waves by their dependencies; a cycle is an error naming its backends.
fn waves(backends: &[Backend]) -> Result<Vec<Vec<usize>>, String> {
    let mut wave_of: Vec<Option<usize>> = vec![None; backends.len()];
    let mut waves: Vec<Vec<usize>> = Vec::new();
    let mut placed = 0;
    while placed < backends.len() {
        let ready: Vec<usize> = (0..backends.len())
            .filter(|&i| {
                wave_of[i].is_none()
                    && backends[i]
                        .deps
                        .iter()
                        .all(|&d| wave_of[d].is_some_and(|w| w < waves.len()))
            })
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = (0..backends.len())
                .filter(|&i| wave_of[i].is_none())
                .map(|i| backends[i].name.as_str())
                .collect();
            return Err(format!(
                "backends: {} depend on each other in a cycle",
                stuck.join(", ")
            ));
        }
        for &i in &ready {
            wave_of[i] = Some(waves.len());
        }
        placed += ready.len();
        waves.push(ready);
    }
    Ok(waves)
}
