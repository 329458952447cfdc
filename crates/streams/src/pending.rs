//! Pending entries of dead consumers: reclaimed by a live consumer (`XCLAIM`, so they are
//! retried), or, for poison messages, discarded (`XACK` + `XDEL`, then the emptied consumer is
//! deleted).
//!
//! "Dead" is "no live heartbeat key", and it is checked in the same Lua script that moves or
//! discards the entries: a consumer that heartbeats again between the listing and the action
//! keeps its entries. Only entries idle at least the floor are touched (`XPENDING ... IDLE`).
use std::{collections::BTreeMap, time::Duration};

use redis::{Value, aio::MultiplexedConnection};

use crate::poller::{fields, items, number, text};

/// ReclaimPending's per-stream floor: entries idle less than this are being worked on.
pub const RECLAIM_MIN_IDLE: Duration = Duration::from_secs(30);

/// Most entries one script call lists or moves (Lua's `unpack` has a stack limit).
const CHUNK: usize = 500;

/// Moves one dead consumer's idle pending entries to another consumer.
/// KEYS[1] = stream, KEYS[2] = the dead consumer's heartbeat key; ARGV = group, from, to,
/// min idle ms, how many to take, "1" for a dry run. Returns {status, entries, more}: status
/// "heartbeat" (alive: nothing done) or "ok"; entries as XPENDING lists them (those really
/// claimed, unless a dry run); more = 1 when further entries qualified.
const RECLAIM_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {'heartbeat', {}, 0} end
local want = tonumber(ARGV[5])
local list = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], '-', '+', want + 1, ARGV[2])
local more = 0
if #list > want then more = 1; table.remove(list) end
if ARGV[6] == '1' or #list == 0 then return {'ok', list, more} end
local claimed = {}
local i = 1
while i <= #list do
  local ids = {}
  for j = i, math.min(i + 499, #list) do ids[#ids + 1] = list[j][1] end
  local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], ARGV[4], unpack(ids))
  for _, e in ipairs(got) do
    if type(e) == 'table' then claimed[e[1]] = true end
  end
  i = i + 500
end
local out = {}
for _, e in ipairs(list) do if claimed[e[1]] then out[#out + 1] = e end end
return {'ok', out, more}
"#;

/// Acknowledges and deletes one dead consumer's idle pending entries, then deletes the consumer
/// if nothing is left pending for it. KEYS[1] = stream, KEYS[2] = heartbeat key; ARGV = group,
/// consumer, min idle ms, how many to take, "1" for a dry run, then the entry ids to restrict to
/// (none: every qualifying entry). Returns {status, entries, more, consumer deleted (0/1)}.
const DISCARD_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {'heartbeat', {}, 0, 0} end
local want = tonumber(ARGV[4])
local list = {}
if #ARGV > 5 then
  for k = 6, #ARGV do
    local e = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[k], ARGV[k], 1, ARGV[2])
    if #e == 1 then list[#list + 1] = e[1] end
  end
else
  list = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', want + 1, ARGV[2])
end
local more = 0
while #list > want do more = 1; table.remove(list) end
local held = 0
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
for _, c in ipairs(summary[4] or {}) do
  if c[1] == ARGV[2] then held = tonumber(c[2]) end
end
local empties = (held == #list) and 1 or 0
if ARGV[5] == '1' then return {'ok', list, more, empties} end
local i = 1
while i <= #list do
  local ids = {}
  for j = i, math.min(i + 499, #list) do ids[#ids + 1] = list[j][1] end
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
  i = i + 500
end
if empties == 1 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return {'ok', list, more, empties}
"#;

/// One pending entry, with its state before the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub id: String,
    pub consumer: String,
    pub idle: Duration,
    pub deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("no stream {0:?}")]
    NoStream(String),
    #[error("stream {stream:?} has no consumer group {group:?}")]
    NoGroup { stream: String, group: String },
    #[error("{0}")]
    NoLiveConsumer(String),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
}

