//! Response compression: gzip and brotli negotiated by `accept-encoding`, for proxied and plugin
//! routes, streaming, and left alone where it must be.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tessera_tests::*;

/// A JSON document of about `items * 40` bytes.
fn json_doc(items: usize) -> String {
    let list: Vec<String> = (0..items)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"item-{i}\",\"in_stock\":{}}}",
                i % 3 == 0
            )
        })
        .collect();
    format!("{{\"items\":[{}]}}", list.join(","))
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .expect("a valid brotli body");
    out
}

/// Chunks of the streamed document, and the document whole.
const STREAM_CHUNKS: usize = 300;

fn stream_chunk(i: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"chunk\":{i},\"pad\":\"{}\"}}\n",
        "x".repeat(1000)
    ))
}

fn streamed_doc() -> Vec<u8> {
    (0..STREAM_CHUNKS)
        .flat_map(|i| stream_chunk(i).to_vec())
        .collect()
}

fn answer(content_type: &str, body: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder()
        .header("content-type", content_type)
        .body(full(body.into()))
        .unwrap()
}

async fn start() -> tessera::RunningGateway {
    let up = upstream(|req| async move {
        let path = req.uri().path().to_owned();
        if path.ends_with("/big.json") {
            let mut r = answer("application/json; charset=utf-8", json_doc(200));
            r.headers_mut()
                .insert("etag", http::HeaderValue::from_static("\"doc-v1\""));
            r
        } else if path.ends_with("/small.json") {
            answer("application/json", json_doc(2))
        } else if path.ends_with("/image.png") {
            answer("image/png", vec![7u8; 8000])
        } else if path.ends_with("/pre.gz") {
            let mut r = answer("application/json", gzip(json_doc(200).as_bytes()));
            r.headers_mut()
                .insert("content-encoding", http::HeaderValue::from_static("gzip"));
            r
        } else if path.ends_with("/stream") {
            // No length: chunked, with pauses so the encoder sees its source wait.
            let chunks = futures::stream::unfold(0usize, |i| async move {
                if i == STREAM_CHUNKS {
                    return None;
                }
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Some((Ok(hyper::body::Frame::data(stream_chunk(i))), i + 1))
            });
            Response::builder()
                .header("content-type", "application/x-ndjson+json")
                .body(StreamBody::new(chunks).boxed_unsync())
                .unwrap()
        } else {
            answer("text/plain", "not found")
        }
    })
    .await;
    gateway(&format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/plain/{{*rest}}\"\nupstream = \"up\"\ncompression = false\n\
         [[routes]]\npath = \"/plugin\"\nhandler = {{ plugin = \"test-handler\" }}\n\
         [[routes]]\npath = \"/{{*rest}}\"\nupstream = \"up\"\n"
    ))
    .await
}

async fn fetch(
    gw: &tessera::RunningGateway,
    method: Method,
    path: &str,
    accept: Option<&[u8]>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(a) = accept {
        request = request.header("accept-encoding", http::HeaderValue::from_bytes(a).unwrap());
    }
    send(gw, request.body(Full::default()).unwrap()).await
}

fn varies_on_accept_encoding(reply: &Reply) -> bool {
    reply
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|f| f.trim().eq_ignore_ascii_case("accept-encoding"))
        .count()
        == 1
}

#[tokio::test]
async fn proxied_json_is_gzipped_and_decodes_to_the_upstream_bytes() {
    let gw = start().await;
    let reply = fetch(&gw, Method::GET, "/big.json", Some(b"gzip")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert!(
        reply.header("content-length").is_none(),
        "{:?}",
        reply.headers
    );
    assert!(varies_on_accept_encoding(&reply), "{:?}", reply.headers);
    assert_eq!(reply.header("etag"), Some("W/\"doc-v1\""));
    assert!(reply.body.len() < json_doc(200).len() / 2);
    assert_eq!(gunzip(&reply.body), json_doc(200).as_bytes());
    gw.shutdown().await;
}

#[tokio::test]
async fn brotli_wins_ties_and_weights_decide_otherwise() {
    let gw = start().await;
    let reply = fetch(&gw, Method::GET, "/big.json", Some(b"gzip, deflate, br")).await;
    assert_eq!(reply.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&reply.body), json_doc(200).as_bytes());

    let reply = fetch(&gw, Method::GET, "/big.json", Some(b"gzip;q=1, br;q=0.5")).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&reply.body), json_doc(200).as_bytes());

    let reply = fetch(&gw, Method::GET, "/big.json", Some(b"*")).await;
    assert_eq!(reply.header("content-encoding"), Some("br"));
    gw.shutdown().await;
}

