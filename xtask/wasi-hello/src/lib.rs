//! Answers every request with `Hello, world!`: the same work as the gateway's `hello` handler
//! route, as a standard `wasi:http/proxy` component for `wasmtime serve`.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_owned(),
            b"application/json".to_vec(),
        )])
        .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("response body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("body stream");
        stream
            .blocking_write_and_flush(br#"{"message":"Hello, world!"}"#)
            .expect("write body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

wasi::http::proxy::export!(Hello);
