//! Tokens minted here with the same crates the plugin verifies with, checked through MockHost.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Sha256, Sha384, Sha512};
use tessera_sdk::testing::MockHost;

use super::*;

const NOW: i64 = 1_800_000_000;
const SECRET: &str = "a-shared-secret-of-at-least-64-bytes-for-every-hs-algorithm-0123456789";

/// One 2048-bit key for every RSA test: generating it is the slow part of this suite.
fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        RsaPrivateKey::new(&mut rng, 2048).expect("generating the test RSA key")
    })
}

/// Key material a test signs with.
enum TestKey {
    Hmac(Vec<u8>),
    Rsa(&'static RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl TestKey {
    fn hmac() -> Self {
        Self::Hmac(SECRET.as_bytes().to_vec())
    }

    fn p256(seed: u8) -> Self {
        Self::P256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    fn p384(seed: u8) -> Self {
        Self::P384(p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap())
    }

    fn ed25519(seed: u8) -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    /// The public key as PEM (the shared secret for HMAC keys is not PEM).
    fn public_pem(&self) -> String {
        match self {
            Self::Hmac(_) => unreachable!("HMAC keys have no public half"),
            Self::Rsa(key) => key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            Self::P256(key) => key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            Self::P384(key) => key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            Self::Ed25519(key) => key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }

    fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        match (self, alg) {
            (Self::Hmac(k), "HS256") => hmac_sign::<Hmac<Sha256>>(k, message),
            (Self::Hmac(k), "HS384") => hmac_sign::<Hmac<Sha384>>(k, message),
            (Self::Hmac(k), "HS512") => hmac_sign::<Hmac<Sha512>>(k, message),
            (Self::Rsa(k), "RS256") => rsa::pkcs1v15::SigningKey::<Sha256>::new((*k).clone())
                .sign(message)
                .to_vec(),
            (Self::Rsa(k), "RS384") => rsa::pkcs1v15::SigningKey::<Sha384>::new((*k).clone())
                .sign(message)
                .to_vec(),
            (Self::Rsa(k), "RS512") => rsa::pkcs1v15::SigningKey::<Sha512>::new((*k).clone())
                .sign(message)
                .to_vec(),
            (Self::Rsa(k), "PS256") => rsa::pss::SigningKey::<Sha256>::new((*k).clone())
                .sign_with_rng(&mut rng, message)
                .to_vec(),
            (Self::Rsa(k), "PS384") => rsa::pss::SigningKey::<Sha384>::new((*k).clone())
                .sign_with_rng(&mut rng, message)
                .to_vec(),
            (Self::Rsa(k), "PS512") => rsa::pss::SigningKey::<Sha512>::new((*k).clone())
                .sign_with_rng(&mut rng, message)
                .to_vec(),
            (Self::P256(k), "ES256") => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.to_bytes().to_vec()
            }
            (Self::P384(k), "ES384") => {
                let s: p384::ecdsa::Signature = k.sign(message);
                s.to_bytes().to_vec()
            }
            (Self::Ed25519(k), "EdDSA") => k.sign(message).to_bytes().to_vec(),
            _ => panic!("the test signs {alg} with the wrong key type"),
        }
    }
}

fn hmac_sign<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of `claims` with header `header`, signed by `signer` as `alg`.
fn mint_with_header(header: &Value, claims: &Value, signer: &TestKey, alg: &str) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = signer.sign(alg, signed.as_bytes());
    format!("{signed}.{}", b64(&signature))
}

fn mint(alg: &str, kid: Option<&str>, claims: &Value, signer: &TestKey) -> String {
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    mint_with_header(&header, claims, signer, alg)
}

fn claims() -> Value {
    json!({ "sub": "user-42", "iss": "https://id.example", "aud": "orders", "exp": NOW + 600, "iat": NOW })
}

fn bearer(token: &str) -> Request {
    Request::new("GET", "/orders").with_header("authorization", format!("Bearer {token}"))
}

/// Runs the filter at `now`; `Ok` is the request passed on, `Err` the answer.
fn run_at(config: Value, request: Request, now: i64) -> (Result<Request, Response>, MockHost) {
    let host = MockHost::new().config(config);
    let outcome = host.run(|| match authenticate(request, now) {
        Ok(Action::Continue(request)) => Ok(request),
        Ok(Action::Respond(response)) => Err(response),
        Err(e) => Err(e.into_response()),
    });
    (outcome, host)
}

