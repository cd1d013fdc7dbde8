//! `POST /api/checkout`: the user's cart becomes a paid order, and every step is undone when a
//! later one fails. REST and JSON in; HTTP services and a gRPC payment service out.
//!
//! ```text
//! POST /api/checkout
//! Idempotency-Key: 5f0c2a9e-…            (optional)
//! {"user_id": 1, "store_id": 10, "card_number": "4242424242424242"}
//!
//! 201 Created
//! location: /api/orders/1007
//! {"checkout_id": "…", "order": {"id": 1007, "status": "processing", "total": 139.69, "items": [
//!    {"product_id": 100, "quantity": 1, "unit_price": 74.99, "product": {"id": 100, "name": "…", …}}, …]},
//!  "payment": {"id": "pay_…", "state": "captured", "amount": 139.69, "amount_cents": 13969,
//!              "captured": 139.69, "captured_cents": 13969, "refunded": 0.0, "refunded_cents": 0,
//!              "currency": "EUR", "card_last4": "4242", "reference": "…"},
//!  "warnings": []}
//! ```
//!
//! # Steps
//!
//! 1. **cart**: `GET http://carts/carts/{user_id}`; lines of one product are merged. An empty
//!    cart (or none) is 409 `cart_empty`; more than `max_products` products or `max_quantity`
//!    units of one is 409 `cart_too_large`.
//! 2. **price** and **reserve**, all at once: `GET http://products/products/{id}` for each
//!    product and `POST http://products/inventory/{id}/reservations` with `{"reservation_id":
//!    <checkout id>, "quantity"}` for each line. A reservation needs no price, so the lookups
//!    and the holds overlap in one round trip; the price of every line comes from the
//!    catalogue, never from the client (a body with other fields is 400). A product the
//!    catalogue or the inventory does not know is 409 `unknown_product` naming it; too little
//!    stock is 409 `out_of_stock` with `items: [{product_id, requested, available}]`. A total
//!    of 0 is 409 `nothing_to_pay` (the payment service takes only positive amounts).
//! 3. **authorize**: gRPC `Payments/Authorize` on the `payments` upstream for the total in
//!    cents, idempotency key `<checkout id>:authorize`, reference the checkout id. A declined
//!    card is 402 `payment_declined` with the service's `reason`.
//! 4. **create_order**: `POST http://orders/orders` with the checkout id, the payment id and
//!    the priced lines (the orders service creates one order per checkout id). A 4xx is 422
//!    `order_rejected` with the service's `reason`.
//! 5. **capture**: gRPC `Payments/Capture`, key `<checkout id>:capture`. This is the point of
//!    no return.
//! 6. Then, all at once: `DELETE http://carts/carts/{user_id}` and `POST
//!    …/reservations/{checkout id}/commit` for each product. Their failures do not undo a paid
//!    order: they are logged and listed in the answer's `warnings`.
//!
//! # Compensation
//!
//! A failure in steps 2 to 5 undoes what was done, in reverse: cancel the order (`POST
//! http://orders/orders/{id}/cancel`), void the authorisation (`Payments/Void`), release every
//! reservation that is held or may be (`DELETE …/reservations/{checkout id}`, all at once; a
//! 404 counts as released). The answer says what failed (`step`) and what was undone
//! (`compensation`: `[{"action", "order_id" | "payment_id" | "product_id", "status": "done" |
//! "failed" | "unknown", "message"?}]`); a compensation that did not complete is logged as an
//! error and stays in the body, never hidden.
//!
//! - A service that fails or answers an error status is 502 (`upstream_unavailable`, or
//!   `payment_unavailable` for the payment service), one that times out 504
//!   (`upstream_timeout`, `payment_timeout`).
//! - **Capture timeout**: the outcome of the capture is unknown, so the checkout voids the
//!   authorisation. The payment service makes a void win over a capture still running, so the
//!   void settles it: the order is cancelled, the payment voided, the reservations released,
//!   and the client gets 504 `payment_timeout` with nothing charged. Should the void find the
//!   payment captured after all, it is refunded (`refund_payment` in `compensation`).
//! - **Authorisation or order creation timeout**: whether the service acted is unknown and
//!   there is no id to undo; `compensation` says `unknown` for it. An authorisation made late
//!   is never captured (its `reference` is the checkout id); an order made late carries the
//!   checkout id. A refused connection or `UNAVAILABLE` means the service did nothing.
//!
//! Bodies follow the gateway's error shape: `{"error", "message", "request_id", "checkout_id",
//! "step", …}`.
//!
//! # Idempotency
//!
//! With an `Idempotency-Key` (1 to 255 visible ASCII characters), the checkout id is derived
//! from the user id and the key, so the services' own idempotency (reservation ids, the order's
//! checkout id, the payment's idempotency keys) recognises a retry: one key never charges
//! twice. Keys are per user.
//!
//! With `idempotency_bucket` granted to the route, the plugin also remembers answers. Claiming
//! a key is a compare-and-swap in the bucket, so of two concurrent requests with one key, one
//! runs and the other gets 409 `checkout_in_progress` (with `retry-after`). The finished answer
//! is stored with a fingerprint of the request (keyed with the idempotency key, so the bucket
//! holds neither the key nor the card number); a retry with the same body gets it again with
//! `idempotency-replayed: true` and calls nothing, a different body under the same key is 422
//! `idempotency_key_reused`. A 5xx answer, after compensation, is not stored: the next request
//! with the key runs again as a new attempt, with fresh ids (`<id>-1`, `<id>-2`, …) so the
//! services do not answer with what the undone attempt left. A request cut off before it
//! finished holds the key until `idempotency_lease_ms` passes; then the next request takes
//! over its attempt. A bucket that fails refuses keyed checkouts with 503
//! `idempotency_unavailable` rather than risk running one twice. The bucket's `ttl_ms` is how
//! long answers are kept (e.g. 24 hours).
//!
//! Without a bucket the key still makes the checkout happen at most once, but nothing is
//! replayed: a retry after a success finds the cart empty (409 `cart_empty`), and one after a
//! failure meets what the earlier attempt left under the same ids (a released reservation, a
//! cancelled order, a voided payment) and is 422 `idempotency_key_reused`, undoing only what it
//! did itself; use a new key then.
//!
//! A request without a key gets a random checkout id.
//!
//! # Configuration
//!
//! See [`Config`]. The route entry must grant the upstreams `carts`, `products`, `orders` and
//! `payments` (a `protocol = "grpc"` upstream), and its `limits` must fit a checkout:
//! `timeout_ms` above [`config::Timeouts::worst_case_ms`] (21 s with the default timeouts, so
//! compensation can finish), `max_calls` at least `3 × max_products + 16`, and `max_in_flight`
//! at least `2 × max_products` for the lookups and reservations to overlap fully.

