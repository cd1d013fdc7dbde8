//! The deployment files in `deploy/`: every Kubernetes manifest passes the Kubernetes API schemas
//! (`kubernetes-validate`, strict), the config shipped in the ConfigMap is a valid Tessera config
//! that starts a gateway whose probes answer where the Deployment asks, the manifests agree with
//! that config and with each other, and the systemd unit passes `systemd-analyze verify`.
//!
//! `cargo xtask test` installs the tools: `kubernetes-validate` in a Python environment under
//! `target/tools/venv` (its path in `TESSERA_KUBERNETES_VALIDATE`), `systemd-analyze` with
//! apt-get. A missing tool fails the test with what to install; nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tessera::config::{AccessLogFormat, BucketBackend, Config};
use tessera_tests::*;

/// The Kubernetes version whose bundled schemas the manifests are checked against.
const KUBERNETES_VERSION: &str = "1.35.0";

const ADMIN_TOKEN: &str = "deploy-test-admin-token-0123456789";
const REDIS_URL: &str = "redis://:deploy-test-password@redis.test.internal:6379/0";

fn kubernetes_dir() -> PathBuf {
    workspace_root().join("deploy").join("kubernetes")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The schema checker: `TESSERA_KUBERNETES_VALIDATE`, else where `cargo xtask test` puts it.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("TESSERA_KUBERNETES_VALIDATE").map_or_else(
        || target_dir().join("tools/venv/bin/kubernetes-validate"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the Kubernetes schema checker is missing ({}): `cargo xtask test` installs it \
         (python3 -m venv target/tools/venv && target/tools/venv/bin/pip install \
         kubernetes-validate==1.37.0), or set TESSERA_KUBERNETES_VALIDATE to its path",
        path.display()
    );
    path
}

/// Every YAML document of `file` as JSON, read by PyYAML in the checker's environment (the
/// parser the checker itself uses, so the tests see what it validated).
fn documents(file: &Path) -> Vec<Value> {
    let python = kubernetes_validate().with_file_name("python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1], encoding='utf-8') as f:\n\
             \x20   docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} is not YAML: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("{}: unexpected reading {other:?}", file.display()),
    }
}

/// The manifests (every `.yaml` but the kustomization), by file name.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    files
}

/// Every resource of every manifest.
fn resources() -> Vec<Value> {
    manifests().iter().flat_map(|f| documents(f)).collect()
}

fn resource(kind: &str, name: &str) -> Value {
    resources()
        .into_iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn number(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// The environment the shipped config is resolved with: what the Deployment sets from the
/// Secret.
fn pod_env(name: &str) -> Option<std::ffi::OsString> {
    match name {
        "TESSERA_ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        "REDIS_URL" => Some(REDIS_URL.into()),
        _ => None,
    }
}

fn shipped_config_text() -> String {
    let map = resource("ConfigMap", "tessera-config");
    text(&map["data"]["tessera.toml"], "the ConfigMap's tessera.toml").to_owned()
}

/// The ConfigMap's `tessera.toml`, parsed as the gateway parses it in the pod.
fn shipped_config() -> Config {
    let text = shipped_config_text();
    Config::parse_with_env(
        &text,
        Path::new("deploy/kubernetes/configmap.yaml (tessera.toml)"),
        Path::new("/etc/tessera"),
        &pod_env,
    )
    .unwrap_or_else(|e| panic!("the shipped config is invalid: {e}"))
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let files = manifests();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubernetes-validate refused the manifests:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A resource without a schema is only a warning there; here every one must have passed.
    let passed = report
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
        .count();
    let others: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("INFO "))
        .collect();
    assert!(others.is_empty(), "kubernetes-validate said:\n{report}");
    let all = resources();
    assert_eq!(
        passed,
        all.len(),
        "not every resource was validated:\n{report}"
    );
    let kinds: BTreeSet<&str> = all.iter().filter_map(|r| r["kind"].as_str()).collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
}

#[test]
fn kustomization_applies_every_manifest_but_the_example_secret() {
    let k = documents(&kubernetes_dir().join("kustomization.yaml"));
    assert_eq!(k.len(), 1);
    assert_eq!(k[0]["kind"], "Kustomization");
    let listed: BTreeSet<&str> = k[0]["resources"]
        .as_array()
        .expect("kustomization resources")
        .iter()
        .map(|r| text(r, "a kustomization resource"))
        .collect();
    let files: Vec<String> = manifests()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "secret.example.yaml")
        .collect();
    let files: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    assert_eq!(listed, files);
    let secret = resource("Secret", "tessera-secrets");
    for (key, value) in secret["stringData"].as_object().expect("stringData") {
        assert!(
            text(value, key).contains("REPLACE"),
            "the example Secret's {key} is not a placeholder"
        );
    }
}

