//! Following the worker pods as they change: a new pod, a container that ended (and why), a
//! pod that went away. Lets the fleet learn that an instance changed without polling.
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use warden_core::ports::PortError;

use crate::error::{Call, port_error};

/// One change to the set of worker pods.
#[derive(Debug, Clone)]
pub enum PodChange {
    /// The watch (re)started: the pods that follow, up to [`PodChange::Synced`], are the
    /// complete current set (forget pods not among them).
    Resync,
    /// A pod as it is now (added or changed), during a resync or after it.
    Applied(Box<Pod>),
    /// The resync is complete.
    Synced,
    /// The pod was deleted.
    Deleted(Box<Pod>),
}

/// Worker pods' changes. Errors are yielded (a failed list or watch) and the watch retries
/// with backoff; the stream ends only when dropped.
pub type PodChanges = Pin<Box<dyn Stream<Item = Result<PodChange, PortError>> + Send>>;

pub(crate) fn changes(api: kube::Api<Pod>, selector: &str, namespace: String) -> PodChanges {
    let mut config = watcher::Config::default();
    if !selector.is_empty() {
        config = config.labels(selector);
    }
    watcher(api, config)
        .default_backoff()
        .map(move |r| {
            r.map(|event| match event {
                watcher::Event::Init => PodChange::Resync,
                watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                    PodChange::Applied(Box::new(p))
                }
                watcher::Event::InitDone => PodChange::Synced,
                watcher::Event::Delete(p) => PodChange::Deleted(Box::new(p)),
            })
            .map_err(|e| {
                let call = Call {
                    verb: "watch",
                    resource: "pods",
                    name: "",
                    namespace: &namespace,
                };
                match e {
                    watcher::Error::InitialListFailed(e) => port_error(
                        Call {
                            verb: "list",
                            ..call
                        },
                        e,
                    ),
                    watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
                        port_error(call, e)
                    }
                    watcher::Error::WatchError(status) => {
                        port_error(call, kube::Error::Api(status))
                    }
                    other => PortError::Failed(format!("kubernetes: {call}: {other}")),
                }
            })
        })
        .boxed()
}