/// Which entries to move, from whom, to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimRequest {
    pub stream: String,
    pub group: String,
    /// Empty: every consumer of the group with no live heartbeat and something pending.
    pub from: Vec<String>,
    /// `None`: the live consumer with the fewest pending entries.
    pub to: Option<String>,
    pub min_idle: Duration,
    pub max_entries: usize,
    pub dry_run: bool,
}

/// What ReclaimPending did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reclaimed {
    pub to: String,
    pub entries: Vec<PendingEntry>,
    /// Named consumers left alone: they have a live heartbeat.
    pub skipped: Vec<String>,
    pub truncated: bool,
}

/// Which entries to discard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscardRequest {
    pub stream: String,
    pub group: String,
    pub consumers: Vec<String>,
    /// Empty: every qualifying entry.
    pub entry_ids: Vec<String>,
    pub min_idle: Duration,
    pub max_entries: usize,
    pub dry_run: bool,
}

/// What DiscardPending did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discarded {
    pub entries: Vec<PendingEntry>,
    pub deleted_consumers: Vec<String>,
    pub skipped: Vec<String>,
    pub truncated: bool,
}

/// Whether `id` is a stream entry id (`{ms}-{seq}`).
pub fn valid_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty() && !seq.is_empty() && ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()
    })
}

