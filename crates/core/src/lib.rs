//! warden's core: the domain (workers, their identity, groups, activity, lifecycle, health,
//! samples), the live fleet state and the one task that owns it, `watch` for every
//! subscriber, the injectable clock, and the ports adapters implement.
//!
//! Adapters send observations to the owner ([`FleetHandle::observe`]); the owner applies them,
//! re-evaluates activity and lifecycle against the clock, and publishes an immutable
//! [`Snapshot`] (cheap to clone) plus a stream of revisioned [`FleetChange`]s, which
//! [`FleetHandle::watch`] turns into per-subscriber, filtered, resumable watches.
//!
//! This crate depends on no adapter (no Redis, gRPC, SQL, Kubernetes or HTTP client): the
//! test script checks it with `cargo tree`.
pub mod audit;
pub mod clock;
pub mod filter;
pub mod history;
pub mod idempotency;
pub mod journal;
pub mod model;
pub mod operations;
pub mod owner;
pub mod perf;
pub mod ports;
pub mod query;
pub mod recorder;
pub mod sketch;
pub mod state;
pub mod watch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use filter::WorkerFilter;
pub use model::*;
pub use owner::{FleetHandle, FleetSettings, spawn};
pub use ports::Refresher;
pub use query::{GroupInfo, ResolveError, SelectError, Selector, Summary};
pub use state::{ChangeKind, FleetChange, Snapshot};
pub use watch::{Position, SnapshotReason, Watch, WatchEvent, WatchItem, WatchOptions};