#[test]
fn shipped_config_is_valid_and_keeps_secrets_out() {
    let config = shipped_config();
    assert_eq!(config.server.listen, "0.0.0.0:8080".parse().unwrap());
    let admin = config.admin.as_ref().expect("[admin]");
    assert_eq!(admin.listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(admin.token.as_ref().map(|t| t.expose()), Some(ADMIN_TOKEN));
    assert_eq!(config.metrics.listen, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(config.access_log.format, AccessLogFormat::Json);
    assert_eq!(
        config.access_log.path, None,
        "the access log goes to stdout"
    );
    let bucket = &config.buckets["ratelimit"];
    assert_eq!(*bucket.backend.get_ref(), BucketBackend::Redis);
    assert_eq!(bucket.url.as_ref().map(|u| u.expose()), Some(REDIS_URL));
    assert!(config.plugins.directory.is_some() && config.plugins.cache_dir.is_some());
    assert!(!config.routes.is_empty() && !config.upstreams.is_empty());

    // The secrets are references: without the Secret's variables the config is refused,
    // naming what is missing.
    let text = shipped_config_text();
    for missing in ["TESSERA_ADMIN_TOKEN", "REDIS_URL"] {
        let err = Config::parse_with_env(
            &text,
            Path::new("tessera.toml"),
            Path::new("/etc/tessera"),
            &|name| (name != missing).then(|| pod_env(name)).flatten(),
        )
        .expect_err("a config whose secret is missing is refused");
        assert!(err.to_string().contains(missing), "{err}");
    }
    assert!(
        !text.contains("redis://"),
        "a Redis URL written in the config"
    );
}

/// The one container of the Deployment.
fn container() -> Value {
    let deployment = resource("Deployment", "tessera");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 1);
    containers[0].clone()
}

fn port_named(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| number(&p["containerPort"], name))
        .unwrap_or_else(|| panic!("no container port `{name}`"))
        .try_into()
        .expect("a port number")
}

