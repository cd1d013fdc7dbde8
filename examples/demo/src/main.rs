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

const CONFIG: &str = include_str!("demo.toml");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let plugin_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: tessera-demo <plugin-dir> (run it with `cargo xtask demo`)")?;
    let cache_dir = plugin_dir.join("../../plugin-cache");
    let latency = match std::env::var("TESSERA_DEMO_LATENCY_MS") {
        Ok(ms) => Duration::from_millis(
            ms.parse()
                .context("TESSERA_DEMO_LATENCY_MS must be a number of milliseconds")?,
        ),
        Err(_) => Duration::ZERO,
    };

    let services = tessera_ecommerce_services::start_all(latency).await?;
    let text = CONFIG
        .replace("@PLUGIN_DIR@", &plugin_dir.display().to_string())
        .replace("@CACHE_DIR@", &cache_dir.display().to_string())
        .replace("@UPSTREAMS@", &services.upstreams_toml());
    let config = tessera::config::Config::parse(&text, "demo.toml".as_ref(), &plugin_dir)?;
    let gateway = tessera::Gateway::new(config).await?.start().await?;
    let addr = gateway.local_addr();
    println!();
    println!("Tessera demo on http://{addr} (service latency {latency:?}). Try:");
    println!(
        "  curl -s http://{addr}/api/orders/1001            # order + user + store + products, one call"
    );
    println!(
        "  curl -s http://{addr}/api/users/1/orders?limit=2 # a user's orders with their products"
    );
    println!("  curl -s http://{addr}/api/orders/4242            # 404: no such order");
    println!(
        "  curl -s http://{addr}/orders/1001                # the orders service alone, proxied"
    );
    println!(
        "  curl -i http://{addr}/users/1                    # proxied; a filter plugin adds x-served-by"
    );
    println!("  curl -s http://{addr}/hello/ada                  # a handler plugin on its own");
    println!("Ctrl-C stops it.");
    let stop = gateway.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    gateway.wait().await;
    Ok(())
}
