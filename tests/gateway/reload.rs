//! Hot reload: plugins swapped under load, rejected inputs, config reloads, the admin API, the
//! compile cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tessera::RunningGateway;
use tessera_tests::*;

const TOKEN: &str = "test-admin-token-0123456789";

fn version(v: &str) -> Vec<u8> {
    std::fs::read(plugin(&format!("tessera-test-version-{v}"))).unwrap()
}

/// Puts a plugin file in place the way writers should: write elsewhere, rename into place.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

fn config_text(scratch: &Scratch, cache: &Path, routes: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [plugins]\ndirectory = {:?}\ncache_dir = {:?}\nmax_instances = 64\n\
         limits = {{ timeout_ms = 2000 }}\n{routes}",
        scratch.plugins().display().to_string(),
        cache.display().to_string()
    )
}

fn shared_cache() -> PathBuf {
    workspace_root().join("target").join("plugin-cache")
}

async fn start(text: &str) -> RunningGateway {
    tessera::Gateway::new(config(text))
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("starts")
}

async fn admin(
    gw: &RunningGateway,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let addr = gw.admin_addr().expect("admin configured");
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    fetch(request.body(Full::new(Bytes::from(body))).unwrap()).await
}

/// The version a response came from, checking that its header and body agree.
fn answered_by(reply: &Reply) -> Option<String> {
    if reply.status != StatusCode::OK {
        return None;
    }
    let header = reply.header("x-version")?.to_owned();
    (reply.text() == format!("version {header}")).then_some(header)
}

#[tokio::test]
async fn swap_under_load_fifty_times_without_a_failed_request() {
    let scratch = Scratch::new("swap");
    install(&scratch.plugins(), "v", &version("a"));
    let gw = Arc::new(
        start(&config_text(
            &scratch,
            &shared_cache(),
            "[[routes]]\npath = \"/v\"\nhandler = { plugin = \"v\" }\n",
        ))
        .await,
    );
    let (a, b) = (version("a"), version("b"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let gw = Arc::clone(&gw);
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0usize, Vec::new());
            // Bounded: the swaps take a few seconds; stop after 30 s whatever happens.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let reply = get(&gw, "/v").await;
                match answered_by(&reply) {
                    Some(_) => ok += 1,
                    None => bad.push(format!(
                        "{} {:?} {}",
                        reply.status,
                        reply.header("x-version"),
                        reply.text()
                    )),
                }
            }
            (ok, bad)
        }));
    }
    for i in 0..50 {
        let bytes = if i % 2 == 0 { b.clone() } else { a.clone() };
        let reply = admin(&gw, Method::PUT, "/admin/plugins/v", Some(TOKEN), bytes).await;
        assert_eq!(reply.status, StatusCode::OK, "swap {i}: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last swap installed version a. New requests get it at once.
    let swapped = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let (ok, bad) = c.await.unwrap();
        assert!(bad.is_empty(), "failed or mixed responses: {bad:?}");
        total += ok;
    }
    assert!(total > 100, "only {total} requests ran during the swaps");
    loop {
        let reply = get(&gw, "/v").await;
        if answered_by(&reply).as_deref() == Some("a") {
            break;
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(1),
            "final version not serving after 1 s"
        );
    }
    for _ in 0..20 {
        assert_eq!(answered_by(&get(&gw, "/v").await).as_deref(), Some("a"));
    }
    eprintln!("50 swaps under load: {total} requests, 0 failed");
    Arc::try_unwrap(gw).unwrap().shutdown().await;
}

