//! Reading a worker's log line: its level, time, task id and (for JSON lines) fields, and the
//! filters of `Logs.Tail`. Pure: no I/O, so every line shape has its own unit test.
//!
//! Recognised shapes: Celery's default format (`[2024-01-01 12:00:00,123: ERROR/MainProcess]
//! ...`, and the pool's `[...: ERROR/ForkPoolWorker-1] Task x[id] ...`), and JSON objects with
//! the level in `level`, `levelname` or `severity`, or Loguru's `record.level.name`; the time in
//! `time`, `timestamp` or `asctime` (or Loguru's `record.time.timestamp`); the task id in
//! `task_id` at the top or under `extra` (or Loguru's `record.extra`).
use std::{collections::HashMap, time::SystemTime};

use serde_json::{Map, Value};

/// Severity, least to most severe (the numbering of `warden.v1.LogLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace = 1,
    Debug = 2,
    Info = 3,
    Warning = 4,
    Error = 5,
    Critical = 6,
}

impl Level {
    /// A level name as loggers write it (any case); `WARN` is WARNING, `FATAL` CRITICAL.
    pub fn from_name(name: &str) -> Option<Level> {
        Some(match name.trim().to_ascii_uppercase().as_str() {
            "TRACE" => Level::Trace,
            "DEBUG" => Level::Debug,
            "INFO" | "NOTICE" => Level::Info,
            "WARNING" | "WARN" => Level::Warning,
            "ERROR" | "ERR" => Level::Error,
            "CRITICAL" | "FATAL" | "ALERT" | "EMERGENCY" => Level::Critical,
            _ => return None,
        })
    }

    pub fn from_number(n: i32) -> Option<Level> {
        Some(match n {
            1 => Level::Trace,
            2 => Level::Debug,
            3 => Level::Info,
            4 => Level::Warning,
            5 => Level::Error,
            6 => Level::Critical,
            _ => return None,
        })
    }
}

/// Most JSON fields kept per line.
pub const MAX_FIELDS: usize = 64;

/// What a line says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub level: Option<Level>,
    pub time: Option<SystemTime>,
    pub task_id: Option<String>,
    /// Top-level fields of a JSON line (strings unquoted, other values as JSON text).
    pub fields: Vec<(String, String)>,
}

/// Parses one line (without its newline).
pub fn parse(text: &str) -> Parsed {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed)
    {
        return parse_json(&map);
    }
    parse_celery(text)
}

/// `[2024-01-01 12:00:00,123: ERROR/MainProcess] text`.
fn parse_celery(text: &str) -> Parsed {
    let mut parsed = Parsed {
        task_id: celery_task_id(text),
        ..Default::default()
    };
    let Some(head) = text.strip_prefix('[').and_then(|r| r.split_once(']')) else {
        return parsed;
    };
    let Some((time, rest)) = head.0.rsplit_once(": ") else {
        return parsed;
    };
    let level = rest.split_once('/').map_or(rest, |(l, _)| l);
    parsed.level = Level::from_name(level);
    if parsed.level.is_some() {
        parsed.time = parse_time_text(time);
    }
    parsed
}

/// The uuid of Celery's `Task name[uuid] ...` lines.
fn celery_task_id(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find("Task ") {
        rest = &rest[at + 5..];
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '[')?;
        if rest[name_end..].starts_with('[')
            && let Some(close) = rest[name_end..].find(']')
        {
            let id = &rest[name_end + 1..name_end + close];
            if looks_like_task_id(id) {
                return Some(id.to_string());
            }
        }
    }
    None
}

fn looks_like_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// `2024-01-01 12:00:00,123` (Celery, Python's asctime) or RFC 3339; read as UTC when the
/// text has no offset.
fn parse_time_text(text: &str) -> Option<SystemTime> {
    let text = text.trim().replacen(',', ".", 1);
    humantime::parse_rfc3339_weak(&text)
        .or_else(|_| humantime::parse_rfc3339(&text))
        .ok()
}

fn parse_time_value(v: &Value) -> Option<SystemTime> {
    match v {
        Value::String(s) => parse_time_text(s),
        Value::Number(n) => {
            let secs = n.as_f64()?;
            // Seconds since the epoch, or milliseconds when too large to be seconds.
            let secs = if secs > 1e11 { secs / 1000.0 } else { secs };
            (secs >= 0.0).then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
        }
        _ => None,
    }
}

fn string_of(v: &Value) -> Option<&str> {
    v.as_str()
}

fn extra(m: Option<&Map<String, Value>>) -> Option<&Map<String, Value>> {
    m?.get("extra")?.as_object()
}

