//! `tessera new`: writes a plugin project (a filter or a handler, in Rust, JavaScript or Python)
//! that builds, passes its own tests, and whose README gives the commands to build, test and load
//! it into a running gateway.
//!
//! The files are the templates under `host/templates/new/`, embedded in the binary, with their
//! placeholders (`{{name}}`, `{{crate}}`, ...) filled in. The project stands on its own: a Rust
//! project is its own cargo workspace and depends on the SDK by path or version; a JavaScript or
//! Python project carries a copy of the gateway's `wit/` and pins its toolchain to the versions
//! this repository builds its own JavaScript and Python plugins with.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `tessera-sdk` crate.
    Rust,
    /// JavaScript, built with componentize-js.
    #[value(alias = "javascript")]
    Js,
    /// Python, built with componentize-py.
    #[value(alias = "py")]
    Python,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "Rust",
            Self::Js => "JavaScript",
            Self::Python => "Python",
        })
    }
}

/// What a new plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sees requests before the route's target and responses after it.
    Filter,
    /// Is the route's target.
    Handler,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Handler => "handler",
        }
    }

    /// What the template plugin does, for its README.
    fn summary(self) -> &'static str {
        match self {
            Self::Filter => include_str!("../templates/new/summary-filter.md"),
            Self::Handler => include_str!("../templates/new/summary-handler.md"),
        }
    }

    fn route(self) -> &'static str {
        match self {
            Self::Filter => include_str!("../templates/new/route-filter.toml"),
            Self::Handler => include_str!("../templates/new/route-handler.toml"),
        }
    }
}

/// Where a Rust project's `tessera-sdk` dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// The SDK's directory (holding its `Cargo.toml`), absolute.
    Path(PathBuf),
    /// A version requirement, for a registry that has the crate.
    Version(String),
}

impl Sdk {
    /// Reads `--sdk`: a version (`0.1.0`, `^0.1`, `=0.1.2`) or a path to the SDK's directory.
    /// Without it, the `sdk/` of the checkout this binary was built from, if it is still there.
    pub fn resolve(arg: Option<&str>) -> anyhow::Result<Self> {
        match arg {
            Some(arg) if is_version(arg) => Ok(Self::Version(arg.to_owned())),
            Some(arg) => Self::path(Path::new(arg)),
            None => {
                let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
                if built_from.join("Cargo.toml").is_file() {
                    return Self::path(&built_from);
                }
                bail!(
                    "the Tessera SDK is not on crates.io, and the checkout this tessera was built \
                     from ({}) is gone: pass --sdk <path to a Tessera checkout's sdk/ directory>, \
                     or --sdk <version> for a registry that has tessera-sdk",
                    built_from.display()
                )
            }
        }
    }

    fn path(dir: &Path) -> anyhow::Result<Self> {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).with_context(|| {
            format!(
                "--sdk {}: not a version, and no Cargo.toml there to read",
                dir.display()
            )
        })?;
        let name = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_owned));
        if name.as_deref() != Some("tessera-sdk") {
            bail!(
                "--sdk {}: {} is not the manifest of the tessera-sdk crate",
                dir.display(),
                manifest.display()
            );
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--sdk {}", dir.display()))?;
        Ok(Self::Path(dir))
    }

    /// The `[dependencies]` line.
    fn dependency(&self) -> String {
        match self {
            Self::Path(dir) => format!(
                "tessera-sdk = {{ path = {} }}",
                toml::Value::String(dir.display().to_string())
            ),
            Self::Version(version) => {
                format!("tessera-sdk = {}", toml::Value::String(version.clone()))
            }
        }
    }

    /// Where the SDK comes from, for the README.
    fn describe(&self) -> String {
        match self {
            Self::Path(dir) => format!("the Tessera checkout at `{}`", dir.display()),
            Self::Version(version) => format!("your cargo registry, version `{version}`"),
        }
    }
}

