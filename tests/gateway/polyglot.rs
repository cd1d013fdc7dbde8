//! The JavaScript and Python plugins (`examples/js`, `examples/python`), built from source with
//! their pinned toolchains, in the real gateway: the order-details handler answers what the Rust
//! plugin answers, fetches concurrently, and a trap in it is an ordinary 500; the require-header
//! filter guards a proxied route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use serde_json::{Value, json};
use tessera::RunningGateway;
use tessera_tests::*;

/// The languages, by their directory under `examples/` (and under `target/polyglot/`).
const LANGUAGES: [&str; 2] = ["js", "python"];

/// The plugin that throws (JavaScript) or raises (Python) when `fault_injection` is on.
fn fault_query(language: &str) -> &'static str {
    if language == "js" {
        "fault=throw"
    } else {
        "fault=raise"
    }
}

/// The harness's `[plugins]` section plus `<language>-order-details` and
/// `<language>-require-header` for each language.
fn plugins_with_polyglot() -> String {
    let mut section = plugins_section();
    for language in LANGUAGES {
        for name in ["order-details", "require-header"] {
            section.push_str(&format!(
                "{language}-{name} = {:?}\n",
                polyglot_plugin(language, name).display().to_string()
            ));
        }
    }
    section
}

/// A gateway with the polyglot plugins loaded; `routes` is TOML for upstreams and routes.
async fn polyglot_gateway(routes: &str) -> RunningGateway {
    polyglot_gateway_with(plugins_with_polyglot(), routes).await
}

/// Like [`polyglot_gateway`], with a `[plugins]` section of the caller's.
async fn polyglot_gateway_with(plugins: String, routes: &str) -> RunningGateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n{plugins}\n{routes}"
    );
    tessera::Gateway::new(config(&text))
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts")
}

/// `/<prefix>/orders/{id}` served by `plugin`, granted the four e-commerce services.
fn order_route(prefix: &str, plugin: &str, config: &str) -> String {
    format!(
        "[[routes]]\npath = \"/{prefix}/orders/{{id}}\"\nmethods = [\"GET\"]\n\
         handler = {{ plugin = \"{plugin}\", upstreams = [\"orders\", \"users\", \"products\", \"stores\"], config = {{ {config} }} }}\n"
    )
}

/// The Rust plugin at `/rust/...`, each language's at `/<language>/...`.
fn order_routes() -> String {
    let mut routes = order_route("rust", "order-details", "");
    for language in LANGUAGES {
        routes.push_str(&order_route(
            language,
            &format!("{language}-order-details"),
            "",
        ));
    }
    routes
}

/// JSON with every number as a float: JavaScript has one number type, so it writes the price
/// `35.0` as `35`, which is the same JSON number.
fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("a finite number")),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A reply's status and JSON body, numbers as floats and the request id (which differs per
/// request) checked against the reply's `x-request-id` and then blanked.
fn comparable(reply: &Reply) -> (StatusCode, Value) {
    let mut body = numbers_as_floats(reply.json());
    if let Some(id) = body.get_mut("request_id") {
        assert_eq!(
            id.as_str(),
            reply.header("x-request-id"),
            "the error names the request"
        );
        *id = json!("…");
    }
    (reply.status, body)
}

/// Asserts that each language's handler answers `path` as the Rust plugin does.
async fn assert_same_answers(gw: &RunningGateway, path: &str) -> Value {
    let rust = get(gw, &format!("/rust{path}")).await;
    let expected = comparable(&rust);
    for language in LANGUAGES {
        let reply = get(gw, &format!("/{language}{path}")).await;
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{language} {path}"
        );
        assert_eq!(
            comparable(&reply),
            expected,
            "{language} {path}: {}",
            reply.text()
        );
    }
    rust.json()
}

#[tokio::test]
async fn order_details_answer_what_the_rust_plugin_answers() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let gw = polyglot_gateway(&format!("{}{}", services.upstreams_toml(), order_routes())).await;
    for id in 1001..=1007 {
        let rust = assert_same_answers(&gw, &format!("/orders/{id}")).await;
        assert_eq!(rust["order"]["id"], id, "{rust}");
    }
    // No such order; not a number.
    let rust = assert_same_answers(&gw, "/orders/4242").await;
    assert_eq!(rust["error"], "not_found");
    let rust = assert_same_answers(&gw, "/orders/12ab").await;
    assert_eq!(rust["error"], "bad_request");
    gw.shutdown().await;
}

