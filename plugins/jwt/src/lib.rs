//! Filter plugin: verifies a JSON Web Token and passes its claims on as request headers.
//!
//! ```toml
//! [[routes.filters]]
//! plugin = "jwt"
//! [routes.filters.config]
//! keys = [{ kid = "2026-1", alg = "RS256", pem = "${file:/etc/tessera/jwt-public.pem}" }]
//! issuer = "https://id.example.com"
//! audience = "orders-api"
//! claims_to_headers = { sub = "x-user-id", "org.id" = "x-org" }
//! ```
//!
//! A request without a valid token is answered `401` with `www-authenticate: Bearer ...`
//! (RFC 6750); why the token was refused goes to the gateway's log only. See
//! `docs/plugins/jwt.md` for every option.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tessera_sdk::{Action, Error, Filter, Request, Response};

pub mod keys;
pub mod token;

use keys::{Jwks, Key, KeyConfig};
use token::{Rejection, Rules};

/// The plugin's config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the token is read from. Default: `"bearer"` (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub token_from: TokenSource,
    /// Keys, each valid for one algorithm. Default: none (at least one key must come from
    /// `keys`, `jwks` or `jwks_json`).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWK Set written inline (`{ keys = [...] }`). Default: none.
    pub jwks: Option<Jwks>,
    /// A JWK Set as JSON text, typically `"${file:/path/jwks.json}"`. Default: none.
    pub jwks_json: Option<String>,
    /// Accepted `iss` values (a string or a list). Default: any issuer.
    pub issuer: Option<OneOrMany>,
    /// Accepted `aud` values (a string or a list); the token's `aud` (a string or a list) must
    /// hold one of them. Default: any audience.
    pub audience: Option<OneOrMany>,
    /// Clock difference tolerated when checking `exp` and `nbf`, in seconds. Default: 30.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u32,
    /// Whether a token without `exp` is refused. Default: true.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claims that must be present (dotted paths reach into objects). Default: none.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim → request header. Strings are copied, other values as JSON text; a missing claim
    /// sets no header. Incoming headers of these names are always removed. Default: none.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Whether the token stays on the request for the upstream. Default: true.
    #[serde(default = "yes")]
    pub forward_token: bool,
    /// The realm in `www-authenticate`. Default: `"tessera"`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

impl fmt::Debug for Config {
    // Key material (HMAC secrets, `oct` JWKs) stays out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("token_from", &self.token_from)
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("require_exp", &self.require_exp)
            .field("required_claims", &self.required_claims)
            .field("claims_to_headers", &self.claims_to_headers)
            .field("forward_token", &self.forward_token)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

fn default_leeway() -> u32 {
    30
}

fn yes() -> bool {
    true
}

fn default_realm() -> String {
    "tessera".to_owned()
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

/// Where the token comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    #[default]
    Bearer,
    /// The whole value of this header.
    Header(String),
    /// The value of this cookie.
    Cookie(String),
}

/// What the request carries where the token should be.
enum Presented {
    Token(String),
    Missing(&'static str),
    Ambiguous(&'static str),
}

impl TokenSource {
    fn find(&self, request: &Request) -> Presented {
        match self {
            Self::Bearer => {
                let mut values = request.headers().get_all("authorization");
                let (Some(value), None) = (values.next(), values.next()) else {
                    return if request.headers().contains("authorization") {
                        Presented::Ambiguous("more than one authorization header")
                    } else {
                        Presented::Missing("no authorization header")
                    };
                };
                let Ok(value) = std::str::from_utf8(value) else {
                    return Presented::Ambiguous("authorization header is not UTF-8");
                };
                match value.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                        Presented::Token(token.trim().to_owned())
                    }
                    _ => Presented::Missing("authorization header is not a bearer token"),
                }
            }
            Self::Header(name) => {
                let mut values = request.headers().get_all(name);
                match (values.next(), values.next()) {
                    (None, _) => Presented::Missing("no token header"),
                    (Some(_), Some(_)) => Presented::Ambiguous("more than one token header"),
                    (Some(value), None) => match std::str::from_utf8(value) {
                        Ok(v) => Presented::Token(v.trim().to_owned()),
                        Err(_) => Presented::Ambiguous("token header is not UTF-8"),
                    },
                }
            }
            Self::Cookie(name) => {
                let mut found = cookies(request).filter(|(n, _)| n == name).map(|(_, v)| v);
                match (found.next(), found.next()) {
                    (None, _) => Presented::Missing("no token cookie"),
                    (Some(_), Some(_)) => Presented::Ambiguous("more than one token cookie"),
                    (Some(value), None) => Presented::Token(value),
                }
            }
        }
    }

