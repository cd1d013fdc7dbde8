//! The services over real connections: each test starts them on loopback ports and talks to
//! them as the gateway would, over HTTP/1.1 (or HTTP/2) and gRPC.

mod carts;
mod catalog;
mod inventory;
mod orders;
mod outages;
mod payments;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tessera_ecommerce_services::Services;

async fn services() -> Services {
    tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .expect("services start")
}

/// An answer: status, headers and the body as text.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request with `body` (none if empty).
async fn call(addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    send(&client, addr, method, path, body).await
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = client.request(request).await.expect("service answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::GET, path, "").await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    call(addr, Method::POST, path, body).await
}

/// Asserts a 400 whose `error` contains `needle`.
fn assert_bad_request(reply: &Reply, needle: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains(needle), "{error:?} should name {needle:?}");
}
