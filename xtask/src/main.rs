//! Project tasks, run as `cargo xtask <task>`:
//! - `demo`: installs the wasm32-wasip2 target if missing, builds the plugins, runs the demo;
//! - `test`: everything CI runs: fmt check, clippy, plugins, all tests (it installs the tools the
//!   tests run: Debian packages with apt-get, the Kubernetes schema checker in
//!   `target/tools/venv`);
//! - `soak [seconds]`: normal traffic with 1 % hostile requests (default 60 s);
//! - `polyglot`: builds the JavaScript and Python plugins (`examples/js`, `examples/python`) with
//!   their pinned toolchains, installed under `target/polyglot` (see `polyglot.rs`); `test` does
//!   this too;
//! - `bench-polyglot [seconds]`: the order-details handler in Rust, JavaScript and Python side by
//!   side (release build): compile and load time, and per-request cost through the gateway
//!   against the in-process e-commerce services (default 5 s per language);
//! - `bench`: the benchmarks (release build): per-request plugin cost (criterion, results in
//!   `target/criterion`) and the order-details load test against a native aggregator;
//! - `bench --compare [seconds]`: tessera beside nginx under wrk, pinned, one table (needs `wrk`,
//!   `nginx` and `taskset`: `apt-get install wrk nginx-light`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

mod compare;
mod polyglot;

/// Plugin crates built for wasm32-wasip2, listed once in `xtask/plugins.txt` (the test harness
/// reads the same file).
fn plugins() -> impl Iterator<Item = &'static str> {
    include_str!("../plugins.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "demo" => demo(),
        "test" => test(),
        "bench" if std::env::args().nth(2).as_deref() == Some("--compare") => {
            bench_compare(std::env::args().nth(3))
        }
        "bench" => bench(),
        "soak" => soak(std::env::args().nth(2)),
        "polyglot" => polyglot::build().map(|dir| println!("{}", dir.display())),
        "bench-polyglot" => bench_polyglot(std::env::args().nth(2)),
        _ => {
            eprintln!(
                "usage: cargo xtask <demo|test|bench [--compare [seconds]]|bench-polyglot [seconds]|soak [seconds]|polyglot>"
            );
            bail!("unknown task `{task}`")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs the wasm target through rustup when it is missing.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (the wasm32-wasip2 target is installed through rustup)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", WASM_TARGET]);
    run(cmd)
}

/// Tools the tests run, by the Debian package that provides them.
const TEST_TOOLS: &[(&str, &str)] = &[
    // Prometheus' own parser checks the metrics exposition.
    ("promtool", "prometheus"),
    // The key-value tests run a real Redis.
    ("redis-server", "redis-server"),
    // The deploy tests check the systemd unit with `systemd-analyze verify`.
    ("systemd-analyze", "systemd"),
    // The deploy tests' schema checker runs in a Python virtual environment.
    ("python3", "python3"),
    // The CORS tests make cross-origin requests from a real browser.
    ("chromium", "chromium"),
];

/// The Kubernetes schema checker the deploy tests run (PyPI; it bundles the schemas of each
/// Kubernetes version, so it works offline). Pinned: a new version is a deliberate change.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Creates `target/tools/venv` with the pinned Kubernetes schema checker, once: later runs find
/// the stamp naming the same pin and do nothing. Returns the checker's path.
fn ensure_kubernetes_validate() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("tools").join("venv");
    ensure_pip_tool(
        &venv,
        KUBERNETES_VALIDATE,
        "kubernetes-validate",
        "the deploy tests",
    )
}

/// A virtual environment at `venv` holding `requirement` (a pinned `name==version`), created
/// once: a stamp file records what was installed, so a later run with the same pin reuses it.
/// Returns the path of the `tool` it installs; `purpose` names who needs it in errors.
fn ensure_pip_tool(
    venv: &Path,
    requirement: &str,
    tool: &str,
    purpose: &str,
) -> anyhow::Result<PathBuf> {
    let bin = venv.join("bin");
    let tool = bin.join(tool);
    let stamp = venv.join("tessera-installed");
    if tool.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirement) {
        return Ok(tool);
    }
    ensure_python_venv()?;
    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--clear"]).arg(venv);
    run(create).with_context(|| format!("creating the Python environment of {purpose}"))?;
    let mut install = Command::new(bin.join("pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(requirement);
    run(install).with_context(|| format!("{purpose} need: pip install {requirement}"))?;
    if !tool.is_file() {
        bail!("{requirement} installed no {}", tool.display());
    }
    std::fs::write(&stamp, requirement).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(tool)
}

/// Installs Python's `venv` module (and the pip it bootstraps) when missing: Debian splits them
/// into `python3-venv`.
fn ensure_python_venv() -> anyhow::Result<()> {
    let has_venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_venv {
        return Ok(());
    }
    apt_install(&["python3-venv"])
}

/// Installs the Debian packages of `tools` that are missing, with apt-get (as root, or through
/// sudo). Fails, naming the command, where that is not possible: a test that needs a tool is
/// never skipped.
fn ensure_tools(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    apt_install(&missing)
}

/// Installs Debian packages with apt-get (as root, or through sudo); nothing when `missing` is
/// empty.
fn apt_install(missing: &[&str]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let install = format!("apt-get install -y {}", missing.join(" "));
    run(apt(&["update", "-q"])).with_context(|| format!("the tests need: {install}"))?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing);
    run(apt(&args)).with_context(|| format!("the tests need: {install}"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Builds every plugin once and returns the directory of the `.wasm` files.
fn build_plugins(profile: Profile) -> anyhow::Result<PathBuf> {
    ensure_wasm_target()?;
    let mut cmd = cargo();
    cmd.args(["build", "--target", WASM_TARGET]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    for p in plugins() {
        cmd.args(["-p", p]);
    }
    run(cmd)?;
    let dir = match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    };
    Ok(target_dir().join(WASM_TARGET).join(dir))
}

/// Tests and the demo use debug plugins (fast to build); benchmarks measure release plugins,
/// as production runs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Debug,
    Release,
}

fn demo() -> anyhow::Result<()> {
    let plugins = build_plugins(Profile::Debug)?;
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "-p", "tessera-demo", "--"])
        .arg(&plugins);
    run(cmd)
}

