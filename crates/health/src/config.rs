//! The health engine's settings, as the binary reads them from its TOML file (`[health]`).
//!
//! Every threshold has a default (below, and in [`Limits::default`]); `[health.defaults]`
//! changes it for every worker and `[[health.overrides]]` for some (see
//! [`crate::overrides`] for which override wins).
//!
//! Thresholds fire when the observed value *reaches* them: a ceiling (CPU, memory, error
//! rate, lateness, ...) at `observed >= threshold`, a floor (throughput) at
//! `observed <= threshold`, and a forecast when the limit is reached within the horizon
//! (`eta <= horizon`). So `cpu_warning = 80` turns 80.0 % into a warning and 79.9 % not.
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

use crate::checks::CHECK_IDS;

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How often every worker is evaluated. Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// What one WARNING finding takes off the score of 1. Default 0.15.
    pub warning_weight: f64,
    /// What one CRITICAL finding takes off the score of 1. Default 0.5.
    pub critical_weight: f64,
    /// `[health.defaults]`: thresholds for every worker (unset ones keep the built-in default).
    pub defaults: Settings,
    /// `[[health.overrides]]`: thresholds for the workers of a group, of a queue, or whose name
    /// matches a glob pattern.
    pub overrides: Vec<Override>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            warning_weight: 0.15,
            critical_weight: 0.5,
            defaults: Settings::default(),
            overrides: Vec::new(),
        }
    }
}

/// A configuration the engine cannot run with; the text names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("health: {at}: {field}: {reason}")]
    Invalid {
        /// "[health]", "[health.defaults]" or "[[health.overrides]] #2 (group \"video\")".
        at: String,
        field: &'static str,
        reason: String,
    },
}

fn invalid(at: &str, field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.to_string(),
        field,
        reason: reason.into(),
    }
}

/// Declares the thresholds once: the resolved [`Limits`] (with defaults), the partial
/// [`Settings`] of `[health.defaults]`, and [`Override`] (the same keys plus a selector).
macro_rules! limits {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $ty:ty = $default:expr $(, with $with:literal)? ;
    )*) => {
        /// The thresholds that apply to one worker, every one resolved.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Limits {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Limits {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        impl Limits {
            /// `self` with every value `settings` gives on top.
            pub fn apply(&mut self, settings: &Settings) {
                $( if let Some(v) = &settings.$name { self.$name = v.clone(); } )*
            }
        }

        /// Thresholds some of which are set (`[health.defaults]`); unset ones come from the
        /// level below.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                $( #[serde(deserialize_with = $with)] )?
                pub $name: Option<$ty>,
            )*
        }

        /// One `[[health.overrides]]` entry: exactly one selector (`group`, `queue` or
        /// `worker`) and the thresholds it changes.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Override {
            /// The workers of this group (exact name).
            pub group: Option<String>,
            /// The workers consuming this queue (exact name).
            pub queue: Option<String>,
            /// The workers whose name (Celery node name, Streams consumer name) matches this
            /// glob pattern, e.g. `"batch-*@*"`.
            pub worker: Option<String>,
            $(
                $(#[doc = $doc])*
                $( #[serde(deserialize_with = $with)] )?
                pub $name: Option<$ty>,
            )*
        }

        impl Override {
            /// Its thresholds, without the selector.
            pub fn settings(&self) -> Settings {
                Settings { $( $name: self.$name.clone(), )* }
            }
        }
    };
}

