//! Filter plugin: reshapes JSON bodies, and changes headers and statuses, by config.
//!
//! ```toml
//! [[routes.filters]]
//! plugin = "transform"
//! buffer_body = true                  # the filter must see bodies to change them
//! [routes.filters.config.request]
//! deny = ["is_admin", "items[*].internal_note"]
//! headers = { set = { "x-api-version" = "2" } }
//! [routes.filters.config.response]
//! unwrap = "data"
//! allow = ["id", "name", "address.city", "items[*].sku"]
//! rename = { "name" = "full_name" }
//! move = { "address.city" = "city" }
//! set = { "api_version" = 2 }
//! status = { 404 = 200 }
//! ```
//!
//! For each direction the body operations run in a fixed order: `unwrap`, `allow`, `deny`,
//! `rename`, `move`, `set`, `wrap`; then the headers (`remove`, then `set`); on responses the
//! status is remapped last. Paths are dotted, with `[*]` for every element of an array
//! ([`path`]). Bodies not labelled JSON pass byte for byte. See `docs/plugins/transform.md` for
//! every option and every decision about bodies that cannot be transformed.

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod path;
pub mod plan;

use tessera_sdk::{Action, Error, Filter, Headers, Request, Response, log};

use body::Outcome;
pub use config::Config;
use plan::{InvalidBody, Plan};

/// The filter.
#[derive(Debug)]
pub struct TransformFilter;

/// The route's config, compiled. It passed [`check_config`] at load, so an error here means the
/// plugin runs without that check (an older gateway).
fn plan() -> Result<Plan, Error> {
    let config: Config = tessera_sdk::config()?;
    config.plan().map_err(|e| {
        Error::internal("the plugin is misconfigured").with_detail(format!("transform config: {e}"))
    })
}

/// A route entry without `buffer_body = true` hands the filter no bodies: the body operations
/// cannot run, and passing the bodies on unchanged would let through what they were meant to
/// remove. Every request on such an entry fails, and the log says why.
fn not_buffered() -> Error {
    Error::internal("the plugin is misconfigured").with_detail(
        "transform: the config has body operations, but bodies are not visible to the filter; set `buffer_body = true` on the route's filter entry",
    )
}

/// Headers that describe the exact bytes of a body, wrong once it is rewritten.
const BODY_DIGESTS: [&str; 4] = ["content-digest", "repr-digest", "digest", "content-md5"];

impl Filter for TransformFilter {
    fn on_request(mut request: Request) -> Result<Action, Error> {
        let plan = plan()?;
        if plan.needs_bodies() && request.body().is_none() {
            return Err(not_buffered());
        }
        if plan.response.body.is_some() {
            // The response body must arrive whole and readable: no compression (the gateway
            // still compresses for the client, by the client's own accept-encoding) and no
            // ranges (a part of a document cannot be transformed).
            for name in ["accept-encoding", "range", "if-range"] {
                request.headers_mut().remove(name);
            }
        }
        if let (Some(body_plan), Some(body)) = (&plan.request.body, request.body()) {
            match body::rewrite(body_plan, request.headers(), body).map_err(internal)? {
                Outcome::NotJson | Outcome::Unchanged => {}
                Outcome::Rewritten(bytes) => {
                    request.set_body(bytes);
                    remove_digests(request.headers_mut());
                }
                Outcome::Encoded(coding) => match plan.request.invalid_body {
                    InvalidBody::Reject => {
                        return Err(Error::new(
                            415,
                            format!(
                                "a JSON request body with content-encoding {coding} is not accepted here"
                            ),
                        ));
                    }
                    InvalidBody::Pass => log::warn(format!(
                        "transform: request body passed untouched: content-encoding {coding}"
                    )),
                },
                Outcome::Invalid(why) => match plan.request.invalid_body {
                    InvalidBody::Reject => {
                        return Err(Error::bad_request(format!(
                            "the request body is not valid JSON: {why}"
                        )));
                    }
                    InvalidBody::Pass => log::warn(format!(
                        "transform: request body passed untouched: not valid JSON: {why}"
                    )),
                },
            }
        }
        plan.request.headers.apply(request.headers_mut());
        Ok(Action::Continue(request))
    }

    fn on_response(mut response: Response) -> Result<Response, Error> {
        let plan = plan()?;
        let status = response.status();
        if let Some(body_plan) = &plan.response.body
            && plan.transforms_status(status)
        {
            let Some(body) = response.body() else {
                return Err(not_buffered());
            };
            let unreadable = if status == 206 || response.headers().contains("content-range") {
                // Ranges are taken off the request, so only an upstream ignoring that sends one.
                body::is_json(response.headers()).then(|| "only a byte range of it".to_owned())
            } else {
                match body::rewrite(body_plan, response.headers(), body).map_err(internal)? {
                    Outcome::NotJson | Outcome::Unchanged => None,
                    Outcome::Rewritten(bytes) => {
                        response.set_body(bytes);
                        let headers = response.headers_mut();
                        remove_digests(headers);
                        // The bytes are no longer the upstream's: its validator can only be weak.
                        weaken_etag(headers);
                        headers.remove("accept-ranges");
                        None
                    }
                    Outcome::Encoded(coding) => Some(format!("content-encoding {coding}")),
                    Outcome::Invalid(why) => Some(format!("not valid JSON: {why}")),
                }
            };
            if let Some(why) = unreadable {
                match plan.response.invalid_body {
                    InvalidBody::Reject => {
                        return Err(Error::bad_gateway(
                            "the upstream's answer could not be transformed",
                        )
                        .with_detail(format!("transform: response body ({status}): {why}")));
                    }
                    InvalidBody::Pass => log::warn(format!(
                        "transform: response body ({status}) passed untouched: {why}"
                    )),
                }
            }
        }
        plan.response.headers.apply(response.headers_mut());
        let remapped = plan.remap(status);
        if remapped != status {
            response.set_status(remapped);
            // These answers have no body (RFC 9110 §15.3.5, §15.4.5).
            if matches!(remapped, 204 | 304) && response.body().is_some() {
                response.set_body(Vec::new());
            }
        }
        Ok(response)
    }
}

fn internal(detail: String) -> Error {
    Error::internal("the body could not be transformed").with_detail(format!("transform: {detail}"))
}

fn remove_digests(headers: &mut Headers) {
    for name in BODY_DIGESTS {
        headers.remove(name);
    }
}

/// `"x"` becomes `W/"x"` (RFC 9110 §8.8.3): still good for `If-None-Match`, which compares
/// weakly, no longer claiming byte-for-byte identity.
fn weaken_etag(headers: &mut Headers) {
    let etags: Vec<Vec<u8>> = headers.get_all("etag").map(<[u8]>::to_vec).collect();
    if etags.is_empty() {
        return;
    }
    headers.remove("etag");
    for etag in etags {
        if etag.starts_with(b"\"") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(&etag);
            headers.append("etag", weak);
        } else {
            headers.append("etag", etag);
        }
    }
}

/// What the gateway runs at load: the config must read and compile.
fn check_config(config: &Config) -> Result<(), String> {
    config.plan().map(drop)
}

tessera_sdk::filter!(TransformFilter, config = Config, check = check_config);

#[cfg(test)]
mod tests;