fn parse_json(map: &Map<String, Value>) -> Parsed {
    let record = map.get("record").and_then(Value::as_object);
    let level = ["level", "levelname", "severity"]
        .iter()
        .find_map(|k| map.get(*k).and_then(string_of).and_then(Level::from_name))
        .or_else(|| {
            record
                .and_then(|r| r.get("level"))
                .and_then(|l| l.get("name"))
                .and_then(string_of)
                .and_then(Level::from_name)
        });
    let time = ["time", "timestamp", "asctime"]
        .iter()
        .find_map(|k| map.get(*k).and_then(parse_time_value))
        .or_else(|| {
            record
                .and_then(|r| r.get("time"))
                .and_then(|t| t.get("timestamp"))
                .and_then(parse_time_value)
        });
    let task = |m: Option<&Map<String, Value>>| {
        m.and_then(|m| m.get("task_id"))
            .and_then(string_of)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let task_id = task(Some(map))
        .or_else(|| task(extra(Some(map))))
        .or_else(|| task(extra(record)));
    let fields = map
        .iter()
        .take(MAX_FIELDS)
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    Parsed {
        level,
        time,
        task_id,
        fields,
    }
}

/// A line with what it inherits from the lines before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub parsed: Parsed,
    /// Its level, or that of the preceding line from the same source (a traceback keeps its
    /// ERROR line's level).
    pub level: Option<Level>,
    /// Its task id, or that of the line it continues (for the task filter).
    pub context_task: Option<String>,
}

/// Carries levels and task ids over continuation lines, per source.
#[derive(Debug, Default)]
pub struct Classifier {
    last: HashMap<String, (Option<Level>, Option<String>)>,
}

impl Classifier {
    pub fn classify(&mut self, source: &str, text: &str) -> Classified {
        let parsed = parse(text);
        let last = self.last.entry(source.to_string()).or_default();
        let (level, context_task) = if parsed.level.is_some() {
            *last = (parsed.level, parsed.task_id.clone());
            last.clone()
        } else {
            (last.0, parsed.task_id.clone().or_else(|| last.1.clone()))
        };
        Classified {
            parsed,
            level,
            context_task,
        }
    }
}

/// The filters of one Tail request (all must pass).
#[derive(Debug, Default)]
pub struct Filter {
    /// Allowed levels (`None` = unknown level); empty allows all.
    pub levels: Vec<Option<Level>>,
    pub min_level: Option<Level>,
    pub contains: String,
    pub regex: Option<regex::Regex>,
    pub task_id: String,
    pub since: Option<SystemTime>,
}

/// Largest compiled regex a request may use (bytes of the regex crate's program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a request's pattern within the size limit.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

