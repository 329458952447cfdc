//! WatchFleet resume tokens: opaque to clients, they carry the process epoch, the revision and
//! a fingerprint of what the stream sends (filter, view, queues), so that a token from another
//! life of the process, another replica or another filter is never replayed as if it fit.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::fleet::Position;

const TOKEN_VERSION: u8 = 1;

/// What a token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchToken {
    pub position: Position,
    pub fingerprint: u64,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    e: u64,
    r: u64,
    f: u64,
}

pub fn encode(position: Position, fingerprint: u64) -> String {
    let wire = Wire {
        v: TOKEN_VERSION,
        e: position.epoch,
        r: position.revision,
        f: fingerprint,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
}

/// The token's contents; `None` for an empty token; INVALID_ARGUMENT naming `resume_token`
/// for one warden did not issue.
pub fn decode(token: &str) -> Result<Option<WatchToken>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::BadToken {
        field: "resume_token",
        reason: "not a resume token issued by warden".into(),
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if wire.v != TOKEN_VERSION {
        return Err(bad());
    }
    Ok(Some(WatchToken {
        position: Position {
            epoch: wire.e,
            revision: wire.r,
        },
        fingerprint: wire.f,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let position = Position {
            epoch: 7,
            revision: 42,
        };
        let token = encode(position, 99);
        assert_eq!(
            decode(&token).unwrap(),
            Some(WatchToken {
                position,
                fingerprint: 99
            })
        );
        assert_eq!(decode("").unwrap(), None);
        assert!(decode("42").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{\"v\":9,\"e\":1,\"r\":1,\"f\":1}")).is_err());
    }
}
