//! Compiles `proto/` with protox (a protobuf compiler written in Rust), so building warden
//! needs no `protoc` on the machine. The encoded descriptor set is kept for server reflection.
use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "warden/v1/common.proto",
    "warden/v1/worker_health.proto",
    "warden/v1/logs.proto",
    "warden/v1/control.proto",
    "warden/v1/history.proto",
    "warden/v1/alerts.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("warden_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
