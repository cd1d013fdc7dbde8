//! Filter plugin: limits how many requests a key (client, API key, path parameter, or a
//! combination) may make per window, counting in a shared key-value bucket.
//!
//! ```toml
//! [buckets.ratelimit]
//! backend = "redis"            # or "memory" for one gateway
//! url = "redis://10.0.0.5:6379"
//! ttl_ms = 120000              # cleanup only: at least twice the window
//!
//! [[routes.filters]]
//! plugin = "rate-limit"
//! buckets = ["ratelimit"]
//! config = { bucket = "ratelimit", limit = 100, window_secs = 60, key = ["header:x-api-key"] }
//! ```
//!
//! Counting uses the bucket's atomic `increment`, so every gateway sharing a Redis bucket
//! enforces one limit. A request over the limit gets 429 with `retry-after`; responses carry
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and the newer draft's
//! `RateLimit-Policy` and `RateLimit` fields. See `docs/plugins/rate-limit.md`.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_sdk::kv::{self, Bucket, KvError};
use tessera_sdk::{Action, Error, Filter, Request, Response, context, log};

/// Largest `limit`.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest `window_secs` (a year).
pub const MAX_WINDOW_SECS: u64 = 31_536_000;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bucket holding the counters; the route entry must grant it. Required.
    pub bucket: String,
    /// Requests allowed per key and window, 1 to 1000000000. Required.
    pub limit: u64,
    /// The window's length in seconds, 1 to 31536000. Required.
    pub window_secs: u64,
    /// How requests are counted. Default `fixed`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// What identifies a counter: a list of `client`, `header:<name>` and `param:<name>`.
    /// Required; `[]` is one counter for every request of the scope.
    pub key: Vec<KeyPart>,
    /// What a request lacking a keyed value gets. Default `empty`.
    #[serde(default)]
    pub missing: Missing,
    /// What happens when the bucket fails. Default `open`.
    #[serde(default)]
    pub fail: Fail,
    /// Whether allowed responses carry the rate-limit fields too (429s always do). Default
    /// `true`.
    #[serde(default = "yes")]
    pub headers_on_allowed: bool,
    /// Which rate-limit fields responses carry. Default `both`.
    #[serde(default)]
    pub header_style: HeaderStyle,
    /// Counters with the same scope (and key) are shared, across routes too. Default: the
    /// matched route pattern, so each route counts on its own.
    #[serde(default)]
    pub scope: Option<String>,
}

fn yes() -> bool {
    true
}

/// How requests are counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// One counter per window (`window_secs` aligned to the Unix epoch): exact, but a client
    /// may send `limit` requests at the end of one window and `limit` more at the start of the
    /// next.
    #[default]
    Fixed,
    /// The current window's count plus the previous window's, weighted by how much of the
    /// previous window still overlaps the last `window_secs`: no burst at window edges.
    Sliding,
}

/// What a request lacking a keyed value (header, parameter, client address) gets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// The value counts as empty: all such requests share one counter.
    #[default]
    Empty,
    /// 400, naming what is missing.
    Reject,
}

/// What happens when the bucket fails (Redis down or slow, bucket not granted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fail {
    /// Let the request through and log a warning.
    #[default]
    Open,
    /// Answer 503.
    Closed,
}

/// Which rate-limit header fields to send.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderStyle {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (the fields of
    /// draft-ietf-httpapi-ratelimit-headers up to -06, what most clients read).
    Legacy,
    /// `RateLimit-Policy` and `RateLimit` (the structured fields of the current draft).
    Draft,
    /// Both sets.
    #[default]
    Both,
}

/// One part of a counter's key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum KeyPart {
    /// The client address: the right-most `x-forwarded-for` entry (see the docs for why).
    Client,
    /// A request header's first value.
    Header(String),
    /// A path parameter of the matched route.
    Param(String),
}

impl TryFrom<String> for KeyPart {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let part = match text.split_once(':') {
            None if text == "client" => Self::Client,
            Some(("header", name)) if !name.is_empty() => Self::Header(name.to_ascii_lowercase()),
            Some(("param", name)) if !name.is_empty() => Self::Param(name.to_owned()),
            _ => {
                return Err(format!(
                    "key part `{text}` is not `client`, `header:<name>` or `param:<name>`"
                ));
            }
        };
        Ok(part)
    }
}

