//! The Alerts service's lists: filtered, sorted as the contract says, and paged with keyset
//! tokens (`api::paging`) bound to the filter, so that a page token from another listing is
//! PAGE_TOKEN_INVALID.
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use warden_alerts::AlertFilter;
use warden_notify::{DeliveryId, DeliveryPage, DeliveryQuery};

use super::{AlertsService, convert, default_receivers, resource_name};
use crate::{
    api::{
        ApiError,
        convert::{enum_values, group_id},
        paging::{self, Cursor},
    },
    proto::v1 as pb,
};

/// Rank of "newest first": later times sort first.
fn newest_first(t: SystemTime) -> i64 {
    let micros = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
    -i64::try_from(micros).unwrap_or(i64::MAX)
}

/// The listing's identity for its page tokens: the request without its paging fields.
fn listing<M: Message + Clone>(kind: &str, req: &M, clear: impl FnOnce(&mut M)) -> u64 {
    let mut req = req.clone();
    clear(&mut req);
    paging::fingerprint(&[kind.as_bytes(), &req.encode_to_vec()])
}

/// One page of `items` (sorted by `key`, ascending) after the token's cursor.
fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> Cursor,
    page_size: u32,
    token: &str,
    fp: u64,
) -> Result<(Vec<T>, String), ApiError> {
    let after = paging::decode(token, fp)?;
    let size = paging::page_size(page_size);
    let mut out: Vec<T> = items
        .into_iter()
        .filter(|i| after.as_ref().is_none_or(|a| key(i) > *a))
        .take(size + 1)
        .collect();
    let next = if out.len() > size {
        out.truncate(size);
        out.last()
            .map(|last| paging::encode(fp, key(last)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((out, next))
}

impl AlertsService {
    pub(super) fn alerts_page(
        &self,
        req: &pb::ListAlertsRequest,
    ) -> Result<pb::ListAlertsResponse, ApiError> {
        let states = enum_values(
            "states",
            &req.states,
            |v| pb::AlertState::try_from(v).ok(),
            convert::alert_state_from,
        )?;
        let rule = if req.rule.is_empty() {
            None
        } else {
            resource_name("rule", &req.rule, "alertRules")?;
            Some(req.rule.clone())
        };
        // A resource name names one group; a bare id, that group on any backend.
        let group = if req.group.is_empty() {
            None
        } else {
            let id = group_id("group", &req.group)?;
            Some((req.group.starts_with("groups/"), id))
        };
        let filter = AlertFilter {
            states,
            rule,
            min_severity: convert::min_severity(req.min_severity)?,
            acknowledged: req.acknowledged,
            silenced: req.silenced,
            ..AlertFilter::default()
        };
        let fp = listing("alerts", req, |r| {
            r.page_size = 0;
            r.page_token.clear();
        });
        let mut alerts = self.alerting.engine().list_alerts(&filter);
        if !req.worker.is_empty() {
            let worker = worker_of(&alerts, &req.worker)?;
            alerts.retain(|a| {
                a.worker
                    .as_ref()
                    .is_some_and(|k| k.resource_name() == worker)
            });
        }
        if let Some((named, id)) = group {
            alerts.retain(|a| {
                a.group.as_deref().is_some_and(|g| {
                    if named {
                        g == req.group
                    } else {
                        group_id("group", g).is_ok_and(|gid| gid == id)
                    }
                })
            });
        }
        let key = |a: &warden_alerts::Alert| Cursor {
            rank: newest_first(a.started_at),
            name: a.name.clone(),
        };
        let (alerts, next_page_token) = page(alerts, key, req.page_size, &req.page_token, fp)?;
        Ok(pb::ListAlertsResponse {
            alerts: alerts.iter().map(convert::alert).collect(),
            next_page_token,
        })
    }

    pub(super) fn rules_page(
        &self,
        req: &pb::ListAlertRulesRequest,
    ) -> Result<pb::ListAlertRulesResponse, ApiError> {
        let fp = listing("alertRules", req, |r| {
            r.page_size = 0;
            r.page_token.clear();
        });
        let engine = self.alerting.engine();
        let defaults = default_receivers(&engine);
        let mut rules: Vec<&warden_alerts::Rule> = engine.rules().iter().collect();
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        let key = |r: &&warden_alerts::Rule| Cursor {
            rank: 0,
            name: r.id.clone(),
        };
        let (rules, next_page_token) = page(rules, key, req.page_size, &req.page_token, fp)?;
        Ok(pb::ListAlertRulesResponse {
            rules: rules.iter().map(|r| convert::rule(r, &defaults)).collect(),
            next_page_token,
        })
    }

    pub(super) fn silences_page(
        &self,
        req: &pb::ListSilencesRequest,
    ) -> Result<pb::ListSilencesResponse, ApiError> {
        let states = enum_values(
            "states",
            &req.states,
            |v| pb::SilenceState::try_from(v).ok(),
            convert::silence_state_from,
        )?;
        let fp = listing("silences", req, |r| {
            r.page_size = 0;
            r.page_token.clear();
        });
        let now = self.now();
        let silences = self.alerting.engine().list_silences(&states, now);
        let key = |s: &warden_alerts::Silence| Cursor {
            rank: newest_first(s.create_time),
            name: s.name.clone(),
        };
        let (silences, next_page_token) = page(silences, key, req.page_size, &req.page_token, fp)?;
        Ok(pb::ListSilencesResponse {
            silences: silences.iter().map(|s| convert::silence(s, now)).collect(),
            next_page_token,
        })
    }

    /// One row per (delivery, alert it covers), newest delivery first, its alerts by name.
    pub(super) fn deliveries_page(
        &self,
        req: &pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse, ApiError> {
        let alert = if req.alert.is_empty() {
            None
        } else {
            resource_name("alert", &req.alert, "alerts")?;
            self.alerting.engine().get_alert(&req.alert)?;
            Some(req.alert.clone())
        };
        let states = enum_values(
            "states",
            &req.states,
            |v| pb::DeliveryState::try_from(v).ok(),
            convert::delivery_state_from,
        )?;
        let channels = convert::channels(&req.channels)?;
        let fp = listing("deliveries", req, |r| {
            r.page_size = 0;
            r.page_token.clear();
        });
        let after = paging::decode(&req.page_token, fp)?;
        let size = paging::page_size(req.page_size);
        let (rows, next) = delivery_rows(
            |q| self.alerting.dispatcher.query(q),
            DeliveryQuery {
                alert,
                states,
                channels,
                ..DeliveryQuery::default()
            },
            after.as_ref(),
            size,
        );
        let next_page_token = next.map(|c| paging::encode(fp, c)).unwrap_or_default();
        Ok(pb::ListDeliveriesResponse {
            deliveries: rows,
            next_page_token,
        })
    }
}

/// One page of deliveries as (delivery, alert) rows after `after`, newest delivery first and
/// its alerts by name (`query.alert` set: only that alert's rows), and the cursor of the next
/// page. Each row's cursor is (minus the delivery id, the alert's name).
fn delivery_rows(
    run: impl FnOnce(&DeliveryQuery) -> DeliveryPage,
    mut query: DeliveryQuery,
    after: Option<&Cursor>,
    size: usize,
) -> (Vec<pb::Delivery>, Option<Cursor>) {
    // The cursor's delivery may have rows left; every later delivery has at least one, so
    // `size + 2` deliveries fill a page and tell whether another follows.
    query.before = after
        .and_then(|c| u64::try_from(c.rank.checked_neg()?).ok())
        .map(|id| DeliveryId(id.saturating_add(1)));
    query.limit = size + 2;
    let found = run(&query);
    let mut rows = Vec::new();
    for d in &found.deliveries {
        let mut names: Vec<&String> = d
            .alerts
            .iter()
            .filter(|a| query.alert.as_ref().is_none_or(|only| only == *a))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let key = Cursor {
                rank: -i64::try_from(d.id.0).unwrap_or(i64::MAX),
                name: name.clone(),
            };
            if after.is_none_or(|a| key > *a) {
                rows.push((key, convert::delivery(d, name)));
            }
        }
    }
    let next = if rows.len() > size {
        rows.truncate(size);
        rows.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    (rows.into_iter().map(|(_, d)| d).collect(), next)
}

/// The worker a filter names: its resource name, or a short id that names exactly one of the
/// alerts' workers (several: ambiguous; none: it matches nothing).
fn worker_of(alerts: &[warden_alerts::Alert], wanted: &str) -> Result<String, ApiError> {
    if wanted.starts_with("workers/") {
        return Ok(wanted.to_string());
    }
    let mut candidates: Vec<String> = alerts
        .iter()
        .filter_map(|a| a.worker.as_ref())
        .filter(|k| &*k.id == wanted)
        .map(|k| k.resource_name())
        .collect();
    candidates.sort();
    candidates.dedup();
    match candidates.len() {
        0 => Ok(wanted.to_string()),
        1 => Ok(candidates.remove(0)),
        _ => Err(ApiError::Ambiguous {
            field: "worker".into(),
            name: wanted.to_string(),
            candidates,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use warden_notify::{ChannelKind, Delivery, DeliveryLog, DeliveryState, NotifiedState};

    use super::*;

    fn log() -> DeliveryLog {
        let log = DeliveryLog::new(100);
        for alerts in [
            vec!["alerts/a"],
            vec!["alerts/c"],
            vec!["alerts/b", "alerts/a"],
        ] {
            log.insert(Delivery {
                id: DeliveryId(0),
                alerts: alerts.into_iter().map(String::from).collect(),
                group_key: "g".into(),
                channel: Some(ChannelKind::Webhook),
                receiver: "r".into(),
                notified_state: NotifiedState::Firing,
                escalated: false,
                state: DeliveryState::Sent,
                attempts: 1,
                last_error: None,
                suppressed_reason: None,
                create_time: SystemTime::UNIX_EPOCH,
                sent_at: None,
                next_attempt_at: None,
            });
        }
        log
    }

    /// Every row, page by page.
    fn walk(log: &DeliveryLog, alert: Option<&str>, size: usize) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let query = DeliveryQuery {
                alert: alert.map(String::from),
                ..DeliveryQuery::default()
            };
            let (rows, next) = delivery_rows(|q| log.query(q), query, after.as_ref(), size);
            pages.push(rows.into_iter().map(|d| d.name).collect());
            match next {
                Some(c) => after = Some(c),
                None => return pages,
            }
        }
    }

    #[test]
    fn a_delivery_of_several_alerts_is_a_row_per_alert_and_pages_split_it() {
        let log = log();
        assert_eq!(
            walk(&log, None, 100),
            vec![vec![
                "alerts/a/deliveries/3",
                "alerts/b/deliveries/3",
                "alerts/c/deliveries/2",
                "alerts/a/deliveries/1",
            ]]
        );
        assert_eq!(
            walk(&log, None, 1),
            vec![
                vec!["alerts/a/deliveries/3"],
                vec!["alerts/b/deliveries/3"],
                vec!["alerts/c/deliveries/2"],
                vec!["alerts/a/deliveries/1"],
            ],
            "a page may end inside a delivery; the next takes up there"
        );
        assert_eq!(
            walk(&log, Some("alerts/a"), 1),
            vec![vec!["alerts/a/deliveries/3"], vec!["alerts/a/deliveries/1"]]
        );
    }

    #[test]
    fn pages_are_keyset_and_bound_to_their_listing() {
        let items: Vec<u32> = (0..7).collect();
        let key = |i: &u32| Cursor {
            rank: i64::from(*i),
            name: String::new(),
        };
        let (first, token) = page(items.clone(), key, 3, "", 9).unwrap();
        assert_eq!(first, vec![0, 1, 2]);
        let (second, _) = page(items.clone(), key, 3, &token, 9).unwrap();
        assert_eq!(second, vec![3, 4, 5]);
        assert!(
            page(items, key, 3, &token, 10).is_err(),
            "another listing's token"
        );
    }
}
