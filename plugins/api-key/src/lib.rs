//! Filter plugin: authenticates clients by API key against stored SHA-256 hashes.
//!
//! ```toml
//! [[routes.filters]]
//! plugin = "api-key"
//! [routes.filters.config]
//! key_from = [{ header = "x-api-key" }, { query = "api_key" }]
//! keys = [{ consumer = "mobile-app", sha256 = "${env:MOBILE_APP_KEY_SHA256}" }]
//! ```
//!
//! The config holds only hashes (`printf %s "$KEY" | sha256sum`). A request with a known key
//! goes on with `x-consumer: <consumer>` and without the key; any other request is answered
//! `401`. See `docs/plugins/api-key.md` for every option.

#![forbid(unsafe_code)]

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tessera_sdk::{Action, Error, Filter, Request, Response};

/// The plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The accepted keys, by hash. Default: none (every request is refused).
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Where the key is looked for, in order; the first place that has one is used. Default:
    /// `[{ header = "x-api-key" }]`.
    #[serde(default = "default_sources")]
    pub key_from: Vec<KeySource>,
    /// The request header that names the consumer for the upstream. Default: `x-consumer`.
    #[serde(default = "default_consumer_header")]
    pub consumer_header: String,
    /// The realm in `www-authenticate`. Default: `"tessera"`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_sources() -> Vec<KeySource> {
    vec![KeySource::Header("x-api-key".to_owned())]
}

fn default_consumer_header() -> String {
    "x-consumer".to_owned()
}

fn default_realm() -> String {
    "tessera".to_owned()
}

/// One accepted key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds the key; sent to the upstream in the consumer header.
    pub consumer: String,
    /// The key's SHA-256 as 64 hex digits.
    pub sha256: String,
}

/// A place a key can come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
}

/// A config value that cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A hash that is not 64 hex digits.
    #[error("keys[{0}].sha256: must be 64 hex digits (the SHA-256 of the key)")]
    Hash(usize),
    /// A consumer name that cannot be a header value.
    #[error("keys[{0}].consumer: must be non-empty printable ASCII")]
    Consumer(usize),
    /// Two entries with the same key.
    #[error("keys[{0}] and keys[{1}] have the same sha256")]
    Duplicate(usize, usize),
    /// No place to look for a key.
    #[error("key_from: give at least one place")]
    NoSource,
    /// A header or parameter name that cannot work.
    #[error("{0}: {1:?} is not a valid name")]
    Name(&'static str, String),
    /// The consumer header is also where keys are read from.
    #[error("consumer_header: {0:?} is also in key_from")]
    ConsumerIsKeyHeader(String),
    /// A realm that cannot be quoted in `www-authenticate`.
    #[error("realm: must be printable ASCII without '\"' or '\\'")]
    Realm,
}

/// The config, checked, with hashes decoded.
#[derive(Debug)]
struct Checker {
    hashes: Vec<[u8; 32]>,
    consumers: Vec<String>,
    sources: Vec<KeySource>,
    consumer_header: String,
    realm: String,
}

impl Config {
    fn checker(self) -> Result<Checker, ConfigError> {
        let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(self.keys.len());
        let mut consumers = Vec::with_capacity(self.keys.len());
        for (i, entry) in self.keys.into_iter().enumerate() {
            let hash = decode_hex(&entry.sha256).ok_or(ConfigError::Hash(i))?;
            if let Some(j) = hashes.iter().position(|h| *h == hash) {
                return Err(ConfigError::Duplicate(j, i));
            }
            if entry.consumer.is_empty()
                || !entry.consumer.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(ConfigError::Consumer(i));
            }
            hashes.push(hash);
            consumers.push(entry.consumer);
        }
        if self.key_from.is_empty() {
            return Err(ConfigError::NoSource);
        }
        for source in &self.key_from {
            match source {
                KeySource::Header(name) if !is_token(name) => {
                    return Err(ConfigError::Name("key_from", name.clone()));
                }
                KeySource::Query(name) if name.is_empty() => {
                    return Err(ConfigError::Name("key_from", name.clone()));
                }
                _ => {}
            }
        }
        if !is_token(&self.consumer_header) {
            return Err(ConfigError::Name("consumer_header", self.consumer_header));
        }
        let reads_consumer_header = self.key_from.iter().any(
            |s| matches!(s, KeySource::Header(h) if h.eq_ignore_ascii_case(&self.consumer_header)),
        );
        if reads_consumer_header {
            return Err(ConfigError::ConsumerIsKeyHeader(self.consumer_header));
        }
        if !self
            .realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::Realm);
        }
        Ok(Checker {
            hashes,
            consumers,
            sources: self.key_from,
            consumer_header: self.consumer_header,
            realm: self.realm,
        })
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// An HTTP token (RFC 9110 §5.6.2): what header names are made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Checker {
    /// The first key the request presents, in the configured order.
    fn presented(&self, request: &Request) -> Option<Vec<u8>> {
        self.sources.iter().find_map(|source| {
            let key = match source {
                KeySource::Header(name) => request.headers().get_bytes(name).map(<[u8]>::to_vec),
                KeySource::Query(name) => request.query_param(name).map(String::into_bytes),
            };
            key.filter(|k| !k.is_empty())
        })
    }

    /// The consumer whose hash matches `key`. Every stored hash is compared, in constant
    /// time, whatever matches: the time taken does not tell which entry matched or how much
    /// of a hash did.
    fn consumer(&self, key: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, hash) in self.hashes.iter().enumerate() {
            let equal = hash.ct_eq(&digest);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), equal);
            found |= equal;
        }
        if bool::from(found) {
            self.consumers.get(index as usize).map(String::as_str)
        } else {
            None
        }
    }

    /// Takes every copy of the key off the request, from every configured place.
    fn strip(&self, request: &mut Request) {
        for source in &self.sources {
            match source {
                KeySource::Header(name) => {
                    request.headers_mut().remove(name);
                }
                KeySource::Query(name) => {
                    let query = request.query().map(|q| without_param(q, name));
                    request.set_query(query.filter(|q| !q.is_empty()));
                }
            }
        }
    }
}

