//! The History targets of issue 14, measured (a load tool, not a criterion bench): 1,000
//! workers sampled every 30 s for 7 days (20,160 ticks, 20.2 M worker-sample rows) written
//! through `Store::write`, one batch per tick, on SQLite and on Postgres; then the 7-day,
//! 168-point queries (1 h steps) for one worker, one group and the fleet, repeated warm; the
//! size on disk; and the writer's CPU per 1,000-worker batch with durable settings.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p warden-store --bench history_queries
//! ```
//!
//! Environment:
//! - `HISTORY_BENCH_WORKERS` (1000), `HISTORY_BENCH_DAYS` (7), `HISTORY_BENCH_GROUPS` (10):
//!   the fleet;
//! - `HISTORY_BENCH_ITERS` (20): timed repetitions of each query (after one warm-up call);
//! - `HISTORY_BENCH_ENGINES` (`sqlite,postgres`): which engines to run;
//! - `HISTORY_BENCH_FILL_ONLY=1`: fill (or resume filling) and stop, measuring nothing;
//! - `HISTORY_BENCH_PG_TUNED` (`shared_buffers=6GB`): Postgres settings of a second pass of
//!   the queries (after `pg_prewarm` of the samples, their worker index and the totals);
//!   empty for none;
//! - `HISTORY_BENCH_DIR` (`/tmp/warden-history-bench`): where the filled databases live, one
//!   folder per (workers, days, groups). A filled database is reused by later runs (an
//!   interrupted fill resumes at the tick after the last one written); delete the folder to
//!   refill.
//!
//! Postgres is a private cluster in that folder (Debian's binaries, `initdb` as the
//! `postgres` user when run as root, 127.0.0.1 on a free port), stopped when the bench ends.
//! The fill runs with `fsync=off, synchronous_commit=off, full_page_writes=off` (test data,
//! faster); queries and the write measurement run after a restart with the durable defaults
//! (`fsync=on, synchronous_commit=on, full_page_writes=on`). After the fill, `VACUUM
//! (ANALYZE)` is run once, as autovacuum would. SQLite runs as `Store::connect` opens it (WAL,
//! `synchronous=NORMAL`).
//!
//! The rows: per worker and tick, lifecycle ALIVE except for a few stretches OFFLINE (no
//! tasks), a daily load cycle times a per-worker factor, 0–60 tasks finished per interval
//! (about 2 % failed), a runtime and a queue-wait sketch of those tasks (log-normal-ish around
//! a per-worker typical runtime), active tasks of a pool of 8, CPU and RSS; 10 queues and the
//! groups' samples. Ten groups of workers (`group-0` … `group-9`, worker `w % groups`).
#![allow(clippy::print_stdout)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use warden_core::{
    history::{
        Aggregation, GroupSample, HistoryStore, QueueSample, SeriesQuery, Subject, WorkerSample,
        WriteBatch, metric,
    },
    model::{Activity, Backend, HealthStatus, Lifecycle, WorkerKey},
    perf::Counts,
    sketch::Sketch,
};
use warden_store::{Store, StoreOptions};

const TICK_MS: i64 = 30_000;
/// 2026-01-05 00:00 UTC: a multiple of an hour, so that 1 h steps align with the range.
const T0: i64 = 1_767_571_200_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Clone)]
struct Params {
    workers: usize,
    days: u64,
    groups: usize,
    iters: usize,
    engines: Vec<String>,
    dir: PathBuf,
    /// Fill (or reuse) and stop: no measurement (fills of both engines may then run side by
    /// side, and the measurements one after the other on a quiet machine).
    fill_only: bool,
}

