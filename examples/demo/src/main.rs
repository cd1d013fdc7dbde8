//! The Tessera demo: starts the e-commerce demo services (users, orders, products, stores) on
//! loopback ports and the gateway on 127.0.0.1:8080 with the embedded `demo.toml`, then prints
//! what to try.
//!
//! Usage: `tessera-demo <plugin-dir>` (what `cargo xtask demo` runs). `TESSERA_DEMO_LATENCY_MS`
//! adds that much latency to every answer of every service (default 0), which shows the
//! difference between one concurrent fan-out and calls one after another.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use tessera_demo::{Settings, config_text, install_plugins, page, random_token, serve_page};

/// Where the demo's browser page is served: another origin than the gateway's.
const PAGE_ADDR: &str = "127.0.0.1:8090";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let built = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: tessera-demo <built-plugin-dir> (run it with `cargo xtask demo`)")?;
    let cache_dir = built.join("../../plugin-cache");
    let plugin_dir = built.join("../../demo/plugins");
    install_plugins(&built, &plugin_dir)?;
    let plugin_dir = plugin_dir.canonicalize()?;
    let token = match std::env::var(tessera::config::ADMIN_TOKEN_ENV) {
        Ok(t) if !t.is_empty() => t,
        _ => random_token(),
    };
    let latency = match std::env::var("TESSERA_DEMO_LATENCY_MS") {
        Ok(ms) => Duration::from_millis(
            ms.parse()
                .context("TESSERA_DEMO_LATENCY_MS must be a number of milliseconds")?,
        ),
        Err(_) => Duration::ZERO,
    };

    let api_key = match std::env::var("TESSERA_DEMO_API_KEY") {
        Ok(k) if !k.is_empty() => k,
        _ => random_token(),
    };
    anyhow::ensure!(
        api_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
        "TESSERA_DEMO_API_KEY may hold letters, digits and - . _ ~ only"
    );
    let page_listener = tokio::net::TcpListener::bind(PAGE_ADDR)
        .await
        .with_context(|| format!("listening on {PAGE_ADDR} for the demo's browser page"))?;
    let page_origin = format!("http://{PAGE_ADDR}");

    let services = tessera_ecommerce_services::start_all(latency).await?;
    if let Ok(n) = std::env::var("TESSERA_DEMO_PAYMENTS_FAIL_EVERY") {
        let n = n.parse().context(
            "TESSERA_DEMO_PAYMENTS_FAIL_EVERY must be a whole number (every n-th payments call fails; 0: none)",
        )?;
        services.shop.set_payments_fail_every(n);
    }
    let text = config_text(&Settings {
        plugin_dir: &plugin_dir,
        cache_dir: &cache_dir,
        upstreams: &services.upstreams_toml(),
        admin_token: &token,
        api_key: &api_key,
        page_origin: &page_origin,
    });
    let config = tessera::config::Config::parse(&text, "demo.toml".as_ref(), &plugin_dir)?;
    let gateway = tessera::Gateway::new(config).await?.start().await?;
    let addr = gateway.local_addr();
    tokio::spawn(serve_page(
        page_listener,
        page(&format!("http://{addr}"), &api_key),
    ));
    println!();
    println!("Tessera demo on http://{addr} (service latency {latency:?}).");
    println!("The /api/ routes take an API key (set TESSERA_DEMO_API_KEY to choose it):");
    println!("  export KEY={api_key}");
    println!("Try:");
    println!(
        "  curl -s -H \"x-api-key: $KEY\" http://{addr}/api/orders/1001      # order + user + store + products, one call"
    );
    println!(
        "  curl -s -H \"x-api-key: $KEY\" http://{addr}/api/v2/orders/1001   # the same answer from config alone (aggregate)"
    );
    println!(
        "  curl -s -H \"x-api-key: $KEY\" \"http://{addr}/api/users/1/orders?limit=2\"   # a user's orders with their products"
    );
    println!(
        "  curl -si -H \"x-api-key: $KEY\" http://{addr}/api/orders/1001 | grep x-cache   # again within 10 s: a cache hit"
    );
    println!(
        "  curl -s -H \"x-api-key: $KEY\" -d '{{\"user_id\":1,\"store_id\":1,\"card_number\":\"4242424242424242\"}}' http://{addr}/api/checkout   # cart -> paid order (gRPC payment)"
    );
    println!(
        "  curl -s -H \"x-api-key: $KEY\" -d '{{\"user_id\":2,\"store_id\":1,\"card_number\":\"4000000000000002\"}}' http://{addr}/api/checkout   # 402: declined, stock released"
    );
    println!(
        "  curl -s -H \"x-api-key: $KEY\" -d '{{\"user_id\":3,\"store_id\":1,\"card_number\":\"4242424242424242\"}}' http://{addr}/api/checkout   # 409: out of stock"
    );
    println!(
        "  curl -s -H \"x-api-key: $KEY\" -d '{{\"product_id\":100,\"quantity\":2}}' http://{addr}/carts/1/items   # fill a cart again"
    );
    println!("  curl -si http://{addr}/api/orders/1001                        # 401: no key");
    println!(
        "  curl -s -H \"x-api-key: $KEY\" http://{addr}/api/orders/4242      # 404: no such order"
    );
    println!(
        "  curl -s http://{addr}/orders/1001                # the orders service alone, proxied"
    );
    println!(
        "  curl -i http://{addr}/users/1                    # proxied; a filter plugin adds x-served-by"
    );
    println!("  curl -s http://{addr}/hello/ada                  # a handler plugin on its own");
    println!(
        "In a browser, {page_origin}/ calls the gateway from another origin (CORS, answered by the gateway)."
    );
    if let Some(admin) = gateway.admin_addr() {
        println!(
            "Admin API on http://{admin} (plugins hot-load from {}):",
            plugin_dir.display()
        );
        println!("  export TESSERA_ADMIN_TOKEN={token}");
        println!(
            "  curl -s -H \"Authorization: Bearer $TESSERA_ADMIN_TOKEN\" http://{admin}/admin/plugins"
        );
        println!("  cargo run -q -p tessera -- plugin list --admin http://{admin}");
        println!(
            "  curl -s -H \"Authorization: Bearer $TESSERA_ADMIN_TOKEN\" http://{admin}/metrics   # Prometheus metrics"
        );
    }
    println!("Ctrl-C stops it.");
    let stop = gateway.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    gateway.wait().await;
    Ok(())
}
