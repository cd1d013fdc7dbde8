//! The e-commerce demo's upstream services, each a small HTTP/1.1 server on a loopback port
//! answering from JSON fixtures (`fixtures/*.json`):
//!
//! | service | endpoints |
//! |---|---|
//! | users | `GET /users/{id}` |
//! | orders | `GET /orders/{id}`, `GET /orders?user_id={id}` |
//! | products | `GET /products/{id}` |
//! | stores | `GET /stores/{id}` |
//!
//! Unknown ids are 404 `{"error": "..."}`. Each service can add an artificial latency to every
//! answer, to make the difference between sequential and concurrent calls visible.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `/users/{id}`.
    Users,
    /// `/orders/{id}` and `/orders?user_id=`.
    Orders,
    /// `/products/{id}`.
    Products,
    /// `/stores/{id}`.
    Stores,
}

impl Service {
    /// All four, in a fixed order.
    pub const ALL: [Service; 4] = [
        Service::Users,
        Service::Orders,
        Service::Products,
        Service::Stores,
    ];

    /// The name used for the upstream in the gateway config and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Orders => "orders",
            Service::Products => "products",
            Service::Stores => "stores",
        }
    }

    fn fixtures(self) -> &'static str {
        match self {
            Service::Users => include_str!("../fixtures/users.json"),
            Service::Orders => include_str!("../fixtures/orders.json"),
            Service::Products => include_str!("../fixtures/products.json"),
            Service::Stores => include_str!("../fixtures/stores.json"),
        }
    }
}

/// Addresses of the four running services.
#[derive(Debug, Clone, Copy)]
pub struct Services {
    /// users.
    pub users: SocketAddr,
    /// orders.
    pub orders: SocketAddr,
    /// products.
    pub products: SocketAddr,
    /// stores.
    pub stores: SocketAddr,
}

impl Services {
    /// The address of one service.
    pub fn addr(&self, service: Service) -> SocketAddr {
        match service {
            Service::Users => self.users,
            Service::Orders => self.orders,
            Service::Products => self.products,
            Service::Stores => self.stores,
        }
    }

    /// `[upstreams.*]` TOML for the four services.
    pub fn upstreams_toml(&self) -> String {
        Service::ALL
            .iter()
            .map(|s| {
                format!(
                    "[upstreams.{}]\ntargets = [\"{}\"]\n",
                    s.name(),
                    self.addr(*s)
                )
            })
            .collect()
    }
}

/// Starts all four services on 127.0.0.1 with `latency` added to every answer.
pub async fn start_all(latency: Duration) -> std::io::Result<Services> {
    Ok(Services {
        users: start(Service::Users, latency).await?,
        orders: start(Service::Orders, latency).await?,
        products: start(Service::Products, latency).await?,
        stores: start(Service::Stores, latency).await?,
    })
}

/// Starts one service on an ephemeral 127.0.0.1 port; it runs until the runtime stops.
pub async fn start(service: Service, latency: Duration) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let data: Arc<Vec<Value>> = Arc::new(match serde_json::from_str::<Value>(service.fixtures()) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                let service_fn = service_fn(move |req: Request<Incoming>| {
                    let data = Arc::clone(&data);
                    async move {
                        if !latency.is_zero() {
                            tokio::time::sleep(latency).await;
                        }
                        Ok::<_, Infallible>(answer(service, &data, &req))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(service: Service, data: &[Value], req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({ "error": "only GET" }),
        );
    }
    let path = req.uri().path();
    let collection = format!("/{}", service.name());
    if service == Service::Orders && path == collection {
        let user_id = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("user_id=")))
            .and_then(|v| v.parse::<u64>().ok());
        let Some(user_id) = user_id else {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "user_id is required" }),
            );
        };
        let orders: Vec<&Value> = data.iter().filter(|o| o["user_id"] == user_id).collect();
        return json(StatusCode::OK, &serde_json::json!(orders));
    }
    let id = path
        .strip_prefix(&collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| id.parse::<u64>().ok());
    match id.and_then(|id| data.iter().find(|item| item["id"] == id)) {
        Some(item) => json(StatusCode::OK, item),
        None => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("no such {} record", service.name()) }),
        ),
    }
}

fn json(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
