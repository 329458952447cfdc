//! Where the processes a test starts write their output: a directory of the test's own, never
//! a shared temp path that another test (or a previous run) also writes to.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
};

/// A per-test log directory, owned by the handle of the process that logs into it. It is
/// removed with the handle when the test passes; when the handle is dropped because the test
/// is failing (unwinding from a panic), it is kept, and its path and the tail of each log are
/// printed to stderr, which the test runner shows with the failure.
#[derive(Debug)]
pub struct LogDir {
    what: String,
    dir: Option<tempfile::TempDir>,
}

/// Lines of each log printed when a test fails.
const TAIL_LINES: usize = 40;

impl LogDir {
    /// A new directory for the logs of `what` (e.g. "redis-server", "celery w1@host").
    pub fn new(what: &str) -> Self {
        let prefix: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("warden-test-{prefix}-"))
            .tempdir()
            .expect("a temp dir for logs");
        Self {
            what: what.to_string(),
            dir: Some(dir),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("not dropped").path()
    }

    /// The path of the log called `name` in this directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// A handle appending to the log called `name`, for a child's stdout or stderr.
    pub fn stdio(&self, name: &str) -> Stdio {
        let path = self.file(name);
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map(Stdio::from)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }

    /// The last `lines` lines of the log called `name` (empty if there is none yet).
    pub fn tail(&self, name: &str, lines: usize) -> String {
        tail_of(&self.file(name), lines)
    }
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(dir) = self.dir.take() else { return };
        let path = dir.keep();
        eprintln!("--- logs of {} kept in {}", self.what, path.display());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            eprintln!(
                "--- last {TAIL_LINES} lines of {}:\n{}",
                file.display(),
                tail_of(file, TAIL_LINES)
            );
        }
    }
}
