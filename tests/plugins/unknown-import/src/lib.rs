//! A component that imports `test:extra/nope`, which no gateway provides: loading it must fail
//! with a clear reason, never at request time.

// The generated bindings are the canonical-ABI glue, which is unsafe by nature.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "
        package test:extra;
        interface nope {
            poke: func();
        }
        world unknown-import {
            import nope;
            export run: func();
        }
    ",
});

/// The export.
#[derive(Debug)]
pub struct Component;

impl Guest for Component {
    fn run() {
        test::extra::nope::poke();
    }
}

#[cfg(target_arch = "wasm32")]
export!(Component);
