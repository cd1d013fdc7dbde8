//! Handler plugin: aggregate (being written).

use serde::Deserialize;
use tessera_sdk::{Error, Handler, Request, Response};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
pub struct Config {}

/// The handler.
#[derive(Debug)]
pub struct Aggregate;

impl Handler for Aggregate {
    fn handle(_request: Request) -> Result<Response, Error> {
        Err(Error::internal("not written yet"))
    }
}

tessera_sdk::handler!(Aggregate, config = Config);
