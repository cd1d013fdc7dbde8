//! The checkout against a MockHost: call sequences, concurrency, compensation order,
//! idempotency.

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

#[test]
fn the_happy_path_prices_from_the_catalogue_and_pays_over_grpc() {
    let id = id();
    let host = shop(&id);
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 201, "{}", response.text_body());
    assert_eq!(response.header("location"), Some("/api/orders/2001"));
    assert_eq!(response.header("idempotency-replayed"), None);

    let mut expected = head();
    expected.extend([
        "gRPC Authorize".to_owned(),
        format!("POST {}", services::ORDERS),
        "gRPC Capture".to_owned(),
        format!("DELETE {}", services::cart(1)),
        format!("POST {}", services::commit(100, &id)),
        format!("POST {}", services::commit(103, &id)),
    ]);
    assert_eq!(calls(&host), expected);

    // Reservations carry the checkout id; merged lines reserve their whole quantity.
    let reserve = &host.calls()[3];
    let reserve: Value = serde_json::from_slice(reserve.body_bytes().unwrap()).unwrap();
    assert_eq!(reserve, json!({"reservation_id": id, "quantity": 2}));

    // REST in, gRPC out: the total in cents, keys derived from the checkout id.
    let authorize: AuthorizeRequest = sent(&host, "Authorize");
    assert_eq!(
        authorize,
        AuthorizeRequest {
            idempotency_key: format!("{id}:authorize"),
            card_number: CARD.into(),
            amount_cents: TOTAL,
            currency: "EUR".into(),
            reference: id.clone(),
        }
    );
    let capture: CaptureRequest = sent(&host, "Capture");
    assert_eq!(capture.payment_id, PAYMENT_ID);
    assert_eq!(capture.idempotency_key, format!("{id}:capture"));
    let authorize_call = host
        .calls()
        .into_iter()
        .find(|c| c.url() == services::payments("Authorize"))
        .unwrap();
    assert_eq!(authorize_call.headers().get("grpc-timeout"), Some("3000m"));

    // The order is priced from the catalogue.
    let order_call = host
        .calls()
        .into_iter()
        .find(|c| c.url() == services::ORDERS)
        .unwrap();
    let new_order: Value = serde_json::from_slice(order_call.body_bytes().unwrap()).unwrap();
    assert_eq!(
        new_order,
        json!({"checkout_id": id, "user_id": 1, "store_id": 10, "payment_id": PAYMENT_ID,
               "items": [{"product_id": 100, "quantity": 2, "unit_price": 74.99},
                         {"product_id": 103, "quantity": 2, "unit_price": 9.9}]})
    );

    let body = json_of(&response);
    assert_eq!(body["checkout_id"], json!(id));
    assert_eq!(body["order"]["id"], 2001);
    assert_eq!(body["order"]["total"], 169.78);
    assert_eq!(
        body["order"]["items"][0]["product"],
        json!({"id": 100, "name": "TAOCP", "category": "books", "price": 74.99})
    );
    assert_eq!(body["order"]["items"][1]["product"]["name"], "Notebook");
    assert_eq!(
        body["payment"],
        json!({"id": PAYMENT_ID, "state": "captured", "amount": 169.78, "amount_cents": TOTAL,
               "captured": 169.78, "captured_cents": TOTAL, "refunded": 0.0, "refunded_cents": 0,
               "currency": "EUR", "card_last4": "4242", "reference": id})
    );
    assert!(
        !response.text_body().contains(CARD),
        "the card number never leaves"
    );
    assert_eq!(body["warnings"], json!([]));
}

#[test]
fn lookups_and_reservations_are_all_started_before_any_is_waited() {
    let ms = Duration::from_millis;
    let id = id();
    let mut host = shop(&id)
        .delay("GET", &services::cart(1), ms(10))
        .delay("POST", &services::payments("Authorize"), ms(50))
        .delay("POST", services::ORDERS, ms(20))
        .delay("POST", &services::payments("Capture"), ms(50))
        .delay("DELETE", &services::cart(1), ms(30));
    for product in [100, 103] {
        host = host
            .delay("GET", &services::product(product), ms(100))
            .delay("POST", &services::reservations(product), ms(100))
            .delay("POST", &services::commit(product, &id), ms(30));
    }
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 201, "{}", response.text_body());
    // cart 10, then 2 lookups ‖ 2 reservations 100, authorise 50, order 20, capture 50, then
    // emptying the cart ‖ 2 commits 30.
    assert_eq!(host.elapsed(), ms(260));
}

