//! Filter plugin: a response cache for `GET` and `HEAD` in a shared key-value bucket.
//!
//! ```toml
//! [buckets.cache]
//! backend = "memory"
//! ttl_ms = 600000          # cleanup only; freshness is kept in each entry
//!
//! [[routes.filters]]
//! plugin = "cache"
//! buckets = ["cache"]
//! buffer_body = true       # the filter must see the body to store it
//! config = { bucket = "cache", default_ttl_secs = 30, vary = ["accept-language"] }
//! ```
//!
//! A fresh entry answers the request with `x-cache: hit` and `age`, and the route's target is
//! not called. Otherwise the request goes on and its response, marked `x-cache: miss`, is
//! stored when `cache-control`, the status, `set-cookie`, `vary` and the body allow it. See
//! `docs/plugins/cache.md`.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_sdk::{Action, Error, Filter, Headers, Request, Response, context, kv, log};

mod entry;
pub use entry::Entry;

/// Longest freshness lifetime, from any source (ten years, the bucket TTL's own cap).
pub const MAX_TTL_SECS: u64 = 315_360_000;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bucket holding the entries; the route entry must grant it. Required.
    pub bucket: String,
    /// Freshness lifetime of a response whose `cache-control` gives none (`s-maxage`,
    /// `max-age`). Default `0`: such responses are not stored.
    #[serde(default)]
    pub default_ttl_secs: u64,
    /// Response statuses that may be stored. Default `[200]`.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// Request headers whose values separate entries (e.g. `accept-language`). Default `[]`.
    /// A response whose own `vary` names a header not listed here is not stored.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Whether a response with `set-cookie` may be stored (the stored copy never holds the
    /// cookie). Default `false`: such responses are not stored.
    #[serde(default)]
    pub cache_set_cookie: bool,
    /// Largest body stored, in bytes. Default `524288` (512 KiB), which with headers fits the
    /// bucket's default `max_value_bytes` of 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_statuses() -> Vec<u16> {
    vec![200]
}

fn default_max_body_bytes() -> u64 {
    512 * 1024
}