    /// Takes the token off the request.
    fn remove(&self, request: &mut Request) {
        match self {
            Self::Bearer => {
                request.headers_mut().remove("authorization");
            }
            Self::Header(name) => {
                request.headers_mut().remove(name);
            }
            Self::Cookie(name) => {
                let kept: Vec<String> = request
                    .headers()
                    .get_all("cookie")
                    .filter_map(|v| std::str::from_utf8(v).ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|pair| !pair.is_empty())
                    .filter(|pair| pair.split_once('=').is_none_or(|(n, _)| n.trim() != name))
                    .map(str::to_owned)
                    .collect();
                if kept.is_empty() {
                    request.headers_mut().remove("cookie");
                } else {
                    request.headers_mut().set("cookie", kept.join("; "));
                }
            }
        }
    }
}

/// The `name=value` pairs of every `Cookie` header (RFC 6265 §5.4), quotes taken off values.
fn cookies(request: &Request) -> impl Iterator<Item = (String, String)> + '_ {
    request
        .headers()
        .get_all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (n.trim().to_owned(), v.to_owned())
        })
}

/// The config, checked and with its keys parsed.
struct Verifier {
    keys: Vec<Key>,
    rules: Rules,
    source: TokenSource,
    headers: Vec<(String, String)>,
    forward_token: bool,
    realm: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A config value that cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key entry or JWKS is unusable.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// No key at all.
    #[error("no keys: give `keys`, `jwks` or `jwks_json`")]
    NoKeys,
    /// A header name that is not an HTTP token.
    #[error("{0}: {1:?} is not a valid header name")]
    HeaderName(&'static str, String),
    /// A realm that cannot be quoted in `www-authenticate`.
    #[error("realm: must be printable ASCII without '\"' or '\\'")]
    Realm,
    /// A claim header that is where the token is read from: removing client copies of it
    /// would remove the token.
    #[error("claims_to_headers: {0:?} is the header the token is read from")]
    TokenHeader(String),
}

impl Config {
    fn verifier(self) -> Result<Verifier, ConfigError> {
        let mut keys = Vec::new();
        for (i, entry) in self.keys.iter().enumerate() {
            keys.push(entry.to_key(&format!("keys[{i}]"))?);
        }
        if let Some(jwks) = &self.jwks {
            keys.extend(jwks.to_keys("jwks")?);
        }
        if let Some(text) = &self.jwks_json {
            keys.extend(Jwks::from_text(text)?.to_keys("jwks_json")?);
        }
        if keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        if let TokenSource::Header(name) | TokenSource::Cookie(name) = &self.token_from
            && !is_token(name)
        {
            return Err(ConfigError::HeaderName("token_from", name.clone()));
        }
        let mut headers = Vec::new();
        for (claim, header) in self.claims_to_headers {
            if !is_token(&header) {
                return Err(ConfigError::HeaderName("claims_to_headers", header));
            }
            let token_header = match &self.token_from {
                TokenSource::Bearer => Some("authorization"),
                TokenSource::Header(name) => Some(name.as_str()),
                TokenSource::Cookie(_) => Some("cookie"),
            };
            if token_header.is_some_and(|t| t.eq_ignore_ascii_case(&header)) {
                return Err(ConfigError::TokenHeader(header));
            }
            headers.push((claim, header.to_ascii_lowercase()));
        }
        if !self
            .realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::Realm);
        }
        Ok(Verifier {
            keys,
            rules: Rules {
                leeway_secs: i64::from(self.leeway_secs),
                issuers: self.issuer.map(OneOrMany::into_vec).unwrap_or_default(),
                audiences: self.audience.map(OneOrMany::into_vec).unwrap_or_default(),
                required_claims: self.required_claims,
                require_exp: self.require_exp,
            },
            source: self.token_from,
            headers,
            forward_token: self.forward_token,
            realm: self.realm,
        })
    }
}

