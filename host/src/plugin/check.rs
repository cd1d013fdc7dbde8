//! The optional `config-check` export: before a plugin version serves a route entry, the host
//! hands it the entry's config and refuses the change when the plugin says the config is wrong.
//!
//! The check runs in a fresh instance under the entry's limits, like a request, but with no
//! grants: outbound calls are denied and no bucket opens. Whatever it answers is hostile input
//! to the host: the message is cut to [`MAX_MESSAGE_CHARS`], control characters become spaces,
//! and any value a secret reference resolved to is replaced before the message reaches a log
//! or an API answer. A trap or a timeout refuses the config as well: a plugin that cannot check
//! it cannot be trusted to serve it.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::engine::{CallLimits, PluginEngine};
use super::instance::arm_deadline;
use super::registry::{LoadError, LoadedPlugin};
use super::state::CallContext;
use crate::config::{Config, PluginConfig, PluginEntry, table_to_json};
use crate::outbound::OutboundContext;
use crate::upstream::Upstreams;

/// Longest message of a refusal that is kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// What stands in for a secret's value in a plugin's message.
const REDACTED: &str = "<redacted>";

impl LoadedPlugin {
    /// Whether this version exports `config-check`.
    pub fn checks_config(&self) -> bool {
        self.config_check.is_some()
    }

    /// Checks the config of every route entry of `config` that runs this plugin (as its plugin
    /// or its canary). The first refusal is the error; configs this version already accepted
    /// are not checked again.
    pub async fn check_configs(
        &self,
        engine: &PluginEngine,
        config: &Config,
        upstreams: &Arc<Upstreams>,
    ) -> Result<(), LoadError> {
        self.check_instance_modes(config)?;
        if self.config_check.is_none() {
            return Ok(());
        }
        for route in &config.routes {
            for (entry, _, key) in route.plugin_entries() {
                let runs_it = entry.plugin.get_ref() == &self.name
                    || entry
                        .canary
                        .is_some_and(|c| c.plugin.get_ref() == &self.name);
                if !runs_it {
                    continue;
                }
                let limits = CallLimits::from_config(&config.plugins.limits.with(entry.limits));
                let route_path = route.path.get_ref();
                self.check_entry(engine, entry, route_path, &limits, upstreams)
                    .await
                    .map_err(|message| LoadError::ConfigRefused {
                        plugin: self.label.to_string(),
                        route: route_path.clone(),
                        entry: key.clone(),
                        message,
                    })?;
            }
        }
        Ok(())
    }