#[tokio::test]
async fn rejected_plugins_change_nothing() {
    let scratch = Scratch::new("reject");
    install(&scratch.plugins(), "v", &version("a"));
    let gw = start(&config_text(
        &scratch,
        &shared_cache(),
        "[[routes]]\npath = \"/v\"\nhandler = { plugin = \"v\" }\n",
    ))
    .await;
    let unknown = std::fs::read(plugin("tessera-test-unknown-import")).unwrap();
    let filter = std::fs::read(plugin("tessera-plugin-headers")).unwrap();
    // Each refusal names its kind in `code` (the variant of the host's typed load error).
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "random bytes",
            b"\x00\x01garbage that is not wasm".to_vec(),
            "not_a_component",
        ),
        ("a core module", b"\0asm\x01\0\0\0".to_vec(), "core_module"),
        ("a filter where a handler is needed", filter, "wrong_world"),
        ("unknown imports", unknown, "missing_imports"),
    ];
    for (what, bytes, code) in &cases {
        let reply = admin(
            &gw,
            Method::PUT,
            "/admin/plugins/v",
            Some(TOKEN),
            bytes.clone(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["code"], *code, "{what}: {}", reply.text());
        assert_eq!(
            answered_by(&get(&gw, "/v").await).as_deref(),
            Some("a"),
            "{what} changed the plugin"
        );
    }
    assert_eq!(
        std::fs::read(scratch.plugins().join("v.wasm")).unwrap(),
        version("a"),
        "a refused upload touched the file"
    );

    // A valid component that cannot be written (its file's place is taken by a non-empty
    // directory) is the server's fault: 500, not 400.
    let blocked = scratch.plugins().join("w.wasm");
    std::fs::create_dir_all(blocked.join("occupied")).unwrap();
    let reply = admin(
        &gw,
        Method::PUT,
        "/admin/plugins/w",
        Some(TOKEN),
        version("b"),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["code"], "io", "{}", reply.text());
    std::fs::remove_dir_all(&blocked).unwrap();

    // The same through the watched directory: refused with a log line, version a keeps serving.
    for (what, bytes, _) in cases {
        let before = refusals(&gw).await;
        install(&scratch.plugins(), "v", &bytes);
        wait_for_refusal(&gw, before, "v.wasm").await;
        assert_eq!(
            answered_by(&get(&gw, "/v").await).as_deref(),
            Some("a"),
            "{what} in the directory changed the plugin"
        );
    }
    // Removing a plugin routes use leaves the loaded version serving.
    let before = refusals(&gw).await;
    std::fs::remove_file(scratch.plugins().join("v.wasm")).unwrap();
    wait_for_refusal(&gw, before, "`v` is still used by routes").await;
    assert_eq!(answered_by(&get(&gw, "/v").await).as_deref(), Some("a"));
    gw.shutdown().await;
}

