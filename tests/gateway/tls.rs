//! TLS: termination (ALPN, SNI, certificate rotation, refusals) and TLS to upstreams and to
//! hosts plugins call, with certificates made at test time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tessera::RunningGateway;
use tessera_tests::tls::{
    CertDir, Leaf, TestCa, count, replace, see_any_certificate, tls_get, tls_upstream,
};
use tessera_tests::{full, get, plugins_section, upstream};

/// An upstream answering `from upstream <path> <x-forwarded-proto>`.
async fn echo_upstream() -> std::net::SocketAddr {
    upstream(|req| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Response::new(full(format!("from upstream {} {proto}", req.uri().path())))
    })
    .await
}

/// `[[server.tls.certificates]]` entries for files in `dir`.
fn certificates(files: &[(std::path::PathBuf, std::path::PathBuf)]) -> String {
    files
        .iter()
        .map(|(cert, key)| {
            format!("[[server.tls.certificates]]\ncert_file = {cert:?}\nkey_file = {key:?}\n")
        })
        .collect()
}

/// A TLS gateway with `tls` lines under `[server.tls]`, then `rest` (certificates, upstreams,
/// routes).
fn tls_config(tls: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n[server.tls]\n{tls}\n{rest}\n{}",
        plugins_section()
    )
}

async fn start(text: &str) -> RunningGateway {
    tessera::Gateway::new(tessera_tests::config(text))
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts")
}

fn echo_route(upstream: std::net::SocketAddr) -> String {
    format!(
        "[upstreams.echo]\ntargets = [\"{upstream}\"]\n[[routes]]\npath = \"/echo\"\nupstream = \"echo\"\n"
    )
}

#[tokio::test]
async fn http1_and_h2_over_tls_with_a_plain_listener_beside() {
    let ca = TestCa::new("termination CA");
    let dir = CertDir::new("alpn");
    let files = dir.write("site", &ca.issue(&["localhost"], 1));
    let up = echo_upstream().await;
    let gw = start(&tls_config(
        "plain_listen = \"127.0.0.1:0\"",
        &format!("{}{}", certificates(&[files]), echo_route(up)),
    ))
    .await;

    let h2 = tls_get(
        ca.client_config(&[b"h2", b"http/1.1"]),
        gw.local_addr(),
        "localhost",
        "/echo",
    )
    .await
    .expect("h2 over TLS");
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.body, "from upstream /echo https");

    let h1 = tls_get(
        ca.client_config(&[b"http/1.1"]),
        gw.local_addr(),
        "localhost",
        "/echo",
    )
    .await
    .expect("HTTP/1.1 over TLS");
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.status, StatusCode::OK);
    assert_eq!(h1.body, "from upstream /echo https");

    // Cleartext on the TLS port is refused; the plain listener serves the same routes.
    let plain = gw.plain_addr().expect("plain listener");
    let reply = tessera_tests::client()
        .get(format!("http://{plain}/echo").parse().expect("uri"))
        .await
        .expect("plain listener answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(reply.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, "from upstream /echo http");
    let cleartext_on_tls = tessera_tests::client()
        .get(
            format!("http://{}/echo", gw.local_addr())
                .parse()
                .expect("uri"),
        )
        .await;
    assert!(
        cleartext_on_tls.is_err(),
        "the TLS port answered cleartext HTTP"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn sni_selects_the_certificate_and_the_first_is_the_default() {
    let ca = TestCa::new("sni CA");
    let dir = CertDir::new("sni");
    let a = ca.issue(&["a.test"], 10);
    let b = ca.issue(&["*.b.test"], 20);
    let files = [dir.write("a", &a), dir.write("b", &b)];
    let up = echo_upstream().await;
    let gw = start(&tls_config(
        "",
        &format!("{}{}", certificates(&files), echo_route(up)),
    ))
    .await;
    let verified = ca.client_config(&[b"http/1.1"]);
    let seen = tls_get(Arc::clone(&verified), gw.local_addr(), "a.test", "/echo")
        .await
        .expect("a.test");
    assert_eq!(seen.leaf, a.der);
    assert_eq!(seen.status, StatusCode::OK);
    let seen = tls_get(
        Arc::clone(&verified),
        gw.local_addr(),
        "api.b.test",
        "/echo",
    )
    .await
    .expect("api.b.test");
    assert_eq!(
        seen.leaf, b.der,
        "the wildcard certificate serves api.b.test"
    );
    // Unknown names and no SNI at all (an IP address) get the first certificate.
    let seen = tls_get(
        see_any_certificate(),
        gw.local_addr(),
        "unknown.test",
        "/echo",
    )
    .await
    .expect("unknown name");
    assert_eq!(seen.leaf, a.der);
    let seen = tls_get(see_any_certificate(), gw.local_addr(), "127.0.0.1", "/echo")
        .await
        .expect("no SNI");
    assert_eq!(seen.leaf, a.der);
    gw.shutdown().await;
}

/// Waits until `check` holds, polling, for at most `bound`.
async fn eventually(bound: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < bound,
            "{what} did not happen within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let ca = TestCa::new("rotation CA");
    let dir = CertDir::new("rotate");
    let files = dir.write("site", &ca.issue(&["localhost"], 1));
    let up = echo_upstream().await;
    let gw = Arc::new(
        start(&tls_config(
            "",
            &format!(
                "{}{}",
                certificates(std::slice::from_ref(&files)),
                echo_route(up)
            ),
        ))
        .await,
    );
    let config = ca.client_config(&[b"h2", b"http/1.1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (config, stop, ok, failed) = (
            Arc::clone(&config),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        let addr = gw.local_addr();
        clients.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match tls_get(Arc::clone(&config), addr, "localhost", "/echo").await {
                    Ok(r) if r.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        }));
    }
    let store = Arc::clone(gw.live().server_tls().expect("TLS store"));
    let mut last: Option<Leaf> = None;
    for serial in 2..=4u64 {
        let leaf = ca.issue(&["localhost"], serial);
        dir.write("site", &leaf);
        // A fresh client each time: a resumed session would show the certificate it began with.
        eventually(
            Duration::from_secs(10),
            "serving the rotated certificate",
            async || {
                tls_get(
                    ca.client_config(&[b"h2"]),
                    gw.local_addr(),
                    "localhost",
                    "/echo",
                )
                .await
                .is_ok_and(|r| r.leaf == leaf.der)
            },
        )
        .await;
        last = Some(leaf);
    }
    // A garbage file is refused; the certificate in force keeps serving.
    let current = last.expect("rotated");
    let refused_before = store.refused();
    replace(&files.0, b"this is not a certificate");
    eventually(
        Duration::from_secs(10),
        "refusing the garbage file",
        async || store.refused() > refused_before,
    )
    .await;
    let seen = tls_get(
        ca.client_config(&[b"h2"]),
        gw.local_addr(),
        "localhost",
        "/echo",
    )
    .await
    .expect("still serving after a garbage file");
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.leaf, current.der,
        "the last good certificate keeps serving"
    );
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let errors = client.await.expect("client task");
        assert!(
            errors.is_empty(),
            "requests failed during rotation: {errors:?}"
        );
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(
        ok.load(Ordering::SeqCst) >= 8,
        "the clients made requests throughout"
    );
    assert!(store.reloaded() >= 3, "three rotations were served");
}

