//! Which bodies are JSON, and rewriting one.

use tessera_sdk::Headers;

use crate::plan::BodyPlan;

/// What became of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not labelled JSON, or empty: nothing to transform.
    NotJson,
    /// JSON the operations did not change: the bytes stay exactly as they were.
    Unchanged,
    /// The transformed body.
    Rewritten(Vec<u8>),
    /// Labelled JSON but compressed (the `content-encoding`).
    Encoded(String),
    /// Labelled JSON but not JSON (why, from the parser).
    Invalid(String),
}

/// Whether a `content-type` names JSON: `application/json` or any `application/*+json`
/// (RFC 6839 §3.1), parameters and case aside. With several `content-type` lines, any of them:
/// what reads the body may pick any.
pub fn is_json(headers: &Headers) -> bool {
    headers.get_all("content-type").any(|value| {
        let Ok(value) = std::str::from_utf8(value) else {
            return false;
        };
        let essence = value.split(';').next().unwrap_or_default().trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        kind.eq_ignore_ascii_case("application")
            && (subtype.eq_ignore_ascii_case("json")
                || subtype.len() > "+json".len()
                    && subtype
                        .get(subtype.len() - "+json".len()..)
                        .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
    })
}

/// The `content-encoding` of a body that is encoded (anything but `identity`), if it is.
pub fn encoding(headers: &Headers) -> Option<String> {
    let mut codings: Vec<String> = Vec::new();
    for value in headers.get_all("content-encoding") {
        for coding in String::from_utf8_lossy(value).split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                codings.push(coding.to_owned());
            }
        }
    }
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// JSON's own whitespace (RFC 8259 §2).
fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Applies `plan` to a body with `headers`. `Err` is a failure of the plugin itself.
pub fn rewrite(plan: &BodyPlan, headers: &Headers, body: &[u8]) -> Result<Outcome, String> {
    if !is_json(headers) {
        return Ok(Outcome::NotJson);
    }
    if let Some(coding) = encoding(headers) {
        return Ok(Outcome::Encoded(coding));
    }
    // A byte order mark is not JSON, but RFC 8259 §8.1 lets a parser ignore one.
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if text.iter().all(|&b| is_json_whitespace(b)) {
        return Ok(Outcome::NotJson);
    }
    // serde_json refuses nesting deeper than 128 levels, so parsing cannot exhaust the stack;
    // duplicate keys keep the last value (in the first one's place), and the output has one.
    let document: serde_json::Value = match serde_json::from_slice(text) {
        Ok(document) => document,
        Err(e) => return Ok(Outcome::Invalid(e.to_string())),
    };
    let (document, changed) = plan.apply(document);
    if !changed {
        return Ok(Outcome::Unchanged);
    }
    serde_json::to_vec(&document)
        .map(Outcome::Rewritten)
        .map_err(|e| format!("cannot encode the transformed body: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::path::FieldPath;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.append(n, *v);
        }
        h
    }

    #[test]
    fn json_is_recognised_by_its_media_type() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/problem+json",
            "application/vnd.api+json; ext=bulk",
        ] {
            assert!(is_json(&headers(&[("content-type", yes)])), "{yes}");
        }
        for no in [
            "text/json",
            "application/jsonp",
            "application/+json",
            "application/json-seq",
            "text/plain",
            "application",
            "",
        ] {
            assert!(!is_json(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_json(&Headers::new()));
        assert!(is_json(&headers(&[
            ("content-type", "text/plain"),
            ("content-type", "application/json"),
        ])));
    }

    #[test]
    fn encodings_other_than_identity_count() {
        assert_eq!(encoding(&headers(&[])), None);
        assert_eq!(
            encoding(&headers(&[("content-encoding", "identity")])),
            None
        );
        assert_eq!(
            encoding(&headers(&[("content-encoding", "GZIP")])).as_deref(),
            Some("GZIP")
        );
        assert_eq!(
            encoding(&headers(&[("content-encoding", "identity, br")])).as_deref(),
            Some("br")
        );
    }

    #[test]
    fn bodies_are_rewritten_only_when_labelled_json_and_changed() {
        let plan = BodyPlan {
            deny: vec![FieldPath::parse("secret").unwrap()],
            ..BodyPlan::default()
        };
        let json_headers = headers(&[("content-type", "application/json")]);
        assert_eq!(
            rewrite(&plan, &json_headers, br#"{"secret":1,"a":2}"#),
            Ok(Outcome::Rewritten(br#"{"a":2}"#.to_vec()))
        );
        assert_eq!(
            rewrite(&plan, &json_headers, b" {\"a\" : 2}\n"),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(
            rewrite(
                &plan,
                &headers(&[("content-type", "text/plain")]),
                br#"{"secret":1}"#
            ),
            Ok(Outcome::NotJson)
        );
        assert_eq!(
            rewrite(&plan, &json_headers, b" \r\n"),
            Ok(Outcome::NotJson)
        );
        assert_eq!(rewrite(&plan, &json_headers, b""), Ok(Outcome::NotJson));
        assert_eq!(
            rewrite(&plan, &json_headers, b"\xEF\xBB\xBF{\"secret\":1}"),
            Ok(Outcome::Rewritten(b"{}".to_vec()))
        );
        assert!(matches!(
            rewrite(&plan, &json_headers, b"{\"secret\":1,"),
            Ok(Outcome::Invalid(_))
        ));
        assert!(matches!(
            rewrite(&plan, &json_headers, b"{\"a\":NaN}"),
            Ok(Outcome::Invalid(_))
        ));
        let gzip = headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]);
        assert_eq!(
            rewrite(&plan, &gzip, b"\x1f\x8b..."),
            Ok(Outcome::Encoded("gzip".to_owned()))
        );
    }

    #[test]
    fn duplicate_keys_collapse_to_the_last_value() {
        let plan = BodyPlan {
            deny: vec![FieldPath::parse("role").unwrap()],
            ..BodyPlan::default()
        };
        let json_headers = headers(&[("content-type", "application/json")]);
        assert_eq!(
            rewrite(
                &plan,
                &json_headers,
                br#"{"role":"a","id":1,"role":"admin"}"#
            ),
            Ok(Outcome::Rewritten(br#"{"id":1}"#.to_vec()))
        );
        let set = BodyPlan {
            set: vec![(FieldPath::parse("x").unwrap(), json!(0))],
            ..BodyPlan::default()
        };
        assert_eq!(
            rewrite(&set, &json_headers, br#"{"id":1,"id":2}"#),
            Ok(Outcome::Rewritten(br#"{"id":2,"x":0}"#.to_vec()))
        );
    }

    #[test]
    fn a_rewritten_body_is_compact_and_keeps_64_bit_integers_exactly() {
        let plan = BodyPlan {
            deny: vec![FieldPath::parse("x").unwrap()],
            ..BodyPlan::default()
        };
        let json_headers = headers(&[("content-type", "application/json")]);
        let body = br#"{ "x": 0, "u": 18446744073709551615, "i": -9223372036854775808,
            "f": 1.50, "e": 1e2, "big": 123456789012345678901234, "s": "\u00e9\ud83d\ude00\n" }"#;
        let Ok(Outcome::Rewritten(out)) = rewrite(&plan, &json_headers, body) else {
            panic!("rewritten");
        };
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with(
                r#"{"u":18446744073709551615,"i":-9223372036854775808,"f":1.5,"e":100.0,"big":1.23456789012345"#
            ),
            "{out}"
        );
        assert!(out.ends_with(r#","s":"é😀\n"}"#), "{out}");
        // Past 64-bit integers, a number is the nearest double, give or take its last digit.
        let big: serde_json::Value = serde_json::from_str(&out).unwrap();
        let big = big["big"].as_f64().unwrap();
        assert!(
            (big / 1.234_567_890_123_456_8e23 - 1.0).abs() < 1e-15,
            "{big}"
        );
    }

    #[test]
    fn hostile_documents_neither_crash_nor_recurse_without_bound() {
        let plan = BodyPlan {
            deny: vec![FieldPath::parse("a.a.a").unwrap()],
            set: vec![(FieldPath::parse("items[*].seen").unwrap(), json!(true))],
            ..BodyPlan::default()
        };
        let json_headers = headers(&[("content-type", "application/json")]);
        // Far deeper than the parser allows: refused by it, not by a stack overflow.
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(matches!(
            rewrite(&plan, &json_headers, deep.as_bytes()),
            Ok(Outcome::Invalid(e)) if e.contains("recursion limit")
        ));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            rewrite(&plan, &json_headers, deep.as_bytes()),
            Ok(Outcome::Invalid(_))
        ));
        // As deep as the parser allows: the operations reach only as far as their paths.
        let deep = format!("{}1{}", "{\"a\":".repeat(127), "}".repeat(127));
        assert!(matches!(
            rewrite(&plan, &json_headers, deep.as_bytes()),
            Ok(Outcome::Rewritten(_))
        ));
        // A large array of objects: one pass.
        let items = vec![json!({ "id": 1 }); 200_000];
        let body = serde_json::to_vec(&json!({ "items": items })).unwrap();
        let Ok(Outcome::Rewritten(out)) = rewrite(&plan, &json_headers, &body) else {
            panic!("rewritten");
        };
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["items"].as_array().unwrap().len(), 200_000);
        assert_eq!(out["items"][199_999], json!({ "id": 1, "seen": true }));
    }
}