/// `query` without the parameter `name` (compared after percent-decoding); the other
/// parameters stay byte for byte as they were.
fn without_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let raw_name = pair.split('=').next().unwrap_or_default();
            form_urlencoded::parse(raw_name.as_bytes())
                .next()
                .is_none_or(|(decoded, _)| decoded != name)
        })
        .filter(|pair| !pair.is_empty())
        .collect::<Vec<_>>()
        .join("&")
}

/// The 401 answer. Missing and unknown keys get the same answer, so a client learns nothing
/// about which keys exist; which of the two it was goes to the log.
fn refuse(realm: &str, reason: &str) -> Response {
    let mut response = Error::unauthorized("a valid API key is required")
        .with_detail(format!("api-key: {reason}"))
        .into_response();
    response
        .headers_mut()
        .set("www-authenticate", format!("ApiKey realm=\"{realm}\""));
    response
}

/// The filter.
#[derive(Debug)]
pub struct ApiKeyFilter;

impl Filter for ApiKeyFilter {
    fn on_request(mut request: Request) -> Result<Action, Error> {
        let config: Config = tessera_sdk::config()?;
        let checker = config.checker().map_err(|e| {
            Error::internal("the plugin is misconfigured")
                .with_detail(format!("api-key config: {e}"))
        })?;
        // The consumer header comes only from this filter.
        request.headers_mut().remove(&checker.consumer_header);
        let Some(key) = checker.presented(&request) else {
            return Ok(Action::Respond(refuse(
                &checker.realm,
                "no API key in the request",
            )));
        };
        let Some(consumer) = checker.consumer(&key).map(str::to_owned) else {
            return Ok(Action::Respond(refuse(&checker.realm, "unknown API key")));
        };
        checker.strip(&mut request);
        request
            .headers_mut()
            .set(&checker.consumer_header, consumer.into_bytes());
        Ok(Action::Continue(request))
    }
}

/// What the gateway runs at load: the config must read and every key entry must be usable.
fn check_config(config: &Config) -> Result<(), String> {
    config
        .clone()
        .checker()
        .map(drop)
        .map_err(|e| e.to_string())
}

