//! Write [Tessera](https://github.com/tessera-gateway/tessera) gateway plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It is either a **filter**,
//! which sees every request of a route before its target and every response after it, or a
//! **handler**, which is the route's target. The gateway creates a fresh instance of the plugin
//! for every request, so plain `static` state lives exactly as long as one request.
//!
//! ```no_run
//! use tessera_sdk::{Error, Handler, Request, Response, context};
//!
//! struct Hello;
//!
//! impl Handler for Hello {
//!     fn handle(_request: Request) -> Result<Response, Error> {
//!         let name = context::param("name").unwrap_or_else(|| "world".to_owned());
//!         Ok(Response::json(200, &serde_json::json!({ "hello": name })))
//!     }
//! }
//!
//! tessera_sdk::handler!(Hello);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2` and point a route at the `.wasm` file.
//! Natively (`cargo test`) the same code runs against [`testing::MockHost`].
//!
//! See `docs/plugin-guide.md` in the repository for the whole guide.

#![deny(missing_docs)]

mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
mod host;
pub mod http;
pub mod kv;
mod message;
pub mod testing;

pub use error::Error;
pub use message::{Headers, Request, Response};

/// What a filter does with a request.
#[derive(Debug)]
pub enum Action {
    /// Pass the (possibly rewritten) request on.
    Continue(Request),
    /// Answer now; the route's target never sees the request.
    Respond(Response),
}

/// A plugin in a route's filter chain. Both methods have pass-through defaults.
pub trait Filter {
    /// Sees the request before the route's target. An `Err` answers with its status.
    fn on_request(request: Request) -> Result<Action, Error> {
        Ok(Action::Continue(request))
    }

    /// Sees the response on its way back. An `Err` replaces it with an error response.
    fn on_response(response: Response) -> Result<Response, Error> {
        Ok(response)
    }
}

/// A plugin that is a route's target.
pub trait Handler {
    /// Serves the request. An `Err` becomes a JSON error response with the error's status.
    fn handle(request: Request) -> Result<Response, Error>;
}

/// The route's configuration for this plugin (`config = { ... }` in `tessera.toml`).
///
/// A plugin exported with `config = T` (see [`filter!`]) has had this exact config checked when
/// the gateway loaded it, so the error here is for plugins that do not declare their config.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, Error> {
    parse_config(&host::config()).map_err(|e| {
        Error::internal("the plugin is misconfigured")
            .with_detail(format!("invalid plugin config: {e}"))
    })
}

/// Reads a config document (the JSON of a route entry's `config` table) as `T`. The error names
/// the key that is wrong, e.g. ``request.ad: unknown field `ad`, expected one of `add`, `set`,
/// `remove` `` (the path ends at the key the message is about).
///
/// This is what the `config-check` export of `filter!(F, config = T)` and `handler!(H, config =
/// T)` runs at load, so a unit test can show what the gateway would say about a config.
pub fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut reader = serde_json::Deserializer::from_str(json);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut reader);
    let value = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let mut message = inner.to_string();
        // Where in the JSON the host built is no help to someone editing TOML; the path is.
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        if let Some(stripped) = message.strip_suffix(&position) {
            message = stripped.to_owned();
        }
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })?;
    reader
        .end()
        .map_err(|e| format!("the config is not one JSON document: {e}"))?;
    Ok(value)
}

/// Facts about the request being served.
pub mod context {
    use crate::host;

    /// A path parameter of the matched route, e.g. `id` for `/orders/{id}`.
    pub fn param(name: &str) -> Option<String> {
        host::route_param(name)
    }

    /// All path parameters, in pattern order.
    pub fn params() -> Vec<(String, String)> {
        host::route_params()
    }

    /// The gateway's id for this request.
    pub fn request_id() -> String {
        host::request_id()
    }

    /// The matched route's pattern.
    pub fn route() -> String {
        host::route()
    }

    /// The client's IP address: the connection's peer, or the address a trusted proxy
    /// forwarded (the gateway's `server.trusted_proxies`). A client cannot forge it.
    pub fn client_address() -> std::net::IpAddr {
        let text = host::client_address();
        text.parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }
}

/// Logging into the gateway's log, tagged with the plugin and request id.
pub mod log {
    use crate::host::{self, Level};

    /// Logs at trace level.
    pub fn trace(message: impl AsRef<str>) {
        host::log(Level::Trace, message.as_ref());
    }

