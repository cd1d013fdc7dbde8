//! The admin API, on its own listener, every request authenticated with a bearer token.
//!
//! | request | does |
//! |---|---|
//! | `GET /admin/plugins` | lists plugins: name, version, loaded-at, worlds, routes, counts; and the instance pool: in use, capacity, queued |
//! | `PUT /admin/plugins/{name}` | body = component: validated, written to disk, served |
//! | `DELETE /admin/plugins/{name}` | unloads and deletes (refused while routes use it) |
//! | `POST /admin/reload` | reloads the config file |
//! | `GET /admin/health` | liveness |
//! | `GET /admin/ready` | config and plugins loaded |
//! | `GET /metrics` | Prometheus metrics (unless `metrics.enabled = false`) |
//!
//! `metrics.listen`, when set, is a second listener without a token that serves `GET /metrics`
//! and the probes `GET /admin/health` and `GET /admin/ready` (plain bodies, no counters), for
//! scrapers and orchestrators that cannot send a bearer token.
//!
//! The listener serves TLS when `[admin.tls]` is set (handshake in the connection's task).
//! It has the gateway listener's header limits and header read timeout, its own
//! connection cap (`admin.max_connections`), and a body read timeout; an upload's name and
//! declared size are checked before its body is read. A known path asked with another method is
//! a 405 with `Allow`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::body::{self, Body};
use crate::config::ServerConfig;
use crate::error::chain;
use crate::live::{DeleteError, Live};
use crate::server::Listener;

/// Largest component the admin API accepts.
const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// Serves the admin API until `shutdown` turns true. `server` supplies the header limits and
/// timeouts; `max_connections` caps connections (more are closed at once).
pub async fn serve(
    listener: Listener,
    live: Arc<Live>,
    token: String,
    server: ServerConfig,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
) {
    let token: Arc<str> = token.into();
    let body_timeout = Duration::from_millis(server.body_read_timeout_ms);
    let respond = move |req: Request<Incoming>| {
        let live = Arc::clone(&live);
        let token = Arc::clone(&token);
        let req =
            req.map(|b| body::boxed(body::IdleTimeoutBody::new(body::boxed(b), body_timeout)));
        async move { handle(&live, &token, req).await }
    };
    serve_listener(
        listener,
        &server,
        max_connections,
        "admin",
        shutdown,
        respond,
    )
    .await;
}

/// Serves `GET /metrics` and the probes `GET /admin/health` and `GET /admin/ready` (bodies
/// without detail), without a token, on `metrics.listen` until `shutdown` turns true. For
/// scrapers and orchestrators' probes on a private network; everything else is 404. It stops
/// accepting as soon as a shutdown starts, so readiness fails while requests drain.
pub async fn serve_metrics(
    listener: TcpListener,
    live: Arc<Live>,
    server: ServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let respond = move |req: Request<Incoming>| {
        let response = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => metrics_response(&live, &req),
            // Probes for orchestrators that cannot send a token; they reveal nothing the
            // admin API's versions do (no counters, no refusal reasons).
            (&Method::GET, "/admin/health") => {
                json_response(StatusCode::OK, &json!({ "status": "ok" }))
            }
            (&Method::GET, "/admin/ready") => {
                json_response(StatusCode::OK, &json!({ "status": "ready" }))
            }
            (_, "/metrics" | "/admin/health" | "/admin/ready") => {
                method_not_allowed(&[Method::GET])
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": "only /metrics, /admin/health and /admin/ready are served here" }),
            ),
        };
        std::future::ready(response)
    };
    let listener = Listener {
        tcp: listener,
        tls: None,
    };
    serve_listener(
        listener,
        &server,
        METRICS_CONNECTIONS,
        "metrics",
        shutdown,
        respond,
    )
    .await;
}