fn run(config: Value, request: Request) -> (Result<Request, Response>, MockHost) {
    run_at(config, request, NOW)
}

fn hs256_config() -> Value {
    json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "claims_to_headers": { "sub": "x-user-id" } })
}

/// Asserts a 401 invalid-token answer whose log (not body) holds `reason`.
fn assert_invalid(outcome: (Result<Request, Response>, MockHost), reason: &str) {
    let (result, host) = outcome;
    let Err(response) = result else {
        panic!("the token must be refused ({reason})");
    };
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"tessera\", error=\"invalid_token\"")
    );
    let body: Value = response.json_body().unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["message"], "a valid bearer token is required");
    assert!(
        !response.text_body().contains(reason),
        "{}",
        response.text_body()
    );
    assert!(
        host.logs().iter().any(|l| l.message.contains(reason)),
        "expected {reason:?} in {:?}",
        host.logs()
    );
}

fn accepted(outcome: (Result<Request, Response>, MockHost)) -> Request {
    match outcome.0 {
        Ok(request) => request,
        Err(response) => panic!(
            "the token must be accepted: {} {} {:?}",
            response.status(),
            response.text_body(),
            outcome.1.logs()
        ),
    }
}

#[test]
fn every_algorithm_family_verifies() {
    let signers: Vec<(&str, TestKey)> = vec![
        ("HS256", TestKey::hmac()),
        ("HS384", TestKey::hmac()),
        ("HS512", TestKey::hmac()),
        ("RS256", TestKey::Rsa(rsa_key())),
        ("RS384", TestKey::Rsa(rsa_key())),
        ("RS512", TestKey::Rsa(rsa_key())),
        ("PS256", TestKey::Rsa(rsa_key())),
        ("PS384", TestKey::Rsa(rsa_key())),
        ("PS512", TestKey::Rsa(rsa_key())),
        ("ES256", TestKey::p256(3)),
        ("ES384", TestKey::p384(3)),
        ("EdDSA", TestKey::ed25519(3)),
    ];
    for (alg, signer) in &signers {
        let key = match signer {
            TestKey::Hmac(_) => json!({ "alg": alg, "secret": SECRET }),
            _ => json!({ "alg": alg, "pem": signer.public_pem() }),
        };
        let config = json!({ "keys": [key], "claims_to_headers": { "sub": "x-user-id" } });
        let token = mint(alg, None, &claims(), signer);
        let request = accepted(run(config, bearer(&token)));
        assert_eq!(request.header("x-user-id"), Some("user-42"), "{alg}");
        // The token stays for the upstream by default.
        assert_eq!(
            request.header("authorization").map(str::to_owned),
            Some(format!("Bearer {token}")),
            "{alg}"
        );
    }
}

#[test]
fn missing_token_is_a_401_challenge_without_error_code() {
    for request in [
        Request::new("GET", "/"),
        Request::new("GET", "/").with_header("authorization", "Basic dXNlcjpwdw=="),
    ] {
        let (result, host) = run(hs256_config(), request);
        let response = result.expect_err("a request without token is refused");
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"tessera\"")
        );
        assert_eq!(
            response.json_body::<Value>().unwrap()["error"],
            "unauthorized"
        );
        assert!(!host.logs().is_empty());
    }
}

#[test]
fn expiry_and_not_before_honour_the_leeway() {
    let signer = TestKey::hmac();
    let at = |exp: i64, nbf: i64| {
        let mut c = claims();
        c["exp"] = exp.into();
        c["nbf"] = nbf.into();
        mint("HS256", None, &c, &signer)
    };
    // Within the default 30 s leeway on both sides.
    accepted(run(hs256_config(), bearer(&at(NOW - 29, NOW + 29))));
    assert_invalid(run(hs256_config(), bearer(&at(NOW - 30, NOW))), "expired");
    assert_invalid(
        run(hs256_config(), bearer(&at(NOW + 600, NOW + 31))),
        "not valid before",
    );
    // No leeway: exp is exclusive.
    let mut strict = hs256_config();
    strict["leeway_secs"] = 0.into();
    accepted(run(strict.clone(), bearer(&at(NOW + 1, NOW))));
    assert_invalid(run(strict, bearer(&at(NOW, NOW))), "expired");
    // A fractional NumericDate is a date too; a string is not.
    let mut c = claims();
    c["exp"] = json!((NOW - 100) as f64 + 0.5);
    assert_invalid(
        run(hs256_config(), bearer(&mint("HS256", None, &c, &signer))),
        "expired",
    );
    c["exp"] = json!("tomorrow");
    assert_invalid(
        run(hs256_config(), bearer(&mint("HS256", None, &c, &signer))),
        "exp is not a number",
    );
}

