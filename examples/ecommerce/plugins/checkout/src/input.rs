//! The client's request: its JSON body, its `Idempotency-Key`, and the ids derived from them.

use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_sdk::Request;

use crate::answer::Failure;

/// Longest `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 255;

/// The fields a client sends. The cart and the prices are not among them: they are read from
/// the carts service and the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Whose cart is checked out.
    pub user_id: u64,
    /// The store the order is placed with.
    pub store_id: u64,
    /// The card to charge: 12 to 19 digits passing the Luhn check.
    pub card_number: String,
}

impl Input {
    /// Reads and checks the body; a 400 names the field.
    pub fn parse(body: Option<&[u8]>) -> Result<Self, Failure> {
        let body = body.unwrap_or_default();
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Failure::new(
                400,
                "bad_request",
                format!("the body must be a JSON object: {e}"),
            )
        })?;
        let Value::Object(fields) = value else {
            return Err(Failure::new(
                400,
                "bad_request",
                "the body must be a JSON object",
            ));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["user_id", "store_id", "card_number"].contains(&k.as_str()))
        {
            let unknown = unknown.chars().take(64).collect::<String>();
            return Err(Failure::new(
                400,
                "bad_request",
                format!(
                    "{unknown}: unknown field; send user_id, store_id and card_number (the cart \
                     is read from the carts service, prices from the catalogue)"
                ),
            )
            .with("field", Value::String(unknown)));
        }
        let id = |name: &'static str| match fields.get(name) {
            None | Some(Value::Null) => Err(Failure::field(name, "required")),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_SAFE_INTEGER).contains(n))
                .ok_or_else(|| Failure::field(name, "must be a positive integer")),
        };
        let user_id = id("user_id")?;
        let store_id = id("store_id")?;
        let card_number = match fields.get("card_number") {
            None | Some(Value::Null) => return Err(Failure::field("card_number", "required")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(Failure::field(
                    "card_number",
                    "must be a string of 12 to 19 digits",
                ));
            }
        };
        if !(12..=19).contains(&card_number.len())
            || !card_number.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Failure::field(
                "card_number",
                "must be a string of 12 to 19 digits",
            ));
        }
        if !luhn(&card_number) {
            return Err(Failure::field(
                "card_number",
                "fails the Luhn check (a digit is probably mistyped)",
            ));
        }
        Ok(Self {
            user_id,
            store_id,
            card_number,
        })
    }

    /// A digest of the request, to tell a retry from a different request under the same key.
    /// It is keyed with the idempotency key (which the bucket never stores), so the stored
    /// digest does not give the card number away to whoever reads the bucket.
    pub fn fingerprint(&self, key: &str) -> String {
        digest(&[
            b"tessera-checkout/fingerprint",
            key.as_bytes(),
            self.user_id.to_string().as_bytes(),
            self.store_id.to_string().as_bytes(),
            self.card_number.as_bytes(),
        ])
    }
}

