//! The server: HTTP/2 cleartext, graceful shutdown.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tessera_tests::*;

#[tokio::test]
async fn serves_http2_cleartext() {
    let gw =
        gateway("[[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n").await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let uri: http::Uri = format!("http://{}/hello/h2", gw.local_addr())
        .parse()
        .unwrap();
    let response = h2
        .request(Request::get(uri).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("Hello, h2!"));
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (arrived, mut arrival) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = upstream(move |_| {
        let _ = arrived.send(());
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Response::new(full("finished"))
        }
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.slow]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/\"\nupstream = \"slow\"\n"
    ))
    .await;
    let addr = gw.local_addr();
    let in_flight = tokio::spawn(async move {
        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        let response = client()
            .request(Request::get(uri).body(Full::default()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    // In flight: the request has reached the upstream.
    tokio::time::timeout(Duration::from_secs(10), arrival.recv())
        .await
        .expect("the request reaches the upstream");
    gw.shutdown().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"finished");
    // Once shut down, new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