#[tokio::test]
async fn order_details_with_a_service_down_report_it_as_the_rust_plugin_does() {
    let mut services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    services.stores = dead_address().await;
    let gw = polyglot_gateway(&format!("{}{}", services.upstreams_toml(), order_routes())).await;
    let rust = assert_same_answers(&gw, "/orders/1002").await;
    assert!(rust["store"].is_null(), "{rust}");
    assert_eq!(rust["errors"][0]["part"], "store", "{rust}");
    assert!(rust["user"]["name"].is_string(), "{rust}");

    // The orders service itself down: 502 in the gateway's error shape.
    services.orders = dead_address().await;
    let gw2 = polyglot_gateway(&format!("{}{}", services.upstreams_toml(), order_routes())).await;
    let rust = assert_same_answers(&gw2, "/orders/1002").await;
    assert_eq!(rust["error"], "upstream_unavailable", "{rust}");
    gw.shutdown().await;
    gw2.shutdown().await;
}

/// An order service answering one order of one product, and user, store and product services
/// that each take `delay` to answer.
async fn slow_secondary_services(delay: Duration) -> String {
    let orders = upstream(|_| async {
        let order = json!({"id": 7, "user_id": 1, "store_id": 2, "status": "shipped",
            "created_at": "2026-01-02T03:04:05Z",
            "items": [{"product_id": 11, "quantity": 2, "unit_price": 1.25}]});
        Response::new(full(order.to_string()))
    })
    .await;
    let slow = move || {
        upstream(move |req| async move {
            tokio::time::sleep(delay).await;
            let id: u64 = req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Response::new(full(
                json!({"id": id, "name": format!("#{id}")}).to_string(),
            ))
        })
    };
    let (users, stores, products): (SocketAddr, SocketAddr, SocketAddr) =
        tokio::join!(slow(), slow(), slow());
    format!(
        "[upstreams.orders]\ntargets = [\"{orders}\"]\n[upstreams.users]\ntargets = [\"{users}\"]\n\
         [upstreams.stores]\ntargets = [\"{stores}\"]\n[upstreams.products]\ntargets = [\"{products}\"]\n"
    )
}

