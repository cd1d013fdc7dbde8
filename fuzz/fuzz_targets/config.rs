//! Any text given as `tessera.toml` is either a config or an error naming what is wrong; never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match tessera::config::Config::parse(text, "fuzz.toml".as_ref(), ".".as_ref()) {
        Ok(config) => {
            // A config that parsed also yields its plugin uses and JSON configs without panicking.
            let _ = config.plugin_uses();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
