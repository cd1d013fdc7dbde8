//! The route entry's config, checked when the gateway loads it.

use std::time::Duration;

use serde::Deserialize;

/// Longest timeout of one step.
pub const MAX_STEP_TIMEOUT_MS: u32 = 60_000;
/// Most distinct products `max_products` may allow.
pub const MAX_PRODUCTS_LIMIT: usize = 100;

/// The plugin's config. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// ISO 4217 code the catalogue's prices and the payments are in. Default `EUR`. Amounts are
    /// handled in cents (1/100 of the unit).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The key-value bucket that remembers idempotent checkouts; the route entry must grant it
    /// (`buckets = ["..."]`). Default none: an `Idempotency-Key` then only seeds the checkout id
    /// (see the crate docs).
    #[serde(default)]
    pub idempotency_bucket: Option<String>,
    /// How long a checkout in progress holds its idempotency key before another request with
    /// that key may take over (when the first was cut off without finishing). Default 60000; it
    /// must be longer than the longest a checkout can take with the configured timeouts.
    #[serde(default = "default_lease_ms")]
    pub idempotency_lease_ms: u64,
    /// Most distinct products a cart may hold to be checked out, 1 to 100. Default 16. Each one
    /// costs three outbound calls (price, reserve, commit) against the entry's
    /// `limits.max_calls`.
    #[serde(default = "default_max_products")]
    pub max_products: usize,
    /// Most units of one product in one checkout. Default 1000.
    #[serde(default = "default_max_quantity")]
    pub max_quantity: u32,
    /// The `location` of the created order: `{id}` becomes the order id. Default
    /// `/api/orders/{id}`.
    #[serde(default = "default_order_location")]
    pub order_location: String,
    /// Timeouts of each step, in milliseconds.
    #[serde(default)]
    pub timeouts_ms: Timeouts,
}

/// Per-step timeouts in milliseconds, each 1 to 60000.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Reading the cart. Default 1000.
    pub cart: u32,
    /// Each product lookup. Default 1000.
    pub price: u32,
    /// Each reservation. Default 2000.
    pub reserve: u32,
    /// The authorisation. Default 3000.
    pub authorize: u32,
    /// Creating the order. Default 2000.
    pub create_order: u32,
    /// The capture. Default 3000.
    pub capture: u32,
    /// Emptying the cart. Default 1000.
    pub empty_cart: u32,
    /// Each reservation's commit. Default 1000.
    pub commit: u32,
    /// Cancelling the order (compensation). Default 2000.
    pub cancel_order: u32,
    /// Voiding, or refunding, the payment (compensation). Default 3000.
    pub void: u32,
    /// Each reservation's release (compensation). Default 2000.
    pub release: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            cart: 1000,
            price: 1000,
            reserve: 2000,
            authorize: 3000,
            create_order: 2000,
            capture: 3000,
            empty_cart: 1000,
            commit: 1000,
            cancel_order: 2000,
            void: 3000,
            release: 2000,
        }
    }
}

fn default_currency() -> String {
    "EUR".to_owned()
}
fn default_lease_ms() -> u64 {
    60_000
}
fn default_max_products() -> usize {
    16
}
fn default_max_quantity() -> u32 {
    1000
}
fn default_order_location() -> String {
    "/api/orders/{id}".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            currency: default_currency(),
            idempotency_bucket: None,
            idempotency_lease_ms: default_lease_ms(),
            max_products: default_max_products(),
            max_quantity: default_max_quantity(),
            order_location: default_order_location(),
            timeouts_ms: Timeouts::default(),
        }
    }
}