/// `0.1.0`, `0.1`, `^0.1`, `=0.1.2`, `~0.1`, `0.2.0-rc.1`: what cargo takes as a version
/// requirement for one crate. Anything else is taken as a path.
fn is_version(text: &str) -> bool {
    let text = text.trim_start_matches(['=', '^', '~']);
    let (numbers, pre) = text.split_once('-').unwrap_or((text, ""));
    let parts: Vec<&str> = numbers.split('.').collect();
    (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && pre
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// What `tessera new` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The plugin's name: the project's directory, package and the name routes use.
    pub name: String,
    /// Filter or handler.
    pub kind: Kind,
    /// The language.
    pub language: Language,
    /// The project is created as `<parent>/<name>`.
    pub parent: PathBuf,
    /// `--sdk`, for Rust projects.
    pub sdk: Option<String>,
}

/// A project written to disk.
#[derive(Debug)]
pub struct Project {
    /// Its directory.
    pub dir: PathBuf,
    /// The commands to run in it, in order: test, build, load.
    pub next: Vec<String>,
}

/// Checks a plugin name: lower-case letters, digits and `-`, starting with a letter, at most 64
/// characters. The gateway takes a little more (`_`, upper case) in plugin names; this is the
/// part every language's package tooling takes too.
pub fn check_name(name: &str, language: Language) -> Result<(), String> {
    let rule = "a plugin name is lower-case letters, digits and '-', starting with a letter, at \
                most 64 characters";
    if name.is_empty() {
        return Err(format!("the name is empty: {rule}"));
    }
    if name.len() > 64 {
        return Err(format!(
            "`{name}` is {} characters long: {rule}",
            name.chars().count()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "`{name}` does not start with a lower-case letter: {rule}"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("`{name}` contains {bad:?}: {rule}"));
    }
    // Names no build tool on some platform takes as a file or directory name.
    const DEVICE_NAMES: &[&str] = &["con", "prn", "aux", "nul"];
    let device = DEVICE_NAMES.contains(&name)
        || ["com", "lpt"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| n.len() == 1 && n != "0")
        });
    if device {
        return Err(format!("`{name}` is a reserved file name on Windows"));
    }
    if language == Language::Rust {
        // Cargo refuses these as package names.
        const RESERVED: &str = "abstract as async await become box break const continue crate \
            do dyn else enum extern false final fn for gen if impl in let loop macro match mod move \
            mut override priv pub ref return self static struct super trait true try type typeof \
            unsafe unsized use virtual where while yield alloc core std test proc-macro build deps \
            examples incremental tessera-sdk";
        if RESERVED.split_whitespace().any(|word| word == name) {
            return Err(format!(
                "`{name}` cannot be a Rust package's name (a keyword, a standard crate or a name \
                 cargo keeps for itself)"
            ));
        }
    }
    Ok(())
}

/// One file of a project: its path inside the project, its text, and whether it is a script
/// to run.
struct File {
    path: &'static str,
    text: String,
    executable: bool,
}

impl File {
    fn new(path: &'static str, text: String) -> Self {
        Self {
            path,
            text,
            executable: false,
        }
    }
}

/// Fills in `{{key}}` placeholders, in the order given (so a value may hold placeholders of keys
/// that come after it).
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    text
}

/// Writes the project. The directory `<parent>/<name>` must not exist or be empty; nothing is
/// left behind when writing fails.
pub fn create(request: &Request) -> anyhow::Result<Project> {
    check_name(&request.name, request.language).map_err(anyhow::Error::msg)?;
    if request.sdk.is_some() && request.language != Language::Rust {
        bail!(
            "--sdk is for Rust projects; a {} project uses the gateway's WIT",
            request.language
        );
    }
    let files = project_files(request)?;
    let dir = request.parent.join(&request.name);
    write_project(&dir, &files)?;
    Ok(Project {
        next: next_commands(request),
        dir,
    })
}

/// The files of the project, rendered.
fn project_files(request: &Request) -> anyhow::Result<Vec<File>> {
    match request.language {
        Language::Rust => rust_files(request),
        Language::Js => js_files(request),
        Language::Python => Ok(python_files(request)),
    }
}

/// The values every template may use.
fn common_values(request: &Request) -> Vec<(&'static str, String)> {
    let summary = request.kind.summary().trim_end().to_owned();
    let load = render(
        include_str!("../templates/new/load.md"),
        &[("route", request.kind.route().trim_end())],
    );
    vec![
        ("load", load),
        ("summary", summary),
        ("kind", request.kind.word().to_owned()),
        ("name", request.name.clone()),
    ]
}

