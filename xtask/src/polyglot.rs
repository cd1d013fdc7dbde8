//! The JavaScript and Python plugins (`examples/js`, `examples/python`), built into components
//! with pinned toolchains that live in `target/polyglot/tools`:
//!
//! - Python: `componentize-py` ([`COMPONENTIZE_PY`]) in a virtual environment;
//! - JavaScript: the packages of `examples/js/package-lock.json` (componentize-js), installed with
//!   `npm ci`, driven by `examples/js/build.mjs`.
//!
//! Each toolchain is installed once: a stamp beside it names what was installed, and a later run
//! that finds the same pin does nothing. Each component is rebuilt only when its inputs (its
//! sources, `wit/`, the toolchain pin) changed: a stamp beside the `.wasm` holds their
//! fingerprint. `cargo xtask polyglot` runs this; `cargo xtask test` runs it too, and the test
//! harness runs `cargo xtask polyglot` when the tests run alone, so there is one way to build
//! them. Components land in `target/polyglot/<language>/<name>.wasm`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{ensure_pip_tool, ensure_tools, root, run, target_dir};

/// The Python toolchain. Pinned: a new version is a deliberate change.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Languages with plugins of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Language {
    JavaScript,
    Python,
}

impl Language {
    /// The directory name, under `examples/` and under `target/polyglot/`.
    fn dir(self) -> &'static str {
        match self {
            Self::JavaScript => "js",
            Self::Python => "python",
        }
    }
}

/// One plugin: its language, its name (the `.wasm` file's stem) and the WIT world it targets.
struct Plugin {
    language: Language,
    name: &'static str,
    world: &'static str,
}

/// Every JavaScript and Python plugin. A JavaScript plugin is `examples/js/src/<name>.js`; a
/// Python plugin is the module `app` in `examples/python/<name>/`.
const PLUGINS: &[Plugin] = &[
    Plugin {
        language: Language::JavaScript,
        name: "order-details",
        world: "handler",
    },
    Plugin {
        language: Language::JavaScript,
        name: "require-header",
        world: "filter",
    },
    Plugin {
        language: Language::Python,
        name: "order-details",
        world: "handler",
    },
    Plugin {
        language: Language::Python,
        name: "require-header",
        world: "filter",
    },
];

/// Tools the builds run, by the Debian package that provides them.
const TOOLS: &[(&str, &str)] = &[("python3", "python3"), ("node", "nodejs"), ("npm", "npm")];

/// `target/polyglot`: the toolchains and the components.
pub fn dir() -> PathBuf {
    target_dir().join("polyglot")
}

/// Installs what is missing and builds every component whose inputs changed. Returns
/// `target/polyglot`, which holds `js/<name>.wasm` and `python/<name>.wasm`.
pub fn build() -> anyhow::Result<PathBuf> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Two builds at once (two test runs) would install into and write over the same files.
    let lock_path = dir.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    ensure_tools(TOOLS)?;
    let componentize_py = ensure_componentize_py(&dir.join("tools").join("python"))?;
    let js_modules = ensure_js_packages(&dir.join("tools").join("js"))?;
    let wit = root().join("wit");
    for plugin in PLUGINS {
        let out_dir = dir.join(plugin.language.dir());
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let out = out_dir.join(format!("{}.wasm", plugin.name));
        let stamp = out_dir.join(format!("{}.inputs", plugin.name));
        let fingerprint = fingerprint(plugin)?;
        if out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint) {
            continue;
        }
        // Written beside, then renamed: a build that fails or is killed leaves no half component.
        let partial = out_dir.join(format!("{}.wasm.partial", plugin.name));
        let mut cmd = match plugin.language {
            Language::Python => {
                let mut cmd = Command::new(&componentize_py);
                cmd.arg("-d")
                    .arg(&wit)
                    .args(["-w", plugin.world, "componentize", "-p"])
                    .arg(examples(Language::Python).join(plugin.name))
                    .arg("app")
                    .arg("-o")
                    .arg(&partial);
                cmd
            }
            Language::JavaScript => {
                let js = examples(Language::JavaScript);
                let mut cmd = Command::new("node");
                cmd.arg(js.join("build.mjs"))
                    .arg(&wit)
                    .arg(js.join("src").join(format!("{}.js", plugin.name)))
                    .arg(plugin.world)
                    .arg(&partial)
                    .env("TESSERA_JS_MODULES", &js_modules);
                cmd
            }
        };
        cmd.current_dir(root());
        run(cmd).with_context(|| {
            format!("building the {:?} plugin {}", plugin.language, plugin.name)
        })?;
        std::fs::rename(&partial, &out)
            .with_context(|| format!("moving {} into place", partial.display()))?;
        std::fs::write(&stamp, &fingerprint)
            .with_context(|| format!("writing {}", stamp.display()))?;
    }
    drop(lock);
    Ok(dir)
}

