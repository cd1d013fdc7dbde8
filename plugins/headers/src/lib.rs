//! Filter plugin: adds, sets and removes request and response headers.
//!
//! ```toml
//! [[routes.filters]]
//! plugin = "headers"
//! config.request = { set = { "x-api-version" = "2" }, remove = ["cookie"] }
//! config.response = { add = { "cache-control" = "no-store" } }
//! ```
//!
//! For each direction: `remove` runs first, then `set` (replaces every value), then `add`
//! (appends a value).

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_sdk::{Action, Error, Filter, Headers, Request, Response};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Changes to the request.
    pub request: Changes,
    /// Changes to the response.
    pub response: Changes,
}

/// Header changes for one direction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Changes {
    /// Headers to append.
    pub add: BTreeMap<String, String>,
    /// Headers to replace.
    pub set: BTreeMap<String, String>,
    /// Headers to delete.
    pub remove: Vec<String>,
}

impl Changes {
    fn apply(&self, headers: &mut Headers) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.set(name, value.as_str());
        }
        for (name, value) in &self.add {
            headers.append(name, value.as_str());
        }
    }
}

/// The filter.
#[derive(Debug)]
pub struct HeadersFilter;

impl Filter for HeadersFilter {
    fn on_request(mut request: Request) -> Result<Action, Error> {
        let config: Config = tessera_sdk::config()?;
        config.request.apply(request.headers_mut());
        Ok(Action::Continue(request))
    }

    fn on_response(mut response: Response) -> Result<Response, Error> {
        let config: Config = tessera_sdk::config()?;
        config.response.apply(response.headers_mut());
        Ok(response)
    }
}

tessera_sdk::filter!(HeadersFilter, config = Config);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sdk::testing::MockHost;

    #[test]
    fn request_headers_are_removed_set_and_added() {
        let host = MockHost::new().config(serde_json::json!({
            "request": { "remove": ["cookie"], "set": { "x-version": "2" }, "add": { "x-tag": "b" } }
        }));
        let request = Request::new("GET", "/")
            .with_header("Cookie", "secret")
            .with_header("x-version", "1")
            .with_header("x-tag", "a");
        let Action::Continue(out) = host.on_request::<HeadersFilter>(request) else {
            panic!("the filter must not answer");
        };
        assert!(!out.headers().contains("cookie"));
        assert_eq!(out.header("x-version"), Some("2"));
        assert_eq!(out.headers().get_all("x-tag").count(), 2);
    }

    #[test]
    fn response_headers_change() {
        let host = MockHost::new()
            .config(serde_json::json!({ "response": { "set": { "server": "tessera" } } }));
        let out =
            host.on_response::<HeadersFilter>(Response::new(200).with_header("server", "nginx"));
        assert_eq!(out.header("server"), Some("tessera"));
    }

    #[test]
    fn bad_config_is_a_500_naming_the_field_in_the_log() {
        let host = MockHost::new().config(serde_json::json!({ "requets": {} }));
        let Action::Respond(out) = host.on_request::<HeadersFilter>(Request::new("GET", "/"))
        else {
            panic!("a bad config must answer with an error");
        };
        assert_eq!(out.status(), 500);
        // The client is told the plugin is misconfigured; the operator reads which field.
        assert!(!out.text_body().contains("requets"), "{}", out.text_body());
        assert!(
            host.logs().iter().any(|l| l.message.contains("requets")),
            "{:?}",
            host.logs()
        );
    }
}
