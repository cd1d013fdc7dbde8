//! The read endpoints answer exactly as before the write side existed: the fixture records,
//! serialised in their order.

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::*;

fn fixture(text: &str) -> Vec<Value> {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn read_endpoints_answer_the_fixtures_byte_for_byte() {
    let services = services().await;
    let cases = [
        (
            services.users,
            "users",
            include_str!("../../fixtures/users.json"),
        ),
        (
            services.stores,
            "stores",
            include_str!("../../fixtures/stores.json"),
        ),
        (
            services.products,
            "products",
            include_str!("../../fixtures/products.json"),
        ),
        (
            services.orders,
            "orders",
            include_str!("../../fixtures/orders.json"),
        ),
    ];
    for (addr, name, text) in cases {
        for record in fixture(text) {
            let reply = get(addr, &format!("/{name}/{}", record["id"])).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.header("content-type"), Some("application/json"));
            assert_eq!(reply.body, record.to_string());
        }
        let reply = get(addr, &format!("/{name}/4242")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(
            reply.body,
            format!("{{\"error\":\"no such {name} record\"}}")
        );
        let reply = get(addr, &format!("/{name}/abc")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    let orders = fixture(include_str!("../../fixtures/orders.json"));
    let users_orders: Vec<&Value> = orders.iter().filter(|o| o["user_id"] == 1).collect();
    let reply = get(services.orders, "/orders?user_id=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, serde_json::to_string(&users_orders).unwrap());
    assert_eq!(get(services.orders, "/orders?user_id=99").await.body, "[]");
    let reply = get(services.orders, "/orders").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, r#"{"error":"user_id is required"}"#);
}

#[tokio::test]
async fn read_endpoints_take_only_get() {
    let services = services().await;
    for (addr, path) in [
        (services.users, "/users/1"),
        (services.stores, "/stores/10"),
        (services.products, "/products/100"),
        (services.orders, "/orders/1001"),
    ] {
        let reply = call(addr, Method::DELETE, path, "").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(reply.body, r#"{"error":"only GET"}"#);
        assert_eq!(reply.header("allow"), Some("GET"));
    }
}

#[tokio::test]
async fn a_products_stock_is_the_live_available_count() {
    let services = services().await;
    services.shop.set_stock(101, 1);
    let product = get(services.products, "/products/101").await.json();
    assert_eq!(product["stock"], 1);
    // The field stays where the fixture has it.
    let keys: Vec<&String> = product.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["id", "name", "category", "price", "stock", "description"]
    );
}

#[tokio::test]
async fn the_http_services_speak_http2_with_prior_knowledge_too() {
    let services = services().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = client
        .get(
            format!("http://{}/users/1", services.users)
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let user: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(user["name"], "Ada Lovelace");
}
