//! The `[alerts]` config section: defaults, an example file, and refusals naming the field.
mod support;

use std::time::Duration;

use support::*;
use warden_alerts::{AlertEngine, AlertsConfig, RuleKind, rules::BUILTIN_IDS};
use warden_core::history::Severity;

pub const EXAMPLE: &str = r#"
[alerts]
startup_grace = "90s"
group_by = ["rule", "group"]
group_wait = "1s"
group_interval = "30s"
repeat_interval = "4h"
default_receiver = "oncall-slack"
escalate_after = "5m"
escalation_receivers = ["oncall-pagerduty"]
max_resolved = 10000
silence_retention = "120h"

[alerts.rules.worker_lost]
receivers = ["oncall-pagerduty"]
annotations = { runbook_url = "https://runbooks.example/worker-lost" }

[alerts.rules.cpu]
enabled = false

[alerts.rules.group_min_workers]
min_workers = 2
notify_on_scale_down = false
scope = { groups = ["payments"] }

[alerts.rules.queue_backlog]
max_depth = 5000
max_age = "10m"
for = "5m"

[alerts.rules.batch_error_rate]
check = "metric"
description = "Batch workers failing too many tasks"
metric = "error_rate"
op = ">="
value = 0.25
for = "10m"
keep_firing_for = "2m"
severity = "critical"
labels = { team = "data" }
summary = "{worker}: error rate {value}"
scope = { workers = ["batch-*@*"], queues = ["etl"] }

[[alerts.routes]]
match = { team = "data" }
min_severity = "warning"
receivers = ["data-email"]

[[alerts.inhibit]]
source_match = { rule = "broker_unreachable" }
target_match_re = { rule = "heartbeat|worker_lost|queue_connection|stalled|group_min_workers" }
"#;

#[test]
fn defaults_are_documented_values() {
    let cfg = AlertsConfig::default();
    assert_eq!(cfg.startup_grace, Duration::from_secs(90));
    assert_eq!(cfg.group_by, ["rule", "group"]);
    assert_eq!(cfg.group_wait, Duration::from_secs(1));
    assert_eq!(cfg.group_interval, Duration::from_secs(30));
    assert_eq!(cfg.repeat_interval, Duration::from_secs(4 * 3600));
    assert_eq!(cfg.escalate_after, Duration::from_secs(300));
    assert_eq!(cfg.max_resolved, 10_000);
    assert_eq!(cfg.inhibit.len(), 2);
    assert_eq!(
        config_toml("[alerts]\n"),
        cfg,
        "an empty section is the defaults"
    );

    let engine = AlertEngine::new(cfg, t0()).unwrap();
    let ids: Vec<&str> = engine.rules().iter().map(|r| r.id.as_str()).collect();
    let mut builtin = BUILTIN_IDS.to_vec();
    builtin.sort();
    assert_eq!(ids, builtin);
    assert!(engine.rules().iter().all(|r| r.enabled));
    let group = engine.rule("group_min_workers").unwrap();
    assert_eq!(
        group.kind,
        RuleKind::GroupMinWorkers {
            min_workers: 1,
            notify_on_scale_down: false
        }
    );
    assert_eq!(group.check, "group_min_workers");
    let heartbeat = engine.rule("heartbeat").unwrap();
    assert!(heartbeat.severity_from_finding);
    assert_eq!(heartbeat.repeat_interval, Duration::from_secs(4 * 3600));
}

#[test]
fn example_file_parses_into_rules() {
    let engine = AlertEngine::new(config_toml(EXAMPLE), t0()).unwrap();
    assert_eq!(engine.rules().len(), 19);
    assert!(!engine.rule("cpu").unwrap().enabled);
    let lost = engine.rule("worker_lost").unwrap();
    assert_eq!(lost.receivers, ["oncall-pagerduty"]);
    assert_eq!(
        lost.annotations["runbook_url"],
        "https://runbooks.example/worker-lost"
    );
    let custom = engine.rule("alertRules/batch_error_rate").unwrap();
    assert_eq!(custom.severity, Severity::Critical);
    assert_eq!(custom.for_duration, Duration::from_secs(600));
    assert_eq!(custom.keep_firing_for, Duration::from_secs(120));
    assert_eq!(custom.expression, "error_rate >= 0.25 for 10m");
    assert_eq!(custom.check, "metric");
    assert!(custom.scope.worker_ok("batch-3@host-1"));
    assert!(!custom.scope.worker_ok("web-3@host-1"));
    let backlog = engine.rule("queue_backlog").unwrap();
    assert_eq!(
        backlog.kind,
        RuleKind::QueueBacklog {
            max_depth: Some(5000),
            max_age: Some(Duration::from_secs(600))
        }
    );
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let field = |toml: &str| {
        AlertEngine::new(config_toml(toml), t0())
            .expect_err("refused")
            .field
    };
    assert_eq!(
        field("[alerts.rules.MyRule]\ncheck = \"metric\""),
        "alerts.rules.MyRule"
    );
    assert_eq!(
        field("[alerts.rules.x]\nfor = \"1m\""),
        "alerts.rules.x.check"
    );
    assert_eq!(
        field("[alerts.rules.x]\ncheck = \"nope\""),
        "alerts.rules.x.check"
    );
    assert_eq!(
        field("[alerts.rules.x]\ncheck = \"metric\"\nmetric = \"bogus\"\nvalue = 1"),
        "alerts.rules.x.metric"
    );
    assert_eq!(
        field("[alerts.rules.x]\ncheck = \"metric\"\nmetric = \"cpu_percent\""),
        "alerts.rules.x.value"
    );
    assert_eq!(
        field(
            "[alerts.rules.x]\ncheck = \"metric\"\nmetric = \"cpu_percent\"\nvalue = 1\nop = \"==\""
        ),
        "alerts.rules.x.op"
    );
    assert_eq!(
        field("[alerts.rules.cpu]\ncheck = \"memory\""),
        "alerts.rules.cpu.check"
    );
    assert_eq!(
        field("[alerts.rules.cpu]\nlabels = { rule = \"x\" }"),
        "alerts.rules.cpu.labels.rule"
    );
    assert_eq!(
        field("[[alerts.routes]]\nmatch_re = { group = \"(\" }\nreceivers = [\"x\"]"),
        "alerts.routes[0].match_re.group"
    );
    assert_eq!(
        field("[[alerts.routes]]\nmatch = { a = \"b\" }"),
        "alerts.routes[0].receivers"
    );
    assert_eq!(
        field("[alerts]\nstartup_grace = \"400d\""),
        "alerts.startup_grace"
    );
    assert_eq!(
        field("[alerts.rules.cpu]\nfor = \"366d\""),
        "alerts.rules.cpu.for"
    );
    // Serde-level errors: unknown fields and malformed durations or severities.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct File {
        alerts: AlertsConfig,
    }
    for bad in [
        "[alerts]\ngroup_wait = \"soon\"",
        "[alerts]\nunknown = 1",
        "[alerts.rules.cpu]\nseverity = \"loud\"",
    ] {
        assert!(toml::from_str::<File>(bad).is_err(), "{bad}");
    }
}
