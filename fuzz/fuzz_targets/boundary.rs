//! Whatever records a plugin hands back (status, headers, method, path, query, body), the host
//! either turns them into valid HTTP or refuses them; it never panics, no header it accepts
//! carries CR, LF or NUL, and no framing, hop-by-hop or `host` header comes from the plugin.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera::bindings::{Header, Request, Response};
use tessera::{headers, records};

#[derive(Debug, Arbitrary)]
struct Input {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    method: String,
    path: String,
    query: Option<String>,
}

fn clean(map: &http::HeaderMap) -> bool {
    map.iter()
        .all(|(_, v)| !v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)))
        && headers::HOP_BY_HOP.iter().all(|h| !map.contains_key(h))
        && !map.contains_key(http::header::HOST)
}

fuzz_target!(|input: Input| {
    let headers: Vec<Header> = input
        .headers
        .iter()
        .take(64)
        .map(|(name, value)| Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    for h in &headers {
        if let Ok((_, value)) = headers::header_from_plugin(h) {
            assert!(
                !value
                    .as_bytes()
                    .iter()
                    .any(|b| matches!(b, b'\r' | b'\n' | 0))
            );
        }
    }
    let response = Response {
        status: input.status,
        headers: headers.clone(),
        body: input.body.clone(),
    };
    if let Ok(r) = records::response_from_plugin(response) {
        assert!((200..=599).contains(&r.status().as_u16()));
        assert!(clean(r.headers()));
        assert!(!r.headers().contains_key(http::header::CONTENT_LENGTH));
    }
    let (mut parts, ()) = http::Request::get("/original?q=1")
        .body(())
        .unwrap()
        .into_parts();
    let request = Request {
        method: input.method,
        path: input.path,
        query: input.query,
        headers,
        body: input.body,
    };
    if let Ok(body) = records::apply_request(&mut parts, request) {
        assert!(parts.uri.path().starts_with('/'));
        assert!(clean(&parts.headers));
        // The host frames: the length is the new body's, or absent as in the original.
        let length = parts.headers.get(http::header::CONTENT_LENGTH);
        match &body {
            Some(b) => assert_eq!(
                length.and_then(|v| v.to_str().ok()),
                Some(b.len().to_string()).as_deref()
            ),
            None => assert!(length.is_none()),
        }
        // What the host hands the next plugin converts back without loss of validity.
        let again = records::request_to_plugin(&parts, None);
        assert_eq!(again.method, parts.method.as_str());
    }
});
