//! A small `/proc` reader: per-process CPU time and resident memory, summed over a process
//! and its descendants (a Celery prefork pool's children count towards their worker).
use std::collections::HashMap;

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// User + system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    // After the name: state (3), ppid (4), ... utime (14), stime (15), ... rss (24).
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        rss_pages: field(24)?,
    })
}

/// Every process's stat line, read now (processes that vanish meanwhile are skipped).
pub fn read_all() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let pid: u32 = name.to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&text)
    })
    .collect()
}

/// CPU ticks and RSS pages of `root` and all its descendants; `None` when `root` is gone.
pub fn tree_usage(all: &[ProcStat], root: u32) -> Option<(u64, u64)> {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    let mut by_pid = None;
    for p in all {
        children.entry(p.ppid).or_default().push(p);
        if p.pid == root {
            by_pid = Some(p);
        }
    }
    let root = by_pid?;
    let (mut ticks, mut pages) = (0, 0);
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        ticks += p.cpu_ticks;
        pages += p.rss_pages;
        if let Some(kids) = children.get(&p.pid) {
            stack.extend(kids.iter().copied());
        }
    }
    Some((ticks, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let line = "4242 (celery (worker) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    120 30 0 0 20 0 3 0 100 500000000 2560 18446744073709551615 1 1 0 0 0 0 0 \
                    16781312 134234626 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                ppid: 1,
                cpu_ticks: 150,
                rss_pages: 2560
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x) S"), None);
    }

    #[test]
    fn sums_a_process_tree() {
        let p = |pid, ppid, t, r| ProcStat {
            pid,
            ppid,
            cpu_ticks: t,
            rss_pages: r,
        };
        let all = [
            p(10, 1, 5, 100),
            p(11, 10, 3, 50),
            p(12, 11, 2, 25),
            p(20, 1, 7, 70),
        ];
        assert_eq!(tree_usage(&all, 10), Some((10, 175)));
        assert_eq!(tree_usage(&all, 99), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let all = read_all();
        assert!(all.iter().any(|p| p.pid == me && p.rss_pages > 0));
    }
}
