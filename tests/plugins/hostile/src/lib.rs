//! A plugin that misbehaves on purpose. The route config's `mode` picks how:
//!
//! | mode | does |
//! |---|---|
//! | `loop` | spins forever |
//! | `memory-bomb` | grows memory until refused |
//! | `recursion` | recurses until the stack overflows |
//! | `panic` | panics |
//! | `huge-body` | builds and returns a 1 GiB body |
//! | `million-headers` | returns 1,000,000 headers |
//! | `header-cr`, `header-lf`, `header-nul`, `header-name` | returns a header with CR, LF or NUL in its value, or a space in its name |
//! | `thousand-calls` | sends 1,000 calls to `http://target/` and reports how they went |
//! | `disguised` | calls each of `config.urls` (denied or disguised hosts) and reports the errors |
//! | `wait-forever` | calls `http://target/` (which never answers) with no timeout of its own |
//! | `hop-headers` | answers 200 `hello world` with hop-by-hop, framing and `host` headers the gateway must drop, and `x-kept: 1` |
//! | `outbound-headers` | POSTs `abc` to `http://target/echo` with the same headers and returns the answer's body |
//! | `huge-header` | calls `http://target/` with a 20 MiB header value and reports the error (`Debug`) with 200 |
//! | `forged-bucket` | opens bucket `b`, then calls `get("k")` through every other handle number up to 32 (handles it was never given) and answers what it read |
//! | `log-flood` | logs 1,000,000 lines at info and prints 100,000 lines to stdout, then answers 200 `done` |
//!
//! Its `config-check` export misbehaves by the config's `check`: `accept` (or absent) accepts;
//! `refuse` refuses with `config.message`; `panic` panics; `loop` spins forever; `memory-bomb`
//! grows memory until refused; `noisy` refuses with 1 MiB of text full of control characters;
//! `echo` refuses with `token` (a secret) in the message; `call` tries `http://target/` and
//! refuses with what happened.

use serde::Deserialize;
use tessera_sdk::{Error, Handler, Request, Response, http, log};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    mode: String,
    urls: Vec<String>,
    check: String,
    message: String,
    token: String,
}

/// The config check, misbehaving as `config.check` says.
fn check(config: &Config) -> Result<(), String> {
    match config.check.as_str() {
        "" | "accept" => Ok(()),
        "refuse" => Err(config.message.clone()),
        "panic" => panic!("config check panics on purpose"),
        "loop" => loop {
            std::hint::black_box(0);
        },
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "noisy" => Err("\u{1b}[31mbad\r\n".repeat(1 << 16)),
        "echo" => Err(format!("token `{}` is not valid", config.token)),
        "call" => match http::get("http://target/").send() {
            Ok(r) => Err(format!("the call answered {}", r.status())),
            Err(e) => Err(format!("the call failed: {e}")),
        },
        other => Err(format!("check: unknown mode `{other}`")),
    }
}

/// The handler.
#[derive(Debug)]
pub struct Hostile;

/// Headers a plugin may not decide: hop-by-hop fields, the ones `connection` names, framing and
/// `host` (RFC 9110 §7.6.1, RFC 9112 §6). `x-kept` is an ordinary header that must survive.
const HOP_HEADERS: [(&str, &str); 11] = [
    ("connection", "close, x-secret"),
    ("x-secret", "1"),
    ("keep-alive", "timeout=5"),
    ("transfer-encoding", "chunked"),
    ("content-length", "5"),
    ("upgrade", "websocket"),
    ("te", "trailers"),
    ("trailer", "x-t"),
    ("proxy-connection", "keep-alive"),
    ("host", "evil.example"),
    ("x-kept", "1"),
];

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(frame[3] + 1) + frame[7]
}

