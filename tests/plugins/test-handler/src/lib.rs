//! Test handler. `{"mode": ...}` in its route config picks the behaviour:
//! - `echo` (default): JSON with method, path, query, params, headers and body length;
//! - `panic`: panics; `loop`: spins forever; `alloc`: grows memory without end;
//! - `call`: GETs `config.url` through the host and reports status and body or the error;
//! - `fan-out`: GETs every `config.urls` entry with `send_all` and reports each result;
//! - `start`: starts every `config.urls` entry, then waits for each, and reports each result;
//! - `chain`: GETs `urls[0]`, then GETs `urls[1]` followed by the first response's body;
//! - `trailers`: starts a `POST` of `value` to `config.url` (with `grpc_timeout` as its
//!   `grpc-timeout` header when given), waits, and reports status, body, headers and trailers
//!   (each as an object of name to value);
//! - `bad-header`: answers with a header value holding CR LF;
//! - `print`: writes to stdout and stderr, then answers;
//! - `config`: answers its route config as JSON, exactly as the host handed it over (other keys
//!   are allowed in this mode);
//! - `counter`: counts the requests this instance served (a global in guest memory) and answers
//!   the count; with `panic_at`, panics when the count reaches it.
//!
//! Key-value modes use `config.bucket` and `config.key` (or the route's `{key}` parameter); they answer 200 with the result as text,
//! or 500 with the error as `Debug` text (e.g. `AccessDenied`, `Other("...")`):
//! - `kv-open`: opens the bucket; `kv-incr`: adds `delta` (default 1) and answers the new count;
//!   `kv-get`: answers the value (404 when absent); `kv-set`: writes `value`, or `value_len`
//!   bytes of `x`, and answers `ok`;
//! - `kv-cas`: `update`s the counter under `key` by one; with `race`, writes `race` under the key
//!   between its read and its swap on the first attempt, so the swap must fail and retry; answers
//!   `<new value> after <attempts>`;
//! - `kv-batch`: `set_many` of `keys` (each set to its own name), then `get_many` of `keys` plus
//!   `missing`, answering the values as JSON; `kv-list`: every key, over all pages, as JSON;
//! - `kv-ops`: `count` increments of `key`, answering the last value (for the call limit).

use serde::Deserialize;
use tessera_sdk::kv::{self, KvError};
use tessera_sdk::{Error, Handler, Request, Response, context, http};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    mode: String,
    url: String,
    urls: Vec<String>,
    timeout_ms: Option<u64>,
    panic_at: Option<u32>,
    bucket: String,
    key: String,
    value: Option<String>,
    value_len: Option<usize>,
    delta: Option<i64>,
    race: Option<String>,
    keys: Vec<String>,
    count: Option<u32>,
    grpc_timeout: Option<String>,
}

/// Requests this instance has served: guest memory, so it survives only where the instance does.
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn outgoing(config: &Config, url: &str) -> http::OutgoingRequest {
    outgoing_timeout(config, http::get(url))
}

fn outgoing_timeout(config: &Config, request: http::OutgoingRequest) -> http::OutgoingRequest {
    match config.timeout_ms {
        Some(ms) => request.timeout(std::time::Duration::from_millis(ms)),
        None => request,
    }
}

fn report(result: Result<Response, http::HttpError>) -> serde_json::Value {
    match result {
        Ok(r) => serde_json::json!({ "status": r.status(), "body": r.text_body() }),
        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
    }
}

