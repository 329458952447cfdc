//! Runtimes: where workers run, behind warden-core's [`Runtime`](warden_core::ports::Runtime)
//! port. `local` launches worker processes itself (one machine, no cluster): it supervises
//! them, captures their output into rotating files and measures them from `/proc`.
#![forbid(unsafe_code)]
pub mod local;

pub use local::{GroupSpec, LocalRuntime, LocalSettings};