#[test]
fn deployment_agrees_with_the_shipped_config() {
    let config = shipped_config();
    let deployment = resource("Deployment", "tessera");
    let pod = &deployment["spec"]["template"];
    let c = container();

    // Ports: the listeners of the config, by name.
    let metrics = config.metrics.listen.expect("metrics.listen").port();
    assert_eq!(port_named(&c, "http"), config.server.listen.port());
    assert_eq!(
        port_named(&c, "admin"),
        config.admin.as_ref().unwrap().listen.port()
    );
    assert_eq!(port_named(&c, "metrics"), metrics);
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        metrics.to_string()
    );

    // Probes: token-less, on the metrics listener.
    for (probe, path) in [
        ("startupProbe", "/admin/ready"),
        ("readinessProbe", "/admin/ready"),
        ("livenessProbe", "/admin/health"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "metrics", "{probe}");
        assert!(get.get("httpHeaders").is_none(), "{probe} sends headers");
    }

    // Shutdown: the kubelet waits for the preStop sleep and the whole grace period.
    let grace_s = number(
        &pod["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    let pre_stop_s = number(
        &c["lifecycle"]["preStop"]["sleep"]["seconds"],
        "preStop sleep",
    );
    assert!(pre_stop_s >= 5, "endpoints need time to drop the pod");
    assert!(
        grace_s * 1000 > pre_stop_s * 1000 + config.server.shutdown_grace_ms,
        "terminationGracePeriodSeconds {grace_s} s is not above preStop {pre_stop_s} s + \
         shutdown_grace_ms {}",
        config.server.shutdown_grace_ms
    );

    // Security: non-root, read-only root, no capabilities, the runtime's seccomp profile.
    let sc = &c["securityContext"];
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());

    // Files: the config directory mounted whole (a subPath never sees updates), the plugin
    // directory and the cache on volumes, the cache writable.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| text(a, "an argument"))
        .collect();
    assert_eq!(args.first(), Some(&"run"));
    let config_file = Path::new(args[1]);
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mount_at = |dir: &Path| {
        mounts
            .iter()
            .find(|m| Path::new(text(&m["mountPath"], "mountPath")) == dir)
            .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()))
            .clone()
    };
    let volume = |name: &Value| {
        pod["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == *name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let config_mount = mount_at(config_file.parent().expect("config directory"));
    assert!(config_mount.get("subPath").is_none());
    assert_eq!(
        volume(&config_mount["name"])["configMap"]["name"],
        "tessera-config"
    );
    let plugins = mount_at(config.plugins.directory.as_deref().unwrap());
    assert!(volume(&plugins["name"])["persistentVolumeClaim"].is_object());
    let cache = mount_at(config.plugins.cache_dir.as_deref().unwrap());
    assert_ne!(cache["readOnly"], true);
    assert!(volume(&cache["name"])["emptyDir"].is_object());

    // Environment: every `${env:NAME}` of the config is set, from keys the Secret has.
    let toml = shipped_config_text();
    let secret = resource("Secret", "tessera-secrets");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (text_of(&e["name"]), e))
        .collect();
    for name in toml
        .split("${env:")
        .skip(1)
        .filter_map(|s| s.split('}').next())
    {
        let var = env
            .get(name)
            .unwrap_or_else(|| panic!("the config reads ${{env:{name}}}; the pod does not set it"));
        let key = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(key["name"], "tessera-secrets", "{name}");
        let key = text(&key["key"], name);
        assert!(
            secret["stringData"].get(key).is_some(),
            "the example Secret has no {key}"
        );
    }

    // Services, autoscaler and disruption budget select these pods.
    let labels = &pod["metadata"]["labels"];
    let selects = |selector: &Value| {
        selector
            .as_object()
            .expect("selector")
            .iter()
            .all(|(k, v)| labels[k] == *v)
    };
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"]));
    let traffic = resource("Service", "tessera");
    assert!(selects(&traffic["spec"]["selector"]));
    assert_eq!(traffic["spec"]["ports"][0]["targetPort"], "http");
    let scrape = resource("Service", "tessera-metrics");
    assert!(selects(&scrape["spec"]["selector"]));
    assert_eq!(scrape["spec"]["ports"][0]["targetPort"], "metrics");
    let pdb = resource("PodDisruptionBudget", "tessera");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    let replicas = number(&deployment["spec"]["replicas"], "replicas");
    assert_eq!(replicas, 3);
    let hpa = resource("HorizontalPodAutoscaler", "tessera");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "tessera");
    assert!(number(&hpa["spec"]["minReplicas"], "minReplicas") >= 2);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
}

fn text_of(v: &Value) -> &str {
    text(v, "a name")
}

async fn status_of(addr: SocketAddr, path: &str) -> StatusCode {
    let response = client()
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

/// The shipped config starts a gateway (on loopback ports, with this repository's plugins in its
/// plugin directory), and the Deployment's probes and Prometheus scrape succeed against it
/// without a token.
#[tokio::test]
async fn shipped_config_serves_the_deployments_probes() {
    let mut config = shipped_config();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.server.listen = loopback;
    config.admin.as_mut().unwrap().listen = loopback;
    config.metrics.listen = Some(loopback);
    config.access_log.format = AccessLogFormat::Off;
    let dir = target_dir()
        .join("tmp")
        .join(format!("deploy-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let used: BTreeSet<String> = config
        .plugin_uses()
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    assert!(!used.is_empty(), "the shipped config runs no plugin");
    // The shipped config uses this repository's own plugins, crate `tessera-plugin-<name>`.
    for name in &used {
        let built = plugin(&format!("tessera-plugin-{name}"));
        std::fs::copy(&built, dir.join(format!("{name}.wasm"))).unwrap();
    }
    config.plugins.directory = Some(dir.clone());
    config.plugins.cache_dir = Some(target_dir().join("plugin-cache"));

    let gw = tessera::Gateway::new(config)
        .await
        .expect("the shipped config loads")
        .start()
        .await
        .expect("the shipped config serves");
    let c = container();
    let probes = gw.metrics_addr().expect("metrics listener");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let path = text(&c[probe]["httpGet"]["path"], probe);
        assert_eq!(status_of(probes, path).await, StatusCode::OK, "{probe}");
    }
    let deployment = resource("Deployment", "tessera");
    let scrape_path = text(
        &deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"],
        "prometheus.io/path",
    );
    assert_eq!(status_of(probes, scrape_path).await, StatusCode::OK);
    // The admin listener keeps its token.
    let admin = gw.admin_addr().expect("admin listener");
    assert_eq!(
        status_of(admin, "/admin/ready").await,
        StatusCode::UNAUTHORIZED
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

const UNIT: &str = "deploy/systemd/tessera.service";

/// The unit's `[Service]` (and other) keys, each with every value it was given, in order.
fn unit_keys() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(workspace_root().join(UNIT)).expect(UNIT);
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{UNIT}:{}: not `key=value`: {line}", n + 1));
        keys.entry(format!("{section}.{}", key.trim()))
            .or_default()
            .push(value.trim().to_owned());
    }
    keys
}

/// A systemd time span of seconds: `45`, `45s`, `2min`, `1min 30s`.
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|part| {
            let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("time span `{span}`"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                unit => panic!("time span `{span}`: unit `{unit}`"),
            }
        })
        .sum()
}

