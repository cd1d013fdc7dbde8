//! Filter plugin: cors (being written).

use serde::Deserialize;
use tessera_sdk::Filter;

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
pub struct Config {}

/// The filter.
#[derive(Debug)]
pub struct Plugin;

impl Filter for Plugin {}

tessera_sdk::filter!(Plugin, config = Config);
