//! Bearer tokens and roles, against a running warden.

use crate::support::*;
use tonic::{Code, Request, transport::Channel};
use warden::{
    config::{Role, Secret, Token},
    proto::v1::{
        self as pb, control_client::ControlClient, logs_client::LogsClient,
        worker_health_client::WorkerHealthClient,
    },
};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn secured_warden() -> (RedisServer, TestWarden, Channel) {
    let redis = RedisServer::start().await;
    let mut config = test_config(&redis.url(0));
    config.tokens = [
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
    .collect();
    let warden = TestWarden::start(config).await;
    let channel = warden.channel().await;
    (redis, warden, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_are_enforced() {
    let (_redis, warden, channel) = secured_warden().await;
    let mut health = WorkerHealthClient::new(channel.clone());
    let mut control = ControlClient::new(channel.clone());
    let mut logs = LogsClient::new(channel.clone());

    // No token, or a wrong one: UNAUTHENTICATED.
    for token in [None, Some("not-a-real-token-000000")] {
        let err = health
            .list_workers(with_token(pb::ListWorkersRequest::default(), token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
        let err = control
            .restart_workers(with_token(pb::RestartWorkersRequest::default(), token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    // A viewer reads, but may not control or read logs.
    let listed = health
        .list_workers(with_token(pb::ListWorkersRequest::default(), Some(VIEWER)))
        .await
        .expect("viewer can list")
        .into_inner();
    assert!(listed.freshness.is_some());
    let err = control
        .restart_workers(with_token(
            pb::RestartWorkersRequest::default(),
            Some(VIEWER),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = logs
        .tail(with_token(pb::TailRequest::default(), Some(VIEWER)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // An operator passes authorisation: then the request itself is checked.
    let err = control
        .restart_workers(with_token(
            pb::RestartWorkersRequest::default(),
            Some(OPERATOR),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("selector"), "{err:?}");

    // Forgetting needs admin.
    let forget = pb::ForgetWorkersRequest {
        selector: Some(pb::Selector {
            workers: vec!["ghost@nowhere".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = control
        .forget_workers(with_token(forget.clone(), Some(OPERATOR)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = control
        .forget_workers(with_token(forget, Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Health checks need no token.
    let mut probe = tonic_health::pb::health_client::HealthClient::new(channel);
    probe
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open");
    warden.stop().await;
}
