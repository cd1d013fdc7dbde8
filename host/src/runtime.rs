//! The live routing table: routes resolved against upstreams and loaded plugins.

use std::sync::Arc;

use crate::canary::Canary;
use crate::compression::Compression;
use crate::config::{
    Config, FailPolicy, FilterConfig, HandlerConfig, InstanceMode, PluginEntry, PluginsConfig,
    table_to_json,
};
use crate::plugin::{CallLimits, PluginEngine, PluginRegistry, ReusePool};
use crate::router::{Router, RouterBuilder};
use crate::upstream::{Upstream, Upstreams};

/// A plugin as one route uses it.
#[derive(Clone)]
pub struct RoutePlugin {
    /// Plugin name.
    pub plugin: String,
    /// The route's config for it, as JSON.
    pub config_json: Arc<str>,
    /// Upstreams it may call.
    pub upstreams: Arc<[String]>,
    /// Other hosts it may call.
    pub allow_hosts: Arc<[String]>,
    /// Key-value buckets it may open.
    pub buckets: Arc<[String]>,
    /// Whether bodies are buffered for it (filters; handlers always get the request body).
    pub buffer_body: bool,
    /// A share of requests that goes to another plugin, if configured.
    pub canary: Option<Arc<Canary>>,
    /// Limits of each call into the plugin.
    pub limits: CallLimits,
    /// Whether a failure lets the request or response through unmodified (filters only).
    pub fail_open: bool,
    /// Idle instances, when the entry opted into reuse (`instances = "reuse"`).
    pub reuse: Option<Arc<ReusePool>>,
}

/// Leaves the config out: it may hold resolved secrets.
impl std::fmt::Debug for RoutePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutePlugin")
            .field("plugin", &self.plugin)
            .field("upstreams", &self.upstreams)
            .field("allow_hosts", &self.allow_hosts)
            .field("buffer_body", &self.buffer_body)
            .field("limits", &self.limits)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl RoutePlugin {
    fn new(
        entry: PluginEntry<'_>,
        route: &str,
        plugins: &PluginsConfig,
        buffer_body: bool,
        fail_open: bool,
    ) -> Self {
        let defaults = &plugins.limits;
        Self {
            plugin: entry.plugin.get_ref().clone(),
            config_json: table_to_json(entry.config).into(),
            upstreams: entry
                .upstreams
                .iter()
                .map(|u| u.get_ref().clone())
                .collect(),
            allow_hosts: entry
                .allow_hosts
                .iter()
                .map(|u| u.get_ref().clone())
                .collect(),
            buckets: entry.buckets.iter().map(|b| b.get_ref().clone()).collect(),
            buffer_body,
            canary: entry.canary.map(|c| Arc::new(Canary::new(c, route))),
            limits: CallLimits::from_config(&defaults.with(entry.limits)),
            fail_open,
            reuse: (entry.instances == InstanceMode::Reuse)
                .then(|| Arc::new(ReusePool::new(&plugins.reuse))),
        }
    }

    fn filter(f: &FilterConfig, route: &str, plugins: &PluginsConfig) -> Self {
        Self::new(
            f.entry(),
            route,
            plugins,
            f.buffer_body,
            f.fail == FailPolicy::Open,
        )
    }

    fn handler(h: &HandlerConfig, route: &str, plugins: &PluginsConfig) -> Self {
        // Handlers always get the request body.
        Self::new(h.entry(), route, plugins, true, false)
    }
}

/// Where a route sends requests.
#[derive(Debug, Clone)]
pub enum Target {
    /// Proxy to an upstream.
    Upstream(Arc<Upstream>),
    /// Serve with a handler plugin.
    Handler(RoutePlugin),
}

/// One route, ready to serve.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// The path pattern.
    pub pattern: Arc<str>,
    /// The target.
    pub target: Target,
    /// Filters in request order.
    pub filters: Vec<RoutePlugin>,
    /// Whether responses may be compressed (the route's `compression`).
    pub compress: bool,
}

