use http::{Method, StatusCode};
use serde_json::json;
use tessera_ecommerce_services::{Reservation, ReservationState};

use super::*;

fn reserve_body(id: &str, quantity: u32) -> String {
    json!({"reservation_id": id, "quantity": quantity}).to_string()
}

#[tokio::test]
async fn reservations_hold_commit_and_release_stock() {
    let services = services().await;
    let products = services.products;

    let reply = get(products, "/inventory/100").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        r#"{"product_id":100,"available":12,"reserved":0}"#
    );

    let reply = post(
        products,
        "/inventory/100/reservations",
        &reserve_body("c-1", 3),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        reply.body,
        r#"{"reservation_id":"c-1","product_id":100,"quantity":3,"state":"held"}"#
    );
    assert_eq!(
        get(products, "/inventory/100").await.body,
        r#"{"product_id":100,"available":9,"reserved":3}"#
    );
    // The same reservation again: its current state, nothing more taken.
    let reply = post(
        products,
        "/inventory/100/reservations",
        &reserve_body("c-1", 3),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["state"], "held");
    assert_eq!(services.shop.available(100), Some(9));
    assert_eq!(services.shop.reserved(100), Some(3));

    let reply = get(products, "/inventory/100/reservations/c-1").await;
    assert_eq!(reply.json()["state"], "held");

    for _ in 0..2 {
        let reply = post(products, "/inventory/100/reservations/c-1/commit", "").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body,
            r#"{"reservation_id":"c-1","product_id":100,"quantity":3,"state":"committed"}"#
        );
    }
    assert_eq!(
        get(products, "/inventory/100").await.json(),
        json!({"product_id": 100, "available": 9, "reserved": 0})
    );
    assert_eq!(get(products, "/products/100").await.json()["stock"], 9);

    post(
        products,
        "/inventory/100/reservations",
        &reserve_body("c-2", 4),
    )
    .await;
    assert_eq!(services.shop.available(100), Some(5));
    for _ in 0..2 {
        let reply = call(
            products,
            Method::DELETE,
            "/inventory/100/reservations/c-2",
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["state"], "released");
        assert_eq!(services.shop.available(100), Some(9));
    }

    assert_eq!(
        services.shop.reservations(),
        [
            Reservation {
                reservation_id: "c-1".into(),
                product_id: 100,
                quantity: 3,
                state: ReservationState::Committed,
            },
            Reservation {
                reservation_id: "c-2".into(),
                product_id: 100,
                quantity: 4,
                state: ReservationState::Released,
            },
        ]
    );
}

