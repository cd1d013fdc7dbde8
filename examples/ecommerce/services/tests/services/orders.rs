use http::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_ecommerce_services::OrderStatus;

use super::*;

fn new_order(checkout_id: &str) -> Value {
    json!({
        "checkout_id": checkout_id,
        "user_id": 5,
        "store_id": 12,
        "payment_id": "pay_000001",
        "items": [
            {"product_id": 100, "quantity": 1, "unit_price": 74.99},
            {"product_id": 103, "quantity": 2, "unit_price": 9.9}
        ]
    })
}

/// Whether `text` is `YYYY-MM-DDTHH:MM:SSZ`.
fn is_rfc3339_utc(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test]
async fn a_placed_order_reads_like_the_fixture_ones() {
    let services = services().await;
    let orders = services.orders;

    let reply = post(orders, "/orders", &new_order("checkout-1").to_string()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let order = reply.json();
    let keys: Vec<&String> = order.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "user_id",
            "store_id",
            "status",
            "created_at",
            "items",
            "checkout_id",
            "payment_id"
        ]
    );
    assert_eq!(order["id"], 2001);
    assert_eq!(order["status"], "processing");
    assert!(
        is_rfc3339_utc(order["created_at"].as_str().unwrap()),
        "{order}"
    );
    assert_eq!(order["items"], new_order("")["items"]);
    assert_eq!(order["checkout_id"], "checkout-1");
    assert_eq!(order["payment_id"], "pay_000001");

    let reply = get(orders, "/orders/2001").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), order);
    let mine = get(orders, "/orders?user_id=5").await.json();
    assert_eq!(mine, json!([order]));

    let second = post(orders, "/orders", &new_order("checkout-2").to_string()).await;
    assert_eq!(second.json()["id"], 2002);
    let created = services.shop.created_orders();
    assert_eq!(created.len(), 2);
    assert_eq!(created[0].checkout_id.as_deref(), Some("checkout-1"));
    assert_eq!(created[1].id, 2002);
    assert_eq!(created[1].status, OrderStatus::Processing);
}

#[tokio::test]
async fn placing_is_idempotent_per_checkout_id() {
    let services = services().await;
    let orders = services.orders;
    let first = post(orders, "/orders", &new_order("c").to_string()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = post(orders, "/orders", &new_order("c").to_string()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);

    let mut different = new_order("c");
    different["items"][0]["quantity"] = json!(2);
    let reply = post(orders, "/orders", &different.to_string()).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["error"], "checkout_id_conflict");
    assert_eq!(reply.json()["order_id"], 2001);
    assert_eq!(services.shop.created_orders().len(), 1);
}

#[tokio::test]
async fn order_bodies_are_checked() {
    let services = services().await;
    let orders = services.orders;
    let with = |field: &str, value: Value| {
        let mut order = new_order("c");
        order[field] = value;
        order.to_string()
    };
    let mut missing = new_order("c");
    missing.as_object_mut().unwrap().remove("payment_id");
    let mut bad_price = new_order("c");
    bad_price["items"][1]["unit_price"] = json!(-0.5);
    let mut bad_quantity = new_order("c");
    bad_quantity["items"][1]["quantity"] = json!(0);
    let cases = [
        (
            with("checkout_id", json!("")),
            "checkout_id must be 1 to 128 characters",
        ),
        (
            with("payment_id", json!("p".repeat(129))),
            "payment_id must be 1 to 128 characters",
        ),
        (with("user_id", json!("5")), "user_id: invalid type"),
        (with("items", json!([])), "items: 1 to 100 lines, got 0"),
        (with("total", json!(1)), "unknown field `total`"),
        (missing.to_string(), "missing field `payment_id`"),
        (
            bad_price.to_string(),
            "items[1].unit_price must not be negative",
        ),
        (
            bad_quantity.to_string(),
            "items[1].quantity must be 1 to 1000, got 0",
        ),
        ("{".into(), "not valid JSON"),
        (String::new(), "a JSON body is required"),
    ];
    for (body, needle) in &cases {
        assert_bad_request(&post(orders, "/orders", body).await, needle);
    }
    assert!(services.shop.created_orders().is_empty());
    let reply = call(orders, Method::PUT, "/orders", "{}").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
}

#[tokio::test]
async fn processing_orders_cancel_and_others_do_not() {
    let services = services().await;
    let orders = services.orders;
    post(orders, "/orders", &new_order("c").to_string()).await;
    for _ in 0..2 {
        let reply = post(orders, "/orders/2001/cancel", "").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "cancelled");
        assert_eq!(reply.json()["checkout_id"], "c");
    }
    assert_eq!(
        get(orders, "/orders/2001").await.json()["status"],
        "cancelled"
    );
    assert_eq!(
        services.shop.order(2001).unwrap().status,
        OrderStatus::Cancelled
    );

    // A fixture order still processing cancels too; delivered and shipped ones do not.
    assert_eq!(
        post(orders, "/orders/1003/cancel", "").await.status,
        StatusCode::OK
    );
    let reply = post(orders, "/orders/1002/cancel", "").await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["error"], "not_cancellable");
    assert_eq!(reply.json()["status"], "shipped");
    assert_eq!(
        get(orders, "/orders/1002").await.json()["status"],
        "shipped"
    );

    for path in ["/orders/4242/cancel", "/orders/abc/cancel"] {
        assert_eq!(
            post(orders, path, "").await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let reply = get(orders, "/orders/2001/cancel").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
}
