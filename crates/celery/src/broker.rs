//! Connection to the Redis broker and the names of kombu's keys and channels on it.
use std::{sync::Arc, time::Duration};

use redis::{AsyncConnectionConfig, Client, aio::ConnectionManager, aio::ConnectionManagerConfig};
use tokio::sync::{Mutex, mpsc};

/// Why a broker call failed, in words that are safe to show (no URL, no password).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("broker refused authentication ({0})")]
    Auth(String),
    #[error("broker is loading its dataset")]
    Loading,
    #[error("broker error: {0}")]
    Other(String),
}

impl BrokerError {
    pub fn from_redis(err: &redis::RedisError, timeout: Duration) -> Self {
        match err.code() {
            Some("LOADING") => return BrokerError::Loading,
            Some("NOAUTH") => {
                return BrokerError::Auth(
                    "NOAUTH: a password is required and none was sent".into(),
                );
            }
            Some("WRONGPASS") => {
                return BrokerError::Auth("WRONGPASS: wrong user or password".into());
            }
            _ => {}
        }
        // redis-rs reports a refused AUTH at connect time (WRONGPASS, or a password sent to a
        // Redis that has none) without the server's code.
        if err.kind() == redis::ErrorKind::AuthenticationFailed {
            return BrokerError::Auth("AUTH refused: wrong user or password".into());
        }
        if err.is_timeout() {
            return BrokerError::Timeout(timeout);
        }
        if err.is_io_error() || err.is_connection_refusal() || err.is_connection_dropped() {
            return BrokerError::Unreachable(err.to_string());
        }
        BrokerError::Other(err.to_string())
    }

    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BrokerError::Unreachable(_) => "unreachable",
            BrokerError::Timeout(_) => "timeout",
            BrokerError::Auth(_) => "auth",
            BrokerError::Loading => "loading",
            BrokerError::Other(_) => "other",
        }
    }
}

/// Hides the password of a broker URL so that it can be logged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// The separator kombu puts between a queue name and its priority, and between the fields
/// of a binding.
pub const KOMBU_SEP: &str = "\x06\x16";
/// kombu's default priority steps: 0 is the queue's own list, the others are siblings.
pub const PRIORITY_STEPS: [u32; 4] = [0, 3, 6, 9];

/// Names of kombu's keys and channels for one virtual host (db index) and key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyNames {
    db: i64,
    prefix: String,
}

impl KeyNames {
    pub fn new(db: i64, prefix: impl Into<String>) -> Self {
        Self {
            db,
            prefix: prefix.into(),
        }
    }

    /// A key as kombu names it under `global_keyprefix`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The channel of a fanout exchange (`/{db}.{exchange}`), prefixed like a key.
    fn fanout_channel(&self, exchange: &str) -> String {
        self.key(&format!("/{}.{exchange}", self.db))
    }

    /// Where remote-control broadcasts are published.
    pub fn pidbox_channel(&self) -> String {
        self.fanout_channel("celery.pidbox")
    }

    /// Pattern that matches every Celery event channel.
    pub fn event_pattern(&self) -> String {
        format!("{}/*", self.fanout_channel("celeryev"))
    }

    /// The queue (Redis list) where workers push replies for one reply id.
    pub fn reply_queue_name(reply_id: &str) -> String {
        format!("{reply_id}.reply.celery.pidbox")
    }

    /// The binding set of the reply exchange; workers route replies through it.
    pub fn reply_binding_set(&self) -> String {
        self.key("_kombu.binding.reply.celery.pidbox")
    }

    /// A binding member: routing key, pattern (empty), queue name.
    pub fn binding_member(routing_key: &str, queue: &str) -> String {
        format!("{routing_key}{KOMBU_SEP}{KOMBU_SEP}{queue}")
    }

    /// The Redis list of a queue at one priority step (0 is the queue's own list).
    pub fn queue_list(&self, queue: &str, priority: u32) -> String {
        if priority == 0 {
            self.key(queue)
        } else {
            self.key(&format!("{queue}{KOMBU_SEP}{priority}"))
        }
    }
}

/// Everything needed to talk to the broker, validated from the config.
#[derive(Clone)]
pub struct BrokerSettings {
    pub client: Client,
    pub keys: KeyNames,
    pub timeout: Duration,
    /// The URL with its password hidden, for logs.
    pub display_url: String,
}

impl BrokerSettings {
    /// Validates the broker URL (only `redis://` and `rediss://`) and reads its db index.
    /// The error never contains the password.
    pub fn new(url: &str, global_keyprefix: &str, timeout: Duration) -> Result<Self, String> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err("only redis:// and rediss:// brokers are supported".into());
        }
        let client = Client::open(url).map_err(|e| e.to_string())?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(Self {
            client,
            keys: KeyNames::new(db, global_keyprefix),
            timeout,
            display_url: redact_url(url),
        })
    }
}

/// A shared, lazily connected, self-reconnecting connection to the broker.
///
/// warden must start while the broker is down, so the connection is made on first use and
/// retried on every later call until it succeeds.
#[derive(Clone)]
pub struct Broker {
    settings: BrokerSettings,
    manager: Arc<Mutex<Option<ConnectionManager>>>,
}

