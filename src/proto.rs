//! Code generated from `proto/warden/v1/*.proto` by `build.rs`.

/// The `warden.v1` package: messages, service traits and clients.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("warden.v1");
}

/// Encoded descriptors of every warden proto file, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("warden_descriptor");
