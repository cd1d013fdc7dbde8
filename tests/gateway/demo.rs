//! The demo as `cargo xtask demo` runs it: its config file (`examples/demo/src/demo.toml`), its
//! plugins copied into a watched directory, the demo services. The configured orchestration
//! (`/api/v2/orders/{id}`, the `aggregate` plugin) answers exactly what the coded one does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use tessera_ecommerce_services::Services;
use tessera_tests::*;

const KEY: &str = "demo-test-key-0123456789";
const PAGE_ORIGIN: &str = "http://127.0.0.1:8090";

struct Demo {
    gateway: tessera::RunningGateway,
    dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn demo(services: &Services) -> Demo {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tessera-demo-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let plugins = dir.join("plugins");
    tessera_demo::install_plugins(plugin_dir(), &plugins).unwrap();
    let text = tessera_demo::config_text(&tessera_demo::Settings {
        plugin_dir: &plugins,
        cache_dir: &workspace_root().join("target").join("plugin-cache"),
        upstreams: &services.upstreams_toml(),
        admin_token: "demo-admin-token-0123456789",
        api_key: KEY,
        page_origin: PAGE_ORIGIN,
    })
    .replace("127.0.0.1:8080", "127.0.0.1:0")
    .replace("127.0.0.1:8081", "127.0.0.1:0")
    .replace("format = \"text\"", "format = \"off\"");
    let gateway = tessera::Gateway::new(config(&text))
        .await
        .expect("the demo config builds")
        .start()
        .await
        .expect("the demo starts");
    Demo { gateway, dir }
}

async fn with_key(gw: &tessera::RunningGateway, path: &str) -> Reply {
    let addr = gw.local_addr();
    fetch(
        http::Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{path}"))
            .header("x-api-key", KEY)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_configured_orchestration_answers_what_the_coded_one_does() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let demo = demo(&services).await;
    let gw = &demo.gateway;
    for id in 1001..=1007 {
        let coded = with_key(gw, &format!("/api/orders/{id}")).await;
        let configured = with_key(gw, &format!("/api/v2/orders/{id}")).await;
        assert_eq!(coded.status, StatusCode::OK, "{}", coded.text());
        assert_eq!(configured.status, StatusCode::OK, "{}", configured.text());
        assert_eq!(configured.header("content-type"), Some("application/json"));
        assert_eq!(configured.json(), coded.json(), "order {id}");
    }
    // The same statuses for what is not there or not valid.
    for (path, status) in [
        ("4242", StatusCode::NOT_FOUND),
        ("12x", StatusCode::BAD_REQUEST),
    ] {
        let coded = with_key(gw, &format!("/api/orders/{path}")).await;
        let configured = with_key(gw, &format!("/api/v2/orders/{path}")).await;
        assert_eq!((coded.status, configured.status), (status, status));
    }
    // The key is required, on both.
    for path in ["/api/orders/1001", "/api/v2/orders/1001"] {
        let reply = get(gw, path).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn with_a_service_down_both_answer_the_same_partial_result() {
    let mut services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    services.stores = dead_address().await;
    let demo = demo(&services).await;
    let gw = &demo.gateway;
    let coded = with_key(gw, "/api/orders/1002").await;
    let configured = with_key(gw, "/api/v2/orders/1002").await;
    assert_eq!(
        (coded.status, configured.status),
        (StatusCode::OK, StatusCode::OK)
    );
    let body = configured.json();
    assert!(body["store"].is_null());
    assert_eq!(body["errors"][0]["part"], "store");
    assert_eq!(body, coded.json());
}

#[tokio::test]
async fn the_configured_orchestration_runs_independent_backends_at_once() {
    // 100 ms per service answer: the order, then user + store + products at once = 2 stages.
    let services = tessera_ecommerce_services::start_all(Duration::from_millis(100))
        .await
        .unwrap();
    let demo = demo(&services).await;
    let started = std::time::Instant::now();
    let reply = with_key(&demo.gateway, "/api/v2/orders/1001").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    // Sequential calls would take 5 × 100 ms; two stages take 200 ms plus overhead.
    assert!(took < Duration::from_millis(450), "{took:?}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[tokio::test]
async fn the_demo_page_may_call_the_configured_route_from_its_origin() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let demo = demo(&services).await;
    let addr = demo.gateway.local_addr();
    let preflight = |origin: &str| {
        http::Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{addr}/api/v2/orders/1001"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    // The preflight carries no key: the cors filter answers it before api-key asks for one.
    let allowed = fetch(preflight(PAGE_ORIGIN)).await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT, "{}", allowed.text());
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(PAGE_ORIGIN)
    );
    let other = fetch(preflight("http://127.0.0.1:9999")).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.header("access-control-allow-origin"), None);

    let answer = fetch(
        http::Request::builder()
            .uri(format!("http://{addr}/api/v2/orders/1001"))
            .header("origin", PAGE_ORIGIN)
            .header("x-api-key", KEY)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(PAGE_ORIGIN)
    );
    assert_eq!(answer.json()["order"]["total"], 139.69);

    // The page the demo serves calls this gateway with this key.
    let page = tessera_demo::page(&format!("http://{addr}"), KEY);
    assert!(page.contains(&format!("fetch(\"http://{addr}/api/v2/orders/1001\"")));
    assert!(page.contains(&format!("\"x-api-key\": \"{KEY}\"")));
}

async fn post_with_key(
    gw: &tessera::RunningGateway,
    path: &str,
    body: &str,
    idempotency_key: Option<&str>,
) -> Reply {
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{path}", gw.local_addr()))
        .header("x-api-key", KEY)
        .header("content-type", "application/json");
    if let Some(k) = idempotency_key {
        request = request.header("idempotency-key", k);
    }
    fetch(
        request
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
}

/// The checkouts the README shows, through the demo's own routes: a paid order, a declined card
/// that leaves the stock as it was, the out-of-stock cart, a retried key that charges once, and a
/// cart filled again through the proxied carts service.
#[tokio::test]
async fn the_demo_checks_out_carts_over_grpc_as_the_readme_shows() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let shop = services.shop.clone();
    let demo = demo(&services).await;
    let gw = &demo.gateway;
    let card = |user: u64, card: &str| {
        format!(r#"{{"user_id":{user},"store_id":1,"card_number":"{card}"}}"#)
    };

    let stock_before = shop.available(102).unwrap();
    let declined = post_with_key(gw, "/api/checkout", &card(2, "4000000000000002"), None).await;
    assert_eq!(
        declined.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        declined.text()
    );
    assert_eq!(declined.json()["error"], "payment_declined");
    assert_eq!(
        shop.available(102),
        Some(stock_before),
        "reservations released"
    );

    let out = post_with_key(gw, "/api/checkout", &card(3, "4242424242424242"), None).await;
    assert_eq!(out.status, StatusCode::CONFLICT, "{}", out.text());
    assert_eq!(out.json()["error"], "out_of_stock");

    let paid = post_with_key(
        gw,
        "/api/checkout",
        &card(1, "4242424242424242"),
        Some("demo-1"),
    )
    .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    let again = post_with_key(
        gw,
        "/api/checkout",
        &card(1, "4242424242424242"),
        Some("demo-1"),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    let order_id = paid.json()["order"]["id"].clone();
    assert!(order_id.is_u64(), "{}", paid.text());
    assert_eq!(
        again.json()["order"]["id"],
        order_id,
        "the first answer, replayed"
    );
    assert_eq!(paid.json()["payment"]["state"], "captured");
    let captured = shop
        .payments()
        .iter()
        .filter(|p| p.captured_cents > 0)
        .count();
    assert_eq!(captured, 1, "one charge for the retried key");
    assert!(shop.cart(1).is_empty(), "the cart was emptied");

    let filled = post_with_key(
        gw,
        "/carts/1/items",
        r#"{"product_id":100,"quantity":2}"#,
        None,
    )
    .await;
    assert_eq!(filled.status, StatusCode::OK, "{}", filled.text());
    assert_eq!(shop.cart(1).len(), 1);
    let no_key = fetch(
        http::Request::post(format!("http://{}/api/checkout", gw.local_addr()))
            .body(http_body_util::Full::new(bytes::Bytes::from(card(
                1,
                "4242424242424242",
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
}