#[tokio::test]
async fn expired_garbage_and_mismatched_certificates_are_refused_at_load() {
    let ca = TestCa::new("refusal CA");
    let dir = CertDir::new("refuse");
    let expired = dir.write("expired", &ca.issue_expired(&["localhost"]));
    let good = ca.issue(&["localhost"], 2);
    let garbage = dir.path("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let (_, good_key) = dir.write("good", &good);
    let other = dir.write("other", &ca.issue(&["localhost"], 3));
    let cases = [
        (expired.0.clone(), expired.1.clone(), "expired"),
        (garbage.clone(), good_key.clone(), "PEM"),
        (other.0.clone(), good_key.clone(), "does not match"),
    ];
    for (cert, key, why) in cases {
        let text = tls_config("", &certificates(&[(cert.clone(), key.clone())]));
        let err = tessera::Gateway::new(tessera_tests::config(&text))
            .await
            .expect_err("a bad certificate is refused");
        let message = format!("{err:#}");
        let named = if why == "does not match" { &key } else { &cert };
        assert!(
            message.contains(&named.display().to_string()) && message.contains(why),
            "the error names {} and says {why}: {message}",
            named.display()
        );
    }
}

/// Routes to a TLS upstream with the given extra upstream keys.
fn secure_route(addr: std::net::SocketAddr, keys: &str) -> String {
    format!(
        "[upstreams.secure]\ntargets = [\"{addr}\"]\ntls = true\n{keys}\n[[routes]]\npath = \"/secure\"\nupstream = \"secure\"\n"
    )
}

async fn plain_gateway(routes: &str) -> RunningGateway {
    tessera_tests::gateway(routes).await
}

#[tokio::test]
async fn tls_upstreams_verify_the_ca_and_the_name_and_reuse_connections() {
    let ca = TestCa::new("upstream CA");
    let dir = CertDir::new("upstream");
    let (addr, handshakes) = tls_upstream(&ca.issue(&["127.0.0.1", "up.test"], 1), None).await;
    let ca_file = dir.path("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let gw = plain_gateway(&secure_route(addr, &format!("ca_file = {ca_file:?}"))).await;
    for _ in 0..3 {
        let reply = get(&gw, "/secure").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "/secure");
        assert_eq!(reply.header("x-alpn"), Some("http/1.1"));
    }
    assert_eq!(
        count(&handshakes),
        1,
        "one pooled TLS connection served three requests"
    );
    gw.shutdown().await;

    // The name verified may be set; a name the certificate does not hold is a 502.
    let named = plain_gateway(&secure_route(
        addr,
        &format!("ca_file = {ca_file:?}\nserver_name = \"up.test\""),
    ))
    .await;
    assert_eq!(get(&named, "/secure").await.status, StatusCode::OK);
    named.shutdown().await;
    let wrong_name = plain_gateway(&secure_route(
        addr,
        &format!("ca_file = {ca_file:?}\nserver_name = \"other.test\""),
    ))
    .await;
    let reply = get(&wrong_name, "/secure").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_unavailable");
    wrong_name.shutdown().await;

    // A CA that did not issue the certificate is a 502.
    let other_ca = dir.path("other-ca.pem");
    std::fs::write(&other_ca, &TestCa::new("another CA").pem).expect("write CA");
    let wrong_ca = plain_gateway(&secure_route(addr, &format!("ca_file = {other_ca:?}"))).await;
    let reply = get(&wrong_ca, "/secure").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        !reply.text().contains("certificate"),
        "the client message stays generic"
    );
    wrong_ca.shutdown().await;
}

