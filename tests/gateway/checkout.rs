//! The checkout plugin (`POST /api/checkout`) through the real gateway against the e-commerce
//! services: carts, catalogue and inventory, orders over HTTP, payments over gRPC.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_ecommerce_services::{
    CARD_DECLINED, CARD_SLOW_CAPTURE, CARD_UNAVAILABLE, CartItem, PaymentState, ReservationState,
    Service, Services,
};
use tessera_tests::*;

const CARD: &str = "4242424242424242";
const WITH_BUCKET: &str = "idempotency_bucket = \"checkouts\"";

/// The checkout route, with the idempotency bucket `checkouts` granted, and the order-details
/// route its `location` points at. `config` is the checkout's config, e.g.
/// `idempotency_bucket = "checkouts", timeouts_ms = { capture = 300 }`.
async fn shop_gateway(services: &Services, config: &str) -> tessera::RunningGateway {
    gateway(&format!(
        "{}\
         [buckets.checkouts]\nbackend = \"memory\"\nttl_ms = 86400000\n\
         [[routes]]\npath = \"/api/checkout\"\nmethods = [\"POST\"]\n\
         handler = {{ plugin = \"checkout\", upstreams = [\"carts\", \"products\", \"orders\", \"payments\"], \
         buckets = [\"checkouts\"], limits = {{ timeout_ms = 15000, max_calls = 64, max_in_flight = 16 }}, \
         config = {{ {config} }} }}\n\
         [[routes]]\npath = \"/api/orders/{{id}}\"\nmethods = [\"GET\"]\n\
         handler = {{ plugin = \"order-details\", upstreams = [\"orders\", \"users\", \"products\", \"stores\"] }}\n",
        services.upstreams_toml()
    ))
    .await
}

async fn services() -> Services {
    tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .expect("the services start")
}

fn item(product_id: u64, quantity: u32) -> CartItem {
    CartItem {
        product_id,
        quantity,
    }
}

async fn checkout(
    gw: &tessera::RunningGateway,
    user_id: u64,
    card: &str,
    key: Option<&str>,
) -> Reply {
    let body = json!({"user_id": user_id, "store_id": 10, "card_number": card}).to_string();
    let mut request = request(Method::POST, "/api/checkout", body);
    request
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    send(gw, request).await
}

/// The reservations of `product_id` in each state: (held, released, committed).
fn reservation_states(services: &Services, product_id: u64) -> (usize, usize, usize) {
    let all: Vec<ReservationState> = services
        .shop
        .reservations()
        .into_iter()
        .filter(|r| r.product_id == product_id)
        .map(|r| r.state)
        .collect();
    let count = |s| all.iter().filter(|r| **r == s).count();
    (
        count(ReservationState::Held),
        count(ReservationState::Released),
        count(ReservationState::Committed),
    )
}

fn actions(body: &Value) -> Vec<String> {
    body["compensation"]
        .as_array()
        .unwrap_or_else(|| panic!("no compensation in {body}"))
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

#[tokio::test]
async fn a_checkout_places_a_paid_order_commits_the_stock_and_empties_the_cart() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 1), item(103, 2)]);
    let (stock_100, stock_103) = (
        services.shop.available(100).unwrap(),
        services.shop.available(103).unwrap(),
    );
    let gw = shop_gateway(&services, WITH_BUCKET).await;

    let reply = checkout(&gw, 1, CARD, Some("happy-1")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let body = reply.json();
    let order_id = body["order"]["id"].as_u64().unwrap();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/orders/{order_id}").as_str())
    );
    assert_eq!(body["order"]["status"], "processing");
    assert_eq!(body["order"]["total"], 94.79);
    assert_eq!(
        body["order"]["items"][0]["product"]["name"],
        "The Art of Computer Programming, Vol. 1"
    );
    assert_eq!(body["order"]["items"][1]["unit_price"], 9.9);
    let payment = &body["payment"];
    assert_eq!(payment["state"], "captured");
    assert_eq!(payment["amount"], 94.79);
    assert_eq!(payment["amount_cents"], 9479);
    assert_eq!(payment["captured_cents"], 9479);
    assert_eq!(payment["currency"], "EUR");
    assert_eq!(payment["card_last4"], "4242");
    assert_eq!(payment["reference"], body["checkout_id"]);
    assert_eq!(body["warnings"], json!([]));
    assert!(!reply.text().contains(CARD));

    // What the services now hold.
    assert!(services.shop.cart(1).is_empty());
    assert_eq!(services.shop.available(100), Some(stock_100 - 1));
    assert_eq!(services.shop.available(103), Some(stock_103 - 2));
    assert_eq!(services.shop.reserved(100), Some(0));
    assert_eq!(reservation_states(&services, 103), (0, 0, 1));
    let payments = services.shop.payments();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].state, PaymentState::Captured as i32);
    assert_eq!(payments[0].id, payment["id"].as_str().unwrap());
    let orders = services.shop.created_orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].payment_id.as_deref(), payment["id"].as_str());

    // The location answers with the same order.
    let details = get(&gw, reply.header("location").unwrap()).await;
    assert_eq!(details.status, StatusCode::OK, "{}", details.text());
    assert_eq!(details.json()["order"]["total"], 94.79);
    gw.shutdown().await;
}

