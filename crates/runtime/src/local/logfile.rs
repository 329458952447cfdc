//! A worker slot's log: its processes' stdout and stderr, one file line per output line,
//! in size-bounded segments (`<stem>.<segment>.log`; the oldest beyond the kept count are
//! deleted). Each file line is `<RFC 3339 time> <stream> <pid> <F|T> <text>` (T: the line was
//! cut at [`MAX_LINE`]), the shape of the kubelet's CRI logs, so that a reader gets the time
//! and the instance back without parsing the worker's own format.
//!
//! Followers get every line (and instance starts and exits) on a bounded broadcast channel: a
//! slow one loses events and is told how many, and memory stays bounded.
use std::{
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::SystemTime,
};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt},
    sync::{Mutex, broadcast},
};
use warden_core::ports::{LogEvent, LogPage, LogPosition, RawLogLine};

/// Longest line kept; longer ones are cut (and marked truncated).
pub const MAX_LINE: usize = 16 * 1024;
/// Events a follower may fall behind by before it loses some.
pub const FOLLOW_BUFFER: usize = 4096;
/// Most lines taken from a pipe's buffer into one write.
const MAX_BATCH: usize = 256;

/// Where and how much to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLimits {
    pub dir: PathBuf,
    /// A segment is closed once it reaches this size.
    pub file_bytes: u64,
    /// Segments kept per slot (the current one included).
    pub files: u32,
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The `source` of lines written by process `pid`.
pub fn source(pid: u32) -> String {
    format!("pid:{pid}")
}

struct Writer {
    file: Option<tokio::fs::File>,
    segment: u64,
    offset: u64,
}

/// The writing side of one slot's log, shared by the pumps of its current process.
pub struct SlotLog {
    limits: LogLimits,
    stem: String,
    writer: Mutex<Writer>,
    feed: broadcast::Sender<LogEvent>,
}