    /// A `wasi:http` component's instance lives as long as its response streams, so it cannot
    /// be parked for the next request; and a plugin importing `wasi:http` could leave an
    /// outgoing call running into the next request. An entry asking for `instances = "reuse"`
    /// is refused for either.
    fn check_instance_modes(&self, config: &Config) -> Result<(), LoadError> {
        let why = if self.wasi_http.is_some() {
            "is a wasi:http/proxy component, which gets a fresh instance per request"
        } else if self.imports_wasi_http {
            "imports wasi:http, whose calls could outlive one request in a reused instance"
        } else {
            return Ok(());
        };
        for route in &config.routes {
            for (entry, _, key) in route.plugin_entries() {
                if entry.plugin.get_ref() == &self.name
                    && entry.instances == crate::config::InstanceMode::Reuse
                {
                    return Err(LoadError::WrongWorld(format!(
                        "route `{}` {key}: plugin `{}` {why}; remove `instances = \"reuse\"`",
                        route.path.get_ref(),
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks one entry's config; `Err` is the message to show, already made safe.
    async fn check_entry(
        &self,
        engine: &PluginEngine,
        entry: PluginEntry<'_>,
        route: &str,
        limits: &CallLimits,
        upstreams: &Arc<Upstreams>,
    ) -> Result<(), String> {
        let json = table_to_json(entry.config);
        let digest: [u8; 32] = Sha256::digest(json.as_bytes()).into();
        if self
            .accepted_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&digest)
        {
            return Ok(());
        }
        let started = Instant::now();
        let verdict = self
            .call_check(engine, &json, route, limits, upstreams)
            .await;
        tracing::debug!(plugin = %self.label, route, took_us = started.elapsed().as_micros() as u64, ok = verdict.is_ok(), "plugin config checked");
        match verdict {
            Ok(()) => {
                self.accepted_configs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest);
                Ok(())
            }
            Err(message) => Err(safe_message(&message, entry.config)),
        }
    }

    /// Instantiates this version and calls `validate-config`.
    async fn call_check(
        &self,
        engine: &PluginEngine,
        json: &str,
        route: &str,
        limits: &CallLimits,
        upstreams: &Arc<Upstreams>,
    ) -> Result<(), String> {
        let Some(indices) = &self.config_check else {
            return Ok(());
        };
        let _slot = engine
            .slots()
            .take()
            .await
            .map_err(|e| format!("no plugin instance was free to run the config check: {e}"))?;
        let call = CallContext {
            plugin: Arc::clone(&self.label),
            config_json: Arc::from(json),
            request_id: Arc::from("config-check"),
            route: Arc::from(route),
            params: Arc::from([]),
            client: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            outbound: Arc::new(OutboundContext {
                plugin: Arc::from(self.name.as_str()),
                metrics: Arc::clone(engine.metrics()),
                request_id: Arc::from("config-check"),
                traceparent: Arc::default(),
                granted: Arc::from([]),
                allow_hosts: Arc::from([]),
                upstreams: Arc::clone(upstreams),
                limits: limits.outbound(),
                max_body_bytes: 0,
                max_header_bytes: 0,
            }),
            kv: crate::kv::KvAccess::default(),
        };
        let mut store = engine.store(Arc::new(call), limits);
        arm_deadline(&mut store, limits.timeout);
        let outcome = tokio::time::timeout(limits.timeout, async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let guest = indices.load(&mut store, &instance)?;
            guest.call_validate_config(&mut store, json).await
        })
        .await;
        let memory = store.data().limiter.memory_denied;
        let late = || {
            Err(format!(
                "the config check did not finish within {:?}",
                limits.timeout
            ))
        };
        match outcome {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => late(),
                _ if memory => Err(format!(
                    "the config check went over the plugin's memory limit ({} bytes)",
                    limits.memory_bytes
                )),
                // The trap's kind; its wasm backtrace is for the plugin's author, in the debug log.
                Some(trap) => {
                    tracing::debug!(plugin = %self.label, error = ?e, "config check trapped");
                    Err(format!("the config check trapped ({trap})"))
                }
                None => Err(format!(
                    "the config check failed: {}",
                    format_args!("{e:#}")
                )),
            },
            Err(_) => late(),
        }
    }
}

/// A plugin's message made fit for logs and API answers: secrets replaced, control characters
/// turned into spaces, cut to [`MAX_MESSAGE_CHARS`].
fn safe_message(message: &str, config: Option<&PluginConfig>) -> String {
    let mut text = message.to_owned();
    if let Some(config) = config {
        let mut secrets = config.secret_values();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            text = text.replace(secret, REDACTED);
        }
    }
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    let out = out.trim();
    if out.is_empty() {
        "the plugin refused the config without saying why".to_owned()
    } else {
        out.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str, env: &[(&str, &str)]) -> PluginConfig {
        let text = format!(
            "[plugins.files]\np = \"p.wasm\"\n[[routes]]\npath = \"/\"\n[routes.handler]\nplugin = \"p\"\n[routes.handler.config]\n{toml_text}\n"
        );
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| std::ffi::OsString::from(v))
        };
        let config = Config::parse_with_env(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &lookup,
        )
        .unwrap();
        config.routes[0]
            .handler
            .as_ref()
            .unwrap()
            .config
            .clone()
            .unwrap()
    }

    #[test]
    fn secrets_in_a_message_are_redacted_wherever_they_sit() {
        let c = config(
            "token = \"${env:TOKEN}\"\nkeys = [{ secret = \"${env:KEY}\" }]\nplain = \"visible\"",
            &[("TOKEN", "hunter2"), ("KEY", "s3cr3t-long")],
        );
        let said = safe_message(
            "keys[0].secret: `s3cr3t-long` is short; token `hunter2`; plain `visible`",
            Some(&c),
        );
        assert!(
            !said.contains("hunter2") && !said.contains("s3cr3t"),
            "{said}"
        );
        assert!(
            said.contains("<redacted>") && said.contains("visible"),
            "{said}"
        );
    }

    #[test]
    fn a_hostile_message_is_cut_and_has_no_control_characters() {
        let long = format!("bad\u{1b}[31m\r\nkey {}", "x".repeat(10_000));
        let said = safe_message(&long, None);
        assert!(
            said.chars().count() <= MAX_MESSAGE_CHARS + 1,
            "{}",
            said.len()
        );
        assert!(!said.chars().any(char::is_control), "{said:?}");
        assert!(said.starts_with("bad [31m  key x"), "{said:?}");
        assert_eq!(
            safe_message(" \n ", None),
            "the plugin refused the config without saying why"
        );
    }
}