#[tokio::test]
async fn mtls_upstream_needs_the_client_certificate() {
    let ca = TestCa::new("mtls server CA");
    let client_ca = TestCa::new("mtls client CA");
    let dir = CertDir::new("mtls");
    let (addr, _) = tls_upstream(&ca.issue(&["127.0.0.1"], 1), Some(&client_ca)).await;
    let ca_file = dir.path("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let without = plain_gateway(&secure_route(addr, &format!("ca_file = {ca_file:?}"))).await;
    assert_eq!(
        get(&without, "/secure").await.status,
        StatusCode::BAD_GATEWAY
    );
    without.shutdown().await;

    let (cert, key) = dir.write("client", &client_ca.issue(&["gateway.test"], 5));
    let with = plain_gateway(&secure_route(
        addr,
        &format!("ca_file = {ca_file:?}\nclient_cert = {cert:?}\nclient_key = {key:?}"),
    ))
    .await;
    let reply = get(&with, "/secure").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "/secure");
    with.shutdown().await;
}

#[tokio::test]
async fn plugins_call_allowed_hosts_over_https() {
    let ca = TestCa::new("plugin CA");
    let dir = CertDir::new("plugin");
    let (addr, _) = tls_upstream(&ca.issue(&["localhost"], 1), None).await;
    let stranger = TestCa::new("unknown CA");
    let (untrusted, _) = tls_upstream(&stranger.issue(&["localhost"], 1), None).await;
    let ca_file = dir.path("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let port = addr.port();
    let handler = |path: &str, allow: &str, url: String| {
        format!(
            "[[routes]]\npath = \"{path}\"\nhandler = {{ plugin = \"test-handler\", allow_hosts = [\"{allow}\"], config = {{ mode = \"call\", url = \"{url}\" }} }}\n"
        )
    };
    let routes = [
        handler(
            "/ok",
            &format!("localhost:{port}"),
            format!("https://localhost:{port}/x"),
        ),
        handler(
            "/not-allowed",
            &format!("localhost:{port}"),
            format!("https://127.0.0.1:{port}/x"),
        ),
        handler(
            "/untrusted",
            &format!("localhost:{}", untrusted.port()),
            format!("https://localhost:{}/x", untrusted.port()),
        ),
        // A grant without a port means port 80 for http and 443 for https, never this port.
        handler(
            "/default-port",
            "localhost",
            format!("https://localhost:{port}/x"),
        ),
    ]
    .concat();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{routes}",
        plugins_section().replacen(
            "[plugins]\n",
            &format!("[plugins]\nca_file = {ca_file:?}\n"),
            1
        )
    );
    let gw = start(&text).await;
    let json = get(&gw, "/ok").await.json();
    assert_eq!(json["status"], 200, "{json}");
    assert_eq!(json["body"], "/x", "{json}");
    for path in ["/not-allowed", "/default-port"] {
        let json = get(&gw, path).await.json();
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("Denied"), "{path}: {json}");
    }
    let json = get(&gw, "/untrusted").await.json();
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("ConnectionFailed"), "{json}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_serves_tls() {
    let ca = TestCa::new("admin CA");
    let dir = CertDir::new("admin");
    let (cert, key) = dir.write("admin", &ca.issue(&["localhost"], 1));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"secret\"\n[[admin.tls.certificates]]\ncert_file = {cert:?}\nkey_file = {key:?}\n{}",
        plugins_section()
    );
    let gw = start(&text).await;
    let admin = gw.admin_addr().expect("admin listener");
    let reply = tls_get(
        ca.client_config(&[b"http/1.1"]),
        admin,
        "localhost",
        "/admin/health",
    )
    .await
    .expect("admin over TLS");
    // No token: the API answers, over TLS, that one is needed.
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_config_reload_that_names_other_certificates_serves_them() {
    let ca = TestCa::new("reload CA");
    let dir = CertDir::new("config-reload");
    let first = ca.issue(&["localhost"], 1);
    let second = ca.issue(&["localhost"], 2);
    let first_files = dir.write("first", &first);
    let second_files = dir.write("second", &second);
    let garbage = dir.path("garbage.pem");
    std::fs::write(&garbage, "garbage").expect("write");
    let up = echo_upstream().await;
    let path = dir.path("tessera.toml");
    let text = |files: &(std::path::PathBuf, std::path::PathBuf)| {
        tls_config(
            "",
            &format!(
                "{}{}",
                certificates(std::slice::from_ref(files)),
                echo_route(up)
            ),
        )
    };
    std::fs::write(&path, text(&first_files)).expect("write config");
    let gw = tessera::Gateway::from_file(&path)
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts");
    let leaf = async || {
        tls_get(
            ca.client_config(&[b"h2"]),
            gw.local_addr(),
            "localhost",
            "/echo",
        )
        .await
        .expect("TLS request")
        .leaf
    };
    assert_eq!(leaf().await, first.der);

    // A config naming an unusable file is refused whole; the certificate in force stays.
    std::fs::write(&path, text(&(garbage.clone(), second_files.1.clone()))).expect("write");
    let err = gw.live().reload_config().await.expect_err("refused");
    assert!(
        tessera::error::chain(&err).contains(&garbage.display().to_string()),
        "the refusal names the file: {}",
        tessera::error::chain(&err)
    );
    assert_eq!(leaf().await, first.der);

    std::fs::write(&path, text(&second_files)).expect("write config");
    gw.live().reload_config().await.expect("reload");
    assert_eq!(leaf().await, second.der);
    gw.shutdown().await;
}

