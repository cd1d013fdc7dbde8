//! Liveness and readiness probes without a token on the metrics listener, as an orchestrator
//! (a Kubernetes `httpGet` probe, a load balancer's health check) asks for them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tessera_tests::*;

const TOKEN: &str = "probes-token-0123456789abcdef";

/// One request on a new connection (probes do not keep connections alive).
async fn ask(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Option<String>, String), String> {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client().request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, allow, String::from_utf8_lossy(&body).into_owned()))
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn probe_config(metrics: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n{metrics}\n"
    )
}

#[tokio::test]
async fn probes_answer_without_a_token_on_the_metrics_listener_only() {
    let gw = gateway(&probe_config("")).await;
    let probes = gw.metrics_addr().expect("metrics listener");

    let (status, _, body) = ask(probes, Method::GET, "/admin/health").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body), json!({ "status": "ok" }));

    // Readiness there says ready and nothing more: no counters, no refusal reasons.
    let (status, _, body) = ask(probes, Method::GET, "/admin/ready").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body), json!({ "status": "ready" }));

    let (status, allow, _) = ask(probes, Method::POST, "/admin/ready").await.unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow.as_deref(), Some("GET"));

    // Nothing else of the admin API is reachable without the token.
    for path in ["/admin/plugins", "/admin/reload", "/admin/healthz", "/"] {
        let (status, _, _) = ask(probes, Method::GET, path).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _, _) = ask(probes, Method::POST, "/admin/reload").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The admin listener still wants its token for the same paths, and gives details with it.
    let admin = gw.admin_addr().expect("admin listener");
    let (status, _, _) = ask(admin, Method::GET, "/admin/ready").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let detailed = client()
        .request(
            Request::get(format!("http://{admin}/admin/ready"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(detailed.status(), StatusCode::OK);
    let body = detailed.into_body().collect().await.unwrap().to_bytes();
    let body = json_of(&String::from_utf8_lossy(&body));
    assert_eq!(body["status"], "ready");
    assert!(body["reloads"].is_object(), "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn probes_answer_when_metrics_are_off() {
    let gw = gateway(&probe_config("enabled = false")).await;
    let probes = gw.metrics_addr().expect("metrics listener");
    let (status, _, _) = ask(probes, Method::GET, "/metrics").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in ["/admin/health", "/admin/ready"] {
        let (status, _, _) = ask(probes, Method::GET, path).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn readiness_fails_as_soon_as_shutdown_starts_while_requests_drain() {
    let (arrived, mut arrival) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (release, released) = tokio::sync::watch::channel(false);
    let up = upstream(move |_| {
        let _ = arrived.send(());
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Response::new(full("finished"))
        }
    })
    .await;
    let gw = gateway(&format!(
        "{}[upstreams.slow]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/\"\nupstream = \"slow\"\n",
        probe_config("")
    ))
    .await;
    let probes = gw.metrics_addr().expect("metrics listener");
    let (status, _, _) = ask(probes, Method::GET, "/admin/ready").await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let addr = gw.local_addr();
    let in_flight = tokio::spawn(async move {
        let response = client()
            .request(
                Request::get(format!("http://{addr}/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    tokio::time::timeout(Duration::from_secs(10), arrival.recv())
        .await
        .expect("the request reaches the upstream");

    let _ = gw.shutdown_handle().send(true);
    // The probe stops being answered while the request is still held by the upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match ask(probes, Method::GET, "/admin/ready").await {
            Err(e) => break e,
            Ok(answer) => {
                assert!(Instant::now() < deadline, "still answered: {answer:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        !in_flight.is_finished(),
        "probe failed only after: {refused}"
    );

    release.send(true).unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the drained request finishes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"finished");
    gw.wait().await;
}
