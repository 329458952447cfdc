//! The audit trail: an append-only table (`audit`, with `audit_targets` for the worker
//! filter), listed newest first with keyset paging by `seq`.
use std::collections::BTreeMap;

use sqlx::{QueryBuilder, Row};
use warden_core::audit::{AuditQuery, AuditRecord};

use crate::{Fail, Store, StoreError, codes, on_pool};

/// Records listed at most by one call.
pub const MAX_AUDIT_LIMIT: usize = 1000;

pub(crate) async fn append(store: &Store, r: &AuditRecord) -> Result<i64, StoreError> {
    let t = |s: &str| codes::text(s).into_owned();
    let targets: Vec<String> = r.targets.iter().map(|s| t(s)).collect();
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, Db| {
                let mut tx = pool.begin().await?;
                let seq: i64 = sqlx::query_scalar::<Db, i64>(
                    "INSERT INTO audit (audit_id, at_ms, actor, role, service, action, targets, \
                     reason, dry_run, request_id, allowed, code, message, counts, outcomes, \
                     trace_id, parameters, operation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING seq",
                )
                .bind(t(&r.id))
                .bind(codes::ms(r.time))
                .bind(t(&r.actor))
                .bind(t(&r.role))
                .bind(t(&r.service))
                .bind(t(&r.action))
                .bind(t(&serde_json::json!(targets).to_string()))
                .bind(t(&r.reason))
                .bind(i16::from(r.dry_run))
                .bind(t(&r.request_id))
                .bind(i16::from(r.allowed))
                .bind(t(&r.code))
                .bind(t(&r.message))
                .bind(t(&serde_json::json!(r.counts).to_string()))
                .bind(t(&serde_json::json!(r.outcomes).to_string()))
                .bind(t(&r.trace_id))
                .bind(t(&serde_json::json!(r.parameters).to_string()))
                .bind(t(&r.operation))
                .fetch_one(&mut *tx)
                .await?;
                if !targets.is_empty() {
                    let mut sql =
                        QueryBuilder::<Db>::new("INSERT INTO audit_targets (seq, target) ");
                    sql.push_values(&targets, |mut row, target| {
                        row.push_bind(seq).push_bind(target.clone());
                    });
                    sql.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok::<_, Fail>(seq)
            })
        })
        .await
}

const SELECT: &str = "SELECT seq, audit_id, at_ms, actor, role, service, action, targets, \
     reason, dry_run, request_id, allowed, code, message, counts, outcomes, trace_id, \
     parameters, operation FROM audit WHERE 1 = 1";

pub(crate) async fn list(store: &Store, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let limit = q.limit.clamp(1, MAX_AUDIT_LIMIT);
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, Db| {
                let mut sql = QueryBuilder::<Db>::new(SELECT);
                let mut eq = |column: &str, value: &str| {
                    if !value.is_empty() {
                        sql.push(format!(" AND {column} = "))
                            .push_bind(codes::text(value).into_owned());
                    }
                };
                eq("actor", &q.actor);
                eq("action", &q.action);
                eq("code", &q.code);
                eq("request_id", &q.request_id);
                eq("operation", &q.operation);
                if !q.target.is_empty() {
                    sql.push(" AND seq IN (SELECT seq FROM audit_targets WHERE target = ")
                        .push_bind(codes::text(&q.target).into_owned())
                        .push(")");
                }
                if let Some(t) = q.since {
                    sql.push(" AND at_ms >= ").push_bind(codes::ms(t));
                }
                if let Some(t) = q.until {
                    sql.push(" AND at_ms < ").push_bind(codes::ms(t));
                }
                if let Some(seq) = q.before_seq {
                    sql.push(" AND seq < ").push_bind(seq);
                }
                sql.push(" ORDER BY seq DESC LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
                let rows = sql.build().fetch_all(pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let seq: i64 = row.try_get(0)?;
                    let bad = |what: &str| {
                        Fail::Store(store.failed(format!("audit entry {seq}: unreadable {what}")))
                    };
                    let parse = |i: usize| -> Result<serde_json::Value, Fail> {
                        let text: String = row.try_get(i)?;
                        serde_json::from_str(&text).map_err(|_| bad("json"))
                    };
                    let targets: Vec<String> =
                        serde_json::from_value(parse(7)?).map_err(|_| bad("targets"))?;
                    let counts: BTreeMap<String, u32> =
                        serde_json::from_value(parse(14)?).map_err(|_| bad("counts"))?;
                    let outcomes: Vec<(String, String, String)> =
                        serde_json::from_value(parse(15)?).map_err(|_| bad("outcomes"))?;
                    let parameters: BTreeMap<String, String> =
                        serde_json::from_value(parse(17)?).map_err(|_| bad("parameters"))?;
                    let dry_run: i16 = row.try_get(9)?;
                    let allowed: i16 = row.try_get(11)?;
                    out.push(AuditRecord {
                        seq,
                        id: row.try_get(1)?,
                        time: codes::time(row.try_get(2)?),
                        actor: row.try_get(3)?,
                        role: row.try_get(4)?,
                        service: row.try_get(5)?,
                        action: row.try_get(6)?,
                        targets,
                        reason: row.try_get(8)?,
                        dry_run: dry_run != 0,
                        request_id: row.try_get(10)?,
                        allowed: allowed != 0,
                        code: row.try_get(12)?,
                        message: row.try_get(13)?,
                        counts,
                        outcomes,
                        trace_id: row.try_get(16)?,
                        parameters,
                        operation: row.try_get(18)?,
                    });
                }
                Ok::<_, Fail>(out)
            })
        })
        .await
}
