//! Bad config and bad plugins are refused with messages that name what is wrong.

use tessera::config::Config;
use tessera_tests::*;

#[test]
fn typo_in_a_key_names_the_key_and_line() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.users]\ntargets = [\"127.0.0.1:1\"]\nconect_timeout_ms = 5\n";
    let err = Config::parse(text, "tessera.toml".as_ref(), ".".as_ref())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tessera.toml"), "{err}");
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("conect_timeout_ms"), "{err}");
}

#[test]
fn route_to_a_missing_upstream_names_the_route() {
    let text = "[[routes]]\npath = \"/x\"\nupstream = \"nope\"\n";
    let err = Config::parse(text, "tessera.toml".as_ref(), ".".as_ref())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "tessera.toml:3: routes[0].upstream: unknown upstream `nope` (defined: none)"
    );
}

#[tokio::test]
async fn plugin_used_in_the_wrong_world_is_refused() {
    let text = format!(
        "{}\n[[routes]]\npath = \"/\"\nhandler = {{ plugin = \"headers\" }}\n",
        plugins_section()
    );
    let err = tessera::Gateway::new(config(&text)).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("`headers` as a handler"), "{message}");
    assert!(message.contains("request-handler"), "{message}");
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused() {
    let dir = std::env::temp_dir().join(format!("tessera-bad-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (file, expected) in [
        (&junk, "not a WebAssembly component"),
        (&core, "core wasm module"),
    ] {
        let text = format!(
            "[plugins.files]\np = {:?}\n[[routes]]\npath = \"/\"\nhandler = {{ plugin = \"p\" }}\n",
            file.display().to_string()
        );
        let err = tessera::Gateway::new(config(&text)).await.unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("plugin `p`"), "{message}");
        assert!(message.contains(expected), "{message}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// An admin API request with a bearer token.
async fn admin_request(
    gw: &tessera::RunningGateway,
    method: http::Method,
    path: &str,
    token: &str,
) -> Reply {
    let addr = gw.admin_addr().expect("admin configured");
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::default())
        .expect("request");
    fetch(request).await
}

#[tokio::test]
async fn secrets_come_from_files_and_the_environment_and_follow_reloads() {
    let dir = std::env::temp_dir().join(format!("tessera-secrets-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets").join("api-key"), "key-one\n").unwrap();
    std::fs::write(dir.join("admin-token"), "admin-token-from-file\n").unwrap();
    let path = dir.join("tessera.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"${{file:admin-token}}\"\n\
             {}\n[[routes]]\npath = \"/secret\"\n\
             handler = {{ plugin = \"test-handler\", config = {{ mode = \"config\", api_key = \"${{file:secrets/api-key}}\", search_path = \"${{env:PATH}}\", literal = \"$${{env:PATH}}\" }} }}\n",
            plugins_section()
        ),
    )
    .unwrap();
    let gw = tessera::Gateway::from_file(&path)
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("starts");

    let reply = get(&gw, "/secret").await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["api_key"], "key-one");
    assert_eq!(
        seen["search_path"].as_str(),
        std::env::var("PATH").ok().as_deref()
    );
    assert_eq!(seen["literal"], "${env:PATH}");

    // The admin token came from its file (newline removed).
    let health = admin_request(
        &gw,
        http::Method::GET,
        "/admin/health",
        "admin-token-from-file",
    )
    .await;
    assert_eq!(health.status, http::StatusCode::OK, "{}", health.text());
    let wrong = admin_request(
        &gw,
        http::Method::GET,
        "/admin/health",
        "${file:admin-token}",
    )
    .await;
    assert_eq!(wrong.status, http::StatusCode::UNAUTHORIZED);

    // A reload reads the file again.
    std::fs::write(dir.join("secrets").join("api-key"), "key-two\r\n").unwrap();
    let reload = admin_request(
        &gw,
        http::Method::POST,
        "/admin/reload",
        "admin-token-from-file",
    )
    .await;
    assert_eq!(reload.status, http::StatusCode::OK, "{}", reload.text());
    assert_eq!(get(&gw, "/secret").await.json()["api_key"], "key-two");

    // A reload whose secret cannot be read is refused, naming the key and file, and the
    // previous value keeps serving.
    std::fs::remove_file(dir.join("secrets").join("api-key")).unwrap();
    let reload = admin_request(
        &gw,
        http::Method::POST,
        "/admin/reload",
        "admin-token-from-file",
    )
    .await;
    assert_eq!(
        reload.status,
        http::StatusCode::BAD_REQUEST,
        "{}",
        reload.text()
    );
    let message = reload.text();
    assert!(
        message.contains("routes[0].handler.config.api_key"),
        "{message}"
    );
    assert!(message.contains("secrets/api-key"), "{message}");
    assert_eq!(get(&gw, "/secret").await.json()["api_key"], "key-two");

    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