#[tokio::test]
async fn min_version_and_handshake_timeout_hold() {
    let ca = TestCa::new("limits CA");
    let dir = CertDir::new("limits");
    let files = dir.write("site", &ca.issue(&["localhost"], 1));
    let up = echo_upstream().await;
    let gw = start(&tls_config(
        "min_version = \"1.3\"\nhandshake_timeout_ms = 300",
        &format!("{}{}", certificates(&[files]), echo_route(up)),
    ))
    .await;
    let tls12 = ca.client_config_for(&[b"http/1.1"], &[&rustls::version::TLS12]);
    assert!(
        tls_get(tls12, gw.local_addr(), "localhost", "/echo")
            .await
            .is_err(),
        "a TLS 1.2 client was served by a 1.3-only listener"
    );
    let tls13 = ca.client_config_for(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let reply = tls_get(tls13, gw.local_addr(), "localhost", "/echo")
        .await
        .expect("TLS 1.3");
    assert_eq!(reply.status, StatusCode::OK);

    // A client that never starts its handshake is closed after the timeout.
    let mut silent = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pending_handshake_holds_a_connection_slot() {
    let ca = TestCa::new("cap CA");
    let dir = CertDir::new("cap");
    let files = dir.write("site", &ca.issue(&["localhost"], 1));
    let up = echo_upstream().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1\n[server.tls]\nhandshake_timeout_ms = 10000\n{}{}\n{}",
        certificates(&[files]),
        echo_route(up),
        plugins_section()
    );
    let gw = start(&text).await;
    // The only slot goes to a connection that has not sent its ClientHello.
    let holder = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .expect("connect");
    eventually(
        Duration::from_secs(5),
        "a second client being refused",
        async || {
            tls_get(
                ca.client_config(&[b"http/1.1"]),
                gw.local_addr(),
                "localhost",
                "/echo",
            )
            .await
            .is_err()
        },
    )
    .await;
    drop(holder);
    eventually(Duration::from_secs(5), "the slot coming back", async || {
        tls_get(
            ca.client_config(&[b"http/1.1"]),
            gw.local_addr(),
            "localhost",
            "/echo",
        )
        .await
        .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    gw.shutdown().await;
}