fn rust_files(request: &Request) -> anyhow::Result<Vec<File>> {
    let sdk = Sdk::resolve(request.sdk.as_deref())?;
    let mut values = common_values(request);
    values.push(("crate", crate_name(&request.name)));
    values.push(("sdk_dependency", sdk.dependency()));
    values.push(("sdk_source", sdk.describe()));
    let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let source = match request.kind {
        Kind::Filter => include_str!("../templates/new/rust/filter.rs"),
        Kind::Handler => include_str!("../templates/new/rust/handler.rs"),
    };
    Ok(vec![
        File::new(
            "Cargo.toml",
            render(include_str!("../templates/new/rust/Cargo.toml"), &values),
        ),
        File::new(
            ".gitignore",
            include_str!("../templates/new/rust/gitignore").to_owned(),
        ),
        File::new(
            "README.md",
            render(include_str!("../templates/new/rust/README.md"), &values),
        ),
        File::new("src/lib.rs", render(source, &values)),
    ])
}

/// The gateway's WIT package (`wit/` of this repository), copied into JavaScript and Python
/// projects so they build on their own.
const WIT: &[(&str, &str)] = &[
    ("wit/gateway.wit", include_str!("../../wit/gateway.wit")),
    (
        "wit/deps/keyvalue/atomics.wit",
        include_str!("../../wit/deps/keyvalue/atomics.wit"),
    ),
    (
        "wit/deps/keyvalue/batch.wit",
        include_str!("../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "wit/deps/keyvalue/store.wit",
        include_str!("../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "wit/deps/keyvalue/world.wit",
        include_str!("../../wit/deps/keyvalue/world.wit"),
    ),
];

fn wit_files() -> impl Iterator<Item = File> {
    WIT.iter()
        .map(|(path, text)| File::new(path, (*text).to_owned()))
}

/// The toolchain of this repository's own JavaScript plugins (`examples/js`): a JavaScript
/// project pins the same packages, down to the lock file.
const JS_PACKAGE: &str = include_str!("../../examples/js/package.json");
const JS_LOCK: &str = include_str!("../../examples/js/package-lock.json");

fn js_files(request: &Request) -> anyhow::Result<Vec<File>> {
    let values = common_values(request);
    let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (package, lock) = js_package(&request.name, request.kind)?;
    let (source, test) = match request.kind {
        Kind::Filter => (
            include_str!("../templates/new/js/filter.js"),
            include_str!("../templates/new/js/filter.test.mjs"),
        ),
        Kind::Handler => (
            include_str!("../templates/new/js/handler.js"),
            include_str!("../templates/new/js/handler.test.mjs"),
        ),
    };
    let mut files = vec![
        File::new("package.json", package),
        File::new("package-lock.json", lock),
        File::new(
            "build.mjs",
            render(include_str!("../templates/new/js/build.mjs"), &values),
        ),
        File::new(
            ".gitignore",
            include_str!("../templates/new/js/gitignore").to_owned(),
        ),
        File::new(
            "README.md",
            render(include_str!("../templates/new/js/README.md"), &values),
        ),
        File::new("src/plugin.js", render(source, &values)),
        File::new("test/plugin.test.mjs", render(test, &values)),
        File::new(
            "test/register.mjs",
            include_str!("../templates/new/js/test/register.mjs").to_owned(),
        ),
        File::new(
            "test/hooks.mjs",
            include_str!("../templates/new/js/test/hooks.mjs").to_owned(),
        ),
        File::new(
            "test/mock-host.mjs",
            include_str!("../templates/new/js/test/mock-host.mjs").to_owned(),
        ),
    ];
    files.extend(wit_files());
    Ok(files)
}

/// `package.json` and `package-lock.json`: the template's manifest with the development
/// dependencies of `examples/js`, and that lock file under the plugin's name.
fn js_package(name: &str, kind: Kind) -> anyhow::Result<(String, String)> {
    let mut package: serde_json::Value = serde_json::from_str(&render(
        include_str!("../templates/new/js/package.json"),
        &[("name", name), ("kind", kind.word())],
    ))
    .context("the package.json template")?;
    let pinned: serde_json::Value =
        serde_json::from_str(JS_PACKAGE).context("examples/js/package.json")?;
    let dev_dependencies = pinned["devDependencies"].clone();
    package["devDependencies"] = dev_dependencies.clone();
    let mut lock: serde_json::Value =
        serde_json::from_str(JS_LOCK).context("examples/js/package-lock.json")?;
    lock["name"] = name.into();
    lock["version"] = package["version"].clone();
    // The lock's root entry mirrors the manifest; npm checks them against each other.
    lock["packages"][""] = serde_json::json!({
        "name": name,
        "version": package["version"],
        "devDependencies": dev_dependencies,
        "engines": package["engines"],
    });
    let text = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v).map(|mut s| {
            s.push('\n');
            s
        })
    };
    Ok((text(&package)?, text(&lock)?))
}

