//! The Alerts service and Control's recovery policy against a real warden: workers fed into
//! the fleet go LOST and raise `worker_lost`; over gRPC the alert is listed FIRING with its
//! labels, notified through a real webhook receiver (an in-test HTTP sink) and listed as a
//! delivery, acknowledged (audited with its actor, replayed by request id, dry run changing
//! nothing, refused to a viewer and the refusal audited), silenced by a matcher on `worker`
//! (exactly that alert), the silence expired; rules are paged; bad requests name their field;
//! the recovery policy round-trips with an etag. `warden alerts list|ack|silence` drive the
//! same service.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt as _;
use warden::{
    config::{Role, Secret, Token},
    fleet::{Backend, WorkerEventKind, WorkerKey},
    proto::v1::{self as pb, alerts_client::AlertsClient, control_client::ControlClient},
};

use crate::support::*;

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
/// Fed workers live in a scope of their own (see `worker_event`).
const SCOPE: &str = "alerts";
const DEADLINE: Duration = Duration::from_secs(30);

fn as_<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn tokens() -> Vec<Token> {
    [
        ("ci-viewer", Role::Viewer, VIEWER),
        ("ci-operator", Role::Operator, OPERATOR),
        ("ci-admin", Role::Admin, ADMIN),
    ]
    .into_iter()
    .map(|(name, role, secret)| Token {
        name: name.into(),
        role,
        secret: Secret::new(secret),
    })
    .collect()
}

/// An HTTP sink for the webhook receiver: counts the notifications it accepts.
async fn sink() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move || {
                let received = received.clone();
                async move {
                    received.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, received, task)
}

fn key(id: &str) -> WorkerKey {
    WorkerKey::new(Backend::Celery, SCOPE, id)
}

/// The field an INVALID_ARGUMENT names (in its BadRequest detail).
fn field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations[0]
        .field
        .clone()
}

fn resource_type(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    status
        .get_error_details()
        .resource_info()
        .unwrap()
        .resource_type
        .clone()
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .unwrap()
        .reason
        .clone()
}

