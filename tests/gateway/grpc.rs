//! HTTP/2 and gRPC upstreams: h2c and h2 over TLS, trailers handed to plugins and passed
//! through the proxy, `te` and `grpc-timeout` on gRPC calls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tessera_tests::tls::{CertDir, TestCa, provider};
use tessera_tests::*;

/// What an h2 upstream saw of the last request.
#[derive(Debug, Default, Clone)]
struct Seen {
    version: String,
    te: Option<String>,
    grpc_timeout: Option<String>,
    host: Option<String>,
    authority: Option<String>,
    body: Vec<u8>,
}

/// An answer with `body` and then `trailers`.
fn with_trailers(body: &'static str, trailers: HeaderMap) -> Response<TestBody> {
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(body.as_bytes()))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed_unsync());
    response
        .headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    response
}

fn grpc_trailers(extra: &[(&'static str, String)]) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    t.insert("grpc-message", "fine".parse().unwrap());
    for (name, value) in extra {
        t.insert(*name, value.parse().unwrap());
    }
    t
}

/// Serves HTTP/2 only (prior knowledge) on `listener`'s connections, TLS-wrapped with `tls`,
/// answering with `answer` and recording each request in `seen`.
async fn h2_upstream(
    tls: Option<tokio_rustls::TlsAcceptor>,
    trailers: HeaderMap,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let record = Arc::clone(&record);
            let trailers = trailers.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    let trailers = trailers.clone();
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap_or("?").to_owned())
                        };
                        let mut seen = Seen {
                            version: format!("{:?}", req.version()),
                            te: header("te"),
                            grpc_timeout: header("grpc-timeout"),
                            host: header("host"),
                            authority: req.uri().authority().map(|a| a.to_string()),
                            body: Vec::new(),
                        };
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        seen.body = body.unwrap_or_default().to_vec();
                        *record.lock().unwrap() = seen;
                        Ok::<_, Infallible>(with_trailers("pong", trailers))
                    }
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn trailers_route(upstream: &str, addr: SocketAddr, keys: &str, timeout_ms: u64) -> String {
    format!(
        "[upstreams.{upstream}]\ntargets = [\"{addr}\"]\n{keys}\n\
         [[routes]]\npath = \"/call\"\nhandler = {{ plugin = \"test-handler\", upstreams = [\"{upstream}\"], \
         config = {{ mode = \"trailers\", url = \"http://{upstream}/demo.Svc/Ping\", value = \"ping\", timeout_ms = {timeout_ms} }} }}\n\
         [[routes]]\npath = \"/demo.Svc/{{method}}\"\nupstream = \"{upstream}\"\n"
    )
}

#[tokio::test]
async fn plugins_read_the_trailers_of_a_grpc_upstream_over_h2c() {
    let (addr, seen) = h2_upstream(None, grpc_trailers(&[("x-extra", "1".into())])).await;
    let gw = gateway(&trailers_route("pay", addr, "protocol = \"grpc\"", 800)).await;
    let reply = get(&gw, "/call").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let report: Value = reply.json();
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["body"], "pong");
    assert_eq!(report["trailers"]["grpc-status"], "0", "{report}");
    assert_eq!(report["trailers"]["grpc-message"], "fine");
    assert_eq!(report["trailers"]["x-extra"], "1");
    assert_eq!(report["headers"]["content-type"], "application/grpc");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.te.as_deref(), Some("trailers"));
    // The call's own 800 ms, below the upstream's default timeout.
    assert_eq!(seen.grpc_timeout.as_deref(), Some("800m"));
    assert_eq!(
        seen.host, None,
        "HTTP/2 carries the authority, not a host field"
    );
    assert_eq!(seen.authority, Some(addr.to_string()));
    assert_eq!(seen.body, b"ping");
    gw.shutdown().await;
}