#[test]
fn out_of_stock_releases_the_other_reservations_and_charges_nothing() {
    let id = id();
    let host = shop(&id).respond(
        "POST",
        &services::reservations(103),
        Response::json(
            409,
            &json!({"error": "out_of_stock", "product_id": 103, "requested": 2, "available": 1}),
        ),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409, "{}", response.text_body());
    let body = json_of(&response);
    assert_eq!(body["error"], "out_of_stock");
    assert_eq!(body["step"], "reserve");
    assert_eq!(body["request_id"], "req-1");
    assert_eq!(body["checkout_id"], json!(id));
    assert_eq!(
        body["items"],
        json!([{"product_id": 103, "requested": 2, "available": 1}])
    );
    assert_eq!(
        body["compensation"],
        json!([{"action": "release_reservation", "product_id": 100, "status": "done"}])
    );
    let mut expected = head();
    expected.push(format!("DELETE {}", services::reservation(100, &id)));
    assert_eq!(calls(&host), expected, "no payment call, only 100 released");
}

#[test]
fn unknown_products_are_named_and_what_was_held_released() {
    let id = id();
    let host = shop(&id)
        .respond(
            "GET",
            &services::product(103),
            Response::json(404, &json!({"error": "not_found"})),
        )
        .respond(
            "POST",
            &services::reservations(103),
            Response::json(404, &json!({"error": "not_found"})),
        );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409);
    let body = json_of(&response);
    assert_eq!(body["error"], "unknown_product");
    assert_eq!(body["product_ids"], json!([103]));
    assert!(body["message"].as_str().unwrap().contains("103"));
    assert_eq!(compensation(&body), ["release_reservation done"]);
}

#[test]
fn an_empty_or_missing_cart_is_409_and_calls_nothing_else() {
    for cart in [
        ok(json!({"user_id": 1, "items": []})),
        Response::json(404, &json!({"error": "not_found"})),
    ] {
        let host = shop(&id()).respond("GET", &services::cart(1), cart);
        let response = host.handle::<Checkout>(request(None));
        assert_eq!(response.status(), 409);
        let body = json_of(&response);
        assert_eq!(body["error"], "cart_empty");
        assert_eq!(body["compensation"], json!([]));
        assert_eq!(host.calls().len(), 1);
    }
}

#[test]
fn a_declined_card_is_402_with_the_reason_and_releases_everything() {
    let id = id();
    let mut declined = payment(State::Declined, TOTAL);
    declined.decline_reason = "insufficient_funds".into();
    let host = shop(&id).respond(
        "POST",
        &services::payments("Authorize"),
        grpc::testing::response(&declined),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 402, "{}", response.text_body());
    let body = json_of(&response);
    assert_eq!(body["error"], "payment_declined");
    assert_eq!(body["reason"], "insufficient_funds");
    assert_eq!(body["step"], "authorize");
    let mut expected = head();
    expected.push("gRPC Authorize".to_owned());
    expected.extend(releases(&id));
    assert_eq!(calls(&host), expected, "no void: nothing was authorised");
}

#[test]
fn payments_unavailable_is_502_and_releases() {
    let id = id();
    let host = shop(&id).respond(
        "POST",
        &services::payments("Authorize"),
        grpc::testing::status(Code::Unavailable, "card network down"),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 502);
    let body = json_of(&response);
    assert_eq!(body["error"], "payment_unavailable");
    assert_eq!(body["step"], "authorize");
    assert!(
        !response.text_body().contains("card network"),
        "the service's message stays in the log"
    );
    assert_eq!(compensation(&body), ["release_reservation done"; 2]);
    let mut expected = head();
    expected.push("gRPC Authorize".to_owned());
    expected.extend(releases(&id));
    assert_eq!(calls(&host), expected);

    // A refused connection is the same: the service did nothing.
    let host = shop(&id).fail(
        "POST",
        &services::payments("Authorize"),
        HttpError::ConnectionFailed("refused".into()),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 502);
    assert_eq!(compensation(&json_of(&response)).len(), 2);
}

#[test]
fn an_authorisation_that_times_out_is_504_and_says_its_outcome_is_unknown() {
    let id = id();
    let host = shop(&id).fail("POST", &services::payments("Authorize"), HttpError::Timeout);
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 504);
    let body = json_of(&response);
    assert_eq!(body["error"], "payment_timeout");
    assert_eq!(
        compensation(&body),
        [
            "void_payment unknown",
            "release_reservation done",
            "release_reservation done",
        ]
    );
}

