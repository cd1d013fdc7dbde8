use http::{Method, StatusCode};
use serde_json::json;
use tessera_ecommerce_services::CartItem;

use super::*;

#[tokio::test]
async fn carts_are_read_replaced_added_to_and_emptied() {
    let services = services().await;
    let carts = services.carts;

    let reply = get(carts, "/carts/1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body,
        r#"{"user_id":1,"items":[{"product_id":100,"quantity":1}]}"#
    );
    for user in 2..=3 {
        let cart = get(carts, &format!("/carts/{user}")).await.json();
        assert!(!cart["items"].as_array().unwrap().is_empty(), "user {user}");
    }
    let reply = get(carts, "/carts/77").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, r#"{"user_id":77,"items":[]}"#);

    let body = r#"{"items":[{"product_id":102,"quantity":2},{"product_id":999,"quantity":1}]}"#;
    let reply = call(carts, Method::PUT, "/carts/77", body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, format!(r#"{{"user_id":77,{}"#, &body[1..]));
    assert_eq!(get(carts, "/carts/77").await.body, reply.body);

    let reply = post(
        carts,
        "/carts/77/items",
        r#"{"product_id":102,"quantity":3}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"user_id": 77, "items": [
            {"product_id": 102, "quantity": 5}, {"product_id": 999, "quantity": 1}
        ]})
    );
    let reply = post(
        carts,
        "/carts/77/items",
        r#"{"product_id":105,"quantity":1}"#,
    )
    .await;
    assert_eq!(
        reply.json()["items"][2],
        json!({"product_id": 105, "quantity": 1})
    );
    assert_eq!(
        services.shop.cart(77),
        [
            CartItem {
                product_id: 102,
                quantity: 5
            },
            CartItem {
                product_id: 999,
                quantity: 1
            },
            CartItem {
                product_id: 105,
                quantity: 1
            },
        ]
    );

    let reply = call(carts, Method::DELETE, "/carts/77", "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.body, "");
    assert_eq!(
        get(carts, "/carts/77").await.body,
        r#"{"user_id":77,"items":[]}"#
    );
    // Emptying an empty cart, or one nobody ever had, is the same 204.
    for path in ["/carts/77", "/carts/78"] {
        let reply = call(carts, Method::DELETE, path, "").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{path}");
    }

    // An empty item list empties the cart too.
    let reply = call(carts, Method::PUT, "/carts/1", r#"{"items":[]}"#).await;
    assert_eq!(reply.body, r#"{"user_id":1,"items":[]}"#);
    assert!(services.shop.cart(1).is_empty());
}

#[tokio::test]
async fn the_shop_sets_carts_the_service_answers() {
    let services = services().await;
    services.shop.set_cart(
        5,
        vec![CartItem {
            product_id: 107,
            quantity: 2,
        }],
    );
    assert_eq!(
        get(services.carts, "/carts/5").await.body,
        r#"{"user_id":5,"items":[{"product_id":107,"quantity":2}]}"#
    );
}

#[tokio::test]
async fn cart_bodies_are_checked() {
    let services = services().await;
    let carts = services.carts;
    let put = |body: &'static str| call(carts, Method::PUT, "/carts/2", body);
    let cases = [
        (
            put(r#"{"items":[{"product_id":1,"quantity":0}]}"#).await,
            "items[0].quantity must be 1 to 1000, got 0",
        ),
        (
            put(r#"{"items":[{"product_id":1,"quantity":1001}]}"#).await,
            "items[0].quantity must be 1 to 1000",
        ),
        (
            put(r#"{"items":[{"product_id":1,"quantity":-1}]}"#).await,
            "items[0].quantity",
        ),
        (
            put(r#"{"items":[{"product_id":"a","quantity":1}]}"#).await,
            "items[0].product_id",
        ),
        (
            put(r#"{"items":[{"product_id":1}]}"#).await,
            "missing field `quantity`",
        ),
        (
            put(r#"{"items":[{"product_id":1,"quantity":1,"price":3}]}"#).await,
            "unknown field `price`",
        ),
        (
            put(r#"{"items":[{"product_id":1,"quantity":1},{"product_id":1,"quantity":2}]}"#).await,
            "items[1].product_id 1 is already in items[0]",
        ),
        (put(r#"{"lines":[]}"#).await, "unknown field `lines`"),
        (put(r#"{"items":"#).await, "not valid JSON"),
        (put("").await, "a JSON body is required"),
        (
            post(carts, "/carts/2/items", r#"{"product_id":1,"quantity":0}"#).await,
            "quantity must be 1 to 1000, got 0",
        ),
        (
            post(
                carts,
                "/carts/2/items",
                r#"{"product_id":103,"quantity":998}"#,
            )
            .await,
            "quantity of product 103 would be 1001",
        ),
        (
            post(carts, "/carts/2/items", r#"{"quantity":1}"#).await,
            "missing field `product_id`",
        ),
    ];
    for (reply, needle) in &cases {
        assert_bad_request(reply, needle);
    }
    let lines: Vec<String> = (0..101)
        .map(|p| format!(r#"{{"product_id":{p},"quantity":1}}"#))
        .collect();
    let body = format!(r#"{{"items":[{}]}}"#, lines.join(","));
    let reply = call(carts, Method::PUT, "/carts/2", &body).await;
    assert_bad_request(&reply, "items: at most 100 lines, got 101");

    let huge = format!(r#"{{"items":[],"pad":"{}"}}"#, "x".repeat(70_000));
    let reply = call(carts, Method::PUT, "/carts/2", &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.json(),
        json!({"error": "body larger than 65536 bytes"})
    );

    // Nothing refused changed the cart.
    assert_eq!(
        services.shop.cart(2),
        [
            CartItem {
                product_id: 102,
                quantity: 1
            },
            CartItem {
                product_id: 103,
                quantity: 3
            },
        ]
    );
}

#[tokio::test]
async fn cart_routes_refuse_other_methods_and_paths() {
    let services = services().await;
    let carts = services.carts;
    let reply = call(carts, Method::POST, "/carts/1", "{}").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, PUT, DELETE"));
    let reply = get(carts, "/carts/1/items").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    for path in [
        "/carts/abc",
        "/carts/-1",
        "/carts",
        "/carts/1/other",
        "/users/1",
    ] {
        let reply = get(carts, path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.json()["error"].is_string());
    }
}
