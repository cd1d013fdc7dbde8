//! The `transform` filter on a proxied route: what the upstream receives, what the client gets.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tessera_tests::*;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A text body that looks like JSON, sent as `text/plain`.
const TEXT: &str = "{\"password_hash\": \"not JSON by its label\"}\n";

/// Bytes that are not UTF-8.
const BINARY: &[u8] = b"\x00\xff{\"data\":1}\x80\r\n";

/// Orders in the user record: enough for the transformed answer to pass the gateway's
/// `min_bytes` for compression (1024).
const ORDERS: u64 = 100;

/// A user record with a list long enough to be worth compressing.
fn user_document() -> serde_json::Value {
    let orders: Vec<serde_json::Value> = (0..ORDERS)
        .map(|i| serde_json::json!({ "id": i, "total": i * 10, "card_number": "4111111111111111" }))
        .collect();
    serde_json::json!({
        "data": {
            "id": 7,
            "name": "Ada",
            "password_hash": "$argon2id$...",
            "address": { "city": "Lyon", "zip": "69001" },
            "orders": orders,
        },
        "debug": { "sql": "select * from users" },
    })
}

/// An upstream that records every request and answers by path.
async fn recording_upstream() -> (std::net::SocketAddr, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let addr = upstream(move |req| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_owned();
            seen.lock().unwrap().push(Received {
                path: path.clone(),
                headers: parts.headers,
                body: body.clone(),
            });
            let json = |status: u16, body: Vec<u8>| {
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap()
            };
            match path.as_str() {
                "/users/7" => {
                    let mut r = json(200, user_document().to_string().into_bytes());
                    r.headers_mut().insert("etag", "\"u7-v3\"".parse().unwrap());
                    r.headers_mut()
                        .insert("x-internal", "db-2".parse().unwrap());
                    r
                }
                // The request body as the upstream got it, answered as JSON.
                "/echo" => json(201, body.to_vec()),
                "/missing" => json(404, br#"{"error":"no such user"}"#.to_vec()),
                "/broken" => json(200, b"<html>proxy error page</html>".to_vec()),
                // An upstream that compresses whatever the request asked for.
                "/gzip" => {
                    let mut r = json(200, gzip(br#"{"data":{"id":1,"password_hash":"x"}}"#));
                    r.headers_mut()
                        .insert("content-encoding", "gzip".parse().unwrap());
                    r
                }
                "/text" => Response::builder()
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(full(TEXT))
                    .unwrap(),
                "/binary" => Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(full(BINARY))
                    .unwrap(),
                _ => Response::builder().status(500).body(full("?")).unwrap(),
            }
        }
    })
    .await;
    (addr, log)
}

/// The route under test: `config` is the TOML of the filter entry's config sub-tables.
fn route(upstream: std::net::SocketAddr, buffer_body: bool, config: &str) -> String {
    format!(
        "[upstreams.users]\ntargets = [\"{upstream}\"]\n\
         [[routes]]\npath = \"/{{*rest}}\"\nupstream = \"users\"\n\
         [[routes.filters]]\nplugin = \"transform\"\nbuffer_body = {buffer_body}\n{config}"
    )
}

const CONFIG: &str = r#"
[routes.filters.config.request]
deny = ["is_admin", "items[*].price"]
rename = { "qty" = "quantity" }
set = { "source" = "web", "meta.channel" = "gateway" }
headers = { set = { "x-transformed" = "request" }, remove = ["x-debug"] }

[routes.filters.config.response]
unwrap = "data"
allow = ["id", "name", "address", "orders[*].id", "orders[*].total"]
rename = { "name" = "full_name" }
move = { "address.city" = "city" }
set = { "api_version" = 2 }
headers = { set = { "cache-control" = "no-store" }, remove = ["x-internal"] }
status = { 404 = 200 }
"#;

fn last(log: &Log) -> Received {
    log.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the upstream was called")
}

#[tokio::test]
async fn transform_reshapes_the_upstreams_request_and_the_clients_response() {
    let (up, log) = recording_upstream().await;
    let gw = gateway(&route(up, true, CONFIG)).await;

    // The request: fields denied, renamed, set, before the upstream sees it.
    let request = Request::post("/echo")
        .header("content-type", "application/json")
        .header("x-debug", "1")
        .body(Full::new(Bytes::from_static(
            br#"{"customer":"c-1","is_admin":true,"qty":2,"items":[{"sku":"A","price":0.01},{"sku":"B","price":0.02}]}"#,
        )))
        .unwrap();
    let reply = send(&gw, request).await;
    let received = last(&log);
    let expected = br#"{"customer":"c-1","quantity":2,"items":[{"sku":"A"},{"sku":"B"}],"meta":{"channel":"gateway"},"source":"web"}"#;
    assert_eq!(
        received.body,
        expected.as_slice(),
        "{}",
        String::from_utf8_lossy(&received.body)
    );
    assert_eq!(
        received.headers["content-length"],
        expected.len().to_string().as_str(),
        "the gateway frames the new body"
    );
    assert_eq!(received.headers["x-transformed"], "request");
    assert!(!received.headers.contains_key("x-debug"));
    // The echo (the request as received, answered 201) is a 2xx body too: nothing in it is on
    // the response's allow list, and `set` adds its constant.
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json(), serde_json::json!({ "api_version": 2 }));

    // The response: unwrapped, cut down to the allow list, reshaped.
    let reply = get(&gw, "/users/7").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    let orders: Vec<serde_json::Value> = (0..ORDERS)
        .map(|i| serde_json::json!({ "id": i, "total": i * 10 }))
        .collect();
    assert_eq!(
        body,
        serde_json::json!({
            "id": 7,
            "full_name": "Ada",
            "address": { "zip": "69001" },
            "orders": orders,
            "city": "Lyon",
            "api_version": 2,
        })
    );
    assert!(!reply.text().contains("password_hash") && !reply.text().contains("4111"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert_eq!(reply.header("etag"), Some("W/\"u7-v3\""));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(reply.header("x-internal").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn transform_passes_bodies_not_labelled_json_byte_for_byte() {
    let (up, log) = recording_upstream().await;
    let gw = gateway(&route(up, true, CONFIG)).await;

    let reply = get(&gw, "/text").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, TEXT.as_bytes());
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "headers still change"
    );

    let reply = get(&gw, "/binary").await;
    assert_eq!(reply.body, BINARY);

    // A request body in another format reaches the upstream as it was sent.
    let csv = b"is_admin,qty\ntrue,2\n\xff";
    let request = Request::post("/echo")
        .header("content-type", "text/csv")
        .body(Full::new(Bytes::from_static(csv)))
        .unwrap();
    send(&gw, request).await;
    let received = last(&log);
    assert_eq!(received.path, "/echo");
    assert_eq!(received.body, csv.as_slice());
    gw.shutdown().await;
}

#[tokio::test]
async fn transform_remaps_statuses_and_refuses_what_it_cannot_read() {
    let (up, log) = recording_upstream().await;
    let gw = gateway(&route(up, true, CONFIG)).await;

    // 404 → 200; the body of a 404 is not a 2xx body, so it keeps its shape.
    let reply = get(&gw, "/missing").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), serde_json::json!({ "error": "no such user" }));

    // An upstream answer labelled JSON that is not: the client gets the gateway's 502, not the
    // page, and not untransformed data.
    let reply = get(&gw, "/broken").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.json()["message"],
        "the upstream's answer could not be transformed"
    );
    assert!(!reply.text().contains("proxy error page"));

    // A client body labelled JSON that is not: 400, and the upstream is not called.
    let calls = log.lock().unwrap().len();
    let reply = send(
        &gw,
        Request::post("/echo")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"is_admin":true,"n":NaN}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "bad_request");
    assert_eq!(log.lock().unwrap().len(), calls);
    gw.shutdown().await;
}