#[test]
fn a_failed_order_voids_then_releases() {
    let id = id();
    let host = shop(&id).respond(
        "POST",
        services::ORDERS,
        Response::json(500, &json!({"error": "db"})),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 502);
    let body = json_of(&response);
    assert_eq!(body["error"], "upstream_unavailable");
    assert_eq!(body["step"], "create_order");
    let mut expected = head();
    expected.extend([
        "gRPC Authorize".to_owned(),
        format!("POST {}", services::ORDERS),
        "gRPC Void".to_owned(),
    ]);
    expected.extend(releases(&id));
    assert_eq!(calls(&host), expected);
    let void: VoidRequest = sent(&host, "Void");
    assert_eq!(void.payment_id, PAYMENT_ID);
    assert_eq!(void.idempotency_key, format!("{id}:void"));
    assert_eq!(
        body["compensation"][0],
        json!({"action": "void_payment", "payment_id": PAYMENT_ID, "status": "done"})
    );

    // The orders service refusing the order is the client's problem: 422 with its reason.
    let host = shop(&id).respond(
        "POST",
        services::ORDERS,
        Response::json(422, &json!({"error": "unknown_store"})),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 422);
    let body = json_of(&response);
    assert_eq!(body["error"], "order_rejected");
    assert_eq!(body["reason"], "unknown_store");
    assert_eq!(compensation(&body)[0], "void_payment done");
}

#[test]
fn a_failed_capture_cancels_voids_and_releases_in_that_order() {
    let id = id();
    for (answer, status, code) in [
        (Err(HttpError::Timeout), 504, "payment_timeout"),
        (
            Ok(grpc::testing::status(Code::FailedPrecondition, "expired")),
            502,
            "payment_unavailable",
        ),
    ] {
        let host = match answer {
            Ok(r) => shop(&id).respond("POST", &services::payments("Capture"), r),
            Err(e) => shop(&id).fail("POST", &services::payments("Capture"), e),
        };
        let response = host.handle::<Checkout>(request(Some(KEY)));
        assert_eq!(response.status(), status, "{}", response.text_body());
        let body = json_of(&response);
        assert_eq!(body["error"], code);
        assert_eq!(body["step"], "capture");
        let mut expected = head();
        expected.extend([
            "gRPC Authorize".to_owned(),
            format!("POST {}", services::ORDERS),
            "gRPC Capture".to_owned(),
            format!("POST {}", services::cancel(ORDER_ID)),
            "gRPC Void".to_owned(),
        ]);
        expected.extend(releases(&id));
        assert_eq!(calls(&host), expected);
        assert_eq!(
            body["compensation"],
            json!([
                {"action": "cancel_order", "order_id": ORDER_ID, "status": "done"},
                {"action": "void_payment", "payment_id": PAYMENT_ID, "status": "done"},
                {"action": "release_reservation", "product_id": 100, "status": "done"},
                {"action": "release_reservation", "product_id": 103, "status": "done"},
            ])
        );
    }
}

#[test]
fn a_capture_that_went_through_after_its_timeout_is_refunded() {
    let id = id();
    let host = shop(&id)
        .fail("POST", &services::payments("Capture"), HttpError::Timeout)
        .respond(
            "POST",
            &services::payments("Void"),
            grpc::testing::status(Code::FailedPrecondition, "payment is CAPTURED"),
        );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 504);
    let body = json_of(&response);
    assert_eq!(
        compensation(&body)[..2],
        ["cancel_order done", "refund_payment done",]
    );
    let refund: RefundRequest = sent(&host, "Refund");
    assert_eq!(refund.idempotency_key, format!("{id}:refund"));
    assert_eq!(refund.amount_cents, 0, "everything captured");
}