#[tokio::test]
async fn identity_or_no_header_gets_the_original_with_its_length() {
    let gw = start().await;
    let original = json_doc(200);
    for accept in [Some(&b"identity"[..]), None, Some(b"gzip;q=0, br;q=0")] {
        let reply = fetch(&gw, Method::GET, "/big.json", accept).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("content-encoding").is_none(), "{accept:?}");
        assert_eq!(
            reply.header("content-length"),
            Some(original.len().to_string().as_str())
        );
        assert_eq!(reply.body, original.as_bytes());
        assert_eq!(reply.header("etag"), Some("\"doc-v1\""));
        // The representation depends on accept-encoding: caches are told so.
        assert!(varies_on_accept_encoding(&reply), "{accept:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn small_bodies_and_other_types_are_not_compressed() {
    let gw = start().await;
    let reply = fetch(&gw, Method::GET, "/small.json", Some(b"gzip, br")).await;
    assert!(reply.header("content-encoding").is_none());
    assert_eq!(reply.body, json_doc(2).as_bytes());
    assert_eq!(
        reply.header("content-length"),
        Some(json_doc(2).len().to_string().as_str())
    );

    let reply = fetch(&gw, Method::GET, "/image.png", Some(b"gzip, br")).await;
    assert!(reply.header("content-encoding").is_none());
    assert!(reply.header("vary").is_none());
    assert_eq!(reply.body, vec![7u8; 8000]);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_encoded_upstream_response_passes_untouched() {
    let gw = start().await;
    let reply = fetch(&gw, Method::GET, "/pre.gz", Some(b"br, gzip")).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let expected = gzip(json_doc(200).as_bytes());
    assert_eq!(reply.body, expected);
    assert_eq!(
        reply.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn head_gets_no_body_and_no_encoding() {
    let gw = start().await;
    let reply = fetch(&gw, Method::HEAD, "/big.json", Some(b"gzip, br")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());
    assert!(reply.header("content-encoding").is_none());
    assert_eq!(
        reply.header("content-length"),
        Some(json_doc(200).len().to_string().as_str())
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_plugin_answer_is_compressed() {
    let gw = start().await;
    let pad = "p".repeat(2000);
    let request = Request::get("/plugin")
        .header("accept-encoding", "gzip")
        .header("x-pad", &pad)
        .body(Full::default())
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert!(reply.header("content-length").is_none());
    let echoed: serde_json::Value = serde_json::from_slice(&gunzip(&reply.body)).unwrap();
    assert_eq!(echoed["method"], "GET");
    let headers = echoed["headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "x-pad" && h[1] == pad.as_str()),
        "{echoed}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_streamed_upstream_body_is_compressed_whole() {
    let gw = start().await;
    for (accept, decode) in [("gzip", gunzip as fn(&[u8]) -> Vec<u8>), ("br", unbrotli)] {
        let reply = fetch(&gw, Method::GET, "/stream", Some(accept.as_bytes())).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-encoding"), Some(accept));
        assert!(reply.header("content-length").is_none());
        let body = decode(&reply.body);
        assert_eq!(body.len(), streamed_doc().len(), "{accept}");
        assert!(body == streamed_doc(), "{accept}: decoded stream differs");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_that_opts_out_is_sent_as_is() {
    let gw = start().await;
    let reply = fetch(&gw, Method::GET, "/plain/big.json", Some(b"gzip, br")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-encoding").is_none());
    assert!(reply.header("vary").is_none());
    assert_eq!(reply.body, json_doc(200).as_bytes());
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_accept_encoding_never_fails_the_request() {
    let gw = start().await;
    let long = "gzip;q=0.5, ".repeat(500);
    let values: Vec<&[u8]> = vec![
        b"",
        b",,,;;;",
        b"gzip;q=",
        b"gzip;q=5",
        b"br;q=0.5.5, gzip;q=nan",
        b";q=1",
        b"gzip;q=1;q=0",
        b"\xff\xfe gzip",
        b"gzip;level",
        b"*;q=0.0001",
        long.as_bytes(),
    ];
    for value in values {
        let reply = fetch(&gw, Method::GET, "/big.json", Some(value)).await;
        assert_eq!(reply.status, StatusCode::OK, "{value:?}");
        let body = match reply.header("content-encoding") {
            None => reply.body.to_vec(),
            Some("gzip") => gunzip(&reply.body),
            Some("br") => unbrotli(&reply.body),
            Some(other) => panic!("unexpected encoding {other}"),
        };
        assert_eq!(body, json_doc(200).as_bytes(), "{value:?}");
    }
    // A valid entry among malformed ones is still honoured.
    let reply = fetch(&gw, Method::GET, "/big.json", Some(b"gzip;q=5, br;q=0.4")).await;
    assert_eq!(reply.header("content-encoding"), Some("br"));
    gw.shutdown().await;
}

/// An upstream that starts a chunked JSON body, sends `chunks` of it, then closes the connection
/// without finishing it.
async fn cut_off_upstream(chunks: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for i in 0..chunks {
                    let chunk = stream_chunk(i);
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    let _ = stream.write_all(&framed).await;
                }
                let _ = stream.flush().await;
                // Closed without the last chunk: the body is incomplete.
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_body_cut_off_mid_stream_cuts_off_the_client_with_or_without_compression() {
    let up = cut_off_upstream(20).await;
    let gw = gateway(&format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/{{*rest}}\"\nupstream = \"up\"\n"
    ))
    .await;
    for accept in ["gzip", "br", "identity"] {
        let request = Request::get(format!("http://{}/cut", gw.local_addr()))
            .header("accept-encoding", accept)
            .body(Full::default())
            .unwrap();
        let response = client().request(request).await.expect("response head");
        assert_eq!(response.status(), StatusCode::OK);
        let expected = (accept != "identity").then_some(accept);
        assert_eq!(
            response
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            expected
        );
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("the client's response ends");
        assert!(
            body.is_err(),
            "{accept}: the truncated body read as complete"
        );
    }
    gw.shutdown().await;
}
