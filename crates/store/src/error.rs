//! Errors, and keeping secrets out of them: every message that leaves the store has been
//! through [`Secrets::scrub`], and URLs are only ever shown through [`redact_url`].
use std::time::Duration;

use warden_core::ports::PortError;

/// Why a store call failed. Messages never hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The URL or an option is unusable (bad scheme, bad syntax).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The database cannot be reached (connection refused or lost, pool exhausted, file
    /// locked beyond the busy timeout).
    #[error("{engine} unavailable: {reason}")]
    Unavailable {
        engine: &'static str,
        reason: String,
    },
    /// The call did not finish within the store's timeout.
    #[error("{engine}: no answer within {timeout:?}")]
    Timeout {
        engine: &'static str,
        timeout: Duration,
    },
    #[error("{engine} migration failed: {reason}")]
    Migrate {
        engine: &'static str,
        reason: String,
    },
    /// The store cannot answer this (e.g. a metric for a kind of subject it does not cover).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The call reached the database and failed.
    #[error("{engine}: {reason}")]
    Failed {
        engine: &'static str,
        reason: String,
    },
}

impl From<StoreError> for PortError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } | StoreError::Timeout { .. } => PortError::Unavailable {
                dependency: "store",
                reason: e.to_string(),
            },
            StoreError::NotSupported(what) => PortError::NotSupported(what),
            StoreError::Config(_) | StoreError::Migrate { .. } | StoreError::Failed { .. } => {
                PortError::Failed(e.to_string())
            }
        }
    }
}

/// Classifies a sqlx error: reaching the database, or what it said.
pub(crate) fn classify(engine: &'static str, e: &sqlx::Error, secrets: &Secrets) -> StoreError {
    let reason = secrets.scrub(&e.to_string());
    let unavailable = match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| unavailable_code(engine, &code)),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable { engine, reason }
    } else if let sqlx::Error::Configuration(_) = e {
        StoreError::Config(reason)
    } else {
        StoreError::Failed { engine, reason }
    }
}

/// Database error codes that mean "cannot be reached now" rather than "this failed".
fn unavailable_code(engine: &'static str, code: &str) -> bool {
    if engine == "postgres" {
        // Class 08: connection exception; 57P01-03: shutting down or starting up; 53300: too
        // many connections.
        code.starts_with("08") || ["57P01", "57P02", "57P03", "53300"].contains(&code)
    } else {
        // SQLite's primary result codes (the low byte of an extended one): BUSY, LOCKED, IOERR,
        // CANTOPEN.
        code.parse::<i32>()
            .is_ok_and(|c| [5, 6, 10, 14].contains(&(c & 0xff)))
    }
}

/// The secrets of a database URL (its password, as written and percent-decoded), to scrub
/// from any text that could carry them.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    pub(crate) fn of_url(url: &str) -> Self {
        let mut found = Vec::new();
        let parts = split_url(url);
        if let Some(password) = parts.password {
            found.push(password.to_owned());
        }
        for (key, value) in parts.query_pairs() {
            if is_secret_key(key) {
                found.push(value.to_owned());
            }
        }
        let mut secrets = Vec::new();
        for s in found.into_iter().filter(|s| !s.is_empty()) {
            let decoded = percent_decode(&s);
            if decoded != s && !decoded.is_empty() {
                secrets.push(decoded);
            }
            secrets.push(s);
        }
        // Longest first, so that a secret containing another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self(secrets)
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// The URL with its password (in the user info or a `password=` parameter) replaced by
/// `***`: the only form in which a database URL is shown.
pub fn redact_url(url: &str) -> String {
    let parts = split_url(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(parts.before_password);
    if parts.password.is_some() {
        out.push_str("***");
    }
    out.push_str(parts.after_password);
    if let Some(query) = parts.query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = parts.fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("passwd") || key == "secret" || key == "token"
}

struct UrlParts<'a> {
    /// Up to the password (`scheme://user:`), or up to the query when there is none.
    before_password: &'a str,
    password: Option<&'a str>,
    /// From the `@` that ends the user info up to the query.
    after_password: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
    }
}

fn split_url(url: &str) -> UrlParts<'_> {
    let (rest, fragment) = match url.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (url, None),
    };
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let authority = &base[authority_start..authority_end];
    let colon = authority.rfind('@').and_then(|at| {
        authority[..at]
            .find(':')
            .map(|c| (authority_start + c, authority_start + at))
    });
    match colon {
        Some((colon, at)) => UrlParts {
            before_password: &base[..=colon],
            password: Some(&base[colon + 1..at]),
            after_password: &base[at..],
            query,
            fragment,
        },
        None => UrlParts {
            before_password: base,
            password: None,
            after_password: "",
            query,
            fragment,
        },
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        for (url, shown) in [
            (
                "postgres://warden:s3cr%40t@db.example:5432/warden?sslmode=require",
                "postgres://warden:***@db.example:5432/warden?sslmode=require",
            ),
            (
                "postgres://db/warden?user=w&password=hunter2&application_name=x",
                "postgres://db/warden?user=w&password=***&application_name=x",
            ),
            ("postgres://warden@db/warden", "postgres://warden@db/warden"),
            ("postgres://:only@db", "postgres://:***@db"),
            ("sqlite://./warden.db", "sqlite://./warden.db"),
            ("postgres://u:p@ss@db/x#frag", "postgres://u:***@db/x#frag"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let secrets = Secrets::of_url("postgres://warden:s3cr%40t@db/w?sslpassword=k3y");
        let text = "failed for s3cr@t, s3cr%40t and k3y";
        assert_eq!(secrets.scrub(text), "failed for ***, *** and ***");
        assert!(!format!("{secrets:?}").contains("s3cr"));
    }

    #[test]
    fn unavailability_maps_to_the_store_dependency() {
        let e = StoreError::Timeout {
            engine: "sqlite",
            timeout: Duration::from_secs(5),
        };
        assert!(matches!(
            PortError::from(e),
            PortError::Unavailable {
                dependency: "store",
                ..
            }
        ));
        let e = StoreError::Failed {
            engine: "postgres",
            reason: "syntax error".into(),
        };
        assert_eq!(
            PortError::from(e),
            PortError::Failed("postgres: syntax error".into())
        );
        assert!(unavailable_code("postgres", "08006"));
        assert!(unavailable_code("postgres", "57P01"));
        assert!(!unavailable_code("postgres", "23505"));
        assert!(unavailable_code("sqlite", "517"));
        assert!(!unavailable_code("sqlite", "19"));
    }
}