#[test]
fn exp_is_required_unless_turned_off() {
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let token = mint("HS256", None, &c, &TestKey::hmac());
    assert_invalid(run(hs256_config(), bearer(&token)), "\"exp\" is missing");
    let mut config = hs256_config();
    config["require_exp"] = false.into();
    accepted(run(config, bearer(&token)));
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let other = TestKey::Hmac(b"another-secret-that-is-long-enough-for-hs256!!".to_vec());
    assert_invalid(
        run(
            hs256_config(),
            bearer(&mint("HS256", None, &claims(), &other)),
        ),
        "bad signature",
    );
    let config = json!({ "keys": [{ "alg": "EdDSA", "pem": TestKey::ed25519(1).public_pem() }] });
    let token = mint("EdDSA", None, &claims(), &TestKey::ed25519(2));
    assert_invalid(run(config, bearer(&token)), "bad signature");
    let config = json!({ "keys": [{ "alg": "ES256", "pem": TestKey::p256(1).public_pem() }] });
    let token = mint("ES256", None, &claims(), &TestKey::p256(2));
    assert_invalid(run(config, bearer(&token)), "bad signature");
}

#[test]
fn a_tampered_payload_is_refused() {
    let token = mint("HS256", None, &claims(), &TestKey::hmac());
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["sub"] = "admin".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_invalid(run(hs256_config(), bearer(&tampered)), "bad signature");
    // A signature with trailing bytes is not the signature.
    let padded = format!("{token}AAAA");
    assert_invalid(run(hs256_config(), bearer(&padded)), "bad signature");
}

#[test]
fn alg_none_and_algorithm_confusion_find_no_key() {
    // alg none, with or without a signature part.
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    assert_invalid(
        run(hs256_config(), bearer(&format!("{header}.{payload}."))),
        "unsigned",
    );
    let header = b64(br#"{"alg":"NONE"}"#);
    assert_invalid(
        run(hs256_config(), bearer(&format!("{header}.{payload}.xx"))),
        "unsigned",
    );

    // The classic confusion: the RSA public key (which an attacker knows) used as an HS256
    // secret. The only key is RS256, so an HS256 token has no key to be checked with.
    let rsa = TestKey::Rsa(rsa_key());
    let pem = rsa.public_pem();
    let config = json!({ "keys": [{ "alg": "RS256", "pem": pem }] });
    let forged = mint(
        "HS256",
        None,
        &claims(),
        &TestKey::Hmac(pem.as_bytes().to_vec()),
    );
    assert_invalid(run(config.clone(), bearer(&forged)), "no key for alg HS256");
    // An RS256 key does not verify PS256 either, even from the same RSA key.
    let pss = mint("PS256", None, &claims(), &rsa);
    assert_invalid(run(config, bearer(&pss)), "no key for alg PS256");

    // A key cannot be configured to serve an algorithm of another family.
    let (result, host) = run(
        json!({ "keys": [{ "alg": "HS256", "pem": pem }] }),
        bearer(&forged),
    );
    assert_eq!(result.expect_err("misconfigured").status(), 500);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("keys[0]: HS256 needs `secret`")),
        "{:?}",
        host.logs()
    );

    // Unsupported algorithms and a header that is not JOSE.
    let token = mint_with_header(
        &json!({ "alg": "HS1" }),
        &claims(),
        &TestKey::hmac(),
        "HS256",
    );
    assert_invalid(
        run(hs256_config(), bearer(&token)),
        "unsupported alg \"HS1\"",
    );
    let token = mint_with_header(
        &json!({ "alg": "HS256", "crit": ["exp"] }),
        &claims(),
        &TestKey::hmac(),
        "HS256",
    );
    assert_invalid(run(hs256_config(), bearer(&token)), "crit");
}

