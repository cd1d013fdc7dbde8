//! Test filter. Its route config picks what it does:
//! - `{"deny_without": "<header>"}`: answer 401 unless the request has that header;
//! - `{"prefix": "/v2"}`: prepend to the request path;
//! - `{"upper_body": true}`: upper-case a buffered response body;
//! - `{"panic": "request" | "response"}`: panic in that phase;
//! - `{"tag": "<name>"}`: append `<name>` to `x-trace` on the way in and on the way out;
//! - `{"set_request_headers": [["name", "value"], ...]}`: set these headers on the request (a name
//!   listed twice gets both values), leaving the body alone, e.g. `content-length: 5` on a GET;
//! - `{"set_response_headers": [["name", "value"], ...]}`: the same on the response;
//! - `{"count": true}`: `x-count` on the response says how many requests this instance filtered
//!   (a global in guest memory, so it survives only where the instance does).

use serde::Deserialize;
use tessera_sdk::{Action, Error, Filter, Headers, Request, Response};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    deny_without: Option<String>,
    prefix: Option<String>,
    upper_body: bool,
    panic: Option<String>,
    tag: Option<String>,
    set_request_headers: Vec<(String, String)>,
    set_response_headers: Vec<(String, String)>,
    count: bool,
}

/// Requests this instance has filtered.
static FILTERED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Replaces every header named in `fields` with the values listed there, in order.
fn set_headers(headers: &mut Headers, fields: &[(String, String)]) {
    for (name, _) in fields {
        headers.remove(name);
    }
    for (name, value) in fields {
        headers.append(name, value.as_bytes());
    }
}

/// The filter.
#[derive(Debug)]
pub struct TestFilter;

impl Filter for TestFilter {
    fn on_request(mut request: Request) -> Result<Action, Error> {
        let config: Config = tessera_sdk::config()?;
        if config.panic.as_deref() == Some("request") {
            panic!("test-filter asked to panic in on_request");
        }
        if let Some(header) = &config.deny_without
            && !request.headers().contains(header)
        {
            return Ok(Action::Respond(Response::text(
                401,
                format!("missing {header}\n"),
            )));
        }
        if let Some(prefix) = &config.prefix {
            let path = format!("{prefix}{}", request.path());
            request.set_path(path);
        }
        if let Some(tag) = &config.tag {
            request.headers_mut().append("x-trace", format!("in:{tag}"));
        }
        set_headers(request.headers_mut(), &config.set_request_headers);
        Ok(Action::Continue(request))
    }

    fn on_response(mut response: Response) -> Result<Response, Error> {
        let config: Config = tessera_sdk::config()?;
        if config.count {
            let n = FILTERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            response.headers_mut().set("x-count", n.to_string());
        }
        if config.panic.as_deref() == Some("response") {
            panic!("test-filter asked to panic in on_response");
        }
        if config.upper_body {
            let upper = response.text_body().to_uppercase();
            response.set_body(upper);
        }
        if let Some(tag) = &config.tag {
            response
                .headers_mut()
                .append("x-trace", format!("out:{tag}"));
        }
        set_headers(response.headers_mut(), &config.set_response_headers);
        Ok(response)
    }
}

tessera_sdk::filter!(TestFilter);