/// Everything a request needs, built whole from one config.
#[derive(Debug)]
pub struct Runtime {
    /// Method + path → index into `routes`.
    pub router: Router<usize>,
    /// Routes in config order.
    pub routes: Vec<RouteEntry>,
    /// Upstreams by name.
    pub upstreams: Arc<Upstreams>,
    /// The plugin engine.
    pub engine: Arc<PluginEngine>,
    /// Loaded plugins.
    pub plugins: PluginRegistry,
    /// Largest body buffered for a plugin.
    pub max_body_bytes: usize,
    /// Largest header block a plugin's outbound call may carry.
    pub max_header_bytes: usize,
    /// Response compression (`[server.compression]`).
    pub compression: Compression,
    /// Key-value buckets; those whose settings did not change are carried over from the
    /// previous runtime, data included.
    pub buckets: Arc<crate::kv::Buckets>,
}

impl Runtime {
    /// Builds the runtime for a validated config: upstream clients, plugins, the router.
    /// Plugins of `previous` whose files did not change are reused.
    pub async fn build(
        config: &Config,
        engine: Arc<PluginEngine>,
        previous: Option<&Runtime>,
    ) -> anyhow::Result<Self> {
        let upstreams = Arc::new(Upstreams::new(config, engine.metrics())?);
        let plugins =
            PluginRegistry::load(&engine, config, previous.map(|p| &p.plugins), &upstreams).await?;
        Self::assemble(config, engine, upstreams, plugins, previous)
    }

    /// Puts a runtime together from parts already built. Canaries whose settings and plugin
    /// version did not change keep their record from `previous` (a rolled-back canary stays
    /// rolled back across unrelated reloads).
    pub fn assemble(
        config: &Config,
        engine: Arc<PluginEngine>,
        upstreams: Arc<Upstreams>,
        plugins: PluginRegistry,
        previous: Option<&Runtime>,
    ) -> anyhow::Result<Self> {
        let mut builder = RouterBuilder::default();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let methods: Vec<http::Method> = route
                .methods
                .iter()
                .map(|m| m.get_ref().method().clone())
                .collect();
            builder.insert(route.path.get_ref(), &methods, i)?;
            let target = match (&route.upstream, &route.handler) {
                (Some(name), _) => {
                    Target::Upstream(Arc::clone(upstreams.get(name.get_ref()).ok_or_else(
                        || anyhow::anyhow!("routes[{i}]: unknown upstream `{}`", name.get_ref()),
                    )?))
                }
                (None, Some(h)) => Target::Handler(RoutePlugin::handler(
                    h,
                    route.path.get_ref(),
                    &config.plugins,
                )),
                (None, None) => anyhow::bail!("routes[{i}] has no target"),
            };
            routes.push(RouteEntry {
                pattern: route.path.get_ref().as_str().into(),
                target,
                filters: route
                    .filters
                    .iter()
                    .map(|f| RoutePlugin::filter(f, route.path.get_ref(), &config.plugins))
                    .collect(),
                compress: route.compression,
            });
        }
        let mut runtime = Self {
            router: builder.build(),
            routes,
            upstreams,
            engine,
            plugins,
            max_body_bytes: config.server.max_body_bytes,
            max_header_bytes: config.server.max_header_bytes,
            compression: Compression::new(&config.server.compression),
            buckets: Arc::new(crate::kv::Buckets::build(
                &config.buckets,
                previous.map(|p| &*p.buckets),
            )),
        };
        if let Some(previous) = previous {
            runtime.keep_canaries(previous);
        }
        Ok(runtime)
    }

    fn keep_canaries(&mut self, previous: &Runtime) {
        for (new, old) in self.routes.iter_mut().zip(&previous.routes) {
            if new.pattern != old.pattern {
                continue;
            }
            if let (Target::Handler(n), Target::Handler(o)) = (&mut new.target, &old.target) {
                keep_canary(n, o, &self.plugins, &previous.plugins);
            }
            for (n, o) in new.filters.iter_mut().zip(&old.filters) {
                keep_canary(n, o, &self.plugins, &previous.plugins);
            }
        }
    }
}

fn keep_canary(
    new: &mut RoutePlugin,
    old: &RoutePlugin,
    plugins: &PluginRegistry,
    old_plugins: &PluginRegistry,
) {
    let (Some(n), Some(o)) = (&new.canary, &old.canary) else {
        return;
    };
    let same_version = match (plugins.get(&n.plugin), old_plugins.get(&o.plugin)) {
        (Some(a), Some(b)) => a.digest() == b.digest(),
        _ => false,
    };
    if new.plugin == old.plugin && n.same_settings(o) && same_version {
        new.canary = Some(Arc::clone(o));
    }
}
