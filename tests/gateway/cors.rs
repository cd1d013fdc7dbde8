//! The `cors` filter in front of a proxied route: preflights answered at the gateway, the
//! policy's headers on responses, hostile headers, the config check, and a real browser
//! (headless Chromium) making cross-origin `fetch` calls from a page on another port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tessera::RunningGateway;
use tessera_tests::*;

/// The methods an upstream received, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// An upstream that records each request's method and answers with what it saw (method,
/// `Origin`, `Cookie`), an exposed and a hidden header, and CORS headers of its own that the
/// gateway must replace.
async fn recording_upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let addr = upstream(move |req| {
        log.lock().unwrap().push(req.method().to_string());
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let echo = serde_json::json!({
            "method": req.method().as_str(),
            "origin": header("origin"),
            "cookie": header("cookie"),
        });
        async move {
            Response::builder()
                .header("content-type", "application/json")
                .header("x-total-count", "3")
                .header("x-internal", "hidden")
                .header("vary", "accept-encoding")
                .header("access-control-allow-origin", "*")
                .header("access-control-expose-headers", "x-internal")
                .body(full(echo.to_string()))
                .unwrap()
        }
    })
    .await;
    (addr, seen)
}

/// A route `{path}/{*rest}` to `upstream` behind the cors filter with `config` (TOML keys,
/// one a line).
fn cors_route(path: &str, config: &str) -> String {
    format!(
        "[[routes]]\npath = \"{path}/{{*rest}}\"\nupstream = \"app\"\n\
         [[routes.filters]]\nplugin = \"cors\"\n[routes.filters.config]\n{config}\n"
    )
}

async fn cors_gateway(upstream: SocketAddr, routes: &[String]) -> RunningGateway {
    gateway(&format!(
        "[upstreams.app]\ntargets = [\"{upstream}\"]\n{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        routes.concat()
    ))
    .await
}

fn options(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(Method::OPTIONS).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::default()).unwrap()
}

fn with_headers(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = options(path, headers);
    *request.method_mut() = method;
    request
}

