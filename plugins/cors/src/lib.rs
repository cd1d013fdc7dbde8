//! Filter plugin: Cross-Origin Resource Sharing (the Fetch standard's CORS protocol) decided at
//! the gateway.
//!
//! ```toml
//! [[routes.filters]]
//! plugin = "cors"
//! [routes.filters.config]
//! allow_origins = ["https://app.example.com", "https://*.example.com"]
//! allow_methods = ["GET", "POST", "PUT"]
//! allow_headers = ["content-type", "authorization"]
//! expose_headers = ["x-total-count"]
//! allow_credentials = true
//! max_age = 600
//! ```
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here,
//! `204` with the allow headers or `403` without them, and never reaches the route's target.
//! Other requests pass on; their responses get `access-control-allow-origin` and the rest when
//! the origin (and method) is allowed, and lose any CORS headers the upstream set itself. See
//! `docs/plugins/cors.md` for every option.

#![forbid(unsafe_code)]

use std::cell::RefCell;

use tessera_sdk::{Action, Error, Filter, Headers, Request, Response, context, log};

pub mod config;
pub mod origin;

pub use config::{Config, ConfigError, Policy};
use config::{Methods, Origins, RequestHeaders, is_token};
use origin::{RequestOrigin, Rule};

/// The most header names a preflight may ask for. Browsers list only the non-safelisted
/// headers a script set, so real pages stay far below.
pub const MAX_REQUESTED_HEADERS: usize = 64;

/// Why a preflight is refused. The text is what the client reads; it names no origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The origin is not allowed, or the `Origin` header is not usable.
    #[error("origin not allowed")]
    Origin,
    /// `Access-Control-Request-Method` repeated or not a method name.
    #[error("access-control-request-method is not one method name")]
    InvalidMethod,
    /// A method the config does not allow.
    #[error("method {0:?} not allowed")]
    Method(String),
    /// `Access-Control-Request-Headers` that is not a list of header names.
    #[error("access-control-request-headers is not a list of header names")]
    InvalidHeaders,
    /// More names than [`MAX_REQUESTED_HEADERS`].
    #[error("access-control-request-headers names more than {MAX_REQUESTED_HEADERS} headers")]
    TooManyHeaders,
    /// A header the config does not allow.
    #[error("header {0:?} not allowed")]
    Header(String),
}

/// What an allowed cross-origin request's response gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    allow_origin: String,
    credentials: bool,
    expose: Option<String>,
}

/// The CORS response headers: all of them are the gateway's to set.
const CORS_RESPONSE_HEADERS: [&str; 7] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-allow-private-network",
];

/// What a preflight's answer varies on besides `Origin` (Fetch standard, "CORS protocol and
/// HTTP caches").
const PREFLIGHT_VARY: [&str; 3] = [
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
];

impl Policy {
    /// The value of `access-control-allow-origin` for an allowed origin, `None` otherwise.
    fn allow_origin(&self, origin: &RequestOrigin<'_>) -> Option<String> {
        match (&self.origins, origin) {
            (Origins::Any { .. }, RequestOrigin::Tuple { .. }) => Some("*".to_owned()),
            (Origins::Any { null: true }, RequestOrigin::Null) => Some("*".to_owned()),
            (Origins::Listed(rules), RequestOrigin::Null) if rules.contains(&Rule::Null) => {
                Some("null".to_owned())
            }
            (Origins::Listed(rules), RequestOrigin::Tuple { raw, .. })
                if rules.iter().any(|r| r.matches(origin)) =>
            {
                Some((*raw).to_owned())
            }
            _ => None,
        }
    }

    fn allows_method(&self, method: &str) -> bool {
        match &self.methods {
            Methods::Any => true,
            Methods::Listed(methods) => methods.iter().any(|m| m == method),
        }
    }

