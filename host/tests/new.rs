//! `tessera new` as a new plugin author uses it: scaffold a project outside the repository, run
//! its own tests, build its component, push it into a running gateway with `tessera plugin
//! push`, add the route its README shows, and call it.
//!
//! The Rust projects build with this checkout's target directory (`CARGO_TARGET_DIR`), so their
//! dependencies compile once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

mod common;
use common::lines;

const TOKEN: &str = "new-test-admin-token";

/// A directory of its own for one test, outside the repository. Removed when the test passes;
/// kept for a look when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tessera-new-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

fn cargo(project: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(project)
        .env("CARGO_TARGET_DIR", target_dir());
    cmd
}

/// Runs `cmd` to completion; panics with its output unless it succeeded.
fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tessera new <name> <args>` in `parent`; returns the project's directory.
fn scaffold(parent: &Path, name: &str, args: &[&str]) -> PathBuf {
    let mut cmd = tessera();
    cmd.args(["new", name]).args(args).arg("--dir").arg(parent);
    let out = run(cmd);
    let said = stdout(&out);
    assert!(said.contains("Next:"), "{said}");
    parent.join(name)
}

/// The route a project's README tells the operator to add: its last TOML block.
fn readme_route(project: &Path) -> String {
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let start = readme
        .rfind("```toml\n")
        .expect("a TOML block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

/// A `tessera run` process with its admin API on; killed when dropped.
struct Gateway {
    child: Child,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
    addr: String,
    admin: String,
    config: PathBuf,
    base_config: String,
}

impl Gateway {
    /// Starts a gateway in `dir` with a plugin directory, the admin API and `upstreams` (TOML).
    fn start(dir: &Path, upstreams: &str) -> Self {
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        let base_config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
             [plugins]\ndirectory = \"plugins\"\n\n{upstreams}\n"
        );
        let config = dir.join("tessera.toml");
        std::fs::write(&config, &base_config).unwrap();
        let mut child = tessera()
            .arg("run")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("TESSERA_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = lines(child.stderr.take().unwrap());
        let mut gateway = Self {
            child,
            log,
            seen: Vec::new(),
            addr: String::new(),
            admin: String::new(),
            config,
            base_config,
        };
        let listening = gateway.wait_for(&["tessera listening"]);
        gateway.addr = field(&listening, "local_addr=").to_owned();
        gateway.admin = field(&listening, "admin=Some(")
            .trim_end_matches(')')
            .to_owned();
        gateway
    }

    /// The next log line containing one of `what`.
    fn wait_for(&mut self, what: &[&str]) -> String {
        common::next_matching(&self.log, what, &mut self.seen, Duration::from_secs(30))
    }

    /// `tessera plugin push <wasm> --name <name>` against this gateway.
    fn push(&self, wasm: &Path, name: &str) {
        let mut cmd = tessera();
        cmd.args(["plugin", "push"])
            .arg(wasm)
            .args(["--name", name, "--admin"])
            .arg(format!("http://{}", self.admin))
            .args(["--token", TOKEN]);
        let out = run(cmd);
        let answer: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(answer["name"], name, "{answer}");
    }

    /// Adds `routes` to the config file and waits until the gateway has reloaded it.
    fn add_routes(&mut self, routes: &[String]) {
        let config = format!("{}\n{}", self.base_config, routes.join("\n"));
        std::fs::write(&self.config, config).unwrap();
        let line = self.wait_for(&["config reloaded", "config reload refused"]);
        assert!(line.contains("config reloaded"), "{line}");
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        get(&self.addr, path, headers)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value after `key` in a log line, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        + key.len();
    line[start..].split_whitespace().next().unwrap()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// One HTTP/1.1 GET on its own connection.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut head_lines = head.lines();
    let status = head_lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let headers: Vec<(String, String)> = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// An upstream on 127.0.0.1 that answers every request with `client=<its x-client-id>`;
/// returns its address and how many requests it served.
fn upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut client = String::new();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("x-client-id")
                    {
                        client = value.trim().to_owned();
                    }
                    line.clear();
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = format!("client={client}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = (&stream).write_all(answer.as_bytes());
            });
        }
    });
    (addr, served)
}