limits! {
    /// Heartbeat lateness (silence beyond the worker's announced heartbeat period) that is a
    /// WARNING. Default 30 s.
    heartbeat_warning: Duration = Duration::from_secs(30), with "opt_duration";
    /// Heartbeat lateness that is CRITICAL. Default 60 s.
    heartbeat_critical: Duration = Duration::from_secs(60), with "opt_duration";
    /// CPU (percent of the worker's allowed cores, see `cpu_cores`) that is a WARNING.
    /// Default 80.
    cpu_warning: f64 = 80.0;
    /// CPU that is CRITICAL. Default 95.
    cpu_critical: f64 = 95.0;
    /// The cores a worker may use: its CPU (measured in percent of one core, so up to
    /// 100 × cores) is divided by this before the comparison. 0 (default) = derive it: the
    /// pool's concurrency for a process pool (prefork), else 1 (solo, threads, gevent,
    /// eventlet, unknown pool, Redis Streams workers).
    cpu_cores: f64 = 0.0;
    /// Memory in percent of the worker's memory limit (as the resource source reports it)
    /// that is a WARNING. Default 85.
    memory_warning: f64 = 85.0;
    /// Memory in percent of its limit that is CRITICAL. Default 95.
    memory_critical: f64 = 95.0;
    /// An absolute memory limit in bytes: memory (the resident set of the worker and its
    /// pool children, as the resource source measures it) at or above it is CRITICAL, and
    /// the forecast takes it as the limit when it is lower than the reported one.
    /// 0 (default) = none.
    memory_bytes: u64 = 0;
    /// GPU memory in percent that is CRITICAL. Default 90.
    gpu_memory_critical: f64 = 90.0;
    /// Disk use in percent that is a WARNING. Default 90.
    disk_warning: f64 = 90.0;
    /// Disk use in percent that is CRITICAL. Default 95.
    disk_critical: f64 = 95.0;
    /// Share of failed tasks (failed / (succeeded + failed), 0 to 1) over the last 5 minutes
    /// that is a WARNING. Default 0.10.
    error_rate_warning: f64 = 0.10;
    /// Share of failed tasks over the last 5 minutes that is CRITICAL. Default 0.20.
    error_rate_critical: f64 = 0.20;
    /// Tasks that must have finished in the last 5 minutes before the error rate and the p95
    /// runtime are judged: one failure out of two tasks is no evidence. Default 10.
    min_tasks: u32 = 10;
    /// p95 runtime over the last 5 minutes at or above this multiple of the worker's own 24 h
    /// baseline is a WARNING. Default 2.0.
    latency_factor: f64 = 2.0;
    /// Throughput over the last 5 minutes at or below this share of the worker's own 24 h
    /// baseline, while one of its queues holds messages, is a WARNING. Default 0.5.
    throughput_factor: f64 = 0.5;
    /// A worker that is alive, runs no task, and has started none for this long while a
    /// queue it consumes holds messages is STALLED (CRITICAL). Counted from its last sign of
    /// progress or from when the queue became non-empty, whichever is later. Default 60 s.
    stalled_after: Duration = Duration::from_secs(60), with "opt_duration";
    /// The queues the worker must consume (usually set per group). Empty (default) = any:
    /// it must consume at least one queue once its queues are known.
    expected_queues: Vec<String> = Vec::new();
    /// A forecast that memory or disk reaches its limit within this horizon is a WARNING.
    /// Default 30 min.
    forecast_horizon: Duration = Duration::from_secs(30 * 60), with "opt_duration";
    /// The samples the forecast fits a line to: those of the last `forecast_window`.
    /// Default 10 min.
    forecast_window: Duration = Duration::from_secs(10 * 60), with "opt_duration";
    /// Fewest samples in the window for a forecast. Default 5.
    forecast_min_points: u32 = 5;
    /// Checks not run for these workers, by id ("cpu", "throughput", ...). Default none.
    disable: Vec<String> = Vec::new();
}

/// A duration in the humantime form the rest of the file uses ("30s", "1m30s", "10m").
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| D::Error::custom(format!("{e} (examples: 30s, 1m30s, 10m)")))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl HealthConfig {
    /// Checks every value, so that a bad file fails at start-up with the setting's name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at = "[health]";
        if self.interval.is_zero() {
            return Err(invalid(at, "interval", "must be more than 0"));
        }
        for (field, w) in [
            ("warning_weight", self.warning_weight),
            ("critical_weight", self.critical_weight),
        ] {
            if !(0.0..=1.0).contains(&w) {
                return Err(invalid(at, field, format!("{w} is not within 0 to 1")));
            }
        }
        validate_settings("[health.defaults]", &self.defaults)?;
        let mut base = Limits::default();
        base.apply(&self.defaults);
        validate_pairs("[health.defaults]", &base)?;
        for (i, o) in self.overrides.iter().enumerate() {
            let at = override_label(i, o);
            let selectors = [&o.group, &o.queue, &o.worker]
                .iter()
                .filter(|s| s.is_some())
                .count();
            if selectors != 1 {
                return Err(invalid(
                    &at,
                    "group/queue/worker",
                    "give exactly one of group, queue or worker",
                ));
            }
            if let Some(pattern) = &o.worker {
                globset::Glob::new(pattern)
                    .map_err(|e| invalid(&at, "worker", format!("bad glob pattern: {e}")))?;
            }
            validate_settings(&at, &o.settings())?;
        }
        Ok(())
    }
}

