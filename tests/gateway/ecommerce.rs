//! The e-commerce demo through the real gateway: services, plugins and routes as `cargo xtask
//! demo` runs them.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tessera_ecommerce_services::Services;
use tessera_tests::*;

const ROUTES: &str = "[[routes]]\npath = \"/api/orders/{id}\"\nmethods = [\"GET\"]\n\
    handler = { plugin = \"order-details\", upstreams = [\"orders\", \"users\", \"products\", \"stores\"] }\n\
    [[routes]]\npath = \"/api/users/{id}/orders\"\nmethods = [\"GET\"]\n\
    handler = { plugin = \"order-history\", upstreams = [\"orders\", \"users\", \"products\"] }\n";

async fn demo(services: &Services) -> tessera::RunningGateway {
    gateway(&format!("{}{ROUTES}", services.upstreams_toml())).await
}

#[tokio::test]
async fn order_details_merges_four_services() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let gw = demo(&services).await;
    let reply = get(&gw, "/api/orders/1001").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let expected = json!({
        "order": {
            "id": 1001, "status": "delivered", "created_at": "2026-09-14T10:21:00Z", "store_id": 10, "total": 139.69,
            "items": [
                {"product_id": 100, "quantity": 1, "unit_price": 74.99,
                 "product": {"id": 100, "name": "The Art of Computer Programming, Vol. 1", "category": "books", "price": 74.99}},
                {"product_id": 103, "quantity": 3, "unit_price": 9.9,
                 "product": {"id": 103, "name": "Notebook, dotted, A5", "category": "stationery", "price": 9.9}},
                {"product_id": 104, "quantity": 1, "unit_price": 35.0,
                 "product": {"id": 104, "name": "Fountain Pen", "category": "stationery", "price": 35.0}}
            ]
        },
        "user": {"id": 1, "name": "Ada Lovelace", "loyalty_tier": "gold"},
        "store": {"id": 10, "name": "Tessera Books Soho", "city": "London",
                  "address": "22 Greek Street, London W1D 4DZ", "opening_hours": "Mon-Sat 09:00-20:00"},
        "errors": []
    });
    assert_eq!(reply.json(), expected);

    let reply = get(&gw, "/api/orders/4242").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_eq!(
        reply.json(),
        json!({"error": "not_found", "message": "order 4242 not found", "request_id": id})
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn order_details_with_the_store_service_down() {
    let mut services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    services.stores = dead_address().await;
    let gw = demo(&services).await;
    let reply = get(&gw, "/api/orders/1002").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json = reply.json();
    assert!(json["store"].is_null());
    assert_eq!(json["user"]["name"], "Grace Hopper");
    assert_eq!(
        json["order"]["items"][1]["product"]["name"],
        "Noise-Cancelling Headphones"
    );
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["part"], "store");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("connection failed"),
        "{errors:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn order_history_newest_first_with_missing_product_named() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let gw = demo(&services).await;
    let json = get(&gw, "/api/users/2/orders").await.json();
    assert_eq!(
        json["user"],
        json!({"id": 2, "name": "Grace Hopper", "loyalty_tier": "silver"})
    );
    assert_eq!(order_ids(&json), [1002, 1007]);
    assert!(json["orders"][1]["items"][0]["product"].is_null());
    assert_eq!(
        json["errors"],
        json!([{"part": "product:999", "error": "not found"}])
    );

    let json = get(&gw, "/api/users/1/orders?limit=2").await.json();
    assert_eq!(order_ids(&json), [1003, 1001]);

    assert_eq!(
        get(&gw, "/api/users/99/orders").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&gw, "/api/users/1/orders?limit=500").await.status,
        StatusCode::BAD_REQUEST
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn fan_out_latency_is_that_of_the_slowest_stage() {
    // 100 ms per service answer: order (100) then user + store + 3 products at once (100).
    let services = tessera_ecommerce_services::start_all(Duration::from_millis(100))
        .await
        .unwrap();
    let gw = demo(&services).await;
    get(&gw, "/api/orders/1001").await; // warm the connection pools
    let started = std::time::Instant::now();
    let reply = get(&gw, "/api/orders/1001").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        took < Duration::from_millis(350),
        "two stages of 100 ms took {took:?} (sequential would be 500 ms)"
    );
    gw.shutdown().await;
}

fn order_ids(history: &serde_json::Value) -> Vec<u64> {
    history["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn order_details_behind_the_cache_as_in_the_demo() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    // The demo's `[buckets.cache]` and the cache filter of its `/api/orders/{id}` route.
    let gw = gateway(&format!(
        "{}[buckets.cache]\nbackend = \"memory\"\nttl_ms = 60000\n\
         [[routes]]\npath = \"/api/orders/{{id}}\"\nmethods = [\"GET\"]\n\
         handler = {{ plugin = \"order-details\", upstreams = [\"orders\", \"users\", \"products\", \"stores\"] }}\n\
         [[routes.filters]]\nplugin = \"cache\"\nbuckets = [\"cache\"]\nbuffer_body = true\n\
         config = {{ bucket = \"cache\", default_ttl_secs = 10 }}\n",
        services.upstreams_toml()
    ))
    .await;
    let first = get(&gw, "/api/orders/1001").await;
    assert_eq!(
        (first.status, first.header("x-cache")),
        (StatusCode::OK, Some("miss"))
    );
    let second = get(&gw, "/api/orders/1001").await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.json(), first.json());
    // A 404 is not stored.
    for _ in 0..2 {
        let missing = get(&gw, "/api/orders/4242").await;
        assert_eq!(
            (missing.status, missing.header("x-cache")),
            (StatusCode::NOT_FOUND, Some("miss"))
        );
    }
    gw.shutdown().await;
}
