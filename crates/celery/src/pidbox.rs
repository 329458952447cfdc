//! Celery remote control ("pidbox") over Redis: publish broadcasts, gather the replies.
//!
//! One round binds a fresh reply queue, publishes every command of the round with its own
//! ticket, then pops replies until the timeout and matches them to commands by ticket. Late
//! replies from earlier rounds carry other tickets and are ignored.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span};

use super::{
    broker::{Broker, BrokerError, KOMBU_SEP, KeyNames},
    envelope,
};
use warden_metrics::Metrics;

/// The exchange workers reply through.
const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// How far kombu 5.7 pushes a binding's deadline (one hour).
const BINDING_TTL: Duration = Duration::from_secs(3600);

/// One remote-control command.
#[derive(Debug, Clone)]
pub struct Command {
    pub method: &'static str,
    pub arguments: Value,
}

impl Command {
    pub fn new(method: &'static str) -> Self {
        Self {
            method,
            arguments: json!({}),
        }
    }
}

/// A reply from one worker to one command of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Index of the command in the round.
    pub command: usize,
    /// The worker's node name.
    pub node: String,
    pub value: Value,
}

/// Remote control on one broker.
#[derive(Clone)]
pub struct Pidbox {
    broker: Broker,
    metrics: Metrics,
}

impl Pidbox {
    pub fn new(broker: Broker, metrics: Metrics) -> Self {
        Self { broker, metrics }
    }

    /// Publishes a command that expects no reply (e.g. `enable_events`).
    pub async fn cast(
        &self,
        command: &Command,
        destination: Option<&[String]>,
    ) -> Result<(), BrokerError> {
        let body = message_body(
            command,
            destination,
            &uuid::Uuid::new_v4().to_string(),
            None,
        );
        self.publish(&body, Duration::from_secs(10)).await
    }

