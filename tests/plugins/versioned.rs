//! Test handler built twice (crates `tessera-test-version-a` and `-b`) so that hot-swap tests
//! have two versions that answer differently: the body and the `x-version` header both name the
//! crate, so a response mixing versions would show.

use tessera_sdk::{Error, Handler, Request, Response};

/// `a` or `b`.
const VERSION: &str = match env!("CARGO_PKG_NAME").as_bytes() {
    b"tessera-test-version-a" => "a",
    _ => "b",
};

/// The handler.
#[derive(Debug)]
pub struct Versioned;

impl Handler for Versioned {
    fn handle(_request: Request) -> Result<Response, Error> {
        Ok(Response::text(200, format!("version {VERSION}")).with_header("x-version", VERSION))
    }
}

tessera_sdk::handler!(Versioned);