#[test]
fn systemd_unit_runs_the_gateway_hardened() {
    let keys = unit_keys();
    let one = |key: &str| -> &str {
        match keys.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{UNIT}: {key} is {other:?}, expected one value"),
        }
    };
    assert_eq!(one("Service.User"), "tessera");
    assert_eq!(
        one("Service.ExecStart"),
        "/usr/local/bin/tessera run /etc/tessera/tessera.toml"
    );
    assert_eq!(one("Service.ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Service.KillSignal"), "SIGTERM");
    assert_eq!(one("Service.Restart"), "on-failure");
    // The stop timeout is above the default grace period of a config that does not set one.
    let defaults = Config::parse("", Path::new("tessera.toml"), Path::new("/etc/tessera"))
        .expect("an empty config is valid");
    let stop = seconds(one("Service.TimeoutStopSec"));
    assert!(
        stop * 1000 > defaults.server.shutdown_grace_ms,
        "TimeoutStopSec {stop} s is not above shutdown_grace_ms {}",
        defaults.server.shutdown_grace_ms
    );
    assert!(one("Service.EnvironmentFile").starts_with("/etc/tessera/"));
    assert_eq!(one("Service.NoNewPrivileges"), "yes");
    assert_eq!(one("Service.ProtectSystem"), "strict");
    assert_eq!(one("Service.ProtectHome"), "yes");
    assert_eq!(one("Service.PrivateTmp"), "yes");
    assert_eq!(one("Service.CapabilityBoundingSet"), "");
    assert_eq!(one("Service.AmbientCapabilities"), "");
    assert!(
        one("Service.ReadWritePaths")
            .split_whitespace()
            .any(|p| p == "/var/cache/tessera")
    );
    let files: u64 = one("Service.LimitNOFILE").parse().expect("LimitNOFILE");
    assert!(files as usize > defaults.server.max_connections);
    assert_eq!(one("Install.WantedBy"), "multi-user.target");
}

/// `systemd-analyze verify` in a scratch root holding the system's own units (for the default
/// dependencies), the unit, and stand-ins for the programs it runs (it checks they exist and
/// are executable; they are not installed on a test machine). It exits 0 even for unknown keys
/// and bad values, which it only prints, so any output fails the test too.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    use std::os::unix::fs::PermissionsExt as _;
    let analyze = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("systemd-analyze"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze is needed to check {UNIT}; `cargo xtask test` installs it \
                 (apt-get install systemd)"
            )
        });
    let root = target_dir()
        .join("tmp")
        .join(format!("deploy-systemd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").exists())
        .expect("the system's units (sysinit.target) beside systemd-analyze");
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir(system_units).unwrap() {
        let entry = entry.unwrap();
        // Regular files and symlinks (aliases); directories of drop-ins are not needed.
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        let from = entry.path();
        let to = units.join(entry.file_name());
        match std::fs::read_link(&from) {
            Ok(link) => std::os::unix::fs::symlink(link, &to).unwrap(),
            Err(_) => {
                std::fs::copy(&from, &to).unwrap();
            }
        }
    }
    let etc = root.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(workspace_root().join(UNIT), etc.join("tessera.service")).unwrap();
    for (key, values) in unit_keys() {
        if !key.starts_with("Service.Exec") {
            continue;
        }
        for value in values {
            let program = value
                .trim_start_matches(['-', '@', ':', '+', '!'])
                .split_whitespace()
                .next()
                .unwrap_or_default();
            assert!(
                program.starts_with('/'),
                "{key}: `{program}` is not absolute"
            );
            let stand_in = root.join(program.trim_start_matches('/'));
            std::fs::create_dir_all(stand_in.parent().unwrap()).unwrap();
            std::fs::write(&stand_in, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/tessera.service")
        .output()
        .expect("running systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{said}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&root);
}
