//! Compiles every `.proto` under `onionpost/` into Rust with the pure-Rust protox compiler, so
//! building onionpost needs no `protoc` binary, and writes the encoded descriptor set next to the
//! generated code for gRPC reflection.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;

/// Where the `.proto` files live, relative to the crate; also the protox include path's child,
/// so that imports and package paths read `onionpost/<service>/v1/<service>.proto`.
const PROTO_DIR: &str = "onionpost";

/// The file `lib.rs` includes as `FILE_DESCRIPTOR_SET`.
const DESCRIPTOR_SET_FILE: &str = "onionpost_descriptor_set.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // A directory here makes cargo rerun on any change beneath it, including new files.
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut proto_files = Vec::new();
    collect_proto_files(&crate_dir.join(PROTO_DIR), &mut proto_files)?;
    // Sorted, so the descriptor set (and thus the build) is the same on every machine.
    proto_files.sort();

    // Source info is kept so reflection clients see the comments; imports (the well-known types)
    // are kept so a reflection client can resolve every type without other files.
    let descriptor_set = protox::compile(&proto_files, [&crate_dir])?;

    fs::write(
        out_dir.join(DESCRIPTOR_SET_FILE),
        descriptor_set.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptor_set)?;

    Ok(())
}

/// Appends every `.proto` file under `dir`, at any depth, to `found`.
fn collect_proto_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_proto_files(&path, found)?;
        } else if path
            .extension()
            .is_some_and(|extension| extension == "proto")
        {
            found.push(path);
        }
    }
    Ok(())
}
