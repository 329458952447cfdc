//! The Streams verbs the Control service serves (ReclaimPending, DiscardPending, RunJanitor):
//! one handle that connects to the streams' Redis on demand and bounds every call by the
//! configured timeout.
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::{
    janitor::{self, JanitorReport},
    pending::{self, DiscardRequest, Discarded, PendingError, ReclaimRequest, Reclaimed},
    poller::{PollError, StreamsSettings},
};

/// Why a Streams verb was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The stream or group does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No consumer can receive the entries.
    #[error("{0}")]
    NoLiveConsumer(String),
    /// The streams' Redis did not answer (in time).
    #[error("{0}")]
    Unavailable(String),
}

impl From<PendingError> for ControlError {
    fn from(e: PendingError) -> Self {
        match e {
            PendingError::NoStream(_) | PendingError::NoGroup { .. } => {
                Self::NotFound(e.to_string())
            }
            PendingError::NoLiveConsumer(m) => Self::NoLiveConsumer(m),
            PendingError::Redis(_) | PendingError::Reply(_) => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<PollError> for ControlError {
    fn from(e: PollError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A handle on the streams' Redis for the Control verbs.
#[derive(Clone)]
pub struct StreamsControl {
    client: redis::Client,
    settings: StreamsSettings,
}

impl StreamsControl {
    pub fn new(settings: StreamsSettings) -> Result<Self, String> {
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| e.to_string())?;
        Ok(Self { client, settings })
    }

    /// The configured consumer idle threshold of the janitor.
    pub fn consumer_idle(&self) -> Duration {
        self.settings.janitor.consumer_idle
    }

    /// Runs `f` on a fresh connection, the whole bounded by the configured timeout.
    async fn with<T, E, F>(&self, f: F) -> Result<T, ControlError>
    where
        E: Into<ControlError>,
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, E>,
    {
        let timeout = self.settings.timeout;
        let work = async {
            let mut con = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| ControlError::Unavailable(e.to_string()))?;
            f(&mut con).await.map_err(Into::into)
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(ControlError::Unavailable(format!(
                    "timed out after {timeout:?}"
                )))
            })
    }

    pub async fn reclaim(&self, req: &ReclaimRequest) -> Result<Reclaimed, ControlError> {
        let prefix = self.settings.heartbeat_prefix.clone();
        self.with(async |con: &mut MultiplexedConnection| pending::reclaim(con, &prefix, req).await)
            .await
    }

    pub async fn discard(&self, req: &DiscardRequest) -> Result<Discarded, ControlError> {
        let prefix = self.settings.heartbeat_prefix.clone();
        self.with(async |con: &mut MultiplexedConnection| pending::discard(con, &prefix, req).await)
            .await
    }

    /// One janitor pass over the watched streams now.
    pub async fn janitor(
        &self,
        consumer_idle: Duration,
        dry_run: bool,
    ) -> Result<JanitorReport, ControlError> {
        let s = &self.settings;
        self.with(async |con: &mut MultiplexedConnection| {
            janitor::pass(con, &s.streams, &s.heartbeat_prefix, consumer_idle, dry_run).await
        })
        .await
    }
}
