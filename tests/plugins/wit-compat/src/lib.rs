//! A handler built against the `tessera:gateway@0.1.0` WIT as it was before trailers were added
//! (`wit/` here, frozen), with raw bindings rather than the SDK. It starts a `GET` of every path
//! in its route config's `paths` (`{"paths": ["/a", "/b"]}`) on the upstream `up`, waits for each,
//! and answers the statuses and bodies, one line per call. Gateways that change the WIT must keep
//! loading and serving it: that is what "additive" means for plugins already built.

// The generated bindings are the canonical-ABI glue, which is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "wit",
    world: "tessera:gateway/handler",
    generate_all,
});

use exports::tessera::gateway::request_handler::Guest;
use tessera::gateway::http_client;
use tessera::gateway::types::{OutgoingRequest, Request, Response};

/// The export.
#[derive(Debug)]
pub struct Compat;

impl Guest for Compat {
    fn handle(_request: Request) -> Response {
        let config = tessera::gateway::config::get();
        let paths = paths(&config);
        let pending: Vec<_> = paths
            .iter()
            .map(|p| {
                http_client::start(&OutgoingRequest {
                    method: "GET".into(),
                    url: format!("http://up{p}"),
                    headers: Vec::new(),
                    body: None,
                    timeout_ms: None,
                })
            })
            .collect();
        let lines: Vec<String> = pending
            .iter()
            .map(|p| match p.wait() {
                Ok(r) => format!(
                    "{} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body.unwrap_or_default())
                ),
                Err(e) => format!("error {e:?}"),
            })
            .collect();
        Response {
            status: 200,
            headers: Vec::new(),
            body: Some(lines.join("\n").into_bytes()),
        }
    }
}

/// The strings of the `paths` array in a config like `{"paths":["/a","/b"]}` (no JSON parser:
/// this crate depends on nothing but the bindings).
fn paths(config: &str) -> Vec<String> {
    let Some(start) = config.find('[') else {
        return Vec::new();
    };
    let Some(end) = config[start..].find(']') else {
        return Vec::new();
    };
    config[start + 1..start + end]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| s.starts_with('/'))
        .collect()
}

#[cfg(target_arch = "wasm32")]
export!(Compat);
