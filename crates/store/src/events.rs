//! Events: typed attributes as JSON, and listing newest first with keyset paging by id.
//!
//! Attributes are stored as a JSON array, in their order, of `{"k": name, "t": type, "v":
//! value}` with `t` one of `string`, `int`, `double`, `bool`, `time` (nanoseconds since the
//! Unix epoch, an integer; times beyond ±292 years of 1970 saturate), `duration` (nanoseconds,
//! an integer; saturating at 584 years); a double that JSON cannot hold (NaN, ±∞) is the
//! string `"NaN"`, `"inf"` or `"-inf"`. So each attribute reads back as the variant it was
//! written as.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::{QueryBuilder, Row};
use warden_core::{
    history::{AttrValue, EventQuery, HistoryEvent, StoredEvent},
    model::WorkerKey,
};

use crate::{Fail, Store, StoreError, codes, on_pool};

/// Events listed when the query says `limit: 0`.
pub const DEFAULT_EVENT_LIMIT: usize = 100;
/// Events listed at most by one call.
pub const MAX_EVENT_LIMIT: usize = 10_000;

pub(crate) fn encode_attributes(attributes: &[(String, AttrValue)]) -> String {
    let items: Vec<Value> = attributes
        .iter()
        .map(|(k, v)| {
            let (t, v) = match v {
                AttrValue::String(s) => ("string", json!(s)),
                AttrValue::Int(i) => ("int", json!(i)),
                AttrValue::Double(d) if d.is_finite() => ("double", json!(d)),
                AttrValue::Double(d) if d.is_nan() => ("double", json!("NaN")),
                AttrValue::Double(d) if *d > 0.0 => ("double", json!("inf")),
                AttrValue::Double(_) => ("double", json!("-inf")),
                AttrValue::Bool(b) => ("bool", json!(b)),
                AttrValue::Time(t) => ("time", json!(time_ns(*t))),
                AttrValue::Duration(d) => (
                    "duration",
                    json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                ),
            };
            json!({"k": k, "t": t, "v": v})
        })
        .collect();
    Value::Array(items).to_string()
}

fn time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}

