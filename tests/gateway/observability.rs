//! What an operator sees: Prometheus metrics (checked with Prometheus' own `promtool`), the
//! access log, and OpenTelemetry traces received by an in-process OTLP/HTTP collector.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;
use tessera_tests::*;

const TOKEN: &str = "observability-token-0123456789";

async fn echo_upstream() -> SocketAddr {
    upstream(|req| async move {
        let tp = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Response::builder()
            .header("content-type", "application/json")
            .header("x-seen-traceparent", tp)
            .body(full(format!("{{\"path\":\"{}\"}}", req.uri().path())))
            .unwrap()
    })
    .await
}

async fn scrape(addr: SocketAddr, token: Option<&str>) -> (StatusCode, String, String) {
    scrape_as(addr, token, None).await
}

/// What Prometheus itself sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn scrape_as(
    addr: SocketAddr,
    token: Option<&str>,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = Request::get(format!("http://{addr}/metrics"));
    if let Some(a) = accept {
        request = request.header("accept", a);
    }
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let reply = fetch(request.body(Full::new(Bytes::new())).unwrap()).await;
    let content_type = reply.header("content-type").unwrap_or_default().to_owned();
    let text = String::from_utf8(reply.body.to_vec()).expect("the exposition is UTF-8");
    (reply.status, content_type, text)
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// Runs Prometheus' `promtool check metrics` on an exposition. `cargo xtask test` installs it
/// (Debian's `prometheus` package).
fn promtool_check(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check the metrics exposition ({e}); `cargo xtask test` installs it (apt-get install prometheus)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the exposition:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_count_traffic_and_pass_promtool() {
    let users = echo_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.users]\ntargets = [\"{users}\"]\n\
         [[routes]]\npath = \"/users/{{id}}\"\nupstream = \"users\"\n\
         [[routes]]\npath = \"/calls\"\nhandler = {{ plugin = \"test-handler\", upstreams = [\"users\"], config = {{ mode = \"fan-out\", urls = [\"http://users/1\", \"http://users/2\", \"http://nope/3\"] }} }}\n\
         [[routes]]\npath = \"/panic\"\nhandler = {{ plugin = \"test-handler\", config = {{ mode = \"panic\" }} }}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/users/7").await.status, StatusCode::OK);
    }
    assert_eq!(get(&gw, "/nowhere").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&gw, "/calls").await.status, StatusCode::OK);
    assert_eq!(
        get(&gw, "/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let admin = gw.admin_addr().unwrap();
    let (status, _, _) = scrape(admin, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the admin listener needs the token"
    );
    let (status, content_type, text) = scrape(admin, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    promtool_check(&text);
    // Prometheus asks for OpenMetrics and gets it, with the same samples.
    let (_, content_type, openmetrics) =
        scrape_as(admin, Some(TOKEN), Some(PROMETHEUS_ACCEPT)).await;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(openmetrics.contains("# TYPE tessera_http_requests counter\n"));

    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        count(
            r#"tessera_http_requests_total{route="/users/{id}",method="GET",status_class="2xx"}"#
        ),
        3.0
    );
    assert_eq!(
        count(r#"tessera_http_requests_total{route="unmatched",method="GET",status_class="4xx"}"#),
        1.0
    );
    assert_eq!(
        count(r#"tessera_http_requests_total{route="/panic",method="GET",status_class="5xx"}"#),
        1.0
    );
    assert_eq!(
        count(r#"tessera_http_request_duration_seconds_count{route="/users/{id}"}"#),
        3.0
    );
    let target = format!(r#"upstream="users",target="{users}""#);
    // Three proxied requests and two plugin calls reached the target.
    assert_eq!(
        count(&format!(
            "tessera_upstream_request_duration_seconds_count{{{target}}}"
        )),
        5.0
    );
    assert_eq!(
        count(&format!("tessera_upstream_target_healthy{{{target}}}")),
        1.0
    );
    assert_eq!(
        count(
            r#"tessera_plugin_outbound_calls_total{plugin="test-handler",upstream="users",result="ok"}"#
        ),
        2.0
    );
    assert_eq!(
        count(
            r#"tessera_plugin_outbound_calls_total{plugin="test-handler",upstream="-",result="denied"}"#
        ),
        1.0
    );
    let version = gw
        .live()
        .runtime()
        .plugins
        .get("test-handler")
        .unwrap()
        .version()
        .to_owned();
    let plugin = format!(r#"plugin="test-handler",version="{version}""#);
    assert_eq!(
        count(&format!(
            "tessera_plugin_failures_total{{{plugin},kind=\"trap\"}}"
        )),
        1.0
    );
    assert_eq!(
        count(&format!(
            "tessera_plugin_instantiation_duration_seconds_count{{{plugin}}}"
        )),
        2.0
    );
    assert_eq!(
        count(&format!(
            "tessera_plugin_call_duration_seconds_count{{{plugin},phase=\"handle\"}}"
        )),
        2.0
    );
    assert_eq!(count("tessera_plugin_instances_in_use"), 0.0);
    assert!(count("tessera_plugin_instances_capacity") >= 1.0);
    assert_eq!(count("tessera_plugin_instances_queued"), 0.0);
    // A connection held open is counted while it is open.
    let held = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    let open_now = || async {
        let (_, _, text) = scrape(admin, Some(TOKEN)).await;
        sample(&text, "tessera_open_connections").unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_now().await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open_now().await, 1.0);
    drop(held);
    while open_now().await > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open_now().await, 0.0);

    // The scrape listener serves the same metrics without a token, and nothing else.
    let (status, _, open) = scrape(gw.metrics_addr().unwrap(), None).await;
    assert_eq!(status, StatusCode::OK);
    promtool_check(&open);
    assert_eq!(
        sample(
            &open,
            r#"tessera_http_requests_total{route="/users/{id}",method="GET",status_class="2xx"}"#
        ),
        Some(3.0)
    );
    let other = client()
        .request(
            Request::get(format!(
                "http://{}/admin/plugins",
                gw.metrics_addr().unwrap()
            ))
            .body(Full::new(Bytes::new()))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    gw.shutdown().await;
}

#[tokio::test]
async fn reloads_are_counted_by_result() {
    let dir = tempdir("metrics-reload");
    let path = dir.join("tessera.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    );
    std::fs::write(&path, &text).unwrap();
    let gw = tessera::Gateway::from_file(&path)
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    gw.live().reload_config().await.unwrap();
    std::fs::write(&path, format!("{text}\n[server2]\n")).unwrap();
    assert!(gw.live().reload_config().await.is_err());
    let (_, _, text) = scrape(gw.admin_addr().unwrap(), Some(TOKEN)).await;
    assert_eq!(
        sample(&text, r#"tessera_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"tessera_reloads_total{result="refused"}"#),
        Some(1.0)
    );
    gw.shutdown().await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = workspace_root()
        .join("target")
        .join("tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The log's lines once it has at least `n` (the writer runs on its own thread).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let users = echo_upstream().await;
    let dir = tempdir("access-json");
    let log = dir.join("access.log");
    let gw = gateway(&format!(
        "[upstreams.users]\ntargets = [\"{users}\"]\n\
         [[routes]]\npath = \"/users/{{id}}\"\nupstream = \"users\"\n\
         [[routes]]\npath = \"/hello\"\nhandler = {{ plugin = \"test-handler\" }}\n\
         [access_log]\npath = {:?}\n",
        log.display().to_string()
    ))
    .await;
    let proxied = send(
        &gw,
        request(Method::POST, "/users/7?token=secret", "twelve bytes"),
    )
    .await;
    assert_eq!(proxied.status, StatusCode::OK);
    let handled = get(&gw, "/hello").await;
    let missing = get(&gw, "/nowhere").await;
    let lines = log_lines(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let by_id = |reply: &Reply| {
        let id = reply.header("x-request-id").unwrap();
        entries
            .iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
            .clone()
    };
    let e = by_id(&proxied);
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/users/7", "the query is not logged");
    assert_eq!(e["route"], "/users/{id}");
    assert_eq!(e["status"], 200);
    assert_eq!(e["bytes_in"], 12);
    assert_eq!(e["bytes_out"], proxied.body.len());
    assert_eq!(e["served_by"], format!("users/{users}"));
    assert_eq!(e["client"], "127.0.0.1");
    assert!(e["error"].is_null());
    assert_eq!(e["trace_id"].as_str().unwrap().len(), 32);
    assert!(e["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    let e = by_id(&handled);
    assert!(
        e["served_by"]
            .as_str()
            .unwrap()
            .starts_with("test-handler@"),
        "{e}"
    );
    let e = by_id(&missing);
    assert_eq!(e["status"], 404);
    assert_eq!(e["error"], "not_found");
    assert!(e["route"].is_null());
    gw.shutdown().await;
}

#[tokio::test]
async fn access_log_text_format_is_one_readable_line() {
    let dir = tempdir("access-text");
    let log = dir.join("access.log");
    let gw = gateway(&format!(
        "[[routes]]\npath = \"/hello\"\nhandler = {{ plugin = \"test-handler\" }}\n\
         [access_log]\nformat = \"text\"\npath = {:?}\n",
        log.display().to_string()
    ))
    .await;
    let reply = get(&gw, "/hello").await;
    let lines = log_lines(&log, 1).await;
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(line.contains("127.0.0.1 \"GET /hello\" 200"), "{line}");
    assert!(line.contains("route=/hello"), "{line}");
    assert!(
        line.contains(&format!(
            "request_id={}",
            reply.header("x-request-id").unwrap()
        )),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "no escape codes: {line}");
    gw.shutdown().await;
}

/// An OTLP/HTTP collector: decodes every export and keeps the spans.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = Arc::clone(&spans);
    let addr = upstream(move |req| {
        let kept = Arc::clone(&kept);
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(
                req.headers()["content-type"],
                "application/x-protobuf",
                "OTLP/HTTP protobuf"
            );
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
            for resource in export.resource_spans {
                for scope in resource.scope_spans {
                    kept.lock().unwrap().extend(scope.spans);
                }
            }
            Response::new(full(Bytes::new()))
        }
    })
    .await;
    (addr, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

#[tokio::test]
async fn one_request_makes_one_trace_request_plugin_and_outbound_calls() {
    let (collector, spans) = collector().await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let upstream_seen = Arc::clone(&seen);
    let users = upstream(move |req| {
        let seen = Arc::clone(&upstream_seen);
        async move {
            if let Some(tp) = req.headers().get("traceparent") {
                seen.lock().unwrap().push(tp.to_str().unwrap().to_owned());
            }
            Response::new(full("ok"))
        }
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.users]\ntargets = [\"{users}\"]\n\
         [[routes]]\npath = \"/fan/{{id}}\"\nhandler = {{ plugin = \"test-handler\", upstreams = [\"users\"], config = {{ mode = \"fan-out\", urls = [\"http://users/1\", \"http://users/2\", \"http://users/3\"] }} }}\n\
         [telemetry]\nenabled = true\nendpoint = \"http://{collector}/v1/traces\"\nservice_name = \"tessera-test\"\n"
    ))
    .await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut req = request(Method::GET, "/fan/9", "");
    req.headers_mut().insert(
        "traceparent",
        format!("00-{client_trace}-{client_span}-01")
            .parse()
            .unwrap(),
    );
    let reply = send(&gw, req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    gw.flush_traces().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while spans.lock().unwrap().len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 5, "request + plugin + 3 outbound: {spans:#?}");
    for s in &spans {
        assert_eq!(hex(&s.trace_id), client_trace, "one trace, the client's");
    }
    let by_name: HashMap<&str, Vec<&Span>> = spans.iter().fold(HashMap::new(), |mut m, s| {
        m.entry(s.name.as_str()).or_default().push(s);
        m
    });
    let request_span = by_name["tessera.request"][0];
    assert_eq!(hex(&request_span.parent_span_id), client_span);
    assert_eq!(
        attribute(request_span, "http.route").as_deref(),
        Some("/fan/{id}")
    );
    assert_eq!(
        attribute(request_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(request_span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(request_span, "url.path").as_deref(),
        Some("/fan/9")
    );
    let plugin_span = by_name["tessera.plugin.handle"][0];
    assert_eq!(plugin_span.parent_span_id, request_span.span_id);
    assert_eq!(
        attribute(plugin_span, "tessera.plugin.name").as_deref(),
        Some("test-handler")
    );
    let outbound = &by_name["tessera.outbound"];
    assert_eq!(outbound.len(), 3);
    let mut upstream_parents: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|tp| tp.split('-').nth(2).unwrap().to_owned())
        .collect();
    upstream_parents.sort();
    let mut outbound_ids: Vec<String> = outbound.iter().map(|s| hex(&s.span_id)).collect();
    outbound_ids.sort();
    assert_eq!(
        upstream_parents, outbound_ids,
        "each upstream's traceparent names its outbound span"
    );
    for s in outbound {
        assert_eq!(s.parent_span_id, plugin_span.span_id);
        assert_eq!(
            attribute(s, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(attribute(s, "server.address").as_deref(), Some("users"));
    }
    gw.shutdown().await;
}
