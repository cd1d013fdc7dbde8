//! Canary releases of plugins: a route sends a share of its requests to a new plugin version
//! and rolls it back by itself when too many of the first canary requests fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::CanaryConfig;

/// One route entry's canary and its record.
#[derive(Debug)]
pub struct Canary {
    /// The canary plugin's name.
    pub plugin: String,
    /// The route pattern, for logs.
    route: String,
    percent: u64,
    window: u64,
    max_failures: u64,
    picks: AtomicU64,
    seen: AtomicU64,
    failed: AtomicU64,
    rolled_back: AtomicBool,
}

impl Canary {
    /// The canary for a config entry on `route`.
    pub fn new(config: &CanaryConfig, route: &str) -> Self {
        let window = u64::from(config.min_requests.max(1));
        Self {
            plugin: config.plugin.get_ref().clone(),
            route: route.to_owned(),
            percent: u64::from(config.percent.min(100)),
            window,
            // More failures than this among the first `window` requests fails the canary.
            max_failures: (config.max_failure_rate * window as f64).floor() as u64,
            picks: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rolled_back: AtomicBool::new(false),
        }
    }

    /// Whether this request goes to the canary. Spreads the share evenly: with 10 %, one
    /// request in every ten.
    pub fn pick(&self) -> bool {
        if self.rolled_back.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.percent / 100 > n * self.percent / 100
    }

    /// Records how a canary request went; rolls back once failures pass the threshold.
    pub fn record(&self, failed: bool) {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen > self.window {
            return;
        }
        let failures = if failed {
            self.failed.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.failed.load(Ordering::Relaxed)
        };
        if failures > self.max_failures && !self.rolled_back.swap(true, Ordering::Relaxed) {
            tracing::error!(
                route = %self.route,
                canary = %self.plugin,
                failures,
                of = seen,
                window = self.window,
                "canary rolled back: too many of its first requests failed; all traffic goes to the current version"
            );
        } else if seen == self.window && !self.rolled_back.load(Ordering::Relaxed) {
            tracing::info!(route = %self.route, canary = %self.plugin, failures, window = self.window, "canary passed its first requests and keeps its share");
        }
    }

    /// Whether `other` sends the same share to the same plugin and judges it the same way.
    pub fn same_settings(&self, other: &Canary) -> bool {
        self.plugin == other.plugin
            && self.route == other.route
            && self.percent == other.percent
            && self.window == other.window
            && self.max_failures == other.max_failures
    }

    /// Whether the canary was rolled back.
    pub fn rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(percent: u8, window: u32, rate: f64) -> Canary {
        let text = format!(
            "plugin = \"next\"\npercent = {percent}\nmin_requests = {window}\nmax_failure_rate = {rate}\n"
        );
        let config: CanaryConfig = toml::from_str(&text).unwrap();
        Canary::new(&config, "/r")
    }

    #[test]
    fn share_is_exact_and_even() {
        let c = canary(10, 20, 0.2);
        let picks: Vec<bool> = (0..100).map(|_| c.pick()).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 10);
        assert!(
            picks
                .chunks(10)
                .all(|chunk| chunk.iter().filter(|p| **p).count() == 1)
        );
        let all = canary(100, 20, 0.2);
        assert!((0..10).all(|_| all.pick()));
    }

    #[test]
    fn rolls_back_when_failures_pass_the_threshold() {
        let c = canary(50, 10, 0.2);
        c.record(true);
        c.record(true);
        assert!(!c.rolled_back(), "2 of 10 is within 0.2");
        c.record(true);
        assert!(c.rolled_back());
        assert!((0..10).all(|_| !c.pick()));
    }

    #[test]
    fn failures_after_the_window_do_not_count() {
        let c = canary(50, 4, 0.0);
        for _ in 0..4 {
            c.record(false);
        }
        c.record(true);
        assert!(!c.rolled_back());
    }
}
