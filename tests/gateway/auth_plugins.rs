//! The `jwt` and `api-key` filters in front of a proxied route.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use http::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tessera_tests::*;

/// An upstream that echoes the query and headers it received, and counts the requests.
async fn counting_echo() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = upstream(move |req| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let echo = serde_json::json!({
                "path": req.uri().path(),
                "query": req.uri().query(),
                "headers": headers,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full(echo.to_string()))
                .unwrap()
        }
    })
    .await;
    (addr, hits)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mint(key: &SigningKey, kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", b64(&signature.to_bytes()))
}

fn with_token(path: &str, token: &str) -> Request<http_body_util::Full<bytes::Bytes>> {
    Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-user-id", "spoofed-admin")
        .body(Default::default())
        .unwrap()
}

#[tokio::test]
async fn jwt_filter_admits_valid_tokens_with_claims_as_headers_and_refuses_the_rest() {
    let issuer_key = SigningKey::from_bytes(&[21; 32]);
    // The JWKS comes from a file through a secret reference, as an operator would deploy it.
    let dir = std::env::temp_dir().join(format!("tessera-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks_path = dir.join("jwks.json");
    let jwks = serde_json::json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "2026-1", "use": "sig",
        "x": b64(issuer_key.verifying_key().as_bytes()),
    }] });
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();

    let (up, hits) = counting_echo().await;
    let gw = gateway(&format!(
        "[upstreams.orders]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/orders/{{id}}\"\nupstream = \"orders\"\n\
         [[routes.filters]]\nplugin = \"jwt\"\n\
         config = {{ jwks_json = \"${{file:{}}}\", issuer = \"https://id.example\", audience = \"orders\", claims_to_headers = {{ sub = \"x-user-id\" }} }}\n",
        jwks_path.display()
    ))
    .await;

    let claims = serde_json::json!({
        "sub": "user-42", "iss": "https://id.example", "aud": ["orders"], "exp": now() + 300,
    });
    let token = mint(&issuer_key, "2026-1", &claims);
    let reply = send(&gw, with_token("/orders/7", &token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(echo["headers"]["x-user-id"], "user-42");
    assert_eq!(
        echo["headers"]["authorization"],
        format!("Bearer {token}"),
        "the token is forwarded by default"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // No token: a challenge without an error code.
    let reply = get(&gw, "/orders/7").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"tessera\"")
    );
    assert_eq!(reply.json()["error"], "unauthorized");

    // Signed by someone else, expired, or for another audience: invalid_token, no reason given.
    let forger = SigningKey::from_bytes(&[22; 32]);
    let mut expired = claims.clone();
    expired["exp"] = (now() - 3600).into();
    let mut elsewhere = claims.clone();
    elsewhere["aud"] = "billing".into();
    for bad in [
        mint(&forger, "2026-1", &claims),
        mint(&issuer_key, "2026-1", &expired),
        mint(&issuer_key, "2026-1", &elsewhere),
        mint(&issuer_key, "2025-9", &claims),
        "not-a-token".to_owned(),
    ] {
        let reply = send(&gw, with_token("/orders/7", &bad)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"tessera\", error=\"invalid_token\"")
        );
        let body = reply.json();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["message"], "a valid bearer token is required");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "refused requests never reach the upstream"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn api_key_filter_names_the_consumer_and_keeps_the_key_from_the_upstream() {
    let (up, hits) = counting_echo().await;
    let gw = gateway(&format!(
        "[upstreams.orders]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/orders\"\nupstream = \"orders\"\n\
         [[routes.filters]]\nplugin = \"api-key\"\n\
         config.key_from = [{{ header = \"x-api-key\" }}, {{ query = \"api_key\" }}]\n\
         config.keys = [{{ consumer = \"mobile-app\", sha256 = \"{}\" }}, {{ consumer = \"partner\", sha256 = \"{}\" }}]\n",
        sha256_hex("mobile-key-1"),
        sha256_hex("partner-key-2"),
    ))
    .await;

    // In a header, with a forged consumer header.
    let request = Request::get("/orders?page=2")
        .header("x-api-key", "mobile-key-1")
        .header("x-consumer", "partner")
        .body(Default::default())
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["headers"]["x-consumer"], "mobile-app");
    assert!(echo["headers"].get("x-api-key").is_none(), "{echo}");
    assert_eq!(echo["query"], "page=2");

    // In the query, between other parameters that stay as sent.
    let reply = get(&gw, "/orders?q=a%20b&api_key=partner-key-2&page=3").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["headers"]["x-consumer"], "partner");
    assert_eq!(echo["query"], "q=a%20b&page=3");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Missing or wrong: the same 401, and the upstream is not called.
    for request in [
        Request::get("/orders").body(Default::default()).unwrap(),
        Request::get("/orders?api_key=mobile-key-2")
            .body(Default::default())
            .unwrap(),
        Request::get("/orders")
            .header("x-api-key", sha256_hex("mobile-key-1"))
            .body(Default::default())
            .unwrap(),
    ] {
        let reply = send(&gw, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("ApiKey realm=\"tessera\"")
        );
        let body = reply.json();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["message"], "a valid API key is required");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
}
