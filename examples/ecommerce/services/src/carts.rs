//! The carts service: one cart per user id, kept in memory, seeded from `fixtures/carts.json`.
//!
//! A cart holds at most [`MAX_LINES`] lines, one per product, each with a quantity of 1 to
//! [`MAX_QUANTITY`]. Product ids are not checked against the catalog: a cart may name a product
//! the shop no longer sells, and the checkout has to cope with it.

use std::collections::BTreeMap;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::http::{
    Answer, MAX_LINES, MAX_QUANTITY, bad_request, check_quantity, json, method_not_allowed,
    no_content, not_found, parse_id, read_json, segments,
};
use crate::shop::{Shop, lock};

/// One line of a cart: a product and how many of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartItem {
    /// The product's id (`/products/{id}`).
    pub product_id: u64,
    /// How many, 1 to 1000.
    pub quantity: u32,
}

/// The carts by user id. A user without an entry has an empty cart.
#[derive(Debug, Default)]
pub(crate) struct Carts {
    by_user: BTreeMap<u64, Vec<CartItem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CartFixture {
    user_id: u64,
    items: Vec<CartItem>,
}

/// `PUT /carts/{user_id}`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CartBody {
    items: Vec<CartItem>,
}

/// A cart as the service answers it.
#[derive(Serialize)]
struct CartView<'a> {
    user_id: u64,
    items: &'a [CartItem],
}

impl Carts {
    pub(crate) fn from_fixture() -> Carts {
        let fixture: Vec<CartFixture> =
            serde_json::from_str(include_str!("../fixtures/carts.json"))
                .expect("fixtures/carts.json is a list of carts (checked by a test)");
        Carts {
            by_user: fixture
                .into_iter()
                .map(|cart| (cart.user_id, cart.items))
                .collect(),
        }
    }

    fn get(&self, user_id: u64) -> &[CartItem] {
        self.by_user.get(&user_id).map_or(&[], Vec::as_slice)
    }

    fn set(&mut self, user_id: u64, items: Vec<CartItem>) {
        if items.is_empty() {
            self.by_user.remove(&user_id);
        } else {
            self.by_user.insert(user_id, items);
        }
    }

