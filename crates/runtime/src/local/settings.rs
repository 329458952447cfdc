//! What the local runtime launches: groups of identical worker processes, and where their
//! logs go.
use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use serde::Deserialize;

pub const DEFAULT_LOG_DIR: &str = "warden-logs";
pub const DEFAULT_LOG_FILE_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LOG_FILES: u32 = 5;
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_NODE_NAME: &str = "{group}-{index}@{host}";
/// First wait before respawning a process that died on its own; doubles up to the max, and
/// starts over once a process has run for [`BACKOFF_RESET_AFTER`].
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// One group of identical workers (a `[[local.groups]]` table).
///
/// `args`, `env` values and `node_name` may use the placeholders `{group}`, `{index}` (0..count),
/// `{host}` (this machine's hostname) and, except in `node_name`, `{node}` (the Celery node name
/// warden expects the worker to take: pass it with `-n {node}`). Each process also gets
/// `WARDEN_GROUP`, `WARDEN_INDEX` and `WARDEN_NODE` in its environment.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Unique; letters, digits, `-` and `_`.
    pub name: String,
    /// The program (a path, or a name looked up in PATH).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to warden's own environment. Values are never logged (they may hold passwords).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default: warden's working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Processes in the group. Default 1.
    #[serde(default = "one")]
    pub count: u32,
    /// The Celery node name of each process; default `{group}-{index}@{host}`.
    #[serde(default)]
    pub node_name: Option<String>,
}

fn one() -> u32 {
    1
}

impl fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupSpec")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("working_dir", &self.working_dir)
            .field("count", &self.count)
            .field("node_name", &self.node_name)
            .finish()
    }
}

/// The local runtime's settings (`[local]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    pub groups: Vec<GroupSpec>,
    /// Directory of the captured stdout/stderr files.
    pub log_dir: PathBuf,
    /// Size at which a log file is rotated.
    pub log_file_bytes: u64,
    /// Log files kept per process slot (the current one included).
    pub log_files: u32,
    /// Between SIGTERM and SIGKILL when stopping or restarting, unless the caller gives one.
    pub stop_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often CPU and memory are read from /proc.
    pub sample_interval: Duration,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            log_file_bytes: DEFAULT_LOG_FILE_BYTES,
            log_files: DEFAULT_LOG_FILES,
            stop_grace: DEFAULT_STOP_GRACE,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
        }
    }
}

impl LocalSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let key = format!("local.groups[{i}]");
            if g.name.is_empty()
                || !g
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    format!("{key}.name"),
                    "letters, digits, - and _ only, not empty".into(),
                ));
            }
            if !names.insert(g.name.as_str()) {
                return Err((format!("{key}.name"), format!("{:?} is used twice", g.name)));
            }
            if g.command.trim().is_empty() {
                return Err((format!("{key}.command"), "required".into()));
            }
            if g.count > 1000 {
                return Err((format!("{key}.count"), "at most 1000".into()));
            }
        }
        if self.log_file_bytes < 4096 {
            return Err(("local.log_file_bytes".into(), "at least 4096".into()));
        }
        if self.log_files == 0 {
            return Err(("local.log_files".into(), "at least 1".into()));
        }
        for (key, d) in [
            ("local.backoff_initial", self.backoff_initial),
            ("local.backoff_max", self.backoff_max),
            ("local.sample_interval", self.sample_interval),
        ] {
            if d.is_zero() {
                return Err((key.into(), "must be greater than zero".into()));
            }
        }
        Ok(())
    }
}

/// Replaces `{group}`, `{index}`, `{host}` and `{node}` in a template.
pub fn expand(template: &str, group: &str, index: u32, host: &str, node: &str) -> String {
    template
        .replace("{group}", group)
        .replace("{index}", &index.to_string())
        .replace("{host}", host)
        .replace("{node}", node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand() {
        assert_eq!(
            expand(DEFAULT_NODE_NAME, "fast", 3, "box", ""),
            "fast-3@box"
        );
        assert_eq!(expand("-n {node}", "g", 0, "h", "g-0@h"), "-n g-0@h");
    }

    #[test]
    fn debug_hides_env_values() {
        let spec = GroupSpec {
            name: "g".into(),
            command: "celery".into(),
            args: vec![],
            env: [("BROKER".to_string(), "redis://:hunter2@x".to_string())].into(),
            working_dir: None,
            count: 1,
            node_name: None,
        };
        let text = format!("{spec:?}");
        assert!(text.contains("BROKER") && !text.contains("hunter2"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = LocalSettings::default();
        s.groups.push(GroupSpec {
            name: "a b".into(),
            command: "x".into(),
            args: vec![],
            env: Default::default(),
            working_dir: None,
            count: 1,
            node_name: None,
        });
        assert_eq!(s.validate().unwrap_err().0, "local.groups[0].name");
    }
}