mod answer;
pub mod config;
mod idempotency;
mod input;
mod saga;
mod services;

use std::time::{SystemTime, UNIX_EPOCH};

use tessera_sdk::{Error, Handler, Request, Response};

pub use answer::Answer;
pub use config::Config;
pub use saga::{payment_json, state_name};

use idempotency::Claim;
use input::Input;

/// The handler.
#[derive(Debug)]
pub struct Checkout;

impl Handler for Checkout {
    fn handle(request: Request) -> Result<Response, Error> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| {
            Error::internal("the checkout cannot run").with_detail(format!("no randomness: {e}"))
        })?;
        Ok(serve(&request, now_ms(), random))
    }
}

tessera_sdk::handler!(Checkout, config = Config, check = Config::check);

/// Serves one checkout at `now_ms` (milliseconds since the Unix epoch); `random` seeds the
/// checkout id of a request without a key and tells this request's claim on a key apart.
pub fn serve(request: &Request, now_ms: u64, random: [u8; 16]) -> Response {
    if request.method() != "POST" {
        return answer::Failure::new(405, "method_not_allowed", "checkout takes POST")
            .into_answer()
            .into_response(false)
            .with_header("allow", "POST");
    }
    let config: Config = match tessera_sdk::config() {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let parsed = input::idempotency_key(request)
        .and_then(|key| Input::parse(request.body()).map(|input| (key, input)));
    let (key, input) = match parsed {
        Ok(p) => p,
        Err(failure) => return failure.into_answer().into_response(false),
    };
    let Some(key) = key else {
        let id = input::random_checkout_id(random);
        return saga::run(&config, &input, &id).into_response(false);
    };
    let base = input::keyed_checkout_id(input.user_id, &key);
    let Some(bucket) = &config.idempotency_bucket else {
        return saga::run(&config, &input, &base).into_response(false);
    };
    let claim = idempotency::claim(
        bucket,
        &base,
        &input.fingerprint(&key),
        &input::hex(&random),
        now_ms,
        config.idempotency_lease_ms,
    );
    match claim {
        Claim::Answer { answer, replayed } => answer.into_response(replayed),
        Claim::Run(ledger) => {
            let answer = saga::run(&config, &input, &input::attempt_id(&base, ledger.attempt));
            ledger.finish(&answer);
            answer.into_response(false)
        }
    }
}

/// Milliseconds since the Unix epoch on the gateway's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
