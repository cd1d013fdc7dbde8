//! Generates the Rust code for `../proto/payments.proto`. The .proto is parsed by protox, in Rust,
//! so a build needs no `protoc`; tonic's generator then writes the prost messages and, with the
//! `server` or `client` feature, the tonic service code.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let proto_dir = Path::new("../proto");
    let proto = proto_dir.join("payments.proto");
    println!("cargo:rerun-if-changed={}", proto.display());

    let descriptors = protox::compile([&proto], [proto_dir]).map_err(std::io::Error::other)?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        // The client is generic over any tonic transport; the crate never depends on tonic's own.
        .build_transport(false)
        .compile_fds(descriptors)
}
