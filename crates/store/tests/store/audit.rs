//! The audit trail on both engines: records round-trip whole, every filter narrows, paging by
//! `seq` is newest first without gaps or repeats, and the table refuses changes (append-only).
use std::collections::BTreeMap;

use warden_core::audit::{AuditLog, AuditQuery, AuditRecord};

use crate::support::{at, both};

const T0: i64 = 1_700_000_000_000;

/// Which written records a query should list.
type Keep = Box<dyn Fn(&AuditRecord) -> bool>;

fn record(i: i64) -> AuditRecord {
    let allowed = i % 3 != 0;
    AuditRecord {
        seq: 0,
        id: format!("audit-{i}"),
        time: at(T0 + i * 1000),
        actor: if i % 2 == 0 { "ci" } else { "ops" }.into(),
        role: "operator".into(),
        service: "Control".into(),
        action: if i % 4 == 0 {
            "PauseConsuming"
        } else {
            "RestartWorkers"
        }
        .into(),
        targets: vec![
            format!("workers/celery/default/w{}@h", i % 5),
            "workers/celery/default/shared@h".into(),
        ],
        reason: format!("reason {i}: ünïcode 'quoted'"),
        dry_run: i % 7 == 0,
        request_id: format!("req-{}", i % 10),
        allowed,
        code: if allowed { "OK" } else { "PERMISSION_DENIED" }.into(),
        message: if allowed {
            String::new()
        } else {
            "role operator required".into()
        },
        counts: BTreeMap::from([("APPLIED".to_string(), 2u32)]),
        outcomes: vec![(
            format!("workers/celery/default/w{}@h", i % 5),
            "APPLIED".into(),
            "no longer consuming from q".into(),
        )],
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        parameters: BTreeMap::from([("queues".to_string(), "[\"q\"]".to_string())]),
        operation: if i % 2 == 1 {
            format!("operations/op{i}")
        } else {
            String::new()
        },
    }
}

#[tokio::test]
async fn audit_round_trips_filters_and_pages_on_both_engines() {
    for db in both().await {
        let log = &db.store;
        let written: Vec<AuditRecord> = {
            let mut out = Vec::new();
            for i in 0..30 {
                let mut r = record(i);
                r.seq = log.append(&r).await.unwrap();
                out.push(r);
            }
            out
        };
        assert!(log.durable());
        let all = log
            .list(&AuditQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut expected = written.clone();
        expected.reverse();
        assert_eq!(all, expected, "{}", db.engine);

        let cases: Vec<(AuditQuery, Keep)> = vec![
            (
                AuditQuery {
                    actor: "ci".into(),
                    ..Default::default()
                },
                Box::new(|r| r.actor == "ci"),
            ),
            (
                AuditQuery {
                    action: "PauseConsuming".into(),
                    ..Default::default()
                },
                Box::new(|r| r.action == "PauseConsuming"),
            ),
            (
                AuditQuery {
                    code: "PERMISSION_DENIED".into(),
                    ..Default::default()
                },
                Box::new(|r| !r.allowed),
            ),
            (
                AuditQuery {
                    request_id: "req-3".into(),
                    ..Default::default()
                },
                Box::new(|r| r.request_id == "req-3"),
            ),
            (
                AuditQuery {
                    target: "workers/celery/default/w2@h".into(),
                    ..Default::default()
                },
                Box::new(|r| r.targets[0] == "workers/celery/default/w2@h"),
            ),
            (
                AuditQuery {
                    operation: "operations/op5".into(),
                    ..Default::default()
                },
                Box::new(|r| r.operation == "operations/op5"),
            ),
            (
                AuditQuery {
                    since: Some(at(T0 + 10_000)),
                    until: Some(at(T0 + 20_000)),
                    ..Default::default()
                },
                Box::new(|r| r.time >= at(T0 + 10_000) && r.time < at(T0 + 20_000)),
            ),
        ];
        for (mut query, keep) in cases {
            query.limit = 1000;
            let got = log.list(&query).await.unwrap();
            let want: Vec<AuditRecord> = expected.iter().filter(|r| keep(r)).cloned().collect();
            assert!(!want.is_empty());
            assert_eq!(got, want, "{} {query:?}", db.engine);
        }

        // Pages of 7, newest first, cover everything once.
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = log
                .list(&AuditQuery {
                    limit: 7,
                    before_seq: before,
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            before = Some(page.last().unwrap().seq);
            paged.extend(page);
        }
        assert_eq!(paged, expected, "{}", db.engine);
    }
}

#[tokio::test]
async fn the_audit_table_is_append_only_on_both_engines() {
    for db in both().await {
        db.store.append(&record(2)).await.unwrap();
        let url = db.url.clone();
        let refused = if db.engine == "sqlite" {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let update = sqlx::query("UPDATE audit SET actor = 'x'")
                .execute(&mut conn)
                .await;
            let delete = sqlx::query("DELETE FROM audit").execute(&mut conn).await;
            update.is_err() && delete.is_err()
        } else {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let update = sqlx::query("UPDATE audit SET actor = 'x'")
                .execute(&mut conn)
                .await;
            let delete = sqlx::query("DELETE FROM audit").execute(&mut conn).await;
            update.is_err() && delete.is_err()
        };
        assert!(refused, "{}: the audit table accepted a change", db.engine);
        let left = db
            .store
            .list(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].actor, "ci");
    }
}