fn time_of_ns(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// The attributes back; `None` when the text is not what [`encode_attributes`] writes.
pub(crate) fn decode_attributes(text: &str) -> Option<Vec<(String, AttrValue)>> {
    let Value::Array(items) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    items
        .into_iter()
        .map(|item| {
            let k = item.get("k")?.as_str()?.to_owned();
            let v = item.get("v")?;
            let value = match item.get("t")?.as_str()? {
                "string" => AttrValue::String(v.as_str()?.to_owned()),
                "int" => AttrValue::Int(v.as_i64()?),
                "double" => AttrValue::Double(match v.as_str() {
                    Some("NaN") => f64::NAN,
                    Some("inf") => f64::INFINITY,
                    Some("-inf") => f64::NEG_INFINITY,
                    Some(_) => return None,
                    None => v.as_f64()?,
                }),
                "bool" => AttrValue::Bool(v.as_bool()?),
                "time" => AttrValue::Time(time_of_ns(v.as_i64()?)),
                "duration" => AttrValue::Duration(Duration::from_nanos(v.as_u64()?)),
                _ => return None,
            };
            Some((k, value))
        })
        .collect()
}

const SELECT: &str = "SELECT id, at_ms, kind, severity, backend, scope, worker_id, grp, message, \
     attributes FROM events WHERE 1 = 1";

pub(crate) async fn list(store: &Store, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
    let limit = match q.limit {
        0 => DEFAULT_EVENT_LIMIT,
        n => n.min(MAX_EVENT_LIMIT),
    };
    store
        .call(store.options.timeout, async {
            on_pool!(store, |pool, Db| {
                let mut sql = QueryBuilder::<Db>::new(SELECT);
                if let Some(w) = &q.worker {
                    sql.push(" AND backend = ")
                        .push_bind(codes::backend(w.backend))
                        .push(" AND scope = ")
                        .push_bind(codes::text(&w.scope).into_owned())
                        .push(" AND worker_id = ")
                        .push_bind(codes::text(&w.id).into_owned());
                }
                if let Some(g) = &q.group {
                    sql.push(" AND grp = ")
                        .push_bind(codes::text(g).into_owned());
                }
                if !q.kinds.is_empty() {
                    sql.push(" AND kind IN (");
                    let mut kinds = sql.separated(", ");
                    for k in &q.kinds {
                        kinds.push_bind(codes::kind(*k));
                    }
                    sql.push(")");
                }
                if let Some(s) = q.min_severity {
                    sql.push(" AND severity >= ").push_bind(codes::severity(s));
                }
                if let Some(t) = q.since {
                    sql.push(" AND at_ms >= ").push_bind(codes::ms(t));
                }
                if let Some(t) = q.until {
                    sql.push(" AND at_ms < ").push_bind(codes::ms(t));
                }
                if let Some(id) = q.before_id {
                    sql.push(" AND id < ").push_bind(id);
                }
                sql.push(" ORDER BY id DESC LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
                let rows = sql.build().fetch_all(pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let id: i64 = row.try_get(0)?;
                    let kind: String = row.try_get(2)?;
                    let severity: i16 = row.try_get(3)?;
                    let backend: Option<i16> = row.try_get(4)?;
                    let scope: Option<String> = row.try_get(5)?;
                    let worker_id: Option<String> = row.try_get(6)?;
                    let attributes: String = row.try_get(9)?;
                    let bad = |what: &str| {
                        Fail::Store(store.failed(format!("event {id}: unreadable {what}")))
                    };
                    let worker = match (backend, scope, worker_id) {
                        (Some(b), Some(s), Some(i)) => Some(WorkerKey::new(
                            codes::backend_from(b).ok_or_else(|| bad("backend"))?,
                            s,
                            i,
                        )),
                        _ => None,
                    };
                    out.push(StoredEvent {
                        id,
                        event: HistoryEvent {
                            at: codes::time(row.try_get(1)?),
                            kind: codes::kind_from(&kind).ok_or_else(|| bad("kind"))?,
                            severity: codes::severity_from(severity)
                                .ok_or_else(|| bad("severity"))?,
                            worker,
                            group: row.try_get(7)?,
                            message: row.try_get(8)?,
                            attributes: decode_attributes(&attributes)
                                .ok_or_else(|| bad("attributes"))?,
                        },
                    });
                }
                Ok::<_, Fail>(out)
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_type_round_trips_as_its_variant() {
        let attributes = vec![
            ("s".to_owned(), AttrValue::String("a \"quoted\" ✓".into())),
            ("i".to_owned(), AttrValue::Int(i64::MIN)),
            ("i2".to_owned(), AttrValue::Int(3)),
            ("d".to_owned(), AttrValue::Double(3.0)),
            ("d2".to_owned(), AttrValue::Double(-0.125)),
            ("inf".to_owned(), AttrValue::Double(f64::NEG_INFINITY)),
            ("b".to_owned(), AttrValue::Bool(false)),
            (
                "t".to_owned(),
                AttrValue::Time(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            ),
            (
                "t0".to_owned(),
                AttrValue::Time(UNIX_EPOCH - Duration::from_nanos(5)),
            ),
            ("dur".to_owned(), AttrValue::Duration(Duration::new(90, 1))),
            ("s".to_owned(), AttrValue::String("again".into())),
        ];
        let text = encode_attributes(&attributes);
        assert_eq!(decode_attributes(&text), Some(attributes));
        let nan = decode_attributes(&encode_attributes(&[(
            "n".into(),
            AttrValue::Double(f64::NAN),
        )]));
        assert!(matches!(nan.as_deref(), Some([(_, AttrValue::Double(d))]) if d.is_nan()));
        assert_eq!(decode_attributes("[]"), Some(vec![]));
        assert_eq!(decode_attributes(r#"[{"k":"x","t":"int","v":"3"}]"#), None);
        assert_eq!(decode_attributes("{}"), None);
    }
}
