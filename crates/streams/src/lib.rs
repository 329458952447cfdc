//! The Redis Streams adapter: every consumer of the watched streams' consumer groups is a
//! worker (`WorkerKey { backend: RedisStreams, scope: "{stream}:{group}", id: consumer }`,
//! stream and group percent-encoded), discovered from `XINFO CONSUMERS` and from the heartbeat
//! key protocol (`{heartbeat_prefix}{stream}:{consumer}`, a shutdown marker
//! `{shutdown_prefix}{stream}:{consumer}` on a clean exit). Each stream and group is a queue.
//! One poll is a handful of pipelined round trips; the core decides lifecycles from it.
pub mod control;
pub mod heartbeat;
pub mod janitor;
pub mod pending;
pub mod poller;
pub mod reclaimer;

pub use poller::{StreamsSettings, run};

/// The name of the Streams source in `SourceStatus`.
pub const SOURCE: &str = "streams";

/// The scope (and worker group, and queue name) of a stream's consumer group.
pub fn scope_of(stream: &str, group: &str) -> String {
    format!(
        "{}:{}",
        warden_core::percent_encode(stream),
        warden_core::percent_encode(group)
    )
}

/// Whether `url` is a Redis URL the adapter can connect with.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| e.to_string())
}