#[tokio::test]
async fn transform_keeps_upstream_answers_uncompressed_and_the_gateway_compresses_for_the_client() {
    let (up, log) = recording_upstream().await;
    let gw = gateway(&route(up, true, CONFIG)).await;

    let request = Request::get("/users/7")
        .header("accept-encoding", "gzip")
        .body(Full::default())
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let received = last(&log);
    assert!(
        !received.headers.contains_key("accept-encoding"),
        "{:?}",
        received.headers
    );
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let body: serde_json::Value = serde_json::from_slice(&gunzip(&reply.body)).unwrap();
    assert_eq!(body["full_name"], "Ada");
    assert!(body.get("password_hash").is_none());

    // An upstream that compresses anyway cannot be read: refused rather than passed on.
    let reply = get(&gw, "/gzip").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    gw.shutdown().await;

    // With `invalid_body = "pass"` such answers go through as they came.
    let pass = CONFIG.replace(
        "unwrap = \"data\"",
        "unwrap = \"data\"\ninvalid_body = \"pass\"",
    );
    let gw = gateway(&route(up, true, &pass)).await;
    let reply = get(&gw, "/broken").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"<html>proxy error page</html>".as_slice());
    let reply = get(&gw, "/gzip").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&reply.body),
        br#"{"data":{"id":1,"password_hash":"x"}}"#
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn transform_without_buffered_bodies_refuses_instead_of_leaking() {
    let (up, log) = recording_upstream().await;
    let gw = gateway(&route(up, false, CONFIG)).await;
    let reply = get(&gw, "/users/7").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["message"], "the plugin is misconfigured");
    assert!(log.lock().unwrap().is_empty(), "the upstream is not called");
    gw.shutdown().await;

    // Header and status changes need no bodies: they work on a streaming route.
    let headers_only = r#"
