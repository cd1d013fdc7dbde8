//! Handler plugin: declarative orchestration. The route's config lists backends; the plugin
//! calls them (those that do not depend on each other at once), shapes each answer, and merges
//! them into one JSON document.
//!
//! ```toml
//! [[routes]]
//! path = "/api/v2/orders/{id}"
//! handler = { plugin = "aggregate", upstreams = ["orders", "users"] }
//!
//! [[routes.handler.config.backends]]
//! name = "order"
//! url = "http://orders/orders/{id}"
//! required = true
//! group = "order"
//!
//! [[routes.handler.config.backends]]
//! name = "user"
//! url = "http://users/users/{order.user_id}"
//! allow = ["id", "name"]
//! group = "user"
//! ```
//!
//! How a request is served:
//! 1. Route parameters with a declared form (`params`) are checked (400).
//! 2. Backends run in waves: every backend whose inputs are ready starts at once, and the next
//!    wave starts when the wave before has answered. A backend's inputs are the answers its URL
//!    placeholders and `for_each` read.
//! 3. Each answer must be 2xx JSON; `target` takes a sub-tree of it. Later backends read this
//!    value. A fan-out backend (`for_each`) is called once per distinct selected value.
//! 4. Fan-out results (shaped by their own allow/deny/mapping) are merged into the elements they
//!    were called for (`merge_as`); then every other backend's value is shaped (`allow` or
//!    `deny`, then `mapping`) and placed under its `group`, or merged into the top level.
//! 5. `compute` entries add sums and counts; `errors` lists the parts that are missing.
//!
//! A `required` backend that fails fails the request: 404 when it answered 404, 504 when it
//! timed out, else 502. Any other backend that fails leaves its part `null` (merged fields are
//! simply absent) and adds `{"part": "<name>", "error": "..."}` (`<name>:<value>` for a fan-out
//! call) to `errors`; a backend reading a failed one fails with it.

mod config;
mod path;
mod template;

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tessera_sdk::http::{self, HttpError, Pending};
use tessera_sdk::{Error, Handler, Request, Response, context, log};

pub use config::Config;
use config::{Backend, Compute, ParamKind, Plan};
use template::{Source, text_of};

/// The handler.
#[derive(Debug)]
pub struct Aggregate;

/// Why a backend has no value.
#[derive(Debug, Clone)]
enum Failure {
    /// It answered 404.
    NotFound,
    /// The call timed out.
    Timeout,
    /// Anything else, said in words.
    Other(String),
}

impl Failure {
    /// The answer's `errors` entry for `part`.
    fn entry(&self, part: &str) -> Value {
        json!({ "part": part, "error": self.message() })
    }

    fn message(&self) -> String {
        match self {
            Self::NotFound => "not found".to_owned(),
            Self::Timeout => HttpError::Timeout.to_string(),
            Self::Other(why) => why.clone(),
        }
    }
}

/// What one backend produced.
#[derive(Debug)]
enum Outcome {
    /// Its value (after `target`).
    Value(Value),
    /// A fan-out: each distinct value with its result.
    Fan(Vec<(String, Result<Value, Failure>)>),
    /// It failed.
    Failed(Failure),
}

/// The request's inputs to placeholders.
struct Inputs<'a> {
    request: &'a Request,
    params: Vec<(String, String)>,
}