impl Config {
    /// The route's config, checked.
    pub fn load() -> Result<Self, Error> {
        let mut config: Self = tessera_sdk::config()?;
        config.check().map_err(|e| {
            Error::internal("the plugin is misconfigured")
                .with_detail(format!("invalid cache config: {e}"))
        })?;
        for name in &mut config.vary {
            name.make_ascii_lowercase();
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(s) = self.statuses.iter().find(|s| !(200..=599).contains(*s)) {
            return Err(format!("`statuses` holds {s}; a status is 200 to 599"));
        }
        if self.default_ttl_secs > MAX_TTL_SECS {
            return Err(format!(
                "`default_ttl_secs` is {}; at most {MAX_TTL_SECS}",
                self.default_ttl_secs
            ));
        }
        if let Some(name) = self.vary.iter().find(|n| !valid_header_name(n)) {
            return Err(format!("`vary` holds `{name}`, which is not a header name"));
        }
        Ok(())
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Header fields never stored: connection-level ones, framing (the gateway sets it), cookies,
/// and what the cache itself adds.
const NOT_STORED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "age",
    "x-cache",
];

/// The directives of every `cache-control` field, names lower-case, values unquoted.
pub fn cache_control(headers: &Headers) -> Vec<(String, Option<String>)> {
    headers
        .get_all("cache-control")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((name, value)) => (
                    name.trim().to_ascii_lowercase(),
                    Some(value.trim().trim_matches('"').to_owned()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(n, _)| n == name)
}

fn seconds(directives: &[(String, Option<String>)], name: &str) -> Option<u64> {
    let (_, value) = directives.iter().find(|(n, _)| n == name)?;
    // A malformed value means "stale now" (RFC 9111 §4.2.1): zero.
    Some(value.as_deref()?.parse::<u64>().unwrap_or(0))
}

/// The bucket key of `request`: a SHA-256 of the method (`HEAD` reads `GET` entries), path,
/// query and the `vary` headers' values, so any request makes a short key.
pub fn cache_key(config: &Config, request: &Request) -> String {
    let mut hash = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    feed(b"GET");
    feed(request.path().as_bytes());
    match request.query() {
        Some(q) => feed(format!("?{q}").as_bytes()),
        None => feed(b""),
    }
    for name in &config.vary {
        feed(name.as_bytes());
        let values: Vec<&[u8]> = request.headers().get_all(name).collect();
        feed(&(values.len() as u64).to_be_bytes());
        for value in values {
            feed(value);
        }
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cache:{hex}")
}

/// Why a response is not stored, or for how long it is fresh.
pub fn freshness(
    config: &Config,
    response: &Response,
    authorized: bool,
) -> Result<u64, &'static str> {
    if !config.statuses.contains(&response.status()) {
        return Err("its status is not in `statuses`");
    }
    let cc = cache_control(response.headers());
    if has(&cc, "no-store") || has(&cc, "private") || has(&cc, "no-cache") {
        return Err("cache-control forbids it");
    }
    for vary in response.headers().get_all("vary") {
        let vary = String::from_utf8_lossy(vary);
        for name in vary.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !config.vary.iter().any(|v| v.eq_ignore_ascii_case(name)) {
                return Err("it varies on a header not in `vary`");
            }
        }
    }
    if response.headers().contains("set-cookie") && !config.cache_set_cookie {
        return Err("it sets a cookie");
    }
    // A shared cache stores answers to authorized requests only when told it may.
    if authorized && !(has(&cc, "public") || has(&cc, "s-maxage") || has(&cc, "must-revalidate")) {
        return Err("the request carried authorization");
    }
    let ttl = seconds(&cc, "s-maxage")
        .or_else(|| seconds(&cc, "max-age"))
        .unwrap_or(config.default_ttl_secs)
        .min(MAX_TTL_SECS);
    if ttl == 0 {
        return Err("it has no freshness lifetime");
    }
    match response.body() {
        None => Err("its body is not visible (set buffer_body = true on the route entry)"),
        Some(body) if body.len() as u64 > config.max_body_bytes => {
            Err("its body is larger than `max_body_bytes`")
        }
        Some(_) => Ok(ttl * 1000),
    }
}

/// What on-request leaves for on-response of the same request.
#[derive(Debug)]
struct Pending {
    request_id: String,
    key: String,
    /// Whether the response may be stored (a `GET` that no directive or failure excludes).
    store: bool,
    authorized: bool,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Looks `request` up at `now_ms`: the stored answer, or the request to pass on.
pub fn lookup(request: Request, now_ms: u64) -> Result<Action, Error> {
    PENDING.with(|p| p.borrow_mut().take());
    let head = match request.method() {
        "GET" => false,
        "HEAD" => true,
        _ => return Ok(Action::Continue(request)),
    };
    let config = Config::load()?;
    let cc = cache_control(request.headers());
    if has(&cc, "no-store") {
        return Ok(Action::Continue(request));
    }
    let revalidate = has(&cc, "no-cache")
        || (cc.is_empty()
            && request
                .header("pragma")
                .is_some_and(|p| p.to_ascii_lowercase().contains("no-cache")));
    let key = cache_key(&config, &request);
    let mut store = !head;
    if !revalidate {
        match kv::open(&config.bucket).and_then(|b| b.get(&key)) {
            Ok(Some(bytes)) => match Entry::decode(&bytes) {
                Some(entry) if entry.expires_ms > now_ms => {
                    return Ok(Action::Respond(entry.into_response(now_ms)));
                }
                Some(_) => {}
                None => log::warn(format!("cache: entry {key} is malformed; replacing it")),
            },
            Ok(None) => {}
            Err(e) => {
                log::warn(format!("cache: bucket `{}` failed: {e}", config.bucket));
                store = false;
            }
        }
    }
    PENDING.with(|p| {
        *p.borrow_mut() = Some(Pending {
            request_id: context::request_id(),
            key,
            store,
            authorized: request.headers().contains("authorization"),
        });
    });
    Ok(Action::Continue(request))
}

/// Marks the response of a looked-up request `x-cache: miss` and stores it when it may.
pub fn store(mut response: Response, now_ms: u64) -> Result<Response, Error> {
    let Some(pending) = PENDING.with(|p| p.borrow_mut().take()) else {
        return Ok(response);
    };
    if pending.request_id != context::request_id() {
        return Ok(response);
    }
    response.headers_mut().set("x-cache", "miss");
    if !pending.store {
        return Ok(response);
    }
    let config = Config::load()?;
    match freshness(&config, &response, pending.authorized) {
        Ok(ttl_ms) => {
            let entry = Entry::from_response(&response, now_ms, now_ms.saturating_add(ttl_ms));
            if let Err(e) =
                kv::open(&config.bucket).and_then(|b| b.set(&pending.key, entry.encode()))
            {
                log::warn(format!(
                    "cache: could not store in bucket `{}`: {e}",
                    config.bucket
                ));
            }
        }
        Err(reason) => log::debug(format!("cache: not stored: {reason}")),
    }
    Ok(response)
}

/// Milliseconds since the Unix epoch on the gateway's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The filter.
#[derive(Debug)]
pub struct Cache;

impl Filter for Cache {
    fn on_request(request: Request) -> Result<Action, Error> {
        lookup(request, now_ms())
    }

    fn on_response(response: Response) -> Result<Response, Error> {
        store(response, now_ms())
    }
}

tessera_sdk::filter!(Cache, config = Config, check = Config::check);

#[cfg(test)]
mod tests;
