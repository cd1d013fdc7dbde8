//! Plugin config checked at load: a plugin's `config-check` export runs for every route entry
//! that uses it at start, on config and plugin reloads, on upload and in `tessera check`; a
//! refusal names the route and what is wrong, and the running version keeps serving.

use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tessera::RunningGateway;
use tessera_tests::*;

/// The error a gateway built from `routes` fails with.
async fn refused(routes: &str) -> String {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{routes}",
        plugins_section()
    );
    match tessera::Gateway::new(config(&text)).await {
        Ok(_) => panic!("the gateway started with\n{routes}"),
        Err(e) => format!("{e:#}"),
    }
}

fn headers_route(path: &str, request_table: &str) -> String {
    format!(
        "[[routes]]\npath = \"{path}\"\nupstream = \"up\"\n[[routes.filters]]\nplugin = \"headers\"\nconfig.{request_table}\n"
    )
}

#[tokio::test]
async fn a_typo_in_a_plugin_config_stops_the_start_and_names_route_entry_and_key() {
    let routes = format!(
        "[upstreams.up]\ntargets = [\"127.0.0.1:9\"]\n{}{}",
        headers_route("/fine", "request = { set = { x-a = \"1\" } }"),
        headers_route("/typo", "requst = { set = { x-a = \"1\" } }"),
    );
    let e = refused(&routes).await;
    assert!(e.contains("route `/typo` filters[0]"), "{e}");
    assert!(e.contains("plugin `headers@"), "{e}");
    assert!(
        e.contains("requst: unknown field `requst`, expected `request` or `response`"),
        "{e}"
    );
    assert!(
        !e.contains("column"),
        "JSON positions mean nothing to a TOML author: {e}"
    );

    // A check beyond the types: a key that does not parse, named by its place in the list.
    let jwt = "[upstreams.up]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/a\"\nupstream = \"up\"\n[[routes.filters]]\nplugin = \"jwt\"\nconfig.keys = [{ alg = \"HS256\", secret = \"0123456789abcdef0123456789abcdef\" }, { alg = \"RS256\", pem = \"not a key\" }]\n";
    let e = refused(jwt).await;
    assert!(e.contains("route `/a` filters[0]"), "{e}");
    assert!(e.contains("keys[1]"), "{e}");
    // The handler entry is named as `handler`.
    let e = refused(
        "[[routes]]\npath = \"/h\"\nhandler = { plugin = \"hello\", config = { greting = \"hi\" } }\n",
    )
    .await;
    assert!(
        e.contains("route `/h` handler: plugin `hello@") && e.contains("greting"),
        "{e}"
    );
}

#[tokio::test]
async fn a_plugin_without_the_export_loads_as_before() {
    // `test-filter` does not export `config-check`: its config is read by the first request, as
    // for any plugin that does not declare one.
    let upstream = upstream(|_req| async { http::Response::new(full("ok")) }).await;
    let gw = gateway(&format!(
        "[upstreams.up]\ntargets = [\"{upstream}\"]\n[[routes]]\npath = \"/\"\nupstream = \"up\"\n[[routes.filters]]\nplugin = \"test-filter\"\nconfig = {{ tag = \"t\", whatever = 1 }}\n"
    ))
    .await;
    let reply = get(&gw, "/").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["message"], "the plugin is misconfigured");
    let plugins = gw.live().runtime().plugins.clone();
    assert!(!plugins.get("test-filter").unwrap().checks_config());
    assert!(plugins.get("headers").unwrap().checks_config());
    gw.shutdown().await;
}

/// A config check that misbehaves costs the change, never the gateway, and what it says is
/// made safe before anyone reads it.
#[tokio::test]
async fn a_hostile_config_check_refuses_the_config_within_the_limits() {
    let scratch = Scratch::new("hostile");
    let token_file = scratch.path("token");
    std::fs::write(&token_file, "tok-5ecret-value").unwrap();
    let route = |check: &str| {
        format!(
            "[upstreams.target]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/x\"\nhandler = {{ plugin = \"hostile\", upstreams = [\"target\"], config = {{ check = \"{check}\", token = \"${{file:{}}}\", message = \"not like this\" }} }}\n",
            token_file.display()
        )
    };
    let started = Instant::now();
    let e = refused(&route("refuse")).await;
    assert!(
        e.contains("route `/x` handler") && e.ends_with("not like this"),
        "{e}"
    );
    let e = refused(&route("panic")).await;
    assert!(
        e.ends_with(
            "the config check trapped (wasm trap: wasm `unreachable` instruction executed)"
        ),
        "{e}"
    );
    let e = refused(&route("loop")).await;
    assert!(e.contains("did not finish within"), "{e}");
    let e = refused(&route("memory-bomb")).await;
    assert!(
        e.contains("memory limit"),
        "a memory bomb is named as one: {e}"
    );
    let e = refused(&route("noisy")).await;
    assert!(
        !e.chars().any(char::is_control),
        "control characters reach the log: {e:?}"
    );
    assert!(
        e.len() < 2 * 1024 + 200,
        "a 1 MiB message is cut: {} bytes",
        e.len()
    );
    let e = refused(&route("echo")).await;
    assert!(!e.contains("tok-5ecret-value"), "a secret leaks: {e}");
    assert!(e.contains("token `<redacted>`"), "{e}");
    let e = refused(&route("call")).await;
    assert!(e.contains("denied"), "a config check gets no grants: {e}");
    // 2 s is the plugin timeout of the test config; all of it in well under a minute.
    assert!(started.elapsed() < Duration::from_secs(60));

    let gw = gateway(&route("accept")).await;
    assert!(gw.live().runtime().plugins.get("hostile").is_some());
    gw.shutdown().await;
}