#[test]
fn compensation_failures_are_reported_and_logged_not_hidden() {
    let id = id();
    let host = shop(&id)
        .fail("POST", &services::payments("Capture"), HttpError::Timeout)
        .respond(
            "POST",
            &services::cancel(ORDER_ID),
            Response::json(500, &json!({})),
        )
        .fail(
            "POST",
            &services::payments("Void"),
            HttpError::ConnectionFailed("refused".into()),
        )
        .fail(
            "DELETE",
            &services::reservation(103, &id),
            HttpError::Timeout,
        );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 504);
    let body = json_of(&response);
    assert_eq!(
        body["compensation"],
        json!([
            {"action": "cancel_order", "order_id": ORDER_ID, "status": "failed", "message": "the orders service answered 500"},
            {"action": "void_payment", "payment_id": PAYMENT_ID, "status": "failed", "message": "the payment service could not be reached"},
            {"action": "release_reservation", "product_id": 100, "status": "done"},
            {"action": "release_reservation", "product_id": 103, "status": "failed", "message": "the inventory did not answer in time"},
        ])
    );
    let errors = host
        .logs()
        .into_iter()
        .filter(|l| l.level == "error")
        .count();
    assert_eq!(errors, 3, "{:?}", host.logs());
}

#[test]
fn an_authorisation_for_the_wrong_amount_is_voided() {
    let id = id();
    let host = shop(&id).respond(
        "POST",
        &services::payments("Authorize"),
        grpc::testing::response(&payment(State::Authorized, TOTAL - 1)),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 502);
    let body = json_of(&response);
    assert_eq!(body["error"], "payment_unavailable");
    assert_eq!(compensation(&body)[0], "void_payment done");
}

#[test]
fn bookkeeping_after_the_capture_fails_into_warnings_not_undo() {
    let id = id();
    let host = shop(&id)
        .respond("DELETE", &services::cart(1), Response::new(503))
        .fail("POST", &services::commit(103, &id), HttpError::Timeout);
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 201);
    let body = json_of(&response);
    assert_eq!(body["payment"]["state"], "captured");
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(warnings[0]["step"], "empty_cart");
    assert_eq!(
        warnings[1],
        json!({"step": "commit", "product_id": 103,
        "message": "the reservation could not be committed (did not answer in time); it stays held"})
    );
    assert!(
        !calls(&host)
            .iter()
            .any(|c| c.contains("Void") || c.contains("cancel"))
    );
}

#[test]
fn a_retry_with_the_same_key_replays_without_calling_anything() {
    let id = id();
    let host = shop(&id);
    let first = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(first.status(), 201);
    let made = host.calls().len();
    let again = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(again.status(), 201);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.header("location"), Some("/api/orders/2001"));
    assert_eq!(json_of(&again), json_of(&first));
    assert_eq!(host.calls().len(), made, "a replay calls nothing");

    // The same key with another card is another request.
    let other = Request::new("POST", "/api/checkout")
        .with_header("idempotency-key", KEY)
        .with_body(
            json!({"user_id": 1, "store_id": 10, "card_number": "4000000000000002"}).to_string(),
        );
    let response = host.handle::<Checkout>(other);
    assert_eq!(response.status(), 422);
    assert_eq!(json_of(&response)["error"], "idempotency_key_reused");
    assert_eq!(host.calls().len(), made);

    // The bucket holds neither the key nor the card.
    let record = host.kv_value(BUCKET, &format!("checkout:{id}")).unwrap();
    let record = String::from_utf8(record).unwrap();
    assert!(!record.contains(CARD) && !record.contains(KEY), "{record}");
    assert!(record.contains("\"state\":\"done\""), "{record}");
}

#[test]
fn definitive_failures_are_replayed_too() {
    let id = id();
    let mut declined = payment(State::Declined, TOTAL);
    declined.decline_reason = "card_declined".into();
    let host = shop(&id).respond(
        "POST",
        &services::payments("Authorize"),
        grpc::testing::response(&declined),
    );
    assert_eq!(host.handle::<Checkout>(request(Some(KEY))).status(), 402);
    let made = host.calls().len();
    let again = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(again.status(), 402);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(host.calls().len(), made);
}

#[test]
fn a_transient_failure_frees_the_key_and_the_retry_runs_as_a_new_attempt() {
    let id = id();
    let retry_id = format!("{id}-1");
    let host = with_inventory(shop(&id), &retry_id).fail(
        "POST",
        &services::payments("Authorize"),
        HttpError::ConnectionFailed("refused".into()),
    );
    let first = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(first.status(), 502);
    let record = host.kv_value(BUCKET, &format!("checkout:{id}")).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&record).unwrap(),
        json!({"state": "retry", "attempt": 0})
    );

    // The payment service is back: the retry runs, with ids the services have not seen.
    let host = host.respond(
        "POST",
        &services::payments("Authorize"),
        grpc::testing::response(&payment(State::Authorized, TOTAL)),
    );
    let before = host.calls().len();
    let retry = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(retry.status(), 201, "{}", retry.text_body());
    assert_eq!(retry.header("idempotency-replayed"), None);
    assert_eq!(json_of(&retry)["checkout_id"], json!(retry_id));
    assert!(host.calls().len() > before);
    let authorize: AuthorizeRequest = sent_last(&host, "Authorize");
    assert_eq!(authorize.idempotency_key, format!("{retry_id}:authorize"));
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

