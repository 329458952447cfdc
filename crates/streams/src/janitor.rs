//! The janitor: trims each watched stream below the oldest entry any consumer group still needs
//! (`XTRIM MINID`), and deletes consumers that are gone for good (`XGROUP DELCONSUMER`).
//!
//! Both decisions are taken *inside* Redis by a Lua script, so that nothing can change between
//! the reading of a group's state and the action: a consumer that reads (and so holds pending
//! entries) the instant before its deletion, or a group created the instant before a trim, is
//! seen by the script. A poll-then-act janitor would lose messages in exactly those races.
//!
//! Safety rules, which the property test in `tests/it/streams_janitor.rs` checks against a real
//! Redis over random interleavings:
//! - the trim bound is the minimum, over **every** group of the stream (watched or not), of the
//!   group's smallest pending id and the id just after its last-delivered id: nothing pending and
//!   nothing undelivered is ever below it. A stream with no group is never trimmed.
//! - a consumer is deleted only when it has no live heartbeat key, no pending entries, and has
//!   been idle at least the threshold — all three, checked atomically.
use std::time::{Duration, SystemTime};

use redis::{Value, aio::MultiplexedConnection};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warden_core::{
    Backend, WorkerKey,
    history::{ATTR_ACTION, AttrValue, EventKind, HistoryEvent, Severity},
    journal::Journal,
};

use crate::poller::{PollError, StreamsSettings, fields, items, number, resolve, text};

/// A dry run counts at most this many entries per stream (a real trim counts them all).
pub const DRY_RUN_COUNT_CAP: u64 = 10_000;

/// Computes a stream's trim bound and trims (or, in a dry run, counts) the entries below it.
/// KEYS[1] = stream; ARGV[1] = "1" for a dry run; ARGV[2] = the dry-run count cap.
/// Returns {bound or "", entries trimmed or counted}.
const TRIM_SCRIPT: &str = r#"
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, seq
end
-- Decimal strings without leading zeros compare by length, then lexically.
local function num_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_lt(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  if am ~= bm then return num_lt(am, bm) end
  return num_lt(as, bs)
end
local function incr(s)
  local d = {}
  for i = 1, #s do d[i] = string.byte(s, i) - 48 end
  local i = #s
  while i >= 1 do
    if d[i] < 9 then d[i] = d[i] + 1; break end
    d[i] = 0
    i = i - 1
  end
  local out = {}
  if i == 0 then out[1] = '1' end
  for j = 1, #s do out[#out + 1] = string.char(d[j] + 48) end
  return table.concat(out)
end
local function successor(id)
  local ms, seq = parts(id)
  if seq == '18446744073709551615' then return incr(ms) .. '-0' end
  return ms .. '-' .. incr(seq)
end
local t = redis.call('TYPE', KEYS[1])
if (t.ok or t) ~= 'stream' then return {'', 0} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local bound = nil
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local b = successor(f['last-delivered-id'])
  local summary = redis.call('XPENDING', KEYS[1], f['name'])
  if summary[1] > 0 and id_lt(summary[2], b) then b = summary[2] end
  if bound == nil or id_lt(b, bound) then bound = b end
end
if bound == nil then return {'', 0} end
if ARGV[1] == '1' then
  local below = redis.call('XRANGE', KEYS[1], '-', '(' .. bound, 'COUNT', tonumber(ARGV[2]))
  return {bound, #below}
end
return {bound, redis.call('XTRIM', KEYS[1], 'MINID', '=', bound)}
"#;

/// Deletes one consumer if, and only if, it has no heartbeat key, no pending entries and has been
/// idle at least the threshold. KEYS[1] = stream, KEYS[2] = its heartbeat key; ARGV = group,
/// consumer, threshold in ms, "1" for a dry run. Returns what it found (see [`Verdict`]).
const DELETE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'heartbeat' end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers.err then return 'gone' end
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] == ARGV[2] then
    if f['pending'] > 0 then return 'pending' end
    if f['idle'] < tonumber(ARGV[3]) then return 'active' end
    if ARGV[4] ~= '1' then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
    return 'deleted'
  end
end
return 'gone'
"#;

/// What the janitor does, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanitorSettings {
    /// How often a pass runs; `None` turns the periodic janitor off (RunJanitor still works).
    pub interval: Option<Duration>,
    /// A consumer idle at least this long, with no heartbeat and nothing pending, is deleted.
    pub consumer_idle: Duration,
}

