//! A standard `wasi:http/proxy` component, written against the `wasip2` crate's bindings alone
//! (no Tessera SDK), for the gateway's tests. What it does is chosen by the last path segment:
//!
//! - `echo`: method, path, authority, scheme and headers as JSON, and how many requests this
//!   instance served (`served`, 1 with a fresh instance per request); `?framing` also sets a
//!   `content-length` of its own, which the gateway must not use;
//! - `stream`: the request body back, chunk by chunk as it arrives, never held whole;
//! - `drip?n=3&ms=200`: `n` lines, `ms` apart, each flushed at once;
//! - `call?url=http://x/y[&first_byte_ms=100]`: one outgoing call; answers its status and body,
//!   or the `wasi:http` error the call got;
//! - `fanout?url=...&n=4`: `n` calls started together, then waited for; answers their statuses;
//! - `trap`: panics before answering; `cut`: answers, writes a line, then panics;
//! - `spin`: loops forever.

use std::cell::Cell;
use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingRequest, Method, OutgoingBody,
    OutgoingRequest, OutgoingResponse, RequestOptions, ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Component);

struct Component;

thread_local! {
    /// Requests this instance served.
    static SERVED: Cell<u32> = const { Cell::new(0) };
}

impl wasip2::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let served = SERVED.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((&path_with_query, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        match path.rsplit('/').next().unwrap_or_default() {
            "echo" => echo(&request, out, served, param("framing").is_some()),
            "stream" => stream(request, out),
            "drip" => {
                let n = param("n").and_then(|n| n.parse().ok()).unwrap_or(3);
                let ms = param("ms").and_then(|n| n.parse().ok()).unwrap_or(200);
                drip(out, n, ms);
            }
            "call" => {
                let url = param("url").unwrap_or_default();
                let first_byte = param("first_byte_ms").and_then(|n| n.parse().ok());
                let answer = match call(&url, first_byte).and_then(wait) {
                    Ok((status, body)) => serde_json::json!({ "status": status, "body": body }),
                    Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
                };
                respond(
                    out,
                    200,
                    &[("content-type", b"application/json")],
                    &answer.to_string(),
                );
            }
            "fanout" => {
                let url = param("url").unwrap_or_default();
                let n = param("n").and_then(|n| n.parse().ok()).unwrap_or(2);
                fanout(out, &url, n);
            }
            "trap" => panic!("asked to trap"),
            "cut" => {
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("response body");
                ResponseOutparam::set(out, Ok(response));
                let mut stream = body.write().expect("body stream");
                stream.write_all(b"partial\n").expect("write");
                stream.flush().expect("flush");
                panic!("asked to fail after answering");
            }
            "spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            other => respond(out, 404, &[], &format!("no such action `{other}`")),
        }
    }
}

fn echo(request: &IncomingRequest, out: ResponseOutparam, served: u32, framing: bool) {
    let headers: Vec<(String, String)> = request
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let method = match request.method() {
        Method::Get => "GET".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Other(m) => m,
        _ => "other".to_owned(),
    };
    let scheme = match request.scheme() {
        Some(Scheme::Http) => "http".to_owned(),
        Some(Scheme::Https) => "https".to_owned(),
        Some(Scheme::Other(s)) => s,
        None => String::new(),
    };
    let body = serde_json::json!({
        "method": method,
        "path": request.path_with_query(),
        "authority": request.authority(),
        "scheme": scheme,
        "headers": headers,
        "served": served,
    })
    .to_string();
    let length = body.len().to_string();
    let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
    if framing {
        headers.push(("content-length", length.as_bytes()));
    }
    respond(out, 200, &headers, &body);
}

/// Copies the request body to the response body as it arrives, 64 KiB at a time at most.
fn stream(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().expect("request body");
    let mut input = incoming.stream().expect("request body stream");
    let fields = Fields::new();
    fields
        .set("x-streamed", &[b"yes".to_vec()])
        .expect("set header");
    let response = OutgoingResponse::new(fields);
    let body = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    let mut output = body.write().expect("response body stream");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let n = std::io::Read::read(&mut input, &mut buf).expect("reading the request body");
        if n == 0 {
            break;
        }
        total += n;
        output
            .write_all(&buf[..n])
            .expect("writing the response body");
    }
    output.flush().expect("flush");
    drop(output);
    drop(input);
    eprintln!("streamed {total} bytes");
    OutgoingBody::finish(body, None).expect("finish");
}

fn drip(out: ResponseOutparam, n: u32, ms: u64) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    let mut output = body.write().expect("response body stream");
    for i in 0..n {
        if i > 0 {
            wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        output
            .write_all(format!("line {i}\n").as_bytes())
            .expect("write");
        output.flush().expect("flush");
    }
    drop(output);
    OutgoingBody::finish(body, None).expect("finish");
}

/// Starts a GET of `url` (`scheme://authority/path`).
fn call(url: &str, first_byte_ms: Option<u64>) -> Result<FutureIncomingResponse, ErrorCode> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    fields
        .set("x-from-guest", &[b"1".to_vec()])
        .expect("set header");
    let request = OutgoingRequest::new(fields);
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request.set_scheme(Some(&scheme)).expect("scheme");
    request.set_authority(Some(authority)).expect("authority");
    request.set_path_with_query(Some(path)).expect("path");
    let options = first_byte_ms.map(|ms| {
        let options = RequestOptions::new();
        options
            .set_first_byte_timeout(Some(ms * 1_000_000))
            .expect("first-byte timeout");
        options
    });
    outgoing_handler::handle(request, options)
}

/// Waits for a call and reads its body.
fn wait(pending: FutureIncomingResponse) -> Result<(u16, String), ErrorCode> {
    pending.subscribe().block();
    let response = pending
        .get()
        .expect("ready after block")
        .expect("taken once")?;
    let status = response.status();
    let body = response.consume().expect("response body");
    let mut text = String::new();
    {
        let mut stream = body.stream().expect("response body stream");
        stream
            .read_to_string(&mut text)
            .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?;
    }
    drop(body);
    Ok((status, text))
}

fn fanout(out: ResponseOutparam, url: &str, n: u32) {
    let started: Vec<Result<FutureIncomingResponse, ErrorCode>> =
        (0..n).map(|_| call(url, None)).collect();
    let results: Vec<serde_json::Value> = started
        .into_iter()
        .map(|pending| match pending.and_then(wait) {
            Ok((status, body)) => serde_json::json!({ "status": status, "body": body }),
            Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
        })
        .collect();
    respond(
        out,
        200,
        &[("content-type", b"application/json")],
        &serde_json::Value::from(results).to_string(),
    );
}

fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &[u8])], body: &str) {
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value).expect("append header");
    }
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("status");
    let outgoing = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = outgoing.write().expect("response body stream");
        stream.write_all(body.as_bytes()).expect("write");
        stream.flush().expect("flush");
    }
    OutgoingBody::finish(outgoing, None).expect("finish");
}