fn examples(language: Language) -> PathBuf {
    root().join("examples").join(language.dir())
}

/// Creates a virtual environment at `venv` with [`COMPONENTIZE_PY`], once. Returns the tool.
fn ensure_componentize_py(venv: &Path) -> anyhow::Result<PathBuf> {
    ensure_pip_tool(
        venv,
        COMPONENTIZE_PY,
        "componentize-py",
        "the Python plugins",
    )
}

/// Installs the packages `examples/js/package-lock.json` pins into `dir/node_modules` with
/// `npm ci`, once: the stamp holds the lock file it installed. Returns the `node_modules`
/// directory.
fn ensure_js_packages(dir: &Path) -> anyhow::Result<PathBuf> {
    let js = examples(Language::JavaScript);
    let manifest = std::fs::read(js.join("package.json")).context("reading package.json")?;
    let lock = std::fs::read(js.join("package-lock.json")).context("reading package-lock.json")?;
    let modules = dir.join("node_modules");
    let stamp = dir.join("tessera-installed");
    if modules.is_dir() && std::fs::read(&stamp).is_ok_and(|s| s == lock) {
        return Ok(modules);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("package.json"), manifest)?;
    std::fs::write(dir.join("package-lock.json"), &lock)?;
    let mut install = Command::new("npm");
    install
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir);
    run(install).context("the JavaScript plugins need: npm ci (in examples/js)")?;
    std::fs::write(&stamp, &lock).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(modules)
}

/// A fingerprint of everything a component is built from: the toolchain pin, `wit/`, and the
/// plugin's sources (for JavaScript also the build script and the lock file).
fn fingerprint(plugin: &Plugin) -> anyhow::Result<String> {
    let mut files = Vec::new();
    collect_files(&root().join("wit"), &mut files)?;
    let pin = match plugin.language {
        Language::Python => {
            collect_files(&examples(Language::Python).join(plugin.name), &mut files)?;
            COMPONENTIZE_PY.as_bytes().to_vec()
        }
        Language::JavaScript => {
            let js = examples(Language::JavaScript);
            collect_files(&js.join("src"), &mut files)?;
            files.push(js.join("build.mjs"));
            std::fs::read(js.join("package-lock.json")).context("reading package-lock.json")?
        }
    };
    files.sort();
    let mut hash = Fnv::default();
    hash.write(plugin.world.as_bytes());
    hash.write(&pin);
    for file in &files {
        let contents =
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        // Relative: the same checkout moved elsewhere keeps its components.
        let name = file.strip_prefix(root()).unwrap_or(file);
        hash.write(name.to_string_lossy().as_bytes());
        hash.write(&(contents.len() as u64).to_le_bytes());
        hash.write(&contents);
    }
    Ok(format!("{:016x}\n", hash.0))
}

/// Every file under `dir`, skipping caches Python writes beside its sources.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == "__pycache__") {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// 64-bit FNV-1a: stable across Rust releases, unlike `DefaultHasher`, so stamps stay valid.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
