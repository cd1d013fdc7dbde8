//! Handler plugin: greets by name, and shows the SDK's request, config and context API.
//!
//! ```toml
//! [[routes]]
//! path = "/hello/{name}"
//! handler = { plugin = "hello", config = { greeting = "Hello" } }
//! ```
//!
//! `GET /hello/ada` → `{"message":"Hello, ada!","request_id":"…","route":"/hello/{name}"}`.
//! `POST /hello` with a JSON body `{"name": "…"}` works too.

use serde::Deserialize;
use tessera_sdk::{Error, Handler, Request, Response, context, log};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The greeting word. Default "Hello".
    greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            greeting: "Hello".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Body {
    name: String,
}

/// The handler.
#[derive(Debug)]
pub struct Hello;

impl Handler for Hello {
    fn handle(request: Request) -> Result<Response, Error> {
        let config: Config = tessera_sdk::config()?;
        let name = match context::param("name") {
            Some(name) => name,
            None if request.method() == "POST" => request.json_body::<Body>()?.name,
            None => request
                .query_param("name")
                .unwrap_or_else(|| "world".to_owned()),
        };
        if name.len() > 100 {
            return Err(Error::bad_request("name is longer than 100 characters"));
        }
        log::info(format!("greeting {name}"));
        Ok(Response::json(
            200,
            &serde_json::json!({
                "message": format!("{}, {name}!", config.greeting),
                "request_id": context::request_id(),
                "route": context::route(),
            }),
        ))
    }
}

tessera_sdk::handler!(Hello, config = Config);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::testing::MockHost;

    #[test]
    fn greets_the_path_parameter_with_the_configured_greeting() {
        let host = MockHost::new()
            .config(serde_json::json!({ "greeting": "Hi" }))
            .param("name", "ada")
            .route("/hello/{name}");
        let response = host.handle::<Hello>(Request::new("GET", "/hello/ada"));
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json_body().unwrap();
        assert_eq!(body["message"], "Hi, ada!");
        assert_eq!(body["route"], "/hello/{name}");
        assert_eq!(host.logs()[0].message, "greeting ada");
    }

    #[test]
    fn post_without_a_valid_body_is_a_400() {
        let host = MockHost::new();
        let response = host.handle::<Hello>(Request::new("POST", "/hello").with_body("nope"));
        assert_eq!(response.status(), 400);
    }
}