async fn firing_lost(alerts: &AlertsClient<Channel>, worker: &str) -> pb::Alert {
    let worker = worker.to_string();
    eventually(
        DEADLINE,
        &format!("worker_lost firing for {worker}"),
        || {
            let mut alerts = alerts.clone();
            let worker = worker.clone();
            async move {
                let r = alerts
                    .list_alerts(as_(
                        VIEWER,
                        pb::ListAlertsRequest {
                            rule: "alertRules/worker_lost".into(),
                            worker: worker.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("ListAlerts")
                    .into_inner();
                r.alerts
                    .into_iter()
                    .find(|a| a.state() == pb::AlertState::Firing)
            }
        },
    )
    .await
}

async fn audit_of(
    control: &mut ControlClient<Channel>,
    actor: &str,
    action: &str,
) -> Vec<pb::AuditEntry> {
    control
        .list_audit(as_(
            OPERATOR,
            pb::ListAuditRequest {
                actor: actor.into(),
                action: action.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("ListAudit")
        .into_inner()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_acknowledged_silenced_and_delivered() {
    let redis = RedisServer::start().await;
    let (port, received, _sink) = sink().await;
    let mut config = test_config(&redis.url(0));
    config.tokens = tokens();
    config.heartbeat_warning = Duration::from_secs(1);
    config.heartbeat_critical = Duration::from_secs(2);
    config.alerts.startup_grace = Duration::ZERO;
    config.alerts.default_receiver = "sink".into();
    config.notify.receivers = vec![warden_notify::ReceiverConfig {
        name: "sink".into(),
        channel: warden_notify::ChannelConfig::Webhook(warden_notify::config::WebhookConfig {
            url: warden_notify::Secret::new(format!("http://127.0.0.1:{port}/hook")),
            secret: None,
            headers: Default::default(),
        }),
        retry: None,
    }];
    let warden = TestWarden::start(config).await;
    let fleet = &warden.inner().fleet;
    for id in ["one@alerts", "two@alerts"] {
        fleet
            .observe(worker_event(
                key(id),
                WorkerEventKind::Online,
                Some(Duration::from_secs(1)),
            ))
            .await
            .expect("the fleet runs");
    }
    let channel = warden.channel().await;
    let mut alerts = AlertsClient::new(channel.clone());
    let mut control = ControlClient::new(channel.clone());
    let one = key("one@alerts").resource_name();
    let two = key("two@alerts").resource_name();

    // Silent past heartbeat_critical: LOST, and worker_lost fires with its labels.
    let lost = firing_lost(&alerts, &one).await;
    let other = firing_lost(&alerts, "two@alerts").await;
    assert_eq!(lost.rule, "alertRules/worker_lost");
    assert_eq!(lost.severity(), pb::Severity::Critical);
    assert_eq!(lost.worker, one);
    assert_eq!(lost.labels["rule"], "worker_lost");
    assert_eq!(lost.labels["severity"], "critical");
    assert_eq!(lost.labels["worker"], one);
    assert!(lost.name.starts_with("alerts/"), "{lost:?}");
    assert!(lost.fired_at.is_some() && lost.started_at.is_some());
    assert_eq!(other.worker, two, "a short id resolves to the worker");

    let got = alerts
        .get_alert(as_(
            VIEWER,
            pb::GetAlertRequest {
                name: lost.name.clone(),
            },
        ))
        .await
        .expect("GetAlert")
        .into_inner()
        .alert
        .unwrap();
    assert_eq!(
        (got.name.as_str(), got.worker.as_str()),
        (lost.name.as_str(), one.as_str())
    );
    let bad = alerts
        .get_alert(as_(
            VIEWER,
            pb::GetAlertRequest {
                name: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(field(&bad), "name");
    let missing = alerts
        .get_alert(as_(
            VIEWER,
            pb::GetAlertRequest {
                name: "alerts/nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(resource_type(&missing), "warden.v1.Alert");

    // Notified through the webhook receiver: a SENT delivery per alert it carried.
    let delivery = eventually(DEADLINE, "a SENT delivery of the alert", || {
        let mut alerts = alerts.clone();
        let name = lost.name.clone();
        async move {
            alerts
                .list_deliveries(as_(
                    VIEWER,
                    pb::ListDeliveriesRequest {
                        alert: name,
                        ..Default::default()
                    },
                ))
                .await
                .expect("ListDeliveries")
                .into_inner()
                .deliveries
                .into_iter()
                .find(|d| d.state() == pb::DeliveryState::Sent)
        }
    })
    .await;
    assert!(received.load(Ordering::SeqCst) >= 1, "the sink got it");
    assert_eq!(delivery.alert, lost.name);
    assert!(
        delivery
            .name
            .starts_with(&format!("{}/deliveries/", lost.name)),
        "{delivery:?}"
    );
    assert_eq!(
        (delivery.channel.as_str(), delivery.receiver.as_str()),
        ("webhook", "sink")
    );
    assert_eq!(delivery.notified_state(), pb::AlertState::Firing);
    assert!(delivery.sent_at.is_some() && delivery.attempts >= 1);
    let unknown = alerts
        .list_deliveries(as_(
            VIEWER,
            pb::ListDeliveriesRequest {
                channels: vec!["carrier-pigeon".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(field(&unknown), "channels[0]");

    // A dry run changes nothing.
    let ack = |dry_run: bool, request_id: &str| pb::AcknowledgeAlertRequest {
        name: lost.name.clone(),
        reason: "looking into it".into(),
        dry_run,
        request_id: request_id.into(),
    };
    let dry = alerts
        .acknowledge_alert(as_(OPERATOR, ack(true, "")))
        .await
        .expect("dry run")
        .into_inner();
    assert!(
        dry.dry_run && dry.alert.as_ref().unwrap().acknowledged,
        "{dry:?}"
    );
    let still = alerts
        .get_alert(as_(
            VIEWER,
            pb::GetAlertRequest {
                name: lost.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .alert
        .unwrap();
    assert!(!still.acknowledged, "the dry run acknowledged it");

    // Acknowledged, with its actor; the same request id replays the same answer.
    let first = alerts
        .acknowledge_alert(as_(OPERATOR, ack(false, "ack-1")))
        .await
        .expect("AcknowledgeAlert")
        .into_inner();
    let acked = first.alert.clone().unwrap();
    assert!(acked.acknowledged && !first.dry_run);
    assert_eq!(acked.acknowledged_by, "ci-operator");
    assert!(acked.acknowledged_at.is_some());
    let replay = alerts
        .acknowledge_alert(as_(OPERATOR, ack(false, "ack-1")))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay, first, "a replay answers as the first call");
    let reused = alerts
        .acknowledge_alert(as_(
            OPERATOR,
            pb::AcknowledgeAlertRequest {
                reason: "something else".into(),
                ..ack(false, "ack-1")
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    let entries = audit_of(&mut control, "ci-operator", "AcknowledgeAlert").await;
    let entry = entries
        .iter()
        .find(|e| e.id == first.audit_id)
        .unwrap_or_else(|| panic!("the acknowledgement's audit entry: {entries:?}"));
    assert_eq!(entry.service, "Alerts");
    assert!(entry.allowed);
    assert_eq!(entry.targets, vec![lost.name.clone()]);
    assert_eq!(entry.request_id, "ack-1");
    assert_eq!(entry.outcome.as_ref().unwrap().code, "OK");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.request_id == "ack-1" && e.outcome.as_ref().unwrap().code == "OK")
            .count(),
        1,
        "the replay acted (and was audited) once; the reused id was refused: {entries:?}"
    );
    let acked_list = alerts
        .list_alerts(as_(
            VIEWER,
            pb::ListAlertsRequest {
                acknowledged: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(
        acked_list
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        vec![lost.name.as_str()]
    );

    // A viewer may not acknowledge; the refusal is audited.
    let denied = alerts
        .unacknowledge_alert(as_(
            VIEWER,
            pb::UnacknowledgeAlertRequest {
                name: lost.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let refusals = audit_of(&mut control, "ci-viewer", "UnacknowledgeAlert").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(!refusals[0].allowed);
    assert_eq!(refusals[0].service, "Alerts");
    assert_eq!(
        refusals[0].outcome.as_ref().unwrap().code,
        "PERMISSION_DENIED"
    );
    let unacked = alerts
        .unacknowledge_alert(as_(
            OPERATOR,
            pb::UnacknowledgeAlertRequest {
                name: lost.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("UnacknowledgeAlert")
        .into_inner();
    assert!(!unacked.alert.unwrap().acknowledged);

    // A silence on `worker` (and the rule) covers exactly that alert.
    let silence = |matchers: Vec<pb::SilenceMatcher>,
                   end: Option<pb::create_silence_request::End>| {
        pb::CreateSilenceRequest {
            matchers,
            end,
            reason: "maintenance of two".into(),
            ..Default::default()
        }
    };
    let eq = |label: &str, value: &str| pb::SilenceMatcher {
        label: label.into(),
        operator: pb::MatchOperator::Equal.into(),
        value: value.into(),
    };
    let hour = Some(pb::create_silence_request::End::Duration(
        prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        },
    ));
    let created = alerts
        .create_silence(as_(
            OPERATOR,
            silence(vec![eq("worker", &two), eq("rule", "worker_lost")], hour),
        ))
        .await
        .expect("CreateSilence")
        .into_inner();
    let silenced = created.silence.clone().unwrap();
    assert!(silenced.name.starts_with("silences/"), "{created:?}");
    assert_eq!(silenced.state(), pb::SilenceState::Active);
    assert_eq!(silenced.created_by, "ci-operator");
    assert_eq!(
        silenced.comment, "maintenance of two",
        "the reason by default"
    );
    assert_eq!(created.alerts, vec![other.name.clone()]);
    assert_eq!(created.alerts_total, 1);
    let shown = alerts
        .list_alerts(as_(
            VIEWER,
            pb::ListAlertsRequest {
                silenced: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].name, other.name);
    assert_eq!(shown[0].silenced_by, vec![silenced.name.clone()]);

    // Invalid silences name their field.
    for (request, expected) in [
        (silence(vec![], hour), "matchers"),
        (
            silence(
                vec![pb::SilenceMatcher {
                    label: "worker".into(),
                    operator: pb::MatchOperator::NotEqual.into(),
                    value: "x".into(),
                }],
                hour,
            ),
            "matchers",
        ),
        (silence(vec![eq("worker", &two)], None), "end"),
        (
            silence(
                vec![eq("worker", &two)],
                Some(pb::create_silence_request::End::Duration(
                    prost_types::Duration {
                        seconds: 31 * 86_400,
                        nanos: 0,
                    },
                )),
            ),
            "end",
        ),
    ] {
        let err = alerts
            .create_silence(as_(OPERATOR, request))
            .await
            .unwrap_err();
        assert_eq!(field(&err), expected, "{err:?}");
    }

    // Expired: no longer listed by default, no longer silencing.
    let expired = alerts
        .expire_silence(as_(
            OPERATOR,
            pb::ExpireSilenceRequest {
                name: silenced.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("ExpireSilence")
        .into_inner();
    assert_eq!(expired.silence.unwrap().state(), pb::SilenceState::Expired);
    let active = alerts
        .list_silences(as_(VIEWER, pb::ListSilencesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .silences;
    assert!(active.is_empty(), "{active:?}");
    let all = alerts
        .list_silences(as_(
            VIEWER,
            pb::ListSilencesRequest {
                states: vec![pb::SilenceState::Expired.into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .silences;
    assert_eq!(all.len(), 1);
    let after = alerts
        .get_alert(as_(
            VIEWER,
            pb::GetAlertRequest {
                name: other.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .alert
        .unwrap();
    assert!(!after.silenced && after.silenced_by.is_empty(), "{after:?}");
    let gone = alerts
        .expire_silence(as_(
            OPERATOR,
            pb::ExpireSilenceRequest {
                name: "silences/nope".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(resource_type(&gone), "warden.v1.Silence");

    // The command line: list, acknowledge, silence (a dry run); a viewer is refused.
    let server = warden.grpc_url.clone();
    let cli = |token: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.env_remove("WARDEN_TOKEN")
            .env_remove("WARDEN_SERVER")
            .arg("alerts")
            .args(args)
            .args(["--server", &server, "--token", token, "--output", "json"]);
        cmd
    };
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out).expect(out) };
    let (ok, out, err) = run(&mut cli(VIEWER, &["list", "--worker", "one@alerts"])).await;
    assert!(ok, "{err}");
    let listed = json(&out);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == lost.name.as_str() && a["state"] == "FIRING"),
        "{out}"
    );
    let (ok, _, err) = run(&mut cli(VIEWER, &["ack", &lost.name])).await;
    assert!(!ok && err.contains("PERMISSION_DENIED"), "{err}");
    let (ok, out, err) = run(&mut cli(OPERATOR, &["ack", &lost.name, "--reason", "cli"])).await;
    assert!(ok, "{err}");
    assert_eq!(
        json(&out)["alert"]["acknowledged_by"],
        "ci-operator",
        "{out}"
    );
    let (ok, out, err) = run(&mut cli(
        OPERATOR,
        &[
            "silence",
            &format!("worker={one}"),
            "rule=worker_lost",
            "--for",
            "10m",
            "--dry-run",
        ],
    ))
    .await;
    assert!(ok, "{err}");
    let would = json(&out);
    assert_eq!(would["dry_run"], true, "{out}");
    assert_eq!(would["silence"]["alerts_total"], 1, "{out}");
    assert_eq!(would["silence"]["alerts"][0], lost.name.as_str(), "{out}");

    warden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_paged_and_the_recovery_policy_round_trips() {
    let redis = RedisServer::start().await;
    let mut config = test_config(&redis.url(0));
    config.tokens = tokens();
    let warden = TestWarden::start(config).await;
    let channel = warden.channel().await;
    let mut alerts = AlertsClient::new(channel.clone());
    let mut control = ControlClient::new(channel);

    // 18 rules in pages of 5: 5, 5, 5, 3, sorted by name, each once.
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = alerts
            .list_alert_rules(as_(
                VIEWER,
                pb::ListAlertRulesRequest {
                    page_size: 5,
                    page_token: token.clone(),
                },
            ))
            .await
            .expect("ListAlertRules")
            .into_inner();
        pages += 1;
        assert!(page.rules.len() <= 5);
        names.extend(page.rules.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, names.len()), (4, 18), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "sorted by name, none twice");
    let tampered = alerts
        .list_alert_rules(as_(
            VIEWER,
            pb::ListAlertRulesRequest {
                page_size: 5,
                page_token: "bm90IGEgdG9rZW4".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(field(&tampered), "page_token");
    assert_eq!(reason(&tampered), "PAGE_TOKEN_INVALID");
    let rule = alerts
        .get_alert_rule(as_(
            VIEWER,
            pb::GetAlertRuleRequest {
                name: "alertRules/worker_lost".into(),
            },
        ))
        .await
        .expect("GetAlertRule")
        .into_inner()
        .rule
        .unwrap();
    assert_eq!((rule.check.as_str(), rule.enabled), ("worker_lost", true));
    let missing = alerts
        .get_alert_rule(as_(
            VIEWER,
            pb::GetAlertRuleRequest {
                name: "alertRules/nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(resource_type(&missing), "warden.v1.AlertRule");

    // The recovery policy: off by default (opt-in per group).
    let read = control
        .get_recovery_policy(as_(VIEWER, pb::GetRecoveryPolicyRequest {}))
        .await
        .expect("GetRecoveryPolicy")
        .into_inner()
        .policy
        .unwrap();
    assert!(!read.enabled && read.groups.is_empty(), "{read:?}");
    assert_eq!(read.window.as_ref().map(|w| w.seconds), Some(3600));
    assert!(!read.etag.is_empty());
    let update = |policy: pb::RecoveryPolicy, paths: &[&str]| pb::UpdateRecoveryPolicyRequest {
        policy: Some(policy),
        update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        reason: "opt batch in".into(),
        ..Default::default()
    };
    let wanted = pb::RecoveryPolicy {
        enabled: true,
        groups: vec!["groups/celery/batch".into()],
        critical_for: Some(prost_types::Duration {
            seconds: 61,
            nanos: 0,
        }),
        max_restarts: 5,
        etag: read.etag.clone(),
        ..read.clone()
    };
    let denied = control
        .update_recovery_policy(as_(OPERATOR, update(wanted.clone(), &[])))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "admin only");
    let changed = control
        .update_recovery_policy(as_(ADMIN, update(wanted.clone(), &[])))
        .await
        .expect("UpdateRecoveryPolicy")
        .into_inner();
    let now = changed.policy.unwrap();
    assert!(now.enabled);
    assert_eq!(now.groups, vec!["batch"]);
    assert_eq!(now.max_restarts, 5);
    assert_eq!(
        now.critical_for.as_ref().map(|d| d.seconds),
        Some(90),
        "61 s rounds up to 3 checks of the 30 s health interval"
    );
    assert_eq!(now.updated_by, "ci-admin");
    assert!(now.update_time.is_some());
    assert_ne!(now.etag, read.etag);
    let reread = control
        .get_recovery_policy(as_(VIEWER, pb::GetRecoveryPolicyRequest {}))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(reread, now);

    // A dry run shows the policy as it would be and changes nothing.
    let dry = control
        .update_recovery_policy(as_(
            ADMIN,
            pb::UpdateRecoveryPolicyRequest {
                dry_run: true,
                ..update(
                    pb::RecoveryPolicy {
                        max_restarts: 9,
                        etag: now.etag.clone(),
                        ..Default::default()
                    },
                    &["max_restarts"],
                )
            },
        ))
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry.dry_run);
    let would = dry.policy.unwrap();
    assert_eq!(
        (would.max_restarts, would.groups.clone()),
        (9, vec!["batch".to_string()])
    );
    assert_eq!(would.etag, now.etag, "nothing changed: the etag holds");
    let unchanged = control
        .get_recovery_policy(as_(VIEWER, pb::GetRecoveryPolicyRequest {}))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(unchanged, now);

    // A stale etag is ABORTED; a window other than 1 h is refused naming it.
    let stale = control
        .update_recovery_policy(as_(ADMIN, update(wanted.clone(), &["max_restarts"])))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");
    let window = control
        .update_recovery_policy(as_(
            ADMIN,
            update(
                pb::RecoveryPolicy {
                    window: Some(prost_types::Duration {
                        seconds: 7200,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                &["window"],
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(field(&window), "policy.window");
    // Disabling clears the groups; the audit trail has both changes (and the dry run and
    // refusals, as such).
    let off = control
        .update_recovery_policy(as_(
            ADMIN,
            update(
                pb::RecoveryPolicy {
                    enabled: false,
                    etag: now.etag.clone(),
                    ..Default::default()
                },
                &["enabled"],
            ),
        ))
        .await
        .expect("disable")
        .into_inner()
        .policy
        .unwrap();
    assert!(!off.enabled && off.groups.is_empty(), "{off:?}");
    assert_eq!(off.max_restarts, 5, "the mask kept the rest");
    let trail = audit_of(&mut control, "ci-admin", "UpdateRecoveryPolicy").await;
    assert_eq!(
        trail
            .iter()
            .filter(|e| !e.dry_run && e.outcome.as_ref().unwrap().code == "OK")
            .count(),
        2,
        "{trail:?}"
    );
    assert!(
        trail.iter().any(|e| e.dry_run),
        "the dry run is audited: {trail:?}"
    );
    assert!(
        trail
            .iter()
            .any(|e| e.outcome.as_ref().unwrap().code == "ABORTED"),
        "the refused update is audited: {trail:?}"
    );
    warden.stop().await;
}
