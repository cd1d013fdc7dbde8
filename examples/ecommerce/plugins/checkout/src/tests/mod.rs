//! The checkout against a MockHost: the services' answers for a checkout that goes well, and
//! helpers to read what the plugin did. Each file changes some answers and checks the outcome.

mod compensation;
mod flow;
mod idempotency;

use std::time::Duration;

use serde_json::{Value, json};
use tessera_ecommerce_payments_api::{
    AuthorizeRequest, CaptureRequest, Payment, RefundRequest, State, VoidRequest,
};
use tessera_sdk::grpc::{self, Code};
use tessera_sdk::http::HttpError;
use tessera_sdk::testing::MockHost;
use tessera_sdk::{Request, Response};

use crate::idempotency::running_record;
use crate::input::{Input, keyed_checkout_id};
use crate::services;
use crate::{Checkout, serve};

const CARD: &str = "4242424242424242";
const KEY: &str = "key-1";
const BUCKET: &str = "checkouts";
/// 2 × 74.99 + 2 × 9.90.
const TOTAL: i64 = 16_978;
const ORDER_ID: u64 = 2001;
const PAYMENT_ID: &str = "pay_1";

fn body() -> String {
    json!({"user_id": 1, "store_id": 10, "card_number": CARD}).to_string()
}

fn request(key: Option<&str>) -> Request {
    let r = Request::new("POST", "/api/checkout").with_body(body());
    match key {
        Some(k) => r.with_header("idempotency-key", k),
        None => r,
    }
}

fn id() -> String {
    keyed_checkout_id(1, KEY)
}

fn payment(state: State, amount: i64) -> Payment {
    Payment {
        id: PAYMENT_ID.into(),
        state: state as i32,
        amount_cents: amount,
        currency: "EUR".into(),
        decline_reason: String::new(),
        captured_cents: if state == State::Captured { amount } else { 0 },
        refunded_cents: if state == State::Refunded { amount } else { 0 },
        card_last4: "4242".into(),
        reference: id(),
    }
}

fn ok(value: Value) -> Response {
    Response::json(200, &value)
}

fn order() -> Value {
    json!({"id": ORDER_ID, "user_id": 1, "store_id": 10, "status": "processing",
           "created_at": "2026-11-22T10:00:00Z", "payment_id": PAYMENT_ID,
           "items": [{"product_id": 100, "quantity": 2, "unit_price": 74.99},
                     {"product_id": 103, "quantity": 2, "unit_price": 9.9}]})
}

/// The services with everything going well, for checkout `id`. The cart lists product 100
/// twice, so it is one line of 2.
fn shop(id: &str) -> MockHost {
    let host = MockHost::new()
        .bucket(BUCKET)
        .config(json!({"idempotency_bucket": BUCKET}))
        .request_id("req-1")
        .respond(
            "GET",
            &services::cart(1),
            ok(json!({"user_id": 1, "items": [
                {"product_id": 100, "quantity": 1},
                {"product_id": 103, "quantity": 2},
                {"product_id": 100, "quantity": 1}]})),
        )
        .respond(
            "GET",
            &services::product(100),
            ok(json!({"id": 100, "name": "TAOCP", "category": "books", "price": 74.99, "stock": 12})),
        )
        .respond(
            "GET",
            &services::product(103),
            ok(json!({"id": 103, "name": "Notebook", "category": "stationery", "price": 9.9})),
        )
        .respond(
            "POST",
            &services::payments("Authorize"),
            grpc::testing::response(&payment(State::Authorized, TOTAL)),
        )
        .respond("POST", services::ORDERS, Response::json(201, &order()))
        .respond(
            "POST",
            &services::payments("Capture"),
            grpc::testing::response(&payment(State::Captured, TOTAL)),
        )
        .respond("DELETE", &services::cart(1), Response::new(204))
        .respond("POST", &services::cancel(ORDER_ID), ok(json!({"id": ORDER_ID, "status": "cancelled"})))
        .respond(
            "POST",
            &services::payments("Void"),
            grpc::testing::response(&payment(State::Voided, TOTAL)),
        )
        .respond(
            "POST",
            &services::payments("Refund"),
            grpc::testing::response(&payment(State::Refunded, TOTAL)),
        );
    with_inventory(host, id)
}

/// The inventory's answers for reservations of checkout `id`.
fn with_inventory(mut host: MockHost, id: &str) -> MockHost {
    for product in [100, 103] {
        host = host
            .respond(
                "POST",
                &services::reservations(product),
                Response::json(201, &json!({"reservation_id": id})),
            )
            .respond(
                "DELETE",
                &services::reservation(product, id),
                Response::new(204),
            )
            .respond(
                "POST",
                &services::commit(product, id),
                ok(json!({"committed": true})),
            );
    }
    host
}

/// The calls made, as `METHOD url` with the payments URLs shortened to `gRPC Method`.
fn calls(host: &MockHost) -> Vec<String> {
    let prefix = services::payments("");
    host.calls()
        .iter()
        .map(|c| match c.url().strip_prefix(&prefix) {
            Some(method) => format!("gRPC {method}"),
            None => format!("{} {}", c.method(), c.url()),
        })
        .collect()
}

fn json_of(response: &Response) -> Value {
    response.json_body().unwrap()
}

fn sent<M: prost::Message + Default>(host: &MockHost, method: &str) -> M {
    let url = services::payments(method);
    let call = host
        .calls()
        .into_iter()
        .find(|c| c.url() == url)
        .unwrap_or_else(|| panic!("no {method} call"));
    grpc::testing::decode_request(&call).unwrap()
}

fn releases(id: &str) -> Vec<String> {
    vec![
        format!("DELETE {}", services::reservation(100, id)),
        format!("DELETE {}", services::reservation(103, id)),
    ]
}

/// The calls up to the reservations: the cart, then every lookup and every reservation.
fn head() -> Vec<String> {
    vec![
        format!("GET {}", services::cart(1)),
        format!("GET {}", services::product(100)),
        format!("GET {}", services::product(103)),
        format!("POST {}", services::reservations(100)),
        format!("POST {}", services::reservations(103)),
    ]
}

/// The compensation of a failure answer as `action status` lines.
fn compensation(body: &Value) -> Vec<String> {
    body["compensation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap(),
                c["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn sent_last<M: prost::Message + Default>(host: &MockHost, method: &str) -> M {
    let url = services::payments(method);
    let call = host
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.url() == url)
        .unwrap();
    grpc::testing::decode_request(&call).unwrap()
}