impl Filter {
    pub fn matches(&self, time: SystemTime, text: &str, line: &Classified) -> bool {
        if self.since.is_some_and(|since| time < since) {
            return false;
        }
        if !self.levels.is_empty() && !self.levels.contains(&line.level) {
            return false;
        }
        if let Some(min) = self.min_level
            && line.level.is_none_or(|l| l < min)
        {
            return false;
        }
        if !self.contains.is_empty() && !text.contains(&self.contains) {
            return false;
        }
        if let Some(re) = &self.regex
            && !re.is_match(text)
        {
            return false;
        }
        self.task_id.is_empty()
            || text.contains(&self.task_id)
            || line.context_task.as_deref() == Some(self.task_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn celery_main_process_line() {
        let p = parse("[2024-01-01 12:00:00,123: ERROR/MainProcess] consumer: Cannot connect");
        assert_eq!(p.level, Some(Level::Error));
        assert_eq!(p.time, Some(at("2024-01-01T12:00:00.123Z")));
        assert_eq!(p.task_id, None);
    }

    #[test]
    fn celery_pool_task_line() {
        let p = parse(
            "[2024-01-01 12:00:01,500: ERROR/ForkPoolWorker-1] Task warden_test_app.fail\
             [0f8c5b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f] raised unexpected: RuntimeError('x')",
        );
        assert_eq!(p.level, Some(Level::Error));
        assert_eq!(
            p.task_id.as_deref(),
            Some("0f8c5b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f")
        );
    }

    #[test]
    fn celery_warning_and_plain_lines() {
        assert_eq!(
            parse("[2024-01-01 12:00:00,000: WARNING/MainProcess] x").level,
            Some(Level::Warning)
        );
        let plain = parse("Traceback (most recent call last):");
        assert_eq!(plain, Parsed::default());
        assert_eq!(parse("[not a header] x").level, None);
    }

    #[test]
    fn json_level_field() {
        let p = parse(r#"{"level":"warn","msg":"slow","n":3}"#);
        assert_eq!(p.level, Some(Level::Warning));
        assert!(p.fields.contains(&("msg".into(), "slow".into())));
        assert!(p.fields.contains(&("n".into(), "3".into())));
    }

    #[test]
    fn json_levelname_and_asctime() {
        let p = parse(r#"{"levelname":"ERROR","asctime":"2024-01-01 12:00:00,123","message":"x"}"#);
        assert_eq!(p.level, Some(Level::Error));
        assert_eq!(p.time, Some(at("2024-01-01T12:00:00.123Z")));
    }

    #[test]
    fn json_severity_and_timestamp() {
        let p = parse(r#"{"severity":"FATAL","timestamp":"2024-01-01T12:00:00Z"}"#);
        assert_eq!(p.level, Some(Level::Critical));
        assert_eq!(p.time, Some(at("2024-01-01T12:00:00Z")));
        let p = parse(r#"{"severity":"info","timestamp":1704110400.5}"#);
        assert_eq!(p.level, Some(Level::Info));
        assert_eq!(p.time, Some(at("2024-01-01T12:00:00.5Z")));
    }

    #[test]
    fn json_time_field() {
        let p = parse(r#"{"level":"debug","time":"2024-01-01T12:00:00.250+00:00"}"#);
        assert_eq!(p.level, Some(Level::Debug));
        assert_eq!(p.time, Some(at("2024-01-01T12:00:00.250Z")));
    }

    #[test]
    fn loguru_record_level_name() {
        let p = parse(
            r#"{"text":"boom\n","record":{"level":{"name":"CRITICAL","no":50},"time":{"repr":"x","timestamp":1704110400.0},"extra":{"task_id":"abc-1"}}}"#,
        );
        assert_eq!(p.level, Some(Level::Critical));
        assert_eq!(p.time, Some(at("2024-01-01T12:00:00Z")));
        assert_eq!(p.task_id.as_deref(), Some("abc-1"));
    }

    #[test]
    fn json_task_id_at_the_top() {
        let p = parse(r#"{"level":"info","task_id":"t-1"}"#);
        assert_eq!(p.task_id.as_deref(), Some("t-1"));
    }

    #[test]
    fn json_task_id_under_extra() {
        let p = parse(r#"{"level":"info","extra":{"task_id":"t-2"}}"#);
        assert_eq!(p.task_id.as_deref(), Some("t-2"));
    }

    #[test]
    fn json_that_is_not_an_object_is_text() {
        assert_eq!(parse("[1, 2]"), Parsed::default());
        assert_eq!(parse("{broken").level, None);
    }

    #[test]
    fn tracebacks_inherit_level_and_task_from_their_source() {
        let mut c = Classifier::default();
        let err = c.classify(
            "pid:1",
            "[2024-01-01 12:00:00,000: ERROR/ForkPoolWorker-1] Task t[aaaa-1111] raised",
        );
        let other = c.classify("pid:2", "Traceback (most recent call last):");
        let tb = c.classify("pid:1", "Traceback (most recent call last):");
        assert_eq!(err.level, Some(Level::Error));
        assert_eq!(other.level, None);
        assert_eq!(tb.level, Some(Level::Error));
        assert_eq!(tb.context_task.as_deref(), Some("aaaa-1111"));
        assert_eq!(tb.parsed.level, None);
        let info = c.classify("pid:1", "[2024-01-01 12:00:00,000: INFO/MainProcess] ok");
        assert_eq!((info.level, info.context_task), (Some(Level::Info), None));
    }

    #[test]
    fn filters_combine() {
        let mut c = Classifier::default();
        let now = SystemTime::now();
        let text = "[2024-01-01 12:00:00,000: ERROR/MainProcess] Task t[abcd-12] failed";
        let line = c.classify("s", text);
        let pass = |f: &Filter| f.matches(now, text, &line);
        assert!(pass(&Filter::default()));
        assert!(pass(&Filter {
            min_level: Some(Level::Warning),
            ..Default::default()
        }));
        assert!(!pass(&Filter {
            min_level: Some(Level::Critical),
            ..Default::default()
        }));
        assert!(!pass(&Filter {
            levels: vec![Some(Level::Info), None],
            ..Default::default()
        }));
        assert!(pass(&Filter {
            contains: "failed".into(),
            regex: Some(compile_regex("^\\[.*ERROR").unwrap()),
            task_id: "abcd-12".into(),
            ..Default::default()
        }));
        assert!(!pass(&Filter {
            task_id: "other".into(),
            ..Default::default()
        }));
        assert!(!pass(&Filter {
            since: Some(now + std::time::Duration::from_secs(1)),
            ..Default::default()
        }));
        // Unknown level passes a minimum never; passes `levels` only when asked for.
        let plain = c.classify("t", "plain");
        assert!(
            !Filter {
                min_level: Some(Level::Trace),
                ..Default::default()
            }
            .matches(now, "plain", &plain)
        );
        assert!(
            Filter {
                levels: vec![None],
                ..Default::default()
            }
            .matches(now, "plain", &plain)
        );
    }

    #[test]
    fn oversized_regexes_are_refused() {
        assert!(compile_regex("(").is_err());
        assert!(compile_regex("\\w{1000}\\w{1000}\\w{1000}").is_err());
    }
}
