//! warden's core: the live fleet's domain types, the state they live in, and the one task that owns it.
//!
//! Adapters send observations to the owner ([`FleetHandle::observe`]); the owner applies them,
//! re-evaluates activity and lifecycle against the clock, and publishes an immutable
//! [`Snapshot`] (cheap to clone) plus a stream of revisioned [`FleetChange`]s.
pub mod clock;
pub mod filter;
pub mod model;
pub mod owner;
pub mod perf;
pub mod ports;
pub mod sketch;
pub mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use filter::{Health, HealthStatus, WorkerFilter};
pub use model::*;
pub use owner::{FleetHandle, FleetSettings, spawn};
pub use ports::Refresher;
pub use state::{ChangeKind, FleetChange, Snapshot};
