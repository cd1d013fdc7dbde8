//! Host bindings for the `tessera:gateway` WIT package: the one `bindgen!` in the host.
//!
//! The host binds the `plugin` world, which holds every export a plugin may have; a component
//! built for `filter` or `handler` implements part of it, and the per-interface `GuestIndices`
//! tell which part when the plugin is loaded.

// Generated from the WIT; its documentation is the WIT's.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tessera:gateway/plugin",
        imports: {
            "tessera:gateway/http-client": async | trappable,
            "wasi:keyvalue/store": async | trappable,
            "wasi:keyvalue/atomics": async | trappable,
            "wasi:keyvalue/batch": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "tessera:gateway/http-client.pending-response": crate::outbound::PendingCall,
            "wasi:keyvalue/store.bucket": crate::kv::BucketHandle,
            "wasi:keyvalue/atomics.cas": crate::kv::CasHandle,
        },
    });
}

pub use generated::Plugin as PluginWorld;
pub use generated::exports::tessera::gateway::config_check;
pub use generated::exports::tessera::gateway::request_filter::{self, RequestAction};
pub use generated::exports::tessera::gateway::request_handler;
pub use generated::tessera::gateway::log::Level;
pub use generated::tessera::gateway::types::{
    Header, Host as TypesHost, HttpError, OutgoingRequest, Request, Response,
};
pub use generated::tessera::gateway::{config, context, http_client, log};
pub use generated::wasi::keyvalue::{atomics, batch, store};