impl Aggregate {
    /// Serves with an already checked plan.
    fn serve(plan: &Plan, request: &Request) -> Result<Response, Error> {
        let inputs = Inputs {
            request,
            params: context::params(),
        };
        for (name, kind) in &plan.params {
            let value = inputs.param(name).unwrap_or_default();
            if *kind == ParamKind::Integer
                && (value.is_empty()
                    || value.len() > 20
                    || !value.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(Error::bad_request(format!(
                    "route parameter `{name}` must be a number"
                )));
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = (0..plan.backends.len()).map(|_| None).collect();
        for wave in &plan.waves {
            // Everything the wave calls starts before anything is waited for.
            let mut started: Vec<(usize, Started)> = Vec::with_capacity(wave.len());
            for &i in wave {
                let b = &plan.backends[i];
                started.push((i, start(plan, b, &inputs, &outcomes)?));
            }
            for (i, s) in started {
                let b = &plan.backends[i];
                let outcome = s.finish(b);
                if b.required
                    && let Outcome::Failed(why) = &outcome
                {
                    return Err(required_failed(&b.name, why));
                }
                outcomes[i] = Some(outcome);
            }
        }
        Ok(Response::json(200, &assemble(plan, outcomes)))
    }
}

impl Inputs<'_> {
    fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// A backend's calls, started.
enum Started {
    One(Pending),
    Fan(Vec<(String, Option<Pending>)>),
    Failed(Failure),
}

fn call(plan: &Plan, b: &Backend, url: String, request: &Request) -> Pending {
    let mut call = http::OutgoingRequest::new(&b.method, url);
    for name in &plan.forward_headers {
        for value in request.headers().get_all(name) {
            call = call.header(name, value.to_vec());
        }
    }
    for (name, value) in &b.headers {
        call = call.header(name, value.as_str());
    }
    if !b.headers.iter().any(|(n, _)| n == "accept") {
        call = call.header("accept", "application/json");
    }
    if let Some(ms) = b.timeout_ms {
        call = call.timeout(std::time::Duration::from_millis(u64::from(ms)));
    }
    call.start()
}

fn start(
    plan: &Plan,
    b: &Backend,
    inputs: &Inputs<'_>,
    outcomes: &[Option<Outcome>],
) -> Result<Started, Error> {
    // A backend reading one that failed fails with it.
    for &d in &b.deps {
        if let Some(Outcome::Failed(_)) = &outcomes[d] {
            let name = &plan.backends[d].name;
            return Ok(Started::Failed(Failure::Other(format!(
                "depends on `{name}`, which failed"
            ))));
        }
    }
    let render = |each: Option<&str>| {
        b.url.render(&mut |source| match source {
            Source::Param(name) => inputs.param(name),
            Source::Query(name) => inputs.request.query_param(name),
            Source::Each => each.map(str::to_owned),
            Source::Field { backend, path } => {
                let j = plan.backends.iter().position(|x| x.name == *backend)?;
                match &outcomes[j] {
                    Some(Outcome::Value(v)) => path.get(v).and_then(text_of),
                    _ => None,
                }
            }
        })
    };
    let Some(fan) = &b.fan else {
        return match render(None) {
            Ok(url) => Ok(Started::One(call(plan, b, url, inputs.request))),
            Err(Source::Query(name)) => Err(missing(&name)),
            Err(source) => Ok(Started::Failed(Failure::Other(format!(
                "no value for `{source}` in its URL"
            )))),
        };
    };
    let Some(Outcome::Value(source)) = &outcomes[fan.source] else {
        return Ok(Started::Failed(Failure::Other(
            "its for_each source has no value".to_owned(),
        )));
    };
    let mut values: Vec<String> = Vec::new();
    for v in fan.select.select(source) {
        if let Some(text) = text_of(v)
            && !values.contains(&text)
        {
            values.push(text);
        }
    }
    if values.len() > plan.max_each {
        return Ok(Started::Failed(Failure::Other(format!(
            "for_each selects {} values; at most {} (max_each)",
            values.len(),
            plan.max_each
        ))));
    }
    let mut calls = Vec::with_capacity(values.len());
    for value in values {
        match render(Some(&value)) {
            Ok(url) => {
                let pending = call(plan, b, url, inputs.request);
                calls.push((value, Some(pending)));
            }
            Err(Source::Query(name)) => return Err(missing(&name)),
            Err(_) => calls.push((value, None)),
        }
    }
    Ok(Started::Fan(calls))
}

fn missing(query: &str) -> Error {
    Error::bad_request(format!("query parameter `{query}` is required"))
}

impl Started {
    fn finish(self, b: &Backend) -> Outcome {
        match self {
            Self::Failed(why) => Outcome::Failed(why),
            Self::One(pending) => match read(b, pending.wait()) {
                Ok(v) => Outcome::Value(v),
                Err(why) => Outcome::Failed(why),
            },
            Self::Fan(calls) => {
                let results = calls
                    .into_iter()
                    .map(|(value, pending)| {
                        let result = match pending {
                            Some(p) => read(b, p.wait()),
                            None => Err(Failure::Other("no value for its URL".to_owned())),
                        };
                        (value, result)
                    })
                    .collect();
                Outcome::Fan(results)
            }
        }
    }
}

/// A backend's answer as JSON, `target` applied.
fn read(b: &Backend, result: Result<Response, HttpError>) -> Result<Value, Failure> {
    let response = match result {
        Ok(r) => r,
        Err(HttpError::Timeout) => return Err(Failure::Timeout),
        Err(e) => return Err(Failure::Other(e.to_string())),
    };
    if response.status() == 404 {
        return Err(Failure::NotFound);
    }
    if !response.is_success() {
        return Err(Failure::Other(format!(
            "service answered {}",
            response.status()
        )));
    }
    let value: Value = response
        .json_body()
        .map_err(|e| Failure::Other(e.message().to_owned()))?;
    match &b.target {
        None => Ok(value),
        Some(target) => target
            .get(&value)
            .cloned()
            .ok_or_else(|| Failure::Other(format!("the answer has no `{target}`"))),
    }
}

fn required_failed(name: &str, why: &Failure) -> Error {
    match why {
        Failure::NotFound => Error::not_found(format!("{name} not found")),
        Failure::Timeout => Error::gateway_timeout(format!("backend `{name}` timed out")),
        Failure::Other(detail) => Error::bad_gateway(format!("backend `{name}` failed"))
            .with_detail(format!("backend `{name}`: {detail}")),
    }
}

/// `allow` or `deny`, then `mapping`.
fn shape(b: &Backend, mut value: Value) -> Value {
    if let Some(allow) = &b.allow {
        value = allow.keep(value);
    }
    if let Some(deny) = &b.deny {
        deny.drop_from(&mut value);
    }
    for (from, to) in &b.mapping {
        let steps = from.steps();
        let Some((path::Step::Key(key), parent)) = steps.split_last() else {
            continue;
        };
        let parent = path::Path::from_steps(parent.to_vec());
        parent.for_each_mut(&mut value, &mut |v| {
            if let Value::Object(map) = v
                && let Some(moved) = map.shift_remove(key)
            {
                map.insert(to.clone(), moved);
            }
        });
    }
    value
}

fn assemble(plan: &Plan, mut outcomes: Vec<Option<Outcome>>) -> Value {
    let mut errors: Vec<Value> = Vec::new();
    // Fan-out results go into the values they were called for, before those are shaped.
    for (i, b) in plan.backends.iter().enumerate() {
        let Some(fan) = &b.fan else { continue };
        let Some(merge_as) = &fan.merge_as else {
            continue;
        };
        let results = match outcomes[i].take() {
            Some(Outcome::Fan(results)) => results,
            Some(Outcome::Failed(why)) => {
                errors.push(why.entry(&b.name));
                Vec::new()
            }
            _ => Vec::new(),
        };
        let by_value: HashMap<String, Value> = results
            .into_iter()
            .map(|(value, result)| {
                let part = match result {
                    Ok(v) => shape(b, v),
                    Err(why) => {
                        errors.push(why.entry(&format!("{}:{value}", b.name)));
                        Value::Null
                    }
                };
                (value, part)
            })
            .collect();
        if let Some(Outcome::Value(source)) = &mut outcomes[fan.source] {
            fan.elements.for_each_mut(source, &mut |element| {
                let key = fan.key.get(element).and_then(text_of);
                if let Value::Object(map) = element {
                    let part = key
                        .and_then(|k| by_value.get(&k).cloned())
                        .unwrap_or(Value::Null);
                    map.insert(merge_as.clone(), part);
                }
            });
        }
    }
    let mut answer = Value::Object(Map::new());
    for (i, b) in plan.backends.iter().enumerate() {
        let part = match outcomes[i].take() {
            Some(Outcome::Value(v)) => shape(b, v),
            Some(Outcome::Fan(results)) => Value::Array(
                results
                    .into_iter()
                    .map(|(value, result)| match result {
                        Ok(v) => shape(b, v),
                        Err(why) => {
                            errors.push(why.entry(&format!("{}:{value}", b.name)));
                            Value::Null
                        }
                    })
                    .collect(),
            ),
            Some(Outcome::Failed(why)) => {
                errors.push(why.entry(&b.name));
                Value::Null
            }
            // Merged above.
            None => continue,
        };
        match &b.group {
            Some(group) => {
                if !group.set(&mut answer, part) {
                    log::warn(format!(
                        "aggregate: `{}` cannot go under `{group}`: something else is there",
                        b.name
                    ));
                }
            }
            None => match (part, &mut answer) {
                (Value::Object(fields), Value::Object(top)) => {
                    for (k, v) in fields {
                        if k != plan.errors_key {
                            top.insert(k, v);
                        }
                    }
                }
                (Value::Null, _) => {}
                _ => errors.push(json!({
                    "part": b.name,
                    "error": "the answer is not an object, so it cannot be merged (give it a group)",
                })),
            },
        }
    }
    for c in &plan.compute {
        let (set, value) = computed(c, &answer);
        set.set(&mut answer, value);
    }
    if let Value::Object(top) = &mut answer {
        top.insert(plan.errors_key.clone(), Value::Array(errors));
    }
    answer
}

fn computed<'a>(c: &'a Compute, answer: &Value) -> (&'a path::Path, Value) {
    match c {
        Compute::Count { set, over } => (set, json!(over.select(answer).len())),
        Compute::Sum {
            set,
            over,
            multiply,
            round,
        } => {
            let mut exact: Option<i64> = Some(0);
            let mut float = 0.0f64;
            for element in over.select(answer) {
                let factors: Vec<&Value> = if multiply.is_empty() {
                    vec![element]
                } else {
                    multiply.iter().filter_map(|m| m.get(element)).collect()
                };
                if factors.len() != multiply.len().max(1) || !factors.iter().all(|f| f.is_number())
                {
                    // A sum of what is not all there would be a wrong number; say nothing.
                    return (set, Value::Null);
                }
                let mut product_i: Option<i64> = Some(1);
                let mut product_f = 1.0f64;
                for f in factors {
                    product_i = product_i
                        .zip(f.as_i64())
                        .and_then(|(a, b)| a.checked_mul(b));
                    product_f *= f.as_f64().unwrap_or(f64::NAN);
                }
                exact = exact.zip(product_i).and_then(|(a, b)| a.checked_add(b));
                float += product_f;
            }
            let value = match (exact, round) {
                (Some(n), _) => json!(n),
                (None, Some(decimals)) => {
                    let scale = 10f64.powi(i32::try_from(*decimals).unwrap_or(10));
                    json!((float * scale).round() / scale)
                }
                (None, None) => json!(float),
            };
            (set, value)
        }
    }
}

/// The plan for the route being served (or checked): placeholders naming route parameters are
/// checked against its pattern.
fn plan_for_route(config: &Config) -> Result<Plan, String> {
    let route = context::route();
    config.plan((!route.is_empty()).then_some(route.as_str()))
}

/// What the gateway runs at load: the config must read and make a plan.
fn check_config(config: &Config) -> Result<(), String> {
    plan_for_route(config).map(drop)
}

impl Handler for Aggregate {
    fn handle(request: Request) -> Result<Response, Error> {
        let config: Config = tessera_sdk::config()?;
        let plan = plan_for_route(&config).map_err(|e| {
            Error::internal("the plugin is misconfigured")
                .with_detail(format!("aggregate config: {e}"))
        })?;
        Self::serve(&plan, &request)
    }
}

tessera_sdk::handler!(Aggregate, config = Config, check = check_config);

#[cfg(test)]
mod tests;