/// Installs rustfmt and clippy through rustup when they are missing.
fn ensure_components() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("running rustup (rustfmt and clippy are installed through rustup)")?;
    let list = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !list.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add"]).args(&missing);
    run(cmd)
}

fn test() -> anyhow::Result<()> {
    ensure_components()?;
    ensure_tools(TEST_TOOLS)?;
    let kubernetes_validate = ensure_kubernetes_validate()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    let plugins = build_plugins(Profile::Debug)?;
    let polyglot = polyglot::build()?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // The scale-out test runs the gateway as users do, as separate `tessera` processes.
    let mut binary = cargo();
    binary.args(["build", "-p", "tessera", "--bin", "tessera"]);
    run(binary)?;
    let mut test = cargo();
    test.args(["test", "--workspace"])
        .env("TESSERA_PLUGIN_DIR", &plugins)
        .env("TESSERA_POLYGLOT_DIR", &polyglot)
        .env("TESSERA_BIN", target_dir().join("debug").join("tessera"))
        .env("TESSERA_KUBERNETES_VALIDATE", &kubernetes_validate);
    run_tests(test)
}

/// Runs `cargo test`, passing its output through, and ends with one line summing every test
/// binary's result (cargo prints one `test result:` line per binary, the last often for an
/// empty doc-test set).
fn run_tests(mut cmd: Command) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().context("capturing cargo test output")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn bench() -> anyhow::Result<()> {
    let plugins = build_plugins(Profile::Release)?;
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-p",
        "tessera",
        "--bench",
        "instantiate",
        "--bench",
        "restart",
    ])
    .env("TESSERA_PLUGIN_DIR", &plugins);
    run(cmd)?;
    let mut load = cargo();
    load.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "tessera-ecommerce-bench",
        "--",
    ])
    .arg(&plugins);
    run(load)
}

fn bench_compare(seconds: Option<String>) -> anyhow::Result<()> {
    let seconds: u32 = seconds.map_or(Ok(10), |s| s.parse()).context("seconds")?;
    let plugins = build_plugins(Profile::Release)?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "tessera",
        "-p",
        "tessera-ecommerce-bench",
    ]);
    run(build)?;
    let release = target_dir().join("release");
    let work = target_dir().join("bench-compare");
    compare::run(
        &release.join("tessera"),
        &release.join("tessera-ecommerce-bench"),
        &plugins,
        &work,
        seconds,
    )
}

fn soak(seconds: Option<String>) -> anyhow::Result<()> {
    let plugins = build_plugins(Profile::Debug)?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "tessera-tests",
        "--test",
        "soak",
        "--",
        "--ignored",
        "--nocapture",
    ])
    .env("TESSERA_PLUGIN_DIR", &plugins)
    .env(
        "TESSERA_SOAK_SECS",
        seconds.unwrap_or_else(|| "60".to_owned()),
    );
    run(cmd)
}

/// The order-details handler in Rust, JavaScript and Python, side by side: compile and load
/// time, then per-request cost through the gateway (a fresh instance per request) against the
/// in-process e-commerce services. Release build; one table on standard output.
fn bench_polyglot(seconds: Option<String>) -> anyhow::Result<()> {
    let seconds: u32 = seconds.map_or(Ok(5), |s| s.parse()).context("seconds")?;
    let plugins = build_plugins(Profile::Release)?;
    let polyglot = polyglot::build()?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "tessera-tests",
        "--test",
        "gateway",
        "polyglot::benchmark",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("TESSERA_PLUGIN_DIR", &plugins)
    .env("TESSERA_POLYGLOT_DIR", &polyglot)
    .env("TESSERA_BENCH_SECS", seconds.to_string());
    run(cmd)
}