/// `cargo test` in a new Rust project: its tests pass, and there are some.
fn rust_tests_pass(project: &Path, package: &str) {
    let mut cmd = cargo(project);
    cmd.arg("test");
    let out = run(cmd);
    let said = stdout(&out);
    let passed: usize = said
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no test result in {said}"));
    assert!(passed >= 4, "{passed} tests in {package}:\n{said}");
    let warnings = format!("`{package}` (lib");
    assert!(
        !stderr(&out).contains(&warnings),
        "the new project compiles with warnings:\n{}",
        stderr(&out)
    );
}

/// `cargo build --target wasm32-wasip2` in a new Rust project; returns the component.
fn rust_build(project: &Path, package: &str) -> PathBuf {
    let mut cmd = cargo(project);
    cmd.args(["build", "--target", "wasm32-wasip2"]);
    run(cmd);
    let wasm = target_dir()
        .join("wasm32-wasip2/debug")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

#[test]
fn rust_handler_and_filter_pass_their_tests_build_and_serve_after_a_push() {
    let dir = Scratch::new("rust");
    let handler = scaffold(&dir, "tnew-greeter", &["--handler"]);
    let filter = scaffold(&dir, "tnew-client-check", &["--filter", "--lang", "rust"]);
    for (project, package) in [(&handler, "tnew-greeter"), (&filter, "tnew-client-check")] {
        rust_tests_pass(project, package);
        let mut fmt = cargo(project);
        fmt.args(["fmt", "--check"]);
        run(fmt);
    }
    let handler_wasm = rust_build(&handler, "tnew-greeter");
    let filter_wasm = rust_build(&filter, "tnew-client-check");

    let (api, served) = upstream();
    let mut gateway = Gateway::start(
        &dir.join("gateway"),
        &format!("[upstreams.api]\ntargets = [\"{api}\"]\n"),
    );
    gateway.push(&handler_wasm, "tnew-greeter");
    gateway.push(&filter_wasm, "tnew-client-check");
    gateway.add_routes(&[readme_route(&handler), readme_route(&filter)]);

    let hello = gateway.get("/tnew-greeter/ada", &[]);
    assert_eq!(hello.status, 200, "{hello:?}");
    let body = hello.json();
    assert_eq!(body["message"], "Hello, ada!");
    assert_eq!(body["request_id"], hello.header("x-request-id").unwrap());

    let refused = gateway.get("/api/orders", &[]);
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.json()["error"], "bad_request");
    assert_eq!(refused.json()["message"], "missing header x-client-id");
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "the upstream saw a refused request"
    );
    let passed = gateway.get("/api/orders", &[("x-client-id", "shop-7")]);
    assert_eq!(passed.status, 200, "{passed:?}");
    assert_eq!(passed.body, "client=shop-7");
    assert_eq!(passed.header("x-checked-by"), Some("tnew-client-check"));

    // Edit, rebuild, push again: the running gateway serves the new version.
    let lib = handler.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    assert!(source.contains("\"{}, {name}!\""), "{source}");
    std::fs::write(
        &lib,
        source.replace("\"{}, {name}!\"", "\"{}, {name}, again!\""),
    )
    .unwrap();
    let handler_wasm = rust_build(&handler, "tnew-greeter");
    gateway.push(&handler_wasm, "tnew-greeter");
    let again = gateway.get("/tnew-greeter/ada", &[]);
    assert_eq!(again.json()["message"], "Hello, ada, again!", "{again:?}");
}

#[test]
fn new_refuses_bad_names_existing_projects_and_a_missing_kind() {
    let dir = Scratch::new("refusals");
    for (args, why) in [
        (
            vec!["new", "My_Plugin", "--handler"],
            "does not start with a lower-case letter",
        ),
        (vec!["new", "my_plugin", "--handler"], "contains '_'"),
        (
            vec!["new", "fn", "--filter"],
            "cannot be a Rust package's name",
        ),
        (vec!["new", "greeter"], "--filter|--handler"),
        (
            vec!["new", "greeter", "--filter", "--handler"],
            "cannot be used with",
        ),
        (
            vec!["new", "greeter", "--handler", "--lang", "go"],
            "invalid value 'go'",
        ),
        (
            vec!["new", "greeter", "--handler", "--sdk", "/nonexistent/sdk"],
            "not a version, and no Cargo.toml there",
        ),
        (
            vec![
                "new",
                "greeter",
                "--handler",
                "--lang",
                "js",
                "--sdk",
                "0.1.0",
            ],
            "--sdk is for Rust projects",
        ),
    ] {
        let out = tessera()
            .args(&args)
            .arg("--dir")
            .arg(&*dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_dir(&*dir).unwrap().count(),
            0,
            "{args:?} wrote something"
        );
    }

    let taken = dir.join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let out = tessera()
        .args(["new", "taken", "--handler", "--dir"])
        .arg(&*dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already exists and is not empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 1);
}