[routes.filters.config.response]
headers = { remove = ["x-internal"] }
status = { 404 = 200 }
"#;
    let gw = gateway(&route(up, false, headers_only)).await;
    let reply = get(&gw, "/users/7").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("x-internal").is_none());
    assert_eq!(
        reply.json(),
        user_document(),
        "the body streams past untouched"
    );
    let reply = get(&gw, "/missing").await;
    assert_eq!(reply.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn transform_config_errors_stop_the_start_and_name_the_key() {
    let up = dead_address().await;
    for (config, expected) in [
        (
            "[routes.filters.config.response]\nrename = { \"a.b\" = \"c.d\" }\n",
            r#"response.rename["a.b"]: "c.d" is not a field name"#,
        ),
        (
            "[routes.filters.config.response]\nstatus = { 404 = 42 }\n",
            r#"response.status["404"]: 42 is not a final status (200-599)"#,
        ),
        (
            "[routes.filters.config.request]\nheaders = { set = { \"Content-Length\" = \"0\" } }\n",
            r#"request.headers.set["Content-Length"]: content-length is the gateway's"#,
        ),
        (
            "[routes.filters.config.request]\ndeny = [\"items[0].price\"]\n",
            r#"request.deny[0]: "items[0].price": `[` at byte 5"#,
        ),
    ] {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{}",
            plugins_section(),
            route(up, true, config)
        );
        let e = match tessera::Gateway::new(tessera_tests::config(&text)).await {
            Ok(_) => panic!("the gateway started with\n{config}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("route `/{*rest}` filters[0]"), "{e}");
        assert!(e.contains("plugin `transform@"), "{e}");
        assert!(e.contains(expected), "expected {expected:?} in\n{e}");
    }
}

#[tokio::test]
async fn transform_handles_hostile_json_without_failing_the_gateway() {
    let (up, log) = recording_upstream().await;
    let gw = gateway(&route(up, true, CONFIG)).await;
    // Nesting far past the parser's limit: a 400 for the client, not a crashed instance.
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let mut nested = request(Method::POST, "/echo", deep);
    nested
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let reply = send(&gw, nested).await;
    assert_ne!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    // A large array of objects passes, each element changed.
    let items: Vec<serde_json::Value> = (0..20_000)
        .map(|i| serde_json::json!({ "sku": i, "price": 1 }))
        .collect();
    let body = serde_json::json!({ "items": items, "is_admin": true }).to_string();
    let request = Request::post("/echo")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let received: serde_json::Value = serde_json::from_slice(&last(&log).body).unwrap();
    assert_eq!(received["items"].as_array().unwrap().len(), 20_000);
    assert_eq!(
        received["items"][19_999],
        serde_json::json!({ "sku": 19_999 })
    );
    assert!(received.get("is_admin").is_none());
    gw.shutdown().await;

    // A document too big to parse within the entry's memory: the instance fails, the request is
    // refused, and nothing reaches the upstream untransformed.
    let small_memory = route(up, true, CONFIG).replace(
        "buffer_body = true\n",
        "buffer_body = true\nlimits = { memory_bytes = 16777216 }\n",
    );
    let gw = gateway(&small_memory).await;
    let calls = log.lock().unwrap().len();
    let items: Vec<serde_json::Value> = (0..60_000)
        .map(|i| serde_json::json!({ "sku": i, "price": 1, "is_admin": true }))
        .collect();
    let request = Request::post("/echo")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::json!({ "items": items }).to_string(),
        )))
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["error"], "plugin_failed");
    assert_eq!(log.lock().unwrap().len(), calls);
    gw.shutdown().await;
}