/// A plugin cannot give a gRPC server more time than the gateway gives the call, nor an
/// unreadable deadline; a shorter one of its own stands.
#[tokio::test]
async fn a_plugins_grpc_timeout_is_never_longer_than_its_call() {
    for (asked, sent) in [
        ("99999999H", "800m"),
        ("5S", "800m"),
        ("100m", "100m"),
        ("abc", "800m"),
        ("-5m", "800m"),
    ] {
        let (addr, seen) = h2_upstream(None, grpc_trailers(&[])).await;
        let route = trailers_route("pay", addr, "protocol = \"grpc\"", 800).replace(
            "timeout_ms = 800",
            &format!("timeout_ms = 800, grpc_timeout = \"{asked}\""),
        );
        let gw = gateway(&route).await;
        let report: Value = get(&gw, "/call").await.json();
        assert_eq!(report["trailers"]["grpc-status"], "0", "{report}");
        assert_eq!(
            seen.lock().unwrap().grpc_timeout.as_deref(),
            Some(sent),
            "{asked}"
        );
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn an_h2_upstream_gets_trailers_but_no_grpc_headers() {
    let (addr, seen) = h2_upstream(None, grpc_trailers(&[])).await;
    let gw = gateway(&trailers_route("h2up", addr, "protocol = \"h2\"", 800)).await;
    let report: Value = get(&gw, "/call").await.json();
    assert_eq!(report["trailers"]["grpc-status"], "0", "{report}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.te, None);
    assert_eq!(seen.grpc_timeout, None);
    gw.shutdown().await;
}

#[tokio::test]
async fn trailers_over_the_header_limit_fail_the_call() {
    let big = "x".repeat(12_000);
    let (addr, _) = h2_upstream(None, grpc_trailers(&[("x-big", big)])).await;
    let gw = gateway_with(
        "max_header_bytes = 8192",
        &trailers_route("pay", addr, "protocol = \"grpc\"", 800),
    )
    .await;
    let report: Value = get(&gw, "/call").await.json();
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("trailers"), "{report}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h2_upstream_that_speaks_only_http1_is_a_bad_gateway() {
    let addr = upstream(|_| async { Response::new(full("h1")) }).await;
    let gw = gateway(&trailers_route("pay", addr, "protocol = \"h2\"", 800)).await;
    let reply = get(&gw, "/demo.Svc/Ping").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_through_the_proxy_keeps_its_trailers() {
    let (addr, seen) = h2_upstream(None, grpc_trailers(&[])).await;
    let gw = gateway(&trailers_route("pay", addr, "protocol = \"grpc\"", 800)).await;
    // A gRPC client speaks HTTP/2 with prior knowledge to the gateway.
    let stream = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::post(format!("http://{}/demo.Svc/Ping", gw.local_addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(collected.to_bytes(), "pong");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "fine");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.te.as_deref(), Some("trailers"));
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_over_tls_negotiates_h2_with_alpn() {
    let ca = TestCa::new("grpc");
    let leaf = ca.issue(&["127.0.0.1"], 1);
    let key = <rustls_pki_types::PrivateKeyDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(
        leaf.key_pem.as_bytes(),
    )
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone().into()], key)
        .unwrap();
    // Only h2: a client offering only http/1.1 would fail the handshake.
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (addr, seen) = h2_upstream(Some(acceptor), grpc_trailers(&[])).await;
    let dir = CertDir::new("grpc-h2-tls");
    let ca_file = dir.path("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let keys = format!("protocol = \"grpc\"\ntls = true\nca_file = {ca_file:?}");
    let gw = gateway(&trailers_route("pay", addr, &keys, 800)).await;
    let report: Value = get(&gw, "/call").await.json();
    assert_eq!(report["trailers"]["grpc-status"], "0", "{report}");
    assert_eq!(seen.lock().unwrap().version, "HTTP/2.0");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unknown_protocol_is_refused_naming_the_key() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\nprotocol = \"h3\"\n",
        plugins_section()
    );
    let err = tessera::config::Config::parse(
        &text,
        std::path::Path::new("t.toml"),
        std::path::Path::new("."),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("protocol") && err.contains("h3"), "{err}");
}

/// A handler built against the WIT as released before `pending-response.trailers` existed
/// (`tests/plugins/wit-compat/wit`, frozen) still loads, starts calls and waits for them.
#[tokio::test]
async fn a_plugin_built_before_trailers_existed_still_loads_and_calls() {
    let up = upstream(|req| async move {
        let status = if req.uri().path() == "/a" { 200 } else { 404 };
        let mut response = Response::new(full(format!("from {}", req.uri().path())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/compat\"\nhandler = {{ plugin = \"wit-compat\", upstreams = [\"up\"], config = {{ paths = [\"/a\", \"/b\"] }} }}\n"
    ))
    .await;
    let reply = get(&gw, "/compat").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "200 from /a\n404 from /b");
    gw.shutdown().await;
}