/// How an override is named in errors: its place in the file and its selector.
pub(crate) fn override_label(index: usize, o: &Override) -> String {
    let selector = match (&o.group, &o.queue, &o.worker) {
        (Some(g), _, _) => format!(" (group {g:?})"),
        (_, Some(q), _) => format!(" (queue {q:?})"),
        (_, _, Some(w)) => format!(" (worker {w:?})"),
        _ => String::new(),
    };
    format!("[[health.overrides]] #{}{selector}", index + 1)
}

/// Each value given in one table, on its own.
fn validate_settings(at: &str, s: &Settings) -> Result<(), ConfigError> {
    let percents = [
        ("cpu_warning", s.cpu_warning),
        ("cpu_critical", s.cpu_critical),
        ("memory_warning", s.memory_warning),
        ("memory_critical", s.memory_critical),
        ("gpu_memory_critical", s.gpu_memory_critical),
        ("disk_warning", s.disk_warning),
        ("disk_critical", s.disk_critical),
        ("cpu_cores", s.cpu_cores),
    ];
    for (field, v) in percents {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(invalid(at, field, format!("{v} must be a number ≥ 0")));
        }
    }
    for (field, v) in [
        ("error_rate_warning", s.error_rate_warning),
        ("error_rate_critical", s.error_rate_critical),
    ] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            return Err(invalid(
                at,
                field,
                format!("{v} is not a share from 0 to 1 (0.1 = 10 %)"),
            ));
        }
    }
    for (field, v) in [
        ("latency_factor", s.latency_factor),
        ("throughput_factor", s.throughput_factor),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(invalid(at, field, format!("{v} must be a number > 0")));
        }
    }
    for (field, v) in [
        ("heartbeat_warning", s.heartbeat_warning),
        ("heartbeat_critical", s.heartbeat_critical),
        ("stalled_after", s.stalled_after),
        ("forecast_horizon", s.forecast_horizon),
        ("forecast_window", s.forecast_window),
    ] {
        if v.is_some_and(|d| d.is_zero()) {
            return Err(invalid(at, field, "must be more than 0"));
        }
    }
    if s.forecast_min_points.is_some_and(|n| n < 2) {
        return Err(invalid(
            at,
            "forecast_min_points",
            "a line needs at least 2 points",
        ));
    }
    for id in s.disable.iter().flatten() {
        if !CHECK_IDS.contains(&id.as_str()) {
            return Err(invalid(
                at,
                "disable",
                format!("unknown check {id:?} (known: {})", CHECK_IDS.join(", ")),
            ));
        }
    }
    // A warning above its critical never shows (critical is judged first): say so when one
    // table sets both.
    let mut both = Limits::default();
    both.apply(s);
    let pairs_set = [
        s.heartbeat_warning.is_some() && s.heartbeat_critical.is_some(),
        s.cpu_warning.is_some() && s.cpu_critical.is_some(),
        s.memory_warning.is_some() && s.memory_critical.is_some(),
        s.disk_warning.is_some() && s.disk_critical.is_some(),
        s.error_rate_warning.is_some() && s.error_rate_critical.is_some(),
    ];
    if pairs_set.iter().any(|b| *b) {
        validate_pairs_where(at, &both, pairs_set)?;
    }
    Ok(())
}

fn validate_pairs(at: &str, l: &Limits) -> Result<(), ConfigError> {
    validate_pairs_where(at, l, [true; 5])
}

