//! The Alerts service's lists: filtered, sorted as the contract says, and paged with keyset
//! tokens (`api::paging`) bound to the filter, so that a page token from another listing is
//! PAGE_TOKEN_INVALID.
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use warden_alerts::AlertFilter;
use warden_notify::{DeliveryId, DeliveryQuery};

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
        let group = if req.group.is_empty() {
            None
        } else {
            Some(group_id("group", &req.group)?)
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
        if let Some(group) = group {
            alerts.retain(|a| {
                a.group
                    .as_deref()
                    .is_some_and(|g| group_id("group", g).is_ok_and(|id| id == group))
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
        // The cursor's delivery may have rows left; every later delivery has at least one.
        let before = after
            .as_ref()
            .and_then(|c| u64::try_from(c.rank.checked_neg()?).ok())
            .map(|id| DeliveryId(id.saturating_add(1)));
        let found = self.alerting.dispatcher.query(&DeliveryQuery {
            alert: alert.clone(),
            states,
            channels,
            limit: size + 2,
            before,
        });
        let mut rows = Vec::new();
        for d in &found.deliveries {
            let mut names: Vec<&String> = d
                .alerts
                .iter()
                .filter(|a| alert.as_ref().is_none_or(|only| only == *a))
                .collect();
            names.sort();
            names.dedup();
            for name in names {
                let key = Cursor {
                    rank: -i64::try_from(d.id.0).unwrap_or(i64::MAX),
                    name: name.clone(),
                };
                if after.as_ref().is_none_or(|a| key > *a) {
                    rows.push((key, convert::delivery(d, name)));
                }
            }
        }
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|(key, _)| paging::encode(fp, key.clone()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(|(_, d)| d).collect(),
            next_page_token,
        })
    }
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