#[test]
fn a_key_held_by_a_running_checkout_is_409_until_its_lease_ends() {
    let id = id();
    let input = Input::parse(Some(body().as_bytes())).unwrap();
    let fingerprint = input.fingerprint(KEY);
    let host = shop(&id).kv_insert(
        BUCKET,
        &format!("checkout:{id}"),
        running_record(&fingerprint, 0, "someone-else", u64::MAX),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(json_of(&response)["error"], "checkout_in_progress");
    assert!(host.calls().is_empty());

    // A holder cut off long ago: its lease is over and this request takes over its attempt.
    let host = shop(&id).kv_insert(
        BUCKET,
        &format!("checkout:{id}"),
        running_record(&fingerprint, 0, "someone-else", 1),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 201, "{}", response.text_body());
    assert_eq!(json_of(&response)["checkout_id"], json!(id));
}

#[test]
fn two_requests_racing_for_one_key_run_once() {
    // Another request claims the key between this one's read and its compare-and-swap.
    let id = id();
    let input = Input::parse(Some(body().as_bytes())).unwrap();
    let host = shop(&id).race_next_swap(
        BUCKET,
        &format!("checkout:{id}"),
        running_record(&input.fingerprint(KEY), 0, "the-other", u64::MAX),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409);
    assert_eq!(json_of(&response)["error"], "checkout_in_progress");
    assert!(host.calls().is_empty());
}

#[test]
fn a_failing_bucket_refuses_keyed_checkouts_and_not_others() {
    let host = shop(&id());
    host.bucket_down(BUCKET, true);
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 503);
    assert_eq!(json_of(&response)["error"], "idempotency_unavailable");
    assert!(host.calls().is_empty());

    let random = [7u8; 16];
    let no_key_id = "07".repeat(16);
    let host = with_inventory(host, &no_key_id);
    let response = host.run(|| serve(&request(None), 0, random));
    assert_eq!(response.status(), 201, "{}", response.text_body());
    assert_eq!(json_of(&response)["checkout_id"], json!(no_key_id));

    let ungranted = MockHost::new().config(json!({"idempotency_bucket": "nope"}));
    let response = ungranted.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 500);
    assert!(
        ungranted
            .logs()
            .iter()
            .any(|l| l.message.contains("not granted"))
    );
}

#[test]
fn without_a_bucket_the_key_still_seeds_the_ids() {
    let id = id();
    let host = shop(&id).config(json!({}));
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 201);
    assert_eq!(json_of(&response)["checkout_id"], json!(id));
    assert!(host.kv_value(BUCKET, &format!("checkout:{id}")).is_none());

    // A second run of the key meets the first's voided payment: refused, nothing charged.
    let host = host.respond(
        "POST",
        &services::payments("Authorize"),
        grpc::testing::response(&payment(State::Voided, TOTAL)),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 422);
    let body = json_of(&response);
    assert_eq!(body["error"], "idempotency_key_reused");
    assert!(
        !compensation(&body)
            .iter()
            .any(|c| c.starts_with("void_payment")),
        "the earlier checkout's payment is not this one's to void"
    );
}

#[test]
fn bad_requests_are_400_naming_the_field_and_call_nothing() {
    let host = shop(&id());
    let response = host.handle::<Checkout>(
        Request::new("POST", "/api/checkout")
            .with_body(r#"{"user_id": 1, "store_id": 10, "card_number": "42"}"#),
    );
    assert_eq!(response.status(), 400);
    let body = json_of(&response);
    assert_eq!(body["field"], "card_number");
    assert_eq!(body["error"], "bad_request");
    let response = host.handle::<Checkout>(request(Some("has space")));
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(&response)["field"], "Idempotency-Key");
    let response = host.handle::<Checkout>(Request::new("GET", "/api/checkout"));
    assert_eq!(response.status(), 405);
    assert_eq!(response.header("allow"), Some("POST"));
    assert!(host.calls().is_empty());
}