    /// Adds `item` to the user's cart: to the line of the same product if there is one.
    fn add(&mut self, user_id: u64, item: CartItem) -> Result<&[CartItem], String> {
        let items = self.by_user.entry(user_id).or_default();
        if let Some(line) = items.iter_mut().find(|l| l.product_id == item.product_id) {
            let total = line.quantity.saturating_add(item.quantity);
            if total > MAX_QUANTITY {
                return Err(format!(
                    "quantity of product {} would be {total}; a cart line holds at most {MAX_QUANTITY}",
                    item.product_id
                ));
            }
            line.quantity = total;
        } else {
            if items.len() >= MAX_LINES {
                return Err(format!(
                    "the cart already has {MAX_LINES} lines, the most it can hold"
                ));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// Checks a whole cart: its size, each quantity, no product twice.
fn check_items(items: &[CartItem]) -> Result<(), String> {
    if items.len() > MAX_LINES {
        return Err(format!(
            "items: at most {MAX_LINES} lines, got {}",
            items.len()
        ));
    }
    for (i, item) in items.iter().enumerate() {
        check_quantity(&format!("items[{i}].quantity"), item.quantity)?;
        if let Some(first) = items[..i]
            .iter()
            .position(|earlier| earlier.product_id == item.product_id)
        {
            return Err(format!(
                "items[{i}].product_id {} is already in items[{first}]; a cart has one line per product",
                item.product_id
            ));
        }
    }
    Ok(())
}

fn cart(user_id: u64, items: &[CartItem]) -> Answer {
    json(StatusCode::OK, &CartView { user_id, items })
}

/// The carts service's routes.
pub(crate) async fn answer(shop: &Shop, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let segments = segments(parts.uri.path());
    let (user_id, rest) = match segments.as_slice() {
        ["carts", user_id, rest @ ..] => (parse_id(user_id), rest),
        _ => return not_found("no such resource"),
    };
    let Some(user_id) = user_id else {
        return not_found("no such cart: the user id must be a number");
    };
    let carts = &shop.state.carts;
    match (rest, parts.method) {
        ([], Method::GET) => cart(user_id, lock(carts).get(user_id)),
        ([], Method::PUT) => {
            let body: CartBody = match read_json(body).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            if let Err(message) = check_items(&body.items) {
                return bad_request(message);
            }
            let mut carts = lock(carts);
            carts.set(user_id, body.items);
            cart(user_id, carts.get(user_id))
        }
        ([], Method::DELETE) => {
            lock(carts).set(user_id, Vec::new());
            no_content()
        }
        ([], _) => method_not_allowed("GET, PUT, DELETE"),
        (["items"], Method::POST) => {
            let item: CartItem = match read_json(body).await {
                Ok(item) => item,
                Err(answer) => return answer,
            };
            if let Err(message) = check_quantity("quantity", item.quantity) {
                return bad_request(message);
            }
            match lock(carts).add(user_id, item) {
                Ok(items) => cart(user_id, items),
                Err(message) => bad_request(message),
            }
        }
        (["items"], _) => method_not_allowed("POST"),
        _ => not_found("no such resource"),
    }
}

impl Shop {
    /// The user's cart (empty for a user without one).
    pub fn cart(&self, user_id: u64) -> Vec<CartItem> {
        lock(&self.state.carts).get(user_id).to_vec()
    }

    /// Replaces the user's cart. Not checked, so a test can also set a cart the API would
    /// refuse.
    pub fn set_cart(&self, user_id: u64, items: Vec<CartItem>) {
        lock(&self.state.carts).set(user_id, items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(product_id: u64, quantity: u32) -> CartItem {
        CartItem {
            product_id,
            quantity,
        }
    }

    #[test]
    fn the_fixture_seeds_users_one_to_three_with_known_products() {
        let carts = Carts::from_fixture();
        for user in 1..=3 {
            let items = carts.get(user);
            assert!(!items.is_empty(), "user {user}");
            assert!(check_items(items).is_ok());
            assert!(items.iter().all(|i| (100..=107).contains(&i.product_id)));
        }
        assert!(carts.get(4).is_empty());
    }

    #[test]
    fn adding_a_product_already_in_the_cart_adds_to_its_line() {
        let mut carts = Carts::default();
        carts.add(9, item(100, 2)).unwrap();
        carts.add(9, item(101, 1)).unwrap();
        assert_eq!(
            carts.add(9, item(100, 3)).unwrap(),
            &[item(100, 5), item(101, 1)]
        );
        let e = carts.add(9, item(100, 996)).unwrap_err();
        assert_eq!(
            e,
            "quantity of product 100 would be 1001; a cart line holds at most 1000"
        );
        assert_eq!(carts.get(9), &[item(100, 5), item(101, 1)]);
    }

    #[test]
    fn a_cart_holds_a_bounded_number_of_lines() {
        let mut carts = Carts::default();
        for product in 0..MAX_LINES as u64 {
            carts.add(1, item(product, 1)).unwrap();
        }
        assert!(carts.add(1, item(1000, 1)).is_err());
        assert!(carts.add(1, item(0, 1)).is_ok());
        let too_many: Vec<_> = (0..=MAX_LINES as u64).map(|p| item(p, 1)).collect();
        assert_eq!(
            check_items(&too_many).unwrap_err(),
            "items: at most 100 lines, got 101"
        );
    }

    #[test]
    fn a_whole_cart_is_checked_line_by_line() {
        assert!(check_items(&[]).is_ok());
        assert_eq!(
            check_items(&[item(1, 1), item(2, 0)]).unwrap_err(),
            "items[1].quantity must be 1 to 1000, got 0"
        );
        assert_eq!(
            check_items(&[item(1, 1001)]).unwrap_err(),
            "items[0].quantity must be 1 to 1000, got 1001"
        );
        assert_eq!(
            check_items(&[item(1, 1), item(2, 1), item(1, 3)]).unwrap_err(),
            "items[2].product_id 1 is already in items[0]; a cart has one line per product"
        );
    }
}