    /// Answers a preflight: `204` with the allow headers, or `403` without them.
    pub fn preflight(&self, request: &Request) -> Response {
        let origin = RequestOrigin::of(request.headers());
        let mut response = match self.check_preflight(request, &origin) {
            Ok(headers) => {
                let mut response = Response::new(204);
                for (name, value) in headers {
                    response.headers_mut().append(name, value);
                }
                response
            }
            Err(refusal) => {
                log::debug(format!(
                    "cors: preflight refused: {refusal}{}",
                    invalid_reason(&origin)
                ));
                Error::forbidden(format!("CORS preflight refused: {refusal}")).into_response()
            }
        };
        add_vary(response.headers_mut(), &PREFLIGHT_VARY);
        response
    }

    fn check_preflight(
        &self,
        request: &Request,
        origin: &RequestOrigin<'_>,
    ) -> Result<Vec<(&'static str, String)>, Refusal> {
        let allow_origin = self.allow_origin(origin).ok_or(Refusal::Origin)?;
        let mut methods = request.headers().get_all("access-control-request-method");
        let method = match (methods.next(), methods.next()) {
            (Some(m), None) => std::str::from_utf8(m)
                .ok()
                .filter(|m| is_token(m))
                .ok_or(Refusal::InvalidMethod)?,
            _ => return Err(Refusal::InvalidMethod),
        };
        if !self.allows_method(method) {
            return Err(Refusal::Method(method.to_owned()));
        }
        let requested = requested_headers(request.headers())?;
        let allow_headers = match &self.headers {
            RequestHeaders::Reflect => requested,
            RequestHeaders::Listed(allowed) => {
                if let Some(missing) = requested.iter().find(|h| !allowed.contains(h)) {
                    return Err(Refusal::Header(missing.clone()));
                }
                allowed.clone()
            }
        };

        let mut headers = vec![("access-control-allow-origin", allow_origin)];
        if self.credentials {
            headers.push(("access-control-allow-credentials", "true".to_owned()));
        }
        let allow_methods = match &self.methods {
            // `*` would not cover requests with credentials; the method asked for always does.
            Methods::Any => method.to_owned(),
            Methods::Listed(methods) => methods.join(", "),
        };
        headers.push(("access-control-allow-methods", allow_methods));
        if !allow_headers.is_empty() {
            headers.push(("access-control-allow-headers", allow_headers.join(", ")));
        }
        if let Some(age) = self.max_age {
            headers.push(("access-control-max-age", age.to_string()));
        }
        Ok(headers)
    }

    /// Decides a request that is not a preflight: the headers its response gets when its
    /// origin and method are allowed, `Err` with the answer when it is refused outright.
    fn actual(&self, request: &Request) -> Result<Option<Grant>, Response> {
        let origin = RequestOrigin::of(request.headers());
        if origin == RequestOrigin::Absent {
            return Ok(None);
        }
        let Some(allow_origin) = self.allow_origin(&origin) else {
            log::debug(format!(
                "cors: origin not allowed{}",
                invalid_reason(&origin)
            ));
            if self.refuse {
                let mut response =
                    Error::forbidden("cross-origin requests from this origin are not allowed")
                        .into_response();
                add_vary(response.headers_mut(), &["origin"]);
                return Err(response);
            }
            return Ok(None);
        };
        if !self.allows_method(request.method()) {
            log::debug(format!(
                "cors: method {:?} not allowed; no CORS headers",
                request.method()
            ));
            return Ok(None);
        }
        Ok(Some(Grant {
            allow_origin,
            credentials: self.credentials,
            expose: self.expose.clone(),
        }))
    }
}

fn invalid_reason(origin: &RequestOrigin<'_>) -> String {
    match origin {
        RequestOrigin::Invalid(why) => format!(" ({why})"),
        _ => String::new(),
    }
}