/// One stream's trim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    pub stream: String,
    /// The smallest id any group still needs; `None` when the stream has no group (not trimmed).
    pub bound: Option<String>,
    /// Entries removed (in a dry run: entries below the bound, at most [`DRY_RUN_COUNT_CAP`]).
    pub entries: u64,
}

/// A consumer the janitor deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleConsumer {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    /// Its idle time as the candidate list saw it.
    pub idle: Duration,
}

/// What one pass did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JanitorReport {
    pub dry_run: bool,
    pub trims: Vec<Trim>,
    pub deleted: Vec<StaleConsumer>,
}

/// One pass over the streams matching `patterns`: every stream trimmed at its safe bound, every
/// consumer with no heartbeat, nothing pending and idle ≥ `consumer_idle` deleted. A dry run
/// changes nothing and reports what a pass would do now. Round trips: the SCANs, one pipeline of
/// trims and group lists, one of consumer lists, one of deletions.
pub async fn pass(
    con: &mut MultiplexedConnection,
    patterns: &[String],
    heartbeat_prefix: &str,
    consumer_idle: Duration,
    dry_run: bool,
) -> Result<JanitorReport, PollError> {
    let streams = resolve(con, patterns).await?;
    let mut report = JanitorReport {
        dry_run,
        ..JanitorReport::default()
    };
    if streams.is_empty() {
        return Ok(report);
    }
    let flag = if dry_run { "1" } else { "0" };

    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for s in &streams {
        pipe.cmd("EVAL")
            .arg(TRIM_SCRIPT)
            .arg(1)
            .arg(s)
            .arg(flag)
            .arg(DRY_RUN_COUNT_CAP)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(s);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    let mut groups = Vec::new();
    for (s, pair) in streams.iter().zip(replies.chunks_exact(2)) {
        match &pair[0] {
            Value::ServerError(e) => warn!(stream = %s, error = ?e, "janitor: trim failed"),
            v => {
                let r = items(v);
                let bound = r.first().and_then(text).filter(|b| !b.is_empty());
                report.trims.push(Trim {
                    stream: s.clone(),
                    entries: r.get(1).and_then(number).unwrap_or(0),
                    bound,
                });
            }
        }
        for g in items(&pair[1]) {
            if let Some(name) = fields(g).get("name").and_then(|v| text(v)) {
                groups.push((s.clone(), name));
            }
        }
    }
    if groups.is_empty() {
        return Ok(report);
    }

    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (s, g) in &groups {
        pipe.cmd("XINFO").arg("CONSUMERS").arg(s).arg(g);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    // Candidates by what the list shows; the script decides again, atomically.
    let mut candidates = Vec::new();
    for ((s, g), reply) in groups.iter().zip(&replies) {
        for c in items(reply) {
            let f = fields(c);
            let (Some(name), Some(pending), Some(idle)) = (
                f.get("name").and_then(|v| text(v)),
                f.get("pending").and_then(|v| number(v)),
                f.get("idle").and_then(|v| number(v)),
            ) else {
                continue;
            };
            let idle = Duration::from_millis(idle);
            if pending == 0 && idle >= consumer_idle {
                candidates.push(StaleConsumer {
                    stream: s.clone(),
                    group: g.clone(),
                    consumer: name,
                    idle,
                });
            }
        }
    }
    if candidates.is_empty() {
        return Ok(report);
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for c in &candidates {
        pipe.cmd("EVAL")
            .arg(DELETE_SCRIPT)
            .arg(2)
            .arg(&c.stream)
            .arg(format!("{heartbeat_prefix}{}:{}", c.stream, c.consumer))
            .arg(&c.group)
            .arg(&c.consumer)
            .arg(u64::try_from(consumer_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(flag);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    for (c, reply) in candidates.into_iter().zip(&replies) {
        if text(reply).as_deref() == Some("deleted") {
            report.deleted.push(c);
        }
    }
    Ok(report)
}

/// Writes each action of a pass to the audit trail (`warden::audit`), as the control calls are.
pub fn audit(report: &JanitorReport, actor: &str) {
    for t in report.trims.iter().filter(|t| t.entries > 0) {
        info!(
            target: "warden::audit",
            actor,
            action = "streams.janitor.trim",
            stream = %t.stream,
            bound = t.bound.as_deref().unwrap_or_default(),
            entries = t.entries,
            dry_run = report.dry_run,
            "janitor"
        );
    }
    for c in &report.deleted {
        info!(
            target: "warden::audit",
            actor,
            action = "streams.janitor.delete_consumer",
            stream = %c.stream,
            group = %c.group,
            consumer = %c.consumer,
            idle_ms = u64::try_from(c.idle.as_millis()).unwrap_or(u64::MAX),
            dry_run = report.dry_run,
            "janitor"
        );
    }
}

/// [`ATTR_ACTION`] of a trim in history.
pub const ACTION_TRIM: &str = "janitor_trim";
/// [`ATTR_ACTION`] of a consumer deletion in history.
pub const ACTION_DELETE_CONSUMER: &str = "janitor_delete_consumer";

/// The history events of a pass that changed something (a dry run records nothing): one
/// control event per trim that removed entries and per consumer deleted, so that what the
/// janitor did is found beside what operators did.
pub fn events(report: &JanitorReport, at: SystemTime) -> Vec<HistoryEvent> {
    if report.dry_run {
        return Vec::new();
    }
    let string = |s: &str| AttrValue::String(s.to_string());
    let count = |n: u64| AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let trims = report
        .trims
        .iter()
        .filter(|t| t.entries > 0)
        .map(|t| HistoryEvent {
            at,
            kind: EventKind::Control,
            severity: Severity::Info,
            worker: None,
            group: None,
            message: format!(
                "janitor trimmed {} entries of stream {} (below {})",
                t.entries,
                t.stream,
                t.bound.as_deref().unwrap_or_default()
            ),
            attributes: vec![
                (ATTR_ACTION.into(), string(ACTION_TRIM)),
                ("actor".into(), string("janitor")),
                ("stream".into(), string(&t.stream)),
                (
                    "bound".into(),
                    string(t.bound.as_deref().unwrap_or_default()),
                ),
                ("entries".into(), count(t.entries)),
            ],
        });
    let deletions = report.deleted.iter().map(|c| {
        let scope = crate::scope_of(&c.stream, &c.group);
        HistoryEvent {
            at,
            kind: EventKind::Control,
            severity: Severity::Info,
            worker: Some(WorkerKey::new(
                Backend::RedisStreams,
                scope.as_str(),
                c.consumer.as_str(),
            )),
            group: Some(scope.clone()),
            message: format!(
                "janitor deleted consumer {} of stream {} group {} (idle {:?}, nothing pending, no heartbeat)",
                c.consumer, c.stream, c.group, c.idle
            ),
            attributes: vec![
                (ATTR_ACTION.into(), string(ACTION_DELETE_CONSUMER)),
                ("actor".into(), string("janitor")),
                ("stream".into(), string(&c.stream)),
                ("group".into(), string(&c.group)),
                ("consumer".into(), string(&c.consumer)),
                ("entries".into(), count(0)),
                ("idle".into(), AttrValue::Duration(c.idle)),
            ],
        }
    });
    trims.chain(deletions).collect()
}

/// Runs a pass every `settings.janitor.interval` until `cancel`. Failures are logged and retried at the
/// next interval; the poller reports the source's health.
/// Each action is audited and journaled (history events, when a store is configured).
pub async fn run(settings: StreamsSettings, journal: Journal, cancel: CancellationToken) {
    let Some(interval) = settings.janitor.interval else {
        return;
    };
    let client = match redis::Client::open(settings.redis_url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "streams janitor: invalid Redis URL; the janitor is off");
            return;
        }
    };
    let mut tick = warden_core::clock::ticker(interval);
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
            let con = con.as_mut().expect("connected");
            pass(
                con,
                &settings.streams,
                &settings.heartbeat_prefix,
                settings.janitor.consumer_idle,
                false,
            )
            .await
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(settings.timeout, attempt) => r,
        };
        match result {
            Ok(Ok(report)) => {
                audit(&report, "janitor");
                for event in events(&report, SystemTime::now()) {
                    journal.record(event);
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "streams janitor: pass failed");
                con = None;
            }
            Err(_) => {
                warn!(timeout = ?settings.timeout, "streams janitor: pass timed out");
                con = None;
            }
        }
    }
}