#[test]
fn malformed_tokens_are_refused() {
    for (token, reason) in [
        ("abc", "not three"),
        ("a.b.c.d", "not three"),
        ("!!.e30.AA", "header is not base64url"),
        ("e30.e30.AA", "header is not a JSON object"),
    ] {
        assert_invalid(run(hs256_config(), bearer(token)), reason);
    }
    let long = "a".repeat(token::MAX_TOKEN_LEN + 1);
    assert_invalid(run(hs256_config(), bearer(&long)), "longer than");
    // Two Authorization headers: which one would the upstream believe?
    let token = mint("HS256", None, &claims(), &TestKey::hmac());
    let twice = bearer(&token).with_header("authorization", format!("Bearer {token}"));
    assert_invalid(
        run(hs256_config(), twice),
        "more than one authorization header",
    );
}

#[test]
fn kid_selects_the_key() {
    let first = TestKey::Hmac(b"first-secret-first-secret-first-secret!!".to_vec());
    let second = TestKey::Hmac(b"second-secret-second-secret-second-secret".to_vec());
    let config = json!({ "keys": [
        { "kid": "k1", "alg": "HS256", "secret": "first-secret-first-secret-first-secret!!" },
        { "kid": "k2", "alg": "HS256", "secret": "second-secret-second-secret-second-secret" },
        { "kid": "e1", "alg": "ES256", "pem": TestKey::p256(5).public_pem() },
    ] });
    accepted(run(
        config.clone(),
        bearer(&mint("HS256", Some("k2"), &claims(), &second)),
    ));
    accepted(run(
        config.clone(),
        bearer(&mint("HS256", Some("k1"), &claims(), &first)),
    ));
    // Without kid, every key of the token's algorithm is tried.
    accepted(run(
        config.clone(),
        bearer(&mint("HS256", None, &claims(), &second)),
    ));
    // A kid binds: k1's token signed with k2's secret fails.
    assert_invalid(
        run(
            config.clone(),
            bearer(&mint("HS256", Some("k1"), &claims(), &second)),
        ),
        "bad signature",
    );
    assert_invalid(
        run(
            config.clone(),
            bearer(&mint("HS256", Some("k9"), &claims(), &second)),
        ),
        "no key with kid \"k9\"",
    );
    // A kid with the wrong algorithm.
    assert_invalid(
        run(
            config,
            bearer(&mint("HS256", Some("e1"), &claims(), &second)),
        ),
        "no key for alg HS256 and kid \"e1\"",
    );
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let signer = TestKey::hmac();
    let mut config = hs256_config();
    config["issuer"] = "https://id.example".into();
    config["audience"] = json!(["orders", "billing"]);
    accepted(run(
        config.clone(),
        bearer(&mint("HS256", None, &claims(), &signer)),
    ));

    let mut c = claims();
    c["iss"] = "https://evil.example".into();
    assert_invalid(
        run(config.clone(), bearer(&mint("HS256", None, &c, &signer))),
        "issuer \"https://evil.example\" is not accepted",
    );
    c = claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_invalid(
        run(config.clone(), bearer(&mint("HS256", None, &c, &signer))),
        "issuer (none)",
    );

    c = claims();
    c["aud"] = json!(["search", "billing"]);
    accepted(run(
        config.clone(),
        bearer(&mint("HS256", None, &c, &signer)),
    ));
    c["aud"] = "search".into();
    assert_invalid(
        run(config.clone(), bearer(&mint("HS256", None, &c, &signer))),
        "audience \"search\" is not accepted",
    );
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid(
        run(config, bearer(&mint("HS256", None, &c, &signer))),
        "audience (none)",
    );
}

#[test]
fn required_claims_must_be_present() {
    let mut config = hs256_config();
    config["required_claims"] = json!(["sub", "org.id"]);
    let signer = TestKey::hmac();
    assert_invalid(
        run(
            config.clone(),
            bearer(&mint("HS256", None, &claims(), &signer)),
        ),
        "required claim \"org.id\" is missing",
    );
    let mut c = claims();
    c["org"] = json!({ "id": 7 });
    accepted(run(config, bearer(&mint("HS256", None, &c, &signer))));
}

