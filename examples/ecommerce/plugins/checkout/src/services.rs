//! Where the services are: the upstreams the route entry must grant (`carts`, `products`,
//! `orders`, `payments`), the paths the checkout calls on them, and how their answers read.

use serde_json::Value;
use tessera_ecommerce_payments_api::SERVICE_PATH;
use tessera_sdk::http::HttpError;
use tessera_sdk::{Response, log};

use crate::answer::Failure;

/// The orders collection: `POST` creates an order.
pub const ORDERS: &str = "http://orders/orders";

/// A user's cart: `GET` reads it, `DELETE` empties it.
pub fn cart(user_id: u64) -> String {
    format!("http://carts/carts/{user_id}")
}

/// A product in the catalogue.
pub fn product(product_id: u64) -> String {
    format!("http://products/products/{product_id}")
}

/// A product's reservations: `POST` holds stock.
pub fn reservations(product_id: u64) -> String {
    format!("http://products/inventory/{product_id}/reservations")
}

/// One reservation: `DELETE` releases it.
pub fn reservation(product_id: u64, reservation_id: &str) -> String {
    format!("{}/{reservation_id}", reservations(product_id))
}

/// `POST` turns a reservation into a sale.
pub fn commit(product_id: u64, reservation_id: &str) -> String {
    format!("{}/commit", reservation(product_id, reservation_id))
}

/// `POST` cancels an order.
pub fn cancel(order_id: u64) -> String {
    format!("{ORDERS}/{order_id}/cancel")
}

/// A method of the payments gRPC service.
pub fn payments(method: &str) -> String {
    format!("http://payments{SERVICE_PATH}{method}")
}

/// Whether a call that failed may still have reached the service and done its work.
pub(crate) fn may_have_arrived(e: &HttpError) -> bool {
    matches!(
        e,
        HttpError::Timeout | HttpError::ConnectionFailed(_) | HttpError::BodyTooLarge
    )
}

/// A 2xx (and, with `gone_is_fine`, a 404) is settled; otherwise why not, for a message.
pub(crate) fn settled(
    result: Result<Response, HttpError>,
    gone_is_fine: bool,
) -> Result<(), String> {
    match result {
        Ok(r) if r.is_success() || (gone_is_fine && r.status() == 404) => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(HttpError::Timeout) => Err("did not answer in time".to_owned()),
        Err(e) => {
            log::debug(format!("call failed: {e}"));
            Err("could not be reached".to_owned())
        }
    }
}

/// A string field of a JSON answer (`error`, `state`), if there is one.
pub(crate) fn field(response: &Response, name: &str) -> Option<String> {
    let body: Value = response.json_body().ok()?;
    body.get(name)?.as_str().map(str::to_owned)
}

/// A call that produced no response: 504 for a timeout, else 502.
pub(crate) fn call_failure(step: &'static str, service: &str, e: &HttpError) -> Failure {
    let failure = match e {
        HttpError::Timeout => Failure::new(
            504,
            "upstream_timeout",
            format!("{service} did not answer in time"),
        ),
        _ => Failure::new(
            502,
            "upstream_unavailable",
            format!("{service} could not be reached"),
        ),
    };
    failure.at(step).detail(format!("{step}: {e}"))
}

/// A service answered a status the step cannot go on with.
pub(crate) fn status_failure(step: &'static str, service: &str, r: &Response) -> Failure {
    Failure::new(
        502,
        "upstream_unavailable",
        format!("{service} answered {}", r.status()),
    )
    .at(step)
    .detail(format!("{step}: {} {}", r.status(), truncated(r)))
}

/// A service answered something that is not what the step expects.
pub(crate) fn unexpected(step: &'static str, service: &str) -> Failure {
    Failure::new(
        502,
        "upstream_unavailable",
        format!("{service} sent an unexpected answer"),
    )
    .at(step)
}

/// A machine-readable code from another service, passed on only when it looks like one.
pub(crate) fn code_or(code: &str, otherwise: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { code } else { otherwise }.to_owned()
}

/// The start of a body, for the log.
pub(crate) fn truncated(r: &Response) -> String {
    r.text_body().chars().take(200).collect()
}
