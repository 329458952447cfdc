//! The Celery adapter: speaks kombu's protocol on a Redis broker, with no Python in warden.
//!
//! - `broker`: connection settings, key names (db index, `global_keyprefix`), error kinds;
//! - `envelope`: the kombu message envelope (decode and encode);
//! - `pidbox`: remote-control broadcasts and their replies;
//! - `inspect`: the typed replies of ping/stats/active/active_queues/registered;
//! - `poller`: the periodic and on-demand inspect rounds that feed the fleet;
//! - `probe`: broker connectivity, for readiness and staleness.
pub mod broker;
pub mod control;
pub mod envelope;
pub mod events;
pub mod inspect;
pub mod lock;
pub mod pidbox;
pub mod poller;
pub mod probe;
pub mod queues;

/// The scope of Celery workers' identity: node names are unique per broker, and warden
/// follows one broker.
pub const DEFAULT_SCOPE: &str = "default";
