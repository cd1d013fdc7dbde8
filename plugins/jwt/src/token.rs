//! Verifying a compact JWS token (RFC 7515) and its JWT claims (RFC 7519).
//!
//! The order matters: the signature is checked before any claim is trusted, and the key is
//! chosen by the configuration, never by the token: the token's `alg` must be the chosen key's
//! algorithm, so `alg: none` and algorithm confusion find no key (RFC 8725 §2.1, §3.1).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::{Alg, Key};

/// Tokens longer than this are refused before decoding (a header can be larger than any
/// token an issuer sends; decoding it would only cost memory).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. The client only learns that the token is invalid; this goes to
/// the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not three base64url parts, or a part that does not decode to what it must.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// `alg: none` (an unsigned token).
    #[error("unsigned token (alg none)")]
    Unsigned,
    /// An algorithm the plugin does not verify.
    #[error("unsupported alg {0:?}")]
    UnsupportedAlg(String),
    /// The header lists extensions that must be understood (`crit`); none are supported.
    #[error("token header has crit extensions")]
    Critical,
    /// No configured key has the token's `kid`.
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// No configured key (of the token's `kid`, if any) is valid for the token's `alg`.
    #[error("no key for alg {alg}{}", kid.as_ref().map(|k| format!(" and kid {k:?}")).unwrap_or_default())]
    NoKeyForAlg {
        /// The token's algorithm.
        alg: Alg,
        /// The token's key id.
        kid: Option<String>,
    },
    /// No candidate key verified the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (leeway included).
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time of the check.
        now: i64,
    },
    /// `nbf` is still ahead (leeway included).
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The time of the check.
        now: i64,
    },
    /// A time claim that is not a number.
    #[error("claim {0} is not a number")]
    BadTime(&'static str),
    /// The issuer is not a configured one.
    #[error("issuer {} is not accepted", .0.as_ref().map_or("(none)".to_owned(), |i| format!("{i:?}")))]
    Issuer(Option<String>),
    /// No audience of the token is a configured one.
    #[error("audience {0} is not accepted")]
    Audience(String),
    /// A required claim is absent.
    #[error("required claim {0:?} is missing")]
    MissingClaim(String),
    /// A claim mapped to a header does not make a valid header value.
    #[error("claim {0:?} is not a valid header value")]
    HeaderValue(String),
}

/// The claim checks besides the signature.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Seconds of clock difference tolerated for `exp` and `nbf`.
    pub leeway_secs: i64,
    /// Accepted issuers; empty accepts any.
    pub issuers: Vec<String>,
    /// Accepted audiences; empty accepts any.
    pub audiences: Vec<String>,
    /// Claims (dotted paths allowed) that must be present.
    pub required_claims: Vec<String>,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// Verifies `token` with `keys` and `rules` at `now` (seconds since the Unix epoch); returns
/// its claims.
pub fn verify(
    token: &str,
    keys: &[Key],
    rules: &Rules,
    now: i64,
) -> Result<Map<String, Value>, Rejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed("not three dot-separated parts"));
    };
    let header: Header = decode_json(header_b64, "header")?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(Rejection::Unsigned);
    }
    let alg = Alg::from_name(&header.alg).ok_or(Rejection::UnsupportedAlg(header.alg.clone()))?;
    if header.crit.is_some() {
        return Err(Rejection::Critical);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| Rejection::Malformed("signature is not base64url"))?;

    let candidates = candidate_keys(keys, alg, header.kid.as_deref())?;
    // The signed message is the encoded header and payload exactly as received.
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !candidates
        .iter()
        .any(|key| key.verifies(signed.as_bytes(), &signature))
    {
        return Err(Rejection::BadSignature);
    }

    let claims: Map<String, Value> = decode_json(payload_b64, "payload")?;
    check_claims(&claims, rules, now)?;
    Ok(claims)
}

/// The keys that may verify a token of `alg` with `kid`: a token naming a `kid` uses the key
/// with that `kid`, or keys configured without one; a token without `kid` uses any key of its
/// algorithm.
fn candidate_keys<'k>(
    keys: &'k [Key],
    alg: Alg,
    kid: Option<&str>,
) -> Result<Vec<&'k Key>, Rejection> {
    if let Some(kid) = kid {
        let known = keys
            .iter()
            .any(|k| k.kid.is_none() || k.kid.as_deref() == Some(kid));
        if !known {
            return Err(Rejection::UnknownKid(kid.to_owned()));
        }
    }
    let candidates: Vec<&Key> = keys
        .iter()
        .filter(|k| k.alg == alg)
        .filter(|k| match (kid, k.kid.as_deref()) {
            (Some(wanted), Some(has)) => wanted == has,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(Rejection::NoKeyForAlg {
            alg,
            kid: kid.map(str::to_owned),
        });
    }
    Ok(candidates)
}

fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    what: &'static str,
) -> Result<T, Rejection> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        Rejection::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "payload is not base64url"
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        Rejection::Malformed(if what == "header" {
            "header is not a JSON object with a string alg"
        } else {
            "payload is not a JSON object"
        })
    })
}

fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        // NumericDate may carry a fraction (RFC 7519 §2); whole seconds are precise enough.
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(Rejection::BadTime(name)),
        Some(_) => Err(Rejection::BadTime(name)),
    }
}

fn check_claims(claims: &Map<String, Value>, rules: &Rules, now: i64) -> Result<(), Rejection> {
    match numeric_date(claims, "exp")? {
        // Valid while now < exp (RFC 7519 §4.1.4), widened by the leeway.
        Some(exp) if now >= exp.saturating_add(rules.leeway_secs) => {
            return Err(Rejection::Expired { exp, now });
        }
        None if rules.require_exp => return Err(Rejection::MissingClaim("exp".to_owned())),
        _ => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now.saturating_add(rules.leeway_secs) < nbf
    {
        return Err(Rejection::NotYetValid { nbf, now });
    }
    if !rules.issuers.is_empty() {
        let iss = claims.get("iss").and_then(Value::as_str);
        if !iss.is_some_and(|iss| rules.issuers.iter().any(|i| i == iss)) {
            return Err(Rejection::Issuer(iss.map(str::to_owned)));
        }
    }
    if !rules.audiences.is_empty() {
        let aud = claims.get("aud");
        let accepted = match aud {
            Some(Value::String(a)) => rules.audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audiences.iter().any(|r| r == a)),
            _ => false,
        };
        if !accepted {
            return Err(Rejection::Audience(
                aud.map(Value::to_string)
                    .unwrap_or_else(|| "(none)".to_owned()),
            ));
        }
    }
    for name in &rules.required_claims {
        if claim(claims, name).is_none_or(Value::is_null) {
            return Err(Rejection::MissingClaim(name.clone()));
        }
    }
    Ok(())
}

/// A claim by name: a top-level claim of exactly that name, else a dotted path into nested
/// objects (`org.id` is `{"org": {"id": ...}}`).
pub fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}
