//! Opt-in instance reuse (`instances = "reuse"` on a route entry): one instance serves many
//! requests, one at a time, so a plugin that is costly to start (or keeps a cache) pays once.
//!
//! The rules that keep it safe enough to offer: an instance serves one request at a time (it is
//! taken out of the pool while it serves); a pool belongs to one route entry of one runtime, so an
//! instance never crosses route entries, their config, or plugin versions (a reload builds new
//! pools); an instance is discarded after any trap, timeout, memory-cap hit or refused output, if
//! it still holds an outbound call, and after `[plugins.reuse]`'s `max_requests` or `max_age_ms`;
//! at most `max_idle` instances wait in a pool, each holding a slot of the instance pool. What
//! survives is the guest's own memory (globals, heap): that is the isolation traded for speed.

use std::sync::Mutex;
use std::time::Duration;

use super::instance::PluginInstance;
use crate::config::ReuseConfig;

/// Idle instances of one route entry.
#[derive(Debug)]
pub struct ReusePool {
    idle: Mutex<Vec<PluginInstance>>,
    max_requests: u32,
    max_age: Duration,
    max_idle: usize,
}

impl ReusePool {
    /// An empty pool with `[plugins.reuse]`'s bounds.
    pub fn new(config: &ReuseConfig) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_requests: config.max_requests,
            max_age: Duration::from_millis(config.max_age_ms),
            max_idle: config.max_idle,
        }
    }

    /// An idle instance still within its bounds, if there is one (the most recently used, whose
    /// memory is warmest).
    pub fn take(&self) -> Option<PluginInstance> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(instance) = idle.pop() {
            if instance.reusable(self.max_requests, self.max_age) {
                return Some(instance);
            }
        }
        None
    }

    /// Keeps `instance` for a later request when it may serve again and there is room; drops it
    /// (freeing its slot) otherwise.
    pub fn give_back(&self, instance: PluginInstance) {
        if !instance.reusable(self.max_requests, self.max_age) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }
}
