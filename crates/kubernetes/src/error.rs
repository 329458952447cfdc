//! The one place where Kubernetes failures become `PortError`s.
//!
//! Each API call is described by a [`Call`] (verb, resource, name, namespace), so that a refusal
//! says exactly what warden was not allowed to do: the fix is a line in warden's Role.
use std::{future::Future, time::Duration};

use warden_core::ports::PortError;

/// The dependency name every `Unavailable` carries.
pub const DEPENDENCY: &str = "kubernetes";

/// One API call, as errors name it: `delete pods "w-1" in namespace "jobs"`.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The RBAC verb (`get`, `list`, `delete`, `patch`).
    pub verb: &'static str,
    /// The RBAC resource, with its subresource (`pods`, `pods/log`, `deployments/scale`).
    pub resource: &'static str,
    /// The object's name; empty for a list.
    pub name: &'a str,
    pub namespace: &'a str,
}

impl std::fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        write!(f, " in namespace {:?}", self.namespace)
    }
}

/// Maps a kube error of `call` to a `PortError`.
pub fn port_error(call: Call<'_>, err: kube::Error) -> PortError {
    match err {
        kube::Error::Api(status) => match status.code {
            401 => PortError::PermissionDenied(format!(
                "kubernetes did not accept warden's credentials to {call}"
            )),
            403 => PortError::PermissionDenied(format!(
                "kubernetes forbids {call} (grant verb {:?} on resource {:?} to warden's service account)",
                call.verb, call.resource
            )),
            404 => PortError::NotFound(format!("kubernetes: {call}: not found")),
            409 => PortError::Failed(format!("kubernetes: {call}: conflict: {}", status.message)),
            429 | 500.. => unavailable(format!("{call}: {} {}", status.code, status.reason)),
            code => PortError::Failed(format!("kubernetes: {call}: {code} {}", status.message)),
        },
        // The connection failed (refused, reset, TLS, DNS): the API server cannot be reached.
        kube::Error::HyperError(e) => unavailable(format!("{call}: {e}")),
        kube::Error::Service(e) => unavailable(format!("{call}: {e}")),
        kube::Error::RustlsTls(e) => unavailable(format!("{call}: {e}")),
        kube::Error::ReadEvents(e) => unavailable(format!("{call}: {e}")),
        other => PortError::Failed(format!("kubernetes: {call}: {other}")),
    }
}

fn unavailable(reason: String) -> PortError {
    PortError::Unavailable {
        dependency: DEPENDENCY,
        reason,
    }
}

/// Runs one API call under `limit`; a call that takes longer is `Unavailable`.
pub(crate) async fn timed<T>(
    call: Call<'_>,
    limit: Duration,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| port_error(call, e)),
        Err(_) => Err(unavailable(format!(
            "{call}: no answer within {}s",
            limit.as_secs_f64()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    const CALL: Call<'static> = Call {
        verb: "delete",
        resource: "pods",
        name: "w-1",
        namespace: "jobs",
    };

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let mut s = Status::failure(message, reason);
        s.code = code;
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn status_codes_map_to_port_errors() {
        match port_error(
            CALL,
            api(403, "Forbidden", "pods \"w-1\" is forbidden: ..."),
        ) {
            PortError::PermissionDenied(t) => {
                assert!(
                    t.contains("delete pods \"w-1\" in namespace \"jobs\""),
                    "{t}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            port_error(CALL, api(401, "Unauthorized", "")),
            PortError::PermissionDenied(_)
        ));
        assert!(matches!(
            port_error(CALL, api(404, "NotFound", "pods \"w-1\" not found")),
            PortError::NotFound(_)
        ));
        match port_error(CALL, api(409, "Conflict", "Precondition failed: UID")) {
            PortError::Failed(t) => assert!(t.contains("conflict: Precondition failed"), "{t}"),
            other => panic!("{other:?}"),
        }
        for code in [429, 500, 503] {
            assert!(matches!(
                port_error(CALL, api(code, "ServiceUnavailable", "")),
                PortError::Unavailable {
                    dependency: DEPENDENCY,
                    ..
                }
            ));
        }
        assert!(matches!(
            port_error(CALL, api(422, "Invalid", "bad")),
            PortError::Failed(_)
        ));
    }

    #[tokio::test]
    async fn a_call_past_its_limit_is_unavailable() {
        let never = std::future::pending::<Result<(), kube::Error>>();
        let err = timed(CALL, Duration::from_millis(20), never)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PortError::Unavailable { dependency: "kubernetes", reason } if reason.contains("no answer within")),
            "{err:?}"
        );
    }
}