/// Accepts on `listener` until `shutdown` turns true, at most `max_connections` connections at
/// once (more are closed at once), and answers each request of a connection with `respond`,
/// after the TLS handshake when the listener has one (run in the connection's task). `what`
/// names the listener in logs.
async fn serve_listener<F, Fut>(
    listener: Listener,
    server: &ServerConfig,
    max_connections: usize,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    respond: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = crate::server::connection_builder(server);
    let connections = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(
                listener = what,
                "connection cap reached; closing a new connection"
            );
            drop(stream);
            continue;
        };
        let respond = respond.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let answer = respond(req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let (tls, builder) = (listener.tls.clone(), builder.clone());
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(tls) => {
                    if let Some(stream) = tls.handshake(stream, client).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Connections the metrics listener serves at once.
const METRICS_CONNECTIONS: usize = 16;

/// The Prometheus exposition, or 404 when metrics are off.
fn metrics_response<B>(live: &Live, req: &Request<B>) -> Response<Body> {
    if !live.config().metrics.enabled {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "metrics are off (metrics.enabled = false)" }),
        );
    }
    let format = crate::metrics::Format::from_accept(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let text = live.metrics().render(&live.runtime(), format);
    let mut response = Response::new(body::full(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    response
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `authorization: Bearer <token>`; the scheme name is case-insensitive (RFC 9110 §11.1).
fn authorized(req: &Request<Body>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .is_some_and(|(scheme, given)| {
            scheme.eq_ignore_ascii_case("bearer") && same(given.trim().as_bytes(), token.as_bytes())
        })
}

/// The methods each admin path answers, for 405 and `Allow`.
fn allowed(path: &str) -> Option<&'static [Method]> {
    match path {
        "/admin/health" | "/admin/ready" | "/admin/plugins" | "/metrics" => Some(&[Method::GET]),
        "/admin/reload" => Some(&[Method::POST]),
        p if p.starts_with("/admin/plugins/") => Some(&[Method::PUT, Method::DELETE]),
        _ => None,
    }
}

fn method_not_allowed(allow: &[Method]) -> Response<Body> {
    let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": format!("use {}", list.join(" or ")) }),
    );
    if let Ok(v) = http::HeaderValue::from_str(&list.join(", ")) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

async fn handle(live: &Live, token: &str, req: Request<Body>) -> Response<Body> {
    if !authorized(&req, token) {
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({ "error": "missing or wrong bearer token" }),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match allowed(&path) {
        None => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": "no such admin endpoint" }),
            );
        }
        Some(methods) if !methods.contains(&method) => return method_not_allowed(methods),
        Some(_) => {}
    }
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => metrics_response(live, &req),
        (Method::GET, "/admin/health") => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        (Method::GET, "/admin/ready") => {
            let runtime = live.runtime();
            json_response(
                StatusCode::OK,
                &json!({
                    "status": "ready",
                    "routes": runtime.routes.len(),
                    "plugins": runtime.plugins.iter().count(),
                    "reloads": {
                        "done": live.reloads().done(),
                        "refused": live.reloads().refused(),
                        "last_refusal": live.reloads().last_refusal(),
                    },
                }),
            )
        }
        (Method::GET, "/admin/plugins") => json_response(StatusCode::OK, &plugins(live)),
        (Method::POST, "/admin/reload") => match live.reload_config().await {
            Ok(report) => json_response(
                StatusCode::OK,
                &json!({ "reloaded": true, "changed": report.changed }),
            ),
            Err(e) => {
                let status = if e.is_client_fault() {
                    StatusCode::BAD_REQUEST
                } else {
                    tracing::error!(error = %chain(&e), "config reload failed");
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                json_response(status, &json!({ "error": chain(&e) }))
            }
        },
        (method, p) if p.starts_with("/admin/plugins/") => {
            let name = p.trim_start_matches("/admin/plugins/").to_owned();
            match method {
                Method::PUT => {
                    // Name and declared size first: a bad upload is refused before its body
                    // is read.
                    if !crate::config::valid_name(&name) {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            &json!({ "error": format!("`{name}` is not a plugin name: use letters, digits, '-' and '_'") }),
                        );
                    }
                    let declared = req
                        .headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if declared.is_some_and(|n| n > MAX_UPLOAD as u64) {
                        return upload_too_large();
                    }
                    let bytes = match body::collect(req.into_body(), MAX_UPLOAD).await {
                        Ok(b) => b,
                        Err(body::CollectError::TooLarge) => return upload_too_large(),
                        Err(body::CollectError::Stream(e)) => {
                            return json_response(
                                StatusCode::BAD_REQUEST,
                                &json!({ "error": e.to_string() }),
                            );
                        }
                    };
                    match live.put_plugin(&name, bytes.to_vec()).await {
                        Ok(p) => json_response(
                            StatusCode::OK,
                            &json!({ "name": p.name(), "version": p.version() }),
                        ),
                        Err(e) => {
                            let status = if e.is_client_fault() {
                                StatusCode::BAD_REQUEST
                            } else {
                                tracing::error!(plugin = %name, error = %chain(&e), "plugin upload failed");
                                StatusCode::INTERNAL_SERVER_ERROR
                            };
                            json_response(status, &json!({ "error": chain(&e), "code": e.code() }))
                        }
                    }
                }
                Method::DELETE => match live.delete_plugin(&name).await {
                    Ok(()) => {
                        let mut r = Response::new(body::empty());
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        r
                    }
                    Err(DeleteError::NotFound) => json_response(
                        StatusCode::NOT_FOUND,
                        &json!({ "error": format!("no plugin `{name}`") }),
                    ),
                    Err(DeleteError::InUse(routes)) => json_response(
                        StatusCode::CONFLICT,
                        &json!({ "error": format!("plugin `{name}` is used by routes"), "routes": routes }),
                    ),
                    Err(DeleteError::Other(e)) => json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &json!({ "error": format!("{e:#}") }),
                    ),
                },
                _ => method_not_allowed(&[Method::PUT, Method::DELETE]),
            }
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "no such admin endpoint" }),
        ),
    }
}

fn upload_too_large() -> Response<Body> {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({ "error": format!("components are limited to {MAX_UPLOAD} bytes") }),
    )
}

fn plugins(live: &Live) -> Value {
    let runtime = live.runtime();
    let config = live.config();
    let list: Vec<Value> = runtime
        .plugins
        .iter()
        .map(|p| {
            let routes = config.routes_using(p.name());
            json!({
                "name": p.name(),
                "version": p.version(),
                "loaded_at": p.loaded_at().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                "worlds": p.worlds(),
                "checks_config": p.checks_config(),
                "routes": routes,
                "requests": p.requests(),
                "errors": p.errors(),
            })
        })
        .collect();
    let slots = runtime.engine.slots();
    json!({
        "plugins": list,
        "instances": {
            "in_use": slots.in_use(),
            "capacity": slots.capacity(),
            "queued": slots.queued(),
        },
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
