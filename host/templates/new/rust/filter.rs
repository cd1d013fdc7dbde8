//! `{{name}}`: a Tessera filter plugin. Requests must carry a header (`x-client-id` unless the
//! config names another); without it the gateway answers 400 and the route's target never sees
//! the request. Responses on their way back get `x-checked-by: {{name}}` (the package's name).
//!
//! ```toml
//! [[routes]]
//! path = "/api/{*rest}"
//! upstream = "api"
//!
//! [[routes.filters]]
//! plugin = "{{name}}"
//! config = { header = "x-client-id" }
//! ```

use serde::Deserialize;
use tessera_sdk::{Action, Error, Filter, Request, Response};

/// The route entry's `config` table. The gateway checks every route's config against this type
/// (and [`Config::check`]) when it loads the plugin or the config, so a typo is refused, naming
/// the route and the key, before the first request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The request header that must be present and not blank. Default "x-client-id".
    pub header: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header: "x-client-id".to_owned(),
        }
    }
}

impl Config {
    /// Rules the type cannot say; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        // A header name is an RFC 9110 token.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if self.header.is_empty() || !self.header.bytes().all(token) {
            return Err(format!("header: `{}` is not a header name", self.header));
        }
        Ok(())
    }
}

/// The plugin. The gateway creates a fresh instance for every request; it serves both
/// `on_request` and `on_response` of that request.
#[derive(Debug)]
pub struct Plugin;

impl Filter for Plugin {
    fn on_request(request: Request) -> Result<Action, Error> {
        let config: Config = tessera_sdk::config()?;
        let present = request
            .headers()
            .get_bytes(&config.header)
            .is_some_and(|value| !value.trim_ascii().is_empty());
        if !present {
            // An `Err` answers the client with the gateway's JSON error shape; the route's
            // target is not called. `Ok(Action::Respond(..))` would answer with any response.
            return Err(Error::bad_request(format!(
                "missing header {}",
                config.header
            )));
        }
        Ok(Action::Continue(request))
    }

    fn on_response(mut response: Response) -> Result<Response, Error> {
        response
            .headers_mut()
            .set("x-checked-by", env!("CARGO_PKG_NAME"));
        Ok(response)
    }
}

tessera_sdk::filter!(Plugin, config = Config, check = Config::check);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::testing::MockHost;

    #[test]
    fn a_request_with_the_header_goes_on_unchanged() {
        let host = MockHost::new();
        let request = Request::new("GET", "/api/orders").with_header("x-client-id", "shop-7");
        match host.on_request::<Plugin>(request) {
            Action::Continue(request) => {
                assert_eq!(request.path(), "/api/orders");
                assert_eq!(request.header("x-client-id"), Some("shop-7"));
            }
            Action::Respond(response) => panic!("answered {}", response.status()),
        }
    }

    #[test]
    fn a_request_without_the_header_or_with_a_blank_one_is_a_400() {
        for request in [
            Request::new("GET", "/api/orders"),
            Request::new("GET", "/api/orders").with_header("x-client-id", "  "),
        ] {
            let host = MockHost::new().request_id("req-1");
            let Action::Respond(response) = host.on_request::<Plugin>(request) else {
                panic!("a request without the header went on");
            };
            assert_eq!(response.status(), 400);
            let body: serde_json::Value = response.json_body().unwrap();
            assert_eq!(
                body,
                serde_json::json!({
                    "error": "bad_request",
                    "message": "missing header x-client-id",
                    "request_id": "req-1",
                })
            );
        }
    }

    #[test]
    fn the_config_names_the_header() {
        let host = MockHost::new().config(serde_json::json!({ "header": "x-tenant" }));
        let without = Request::new("GET", "/api").with_header("x-client-id", "shop-7");
        assert!(matches!(
            host.on_request::<Plugin>(without),
            Action::Respond(r) if r.status() == 400
        ));
        let with = Request::new("GET", "/api").with_header("X-Tenant", "acme");
        assert!(matches!(
            host.on_request::<Plugin>(with),
            Action::Continue(_)
        ));
    }

    #[test]
    fn responses_are_marked() {
        let host = MockHost::new();
        let response = host.on_response::<Plugin>(Response::text(201, "made"));
        assert_eq!(response.status(), 201);
        assert_eq!(
            response.header("x-checked-by"),
            Some(env!("CARGO_PKG_NAME"))
        );
        assert_eq!(response.text_body(), "made");
    }

    #[test]
    fn the_gateway_refuses_a_misspelt_key_or_a_bad_header_name() {
        // What the gateway runs at load: the message is what the operator sees.
        let typo = tessera_sdk::parse_config::<Config>(r#"{"haeder": "x"}"#).unwrap_err();
        assert_eq!(typo, "haeder: unknown field `haeder`, expected `header`");
        let bad = tessera_sdk::parse_config::<Config>(r#"{"header": "x client"}"#).unwrap();
        assert_eq!(
            bad.check().unwrap_err(),
            "header: `x client` is not a header name"
        );
        let fine = tessera_sdk::parse_config::<Config>("{}").unwrap();
        assert_eq!(fine.check(), Ok(()));
    }
}