    /// Broadcasts `commands` (to `destination` nodes only, or to all) and gathers replies for
    /// `timeout`, or until `limit` replies have arrived.
    pub async fn broadcast(
        &self,
        commands: &[Command],
        destination: Option<&[String]>,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<Reply>, BrokerError> {
        let reply_id = uuid::Uuid::new_v4().to_string();
        let span = info_span!("broker.broadcast", reply_id = %reply_id, commands = commands.len());
        async {
            let reply_queue = KeyNames::reply_queue_name(&reply_id);
            let keys = self.broker.keys();
            let binding_set = keys.reply_binding_set();
            let member = KeyNames::binding_member(&reply_id, &reply_queue);
            // The deadline first: a kombu 5.7 sweeper deletes a binding set whose deadline
            // passed, and would take our fresh binding with it.
            self.extend_binding_deadline().await;
            // Workers route a reply through this binding, so it must exist before we publish.
            let bound = self
                .broker
                .query::<()>(redis::cmd("SADD").arg(&binding_set).arg(&member))
                .await;
            let result = match bound {
                Ok(()) => {
                    let tickets: Vec<String> = commands
                        .iter()
                        .map(|_| uuid::Uuid::new_v4().to_string())
                        .collect();
                    self.publish_and_collect(
                        commands,
                        destination,
                        timeout,
                        limit,
                        &reply_id,
                        &tickets,
                    )
                    .await
                }
                Err(err) => Err(err),
            };
            // Unbind and drop the queue, so that late replies are discarded by the workers.
            // Also after a failed SADD: a SADD that timed out may still run once a stalled
            // broker wakes up, and this SREM, sent after it on the same connection, undoes it.
            let lists = reply_lists(&keys.key(&reply_queue));
            let mut cleanup = redis::pipe();
            cleanup.cmd("SREM").arg(&binding_set).arg(&member).ignore();
            cleanup.cmd("DEL").arg(&lists).ignore();
            if let Err(err) = self.broker.query_pipe::<()>(&cleanup).await {
                debug!(%err, "could not clean up reply queue");
            }
            result
        }
        .instrument(span)
        .await
    }

    /// kombu 5.7 clients and workers delete a whole binding set once its deadline in
    /// `_kombu.binding_deadlines` has passed; pushing the deadline out (as kombu 5.7 does
    /// before each broadcast) keeps our binding alive. Done before the SADD, so that a sweep
    /// between the two cannot remove the binding (kombu 5.7 does both in one script; the
    /// order gives the same guarantee while the clocks of warden and Redis agree within the
    /// hour the deadline is pushed). Redis < 6.2 has no `ZADD GT`, and kombu
    /// < 5.7 no deadlines: there, failing is harmless.
    async fn extend_binding_deadline(&self) {
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            + BINDING_TTL.as_millis();
        let zadd = redis::cmd("ZADD")
            .arg(self.broker.keys().key("_kombu.binding_deadlines"))
            .arg("GT")
            .arg(deadline_ms as u64)
            .arg(REPLY_EXCHANGE)
            .clone();
        if let Err(err) = self.broker.query::<i64>(&zadd).await {
            debug!(%err, "binding deadline not extended");
        }
    }

    async fn publish_and_collect(
        &self,
        commands: &[Command],
        destination: Option<&[String]>,
        timeout: Duration,
        limit: Option<usize>,
        reply_id: &str,
        tickets: &[String],
    ) -> Result<Vec<Reply>, BrokerError> {
        // Connect the collecting connection before publishing so that no reply waits on us.
        let mut conn = self.broker.dedicated_connection(None).await?;
        for (command, ticket) in commands.iter().zip(tickets) {
            let body = message_body(command, destination, ticket, Some(reply_id));
            self.publish(&body, timeout).await?;
        }
        let lists = reply_lists(
            &self
                .broker
                .keys()
                .key(&KeyNames::reply_queue_name(reply_id)),
        );
        let deadline = Instant::now() + timeout;
        let mut replies = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < Duration::from_millis(1) || limit.is_some_and(|l| replies.len() >= l) {
                break;
            }
            let popped: Option<(String, Vec<u8>)> = tokio::time::timeout(
                remaining + self.broker.timeout(),
                redis::cmd("BRPOP")
                    .arg(&lists)
                    .arg(remaining.as_secs_f64())
                    .query_async(&mut conn),
            )
            .await
            .map_err(|_| BrokerError::Timeout(remaining + self.broker.timeout()))?
            .map_err(|e| BrokerError::from_redis(&e, self.broker.timeout()))?;
            let Some((_, payload)) = popped else { break };
            match parse_reply(&payload, tickets) {
                Ok(Some(reply)) => replies.extend(reply),
                Ok(None) => self
                    .metrics
                    .message_rejected("pidbox_reply", "stale_ticket"),
                Err(reason) => {
                    debug!(reason, "malformed pidbox reply skipped");
                    self.metrics.message_rejected("pidbox_reply", reason);
                }
            }
        }
        Ok(replies)
    }

    async fn publish(&self, body: &Value, ttl: Duration) -> Result<(), BrokerError> {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            + ttl.as_secs_f64();
        let message = envelope::encode(
            body,
            json!({"clock": 1, "expires": expires}),
            "celery.pidbox",
            "",
            2,
        );
        let channel = self.broker.keys().pidbox_channel();
        self.broker
            .query::<i64>(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
            .map(drop)
    }
}

/// The reply list and its priority siblings, which kombu's BRPOP also watches.
fn reply_lists(queue_key: &str) -> Vec<String> {
    let mut lists = vec![queue_key.to_string()];
    lists.extend([3, 6, 9].map(|p| format!("{queue_key}{KOMBU_SEP}{p}")));
    lists
}

fn message_body(
    command: &Command,
    destination: Option<&[String]>,
    ticket: &str,
    reply_id: Option<&str>,
) -> Value {
    json!({
        "method": command.method,
        "arguments": command.arguments,
        "destination": destination,
        "pattern": null,
        "matcher": null,
        "ticket": ticket,
        "reply_to": reply_id.map(|id| json!({"exchange": REPLY_EXCHANGE, "routing_key": id})),
    })
}

/// Decodes one reply envelope: `Ok(None)` for a reply to another round's ticket.
fn parse_reply(payload: &[u8], tickets: &[String]) -> Result<Option<Vec<Reply>>, &'static str> {
    let envelope = envelope::decode(payload).map_err(|e| e.reason())?;
    let Some(ticket) = envelope.headers.get("ticket").and_then(Value::as_str) else {
        return Err("missing_ticket");
    };
    let Some(command) = tickets.iter().position(|t| t == ticket) else {
        return Ok(None);
    };
    let Value::Object(by_node) = envelope.body else {
        return Err("reply_not_object");
    };
    // A worker replies `{its node name: value}` (kombu `Node.reply`, every version): one
    // envelope speaking for several nodes, or for none, is not a worker's reply, and would
    // let one message invent any number of workers.
    if by_node.len() != 1 {
        return Err("reply_node_count");
    }
    let Some((node, value)) = by_node.into_iter().next() else {
        return Err("reply_node_count");
    };
    if !valid_node_name(&node) {
        return Err("reply_node_name");
    }
    Ok(Some(vec![Reply {
        command,
        node,
        value,
    }]))
}

