//! Opt-in auto-reclaim: every [`AUTO_RECLAIM_EVERY`], ReclaimPending's logic for every group of
//! every watched stream, with the same safety: only entries of consumers with no live heartbeat,
//! idle at least the floor ([`crate::pending::RECLAIM_MIN_IDLE`]), moved to a live consumer
//! (the one with the fewest pending), the check and the move one Lua script. Each move is
//! audited and journaled; a group with no live consumer is left alone until one appears.
use std::time::{Duration, SystemTime};

use redis::{Value, aio::MultiplexedConnection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warden_core::{
    history::{ATTR_ACTION, AttrValue, EventKind, HistoryEvent, Severity},
    journal::Journal,
};

use crate::{
    pending::{self, PendingError, RECLAIM_MIN_IDLE, ReclaimRequest, Reclaimed},
    poller::{PollError, StreamsSettings, fields, items, number, resolve, text},
};

/// How often auto-reclaim runs.
pub const AUTO_RECLAIM_EVERY: Duration = Duration::from_secs(10);
/// Most entries moved per group and run (the rest at the next run).
pub const AUTO_RECLAIM_MAX_ENTRIES: usize = 1000;
/// [`ATTR_ACTION`] of an automatic reclaim in history.
pub const ACTION_AUTO_RECLAIM: &str = "auto_reclaim";

/// The groups (stream, group) of the watched streams that have pending entries.
async fn groups_with_pending(
    con: &mut MultiplexedConnection,
    patterns: &[String],
) -> Result<Vec<(String, String)>, PollError> {
    let streams = resolve(con, patterns).await?;
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for s in &streams {
        pipe.cmd("XINFO").arg("GROUPS").arg(s);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    let mut out = Vec::new();
    for (s, reply) in streams.iter().zip(&replies) {
        for g in items(reply) {
            let f = fields(g);
            let pending = f.get("pending").and_then(|v| number(v)).unwrap_or(0);
            if let (Some(name), true) = (f.get("name").and_then(|v| text(v)), pending > 0) {
                out.push((s.clone(), name));
            }
        }
    }
    Ok(out)
}

/// One run: every group with pending entries, reclaimed. Returns what moved, per group.
pub async fn run_once(
    con: &mut MultiplexedConnection,
    settings: &StreamsSettings,
) -> Result<Vec<(ReclaimRequest, Reclaimed)>, PollError> {
    let mut moved = Vec::new();
    for (stream, group) in groups_with_pending(con, &settings.streams).await? {
        let req = ReclaimRequest {
            stream,
            group,
            from: Vec::new(),
            to: None,
            min_idle: RECLAIM_MIN_IDLE,
            max_entries: AUTO_RECLAIM_MAX_ENTRIES,
            dry_run: false,
        };
        match pending::reclaim(con, &settings.heartbeat_prefix, &req).await {
            Ok(r) if !r.entries.is_empty() => moved.push((req, r)),
            Ok(_) => {}
            Err(PendingError::NoLiveConsumer(m)) => debug!(%m, "auto-reclaim: nobody to receive"),
            // Deleted since it was listed: nothing to do.
            Err(PendingError::NoStream(_) | PendingError::NoGroup { .. }) => {}
            Err(PendingError::Redis(e)) => return Err(PollError::Redis(e)),
            Err(e) => {
                warn!(stream = %req.stream, group = %req.group, error = %e, "auto-reclaim failed")
            }
        }
    }
    Ok(moved)
}

/// The history event of one group's move.
pub fn event(req: &ReclaimRequest, r: &Reclaimed, at: SystemTime) -> HistoryEvent {
    let string = |s: &str| AttrValue::String(s.to_string());
    let mut from: Vec<&str> = r.entries.iter().map(|e| e.consumer.as_str()).collect();
    from.sort_unstable();
    from.dedup();
    let scope = crate::scope_of(&req.stream, &req.group);
    HistoryEvent {
        at,
        kind: EventKind::Control,
        severity: Severity::Info,
        worker: None,
        group: Some(scope),
        message: format!(
            "auto-reclaim moved {} pending entries of stream {} group {} from {} to {}",
            r.entries.len(),
            req.stream,
            req.group,
            from.join(", "),
            r.to
        ),
        attributes: vec![
            (ATTR_ACTION.into(), string(ACTION_AUTO_RECLAIM)),
            ("actor".into(), string("auto-reclaim")),
            ("stream".into(), string(&req.stream)),
            ("group".into(), string(&req.group)),
            ("from".into(), string(&from.join(","))),
            ("to".into(), string(&r.to)),
            (
                "entries".into(),
                AttrValue::Int(i64::try_from(r.entries.len()).unwrap_or(i64::MAX)),
            ),
        ],
    }
}

/// Runs auto-reclaim every [`AUTO_RECLAIM_EVERY`] until `cancel` (only when
/// `settings.auto_reclaim`). Failures are logged and retried at the next run.
pub async fn run(settings: StreamsSettings, journal: Journal, cancel: CancellationToken) {
    if !settings.auto_reclaim {
        return;
    }
    let client = match redis::Client::open(settings.redis_url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "streams auto-reclaim: invalid Redis URL; it is off");
            return;
        }
    };
    let mut tick = warden_core::clock::ticker(AUTO_RECLAIM_EVERY);
    let mut con: Option<MultiplexedConnection> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let attempt = async {
            if con.is_none() {
                con = Some(client.get_multiplexed_async_connection().await?);
            }
            run_once(con.as_mut().expect("connected"), &settings).await
        };
        // A run is bounded like a poll: what did not finish is retried at the next one.
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(settings.timeout.max(AUTO_RECLAIM_EVERY / 2), attempt) => r,
        };
        match result {
            Ok(Ok(moved)) => {
                for (req, r) in moved {
                    info!(
                        target: "warden::audit",
                        actor = "auto-reclaim",
                        action = "streams.auto_reclaim",
                        stream = %req.stream,
                        group = %req.group,
                        to = %r.to,
                        entries = r.entries.len(),
                        "auto-reclaim"
                    );
                    journal.record(event(&req, &r, SystemTime::now()));
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "streams auto-reclaim: run failed");
                con = None;
            }
            Err(_) => {
                warn!("streams auto-reclaim: run timed out");
                con = None;
            }
        }
    }
}