#[tokio::test]
async fn out_of_stock_leaves_nothing_reserved_and_charges_nothing() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 1), item(103, 2)]);
    services.shop.set_stock(103, 1);
    let stock_100 = services.shop.available(100).unwrap();
    let gw = shop_gateway(&services, WITH_BUCKET).await;

    let reply = checkout(&gw, 1, CARD, None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "out_of_stock");
    assert_eq!(body["request_id"], reply.header("x-request-id").unwrap());
    assert_eq!(
        body["items"],
        json!([{"product_id": 103, "requested": 2, "available": 1}])
    );
    assert_eq!(actions(&body), ["release_reservation done"]);
    assert_eq!(services.shop.available(100), Some(stock_100));
    assert_eq!(services.shop.available(103), Some(1));
    assert_eq!(services.shop.reserved(100), Some(0));
    assert_eq!(reservation_states(&services, 100), (0, 1, 0));
    assert!(services.shop.payments().is_empty());
    assert!(services.shop.created_orders().is_empty());
    assert_eq!(services.shop.cart(1).len(), 2, "the cart is kept");
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_products_are_named() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 1), item(999, 1)]);
    let gw = shop_gateway(&services, WITH_BUCKET).await;
    let reply = checkout(&gw, 1, CARD, None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "unknown_product");
    assert_eq!(body["product_ids"], json!([999]));
    assert_eq!(services.shop.reserved(100), Some(0));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_declined_card_is_402_and_releases_the_reservations() {
    let services = services().await;
    services.shop.set_cart(2, vec![item(100, 1), item(104, 3)]);
    let stock_104 = services.shop.available(104).unwrap();
    let gw = shop_gateway(&services, WITH_BUCKET).await;

    let reply = checkout(&gw, 2, CARD_DECLINED, None).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        reply.text()
    );
    let body = reply.json();
    assert_eq!(body["error"], "payment_declined");
    assert_eq!(body["reason"], "card_declined");
    assert_eq!(body["step"], "authorize");
    assert_eq!(actions(&body), ["release_reservation done"; 2]);
    assert_eq!(services.shop.available(104), Some(stock_104));
    assert_eq!(reservation_states(&services, 104), (0, 1, 0));
    assert_eq!(reservation_states(&services, 100), (0, 1, 0));
    assert!(services.shop.created_orders().is_empty());
    let payments = services.shop.payments();
    assert!(
        payments.iter().all(|p| p.captured_cents == 0),
        "{payments:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn payments_down_is_502_and_releases_the_reservations() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 2)]);
    let stock = services.shop.available(100).unwrap();
    let gw = shop_gateway(&services, WITH_BUCKET).await;

    // The service refuses this card with UNAVAILABLE.
    let reply = checkout(&gw, 1, CARD_UNAVAILABLE, None).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "payment_unavailable");
    assert_eq!(body["step"], "authorize");
    assert_eq!(actions(&body), ["release_reservation done"]);
    assert_eq!(services.shop.available(100), Some(stock));

    // The service is gone.
    services.stop(Service::Payments).await;
    let reply = checkout(&gw, 1, CARD, None).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "payment_unavailable");
    assert_eq!(actions(&body), ["release_reservation done"]);
    assert_eq!(services.shop.available(100), Some(stock));
    assert_eq!(reservation_states(&services, 100), (0, 2, 0));
    assert!(services.shop.created_orders().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_capture_that_times_out_is_voided_and_nothing_is_charged() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 1)]);
    services
        .shop
        .set_slow_capture_delay(Duration::from_millis(1500));
    let stock = services.shop.available(100).unwrap();
    let gw = shop_gateway(
        &services,
        "idempotency_bucket = \"checkouts\", timeouts_ms = { capture = 300 }",
    )
    .await;

    let reply = checkout(&gw, 1, CARD_SLOW_CAPTURE, None).await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    let body = reply.json();
    assert_eq!(body["error"], "payment_timeout");
    assert_eq!(body["step"], "capture");
    assert_eq!(
        actions(&body),
        [
            "cancel_order done",
            "void_payment done",
            "release_reservation done"
        ]
    );
    let order_id = body["compensation"][0]["order_id"].as_u64().unwrap();
    let payment_id = body["compensation"][1]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        services.shop.order(order_id).map(|o| o.status),
        Some(tessera_ecommerce_services::OrderStatus::Cancelled)
    );
    assert_eq!(services.shop.available(100), Some(stock));

    // The capture still waiting in the payment service acts later; the void wins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while services.shop.pending_captures() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow capture never acted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payment = services.shop.payment(&payment_id).unwrap();
    assert_eq!(payment.state, PaymentState::Voided as i32);
    assert_eq!(payment.captured_cents, 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_same_idempotency_key_twice_charges_once() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 1)]);
    let gw = shop_gateway(&services, WITH_BUCKET).await;

    let first = checkout(&gw, 1, CARD, Some("order-once")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let again = checkout(&gw, 1, CARD, Some("order-once")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.json(), first.json());
    assert_eq!(services.shop.payments().len(), 1);
    assert_eq!(services.shop.created_orders().len(), 1);

    let other_card = checkout(&gw, 1, "4000056655665556", Some("order-once")).await;
    assert_eq!(other_card.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other_card.json()["error"], "idempotency_key_reused");

    // Two at once with one key: one runs, the other waits its turn or is replayed.
    services.shop.set_cart(2, vec![item(103, 1)]);
    let (a, b) = tokio::join!(
        checkout(&gw, 2, CARD, Some("twin")),
        checkout(&gw, 2, CARD, Some("twin"))
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert!(
        statuses == [201, 201] || statuses == [201, 409],
        "{statuses:?}: {} / {}",
        a.text(),
        b.text()
    );
    assert_eq!(
        services.shop.payments().len(),
        2,
        "one more payment, not two"
    );
    assert_eq!(services.shop.created_orders().len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_bucket_the_key_still_charges_once() {
    let services = services().await;
    services.shop.set_cart(1, vec![item(100, 1)]);
    let gw = shop_gateway(&services, "").await;
    let first = checkout(&gw, 1, CARD, Some("no-bucket")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let again = checkout(&gw, 1, CARD, Some("no-bucket")).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(again.json()["error"], "cart_empty");
    assert_eq!(services.shop.payments().len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn fifty_checkouts_for_the_last_ten_units_sell_exactly_ten() {
    let services = services().await;
    const PRODUCT: u64 = 104;
    services.shop.set_stock(PRODUCT, 10);
    let users: Vec<u64> = (1000..1050).collect();
    for user in &users {
        services.shop.set_cart(*user, vec![item(PRODUCT, 1)]);
    }
    // Generous timeouts: fifty checkouts at once on a loaded machine are slow, not failing.
    let gw = shop_gateway(
        &services,
        "idempotency_bucket = \"checkouts\", timeouts_ms = { cart = 5000, price = 5000, \
         reserve = 5000, authorize = 5000, create_order = 5000, capture = 5000 }",
    )
    .await;

    let replies = futures::future::join_all(users.iter().map(|user| {
        let key = format!("race-{user}");
        let gw = &gw;
        async move { checkout(gw, *user, CARD, Some(&key)).await }
    }))
    .await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let refused: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status != StatusCode::CREATED)
        .collect();
    assert_eq!(created, 10, "{:?}", refused.first().map(|r| r.text()));
    for reply in &refused {
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        assert_eq!(reply.json()["error"], "out_of_stock");
    }
    assert_eq!(services.shop.available(PRODUCT), Some(0));
    assert_eq!(services.shop.reserved(PRODUCT), Some(0));
    assert_eq!(reservation_states(&services, PRODUCT), (0, 0, 10));
    let captured = services
        .shop
        .payments()
        .into_iter()
        .filter(|p| p.state == PaymentState::Captured as i32)
        .count();
    assert_eq!(captured, 10);
    assert_eq!(services.shop.created_orders().len(), 10);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_config_the_plugin_refuses_stops_the_start_naming_the_key() {
    let services = services().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{}\
         [[routes]]\npath = \"/api/checkout\"\n\
         handler = {{ plugin = \"checkout\", upstreams = [\"carts\", \"products\", \"orders\", \"payments\"], config = {{ currency = \"euro\" }} }}\n",
        plugins_section(),
        services.upstreams_toml()
    );
    match tessera::Gateway::new(config(&text)).await {
        Ok(_) => panic!("the gateway started with a bad checkout config"),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(
                e.contains("currency: \"euro\" is not an ISO 4217 code"),
                "{e}"
            );
        }
    }
}