fn heartbeat_key(prefix: &str, stream: &str, consumer: &str) -> String {
    format!("{prefix}{stream}:{consumer}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The group's consumers (name -> pending), or NoStream / NoGroup.
async fn consumers(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<BTreeMap<String, u64>, PendingError> {
    let kind: String = redis::cmd("TYPE").arg(stream).query_async(con).await?;
    if kind != "stream" {
        return Err(PendingError::NoStream(stream.to_string()));
    }
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await?;
    let known = items(&groups)
        .iter()
        .any(|g| fields(g).get("name").and_then(|v| text(v)).as_deref() == Some(group));
    if !known {
        return Err(PendingError::NoGroup {
            stream: stream.to_string(),
            group: group.to_string(),
        });
    }
    let list: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    Ok(items(&list)
        .iter()
        .filter_map(|c| {
            let f = fields(c);
            Some((
                text(f.get("name")?)?,
                f.get("pending").and_then(|v| number(v)).unwrap_or(0),
            ))
        })
        .collect())
}

/// Which of `names` have a live heartbeat key.
async fn alive(
    con: &mut MultiplexedConnection,
    prefix: &str,
    stream: &str,
    names: &[String],
) -> Result<Vec<bool>, PendingError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for n in names {
        pipe.cmd("EXISTS").arg(heartbeat_key(prefix, stream, n));
    }
    let found: Vec<u64> = pipe.query_async(con).await?;
    Ok(found.into_iter().map(|n| n > 0).collect())
}

/// XPENDING's extended form as entries.
fn entries(v: &Value) -> Vec<PendingEntry> {
    items(v)
        .iter()
        .filter_map(|e| {
            let e = items(e);
            Some(PendingEntry {
                id: text(e.first()?)?,
                consumer: text(e.get(1)?)?,
                idle: Duration::from_millis(number(e.get(2)?)?),
                deliveries: number(e.get(3)?)?,
            })
        })
        .collect()
}

/// Moves the idle pending entries of dead consumers to a live one (see the module comment).
pub async fn reclaim(
    con: &mut MultiplexedConnection,
    heartbeat_prefix: &str,
    req: &ReclaimRequest,
) -> Result<Reclaimed, PendingError> {
    let group = consumers(con, &req.stream, &req.group).await?;
    let names: Vec<String> = group.keys().cloned().collect();
    let live: BTreeMap<String, bool> = names
        .iter()
        .cloned()
        .zip(alive(con, heartbeat_prefix, &req.stream, &names).await?)
        .collect();
    let to = match &req.to {
        Some(to) => {
            let ok = alive(con, heartbeat_prefix, &req.stream, std::slice::from_ref(to)).await?;
            if !ok[0] {
                return Err(PendingError::NoLiveConsumer(format!(
                    "consumer {to:?} has no live heartbeat; it cannot receive entries"
                )));
            }
            to.clone()
        }
        None => group
            .iter()
            .filter(|(name, _)| live[*name])
            .min_by_key(|(name, pending)| (**pending, (*name).clone()))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| {
                PendingError::NoLiveConsumer(format!(
                    "no consumer of group {:?} on {:?} has a live heartbeat",
                    req.group, req.stream
                ))
            })?,
    };
    let from: Vec<String> = if req.from.is_empty() {
        group
            .iter()
            .filter(|(name, pending)| !live[*name] && **pending > 0 && **name != to)
            .map(|(name, _)| name.clone())
            .collect()
    } else {
        req.from.iter().filter(|n| **n != to).cloned().collect()
    };
    let mut out = Reclaimed {
        to: to.clone(),
        ..Reclaimed::default()
    };
    for name in from {
        let budget = req.max_entries.saturating_sub(out.entries.len());
        if budget == 0 {
            out.truncated = true;
            break;
        }
        let reply: Value = redis::cmd("EVAL")
            .arg(RECLAIM_SCRIPT)
            .arg(2)
            .arg(&req.stream)
            .arg(heartbeat_key(heartbeat_prefix, &req.stream, &name))
            .arg(&req.group)
            .arg(&name)
            .arg(&to)
            .arg(millis(req.min_idle))
            .arg(budget.min(CHUNK * 20))
            .arg(if req.dry_run { "1" } else { "0" })
            .query_async(con)
            .await?;
        let parts = items(&reply);
        match parts.first().and_then(text).as_deref() {
            Some("heartbeat") => out.skipped.push(name),
            Some("ok") => {
                out.entries.extend(entries(&parts[1]));
                out.truncated |= parts.get(2).and_then(number) == Some(1);
            }
            _ => return Err(PendingError::Reply(format!("{reply:?}"))),
        }
    }
    Ok(out)
}

/// Acknowledges and deletes the idle pending entries of dead consumers, then deletes those left
/// with nothing pending (see the module comment).
pub async fn discard(
    con: &mut MultiplexedConnection,
    heartbeat_prefix: &str,
    req: &DiscardRequest,
) -> Result<Discarded, PendingError> {
    consumers(con, &req.stream, &req.group).await?;
    let mut out = Discarded::default();
    for name in &req.consumers {
        let budget = req.max_entries.saturating_sub(out.entries.len());
        if budget == 0 {
            out.truncated = true;
            break;
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DISCARD_SCRIPT)
            .arg(2)
            .arg(&req.stream)
            .arg(heartbeat_key(heartbeat_prefix, &req.stream, name))
            .arg(&req.group)
            .arg(name)
            .arg(millis(req.min_idle))
            .arg(budget)
            .arg(if req.dry_run { "1" } else { "0" });
        for id in &req.entry_ids {
            cmd.arg(id);
        }
        let reply: Value = cmd.query_async(con).await?;
        let parts = items(&reply);
        match parts.first().and_then(text).as_deref() {
            Some("heartbeat") => out.skipped.push(name.clone()),
            Some("ok") => {
                out.entries.extend(entries(&parts[1]));
                out.truncated |= parts.get(2).and_then(number) == Some(1);
                if parts.get(3).and_then(number) == Some(1) {
                    out.deleted_consumers.push(name.clone());
                }
            }
            _ => return Err(PendingError::Reply(format!("{reply:?}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_checked() {
        assert!(valid_id("1700000000000-0"));
        assert!(valid_id("0-1"));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "abc-1",
            "1-2-3",
            "1",
            "18446744073709551616-0",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