/// An HTTP token (RFC 9110 §5.6.2): what header and cookie names are made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be sent as a header value: no control characters (CR, LF and NUL
/// among them) and no surrounding whitespace (RFC 9110 §5.5).
fn is_header_value(value: &str) -> bool {
    value.trim() == value
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The 401 answer: RFC 6750 §3 wants no error code when the request had no token, and
/// `invalid_token` when it had one that failed. The reason is logged, never sent.
fn refuse(realm: &str, reason: &str, had_token: bool) -> Response {
    let challenge = if had_token {
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
    } else {
        format!("Bearer realm=\"{realm}\"")
    };
    let mut response = Error::unauthorized("a valid bearer token is required")
        .with_detail(format!("jwt: {reason}"))
        .into_response();
    response
        .headers_mut()
        .set("www-authenticate", challenge.into_bytes());
    response
}

/// Checks the request's token at `now` (seconds since the Unix epoch) against the route's
/// config: the filter's whole decision, with the clock passed in so tests can set it.
pub fn authenticate(mut request: Request, now: i64) -> Result<Action, Error> {
    let config: Config = tessera_sdk::config()?;
    let verifier = config.verifier().map_err(|e| {
        Error::internal("the plugin is misconfigured").with_detail(format!("jwt config: {e}"))
    })?;
    // Identity headers come only from a verified token: a client's own copies go first.
    for (_, header) in &verifier.headers {
        request.headers_mut().remove(header);
    }
    let token = match verifier.source.find(&request) {
        Presented::Token(token) if !token.is_empty() => token,
        Presented::Token(_) => {
            return Ok(Action::Respond(refuse(
                &verifier.realm,
                "empty token",
                false,
            )));
        }
        Presented::Missing(why) => return Ok(Action::Respond(refuse(&verifier.realm, why, false))),
        Presented::Ambiguous(why) => {
            return Ok(Action::Respond(refuse(&verifier.realm, why, true)));
        }
    };
    let claims = match token::verify(&token, &verifier.keys, &verifier.rules, now) {
        Ok(claims) => claims,
        Err(rejection) => {
            return Ok(Action::Respond(refuse(
                &verifier.realm,
                &rejection.to_string(),
                true,
            )));
        }
    };
    for (name, header) in &verifier.headers {
        let text = match token::claim(&claims, name) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if !is_header_value(&text) {
            let rejection = Rejection::HeaderValue(name.clone());
            return Ok(Action::Respond(refuse(
                &verifier.realm,
                &rejection.to_string(),
                true,
            )));
        }
        request.headers_mut().set(header, text);
    }
    if !verifier.forward_token {
        verifier.source.remove(&mut request);
    }
    Ok(Action::Continue(request))
}

/// Seconds since the Unix epoch by the clock the plugin sees.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The filter.
#[derive(Debug)]
pub struct JwtFilter;

impl Filter for JwtFilter {
    fn on_request(request: Request) -> Result<Action, Error> {
        authenticate(request, unix_now())
    }
}

/// What the gateway runs at load: the config must read and its keys must parse.
fn check_config(config: &Config) -> Result<(), String> {
    config
        .clone()
        .verifier()
        .map(drop)
        .map_err(|e| e.to_string())
}

tessera_sdk::filter!(JwtFilter, config = Config, check = check_config);

#[cfg(test)]
mod tests;
