//! Bearer-token authentication, role checks and the audit trail of control calls.
use std::sync::Arc;

use tonic::{Request, Status, metadata::MetadataMap};
use tracing::info;

use super::ApiError;
use crate::config::{Role, Token};

/// Who is calling, as established from their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (never the token).
    pub name: String,
    pub role: Role,
}

/// Checks tokens. With no tokens configured every caller is an anonymous admin; warden then
/// refuses to listen beyond loopback (see `Config::validate`).
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<Vec<Token>>,
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn new(tokens: Vec<Token>) -> Self {
        Self {
            tokens: Arc::new(tokens),
        }
    }

    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let header = metadata
            .get("authorization")
            .ok_or_else(|| {
                unauthenticated("TOKEN_MISSING", "missing authorization: Bearer <token>")
            })?
            .to_str()
            .map_err(|_| unauthenticated("TOKEN_MISSING", "malformed authorization header"))?;
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                unauthenticated("TOKEN_MISSING", "authorization must be: Bearer <token>")
            })?
            .trim();
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.secret.expose().as_bytes(), presented.as_bytes()))
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
            .ok_or_else(|| unauthenticated("TOKEN_UNKNOWN", "unknown token"))
    }

    /// An interceptor that authenticates, requires `minimum` (if any) and leaves the
    /// [`Caller`] in the request's extensions. With `audit_denials`, refusals are audited.
    pub fn interceptor(
        &self,
        minimum: Option<Role>,
        audit_denials: bool,
    ) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        let auth = self.clone();
        move |mut request: Request<()>| {
            let caller = match auth.authenticate(request.metadata()) {
                Ok(caller) => caller,
                Err(status) => {
                    if audit_denials {
                        audit(None, "unknown", &[], "", false, status.message());
                    }
                    return Err(status);
                }
            };
            if let Some(minimum) = minimum {
                check_role(&caller, minimum)?;
            }
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }
}

fn unauthenticated(reason: &'static str, message: &str) -> Status {
    ApiError::Unauthenticated {
        reason,
        message: message.to_string(),
    }
    .into()
}

/// PERMISSION_DENIED unless the caller's role is at least `minimum`.
pub fn check_role(caller: &Caller, minimum: Role) -> Result<(), Status> {
    if caller.role >= minimum {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied {
            required: minimum.to_string(),
            caller: caller.name.clone(),
            role: caller.role.to_string(),
        }
        .into())
    }
}

/// The caller the interceptor established.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| unauthenticated("TOKEN_MISSING", "no caller"))
}

/// Records a control call, allowed or not. The audit store replaces this log target later;
/// until then `warden::audit` lines are the audit trail.
pub fn audit(
    caller: Option<&Caller>,
    action: &str,
    targets: &[String],
    reason: &str,
    allowed: bool,
    outcome: &str,
) -> String {
    let audit_id = uuid::Uuid::new_v4().to_string();
    info!(
        target: "warden::audit",
        audit_id,
        actor = caller.map_or("unauthenticated", |c| c.name.as_str()),
        role = caller.map(|c| c.role.to_string()).unwrap_or_default(),
        action,
        targets = ?targets,
        reason,
        allowed,
        outcome,
        "control call"
    );
    audit_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth() -> Authenticator {
        Authenticator::new(vec![Token {
            name: "ci".into(),
            role: Role::Viewer,
            secret: Secret::new("0123456789abcdef0123"),
        }])
    }

    fn with(header: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", header.parse().unwrap());
        m
    }

    #[test]
    fn tokens_map_to_callers() {
        let caller = auth()
            .authenticate(&with("Bearer 0123456789abcdef0123"))
            .unwrap();
        assert_eq!(caller.role, Role::Viewer);
        for bad in ["Bearer nope", "Basic abc", "0123456789abcdef0123"] {
            let err = auth().authenticate(&with(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(
            check_role(&caller, Role::Operator).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
