//! Bad config and bad plugins are refused with messages that name what is wrong.

use tessera::config::Config;
use tessera_tests::*;

#[test]
fn typo_in_a_key_names_the_key_and_line() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.users]\ntargets = [\"127.0.0.1:1\"]\nconect_timeout_ms = 5\n";
    let err = Config::parse(text, "tessera.toml".as_ref(), ".".as_ref())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tessera.toml"), "{err}");
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("conect_timeout_ms"), "{err}");
}

#[test]
fn route_to_a_missing_upstream_names_the_route() {
    let text = "[[routes]]\npath = \"/x\"\nupstream = \"nope\"\n";
    let err = Config::parse(text, "tessera.toml".as_ref(), ".".as_ref())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "tessera.toml:3: routes[0].upstream: unknown upstream `nope` (defined: none)"
    );
}

#[tokio::test]
async fn plugin_used_in_the_wrong_world_is_refused() {
    let text = format!(
        "{}\n[[routes]]\npath = \"/\"\nhandler = {{ plugin = \"headers\" }}\n",
        plugins_section()
    );
    let err = tessera::Gateway::new(config(&text)).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("`headers` as a handler"), "{message}");
    assert!(message.contains("request-handler"), "{message}");
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused() {
    let dir = std::env::temp_dir().join(format!("tessera-bad-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (file, expected) in [
        (&junk, "not a WebAssembly component"),
        (&core, "core wasm module"),
    ] {
        let text = format!(
            "[plugins.files]\np = {:?}\n[[routes]]\npath = \"/\"\nhandler = {{ plugin = \"p\" }}\n",
            file.display().to_string()
        );
        let err = tessera::Gateway::new(config(&text)).await.unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("plugin `p`"), "{message}");
        assert!(message.contains(expected), "{message}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