/// JSON numbers above this lose precision in many clients.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
pub fn idempotency_key(request: &Request) -> Result<Option<String>, Failure> {
    let mut values = request.headers().get_all("idempotency-key");
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        Failure::new(
            400,
            "bad_request",
            format!("Idempotency-Key: must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )
        .with("field", Value::String("Idempotency-Key".into()))
    };
    if values.next().is_some() {
        return Err(
            Failure::new(400, "bad_request", "Idempotency-Key: send it once")
                .with("field", Value::String("Idempotency-Key".into())),
        );
    }
    if first.is_empty() || first.len() > MAX_KEY_LEN || !first.iter().all(u8::is_ascii_graphic) {
        return Err(bad());
    }
    Ok(Some(String::from_utf8_lossy(first).into_owned()))
}

/// The checkout id of `user_id`'s checkout under `key`: the same key gives the same id, so the
/// services' own idempotency (reservation ids, the order's `checkout_id`, the payment's
/// idempotency keys) recognises a retry. Keys are per user: two users' equal keys are two
/// checkouts.
pub fn keyed_checkout_id(user_id: u64, key: &str) -> String {
    digest(&[
        b"tessera-checkout/id",
        user_id.to_string().as_bytes(),
        key.as_bytes(),
    ])[..32]
        .to_owned()
}

/// A checkout id from fresh random bytes, for a request without a key.
pub fn random_checkout_id(random: [u8; 16]) -> String {
    hex(&random)
}

/// The id of the `attempt`-th run of a checkout (the first is 0): a run after a failure that
/// was undone starts afresh, with ids the services have not seen.
pub fn attempt_id(base: &str, attempt: u32) -> String {
    if attempt == 0 {
        base.to_owned()
    } else {
        format!("{base}-{attempt}")
    }
}

fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Input, String> {
        Input::parse(Some(body.as_bytes())).map_err(|f| format!("{} {}", f.status, f.message))
    }

    #[test]
    fn a_valid_body() {
        assert_eq!(
            parse(r#"{"user_id": 1, "store_id": 10, "card_number": "4242424242424242"}"#),
            Ok(Input {
                user_id: 1,
                store_id: 10,
                card_number: "4242424242424242".into()
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let card = r#""card_number": "4242424242424242""#;
        let cases = [
            ("", "400 the body must be a JSON object"),
            ("[1]", "400 the body must be a JSON object"),
            (
                &format!(r#"{{"store_id": 1, {card}}}"#),
                "400 user_id: required",
            ),
            (
                &format!(r#"{{"user_id": -1, "store_id": 1, {card}}}"#),
                "400 user_id: must be a positive integer",
            ),
            (
                &format!(r#"{{"user_id": 1.5, "store_id": 1, {card}}}"#),
                "400 user_id: must be a positive integer",
            ),
            (
                &format!(r#"{{"user_id": 1, "store_id": "2", {card}}}"#),
                "400 store_id: must be a positive integer",
            ),
            (
                &format!(r#"{{"user_id": 1, "store_id": 0, {card}}}"#),
                "400 store_id: must be a positive integer",
            ),
            (
                r#"{"user_id": 1, "store_id": 2}"#,
                "400 card_number: required",
            ),
            (
                r#"{"user_id": 1, "store_id": 2, "card_number": 4242424242424242}"#,
                "400 card_number: must be a string of 12 to 19 digits",
            ),
            (
                r#"{"user_id": 1, "store_id": 2, "card_number": "4242 4242 4242 4242"}"#,
                "400 card_number: must be a string of 12 to 19 digits",
            ),
            (
                r#"{"user_id": 1, "store_id": 2, "card_number": "4242424242424241"}"#,
                "400 card_number: fails the Luhn check (a digit is probably mistyped)",
            ),
        ];
        for (body, expected) in cases {
            let got = parse(body).unwrap_err();
            assert!(got.starts_with(expected), "{body}: {got}");
        }
        let f = Input::parse(Some(
            format!(r#"{{"user_id": 1, "store_id": 2, {card}, "items": [{{"price": 0}}]}}"#)
                .as_bytes(),
        ))
        .unwrap_err();
        assert!(
            f.message.starts_with("items: unknown field"),
            "{}",
            f.message
        );
        assert_eq!(f.extra, [("field", Value::String("items".into()))]);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_up_to_255() {
        let with = |v: &[u8]| {
            idempotency_key(&Request::new("POST", "/").with_header("idempotency-key", v))
        };
        assert_eq!(with(b"order-42").unwrap().as_deref(), Some("order-42"));
        assert_eq!(with(&[b'k'; 255]).unwrap().map(|k| k.len()), Some(255));
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"two words",
            b"caf\xc3\xa9",
            b"tab\t",
        ] {
            assert_eq!(with(bad).unwrap_err().status, 400, "{bad:?}");
        }
        assert_eq!(idempotency_key(&Request::new("POST", "/")).unwrap(), None);
        let twice = Request::new("POST", "/")
            .with_header("idempotency-key", "a")
            .with_header("idempotency-key", "b");
        assert_eq!(idempotency_key(&twice).unwrap_err().status, 400);
    }

    #[test]
    fn ids_are_per_user_and_key_and_fingerprints_per_body() {
        let a = keyed_checkout_id(1, "k");
        assert_eq!(a.len(), 32);
        assert_eq!(a, keyed_checkout_id(1, "k"));
        assert_ne!(a, keyed_checkout_id(2, "k"));
        assert_ne!(a, keyed_checkout_id(1, "k2"));
        assert_ne!(keyed_checkout_id(1, "1k"), keyed_checkout_id(11, "k"));
        assert_eq!(attempt_id(&a, 0), a);
        assert_eq!(attempt_id(&a, 2), format!("{a}-2"));
        assert_eq!(random_checkout_id([0xab; 16]), "ab".repeat(16));

        let input =
            parse(r#"{"user_id": 1, "store_id": 10, "card_number": "4242424242424242"}"#).unwrap();
        let other_card = Input {
            card_number: "4000000000000002".into(),
            ..input.clone()
        };
        assert_eq!(input.fingerprint("k"), input.fingerprint("k"));
        assert_ne!(input.fingerprint("k"), other_card.fingerprint("k"));
        assert_ne!(input.fingerprint("k"), input.fingerprint("k2"));
        assert!(!input.fingerprint("k").contains("4242"));
    }
}