#[tokio::test]
async fn reservations_that_cannot_be_made_are_refused() {
    let services = services().await;
    let products = services.products;

    let reply = post(
        products,
        "/inventory/101/reservations",
        &reserve_body("big", 5),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.body,
        r#"{"error":"out_of_stock","product_id":101,"requested":5,"available":4}"#
    );
    let reply = post(
        products,
        "/inventory/107/reservations",
        &reserve_body("lamp", 1),
    )
    .await;
    assert_eq!(reply.json()["error"], "out_of_stock");
    assert_eq!(reply.json()["available"], 0);

    for path in ["/inventory/999/reservations", "/inventory/abc/reservations"] {
        let reply = post(products, path, &reserve_body("x", 1)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        get(products, "/inventory/999").await.status,
        StatusCode::NOT_FOUND
    );

    post(
        products,
        "/inventory/101/reservations",
        &reserve_body("c", 2),
    )
    .await;
    let reply = post(
        products,
        "/inventory/101/reservations",
        &reserve_body("c", 1),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["error"], "reservation_conflict");
    assert_eq!(reply.json()["reservation"]["quantity"], 2);

    let bad = [
        (
            reserve_body("", 1),
            "reservation_id must be 1 to 128 characters, got 0",
        ),
        (
            reserve_body(&"r".repeat(129), 1),
            "reservation_id must be 1 to 128 characters, got 129",
        ),
        (
            reserve_body("a\u{7}b", 1),
            "reservation_id must not contain control characters",
        ),
        (reserve_body("q", 0), "quantity must be 1 to 1000, got 0"),
        (
            reserve_body("q", 1001),
            "quantity must be 1 to 1000, got 1001",
        ),
        (
            r#"{"reservation_id":7,"quantity":1}"#.into(),
            "reservation_id: invalid type",
        ),
        (
            r#"{"reservation_id":"q"}"#.into(),
            "missing field `quantity`",
        ),
        ("nope".into(), "not valid JSON"),
    ];
    for (body, needle) in &bad {
        let reply = post(products, "/inventory/101/reservations", body).await;
        assert_bad_request(&reply, needle);
    }
    // 128 characters (not bytes) is the limit.
    let reply = post(
        products,
        "/inventory/103/reservations",
        &reserve_body(&"é".repeat(128), 1),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);

    assert_eq!(services.shop.available(101), Some(2));
    assert_eq!(services.shop.reserved(101), Some(2));
}

#[tokio::test]
async fn reservations_in_the_wrong_state_stay_as_they_are() {
    let services = services().await;
    let products = services.products;
    post(
        products,
        "/inventory/102/reservations",
        &reserve_body("sold", 1),
    )
    .await;
    post(products, "/inventory/102/reservations/sold/commit", "").await;
    let reply = call(
        products,
        Method::DELETE,
        "/inventory/102/reservations/sold",
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body, r#"{"error":"committed"}"#);

    post(
        products,
        "/inventory/102/reservations",
        &reserve_body("back", 2),
    )
    .await;
    call(
        products,
        Method::DELETE,
        "/inventory/102/reservations/back",
        "",
    )
    .await;
    let reply = post(products, "/inventory/102/reservations/back/commit", "").await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body, r#"{"error":"released"}"#);

    assert_eq!(services.shop.available(102), Some(29));
    assert_eq!(services.shop.reserved(102), Some(0));

    for (method, path) in [
        (Method::DELETE, "/inventory/102/reservations/never"),
        (Method::POST, "/inventory/102/reservations/never/commit"),
        (Method::GET, "/inventory/102/reservations/never"),
        // Reservation ids are per product.
        (Method::DELETE, "/inventory/103/reservations/sold"),
        (Method::DELETE, "/inventory/999/reservations/sold"),
    ] {
        let reply = call(products, method, path, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
    let reply = call(
        products,
        Method::PUT,
        "/inventory/102/reservations/back",
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, DELETE"));
    let reply = get(products, "/inventory/102/reservations").await;
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test]
async fn reservation_ids_in_paths_are_percent_decoded() {
    let services = services().await;
    let products = services.products;
    let id = "checkout/42 ü";
    let reply = post(
        products,
        "/inventory/104/reservations",
        &reserve_body(id, 1),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let path = "/inventory/104/reservations/checkout%2F42%20%C3%BC";
    let reply = call(products, Method::DELETE, path, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["reservation_id"], id);
    let reply = call(
        products,
        Method::DELETE,
        "/inventory/104/reservations/%FF",
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_of_the_last_units_never_oversell() {
    let services = services().await;
    services.shop.set_stock(100, 10);
    let products = services.products;
    let attempts: Vec<_> = (0..64)
        .map(|i| {
            tokio::spawn(async move {
                post(
                    products,
                    "/inventory/100/reservations",
                    &reserve_body(&format!("r{i}"), 1),
                )
                .await
            })
        })
        .collect();
    let mut held = 0;
    let mut refused = 0;
    for attempt in attempts {
        let reply = attempt.await.unwrap();
        match reply.status {
            StatusCode::CREATED => held += 1,
            StatusCode::CONFLICT => {
                assert_eq!(reply.json()["error"], "out_of_stock");
                assert_eq!(reply.json()["available"], 0);
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!((held, refused), (10, 54));
    assert_eq!(services.shop.available(100), Some(0));
    assert_eq!(services.shop.reserved(100), Some(10));
    let reservations = services.shop.reservations();
    assert_eq!(reservations.len(), 10);
    assert!(
        reservations
            .iter()
            .all(|r| r.state == ReservationState::Held)
    );

    // Releases and new reservations racing: every unit is in exactly one place at the end.
    let mut racing = Vec::new();
    for r in &reservations {
        let path = format!("/inventory/100/reservations/{}", r.reservation_id);
        racing.push(tokio::spawn(async move {
            call(products, Method::DELETE, &path, "").await.status
        }));
    }
    for i in 0..40 {
        racing.push(tokio::spawn(async move {
            post(
                products,
                "/inventory/100/reservations",
                &reserve_body(&format!("s{i}"), 1),
            )
            .await
            .status
        }));
    }
    for task in racing {
        let status = task.await.unwrap();
        assert!(
            [StatusCode::OK, StatusCode::CREATED, StatusCode::CONFLICT].contains(&status),
            "{status}"
        );
    }
    let held_now = services
        .shop
        .reservations()
        .iter()
        .filter(|r| r.state == ReservationState::Held)
        .count() as u64;
    let available = services.shop.available(100).unwrap();
    let reserved = services.shop.reserved(100).unwrap();
    assert_eq!(reserved, held_now);
    assert_eq!(available + reserved, 10);
}
