//! The plugin's config, and the [`Policy`] it describes once checked.

use serde::Deserialize;

use crate::origin::{self, Rule};

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
pub(crate) enum Origins {
    /// `*`, and whether `null` was listed beside it.
    Any { null: bool },
    /// These entries.
    Listed(Vec<Rule>),
}

/// Which methods are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Methods {
    Any,
    Listed(Vec<String>),
}

/// Which request headers are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestHeaders {
    /// Whatever a preflight asks for.
    Reflect,
    /// These, lower-case.
    Listed(Vec<String>),
}

/// The config, checked and ready to decide requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) origins: Origins,
    pub(crate) methods: Methods,
    pub(crate) headers: RequestHeaders,
    /// `access-control-expose-headers`, when any are exposed.
    pub(crate) expose: Option<String>,
    pub(crate) credentials: bool,
    pub(crate) max_age: Option<u32>,
    /// `refuse_disallowed_origins`.
    pub(crate) refuse: bool,
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
pub(crate) fn is_token(name: &str) -> bool {
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