impl SlotLog {
    /// Starts a new segment after any this stem already has (a restarted warden keeps the old
    /// segments readable and never writes into them).
    pub fn open(limits: LogLimits, stem: String) -> std::io::Result<SlotLog> {
        std::fs::create_dir_all(&limits.dir)?;
        let last = segments(&limits.dir, &stem)?.last().copied().unwrap_or(0);
        Ok(SlotLog {
            limits,
            stem,
            writer: Mutex::new(Writer {
                file: None,
                segment: last + 1,
                offset: 0,
            }),
            feed: broadcast::channel(FOLLOW_BUFFER).0,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogEvent> {
        self.feed.subscribe()
    }

    /// Tells followers about an instance start or exit (not written to the file).
    pub fn announce(&self, event: LogEvent) {
        let _ = self.feed.send(event);
    }

    /// Appends lines (written and flushed first, then sent to followers, so that a follower
    /// that reads the file after subscribing misses nothing).
    async fn append(
        &self,
        stream: Stream,
        pid: u32,
        lines: &[(Vec<u8>, bool)],
    ) -> std::io::Result<()> {
        let now = SystemTime::now();
        let stamp = humantime::format_rfc3339_nanos(now).to_string();
        let mut writer = self.writer.lock().await;
        if writer.file.is_none() {
            let path = segment_path(&self.limits.dir, &self.stem, writer.segment);
            writer.file = Some(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            );
        }
        let mut buf = Vec::new();
        let mut sent = Vec::with_capacity(lines.len());
        for (text, truncated) in lines {
            let text = String::from_utf8_lossy(text).replace(['\r', '\n'], "");
            buf.extend_from_slice(
                format!(
                    "{stamp} {} {pid} {} {text}\n",
                    stream.as_str(),
                    if *truncated { 'T' } else { 'F' }
                )
                .as_bytes(),
            );
            let end = writer.offset + buf.len() as u64;
            sent.push(RawLogLine {
                position: LogPosition {
                    segment: writer.segment,
                    offset: end,
                },
                time: now,
                source: source(pid),
                text,
                truncated: *truncated,
            });
        }
        let file = writer.file.as_mut().expect("opened above");
        file.write_all(&buf).await?;
        file.flush().await?;
        writer.offset += buf.len() as u64;
        if writer.offset >= self.limits.file_bytes {
            writer.file = None;
            writer.segment += 1;
            writer.offset = 0;
            let keep_from = (writer.segment + 1).saturating_sub(u64::from(self.limits.files));
            for old in segments(&self.limits.dir, &self.stem)?
                .into_iter()
                .filter(|s| *s < keep_from)
            {
                let _ = std::fs::remove_file(segment_path(&self.limits.dir, &self.stem, old));
            }
        }
        drop(writer);
        for line in sent {
            let _ = self.feed.send(LogEvent::Line(line));
        }
        Ok(())
    }

    /// Copies a pipe into the log until it closes. Lines already buffered are written
    /// together (one write and flush per batch).
    pub async fn pump<R: AsyncRead + Unpin>(
        &self,
        mut pipe: tokio::io::BufReader<R>,
        stream: Stream,
        pid: u32,
    ) {
        let mut batch: Vec<(Vec<u8>, bool)> = Vec::new();
        loop {
            match read_line(&mut pipe).await {
                Ok(Some(line)) => batch.push(line),
                Ok(None) | Err(_) => break,
            }
            while batch.len() < MAX_BATCH && pipe_has_line(&pipe) {
                match read_line(&mut pipe).await {
                    Ok(Some(line)) => batch.push(line),
                    _ => break,
                }
            }
            if let Err(err) = self.append(stream, pid, &batch).await {
                tracing::warn!(%err, stem = %self.stem, "cannot write worker log");
            }
            batch.clear();
        }
        if !batch.is_empty() {
            let _ = self.append(stream, pid, &batch).await;
        }
    }

    /// Reads stored lines after `after` (blocking file I/O: call from a blocking thread).
    pub fn read(&self, after: Option<LogPosition>, max_lines: usize) -> std::io::Result<LogPage> {
        read_page(&self.limits.dir, &self.stem, after, max_lines)
    }
}

fn pipe_has_line<R: AsyncRead>(pipe: &tokio::io::BufReader<R>) -> bool {
    pipe.buffer().contains(&b'\n')
}

/// One line of at most [`MAX_LINE`] bytes (the rest of a longer one is skipped), without its
/// newline, and whether it was cut; `None` at the end of the pipe.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    pipe: &mut R,
) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut line = Vec::new();
    let mut truncated = false;
    loop {
        let available = pipe.fill_buf().await?;
        if available.is_empty() {
            return Ok((!line.is_empty() || truncated).then_some((line, truncated)));
        }
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = MAX_LINE - line.len();
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        pipe.consume(used);
        if done {
            return Ok(Some((line, truncated)));
        }
    }
}

fn segment_path(dir: &Path, stem: &str, segment: u64) -> PathBuf {
    dir.join(format!("{stem}.{segment:010}.log"))
}

/// The segments a stem has on disk, oldest first.
fn segments(dir: &Path, stem: &str) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    let prefix = format!("{stem}.");
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Parses a file line back; `None` for a line this module did not write.
fn parse_line(line: &str, position: LogPosition) -> Option<RawLogLine> {
    let mut parts = line.splitn(5, ' ');
    let time = humantime::parse_rfc3339(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let truncated = match parts.next()? {
        "T" => true,
        "F" => false,
        _ => return None,
    };
    Some(RawLogLine {
        position,
        time,
        source: source(pid),
        text: parts.next().unwrap_or("").to_string(),
        truncated,
    })
}

fn read_page(
    dir: &Path,
    stem: &str,
    after: Option<LogPosition>,
    max_lines: usize,
) -> std::io::Result<LogPage> {
    let all = segments(dir, stem)?;
    let Some(&oldest) = all.first() else {
        return Ok(LogPage {
            next: after.unwrap_or_default(),
            ..Default::default()
        });
    };
    let (mut at, gap) = match after {
        None => (
            LogPosition {
                segment: oldest,
                offset: 0,
            },
            false,
        ),
        Some(p) if all.contains(&p.segment) => (p, false),
        Some(p) => match all.iter().find(|s| **s > p.segment) {
            Some(&s) => (
                LogPosition {
                    segment: s,
                    offset: 0,
                },
                // Skipping over segments that were deleted, or from an unknown one.
                p.offset > 0 || p.segment + 1 != s,
            ),
            None => {
                return Ok(LogPage {
                    next: p,
                    ..Default::default()
                });
            }
        },
    };
    let mut lines = Vec::new();
    loop {
        let mut file = match std::fs::File::open(segment_path(dir, stem, at.segment)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(at.offset))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        while lines.len() < max_lines {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break; // the end, or a line still being written
            }
            at.offset += n as u64;
            let text = String::from_utf8_lossy(&buf[..n - 1]);
            if let Some(line) = parse_line(&text, at) {
                lines.push(line);
            }
        }
        if lines.len() >= max_lines {
            break;
        }
        match all.iter().find(|s| **s > at.segment) {
            Some(&next) => {
                at = LogPosition {
                    segment: next,
                    offset: 0,
                }
            }
            None => break,
        }
    }
    Ok(LogPage {
        lines,
        gap,
        next: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(dir: &Path, file_bytes: u64, files: u32) -> LogLimits {
        LogLimits {
            dir: dir.to_path_buf(),
            file_bytes,
            files,
        }
    }

    #[tokio::test]
    async fn lines_written_are_read_back_and_followed_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = SlotLog::open(limits(dir.path(), 1 << 20, 3), "g-0".into()).unwrap();
        let mut follow = log.subscribe();
        let input: &[u8] = b"first\n[2024-01-01 12:00:00,123: ERROR/MainProcess] second\npartial";
        log.pump(tokio::io::BufReader::new(input), Stream::Stderr, 42)
            .await;
        let page = log.read(None, 100).unwrap();
        let texts: Vec<_> = page.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "first",
                "[2024-01-01 12:00:00,123: ERROR/MainProcess] second",
                "partial"
            ]
        );
        assert!(page.lines.iter().all(|l| l.source == "pid:42"));
        // Followed lines carry the same positions: a reader can skip what it read back.
        for line in &page.lines {
            match follow.recv().await.unwrap() {
                LogEvent::Line(l) => assert_eq!(l.position, line.position),
                other => panic!("{other:?}"),
            }
        }
        let rest = log.read(Some(page.next), 100).unwrap();
        assert!(rest.lines.is_empty());
        let after_first = log.read(Some(page.lines[0].position), 100).unwrap();
        assert_eq!(after_first.lines.len(), 2);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let log = SlotLog::open(limits(dir.path(), 1 << 20, 3), "g-0".into()).unwrap();
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\nnext\n");
        log.pump(tokio::io::BufReader::new(&input[..]), Stream::Stdout, 1)
            .await;
        let page = log.read(None, 100).unwrap();
        assert_eq!(page.lines.len(), 2);
        assert!(page.lines[0].truncated);
        assert_eq!(page.lines[0].text.len(), MAX_LINE);
        assert_eq!(page.lines[1].text, "next");
    }