impl Timeouts {
    fn each(&self) -> [(&'static str, u32); 11] {
        [
            ("cart", self.cart),
            ("price", self.price),
            ("reserve", self.reserve),
            ("authorize", self.authorize),
            ("create_order", self.create_order),
            ("capture", self.capture),
            ("empty_cart", self.empty_cart),
            ("commit", self.commit),
            ("cancel_order", self.cancel_order),
            ("void", self.void),
            ("release", self.release),
        ]
    }

    /// The longest a checkout can run with these timeouts: the slower of the success path and
    /// a capture that fails and is compensated (cancel, void then refund, release). Lookups and
    /// reservations overlap; releases and commits run concurrently.
    pub fn worst_case_ms(&self) -> u64 {
        let to_capture = u64::from(self.cart)
            + u64::from(self.price.max(self.reserve))
            + u64::from(self.authorize)
            + u64::from(self.create_order)
            + u64::from(self.capture);
        let success = u64::from(self.empty_cart) + u64::from(self.commit);
        let undone =
            u64::from(self.cancel_order) + 2 * u64::from(self.void) + u64::from(self.release);
        to_capture + success.max(undone)
    }
}

/// A step's timeout.
pub fn ms(timeout: u32) -> Duration {
    Duration::from_millis(u64::from(timeout))
}

impl Config {
    /// The rules the types cannot say; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        let c = &self.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "currency: {c:?} is not an ISO 4217 code (three capital letters, e.g. \"EUR\")"
            ));
        }
        if let Some(bucket) = &self.idempotency_bucket {
            let valid = !bucket.is_empty()
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(format!(
                    "idempotency_bucket: {bucket:?} is not a bucket name (letters, digits, '-' and '_')"
                ));
            }
        }
        if !(1..=MAX_PRODUCTS_LIMIT).contains(&self.max_products) {
            return Err(format!(
                "max_products: {} is not between 1 and {MAX_PRODUCTS_LIMIT}",
                self.max_products
            ));
        }
        if self.max_quantity == 0 {
            return Err("max_quantity: must be at least 1".to_owned());
        }
        if !self.order_location.starts_with('/') || !self.order_location.contains("{id}") {
            return Err(format!(
                "order_location: {:?} must be a path starting with '/' holding \"{{id}}\"",
                self.order_location
            ));
        }
        if self
            .order_location
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
        {
            return Err("order_location: must be printable ASCII without spaces".to_owned());
        }
        for (name, value) in self.timeouts_ms.each() {
            if !(1..=MAX_STEP_TIMEOUT_MS).contains(&value) {
                return Err(format!(
                    "timeouts_ms.{name}: {value} is not between 1 and {MAX_STEP_TIMEOUT_MS}"
                ));
            }
        }
        let worst = self.timeouts_ms.worst_case_ms();
        if self.idempotency_lease_ms <= worst {
            return Err(format!(
                "idempotency_lease_ms: {} is not longer than the longest a checkout can take with \
                 these timeouts ({worst} ms); another request with the same key could run while \
                 the first still does",
                self.idempotency_lease_ms
            ));
        }
        Ok(())
    }

    /// The `location` of order `id`.
    pub fn location_of(&self, id: u64) -> String {
        self.order_location.replace("{id}", &id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<(), String> {
        let config: Config = tessera_sdk::parse_config(json)?;
        config.check()
    }

    #[test]
    fn defaults_pass_and_read_from_an_empty_table() {
        assert_eq!(check("{}"), Ok(()));
        let config: Config = tessera_sdk::parse_config("{}").unwrap();
        assert_eq!(config.currency, "EUR");
        assert_eq!(config.timeouts_ms.capture, 3000);
        assert_eq!(config.timeouts_ms.worst_case_ms(), 21_000);
        assert_eq!(config.location_of(7), "/api/orders/7");
    }

    #[test]
    fn errors_name_the_key() {
        let e = check(r#"{"curency": "EUR"}"#).unwrap_err();
        assert!(e.starts_with("curency: unknown field `curency`"), "{e}");
        let e = check(r#"{"timeouts_ms": {"captur": 5}}"#).unwrap_err();
        assert!(
            e.starts_with("timeouts_ms.captur: unknown field `captur`"),
            "{e}"
        );
        assert!(
            check(r#"{"currency": "eur"}"#)
                .unwrap_err()
                .starts_with("currency:")
        );
        assert!(
            check(r#"{"idempotency_bucket": "a b"}"#)
                .unwrap_err()
                .starts_with("idempotency_bucket:")
        );
        assert!(
            check(r#"{"max_products": 0}"#)
                .unwrap_err()
                .starts_with("max_products:")
        );
        assert!(
            check(r#"{"max_quantity": 0}"#)
                .unwrap_err()
                .starts_with("max_quantity:")
        );
        assert!(
            check(r#"{"order_location": "orders"}"#)
                .unwrap_err()
                .starts_with("order_location:")
        );
        assert_eq!(
            check(r#"{"timeouts_ms": {"void": 0}}"#).unwrap_err(),
            "timeouts_ms.void: 0 is not between 1 and 60000"
        );
    }

    #[test]
    fn the_lease_must_outlast_the_slowest_checkout() {
        let e = check(r#"{"idempotency_lease_ms": 20000}"#).unwrap_err();
        assert!(e.starts_with("idempotency_lease_ms: 20000"), "{e}");
        assert!(e.contains("21000 ms"), "{e}");
        assert_eq!(
            check(r#"{"idempotency_lease_ms": 20000, "timeouts_ms": {"void": 1000}}"#),
            Ok(())
        );
    }
}