    /// Logs at debug level.
    pub fn debug(message: impl AsRef<str>) {
        host::log(Level::Debug, message.as_ref());
    }

    /// Logs at info level.
    pub fn info(message: impl AsRef<str>) {
        host::log(Level::Info, message.as_ref());
    }

    /// Logs at warn level.
    pub fn warn(message: impl AsRef<str>) {
        host::log(Level::Warn, message.as_ref());
    }

    /// Logs at error level.
    pub fn error(message: impl AsRef<str>) {
        host::log(Level::Error, message.as_ref());
    }
}

/// Exports a [`Filter`] implementation as the plugin's `request-filter`.
///
/// ```ignore
/// struct AddHeader;
/// impl tessera_sdk::Filter for AddHeader { /* ... */ }
/// tessera_sdk::filter!(AddHeader);
/// ```
///
/// With `config = T` (any `T: Deserialize`) the plugin also exports `config-check`: the gateway
/// then refuses, at load and reload and in `tessera check`, a route whose config does not read as
/// `T`, naming the route and the key, instead of the first request finding out. `check = f` adds
/// rules the type cannot say, with `f: fn(&T) -> Result<(), String>`:
///
/// ```ignore
/// tessera_sdk::filter!(AddHeader, config = Config);
/// tessera_sdk::filter!(AddHeader, config = Config, check = Config::check);
/// ```
#[macro_export]
macro_rules! filter {
    ($ty:ty) => {
        $crate::__tessera_export!("tessera:gateway/filter",
            $crate::__tessera_filter_guest!($ty);
            // Only a wasm component exports the ABI symbols; their names do not link natively.
            #[cfg(target_arch = "wasm32")]
            export!(__TesseraPlugin);
        );
    };
    ($ty:ty, config = $config:ty $(,)?) => {
        $crate::filter!($ty, config = $config, check = $crate::__private::no_check::<$config>);
    };
    ($ty:ty, config = $config:ty, check = $check:expr $(,)?) => {
        $crate::__tessera_export!("tessera:gateway/checked-filter",
            $crate::__tessera_filter_guest!($ty);
            $crate::__tessera_config_check!($config, $check);
            #[cfg(target_arch = "wasm32")]
            export!(__TesseraPlugin);
        );
    };
}

/// Exports a [`Handler`] implementation as the plugin's `request-handler`.
///
/// ```ignore
/// struct Hello;
/// impl tessera_sdk::Handler for Hello { /* ... */ }
/// tessera_sdk::handler!(Hello);
/// ```
///
/// `config = T` and `check = f` work as for [`filter!`].
#[macro_export]
macro_rules! handler {
    ($ty:ty) => {
        $crate::__tessera_export!("tessera:gateway/handler",
            $crate::__tessera_handler_guest!($ty);
            #[cfg(target_arch = "wasm32")]
            export!(__TesseraPlugin);
        );
    };
    ($ty:ty, config = $config:ty $(,)?) => {
        $crate::handler!($ty, config = $config, check = $crate::__private::no_check::<$config>);
    };
    ($ty:ty, config = $config:ty, check = $check:expr $(,)?) => {
        $crate::__tessera_export!("tessera:gateway/checked-handler",
            $crate::__tessera_handler_guest!($ty);
            $crate::__tessera_config_check!($config, $check);
            #[cfg(target_arch = "wasm32")]
            export!(__TesseraPlugin);
        );
    };
}

/// The `request-filter` glue of [`filter!`]; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __tessera_filter_guest {
    ($ty:ty) => {
        #[allow(dead_code)] // natively nothing calls it; tests go through MockHost
        struct __TesseraPlugin;
        impl exports::tessera::gateway::request_filter::Guest for __TesseraPlugin {
            fn on_request(
                request: $crate::__private::WitRequest,
            ) -> exports::tessera::gateway::request_filter::RequestAction {
                use exports::tessera::gateway::request_filter::RequestAction;
                match $crate::__private::on_request::<$ty>(request) {
                    $crate::__private::WitAction::Continue(r) => RequestAction::Continue(r),
                    $crate::__private::WitAction::Respond(r) => RequestAction::Respond(r),
                }
            }
            fn on_response(
                response: $crate::__private::WitResponse,
            ) -> $crate::__private::WitResponse {
                $crate::__private::on_response::<$ty>(response)
            }
        }
    };
}