    #[tokio::test]
    async fn rotation_keeps_the_newest_segments_and_reports_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let log = SlotLog::open(limits(dir.path(), 200, 2), "g-1".into()).unwrap();
        let first = {
            log.pump(
                tokio::io::BufReader::new(&b"line 0\n"[..]),
                Stream::Stdout,
                7,
            )
            .await;
            log.read(None, 1).unwrap().lines[0].position
        };
        for i in 1..40 {
            let text = format!("line {i}\n");
            log.pump(
                tokio::io::BufReader::new(text.as_bytes()),
                Stream::Stdout,
                7,
            )
            .await;
        }
        assert!(segments(dir.path(), "g-1").unwrap().len() <= 2);
        let page = log.read(Some(first), 1000).unwrap();
        assert!(page.gap, "the cursor's segment was rotated away");
        assert_eq!(page.lines.last().unwrap().text, "line 39");
        // Paging: small pages cover the same lines.
        let (mut at, mut n) = (None, 0);
        loop {
            let p = log.read(at, 3).unwrap();
            if p.lines.is_empty() {
                break;
            }
            n += p.lines.len();
            at = Some(p.next);
        }
        assert_eq!(n, log.read(None, 1000).unwrap().lines.len());
    }

    #[tokio::test]
    async fn a_reopened_log_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let l = limits(dir.path(), 1 << 20, 3);
        let log = SlotLog::open(l.clone(), "g".into()).unwrap();
        log.pump(tokio::io::BufReader::new(&b"old\n"[..]), Stream::Stdout, 1)
            .await;
        let again = SlotLog::open(l, "g".into()).unwrap();
        again
            .pump(tokio::io::BufReader::new(&b"new\n"[..]), Stream::Stdout, 2)
            .await;
        let texts: Vec<_> = again
            .read(None, 10)
            .unwrap()
            .lines
            .into_iter()
            .map(|l| (l.text, l.source))
            .collect();
        assert_eq!(
            texts,
            [
                ("old".to_string(), "pid:1".to_string()),
                ("new".to_string(), "pid:2".to_string())
            ]
        );
    }
}