/// Longest node name accepted (Celery's are `name@hostname`; a DNS name is at most 253).
const MAX_NODE_NAME_BYTES: usize = 512;

/// A node name warden will list: not empty, bounded, no control characters.
pub(crate) fn valid_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME_BYTES && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_matched_by_ticket() {
        let tickets = vec!["a".to_string(), "b".to_string()];
        let payload = envelope::encode(
            &json!({"w1@h": {"ok": "pong"}}),
            json!({"ticket": "b"}),
            "reply.celery.pidbox",
            "x",
            1,
        );
        let replies = parse_reply(payload.as_bytes(), &tickets).unwrap().unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].command, 1);
        assert_eq!(replies[0].node, "w1@h");

        let stale = envelope::encode(&json!({}), json!({"ticket": "zzz"}), "", "", 1);
        assert_eq!(parse_reply(stale.as_bytes(), &tickets).unwrap(), None);
        let no_ticket = envelope::encode(&json!({}), json!({}), "", "", 1);
        assert_eq!(
            parse_reply(no_ticket.as_bytes(), &tickets),
            Err("missing_ticket")
        );
        let not_object = envelope::encode(&json!([1]), json!({"ticket": "a"}), "", "", 1);
        assert_eq!(
            parse_reply(not_object.as_bytes(), &tickets),
            Err("reply_not_object")
        );
    }

    #[test]
    fn a_reply_speaks_for_exactly_one_well_named_node() {
        let tickets = vec!["a".to_string()];
        let reply = |body: Value| {
            let payload = envelope::encode(&body, json!({"ticket": "a"}), "", "", 1);
            parse_reply(payload.as_bytes(), &tickets)
        };
        let many: serde_json::Map<String, Value> = (0..10_000)
            .map(|i| (format!("fake{i}@h"), json!({"ok": "pong"})))
            .collect();
        assert_eq!(reply(Value::Object(many)), Err("reply_node_count"));
        assert_eq!(reply(json!({})), Err("reply_node_count"));
        for name in [
            String::new(),
            "w@h\n[fake log line]".to_string(),
            "w\u{0}@h".to_string(),
            format!("w@{}", "h".repeat(MAX_NODE_NAME_BYTES)),
        ] {
            assert_eq!(
                reply(json!({ name.clone(): {"ok": "pong"} })),
                Err("reply_node_name"),
                "{name:?}"
            );
        }
        let ok = reply(json!({"celery@worker-7.example.com": {"ok": "pong"}}))
            .unwrap()
            .unwrap();
        assert_eq!(ok[0].node, "celery@worker-7.example.com");
    }

    #[test]
    fn broadcast_body_matches_celery() {
        let names = vec!["w1@h".to_string()];
        let body = message_body(&Command::new("ping"), Some(&names), "t", Some("r"));
        assert_eq!(body["destination"], json!(["w1@h"]));
        assert_eq!(body["reply_to"]["exchange"], "reply.celery.pidbox");
        assert_eq!(body["reply_to"]["routing_key"], "r");
        let cast = message_body(&Command::new("enable_events"), None, "t", None);
        assert_eq!(cast["destination"], Value::Null);
        assert_eq!(cast["reply_to"], Value::Null);
    }
}