tessera_sdk::filter!(ApiKeyFilter, config = Config, check = check_config);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tessera_sdk::testing::MockHost;

    fn sha256_hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn config() -> Value {
        json!({
            "keys": [
                { "consumer": "mobile-app", "sha256": sha256_hex("mobile-secret-1") },
                { "consumer": "partner", "sha256": sha256_hex("partner-secret-2").to_uppercase() },
            ],
            "key_from": [{ "header": "x-api-key" }, { "query": "api_key" }],
        })
    }

    fn run(config: Value, request: Request) -> (Result<Request, Response>, MockHost) {
        let host = MockHost::new().config(config);
        let outcome = match host.on_request::<ApiKeyFilter>(request) {
            Action::Continue(request) => Ok(request),
            Action::Respond(response) => Err(response),
        };
        (outcome, host)
    }

    fn refused(outcome: (Result<Request, Response>, MockHost), logged: &str) {
        let (result, host) = outcome;
        let response = result.expect_err("the request must be refused");
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.header("www-authenticate"),
            Some("ApiKey realm=\"tessera\"")
        );
        let body: Value = response.json_body().unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["message"], "a valid API key is required");
        assert!(
            host.logs().iter().any(|l| l.message.contains(logged)),
            "expected {logged:?} in {:?}",
            host.logs()
        );
    }

    #[test]
    fn a_known_key_in_the_header_names_the_consumer_and_is_removed() {
        let request = Request::new("GET", "/orders?page=2")
            .with_header("x-api-key", "partner-secret-2")
            .with_header("x-consumer", "admin")
            .with_header("X-Consumer", "root");
        let out = run(config(), request).0.expect("a known key passes");
        assert_eq!(out.headers().get_all("x-consumer").count(), 1);
        assert_eq!(out.header("x-consumer"), Some("partner"));
        assert!(!out.headers().contains("x-api-key"));
        assert_eq!(out.query(), Some("page=2"));
    }

    #[test]
    fn a_key_in_the_query_is_removed_and_other_parameters_stay_as_sent() {
        let request = Request::new(
            "GET",
            "/orders?q=a%20b&api%5Fkey=mobile-secret-1&page=2&api_key=again&flag",
        );
        let out = run(config(), request).0.expect("a known key passes");
        assert_eq!(out.header("x-consumer"), Some("mobile-app"));
        assert_eq!(out.query(), Some("q=a%20b&page=2&flag"));
        let only = Request::new("GET", "/orders?api_key=mobile-secret-1");
        assert_eq!(run(config(), only).0.expect("passes").query(), None);
    }

    #[test]
    fn the_first_configured_place_wins_and_every_copy_is_removed() {
        // The header comes first in key_from; the query copy is stripped too.
        let request = Request::new("GET", "/?api_key=partner-secret-2")
            .with_header("x-api-key", "mobile-secret-1");
        let out = run(config(), request).0.expect("passes");
        assert_eq!(out.header("x-consumer"), Some("mobile-app"));
        assert_eq!(out.query(), None);
        // An unknown key in the first place is not rescued by a known one later.
        let request =
            Request::new("GET", "/?api_key=partner-secret-2").with_header("x-api-key", "guess");
        refused(run(config(), request), "unknown API key");
    }

    #[test]
    fn missing_and_unknown_keys_get_the_same_401() {
        refused(run(config(), Request::new("GET", "/")), "no API key");
        refused(
            run(
                config(),
                Request::new("GET", "/").with_header("x-api-key", ""),
            ),
            "no API key",
        );
        refused(
            run(
                config(),
                Request::new("GET", "/").with_header("x-api-key", "mobile-secret-2"),
            ),
            "unknown API key",
        );
        // The hash itself is not the key.
        let hash = sha256_hex("mobile-secret-1");
        refused(
            run(
                config(),
                Request::new("GET", "/").with_header("x-api-key", hash),
            ),
            "unknown API key",
        );
        // The default place is the x-api-key header only.
        let default = json!({ "keys": config()["keys"] });
        refused(
            run(
                default.clone(),
                Request::new("GET", "/?api_key=mobile-secret-1"),
            ),
            "no API key",
        );
        let out = run(
            default,
            Request::new("GET", "/").with_header("X-API-Key", "mobile-secret-1"),
        )
        .0
        .expect("passes");
        assert_eq!(out.header("x-consumer"), Some("mobile-app"));
    }

    #[test]
    fn the_consumer_header_is_configurable() {
        let mut config = config();
        config["consumer_header"] = "X-Client".into();
        let request = Request::new("GET", "/")
            .with_header("x-api-key", "mobile-secret-1")
            .with_header("x-client", "forged");
        let out = run(config, request).0.expect("passes");
        assert_eq!(out.headers().get_all("x-client").count(), 1);
        assert_eq!(out.header("x-client"), Some("mobile-app"));
    }

    #[test]
    fn bad_config_is_a_500_that_names_the_key_in_the_log() {
        let hash = sha256_hex("k");
        for (config, logged) in [
            (
                json!({ "keys": [{ "consumer": "a", "sha256": "abc" }] }),
                "keys[0].sha256",
            ),
            (
                json!({ "keys": [{ "consumer": "a", "sha256": "zz".repeat(32) }] }),
                "keys[0].sha256",
            ),
            (
                json!({ "keys": [{ "consumer": "", "sha256": hash }] }),
                "keys[0].consumer",
            ),
            (
                json!({ "keys": [{ "consumer": "a", "sha256": hash }, { "consumer": "b", "sha256": hash }] }),
                "keys[0] and keys[1] have the same sha256",
            ),
            (
                json!({ "key_from": [] }),
                "key_from: give at least one place",
            ),
            (
                json!({ "key_from": [{ "cookie": "k" }] }),
                "unknown variant `cookie`",
            ),
            (
                json!({ "consumer_header": "x consumer" }),
                "consumer_header",
            ),
            (
                json!({ "consumer_header": "X-Api-Key" }),
                "consumer_header: \"X-Api-Key\" is also in key_from",
            ),
            (
                json!({ "keys": [{ "consumer": "a", "sha": hash }] }),
                "unknown field `sha`",
            ),
        ] {
            let (result, host) = run(
                config,
                Request::new("GET", "/").with_header("x-api-key", "k"),
            );
            let response = result.expect_err("a bad config answers");
            assert_eq!(response.status(), 500, "{logged}");
            assert!(
                host.logs().iter().any(|l| l.message.contains(logged)),
                "expected {logged:?} in {:?}",
                host.logs()
            );
        }
    }
}
