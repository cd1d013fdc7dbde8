//! Calls into the gateway. On `wasm32` they go through the WIT imports; natively they go to the
//! [`MockHost`](crate::testing::MockHost) installed by the test, so plugins test with `cargo test`.

/// The SDK's one `generate!`: the host interfaces every plugin imports.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "tessera:gateway/imports",
        generate_all,
    });
}

pub(crate) use bindings::tessera::gateway::log::Level;
pub(crate) use bindings::tessera::gateway::types::{HttpError, OutgoingRequest, Response};

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::bindings::tessera::gateway::{config, context, http_client, log};
    use super::{HttpError, Level, OutgoingRequest, Response};

    pub fn log(level: Level, message: &str) {
        log::log(level, message);
    }
    pub fn config() -> String {
        config::get()
    }
    pub fn route_param(name: &str) -> Option<String> {
        context::route_param(name)
    }
    pub fn route_params() -> Vec<(String, String)> {
        context::route_params()
    }
    pub fn request_id() -> String {
        context::request_id()
    }
    pub fn route() -> String {
        context::route()
    }
    pub fn send(request: &OutgoingRequest) -> Result<Response, HttpError> {
        http_client::send(request)
    }
    pub type Pending = http_client::PendingResponse;
    pub fn start(request: &OutgoingRequest) -> Pending {
        http_client::start(request)
    }
    pub fn wait(pending: Pending) -> Result<Response, HttpError> {
        pending.wait()
    }
    pub fn send_all(requests: &[OutgoingRequest]) -> Vec<Result<Response, HttpError>> {
        http_client::send_all(requests)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{HttpError, Level, OutgoingRequest, Response};
    use crate::testing::with_mock;

    pub fn log(level: Level, message: &str) {
        with_mock(|m| m.record_log(level, message));
    }
    pub fn config() -> String {
        with_mock(|m| m.config_json())
    }
    pub fn route_param(name: &str) -> Option<String> {
        with_mock(|m| m.param_value(name))
    }
    pub fn route_params() -> Vec<(String, String)> {
        with_mock(|m| m.params())
    }
    pub fn request_id() -> String {
        with_mock(|m| m.current_request_id())
    }
    pub fn route() -> String {
        with_mock(|m| m.current_route())
    }
    pub fn send(request: &OutgoingRequest) -> Result<Response, HttpError> {
        with_mock(|m| {
            let pending = m.start(request);
            m.wait(pending)
        })
    }
    pub type Pending = crate::testing::MockPending;
    pub fn start(request: &OutgoingRequest) -> Pending {
        with_mock(|m| m.start(request))
    }
    pub fn wait(pending: Pending) -> Result<Response, HttpError> {
        with_mock(|m| m.wait(pending))
    }
    pub fn send_all(requests: &[OutgoingRequest]) -> Vec<Result<Response, HttpError>> {
        with_mock(|m| {
            let pending: Vec<Pending> = requests.iter().map(|r| m.start(r)).collect();
            pending.into_iter().map(|p| m.wait(p)).collect()
        })
    }
}

pub(crate) use imp::*;