/// The toolchains `cargo xtask polyglot` installs under `target/polyglot/tools` (or
/// `$TESSERA_POLYGLOT_DIR/tools`): the npm packages of `examples/js` and a virtual environment
/// with componentize-py. Panics, saying how to install them, when they are missing.
fn polyglot_tools() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("TESSERA_POLYGLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("polyglot"))
        .join("tools");
    let node_modules = dir.join("js/node_modules");
    let venv = dir.join("python");
    for (tool, path) in [
        (
            "componentize-js",
            node_modules.join("@bytecodealliance/componentize-js/package.json"),
        ),
        ("componentize-py", venv.join("bin/componentize-py")),
    ] {
        assert!(
            path.is_file(),
            "{tool} is not installed ({} is missing): run `cargo xtask test`, or \
             `cargo xtask polyglot` to install only the JavaScript and Python toolchains",
            path.display()
        );
    }
    (node_modules, venv)
}

/// A JavaScript project as a new author sets it up, except that `node_modules` is the
/// repository's installed toolchain instead of `npm ci` (no network in tests). The installed
/// componentize-js must be the version the project pins.
fn js_project(parent: &Path, name: &str, kind: &str, node_modules: &Path) -> PathBuf {
    let project = scaffold(parent, name, &[kind, "--lang", "js"]);
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("package.json")).unwrap())
            .unwrap();
    let installed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            node_modules.join("@bytecodealliance/componentize-js/package.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        package["devDependencies"]["@bytecodealliance/componentize-js"], installed["version"],
        "the installed componentize-js is not the pinned one: run `cargo xtask polyglot`"
    );
    std::os::unix::fs::symlink(node_modules, project.join("node_modules")).unwrap();
    project
}

/// A Python project as a new author sets it up, except that `.venv` is the repository's
/// installed toolchain instead of a `pip install` (no network in tests). The installed
/// componentize-py must be the version `requirements.txt` pins.
fn python_project(parent: &Path, name: &str, kind: &str, venv: &Path) -> PathBuf {
    let project = scaffold(parent, name, &[kind, "--lang", "python"]);
    let requirements = std::fs::read_to_string(project.join("requirements.txt")).unwrap();
    let pinned = requirements
        .lines()
        .find_map(|l| l.strip_prefix("componentize-py=="))
        .expect("componentize-py pinned in requirements.txt");
    let version = run({
        let mut cmd = Command::new(venv.join("bin/componentize-py"));
        cmd.arg("--version");
        cmd
    });
    assert!(
        stdout(&version).contains(pinned),
        "the installed componentize-py ({}) is not the pinned {pinned}: run `cargo xtask polyglot`",
        stdout(&version).trim()
    );
    std::os::unix::fs::symlink(venv, project.join(".venv")).unwrap();
    project
}

