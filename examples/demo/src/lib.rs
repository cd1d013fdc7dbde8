//! The demo's gateway config and plugins, shared by the `tessera-demo` binary and the tests
//! that check the demo as users run it.

use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// The config, with placeholders the demo fills in ([`config_text`]).
pub const CONFIG: &str = include_str!("demo.toml");

/// The `/api/v2/orders/{id}` route: the order details from config alone (the `aggregate`
/// plugin), without filters.
pub const ORDERS_V2: &str = include_str!("orders_v2.toml");

/// Plugin crates the demo serves, and the names routes know them by.
pub const PLUGINS: [(&str, &str); 9] = [
    ("hello", "tessera_example_hello"),
    ("headers", "tessera_plugin_headers"),
    ("cache", "tessera_plugin_cache"),
    ("api-key", "tessera_plugin_api_key"),
    ("cors", "tessera_plugin_cors"),
    ("aggregate", "tessera_plugin_aggregate"),
    ("order-details", "tessera_example_order_details"),
    ("order-history", "tessera_example_order_history"),
    ("checkout", "tessera_example_checkout"),
];

/// What the demo fills into [`CONFIG`].
#[derive(Debug)]
pub struct Settings<'a> {
    /// The watched plugin directory.
    pub plugin_dir: &'a Path,
    /// The compile cache.
    pub cache_dir: &'a Path,
    /// `[upstreams.*]` of the demo services.
    pub upstreams: &'a str,
    /// The admin API's token.
    pub admin_token: &'a str,
    /// The API key clients of `/api/*` send in `x-api-key`.
    pub api_key: &'a str,
    /// The origin of the demo's browser page (`http://127.0.0.1:8090`), allowed by CORS.
    pub page_origin: &'a str,
}

/// The config text for `settings`. Only the key's SHA-256 goes into the config.
pub fn config_text(settings: &Settings<'_>) -> String {
    let hash: String = Sha256::digest(settings.api_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    CONFIG
        .replace("@PLUGIN_DIR@", &settings.plugin_dir.display().to_string())
        .replace("@CACHE_DIR@", &settings.cache_dir.display().to_string())
        .replace("@UPSTREAMS@", settings.upstreams)
        .replace("@ADMIN_TOKEN@", settings.admin_token)
        .replace("@ORDERS_V2@", ORDERS_V2)
        .replace("@API_KEY_SHA256@", &hash)
        .replace("@PAGE_ORIGIN@", settings.page_origin)
}

/// Copies the built plugins (`<crate>.wasm` in `built`) into the watched directory `dir`, each
/// written elsewhere and renamed into place.
pub fn install_plugins(built: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, file) in PLUGINS {
        let from = built.join(format!("{file}.wasm"));
        let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        tessera::plugin::write_atomically(&dir.join(format!("{name}.wasm")), &bytes)?;
    }
    Ok(())
}

/// A random token of 32 hex digits, for the admin token and the API key when none is given.
pub fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|_| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The demo's browser client: one page that calls `gateway/api/v2/orders/1001` with the API key
/// from another origin, so the browser asks the gateway first (CORS).
pub fn page(gateway: &str, api_key: &str) -> String {
    include_str!("page.html")
        .replace("@GATEWAY@", gateway)
        .replace("@API_KEY@", api_key)
}

/// Serves `html` to every request on `listener`, until the task is dropped.
pub async fn serve_page(listener: tokio::net::TcpListener, html: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let response = std::sync::Arc::new(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{html}",
        html.len()
    ));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let response = std::sync::Arc::clone(&response);
        tokio::spawn(async move {
            // The request itself does not matter; read what came (bounded) and answer.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                .await;
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
