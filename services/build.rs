//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates the tonic servers and clients from the descriptor set,
//! which is also kept for gRPC server reflection.

use std::path::PathBuf;

fn main() {
    // Read at run time: a build script compiled for another checkout
    // sharing this target directory must still find this checkout's files.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = PathBuf::from(manifest_dir).join("../proto");
    let files = ["revert_name.proto", "time.proto", "heartbeat.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(f).display());
    }
    let fds = protox::compile(files, [&proto_dir]).expect("proto files compile");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .unwrap();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .expect("code generation");
}