#[test]
fn claims_become_headers_and_spoofed_ones_are_removed() {
    let config = json!({
        "keys": [{ "alg": "HS256", "secret": SECRET }],
        "claims_to_headers": { "sub": "X-User-Id", "org.id": "x-org", "roles": "x-roles", "tenant": "x-tenant" },
    });
    let mut c = claims();
    c["org"] = json!({ "id": 7 });
    c["roles"] = json!(["reader", "writer"]);
    let token = mint("HS256", None, &c, &TestKey::hmac());
    let request = bearer(&token)
        .with_header("x-user-id", "admin")
        .with_header("X-User-Id", "root")
        .with_header("x-tenant", "someone-else");
    let out = accepted(run(config.clone(), request));
    assert_eq!(out.headers().get_all("x-user-id").count(), 1);
    assert_eq!(out.header("x-user-id"), Some("user-42"));
    assert_eq!(out.header("x-org"), Some("7"));
    assert_eq!(out.header("x-roles"), Some(r#"["reader","writer"]"#));
    // No tenant claim: no header, and the client's copy is gone.
    assert!(!out.headers().contains("x-tenant"));

    // A claim that would smuggle a header line is refused, not forwarded.
    c["sub"] = "user\r\nx-admin: true".into();
    let token = mint("HS256", None, &c, &TestKey::hmac());
    assert_invalid(
        run(config, bearer(&token)),
        "claim \"sub\" is not a valid header value",
    );
}

#[test]
fn token_from_header_or_cookie_and_forward_token_off() {
    let token = mint("HS256", None, &claims(), &TestKey::hmac());
    let mut config = hs256_config();
    config["token_from"] = json!({ "header": "x-token" });
    config["forward_token"] = false.into();
    let out = accepted(run(
        config.clone(),
        Request::new("GET", "/").with_header("x-token", token.clone()),
    ));
    assert_eq!(out.header("x-user-id"), Some("user-42"));
    assert!(!out.headers().contains("x-token"));
    // The bearer header is not where this route looks.
    let (result, _) = run(config, bearer(&token));
    assert_eq!(result.expect_err("no token in x-token").status(), 401);

    let mut config = hs256_config();
    config["token_from"] = json!({ "cookie": "session" });
    config["forward_token"] = false.into();
    let request = Request::new("GET", "/")
        .with_header("cookie", format!("theme=dark; session={token}; lang=en"));
    let out = accepted(run(config.clone(), request));
    assert_eq!(out.header("cookie"), Some("theme=dark; lang=en"));
    let only = Request::new("GET", "/").with_header("cookie", format!("session=\"{token}\""));
    assert!(
        !accepted(run(config.clone(), only))
            .headers()
            .contains("cookie")
    );
    let (result, _) = run(
        config,
        Request::new("GET", "/").with_header("cookie", "theme=dark"),
    );
    assert_eq!(
        result
            .expect_err("no session cookie")
            .header("www-authenticate"),
        Some("Bearer realm=\"tessera\"")
    );

    let mut config = hs256_config();
    config["forward_token"] = false.into();
    config["realm"] = "orders".into();
    assert!(
        !accepted(run(config.clone(), bearer(&token)))
            .headers()
            .contains("authorization")
    );
    let (result, _) = run(config, Request::new("GET", "/"));
    assert_eq!(
        result.expect_err("no token").header("www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );
}

#[test]
fn jwks_inline_and_as_text() {
    let rsa = rsa_key().to_public_key();
    let p256 = TestKey::p256(9);
    let ed = TestKey::ed25519(9);
    let point = match &p256 {
        TestKey::P256(k) => k.verifying_key().to_encoded_point(false),
        _ => unreachable!(),
    };
    let ed_x = match &ed {
        TestKey::Ed25519(k) => k.verifying_key().to_bytes(),
        _ => unreachable!(),
    };
    let jwks = json!({ "keys": [
        // No alg: an RSA JWK means RS256.
        { "kty": "RSA", "kid": "r1", "use": "sig", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be()), "x5t": "ignored" },
        { "kty": "EC", "kid": "e1", "crv": "P-256", "alg": "ES256",
          "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()) },
        { "kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": b64(&ed_x) },
        { "kty": "oct", "kid": "h1", "alg": "HS512", "k": b64(SECRET.as_bytes()) },
        // Skipped: an encryption key and a curve this plugin does not verify.
        { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
        { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA" },
    ] });
    for config in [
        json!({ "jwks": jwks }),
        json!({ "jwks_json": jwks.to_string() }),
    ] {
        let rs = mint("RS256", Some("r1"), &claims(), &TestKey::Rsa(rsa_key()));
        accepted(run(config.clone(), bearer(&rs)));
        accepted(run(
            config.clone(),
            bearer(&mint("ES256", Some("e1"), &claims(), &p256)),
        ));
        accepted(run(
            config.clone(),
            bearer(&mint("EdDSA", Some("d1"), &claims(), &ed)),
        ));
        accepted(run(
            config.clone(),
            bearer(&mint("HS512", Some("h1"), &claims(), &TestKey::hmac())),
        ));
        let ps = mint("PS256", Some("r1"), &claims(), &TestKey::Rsa(rsa_key()));
        assert_invalid(run(config.clone(), bearer(&ps)), "no key for alg PS256");
        let enc = mint("RS256", Some("enc"), &claims(), &TestKey::Rsa(rsa_key()));
        assert_invalid(run(config, bearer(&enc)), "no key with kid \"enc\"");
    }
}

#[test]
fn secrets_may_be_base64() {
    let secret = b"\x00\x01binary-secret-binary-secret-binary-secret\xff";
    let config = json!({ "keys": [{ "alg": "HS256", "secret_base64": STANDARD.encode(secret) }] });
    let token = mint("HS256", None, &claims(), &TestKey::Hmac(secret.to_vec()));
    accepted(run(config, bearer(&token)));
    let config = json!({ "keys": [{ "alg": "HS256", "secret_base64": b64(secret) }] });
    accepted(run(config, bearer(&token)));
}

#[test]
fn bad_config_is_a_500_that_names_the_key_in_the_log() {
    let token = mint("HS256", None, &claims(), &TestKey::hmac());
    for (config, logged) in [
        (json!({}), "no keys"),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": "short" }] }),
            "keys[0]: an HS256 secret must be at least 32 bytes",
        ),
        (
            json!({ "keys": [{ "alg": "HS256" }] }),
            "keys[0]: give exactly one of",
        ),
        (
            json!({ "keys": [{ "alg": "none", "secret": SECRET }] }),
            "unknown variant `none`",
        ),
        (
            json!({ "keys": [{ "alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----" }] }),
            "keys[0]: not a RSA public key",
        ),
        (
            json!({ "keys": [{ "alg": "RS256", "secret": SECRET }] }),
            "RS256 needs a public key",
        ),
        (
            json!({ "jwks_json": "{not json" }),
            "jwks_json: not a JWKS document",
        ),
        (
            json!({ "jwks": { "keys": [{ "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA" }] } }),
            "jwks.keys[0]: `x` and `y` have the wrong length",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "leway_secs": 5 }),
            "unknown field `leway_secs`",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "claims_to_headers": { "sub": "x user" } }),
            "claims_to_headers: \"x user\" is not a valid header name",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "realm": "a\"b" }),
            "realm",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "claims_to_headers": { "sub": "Authorization" } }),
            "\"Authorization\" is the header the token is read from",
        ),
    ] {
        let (result, host) = run(config, bearer(&token));
        let response = result.expect_err("a bad config answers");
        assert_eq!(response.status(), 500, "{logged}");
        assert!(!response.text_body().contains(SECRET));
        assert!(
            host.logs().iter().any(|l| l.message.contains(logged)),
            "expected {logged:?} in {:?}",
            host.logs()
        );
    }
}

