//! Checks a parsed config beyond what its types say (limits at least 1, names, targets, routes
//! that conflict, plugins and upstreams that exist), naming the key and line of what is wrong.

use std::path::Path;

use toml::Spanned;

use super::{
    ADMIN_TOKEN_ENV, BucketBackend, BucketConfig, CanaryConfig, Config, ConfigError, EntryLimits,
    ListenerTlsConfig, PluginEntry, UpstreamConfig, valid_name,
};

/// Longest `ttl_ms` of a bucket: ten years, far below what Redis or `Instant` overflow at.
const MAX_BUCKET_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Validates a parsed config against its source text, whose spans give the line of a key.
pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .lines()
            .count()
            .max(1)
    }

    fn err<T>(
        &self,
        span_start: usize,
        key: String,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_owned(),
            line: if span_start == usize::MAX {
                0
            } else {
                self.line(span_start + 1)
            },
            key,
            message: message.into(),
        })
    }

    pub(super) fn check(&self, config: &Config) -> Result<(), ConfigError> {
        if let Some(admin) = &config.admin
            && admin.effective_token().is_none()
        {
            return self.err(
                usize::MAX,
                "admin.token".into(),
                format!("the admin API needs a token: set admin.token or {ADMIN_TOKEN_ENV}"),
            );
        }
        if let Err((key, message)) = config.server.compression.check() {
            return self.err(usize::MAX, format!("server.compression.{key}"), message);
        }
        if config.server.max_connections == 0 {
            return self.err(
                usize::MAX,
                "server.max_connections".into(),
                "must be at least 1",
            );
        }
        for (i, proxy) in config.server.trusted_proxies.iter().enumerate() {
            if let Err(message) = crate::edge::parse_cidr(proxy.get_ref()) {
                return self.err(
                    proxy.span().start,
                    format!("server.trusted_proxies[{i}]"),
                    message,
                );
            }
        }
        for (key, value) in [
            (
                "server.body_read_timeout_ms",
                config.server.body_read_timeout_ms,
            ),
            (
                "server.body_buffer_timeout_ms",
                config.server.body_buffer_timeout_ms,
            ),
            (
                "server.header_read_timeout_ms",
                config.server.header_read_timeout_ms,
            ),
        ] {
            if value == 0 {
                return self.err(usize::MAX, key.into(), "must be at least 1");
            }
        }
        if config
            .admin
            .as_ref()
            .is_some_and(|a| a.max_connections == 0)
        {
            return self.err(
                usize::MAX,
                "admin.max_connections".into(),
                "must be at least 1",
            );
        }
        let ratio = config.telemetry.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return self.err(
                usize::MAX,
                "telemetry.sample_ratio".into(),
                format!("must be between 0.0 and 1.0 (got {ratio})"),
            );
        }
        if let Some(endpoint) = &config.telemetry.endpoint
            && !matches!(
                endpoint
                    .parse::<http::Uri>()
                    .ok()
                    .as_ref()
                    .and_then(http::Uri::scheme_str),
                Some("http" | "https")
            )
        {
            return self.err(
                usize::MAX,
                "telemetry.endpoint".into(),
                format!("`{endpoint}` is not an http:// or https:// URL"),
            );
        }
        if config.plugins.max_instances == 0 {
            return self.err(
                usize::MAX,
                "plugins.max_instances".into(),
                "must be at least 1",
            );
        }
        if config.plugins.limits.max_in_flight == 0 {
            return self.err(
                usize::MAX,
                "plugins.limits.max_in_flight".into(),
                "must be at least 1",
            );
        }
        if config.plugins.limits.timeout_ms == 0 {
            return self.err(
                usize::MAX,
                "plugins.limits.timeout_ms".into(),
                "must be at least 1",
            );
        }
        if config.plugins.limits.memory_bytes < 64 * 1024 {
            return self.err(
                usize::MAX,
                "plugins.limits.memory_bytes".into(),
                "must be at least 65536 (one wasm page)",
            );
        }
        for name in config.plugins.files.keys() {
            if !valid_name(name) {
                return self.err(
                    usize::MAX,
                    format!("plugins.files.{name}"),
                    "plugin names use letters, digits, '-' and '_'",
                );
            }
        }
        for (name, upstream) in &config.upstreams {
            let key = format!("upstreams.{name}");
            if !valid_name(name) {
                return self.err(
                    usize::MAX,
                    key,
                    "upstream names use letters, digits, '-' and '_'",
                );
            }
            if upstream.targets.is_empty() {
                return self.err(
                    usize::MAX,
                    format!("{key}.targets"),
                    "needs at least one target",
                );
            }
            if upstream.connect_timeout_ms == 0
                || upstream.response_timeout_ms == 0
                || upstream.read_timeout_ms == 0
            {
                return self.err(usize::MAX, key, "timeouts must be at least 1 ms");
            }
            self.check_upstream_tls(upstream, &key)?;
        }
        if let Some(tls) = &config.server.tls {
            self.check_listener_tls(tls, "server.tls")?;
            if let Some(plain) = tls.plain_listen
                && plain.port() != 0
                && plain == config.server.listen
            {
                return self.err(
                    usize::MAX,
                    "server.tls.plain_listen".into(),
                    "must differ from server.listen, which serves TLS",
                );
            }
        }
        if let Some(tls) = config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
            self.check_listener_tls(tls, "admin.tls")?;
            if tls.plain_listen.is_some() {
                return self.err(
                    usize::MAX,
                    "admin.tls.plain_listen".into(),
                    "the admin API has no cleartext listener beside TLS",
                );
            }
        }
        for (name, bucket) in &config.buckets {
            self.check_bucket(name, bucket)?;
        }
        let mut table = crate::router::RouterBuilder::default();
        for (i, route) in config.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let methods: Vec<http::Method> = route
                .methods
                .iter()
                .map(|m| m.get_ref().method().clone())
                .collect();
            if let Err(m) = table.insert(route.path.get_ref(), &methods, i) {
                return self.err(
                    route.path.span().start,
                    format!("{key}.path"),
                    m.to_string(),
                );
            }
            match (&route.upstream, &route.handler) {
                (Some(_), Some(h)) => {
                    return self.err(
                        h.plugin.span().start,
                        key,
                        "has both `upstream` and `handler`; a route has one target",
                    );
                }
                (None, None) => {
                    return self.err(route.path.span().start, key, "needs a target: `upstream = \"name\"` or `handler = { plugin = \"name\" }`");
                }
                (Some(u), None) => self.check_upstream(config, u, format!("{key}.upstream"))?,
                (None, Some(_)) => {}
            }
            for (entry, _, at) in route.plugin_entries() {
                self.check_entry(config, entry, format!("{key}.{at}"))?;
            }
        }
        Ok(())
    }

    fn check_listener_tls(&self, tls: &ListenerTlsConfig, key: &str) -> Result<(), ConfigError> {
        if tls.certificates.is_empty() {
            return self.err(
                usize::MAX,
                format!("{key}.certificates"),
                "needs at least one certificate (cert_file and key_file)",
            );
        }
        if tls.handshake_timeout_ms == 0 {
            return self.err(
                usize::MAX,
                format!("{key}.handshake_timeout_ms"),
                "must be at least 1",
            );
        }
        Ok(())
    }

    fn check_upstream_tls(&self, upstream: &UpstreamConfig, key: &str) -> Result<(), ConfigError> {
        if !upstream.tls {
            let set = [
                ("ca_file", upstream.ca_file.is_some()),
                ("server_name", upstream.server_name.is_some()),
                ("client_cert", upstream.client_cert.is_some()),
                ("client_key", upstream.client_key.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, present)| *present) {
                return self.err(
                    usize::MAX,
                    format!("{key}.{name}"),
                    "only applies with `tls = true`",
                );
            }
            return Ok(());
        }
        if upstream.client_cert.is_some() != upstream.client_key.is_some() {
            return self.err(
                usize::MAX,
                format!("{key}.client_cert"),
                "client_cert and client_key go together: set both or neither",
            );
        }
        if let Some(name) = &upstream.server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return self.err(
                usize::MAX,
                format!("{key}.server_name"),
                format!("`{name}` is not a DNS name or IP address"),
            );
        }
        Ok(())
    }

    fn check_upstream(
        &self,
        config: &Config,
        name: &Spanned<String>,
        key: String,
    ) -> Result<(), ConfigError> {
        if config.upstreams.contains_key(name.get_ref()) {
            return Ok(());
        }
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        self.err(
            name.span().start,
            key,
            format!(
                "unknown upstream `{}` (defined: {})",
                name.get_ref(),
                list_or_none(&known)
            ),
        )
    }

    fn check_entry(
        &self,
        config: &Config,
        entry: PluginEntry<'_>,
        key: String,
    ) -> Result<(), ConfigError> {
        self.check_plugin(config, entry.plugin, format!("{key}.plugin"))?;
        for u in entry.upstreams {
            self.check_upstream(config, u, format!("{key}.upstreams"))?;
        }
        for a in entry.allow_hosts {
            self.check_host(a, format!("{key}.allow_hosts"))?;
        }
        for b in entry.buckets {
            if !config.buckets.contains_key(b.get_ref()) {
                let known: Vec<&str> = config.buckets.keys().map(String::as_str).collect();
                return self.err(
                    b.span().start,
                    format!("{key}.buckets"),
                    format!(
                        "unknown bucket `{}` (defined: {})",
                        b.get_ref(),
                        list_or_none(&known)
                    ),
                );
            }
        }
        if let Some(c) = entry.canary {
            self.check_canary(config, c, format!("{key}.canary"))?;
        }
        self.check_entry_limits(config, entry.limits, format!("{key}.limits"))
    }

    fn check_bucket(&self, name: &str, bucket: &BucketConfig) -> Result<(), ConfigError> {
        let key = format!("buckets.{name}");
        let at = bucket.backend.span().start;
        if !valid_name(name) {
            return self.err(at, key, "bucket names use letters, digits, '-' and '_'");
        }
        let only = |field: &str, backend: &str| {
            self.err::<()>(
                at,
                format!("{key}.{field}"),
                format!("applies only to backend = \"{backend}\""),
            )
        };
        match bucket.backend.get_ref() {
            BucketBackend::Memory => {
                for (field, set) in [
                    ("url", bucket.url.is_some()),
                    ("prefix", bucket.prefix.is_some()),
                    ("timeout_ms", bucket.timeout_ms.is_some()),
                ] {
                    if set {
                        return only(field, "redis");
                    }
                }
                for (field, value) in [
                    ("max_entries", bucket.max_entries),
                    ("max_bytes", bucket.max_bytes),
                ] {
                    if value == Some(0) {
                        return self.err(at, format!("{key}.{field}"), "must be at least 1");
                    }
                }
            }
            BucketBackend::Redis => {
                for (field, set) in [
                    ("max_entries", bucket.max_entries.is_some()),
                    ("max_bytes", bucket.max_bytes.is_some()),
                ] {
                    if set {
                        return only(field, "memory");
                    }
                }
                let Some(url) = &bucket.url else {
                    return self.err(
                        at,
                        format!("{key}.url"),
                        "backend = \"redis\" needs a url, e.g. \"redis://127.0.0.1:6379\"",
                    );
                };
                // The message never repeats the URL: it may hold a password.
                if !url.expose().starts_with("redis://")
                    || redis::Client::open(url.expose()).is_err()
                {
                    return self.err(
                        url.span().start,
                        format!("{key}.url"),
                        "is not a valid redis:// URL (redis://[user:password@]host[:port][/db])",
                    );
                }
                if bucket.timeout_ms == Some(0) {
                    return self.err(at, format!("{key}.timeout_ms"), "must be at least 1");
                }
                if bucket.prefix.as_ref().is_some_and(|p| p.len() > 256) {
                    return self.err(at, format!("{key}.prefix"), "is longer than 256 bytes");
                }
            }
        }
        if bucket
            .ttl_ms
            .is_some_and(|t| t == 0 || t > MAX_BUCKET_TTL_MS)
        {
            return self.err(
                at,
                format!("{key}.ttl_ms"),
                format!("must be between 1 and {MAX_BUCKET_TTL_MS} (10 years)"),
            );
        }
        if bucket.max_value_bytes == 0 {
            return self.err(at, format!("{key}.max_value_bytes"), "must be at least 1");
        }
        Ok(())
    }

    fn check_entry_limits(
        &self,
        config: &Config,
        entry: Option<&EntryLimits>,
        key: String,
    ) -> Result<(), ConfigError> {
        let Some(e) = entry else { return Ok(()) };
        if e.memory_bytes
            .is_some_and(|m| m > config.plugins.limits.memory_bytes || m < 64 * 1024)
        {
            return self.err(
                usize::MAX,
                format!("{key}.memory_bytes"),
                format!(
                    "must be between 65536 and plugins.limits.memory_bytes ({})",
                    config.plugins.limits.memory_bytes
                ),
            );
        }
        for (field, value) in [
            ("timeout_ms", e.timeout_ms),
            ("max_in_flight", e.max_in_flight.map(u64::from)),
            ("max_output_headers", e.max_output_headers.map(|v| v as u64)),
        ] {
            if value == Some(0) {
                return self.err(usize::MAX, format!("{key}.{field}"), "must be at least 1");
            }
        }
        Ok(())
    }

    fn check_canary(
        &self,
        config: &Config,
        canary: &CanaryConfig,
        key: String,
    ) -> Result<(), ConfigError> {
        self.check_plugin(config, &canary.plugin, format!("{key}.plugin"))?;
        if !(1..=100).contains(&canary.percent) {
            return self.err(
                canary.plugin.span().start,
                format!("{key}.percent"),
                "must be 1 to 100",
            );
        }
        if canary.min_requests == 0 {
            return self.err(
                canary.plugin.span().start,
                format!("{key}.min_requests"),
                "must be at least 1",
            );
        }
        if !(0.0..=1.0).contains(&canary.max_failure_rate) {
            return self.err(
                canary.plugin.span().start,
                format!("{key}.max_failure_rate"),
                "must be 0.0 to 1.0",
            );
        }
        Ok(())
    }

    fn check_host(&self, host: &Spanned<String>, key: String) -> Result<(), ConfigError> {
        let text = host.get_ref();
        let ok = !text.contains(['@', '/', '?', '#', '*'])
            && text
                .parse::<http::uri::Authority>()
                .is_ok_and(|a| !a.host().is_empty());
        if ok {
            Ok(())
        } else {
            self.err(
                host.span().start,
                key,
                format!("`{text}` is not a host or host:port"),
            )
        }
    }

    fn check_plugin(
        &self,
        config: &Config,
        name: &Spanned<String>,
        key: String,
    ) -> Result<(), ConfigError> {
        if !valid_name(name.get_ref()) {
            return self.err(
                name.span().start,
                key,
                "plugin names use letters, digits, '-' and '_'",
            );
        }
        // Plugins found in `plugins.directory` are only known once the directory is read, which
        // `PluginRegistry::load` does; here we can only vouch for explicit files.
        if config.plugins.directory.is_none() && !config.plugins.files.contains_key(name.get_ref())
        {
            let known: Vec<&str> = config.plugins.files.keys().map(String::as_str).collect();
            return self.err(
                name.span().start,
                key,
                format!(
                    "unknown plugin `{}` (in plugins.files: {})",
                    name.get_ref(),
                    list_or_none(&known)
                ),
            );
        }
        Ok(())
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetAddr;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("tessera.toml"), Path::new("."))
    }

    #[test]
    fn unknown_upstream_names_route_key_and_line() {
        let text = "[upstreams.users]\ntargets = [\"127.0.0.1:9\"]\n\n[[routes]]\npath = \"/a\"\nupstream = \"user\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert_eq!(
            err,
            "tessera.toml:6: routes[0].upstream: unknown upstream `user` (defined: users)"
        );
    }

    #[test]
    fn tls_settings_are_checked() {
        let up = "[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n";
        let cases = [
            (format!("{up}ca_file = \"ca.pem\"\n"), "upstreams.u.ca_file: only applies with `tls = true`"),
            (format!("{up}tls = true\nclient_cert = \"c.pem\"\n"), "upstreams.u.client_cert: client_cert and client_key go together"),
            (format!("{up}tls = true\nserver_name = \"bad name\"\n"), "upstreams.u.server_name: `bad name` is not a DNS name"),
            ("[server.tls]\ncertificates = []\n".to_owned(), "server.tls.certificates: needs at least one certificate"),
            ("[server.tls]\nmin_version = \"1.1\"\n[[server.tls.certificates]]\ncert_file = \"a\"\nkey_file = \"b\"\n".to_owned(), "min_version"),
            ("[admin]\ntoken = \"t\"\n[admin.tls]\nplain_listen = \"127.0.0.1:1\"\n[[admin.tls.certificates]]\ncert_file = \"a\"\nkey_file = \"b\"\n".to_owned(), "admin.tls.plain_listen"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}\n{err}");
        }
        let ok = "[server.tls]\nmin_version = \"1.3\"\nplain_listen = \"127.0.0.1:8081\"\n[[server.tls.certificates]]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\n";
        let config = parse(ok).unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.min_version, crate::config::TlsVersion::V1_3);
        assert_eq!(tls.handshake_timeout_ms, 10_000);
    }

    #[test]
    fn route_conflict_is_rejected() {
        let text = "[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/a/{x}\"\nupstream = \"u\"\n[[routes]]\npath = \"/a/{y}\"\nupstream = \"u\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("routes[1].path"), "{err}");
        assert!(err.contains("conflicts"), "{err}");
    }

    #[test]
    fn errors_without_a_line_do_not_claim_line_zero() {
        let err = parse("[plugins]\nmax_instances = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tessera.toml: plugins.max_instances"),
            "{err}"
        );
        assert!(!err.contains(":0:"), "{err}");
    }

    #[test]
    fn bad_target_and_method() {
        let err = parse("[upstreams.u]\ntargets = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("`nope` needs a port"), "{err}");
        assert!(TargetAddr::parse("127.0.0.1:80").is_ok());
        assert!(TargetAddr::parse("users.internal:8080").is_ok());
        for (target, why) in [
            ("127.0.0.1", "needs a port"),
            ("http://x:1/", "is not a host:port target"),
            ("a@b:1", "must not contain userinfo"),
        ] {
            let err = parse(&format!("[upstreams.u]\ntargets = [\"{target}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{target}: {err}");
        }
        let text = "[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\npath = \"/\"\nmethods = [\"GE T\"]\nupstream = \"u\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("`GE T` is not an HTTP method"), "{err}");
    }

    #[test]
    fn target_required() {
        let err = parse("[[routes]]\npath = \"/\"\n").unwrap_err().to_string();
        assert!(err.contains("needs a target"), "{err}");
    }
}
