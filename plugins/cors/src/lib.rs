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

use serde::Deserialize;
use tessera_sdk::{Action, Error, Filter, Headers, Request, Response, context, log};

pub mod origin;

use origin::{RequestOrigin, Rule};

/// The plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Origins allowed to read responses: `scheme://host[:port]`, `scheme://*.domain[:port]`
    /// (any subdomain), `"null"`, or `"*"` (any origin, never with credentials). Required.
    pub allow_origins: Vec<String>,
    /// Methods a cross-origin request may use, or `["*"]` for any. Default:
    /// `["GET", "HEAD", "POST"]`.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a cross-origin request may send (case-insensitive). Default: none.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Allow whatever headers a preflight asks for (any valid header name). Default: false.
    #[serde(default)]
    pub reflect_request_headers: bool,
    /// Response headers the page's script may read beyond the safelisted ones. Default: none.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Let the page send cookies and HTTP authentication and read the answer. Default: false.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer, in seconds (at most 86400).
    /// Default: not sent (browsers then cache for 5 seconds).
    pub max_age: Option<u32>,
    /// Answer `403` to requests from origins that are not allowed instead of passing them on
    /// without CORS headers. Default: false.
    #[serde(default)]
    pub refuse_disallowed_origins: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(str::to_owned).to_vec()
}

/// Browsers cap a preflight's cache lifetime (Firefox at a day, Chromium at two hours); a
/// larger value is a misunderstanding rather than a policy.
const MAX_AGE_LIMIT: u32 = 86_400;

/// The most header names a preflight may ask for. Browsers list only the non-safelisted
/// headers a script set, so real pages stay far below.
pub const MAX_REQUESTED_HEADERS: usize = 64;

/// A config value that cannot work; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No origin at all.
    #[error("allow_origins: list at least one origin, or \"*\" for any")]
    NoOrigins,
    /// An entry that is not an origin, a wildcard or `null`.
    #[error("allow_origins[{0}]: {1}")]
    Origin(usize, origin::RuleError),
    /// `*` beside specific origins, which it would make pointless.
    #[error("allow_origins[{0}]: \"*\" allows every origin; it can only be combined with \"null\"")]
    AnyAmongOthers(usize),
    /// Credentials with `*`, which browsers refuse (Fetch standard, CORS check).
    #[error(
        "allow_credentials: cannot be true when allow_origins has \"*\" (browsers refuse credentials with a wildcard); list the origins"
    )]
    CredentialsWithAny,
    /// Credentials with `null`, which any site can send from a sandboxed frame.
    #[error(
        "allow_credentials: cannot be true when allow_origins has \"null\" (any site can send Origin: null from a sandboxed iframe)"
    )]
    CredentialsWithNull,
    /// No method at all.
    #[error("allow_methods: list at least one method, or \"*\" for any")]
    NoMethods,
    /// `*` beside methods.
    #[error("allow_methods[{0}]: \"*\" allows every method; list it alone")]
    AnyMethodAmongOthers(usize),
    /// A header name or method that is not an HTTP token.
    #[error("{0}[{1}]: {2:?} is not a valid {3}")]
    NotAToken(&'static str, usize, String, &'static str),
    /// `*` in `allow_headers`, which is what `reflect_request_headers` is for.
    #[error(
        "allow_headers[{0}]: use reflect_request_headers = true to allow every requested header"
    )]
    AnyHeader(usize),
    /// Both a header list and reflection.
    #[error(
        "allow_headers: leave it empty with reflect_request_headers = true (every requested header is allowed)"
    )]
    ListAndReflect,
    /// `*` in `expose_headers` with credentials, where browsers read it as a header named `*`.
    #[error(
        "expose_headers[{0}]: \"*\" exposes every header only without credentials; list the headers when allow_credentials = true"
    )]
    ExposeAnyWithCredentials(usize),
    /// A cache lifetime no browser honours.
    #[error("max_age: {0} is more than {MAX_AGE_LIMIT} seconds (a day); browsers cap it lower")]
    MaxAge(u32),
}

/// Which origins may read responses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// `*`, and whether `null` was listed beside it.
    Any { null: bool },
    /// These entries.
    Listed(Vec<Rule>),
}

/// Which methods are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Methods {
    Any,
    Listed(Vec<String>),
}

/// Which request headers are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestHeaders {
    /// Whatever a preflight asks for.
    Reflect,
    /// These, lower-case.
    Listed(Vec<String>),
}

