//! Whatever records a plugin hands back (status, headers, method, path, query, body), the host
//! either turns them into valid HTTP or refuses them; it never panics, and no header it accepts
//! carries CR, LF or NUL.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera::bindings::{Header, Request, Response};
use tessera::chain;

#[derive(Debug, Arbitrary)]
struct Input {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    method: String,
    path: String,
    query: Option<String>,
}

fn clean(headers: &http::HeaderMap) -> bool {
    headers
        .iter()
        .all(|(_, v)| !v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)))
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
        if let Ok((_, value)) = chain::header_from_plugin(h) {
            assert!(!value.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
        }
    }
    let response = Response {
        status: input.status,
        headers: headers.clone(),
        body: input.body.clone(),
    };
    if let Ok(r) = chain::response_from_plugin(response) {
        assert!((200..=599).contains(&r.status().as_u16()));
        assert!(clean(r.headers()));
    }
    let (mut parts, ()) = http::Request::get("/original?q=1").body(()).unwrap().into_parts();
    let request = Request {
        method: input.method,
        path: input.path,
        query: input.query,
        headers,
        body: input.body,
    };
    if chain::apply_request(&mut parts, request).is_ok() {
        assert!(parts.uri.path().starts_with('/'));
        assert!(clean(&parts.headers));
        // What the host hands the next plugin converts back without loss of validity.
        let again = chain::request_to_plugin(&parts, None);
        assert_eq!(again.method, parts.method.as_str());
    }
});