fn file_config(scratch: &Scratch, upstream: std::net::SocketAddr, headers_config: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 2000\n[access_log]\nformat = \"off\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0ken-t0ken-t0ken-t0ken\"\n\
         [plugins]\ndirectory = {:?}\ncache_dir = {:?}\n\
         [upstreams.up]\ntargets = [\"{upstream}\"]\n\
         [[routes]]\npath = \"/h\"\nupstream = \"up\"\n[[routes.filters]]\nplugin = \"headers\"\nconfig.{headers_config}\n",
        scratch.path("plugins").display().to_string(),
        workspace_root()
            .join("target")
            .join("plugin-cache")
            .display()
            .to_string(),
    )
}

async fn header_of(gw: &RunningGateway) -> Option<String> {
    let reply = get(gw, "/h").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.text().lines().next().map(str::to_owned)
}

fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// Reloads of the config, of plugin files and uploads through the admin API are each refused
/// when the result would serve a config its plugin refuses; the previous state keeps serving.
#[tokio::test]
async fn reloads_and_uploads_that_break_a_config_are_refused_and_the_old_keeps_serving() {
    let scratch = Scratch::new("reload");
    let plugins = scratch.path("plugins");
    install(
        &plugins,
        "headers",
        &std::fs::read(plugin("tessera-plugin-headers")).unwrap(),
    );
    // The upstream answers with the `x-a` header the filter set on the request.
    let upstream = upstream(|req| async move {
        let value = req
            .headers()
            .get("x-a")
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default();
        http::Response::new(full(value))
    })
    .await;
    let path = scratch.path("tessera.toml");
    std::fs::write(
        &path,
        file_config(&scratch, upstream, "request = { set = { x-a = \"one\" } }"),
    )
    .unwrap();
    let gw = tessera::Gateway::from_file(&path)
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(header_of(&gw).await.as_deref(), Some("one"));

    // A config reload with a typo in the filter's config.
    std::fs::write(
        &path,
        file_config(&scratch, upstream, "request = { sett = { x-a = \"two\" } }"),
    )
    .unwrap();
    let e = gw.live().reload_config().await.unwrap_err();
    let why = tessera::error::chain(&e);
    assert!(
        why.contains("route `/h` filters[0]") && why.contains("sett"),
        "{why}"
    );
    assert!(
        e.is_client_fault(),
        "a refused config is the operator's to fix"
    );
    assert_eq!(header_of(&gw).await.as_deref(), Some("one"));
    // Fixed, it applies.
    std::fs::write(
        &path,
        file_config(&scratch, upstream, "request = { set = { x-a = \"two\" } }"),
    )
    .unwrap();
    gw.live().reload_config().await.unwrap();
    assert_eq!(header_of(&gw).await.as_deref(), Some("two"));

    // A new version of the plugin file that refuses the running config: another filter's
    // component (jwt) dropped in as `headers`.
    let jwt = std::fs::read(plugin("tessera-plugin-jwt")).unwrap();
    install(&plugins, "headers", &jwt);
    let report = gw.live().reload_plugins().await;
    assert!(report.changed.is_empty(), "{:?}", report.changed);
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.contains("route `/h` filters[0]") && r.contains("unknown field `request`")),
        "{:?}",
        report.refused
    );
    assert_eq!(header_of(&gw).await.as_deref(), Some("two"));

    // The same through the admin API: 400 with the message and code, nothing written.
    install(
        &plugins,
        "headers",
        &std::fs::read(plugin("tessera-plugin-headers")).unwrap(),
    );
    let admin = gw.admin_addr().unwrap();
    let reply = fetch(
        http::Request::builder()
            .method(Method::PUT)
            .uri(format!("http://{admin}/admin/plugins/headers"))
            .header("authorization", "Bearer t0ken-t0ken-t0ken-t0ken")
            .body(http_body_util::Full::new(bytes::Bytes::from(jwt)))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["code"], "config_refused", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `request`"),
        "{body}"
    );
    let on_disk = std::fs::read(plugins.join("headers.wasm")).unwrap();
    assert_eq!(
        on_disk,
        std::fs::read(plugin("tessera-plugin-headers")).unwrap(),
        "a refused upload is not written"
    );
    assert_eq!(header_of(&gw).await.as_deref(), Some("two"));
    gw.shutdown().await;
}

/// `tessera check`, the command operators run before a deploy, runs the plugins' checks.
#[tokio::test]
async fn tessera_check_reports_a_refused_plugin_config() {
    let scratch = Scratch::new("cli");
    install(
        &scratch.path("plugins"),
        "headers",
        &std::fs::read(plugin("tessera-plugin-headers")).unwrap(),
    );
    let path = scratch.path("tessera.toml");
    let bad = file_config(
        &scratch,
        "127.0.0.1:9".parse().unwrap(),
        "request = { set = { x-a = 1 } }",
    );
    std::fs::write(&path, &bad).unwrap();
    let out = std::process::Command::new(tessera_binary())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("route `/h` filters[0]")
            && stderr.contains("request.set.x-a: invalid type: integer `1`, expected a string"),
        "{stderr}"
    );
    std::fs::write(&path, bad.replace("x-a = 1", "x-a = \"1\"")).unwrap();
    let out = std::process::Command::new(tessera_binary())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
