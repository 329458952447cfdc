//! Events: typed attributes round-trip, filters, and paging newest first without gaps or
//! repeats.
use std::time::{Duration, UNIX_EPOCH};

use warden_core::{
    history::{
        AttrValue, EventKind, EventQuery, HistoryEvent, HistoryStore, Severity, StoredEvent,
        WriteBatch,
    },
    model::{Backend, WorkerKey},
};

use crate::support::{at, both, worker};

const T0: i64 = 1_700_000_000_000;

/// Which written events a query should list.
type Keep = Box<dyn Fn(&HistoryEvent) -> bool>;

fn events() -> Vec<HistoryEvent> {
    let kinds = [
        EventKind::Lifecycle,
        EventKind::Scaling,
        EventKind::Alert,
        EventKind::Control,
        EventKind::Health,
        EventKind::Recovery,
    ];
    let severities = [Severity::Info, Severity::Warning, Severity::Critical];
    (0..40i64)
        .map(|i| HistoryEvent {
            // Not in time order everywhere: listing is by insertion (id), newest first.
            at: at(T0 + i * 1_000 + if i % 7 == 0 { 500 } else { 0 }),
            kind: kinds[(i % 6) as usize],
            severity: severities[(i % 5 % 3) as usize],
            worker: match i % 4 {
                0 => Some(worker("w1")),
                1 => Some(WorkerKey::new(Backend::RedisStreams, "stream:jobs", "w1")),
                2 => Some(worker("w2")),
                _ => None,
            },
            group: (i % 3 == 0).then(|| format!("g{}", i % 2)),
            message: format!("event {i}: ünïcode ✓ 'quoted'"),
            attributes: vec![
                ("reason".into(), AttrValue::String(format!("r{i}"))),
                ("count".into(), AttrValue::Int(i - 20)),
                ("ratio".into(), AttrValue::Double(i as f64 / 8.0)),
                ("manual".into(), AttrValue::Bool(i % 2 == 0)),
                (
                    "since".into(),
                    AttrValue::Time(
                        UNIX_EPOCH + Duration::new(1_600_000_000 + i as u64, 987_654_321),
                    ),
                ),
                (
                    "after".into(),
                    AttrValue::Duration(Duration::from_nanos(1_500_000_001 * i as u64)),
                ),
            ],
        })
        .collect()
}

/// The events written, newest first, that `keep` selects.
fn expected(all: &[HistoryEvent], keep: impl Fn(&HistoryEvent) -> bool) -> Vec<HistoryEvent> {
    all.iter().rev().filter(|e| keep(e)).cloned().collect()
}

fn bodies(listed: &[StoredEvent]) -> Vec<HistoryEvent> {
    listed.iter().map(|e| e.event.clone()).collect()
}

#[tokio::test]
async fn events_round_trip_with_typed_attributes_newest_first() {
    let all = events();
    for db in both().await {
        let engine = db.engine;
        for chunk in all.chunks(15) {
            let batch = WriteBatch {
                events: chunk.to_vec(),
                ..WriteBatch::default()
            };
            db.store.write(&batch).await.unwrap();
        }
        let listed = db
            .store
            .events(&EventQuery {
                limit: 1_000,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(bodies(&listed), expected(&all, |_| true), "{engine}");
        assert!(
            listed.windows(2).all(|w| w[0].id > w[1].id),
            "{engine}: ids"
        );
        // limit 0 is the default limit (100), not nothing.
        let default = db.store.events(&EventQuery::default()).await.unwrap();
        assert_eq!(default.len(), 40, "{engine}");
    }
}

#[tokio::test]
async fn event_filters_select_exactly_what_they_say() {
    let all = events();
    for db in both().await {
        let engine = db.engine;
        db.store
            .write(&WriteBatch {
                events: all.clone(),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        let redis_w1 = WorkerKey::new(Backend::RedisStreams, "stream:jobs", "w1");
        let cases: Vec<(&str, EventQuery, Keep)> = vec![
            (
                "kinds",
                EventQuery {
                    kinds: vec![EventKind::Alert, EventKind::Scaling],
                    ..EventQuery::default()
                },
                Box::new(|e| matches!(e.kind, EventKind::Alert | EventKind::Scaling)),
            ),
            (
                "min severity",
                EventQuery {
                    min_severity: Some(Severity::Warning),
                    ..EventQuery::default()
                },
                Box::new(|e| e.severity >= Severity::Warning),
            ),
            (
                "worker (backend and scope matter)",
                EventQuery {
                    worker: Some(redis_w1.clone()),
                    ..EventQuery::default()
                },
                Box::new(move |e| e.worker.as_ref() == Some(&redis_w1)),
            ),
            (
                "group",
                EventQuery {
                    group: Some("g1".into()),
                    ..EventQuery::default()
                },
                Box::new(|e| e.group.as_deref() == Some("g1")),
            ),
            (
                "time range, half-open",
                EventQuery {
                    since: Some(at(T0 + 10_000)),
                    until: Some(at(T0 + 21_000)),
                    ..EventQuery::default()
                },
                Box::new(|e| e.at >= at(T0 + 10_000) && e.at < at(T0 + 21_000)),
            ),
            (
                "all together",
                EventQuery {
                    kinds: vec![EventKind::Lifecycle, EventKind::Health, EventKind::Alert],
                    min_severity: Some(Severity::Warning),
                    worker: Some(worker("w1")),
                    since: Some(at(T0 + 3_000)),
                    ..EventQuery::default()
                },
                Box::new(|e| {
                    matches!(
                        e.kind,
                        EventKind::Lifecycle | EventKind::Health | EventKind::Alert
                    ) && e.severity >= Severity::Warning
                        && e.worker.as_ref() == Some(&worker("w1"))
                        && e.at >= at(T0 + 3_000)
                }),
            ),
        ];
        for (what, query, keep) in cases {
            let want = expected(&all, keep);
            assert!(
                !want.is_empty() && want.len() < all.len(),
                "{what}: a real filter"
            );
            let got = db.store.events(&query).await.unwrap();
            assert_eq!(bodies(&got), want, "{engine}: {what}");
        }
    }
}

#[tokio::test]
async fn paging_newest_first_has_no_gaps_or_repeats() {
    let all = events();
    for db in both().await {
        let engine = db.engine;
        db.store
            .write(&WriteBatch {
                events: all.clone(),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        for (filter, keep) in [
            (
                EventQuery::default(),
                (|_: &HistoryEvent| true) as fn(&HistoryEvent) -> bool,
            ),
            (
                EventQuery {
                    min_severity: Some(Severity::Critical),
                    ..EventQuery::default()
                },
                |e: &HistoryEvent| e.severity == Severity::Critical,
            ),
        ] {
            let mut pages = Vec::new();
            let mut before_id = None;
            loop {
                let page = db
                    .store
                    .events(&EventQuery {
                        limit: 3,
                        before_id,
                        ..filter.clone()
                    })
                    .await
                    .unwrap();
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                before_id = Some(last.id);
                pages.extend(page);
            }
            assert_eq!(bodies(&pages), expected(&all, keep), "{engine}");
            let mut ids: Vec<i64> = pages.iter().map(|e| e.id).collect();
            ids.dedup();
            assert_eq!(ids.len(), pages.len(), "{engine}: repeats");
        }
    }
}