#[tokio::test]
async fn order_details_fetch_user_store_and_products_concurrently() {
    // User, store and product: three 200 ms calls, 600 ms one after another.
    let upstreams = slow_secondary_services(Duration::from_millis(200)).await;
    let gw = polyglot_gateway(&format!("{upstreams}{}", order_routes())).await;
    for language in LANGUAGES {
        let path = format!("/{language}/orders/7");
        // The first request also pays for connecting; time the second.
        get(&gw, &path).await;
        let started = Instant::now();
        let reply = get(&gw, &path).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
        let json = reply.json();
        assert_eq!(json["order"]["total"], 2.5, "{json}");
        assert_eq!(json["order"]["items"][0]["product"]["name"], "#11");
        assert_eq!(json["store"]["name"], "#2");
        assert!(
            took < Duration::from_millis(450),
            "{language}: three 200 ms calls took {took:?} together"
        );
        eprintln!("{language}: order plus three 200 ms calls answered in {took:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trap_in_a_handler_is_a_500_and_the_gateway_keeps_serving() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let mut routes = String::new();
    for language in LANGUAGES {
        routes.push_str(&order_route(
            language,
            &format!("{language}-order-details"),
            "fault_injection = true",
        ));
    }
    let gw = polyglot_gateway(&format!("{}{routes}", services.upstreams_toml())).await;
    for language in LANGUAGES {
        let reply = get(
            &gw,
            &format!("/{language}/orders/1001?{}", fault_query(language)),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{language}: {}",
            reply.text()
        );
        let json = reply.json();
        assert_eq!(json["error"], "plugin_failed", "{language}: {json}");
        assert_eq!(
            json["message"], "a plugin failed while serving this request",
            "nothing of the exception reaches the client"
        );
        assert_eq!(json["request_id"].as_str(), reply.header("x-request-id"));

        let reply = get(&gw, &format!("/{language}/orders/1001")).await;
        assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
        assert_eq!(reply.json()["user"]["name"], "Ada Lovelace");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_handler_refuses_a_config_it_cannot_use() {
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let mut routes = String::new();
    for language in LANGUAGES {
        routes.push_str(&order_route(
            language,
            &format!("{language}-order-details"),
            "fault_injektion = true",
        ));
    }
    let gw = polyglot_gateway(&format!("{}{routes}", services.upstreams_toml())).await;
    for language in LANGUAGES {
        let reply = get(&gw, &format!("/{language}/orders/1001")).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            reply.json()["message"],
            "unknown config key `fault_injektion`",
            "{language}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn filters_guard_a_proxied_route_and_tag_its_responses() {
    let backend = upstream(|req| async move {
        let tenant = req
            .headers()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Response::builder()
            .header("x-checked-x-tenant", "from the upstream")
            .body(full(format!("backend saw {tenant}")))
            .unwrap()
    })
    .await;
    let mut routes = format!("[upstreams.backend]\ntargets = [\"{backend}\"]\n");
    for language in LANGUAGES {
        routes.push_str(&format!(
            "[[routes]]\npath = \"/{language}/{{*rest}}\"\nupstream = \"backend\"\n\
             filters = [{{ plugin = \"{language}-require-header\", config = {{ header = \"X-Tenant\", allowed = [\"acme\", \"globex\"] }} }}]\n\
             [[routes]]\npath = \"/{language}-any/{{*rest}}\"\nupstream = \"backend\"\n\
             filters = [{{ plugin = \"{language}-require-header\", config = {{ header = \"x-tenant\", echo = \"x-tenant-seen\" }} }}]\n\
             [[routes]]\npath = \"/{language}-broken/{{*rest}}\"\nupstream = \"backend\"\n\
             filters = [{{ plugin = \"{language}-require-header\", config = {{ header = \"x tenant\" }} }}]\n"
        ));
    }
    let gw = Arc::new(polyglot_gateway(&routes).await);
    let with_tenant = |path: String, tenant: &str| {
        http::Request::get(path)
            .header("x-tenant", tenant)
            .body(Default::default())
            .unwrap()
    };
    for language in LANGUAGES {
        // Allowed: the upstream answers, and the response names the tenant (replacing the
        // upstream's own header of that name).
        let reply = send(&gw, with_tenant(format!("/{language}/items"), "acme")).await;
        assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
        assert_eq!(reply.text(), "backend saw acme");
        let tags: Vec<_> = reply.headers.get_all("x-checked-x-tenant").iter().collect();
        assert_eq!(tags, ["acme"], "{language}");

        // Missing: 400 before the upstream; not allowed: 403.
        let reply = get(&gw, &format!("/{language}/items")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{language}");
        let json = reply.json();
        assert_eq!(json["error"], "bad_request");
        assert_eq!(json["message"], "missing header x-tenant");
        assert_eq!(json["request_id"].as_str(), reply.header("x-request-id"));
        let reply = send(&gw, with_tenant(format!("/{language}/items"), "initech")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{language}");
        assert_eq!(reply.json()["error"], "forbidden");
        assert!(reply.header("x-checked-x-tenant").is_none());

        // Any value, echoed under the configured name.
        let reply = send(&gw, with_tenant(format!("/{language}-any/x"), "initech")).await;
        assert_eq!(reply.status, StatusCode::OK, "{language}");
        assert_eq!(reply.header("x-tenant-seen"), Some("initech"));

        // A config the filter cannot use: 500, naming the key.
        let reply = send(&gw, with_tenant(format!("/{language}-broken/x"), "acme")).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{language}"
        );
        assert_eq!(
            reply.json()["message"],
            "invalid config: `header` must be a header name"
        );
    }
    Arc::try_unwrap(gw).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn a_full_pool_of_python_and_js_instances_serves() {
    // The harness's pool of 64 instances, every one of them taken at once by the heavier
    // components (a Python instance is 14 core instances): the pool reserves enough for each.
    // Slow services keep the instances alive together; the time limit is raised because the
    // point is capacity, not speed, on a machine that may be busy.
    let services = tessera_ecommerce_services::start_all(Duration::from_millis(300))
        .await
        .unwrap();
    let plugins = plugins_with_polyglot();
    assert!(plugins.contains("timeout_ms = 2000"), "{plugins}");
    let plugins = plugins.replace("timeout_ms = 2000", "timeout_ms = 60000");
    let gw = Arc::new(
        polyglot_gateway_with(
            plugins,
            &format!("{}{}", services.upstreams_toml(), order_routes()),
        )
        .await,
    );
    for language in LANGUAGES {
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let gw = Arc::clone(&gw);
                let path = format!("/{language}/orders/{}", 1001 + n % 7);
                tokio::spawn(async move { get(&gw, &path).await })
            })
            .collect();
        for task in tasks {
            let reply = task.await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
        }
    }
}

/// The order-details handler in Rust, JavaScript and Python side by side: compile time (no
/// cache), load time from the compile cache, and per-request cost through the gateway (a fresh
/// instance per request) against the in-process e-commerce services. Not a test: run it with
/// `cargo xtask bench-polyglot [seconds]` (release build, `TESSERA_BENCH_SECS` per language and
/// load, default 5), on a quiet machine.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run with `cargo xtask bench-polyglot`"]
async fn benchmark() {
    let seconds: u64 = std::env::var("TESSERA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let scratch = Scratch::new("bench-polyglot");
    println!(
        "| language | component | compile | load (cached) | sequential: mean | p50 | p99 | req/s | 16 at once: req/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (language, component) in [
        ("Rust", plugin("tessera-example-order-details")),
        ("JavaScript", polyglot_plugin("js", "order-details")),
        ("Python", polyglot_plugin("python", "order-details")),
    ] {
        let size = std::fs::metadata(&component).unwrap().len();
        let cache = scratch.path(&format!("cache-{language}"));
        let text = |cache: Option<&std::path::Path>| {
            let cache = cache.map_or(String::new(), |c| {
                format!("cache_dir = {:?}\n", c.display().to_string())
            });
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[plugins]\nmax_instances = 64\n{cache}\
                 [plugins.files]\norder-details = {:?}\n{}{}",
                component.display().to_string(),
                services.upstreams_toml(),
                order_route("bench", "order-details", ""),
            )
        };
        // Compiling: no cache. Loading: the cache the first load wrote.
        let started = Instant::now();
        drop(tessera::Gateway::new(config(&text(None))).await.unwrap());
        let compile = started.elapsed();
        drop(
            tessera::Gateway::new(config(&text(Some(&cache))))
                .await
                .unwrap(),
        );
        let started = Instant::now();
        let gateway = tessera::Gateway::new(config(&text(Some(&cache))))
            .await
            .unwrap();
        let load = started.elapsed();
        let gw = Arc::new(gateway.start().await.unwrap());

        for id in 1001..=1006 {
            let reply = get(&gw, &format!("/bench/orders/{id}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
        }
        let mut latencies = Vec::new();
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        while Instant::now() < until {
            let path = format!("/bench/orders/{}", 1001 + latencies.len() % 6);
            let sent = Instant::now();
            let reply = get(&gw, &path).await;
            latencies.push(sent.elapsed());
            assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
        }
        let sequential_rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];

        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let workers: Vec<_> = (0..16)
            .map(|w| {
                let (gw, done) = (Arc::clone(&gw), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut n = w;
                    while Instant::now() < until {
                        let reply = get(&gw, &format!("/bench/orders/{}", 1001 + n % 6)).await;
                        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        n += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let concurrent_rate = done.load(std::sync::atomic::Ordering::Relaxed) as f64
            / started.elapsed().as_secs_f64();
        println!(
            "| {language} | {:.1} MB | {compile:.2?} | {load:.2?} | {mean:.2?} | {:.2?} | {:.2?} | {sequential_rate:.0} | {concurrent_rate:.0} |",
            size as f64 / 1e6,
            at(0.5),
            at(0.99),
        );
        Arc::try_unwrap(gw).ok().unwrap().shutdown().await;
    }
}
