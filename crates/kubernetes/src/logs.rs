//! A worker's pod log as a stream of raw lines (no level parsing: that is the log tail's job).
use std::{pin::Pin, time::Duration};

use futures_util::{AsyncBufReadExt, Stream, StreamExt};
use kube::api::LogParams;
use warden_core::ports::PortError;

use crate::error::DEPENDENCY;

/// Raw log lines, without their newline, in the order the container wrote them. An error
/// ends the stream (the connection broke): resume with `since`.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<String, PortError>> + Send>>;

/// What part of the log to stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and deliver lines as the container writes them.
    pub follow: bool,
    /// Start with the last N lines (`None` = the whole log; `Some(0)` = only new lines).
    pub tail_lines: Option<u32>,
    /// Only lines written in this last span (whole seconds, rounded up).
    pub since: Option<Duration>,
    /// The log of the container's previous run (after a crash).
    pub previous: bool,
}

/// The log of the pod that runs a worker.
pub struct PodLogs {
    pub pod: String,
    pub container: String,
    pub lines: LogStream,
}

impl PodLogs {
    /// Where the lines come from, as a log line's source shows it: `pod/container`.
    pub fn source(&self) -> String {
        format!("{}/{}", self.pod, self.container)
    }
}

impl std::fmt::Debug for PodLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodLogs")
            .field("pod", &self.pod)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

pub(crate) fn params(container: &str, opts: &LogOptions) -> LogParams {
    LogParams {
        container: Some(container.to_owned()),
        follow: opts.follow,
        previous: opts.previous,
        tail_lines: opts.tail_lines.map(i64::from),
        since_seconds: opts.since.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
        }),
        ..LogParams::default()
    }
}

/// Splits a byte stream of log text into lines; invalid UTF-8 is replaced, not fatal.
pub(crate) fn lines(
    reader: impl futures_util::AsyncBufRead + Send + 'static,
    source: String,
) -> LogStream {
    let reader = Box::pin(reader);
    futures_util::stream::unfold(Some((reader, source)), |state| async move {
        let (mut reader, source) = state?;
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                Some((Ok(line), Some((reader, source))))
            }
            Err(e) => {
                let err = PortError::Unavailable {
                    dependency: DEPENDENCY,
                    reason: format!("log stream of {source} broke: {e}"),
                };
                Some((Err(err), None))
            }
        }
    })
    .boxed()
}