#[test]
fn short_rsa_keys_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
    let pem = small
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let (result, host) = run(
        json!({ "keys": [{ "alg": "RS256", "pem": pem }] }),
        Request::new("GET", "/"),
    );
    assert_eq!(result.expect_err("misconfigured").status(), 500);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("at least 2048 bits (this one has 1024)"))
    );
}

#[test]
fn the_filter_uses_the_wall_clock() {
    let now = unix_now();
    assert!(now > 1_700_000_000, "the clock reads {now}");
    let mut c = claims();
    c["exp"] = (now + 60).into();
    let host = MockHost::new().config(hs256_config());
    let token = mint("HS256", None, &c, &TestKey::hmac());
    let Action::Continue(out) = host.on_request::<JwtFilter>(bearer(&token)) else {
        panic!("a fresh token passes: {:?}", host.logs());
    };
    assert_eq!(out.header("x-user-id"), Some("user-42"));
    // An exp long past by the wall clock.
    let old = mint(
        "HS256",
        None,
        &json!({ "sub": "x", "exp": 1_000 }),
        &TestKey::hmac(),
    );
    let Action::Respond(response) = host.on_request::<JwtFilter>(bearer(&old)) else {
        panic!("an old token is refused");
    };
    assert_eq!(response.status(), 401);
}
