//! `GET /api/orders/{id}` under load, through the gateway (the `order-details` plugin), through
//! the gateway configured instead of coded (`/api/v2/orders/{id}`, the `aggregate` plugin with
//! the demo's config), and through a hand-written native Rust aggregator making the same calls
//! to the same services.
//!
//! Usage: `tessera-ecommerce-bench <plugin-dir> [seconds] [connections] [latency-ms]` (what
//! `cargo xtask bench` runs, with release plugins). `latency-ms` delays every service answer, so
//! many requests are in flight at once (the capacity case). Prints a Markdown table, and the
//! resident memory of the whole bench process idle and at its peak under gateway load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tessera_ecommerce_services::Services;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Orders the load cycles through.
const ORDER_IDS: [u64; 6] = [1001, 1002, 1003, 1004, 1005, 1006];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let plugins = PathBuf::from(
        args.next()
            .context("usage: tessera-ecommerce-bench <plugin-dir> [seconds] [connections]")?,
    );
    let plugins = plugins
        .canonicalize()
        .with_context(|| format!("plugin directory {}", plugins.display()))?;
    let seconds: u64 = args
        .next()
        .map_or(Ok(10), |s| s.parse())
        .context("seconds")?;
    let connections: usize = args
        .next()
        .map_or(Ok(32), |s| s.parse())
        .context("connections")?;
    let latency = Duration::from_millis(
        args.next()
            .map_or(Ok(0), |s| s.parse())
            .context("latency-ms")?,
    );

    let services = tessera_ecommerce_services::start_all(latency).await?;
    let plugin = plugins.join("tessera_example_order_details.wasm");
    let aggregate = plugins.join("tessera_plugin_aggregate.wasm");
    let config = format!(
        // No access log: the native aggregator writes none either.
        "[server]\nlisten = \"127.0.0.1:0\"\n[access_log]\nformat = \"off\"\n[plugins.files]\norder-details = {:?}\naggregate = {:?}\n{}\
         [[routes]]\npath = \"/api/orders/{{id}}\"\nhandler = {{ plugin = \"order-details\", upstreams = [\"orders\", \"users\", \"products\", \"stores\"] }}\n{}",
        plugin.display().to_string(),
        aggregate.display().to_string(),
        // The native aggregator's client keeps every idle connection; give the gateway's
        // upstream pools the same room so neither side pays for reconnecting.
        services
            .upstreams_toml()
            .replace("\"]\n", "\"]\nmax_idle_per_target = 1024\n"),
        tessera_demo::ORDERS_V2,
    );
    let config = tessera::config::Config::parse(&config, "bench.toml".as_ref(), &plugins)?;
    let gateway = tessera::Gateway::new(config).await?.start().await?;
    let native = start_native(services).await?;

    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(HttpConnector::new());
    // Both must answer the same document before we compare their speed.
    let a = fetch(&client, gateway.local_addr(), CODED, 1001).await?;
    let b = fetch(&client, native, CODED, 1001).await?;
    let c = fetch(&client, gateway.local_addr(), CONFIGURED, 1001).await?;
    anyhow::ensure!(a == b, "gateway and native answers differ:\n{a}\n{b}");
    anyhow::ensure!(a == c, "coded and configured answers differ:\n{a}\n{c}");

    let duration = Duration::from_secs(seconds);
    let idle_rss = rss_mib();
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(idle_rss));
    let sampler = {
        let peak = Arc::clone(&peak_rss);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                peak.fetch_max(rss_mib(), std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let gw = load(&client, gateway.local_addr(), CODED, connections, duration).await;
    sampler.abort();
    let configured = load(
        &client,
        gateway.local_addr(),
        CONFIGURED,
        connections,
        duration,
    )
    .await;
    let nat = load(&client, native, CODED, connections, duration).await;
    println!("| target | requests/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|");
    for (name, r) in [
        ("gateway + order-details plugin (coded)", &gw),
        ("gateway + aggregate plugin (configured)", &configured),
        ("native Rust aggregator", &nat),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            r.throughput,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.errors
        );
    }
    println!();
    println!(
        "throughput ratio gateway/native: {:.2}x ({connections} connections, {seconds} s each, services answer after {latency:?})",
        gw.throughput / nat.throughput
    );
    println!(
        "throughput ratio configured/coded: {:.2}x",
        configured.throughput / gw.throughput
    );
    println!(
        "bench process RSS: {idle_rss} MiB idle, {} MiB at peak under gateway load",
        peak_rss.load(std::sync::atomic::Ordering::Relaxed)
    );
    gateway.shutdown().await;
    Ok(())
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// The coded route (and the native aggregator's), and the configured one.
const CODED: &str = "/api/orders";
const CONFIGURED: &str = "/api/v2/orders";

async fn fetch(
    client: &HttpClient,
    addr: SocketAddr,
    route: &str,
    id: u64,
) -> anyhow::Result<Value> {
    let uri: http::Uri = format!("http://{addr}{route}/{id}").parse()?;
    let response = client
        .request(Request::get(uri).body(Full::default())?)
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "status {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

struct LoadResult {
    throughput: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

async fn load(
    client: &HttpClient,
    addr: SocketAddr,
    route: &'static str,
    connections: usize,
    duration: Duration,
) -> LoadResult {
    // Warm up the pools and caches first.
    for id in ORDER_IDS {
        let _ = fetch(client, addr, route, id).await;
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers = (0..connections).map(|w| {
        let client = client.clone();
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = w;
            while Instant::now() < deadline {
                let id = ORDER_IDS[i % ORDER_IDS.len()];
                i += 1;
                let t = Instant::now();
                match fetch(&client, addr, route, id).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for (l, e) in results {
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    LoadResult {
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        errors,
    }
}

/// The same orchestration written directly against a pooled hyper client.
async fn start_native(services: Services) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let state = Arc::new((services, client));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        Ok::<_, Infallible>(
                            order_details(&state.0, &state.1, req.uri().path()).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn get_json(client: &HttpClient, addr: SocketAddr, path: &str) -> Result<Value, String> {
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let request = Request::get(uri)
        .body(Full::default())
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("connection failed: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    match status {
        StatusCode::OK => serde_json::from_slice(&body).map_err(|e| e.to_string()),
        StatusCode::NOT_FOUND => Err("not found".into()),
        s => Err(format!("service answered {}", s.as_u16())),
    }
}

async fn order_details(
    services: &Services,
    client: &HttpClient,
    path: &str,
) -> Response<Full<Bytes>> {
    let id = path.strip_prefix("/api/orders/").unwrap_or_default();
    let order = match get_json(client, services.orders, &format!("/orders/{id}")).await {
        Ok(o) => o,
        Err(e) if e == "not found" => {
            return respond(404, &json!({ "error": format!("order {id} not found") }));
        }
        Err(e) => return respond(502, &json!({ "error": format!("orders service: {e}") })),
    };
    let mut product_ids: Vec<u64> = Vec::new();
    for item in order["items"].as_array().into_iter().flatten() {
        if let Some(p) = item["product_id"].as_u64()
            && !product_ids.contains(&p)
        {
            product_ids.push(p);
        }
    }
    let user_path = format!("/users/{}", order["user_id"]);
    let store_path = format!("/stores/{}", order["store_id"]);
    let product_paths: Vec<String> = product_ids
        .iter()
        .map(|p| format!("/products/{p}"))
        .collect();
    let (user, store, products) = tokio::join!(
        get_json(client, services.users, &user_path),
        get_json(client, services.stores, &store_path),
        futures::future::join_all(product_paths.iter().map(|p| get_json(
            client,
            services.products,
            p
        ))),
    );
    let mut errors = Vec::new();
    let mut part = |name: String, r: Result<Value, String>, f: fn(&Value) -> Value| match r {
        Ok(v) => f(&v),
        Err(e) => {
            errors.push(json!({ "part": name, "error": e }));
            Value::Null
        }
    };
    let user = part(
        "user".into(),
        user,
        |u| json!({"id": u["id"], "name": u["name"], "loyalty_tier": u["loyalty_tier"]}),
    );
    let store = part(
        "store".into(),
        store,
        |s| json!({"id": s["id"], "name": s["name"], "city": s["city"], "address": s["address"], "opening_hours": s["opening_hours"]}),
    );
    let mut by_id = std::collections::HashMap::new();
    for (p, r) in product_ids.iter().zip(products) {
        let v = part(
            format!("product:{p}"),
            r,
            |p| json!({"id": p["id"], "name": p["name"], "category": p["category"], "price": p["price"]}),
        );
        by_id.insert(*p, v);
    }
    let mut cents = 0.0;
    let items: Vec<Value> = order["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let price = i["unit_price"].as_f64().unwrap_or(0.0);
            cents += (price * 100.0).round() * i["quantity"].as_f64().unwrap_or(0.0);
            json!({
                "product_id": i["product_id"], "quantity": i["quantity"], "unit_price": i["unit_price"],
                "product": i["product_id"].as_u64().and_then(|p| by_id.get(&p)).cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    respond(
        200,
        &json!({
            "order": {"id": order["id"], "status": order["status"], "created_at": order["created_at"],
                      "store_id": order["store_id"], "total": cents / 100.0, "items": items},
            "user": user, "store": store, "errors": errors,
        }),
    )
}

fn respond(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
