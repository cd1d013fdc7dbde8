//! Embeds `wit/gateway.wit` into the SDK's export macros.
//!
//! `filter!` and `handler!` expand to a `wit_bindgen::generate!` in the plugin's own crate (the
//! export glue must live there), so the macros carry the WIT text inline instead of a path that
//! would resolve against the plugin crate's directory.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let wit_path = manifest.join("../wit/gateway.wit");
    println!("cargo:rerun-if-changed={}", wit_path.display());
    let wit = std::fs::read_to_string(&wit_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", wit_path.display()));
    assert!(
        !wit.contains("\"###"),
        "the WIT text must not contain the raw-string terminator"
    );
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("wit_text.rs");
    let code = format!(
        "/// The `tessera:gateway` WIT package text, for the export macros.\n#[doc(hidden)]\n#[macro_export]\nmacro_rules! __tessera_export {{\n    ($world:literal, $($body:tt)*) => {{\n        $crate::__private::wit_bindgen::generate!({{\n            inline: r###\"{wit}\"###,\n            world: $world,\n            runtime_path: \"::tessera_sdk::__private::wit_bindgen::rt\",\n            with: {{\n                \"tessera:gateway/types@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::types,\n                \"tessera:gateway/log@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::log,\n                \"tessera:gateway/config@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::config,\n                \"tessera:gateway/context@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::context,\n                \"tessera:gateway/http-client@0.1.0\": ::tessera_sdk::__private::bindings::tessera::gateway::http_client,\n            }},\n        }});\n        $($body)*\n    }};\n}}\n"
    );
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
