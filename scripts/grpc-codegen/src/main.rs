//! Writes the Rust code of the repository's protobuf files next to where it is used:
//! `lapce-ipc/examples/proto/lapce.chat.v1.rs` and `cli/src/bench/lapce.bench.v1.rs`.

use std::path::{Path, PathBuf};

/// (proto file, directory of its include root, where the generated file goes).
const PROTOS: &[(&str, &str, &str)] = &[
    ("lapce-ipc/examples/proto/chat.proto", "lapce-ipc/examples/proto", "lapce-ipc/examples/proto"),
    ("cli/proto/echo.proto", "cli/proto", "cli/src/bench"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    // prost-build runs the protoc named by PROTOC: the one inside the protoc-bin-vendored crate.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    for (proto, include, out) in PROTOS {
        let out_dir: PathBuf = root.join(out);
        tonic_prost_build::configure()
            // `bytes` fields as `bytes::Bytes`: the payloads are not copied again when decoded.
            .bytes(".")
            .out_dir(&out_dir)
            .compile_protos(&[root.join(proto)], &[root.join(include)])?;
        println!("generated into {}", out_dir.display());
    }
    Ok(())
}
