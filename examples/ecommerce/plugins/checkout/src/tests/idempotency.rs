//! Idempotency keys: replays, concurrent and repeated requests, the bucket failing.

use super::*;

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