fn python_files(request: &Request) -> Vec<File> {
    let values = common_values(request);
    let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (source, test) = match request.kind {
        Kind::Filter => (
            include_str!("../templates/new/python/filter.py"),
            include_str!("../templates/new/python/test_filter.py"),
        ),
        Kind::Handler => (
            include_str!("../templates/new/python/handler.py"),
            include_str!("../templates/new/python/test_handler.py"),
        ),
    };
    let script = |path, template| File {
        path,
        text: render(template, &values),
        executable: true,
    };
    let mut files = vec![
        File::new(
            "requirements.txt",
            include_str!("../templates/new/python/requirements.txt").to_owned(),
        ),
        script("build.sh", include_str!("../templates/new/python/build.sh")),
        script("test.sh", include_str!("../templates/new/python/test.sh")),
        File::new(
            ".gitignore",
            include_str!("../templates/new/python/gitignore").to_owned(),
        ),
        File::new(
            "README.md",
            render(include_str!("../templates/new/python/README.md"), &values),
        ),
        File::new("src/app.py", render(source, &values)),
        File::new("tests/test_app.py", render(test, &values)),
    ];
    files.extend(wit_files());
    files
}

/// The library's name: cargo turns `-` into `_`, and so does the `.wasm` file's name.
fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

fn next_commands(request: &Request) -> Vec<String> {
    let name = &request.name;
    match request.language {
        Language::Rust => vec![
            "cargo test".to_owned(),
            "cargo build --release --target wasm32-wasip2".to_owned(),
            format!(
                "tessera plugin push target/wasm32-wasip2/release/{}.wasm --name {name}",
                crate_name(name)
            ),
        ],
        Language::Js => vec![
            "npm ci".to_owned(),
            "npm test".to_owned(),
            "npm run build".to_owned(),
            format!("tessera plugin push dist/{name}.wasm --name {name}"),
        ],
        Language::Python => vec![
            "python3 -m venv .venv".to_owned(),
            ".venv/bin/pip install -r requirements.txt".to_owned(),
            "./test.sh".to_owned(),
            "./build.sh".to_owned(),
            format!("tessera plugin push dist/{name}.wasm --name {name}"),
        ],
    }
}

