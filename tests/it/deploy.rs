//! The files under deploy/ stay true to warden: promtool accepts the alerting rules and the
//! Prometheus configuration, the Grafana dashboard parses, and every metric that a panel,
//! a rule or the KEDA example queries is one warden's /metrics exports.

use std::{collections::BTreeSet, process::Command};

use crate::support::*;
use warden::{
    fleet::state::FleetState,
    metrics::{
        Metrics,
        fleet::{ExportOptions, Format},
    },
};

/// Every series name warden's exposition can carry (histograms with their three suffixes).
fn exported_names() -> BTreeSet<String> {
    let snapshot = FleetState::with_limits(std::time::SystemTime::now(), 1, 10)
        .snapshot()
        .clone();
    // A labelled family appears once it has a series: give each one.
    let metrics = Metrics::new();
    metrics.event_applied("worker-heartbeat");
    metrics.message_rejected("event", "malformed");
    metrics.inspect_round("ok");
    metrics.broker_probe("ok");
    warden::fleet::recorder::RecorderGauges::write(&metrics, true, 1);
    let text = metrics.exposition(Some((&snapshot, ExportOptions::default())), Format::Text);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// The metric names (`celery_*`, `warden_*`) a text mentions.
fn mentioned(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("celery_") || t.starts_with("warden_"))
        .map(String::from)
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str]) {
    let (ok, stdout, stderr) =
        run_blocking(Command::new("promtool").args(args).current_dir(repo()));
    assert!(ok, "promtool {args:?}: {stdout}{stderr}");
}

#[test]
fn promtool_accepts_the_rules_and_the_prometheus_config() {
    promtool(&["check", "rules", "deploy/prometheus/rules.yml"]);
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

#[test]
fn every_queried_metric_is_one_warden_exports() {
    let exported = exported_names();
    assert!(
        exported.contains("celery_task_runtime_bucket"),
        "{exported:?}"
    );
    assert!(exported.contains("warden_broker_up"), "{exported:?}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/warden-dashboard.json"))
            .expect("dashboard JSON parses");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        let exprs: Vec<String> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str().map(String::from))
            .collect();
        assert!(!exprs.is_empty(), "panel {title:?} has no query");
        for expr in exprs {
            assert!(
                !mentioned(&expr).is_empty(),
                "panel {title:?} queries no warden metric: {expr}"
            );
            queries.push((format!("panel {title:?}"), expr));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = variable["query"]["query"].as_str() {
            queries.push((format!("variable {}", variable["name"]), q.to_string()));
        }
    }
    for file in [
        "deploy/prometheus/rules.yml",
        "deploy/kubernetes/keda-scaledobject.yaml",
    ] {
        queries.push((file.to_string(), read(file)));
    }
    for (place, query) in queries {
        for name in mentioned(&query) {
            assert!(
                exported.contains(&name),
                "{place} names {name}, which warden does not export"
            );
        }
    }
}
