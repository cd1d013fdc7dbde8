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

use serde::Deserialize;
use tessera_sdk::{Error, Handler, Request, Response, http};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    mode: String,
    urls: Vec<String>,
}

/// The handler.
#[derive(Debug)]
pub struct Hostile;

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
                Response::json(200, &serde_json::json!({ "ok": ok, "limited": limited }))
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
                Response::json(200, &errors)
            }
            "wait-forever" => {
                let r = http::get("http://target/").send()?;
                Ok(Response::text(
                    200,
                    format!("unexpected answer {}", r.status()),
                ))
            }
            other => Err(Error::bad_request(format!("unknown mode `{other}`"))),
        }
    }
}

tessera_sdk::handler!(Hostile);
