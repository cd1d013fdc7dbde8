//! Embeds `wit/gateway.wit` and its dependencies (`wit/deps/*/`) into the SDK's export macros.
//!
//! `filter!` and `handler!` expand to a `wit_bindgen::generate!` in the plugin's own crate (the
//! export glue must live there), so the macros carry the WIT text inline instead of a path that
//! would resolve against the plugin crate's directory. Inline text is one file, so each
//! dependency package becomes a nested `package name { ... }` block after the gateway's own.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let wit_path = manifest.join("../wit/gateway.wit");
    println!("cargo:rerun-if-changed={}", wit_path.display());
    let mut wit = std::fs::read_to_string(&wit_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", wit_path.display()));
    let deps = manifest.join("../wit/deps");
    println!("cargo:rerun-if-changed={}", deps.display());
    for dir in sorted_entries(&deps) {
        wit.push_str(&nested_package(&dir));
    }
    assert!(
        !wit.contains("\"###"),
        "the WIT text must not contain the raw-string terminator"
    );
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("wit_text.rs");
    let code = format!(
        "/// The `tessera:gateway` WIT package text, for the export macros.\n#[doc(hidden)]\n#[macro_export]\nmacro_rules! __tessera_export {{\n    ($world:literal, $($body:tt)*) => {{\n        $crate::__private::wit_bindgen::generate!({{\n            inline: r###\"{wit}\"###,\n            world: $world,\n            runtime_path: \"::tessera_sdk::__private::wit_bindgen::rt\",\n            with: {{\n                \"tessera:gateway/types@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::types,\n                \"tessera:gateway/log@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::log,\n                \"tessera:gateway/config@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::config,\n                \"tessera:gateway/context@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::context,\n                \"tessera:gateway/http-client@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::http_client,\n                \"wasi:keyvalue/store@0.2.0-draft2\": ::tessera_sdk::__private::bindings::wasi::keyvalue::store,\n                \"wasi:keyvalue/atomics@0.2.0-draft2\": ::tessera_sdk::__private::bindings::wasi::keyvalue::atomics,\n                \"wasi:keyvalue/batch@0.2.0-draft2\": ::tessera_sdk::__private::bindings::wasi::keyvalue::batch,\n            }},\n        }});\n        $($body)*\n    }};\n}}\n"
    );
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// The entries of `dir`, sorted, so the generated text does not depend on directory order.
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let read = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut entries: Vec<PathBuf> = read
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    entries
}

/// The `.wit` files of one dependency package as a nested `package name { ... }` block. Every
/// file must declare the same `package name;`, which becomes the block's name.
fn nested_package(dir: &Path) -> String {
    let mut name: Option<String> = None;
    let mut body = String::new();
    for file in sorted_entries(dir) {
        if file.extension().is_none_or(|e| e != "wit") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", file.display());
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for line in text.lines() {
            match line.trim().strip_prefix("package ") {
                Some(decl) => {
                    let decl = decl.trim_end_matches(';').trim().to_owned();
                    assert!(
                        name.as_ref().is_none_or(|n| *n == decl),
                        "{} declares package {decl}, its siblings {name:?}",
                        file.display()
                    );
                    name = Some(decl);
                }
                None => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    let name = name.unwrap_or_else(|| panic!("{} declares no package", dir.display()));
    format!("\npackage {name} {{\n{body}}}\n")
}