impl Params {
    fn from_env() -> Params {
        let num = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        Params {
            workers: num("HISTORY_BENCH_WORKERS", 1_000) as usize,
            days: num("HISTORY_BENCH_DAYS", 7),
            groups: num("HISTORY_BENCH_GROUPS", 10).max(1) as usize,
            iters: num("HISTORY_BENCH_ITERS", 20).max(1) as usize,
            engines: std::env::var("HISTORY_BENCH_ENGINES")
                .unwrap_or_else(|_| "sqlite,postgres".into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            fill_only: std::env::var("HISTORY_BENCH_FILL_ONLY").is_ok_and(|v| v == "1"),
            dir: PathBuf::from(
                std::env::var("HISTORY_BENCH_DIR")
                    .unwrap_or_else(|_| "/tmp/warden-history-bench".into()),
            ),
        }
    }

    fn ticks(&self) -> i64 {
        (self.days * 86_400_000) as i64 / TICK_MS
    }

    fn end_ms(&self) -> i64 {
        T0 + self.ticks() * TICK_MS
    }

    /// The folder of this fleet's databases.
    fn folder(&self) -> PathBuf {
        self.dir
            .join(format!("w{}-d{}-g{}", self.workers, self.days, self.groups))
    }
}

/// splitmix64: a cheap, deterministic source of variety.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform in [0, 1).
fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

const MAX_TASKS: usize = 60;
const VARIANTS: usize = 16;
const PROFILES: usize = 8;

/// Sketches made once and picked per row: `[profile][tasks][variant]`, so that a row's
/// sketch holds as many values as the row's finished tasks.
struct Pool {
    runtime: Vec<Vec<Vec<Sketch>>>,
    wait: Vec<Vec<Vec<Sketch>>>,
}

impl Pool {
    fn new() -> Pool {
        let build = |typical_ms: &dyn Fn(usize) -> f64, spread: f64, salt: u64| {
            (0..PROFILES)
                .map(|p| {
                    (0..=MAX_TASKS)
                        .map(|n| {
                            (0..VARIANTS)
                                .map(|v| {
                                    let mut s = Sketch::default();
                                    for k in 0..n {
                                        let seed = salt
                                            ^ ((p * 1_000_003 + n * 1_009 + v * 31 + k) as u64);
                                        // Log-normal-ish: exp of a sum of uniforms.
                                        let z = (unit(seed)
                                            + unit(seed ^ 0xABCD)
                                            + unit(seed ^ 0x1234)
                                            - 1.5)
                                            * 2.0;
                                        let ms = typical_ms(p) * (z * spread).exp();
                                        s.record(Duration::from_secs_f64(ms / 1000.0));
                                    }
                                    s
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect()
        };
        Pool {
            runtime: build(&|p| 20.0 * 2f64.powi(p as i32 / 2 + 1), 0.8, 1),
            wait: build(&|p| 2.0 + 3.0 * p as f64, 1.0, 2),
        }
    }
}

fn worker_key(w: usize) -> WorkerKey {
    WorkerKey::new(Backend::Celery, "default", format!("celery@worker-{w:04}"))
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

/// The batch of tick `tick`: every worker's sample, the queues', the groups'.
fn batch(
    p: &Params,
    pool: &Pool,
    keys: &[WorkerKey],
    groups: &[Arc<str>],
    tick: i64,
) -> WriteBatch {
    let at_ms = T0 + tick * TICK_MS;
    let now = at(at_ms);
    // A daily cycle: 0.3 at night to 1.0 in the afternoon.
    let day = ((tick * TICK_MS) % 86_400_000) as f64 / 86_400_000.0;
    let load = 0.65 - 0.35 * (2.0 * std::f64::consts::PI * day).cos();
    let mut b = WriteBatch::default();
    b.samples.workers.reserve(p.workers);
    let mut alive_per_group = vec![0u32; p.groups];
    for (w, key) in keys.iter().enumerate() {
        let seed = (tick as u64) << 20 | w as u64;
        let profile = w % PROFILES;
        // A worker is offline for a 2 h stretch now and then.
        let offline = mix((w as u64) << 32 | (tick / 240) as u64).is_multiple_of(97);
        let factor = 0.5 + unit(w as u64 ^ 0xFEED);
        let tasks = if offline {
            0
        } else {
            ((load * factor * 40.0 * (0.7 + 0.6 * unit(seed))) as usize).min(MAX_TASKS)
        };
        let failed = if tasks > 0 && unit(seed ^ 7) < tasks as f64 * 0.02 {
            1 + (unit(seed ^ 9) * 2.0) as u32
        } else {
            0
        }
        .min(tasks as u32);
        let variant = (mix(seed ^ 3) % VARIANTS as u64) as usize;
        let active = if offline {
            0
        } else {
            ((load * factor * 6.0 * unit(seed ^ 5)) as u32).min(8)
        };
        if !offline {
            alive_per_group[w % p.groups] += 1;
        }
        b.samples.workers.push(WorkerSample {
            worker: key.clone(),
            group: groups[w % p.groups].clone(),
            at: now,
            interval: Duration::from_millis(TICK_MS as u64),
            activity: if offline {
                Activity::Unresponsive
            } else if active > 0 {
                Activity::Active
            } else {
                Activity::Idle
            },
            lifecycle: if offline {
                Lifecycle::Offline
            } else {
                Lifecycle::Alive
            },
            health: (!offline).then_some(HealthStatus::Healthy),
            active_tasks: active,
            processed_total: (tick as u64) * 20 + w as u64,
            concurrency: Some(8),
            tasks: Counts {
                received: tasks as u32,
                started: tasks as u32,
                succeeded: tasks as u32 - failed,
                failed,
                retried: u32::from(failed > 1),
                rejected: 0,
                revoked: 0,
            },
            runtime: pool.runtime[profile][tasks][variant].clone(),
            queue_wait: pool.wait[profile][tasks][(variant + 5) % VARIANTS].clone(),
            cpu_percent: (!offline).then(|| 5.0 + 80.0 * load * factor * unit(seed ^ 11)),
            memory_rss_bytes: (!offline)
                .then(|| 120_000_000 + (unit(seed ^ 13) * 60_000_000.0) as u64),
        });
    }
    for q in 0..10u64 {
        b.samples.queues.push(QueueSample {
            queue: format!("queue-{q}"),
            at: now,
            depth: (load * 500.0 * unit(tick as u64 ^ q << 40)) as u64,
            unacked: (load * 80.0) as u64,
            consumers: (p.workers / 10) as u32,
        });
    }
    for (g, group) in groups.iter().enumerate() {
        b.samples.groups.push(GroupSample {
            backend: Backend::Celery,
            group: group.clone(),
            at: now,
            workers: keys.len().div_ceil(p.groups) as u32,
            alive: alive_per_group[g],
        });
    }
    b
}

// ---------------------------------------------------------------------------------------------
// A Postgres cluster kept in the bench folder.

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn pg_binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .expect("no Postgres binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Pg {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

const PG_FILL: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_wal_size=4GB",
];
const PG_DURABLE: &[&str] = &[
    "fsync=on",
    "synchronous_commit=on",
    "full_page_writes=on",
    "max_wal_size=4GB",
];

impl Pg {
    fn server(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.current_dir(&self.dir);
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The cluster in `dir`, created if missing (a server left running by an interrupted
    /// run is stopped first).
    fn open(dir: &Path) -> Pg {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg {
            bin: pg_binaries(),
            dir: dir.to_owned(),
            port,
        };
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(dir));
        }
        if !pg.data().join("PG_VERSION").exists() {
            run(pg.server("initdb").arg("-D").arg(pg.data()).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]));
        }
        if pg.data().join("postmaster.pid").exists() {
            let _ = pg
                .server("pg_ctl")
                .arg("-D")
                .arg(pg.data())
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        pg
    }

    fn start(&self, settings: &[&str]) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for s in settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        run(self
            .server("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "120", "start"]));
    }

    fn stop(&self) {
        run(self
            .server("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "300", "stop"]));
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        run(Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql]))
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .server("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "300", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (as the store's throughput test does).

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks, and its parent.
fn cpu(pid: &str) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ppid = fields[1].parse().ok()?;
    Some((
        fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?,
        ppid,
    ))
}

fn server_cpu(postmaster: u32) -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let (ticks, ppid) = cpu(&pid)?;
            (pid == postmaster.to_string() || ppid == postmaster).then_some(ticks)
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------

fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| dir_bytes(&e.path()))
            .sum()
    } else {
        meta.len()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn max_tick(store_url: &str) -> Option<i64> {
    let max: Option<i64> = if store_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(store_url).await.unwrap();
        let v = sqlx::query_scalar("SELECT MAX(at_ms) FROM worker_samples")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        v
    } else {
        let pool = sqlx::PgPool::connect(store_url).await.unwrap();
        let v = sqlx::query_scalar("SELECT MAX(at_ms) FROM worker_samples")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        v
    };
    max.map(|ms| (ms - T0) / TICK_MS)
}

/// Runs SQL on the store's database directly (cleanup of the write measurement).
async fn execute(store_url: &str, sql: &str) {
    if store_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(store_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(store_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        // The fleet queries before any optimisation took far longer than the default 5 s.
        timeout: Duration::from_secs(600),
        migrate_timeout: Duration::from_secs(3_600),
        ..StoreOptions::default()
    }
}

/// Fills the store up to the last tick, resuming after the last tick written. Returns the
/// fill time of this run (None when it was already full).
async fn fill(p: &Params, engine: &str, url: &str, store: &Store) -> Option<Duration> {
    let ticks = p.ticks();
    let from = max_tick(url).await.map_or(0, |t| t + 1);
    if from >= ticks {
        println!("{engine}: already filled ({ticks} ticks), reused");
        return None;
    }
    println!(
        "{engine}: filling ticks {from}..{ticks} ({} workers per tick, one batch per tick)",
        p.workers
    );
    let pool = Pool::new();
    let keys: Vec<WorkerKey> = (0..p.workers).map(worker_key).collect();
    let groups: Vec<Arc<str>> = (0..p.groups)
        .map(|g| Arc::from(format!("group-{g}")))
        .collect();
    let began = Instant::now();
    let mut last_report = Instant::now();
    for tick in from..ticks {
        let b = batch(p, &pool, &keys, &groups, tick);
        store.write(&b).await.unwrap();
        if last_report.elapsed() > Duration::from_secs(30) || tick + 1 == ticks {
            last_report = Instant::now();
            let done = (tick + 1 - from) as f64;
            let rate = done / began.elapsed().as_secs_f64();
            println!(
                "{engine}:   tick {}/{ticks} ({:.1} %), {:.0} ticks/s ({:.0} rows/s), {:.0} s elapsed, ~{:.0} s left",
                tick + 1,
                (tick + 1) as f64 * 100.0 / ticks as f64,
                rate,
                rate * p.workers as f64,
                began.elapsed().as_secs_f64(),
                (ticks - tick - 1) as f64 / rate
            );
        }
    }
    let took = began.elapsed();
    println!(
        "{engine}: filled {} ticks in {:.0} s ({:.1} ms per batch)",
        ticks - from,
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / (ticks - from) as f64
    );
    Some(took)
}

struct Stats {
    p50: f64,
    p95: f64,
    max: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    let q = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: q(0.5),
        p95: q(0.95),
        max: *ms.last().unwrap(),
    }
}

async fn queries(p: &Params, engine: &str, store: &Store) {
    let start = at(T0);
    let end = at(p.end_ms());
    let step = Duration::from_millis(HOUR_MS as u64);
    // Run i asks for worker (42 + 97·i) mod N and group (3 + i) mod G: a different worker
    // each time (its rows on other pages), not one whose pages the previous run left cached.
    let subject = |what: &str, i: usize| match what {
        "worker" => Subject::Worker(worker_key((42 + 97 * i) % p.workers)),
        "group" => Subject::Group(format!("group-{}", (3 + i) % p.groups)),
        _ => Subject::Fleet,
    };
    let metrics = [
        ("throughput", Aggregation::Avg),
        ("runtime", Aggregation::P95),
        ("active_tasks", Aggregation::Avg),
        ("utilisation", Aggregation::Avg),
    ];
    println!(
        "{engine}: queries over {} days at 1 h steps, {} timed runs each after one warm-up (ms)",
        p.days, p.iters
    );
    println!(
        "{engine}:   {:<7} {:<17} {:>6} {:>9} {:>9} {:>9}  sample value",
        "subject", "metric", "points", "p50", "p95", "max"
    );
    for what in ["worker", "group", "fleet"] {
        for (name, agg) in metrics {
            let m = metric(name).unwrap();
            let once = |i: usize| {
                let q = SeriesQuery {
                    subject: subject(what, i),
                    metric: m,
                    start,
                    end,
                    step,
                };
                async move {
                    let t = Instant::now();
                    let buckets = store.buckets(&q).await.unwrap();
                    let values: Vec<Option<f64>> =
                        buckets.iter().map(|b| b.value(m.source, agg)).collect();
                    (t.elapsed(), values)
                }
            };
            let (_, values) = once(p.iters).await;
            let mut times = Vec::with_capacity(p.iters);
            for i in 0..p.iters {
                times.push(once(i).await.0.as_secs_f64() * 1000.0);
            }
            let s = stats(times);
            let sample = values
                .get(values.len() / 2)
                .copied()
                .flatten()
                .map_or("-".into(), |v| format!("{v:.4}"));
            println!(
                "{engine}:   {what:<7} {:<17} {:>6} {:>9.1} {:>9.1} {:>9.1}  {sample}",
                format!("{name} {agg:?}").to_lowercase(),
                values.len(),
                s.p50,
                s.p95,
                s.max
            );
        }
    }
}

async fn size(engine: &str, store: &Store, on_disk: u64) -> u64 {
    let t = Instant::now();
    let size = store.size().await.unwrap();
    let took = t.elapsed();
    let rows = size
        .rows
        .iter()
        .find(|(t, _)| *t == "worker_samples")
        .map_or(0, |r| r.1);
    println!(
        "{engine}: Store::size() in {:.1} ms: {} bytes ({}), rows {:?}",
        took.as_secs_f64() * 1000.0,
        size.bytes,
        mib(size.bytes),
        size.rows
    );
    println!(
        "{engine}: {:.0} bytes per worker-sample row by Store::size ({rows} rows); files on disk {} ({:.0} bytes per row)",
        size.bytes as f64 / rows.max(1) as f64,
        mib(on_disk),
        on_disk as f64 / rows.max(1) as f64
    );
    rows
}

/// The writer's cost at the end of the filled range: `BATCHES` more ticks, durable, then
/// removed again.
async fn write_cost(p: &Params, engine: &str, url: &str, store: &Store, postmaster: Option<u32>) {
    const BATCHES: i64 = 60;
    let pool = Pool::new();
    let keys: Vec<WorkerKey> = (0..p.workers).map(worker_key).collect();
    let groups: Vec<Arc<str>> = (0..p.groups)
        .map(|g| Arc::from(format!("group-{g}")))
        .collect();
    let first = p.ticks() + 10;
    let batches: Vec<WriteBatch> = (first..first + BATCHES)
        .map(|t| batch(p, &pool, &keys, &groups, t))
        .collect();
    store
        .write(&batch(p, &pool, &keys, &groups, first - 1))
        .await
        .unwrap();
    let hz = clock_ticks();
    let me_before = cpu("self").unwrap().0;
    let server_before = postmaster.map(server_cpu);
    let mut times = Vec::new();
    let began = Instant::now();
    for b in &batches {
        let t = Instant::now();
        store.write(b).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let wall = began.elapsed().as_secs_f64();
    let me = (cpu("self").unwrap().0 - me_before) as f64 / hz;
    let server = postmaster
        .zip(server_before)
        .map(|(pm, before)| (server_cpu(pm) - before) as f64 / hz);
    let s = stats(times);
    let per = |secs: f64| secs * 1000.0 / BATCHES as f64;
    println!(
        "{engine}: write of {BATCHES} batches of {} worker samples (+{} queue/group rows) into the filled store: wall per batch mean {:.1} ms, p50 {:.1} ms, max {:.1} ms; CPU per batch: this process {:.1} ms{}",
        p.workers,
        10 + p.groups,
        per(wall),
        s.p50,
        s.max,
        per(me),
        server.map_or(String::new(), |s| format!(
            ", Postgres server {:.1} ms",
            per(s)
        )),
    );
    let total = me + server.unwrap_or(0.0);
    println!(
        "{engine}: at one batch per 30 s: {:.2} % of one core in warden{}",
        me / BATCHES as f64 / 30.0 * 100.0,
        server.map_or(String::new(), |_| format!(
            ", {:.2} % with the Postgres server's share",
            total / BATCHES as f64 / 30.0 * 100.0
        )),
    );
    // Remove the measurement's ticks (the query range never included them).
    let bound = T0 + (first - 1) * TICK_MS;
    let mut sql = String::new();
    for table in ["worker_samples", "queue_samples", "group_samples"] {
        sql.push_str(&format!("DELETE FROM {table} WHERE at_ms >= {bound};"));
    }
    if has_table(url, "tick_totals").await {
        sql.push_str(&format!("DELETE FROM tick_totals WHERE at_ms >= {bound};"));
    }
    execute(url, &sql).await;
}

async fn has_table(url: &str, table: &str) -> bool {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = $1")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n > 0
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_class WHERE relname = $1")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n > 0
    }
}

async fn connect(engine: &str, url: &str) -> Store {
    let store = Store::connect(url, options()).await.unwrap();
    let t = Instant::now();
    store.migrate().await.unwrap();
    let took = t.elapsed();
    if took > Duration::from_secs(1) {
        println!(
            "{engine}: migrations applied in {:.1} s",
            took.as_secs_f64()
        );
    }
    store
}

async fn sqlite(p: &Params) {
    let folder = p.folder();
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("history.db");
    let url = format!("sqlite://{}", path.display());
    let store = connect("sqlite", &url).await;
    fill(p, "sqlite", &url, &store).await;
    if p.fill_only {
        store.close().await;
        return;
    }
    queries(p, "sqlite", &store).await;
    let files = ["history.db", "history.db-wal", "history.db-shm"]
        .iter()
        .map(|f| dir_bytes(&folder.join(f)))
        .sum();
    size("sqlite", &store, files).await;
    write_cost(p, "sqlite", &url, &store, None).await;
    store.close().await;
}

async fn postgres(p: &Params) {
    let folder = p.folder().join("pg");
    let pg = tokio::task::spawn_blocking(move || {
        let pg = Pg::open(&folder);
        pg.start(PG_FILL);
        pg
    })
    .await
    .unwrap();
    if pg.psql(
        "postgres",
        "SELECT 1 FROM pg_database WHERE datname = 'history'",
    ) != "1"
    {
        pg.psql("postgres", "CREATE DATABASE history");
    }
    let url = pg.url("history");
    let store = connect("postgres", &url).await;
    let filled = fill(p, "postgres", &url, &store).await;
    store.close().await;
    if filled.is_some() {
        let t = Instant::now();
        pg.psql("history", "VACUUM (ANALYZE)");
        println!(
            "postgres: VACUUM (ANALYZE) after the fill: {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    if p.fill_only {
        pg.stop();
        return;
    }
    // Durable settings from here on.
    pg.stop();
    pg.start(PG_DURABLE);
    println!(
        "postgres: server {} restarted with {}",
        pg.psql("postgres", "SHOW server_version"),
        PG_DURABLE.join(", ")
    );
    let store = connect("postgres", &url).await;
    queries(p, "postgres", &store).await;
    let on_disk: i64 = pg
        .psql("history", "SELECT pg_database_size('history')")
        .parse()
        .unwrap();
    size("postgres", &store, on_disk.unsigned_abs()).await;
    write_cost(p, "postgres", &url, &store, pg.postmaster()).await;
    store.close().await;
    pg.stop();
    // The same queries with shared buffers that hold the samples (the default 128 MB holds
    // less than one worker's 7 days of heap pages), prewarmed as a long-running server's are.
    let tuned =
        std::env::var("HISTORY_BENCH_PG_TUNED").unwrap_or_else(|_| "shared_buffers=6GB".into());
    if !tuned.is_empty() {
        let settings: Vec<&str> = PG_DURABLE
            .iter()
            .copied()
            .chain(tuned.split(',').map(str::trim))
            .collect();
        pg.start(&settings);
        pg.psql("history", "CREATE EXTENSION IF NOT EXISTS pg_prewarm");
        let t = Instant::now();
        let pages = pg.psql(
            "history",
            "SELECT SUM(pg_prewarm(c.oid)) FROM pg_class c \
             WHERE c.relname IN ('worker_samples', 'worker_samples_by_worker', 'tick_totals', \
                 'tick_totals_by_subject')",
        );
        println!(
            "postgres: restarted with {tuned}; pg_prewarm loaded {pages} pages in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let store = connect("postgres", &url).await;
        queries(p, "postgres (tuned)", &store).await;
        store.close().await;
        pg.stop();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let p = Params::from_env();
    println!(
        "history bench: {} workers × {} days every 30 s = {} ticks, {} worker-sample rows; {} groups; folder {}",
        p.workers,
        p.days,
        p.ticks(),
        p.ticks() * p.workers as i64,
        p.groups,
        p.folder().display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for engine in p.engines.clone() {
            match engine.as_str() {
                "sqlite" => sqlite(&p).await,
                "postgres" => postgres(&p).await,
                other => panic!("unknown engine {other:?} (sqlite, postgres)"),
            }
        }
    });
}