impl Config {
    /// The route's config, checked.
    pub fn load() -> Result<Self, Error> {
        let config: Self = tessera_sdk::config()?;
        config.check().map_err(|e| {
            Error::internal("the plugin is misconfigured")
                .with_detail(format!("invalid rate-limit config: {e}"))
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(format!(
                "`limit` is {}; it must be 1 to {MAX_LIMIT}",
                self.limit
            ));
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.window_secs) {
            return Err(format!(
                "`window_secs` is {}; it must be 1 to {MAX_WINDOW_SECS}",
                self.window_secs
            ));
        }
        Ok(())
    }

    fn window_ms(&self) -> u64 {
        self.window_secs * 1000
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// The configured limit.
    pub limit: u64,
    /// Requests left in the window after this one.
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset_secs: u64,
    /// When refused: seconds until a request would be allowed again (at least 1).
    pub retry_after_secs: u64,
}

/// The counter identity of `request`: a hash of the scope, the window length and every key
/// part, so any header value makes a key of fixed length, and parts cannot run into each other.
pub fn identity(config: &Config, request: &Request) -> Result<String, Error> {
    let scope = config.scope.clone().unwrap_or_else(context::route);
    let mut hash = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    feed(scope.as_bytes());
    feed(&config.window_secs.to_be_bytes());
    for part in &config.key {
        let value = match part {
            KeyPart::Client => Some(client_address().to_string().into_bytes()),
            KeyPart::Header(name) => request.headers().get_bytes(name).map(<[u8]>::to_vec),
            KeyPart::Param(name) => context::param(name).map(String::into_bytes),
        };
        let value = match (value, config.missing) {
            (Some(v), _) => v,
            (None, Missing::Empty) => Vec::new(),
            (None, Missing::Reject) => return Err(Error::bad_request(missing_message(part))),
        };
        feed(&value);
    }
    let digest = hash.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

fn missing_message(part: &KeyPart) -> String {
    match part {
        KeyPart::Client => "the client address is unknown".to_owned(),
        KeyPart::Header(name) => format!("the request lacks the `{name}` header"),
        KeyPart::Param(name) => format!("the route has no `{name}` parameter"),
    }
}

/// The client address as the gateway resolved it: the connection's peer, or the address a
/// trusted proxy forwarded (`server.trusted_proxies`). IPv4-mapped IPv6 addresses count as
/// their IPv4 address.
pub fn client_address() -> IpAddr {
    context::client_address().to_canonical()
}

fn counter_key(identity: &str, window: u64) -> String {
    format!("rl:{identity}:{window}")
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// Counts a request of `identity` at `now_ms` (milliseconds since the Unix epoch).
pub fn count(
    config: &Config,
    bucket: &Bucket,
    identity: &str,
    now_ms: u64,
) -> Result<Decision, KvError> {
    let window_ms = config.window_ms();
    let window = now_ms / window_ms;
    let elapsed = now_ms % window_ms;
    let to_end = window_ms - elapsed;
    let key = counter_key(identity, window);
    let count = u64::try_from(bucket.increment(&key, 1)?).unwrap_or(0);
    let limit = config.limit;
    match config.algorithm {
        Algorithm::Fixed => Ok(Decision {
            allowed: count <= limit,
            limit,
            remaining: limit.saturating_sub(count),
            reset_secs: ceil_secs(to_end),
            retry_after_secs: ceil_secs(to_end),
        }),
        Algorithm::Sliding => {
            let previous = match window.checked_sub(1) {
                Some(w) => read_count(bucket.get(&counter_key(identity, w))?),
                None => 0,
            };
            // The share of the previous window still inside the last `window_ms`.
            let overlap = to_end as f64 / window_ms as f64;
            let estimate = previous as f64 * overlap + count as f64;
            let allowed = estimate <= limit as f64;
            let retry_after_ms = if allowed {
                0
            } else {
                // A refused request does not count, so the previous window's weight reflects
                // what was let through. If taking it back fails the count stays high, which
                // errs on the side of limiting.
                if let Err(e) = bucket.increment(&key, -1) {
                    log::warn(format!(
                        "rate-limit: could not uncount a refused request: {e}"
                    ));
                }
                sliding_wait_ms(limit, previous, count.saturating_sub(1), elapsed, window_ms)
            };
            Ok(Decision {
                allowed,
                limit,
                remaining: (limit as f64 - estimate).floor().max(0.0) as u64,
                reset_secs: ceil_secs(to_end),
                retry_after_secs: ceil_secs(retry_after_ms),
            })
        }
    }
}

/// How long until one more request fits, with `previous` requests in the previous window and
/// `current` allowed so far in this one, `elapsed` ms into it.
fn sliding_wait_ms(limit: u64, previous: u64, current: u64, elapsed: u64, window_ms: u64) -> u64 {
    let window = window_ms as f64;
    let wait = if current < limit && previous > 0 {
        // previous * (window - t) / window + current + 1 <= limit, solved for t.
        let t = window * (1.0 - (limit - current - 1) as f64 / previous as f64);
        t - elapsed as f64
    } else {
        // Not before the next window; there this window's count is the previous one.
        let to_end = window - elapsed as f64;
        let next = if current == 0 {
            0.0
        } else {
            window * (1.0 - (limit as f64 - 1.0) / current as f64)
        };
        to_end + next.max(0.0)
    };
    wait.ceil().max(1.0) as u64
}

fn read_count(value: Option<Vec<u8>>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<i64>().ok())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// The rate-limit header fields for `decision`.
pub fn header_fields(style: HeaderStyle, window_secs: u64, d: &Decision) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    if matches!(style, HeaderStyle::Legacy | HeaderStyle::Both) {
        fields.push(("ratelimit-limit".into(), d.limit.to_string()));
        fields.push(("ratelimit-remaining".into(), d.remaining.to_string()));
        fields.push(("ratelimit-reset".into(), d.reset_secs.to_string()));
    }
    if matches!(style, HeaderStyle::Draft | HeaderStyle::Both) {
        fields.push((
            "ratelimit-policy".into(),
            format!("\"default\";q={};w={window_secs}", d.limit),
        ));
        fields.push((
            "ratelimit".into(),
            format!("\"default\";r={};t={}", d.remaining, d.reset_secs),
        ));
    }
    fields
}

/// Milliseconds since the Unix epoch on the gateway's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Header fields for the response of the request this instance is serving.
#[derive(Debug)]
struct Pending {
    request_id: String,
    fields: Vec<(String, String)>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Decides on `request` at `now_ms`: the request to pass on, or the answer.
pub fn limit_request(request: Request, now_ms: u64) -> Result<Action, Error> {
    PENDING.with(|p| p.borrow_mut().take());
    let config = Config::load()?;
    let identity = identity(&config, &request)?;
    let decision = kv::open(&config.bucket).and_then(|b| count(&config, &b, &identity, now_ms));
    let decision = match decision {
        Ok(d) => d,
        Err(e) => {
            return match config.fail {
                Fail::Open => {
                    log::warn(format!(
                        "rate-limit: bucket `{}` failed, letting the request through: {e}",
                        config.bucket
                    ));
                    Ok(Action::Continue(request))
                }
                Fail::Closed => {
                    let mut response = Error::unavailable("rate limiting is unavailable")
                        .with_detail(format!("bucket `{}` failed: {e}", config.bucket))
                        .into_response();
                    response.headers_mut().set("retry-after", "1");
                    Ok(Action::Respond(response))
                }
            };
        }
    };
    let fields = header_fields(config.header_style, config.window_secs, &decision);
    if !decision.allowed {
        let mut response = Error::too_many_requests("rate limit exceeded").into_response();
        let headers = response.headers_mut();
        headers.set("retry-after", decision.retry_after_secs.to_string());
        for (name, value) in fields {
            headers.set(&name, value);
        }
        return Ok(Action::Respond(response));
    }
    if config.headers_on_allowed {
        PENDING.with(|p| {
            *p.borrow_mut() = Some(Pending {
                request_id: context::request_id(),
                fields,
            });
        });
    }
    Ok(Action::Continue(request))
}

/// Adds the fields counted in `on_request` of this same request, if any.
pub fn annotate_response(mut response: Response) -> Response {
    let pending = PENDING.with(|p| p.borrow_mut().take());
    if let Some(pending) = pending
        && pending.request_id == context::request_id()
    {
        for (name, value) in pending.fields {
            response.headers_mut().set(&name, value);
        }
    }
    response
}

/// The filter.
#[derive(Debug)]
pub struct RateLimit;

impl Filter for RateLimit {
    fn on_request(request: Request) -> Result<Action, Error> {
        limit_request(request, now_ms())
    }

    fn on_response(response: Response) -> Result<Response, Error> {
        Ok(annotate_response(response))
    }
}

tessera_sdk::filter!(RateLimit, config = Config, check = Config::check);

#[cfg(test)]
mod tests;
