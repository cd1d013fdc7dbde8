//! `{{name}}`: a Tessera handler plugin. It is a route's target and answers with a greeting:
//!
//! ```toml
//! [[routes]]
//! path = "/{{name}}/{name}"
//! handler = { plugin = "{{name}}", config = { greeting = "Hello" } }
//! ```
//!
//! `GET /{{name}}/ada` → `{"message":"Hello, ada!","request_id":"…"}`.

use serde::Deserialize;
use tessera_sdk::{Error, Handler, Request, Response, context, log};

/// The route entry's `config` table. The gateway checks every route's config against this type
/// (and [`Config::check`]) when it loads the plugin or the config, so a typo is refused, naming
/// the route and the key, before the first request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The word before the name. Default "Hello".
    pub greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            greeting: "Hello".to_owned(),
        }
    }
}

impl Config {
    /// Rules the type cannot say; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.greeting.trim().is_empty() {
            return Err("greeting: must not be empty".to_owned());
        }
        Ok(())
    }
}

/// The plugin. The gateway creates a fresh instance for every request.
#[derive(Debug)]
pub struct Plugin;

impl Handler for Plugin {
    fn handle(_request: Request) -> Result<Response, Error> {
        let config: Config = tessera_sdk::config()?;
        let name = context::param("name").unwrap_or_else(|| "world".to_owned());
        if name.chars().count() > 64 {
            // An `Err` becomes the gateway's JSON error answer with this status.
            return Err(Error::bad_request("name: at most 64 characters"));
        }
        log::debug(format!("greeting {name}"));
        Ok(Response::json(
            200,
            &serde_json::json!({
                "message": format!("{}, {name}!", config.greeting),
                "request_id": context::request_id(),
            }),
        ))
    }
}

tessera_sdk::handler!(Plugin, config = Config, check = Config::check);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::testing::MockHost;

    #[test]
    fn greets_the_path_parameter_with_the_configured_greeting() {
        let host = MockHost::new()
            .config(serde_json::json!({ "greeting": "Hi" }))
            .param("name", "ada")
            .request_id("req-1");
        let response = host.handle::<Plugin>(Request::new("GET", "/hello/ada"));
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body: serde_json::Value = response.json_body().unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "message": "Hi, ada!", "request_id": "req-1" })
        );
        assert_eq!(host.logs()[0].message, "greeting ada");
    }

    #[test]
    fn greets_the_world_with_the_default_greeting() {
        let host = MockHost::new();
        let response = host.handle::<Plugin>(Request::new("GET", "/hello"));
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json_body().unwrap();
        assert_eq!(body["message"], "Hello, world!");
    }

    #[test]
    fn a_long_name_is_a_400_in_the_gateways_error_shape() {
        let long = "a".repeat(65);
        let host = MockHost::new().param("name", &long).request_id("req-2");
        let response = host.handle::<Plugin>(Request::new("GET", &format!("/hello/{long}")));
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json_body().unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "bad_request",
                "message": "name: at most 64 characters",
                "request_id": "req-2",
            })
        );
    }

    #[test]
    fn the_gateway_refuses_a_misspelt_key_or_an_empty_greeting() {
        // What the gateway runs at load: the message is what the operator sees.
        let typo = tessera_sdk::parse_config::<Config>(r#"{"greting": "Hi"}"#).unwrap_err();
        assert_eq!(
            typo,
            "greting: unknown field `greting`, expected `greeting`"
        );
        let empty = tessera_sdk::parse_config::<Config>(r#"{"greeting": " "}"#).unwrap();
        assert_eq!(empty.check().unwrap_err(), "greeting: must not be empty");
        let fine = tessera_sdk::parse_config::<Config>("{}").unwrap();
        assert_eq!(fine.check(), Ok(()));
    }
}
