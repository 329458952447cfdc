//! A worker's verdict from its findings: the worst status and a score.
use std::time::SystemTime;

use warden_core::{Finding, Health, HealthStatus};

/// What one finding takes off the score of 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Default 0.15.
    pub warning: f64,
    /// Default 0.5.
    pub critical: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            warning: 0.15,
            critical: 0.5,
        }
    }
}

impl Weights {
    fn of(&self, finding: &Finding) -> f64 {
        if finding.error {
            return 0.0;
        }
        match finding.status {
            HealthStatus::Healthy => 0.0,
            HealthStatus::Warning => self.warning,
            HealthStatus::Critical => self.critical,
        }
    }
}

/// The worst status among the findings; error findings (a check that could not run) and
/// informational ones do not count.
pub fn status(findings: &[Finding]) -> HealthStatus {
    findings
        .iter()
        .filter(|f| !f.error)
        .map(|f| f.status)
        .max()
        .unwrap_or(HealthStatus::Healthy)
}

/// 1 − Σ weights of the findings, clamped to [0, 1].
pub fn score(findings: &[Finding], weights: Weights) -> f64 {
    let taken: f64 = findings.iter().map(|f| weights.of(f)).sum();
    (1.0 - taken).clamp(0.0, 1.0)
}

pub fn verdict(
    findings: Vec<Finding>,
    passing: Vec<&'static str>,
    weights: Weights,
    now: SystemTime,
) -> Health {
    Health {
        status: status(&findings),
        score: score(&findings, weights),
        findings,
        passing,
        evaluated_at: now,
    }
}
