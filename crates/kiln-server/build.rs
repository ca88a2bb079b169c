//! Generates the kiln.v1 messages and the tonic service from `proto/` with protox, a protobuf
//! compiler written in Rust: the build needs nothing but cargo (no system `protoc`). The encoded
//! file descriptor set is written beside the code for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let fds = protox::compile(["kiln/v1/worker.proto"], [&proto])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("kiln_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", proto.join("kiln/v1/worker.proto").display());
    Ok(())
}