/// Writes `files` under `dir`, which must not exist or be empty. On failure, removes what it
/// wrote.
fn write_project(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    let existed = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; nothing was written (choose another name, \
                     or another parent with --dir)",
                    dir.display()
                );
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if dir.exists() && !dir.is_dir() => {
            return Err(e)
                .with_context(|| format!("{} exists and is not a directory", dir.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let written = (|| {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for file in files {
            let path = dir.join(file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, &file.text)
                .with_context(|| format!("writing {}", path.display()))?;
            if file.executable {
                make_executable(&path)?;
            }
        }
        anyhow::Ok(())
    })();
    if written.is_err() {
        if existed {
            // Only what this call wrote: the directory was empty before.
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    written
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tessera-scaffold-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn request(name: &str, kind: Kind, language: Language, parent: &Path) -> Request {
        Request {
            name: name.to_owned(),
            kind,
            language,
            parent: parent.to_owned(),
            sdk: None,
        }
    }

    #[test]
    fn names_follow_the_rule_and_the_error_says_what_is_wrong() {
        let longest = format!("a{}", "-1".repeat(31) + "b");
        assert_eq!(longest.len(), 64);
        for name in ["a", "greeter", "my-filter-2", "com", "com0", &longest] {
            assert_eq!(check_name(name, Language::Rust), Ok(()), "{name}");
        }
        let too_long = format!("{longest}c");
        for (name, why) in [
            ("", "the name is empty"),
            ("Greeter", "does not start with a lower-case letter"),
            ("2fa", "does not start with a lower-case letter"),
            ("-x", "does not start with a lower-case letter"),
            ("my_filter", "contains '_'"),
            ("my filter", "contains ' '"),
            ("caf\u{e9}", "contains '\u{e9}'"),
            ("a/b", "contains '/'"),
            (&too_long, "is 65 characters long"),
            ("con", "reserved file name"),
            ("lpt1", "reserved file name"),
        ] {
            let error = check_name(name, Language::Js).unwrap_err();
            assert!(error.contains(why), "{name}: {error}");
            assert!(
                error.contains("lower-case letters, digits and '-'") || why.contains("reserved"),
                "{error}"
            );
        }
        for name in ["fn", "self", "test", "std", "build", "tessera-sdk"] {
            let error = check_name(name, Language::Rust).unwrap_err();
            assert!(error.contains("cannot be a Rust package's name"), "{error}");
            assert_eq!(check_name(name, Language::Python), Ok(()), "{name}");
        }
    }

    #[test]
    fn sdk_is_a_version_or_the_directory_of_the_sdk_crate() {
        for version in ["0.1.0", "0.1", "1", "^0.1", "=0.1.2", "~0.1", "0.2.0-rc.1"] {
            assert_eq!(
                Sdk::resolve(Some(version)).unwrap(),
                Sdk::Version(version.to_owned())
            );
        }
        for not_version in ["0.1.", "v0.1", "0..1", "./0.1", "sdk"] {
            assert!(!is_version(not_version), "{not_version}");
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sdk = repo.join("sdk").canonicalize().unwrap();
        assert_eq!(Sdk::resolve(None).unwrap(), Sdk::Path(sdk.clone()));
        assert_eq!(
            Sdk::resolve(Some(&repo.join("sdk").display().to_string())).unwrap(),
            Sdk::Path(sdk)
        );
        let missing = Sdk::resolve(Some("/nonexistent/sdk")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("not a version, and no Cargo.toml there"),
            "{missing:#}"
        );
        let host = Sdk::resolve(Some(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
        assert!(
            host.to_string()
                .contains("is not the manifest of the tessera-sdk crate"),
            "{host}"
        );
    }

    #[test]
    fn the_sdk_dependency_is_valid_toml_for_any_path() {
        let odd = Sdk::Path(PathBuf::from("/home/o'neil/\"tessera\"\\sdk"));
        let manifest: toml::Table =
            toml::from_str(&format!("[dependencies]\n{}", odd.dependency())).unwrap();
        assert_eq!(
            manifest["dependencies"]["tessera-sdk"]["path"].as_str(),
            Some("/home/o'neil/\"tessera\"\\sdk")
        );
        let version: toml::Table =
            toml::from_str(&Sdk::Version("^0.1".to_owned()).dependency()).unwrap();
        assert_eq!(version["tessera-sdk"].as_str(), Some("^0.1"));
    }

    const LANGUAGES: [Language; 3] = [Language::Rust, Language::Js, Language::Python];

    #[test]
    fn every_placeholder_is_filled_and_the_readme_has_every_command() {
        let parent = scratch("placeholders");
        for language in LANGUAGES {
            for kind in [Kind::Filter, Kind::Handler] {
                let wanted = request("my-plugin", kind, language, &parent);
                let files = project_files(&wanted).unwrap();
                for file in &files {
                    assert!(
                        !file.text.contains("{{") && !file.text.contains("}}"),
                        "{language} {kind} {}: {}",
                        file.path,
                        file.text
                    );
                }
                let readme = &files.iter().find(|f| f.path == "README.md").unwrap().text;
                for command in next_commands(&wanted) {
                    assert!(readme.contains(&command), "{command} not in {readme}");
                }
                assert!(readme.contains("plugin = \"my-plugin\""), "{readme}");
                let world = format!("checked-{kind}");
                if language != Language::Rust {
                    let build = files
                        .iter()
                        .find(|f| f.path == "build.mjs" || f.path == "build.sh")
                        .unwrap();
                    assert!(build.text.contains(&world), "{}", build.text);
                    assert!(build.text.contains("dist/my-plugin.wasm"), "{}", build.text);
                }
            }
        }
    }

    #[test]
    fn the_rust_manifest_is_a_workspace_of_its_own() {
        let parent = scratch("manifest");
        let files =
            project_files(&request("my-plugin", Kind::Filter, Language::Rust, &parent)).unwrap();
        let manifest = &files.iter().find(|f| f.path == "Cargo.toml").unwrap().text;
        let manifest: toml::Table = toml::from_str(manifest).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("my-plugin"));
        assert!(manifest.contains_key("workspace"));
        assert!(manifest["dependencies"]["tessera-sdk"]["path"].is_str());
    }

    #[test]
    fn the_embedded_wit_is_the_repositorys_whole_wit_directory() {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    let name = path.strip_prefix(root).unwrap().display().to_string();
                    out.push((name, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk = Vec::new();
        walk(&root.join("wit"), &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<(String, String)> = WIT
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect();
        embedded.sort();
        assert_eq!(
            embedded.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            on_disk.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            "list every file of wit/ in WIT"
        );
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn a_javascript_project_pins_the_repositorys_packages_under_its_own_name() {
        let (package, lock) = js_package("my-plugin", Kind::Handler).unwrap();
        let package: serde_json::Value = serde_json::from_str(&package).unwrap();
        let lock: serde_json::Value = serde_json::from_str(&lock).unwrap();
        let examples: serde_json::Value = serde_json::from_str(JS_PACKAGE).unwrap();
        let examples_lock: serde_json::Value = serde_json::from_str(JS_LOCK).unwrap();
        assert_eq!(package["name"], "my-plugin");
        assert_eq!(
            package["description"],
            "A Tessera handler plugin in JavaScript"
        );
        assert_eq!(package["devDependencies"], examples["devDependencies"]);
        assert_eq!(lock["name"], "my-plugin");
        assert_eq!(lock["packages"][""]["name"], "my-plugin");
        assert_eq!(
            lock["packages"][""]["devDependencies"],
            package["devDependencies"]
        );
        // Every other entry (the toolchain and what it pulls in) is the repository's.
        let mut ours = lock["packages"].as_object().unwrap().clone();
        let mut theirs = examples_lock["packages"].as_object().unwrap().clone();
        ours.remove("");
        theirs.remove("");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn an_existing_project_is_never_overwritten() {
        let parent = scratch("overwrite");
        let wanted = request("taken", Kind::Handler, Language::Rust, &parent);
        std::fs::create_dir(parent.join("taken")).unwrap();
        create(&wanted).expect("an empty directory is used");
        let lib = parent.join("taken/src/lib.rs");
        std::fs::write(&lib, "// mine").unwrap();
        let again = create(&wanted).unwrap_err().to_string();
        let python = request("taken", Kind::Handler, Language::Python, &parent);
        assert!(create(&python).is_err());
        assert!(again.contains("already exists and is not empty"), "{again}");
        assert_eq!(std::fs::read_to_string(&lib).unwrap(), "// mine");

        std::fs::write(parent.join("file"), "x").unwrap();
        let file = create(&request("file", Kind::Filter, Language::Rust, &parent)).unwrap_err();
        assert!(
            format!("{file:#}").contains("is not a directory"),
            "{file:#}"
        );
        assert_eq!(std::fs::read_to_string(parent.join("file")).unwrap(), "x");
    }

    #[test]
    fn a_write_that_fails_leaves_nothing_behind() {
        let parent = scratch("failed");
        // `a` is written as a file, so `a/b` cannot be.
        let files = [
            File::new("a", "x".to_owned()),
            File::new("a/b", "y".to_owned()),
        ];
        let fresh = parent.join("fresh");
        assert!(write_project(&fresh, &files).is_err());
        assert!(!fresh.exists());
        let empty = parent.join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(write_project(&empty, &files).is_err());
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    }
}