fn validate_pairs_where(at: &str, l: &Limits, which: [bool; 5]) -> Result<(), ConfigError> {
    let pairs = [
        (
            "heartbeat_warning",
            l.heartbeat_warning.as_secs_f64(),
            l.heartbeat_critical.as_secs_f64(),
        ),
        ("cpu_warning", l.cpu_warning, l.cpu_critical),
        ("memory_warning", l.memory_warning, l.memory_critical),
        ("disk_warning", l.disk_warning, l.disk_critical),
        (
            "error_rate_warning",
            l.error_rate_warning,
            l.error_rate_critical,
        ),
    ];
    for ((field, warning, critical), check) in pairs.into_iter().zip(which) {
        if check && warning > critical {
            return Err(invalid(
                at,
                field,
                format!("{warning} is above its critical threshold {critical}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HealthConfig, String> {
        #[derive(Deserialize)]
        struct File {
            health: HealthConfig,
        }
        toml::from_str::<File>(text)
            .map(|f| f.health)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_table_is_every_default() {
        let config = parse("[health]\n").unwrap();
        assert_eq!(config, HealthConfig::default());
        config.validate().unwrap();
        let l = Limits::default();
        assert_eq!(l.heartbeat_warning, Duration::from_secs(30));
        assert_eq!(l.heartbeat_critical, Duration::from_secs(60));
        assert_eq!((l.cpu_warning, l.cpu_critical), (80.0, 95.0));
        assert_eq!((l.memory_warning, l.memory_critical), (85.0, 95.0));
        assert_eq!(l.gpu_memory_critical, 90.0);
        assert_eq!((l.disk_warning, l.disk_critical), (90.0, 95.0));
        assert_eq!((l.error_rate_warning, l.error_rate_critical), (0.10, 0.20));
        assert_eq!(l.min_tasks, 10);
        assert_eq!((l.latency_factor, l.throughput_factor), (2.0, 0.5));
        assert_eq!(l.stalled_after, Duration::from_secs(60));
        assert_eq!(l.forecast_horizon, Duration::from_secs(1800));
        assert_eq!(l.forecast_window, Duration::from_secs(600));
        assert_eq!(l.forecast_min_points, 5);
    }

    #[test]
    fn the_documented_example_parses() {
        let config = parse(
            r#"
            [health]
            interval = "15s"
            warning_weight = 0.1
            critical_weight = 0.6

            [health.defaults]
            cpu_warning = 85
            memory_bytes = 2147483648
            stalled_after = "2m"

            [[health.overrides]]
            group = "video"
            cpu_cores = 4
            expected_queues = ["video", "video.priority"]

            [[health.overrides]]
            queue = "gpu"
            gpu_memory_critical = 97.5

            [[health.overrides]]
            worker = "batch-*@*"
            disable = ["throughput"]
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.defaults.cpu_warning, Some(85.0));
        assert_eq!(config.defaults.memory_bytes, Some(2 << 30));
        assert_eq!(
            config.defaults.stalled_after,
            Some(Duration::from_secs(120))
        );
        assert_eq!(config.overrides.len(), 3);
        assert_eq!(
            config.overrides[0].expected_queues.as_deref(),
            Some(&["video".to_string(), "video.priority".to_string()][..])
        );
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let e = parse("[health.defaults]\ncpu_warnin = 80\n").unwrap_err();
        assert!(e.contains("cpu_warnin"), "{e}");
        let e = parse("[health]\ninterval = \"soon\"\n").unwrap_err();
        assert!(e.contains("examples"), "{e}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let check = |text: &str, field: &str| {
            let e = parse(text).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        };
        check("[health.defaults]\ncpu_warning = 96\n", "cpu_warning");
        check(
            "[health.defaults]\nerror_rate_critical = 20\n",
            "error_rate_critical",
        );
        check(
            "[health.defaults]\nforecast_min_points = 1\n",
            "forecast_min_points",
        );
        check("[health.defaults]\ndisable = [\"cpux\"]\n", "disable");
        check("[health]\ninterval = \"0s\"\n", "interval");
        check("[[health.overrides]]\ncpu_warning = 50\n", "exactly one");
        check(
            "[[health.overrides]]\ngroup = \"a\"\nqueue = \"b\"\n",
            "exactly one",
        );
        check("[[health.overrides]]\nworker = \"a[\"\n", "glob");
        check(
            "[[health.overrides]]\ngroup = \"g\"\ncpu_warning = 99\ncpu_critical = 98\n",
            "cpu_warning",
        );
    }
}