#[test]
fn hostile_answers_are_failures_not_panics() {
    let id = id();
    let cases: Vec<(&str, String, Response)> = vec![
        ("GET", services::cart(1), Response::text(200, "not json")),
        (
            "GET",
            services::cart(1),
            ok(json!({"user_id": 2, "items": [{"product_id": 100, "quantity": 1}]})),
        ),
        (
            "GET",
            services::cart(1),
            ok(json!({"user_id": 1, "items": [{"product_id": 100, "quantity": 0}]})),
        ),
        (
            "GET",
            services::cart(1),
            ok(
                json!({"user_id": 1, "items": [{"product_id": 100, "quantity": 4294967295u32}, {"product_id": 100, "quantity": 1}]}),
            ),
        ),
        (
            "GET",
            services::product(100),
            ok(json!({"id": 100, "price": "free"})),
        ),
        (
            "GET",
            services::product(100),
            ok(json!({"id": 100, "price": 1.001})),
        ),
        (
            "POST",
            services::ORDERS.to_owned(),
            Response::json(201, &json!({"id": "x"})),
        ),
        (
            "POST",
            services::payments("Authorize"),
            Response::text(200, "garbage"),
        ),
        (
            "POST",
            services::payments("Capture"),
            grpc::testing::response(&payment(State::Voided, TOTAL)),
        ),
    ];
    for (method, url, answer) in cases {
        let host = shop(&id).respond(method, &url, answer);
        let response = host.handle::<Checkout>(request(Some(KEY)));
        assert_eq!(
            response.status(),
            502,
            "{method} {url}: {}",
            response.text_body()
        );
        let body = json_of(&response);
        assert!(body["compensation"].is_array(), "{body}");
    }
}

#[test]
fn too_large_carts_are_refused_before_anything_is_held() {
    let id = id();
    let host = shop(&id).config(json!({"max_products": 1}));
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409);
    assert_eq!(json_of(&response)["error"], "cart_too_large");
    assert_eq!(host.calls().len(), 1);
    let host = shop(&id).config(json!({"max_quantity": 1}));
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409);
    assert_eq!(json_of(&response)["product_id"], 100);
}

#[test]
fn ids_an_earlier_checkout_used_are_refused_as_key_reuse() {
    let id = id();
    // The inventory answers the reservation id again, released by the earlier checkout.
    let host = shop(&id).respond(
        "POST",
        &services::reservations(103),
        ok(json!({"reservation_id": id, "product_id": 103, "quantity": 2, "state": "released"})),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 422, "{}", response.text_body());
    let body = json_of(&response);
    assert_eq!(body["error"], "idempotency_key_reused");
    assert_eq!(body["step"], "reserve");
    assert_eq!(
        compensation(&body),
        ["release_reservation done"],
        "only 100 was held here"
    );

    // The id holds another quantity.
    let host = shop(&id).respond(
        "POST",
        &services::reservations(100),
        Response::json(409, &json!({"error": "reservation_conflict"})),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 422);

    // The orders service has another order under this checkout id.
    let host = shop(&id).respond(
        "POST",
        services::ORDERS,
        Response::json(
            409,
            &json!({"error": "checkout_id_conflict", "order_id": 2001}),
        ),
    );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 422);
    let body = json_of(&response);
    assert_eq!(body["step"], "create_order");
    assert_eq!(compensation(&body)[0], "void_payment done");

    // It answers this checkout id's order again, cancelled by the earlier checkout.
    let mut cancelled = order();
    cancelled["status"] = json!("cancelled");
    let host = shop(&id).respond("POST", services::ORDERS, ok(cancelled));
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 422);
    assert!(
        !calls(&host).iter().any(|c| c.contains("/cancel")),
        "already cancelled"
    );
}

#[test]
fn a_free_cart_is_refused_before_any_payment() {
    let host = shop(&id())
        .respond(
            "GET",
            &services::product(100),
            ok(json!({"id": 100, "price": 0})),
        )
        .respond(
            "GET",
            &services::product(103),
            ok(json!({"id": 103, "price": 0.0})),
        );
    let response = host.handle::<Checkout>(request(Some(KEY)));
    assert_eq!(response.status(), 409);
    assert_eq!(json_of(&response)["error"], "nothing_to_pay");
    assert_eq!(compensation(&json_of(&response)).len(), 2);
    assert!(!calls(&host).iter().any(|c| c.starts_with("gRPC")));
}
