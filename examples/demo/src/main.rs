//! The Tessera demo: starts a demo users service on a loopback port and the gateway on
//! 127.0.0.1:8080 with the embedded `demo.toml`, then prints what to try.
//!
//! Usage: `tessera-demo <plugin-dir>` (what `cargo xtask demo` runs).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

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

    let users = serve_users().await?;
    let text = CONFIG
        .replace("@PLUGIN_DIR@", &plugin_dir.display().to_string())
        .replace("@CACHE_DIR@", &cache_dir.display().to_string())
        .replace("@USERS@", &users.to_string());
    let config = tessera::config::Config::parse(&text, "demo.toml".as_ref(), &plugin_dir)?;
    let gateway = tessera::Gateway::new(config).await?.start().await?;
    let addr = gateway.local_addr();
    println!();
    println!("Tessera demo on http://{addr} (users service on {users}). Try:");
    println!("  curl -i http://{addr}/hello/ada          # handler plugin (WebAssembly)");
    println!("  curl -i -X POST http://{addr}/hello -d '{{\"name\":\"grace\"}}'");
    println!(
        "  curl -i http://{addr}/users/1            # proxied to the users service, header added by a filter"
    );
    println!("  curl -i http://{addr}/users/999          # the service's own 404, proxied");
    println!("  curl -i http://{addr}/nowhere            # gateway 404");
    println!("Ctrl-C stops it.");
    let stop = gateway.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    gateway.wait().await;
    Ok(())
}

/// The demo users service: `GET /users/{id}` from a few fixtures.
async fn serve_users() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(user(req.uri().path()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn user(path: &str) -> Response<Full<Bytes>> {
    let users = [
        (1, "Ada Lovelace", "ada@example.com", "London"),
        (2, "Grace Hopper", "grace@example.com", "New York"),
        (3, "Alan Turing", "alan@example.com", "Manchester"),
    ];
    let found = path
        .strip_prefix("/users/")
        .and_then(|id| id.parse::<u32>().ok())
        .and_then(|id| users.iter().find(|u| u.0 == id));
    let (status, body) = match found {
        Some((id, name, email, city)) => (
            StatusCode::OK,
            serde_json::json!({ "id": id, "name": name, "email": email, "city": city }),
        ),
        None => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no such user" }),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