impl Broker {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            manager: Arc::new(Mutex::new(None)),
        }
    }

    pub fn keys(&self) -> &KeyNames {
        &self.settings.keys
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    pub fn display_url(&self) -> &str {
        &self.settings.display_url
    }

    /// The shared multiplexed connection (for short commands; never for blocking ones).
    pub async fn connection(&self) -> Result<ConnectionManager, BrokerError> {
        let mut slot = self.manager.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let timeout = self.settings.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(self.settings.client.clone(), config),
        )
        .await
        .map_err(|_| BrokerError::Timeout(timeout))?
        .map_err(|e| BrokerError::from_redis(&e, timeout))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A fresh connection of its own, for blocking commands (BRPOP) and pub/sub, whose
    /// responses may legitimately take longer than the command timeout.
    pub async fn dedicated_connection(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<redis::aio::MultiplexedConnection, BrokerError> {
        let timeout = self.settings.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(response_timeout);
        tokio::time::timeout(
            timeout,
            self.settings
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| BrokerError::Timeout(timeout))?
        .map_err(|e| BrokerError::from_redis(&e, timeout))
    }

    /// A RESP3 connection subscribed to `pattern`, whose messages arrive through a queue of
    /// `capacity`. When the queue is full a message is dropped and `on_overflow` called: warden
    /// falling behind costs counted events, never unbounded memory. Fails on Redis < 6 (no
    /// RESP3); see [`Broker::pubsub`] for that case.
    pub async fn subscribe_bounded(
        &self,
        pattern: &str,
        capacity: usize,
        on_overflow: impl Fn() + Send + Sync + 'static,
    ) -> Result<
        (
            redis::aio::MultiplexedConnection,
            mpsc::Receiver<redis::PushInfo>,
        ),
        BrokerError,
    > {
        let timeout = self.settings.timeout;
        let info = self.settings.client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(resp3))
            .map_err(|e| BrokerError::from_redis(&e, timeout))?;
        let (tx, rx) = mpsc::channel(capacity);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(move |push: redis::PushInfo| {
                tx.try_send(push).inspect_err(|_| on_overflow())
            });
        let mut conn = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| BrokerError::Timeout(timeout))?
        .map_err(|e| BrokerError::from_redis(&e, timeout))?;
        tokio::time::timeout(timeout, conn.psubscribe(pattern))
            .await
            .map_err(|_| BrokerError::Timeout(timeout))?
            .map_err(|e| BrokerError::from_redis(&e, timeout))?;
        Ok((conn, rx))
    }

    /// A RESP2 pub/sub connection of its own (for Redis < 6; the redis crate queues its
    /// messages without bound).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, BrokerError> {
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, self.settings.client.get_async_pubsub())
            .await
            .map_err(|_| BrokerError::Timeout(timeout))?
            .map_err(|e| BrokerError::from_redis(&e, timeout))
    }

    /// Runs one command on the shared connection. One deadline, the broker timeout, covers
    /// everything: waiting for the connection (another caller may be connecting), connecting,
    /// and the command.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, BrokerError> {
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| BrokerError::from_redis(&e, timeout))
        })
        .await
        .map_err(|_| BrokerError::Timeout(timeout))?
    }

    /// Runs a pipeline on the shared connection, under one deadline like [`Broker::query`].
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, BrokerError> {
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, async {
            let mut conn = self.connection().await?;
            pipe.query_async::<T>(&mut conn)
                .await
                .map_err(|e| BrokerError::from_redis(&e, timeout))
        })
        .await
        .map_err(|_| BrokerError::Timeout(timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/2"),
            "redis://:***@host:6379/2"
        );
        assert_eq!(redact_url("rediss://user:pw@h/0"), "rediss://user:***@h/0");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn key_names_follow_kombu() {
        let keys = KeyNames::new(3, "");
        assert_eq!(keys.pidbox_channel(), "/3.celery.pidbox");
        assert_eq!(keys.event_pattern(), "/3.celeryev/*");
        assert_eq!(keys.queue_list("celery", 0), "celery");
        assert_eq!(keys.queue_list("celery", 6), "celery\x06\x166");
        assert_eq!(
            KeyNames::binding_member("abc", "abc.reply.celery.pidbox"),
            "abc\x06\x16\x06\x16abc.reply.celery.pidbox"
        );
        let prefixed = KeyNames::new(0, "app:");
        assert_eq!(prefixed.queue_list("q", 3), "app:q\x06\x163");
        assert_eq!(
            prefixed.reply_binding_set(),
            "app:_kombu.binding.reply.celery.pidbox"
        );
    }

    /// The error redis-rs gives for a server reply such as `-NOAUTH ...`.
    fn server_error(reply: &str) -> redis::RedisError {
        redis::parse_redis_value(format!("{reply}\r\n").as_bytes())
            .and_then(redis::Value::extract_error)
            .unwrap_err()
    }

    #[test]
    fn refusals_are_classified_for_readiness() {
        let t = Duration::from_secs(1);
        let loading = server_error("-LOADING Redis is loading the dataset in memory");
        assert_eq!(BrokerError::from_redis(&loading, t), BrokerError::Loading);
        let noauth = BrokerError::from_redis(&server_error("-NOAUTH Authentication required."), t);
        assert_eq!(noauth.kind(), "auth");
        assert!(noauth.to_string().contains("NOAUTH"), "{noauth}");
        let wrongpass = BrokerError::from_redis(
            &server_error("-WRONGPASS invalid username-password pair or user is disabled."),
            t,
        );
        assert_eq!(wrongpass.kind(), "auth");
        assert!(wrongpass.to_string().contains("wrong user or password"));
        let refused = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(BrokerError::from_redis(&refused, t).kind(), "auth");
        let other = BrokerError::from_redis(&server_error("-ERR unknown command"), t);
        assert_eq!(other.kind(), "other");
    }

    #[test]
    fn db_index_is_read_from_the_url() {
        let settings =
            BrokerSettings::new("redis://:pw@127.0.0.1:1/5", "", Duration::from_secs(1)).unwrap();
        assert_eq!(settings.keys.pidbox_channel(), "/5.celery.pidbox");
        assert_eq!(settings.display_url, "redis://:***@127.0.0.1:1/5");
    }
}
