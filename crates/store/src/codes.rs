//! How domain values are stored, in one place: enums as small integer codes, event kinds as
//! their names, times as integer milliseconds since the Unix epoch. Changing a code is a
//! migration: rows already written keep the old one.
use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use warden_core::{
    history::{EventKind, Severity},
    model::{Activity, Backend, HealthStatus, Lifecycle},
};

/// Text as stored: a NUL character (which Postgres's TEXT refuses, and which a hostile worker
/// or queue name could carry) becomes U+FFFD on both engines, so that one bad name never fails
/// a batch; filters go through it too, so they still match.
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) fn backend(b: Backend) -> i16 {
    match b {
        Backend::Celery => 1,
        Backend::RedisStreams => 2,
    }
}

pub(crate) fn backend_from(code: i16) -> Option<Backend> {
    [Backend::Celery, Backend::RedisStreams]
        .into_iter()
        .find(|b| backend(*b) == code)
}

pub(crate) fn activity(a: Activity) -> i16 {
    match a {
        Activity::Active => 1,
        Activity::Idle => 2,
        Activity::Unresponsive => 3,
    }
}

/// The code of [`Lifecycle::Alive`], for SQL (`alive_workers`).
pub(crate) const LIFECYCLE_ALIVE: i16 = 1;

pub(crate) fn lifecycle(l: Lifecycle) -> i16 {
    match l {
        Lifecycle::Alive => LIFECYCLE_ALIVE,
        Lifecycle::Offline => 2,
        Lifecycle::Lost => 3,
        Lifecycle::Unknown => 4,
    }
}

pub(crate) fn lifecycle_from(code: i16) -> Option<Lifecycle> {
    [
        Lifecycle::Alive,
        Lifecycle::Offline,
        Lifecycle::Lost,
        Lifecycle::Unknown,
    ]
    .into_iter()
    .find(|l| lifecycle(*l) == code)
}

pub(crate) fn health(h: HealthStatus) -> i16 {
    match h {
        HealthStatus::Healthy => 1,
        HealthStatus::Warning => 2,
        HealthStatus::Critical => 3,
    }
}

/// Severities are stored as their level (1 info, 2 warning, 3 critical), so that
/// `severity >= ?` filters.
pub(crate) fn severity(s: Severity) -> i16 {
    s as i16
}

pub(crate) fn severity_from(code: i16) -> Option<Severity> {
    Severity::from_level(i64::from(code))
}

pub(crate) fn kind(k: EventKind) -> &'static str {
    k.as_str()
}

pub(crate) fn kind_from(name: &str) -> Option<EventKind> {
    EventKind::parse(name)
}

/// Milliseconds since the Unix epoch, rounded down (negative before it).
pub(crate) fn ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            i64::try_from(e.duration().as_nanos().div_ceil(1_000_000)).map_or(i64::MIN, |ms| -ms)
        }
    }
}

pub(crate) fn time(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// A duration in whole milliseconds, for a column of `INTEGER` (i32).
pub(crate) fn ms_i32(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

pub(crate) fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(crate) fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for b in [Backend::Celery, Backend::RedisStreams] {
            assert_eq!(backend_from(backend(b)), Some(b));
        }
        for l in [Lifecycle::Alive, Lifecycle::Offline, Lifecycle::Lost] {
            assert_eq!(lifecycle_from(lifecycle(l)), Some(l));
        }
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(severity_from(severity(s)), Some(s));
        }
        let activities = [Activity::Active, Activity::Idle, Activity::Unresponsive].map(activity);
        let healths = [
            HealthStatus::Healthy,
            HealthStatus::Warning,
            HealthStatus::Critical,
        ]
        .map(health);
        for codes in [activities, healths] {
            assert!(
                codes
                    .iter()
                    .enumerate()
                    .all(|(i, c)| !codes[..i].contains(c))
            );
        }
        assert!(severity(Severity::Critical) > severity(Severity::Warning));
        assert!(severity(Severity::Warning) > severity(Severity::Info));
    }

    #[test]
    fn nul_characters_are_replaced() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn times_are_milliseconds_rounded_down() {
        let t = UNIX_EPOCH + Duration::from_micros(1_500_999);
        assert_eq!(ms(t), 1_500);
        assert_eq!(time(1_500), UNIX_EPOCH + Duration::from_millis(1_500));
        let before = UNIX_EPOCH - Duration::from_micros(1_500);
        assert_eq!(ms(before), -2);
        assert_eq!(time(-2), UNIX_EPOCH - Duration::from_millis(2));
    }
}