impl Handler for Hostile {
    fn handle(_request: Request) -> Result<Response, Error> {
        let config: Config = tessera_sdk::config()?;
        match config.mode.as_str() {
            "loop" => loop {
                std::hint::black_box(());
            },
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 4 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => Ok(Response::text(200, recurse(0).to_string())),
            "panic" => panic!("hostile plugin panics on purpose"),
            "huge-body" => Ok(Response::new(200).with_body(vec![b'x'; 1 << 30])),
            "million-headers" => {
                let mut response = Response::new(200);
                for i in 0..1_000_000u32 {
                    response.headers_mut().append("x-flood", i.to_string());
                }
                Ok(response)
            }
            "header-cr" => Ok(Response::new(200).with_header("x-evil", "a\rb")),
            "header-lf" => Ok(Response::new(200).with_header("x-evil", "a\nset-cookie: stolen=1")),
            "header-nul" => Ok(Response::new(200).with_header("x-evil", "a\0b")),
            "header-name" => Ok(Response::new(200).with_header("x evil", "v")),
            "thousand-calls" => {
                let results =
                    http::send_all((0..1000).map(|i| http::get(format!("http://target/{i}"))));
                let ok = results.iter().filter(|r| r.is_ok()).count();
                let limited = results
                    .iter()
                    .filter(|r| matches!(r, Err(http::HttpError::LimitExceeded(_))))
                    .count();
                Ok(Response::json(
                    200,
                    &serde_json::json!({ "ok": ok, "limited": limited }),
                ))
            }
            "disguised" => {
                let errors: Vec<String> = config
                    .urls
                    .iter()
                    .map(|u| match http::get(u.as_str()).send() {
                        Ok(r) => format!("answered {}", r.status()),
                        Err(e) => format!("{e:?}"),
                    })
                    .collect();
                Ok(Response::json(200, &errors))
            }
            "wait-forever" => {
                let r = http::get("http://target/").send()?;
                Ok(Response::text(
                    200,
                    format!("unexpected answer {}", r.status()),
                ))
            }
            "hop-headers" => Ok(HOP_HEADERS
                .iter()
                .fold(Response::new(200), |r, (name, value)| {
                    r.with_header(name, *value)
                })
                .with_body("hello world")),
            "outbound-headers" => {
                let call = HOP_HEADERS
                    .iter()
                    .fold(http::post("http://target/echo"), |c, (name, value)| {
                        c.header(name, *value)
                    })
                    .body("abc");
                let answer = call.send()?;
                Ok(Response::new(200).with_body(answer.body().unwrap_or_default().to_vec()))
            }
            "huge-header" => {
                let huge = vec![b'a'; 20 << 20];
                let outcome = match http::get("http://target/").header("x-huge", huge).send() {
                    Ok(r) => format!("answered {}", r.status()),
                    Err(e) => format!("{e:?}"),
                };
                Ok(Response::text(200, outcome))
            }
            "log-flood" => {
                for i in 0..1_000_000u32 {
                    log::info(format!("flood line {i}"));
                }
                for i in 0..100_000u32 {
                    println!("stdout flood line {i}");
                }
                Ok(Response::text(200, "done"))
            }
            "forged-bucket" => {
                use tessera_sdk::__private::bindings::wasi::keyvalue::store;
                let own = store::open("b").map_err(|e| Error::internal(format!("{e:?}")))?;
                let mut read = Vec::new();
                for h in (1..32u32).filter(|h| *h != own.handle()) {
                    // A handle number the host never gave this instance.
                    #[allow(unsafe_code)]
                    let forged = unsafe { store::Bucket::from_handle(h) };
                    if let Ok(Some(v)) = forged.get("k") {
                        read.push(String::from_utf8_lossy(&v).into_owned());
                    }
                    std::mem::forget(forged);
                }
                Ok(Response::text(200, read.join(",")))
            }
            other => Err(Error::bad_request(format!("unknown mode `{other}`"))),
        }
    }
}

tessera_sdk::handler!(Hostile, config = Config, check = check);