/// The names in every `Access-Control-Request-Headers` field, lower-case, each once.
fn requested_headers(headers: &Headers) -> Result<Vec<String>, Refusal> {
    let mut names = Vec::new();
    for value in headers.get_all("access-control-request-headers") {
        let text = std::str::from_utf8(value).map_err(|_| Refusal::InvalidHeaders)?;
        for name in text.split(',').map(|n| n.trim_matches([' ', '\t'])) {
            if name.is_empty() {
                continue; // empty list elements are allowed (RFC 9110 §5.6.1)
            }
            if !is_token(name) {
                return Err(Refusal::InvalidHeaders);
            }
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                if names.len() == MAX_REQUESTED_HEADERS {
                    return Err(Refusal::TooManyHeaders);
                }
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method` (Fetch
/// standard, "CORS-preflight request"). Any other `OPTIONS` is an ordinary request.
pub fn is_preflight(request: &Request) -> bool {
    request.method() == "OPTIONS"
        && request.headers().contains("origin")
        && request.headers().contains("access-control-request-method")
}

/// Adds the `names` a `Vary` does not list yet, as one more `Vary` field: what is there stays.
fn add_vary(headers: &mut Headers, names: &[&str]) {
    let listed: Vec<String> = headers
        .get_all("vary")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if listed.iter().any(|n| n == "*") {
        return; // varies on everything already
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !listed.iter().any(|l| l == n))
        .collect();
    if !missing.is_empty() {
        headers.append("vary", missing.join(", "));
    }
}

/// What on-request leaves for on-response of the same request.
#[derive(Debug)]
struct Pending {
    request_id: String,
    grant: Option<Grant>,
}

thread_local! {
    // One instance serves one request at a time; with `instances = "reuse"` the next request's
    // on-request replaces this before its on-response reads it.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Reads this route's policy. With the export line's check the gateway has refused a bad
/// config at load, so the error is for a config that changed under a running instance.
fn load_policy() -> Result<Policy, Error> {
    let config: Config = tessera_sdk::config()?;
    config.policy().map_err(|e| {
        Error::internal("the plugin is misconfigured").with_detail(format!("cors config: {e}"))
    })
}

/// The filter.
#[derive(Debug)]
pub struct Cors;

impl Filter for Cors {
    fn on_request(request: Request) -> Result<Action, Error> {
        PENDING.with(|p| p.borrow_mut().take());
        let policy = load_policy()?;
        if is_preflight(&request) {
            return Ok(Action::Respond(policy.preflight(&request)));
        }
        match policy.actual(&request) {
            Ok(grant) => {
                PENDING.with(|p| {
                    *p.borrow_mut() = Some(Pending {
                        request_id: context::request_id(),
                        grant,
                    });
                });
                Ok(Action::Continue(request))
            }
            Err(refused) => Ok(Action::Respond(refused)),
        }
    }

    fn on_response(mut response: Response) -> Result<Response, Error> {
        let grant = PENDING
            .with(|p| p.borrow_mut().take())
            .filter(|p| p.request_id == context::request_id())
            .and_then(|p| p.grant);
        let headers = response.headers_mut();
        // The gateway's policy is the one the browser sees: an upstream's own CORS headers
        // (a framework default of `*`, say) would otherwise widen or contradict it.
        for name in CORS_RESPONSE_HEADERS {
            headers.remove(name);
        }
        add_vary(headers, &["origin"]);
        if let Some(grant) = grant {
            headers.set("access-control-allow-origin", grant.allow_origin);
            if grant.credentials {
                headers.set("access-control-allow-credentials", "true");
            }
            if let Some(expose) = grant.expose {
                headers.set("access-control-expose-headers", expose);
            }
        }
        Ok(response)
    }
}

/// What the gateway runs at load: the config must read and describe a policy that can work.
fn check_config(config: &Config) -> Result<(), String> {
    config.policy().map(drop).map_err(|e| e.to_string())
}

tessera_sdk::filter!(Cors, config = Config, check = check_config);

#[cfg(test)]
mod tests;
