//! Test handler. `{"mode": ...}` in its route config picks the behaviour:
//! - `echo` (default): JSON with method, path, query, params, headers and body length;
//! - `panic`: panics; `loop`: spins forever; `alloc`: grows memory without end;
//! - `call`: GETs `config.url` through the host and reports status and body or the error;
//! - `fan-out`: GETs every `config.urls` entry with `send_all` and reports each result;
//! - `start`: starts every `config.urls` entry, then waits for each, and reports each result;
//! - `chain`: GETs `urls[0]`, then GETs `urls[1]` followed by the first response's body;
//! - `bad-header`: answers with a header value holding CR LF;
//! - `print`: writes to stdout and stderr, then answers;
//! - `config`: answers its route config as JSON, exactly as the host handed it over (other keys
//!   are allowed in this mode);
//! - `counter`: counts the requests this instance served (a global in guest memory) and answers
//!   the count; with `panic_at`, panics when the count reaches it.

use serde::Deserialize;
use tessera_sdk::{Error, Handler, Request, Response, context, http};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    mode: String,
    url: String,
    urls: Vec<String>,
    timeout_ms: Option<u64>,
    panic_at: Option<u32>,
}

/// Requests this instance has served: guest memory, so it survives only where the instance does.
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn outgoing(config: &Config, url: &str) -> http::OutgoingRequest {
    let request = http::get(url);
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
                    }),
                ))
            }
        }
    }
}

tessera_sdk::handler!(TestHandler);
