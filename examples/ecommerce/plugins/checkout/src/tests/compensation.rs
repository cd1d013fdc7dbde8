//! A failure at each step, and what is undone, in which order.

use super::*;

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
