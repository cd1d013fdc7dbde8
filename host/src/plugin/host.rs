//! The `tessera:gateway` imports, implemented on [`PluginState`].

use wasmtime::component::Resource;

use super::PluginState;
use crate::bindings::{HttpError, OutgoingRequest, Response};
use crate::bindings::{Level, config, context, http_client, log};
use crate::outbound::PendingCall;

/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 8192;

impl log::Host for PluginState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.log.load().admit(message.len().min(MAX_LOG_MESSAGE)) {
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" […]");
        }
        let plugin = &*self.call.plugin;
        let request_id = &*self.call.request_id;
        match level {
            Level::Trace => {
                tracing::trace!(target: "tessera::plugin", plugin, request_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "tessera::plugin", plugin, request_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "tessera::plugin", plugin, request_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "tessera::plugin", plugin, request_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "tessera::plugin", plugin, request_id, "{message}")
            }
        }
        Ok(())
    }
}

impl config::Host for PluginState {
    fn get(&mut self) -> wasmtime::Result<String> {
        Ok(self.call.config_json.to_string())
    }
}

impl context::Host for PluginState {
    fn route_param(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .call
            .params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone()))
    }

    fn route_params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.call.params.to_vec())
    }

    fn request_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.call.request_id.to_string())
    }

    fn route(&mut self) -> wasmtime::Result<String> {
        Ok(self.call.route.to_string())
    }

    fn client_address(&mut self) -> wasmtime::Result<String> {
        Ok(self.call.client.to_string())
    }
}

impl crate::bindings::TypesHost for PluginState {}

impl http_client::Host for PluginState {
    async fn send(
        &mut self,
        request: OutgoingRequest,
    ) -> wasmtime::Result<Result<Response, HttpError>> {
        Ok(self.outbound.send(request).await)
    }

    async fn start(&mut self, request: OutgoingRequest) -> wasmtime::Result<Resource<PendingCall>> {
        let pending = self.outbound.start(request);
        let handle = self.table.push(pending)?;
        self.open_calls += 1;
        Ok(handle)
    }

    async fn send_all(
        &mut self,
        requests: Vec<OutgoingRequest>,
    ) -> wasmtime::Result<Vec<Result<Response, HttpError>>> {
        Ok(self.outbound.send_all(requests).await)
    }
}

impl http_client::HostPendingResponse for PluginState {
    async fn wait(
        &mut self,
        pending: Resource<PendingCall>,
    ) -> wasmtime::Result<Result<Response, HttpError>> {
        let pending = self.table.get_mut(&pending)?;
        Ok(crate::outbound::wait(pending).await)
    }

    async fn trailers(
        &mut self,
        pending: Resource<PendingCall>,
    ) -> wasmtime::Result<Vec<crate::bindings::Header>> {
        Ok(crate::outbound::trailers(self.table.get(&pending)?))
    }

    async fn drop(&mut self, pending: Resource<PendingCall>) -> wasmtime::Result<()> {
        // Dropping the entry aborts a call still running.
        self.table.delete(pending)?;
        self.open_calls = self.open_calls.saturating_sub(1);
        Ok(())
    }
}