/// The `request-handler` glue of [`handler!`]; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __tessera_handler_guest {
    ($ty:ty) => {
        #[allow(dead_code)] // natively nothing calls it; tests go through MockHost
        struct __TesseraPlugin;
        impl exports::tessera::gateway::request_handler::Guest for __TesseraPlugin {
            fn handle(request: $crate::__private::WitRequest) -> $crate::__private::WitResponse {
                $crate::__private::handle::<$ty>(request)
            }
        }
    };
}

/// The `config-check` glue of `config = T`; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __tessera_config_check {
    ($config:ty, $check:expr) => {
        impl exports::tessera::gateway::config_check::Guest for __TesseraPlugin {
            fn validate_config(config: String) -> Result<(), String> {
                $crate::__private::validate_config::<$config>(&config, $check)
            }
        }
    };
}

include!(concat!(env!("OUT_DIR"), "/wit_text.rs"));

/// Support for the export macros; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::host::bindings;
    pub use wit_bindgen;

    use crate::{Action, Filter, Handler, Request, Response};

    /// The WIT request record.
    pub type WitRequest = bindings::tessera::gateway::types::Request;
    /// The WIT response record.
    pub type WitResponse = bindings::tessera::gateway::types::Response;

    /// A filter's decision in WIT records.
    #[derive(Debug)]
    pub enum WitAction {
        /// Continue with this request.
        Continue(WitRequest),
        /// Answer with this response.
        Respond(WitResponse),
    }

    /// Runs a filter's `on_request`.
    pub fn on_request<F: Filter>(request: WitRequest) -> WitAction {
        match F::on_request(Request::from_wit(request)) {
            Ok(Action::Continue(r)) => WitAction::Continue(r.into_wit()),
            Ok(Action::Respond(r)) => WitAction::Respond(r.into_wit()),
            Err(e) => WitAction::Respond(e.into_response().into_wit()),
        }
    }

    /// Runs a filter's `on_response`.
    pub fn on_response<F: Filter>(response: WitResponse) -> WitResponse {
        match F::on_response(Response::from_wit(response)) {
            Ok(r) => r.into_wit(),
            Err(e) => e.into_response().into_wit(),
        }
    }

    /// What `config-check` runs: `C` must read from the JSON, then pass `check`.
    pub fn validate_config<C: serde::de::DeserializeOwned>(
        json: &str,
        check: impl FnOnce(&C) -> Result<(), String>,
    ) -> Result<(), String> {
        check(&crate::parse_config::<C>(json)?)
    }

    /// The check of a config that has no rules beyond its type.
    pub fn no_check<C>(_: &C) -> Result<(), String> {
        Ok(())
    }

    /// Runs a handler.
    pub fn handle<H: Handler>(request: WitRequest) -> WitResponse {
        match H::handle(Request::from_wit(request)) {
            Ok(r) => r.into_wit(),
            Err(e) => e.into_response().into_wit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        limit: u32,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        name: String,
    }

    #[test]
    fn config_errors_name_the_key_and_not_the_json_position() {
        let typo = parse_config::<Config>(r#"{"limit": 1, "rules": [{"nmae": "x"}]}"#).unwrap_err();
        assert_eq!(typo, "rules[0].nmae: unknown field `nmae`, expected `name`");
        assert!(!typo.contains("column"), "{typo}");
        let wrong = parse_config::<Config>(r#"{"limit": "ten"}"#).unwrap_err();
        assert!(
            wrong.starts_with("limit: invalid type: string \"ten\""),
            "{wrong}"
        );
        let missing = parse_config::<Config>("{}").unwrap_err();
        assert_eq!(missing, "missing field `limit`");
        assert!(parse_config::<Config>(r#"{"limit": 1} {}"#).is_err());
        assert_eq!(parse_config::<Config>(r#"{"limit": 7}"#).unwrap().limit, 7);
    }

    #[test]
    fn the_check_runs_after_the_type_reads() {
        let at_most_ten = |c: &Config| {
            if c.limit > 10 {
                Err(format!("limit: {} is over 10", c.limit))
            } else {
                Ok(())
            }
        };
        assert!(__private::validate_config::<Config>(r#"{"limit": 3}"#, at_most_ten).is_ok());
        assert_eq!(
            __private::validate_config::<Config>(r#"{"limit": 30}"#, at_most_ten).unwrap_err(),
            "limit: 30 is over 10"
        );
        assert_eq!(
            __private::validate_config::<Config>(r#"{}"#, at_most_ten).unwrap_err(),
            "missing field `limit`"
        );
    }
}