fn kv_mode(config: &Config) -> Result<Response, KvError> {
    let bucket = kv::open(&config.bucket)?;
    let key = context::param("key").unwrap_or_else(|| config.key.clone());
    let key = key.as_str();
    let text = match config.mode.as_str() {
        "kv-open" => "opened".to_owned(),
        "kv-incr" => bucket
            .increment(key, config.delta.unwrap_or(1))?
            .to_string(),
        "kv-get" => match bucket.get(key)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => return Ok(Response::text(404, "absent")),
        },
        "kv-set" => {
            let value = match config.value_len {
                Some(n) => "x".repeat(n),
                None => config.value.clone().unwrap_or_default(),
            };
            bucket.set(key, value)?;
            "ok".to_owned()
        }
        "kv-cas" => {
            let mut attempts = 0;
            let written = bucket.update(key, |old| {
                attempts += 1;
                if attempts == 1
                    && let Some(race) = &config.race
                {
                    // Another writer, between this read and the swap.
                    let _ = kv::open(&config.bucket).and_then(|b| b.set(key, race));
                }
                let n: i64 = old
                    .and_then(|o| std::str::from_utf8(o).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                (n + 1).to_string().into_bytes()
            })?;
            format!("{} after {attempts}", String::from_utf8_lossy(&written))
        }
        "kv-batch" => {
            let pairs: Vec<(String, Vec<u8>)> = config
                .keys
                .iter()
                .map(|k| (k.clone(), k.clone().into_bytes()))
                .collect();
            bucket.set_many(&pairs)?;
            let mut asked = config.keys.clone();
            asked.push("missing".to_owned());
            let values: Vec<Option<String>> = bucket
                .get_many(&asked)?
                .into_iter()
                .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
                .collect();
            bucket.delete_many(&config.keys[..1.min(config.keys.len())])?;
            serde_json::json!({ "values": values, "first_left": bucket.exists(&asked[0])? })
                .to_string()
        }
        "kv-list" => {
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = bucket.list_keys(cursor.as_deref())?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            keys.sort();
            serde_json::json!(keys).to_string()
        }
        "kv-ops" => {
            let mut last = 0;
            for _ in 0..config.count.unwrap_or(1) {
                last = bucket.increment(key, 1)?;
            }
            last.to_string()
        }
        other => return Err(KvError::Other(format!("unknown mode {other}"))),
    };
    Ok(Response::text(200, text))
}

/// The handler.
#[derive(Debug)]
pub struct TestHandler;

impl Handler for TestHandler {
    fn handle(request: Request) -> Result<Response, Error> {
        let raw: serde_json::Value = tessera_sdk::config()?;
        if raw["mode"] == "config" {
            return Ok(Response::json(200, &raw));
        }
        let config: Config = tessera_sdk::config()?;
        match config.mode.as_str() {
            "panic" => panic!("test-handler asked to panic"),
            "counter" => {
                let n = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if config.panic_at == Some(n) {
                    panic!("test-handler asked to panic at request {n}");
                }
                Ok(Response::text(200, n.to_string()))
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "call" => Ok(Response::json(
                200,
                &report(outgoing(&config, &config.url).send()),
            )),
            "fan-out" => {
                let results = http::send_all(config.urls.iter().map(|u| outgoing(&config, u)));
                let reports: Vec<_> = results.into_iter().map(report).collect();
                Ok(Response::json(200, &reports))
            }
            "trailers" => {
                let mut call = http::post(&config.url)
                    .header("content-type", "application/grpc")
                    .body(config.value.clone().unwrap_or_default());
                if let Some(t) = &config.grpc_timeout {
                    call = call.header("grpc-timeout", t.as_str());
                }
                let fields =
                    |h: &tessera_sdk::Headers| -> serde_json::Map<String, serde_json::Value> {
                        h.iter()
                            .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into()))
                            .collect()
                    };
                Ok(Response::json(
                    200,
                    &match outgoing_timeout(&config, call).start().wait() {
                        Ok(r) => serde_json::json!({
                            "status": r.status(),
                            "body": r.text_body(),
                            "headers": fields(r.headers()),
                            "trailers": fields(r.trailers()),
                        }),
                        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
                    },
                ))
            }
            "start" => {
                let pending: Vec<_> = config
                    .urls
                    .iter()
                    .map(|u| outgoing(&config, u).start())
                    .collect();
                let reports: Vec<_> = http::join_all(pending).into_iter().map(report).collect();
                Ok(Response::json(200, &reports))
            }
            "chain" => {
                let first = outgoing(&config, &config.urls[0]).send()?;
                let next = format!("{}{}", config.urls[1], first.text_body());
                Ok(Response::json(
                    200,
                    &report(outgoing(&config, &next).send()),
                ))
            }
            m if m.starts_with("kv-") => Ok(match kv_mode(&config) {
                Ok(r) => r,
                // The error as the plugin saw it.
                Err(e) => Response::text(500, format!("{e:?}")),
            }),
            "bad-header" => Ok(Response::new(200).with_header("x-evil", "a\r\nset-cookie: x=1")),
            "print" => {
                println!("hello from stdout");
                eprintln!("hello from stderr");
                Ok(Response::text(200, "printed"))
            }
            _ => {
                let headers: Vec<(String, String)> = request
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned()))
                    .collect();
                Ok(Response::json(
                    200,
                    &serde_json::json!({
                        "method": request.method(),
                        "path": request.path(),
                        "query": request.query(),
                        "params": context::params(),
                        "headers": headers,
                        "body_len": request.body().map_or(0, <[u8]>::len),
                        "client": context::client_address().to_string(),
                    }),
                ))
            }
        }
    }
}

tessera_sdk::handler!(TestHandler);