/// The config, checked and ready to decide requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    origins: Origins,
    methods: Methods,
    headers: RequestHeaders,
    expose: Option<String>,
    credentials: bool,
    max_age: Option<u32>,
    refuse: bool,
}

impl Config {
    /// Checks the config and builds the policy it describes.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let origins = self.origins()?;
        if self.allow_credentials {
            match &origins {
                Origins::Any { .. } => return Err(ConfigError::CredentialsWithAny),
                Origins::Listed(rules) if rules.contains(&Rule::Null) => {
                    return Err(ConfigError::CredentialsWithNull);
                }
                Origins::Listed(_) => {}
            }
        }
        let methods = self.methods()?;
        let headers = if self.reflect_request_headers {
            if !self.allow_headers.is_empty() {
                return Err(ConfigError::ListAndReflect);
            }
            RequestHeaders::Reflect
        } else {
            let mut listed = Vec::new();
            for (i, name) in self.allow_headers.iter().enumerate() {
                if name == "*" {
                    return Err(ConfigError::AnyHeader(i));
                }
                check_token("allow_headers", i, name, "header name")?;
                listed.push(name.to_ascii_lowercase());
            }
            RequestHeaders::Listed(dedup(listed))
        };
        let mut expose = Vec::new();
        for (i, name) in self.expose_headers.iter().enumerate() {
            if name == "*" {
                if self.allow_credentials {
                    return Err(ConfigError::ExposeAnyWithCredentials(i));
                }
            } else {
                check_token("expose_headers", i, name, "header name")?;
            }
            expose.push(name.to_ascii_lowercase());
        }
        if let Some(age) = self.max_age.filter(|&age| age > MAX_AGE_LIMIT) {
            return Err(ConfigError::MaxAge(age));
        }
        let expose = dedup(expose);
        Ok(Policy {
            origins,
            methods,
            headers,
            expose: (!expose.is_empty()).then(|| expose.join(", ")),
            credentials: self.allow_credentials,
            max_age: self.max_age,
            refuse: self.refuse_disallowed_origins,
        })
    }

    fn origins(&self) -> Result<Origins, ConfigError> {
        if self.allow_origins.is_empty() {
            return Err(ConfigError::NoOrigins);
        }
        if let Some(any) = self.allow_origins.iter().position(|o| o == "*") {
            let mut null = false;
            for entry in &self.allow_origins {
                match entry.as_str() {
                    "*" => {}
                    "null" => null = true,
                    _ => return Err(ConfigError::AnyAmongOthers(any)),
                }
            }
            return Ok(Origins::Any { null });
        }
        let mut rules = Vec::with_capacity(self.allow_origins.len());
        for (i, entry) in self.allow_origins.iter().enumerate() {
            rules.push(Rule::parse(entry).map_err(|e| ConfigError::Origin(i, e))?);
        }
        Ok(Origins::Listed(rules))
    }

    fn methods(&self) -> Result<Methods, ConfigError> {
        if self.allow_methods.is_empty() {
            return Err(ConfigError::NoMethods);
        }
        if let Some(i) = self.allow_methods.iter().position(|m| m == "*") {
            if self.allow_methods.len() > 1 {
                return Err(ConfigError::AnyMethodAmongOthers(i));
            }
            return Ok(Methods::Any);
        }
        let mut listed = Vec::new();
        for (i, method) in self.allow_methods.iter().enumerate() {
            check_token("allow_methods", i, method, "method")?;
            listed.push(normalize_method(method));
        }
        Ok(Methods::Listed(dedup(listed)))
    }
}

/// Browsers upper-case these six method names in `fetch` and send every other name as the
/// script wrote it (Fetch standard, "normalize a method"); the config is read the same way, so
/// `get` means `GET` but `patch` stays `patch`.
fn normalize_method(method: &str) -> String {
    const NORMALIZED: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
    NORMALIZED
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .map_or_else(|| method.to_owned(), |m| (*m).to_owned())
}

fn check_token(
    key: &'static str,
    index: usize,
    value: &str,
    what: &'static str,
) -> Result<(), ConfigError> {
    if is_token(value) {
        Ok(())
    } else {
        Err(ConfigError::NotAToken(key, index, value.to_owned(), what))
    }
}

/// An HTTP token (RFC 9110 §5.6.2): what method and header names are made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

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
