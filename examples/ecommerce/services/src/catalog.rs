//! The read-only records: users, stores and products, answered from the fixtures. A product's
//! `stock` is the inventory's live `available` count.

use http::Method;
use serde_json::Value;

use crate::Service;
use crate::http::{Answer, json, method_not_allowed, not_found, parse_id, segments};
use crate::shop::{Shop, lock};

/// The fixture records, parsed once.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) users: Vec<Value>,
    pub(crate) products: Vec<Value>,
    pub(crate) stores: Vec<Value>,
}

impl Catalog {
    pub(crate) fn from_fixtures() -> Catalog {
        Catalog {
            users: records(include_str!("../fixtures/users.json"), "users"),
            products: records(include_str!("../fixtures/products.json"), "products"),
            stores: records(include_str!("../fixtures/stores.json"), "stores"),
        }
    }

    fn records(&self, service: Service) -> &[Value] {
        match service {
            Service::Users => &self.users,
            Service::Products => &self.products,
            Service::Stores => &self.stores,
            Service::Orders | Service::Carts | Service::Payments => &[],
        }
    }
}

/// The fixtures are part of the crate; `the_fixtures_parse` checks every one.
fn records(text: &str, name: &str) -> Vec<Value> {
    match serde_json::from_str(text) {
        Ok(Value::Array(records)) => records,
        _ => panic!("fixtures/{name}.json must be a JSON array"),
    }
}

/// `GET /{service}/{id}` for users, stores and products.
pub(crate) fn answer(service: Service, shop: &Shop, method: &Method, path: &str) -> Answer {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let id = match segments(path).as_slice() {
        [collection, id] if *collection == service.name() => parse_id(id),
        _ => None,
    };
    let record = id.and_then(|id| {
        shop.state
            .catalog
            .records(service)
            .iter()
            .find(|record| record["id"] == id)
            .map(|record| (id, record))
    });
    match record {
        Some((id, record)) if service == Service::Products => {
            let mut product = record.clone();
            if let Some(available) = lock(&shop.state.inventory).available(id) {
                product["stock"] = available.into();
            }
            json(http::StatusCode::OK, &product)
        }
        Some((_, record)) => json(http::StatusCode::OK, record),
        None => not_found(format!("no such {} record", service.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_parse() {
        let catalog = Catalog::from_fixtures();
        assert_eq!(catalog.users.len(), 5);
        assert_eq!(catalog.products.len(), 8);
        assert_eq!(catalog.stores.len(), 3);
        for product in &catalog.products {
            assert!(product["stock"].is_u64(), "{product}");
        }
    }
}
