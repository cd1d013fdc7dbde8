//! The path through the steps: calls, concurrency, what the answer holds, bad input.

use super::*;

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
    let nothing: &[&str] = &[];
    let held: &[&str] = &["release_reservation done"; 2];
    let authorised: &[&str] = &[
        "void_payment done",
        "release_reservation done",
        "release_reservation done",
    ];
    let unknown: &[&str] = &[
        "void_payment unknown",
        "release_reservation done",
        "release_reservation done",
    ];
    let ordered: &[&str] = &[
        "cancel_order done",
        "void_payment done",
        "release_reservation done",
        "release_reservation done",
    ];
    let mut cheap_order = order();
    cheap_order["items"][0]["unit_price"] = json!(1.0);
    let mut no_id = payment(State::Authorized, TOTAL);
    no_id.id.clear();
    let cart = services::cart(1);
    let cases: Vec<(&str, String, Response, &[&str])> = vec![
        (
            "GET",
            cart.clone(),
            Response::text(200, "not json"),
            nothing,
        ),
        (
            "GET",
            cart.clone(),
            ok(json!({"user_id": 2, "items": [{"product_id": 100, "quantity": 1}]})),
            nothing,
        ),
        (
            "GET",
            cart.clone(),
            ok(json!({"user_id": 1, "items": [{"product_id": 100, "quantity": 0}]})),
            nothing,
        ),
        (
            "GET",
            cart,
            ok(json!({"user_id": 1, "items": [
                {"product_id": 100, "quantity": 4_294_967_295u32},
                {"product_id": 100, "quantity": 1}]})),
            nothing,
        ),
        (
            "GET",
            services::product(100),
            ok(json!({"id": 100, "price": "free"})),
            held,
        ),
        (
            "GET",
            services::product(100),
            ok(json!({"id": 100, "price": 1.001})),
            held,
        ),
        (
            "POST",
            services::ORDERS.to_owned(),
            Response::json(201, &json!({"id": "x"})),
            authorised,
        ),
        (
            "POST",
            services::ORDERS.to_owned(),
            Response::json(201, &cheap_order),
            ordered,
        ),
        (
            "POST",
            services::payments("Authorize"),
            Response::text(200, "garbage"),
            unknown,
        ),
        (
            "POST",
            services::payments("Authorize"),
            grpc::testing::response(&no_id),
            unknown,
        ),
        (
            "POST",
            services::payments("Capture"),
            grpc::testing::response(&payment(State::Voided, TOTAL)),
            ordered,
        ),
    ];
    for (method, url, answer, undone) in cases {
        let host = shop(&id).respond(method, &url, answer);
        let response = host.handle::<Checkout>(request(Some(KEY)));
        let context = format!("{method} {url}: {}", response.text_body());
        assert_eq!(response.status(), 502, "{context}");
        assert_eq!(compensation(&json_of(&response)), undone, "{context}");
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
