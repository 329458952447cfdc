//! Opaque page tokens for keyset paging: the sort key of the last item sent, bound to a
//! fingerprint of the filter and order they were issued for. Keyset (not offset) paging keeps
//! pages stable while workers come and go.
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::ApiError;

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;
const TOKEN_VERSION: u8 = 1;

/// A position in a list sorted by `(rank, name)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub rank: i64,
    pub name: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    v: u8,
    fp: u64,
    after: Cursor,
}

/// FNV-1a over the request parts that define the listing: stable across processes and
/// releases (unlike std's hasher), which matters when replicas share clients.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// 0 means the default; above the maximum is lowered to it (AIP-158), not refused.
pub fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE as usize,
        n => n.min(MAX_PAGE_SIZE) as usize,
    }
}

pub fn encode(fingerprint: u64, after: Cursor) -> String {
    let token = Token {
        v: TOKEN_VERSION,
        fp: fingerprint,
        after,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// The cursor of a token, if the token is well-formed and was issued for this listing.
pub fn decode(token: &str, fingerprint: u64) -> Result<Option<Cursor>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = |reason: &str| ApiError::BadToken {
        field: "page_token",
        reason: reason.to_string(),
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not a token issued by this server"))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a token issued by this server"))?;
    if token.v != TOKEN_VERSION || token.fp != fingerprint {
        return Err(bad(
            "the token was issued for a different filter or order; start again without it",
        ));
    }
    Ok(Some(token.after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_listing() {
        let after = Cursor {
            rank: -3,
            name: "w1@h".into(),
        };
        let token = encode(42, after.clone());
        assert_eq!(decode(&token, 42).unwrap(), Some(after));
        assert!(decode(&token, 43).is_err());
        assert!(decode("garbage!", 42).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{\"v\":1}"), 42).is_err());
        assert_eq!(decode("", 42).unwrap(), None);
        assert_eq!(page_size(1001), 1000, "lowered, not refused");
        assert_eq!(page_size(0), 100);
        assert_eq!(page_size(7), 7);
    }
}