#[tokio::test]
async fn directory_changes_are_served_within_a_second() {
    let scratch = Scratch::new("watch");
    install(&scratch.plugins(), "v", &version("a"));
    // Version b is compiled at start (as plugin `next`), so the timing below measures the
    // pickup and swap, not a cold compile on a busy test machine.
    install(&scratch.plugins(), "next", &version("b"));
    let gw = start(&config_text(
        &scratch,
        &shared_cache(),
        "[[routes]]\npath = \"/v\"\nhandler = { plugin = \"v\" }\n",
    ))
    .await;
    assert_eq!(answered_by(&get(&gw, "/v").await).as_deref(), Some("a"));
    install(&scratch.plugins(), "v", &version("b"));
    let written = Instant::now();
    loop {
        if answered_by(&get(&gw, "/v").await).as_deref() == Some("b") {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "new version not picked up within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("directory change served after {:?}", written.elapsed());
    gw.shutdown().await;
}

#[tokio::test]
async fn config_reload_adds_and_removes_routes_under_load_and_refuses_bad_config() {
    let scratch = Scratch::new("config");
    install(&scratch.plugins(), "v", &version("a"));
    let path = scratch.path("tessera.toml");
    let base = config_text(
        &scratch,
        &shared_cache(),
        "[[routes]]\npath = \"/v\"\nhandler = { plugin = \"v\" }\n",
    );
    std::fs::write(&path, &base).unwrap();
    let gw = Arc::new(
        tessera::Gateway::from_file(&path)
            .await
            .unwrap()
            .start()
            .await
            .unwrap(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (gw, stop) = (Arc::clone(&gw), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let reply = get(&gw, "/v").await;
                if reply.status != StatusCode::OK {
                    failures.push(reply.status);
                }
            }
            failures
        })
    };

    let with_new = format!("{base}[[routes]]\npath = \"/new\"\nhandler = {{ plugin = \"v\" }}\n");
    write_config(&path, &with_new);
    wait_for(&gw, "/new", StatusCode::OK).await;

    // A typo: refused by the watcher and by the admin API; the previous config keeps serving.
    let before = refusals(&gw).await;
    write_config(&path, &format!("{with_new}[server2]\n"));
    wait_for_refusal(&gw, before, "server2").await;
    assert_eq!(get(&gw, "/new").await.status, StatusCode::OK);
    let reply = admin(&gw, Method::POST, "/admin/reload", Some(TOKEN), Vec::new()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("server2"), "{}", reply.text());

    // A config file that cannot be read is the server's fault, not the caller's: 500.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let reply = admin(&gw, Method::POST, "/admin/reload", Some(TOKEN), Vec::new()).await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    std::fs::remove_dir(&path).unwrap();

    write_config(&path, &base);
    wait_for(&gw, "/new", StatusCode::NOT_FOUND).await;
    let reply = admin(&gw, Method::POST, "/admin/reload", Some(TOKEN), Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    stop.store(true, Ordering::SeqCst);
    let failures = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "requests to an unchanged route failed during reloads: {failures:?}"
    );
    Arc::try_unwrap(gw).unwrap().shutdown().await;
}

fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.partial");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Reloads refused so far (`GET /admin/ready`).
async fn refusals(gw: &RunningGateway) -> u64 {
    let reply = admin(gw, Method::GET, "/admin/ready", Some(TOKEN), Vec::new()).await;
    reply.json()["reloads"]["refused"]
        .as_u64()
        .expect("refused count")
}

/// Waits until a reload after `before` refused something whose reason mentions `about`: the
/// watcher saw the change and turned it down. A dead watcher fails here instead of passing.
async fn wait_for_refusal(gw: &RunningGateway, before: u64, about: &str) {
    let started = Instant::now();
    loop {
        let reply = admin(gw, Method::GET, "/admin/ready", Some(TOKEN), Vec::new()).await;
        let reloads = &reply.json()["reloads"];
        if reloads["refused"].as_u64().unwrap_or(0) > before
            && reloads["last_refusal"]
                .as_str()
                .is_some_and(|r| r.contains(about))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refusal about {about:?} after 10 s: {reloads}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(gw: &RunningGateway, path: &str, status: StatusCode) {
    let started = Instant::now();
    while get(gw, path).await.status != status {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} did not become {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admin_api_requires_the_token_and_manages_plugins() {
    let scratch = Scratch::new("admin");
    install(&scratch.plugins(), "v", &version("a"));
    let gw = start(&config_text(
        &scratch,
        &shared_cache(),
        "[[routes]]\npath = \"/v\"\nhandler = { plugin = \"v\" }\n",
    ))
    .await;
    for token in [None, Some("wrong"), Some("")] {
        let reply = admin(&gw, Method::GET, "/admin/plugins", token, Vec::new()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    assert_eq!(
        admin(&gw, Method::GET, "/admin/health", Some(TOKEN), Vec::new())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        admin(&gw, Method::GET, "/admin/ready", Some(TOKEN), Vec::new())
            .await
            .status,
        StatusCode::OK
    );

    get(&gw, "/v").await;
    let list = admin(&gw, Method::GET, "/admin/plugins", Some(TOKEN), Vec::new())
        .await
        .json();
    let v = &list["plugins"][0];
    assert_eq!(v["name"], "v");
    assert_eq!(v["worlds"], serde_json::json!(["handler"]));
    assert_eq!(v["routes"], serde_json::json!(["/v"]));
    assert_eq!(v["requests"], 1);
    assert_eq!(v["errors"], 0);
    assert!(v["loaded_at"].as_u64().unwrap() > 0);

    // Upload a plugin no route uses yet: stored in the directory, listed, then deleted.
    let reply = admin(
        &gw,
        Method::PUT,
        "/admin/plugins/extra",
        Some(TOKEN),
        version("b"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let version_b = reply.json()["version"].as_str().unwrap().to_owned();
    assert!(scratch.plugins().join("extra.wasm").exists());
    let list = admin(&gw, Method::GET, "/admin/plugins", Some(TOKEN), Vec::new())
        .await
        .json();
    assert!(
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "extra" && p["version"] == version_b.as_str())
    );

    let reply = admin(
        &gw,
        Method::DELETE,
        "/admin/plugins/v",
        Some(TOKEN),
        Vec::new(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "a plugin in use must not be deleted"
    );
    let reply = admin(
        &gw,
        Method::DELETE,
        "/admin/plugins/extra",
        Some(TOKEN),
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(!scratch.plugins().join("extra.wasm").exists());
    assert_eq!(
        admin(
            &gw,
            Method::DELETE,
            "/admin/plugins/extra",
            Some(TOKEN),
            Vec::new()
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(answered_by(&get(&gw, "/v").await).as_deref(), Some("a"));
    gw.shutdown().await;
}

#[tokio::test]
async fn compiled_plugins_are_cached_and_corrupt_entries_ignored() {
    let scratch = Scratch::new("cache");
    let cache = scratch.path("cache");
    install(&scratch.plugins(), "v", &version("a"));
    let text = config_text(
        &scratch,
        &cache,
        "[[routes]]\npath = \"/v\"\nhandler = { plugin = \"v\" }\n",
    );

    let gw = start(&text).await;
    gw.shutdown().await;
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let written = std::fs::metadata(entry).unwrap().modified().unwrap();

    // A restart uses the entry as it is.
    let started = Instant::now();
    let gw = start(&text).await;
    eprintln!(
        "restart with a cached plugin: serving after {:?}",
        started.elapsed()
    );
    assert_eq!(answered_by(&get(&gw, "/v").await).as_deref(), Some("a"));
    gw.shutdown().await;
    assert_eq!(
        std::fs::metadata(entry).unwrap().modified().unwrap(),
        written,
        "a cache hit must not rewrite the entry"
    );

    // A corrupted entry is ignored (recompiled and rewritten), never trusted.
    let mut bytes = std::fs::read(entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(entry, &bytes).unwrap();
    let gw = start(&text).await;
    assert_eq!(answered_by(&get(&gw, "/v").await).as_deref(), Some("a"));
    gw.shutdown().await;
    assert_ne!(
        std::fs::read(entry).unwrap(),
        bytes,
        "the corrupt entry was replaced"
    );
}

#[tokio::test]
async fn canary_gets_its_share_and_is_rolled_back_when_it_traps() {
    let scratch = Scratch::new("canary");
    install(&scratch.plugins(), "v", &version("a"));
    install(&scratch.plugins(), "next", &version("b"));
    install(
        &scratch.plugins(),
        "broken",
        &std::fs::read(plugin("tessera-test-handler")).unwrap(),
    );
    let routes = "[[routes]]\npath = \"/split\"\n\
        handler = { plugin = \"v\", canary = { plugin = \"next\", percent = 10 } }\n\
        [[routes]]\npath = \"/trap\"\n\
        handler = { plugin = \"v\", config = { mode = \"panic\" }, canary = { plugin = \"broken\", percent = 50, min_requests = 10, max_failure_rate = 0.2 } }\n";
    let gw = start(&config_text(&scratch, &shared_cache(), routes)).await;

    let mut b = 0;
    for _ in 0..200 {
        match answered_by(&get(&gw, "/split").await).as_deref() {
            Some("b") => b += 1,
            Some("a") => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        (15..=25).contains(&b),
        "10 % of 200 requests should reach the canary, {b} did"
    );

    // `broken` panics on every request (the route config asks it to; version a ignores it).
    let mut failed = 0;
    for _ in 0..20 {
        let reply = get(&gw, "/trap").await;
        match answered_by(&reply).as_deref() {
            Some("a") => {}
            _ => {
                assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
                failed += 1;
            }
        }
    }
    // 0.2 of 10 tolerates 2 failures; the third rolls the canary back.
    assert_eq!(
        failed, 3,
        "the canary should be rolled back after its third failure"
    );
    for _ in 0..40 {
        assert_eq!(
            answered_by(&get(&gw, "/trap").await).as_deref(),
            Some("a"),
            "traffic went to a rolled-back canary"
        );
    }
    // A plugin a route runs as its canary counts as in use.
    let reply = admin(
        &gw,
        Method::DELETE,
        "/admin/plugins/next",
        Some(TOKEN),
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    // An unrelated plugin change rebuilds the routing table; the rollback must stick.
    let reply = admin(
        &gw,
        Method::PUT,
        "/admin/plugins/unrelated",
        Some(TOKEN),
        version("b"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for _ in 0..20 {
        assert_eq!(
            answered_by(&get(&gw, "/trap").await).as_deref(),
            Some("a"),
            "the rollback did not survive a reload"
        );
    }
    gw.shutdown().await;
}
