//! The audit trail: one append-only record per mutating control call, allowed or denied.
//!
//! [`AuditLog`] is the port: the history store implements it durably (an append-only table);
//! without a store, [`MemoryAudit`] keeps the newest [`MEMORY_AUDIT_CAPACITY`] records, and
//! says so ([`AuditLog::durable`] is false), so that ListAudit can tell its callers.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::SystemTime,
};

use crate::ports::{BoxFuture, PortError};

/// Records [`MemoryAudit`] keeps (the oldest go first).
pub const MEMORY_AUDIT_CAPACITY: usize = 10_000;

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the log, assigned by [`AuditLog::append`] (ascending with insertion); 0
    /// before it is appended.
    pub seq: i64,
    /// Unique id (the `audit_id` callers see).
    pub id: String,
    pub time: SystemTime,
    /// The token's name (never the token), "anonymous", or "unknown".
    pub actor: String,
    /// "viewer", "operator", "admin", or empty when not authenticated.
    pub role: String,
    /// "Control" or "Alerts".
    pub service: String,
    /// The RPC, e.g. "PauseConsuming".
    pub action: String,
    /// Resolved worker resource names, or the group/operation/... acted on.
    pub targets: Vec<String>,
    pub reason: String,
    pub dry_run: bool,
    pub request_id: String,
    pub allowed: bool,
    /// gRPC status code name the call ended with ("OK", "PERMISSION_DENIED", ...).
    pub code: String,
    /// The status message when not OK.
    pub message: String,
    /// Per-target outcomes of a synchronous action, by outcome name (e.g. "APPLIED" → 3).
    pub counts: BTreeMap<String, u32>,
    /// Per-target outcome of a synchronous action: (worker, outcome name, message).
    pub outcomes: Vec<(String, String, String)>,
    /// W3C trace id, empty when tracing was off.
    pub trace_id: String,
    /// The request's own fields, as JSON text by JSON name.
    pub parameters: BTreeMap<String, String>,
    /// Resource name of the operation the call created or acted on.
    pub operation: String,
}

/// Filters of [`AuditLog::list`] (AND of the set ones), newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// A resource name among the targets.
    pub target: String,
    pub actor: String,
    pub action: String,
    /// A status code name ("OK", "PERMISSION_DENIED", ...).
    pub code: String,
    pub request_id: String,
    pub operation: String,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only records with a `seq` below this (paging).
    pub before_seq: Option<i64>,
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        (self.target.is_empty() || r.targets.contains(&self.target))
            && (self.actor.is_empty() || r.actor == self.actor)
            && (self.action.is_empty() || r.action == self.action)
            && (self.code.is_empty() || r.code == self.code)
            && (self.request_id.is_empty() || r.request_id == self.request_id)
            && (self.operation.is_empty() || r.operation == self.operation)
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time < u)
            && self.before_seq.is_none_or(|b| r.seq < b)
    }
}

/// Where audit records go.
pub trait AuditLog: Send + Sync + 'static {
    /// Appends the record; returns the `seq` it was given.
    fn append<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<i64, PortError>>;
    /// Records matching the query, newest first, at most `limit`.
    fn list<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, PortError>>;
    /// Whether records survive a restart (a store), or are kept in memory with a bound.
    fn durable(&self) -> bool;
}

/// The audit trail in memory, bounded: used when no history store is configured.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    inner: Mutex<(i64, VecDeque<AuditRecord>)>,
}

impl AuditLog for MemoryAudit {
    fn append<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<i64, PortError>> {
        Box::pin(async move {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.0 += 1;
            let seq = inner.0;
            let mut record = record.clone();
            record.seq = seq;
            if inner.1.len() >= MEMORY_AUDIT_CAPACITY {
                inner.1.pop_front();
            }
            inner.1.push_back(record);
            Ok(seq)
        })
    }

    fn list<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, PortError>> {
        Box::pin(async move {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            Ok(inner
                .1
                .iter()
                .rev()
                .filter(|r| query.matches(r))
                .take(query.limit.max(1))
                .cloned()
                .collect())
        })
    }

    fn durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(actor: &str, code: &str) -> AuditRecord {
        AuditRecord {
            seq: 0,
            id: format!("{actor}-{code}"),
            time: SystemTime::UNIX_EPOCH,
            actor: actor.into(),
            role: String::new(),
            service: "Control".into(),
            action: "PauseConsuming".into(),
            targets: vec!["workers/celery/default/w1@h".into()],
            reason: String::new(),
            dry_run: false,
            request_id: String::new(),
            allowed: code == "OK",
            code: code.into(),
            message: String::new(),
            counts: BTreeMap::new(),
            outcomes: Vec::new(),
            trace_id: String::new(),
            parameters: BTreeMap::new(),
            operation: String::new(),
        }
    }

    #[tokio::test]
    async fn memory_audit_is_newest_first_filtered_and_bounded() {
        let log = MemoryAudit::default();
        for i in 0..MEMORY_AUDIT_CAPACITY + 5 {
            let code = if i % 2 == 0 {
                "OK"
            } else {
                "PERMISSION_DENIED"
            };
            log.append(&record(&format!("a{i}"), code)).await.unwrap();
        }
        let all = log
            .list(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), MEMORY_AUDIT_CAPACITY);
        assert_eq!(all[0].actor, format!("a{}", MEMORY_AUDIT_CAPACITY + 4));
        let denied = log
            .list(&AuditQuery {
                code: "PERMISSION_DENIED".into(),
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(denied.len(), 3);
        assert!(denied.iter().all(|r| !r.allowed));
        let page2 = log
            .list(&AuditQuery {
                before_seq: Some(denied[2].seq),
                code: "PERMISSION_DENIED".into(),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page2[0].seq < denied[2].seq);
        assert!(!log.durable());
    }
}