/// Every value of `name`, in order.
fn all(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Every `access-control-*` header of a reply, sorted by name (the gateway does not keep
/// the order a plugin set them in).
fn cors_headers(reply: &Reply) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    headers
}

fn sorted(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = list
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    list.sort();
    list
}

const APP: &str = "https://app.example.com";

fn app_route() -> String {
    cors_route(
        "/api",
        &format!(
            "allow_origins = [\"{APP}\", \"https://*.example.org\"]\n\
             allow_methods = [\"GET\", \"POST\", \"PUT\"]\n\
             allow_headers = [\"content-type\", \"x-custom\"]\n\
             expose_headers = [\"x-total-count\"]\n\
             allow_credentials = true\nmax_age = 600\n"
        ),
    )
}

#[tokio::test]
async fn preflights_are_answered_by_the_gateway_and_never_reach_the_upstream() {
    let (up, seen) = recording_upstream().await;
    let gw = cors_gateway(up, &[app_route()]).await;

    let reply = send(
        &gw,
        options(
            "/api/items",
            &[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type,x-custom"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(
        cors_headers(&reply),
        sorted(&[
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, POST, PUT"),
            ("access-control-allow-headers", "content-type, x-custom"),
            ("access-control-max-age", "600"),
        ])
    );
    assert_eq!(
        all(&reply, "vary"),
        ["origin, access-control-request-method, access-control-request-headers"]
    );
    assert!(reply.body.is_empty());

    // Refused preflights are answered here too, 403 and without allow headers.
    for headers in [
        [
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ],
        [("origin", APP), ("access-control-request-method", "DELETE")],
    ] {
        let reply = send(&gw, options("/api/items", &headers)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(cors_headers(&reply), [], "{headers:?}");
        assert_eq!(reply.json()["error"], "forbidden");
    }
    assert_eq!(*seen.lock().unwrap(), Vec::<String>::new());

    // An OPTIONS that is not a preflight is the upstream's to answer.
    let reply = send(&gw, options("/api/items", &[("origin", APP)])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["method"], "OPTIONS");
    assert_eq!(*seen.lock().unwrap(), ["OPTIONS"]);
}

#[tokio::test]
async fn responses_carry_the_gateways_policy_and_not_the_upstreams_cors_headers() {
    let (up, seen) = recording_upstream().await;
    let gw = cors_gateway(
        up,
        &[
            app_route(),
            cors_route(
                "/strict",
                &format!("allow_origins = [\"{APP}\"]\nrefuse_disallowed_origins = true\n"),
            ),
        ],
    )
    .await;

    let reply = send(
        &gw,
        with_headers(
            Method::GET,
            "/api/items",
            &[("origin", "https://a.b.example.org")],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        cors_headers(&reply),
        sorted(&[
            ("access-control-allow-origin", "https://a.b.example.org"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-total-count"),
        ])
    );
    assert_eq!(all(&reply, "vary"), ["accept-encoding", "origin"]);

    // A disallowed origin still reaches the upstream (the browser is what blocks the page
    // from reading the answer), but the upstream's `*` is gone.
    for origin in ["https://evil.example", "https://example.org", "null"] {
        let reply = send(
            &gw,
            with_headers(Method::POST, "/api/items", &[("origin", origin)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{origin}");
        assert_eq!(reply.json()["origin"], origin);
        assert_eq!(cors_headers(&reply), [], "{origin}");
        assert_eq!(all(&reply, "vary"), ["accept-encoding", "origin"]);
    }
    // Without Origin: not CORS, the upstream's CORS headers go all the same.
    let reply = get(&gw, "/api/items").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(cors_headers(&reply), []);
    assert_eq!(seen.lock().unwrap().len(), 5);

    // With refuse_disallowed_origins the upstream never sees them.
    let reply = send(
        &gw,
        with_headers(
            Method::POST,
            "/strict/items",
            &[("origin", "https://evil.example")],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(cors_headers(&reply), []);
    assert_eq!(all(&reply, "vary"), ["origin"]);
    assert_eq!(seen.lock().unwrap().len(), 5);
    let reply = send(
        &gw,
        with_headers(Method::POST, "/strict/items", &[("origin", APP)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn hostile_cors_headers_get_clear_answers_and_the_gateway_keeps_serving() {
    let (up, _seen) = recording_upstream().await;
    let gw = cors_gateway(up, &[app_route()]).await;
    let huge = format!("https://{}.example.org", "a".repeat(16 * 1024));
    let allowed_label_run = format!("https://{}example.org", "a.".repeat(100));

    // Actual requests: passed on, no CORS headers.
    let two_origins = Request::get("/api/items")
        .header("origin", APP)
        .header("origin", "https://evil.example")
        .body(Full::default())
        .unwrap();
    for request in [
        two_origins,
        with_headers(Method::GET, "/api/items", &[("origin", huge.as_str())]),
        with_headers(
            Method::GET,
            "/api/items",
            &[("origin", "https://app.example.com/")],
        ),
        with_headers(Method::GET, "/api/items", &[("origin", "*")]),
    ] {
        let shown = format!("{:?}", request.headers())
            .chars()
            .take(200)
            .collect::<String>();
        let reply = send(&gw, request).await;
        assert_eq!(reply.status, StatusCode::OK, "{shown}");
        assert_eq!(cors_headers(&reply), [], "{shown}");
    }
    // A deep but valid subdomain is still an origin.
    let reply = send(
        &gw,
        with_headers(
            Method::GET,
            "/api/items",
            &[("origin", allowed_label_run.as_str())],
        ),
    )
    .await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(allowed_label_run.as_str())
    );

    // Preflights with bad parts: 403, the reason in the body, nothing reflected.
    for (headers, reason) in [
        (
            vec![
                ("origin", huge.as_str()),
                ("access-control-request-method", "GET"),
            ],
            "origin not allowed",
        ),
        (
            vec![
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-custom, bad header"),
            ],
            "access-control-request-headers is not a list of header names",
        ),
        (
            vec![
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-custom, x(y)"),
            ],
            "access-control-request-headers is not a list of header names",
        ),
        (
            vec![
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-method", "PUT"),
            ],
            "access-control-request-method is not one method name",
        ),
    ] {
        let reply = send(&gw, options("/api/items", &headers)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(
            reply.json()["message"],
            format!("CORS preflight refused: {reason}")
        );
        assert_eq!(cors_headers(&reply), []);
    }
    let reply = send(
        &gw,
        with_headers(Method::GET, "/api/items", &[("origin", APP)]),
    )
    .await;
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn credentials_with_any_origin_are_refused_at_load_naming_the_key() {
    let routes = format!(
        "[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n{}",
        cors_route(
            "/api",
            "allow_origins = [\"*\"]\nallow_credentials = true\n"
        )
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{routes}",
        plugins_section()
    );
    let error = match tessera::Gateway::new(config(&text)).await {
        Ok(_) => panic!("the gateway started with credentials and `*`"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("route `/api/{*rest}` filters[0]"), "{error}");
    assert!(error.contains("plugin `cors@"), "{error}");
    assert!(
        error.contains("allow_credentials: cannot be true when allow_origins has \"*\""),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// A real browser.

/// The page every browser test loads. Its script reads the call to make from its query
/// (`url`, `method`, `credentials`, `header`), makes it with `fetch` and writes what the page
/// could see into `#result` as JSON: the status, the exposed and an unexposed header, and the
/// body; or the error when the browser refused.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head>
<body><pre id="result">pending</pre>
<script>
const q = new URLSearchParams(location.search);
const init = { method: q.get("method") || "GET", credentials: q.get("credentials") || "same-origin", headers: {} };
if (q.get("header")) { init.headers[q.get("header")] = "1"; }
const out = document.getElementById("result");
fetch(q.get("url"), init)
  .then(async (r) => {
    out.textContent = JSON.stringify({ ok: true, status: r.status, exposed: r.headers.get("x-total-count"), hidden: r.headers.get("x-internal"), body: await r.text() });
  })
  .catch((e) => { out.textContent = JSON.stringify({ ok: false, error: String(e) }); });
</script></body></html>
"#;

/// A server for the page on its own port (its own origin), which also sets a cookie for
/// 127.0.0.1, so that credentialed calls to the gateway's port have one to send.
async fn page_server() -> SocketAddr {
    upstream(|_req| async {
        Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("set-cookie", "session=page-cookie; Path=/")
            .header("cache-control", "no-store")
            .body(full(PAGE))
            .unwrap()
    })
    .await
}

/// `chromium` on PATH, or a failure that says how to get it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not on PATH: the CORS tests need a real browser; run `cargo xtask test`, which installs it (apt-get install chromium)"
            )
        })
}

/// Wall-clock bound of one browser run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads `page` in headless Chromium and returns the JSON the page wrote into `#result`.
async fn browse(page: String) -> serde_json::Value {
    let chromium = chromium();
    // One browser at a time: a handful of Chromium processes per test would compete for the
    // same few cores and make every run slow.
    static ONE_AT_A_TIME: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    let _turn = ONE_AT_A_TIME
        .get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await;
    let scratch = Scratch::new("cors-browser");
    let dir = scratch.path("");
    // Waiting for the process blocks, and the gateway and servers the page talks to run on
    // this test's runtime: the wait goes to the blocking pool.
    let (dom, stderr) = tokio::task::spawn_blocking(move || run_chromium(&chromium, &dir, &page))
        .await
        .expect("the browser run panicked");
    drop(scratch);
    let Some(result) = result_text(&dom) else {
        panic!("the page has no #result\n--- DOM ---\n{dom}\n--- chromium stderr ---\n{stderr}");
    };
    serde_json::from_str(&result).unwrap_or_else(|_| {
        panic!(
            "the page did not finish its fetch: #result is {result:?}\n--- chromium stderr ---\n{stderr}"
        )
    })
}

/// Runs `chromium --dump-dom` on `page` in its own process group with a fresh profile under
/// `dir`; returns standard output (the DOM) and standard error. The whole group is killed at
/// the end, and at [`BROWSER_TIMEOUT`] if it is still running then.
fn run_chromium(chromium: &Path, dir: &Path, page: &str) -> (String, String) {
    use std::os::unix::process::CommandExt;

    let stdout_path = dir.join("dom.html");
    let stderr_path = dir.join("stderr.txt");
    let mut child = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-proxy-server",
            // Virtual time stands still while the page's fetch is on the network, so the DOM
            // is dumped once the script has written its result.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(page)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let group = child.id();
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let finished = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => break false,
        }
    };
    // The browser's helpers (renderer, zygote) are in its group: none outlives the run.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    // Should `kill` be missing, the browser process itself still goes.
    let _ = child.kill();
    let _ = child.wait();
    let dom = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        finished,
        "chromium did not finish within {BROWSER_TIMEOUT:?}\n--- DOM ---\n{dom}\n--- stderr ---\n{stderr}"
    );
    (dom, stderr)
}

/// The text of `<pre id="result">` in a dumped DOM, entities decoded.
fn result_text(dom: &str) -> Option<String> {
    let start = dom.find("<pre id=\"result\">")? + "<pre id=\"result\">".len();
    let end = start + dom[start..].find("</pre>")?;
    Some(
        dom[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&"),
    )
}

/// The page on `page_server`, asked to call `url` with `query` (already encoded).
fn page_url(page_server: SocketAddr, url: &str, query: &str) -> String {
    format!("http://{page_server}/page.html?url={}{query}", encode(url))
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn failed_in_browser(result: &serde_json::Value) -> bool {
    result["ok"] == false
        && result["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("TypeError"))
}

/// The body the upstream answered, as the page read it.
fn upstream_saw(result: &serde_json::Value) -> serde_json::Value {
    let body = result["body"].as_str().expect("a body");
    serde_json::from_str(body).unwrap()
}

/// Requests the gateway answered on `route` with `method` and a 2xx status, by its metrics.
async fn answered_2xx(gw: &RunningGateway, route: &str, method: &str) -> u64 {
    let addr = gw.metrics_addr().expect("metrics listener");
    let reply = fetch(
        Request::get(format!("http://{addr}/metrics"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let series = format!(
        "tessera_http_requests_total{{route=\"{route}\",method=\"{method}\",status_class=\"2xx\"}} "
    );
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// A gateway whose `/api` allows the page at `allowed` (with credentials), and whose `/open`
/// allows any origin without credentials, both to a recording upstream.
async fn browser_gateway(allowed: SocketAddr) -> (RunningGateway, Seen) {
    let (up, seen) = recording_upstream().await;
    let gw = cors_gateway(
        up,
        &[
            cors_route(
                "/api",
                &format!(
                    "allow_origins = [\"http://{allowed}\"]\n\
                     allow_methods = [\"GET\", \"POST\", \"PUT\"]\n\
                     allow_headers = [\"x-custom\"]\n\
                     expose_headers = [\"x-total-count\"]\n\
                     allow_credentials = true\n"
                ),
            ),
            cors_route(
                "/open",
                "allow_origins = [\"*\"]\nexpose_headers = [\"x-total-count\"]\n",
            ),
        ],
    )
    .await;
    (gw, seen)
}

#[tokio::test]
async fn browser_reads_an_allowed_origins_response_but_only_the_exposed_headers() {
    let page = page_server().await;
    let (gw, seen) = browser_gateway(page).await;
    let api = format!("http://{}/api/items", gw.local_addr());

    let result = browse(page_url(page, &api, "")).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["status"], 200);
    assert_eq!(result["exposed"], "3", "x-total-count is exposed");
    assert_eq!(
        result["hidden"],
        serde_json::Value::Null,
        "x-internal is not, whatever the upstream said"
    );
    let saw = upstream_saw(&result);
    assert_eq!(saw["origin"], format!("http://{page}"));
    assert_eq!(
        saw["cookie"],
        serde_json::Value::Null,
        "no credentials unless asked for"
    );
    assert_eq!(*seen.lock().unwrap(), ["GET"]);

    // `*` for any origin works for a call without credentials.
    let open = format!("http://{}/open/items", gw.local_addr());
    let result = browse(page_url(page, &open, "")).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["exposed"], "3");
}

#[tokio::test]
async fn browser_blocks_a_disallowed_origin_though_the_request_reaches_the_upstream() {
    let allowed = page_server().await;
    let other = page_server().await;
    let (gw, seen) = browser_gateway(allowed).await;
    let api = format!("http://{}/api/items", gw.local_addr());

    let result = browse(page_url(other, &api, "")).await;
    assert!(failed_in_browser(&result), "{result}");
    // A simple GET is sent without a preflight; the gateway passed it on without CORS
    // headers and the browser kept the answer from the page.
    assert_eq!(*seen.lock().unwrap(), ["GET"]);

    // The same page from the allowed port reads it.
    let result = browse(page_url(allowed, &api, "")).await;
    assert_eq!(result["ok"], true, "{result}");
}

#[tokio::test]
async fn browser_sends_credentials_only_where_the_policy_allows_them() {
    let page = page_server().await;
    let (gw, seen) = browser_gateway(page).await;
    let api = format!("http://{}/api/items", gw.local_addr());
    let open = format!("http://{}/open/items", gw.local_addr());

    // allow_credentials = true and the page's own origin echoed: the cookie goes, the answer
    // is readable.
    let result = browse(page_url(page, &api, "&credentials=include")).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["exposed"], "3");
    assert_eq!(upstream_saw(&result)["cookie"], "session=page-cookie");

    // `*` without allow_credentials: the browser sends the cookie but refuses the page the
    // answer, because the response does not allow credentials.
    let result = browse(page_url(page, &open, "&credentials=include")).await;
    assert!(failed_in_browser(&result), "{result}");
    assert_eq!(*seen.lock().unwrap(), ["GET", "GET"]);
}

#[tokio::test]
async fn browser_preflights_a_non_simple_request_and_the_gateway_answers_it() {
    let page = page_server().await;
    let (gw, seen) = browser_gateway(page).await;
    let api = format!("http://{}/api/items", gw.local_addr());

    // PUT with a custom header needs a preflight; the gateway answers it and the PUT follows.
    let result = browse(page_url(page, &api, "&method=PUT&header=x-custom")).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(upstream_saw(&result)["method"], "PUT");
    assert_eq!(
        *seen.lock().unwrap(),
        ["PUT"],
        "the preflight never reached the upstream"
    );
    assert_eq!(answered_2xx(&gw, "/api/{*rest}", "OPTIONS").await, 1);

    // A header the policy does not allow: the preflight is refused and the PUT is never sent.
    let result = browse(page_url(page, &api, "&method=PUT&header=x-other")).await;
    assert!(failed_in_browser(&result), "{result}");
    // A method it does not allow: the same.
    let result = browse(page_url(page, &api, "&method=DELETE")).await;
    assert!(failed_in_browser(&result), "{result}");
    assert_eq!(*seen.lock().unwrap(), ["PUT"]);
    assert_eq!(answered_2xx(&gw, "/api/{*rest}", "OPTIONS").await, 1);
}