/// `npm test`, then `npm run build`; returns the component.
fn js_test_and_build(project: &Path, name: &str) -> PathBuf {
    let mut test = Command::new("npm");
    test.arg("test").current_dir(project);
    let said = stdout(&run(test));
    assert!(said.contains("# fail 0"), "{said}");
    let passed: usize = said
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pass count in {said}"));
    assert!(passed >= 4, "{passed} tests in {name}:\n{said}");
    let mut build = Command::new("npm");
    build.args(["run", "build"]).current_dir(project);
    run(build);
    let wasm = project.join(format!("dist/{name}.wasm"));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

/// `./test.sh`, then `./build.sh`; returns the component.
fn python_test_and_build(project: &Path, name: &str) -> PathBuf {
    let said = stderr(&run(Command::new(project.join("test.sh"))));
    let ran: usize = said
        .lines()
        .find_map(|l| l.strip_prefix("Ran "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no test count in {said}"));
    assert!(ran >= 4 && said.trim_end().ends_with("OK"), "{said}");
    run(Command::new(project.join("build.sh")));
    let wasm = project.join(format!("dist/{name}.wasm"));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

#[test]
fn javascript_and_python_handlers_and_filters_pass_their_tests_build_and_serve_after_a_push() {
    let (node_modules, venv) = polyglot_tools();
    let dir = Scratch::new("polyglot");
    let js_handler = js_project(&dir, "tnew-js-greeter", "--handler", &node_modules);
    let js_filter = js_project(&dir, "tnew-js-check", "--filter", &node_modules);
    let py_handler = python_project(&dir, "tnew-py-greeter", "--handler", &venv);
    let py_filter = python_project(&dir, "tnew-py-check", "--filter", &venv);

    // The four builds are independent; each is mostly one core's work.
    let built = std::thread::scope(|s| {
        let builds = [
            s.spawn(|| js_test_and_build(&js_handler, "tnew-js-greeter")),
            s.spawn(|| js_test_and_build(&js_filter, "tnew-js-check")),
            s.spawn(|| python_test_and_build(&py_handler, "tnew-py-greeter")),
            s.spawn(|| python_test_and_build(&py_filter, "tnew-py-check")),
        ];
        builds.map(|b| b.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });

    let (api, served) = upstream();
    let mut gateway = Gateway::start(
        &dir.join("gateway"),
        &format!("[upstreams.api]\ntargets = [\"{api}\"]\n"),
    );
    let names = [
        "tnew-js-greeter",
        "tnew-js-check",
        "tnew-py-greeter",
        "tnew-py-check",
    ];
    for (wasm, name) in built.iter().zip(names) {
        gateway.push(wasm, name);
    }
    // The filters' READMEs both show `/api/{*rest}`; one route each here.
    gateway.add_routes(&[
        readme_route(&js_handler),
        readme_route(&py_handler),
        readme_route(&js_filter).replace("/api/{*rest}", "/js/{*rest}"),
        readme_route(&py_filter).replace("/api/{*rest}", "/py/{*rest}"),
    ]);

    for greeter in ["tnew-js-greeter", "tnew-py-greeter"] {
        let hello = gateway.get(&format!("/{greeter}/ada"), &[]);
        assert_eq!(hello.status, 200, "{greeter}: {hello:?}");
        assert_eq!(hello.header("content-type"), Some("application/json"));
        let body = hello.json();
        assert_eq!(body["message"], "Hello, ada!", "{greeter}");
        assert_eq!(body["request_id"], hello.header("x-request-id").unwrap());
        let long = gateway.get(&format!("/{greeter}/{}", "a".repeat(65)), &[]);
        assert_eq!(long.status, 400, "{greeter}: {long:?}");
        assert_eq!(long.json()["error"], "bad_request", "{greeter}");
    }
    for (prefix, checker) in [("/js", "tnew-js-check"), ("/py", "tnew-py-check")] {
        let refused = gateway.get(&format!("{prefix}/orders"), &[]);
        assert_eq!(refused.status, 400, "{checker}: {refused:?}");
        assert_eq!(refused.json()["message"], "missing header x-client-id");
        assert_eq!(
            refused.json()["request_id"],
            refused.header("x-request-id").unwrap()
        );
        let passed = gateway.get(&format!("{prefix}/orders"), &[("x-client-id", "shop-7")]);
        assert_eq!(passed.status, 200, "{checker}: {passed:?}");
        assert_eq!(passed.body, "client=shop-7");
        assert_eq!(passed.header("x-checked-by"), Some(checker));
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "only the requests with the header went on"
    );

    // The config check the projects export: a misspelt key is refused at reload, naming it.
    let refused = format!(
        "{}\n{}",
        gateway.base_config,
        readme_route(&py_handler).replace("greeting =", "greting =")
    );
    std::fs::write(&gateway.config, refused).unwrap();
    let line = gateway.wait_for(&["config reloaded", "config reload refused"]);
    assert!(
        line.contains("refuses its config: greting: unknown key, expected `greeting`"),
        "{line}"
    );
}
